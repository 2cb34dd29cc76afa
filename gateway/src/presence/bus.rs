//! Presence across gateways, through Redis pub/sub on `<stream key>:presence`:
//! each gateway publishes its own sockets' changes as they happen (whatever
//! has queued meanwhile in one message, so a busy gateway publishes a few
//! hundred times a second, not once per change), its whole
//! state every [`HEARTBEAT`] (so a gateway that starts, or missed messages while
//! its connection was down, converges within one), and a goodbye when it stops.
//! A gateway that dies says nothing: the others drop its members once it has
//! been silent for [`super::GATEWAY_EXPIRY`].
//!
//! Pub/sub keeps nothing: while Redis is down presence is per gateway, and it
//! is whole again one heartbeat after Redis is back.

use std::{sync::Arc, time::Duration};

use deadpool_redis::redis::{self, AsyncCommands};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use service_runtime::backoff::Backoff;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::{Delta, Member, Presence};

/// How often each gateway publishes its whole state.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// Local changes waiting to be published; beyond, they are dropped (the next
/// heartbeat carries the state anyway).
pub const OUTBOX: usize = 16 * 1024;
/// Most changes published in one message.
const CHANGES_PER_MESSAGE: usize = 1024;

/// What one gateway says on the channel.
#[derive(Debug, Serialize, Deserialize)]
struct Announcement {
    /// The speaker's [`Presence::gateway`] id.
    gateway: String,
    #[serde(flatten)]
    body: Body,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Body {
    /// Changes of its sockets, in order.
    Changes { deltas: Vec<Delta> },
    /// Its whole state: every user with members there.
    State { users: Vec<(i64, Vec<Member>)> },
    /// It is stopping: its members are gone.
    Bye,
}

/// The pub/sub channel presence uses beside the event stream `stream_key`.
pub fn channel(stream_key: &str) -> String {
    format!("{stream_key}:presence")
}

/// Publishes this gateway's presence and applies the others' until
/// `shutdown`; then says goodbye.
pub async fn run(
    client: redis::Client,
    channel: String,
    presence: Arc<Presence>,
    outbox: mpsc::Receiver<Delta>,
    shutdown: CancellationToken,
) {
    let reconnected = Arc::new(Notify::new());
    let listener = tokio::spawn(listen(
        client.clone(),
        channel.clone(),
        presence.clone(),
        reconnected.clone(),
        shutdown.clone(),
    ));
    publish(client, channel, presence, outbox, reconnected, shutdown).await;
    let _ = listener.await;
}

/// Applies the other gateways' announcements, reconnecting with backoff; wakes
/// the publisher after each (re)connection so this gateway's state goes out at
/// once.
async fn listen(
    client: redis::Client,
    channel: String,
    presence: Arc<Presence>,
    reconnected: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new();
    loop {
        let session = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            backoff.reset();
            reconnected.notify_one();
            let mut messages = pubsub.on_message();
            while let Some(message) = messages.next().await {
                let Ok(payload) = message.get_payload::<String>() else {
                    continue;
                };
                match serde_json::from_str::<Announcement>(&payload) {
                    Ok(said) if said.gateway != presence.gateway() => apply(&presence, said),
                    Ok(_) => {}
                    Err(error) => {
                        tracing::debug!(%error, "presence: an announcement we cannot read")
                    }
                }
            }
            Ok::<(), redis::RedisError>(())
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            ended = session => {
                if let Err(error) = ended {
                    tracing::debug!(%error, "presence: the Redis subscription failed; reconnecting");
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff.next_wait()) => {}
        }
    }
}

fn apply(presence: &Presence, said: Announcement) {
    match said.body {
        Body::Changes { deltas } => {
            for delta in deltas {
                presence.apply_remote(&said.gateway, delta);
            }
        }
        Body::State { users } => presence.replace_remote(&said.gateway, users),
        Body::Bye => presence.drop_remote(&said.gateway),
    }
}

/// Publishes local changes as they come and the whole state every
/// [`HEARTBEAT`] (and after the listener reconnects); a publish that fails
/// drops the connection, reopened on the next one.
async fn publish(
    client: redis::Client,
    channel: String,
    presence: Arc<Presence>,
    mut outbox: mpsc::Receiver<Delta>,
    reconnected: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut conn: Option<redis::aio::MultiplexedConnection> = None;
    let mut deltas = Vec::with_capacity(CHANGES_PER_MESSAGE);
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let body = tokio::select! {
            () = shutdown.cancelled() => {
                send(&client, &mut conn, &channel, presence.gateway(), Body::Bye).await;
                return;
            }
            received = outbox.recv_many(&mut deltas, CHANGES_PER_MESSAGE) => {
                if received == 0 {
                    return;
                }
                Body::Changes { deltas: std::mem::take(&mut deltas) }
            }
            _ = heartbeat.tick() => Body::State { users: presence.local_members() },
            () = reconnected.notified() => Body::State { users: presence.local_members() },
        };
        send(&client, &mut conn, &channel, presence.gateway(), body).await;
    }
}

async fn send(
    client: &redis::Client,
    conn: &mut Option<redis::aio::MultiplexedConnection>,
    channel: &str,
    gateway: &str,
    body: Body,
) {
    let said = Announcement {
        gateway: gateway.to_owned(),
        body,
    };
    let Ok(payload) = serde_json::to_string(&said) else {
        return;
    };
    let published = async {
        let connection = match conn {
            Some(connection) => connection,
            None => conn.insert(client.get_multiplexed_async_connection().await?),
        };
        connection.publish::<_, _, ()>(channel, payload).await
    };
    let published = tokio::time::timeout(Duration::from_secs(2), published).await;
    if !matches!(published, Ok(Ok(()))) {
        *conn = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_read_back_as_written() {
        let said = Announcement {
            gateway: "g1".into(),
            body: Body::Changes {
                deltas: vec![Delta::Leave {
                    user: 3,
                    id: "g1.4".into(),
                }],
            },
        };
        let text = serde_json::to_string(&said).unwrap();
        assert_eq!(
            text,
            r#"{"gateway":"g1","kind":"changes","deltas":[{"kind":"leave","user":3,"id":"g1.4"}]}"#
        );
        let back: Announcement = serde_json::from_str(&text).unwrap();
        assert!(matches!(&back.body, Body::Changes { deltas } if deltas.len() == 1));
        let bye: Announcement = serde_json::from_str(r#"{"gateway":"g2","kind":"bye"}"#).unwrap();
        assert!(matches!(bye.body, Body::Bye));
    }
}
