//! The load generator against an in-process floor: a clean floor must come out
//! clean, and a deliberately faulty one (dropped, duplicated and swapped frames
//! on one socket) must be reported with exactly those counts. Every test is
//! bounded by a timeout.

use std::{future::Future, time::Duration};

use loadgen::{
    connect::{self, ConnectArgs},
    fanout::{self, FanoutArgs},
    faults::Faults,
    floor::{Floor, FloorArgs},
    report::SUMMARY_PREFIX,
    rest::{self, RestArgs, RestMethod},
    target::TargetArgs,
};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(15);

async fn bounded<T>(work: impl Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, work)
        .await
        .expect("the test took too long")
}

async fn floor(faults: Faults) -> Floor {
    Floor::start(&FloorArgs {
        listen: "127.0.0.1:0".parse().unwrap(),
        queue: 1024,
        faults,
    })
    .await
    .expect("floor starts")
}

/// 20 updates (200/s for 100 ms) to `sockets` sockets.
fn fanout_args(url: String, sockets: usize) -> FanoutArgs {
    FanoutArgs {
        target: TargetArgs { url, token: None },
        sockets,
        rate: 200.0,
        duration: Duration::from_millis(100),
        user_id: 1,
        writers: 2,
        connect_concurrency: 8,
        connect_timeout: Duration::from_secs(5),
        drain: Duration::from_secs(2),
        watch_pids: vec![std::process::id()],
        label: Some("test".into()),
    }
}

fn summary_json(line: &str) -> Value {
    assert!(!line.contains('\n'));
    serde_json::from_str(line.strip_prefix(SUMMARY_PREFIX).expect("prefix")).expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_floor_reports_no_loss_duplicates_or_reordering() {
    let floor = floor(Faults::default()).await;
    let report = bounded(fanout::run(&fanout_args(floor.url(), 3)))
        .await
        .unwrap();
    assert!(report.is_clean(), "{}", report.human());
    // The same with a token, offered as the gateway wants it (the floor ignores it).
    let with_token = FanoutArgs {
        target: TargetArgs {
            url: floor.url(),
            token: Some("t0ken".into()),
        },
        ..fanout_args(floor.url(), 1)
    };
    let second = bounded(fanout::run(&with_token)).await.unwrap();
    assert!(second.is_clean(), "{}", second.human());
    assert_eq!(report.planned, 20);
    assert_eq!(
        (report.acked, report.expected, report.delivered),
        (20, 60, 60)
    );
    assert_eq!(report.latency.count, 60);
    assert!(report.latency.max_us < 5_000_000, "{:?}", report.latency);
    assert_eq!((report.foreign, report.unparsed), (0, 0));
    assert!(report.write_errors.is_empty());
    assert!(report.watched_cpu[0].1.is_some());
    let summary = summary_json(&report.summary());
    assert_eq!(summary["scenario"], "fanout");
    assert_eq!(summary["params"]["sockets"], 3);
    assert_eq!(summary["results"]["clean"], true);
    assert_eq!(summary["results"]["lost"], 0);
    assert_eq!(summary["results"]["delivered"], 60);
    assert_eq!(floor.stats(), (40, 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_faulty_floor_is_caught_with_exact_counts() {
    // On one of the four sockets: frames 5, 10, 15 and 20 dropped, frame 3 sent
    // twice, frames 7 and 8 swapped.
    let floor = floor(Faults {
        fault_socket: 0,
        drop_every: Some(5),
        duplicate: Some(3),
        swap: Some(7),
        ..Faults::default()
    })
    .await;
    // Four updates never come: the drain waits its whole (shorter) bound.
    let args = FanoutArgs {
        drain: Duration::from_millis(700),
        ..fanout_args(floor.url(), 4)
    };
    let report = bounded(fanout::run(&args)).await.unwrap();
    assert!(!report.is_clean());
    assert_eq!(report.expected, 80, "{}", report.human());
    assert_eq!(report.lost, 4, "{}", report.human());
    assert_eq!(report.duplicates, 1, "{}", report.human());
    assert_eq!(report.out_of_order, 1, "{}", report.human());
    assert_eq!(report.delivered, 76, "{}", report.human());
    assert!(report.closed_early.is_empty(), "{}", report.human());
    let summary = summary_json(&report.summary());
    assert_eq!(summary["results"]["clean"], false);
    assert_eq!(summary["results"]["lost"], 4);
    assert_eq!(summary["results"]["duplicates"], 1);
    assert_eq!(summary["results"]["out_of_order"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_closed_and_open_loops_against_the_floor() {
    let floor = floor(Faults::default()).await;
    let args = |method, rate| RestArgs {
        target: TargetArgs {
            url: floor.url(),
            token: None,
        },
        method,
        connections: 2,
        duration: Duration::from_millis(300),
        rate,
        warmup: Duration::from_millis(50),
        user_id: 7,
        users: 1,
        watch_pids: vec![],
        label: None,
    };
    for method in [RestMethod::Get, RestMethod::Patch] {
        let report = bounded(rest::run(&args(method, None))).await.unwrap();
        assert!(report.completed > 10, "{}", report.human());
        assert_eq!(report.errors, 0, "{}", report.human());
        assert_eq!(report.statuses.keys().collect::<Vec<_>>(), ["200"]);
        assert!(report.requests_per_s > 30.0, "{}", report.human());
    }
    // Open loop: 100/s for 300 ms is 30 requests, on schedule.
    let report = bounded(rest::run(&args(RestMethod::Patch, Some(100.0))))
        .await
        .unwrap();
    assert!((29..=31).contains(&report.completed), "{}", report.human());
    let summary = summary_json(&report.summary());
    assert_eq!(summary["scenario"], "rest");
    assert_eq!(summary["params"]["method"], "PATCH");
    assert_eq!(summary["params"]["rate"], 100.0);
    // Every PATCH set a new first_name: one event each.
    assert!(floor.stats().0 > 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_opens_every_socket_and_reads_server_memory() {
    let floor = floor(Faults::default()).await;
    let report = bounded(connect::run(&ConnectArgs {
        target: TargetArgs {
            url: floor.url(),
            token: None,
        },
        sockets: 50,
        concurrency: 16,
        connect_timeout: Duration::from_secs(5),
        // The floor runs in this process, and is found by its port.
        gateway_pid: None,
        settle: Duration::from_millis(50),
        label: None,
    }))
    .await
    .unwrap();
    assert_eq!(report.connected, 50, "{}", report.human());
    assert!(report.errors.is_empty());
    assert_eq!(report.gateway_pid, Some(std::process::id()));
    assert!(report.gateway_bytes_per_socket().is_some());
    assert_eq!(report.hello_latency.count, 50);
    let summary = summary_json(&report.summary());
    assert_eq!(summary["results"]["connected"], 50);
    assert_eq!(floor.stats().1, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_server_is_an_error_not_a_hang() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    assert!(bounded(fanout::run(&fanout_args(url, 1))).await.is_err());
}
