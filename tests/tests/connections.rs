//! No connection lives unbounded, on the real gateway: silent connections (plain
//! TCP, or only the HTTP/2 preface and SETTINGS) are closed after the first-request
//! deadline, idle ones after the idle timeout, a body is read only once its caller
//! may send one and within its deadline, and a gateway whose descriptors are all
//! taken by silent connections still answers `/healthz`. Short deadlines are
//! configured so the suite stays fast.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use e2e::{
    Http, Process, STEP_TIMEOUT, UserService, binary,
    credentials::{claims, hs256, random_secret},
    metric_value, start_gateway,
};
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// The HTTP/2 connection preface, then an empty SETTINGS frame.
const H2_PREFACE_AND_SETTINGS: &[u8] =
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// Reads until the peer closes; when that was, or `None` if it did not close
/// within `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Instant> {
    let mut buffer = [0u8; 4096];
    let read_all = async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, read_all)
        .await
        .ok()
        .map(|()| Instant::now())
}

/// Sends raw bytes and reads the answer's status line.
async fn status_of(stream: &mut TcpStream, request: &[u8]) -> String {
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    while !answer.windows(2).any(|w| w == b"\r\n") {
        let read = tokio::time::timeout(STEP_TIMEOUT, stream.read(&mut buffer))
            .await
            .expect("an answer in time")
            .unwrap();
        assert!(read > 0, "closed before answering");
        answer.extend_from_slice(&buffer[..read]);
    }
    let text = String::from_utf8_lossy(&answer);
    text.lines().next().unwrap_or_default().to_owned()
}

/// A counter of the gateway at `http`, read on a connection of its own.
async fn shed(http: &Http, reason: &str) -> f64 {
    let fresh = Http::new(http.addr);
    let text = String::from_utf8(fresh.get("/metrics").await.body.to_vec()).unwrap();
    let series = format!("gateway_connections_shed_total{{reason=\"{reason}\"}}");
    metric_value(&text, &series).unwrap_or_else(|| panic!("no {series}"))
}

#[tokio::test]
async fn silent_connections_are_closed_after_the_first_request_deadline_whatever_they_speak() {
    let users = UserService::start(&[]).await;
    let flags = ["--first-request-timeout", "1s"].map(str::to_owned);
    let gateway = start_gateway(&users.url(), &flags).await;
    let http = Http::new(gateway.addr);
    http.wait_ready().await;
    assert_eq!(
        shed(&http, "no_request").await,
        0.0,
        "exposed from the start"
    );

    let opened = Instant::now();
    let mut silent = TcpStream::connect(gateway.addr).await.unwrap();
    let mut preface_only = TcpStream::connect(gateway.addr).await.unwrap();
    preface_only
        .write_all(H2_PREFACE_AND_SETTINGS)
        .await
        .unwrap();
    let mut half_a_head = TcpStream::connect(gateway.addr).await.unwrap();
    half_a_head
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();

    for (name, stream) in [
        ("silent TCP", &mut silent),
        ("h2c preface and SETTINGS only", &mut preface_only),
        ("half an HTTP/1.1 head", &mut half_a_head),
    ] {
        let closed = closed_within(stream, Duration::from_secs(5)).await;
        let took = closed.unwrap_or_else(|| panic!("{name}: still open after 5 s")) - opened;
        assert!(
            took >= Duration::from_millis(900),
            "{name}: closed too early, {took:?}"
        );
    }
    assert!(shed(&http, "no_request").await >= 2.0);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let users = UserService::start(&[]).await;
    let flags = ["--idle-timeout", "1s"].map(str::to_owned);
    let gateway = start_gateway(&users.url(), &flags).await;
    let http = Http::new(gateway.addr);
    http.wait_ready().await;

    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    let status = status_of(&mut stream, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    let closed = closed_within(&mut stream, Duration::from_secs(5)).await;
    assert!(closed.is_some(), "an idle connection is closed");
    // At least ours: the readiness poll's pooled connection idles out too.
    assert!(shed(&http, "idle").await >= 1.0);
}

#[tokio::test]
async fn a_body_is_read_only_after_the_token_is_checked_and_within_its_deadline() {
    let users = UserService::start(&["--seed-demo-user".to_owned()]).await;
    let secret = random_secret();
    let flags = [
        "--auth",
        "jwt",
        "--jwt-secret",
        &secret,
        "--body-read-timeout",
        "1s",
    ]
    .map(str::to_owned);
    let gateway = start_gateway(&users.url(), &flags).await;
    Http::new(gateway.addr).wait_ready().await;
    let head = |authorization: &str| {
        format!(
            "PATCH /api/users/1/ HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
             Content-Length: 16000\r\n{authorization}\r\n"
        )
    };

    // No token: 401 from the head alone, no byte of the body sent.
    let mut anonymous = TcpStream::connect(gateway.addr).await.unwrap();
    let started = Instant::now();
    let status = status_of(&mut anonymous, head("").as_bytes()).await;
    assert_eq!(status, "HTTP/1.1 401 Unauthorized");
    assert!(started.elapsed() < Duration::from_secs(1));

    // A valid token, then a body that never comes: 408 after the deadline.
    let token = hs256(&secret, &claims("writer"));
    let mut slow = TcpStream::connect(gateway.addr).await.unwrap();
    let authorization = format!("Authorization: Bearer {token}\r\n");
    slow.write_all(head(&authorization).as_bytes())
        .await
        .unwrap();
    slow.write_all(b"{\"first_name\": ").await.unwrap();
    let started = Instant::now();
    let status = status_of(&mut slow, b"").await;
    assert_eq!(status, "HTTP/1.1 408 Request Timeout");
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn healthz_is_served_while_silent_connections_hold_every_descriptor() {
    let users = UserService::start(&[]).await;
    let gateway_binary = binary("gateway");
    let args: Vec<String> = [
        "--nofile=256:256",
        "--",
        gateway_binary.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--user-service-url",
        &users.url(),
        "--auth",
        "none",
        "--rate-limit-reads",
        "off",
    ]
    .map(str::to_owned)
    .to_vec();
    let gateway = Process::start(Path::new("prlimit"), &args)
        .await
        .expect("the gateway starts under prlimit");
    let http = Http::new(gateway.addr);
    http.wait_ready().await;

    // More silent connections than the process has descriptors.
    let mut silent = Vec::new();
    for _ in 0..300 {
        silent.push(TcpStream::connect(gateway.addr).await.unwrap());
    }
    for round in 0..5 {
        // A new connection each time: it needs a place of its own.
        let reply = Http::new(gateway.addr)
            .try_send("GET", "/healthz", None, None, &[])
            .await;
        let reply = reply.unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(reply.status, 200, "round {round}");
    }
    assert!(shed(&http, "evicted").await >= 100.0);
    let logs = gateway.logs().join("\n");
    assert!(!logs.contains("Too many open files"), "{logs}");

    drop(silent);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let http = Http::new(gateway.addr);
    assert_eq!(http.get("/healthz").await.status, 200);
    let created = http
        .json(
            "POST",
            "/api/users/",
            &json!({"first_name": "Still", "last_name": "Here"}),
        )
        .await;
    assert_eq!(created.status, 201);
}

#[tokio::test]
async fn heads_over_the_caps_get_431_with_the_security_headers_over_http1_and_h2c() {
    use bytes::Bytes;
    use http_body_util::Full;
    use hyper_util::{client::legacy::Client, rt::TokioExecutor};

    let users = UserService::start(&[]).await;
    let gateway = start_gateway(&users.url(), &[]).await;
    Http::new(gateway.addr).wait_ready().await;
    for h2c in [false, true] {
        let client = Client::builder(TokioExecutor::new())
            .http2_only(h2c)
            .build_http::<Full<Bytes>>();
        // (headers, bytes in one of them, the status): over 64 headers, or a
        // head over 16 KiB (under hyper's and h2's own limits, set 4× higher).
        for (headers, size, expected) in [(60, 1, 200), (100, 1, 431), (2, 20 * 1024, 431)] {
            let mut request = http::Request::get(format!("http://{}/api/users/", gateway.addr));
            // The client adds `host` over HTTP/1.1 (`:authority` over h2).
            for i in 0..headers - usize::from(!h2c) {
                request = request.header(format!("x-padding-{i}"), "v".repeat(size));
            }
            let request = request.body(Full::new(Bytes::new())).unwrap();
            let response = tokio::time::timeout(STEP_TIMEOUT, client.request(request))
                .await
                .expect("an answer in time")
                .expect("an answer");
            let protocol = if h2c { "h2c" } else { "HTTP/1.1" };
            assert_eq!(response.status(), expected, "{protocol}, {headers} headers");
            for name in ["x-content-type-options", "content-security-policy"] {
                assert!(
                    response.headers().contains_key(name),
                    "{protocol}, {headers} headers: no {name}"
                );
            }
        }
    }
}

/// Sends raw bytes and reads the answer until the gateway closes.
async fn answer_to(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The gateway may answer and close before taking all of a huge head.
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(STEP_TIMEOUT, stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "no close in time after {answer:?}");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn answers_hyper_writes_itself_carry_the_security_headers_too() {
    let users = UserService::start(&[]).await;
    let gateway = start_gateway(&users.url(), &[]).await;
    Http::new(gateway.addr).wait_ready().await;
    let many_headers: String = (0..300).map(|i| format!("x-{i}: v\r\n")).collect();
    let huge_header = format!("x-padding: {}\r\n", "h".repeat(80 * 1024));
    let cases = [
        (
            "a head that does not parse",
            "no colon here\r\n".to_owned(),
            "400",
        ),
        ("300 headers (over hyper's 256)", many_headers, "431"),
        ("an 80 KiB head (over hyper's 64 KiB)", huge_header, "431"),
    ];
    for (case, headers, status) in cases {
        let request = format!("GET /api/users/ HTTP/1.1\r\nhost: localhost\r\n{headers}\r\n");
        let answer = answer_to(gateway.addr, request.as_bytes()).await;
        let (head, _) = answer.split_once("\r\n\r\n").expect("a whole head");
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status} ")),
            "{case}: {head}"
        );
        for line in ["x-content-type-options: nosniff", "x-frame-options: DENY"] {
            assert!(head.contains(line), "{case}: no {line} in {head}");
        }
        assert!(head.contains("content-security-policy: "), "{case}: {head}");
    }
}

#[tokio::test]
async fn a_host_not_allowed_gets_400_and_is_never_written_into_links() {
    let users = UserService::start(&[]).await;
    let flags = ["--allowed-hosts", "users.example.com"].map(str::to_owned);
    let gateway = start_gateway(&users.url(), &flags).await;
    let http = Http::new(gateway.addr);
    http.wait_ready().await;
    http.create("Ada", "Lovelace").await;
    http.create("Grace", "Hopper").await;

    let page = |host: &'static str| {
        let http = http.clone();
        async move {
            http.send("GET", "/api/users/?limit=1", None, None, &[("host", host)])
                .await
        }
    };
    let forged = page("evil.example").await;
    assert_eq!(forged.status, 400, "{:?}", forged.body);
    assert!(forged.json()["detail"].as_str().unwrap().contains("Host"));
    assert!(!String::from_utf8_lossy(&forged.body).contains("/api/users/?"));

    let allowed = page("users.example.com").await;
    assert_eq!(allowed.status, 200);
    assert_eq!(
        allowed.json()["next"],
        "http://users.example.com/api/users/?limit=1&offset=1"
    );
    assert_eq!(page("localhost:8080").await.status, 200, "loopback always");
    assert_eq!(
        http.send("GET", "/healthz", None, None, &[("host", "evil.example")])
            .await
            .status,
        200,
        "probes are not API calls"
    );
}

#[tokio::test]
async fn sockets_that_break_the_protocol_are_closed_with_its_codes() {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::{
        Message,
        protocol::frame::{
            Frame,
            coding::{Data, OpCode},
        },
    };

    let users = UserService::start(&[]).await;
    let gateway = start_gateway(&users.url(), &[]).await;
    Http::new(gateway.addr).wait_ready().await;
    let not_utf8 = Frame::message(vec![0xff, 0xfe, 0xfd], OpCode::Data(Data::Text), true);
    let mut reserved_bit = Frame::message(b"{}".to_vec(), OpCode::Data(Data::Text), true);
    reserved_bit.header_mut().rsv1 = true;
    for (frame, code) in [(not_utf8, 1007), (reserved_bit, 1002)] {
        let mut socket = e2e::Socket::connect(gateway.addr, "").await;
        assert_eq!(socket.frame().await["type"], "hello");
        socket.stream.send(Message::Frame(frame)).await.unwrap();
        assert_eq!(
            socket.next(STEP_TIMEOUT).await,
            Err(e2e::Ended::Closed(Some(code)))
        );
    }
}

#[tokio::test]
async fn the_user_services_grpc_port_closes_silent_connections_and_caps_them() {
    use users_proto::v1::{ListUsersRequest, user_service_client::UserServiceClient};

    let flags = ["--first-request-timeout", "1s", "--max-connections", "3"].map(str::to_owned);
    let users = UserService::start(&flags).await;
    let addr = users.process.addr;
    let opened = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    // Over the cap: closed at once, while the three are still open.
    let mut over = TcpStream::connect(addr).await.unwrap();
    let refused_at = closed_within(&mut over, Duration::from_secs(5)).await;
    let refused_after = refused_at.expect("closed at once") - opened;
    assert!(
        refused_after < Duration::from_millis(900),
        "{refused_after:?}"
    );
    for stream in &mut silent {
        let closed = closed_within(stream, Duration::from_secs(5)).await;
        let after = closed.expect("a silent connection is closed") - opened;
        assert!(
            after >= Duration::from_millis(900),
            "closed too early: {after:?}"
        );
    }
    drop(silent);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut client = UserServiceClient::connect(users.url()).await.unwrap();
    let listed = client.list_users(ListUsersRequest::default()).await;
    assert!(listed.is_ok(), "{listed:?}");
}
