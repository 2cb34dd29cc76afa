//! A fresh user-service exposes every counter and gauge it has, at zero, from
//! its first scrape, so dashboards and alerts never see "absent". It runs as a
//! process of its own: the apps of the other tests share this process's
//! recorder, so a series they record would hide one the service forgot.

use std::{net::SocketAddr, process::Stdio, time::Duration};

use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

/// Every counter and gauge the README lists for the user-service.
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
async fn start(dir: &tempfile::TempDir) -> (Child, SocketAddr) {
    let database = format!("sqlite://{}", dir.path().join("users.db").display());
    let mut child = Command::new(env!("CARGO_BIN_EXE_user-service"))
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .args(["--log-format", "json", "--database-url", &database])
        .env_clear()
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the user-service binary starts");
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let addr = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.expect("its output reads") {
            if let Some(rest) = line.split_once(r#""metrics_listen":""#).map(|(_, r)| r) {
                return rest.split('"').next().and_then(|a| a.parse().ok());
            }
        }
        None
    })
    .await
    .expect("the user-service says where it listens within 30 s")
    .expect("its listening line names the metrics address");
    (child, addr)
}

#[tokio::test]
async fn a_fresh_process_exposes_every_counter_and_gauge_at_zero() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let (mut child, addr) = start(&dir).await;

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
    child.kill().await.expect("the user-service stops");
}
