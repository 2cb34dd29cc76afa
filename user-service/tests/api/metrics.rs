//! `--metrics-listen`: the Prometheus text on its own port. Every user-service in
//! this test process shares one recorder, so counters are checked as "at least";
//! the gauges read at scrape time (head seq, outbox backlog) are this app's own.

use std::{net::SocketAddr, time::Duration};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;
use users_proto::v1 as pb;

use test_support::{Redis, eventually, metric_value as value};

use crate::helpers::{TestApp, expect_code, spawn_app_with};

/// `GET <path>` on the metrics port: the status code and the body.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("the metrics port accepts");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut text))
        .await
        .expect("the metrics port answers in time")
        .unwrap();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("an HTTP status line");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    (status, body.to_owned())
}

async fn scrape(app: &TestApp) -> String {
    let addr = app.metrics_addr.expect("the app has a metrics port");
    let (status, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn the_metrics_port_serves_rpc_database_and_watch_metrics() {
    let app = spawn_app_with(|c| c.metrics_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let ada = app.create("Ada", "Lovelace").await;
    app.rename(ada.id, "Augusta").await;
    let missing = app
        .client
        .clone()
        .get_user(pb::GetUserRequest { id: 999_999 })
        .await;
    expect_code(missing, Code::NotFound);
    let _watch = app
        .client
        .clone()
        .watch_users(pb::WatchUsersRequest::default())
        .await
        .unwrap();

    let text = scrape(&app).await;
    for series in [
        r#"user_service_grpc_duration_seconds_count{method="CreateUser",code="OK"}"#,
        r#"user_service_grpc_duration_seconds_count{method="UpdateUser",code="OK"}"#,
        r#"user_service_grpc_duration_seconds_count{method="GetUser",code="NOT_FOUND"}"#,
        r#"user_service_grpc_duration_seconds_count{method="WatchUsers",code="OK"}"#,
        r#"user_service_db_query_duration_seconds_count{op="write_batch"}"#,
        r#"user_service_db_query_duration_seconds_count{op="get_user"}"#,
        r#"user_service_db_write_batch_size_count"#,
        r#"user_service_watchers"#,
    ] {
        let found = value(&text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"));
        assert!(found >= 1.0, "{series} = {found}");
    }
    assert!(
        text.contains("# TYPE user_service_grpc_duration_seconds histogram"),
        "durations are histograms with buckets, not summaries:\n{text}"
    );
    // Set at scrape time, by whichever app of this process scraped last.
    assert!(value(&text, "user_service_head_seq").is_some_and(|v| v >= 1.0));

    let addr = app.metrics_addr.unwrap();
    assert_eq!(get(addr, "/").await.0, 404);
    assert_eq!(get(addr, "/metrics/x").await.0, 404);
    app.stop().await;
}

#[tokio::test]
async fn the_outbox_backlog_grows_while_redis_is_down_and_drains_after() {
    let mut redis = Redis::start().await;
    let app = spawn_app_with(|c| {
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
        c.redis_url = Some(redis.url());
    })
    .await;
    let backlog = |text: &str| value(text, "user_service_outbox_backlog");
    app.create("Ada", "Lovelace").await;
    eventually(Duration::from_secs(15), "the backlog to drain", || async {
        (backlog(&scrape(&app).await) == Some(0.0)).then_some(())
    })
    .await;

    redis.stop().await;
    for name in ["A", "B", "C"] {
        app.create(name, "Down").await;
    }
    // Computed at scrape time: exact even while the relay backs off.
    let text = scrape(&app).await;
    assert_eq!(backlog(&text), Some(3.0), "{text}");

    redis.restart().await;
    let text = eventually(Duration::from_secs(20), "the backlog to drain", || async {
        let text = scrape(&app).await;
        (backlog(&text) == Some(0.0)).then_some(text)
    })
    .await;
    let at_least = |series: &str, n: f64| {
        let found = value(&text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"));
        assert!(found >= n, "{series} = {found}, expected at least {n}");
    };
    at_least("user_service_events_published_total", 4.0);
    at_least("user_service_relay_lag_seconds_count", 4.0);
    at_least("user_service_redis_reconnects_total", 1.0);
    app.stop().await;
}
