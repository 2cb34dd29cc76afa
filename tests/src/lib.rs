//! Helpers for the end-to-end tests: start the real `user-service` and `gateway`
//! binaries (built by cargo on first use) on free ports with a fresh SQLite file,
//! a real `redis-server`, and talk to them with real HTTP and WebSocket clients.
//! Every wait is bounded, so a broken build fails instead of hanging.

pub mod credentials;
pub mod faults;
pub mod feed_order;
pub mod manifests;

pub use test_support::{Redis, eventually, free_port, metric_value, poll_until, send_signal};

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::OnceLock,
    time::Duration,
};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use serde_json::Value;
use tokio::{net::TcpStream, process::Command};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{Message, protocol::CloseFrame},
};

/// How long a process may take to say it is listening.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a test waits for any one expected frame or answer.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// The folder cargo builds into (`target/debug` for tests).
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/debug/deps/<test> → target/debug
    exe.parent()
        .and_then(Path::parent)
        .expect("a test binary lives in target/<profile>/deps")
        .to_path_buf()
}

/// The path of a workspace binary, built once per test process.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("tests/ sits in the workspace");
        // The same selection `cargo test --workspace` builds, so features unify
        // as they did for it: after the test command's build this is a no-op,
        // where building only the two binaries rebuilt them (other features).
        let status = std::process::Command::new(cargo)
            .current_dir(workspace)
            .args(["build", "--workspace", "--all-targets"])
            .status()
            .expect("running cargo build");
        assert!(status.success(), "building the binaries failed");
    });
    bin_dir().join(name)
}

/// One of our binaries, running: a [`test_support::Process`] (its output kept,
/// killed when dropped, signals) that is known to listen, and where.
pub struct Process {
    process: test_support::Process,
    /// The address it logged as bound (`listen=`).
    pub addr: SocketAddr,
}

impl std::ops::Deref for Process {
    type Target = test_support::Process;

    fn deref(&self) -> &test_support::Process {
        &self.process
    }
}

impl std::ops::DerefMut for Process {
    fn deref_mut(&mut self) -> &mut test_support::Process {
        &mut self.process
    }
}

impl Process {
    /// Starts `program` with `args` (logging JSON lines) and waits until it logs a
    /// message containing `listening` with a `listen` field.
    pub async fn start(program: &Path, args: &[String]) -> anyhow::Result<Process> {
        Self::start_with(program, args, |_| {}).await
    }

    /// [`Process::start`], with `configure` applied to the command first (the
    /// fault suite sets signal dispositions there; a `RUST_LOG` set there wins
    /// over `E2E_LOG`).
    pub async fn start_with(
        program: &Path,
        args: &[String],
        configure: impl FnOnce(&mut Command),
    ) -> anyhow::Result<Process> {
        let mut command = Command::new(program);
        command.env(
            "RUST_LOG",
            std::env::var("E2E_LOG").unwrap_or_else(|_| "info".into()),
        );
        configure(&mut command);
        command.args(args).env("LOG_FORMAT", "json");
        let mut process = test_support::Process::spawn(command)?;
        let addr = process
            .wait_for_line("that it is listening", START_TIMEOUT, listening_addr)
            .await?;
        Ok(Process { process, addr })
    }
}

/// The address in a JSON log line saying the process listens (`listen=`).
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let json = serde_json::from_str::<Value>(line).ok()?;
    if !json["message"].as_str()?.contains("listening") {
        return None;
    }
    json["listen"].as_str()?.parse().ok()
}

/// A user-service on a fresh SQLite database in its own temporary folder.
pub struct UserService {
    pub process: Process,
    pub dir: tempfile::TempDir,
}

impl UserService {
    /// Starts one; `extra` are more flags (e.g. `--redis-url`).
    pub async fn start(extra: &[String]) -> UserService {
        Self::start_with(extra, |_| {}).await
    }

    /// [`UserService::start`], with `configure` applied to the command.
    pub async fn start_with(extra: &[String], configure: impl FnOnce(&mut Command)) -> UserService {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let process = Self::start_in(&dir, extra, "127.0.0.1:0", configure).await;
        UserService { process, dir }
    }

    async fn start_in(
        dir: &tempfile::TempDir,
        extra: &[String],
        listen: &str,
        configure: impl FnOnce(&mut Command),
    ) -> Process {
        let mut args = vec![
            "--listen".to_owned(),
            listen.to_owned(),
            "--database-url".to_owned(),
            format!("sqlite://{}", dir.path().join("users.db").display()),
        ];
        args.extend(extra.iter().cloned());
        Process::start_with(&binary("user-service"), &args, configure)
            .await
            .expect("the user-service starts")
    }

    /// The gRPC URL the gateway is given.
    pub fn url(&self) -> String {
        format!("http://{}", self.process.addr)
    }

    /// Stops it and starts it again on the same port and database.
    pub async fn restart(&mut self, extra: &[String]) {
        let addr = self.process.addr;
        self.process.kill().await;
        self.start_again(extra, addr).await;
    }

    /// Starts it again on `addr` after it was stopped.
    pub async fn start_again(&mut self, extra: &[String], addr: SocketAddr) {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            let mut args = vec![
                "--listen".to_owned(),
                addr.to_string(),
                "--database-url".to_owned(),
                format!("sqlite://{}", self.dir.path().join("users.db").display()),
            ];
            args.extend(extra.iter().cloned());
            match Process::start(&binary("user-service"), &args).await {
                Ok(process) => {
                    self.process = process;
                    return;
                }
                // The port may linger for a moment after the old process.
                Err(error) if tokio::time::Instant::now() < deadline => {
                    let _ = error;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(error) => panic!("the user-service restarts: {error}"),
            }
        }
    }
}

/// Flags that lift the gateway's rate limits, for tests that write and connect
/// faster than any one client should.
pub fn unthrottled() -> Vec<String> {
    ["--rate-limit-writes", "off", "--rate-limit-connects", "off"]
        .map(str::to_owned)
        .to_vec()
}

/// Starts a gateway in front of `user_service_url`, with more flags in `extra`.
/// Unless `extra` says otherwise, it runs with `--auth none` (the security suite
/// tests authentication; the others test everything else).
pub async fn start_gateway(user_service_url: &str, extra: &[String]) -> Process {
    let mut args = vec![
        "--listen".to_owned(),
        "127.0.0.1:0".to_owned(),
        "--user-service-url".to_owned(),
        user_service_url.to_owned(),
    ];
    if !extra.iter().any(|arg| arg == "--auth") {
        args.extend(["--auth".to_owned(), "none".to_owned()]);
    }
    args.extend(extra.iter().cloned());
    Process::start(&binary("gateway"), &args)
        .await
        .expect("the gateway starts")
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON (`Null` when empty or not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// A header's value, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A plain HTTP/1.1 client for one gateway.
#[derive(Clone)]
pub struct Http {
    pub addr: SocketAddr,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl Http {
    /// A client for the gateway at `addr`.
    pub fn new(addr: SocketAddr) -> Http {
        Http {
            addr,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// Sends a request; `body` is sent as is with `content_type` when given.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> Reply {
        self.try_send(method, path, content_type, body, headers)
            .await
            .unwrap_or_else(|error| panic!("{error}"))
    }

    /// [`Http::send`], with a timeout or a failed connection as an error instead
    /// of a panic (for clients that expect the gateway to go away).
    pub async fn try_send(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> Result<Reply, String> {
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!("http://{}{}", self.addr, path));
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .expect("a valid request");
        let response = tokio::time::timeout(STEP_TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| format!("{method} {path} timed out"))?
            .map_err(|e| format!("{method} {path} failed: {e}"))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = tokio::time::timeout(STEP_TIMEOUT, response.into_body().collect())
            .await
            .map_err(|_| format!("{method} {path}: reading the body timed out"))?
            .map_err(|e| format!("{method} {path}: reading the body failed: {e}"))?
            .to_bytes();
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    /// A plain GET.
    pub async fn get(&self, path: &str) -> Reply {
        self.send("GET", path, None, None, &[]).await
    }

    /// Sends `json` with `Content-Type: application/json`.
    pub async fn json(&self, method: &str, path: &str, json: &Value) -> Reply {
        self.send(
            method,
            path,
            Some("application/json"),
            Some(serde_json::to_vec(json).unwrap()),
            &[],
        )
        .await
    }

    /// Creates a user; its JSON.
    pub async fn create(&self, first: &str, last: &str) -> Value {
        let reply = self
            .json(
                "POST",
                "/api/users/",
                &serde_json::json!({"first_name": first, "last_name": last}),
            )
            .await;
        assert_eq!(reply.status, 201, "creating a user: {:?}", reply.body);
        reply.json()
    }

    /// PATCHes a user's first name; its JSON.
    pub async fn rename(&self, id: i64, first: &str) -> Value {
        let reply = self
            .json(
                "PATCH",
                &format!("/api/users/{id}/"),
                &serde_json::json!({"first_name": first}),
            )
            .await;
        assert_eq!(reply.status, 200, "renaming a user: {:?}", reply.body);
        reply.json()
    }

    /// Waits (bounded) until `/readyz` answers 200.
    pub async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            let reply = self.get("/readyz").await;
            if reply.status == 200 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the gateway never became ready: {:?}",
                reply.body
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A WebSocket client.
pub struct Socket {
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// What a socket read ended with, when it was not a text frame.
#[derive(Debug, PartialEq)]
pub enum Ended {
    Closed(Option<u16>),
    Error(String),
    TimedOut,
}

impl Socket {
    /// Connects to `/ws/user-updates/` with `query`, or says why it could not
    /// (for clients that expect the gateway to go away).
    pub async fn open(addr: SocketAddr, query: &str) -> Result<Socket, String> {
        let url = format!("ws://{addr}/ws/user-updates/?{query}");
        match tokio::time::timeout(STEP_TIMEOUT, tokio_tungstenite::connect_async(url)).await {
            Ok(Ok((stream, _))) => Ok(Socket { stream }),
            Ok(Err(error)) => Err(format!("connecting a socket to {addr}: {error}")),
            Err(_) => Err(format!("connecting a socket to {addr} timed out")),
        }
    }

    /// Connects to `/ws/user-updates/` with `query` (e.g. `since=3&epoch=…`).
    pub async fn connect(addr: SocketAddr, query: &str) -> Socket {
        let url = format!("ws://{addr}/ws/user-updates/?{query}");
        let (stream, _) = tokio::time::timeout(STEP_TIMEOUT, tokio_tungstenite::connect_async(url))
            .await
            .expect("connecting the socket timed out")
            .expect("the socket connects");
        Socket { stream }
    }

    /// Connects with extra handshake headers (e.g. `Origin`,
    /// `Sec-WebSocket-Protocol`); the socket and the 101's headers, or the HTTP
    /// status the handshake was refused with.
    pub async fn try_connect(
        addr: SocketAddr,
        query: &str,
        headers: &[(&str, &str)],
    ) -> Result<(Socket, http::HeaderMap), u16> {
        use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};
        let mut request = format!("ws://{addr}/ws/user-updates/?{query}")
            .into_client_request()
            .expect("a valid socket URL");
        for (name, value) in headers {
            request.headers_mut().insert(
                http::HeaderName::from_bytes(name.as_bytes()).expect("a header name"),
                http::HeaderValue::from_str(value).expect("a header value"),
            );
        }
        let connected =
            tokio::time::timeout(STEP_TIMEOUT, tokio_tungstenite::connect_async(request))
                .await
                .expect("the handshake timed out");
        match connected {
            Ok((stream, response)) => Ok((Socket { stream }, response.headers().clone())),
            Err(tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
            Err(error) => panic!("the handshake failed: {error}"),
        }
    }

    /// Connects over a TCP socket with a small receive buffer (a slow reader).
    pub async fn connect_small_buffer(addr: SocketAddr, recv_buffer: u32) -> Socket {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(recv_buffer).unwrap();
        let tcp = socket.connect(addr).await.expect("TCP connects");
        let url = format!("ws://{addr}/ws/user-updates/");
        let (stream, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(tcp))
            .await
            .expect("the socket connects");
        Socket { stream }
    }

    /// The next text frame as JSON, skipping pings and pongs; or how it ended.
    pub async fn next(&mut self, timeout: Duration) -> Result<Value, Ended> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let message = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .map_err(|_| Ended::TimedOut)?;
            match message {
                Some(Ok(Message::Text(text))) => {
                    return Ok(serde_json::from_str(&text).expect("frames are JSON"));
                }
                Some(Ok(Message::Close(frame))) => {
                    return Err(Ended::Closed(frame.map(|f: CloseFrame| f.code.into())));
                }
                Some(Ok(_)) => continue,
                Some(Err(error)) => return Err(Ended::Error(error.to_string())),
                None => return Err(Ended::Closed(None)),
            }
        }
    }

    /// The next text frame as JSON; panics on anything else.
    pub async fn frame(&mut self) -> Value {
        match self.next(STEP_TIMEOUT).await {
            Ok(frame) => frame,
            Err(ended) => panic!("expected a frame, got {ended:?}"),
        }
    }

    /// Sends a text frame.
    pub async fn send_text(&mut self, text: &str) {
        self.stream
            .send(Message::Text(text.into()))
            .await
            .expect("sending a frame");
    }
}
