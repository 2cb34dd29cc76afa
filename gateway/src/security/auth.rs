//! Who is calling, and what they may do: JWT bearer tokens checked with the one
//! configured algorithm and key, turned into a [`Caller`] with read, write and
//! field-level write permissions. `--auth none` makes every caller an anonymous
//! one with every permission (the local demo).
//!
//! Claims (besides `exp`, required, and `nbf`, `aud`, `iss`, checked when present
//! or configured):
//! - `sub`: the caller's identity: rate limits, socket caps and the user-service's
//!   logs are per `sub`.
//! - `scope`: space-separated (or a JSON list): `users:read` to read users and open
//!   the socket, `users:write` to change them.
//! - `fields`: optional list of the fields `users:write` may change
//!   (`first_name`, `last_name`); absent means both. Creating and deleting need
//!   both.

use std::{
    path::PathBuf,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use service_runtime::secret::FileSecret;

use crate::error::AuthError;

/// Scope that lets a caller read users and open the socket.
pub const SCOPE_READ: &str = "users:read";
/// Scope that lets a caller change users (within `fields`, when given).
pub const SCOPE_WRITE: &str = "users:write";
/// The fields a write may change.
pub const EDITABLE_FIELDS: [&str; 2] = ["first_name", "last_name"];
/// Shortest HS256 secret accepted: RFC 7518 §3.2 wants a key as long as the hash.
pub const MIN_SECRET_LEN: usize = 32;

/// The latest time a token may name (9999-12-31T23:59:59Z): `exp`, `nbf` or `iat`
/// past it are refused, so no arithmetic on them can overflow.
pub const LATEST_TIME: u64 = 253_402_300_799;

/// Whether requests are authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// Every caller is anonymous and may do everything (local development only).
    None,
    /// Every API request and socket needs a valid JWT bearer token.
    Jwt,
}

/// The signing algorithms a deployment may choose from (one at a time).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum JwtAlgorithm {
    /// HMAC-SHA256 with a shared secret (`--jwt-secret`).
    #[value(name = "HS256")]
    Hs256,
    /// RSA PKCS#1 v1.5 SHA-256 with a public key (`--jwt-public-key`).
    #[value(name = "RS256")]
    Rs256,
    /// ECDSA P-256 SHA-256 with a public key (`--jwt-public-key`).
    #[value(name = "ES256")]
    Es256,
}

impl From<JwtAlgorithm> for Algorithm {
    fn from(algorithm: JwtAlgorithm) -> Algorithm {
        match algorithm {
            JwtAlgorithm::Hs256 => Algorithm::HS256,
            JwtAlgorithm::Rs256 => Algorithm::RS256,
            JwtAlgorithm::Es256 => Algorithm::ES256,
        }
    }
}

/// The authentication flags, shared by the server and the `token` subcommand.
#[derive(Clone, Debug, clap::Args)]
pub struct AuthConfig {
    /// `jwt`: every API request and socket needs a bearer token. `none`: no
    /// authentication at all, for local development only (logged loudly).
    #[arg(long, env = "AUTH", value_enum, default_value_t = AuthMode::Jwt, global = true)]
    pub auth: AuthMode,

    /// The one algorithm tokens may be signed with; any other (and `none`) is
    /// refused.
    #[arg(long, env = "JWT_ALGORITHM", value_enum, default_value_t = JwtAlgorithm::Hs256, global = true)]
    pub jwt_algorithm: JwtAlgorithm,

    /// HS256 shared secret (at least 32 bytes). Prefer the environment variable: a
    /// flag shows in `ps`.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true, global = true)]
    pub jwt_secret: Option<String>,

    /// `--jwt-secret` read from this file (its first line): a mounted Kubernetes
    /// Secret, kept out of the environment and `ps`.
    #[arg(long, env = "JWT_SECRET_FILE", value_name = "PATH", global = true,
          value_parser = service_runtime::secret::file, conflicts_with = "jwt_secret")]
    pub jwt_secret_file: Option<FileSecret>,

    /// RS256/ES256: path of the PEM public key tokens are verified with.
    #[arg(long, env = "JWT_PUBLIC_KEY", global = true)]
    pub jwt_public_key: Option<PathBuf>,

    /// Required `aud` claim (unset: a token with an `aud` is refused).
    #[arg(long, env = "JWT_AUDIENCE", global = true)]
    pub jwt_audience: Option<String>,

    /// Required `iss` claim (unset: not checked).
    #[arg(long, env = "JWT_ISSUER", global = true)]
    pub jwt_issuer: Option<String>,

    /// Clock skew allowed on `exp` and `nbf`.
    #[arg(long, env = "JWT_LEEWAY", default_value = "30s", value_parser = humantime::parse_duration, global = true)]
    pub jwt_leeway: Duration,
}

impl AuthConfig {
    /// The HS256 key, from `--jwt-secret` or its file.
    pub fn hs256_secret(&self) -> Option<&str> {
        service_runtime::secret::given(self.jwt_secret.as_deref(), self.jwt_secret_file.as_ref())
    }
}

/// A token's claims, as far as the gateway reads them; others are ignored.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Claims {
    /// The caller's identity.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sub: String,
    /// Expiry (seconds since 1970), required.
    pub exp: u64,
    /// Not before (seconds since 1970).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at (seconds since 1970); informative only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Audience: a string or a list (checked by `jsonwebtoken`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<serde_json::Value>,
    /// Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// `users:read` and/or `users:write`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<Scope>,
    /// The fields `users:write` may change, a list of names; absent: all. Kept as
    /// JSON so a present but malformed claim (`null`, a string) is told from an
    /// absent one and refused rather than read as "all".
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub fields: Option<serde_json::Value>,
}

/// A claim that is present (even as `null`) deserializes to `Some`; only an absent
/// one is `None` (through `default`).
fn present<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(deserializer).map(Some)
}

impl Claims {
    /// Checks what the JWT library does not: times within [`LATEST_TIME`] and a
    /// `fields` claim that is a list of strings. Returns the fields writes may
    /// change.
    fn checked_fields(&self) -> Result<Vec<String>, AuthError> {
        let times = [Some(self.exp), self.nbf, self.iat];
        if times.into_iter().flatten().any(|t| t > LATEST_TIME) {
            return Err(AuthError::Invalid("a time claim is out of range".into()));
        }
        let names = match &self.fields {
            None => return Ok(EDITABLE_FIELDS.map(str::to_owned).to_vec()),
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .map(serde_json::Value::as_str)
                .collect::<Option<Vec<_>>>(),
            Some(_) => None,
        };
        let names = names.ok_or_else(|| {
            AuthError::Invalid("the fields claim is not a list of strings".into())
        })?;
        Ok(EDITABLE_FIELDS
            .iter()
            .filter(|f| names.contains(f))
            .map(|f| (*f).to_owned())
            .collect())
    }
}

/// What the JWT library lets through: a header with a `crit` member (it names
/// extensions the recipient must understand, and we understand none: RFC 7515
/// §4.1.11), and a header or claims set that is not UTF-8 (RFC 7519 §7.2; the
/// library skips the bytes of claims it does not read unchecked).
fn precheck(token: &str) -> Result<(), AuthError> {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    let mut segments = token.split('.');
    let mut decoded = || {
        let segment = segments.next().unwrap_or_default();
        let bytes = URL_SAFE_NO_PAD.decode(segment.trim_end_matches('=')).ok()?;
        String::from_utf8(bytes).ok()
    };
    let (Some(header), Some(_claims)) = (decoded(), decoded()) else {
        return Err(AuthError::Invalid("a segment that is not UTF-8".into()));
    };
    let critical = serde_json::from_str::<serde_json::Value>(&header)
        .is_ok_and(|header| header.get("crit").is_some());
    if critical {
        return Err(AuthError::Invalid("a crit header".into()));
    }
    Ok(())
}

/// `scope` as OAuth 2 writes it (one space-separated string) or as a list.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Scope {
    /// `"users:read users:write"`.
    Text(String),
    /// `["users:read", "users:write"]`.
    List(Vec<String>),
}

impl Scope {
    fn contains(&self, wanted: &str) -> bool {
        match self {
            Scope::Text(text) => text.split_ascii_whitespace().any(|s| s == wanted),
            Scope::List(list) => list.iter().any(|s| s == wanted),
        }
    }
}

/// Who is calling, and what they may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The token's `sub`; `None` for an anonymous caller (`--auth none`).
    pub sub: Option<String>,
    /// May read users and open the socket (`users:read`).
    pub read: bool,
    /// May change users, within `fields` (`users:write`).
    pub write: bool,
    /// Fields writes may change (a subset of [`EDITABLE_FIELDS`]).
    pub fields: Vec<String>,
    /// When the token stops being valid (its `exp` plus the leeway).
    pub expires_at: Option<SystemTime>,
}

impl Caller {
    /// The caller of `--auth none`: anonymous, allowed everything.
    pub fn anonymous() -> Caller {
        Caller {
            sub: None,
            read: true,
            write: true,
            fields: EDITABLE_FIELDS.map(str::to_owned).to_vec(),
            expires_at: None,
        }
    }

    /// No one: no identity and no permission (whose budget a request with
    /// refused credentials spends: its client address's).
    pub fn nobody() -> Caller {
        Caller {
            sub: None,
            read: false,
            write: false,
            fields: Vec::new(),
            expires_at: None,
        }
    }

    /// Whether a write may change `field`.
    pub fn may_write(&self, field: &str) -> bool {
        self.write && self.fields.iter().any(|f| f == field)
    }

    /// Whether writes may change every field: what create and delete need.
    pub fn may_write_all(&self) -> bool {
        EDITABLE_FIELDS.iter().all(|f| self.may_write(f))
    }
}

/// Checks tokens with the configured key; built once at start-up.
pub struct Authenticator {
    mode: AuthMode,
    key: Option<DecodingKey>,
    validation: Validation,
    leeway: Duration,
}

impl Authenticator {
    /// Builds the checker; with `--auth jwt` a key for the chosen algorithm is
    /// required, and a key for another algorithm is refused.
    pub fn new(config: &AuthConfig) -> anyhow::Result<Authenticator> {
        let algorithm = Algorithm::from(config.jwt_algorithm);
        let mut validation = Validation::new(algorithm);
        validation.leeway = config.jwt_leeway.as_secs();
        validation.validate_nbf = true;
        validation.validate_exp = true;
        let mut required = vec!["exp"];
        match &config.jwt_audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            // A token naming an audience is refused when none is configured.
            None => validation.validate_aud = true,
        }
        if let Some(issuer) = &config.jwt_issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        let key = match config.auth {
            AuthMode::None => None,
            AuthMode::Jwt => Some(decoding_key(config)?),
        };
        Ok(Authenticator {
            mode: config.auth,
            key,
            validation,
            leeway: config.jwt_leeway,
        })
    }

    /// An authenticator that lets everyone in (tests, `--auth none`).
    pub fn disabled() -> Authenticator {
        Authenticator {
            mode: AuthMode::None,
            key: None,
            validation: Validation::default(),
            leeway: Duration::ZERO,
        }
    }

    /// Whether tokens are checked.
    pub fn enabled(&self) -> bool {
        self.mode == AuthMode::Jwt
    }

    /// The caller a request's token (if any) makes. With auth off every request is
    /// [`Caller::anonymous`], whatever it sends.
    pub fn authenticate(&self, token: Option<&str>) -> Result<Caller, AuthError> {
        let Some(key) = &self.key else {
            return Ok(Caller::anonymous());
        };
        let token = token.ok_or(AuthError::Missing)?;
        precheck(token)?;
        let data = jsonwebtoken::decode::<Claims>(token, key, &self.validation)
            .map_err(|e| AuthError::Invalid(format!("{:?}", e.kind())))?;
        let claims = data.claims;
        let fields = claims.checked_fields()?;
        let scope = |wanted| claims.scope.as_ref().is_some_and(|s| s.contains(wanted));
        // Within range, by `checked_fields`; checked all the same.
        let expires_at = UNIX_EPOCH
            .checked_add(Duration::from_secs(claims.exp))
            .and_then(|exp| exp.checked_add(self.leeway))
            .ok_or_else(|| AuthError::Invalid("exp is out of range".into()))?;
        Ok(Caller {
            sub: Some(claims.sub.clone()).filter(|s| !s.is_empty()),
            read: scope(SCOPE_READ),
            write: scope(SCOPE_WRITE),
            fields,
            expires_at: Some(expires_at),
        })
    }
}

fn decoding_key(config: &AuthConfig) -> anyhow::Result<DecodingKey> {
    match (
        config.jwt_algorithm,
        config.hs256_secret(),
        &config.jwt_public_key,
    ) {
        (_, Some(_), Some(_)) => {
            bail!("give either --jwt-secret (HS256) or --jwt-public-key (RS256/ES256), not both")
        }
        (JwtAlgorithm::Hs256, Some(secret), None) => {
            if secret.len() < MIN_SECRET_LEN {
                bail!("--jwt-secret must be at least {MIN_SECRET_LEN} bytes");
            }
            Ok(DecodingKey::from_secret(secret.as_bytes()))
        }
        (JwtAlgorithm::Hs256, None, _) => bail!(
            "--auth jwt with HS256 needs --jwt-secret (JWT_SECRET) or --jwt-secret-file \
             (JWT_SECRET_FILE); for local development only, --auth none turns \
             authentication off"
        ),
        (algorithm, None, Some(path)) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("reading the JWT public key {}", path.display()))?;
            let key = match algorithm {
                JwtAlgorithm::Rs256 => DecodingKey::from_rsa_pem(&pem),
                _ => DecodingKey::from_ec_pem(&pem),
            };
            key.with_context(|| format!("{} is not a {algorithm:?} public key", path.display()))
        }
        (algorithm, _, None) => bail!(
            "--auth jwt with {algorithm:?} needs --jwt-public-key (JWT_PUBLIC_KEY), a PEM file"
        ),
    }
}

/// The bearer token of an `Authorization` header: `None` when there is no header
/// or it names another scheme (as DRF does); `Some("")` for `Bearer` alone.
pub fn bearer(authorization: Option<&str>) -> Option<&str> {
    let value = authorization?.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// The token of a WebSocket handshake's `Sec-WebSocket-Protocol: bearer, <token>`.
pub fn subprotocol_token(protocols: Option<&str>) -> Option<&str> {
    let mut offered = protocols?.split(',').map(str::trim);
    while let Some(protocol) = offered.next() {
        if protocol == "bearer" {
            return offered.next().filter(|t| !t.is_empty());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::mint::{Mint, mint};
    use clap::Parser;
    use jsonwebtoken::EncodingKey;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        auth: AuthConfig,
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn config(args: &[&str]) -> AuthConfig {
        let mut all = vec!["gateway"];
        all.extend_from_slice(args);
        Flags::try_parse_from(all).unwrap().auth
    }

    fn token(config: &AuthConfig, fields: &[&str], read_only: bool) -> String {
        mint(
            config,
            &Mint {
                sub: "alice".into(),
                ttl: Duration::from_secs(60),
                read_only,
                fields: fields.iter().map(|f| (*f).to_owned()).collect(),
            },
        )
        .unwrap()
    }

    #[test]
    fn jwt_is_the_default_and_needs_a_key() {
        let config = config(&[]);
        assert_eq!(config.auth, AuthMode::Jwt);
        assert!(Authenticator::new(&config).is_err());
        let short = super::tests::config(&["--jwt-secret", "short"]);
        assert!(Authenticator::new(&short).is_err());
    }

    #[test]
    fn the_key_may_come_from_a_file_and_is_held_to_the_same_length() {
        let dir = std::env::temp_dir().join(format!("jwt-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("jwt-secret");
        let path = file.to_str().unwrap();
        std::fs::write(&file, format!("{SECRET}\n")).unwrap();
        let from_file = config(&["--jwt-secret-file", path]);
        let minted = token(&config(&["--jwt-secret", SECRET]), &[], false);
        let caller = Authenticator::new(&from_file)
            .unwrap()
            .authenticate(Some(&minted))
            .unwrap();
        assert!(caller.write);
        std::fs::write(&file, "short\n").unwrap();
        let short = config(&["--jwt-secret-file", path]);
        let error = Authenticator::new(&short).err().unwrap().to_string();
        assert!(error.contains("at least 32"), "{error}");
        let both =
            Flags::try_parse_from(["gateway", "--jwt-secret", SECRET, "--jwt-secret-file", path]);
        assert!(both.is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_minted_token_carries_its_permissions() {
        let config = config(&["--jwt-secret", SECRET]);
        let auth = Authenticator::new(&config).unwrap();
        let full = auth
            .authenticate(Some(&token(&config, &[], false)))
            .unwrap();
        assert_eq!(full.sub.as_deref(), Some("alice"));
        assert!(full.read && full.may_write_all());
        let first = auth
            .authenticate(Some(&token(&config, &["first_name"], false)))
            .unwrap();
        assert!(first.may_write("first_name") && !first.may_write("last_name"));
        assert!(!first.may_write_all());
        let read_only = auth.authenticate(Some(&token(&config, &[], true))).unwrap();
        assert!(read_only.read && !read_only.may_write("first_name"));
    }

    #[test]
    fn missing_forged_and_alg_none_tokens_are_refused() {
        let config = config(&["--jwt-secret", SECRET]);
        let auth = Authenticator::new(&config).unwrap();
        assert_eq!(auth.authenticate(None), Err(AuthError::Missing));
        let good = token(&config, &[], false);
        let forged = format!("{}x", &good[..good.len() - 1]);
        assert!(matches!(
            auth.authenticate(Some(&forged)),
            Err(AuthError::Invalid(_))
        ));
        let payload = good.split('.').nth(1).unwrap();
        // {"alg":"none","typ":"JWT"}
        let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
        assert!(matches!(
            auth.authenticate(Some(&none)),
            Err(AuthError::Invalid(_))
        ));
    }

    /// An HS256 token with exactly this header and these claims.
    fn signed(header: serde_json::Value, claims: serde_json::Value) -> String {
        use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let key = EncodingKey::from_secret(SECRET.as_bytes());
        let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256);
        format!("{message}.{}", signature.unwrap())
    }

    fn hs256() -> serde_json::Value {
        serde_json::json!({"alg": "HS256", "typ": "JWT"})
    }

    fn in_an_hour() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 3600
    }

    #[test]
    fn absurd_time_claims_are_refused_never_a_panic() {
        let auth = Authenticator::new(&config(&["--jwt-secret", SECRET])).unwrap();
        let exp = in_an_hour();
        let absurd = [
            serde_json::json!({"exp": u64::MAX}),
            serde_json::json!({"exp": LATEST_TIME + 1}),
            serde_json::json!({"exp": -1}),
            serde_json::json!({"exp": 1.5e9}),
            serde_json::json!({"exp": 1e300}),
            serde_json::json!({"exp": "tomorrow"}),
            serde_json::json!({"exp": exp, "nbf": u64::MAX}),
            serde_json::json!({"exp": exp, "nbf": -5}),
            serde_json::json!({"exp": exp, "iat": u64::MAX}),
            serde_json::json!({"exp": exp, "iat": i64::MIN}),
            serde_json::json!({"exp": exp, "iat": 0.5}),
        ];
        for mut claims in absurd {
            claims["scope"] = "users:read".into();
            let token = signed(hs256(), claims.clone());
            assert!(
                matches!(auth.authenticate(Some(&token)), Err(AuthError::Invalid(_))),
                "{claims}"
            );
        }
        let sane = signed(hs256(), serde_json::json!({"exp": exp, "iat": 0}));
        assert!(auth.authenticate(Some(&sane)).is_ok());
    }

    #[test]
    fn a_present_but_malformed_fields_claim_is_refused() {
        let auth = Authenticator::new(&config(&["--jwt-secret", SECRET])).unwrap();
        let exp = in_an_hour();
        for fields in [
            serde_json::Value::Null,
            "first_name".into(),
            serde_json::json!([1]),
            serde_json::json!({"first_name": true}),
        ] {
            let claims = serde_json::json!({"exp": exp, "scope": "users:write", "fields": fields});
            let token = signed(hs256(), claims);
            assert!(
                matches!(auth.authenticate(Some(&token)), Err(AuthError::Invalid(_))),
                "{fields}"
            );
        }
        let listed = serde_json::json!({"exp": exp, "fields": ["last_name", "email"]});
        let caller = auth.authenticate(Some(&signed(hs256(), listed))).unwrap();
        assert_eq!(caller.fields, ["last_name"]);
    }

    #[test]
    fn claims_that_are_not_utf8_are_refused_even_in_claims_not_read() {
        use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
        let auth = Authenticator::new(&config(&["--jwt-secret", SECRET])).unwrap();
        let mut claims = format!("{{\"exp\":{},\"other\":\"", in_an_hour()).into_bytes();
        claims.extend_from_slice(&[0xd4, b'x', b'"', b'}']);
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(hs256().to_string()),
            URL_SAFE_NO_PAD.encode(&claims)
        );
        let key = EncodingKey::from_secret(SECRET.as_bytes());
        let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256);
        let token = format!("{message}.{}", signature.unwrap());
        assert!(matches!(
            auth.authenticate(Some(&token)),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn a_token_with_a_crit_header_is_refused() {
        let auth = Authenticator::new(&config(&["--jwt-secret", SECRET])).unwrap();
        let claims = serde_json::json!({"exp": in_an_hour()});
        let mut header = hs256();
        header["crit"] = serde_json::json!(["exp"]);
        assert!(matches!(
            auth.authenticate(Some(&signed(header, claims.clone()))),
            Err(AuthError::Invalid(_))
        ));
        assert!(auth.authenticate(Some(&signed(hs256(), claims))).is_ok());
    }

    #[test]
    fn auth_none_lets_everyone_do_everything() {
        let auth = Authenticator::new(&config(&["--auth", "none"])).unwrap();
        assert!(!auth.enabled());
        assert_eq!(auth.authenticate(None).unwrap(), Caller::anonymous());
    }

    #[test]
    fn bearer_tokens_are_found_in_both_places() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(Some("Bearer")), Some(""));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(None), None);
        assert_eq!(subprotocol_token(Some("bearer, abc.def")), Some("abc.def"));
        assert_eq!(subprotocol_token(Some("chat")), None);
        assert_eq!(subprotocol_token(Some("bearer")), None);
    }
}
