//! The checker: what the load recorded, held to the user-service's own event
//! log, and every disagreement named.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt::Write as _,
    time::Duration,
};

use serde_json::Value;
use test_support::{Poll, poll_until};
use users_proto::v1 as pb;

use super::load::{Follower, Outcome, Seen, Update, Write};
use crate::{http::Http, timeouts::STEP_TIMEOUT};

/// How long sockets get to catch up with the log once the writes stop.
const CATCH_UP: Duration = Duration::from_secs(30);
/// How long a caught-up socket is still watched, so a late duplicate shows.
const SETTLE: Duration = Duration::from_millis(500);

/// The user-service's event log: the ground truth the sockets are held to.
#[derive(Clone, Debug)]
pub struct EventLog {
    /// The database's epoch, as every socket's `hello` must name it.
    pub epoch: String,
    /// The newest seq when it was read.
    pub head: u64,
    /// Every event after the seq it was read from, up to `head`.
    pub events: Vec<Update>,
}

/// Reads the user-service's log after `after` up to its head, with WatchUsers (the
/// same log the relay and the gateways read from).
pub async fn event_log(user_service_url: &str, after: u64) -> EventLog {
    let read = async {
        let mut client =
            pb::user_service_client::UserServiceClient::connect(user_service_url.to_owned())
                .await
                .expect("connecting to the user-service");
        let response = client
            .watch_users(pb::WatchUsersRequest {
                since_seq: after,
                epoch: String::new(),
                replay_tail: None,
            })
            .await
            .expect("WatchUsers");
        let header = |name| {
            response
                .metadata()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let epoch = header("x-users-epoch");
        let head: u64 = header("x-users-head-seq")
            .parse()
            .expect("x-users-head-seq");
        let mut stream = response.into_inner();
        let mut events = Vec::new();
        let mut last = after;
        while last < head {
            let event = stream
                .message()
                .await
                .expect("reading WatchUsers")
                .expect("WatchUsers ended before the head");
            last = event.seq;
            let user = event.user.unwrap_or_default();
            let action = match pb::Action::try_from(event.action) {
                Ok(pb::Action::Create) => "create",
                Ok(pb::Action::Update) => "update",
                Ok(pb::Action::Delete) => "delete",
                _ => "unspecified",
            };
            events.push(Update {
                seq: event.seq,
                action: action.to_owned(),
                user_id: user.id,
                first_name: user.first_name.unwrap_or_default(),
                version: user.version,
            });
        }
        EventLog {
            epoch,
            head,
            events,
        }
    };
    tokio::time::timeout(STEP_TIMEOUT * 3, read)
        .await
        .expect("reading the event log timed out")
}

/// What [`finish`] checked, for the case's printout and for assertions a case
/// adds of its own.
#[derive(Debug)]
pub struct Report {
    /// One paragraph saying what was checked, as printed.
    pub summary: String,
    /// The log everything was held to.
    pub log: EventLog,
    /// Each follower's name and what it received.
    pub sockets: Vec<(String, Seen)>,
}

/// Ends a case: reads the log from the user-service at `user_service_url`, waits
/// (bounded) for every follower to catch up with it, stops them, reads the users
/// through `http`, and checks everything against the log (see the module's doc).
/// `refusals_are_definitive`: whether a refused write is known not to have
/// applied (the user-service itself refused it) or might have (the gateway lost
/// the user-service mid-call). Panics listing every problem; else prints and
/// returns what was checked.
pub async fn finish(
    case: &str,
    user_service_url: &str,
    http: &Http,
    writes: &[Write],
    refusals_are_definitive: bool,
    followers: Vec<Follower>,
) -> Report {
    let from = followers
        .iter()
        .filter_map(|f| f.seen().from)
        .min()
        .expect("followers have a start");
    let log = event_log(user_service_url, from).await;
    // A follower that never catches up is not a failure of the wait: the
    // checks below name what it is missing.
    let behind =
        |f: &Follower| log.head > from && f.seen().updates.iter().all(|u| u.seq < log.head);
    let _ = poll_until(
        Poll::within(CATCH_UP).every(Duration::from_millis(50)),
        async || {
            if followers.iter().any(behind) {
                Err(())
            } else {
                Ok(())
            }
        },
    )
    .await;
    tokio::time::sleep(SETTLE).await;
    let sockets: Vec<(String, Seen)> = followers.into_iter().map(Follower::stop).collect();
    let ids: HashSet<i64> = log.events.iter().map(|e| e.user_id).collect();
    let mut users = HashMap::new();
    for id in ids {
        let reply = http
            .try_send("GET", &format!("/api/users/{id}/"), None, None, &[])
            .await
            .unwrap_or_else(|e| panic!("{case}: reading user {id}: {e}"));
        assert_eq!(
            reply.status, 200,
            "{case}: reading user {id}: {:?}",
            reply.body
        );
        users.insert(id, reply.json());
    }
    let problems = problems(writes, refusals_are_definitive, &log, &sockets, &users);
    let summary = summary(case, writes, &log, &sockets);
    assert!(
        problems.is_empty(),
        "{summary}\n{case} FAILED:\n  - {}",
        problems.join("\n  - ")
    );
    eprintln!("{summary}");
    Report {
        summary,
        log,
        sockets,
    }
}

/// Every way the writes, the log, the sockets and the database disagree.
fn problems(
    writes: &[Write],
    refusals_are_definitive: bool,
    log: &EventLog,
    sockets: &[(String, Seen)],
    users: &HashMap<i64, Value>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for pair in log.events.windows(2) {
        if pair[1].seq != pair[0].seq + 1 {
            problems.push(format!(
                "the log jumps from seq {} to {}",
                pair[0].seq, pair[1].seq
            ));
        }
    }

    // The log against the writes: acknowledged ones there once, at their version;
    // refused ones absent; none applied twice; nothing nobody sent.
    let mut applied: HashMap<&str, Vec<&Update>> = HashMap::new();
    for event in log.events.iter().filter(|e| e.action == "update") {
        applied.entry(&event.first_name).or_default().push(event);
    }
    let sent: HashSet<&str> = writes.iter().map(|w| w.value.as_str()).collect();
    let mut twice: Vec<_> = applied.iter().filter(|(_, e)| e.len() > 1).collect();
    twice.sort_by_key(|(_, e)| e[0].seq);
    for (value, events) in twice {
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        problems.push(format!(
            "{value:?} was applied {} times: seqs {seqs:?}",
            seqs.len()
        ));
    }
    for write in writes {
        let events = applied.get(write.value.as_str());
        match (&write.outcome, events) {
            (Outcome::Acked { version }, None) => problems.push(format!(
                "acknowledged write {:?} (version {version}) is not in the log: lost",
                write.value
            )),
            (Outcome::Acked { version }, Some(events)) if events[0].version != *version => {
                problems.push(format!(
                    "acknowledged write {:?} answered version {version}, the log has version {} (seq {})",
                    write.value, events[0].version, events[0].seq
                ))
            }
            (Outcome::Refused { status, .. }, Some(events)) if refusals_are_definitive => {
                problems.push(format!(
                    "write {:?} was refused with {status} yet applied (seq {})",
                    write.value, events[0].seq
                ))
            }
            _ => {}
        }
    }
    let mut unsent: Vec<_> = applied.keys().filter(|v| !sent.contains(**v)).collect();
    unsent.sort();
    for value in unsent {
        problems.push(format!("the log holds {value:?}, which no writer sent"));
    }

    // Each socket against the log: every event after its start exactly once, in
    // order, with the log's content.
    let truth: BTreeMap<u64, &Update> = log.events.iter().map(|e| (e.seq, e)).collect();
    for (name, seen) in sockets {
        let from = seen.from.unwrap_or(0);
        let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
        for update in &seen.updates {
            *counts.entry(update.seq).or_default() += 1;
        }
        let missing: Vec<u64> = truth
            .keys()
            .copied()
            .filter(|seq| *seq > from && !counts.contains_key(seq))
            .collect();
        if !missing.is_empty() {
            problems.push(format!(
                "socket {name} is missing {} events: seqs {}",
                missing.len(),
                ranges(&missing)
            ));
        }
        let duplicated: Vec<String> = counts
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(seq, n)| format!("{seq} ×{n}"))
            .collect();
        if !duplicated.is_empty() {
            problems.push(format!(
                "socket {name} got {} events more than once: {}",
                duplicated.len(),
                abbreviate(&duplicated)
            ));
        }
        let unexpected: Vec<u64> = counts
            .keys()
            .copied()
            .filter(|seq| *seq <= from || !truth.contains_key(seq))
            .collect();
        if !unexpected.is_empty() {
            problems.push(format!(
                "socket {name} got events outside (its start {from}, the head {}]: seqs {}",
                log.head,
                ranges(&unexpected)
            ));
        }
        let disorder: Vec<String> = seen
            .updates
            .windows(2)
            .filter(|pair| pair[1].seq <= pair[0].seq)
            .map(|pair| format!("{} after {}", pair[1].seq, pair[0].seq))
            .collect();
        if !disorder.is_empty() {
            problems.push(format!(
                "socket {name} got events out of order: {}",
                abbreviate(&disorder)
            ));
        }
        let wrong: Vec<String> = seen
            .updates
            .iter()
            .filter(|u| truth.get(&u.seq).is_some_and(|t| *t != *u))
            .map(|u| format!("seq {}: got {u:?}, the log has {:?}", u.seq, truth[&u.seq]))
            .collect();
        if !wrong.is_empty() {
            problems.push(format!(
                "socket {name} got {} events unlike the log's: {}",
                wrong.len(),
                abbreviate(&wrong)
            ));
        }
        if !seen.resyncs.is_empty() {
            problems.push(format!(
                "socket {name} was told to resync (every gap here is in the replay window): {:?}",
                seen.resyncs
            ));
        }
        if !seen.foreign_hellos.is_empty() {
            problems.push(format!(
                "socket {name} met another epoch: {:?}",
                seen.foreign_hellos
            ));
        }
    }

    // The final view: the log's last word and each socket's on a user are what
    // the database holds.
    for (id, user) in users {
        let held = (
            user["first_name"].as_str().unwrap_or_default(),
            user["version"].as_i64().unwrap_or(-1),
        );
        let view = |updates: &mut dyn Iterator<Item = &Update>| {
            updates
                .filter(|u| u.user_id == *id)
                .max_by_key(|u| u.seq)
                .map(|u| (u.first_name.clone(), u.version))
        };
        if let Some((first, version)) = view(&mut log.events.iter())
            && (first.as_str(), version) != held
        {
            problems.push(format!(
                "user {id}: the log ends at ({first:?}, version {version}), the database holds {held:?}"
            ));
        }
        for (name, seen) in sockets {
            if let Some((first, version)) = view(&mut seen.updates.iter())
                && (first.as_str(), version) != held
            {
                problems.push(format!(
                    "user {id}: socket {name} ends at ({first:?}, version {version}), the database holds {held:?}"
                ));
            }
        }
    }
    problems
}

/// One paragraph saying what was checked.
fn summary(case: &str, writes: &[Write], log: &EventLog, sockets: &[(String, Seen)]) -> String {
    let acked = writes.iter().filter(|w| w.acked()).count();
    let mut refused: BTreeMap<u16, usize> = BTreeMap::new();
    for status in writes.iter().filter_map(Write::refused) {
        *refused.entry(status).or_default() += 1;
    }
    let unanswered = writes
        .iter()
        .filter(|w| matches!(w.outcome, Outcome::NoAnswer(_)))
        .count();
    let first = log.events.first().map_or(log.head, |e| e.seq);
    let mut text = format!(
        "[{case}] writes: {} sent, {acked} acknowledged (all in the log once, at their version), \
         refused {refused:?}, {unanswered} unanswered; log: {} events, seq {first}..={}",
        writes.len(),
        log.events.len(),
        log.head
    );
    for (name, seen) in sockets {
        let owed = log
            .events
            .iter()
            .filter(|e| e.seq > seen.from.unwrap_or(0))
            .count();
        let _ = write!(
            text,
            "\n[{case}]   socket {name}: {} of {owed} events exactly once in order, {} sockets opened ({} reconnects), closes {:?}, {} connect errors",
            seen.updates.len(),
            seen.gateways.len(),
            seen.gateways.len().saturating_sub(1),
            seen.closes,
            seen.errors.len()
        );
    }
    text
}

/// `[1, 2, 3, 7]` → `1-3, 7`, cut short when long.
fn ranges(seqs: &[u64]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < seqs.len() {
        let start = seqs[i];
        while i + 1 < seqs.len() && seqs[i + 1] == seqs[i] + 1 {
            i += 1;
        }
        parts.push(if seqs[i] == start {
            start.to_string()
        } else {
            format!("{start}-{}", seqs[i])
        });
        i += 1;
    }
    abbreviate(&parts)
}

/// The first 20 items, and how many more.
fn abbreviate(items: &[String]) -> String {
    let mut text = items
        .iter()
        .take(20)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > 20 {
        let _ = write!(text, ", … ({} more)", items.len() - 20);
    }
    text
}
