//! The frames sockets receive, encoded once per event and shared by every socket
//! and the replay window: `user_update`, `hello` and `resync` (see
//! docs/websocket.md).

use std::sync::Arc;

use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;
use users_proto::v1 as pb;

use crate::user_json::UserJson;

/// One event's frame, encoded once and shared (a cloned `Message` shares its
/// buffer) by every socket and the replay window.
#[derive(Clone, Debug)]
pub struct Frame {
    pub seq: u64,
    /// The user the event is about: filtered sockets get only their users'.
    pub user: i64,
    pub message: Message,
}

/// What the hub queues towards a socket: a pointer, so each socket's queue
/// (whose first block tokio allocates for 32 entries up front) costs about
/// 0.5 KiB rather than 2.5 KiB.
#[derive(Clone, Debug)]
pub enum Outbound {
    /// A `user_update` frame.
    Event(Arc<Frame>),
    /// The source lost continuity: a `resync` frame (its `seq` the new position,
    /// from which the socket's seq filter restarts).
    Resync(Arc<Frame>),
    /// A frame about the socket itself (`subscribed`), queued behind the events
    /// it must follow.
    Control(Arc<Message>),
}

#[derive(Serialize)]
struct UpdateFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    seq: u64,
    epoch: &'a str,
    data: UpdateData<'a>,
}

#[derive(Serialize)]
struct UpdateData<'a> {
    action: &'static str,
    user: UserJson,
    changed: &'a [String],
}

/// An event's `user_update` frame; `None` for an event with no action or user
/// (never sent by a correct user-service).
pub fn encode(event: &pb::UserEvent) -> Option<Frame> {
    let action = match pb::Action::try_from(event.action).ok()? {
        pb::Action::Create => "create",
        pb::Action::Update => "update",
        pb::Action::Delete => "delete",
        pb::Action::Unspecified => return None,
    };
    let frame = UpdateFrame {
        kind: "user_update",
        seq: event.seq,
        epoch: &event.epoch,
        data: UpdateData {
            action,
            user: UserJson::from(event.user.as_ref()?),
            changed: &event.changed_fields,
        },
    };
    let text = serde_json::to_string(&frame).ok()?;
    Some(Frame {
        seq: event.seq,
        user: frame.data.user.id,
        message: Message::text(text),
    })
}

/// `{"type": "hello", "seq": …, "epoch": …}`, with `"users": […]` for a
/// filtered socket.
pub fn hello_json(seq: u64, epoch: &str, users: Option<&[i64]>) -> String {
    let mut hello = serde_json::json!({ "type": "hello", "seq": seq, "epoch": epoch });
    if let Some(users) = users {
        hello["users"] = serde_json::json!(users);
    }
    hello.to_string()
}

/// `{"type": "subscribed", "users": […], "seq": …}`: a filtered socket's whole
/// set after a change, and the newest seq when it took effect.
pub fn subscribed_json(users: &[i64], seq: u64) -> String {
    serde_json::json!({ "type": "subscribed", "users": users, "seq": seq }).to_string()
}

/// `{"type": "resync", …}`, with the position the client's refetch will be at
/// least as new as (additive keys, for its next resume).
pub fn resync_json(seq: u64, epoch: &str) -> String {
    serde_json::json!({ "type": "resync", "seq": seq, "epoch": epoch }).to_string()
}

/// An event of user 7 (first name `first`, the only field changed), for tests
/// of what the feed makes of events.
#[cfg(test)]
pub(crate) fn sample_event(seq: u64, action: pb::Action, first: &str) -> pb::UserEvent {
    pb::UserEvent {
        seq,
        epoch: "e1".into(),
        action: action as i32,
        user: Some(pb::User {
            id: 7,
            first_name: Some(first.into()),
            last_name: Some("Doe".into()),
            create_time: Some(prost_types::Timestamp {
                seconds: 1_768_298_400,
                nanos: 123_456_000,
            }),
            update_time: Some(prost_types::Timestamp {
                seconds: 1_768_298_401,
                nanos: 0,
            }),
            version: 2,
        }),
        changed_fields: vec!["first_name".into()],
        commit_time: None,
    }
}
