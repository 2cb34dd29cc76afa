//! The Redis stream as the relay leaves it, read back for the tests of both
//! suites that check what reached it.

use deadpool_redis::redis::{self, AsyncCommands, Value, streams::StreamRangeReply};
use prost::Message;
use users_proto::v1 as pb;

/// The stream's default key.
pub const KEY: &str = "users:events";

/// The stream as (entry id, epoch, decoded event), oldest first; empty when Redis
/// cannot be read.
pub async fn read_stream(url: &str) -> Vec<(String, String, pb::UserEvent)> {
    let Ok(client) = redis::Client::open(url) else {
        return Vec::new();
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return Vec::new();
    };
    let reply: StreamRangeReply = match conn.xrange_all(KEY).await {
        Ok(reply) => reply,
        Err(_) => return Vec::new(),
    };
    reply
        .ids
        .into_iter()
        .map(|entry| {
            let field = |name: &str| match entry.map.get(name) {
                Some(Value::BulkString(bytes)) => bytes.clone(),
                other => panic!("field {name} of {} is {other:?}", entry.id),
            };
            let epoch = String::from_utf8(field("epoch")).unwrap();
            // A foreign entry (see the last test) may not decode: it reads as seq 0.
            let event = pb::UserEvent::decode(field("event").as_slice()).unwrap_or_default();
            (entry.id, epoch, event)
        })
        .collect()
}
