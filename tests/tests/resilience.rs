//! A user-service that goes away: REST answers 503 quickly and `/readyz` fails;
//! when it returns, both recover without restarting the gateway.

use std::time::{Duration, Instant};

use e2e::{Http, Poll, UserService, poll_until, start_gateway};

#[tokio::test]
async fn a_user_service_that_is_down_gives_503_and_not_ready_then_recovers() {
    let mut users = UserService::start(&[]).await;
    let gateway = start_gateway(&users.url(), &[]).await;
    let http = Http::new(gateway.addr);
    http.wait_ready().await;
    let id = http.create("Ada", "Lovelace").await["id"].as_i64().unwrap();

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
            if ready.status != 200 {
                Ok(ready)
            } else {
                Err(ready)
            }
        },
    )
    .await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json()["checks"]["user_service"], "unavailable");
    assert_eq!(http.get("/healthz").await.status, 200, "still alive");

    users.start_again(&[], addr).await;
    http.wait_ready().await;
    let reply = http.get(&format!("/api/users/{id}/")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["first_name"], "Ada");
}
