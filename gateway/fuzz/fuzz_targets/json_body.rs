//! A request body → the gRPC request the gateway would send. Never panics, and
//! every field of the body ends up where it belongs: strings as sent, typing
//! errors reported (never sent as data), the mask naming exactly the fields sent,
//! the field-level permission refusing exactly the fields not allowed, and the
//! proto surviving an encode/decode round trip.

#![no_main]

use gateway::{
    http::{
        access::permit_fields,
        fields::{FieldValue, parse_name_fields},
        users::{to_proto, update_paths},
    },
    security::auth::Caller,
};
use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use users_proto::v1 as pb;

fuzz_target!(|data: &[u8]| {
    let Ok(fields) = parse_name_fields(data) else {
        return;
    };
    // What serde_json alone makes of the same bytes must agree on strings.
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(data) {
        for (name, field) in [
            ("first_name", &fields.first_name),
            ("last_name", &fields.last_name),
        ] {
            match (map.get(name), field) {
                (None, None) => {}
                (Some(serde_json::Value::String(s)), Some(FieldValue::Text(t))) => assert_eq!(s, t),
                (Some(serde_json::Value::String(_)), other) => {
                    panic!("{name}: a string became {other:?}")
                }
                (Some(_), Some(_)) => {}
                (value, field) => panic!("{name}: {value:?} vs {field:?}"),
            }
        }
    }
    let (user, typing) = to_proto(7, &fields);
    for (name, field, sent) in [
        ("first_name", &fields.first_name, &user.first_name),
        ("last_name", &fields.last_name, &user.last_name),
    ] {
        match field {
            None => assert!(sent.is_none()),
            Some(FieldValue::Text(text)) => assert_eq!(sent.as_deref(), Some(text.as_str())),
            Some(FieldValue::Invalid(_)) => {
                assert!(sent.is_none(), "{name}: a value of the wrong type is not sent");
                assert!(typing.iter().any(|(f, _)| f == name));
            }
        }
    }
    let paths = update_paths(&fields, true);
    assert_eq!(
        paths.contains(&"first_name".to_owned()),
        fields.first_name.is_some()
    );
    assert_eq!(
        paths.contains(&"last_name".to_owned()),
        fields.last_name.is_some()
    );
    assert_eq!(update_paths(&fields, false).len(), 2);

    let mut first_only = Caller::anonymous();
    first_only.fields = vec!["first_name".into()];
    assert_eq!(
        permit_fields(&first_only, &fields, true).is_ok(),
        fields.last_name.is_none()
    );
    assert!(permit_fields(&first_only, &fields, false).is_err());
    assert!(permit_fields(&Caller::anonymous(), &fields, false).is_ok());

    let request = pb::UpdateUserRequest {
        user: Some(user),
        update_mask: Some(prost_types::FieldMask { paths }),
        expected_version: None,
        validate_only: !typing.is_empty(),
    };
    let bytes = request.encode_to_vec();
    assert_eq!(
        pb::UpdateUserRequest::decode(bytes.as_slice()).unwrap(),
        request
    );
});
