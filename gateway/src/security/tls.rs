//! TLS with rustls (ring): the gateway's own HTTPS/WSS listener (warp 0.4 has no
//! TLS, so `server` wraps each accepted connection), and the client side of gRPC
//! to a user-service that serves TLS.

use std::{path::Path, sync::Arc};

use anyhow::{Context as _, bail};
use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        self,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    },
};
use tonic::transport::{Certificate, ClientTlsConfig};

/// An acceptor for HTTPS (HTTP/1.1 and h2 by ALPN) from a PEM certificate chain
/// and its PEM private key.
pub fn acceptor(cert: &Path, key: &Path) -> anyhow::Result<TlsAcceptor> {
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading the TLS certificate {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing the TLS certificate {}", cert.display()))?;
    if chain.is_empty() {
        bail!("{} holds no certificate", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading the TLS private key {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the TLS certificate and key do not match")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// TLS for gRPC to an `https://` user-service: trusting `ca` (a PEM file) when
/// given, else the system's roots.
pub fn grpc_client(ca: Option<&Path>) -> anyhow::Result<ClientTlsConfig> {
    let config = ClientTlsConfig::new();
    Ok(match ca {
        Some(path) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("reading the user-service CA {}", path.display()))?;
            config.ca_certificate(Certificate::from_pem(pem))
        }
        None => config.with_native_roots(),
    })
}
