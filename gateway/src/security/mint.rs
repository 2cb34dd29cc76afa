//! `gateway token`: signs a token with the configured HS256 secret, so the local
//! demo and the tests need no issuer.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use jsonwebtoken::{Algorithm, EncodingKey, Header};

use super::auth::{
    AuthConfig, Claims, EDITABLE_FIELDS, JwtAlgorithm, MIN_SECRET_LEN, SCOPE_READ, SCOPE_WRITE,
    Scope,
};

/// What `gateway token` puts in a token.
#[derive(Clone, Debug)]
pub struct Mint {
    /// The caller's identity.
    pub sub: String,
    /// How long the token is valid.
    pub ttl: Duration,
    /// Only `users:read`.
    pub read_only: bool,
    /// Limit writes to these fields (empty: all).
    pub fields: Vec<String>,
}

/// Signs an HS256 token with the configured secret, for local use.
pub fn mint(config: &AuthConfig, mint: &Mint) -> anyhow::Result<String> {
    if config.jwt_algorithm != JwtAlgorithm::Hs256 {
        bail!("gateway token signs HS256 only; tokens for RS256/ES256 come from their issuer");
    }
    let secret = config.hs256_secret().context(
        "gateway token needs the secret: --jwt-secret (JWT_SECRET) or --jwt-secret-file",
    )?;
    if secret.len() < MIN_SECRET_LEN {
        bail!("--jwt-secret must be at least {MIN_SECRET_LEN} bytes");
    }
    for field in &mint.fields {
        if !EDITABLE_FIELDS.contains(&field.as_str()) {
            bail!("--fields: {field:?} is not one of {EDITABLE_FIELDS:?}");
        }
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_secs();
    let scope = if mint.read_only {
        SCOPE_READ.to_owned()
    } else {
        format!("{SCOPE_READ} {SCOPE_WRITE}")
    };
    let claims = Claims {
        sub: mint.sub.clone(),
        exp: now + mint.ttl.as_secs().max(1),
        iat: Some(now),
        nbf: None,
        aud: config.jwt_audience.clone().map(serde_json::Value::String),
        iss: config.jwt_issuer.clone(),
        scope: Some(Scope::Text(scope)),
        fields: (!mint.fields.is_empty()).then(|| serde_json::json!(mint.fields)),
    };
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )?)
}
