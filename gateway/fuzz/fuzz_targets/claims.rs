//! Any claims, correctly signed → the gateway's verdict. Never panics (an `exp`
//! of 2^64−1 once did), and whatever it accepts is sane: times within range, a
//! `fields` claim that was a list of strings, permissions only from `scope`.

#![no_main]

use std::{
    sync::LazyLock,
    time::{Duration, UNIX_EPOCH},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use clap::Parser;
use gateway::{
    Config,
    security::auth::{Authenticator, LATEST_TIME},
};
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;

const SECRET: &str = "fuzzing-secret-fuzzing-secret-32b";

static AUTH: LazyLock<Authenticator> = LazyLock::new(|| {
    let config = Config::try_parse_from(["gateway", "--jwt-secret", SECRET]).unwrap();
    Authenticator::new(&config.auth).unwrap()
});

fuzz_target!(|data: &[u8]| {
    // The first byte picks the header; the rest are the claims, as sent.
    let Some((&pick, claims)) = data.split_first() else {
        return;
    };
    let header: &[u8] = match pick % 3 {
        0 => br#"{"alg":"HS256","typ":"JWT"}"#,
        1 => br#"{"alg":"HS256"}"#,
        _ => br#"{"alg":"HS256","crit":["exp"]}"#,
    };
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256).unwrap();
    let token = format!("{message}.{signature}");
    let Ok(caller) = AUTH.authenticate(Some(&token)) else {
        return;
    };
    assert!(pick % 3 != 2, "a crit header was accepted");
    let latest = UNIX_EPOCH + Duration::from_secs(LATEST_TIME) + Duration::from_secs(60);
    let expires_at = caller.expires_at.expect("an accepted token expires");
    assert!(expires_at <= latest, "an exp past year 9999 was accepted");
    // Valid JSON that serde_json's Value cannot hold (a number beyond f64, in a
    // claim nobody reads) is accepted, as JSON allows; the rest is checked on
    // what Value can hold.
    let Ok(claims) = serde_json::from_slice::<serde_json::Value>(claims) else {
        return;
    };
    let exp = claims["exp"]
        .as_u64()
        .expect("an accepted exp is a whole number");
    assert!(exp <= LATEST_TIME);
    match &claims["fields"] {
        serde_json::Value::Null => assert!(claims.get("fields").is_none(), "fields: null accepted"),
        serde_json::Value::Array(items) => assert!(items.iter().all(|i| i.is_string())),
        other => panic!("fields {other} accepted"),
    }
    if caller.write {
        assert!(claims["scope"].to_string().contains("users:write"));
    }
});
