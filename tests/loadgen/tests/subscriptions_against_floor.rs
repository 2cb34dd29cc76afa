//! `subscribers`, `presence` and `merge` against the in-process floor, which
//! filters by `?users=` and relays presence: a clean run comes out clean, a
//! socket that ignores its filter is caught as misdelivery, two processes'
//! slices (here two runs in one process, meeting at a barrier) merge into the
//! whole. Every test is bounded by a timeout.

use std::{future::Future, net::IpAddr, time::Duration};

use loadgen::{
    faults::Faults,
    fleet::FleetArgs,
    floor::{Floor, FloorArgs},
    merge,
    presence::{self, PresenceArgs},
    report::SUMMARY_PREFIX,
    subscribers::{self, Subscribe, SubscribersArgs},
    target::Target,
    ws,
};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(20);

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

/// The floor twice (two "gateways" that share their events), from two source
/// addresses.
fn fleet(floor: &Floor) -> FleetArgs {
    FleetArgs {
        urls: vec![floor.url(), floor.url()],
        token: None,
        binds: ["127.0.0.1", "127.0.0.2"]
            .map(|a| a.parse::<IpAddr>().unwrap())
            .to_vec(),
        gateway_pids: vec![],
        watch_pids: vec![std::process::id()],
        connect_concurrency: 8,
        connect_timeout: Duration::from_secs(5),
        barrier: None,
        parties: 1,
        party: None,
        barrier_timeout: Duration::from_secs(10),
        settle: Duration::from_millis(20),
        label: Some("test".into()),
    }
}

/// 40 sockets, 40 PATCHes (200/s for 200 ms).
fn subscribers_args(floor: &Floor) -> SubscribersArgs {
    SubscribersArgs {
        fleet: fleet(floor),
        sockets: 40,
        offset: 0,
        first_user: 100,
        subscribe: Subscribe::Own,
        rate: 200.0,
        duration: Duration::from_millis(200),
        writers: 3,
        drain: Duration::from_secs(3),
        seed: Some(7),
    }
}

fn summary_json(line: &str) -> Value {
    assert!(!line.contains('\n'));
    serde_json::from_str(line.strip_prefix(SUMMARY_PREFIX).expect("prefix")).expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_reaches_exactly_its_subscriber() {
    let floor = floor(Faults::default()).await;
    let report = bounded(subscribers::run(&subscribers_args(&floor)))
        .await
        .unwrap();
    assert!(report.is_clean(), "{}", report.human());
    let r = summary_json(&report.summary())["results"].clone();
    assert_eq!(r["sockets_ready"], 40, "{}", report.human());
    assert_eq!(r["hello_mismatch"], 0);
    assert_eq!(
        (r["planned"].clone(), r["acked"].clone()),
        (40.into(), 40.into())
    );
    assert_eq!(
        (r["expected"].clone(), r["delivered"].clone()),
        (40.into(), 40.into())
    );
    for key in [
        "lost",
        "misdelivered",
        "duplicates",
        "out_of_order",
        "foreign",
    ] {
        assert_eq!(r[key], 0, "{key}: {}", report.human());
    }
    assert_eq!(r["latency"]["count"], 40);
    // Each socket got its user's (empty) presence after hello.
    assert_eq!(r["presence_frames"], 40);
    // The floor twice, 20 sockets each; its RSS and CPU read (it is this process).
    let gateways = r["gateways"].as_array().unwrap();
    assert_eq!(gateways.len(), 2);
    assert!(
        gateways
            .iter()
            .all(|g| g["sockets"] == 20 && g["pid"] == std::process::id())
    );
    assert!(gateways[0]["rss_after"].is_u64() && gateways[0]["cpu_s"].is_number());
    assert!(r["server_cpu_s"][std::process::id().to_string()].is_number());
    assert_eq!(
        r["latency_hist"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[1].as_u64().unwrap())
            .sum::<u64>(),
        40
    );

    // Filtered to nothing: the same PATCHes reach nobody, and that is clean.
    let none = SubscribersArgs {
        subscribe: Subscribe::None,
        ..subscribers_args(&floor)
    };
    let report = bounded(subscribers::run(&none)).await.unwrap();
    assert!(report.is_clean(), "{}", report.human());
    let r = summary_json(&report.summary())["results"].clone();
    assert_eq!(
        (
            r["acked"].clone(),
            r["expected"].clone(),
            r["delivered"].clone()
        ),
        (40.into(), 0.into(), 0.into())
    );
    assert_eq!(
        (r["lost"].clone(), r["misdelivered"].clone()),
        (0.into(), 0.into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_that_ignores_its_filter_is_caught() {
    // The floor's first socket gets every user's updates.
    let floor = floor(Faults {
        fault_unfiltered: true,
        ..Faults::default()
    })
    .await;
    let args = SubscribersArgs {
        fleet: FleetArgs {
            connect_concurrency: 1,
            ..fleet(&floor)
        },
        ..subscribers_args(&floor)
    };
    let report = bounded(subscribers::run(&args)).await.unwrap();
    assert!(!report.is_clean());
    let r = summary_json(&report.summary())["results"].clone();
    let misdelivered = r["misdelivered"].as_u64().unwrap();
    // Every event but those for the faulty socket's own user.
    assert!((30..40).contains(&misdelivered), "{}", report.human());
    assert_eq!(
        (r["lost"].clone(), r["delivered"].clone()),
        (0.into(), 40.into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_slices_meet_at_the_barrier_and_merge_into_the_whole() {
    let floor = floor(Faults::default()).await;
    let dir = std::env::temp_dir().join(format!("loadgen-merge-{}", std::process::id()));
    let slice = |offset: u64, party: &str| SubscribersArgs {
        fleet: FleetArgs {
            barrier: Some(dir.clone()),
            parties: 2,
            party: Some(party.into()),
            ..fleet(&floor)
        },
        sockets: 20,
        offset,
        rate: 100.0,
        ..subscribers_args(&floor)
    };
    let (a, b) = (slice(0, "a"), slice(20, "b"));
    let (a, b) = bounded(async { tokio::join!(subscribers::run(&a), subscribers::run(&b)) }).await;
    let (a, b) = (a.unwrap(), b.unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
    let text = format!("{}\nnoise\n{}\n", a.summary(), b.summary());
    let merged = merge::merge(&merge::summaries(&text)).unwrap();
    let (p, r) = (&merged["params"], &merged["results"]);
    assert_eq!(
        (p["sockets"].clone(), p["parts"].clone(), p["rate"].clone()),
        (40.into(), 2.into(), 200.into())
    );
    assert_eq!(r["clean"], true, "{}", merge::human(&merged));
    assert_eq!(
        (
            r["sockets_ready"].clone(),
            r["acked"].clone(),
            r["delivered"].clone()
        ),
        (40.into(), 40.into(), 40.into())
    );
    assert_eq!(r["latency"]["count"], 40);
    // Each gateway URL counts both slices' sockets; the floor is one URL twice.
    let gateways = r["gateways"].as_array().unwrap();
    assert_eq!(gateways.len(), 1, "{gateways:?}");
    assert_eq!(gateways[0]["sockets"], 40);
    assert!(gateways[0]["cpu_us_per_event"].is_number());
    assert!(merge::human(&merged).contains("2 processes merged"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_window_sees_the_others_presence_changes() {
    let floor = floor(Faults::default()).await;
    let args = PresenceArgs {
        fleet: fleet(&floor),
        users: 5,
        offset: 0,
        first_user: 10,
        duration: Duration::from_secs(1),
        period: Duration::from_millis(200),
        drain: Duration::from_secs(2),
    };
    let report = bounded(presence::run(&args)).await.unwrap();
    let r = summary_json(&report.summary())["results"].clone();
    assert_eq!(r["clean"], true, "{}", report.human());
    assert_eq!(r["sockets_ready"], 10);
    // 10 windows × 5 messages, each seen by the other window (the floor sends
    // every change at once, so nothing is superseded).
    assert_eq!(r["sent"], 50, "{}", report.human());
    assert_eq!(r["latency"]["count"], 50, "{}", report.human());
    assert_eq!(
        (r["superseded"].clone(), r["missing_last"].clone()),
        (0.into(), 0.into())
    );
    // Each window: its presence after hello, and one frame per change of either
    // window (its own included).
    assert!(
        r["presence_frames"].as_u64().unwrap() >= 100,
        "{}",
        report.human()
    );
    assert!(r["latency"]["max_ms"].as_f64().unwrap() < 1_000.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_hello_and_a_bad_filter() {
    let floor = floor(Faults::default()).await;
    let target = Target::resolve(&floor.url()).await.unwrap();
    let bind = Some("127.0.0.3".parse().unwrap());
    let (_socket, _, hello) = bounded(ws::open_from(
        &target,
        bind,
        "users=3,1",
        Duration::from_secs(5),
    ))
    .await
    .unwrap();
    assert_eq!(loadgen::fleet::hello_users(&hello), Some(vec![1, 3]));
    let refused = bounded(ws::open_from(
        &target,
        None,
        "users=x",
        Duration::from_secs(5),
    ))
    .await;
    assert!(format!("{:#}", refused.unwrap_err()).contains("400"));
}
