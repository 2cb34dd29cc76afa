//! `floor`: the least a server can do for the fan-out scenario, measured beside
//! the real stack so the client's own share of every latency is visible. It
//! answers `GET`/`PATCH /api/users/{id}/` from memory (no database, no Redis, no
//! gRPC), sends the gateway's `hello`, and broadcasts the gateway's
//! `user_update` frame, encoded once and shared by every socket. Optional faults
//! (drop, duplicate, swap) on one socket let the load generator test itself.
//!
//! It also takes `?users=1,2` (a filtered socket: `hello` with `users`, only
//! those users' updates) and `presence` messages (the whole member list to every
//! filtered follower of the user at once: no coalescing, no rate limit, no
//! checks beyond the JSON shape). A filtered socket still wakes for every event
//! and drops the others, so this is a correctness reference for `subscribers`
//! and `presence`, not a floor for the cost of many filtered sockets.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    io,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime},
};

use bytes::BytesMut;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
    sync::broadcast::{self, error::RecvError, error::TryRecvError},
    task::JoinHandle,
};
use tokio_tungstenite::tungstenite::{
    Message, Utf8Bytes,
    handshake::server::{ErrorResponse, Request, Response},
    protocol::{CloseFrame, WebSocketConfig, frame::coding::CloseCode},
};

use crate::faults::{FaultState, Faults};

/// Options of `floor`.
#[derive(clap::Args, Clone, Debug)]
pub struct FloorArgs {
    /// Address to listen on (port 0: a free port; the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,
    /// Frames a socket may fall behind before it is closed with 1013 (as the
    /// gateway's --ws-queue).
    #[arg(long, default_value_t = 1024)]
    pub queue: usize,
    /// Deliberate faults, for testing the load generator.
    #[command(flatten)]
    pub faults: Faults,
}

/// A running floor server; dropping it stops accepting.
pub struct Floor {
    /// The address it listens on.
    pub addr: SocketAddr,
    state: Arc<State>,
    accept: JoinHandle<()>,
}

impl Floor {
    /// Binds and starts serving.
    pub async fn start(args: &FloorArgs) -> io::Result<Self> {
        // tokio's `TcpListener::bind` listens with a backlog of 128: a burst of
        // connections overflows it and waits a 1 s SYN retransmission.
        let socket = match args.listen {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket.bind(args.listen)?;
        let listener = socket.listen(4096)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            epoch: format!("floor-{}", crate::track::run_id()),
            inner: Mutex::new(Inner::default()),
            tx: broadcast::channel(args.queue.max(1)).0,
            sockets: AtomicUsize::new(0),
            faults: args.faults,
        });
        let shared = state.clone();
        let accept = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        tokio::spawn(serve(stream, shared.clone()));
                    }
                    // Out of descriptors, most likely: wait for some to close.
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        });
        Ok(Self {
            addr,
            state,
            accept,
        })
    }

    /// The base URL to give `fanout --url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Events published (the newest seq) and sockets served so far.
    pub fn stats(&self) -> (u64, usize) {
        let seq = self.state.inner.lock().expect("floor state").seq;
        (seq, self.state.sockets.load(Ordering::Relaxed))
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

struct State {
    epoch: String,
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Out>,
    sockets: AtomicUsize,
    faults: Faults,
}

/// A frame for the sockets: about which user, and whether it is presence
/// (which unfiltered sockets do not get).
#[derive(Clone, Debug)]
struct Out {
    user: i64,
    presence: bool,
    frame: Message,
}

#[derive(Default)]
struct Inner {
    seq: u64,
    users: HashMap<i64, User>,
    /// Presence: user → socket id → meta.
    presence: HashMap<i64, BTreeMap<String, Value>>,
}

struct User {
    first_name: String,
    last_name: String,
    created_at: String,
    updated_at: String,
    version: u64,
}

fn timestamp() -> String {
    humantime::format_rfc3339_micros(SystemTime::now()).to_string()
}

fn user_json(id: i64, u: &User) -> Value {
    json!({
        "id": id, "first_name": u.first_name, "last_name": u.last_name,
        "created_at": u.created_at, "updated_at": u.updated_at, "version": u.version,
    })
}

impl State {
    /// Answers one REST request: `(status line, JSON body)`.
    fn handle(&self, method: &str, path: &str, body: &[u8]) -> (&'static str, String) {
        const NOT_FOUND: (&str, &str) = ("404 Not Found", r#"{"detail":"Not found."}"#);
        let id = path
            .split('?')
            .next()
            .and_then(|p| p.strip_prefix("/api/users/"))
            .map(|rest| rest.trim_end_matches('/'))
            .and_then(|id| id.parse::<i64>().ok());
        let Some(id) = id else {
            return (NOT_FOUND.0, NOT_FOUND.1.into());
        };
        let fields = match (method, serde_json::from_slice::<Value>(body)) {
            ("GET", _) => serde_json::Map::new(),
            ("PATCH", Ok(Value::Object(fields))) => fields,
            ("PATCH", _) => return ("400 Bad Request", r#"{"detail":"JSON parse error"}"#.into()),
            _ => {
                return (
                    "405 Method Not Allowed",
                    r#"{"detail":"Method not allowed."}"#.into(),
                );
            }
        };
        let mut guard = self.inner.lock().expect("floor state");
        let inner = &mut *guard;
        let user = inner.users.entry(id).or_insert_with(|| User {
            first_name: "Floor".into(),
            last_name: "User".into(),
            created_at: timestamp(),
            updated_at: timestamp(),
            version: 1,
        });
        let mut changed = Vec::new();
        for (key, slot) in [
            ("first_name", &mut user.first_name),
            ("last_name", &mut user.last_name),
        ] {
            if let Some(Value::String(value)) = fields.get(key)
                && value != slot
            {
                value.clone_into(slot);
                changed.push(key);
            }
        }
        if !changed.is_empty() {
            user.version += 1;
            user.updated_at = timestamp();
            inner.seq += 1;
            let frame = json!({
                "type": "user_update", "seq": inner.seq, "epoch": self.epoch,
                "data": {"action": "update", "user": user_json(id, user), "changed": changed},
            });
            // Sent under the lock, so frames leave in seq order. No socket: no error.
            let _ = self.tx.send(Out {
                user: id,
                presence: false,
                frame: Message::text(frame.to_string()),
            });
        }
        ("200 OK", user_json(id, user).to_string())
    }
}

impl State {
    /// The presence frame of `user` as `inner` has it.
    fn presence_frame(inner: &Inner, user: i64) -> Message {
        let members: Vec<Value> = inner
            .presence
            .get(&user)
            .into_iter()
            .flatten()
            .map(|(id, meta)| json!({"id": id, "sub": null, "meta": meta}))
            .collect();
        Message::text(json!({"type": "presence", "user": user, "members": members}).to_string())
    }

    /// Sets (`Some`) or removes socket `id`'s presence for `user`, and tells the
    /// user's followers when that changed something.
    fn set_presence(&self, user: i64, id: &str, meta: Option<Value>) {
        let mut inner = self.inner.lock().expect("floor state");
        let members = inner.presence.entry(user).or_default();
        let changed = match meta {
            Some(meta) => members.insert(id.to_owned(), meta.clone()) != Some(meta),
            None => members.remove(id).is_some(),
        };
        if changed {
            let frame = Self::presence_frame(&inner, user);
            let _ = self.tx.send(Out {
                user,
                presence: true,
                frame,
            });
        }
    }

    /// Answers one message from filtered socket `id` following `users`: presence
    /// joins, updates or leaves (`meta: null`); anything else gets an `error`.
    fn on_message(&self, id: &str, users: Option<&BTreeSet<i64>>, text: &str) -> Option<String> {
        let message: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        let user = message["user"].as_i64();
        match (message["type"].as_str(), user, &message["meta"]) {
            (Some("ping"), _, _) => Some(r#"{"type":"pong"}"#.into()),
            (Some("presence"), Some(user), meta @ (Value::Object(_) | Value::Null))
                if users.is_some_and(|u| u.contains(&user)) =>
            {
                self.set_presence(user, id, (!meta.is_null()).then(|| meta.clone()));
                None
            }
            _ => Some(r#"{"type":"error","detail":"the floor does not do that"}"#.into()),
        }
    }
}

/// The users of a `users=1,2` query (`None` without `users`; a bad value is an
/// error, as the gateway's 400).
fn query_users(query: Option<&str>) -> Result<Option<BTreeSet<i64>>, String> {
    let Some(value) = query
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("users="))
    else {
        return Ok(None);
    };
    value
        .split(',')
        .filter(|id| !id.is_empty())
        .map(|id| match id.parse::<i64>() {
            Ok(id) if id > 0 => Ok(id),
            _ => Err(format!("bad user id {id:?}")),
        })
        .collect::<Result<_, _>>()
        .map(Some)
}

/// One connection: a WebSocket upgrade to the feed, or keep-alive REST.
async fn serve(stream: TcpStream, state: Arc<State>) {
    let _ = stream.set_nodelay(true);
    let mut head = [0u8; 8];
    loop {
        match stream.peek(&mut head).await {
            Ok(0) | Err(_) => return,
            Ok(n) if n >= head.len() => break,
            Ok(_) => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    }
    if &head == b"GET /ws/" {
        let _ = serve_socket(stream, state).await;
    } else {
        let _ = serve_rest(stream, &state).await;
    }
}

/// Keep-alive HTTP/1.1: read a request, answer it, repeat.
async fn serve_rest(mut stream: TcpStream, state: &State) -> io::Result<()> {
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        let (method, path, head_len, body_len) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut request = httparse::Request::new(&mut headers);
            match request.parse(&buf) {
                Ok(httparse::Status::Complete(head_len)) => {
                    let body_len = request
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                        .unwrap_or(0usize);
                    let method = request.method.unwrap_or_default().to_owned();
                    break (method, request.path.unwrap_or_default().to_owned(), head_len, body_len);
                }
                Ok(httparse::Status::Partial) => {
                    if stream.read_buf(&mut buf).await? == 0 {
                        return Ok(());
                    }
                }
                Err(_) => return stream.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await,
            }
        };
        while buf.len() < head_len + body_len {
            if stream.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        }
        let request = buf.split_to(head_len + body_len);
        let (status, body) = state.handle(&method, &path, &request[head_len..]);
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(response.as_bytes()).await?;
    }
}

/// One feed socket: `hello`, then every broadcast frame, batched into as few
/// writes as the backlog allows.
async fn serve_socket(stream: TcpStream, state: Arc<State>) -> anyhow::Result<()> {
    let mut users = None;
    // The signature is tungstenite's handshake callback; its error is a response.
    #[allow(clippy::result_large_err)]
    let check_path =
        |request: &Request, mut response: Response| -> Result<Response, ErrorResponse> {
            if request.uri().path().trim_end_matches('/') == "/ws/user-updates" {
                match query_users(request.uri().query()) {
                    Ok(set) => users = set,
                    Err(detail) => {
                        let body = json!({ "detail": detail }).to_string();
                        let mut refusal = ErrorResponse::new(Some(body));
                        *refusal.status_mut() = http::StatusCode::BAD_REQUEST;
                        return Err(refusal);
                    }
                }
                // A client offering a token as the gateway wants it (`bearer, <token>`)
                // expects `bearer` back; the floor checks nothing.
                let protocols = request.headers().get(http::header::SEC_WEBSOCKET_PROTOCOL);
                if protocols
                    .and_then(|p| p.to_str().ok())
                    .is_some_and(|p| p.starts_with("bearer"))
                {
                    response.headers_mut().insert(
                        http::header::SEC_WEBSOCKET_PROTOCOL,
                        http::HeaderValue::from_static("bearer"),
                    );
                }
                return Ok(response);
            }
            let mut refusal = ErrorResponse::new(Some("Not found".into()));
            *refusal.status_mut() = http::StatusCode::NOT_FOUND;
            Err(refusal)
        };
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .max_message_size(Some(64 << 10));
    let socket =
        tokio_tungstenite::accept_hdr_async_with_config(stream, check_path, Some(config)).await?;
    let ordinal = state.sockets.fetch_add(1, Ordering::Relaxed);
    let id = format!("floor-{ordinal}");
    // `hello`, then (filtered) each followed user's presence, then events.
    let (mut rx, mut first) = {
        let inner = state.inner.lock().expect("floor state");
        let mut hello = json!({"type": "hello", "seq": inner.seq, "epoch": state.epoch});
        if let Some(users) = &users {
            hello["users"] = json!(users);
        }
        let mut first = vec![Message::text(hello.to_string())];
        for &user in users.iter().flatten() {
            first.push(State::presence_frame(&inner, user));
        }
        (state.tx.subscribe(), first)
    };
    let mut faults = FaultState::new(if ordinal == state.faults.fault_socket {
        state.faults
    } else {
        Faults::default()
    });
    let (mut sink, mut source) = socket.split();
    for frame in first.drain(..) {
        sink.feed(frame).await?;
    }
    sink.flush().await?;
    // Read what the client sends (presence; answers go out with the events), to
    // see it close.
    let (answers_tx, mut answers) = tokio::sync::mpsc::unbounded_channel::<Utf8Bytes>();
    let reader_state = state.clone();
    let (reader_id, reader_users) = (id.clone(), users.clone());
    let mut reader = tokio::spawn(async move {
        while let Some(Ok(message)) = source.next().await {
            match message {
                Message::Close(_) => break,
                Message::Text(text) => {
                    if let Some(answer) =
                        reader_state.on_message(&reader_id, reader_users.as_ref(), &text)
                    {
                        let _ = answers_tx.send(answer.into());
                    }
                }
                _ => {}
            }
        }
    });
    // Only the faults socket ignores its filter, with --fault-unfiltered.
    let filter = users
        .clone()
        .filter(|_| !(ordinal == state.faults.fault_socket && state.faults.fault_unfiltered));
    let wanted = |out: &Out| match &filter {
        Some(users) => users.contains(&out.user),
        None => !out.presence,
    };
    let mut batch = Vec::new();
    let result = loop {
        let first = tokio::select! {
            received = rx.recv() => received,
            // An answer to the client goes out with whatever events are ready
            // (`Lagged(0)` stands for "no event yet", not a real lag).
            Some(answer) = answers.recv() => {
                batch.push(Message::Text(answer));
                Err(RecvError::Lagged(0))
            }
            _ = &mut reader => break Ok(()),
        };
        let mut lagged = matches!(first, Err(RecvError::Lagged(n)) if n > 0);
        match first {
            Ok(out) if wanted(&out) => apply(&mut faults, out, &mut batch),
            Ok(_) | Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => break Ok(()),
        }
        while !lagged && batch.len() < 64 {
            match rx.try_recv() {
                Ok(out) if wanted(&out) => apply(&mut faults, out, &mut batch),
                Ok(_) => {}
                Err(TryRecvError::Lagged(_)) => lagged = true,
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
        if lagged {
            let close = CloseFrame {
                code: CloseCode::Again,
                reason: "too slow".into(),
            };
            break sink
                .send(Message::Close(Some(close)))
                .await
                .map_err(Into::into);
        }
        for frame in batch.drain(..) {
            sink.feed(frame).await?;
        }
        sink.flush().await?;
    };
    reader.abort();
    // A closed socket leaves every presence it had.
    for &user in users.iter().flatten() {
        state.set_presence(user, &id, None);
    }
    result
}

/// Updates go through the socket's faults; presence frames do not (the faults
/// count `user_update` frames).
fn apply(faults: &mut FaultState, out: Out, batch: &mut Vec<Message>) {
    if out.presence {
        batch.push(out.frame);
    } else {
        faults.apply(out.frame, batch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_answers_and_publishes_changes_only() {
        let state = State {
            epoch: "e".into(),
            inner: Mutex::new(Inner::default()),
            tx: broadcast::channel(8).0,
            sockets: AtomicUsize::new(0),
            faults: Faults::default(),
        };
        let mut rx = state.tx.subscribe();
        let (status, body) = state.handle("PATCH", "/api/users/3/", br#"{"first_name":"Ada"}"#);
        assert_eq!(status, "200 OK");
        let user: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (user["id"].as_i64(), user["version"].as_u64()),
            (Some(3), Some(2))
        );
        let frame = rx.try_recv().unwrap().frame;
        let text = frame.to_text().unwrap();
        assert!(text.starts_with(r#"{"type":"user_update","seq":1,"epoch":"e","data":{"action":"update","user":{"id":3,"first_name":"Ada""#), "{text}");
        assert!(text.ends_with(r#""changed":["first_name"]}}"#), "{text}");
        // The same value again changes nothing and publishes nothing.
        state.handle("PATCH", "/api/users/3", br#"{"first_name":"Ada"}"#);
        assert!(rx.try_recv().is_err());
        assert_eq!(state.handle("GET", "/api/users/3/", b"").0, "200 OK");
        assert_eq!(state.handle("GET", "/api/users/x/", b"").0, "404 Not Found");
        assert_eq!(
            state.handle("PATCH", "/api/users/3/", b"[").0,
            "400 Bad Request"
        );
        assert_eq!(
            state.handle("DELETE", "/api/users/3/", b"").0,
            "405 Method Not Allowed"
        );
    }
}
