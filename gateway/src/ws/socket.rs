//! `/ws/user-updates/`: one task per socket. It sends `hello`, the replay or
//! `resync` its resume asks for, then every frame the hub queues for it, while it
//! answers client frames (changing a filtered socket's users through the hub),
//! pings the peer and watches for shutdown. A socket whose
//! queue overflowed is closed with 1013; at shutdown every socket gets 1001.

use std::{
    collections::HashSet,
    sync::Arc,
    task::Poll,
    time::{Duration, SystemTime},
};

use futures::{SinkExt, StreamExt, stream::SplitSink};
use serde_json::Value;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{
    self, Message,
    protocol::{CloseFrame, frame::coding::CloseCode},
};
use tokio_util::sync::CancellationToken;

use crate::{
    events::{Change, Hub, Outbound, Start, Subscription},
    observe,
    presence::{Budget, Member, Presence},
    ws::{
        admission::Admitted,
        inbound::{self, Inbound},
        upgrade::WebSocket,
    },
};

/// Close code: the server is going away (shutdown).
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code: try again later (the socket could not keep up, or no event source).
pub const CLOSE_TRY_AGAIN_LATER: u16 = 1013;
/// Close code: the socket's token expired (the client gets a new one and
/// reconnects).
pub const CLOSE_TOKEN_EXPIRED: u16 = 4001;
/// Close code: a frame or message over [`super::upgrade::MAX_INBOUND`].
pub const CLOSE_TOO_BIG: u16 = 1009;
/// Close code: the peer broke the WebSocket protocol (a bad frame).
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
/// Close code: a text message that is not UTF-8.
pub const CLOSE_BAD_DATA: u16 = 1007;
/// Most queued frames written to a socket in one go.
const MAX_BATCH: usize = 64;
/// How long a closing socket may take to flush its close frame.
const CLOSE_FLUSH: Duration = Duration::from_secs(10);
/// How long a new socket waits for the event source before it is turned away.
const SOURCE_WAIT: Duration = Duration::from_secs(5);

/// Settings shared by every socket.
#[derive(Clone, Debug)]
pub struct SocketConfig {
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
}

/// Why a socket's loop ended.
enum End {
    /// The peer closed, left, or stopped answering: nothing more to send. The
    /// reason is the `gateway_ws_closed_total` label.
    Gone(&'static str),
    /// Close with this code and reason.
    Close(u16, &'static str),
}

/// What every socket task shares.
#[derive(Clone)]
pub struct Shared {
    /// Where its frames come from.
    pub hub: Arc<Hub>,
    /// Who else is there.
    pub presence: Arc<Presence>,
    /// Ping interval and timeout.
    pub config: SocketConfig,
    /// Cancelled at shutdown: the socket closes with 1001.
    pub shutdown: CancellationToken,
}

/// Runs one socket, admitted as `admitted`, until it ends.
pub async fn serve(socket: WebSocket, shared: Shared, admitted: Admitted) {
    let Shared {
        hub,
        presence,
        config,
        shutdown,
    } = shared;
    let Admitted {
        resume,
        users,
        sub,
        lease,
        ..
    } = admitted;
    let (mut sink, mut stream) = socket.split();
    // The tokio deadline of the token's expiry (a past one fires at once).
    let expiry = lease
        .expires_at
        .map(|at| Instant::now() + at.duration_since(SystemTime::now()).unwrap_or_default());
    let expired = async move {
        match expiry {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(expired);
    let connected = service_runtime::metrics::HeldGauge::open(observe::WS_CONNECTIONS);
    if !hub.is_live() && !hub.wait_live(SOURCE_WAIT).await {
        observe::socket_closed("no_event_source");
        drop(connected);
        close(&mut sink, CLOSE_TRY_AGAIN_LATER, "event source unavailable").await;
        return;
    }
    let followed: Vec<i64> = users.as_ref().map(|u| u.ids().to_vec()).unwrap_or_default();
    let joined = hub.join(resume.as_ref(), users);
    let mut subscription = joined.subscription;
    let mut after = joined.after;
    let mut socket = Socket {
        sink,
        last_heard: Instant::now(),
        config,
        shutdown,
        overflowed: subscription.overflowed.clone(),
        here: Here {
            member: presence.member_id(subscription.id()),
            sub,
            presence,
            present: HashSet::new(),
            budget: Budget::default(),
        },
    };
    let end = async {
        socket.send(joined.hello).await?;
        for &user in &followed {
            let snapshot = socket.here.presence.snapshot(user);
            socket.send(Message::clone(&snapshot)).await?;
        }
        match joined.start {
            Start::Live => {}
            Start::Replay(frames) => {
                for frame in frames {
                    after = frame.seq;
                    socket.send(frame.message.clone()).await?;
                }
            }
            Start::Resync(message) => socket.send(message).await?,
        }
        let mut ping = tokio::time::interval(socket.config.ping_interval);
        ping.reset();
        let mut batch = Vec::with_capacity(MAX_BATCH);
        // Shutdown and overflow arrive as the end of the queue (the hub drops
        // it), not as tokens polled on every wake-up; only a write that waits
        // watches the tokens.
        loop {
            tokio::select! {
                biased;
                () = &mut expired => return Err(End::Close(CLOSE_TOKEN_EXPIRED, "token expired")),
                item = subscription.queue.recv() => {
                    let Some(mut item) = item else {
                        return Err(if socket.shutdown.is_cancelled() {
                            End::Close(CLOSE_GOING_AWAY, "server shutting down")
                        } else {
                            End::Close(CLOSE_TRY_AGAIN_LATER, "too slow; resume with since")
                        });
                    };
                    // Everything already queued goes out in one write.
                    loop {
                        match item {
                            Outbound::Event(frame) if frame.seq > after => {
                                after = frame.seq;
                                batch.push(frame.message.clone());
                            }
                            Outbound::Event(_) => {}
                            Outbound::Resync(frame) => {
                                after = frame.seq;
                                batch.push(frame.message.clone());
                            }
                            Outbound::Control(message) => batch.push(Message::clone(&message)),
                        }
                        if batch.len() >= MAX_BATCH {
                            break;
                        }
                        match subscription.queue.try_recv() {
                            Ok(next) => item = next,
                            Err(_) => break,
                        }
                    }
                    socket.send_all(batch.drain(..)).await?;
                },
                inbound = stream.next() => {
                    socket.last_heard = Instant::now();
                    match inbound {
                        Some(Ok(message)) => socket.answer(message, &subscription).await?,
                        Some(Err(error)) if is_disconnect(&error) => {
                            tracing::debug!(%error, "ws: the peer went away");
                            return Err(End::Gone("disconnected"));
                        }
                        Some(Err(error)) => {
                            tracing::debug!(%error, "ws: read failed");
                            return Err(close_for(&error));
                        }
                        None => return Err(End::Gone("client_closed")),
                    }
                }
                _ = ping.tick() => {
                    if socket.last_heard.elapsed() > socket.config.ping_interval + socket.config.ping_timeout {
                        tracing::debug!("ws: peer stopped answering pings");
                        return Err(End::Gone("ping_timeout"));
                    }
                    socket.send(Message::Ping(Default::default())).await?;
                }
            }
        }
    };
    let result: Result<(), End> = end.await;
    socket.here.leave_everywhere();
    drop(subscription);
    drop(lease.slot);
    observe::socket_closed(close_reason(&result));
    drop(connected);
    match result {
        Err(End::Close(code, reason)) => close(&mut socket.sink, code, reason).await,
        // Flush the reply to a client's close, if any; a dead peer costs a second.
        _ => {
            let _ = tokio::time::timeout(Duration::from_secs(1), socket.sink.close()).await;
        }
    }
}

struct Socket {
    sink: SplitSink<WebSocket, Message>,
    last_heard: Instant,
    config: SocketConfig,
    shutdown: CancellationToken,
    overflowed: CancellationToken,
    here: Here,
}

/// This socket's presence: its member id and `sub`, the users it has joined,
/// and its message budget.
struct Here {
    member: String,
    sub: Option<String>,
    presence: Arc<Presence>,
    present: HashSet<i64>,
    budget: Budget,
}

impl Here {
    /// Acts on a presence message; the error frame's detail when refused (its
    /// entry unchanged).
    fn update(
        &mut self,
        subscription: &Subscription,
        user: i64,
        meta: Option<serde_json::Map<String, Value>>,
    ) -> Result<(), String> {
        if !self.budget.spend(std::time::Instant::now()) {
            return Err(format!(
                "At most {} presence messages a second; this one was dropped.",
                crate::presence::MESSAGES_PER_SECOND
            ));
        }
        match subscription.follows(user) {
            None => {
                return Err("Presence needs a socket opened with ?users=.".into());
            }
            Some(false) => {
                return Err(format!(
                    "Presence is for users this socket follows; subscribe to {user} first."
                ));
            }
            Some(true) => {}
        }
        match meta {
            Some(meta) => {
                self.presence.set(
                    user,
                    Member {
                        id: self.member.clone(),
                        sub: self.sub.clone(),
                        meta,
                    },
                );
                self.present.insert(user);
            }
            None => self.leave(user),
        }
        Ok(())
    }

    fn leave(&mut self, user: i64) {
        if self.present.remove(&user) {
            self.presence.leave(user, &self.member);
        }
    }

    /// After a change of the socket's users: leaves the removed ones, and
    /// queues the presence of the added ones after the `subscribed` frame.
    fn after_change(&mut self, change: &Change, subscription: &Subscription) {
        match change {
            Change::Subscribe(users) => {
                for &user in users {
                    subscription.offer(self.presence.snapshot(user));
                }
            }
            Change::Unsubscribe(users) => {
                for &user in users {
                    self.leave(user);
                }
            }
        }
    }

    /// The socket is closing: it leaves every user it joined.
    fn leave_everywhere(&mut self) {
        for user in std::mem::take(&mut self.present) {
            self.presence.leave(user, &self.member);
        }
    }
}

impl Socket {
    /// Sends one frame, giving up when the socket is told to close or the peer has
    /// been silent too long (a peer that stops reading blocks the write).
    async fn send(&mut self, message: Message) -> Result<(), End> {
        self.send_all(std::iter::once(message)).await
    }

    /// Sends frames in one write (tungstenite buffers what is fed until the
    /// flush). A write the kernel takes at once, the usual case, arms no timer;
    /// one that waits is bounded like [`Socket::send`].
    async fn send_all(&mut self, messages: impl IntoIterator<Item = Message>) -> Result<(), End> {
        let sink = &mut self.sink;
        let write = async move {
            for message in messages {
                sink.feed(message).await?;
            }
            sink.flush().await
        };
        let mut write = std::pin::pin!(write);
        if let Poll::Ready(sent) = futures::poll!(write.as_mut()) {
            return sent.map_err(|_| End::Gone("write_failed"));
        }
        let deadline = self.last_heard + self.config.ping_interval + self.config.ping_timeout;
        tokio::select! {
            sent = write => sent.map_err(|_| End::Gone("write_failed")),
            _ = self.shutdown.cancelled() => Err(End::Close(CLOSE_GOING_AWAY, "server shutting down")),
            _ = self.overflowed.cancelled() => Err(End::Close(CLOSE_TRY_AGAIN_LATER, "too slow; resume with since")),
            _ = tokio::time::sleep_until(deadline) => Err(End::Gone("ping_timeout")),
        }
    }

    /// Answers a client frame: a pong, an error frame, or (for `subscribe` and
    /// `unsubscribe`) the change through the hub, whose `subscribed` frame comes
    /// through the queue; the socket stays open.
    async fn answer(&mut self, message: Message, subscription: &Subscription) -> Result<(), End> {
        if message.is_close() {
            return Err(End::Gone("client_closed"));
        }
        let reply = match inbound::read(&message) {
            Inbound::Change(change) => match subscription.change(change.clone()) {
                Ok(()) => {
                    self.here.after_change(&change, subscription);
                    None
                }
                Err(detail) => Some(inbound::error(&detail)),
            },
            Inbound::Presence { user, meta } => self
                .here
                .update(subscription, user, meta)
                .err()
                .map(|detail| inbound::error(&detail)),
            other => reply(other),
        };
        match reply {
            Some(reply) => self.send(Message::text(reply.to_string())).await,
            None => Ok(()),
        }
    }
}

/// The answer to one client message that needs no hub: a pong for `ping`, an
/// error frame for anything it cannot take; nothing for control frames
/// (tungstenite answers pings itself) nor for a change of users (the hub
/// answers those). Pure, so the fuzzer can drive it.
pub fn reply_to(message: &Message) -> Option<Value> {
    reply(inbound::read(message))
}

fn reply(inbound: Inbound) -> Option<Value> {
    match inbound {
        Inbound::Ping => Some(inbound::pong()),
        Inbound::Invalid(detail) => Some(inbound::error(&detail)),
        Inbound::Control | Inbound::Change(_) | Inbound::Presence { .. } => None,
    }
}

/// Whether a read failed because the connection itself is gone (reset, or closed
/// without a close frame) rather than because of what the peer sent.
fn is_disconnect(error: &tungstenite::Error) -> bool {
    matches!(
        error,
        tungstenite::Error::Io(_)
            | tungstenite::Error::ConnectionClosed
            | tungstenite::Error::AlreadyClosed
            | tungstenite::Error::Protocol(
                tungstenite::error::ProtocolError::ResetWithoutClosingHandshake
            )
    )
}

/// How a socket whose peer sent something unreadable is closed: 1009 for a
/// frame or message over the cap, 1007 for text that is not UTF-8, 1002 for any
/// other breach of the protocol (RFC 6455 §7.4.1).
fn close_for(error: &tungstenite::Error) -> End {
    match error {
        tungstenite::Error::Capacity(_) => End::Close(CLOSE_TOO_BIG, "message too big"),
        tungstenite::Error::Utf8(_) => End::Close(CLOSE_BAD_DATA, "text is not UTF-8"),
        _ => End::Close(CLOSE_PROTOCOL_ERROR, "protocol error"),
    }
}

/// The `reason` label of a socket that ended with `result`.
fn close_reason(result: &Result<(), End>) -> &'static str {
    match result {
        Err(End::Gone(reason)) => reason,
        Err(End::Close(CLOSE_GOING_AWAY, _)) => "shutdown",
        Err(End::Close(CLOSE_TRY_AGAIN_LATER, _)) => "too_slow",
        Err(End::Close(CLOSE_TOKEN_EXPIRED, _)) => "token_expired",
        Err(End::Close(CLOSE_TOO_BIG | CLOSE_BAD_DATA | CLOSE_PROTOCOL_ERROR, _)) => "bad_message",
        Err(End::Close(..)) | Ok(()) => "other",
    }
}

/// Sends a close frame, waiting a bounded time for it to be flushed.
async fn close(sink: &mut SplitSink<WebSocket, Message>, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(CLOSE_FLUSH, sink.send(Message::Close(Some(frame)))).await;
    let _ = tokio::time::timeout(CLOSE_FLUSH, sink.close()).await;
}
