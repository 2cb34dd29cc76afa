//! A user-service that goes away: REST answers 503 quickly while `/readyz`
//! stays 200 (the outage is every gateway's, so no gateway leaves the Service;
//! the body says what is down) and sockets stay open; when it returns, REST
//! recovers without restarting the gateway.

use std::time::{Duration, Instant};

use e2e::{Http, Poll, UserService, poll_until, start_gateway};

#[tokio::test]
async fn a_user_service_that_is_down_gives_503_while_readyz_stays_200_then_recovers() {
    let mut users = UserService::start(&[]).await;
    let gateway = start_gateway(&users.url(), &[]).await;
    let http = Http::new(gateway.addr);
    http.wait_ready().await;
    let id = http.create("Ada", "Lovelace").await["id"].as_i64().unwrap();
    let mut socket = e2e::Socket::connect(gateway.addr, "").await;
    assert_eq!(socket.frame().await["type"], "hello");

    let addr = users.process.addr;
    users.process.kill().await;
    let started = Instant::now();
    let reply = http.get(&format!("/api/users/{id}/")).await;
    assert_eq!(reply.status, 503);
    assert!(reply.json()["detail"].is_string());
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "503 comes quickly"
    );
    // One check's answer is shared for 250 ms, so the outage shows within that.
    let (Ok(ready) | Err(ready)) = poll_until(
        Poll::within(Duration::from_secs(2)).every(Duration::from_millis(50)),
        async || {
            let ready = http.get("/readyz").await;
            if ready.json()["status"] == "degraded" {
                Ok(ready)
            } else {
                Err(ready)
            }
        },
    )
    .await;
    assert_eq!(ready.status, 200, "{:?}", ready.body);
    assert_eq!(ready.json()["status"], "degraded");
    assert_eq!(ready.json()["checks"]["user_service"], "unavailable");
    assert_eq!(http.get("/healthz").await.status, 200, "still alive");
    assert_eq!(http.get("/").await.status, 200, "the page is still served");
    assert!(
        matches!(
            socket.next(Duration::from_millis(500)).await,
            Err(e2e::Ended::TimedOut)
        ),
        "the socket stays open"
    );

    users.start_again(&[], addr).await;
    http.wait_ready().await;
    let reply = http.get(&format!("/api/users/{id}/")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["first_name"], "Ada");
}

/// A gateway that never reached its events has not started: `/readyz` keeps it
/// out of the Service (503 `starting`) until the user-service appears.
#[tokio::test]
async fn a_gateway_that_never_reached_its_events_is_not_ready_until_it_does() {
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", e2e::free_port()).parse().unwrap();
    let gateway = start_gateway(&format!("http://{addr}"), &[]).await;
    let http = Http::new(gateway.addr);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ready = http.get("/readyz").await;
    assert_eq!(ready.status, 503, "{:?}", ready.body);
    assert_eq!(ready.json()["status"], "starting");
    let mut users = UserService::start(&[]).await;
    users.process.kill().await;
    users.start_again(&[], addr).await;
    http.wait_ready().await;
}

/// A name in `--user-service-url` is resolved (as a headless Service's would
/// be) and every address that answers SERVING is balanced over; an address
/// that does not (here `::1`, where nothing listens) stays out of the way.
#[tokio::test]
async fn a_user_service_name_is_resolved_and_its_serving_addresses_balanced() {
    let users = UserService::start(&[]).await;
    let port = users.process.addr.port();
    let gateway = start_gateway(&format!("http://localhost:{port}"), &[]).await;
    let http = Http::new(gateway.addr);
    http.wait_ready().await;
    for i in 0..20 {
        let created = http.create(&format!("N{i}"), "Resolved").await;
        assert!(created["id"].as_i64().is_some());
    }
    let metrics = http.get("/metrics").await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert_eq!(
        e2e::metric_value(&text, r#"gateway_upstream_endpoints{state="healthy"}"#),
        Some(1.0),
        "{text}"
    );
}
