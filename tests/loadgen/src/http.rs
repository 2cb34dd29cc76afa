//! One HTTP/1.1 keep-alive connection (hyper's low-level client), so each worker
//! owns exactly one connection and the measured concurrency is the one asked for,
//! with no pool deciding behind our back.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::target::Target;

/// How long one request may take before it counts as failed (and its connection
/// is replaced), so a hung server ends a run instead of stalling it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A keep-alive HTTP/1.1 connection to the target.
pub struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
    authority: String,
    authorization: Option<String>,
}

impl Conn {
    /// Opens a connection (TCP_NODELAY, as a browser or proxy would).
    pub async fn open(target: &Target) -> anyhow::Result<Self> {
        let tcp = TcpStream::connect(target.addr).await?;
        tcp.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(async move {
            // Ends when the peer closes or the sender is dropped; errors surface
            // on the next request.
            let _ = connection.await;
        });
        Ok(Self {
            sender,
            authority: target.authority.clone(),
            authorization: target.token.as_ref().map(|t| format!("Bearer {t}")),
        })
    }

    /// Sends one request and reads the whole answer, within [`REQUEST_TIMEOUT`].
    /// A JSON body is sent with `Content-Type: application/json`. After an error
    /// the connection should be dropped.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        json_body: Option<Bytes>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(method, path, json_body))
            .await
            .map_err(|_| anyhow::anyhow!("no answer within {REQUEST_TIMEOUT:?}"))?
    }

    async fn exchange(
        &mut self,
        method: Method,
        path: &str,
        json_body: Option<Bytes>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        self.sender.ready().await?;
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.authority)
            .header(header::ACCEPT, "application/json");
        if let Some(authorization) = &self.authorization {
            request = request.header(header::AUTHORIZATION, authorization);
        }
        if json_body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request = request.body(Full::new(json_body.unwrap_or_default()))?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

/// Makes sure user `id` exists, creating one when it does not (a fresh
/// deployment), and returns the id to load.
pub async fn ensure_user(target: &Target, id: i64) -> anyhow::Result<i64> {
    let mut conn = Conn::open(target).await?;
    let (status, body) = conn.send(Method::GET, &target.user_path(id), None).await?;
    if status.is_success() {
        return Ok(id);
    }
    if status != StatusCode::NOT_FOUND {
        anyhow::bail!(
            "GET {} answered {status}: {}",
            target.user_path(id),
            String::from_utf8_lossy(&body)
        );
    }
    let create = Bytes::from_static(br#"{"first_name":"loadgen","last_name":"loadgen"}"#);
    let (status, body) = conn
        .send(Method::POST, &target.users_path(), Some(create))
        .await?;
    if !status.is_success() {
        anyhow::bail!(
            "user {id} does not exist and creating one answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let user: serde_json::Value = serde_json::from_slice(&body)?;
    let created = user["id"]
        .as_i64()
        .ok_or_else(|| anyhow::anyhow!("the created user has no id: {user}"))?;
    eprintln!("loadgen: user {id} does not exist; created user {created} to load instead");
    Ok(created)
}
