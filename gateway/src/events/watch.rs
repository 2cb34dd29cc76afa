//! The WatchUsers event source (no Redis): follows the user-service's stream and
//! reconnects (see [`super::source`]) with `since_seq` = the last seq it saw, so nothing is skipped. Also
//! the backfill the Redis source uses when it sees a gap.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status, Streaming};
use users_proto::{errors, metadata, v1 as pb};

use super::{
    Hub,
    source::{self, Source, Stopped},
};
use crate::upstream::UsersClient;

/// An open WatchUsers stream and what its metadata said.
pub struct Opened {
    pub events: Streaming<pb::UserEvent>,
    pub epoch: String,
    pub head: u64,
}

/// Opens WatchUsers after `since` (0: from the oldest kept) for `epoch` ("" for
/// none).
pub async fn open(client: &UsersClient, since: u64, epoch: &str) -> Result<Opened, Status> {
    open_request(
        client,
        pb::WatchUsersRequest {
            since_seq: since,
            epoch: epoch.to_owned(),
            replay_tail: None,
        },
    )
    .await
}

/// Opens WatchUsers on the newest `tail` events kept, then live ones (0: live only).
pub async fn open_tail(client: &UsersClient, tail: u64) -> Result<Opened, Status> {
    open_request(
        client,
        pb::WatchUsersRequest {
            since_seq: 0,
            epoch: String::new(),
            replay_tail: Some(tail),
        },
    )
    .await
}

async fn open_request(
    client: &UsersClient,
    request: pb::WatchUsersRequest,
) -> Result<Opened, Status> {
    let mut client = client.clone();
    let response = crate::observe::grpc("WatchUsers", client.watch_users(request)).await?;
    let map = response.metadata();
    let epoch = metadata::epoch(map);
    let head = metadata::seq(map, metadata::HEAD_SEQ).unwrap_or(0);
    Ok(Opened {
        events: response.into_inner(),
        epoch,
        head,
    })
}

/// Whether a WatchUsers error means our position is void (another database, or
/// events no longer kept), so only a resync helps.
pub fn is_position_lost(status: &Status) -> bool {
    match status.code() {
        Code::OutOfRange => true,
        Code::FailedPrecondition => {
            errors::reason(status).is_none_or(|reason| reason == errors::EPOCH_MISMATCH)
        }
        _ => false,
    }
}

/// Opens a stream positioned to fill the window: the newest `window` events, then
/// live ones.
async fn open_for_window(client: &UsersClient, window: u64) -> Result<Opened, Status> {
    open_tail(client, window).await
}

/// Follows WatchUsers until `shutdown`.
pub async fn run(client: UsersClient, hub: Arc<Hub>, shutdown: CancellationToken) {
    let follower = Follower {
        client,
        hub: hub.clone(),
        position: None,
        connected: false,
        opened_before: false,
    };
    source::run(follower, hub, shutdown).await;
}

struct Follower {
    client: UsersClient,
    hub: Arc<Hub>,
    /// `(epoch, last seq)`; `None` until the window is filled (again).
    position: Option<(String, u64)>,
    /// This attempt opened a stream.
    connected: bool,
    /// A stream was opened before: the next one is a reconnection.
    opened_before: bool,
}

impl Source for Follower {
    const NAME: &'static str = "watch";

    async fn follow(&mut self) -> Stopped {
        self.connected = false;
        let status = self.follow_stream().await;
        if is_position_lost(&status) {
            tracing::warn!(error = %status, "events: our position in the user-service's log is gone; resyncing");
            self.position = None;
        }
        Stopped {
            error: status.into(),
            connected: self.connected,
        }
    }
}

impl Follower {
    /// Follows one stream until it fails.
    async fn follow_stream(&mut self) -> Status {
        let (mut events, fill_until) = match &self.position {
            Some((epoch, last)) => match open(&self.client, *last, epoch).await {
                Ok(opened) => (opened.events, 0),
                Err(status) => return status,
            },
            None => match open_for_window(&self.client, self.hub.window_cap() as u64).await {
                Ok(opened) => {
                    self.hub.reposition(&opened.epoch, opened.head);
                    self.position = Some((opened.epoch, 0));
                    (opened.events, opened.head)
                }
                Err(status) => return status,
            },
        };
        if fill_until == 0
            || self
                .position
                .as_ref()
                .is_some_and(|(_, l)| *l >= fill_until)
        {
            self.hub.set_live(true);
        }
        self.connected = true;
        if self.opened_before {
            metrics::counter!(crate::observe::WATCH_RECONNECTS).increment(1);
        }
        self.opened_before = true;
        loop {
            let event = match events.next().await {
                Some(Ok(event)) => event,
                Some(Err(status)) => return status,
                None => return Status::unavailable("the WatchUsers stream ended"),
            };
            let Some((epoch, last)) = self.position.as_mut() else {
                return Status::internal("no position");
            };
            if event.seq <= *last {
                continue;
            }
            if *last != 0 && event.seq != *last + 1 {
                return Status::out_of_range(format!(
                    "WatchUsers skipped from seq {last} to {}",
                    event.seq
                ));
            }
            if event.epoch != *epoch {
                return Status::failed_precondition("the epoch changed mid-stream");
            }
            *last = event.seq;
            if event.seq <= fill_until {
                self.hub.remember(&event);
                if event.seq == fill_until {
                    self.hub.set_live(true);
                }
            } else {
                self.hub.publish(&event);
            }
        }
    }
}

/// Publishes every event after `last` up to `until` from WatchUsers, for the Redis
/// source when the stream skipped some. Returns the last seq published.
pub async fn backfill(
    client: &UsersClient,
    hub: &Hub,
    epoch: &str,
    last: u64,
    until: u64,
    timeout: Duration,
) -> Result<u64, Status> {
    tokio::time::timeout(timeout, async {
        let mut opened = open(client, last, epoch).await?;
        let mut done = last;
        while done < until {
            match opened.events.next().await {
                Some(Ok(event)) if event.seq <= done => {}
                Some(Ok(event)) if event.seq == done + 1 && event.epoch == epoch => {
                    hub.publish(&event);
                    done = event.seq;
                }
                Some(Ok(event)) => {
                    return Err(Status::out_of_range(format!(
                        "backfill skipped from seq {done} to {}",
                        event.seq
                    )));
                }
                Some(Err(status)) => return Err(status),
                None => return Err(Status::unavailable("the WatchUsers stream ended")),
            }
        }
        Ok(done)
    })
    .await
    .map_err(|_| Status::deadline_exceeded("backfill took too long"))?
}

/// The user-service's epoch and newest seq, from a WatchUsers stream's metadata.
pub async fn probe(client: &UsersClient) -> Result<(String, u64), Status> {
    let opened = open_tail(client, 0).await?;
    Ok((opened.epoch, opened.head))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_reason(code: Code, reason: &'static str) -> Status {
        errors::status(code, "x", reason, [])
    }

    #[test]
    fn lost_positions_are_told_from_passing_failures() {
        assert!(is_position_lost(&with_reason(
            Code::FailedPrecondition,
            errors::EPOCH_MISMATCH
        )));
        assert!(is_position_lost(&with_reason(
            Code::OutOfRange,
            errors::SEQ_EXPIRED
        )));
        assert!(is_position_lost(&with_reason(
            Code::OutOfRange,
            errors::SEQ_AHEAD
        )));
        assert!(!is_position_lost(&Status::unavailable("down")));
        assert!(!is_position_lost(&Status::internal("x")));
    }
}
