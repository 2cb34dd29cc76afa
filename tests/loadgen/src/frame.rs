//! Reading just enough of a server frame: its type, its `seq` and the user's
//! `first_name`. A socket reader runs this for every frame of a 100,000
//! frames/s fan-out, so the common compact form is scanned without a JSON parser;
//! anything else (whitespace, escapes, other key order) falls back to serde_json
//! on borrowed data.

use std::borrow::Cow;

use serde::Deserialize;

/// What the fan-out check needs from one frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// `{"type":"hello","seq":N,…}`: the socket joined after event N.
    Hello {
        /// The newest event before the socket joined.
        seq: u64,
    },
    /// `{"type":"user_update","seq":N,…,"data":{"user":{"first_name":…}}}`.
    Update {
        /// The event's sequence number.
        seq: u64,
        /// The user's first name after the change, if the frame has one.
        first_name: Option<Cow<'a, str>>,
    },
    /// Any other well-formed frame (`pong`, `resync`, `error`, …).
    Other,
}

/// Parses a text frame; `None` when it is not a JSON object with a `type`.
pub fn parse(text: &str) -> Option<Frame<'_>> {
    scan(text).or_else(|| parse_json(text))
}

/// The user id of a `user_update` frame (`data.user.id`), for the
/// per-user subscription checks; `None` when the frame has none. The gateway's
/// and the floor's compact form (`"user":{"id":N,`) is scanned; anything else
/// is parsed.
pub fn update_user_id(text: &str) -> Option<i64> {
    const USER_ID: &str = r#""user":{"id":"#;
    if text.starts_with(r#"{"type":"user_update","#)
        && let Some(at) = text.find(USER_ID)
        && let Some(id) = text[at + USER_ID.len()..]
            .find([',', '}'])
            .and_then(|end| text[at + USER_ID.len()..][..end].parse().ok())
    {
        return Some(id);
    }
    #[derive(Deserialize)]
    struct Raw {
        data: Option<Data>,
    }
    #[derive(Deserialize)]
    struct Data {
        user: Option<User>,
    }
    #[derive(Deserialize)]
    struct User {
        id: Option<i64>,
    }
    let raw: Raw = serde_json::from_str(text).ok()?;
    raw.data?.user?.id
}

/// The fast path: the compact form the gateway and the floor write.
fn scan(text: &str) -> Option<Frame<'_>> {
    const UPDATE: &str = r#"{"type":"user_update","seq":"#;
    const HELLO: &str = r#"{"type":"hello","seq":"#;
    const FIRST_NAME: &str = r#""first_name":""#;
    if let Some(rest) = text.strip_prefix(UPDATE) {
        let seq = leading_number(rest)?;
        // In JSON text every quote inside a string is escaped, so this pattern only
        // matches a real `first_name` key.
        let start = rest.find(FIRST_NAME)? + FIRST_NAME.len();
        let len = rest[start..].find('"')?;
        let value = &rest[start..start + len];
        if value.contains('\\') {
            return None;
        }
        return Some(Frame::Update {
            seq,
            first_name: Some(Cow::Borrowed(value)),
        });
    }
    if let Some(rest) = text.strip_prefix(HELLO) {
        return Some(Frame::Hello {
            seq: leading_number(rest)?,
        });
    }
    None
}

/// The unsigned integer at the start of `text`, which must end with `,` or `}`.
fn leading_number(text: &str) -> Option<u64> {
    let end = text.find([',', '}'])?;
    text[..end].parse().ok()
}

/// The general path: a real JSON parse that borrows the strings it keeps.
fn parse_json(text: &str) -> Option<Frame<'_>> {
    #[derive(Deserialize)]
    struct Raw<'a> {
        #[serde(rename = "type", borrow)]
        kind: Cow<'a, str>,
        seq: Option<u64>,
        #[serde(borrow)]
        data: Option<Data<'a>>,
    }
    #[derive(Deserialize)]
    struct Data<'a> {
        #[serde(borrow)]
        user: Option<User<'a>>,
    }
    #[derive(Deserialize)]
    struct User<'a> {
        #[serde(borrow, default)]
        first_name: Option<Cow<'a, str>>,
    }
    let raw: Raw<'_> = serde_json::from_str(text).ok()?;
    Some(match (&*raw.kind, raw.seq) {
        ("hello", Some(seq)) => Frame::Hello { seq },
        ("user_update", Some(seq)) => Frame::Update {
            seq,
            first_name: raw.data.and_then(|d| d.user).and_then(|u| u.first_name),
        },
        _ => Frame::Other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GATEWAY_FRAME: &str = r#"{"type":"user_update","seq":42,"epoch":"e1","data":{"action":"update","user":{"id":7,"first_name":"lg-ab-17","last_name":"Doe","created_at":"2026-01-13T10:00:00.123456Z","updated_at":"2026-01-13T10:00:01.000000Z","version":2},"changed":["first_name"]}}"#;

    fn update(seq: u64, name: &str) -> Frame<'_> {
        Frame::Update {
            seq,
            first_name: Some(Cow::Borrowed(name)),
        }
    }

    #[test]
    fn scans_the_compact_frames() {
        assert_eq!(scan(GATEWAY_FRAME), Some(update(42, "lg-ab-17")));
        assert_eq!(
            scan(r#"{"type":"hello","seq":5,"epoch":"e1"}"#),
            Some(Frame::Hello { seq: 5 })
        );
    }

    #[test]
    fn the_scan_and_the_json_parse_agree() {
        for text in [
            GATEWAY_FRAME,
            r#"{"type":"hello","seq":0,"epoch":"x"}"#,
            r#"{"type":"hello","seq":9}"#,
        ] {
            assert_eq!(scan(text), parse_json(text), "{text}");
        }
    }

    #[test]
    fn other_layouts_fall_back_to_json() {
        let pretty = r#"{ "type": "user_update", "seq": 3, "data": { "user": { "first_name": "lg-x-1" } } }"#;
        assert_eq!(scan(pretty), None);
        assert_eq!(parse(pretty), Some(update(3, "lg-x-1")));
        let reordered = r#"{"seq":4,"type":"user_update","data":{"user":{"first_name":"a"}}}"#;
        assert_eq!(parse(reordered), Some(update(4, "a")));
        let escaped = r#"{"type":"user_update","seq":5,"data":{"user":{"first_name":"a\"b"}}}"#;
        assert_eq!(scan(escaped), None);
        assert_eq!(parse(escaped), Some(update(5, "a\"b")));
    }

    #[test]
    fn a_quoted_key_inside_a_value_is_not_a_key() {
        let sneaky = r#"{"type":"user_update","seq":6,"data":{"user":{"last_name":"x\"first_name\":\"evil","first_name":"real"}}}"#;
        assert_eq!(parse(sneaky), Some(update(6, "real")));
    }

    #[test]
    fn the_user_id_of_an_update() {
        assert_eq!(update_user_id(GATEWAY_FRAME), Some(7));
        let pretty = r#"{ "type": "user_update", "seq": 3, "data": { "user": { "first_name": "x", "id": 12 } } }"#;
        assert_eq!(update_user_id(pretty), Some(12));
        assert_eq!(update_user_id(r#"{"type":"hello","seq":1}"#), None);
        assert_eq!(update_user_id("nope"), None);
    }

    #[test]
    fn frames_without_a_name_or_of_other_types() {
        let no_user = r#"{"type":"user_update","seq":7,"data":{"action":"delete"}}"#;
        assert_eq!(
            parse(no_user),
            Some(Frame::Update {
                seq: 7,
                first_name: None
            })
        );
        assert_eq!(parse(r#"{"type":"pong"}"#), Some(Frame::Other));
        assert_eq!(
            parse(r#"{"type":"resync","seq":1,"epoch":"e"}"#),
            Some(Frame::Other)
        );
        assert_eq!(parse("not json"), None);
        assert_eq!(parse(r#"{"type":"user_update","seq":"x"}"#), None);
    }
}
