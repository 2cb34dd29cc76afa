//! The AsyncAPI 3.0 description of the WebSocket feed `/ws/user-updates/`,
//! served at `/api/asyncapi.json`: what `openapi` is to the REST API, this is to
//! the socket, so a client can be generated or checked against the frames
//! without reading docs/websocket.md (which stays the guide for humans).
//!
//! The payload schemas are those of the encoders ([`crate::events::frame`],
//! [`crate::ws::socket::reply_to`], [`crate::user_json`]); the tests below run the
//! encoders' output through them, and the browser suite validates real frames
//! against the parsed document with the AsyncAPI parser.

use serde_json::{Value, json};

use crate::{
    events::filter::MAX_USERS,
    presence,
    ws::{socket, upgrade},
};

/// The document.
pub fn document() -> Value {
    let additive = "Keys not listed here may be added in later versions: clients must ignore keys they do not know.";
    let object = |kind: &str, description: &str, required: &[&str], properties: Value| {
        let mut properties = properties;
        properties["type"] = json!({ "type": "string", "const": kind });
        json!({
            "type": "object",
            "description": format!("{description} {additive}"),
            "required": required,
            "properties": properties,
            "additionalProperties": true
        })
    };
    let seq = |description: &str| json!({ "type": "integer", "format": "int64", "minimum": 0, "description": description });
    let epoch = json!({
        "type": "string",
        "description": "Names the database; it changes only when the database is replaced by another one. Opaque: compare it, do not parse it."
    });
    let timestamp = |description: &str| {
        json!({
            "type": "string",
            "format": "date-time",
            "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z$",
            "description": format!("{description} RFC 3339 in UTC with six fractional digits and `Z`, as Django REST Framework renders it."),
            "examples": ["2026-01-13T10:00:00.123456Z"]
        })
    };
    let field = json!({ "type": "string", "enum": ["first_name", "last_name"] });
    let user = json!({
        "type": "object",
        "description": format!("The user, as the REST API shows it (`GET /api/users/{{id}}/`). {additive}"),
        "required": ["id", "first_name", "last_name", "created_at", "updated_at", "version"],
        "properties": {
            "id": { "type": "integer", "format": "int64" },
            "first_name": { "type": "string", "maxLength": 100 },
            "last_name": { "type": "string", "maxLength": 100 },
            "created_at": timestamp("When the user was created."),
            "updated_at": timestamp("When the user last changed."),
            "version": {
                "type": "integer", "format": "int64", "minimum": 1,
                "description": "Grows by one per change of this user (the REST ETag is `\"<version>\"`)."
            }
        },
        "additionalProperties": true
    });

    let user_ids = |description: &str| {
        json!({
            "type": "array",
            "description": description,
            "items": { "type": "integer", "format": "int64", "minimum": 1 },
            "maxItems": MAX_USERS
        })
    };
    let hello = object(
        "hello",
        "The first frame on every socket.",
        &["type", "seq", "epoch"],
        json!({
            "seq": seq("The newest event this gateway has put on its feed."),
            "epoch": epoch,
            "users": user_ids("Only on a filtered socket (opened with `?users=`): the users it follows, ascending.")
        }),
    );
    let subscribed = object(
        "subscribed",
        "The answer to `subscribe` or `unsubscribe` on a filtered socket: the whole set now. Events with a seq above `seq` go by this set: an added user's are delivered, a removed user's are not sent after this frame. Fetch an added user's current state over REST (ignoring versions older than what you show).",
        &["type", "users", "seq"],
        json!({
            "users": user_ids("The users the socket follows now, ascending."),
            "seq": seq("The newest seq the gateway had when the change took effect.")
        }),
    );
    let change = |kind: &str, what: &str| {
        object(
            kind,
            &format!(
                "{what} Only on a filtered socket; bad ids, a set over {MAX_USERS} users, or an unfiltered socket get an `error` frame and the set is unchanged."
            ),
            &["type", "users"],
            json!({ "users": user_ids("Positive integer user ids.") }),
        )
    };
    let subscribe = change(
        "subscribe",
        "Follows these users too; answered with `subscribed`.",
    );
    let unsubscribe = change(
        "unsubscribe",
        "Stops following these users; answered with `subscribed`.",
    );
    let presence_in = object(
        "presence",
        &format!(
            "Joins (or updates) this socket's presence on `user`, which it must follow; `\"meta\": null` leaves (closing the socket or unsubscribing also does). At most {per_second} presence messages a second per socket; beyond, or for a user not followed, or from an unfiltered socket, or with a `meta` that is not an object of at most {max_meta} bytes of JSON: an `error` frame, the entry unchanged.",
            per_second = presence::MESSAGES_PER_SECOND,
            max_meta = presence::MAX_META_BYTES
        ),
        &["type", "user", "meta"],
        json!({
            "user": { "type": "integer", "format": "int64", "minimum": 1 },
            "meta": {
                "type": ["object", "null"],
                "description": "What this window says about itself (the page sends `window`, `field`, `typing`); `null` leaves.",
                "additionalProperties": true
            }
        }),
    );
    let presence_out = object(
        "presence",
        &format!(
            "Who has `user` open, on every gateway: the whole list, ordered by `id`, sent to every filtered socket following `user` when it changes (at most once per {coalesce_ms} ms per socket) and once right after the socket starts following `user`. Carries no `seq`, is never replayed, and never delays events. A member leaves when its socket closes or unsubscribes; if its gateway dies, within 30 s.",
            coalesce_ms = presence::COALESCE.as_millis()
        ),
        &["type", "user", "members"],
        json!({
            "user": { "type": "integer", "format": "int64", "minimum": 1 },
            "members": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "sub", "meta"],
                    "properties": {
                        "id": { "type": "string", "description": "Opaque, stable for the member's socket." },
                        "sub": { "type": ["string", "null"], "description": "The member's token `sub`; `null` without authentication." },
                        "meta": { "type": "object", "additionalProperties": true }
                    },
                    "additionalProperties": true
                }
            }
        }),
    );
    let user_update = object(
        "user_update",
        "One change to one user, in the database's commit order.",
        &["type", "seq", "epoch", "data"],
        json!({
            "seq": seq("The event's seq: it grows by one per event across all users, so a gap or a duplicate shows."),
            "epoch": epoch,
            "data": {
                "type": "object",
                "description": format!("What changed. {additive}"),
                "required": ["action", "user", "changed"],
                "properties": {
                    "action": { "type": "string", "enum": ["create", "update", "delete"] },
                    "user": user,
                    "changed": {
                        "type": "array",
                        "description": "The fields the event changed (both for create and delete).",
                        "items": field,
                        "uniqueItems": true
                    }
                },
                "additionalProperties": true
            }
        }),
    );
    let resync = object(
        "resync",
        "Sent instead of a replay when the gap after `since` cannot be replayed (older than the replay window, or another epoch), or when the gateway's event source lost continuity: refetch what you show over REST, then continue from this `seq` and `epoch`.",
        &["type", "seq", "epoch"],
        json!({
            "seq": seq("The position a refetch made now is at least as new as: resume from here."),
            "epoch": epoch
        }),
    );
    let pong = object("pong", "The answer to a `ping`.", &["type"], json!({}));
    let error = object(
        "error",
        "The answer to a message the gateway does not understand or cannot take (not JSON, no `type`, an unknown type, binary, bad user ids, a subscription change on an unfiltered socket). The socket stays open.",
        &["type", "detail"],
        json!({ "detail": { "type": "string", "description": "Why, for a human." } }),
    );
    let ping = object(
        "ping",
        "Asks for a `pong`. Anything other than a JSON object with `\"type\": \"ping\"` gets an `error` frame. Other keys are ignored.",
        &["type"],
        json!({}),
    );

    let message = |name: &str, title: &str, summary: &str, payload: Value, example: Value| {
        json!({
            "name": name,
            "title": title,
            "summary": summary,
            "contentType": "application/json",
            "payload": payload,
            "examples": [{ "name": name, "payload": example }]
        })
    };
    let epoch_example = "9c1f4e2a";
    let messages = json!({
        "hello": message(
            "hello", "Hello", "The first frame: where the feed is.",
            hello,
            json!({ "type": "hello", "seq": 42, "epoch": epoch_example })
        ),
        "userUpdate": message(
            "user_update", "User update", "A user was created, updated or deleted (a delete carries the user as it was).",
            user_update,
            json!({
                "type": "user_update", "seq": 43, "epoch": epoch_example,
                "data": {
                    "action": "update",
                    "user": {
                        "id": 1, "first_name": "Ada", "last_name": "Lovelace",
                        "created_at": "2026-01-13T10:00:00.123456Z",
                        "updated_at": "2026-01-13T10:00:05.000000Z", "version": 3
                    },
                    "changed": ["first_name"]
                }
            })
        ),
        "resync": message(
            "resync", "Resync", "The gap cannot be replayed: refetch over REST, then continue from here.",
            resync,
            json!({ "type": "resync", "seq": 10_500, "epoch": epoch_example })
        ),
        "pong": message("pong", "Pong", "The answer to a ping.", pong, json!({ "type": "pong" })),
        "error": message(
            "error", "Error", "The answer to a message the gateway does not understand.",
            error,
            json!({ "type": "error", "detail": "Unknown message type \"dance\"; the types are \"ping\", \"subscribe\" and \"unsubscribe\"." })
        ),
        "ping": message("ping", "Ping", "Asks for a pong.", ping, json!({ "type": "ping" })),
        "subscribed": message(
            "subscribed", "Subscribed", "A filtered socket's users after a change, and from which seq they apply.",
            subscribed,
            json!({ "type": "subscribed", "users": [1, 4, 5], "seq": 43 })
        ),
        "subscribe": message(
            "subscribe", "Subscribe", "Follow more users.", subscribe,
            json!({ "type": "subscribe", "users": [4, 5] })
        ),
        "unsubscribe": message(
            "unsubscribe", "Unsubscribe", "Follow fewer users.", unsubscribe,
            json!({ "type": "unsubscribe", "users": [1] })
        ),
        "presenceUpdate": message(
            "presence", "Presence update", "Join, update or leave a user's presence.", presence_in,
            json!({ "type": "presence", "user": 1, "meta": { "window": 1, "field": "first_name", "typing": true } })
        ),
        "presence": message(
            "presence", "Presence", "Everyone who has a user open, with what they said about themselves.", presence_out,
            json!({ "type": "presence", "user": 1, "members": [
                { "id": "4f1c2a9e0b7d3e51.17", "sub": "alice", "meta": { "window": 1, "field": "first_name", "typing": true } },
                { "id": "9a0e6b2c4d8f1a33.4", "sub": "bob", "meta": { "window": 2, "field": "last_name", "typing": false } }
            ]})
        )
    });

    let channel_description = format!(
        "Every change to a user (create, update, delete) is pushed to every socket open on any gateway, in the database's commit order: a `hello` first, then one `user_update` per event.\n\n\
         **Filter**: `?users=1,2,3` (comma-separated positive ids, at most {max_users}; empty is allowed) makes the socket *filtered*: it gets `user_update` frames for those users only (its replay too), its `hello` names them, and `subscribe` / `unsubscribe` change the set. Without `users` a socket gets every event, as the proof of concept's clients expect.\n\n\
         **Presence**: a filtered socket may say it is there (`presence` with a `meta`) for a user it follows; every socket following that user, on every gateway, gets the whole list of members when it changes.\n\n\
         **Resume**: reconnect with `?since=<the last seq seen>&epoch=<its epoch>` to get every event after `since`, in order, then live ones; when that gap cannot be replayed the socket gets a `resync` instead. Without `since` a socket gets live events only.\n\n\
         **Writes**: a REST write is answered once its event is on that gateway's feed; the answer's `X-Users-Seq` header is the event's seq.\n\n\
         **Handshake refusals** (an HTTP status and a `{{\"detail\": …}}` body): 400 (a bad `since` or `users`), 401 (no or bad token), 403 (no `users:read`, or a browser `Origin` not allowed), 429 (over the connect rate, with `Retry-After`), 503 (over the socket caps, with `Retry-After`).\n\n\
         **Close codes**: {going_away} the gateway is shutting down (reconnect, to another gateway, with `since`); {protocol} the client broke the WebSocket protocol; {bad_data} a text message that is not UTF-8; {too_big} a message over {max_kib} KiB; {later} the socket's queue overflowed (it read too slowly) or the gateway has no event source yet (reconnect with `since`); {expired} its token expired (get a new token, reconnect with `since`).\n\n\
         The gateway also sends WebSocket pings and drops a peer that stays silent after one.",
        max_users = MAX_USERS,
        going_away = socket::CLOSE_GOING_AWAY,
        protocol = socket::CLOSE_PROTOCOL_ERROR,
        bad_data = socket::CLOSE_BAD_DATA,
        too_big = socket::CLOSE_TOO_BIG,
        max_kib = upgrade::MAX_INBOUND / 1024,
        later = socket::CLOSE_TRY_AGAIN_LATER,
        expired = socket::CLOSE_TOKEN_EXPIRED,
    );
    let message_ref =
        |name: &str| json!({ "$ref": format!("#/channels/userUpdates/messages/{name}") });

    json!({
        "asyncapi": "3.0.0",
        "id": "urn:users:gateway:user-updates",
        "info": {
            "title": "Users feed",
            "version": "1.0.0",
            "description": "The gateway's WebSocket feed of changes to users, with the frames of the Django Channels proof of concept it replaces, plus keys that old clients ignore. The REST API is described by the OpenAPI document at `/api/openapi.json`; docs/websocket.md is the guide for humans."
        },
        "defaultContentType": "application/json",
        "servers": {
            "gateway": {
                "host": "{gateway}",
                "protocol": "ws",
                "description": "A gateway serving plain HTTP. `{gateway}` is a placeholder: the host and port you reach the gateway at.",
                "variables": {
                    "gateway": {
                        "default": "localhost:8080",
                        "description": "The gateway's host and port (a placeholder; `localhost:8080` is the default `--listen`)."
                    }
                },
                "security": [
                    { "$ref": "#/components/securitySchemes/subprotocol" },
                    { "$ref": "#/components/securitySchemes/queryToken" }
                ]
            },
            "gatewayTls": {
                "host": "{gateway}",
                "protocol": "wss",
                "description": "A gateway, or its ingress, serving TLS. `{gateway}` is a placeholder.",
                "variables": {
                    "gateway": {
                        "default": "localhost:8443",
                        "description": "The host and port (a placeholder)."
                    }
                },
                "security": [
                    { "$ref": "#/components/securitySchemes/subprotocol" },
                    { "$ref": "#/components/securitySchemes/queryToken" }
                ]
            }
        },
        "channels": {
            "userUpdates": {
                "address": "/ws/user-updates/",
                "title": "User updates",
                "summary": "Every change to every user, live, with resume.",
                "description": channel_description,
                "servers": [
                    { "$ref": "#/servers/gateway" },
                    { "$ref": "#/servers/gatewayTls" }
                ],
                "messages": {
                    "hello": { "$ref": "#/components/messages/hello" },
                    "userUpdate": { "$ref": "#/components/messages/userUpdate" },
                    "resync": { "$ref": "#/components/messages/resync" },
                    "pong": { "$ref": "#/components/messages/pong" },
                    "error": { "$ref": "#/components/messages/error" },
                    "ping": { "$ref": "#/components/messages/ping" },
                    "subscribed": { "$ref": "#/components/messages/subscribed" },
                    "subscribe": { "$ref": "#/components/messages/subscribe" },
                    "unsubscribe": { "$ref": "#/components/messages/unsubscribe" },
                    "presence": { "$ref": "#/components/messages/presence" },
                    "presenceUpdate": { "$ref": "#/components/messages/presenceUpdate" }
                },
                "bindings": {
                    "ws": {
                        "method": "GET",
                        "query": {
                            "type": "object",
                            "description": "All optional.",
                            "properties": {
                                "since": {
                                    "type": "string",
                                    "pattern": "^[0-9]*$",
                                    "description": "Resume after this seq (a non-negative integer; anything else is refused with 400). Empty or absent: live events only."
                                },
                                "epoch": {
                                    "type": "string",
                                    "description": "The epoch `since` belongs to; another epoch than the gateway's gets a `resync`."
                                },
                                "users": {
                                    "type": "string",
                                    "pattern": "^[0-9,]*$",
                                    "description": format!("Comma-separated positive user ids, at most {MAX_USERS}: a filtered socket that gets only these users' events. Anything else is refused with 400.")
                                },
                                "token": {
                                    "type": "string",
                                    "description": "The bearer token, when it cannot go in `Sec-WebSocket-Protocol` (browsers). Never logged."
                                }
                            },
                            "additionalProperties": true
                        },
                        "headers": {
                            "type": "object",
                            "properties": {
                                "Sec-WebSocket-Protocol": {
                                    "type": "string",
                                    "description": "`bearer, <token>`: the token as a subprotocol; the gateway then answers with the `bearer` subprotocol."
                                }
                            }
                        },
                        "bindingVersion": "0.1.0"
                    }
                }
            }
        },
        "operations": {
            "sendUserUpdates": {
                "action": "send",
                "channel": { "$ref": "#/channels/userUpdates" },
                "title": "Frames the gateway sends",
                "summary": "`hello` first, then `user_update` per event (after a replay or a `resync` when resuming), `pong`, `subscribed` and `error` as answers.",
                "messages": [
                    message_ref("hello"),
                    message_ref("userUpdate"),
                    message_ref("resync"),
                    message_ref("pong"),
                    message_ref("error"),
                    message_ref("subscribed"),
                    message_ref("presence")
                ]
            },
            "receivePing": {
                "action": "receive",
                "channel": { "$ref": "#/channels/userUpdates" },
                "title": "Messages the gateway reads",
                "summary": format!("`ping`, answered with `pong`; anything else is answered with `error`. Messages are capped at {} KiB.", upgrade::MAX_INBOUND / 1024),
                "messages": [message_ref("ping")],
                "reply": {
                    "channel": { "$ref": "#/channels/userUpdates" },
                    "messages": [message_ref("pong")]
                }
            },
            "receiveSubscriptionChanges": {
                "action": "receive",
                "channel": { "$ref": "#/channels/userUpdates" },
                "title": "Changes of a filtered socket's users",
                "summary": "`subscribe` and `unsubscribe`, answered with `subscribed` (or `error`).",
                "messages": [message_ref("subscribe"), message_ref("unsubscribe")],
                "reply": {
                    "channel": { "$ref": "#/channels/userUpdates" },
                    "messages": [message_ref("subscribed")]
                }
            },
            "receivePresence": {
                "action": "receive",
                "channel": { "$ref": "#/channels/userUpdates" },
                "title": "Presence updates from a filtered socket",
                "summary": "`presence` with `user` and `meta`; the followers' `presence` frames reflect it.",
                "messages": [message_ref("presenceUpdate")]
            }
        },
        "components": {
            "messages": messages,
            "securitySchemes": {
                "subprotocol": {
                    "type": "httpApiKey",
                    "in": "header",
                    "name": "Sec-WebSocket-Protocol",
                    "description": "`Sec-WebSocket-Protocol: bearer, <token>`, a JWT with scope `users:read`. Not needed when the gateway runs with `--auth none`."
                },
                "queryToken": {
                    "type": "httpApiKey",
                    "in": "query",
                    "name": "token",
                    "description": "`?token=<token>`, for browsers, which cannot set headers on a WebSocket. Not needed with `--auth none`."
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::frame;
    use tokio_tungstenite::tungstenite::Message;
    use users_proto::v1 as pb;

    fn payload(doc: &Value, message: &str) -> Value {
        doc["components"]["messages"][message]["payload"].clone()
    }

    /// The subset of JSON Schema the payloads use, enough to tell an encoder that
    /// left the document behind (the browser suite checks with a full validator).
    fn conforms(value: &Value, schema: &Value, at: &str) {
        // `["object", "null"]`: null passes, anything else is held to the other.
        let kind = match &schema["type"] {
            Value::Array(kinds) if value.is_null() && kinds.contains(&json!("null")) => return,
            Value::Array(kinds) => kinds.iter().find(|k| *k != "null").unwrap(),
            kind => kind,
        };
        match kind.as_str().unwrap() {
            "object" => {
                let object = value
                    .as_object()
                    .unwrap_or_else(|| panic!("{at}: not an object"));
                for key in schema["required"].as_array().into_iter().flatten() {
                    let key = key.as_str().unwrap();
                    assert!(object.contains_key(key), "{at}: no {key}");
                }
                // A free-form object (a presence `meta`) lists no properties.
                let listed = schema.get("properties").is_some();
                for (key, item) in object.iter().filter(|_| listed) {
                    let property = &schema["properties"][key];
                    assert!(!property.is_null(), "{at}: {key} is not in the document");
                    conforms(item, property, &format!("{at}.{key}"));
                }
            }
            "array" => {
                for item in value
                    .as_array()
                    .unwrap_or_else(|| panic!("{at}: not an array"))
                {
                    conforms(item, &schema["items"], &format!("{at}[]"));
                }
            }
            "integer" => {
                let n = value
                    .as_i64()
                    .unwrap_or_else(|| panic!("{at}: not an integer"));
                if let Some(minimum) = schema["minimum"].as_i64() {
                    assert!(n >= minimum, "{at}: {n} < {minimum}");
                }
            }
            "string" => assert!(value.is_string(), "{at}: not a string"),
            other => panic!("{at}: type {other}"),
        }
        if let Some(constant) = schema.get("const") {
            assert_eq!(value, constant, "{at}");
        }
        if let Some(allowed) = schema["enum"].as_array() {
            assert!(allowed.contains(value), "{at}: {value} not in {allowed:?}");
        }
    }

    fn text(message: &Message) -> Value {
        serde_json::from_str(message.to_text().unwrap()).unwrap()
    }

    #[test]
    fn the_document_is_asyncapi_3_with_the_channel_and_every_message() {
        let doc = document();
        assert_eq!(doc["asyncapi"], "3.0.0");
        for key in ["title", "version", "description"] {
            assert!(doc["info"][key].is_string(), "info.{key}");
        }
        assert_eq!(doc["servers"]["gateway"]["protocol"], "ws");
        let channel = &doc["channels"]["userUpdates"];
        assert_eq!(channel["address"], "/ws/user-updates/");
        let query = &channel["bindings"]["ws"]["query"]["properties"];
        for parameter in ["since", "epoch", "token"] {
            assert!(query[parameter].is_object(), "query {parameter}");
        }
        let description = channel["description"].as_str().unwrap();
        for code in ["1001", "1002", "1007", "1009", "1013", "4001"] {
            assert!(description.contains(code), "close code {code}");
        }
        let sent = [
            "hello",
            "userUpdate",
            "resync",
            "pong",
            "error",
            "subscribed",
            "presence",
        ];
        let received = ["ping", "subscribe", "unsubscribe", "presenceUpdate"];
        for name in sent.iter().chain(&received) {
            assert!(payload(&doc, name).is_object(), "message {name}");
            assert!(
                channel["messages"][name].is_object(),
                "channel message {name}"
            );
        }
        let operation_messages = |operation: &str| -> Vec<String> {
            doc["operations"][operation]["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| {
                    m["$ref"]
                        .as_str()
                        .unwrap()
                        .rsplit('/')
                        .next()
                        .unwrap()
                        .to_owned()
                })
                .collect()
        };
        assert_eq!(doc["operations"]["sendUserUpdates"]["action"], "send");
        assert_eq!(operation_messages("sendUserUpdates"), sent);
        assert_eq!(doc["operations"]["receivePing"]["action"], "receive");
        assert_eq!(operation_messages("receivePing"), ["ping"]);
        assert_eq!(
            operation_messages("receiveSubscriptionChanges"),
            ["subscribe", "unsubscribe"]
        );
        assert_eq!(operation_messages("receivePresence"), ["presenceUpdate"]);
    }

    #[test]
    fn every_reference_resolves() {
        crate::http::assert_references_resolve(&document());
    }

    #[test]
    fn every_example_conforms_to_its_payload() {
        let doc = document();
        for (name, message) in doc["components"]["messages"].as_object().unwrap() {
            for example in message["examples"].as_array().unwrap() {
                conforms(&example["payload"], &message["payload"], name);
            }
        }
    }

    #[test]
    fn the_encoders_output_conforms_to_the_document() {
        let doc = document();
        conforms(
            &text(&Message::text(frame::hello_json(42, "e1", None))),
            &payload(&doc, "hello"),
            "hello",
        );
        conforms(
            &text(&Message::text(frame::hello_json(42, "e1", Some(&[1, 7])))),
            &payload(&doc, "hello"),
            "hello (filtered)",
        );
        conforms(
            &text(&Message::text(frame::subscribed_json(&[1, 4], 43))),
            &payload(&doc, "subscribed"),
            "subscribed",
        );
        let hub = std::sync::Arc::new(crate::events::Hub::new(1, 1));
        let presence = presence::Presence::new(hub, None);
        let serde_json::Value::Object(meta) = json!({ "window": 1, "typing": true }) else {
            unreachable!()
        };
        presence.set(
            1,
            presence::Member {
                id: presence.member_id(3),
                sub: None,
                meta,
            },
        );
        conforms(
            &text(&presence.snapshot(1)),
            &payload(&doc, "presence"),
            "presence",
        );
        conforms(
            &text(&Message::text(frame::resync_json(8, "e1"))),
            &payload(&doc, "resync"),
            "resync",
        );
        for action in [pb::Action::Create, pb::Action::Update, pb::Action::Delete] {
            let event = frame::sample_event(43, action, "Ada");
            let update = text(&frame::encode(&event).unwrap().message);
            conforms(&update, &payload(&doc, "userUpdate"), "user_update");
        }
        let ping = Message::text(r#"{"type":"ping"}"#);
        conforms(&text(&ping), &payload(&doc, "ping"), "ping");
        let pong = socket::reply_to(&ping).unwrap();
        conforms(&pong, &payload(&doc, "pong"), "pong");
        for bad in [
            Message::text(r#"{"type":"subscribe"}"#),
            Message::text("[]"),
            Message::text("not json"),
            Message::binary(vec![1, 2]),
        ] {
            let error = socket::reply_to(&bad).unwrap();
            conforms(&error, &payload(&doc, "error"), "error");
        }
    }
}
