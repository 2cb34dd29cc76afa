//! Between the services and on the wire: the service token between gateway and
//! user-service, and TLS on both paths.

use super::*;

#[tokio::test]
async fn the_user_service_refuses_rpcs_without_the_service_token_and_logs_the_caller() {
    let stack = Stack::start(&[]).await;
    let url = stack.users.url();
    let mut client = UserServiceClient::connect(url.clone()).await.unwrap();
    let bare = client
        .list_users(pb::ListUsersRequest::default())
        .await
        .unwrap_err();
    assert_eq!(bare.code(), tonic::Code::Unauthenticated);
    let mut wrong = tonic::Request::new(pb::ListUsersRequest::default());
    wrong
        .metadata_mut()
        .insert("authorization", "Bearer guess".parse().unwrap());
    assert_eq!(
        client.list_users(wrong).await.unwrap_err().code(),
        tonic::Code::Unauthenticated
    );
    let mut right = tonic::Request::new(pb::ListUsersRequest::default());
    right.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", stack.service_token).parse().unwrap(),
    );
    assert!(client.list_users(right).await.is_ok());
    assert!(
        e2e::faults::health(&url, "").await.is_some(),
        "health stays open"
    );

    // Through the gateway, the caller's sub reaches the user-service's log.
    let user = stack.create().await;
    assert!(user["id"].is_number());
    let logged = stack
        .users
        .process
        .logs()
        .iter()
        .any(|line| line.contains("CreateUser") && line.contains("\"sub\":\"admin\""));
    assert!(logged, "the user-service logs who created the user");
}

#[tokio::test]
async fn grpc_between_gateway_and_user_service_runs_over_tls() {
    let pki = Pki::new();
    let users = UserService::start(&pki.server_flags()).await;
    let url = format!("https://localhost:{}", users.process.addr.port());
    let gateway = start_gateway(
        &url,
        &["--user-service-ca".into(), pki.ca.display().to_string()],
    )
    .await;
    let http = Http::new(gateway.addr);
    http.wait_ready().await;
    let mut socket = Socket::connect(gateway.addr, "").await;
    assert_eq!(socket.frame().await["type"], "hello");
    let created = http.create("Grace", "Hopper").await;
    let event = socket.frame().await;
    assert_eq!(
        event["data"]["user"], created,
        "the watch runs over TLS too"
    );

    // Plain-text gRPC to a TLS port fails.
    let plain = start_gateway(&users.url(), &[]).await;
    let reply = Http::new(plain.addr).get("/api/users/").await;
    assert!(matches!(reply.status, 500 | 503), "{}", reply.status);
    assert!(
        !String::from_utf8_lossy(&reply.body).contains("tls"),
        "no internals"
    );
}

#[tokio::test]
async fn the_gateway_serves_https_and_wss() {
    let pki = Pki::new();
    let users = UserService::start(&[]).await;
    let gateway = start_gateway(&users.url(), &pki.server_flags()).await;
    let addr = gateway.addr;
    eventually(
        Poll::within(STEP_TIMEOUT).every(Duration::from_millis(50)),
        "the gateway to be ready over HTTPS",
        async || {
            let ready = credentials::https_get(addr, &pki.ca, "/readyz", &[]).await;
            if ready.status == 200 {
                Ok(())
            } else {
                Err(format!("{} {:?}", ready.status, ready.body))
            }
        },
    )
    .await;
    let reply = credentials::https_get(addr, &pki.ca, "/api/users/", &[]).await;
    assert_eq!(reply.status, 200);
    assert!(reply.header("strict-transport-security").is_some());

    let tls = credentials::tls_connect(addr, &pki.ca).await;
    let url = format!("wss://localhost:{}/ws/user-updates/", addr.port());
    let (mut wss, _) = tokio_tungstenite::client_async(url, tls)
        .await
        .expect("WSS handshake");
    let hello = tokio::time::timeout(STEP_TIMEOUT, wss.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let Message::Text(text) = hello else {
        panic!("expected hello, got {hello:?}");
    };
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["type"],
        "hello"
    );
    wss.send(Message::Text(r#"{"type":"ping"}"#.into()))
        .await
        .unwrap();
}
