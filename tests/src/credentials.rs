//! Credentials made at test time, never committed: JWTs signed every way the
//! security suite needs (good, expired, forged, `alg: none`, other keys), RSA and
//! EC key pairs, and a throwaway CA with a `localhost` server certificate for the
//! TLS round trips, plus HTTPS and WSS clients that trust that CA.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
    time::{SystemTime, UNIX_EPOCH},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_rustls::{
    TlsConnector,
    client::TlsStream,
    rustls::{
        self, RootCertStore,
        pki_types::{CertificateDer, ServerName, pem::PemObject},
    },
};

use crate::{http::Reply, timeouts::STEP_TIMEOUT};

/// A random HS256 secret: 32 random bytes, hex-encoded.
pub fn random_secret() -> String {
    use rsa::rand_core::RngCore;
    let mut bytes = [0u8; 32];
    rsa::rand_core::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Seconds since 1970.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a sane clock")
        .as_secs()
}

/// Claims for `sub` valid for an hour, reading and writing everything.
pub fn claims(sub: &str) -> Value {
    json!({
        "sub": sub,
        "exp": now() + 3600,
        "iat": now(),
        "scope": "users:read users:write",
    })
}

/// `claims` signed HS256 with `secret`.
pub fn hs256(secret: &str, claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(secret.as_bytes()),
        claims,
    )
}

/// `claims` signed with `key` by `algorithm`.
pub fn sign(algorithm: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(algorithm), claims, key).expect("signing a token")
}

/// `claims` with `{"alg": "none"}` and no signature.
pub fn unsigned(claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{payload}.")
}

/// An RSA key pair (2048 bits, made once per test process): (private PKCS#1 PEM,
/// public SPKI PEM).
pub fn rsa_keys() -> &'static (String, String) {
    static KEYS: OnceLock<(String, String)> = OnceLock::new();
    KEYS.get_or_init(|| {
        use rsa::{
            RsaPrivateKey,
            pkcs1::EncodeRsaPrivateKey,
            pkcs8::{EncodePublicKey, LineEnding},
        };
        let private = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("an RSA key");
        let private_pem = private
            .to_pkcs1_pem(LineEnding::LF)
            .expect("PEM")
            .to_string();
        let public_pem = private
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("PEM");
        (private_pem, public_pem)
    })
}

/// An ECDSA P-256 key pair: (private PKCS#8 PEM, public SPKI PEM).
pub fn ec_keys() -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("an EC key");
    (key.serialize_pem(), key.public_key_pem())
}

/// A throwaway CA and a server certificate for `localhost` and 127.0.0.1, as PEM
/// files in a temporary folder.
pub struct Pki {
    _dir: tempfile::TempDir,
    /// The CA certificate, for the clients that must trust the server.
    pub ca: PathBuf,
    /// The server's certificate, for the gateway's or user-service's TLS flags.
    pub cert: PathBuf,
    /// The server's private key, likewise.
    pub key: PathBuf,
}

impl Pki {
    /// Makes the CA and the certificate.
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "e2e test CA");
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        let write = |name: &str, text: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        Pki {
            ca: write("ca.pem", ca.pem()),
            cert: write("server.pem", cert.pem()),
            key: write("server.key", key.serialize_pem()),
            _dir: dir,
        }
    }

    /// Flags that make a binary serve TLS with this certificate.
    pub fn server_flags(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.cert.display().to_string(),
            "--tls-key".into(),
            self.key.display().to_string(),
        ]
    }
}

impl Default for Pki {
    fn default() -> Pki {
        Pki::new()
    }
}

/// A TLS connection to `addr` that trusts only `ca` and expects `localhost`.
pub async fn tls_connect(addr: SocketAddr, ca: &Path) -> TlsStream<TcpStream> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("the CA file") {
        roots.add(cert.expect("a CA certificate")).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(addr).await.expect("TCP connects");
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("the TLS handshake succeeds")
}

/// GET `path` over HTTPS.
pub async fn https_get(addr: SocketAddr, ca: &Path, path: &str, headers: &[(&str, &str)]) -> Reply {
    let tls = tls_connect(addr, ca).await;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("HTTP over TLS");
    tokio::spawn(connection);
    let mut request = http::Request::builder()
        .uri(path)
        .header("host", format!("localhost:{}", addr.port()));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Empty::<Bytes>::new()).unwrap();
    let response = tokio::time::timeout(STEP_TIMEOUT, sender.send_request(request))
        .await
        .expect("HTTPS answer in time")
        .expect("an HTTPS answer");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}
