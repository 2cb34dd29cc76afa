//! A fresh user-service exposes every counter and gauge it has, at zero, from
//! its first scrape, so dashboards and alerts never see "absent". It runs as a
//! process of its own: the apps of the other tests share this process's
//! recorder, so a series they record would hide one the service forgot.

use std::{net::SocketAddr, time::Duration};

use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use test_support::Process;
use tokio::process::Command;

/// Every counter and gauge docs/operations.md lists for the user-service.
const SERIES: [&str; 6] = [
    "user_service_events_published_total",
    "user_service_redis_reconnects_total",
    "user_service_connections_refused_total",
    "user_service_outbox_backlog",
    "user_service_head_seq",
    "user_service_watchers",
];

/// Starts the user-service binary on a new database with nothing from this
/// environment, and returns it with the metrics address it logged.
async fn start(dir: &tempfile::TempDir) -> (Process, SocketAddr) {
    let database = format!("sqlite://{}", dir.path().join("users.db").display());
    let mut command = Command::new(env!("CARGO_BIN_EXE_user-service"));
    command
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .args(["--log-format", "json", "--database-url", &database])
        .env_clear()
        .env("RUST_LOG", "info");
    let mut process = Process::spawn(command).expect("the user-service binary starts");
    let addr = process
        .wait_for_line("its metrics address", Duration::from_secs(30), |line| {
            let (_, rest) = line.split_once(r#""metrics_listen":""#)?;
            rest.split('"').next()?.parse().ok()
        })
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    (process, addr)
}

#[tokio::test]
async fn a_fresh_process_exposes_every_counter_and_gauge_at_zero() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let (mut process, addr) = start(&dir).await;

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let uri = format!("http://{addr}/metrics")
        .parse()
        .expect("a valid URI");
    let response = client.get(uri).await.expect("the metrics port answers");
    assert_eq!(response.status(), 200);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("the body reads");
    let text = String::from_utf8(body.to_bytes().to_vec()).expect("UTF-8 text");

    for series in SERIES {
        let value = text
            .lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '));
        assert_eq!(value, Some("0"), "{series} in:\n{text}");
    }
    process.kill().await;
}
