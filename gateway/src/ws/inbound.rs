//! What a client may say on its socket, read into one value per message so the
//! socket task only acts: `ping`, `subscribe`, `unsubscribe`, `presence`, or
//! something it answers with an `error` frame. Pure, so the fuzzer can drive it.

use serde_json::{Map, Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::{
    events::{Change, UserSet},
    presence,
};

/// One client message, read.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound {
    /// A WebSocket control frame (tungstenite answers pings itself): nothing to
    /// do.
    Control,
    /// `{"type": "ping"}`: answered with a pong.
    Ping,
    /// `subscribe` or `unsubscribe` with valid ids: the hub decides whether the
    /// socket may.
    Change(Change),
    /// `presence` with a valid user and meta: `Some` joins or updates the
    /// socket's entry, `None` leaves. Whether the socket follows the user is
    /// the socket's to check.
    Presence {
        user: i64,
        meta: Option<Map<String, Value>>,
    },
    /// Anything else: answered with this `error` detail; the socket stays open.
    Invalid(String),
}

/// Reads one client message.
pub fn read(message: &Message) -> Inbound {
    if message.is_close() || message.is_ping() || message.is_pong() {
        return Inbound::Control;
    }
    let Message::Text(text) = message else {
        return Inbound::Invalid("Binary messages are not supported; send JSON text.".into());
    };
    let value = match serde_json::from_str::<Value>(text.as_str()) {
        Ok(value) => value,
        Err(error) => return Inbound::Invalid(format!("Invalid JSON: {error}")),
    };
    let ids = || UserSet::ids_of(value.get("users"));
    match value.get("type").and_then(Value::as_str) {
        Some("ping") => Inbound::Ping,
        Some("subscribe") => ids().map_or_else(Inbound::Invalid, |ids| {
            Inbound::Change(Change::Subscribe(ids))
        }),
        Some("unsubscribe") => ids().map_or_else(Inbound::Invalid, |ids| {
            Inbound::Change(Change::Unsubscribe(ids))
        }),
        Some("presence") => read_presence(&value),
        Some(kind) => Inbound::Invalid(format!(
            "Unknown message type {kind:?}; the types are \"ping\", \"subscribe\", \"unsubscribe\" and \"presence\"."
        )),
        None => Inbound::Invalid("A message must be a JSON object with a \"type\".".into()),
    }
}

fn read_presence(value: &Value) -> Inbound {
    let user = match value.get("user").and_then(Value::as_i64) {
        Some(user) if user > 0 => user,
        _ => return Inbound::Invalid("\"user\" must be a positive integer id.".into()),
    };
    match presence::read_meta(value.get("meta")) {
        Ok(meta) => Inbound::Presence { user, meta },
        Err(detail) => Inbound::Invalid(detail),
    }
}

/// `{"type": "pong"}`.
pub fn pong() -> Value {
    json!({ "type": "pong" })
}

/// `{"type": "error", "detail": …}`.
pub fn error(detail: &str) -> Value {
    json!({ "type": "error", "detail": detail })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_message_reads_as_what_it_asks() {
        let read_text = |text: &str| read(&Message::text(text.to_owned()));
        assert_eq!(read_text(r#"{"type":"ping"}"#), Inbound::Ping);
        assert_eq!(
            read_text(r#"{"type":"subscribe","users":[4,5]}"#),
            Inbound::Change(Change::Subscribe(vec![4, 5]))
        );
        assert_eq!(
            read_text(r#"{"type":"unsubscribe","users":[1]}"#),
            Inbound::Change(Change::Unsubscribe(vec![1]))
        );
        for bad in [
            r#"{"type":"subscribe"}"#,
            r#"{"type":"subscribe","users":["a"]}"#,
            r#"{"type":"unsubscribe","users":[0]}"#,
            r#"{"type":"dance"}"#,
            "[]",
            "not json",
        ] {
            assert!(matches!(read_text(bad), Inbound::Invalid(_)), "{bad}");
        }
        assert!(matches!(
            read(&Message::binary(vec![1])),
            Inbound::Invalid(_)
        ));
        assert_eq!(read(&Message::Ping(Default::default())), Inbound::Control);
        assert!(matches!(
            read_text(r#"{"type":"presence","user":3,"meta":{"typing":true}}"#),
            Inbound::Presence {
                user: 3,
                meta: Some(_)
            }
        ));
        assert_eq!(
            read_text(r#"{"type":"presence","user":3,"meta":null}"#),
            Inbound::Presence {
                user: 3,
                meta: None
            }
        );
        for bad in [
            r#"{"type":"presence","user":0,"meta":null}"#,
            r#"{"type":"presence","user":3,"meta":7}"#,
            r#"{"type":"presence","user":3}"#,
        ] {
            assert!(matches!(read_text(bad), Inbound::Invalid(_)), "{bad}");
        }
    }
}
