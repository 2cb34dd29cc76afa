//! The fault suite: the real binaries, a real redis-server, real signals. In each
//! case a writer PATCHes a new unique name every 20 ms through the gateway and
//! sockets follow the feed (resuming with `since`/`epoch` whenever they are cut),
//! while one fault strikes: the user-service killed with SIGKILL, Redis killed,
//! one of two gateways sent SIGTERM, Redis frozen with SIGSTOP for 10 s, the
//! database's disk refusing writes, PostgreSQL restarted under the user-service. `faults::finish` then holds everything to the
//! user-service's own event log: every acknowledged write there exactly once,
//! every socket with every event exactly once and in order, and the database's
//! final state what every socket shows. Each case prints what it checked.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use e2e::{
    Http, Postgres, Redis, STEP_TIMEOUT, UserService, eventually,
    faults::{
        Follower, Outcome, Write, Writer, finish, gateway_flags, ignore_sigxfsz, limit_file_size,
        rss_kib, wait_health,
    },
    start_gateway,
};
use tonic_health::pb::health_check_response::ServingStatus;
use users_proto::v1 as pb;

/// The writer's pace: 50 writes/s, enough to be mid-write at any fault and light
/// enough for five cases sharing two cores.
const EVERY: Duration = Duration::from_millis(20);
/// Acknowledged writes each phase waits for (about a second's worth).
const PHASE: usize = 50;
/// How long a phase may take to get its writes acknowledged.
const PHASE_TIMEOUT: Duration = Duration::from_secs(30);
/// How much a process may grow during the Redis stall.
const RSS_BOUND_KIB: u64 = 50 * 1024;

/// Every refused write was a 503 with DRF's `{"detail": "…"}`; none went
/// unanswered or got another status.
fn assert_refusals_are_drf_503s(case: &str, writes: &[Write]) {
    for write in writes.iter().filter(|w| !w.acked()) {
        match &write.outcome {
            Outcome::Refused { status: 503, body } => {
                let json: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
                assert!(
                    json["detail"].is_string() && json.as_object().is_some_and(|o| o.len() == 1),
                    "{case}: a 503 without DRF's {{\"detail\": …}}: {body}"
                );
            }
            other => panic!("{case}: write {:?} ended {other:?}, not 503", write.value),
        }
    }
}

/// Now, once the binaries are built: the first case to ask builds them for all,
/// and that build is no part of any case's time.
fn start_clock() -> Instant {
    e2e::binary("user-service");
    Instant::now()
}

/// A user under load through one gateway: created, two sockets following the
/// feed, and a writer past its first phase of acknowledged writes.
struct Load {
    http: Http,
    id: i64,
    followers: Vec<Follower>,
    writer: Writer,
}

impl Load {
    async fn start(name: &str, gateway: SocketAddr) -> Load {
        let http = Http::new(gateway);
        http.wait_ready().await;
        let id = http.create("Ada", "Lovelace").await["id"].as_i64().unwrap();
        let followers = vec![
            Follower::start("a", &[gateway]).await,
            Follower::start("b", &[gateway]).await,
        ];
        let writer = Writer::start(name, id, &[gateway], EVERY);
        writer.wait_acked(PHASE, PHASE_TIMEOUT).await;
        Load {
            http,
            id,
            followers,
            writer,
        }
    }
}

fn elapsed(started: Instant) -> String {
    format!("{:.1} s", started.elapsed().as_secs_f64())
}

#[tokio::test]
async fn a_user_service_killed_mid_load_loses_no_acknowledged_write_and_the_gateway_recovers_alone()
{
    let case = "kill -9 user-service";
    let started = start_clock();
    let mut users = UserService::start(&[]).await;
    let gateway = start_gateway(&users.url(), &gateway_flags(None)).await;
    let Load {
        http,
        followers,
        writer,
        ..
    } = Load::start("kill", gateway.addr).await;

    let addr = users.process.addr;
    users.process.kill().await;
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    users.start_again(&[], addr).await;
    let restarted = Instant::now();
    writer.wait_acked(PHASE, PHASE_TIMEOUT).await;
    let writes = writer.stop().await;

    let in_gap: Vec<&Write> = writes
        .iter()
        .filter(|w| w.sent >= killed && w.sent < restarted)
        .collect();
    let refused_in_gap = in_gap.iter().filter(|w| w.refused() == Some(503)).count();
    assert!(
        refused_in_gap > 0,
        "{case}: no 503 while the user-service was down: {in_gap:?}"
    );
    let slowest = in_gap.iter().map(|w| w.took).max().unwrap_or_default();
    assert!(
        slowest < Duration::from_secs(6),
        "{case}: a request took {slowest:?} while the user-service was down: 503s must come fast"
    );
    assert_refusals_are_drf_503s(case, &writes);
    let recovered = writes
        .iter()
        .find(|w| w.sent >= restarted && w.acked())
        .map(|w| w.sent + w.took - restarted)
        .expect("a write after the restart");
    finish(case, &users.url(), &http, &writes, false, followers).await;
    eprintln!(
        "[{case}] while down: {} writes, {refused_in_gap} answered 503 (slowest {slowest:?}); \
         first write acknowledged {recovered:?} after the restart, no gateway restart; \
         case took {}",
        in_gap.len(),
        elapsed(started)
    );
}

#[tokio::test]
async fn a_redis_killed_and_restarted_empty_delivers_every_event_from_the_outbox() {
    let case = "Redis killed";
    let started = start_clock();
    let mut redis = Redis::start().await;
    let users = UserService::start(&redis.flags()).await;
    let gateway = start_gateway(&users.url(), &gateway_flags(Some(&redis))).await;
    let Load {
        http,
        followers,
        writer,
        ..
    } = Load::start("redis", gateway.addr).await;

    redis.stop().await;
    let down = Instant::now();
    writer.wait_acked(PHASE, PHASE_TIMEOUT).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let acked_while_down = writer
        .writes()
        .iter()
        .filter(|w| w.sent >= down && w.acked())
        .count();
    let received_while_down: Vec<usize> =
        followers.iter().map(|f| f.seen().updates.len()).collect();
    redis.start_again().await;
    writer.wait_acked(PHASE, PHASE_TIMEOUT).await;
    let writes = writer.stop().await;

    assert!(
        writes.iter().all(Write::acked),
        "{case}: writes must succeed while Redis is down: {:?}",
        writes.iter().filter(|w| !w.acked()).collect::<Vec<_>>()
    );
    finish(case, &users.url(), &http, &writes, true, followers).await;
    eprintln!(
        "[{case}] {acked_while_down} writes acknowledged while Redis was down (sockets had \
         {received_while_down:?} events when it came back, empty); case took {}",
        elapsed(started)
    );
}

#[tokio::test]
async fn sockets_of_a_gateway_sent_sigterm_get_1001_and_resume_on_the_other_missing_nothing() {
    let case = "SIGTERM gateway";
    let started = start_clock();
    let redis = Redis::start().await;
    let users = UserService::start(&redis.flags()).await;
    let mut one = start_gateway(&users.url(), &gateway_flags(Some(&redis))).await;
    let two = start_gateway(&users.url(), &gateway_flags(Some(&redis))).await;
    let (http_one, http_two) = (Http::new(one.addr), Http::new(two.addr));
    http_one.wait_ready().await;
    http_two.wait_ready().await;
    let id = http_one.create("Ada", "Lovelace").await["id"]
        .as_i64()
        .unwrap();
    let followers = vec![
        Follower::start("one-a", &[one.addr, two.addr]).await,
        Follower::start("one-b", &[one.addr, two.addr]).await,
        Follower::start("two-a", &[two.addr, one.addr]).await,
    ];
    let writer = Writer::start("term", id, &[one.addr, two.addr], EVERY);
    writer.wait_acked(PHASE, PHASE_TIMEOUT).await;

    let exit = one
        .terminate(Duration::from_secs(15))
        .await
        .expect("gateway one stops on SIGTERM");
    assert_eq!(exit, 0, "{case}: gateway one's exit code");
    writer.wait_acked(PHASE, PHASE_TIMEOUT).await;
    let writes = writer.stop().await;

    for follower in &followers[..2] {
        let seen = follower.seen();
        assert_eq!(
            seen.closes.first(),
            Some(&Some(1001)),
            "{case}: socket {} on the stopped gateway: {seen:?}",
            follower.name
        );
        assert_eq!(
            seen.gateways.last(),
            Some(&two.addr),
            "{case}: socket {} resumed on the other gateway",
            follower.name
        );
    }
    assert!(
        followers[2].seen().closes.is_empty(),
        "{case}: a socket on the running gateway was closed: {:?}",
        followers[2].seen()
    );
    finish(case, &users.url(), &http_two, &writes, true, followers).await;
    eprintln!(
        "[{case}] gateway one exited 0; its sockets closed 1001 and resumed on gateway two; case took {}",
        elapsed(started)
    );
}

#[tokio::test]
async fn a_redis_frozen_for_10_s_loses_nothing_and_memory_stays_bounded() {
    let case = "SIGSTOP Redis 10 s";
    let started = start_clock();
    let redis = Redis::start().await;
    let users = UserService::start(&redis.flags()).await;
    let gateway = start_gateway(&users.url(), &gateway_flags(Some(&redis))).await;
    let Load {
        http,
        followers,
        writer,
        ..
    } = Load::start("stall", gateway.addr).await;
    let pids = [
        ("user-service", users.process.pid().unwrap()),
        ("gateway", gateway.pid().unwrap()),
    ];
    let rss_before = pids.map(|(_, pid)| rss_kib(pid));

    redis.pause();
    let paused = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let rss_stalled = pids.map(|(_, pid)| rss_kib(pid));
    let acked_while_stalled = writer
        .writes()
        .iter()
        .filter(|w| w.sent >= paused && w.acked())
        .count();
    redis.resume();
    writer.wait_acked(PHASE, PHASE_TIMEOUT).await;
    let writes = writer.stop().await;

    assert!(
        writes.iter().all(Write::acked),
        "{case}: writes must succeed while Redis is frozen: {:?}",
        writes.iter().filter(|w| !w.acked()).collect::<Vec<_>>()
    );
    let report = finish(case, &users.url(), &http, &writes, true, followers).await;
    let rss_after = pids.map(|(_, pid)| rss_kib(pid));
    let mut growth = Vec::new();
    for (i, (name, _)) in pids.iter().enumerate() {
        let peak = rss_stalled[i].max(rss_after[i]);
        assert!(
            peak < rss_before[i] + RSS_BOUND_KIB,
            "{case}: {name} grew from {} KiB to {peak} KiB during the stall",
            rss_before[i]
        );
        growth.push(format!(
            "{name} VmRSS {} → {} (stalled) → {} KiB (after)",
            rss_before[i], rss_stalled[i], rss_after[i]
        ));
    }
    eprintln!(
        "[{case}] {acked_while_stalled} writes acknowledged during the 10 s stall, {} events in all; \
         {} (bound +{} KiB); case took {}",
        report.log.events.len(),
        growth.join(", "),
        RSS_BOUND_KIB,
        elapsed(started)
    );
}

#[tokio::test]
async fn a_disk_that_refuses_writes_gives_503_and_not_serving_then_service_resumes_without_a_restart()
 {
    let case = "disk refuses writes";
    let started = start_clock();
    let users = UserService::start_with(&[], ignore_sigxfsz).await;
    let url = users.url();
    let pid = users.process.pid().unwrap();
    let gateway = start_gateway(&url, &gateway_flags(None)).await;
    let Load {
        http,
        id,
        followers,
        writer,
    } = Load::start("disk", gateway.addr).await;

    // The disk refuses every write (RLIMIT_FSIZE 0: EFBIG, even for root).
    limit_file_size(pid, Some(0));
    let not_serving_after = wait_health(&url, ServingStatus::NotServing, STEP_TIMEOUT).await;
    eventually(
        PHASE_TIMEOUT,
        &format!("{case}: {PHASE} writes to be refused"),
        async || {
            let refused = writer.writes().iter().filter(|w| !w.acked()).count();
            if refused >= PHASE {
                Ok(())
            } else {
                Err(format!("writes kept succeeding ({refused} refused)"))
            }
        },
    )
    .await;
    let mut client = pb::user_service_client::UserServiceClient::connect(url.clone())
        .await
        .unwrap();
    let refused = client
        .update_user(pb::UpdateUserRequest {
            user: Some(pb::User {
                id,
                first_name: Some("by gRPC while the disk refuses".into()),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect_err("a gRPC write while the disk refuses writes");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert_eq!(
        refused.message(),
        "the database cannot be written right now; retry later"
    );
    let ready = http.get("/readyz").await;
    let writes_refused = writer.stop().await;

    // Nothing half-written: the user is as the last acknowledged write left it.
    let last_acked = writes_refused
        .iter()
        .rev()
        .find_map(|w| match w.outcome {
            Outcome::Acked { version } => Some((w.value.clone(), version)),
            _ => None,
        })
        .unwrap();
    let user = http.get(&format!("/api/users/{id}/")).await;
    assert_eq!(user.status, 200, "reads still work: {:?}", user.body);
    let user = user.json();
    assert_eq!(
        (
            user["first_name"].as_str().unwrap(),
            user["version"].as_i64().unwrap()
        ),
        (last_acked.0.as_str(), last_acked.1),
        "{case}: the user changed while every write was refused"
    );
    assert_refusals_are_drf_503s(case, &writes_refused);
    let refused_count = writes_refused.iter().filter(|w| !w.acked()).count();

    // Space returns: health and writes come back with no restart, and no write
    // is needed to notice (the writer probes).
    limit_file_size(pid, None);
    let serving_after = wait_health(&url, ServingStatus::Serving, STEP_TIMEOUT).await;
    let writer = Writer::start("back", id, &[gateway.addr], EVERY);
    writer.wait_acked(PHASE, PHASE_TIMEOUT).await;
    let writes_back = writer.stop().await;
    assert!(
        writes_back.iter().all(Write::acked),
        "{case}: writes after the disk recovered: {:?}",
        writes_back
            .iter()
            .filter(|w| !w.acked())
            .collect::<Vec<_>>()
    );
    assert_eq!(
        users.process.pid(),
        Some(pid),
        "{case}: the same user-service process"
    );

    let writes: Vec<Write> = writes_refused.into_iter().chain(writes_back).collect();
    finish(case, &url, &http, &writes, true, followers).await;
    eprintln!(
        "[{case}] health NOT_SERVING {not_serving_after:?} after the disk refused writes; \
         {refused_count} REST writes answered 503 {{\"detail\"}}, gRPC UNAVAILABLE; user unchanged \
         at version {}; gateway /readyz meanwhile {} {}; health SERVING {serving_after:?} after \
         the disk took writes again (no restart, no write needed); case took {}",
        last_acked.1,
        ready.status,
        String::from_utf8_lossy(&ready.body),
        elapsed(started)
    );
}

#[tokio::test]
async fn a_postgresql_restart_gives_fast_503s_then_service_resumes_with_nothing_acknowledged_lost()
{
    let case = "PostgreSQL restarted";
    let started = start_clock();
    let mut postgres = Postgres::start().await.unwrap();
    let database = postgres.create_database("faults").await.unwrap();
    let users = UserService::start_on_database(&database, &[]).await;
    let gateway = start_gateway(&users.url(), &gateway_flags(None)).await;
    let Load {
        http,
        followers,
        writer,
        ..
    } = Load::start("pg", gateway.addr).await;

    postgres.stop().await.unwrap();
    let stopped = Instant::now();
    wait_health(&users.url(), ServingStatus::NotServing, STEP_TIMEOUT).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let restarting = Instant::now();
    postgres.start_again().await.unwrap();
    let restarted = Instant::now();
    let serving_after = wait_health(&users.url(), ServingStatus::Serving, STEP_TIMEOUT).await;
    writer.wait_acked(PHASE, PHASE_TIMEOUT).await;
    let writes = writer.stop().await;

    let in_gap: Vec<&Write> = writes
        .iter()
        .filter(|w| w.sent >= stopped + Duration::from_millis(100) && w.sent < restarting)
        .collect();
    let refused_in_gap = in_gap.iter().filter(|w| w.refused() == Some(503)).count();
    assert!(
        refused_in_gap > 0 && refused_in_gap == in_gap.len(),
        "{case}: every write while PostgreSQL was down gets 503: {in_gap:?}"
    );
    let slowest = in_gap.iter().map(|w| w.took).max().unwrap_or_default();
    assert!(
        slowest < Duration::from_secs(6),
        "{case}: a request took {slowest:?} while PostgreSQL was down: 503s must come fast"
    );
    assert_refusals_are_drf_503s(case, &writes);
    // A write whose COMMIT was in flight when the server stopped may have
    // committed unacknowledged: refusals are not definitive.
    finish(case, &users.url(), &http, &writes, false, followers).await;
    eprintln!(
        "[{case}] while down: {} writes, all 503 (slowest {slowest:?}); health SERVING \
         {serving_after:?} after the restart ({:?} to start PostgreSQL), no user-service restart; case took {}",
        in_gap.len(),
        restarted - restarting,
        elapsed(started)
    );
}

#[tokio::test]
async fn one_of_two_user_services_killed_twice_in_turn_loses_nothing_and_rest_keeps_answering() {
    let case = "kill -9 one of two user-services";
    let started = start_clock();
    let database = test_support::shared_database("faults_two").await.unwrap();
    let mut replicas = [
        UserService::start_on_database(&database, &[]).await,
        UserService::start_on_database(&database, &[]).await,
    ];
    let urls = format!("{},{}", replicas[0].url(), replicas[1].url());
    // WatchUsers as the event source: a kill of the replica it watches makes it
    // fail over to the other one, resuming from its last seq.
    let gateway = start_gateway(&urls, &gateway_flags(None)).await;
    let Load {
        http,
        followers,
        writer,
        ..
    } = Load::start("two", gateway.addr).await;

    let mut refused_after_kill = Vec::new();
    for which in [0, 1] {
        let addr = replicas[which].process.addr;
        replicas[which].process.kill().await;
        let killed = Instant::now();
        writer.wait_acked(PHASE, PHASE_TIMEOUT).await;
        refused_after_kill.push(
            writer
                .writes()
                .iter()
                .filter(|w| w.sent >= killed && !w.acked())
                .count(),
        );
        replicas[which].start_again(&[], addr).await;
        wait_health(&replicas[which].url(), ServingStatus::Serving, STEP_TIMEOUT).await;
        // Its health check passes again within a second; then it is balanced
        // over again.
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    writer.wait_acked(PHASE, PHASE_TIMEOUT).await;
    let writes = writer.stop().await;
    assert_refusals_are_drf_503s(case, &writes);
    for (which, refused) in refused_after_kill.iter().enumerate() {
        // Only calls sent to the killed replica before its first failed health
        // check (within a second) may fail: at 50 writes/s, well under 50.
        assert!(
            *refused < 50,
            "{case}: {refused} writes refused after killing replica {which}: REST must keep answering"
        );
    }
    // A refusal from the killed replica may have committed before it died.
    finish(case, &replicas[1].url(), &http, &writes, false, followers).await;
    eprintln!(
        "[{case}] each replica killed in turn: writes refused after each kill {refused_after_kill:?} \
         (the rest answered by the other replica); case took {}",
        elapsed(started)
    );
}
