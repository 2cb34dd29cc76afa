//! Request bodies read the way DRF's parsers and `CharField.to_internal_value`
//! read them. Rules about names (trimming, length, blank) are the user-service's;
//! only JSON typing lives here.

use std::collections::HashMap;

use serde_json::value::RawValue;

/// DRF's message for a JSON value that is not a string or a number.
pub const MSG_NOT_A_STRING: &str = "Not a valid string.";
/// DRF's message for a JSON `null`.
pub const MSG_NULL: &str = "This field may not be null.";

/// Why a request body is not a set of fields.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    /// Not JSON at all: DRF's `{"detail": "JSON parse error - …"}`.
    Parse(String),
    /// JSON, but not an object: DRF's `non_field_errors` message.
    NotAnObject(String),
}

/// The editable fields of a request body, each as sent.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct NameFields {
    pub first_name: Option<FieldValue>,
    pub last_name: Option<FieldValue>,
}

/// One field of a body after DRF's `CharField.to_internal_value`.
#[derive(Debug, PartialEq, Eq)]
pub enum FieldValue {
    /// A string (numbers become the string Python's `str()` gives them).
    Text(String),
    /// A value DRF refuses before any rule about names: the message to report.
    Invalid(&'static str),
}

/// Reads a body the way DRF's JSONParser does: empty is `{}`; otherwise it must be
/// JSON, and a JSON object. Keys other than the two names are ignored (no mass
/// assignment); a repeated key keeps its last value, as Python's `json` does.
pub fn parse_name_fields(body: &[u8]) -> Result<NameFields, BodyError> {
    if body.is_empty() {
        return Ok(NameFields::default());
    }
    let text = std::str::from_utf8(body)
        .map_err(|e| BodyError::Parse(format!("the body is not UTF-8: {e}")))?;
    let raw: &RawValue = serde_json::from_str(text).map_err(|e| BodyError::Parse(e.to_string()))?;
    let json = raw.get();
    match json.as_bytes().first() {
        Some(b'{') => {}
        Some(b'n') => return Err(BodyError::NotAnObject(MSG_NULL.to_owned())),
        Some(first) => {
            return Err(BodyError::NotAnObject(format!(
                "Invalid data. Expected a dictionary, but got {}.",
                python_type_name(*first, json)
            )));
        }
        None => return Ok(NameFields::default()),
    }
    let map: HashMap<String, &RawValue> =
        serde_json::from_str(json).map_err(|e| BodyError::Parse(e.to_string()))?;
    Ok(NameFields {
        first_name: map.get("first_name").map(|v| to_char_field(v)),
        last_name: map.get("last_name").map(|v| to_char_field(v)),
    })
}

/// The Python type name `json.loads` would give a value starting with `first`.
fn python_type_name(first: u8, json: &str) -> &'static str {
    match first {
        b'[' => "list",
        b'"' => "str",
        b't' | b'f' => "bool",
        _ if is_integer_literal(json) => "int",
        _ => "float",
    }
}

fn is_integer_literal(json: &str) -> bool {
    !json.contains(['.', 'e', 'E'])
}

/// DRF's `CharField.to_internal_value`: strings pass, numbers become `str(n)`,
/// `null` and every other type are refused with DRF's message.
fn to_char_field(value: &RawValue) -> FieldValue {
    let json = value.get();
    match json.as_bytes().first() {
        Some(b'"') => match serde_json::from_str::<String>(json) {
            Ok(text) => FieldValue::Text(text),
            Err(_) => FieldValue::Invalid(MSG_NOT_A_STRING),
        },
        Some(b'n') => FieldValue::Invalid(MSG_NULL),
        Some(b'-' | b'0'..=b'9') => FieldValue::Text(python_number(json)),
        _ => FieldValue::Invalid(MSG_NOT_A_STRING),
    }
}

/// `str()` of the number Python's `json` module reads from `literal`: integers keep
/// every digit (Python ints are unbounded); others are floats in Python's `repr`.
fn python_number(literal: &str) -> String {
    if is_integer_literal(literal) {
        let digits = literal.trim_start_matches('-');
        let negative = literal.starts_with('-') && digits.bytes().any(|b| b != b'0');
        return format!("{}{digits}", if negative { "-" } else { "" });
    }
    python_float_repr(literal.parse::<f64>().unwrap_or(f64::INFINITY))
}

/// Python's `repr(float)`: the shortest digits that round-trip, positional for
/// exponents -4..16, else `d.ddde+XX`.
fn python_float_repr(value: f64) -> String {
    if value.is_infinite() {
        return if value > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    if value.is_nan() {
        return "nan".to_owned();
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "-1.2345e-7".
    let sci = format!("{value:e}");
    let (mantissa, exponent) = sci.split_once('e').expect("`{:e}` has an exponent");
    let exponent: i32 = exponent.parse().expect("an integer exponent");
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let sign = if negative { "-" } else { "" };
    if (-4..16).contains(&exponent) {
        let point = exponent + 1;
        let body = if point <= 0 {
            format!("0.{}{digits}", "0".repeat((-point) as usize))
        } else if point as usize >= digits.len() {
            format!("{digits}{}.0", "0".repeat(point as usize - digits.len()))
        } else {
            format!(
                "{}.{}",
                &digits[..point as usize],
                &digits[point as usize..]
            )
        };
        format!("{sign}{body}")
    } else {
        let mantissa = if digits.len() == 1 {
            digits
        } else {
            format!("{}.{}", &digits[..1], &digits[1..])
        };
        let exp_sign = if exponent < 0 { '-' } else { '+' };
        format!("{sign}{mantissa}e{exp_sign}{:02}", exponent.abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(body: &str) -> NameFields {
        parse_name_fields(body.as_bytes()).unwrap()
    }

    #[test]
    fn an_empty_body_has_no_fields() {
        assert_eq!(fields(""), NameFields::default());
    }

    #[test]
    fn unknown_and_read_only_keys_are_ignored() {
        let got = fields(r#"{"first_name":"A","id":9,"version":3,"admin":true}"#);
        assert_eq!(got.first_name, Some(FieldValue::Text("A".into())));
        assert_eq!(got.last_name, None);
    }

    #[test]
    fn numbers_become_the_strings_python_gives_them() {
        let cases = [
            ("42", "42"),
            ("-0", "0"),
            ("-7", "-7"),
            (
                "123456789012345678901234567890",
                "123456789012345678901234567890",
            ),
            ("1.5", "1.5"),
            ("1.0", "1.0"),
            ("1e5", "100000.0"),
            ("1e16", "1e+16"),
            ("1.5e16", "1.5e+16"),
            ("0.0001", "0.0001"),
            ("0.00001", "1e-05"),
            ("-2.5E-7", "-2.5e-07"),
            ("1e400", "inf"),
        ];
        for (literal, expected) in cases {
            let got = fields(&format!(r#"{{"first_name": {literal}}}"#));
            assert_eq!(
                got.first_name,
                Some(FieldValue::Text(expected.into())),
                "{literal}"
            );
        }
    }

    #[test]
    fn null_bool_list_and_object_are_refused_with_drf_wording() {
        for (value, message) in [
            ("null", MSG_NULL),
            ("true", MSG_NOT_A_STRING),
            ("false", MSG_NOT_A_STRING),
            ("[\"a\"]", MSG_NOT_A_STRING),
            ("{\"a\":1}", MSG_NOT_A_STRING),
        ] {
            let got = fields(&format!(r#"{{"last_name": {value}}}"#));
            assert_eq!(got.last_name, Some(FieldValue::Invalid(message)), "{value}");
        }
    }

    #[test]
    fn a_repeated_key_keeps_its_last_value() {
        let got = fields(r#"{"first_name":"a","first_name":"b"}"#);
        assert_eq!(got.first_name, Some(FieldValue::Text("b".into())));
    }

    #[test]
    fn a_body_that_is_not_an_object_names_its_python_type() {
        let cases = [
            (
                "[1, 2]",
                "Invalid data. Expected a dictionary, but got list.",
            ),
            ("\"x\"", "Invalid data. Expected a dictionary, but got str."),
            ("3", "Invalid data. Expected a dictionary, but got int."),
            ("3.5", "Invalid data. Expected a dictionary, but got float."),
            ("true", "Invalid data. Expected a dictionary, but got bool."),
            ("null", MSG_NULL),
        ];
        for (body, message) in cases {
            assert_eq!(
                parse_name_fields(body.as_bytes()),
                Err(BodyError::NotAnObject(message.into())),
                "{body}"
            );
        }
    }

    #[test]
    fn malformed_json_is_a_parse_error() {
        assert!(matches!(
            parse_name_fields(b"{\"first_name\": "),
            Err(BodyError::Parse(_))
        ));
        assert!(matches!(
            parse_name_fields(b"\xff\xfe"),
            Err(BodyError::Parse(_))
        ));
    }
}
