//! Several user-services on one PostgreSQL database, each a real process (the
//! binary, over real sockets): seqs in commit order whichever process commits,
//! every process's watchers seeing every process's events, one relay at a time
//! with a takeover when its holder dies, and a database restart ridden out.

#[path = "../common/stream.rs"]
mod stream;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use test_support::{Poll, Postgres, Process, Redis, eventually, free_port, metric_value};
use tokio::process::Command;
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use users_proto::v1::{self as pb, user_service_client::UserServiceClient};

/// How long a replica may take to start and answer.
const START: Duration = Duration::from_secs(30);

/// One user-service process on a shared database.
struct Replica {
    process: Process,
    addr: SocketAddr,
    metrics: SocketAddr,
}

impl Replica {
    /// Starts the binary on `database_url` with `extra` flags and waits until
    /// its health says SERVING.
    async fn start(database_url: &str, extra: &[&str]) -> Replica {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_user-service"));
        command
            .args(["--listen", &addr.to_string()])
            .args(["--metrics-listen", &metrics.to_string()])
            .args(["--database-url", database_url])
            .args(extra)
            .env("RUST_LOG", "info");
        let process = Process::spawn(command).expect("the user-service starts");
        let replica = Replica {
            process,
            addr,
            metrics,
        };
        eventually(
            Poll::within(START).every(Duration::from_millis(50)),
            &format!("the user-service on {addr} to be SERVING"),
            async || match replica.health().await {
                Some(ServingStatus::Serving) => Ok(()),
                other => Err(format!("{other:?}; logs: {:?}", replica.process.logs())),
            },
        )
        .await;
        replica
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn client(&self) -> UserServiceClient<Channel> {
        UserServiceClient::connect(self.url())
            .await
            .expect("connecting to a replica")
    }

    /// users.v1.UserService's health; `None` when it does not answer.
    async fn health(&self) -> Option<ServingStatus> {
        let check = async {
            let channel = Channel::from_shared(self.url())
                .ok()?
                .connect()
                .await
                .ok()?;
            let reply = HealthClient::new(channel)
                .check(HealthCheckRequest {
                    service: "users.v1.UserService".into(),
                })
                .await
                .ok()?;
            ServingStatus::try_from(reply.into_inner().status).ok()
        };
        tokio::time::timeout(Duration::from_secs(2), check)
            .await
            .ok()
            .flatten()
    }

    /// Whether it holds `duty` now, by its `user_service_duty_held` gauge;
    /// `None` when it cannot be scraped.
    async fn holds(&self, duty: &str) -> Option<bool> {
        let text = scrape(self.metrics).await?;
        let held = metric_value(&text, &format!("user_service_duty_held{{duty=\"{duty}\"}}"))?;
        Some(held == 1.0)
    }
}

/// The Prometheus text at `addr`, over plain HTTP/1.1.
async fn scrape(addr: SocketAddr) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await.ok()?;
    Some(text)
}

/// An event as a reader saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    seq: u64,
    user_id: i64,
    version: i64,
    first_name: String,
}

/// Follows a replica's WatchUsers from the start, keeping what it sees.
fn watch(replica: &Replica) -> Arc<Mutex<Vec<Seen>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let url = replica.url();
    let kept = seen.clone();
    tokio::spawn(async move {
        let mut client = UserServiceClient::connect(url).await.expect("connecting");
        let mut events = client
            .watch_users(pb::WatchUsersRequest {
                since_seq: 0,
                epoch: String::new(),
                replay_tail: None,
            })
            .await
            .expect("WatchUsers")
            .into_inner();
        while let Ok(Some(event)) = events.message().await {
            let user = event.user.unwrap_or_default();
            kept.lock().unwrap().push(Seen {
                seq: event.seq,
                user_id: user.id,
                version: user.version,
                first_name: user.first_name.unwrap_or_default(),
            });
        }
    });
    seen
}

/// Renames user `id` to `first`, without a version check: writers of several
/// processes contend for the same row.
async fn rename(
    client: &mut UserServiceClient<Channel>,
    id: i64,
    first: &str,
) -> Result<pb::User, tonic::Status> {
    let request = pb::UpdateUserRequest {
        validate_only: false,
        user: Some(pb::User {
            id,
            first_name: Some(first.into()),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["first_name".into()],
        }),
        expected_version: None,
    };
    client.update_user(request).await.map(|r| r.into_inner())
}

async fn create(client: &mut UserServiceClient<Channel>, first: &str) -> pb::User {
    client
        .create_user(pb::CreateUserRequest {
            validate_only: false,
            user: Some(pb::User {
                first_name: Some(first.into()),
                last_name: Some("Replica".into()),
                ..Default::default()
            }),
        })
        .await
        .expect("create")
        .into_inner()
}

/// The seq a write's answer names.
fn seq_of<T>(response: &tonic::Response<T>) -> u64 {
    response
        .metadata()
        .get("x-users-seq")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a write that changed something names its seq")
}

/// The classic outbox trap: seqs handed out before commit can commit out of
/// order, and a reader that saw seq 11 before 10 committed skips 10 for good.
/// Three processes write at once (to a shared user, whose row they contend
/// for, and to users of their own); a reader on each, and one reading the
/// table over and over, must each see every seq exactly once, in order, with
/// no gap at any moment, and agree on every event; every acknowledged write
/// is there with the seq and version its answer named.
#[tokio::test]
async fn seqs_follow_commit_order_across_three_user_services_and_every_reader_sees_all() {
    let url = test_support::shared_database("replicas_order")
        .await
        .unwrap();
    let replicas = [
        Replica::start(&url, &[]).await,
        Replica::start(&url, &[]).await,
        Replica::start(&url, &[]).await,
    ];
    let readers: Vec<_> = replicas.iter().map(watch).collect();
    let shared = create(&mut replicas[0].client().await, "Shared").await;

    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut writers = Vec::new();
    for (r, replica) in replicas.iter().enumerate() {
        for w in 0..4 {
            let mut client = replica.client().await;
            let acked = acked.clone();
            let shared_id = shared.id;
            writers.push(tokio::spawn(async move {
                let own = create(&mut client, &format!("Own{r}x{w}")).await;
                for i in 0..40 {
                    let (id, name) = if i % 2 == 0 {
                        (shared_id, format!("S{r}x{w}x{i}"))
                    } else {
                        (own.id, format!("O{r}x{w}x{i}"))
                    };
                    let request = pb::UpdateUserRequest {
                        validate_only: false,
                        user: Some(pb::User {
                            id,
                            first_name: Some(name.clone()),
                            ..Default::default()
                        }),
                        update_mask: Some(prost_types::FieldMask {
                            paths: vec!["first_name".into()],
                        }),
                        expected_version: None,
                    };
                    let response = client.update_user(request).await.expect("an update");
                    let seq = seq_of(&response);
                    let user = response.into_inner();
                    acked.lock().unwrap().push(Seen {
                        seq,
                        user_id: id,
                        version: user.version,
                        first_name: name,
                    });
                }
            }));
        }
    }
    // A reader of the table itself, as a relay or a follower reads it.
    let table_reader = {
        let url = url.clone();
        tokio::spawn(async move {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
            let mut last = 0i64;
            let mut gaps = Vec::new();
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(60) {
                let seqs: Vec<i64> =
                    sqlx::query_scalar("SELECT seq FROM events WHERE seq > $1 ORDER BY seq")
                        .bind(last)
                        .fetch_all(&mut conn)
                        .await
                        .unwrap();
                for seq in seqs {
                    if seq != last + 1 {
                        gaps.push((last, seq));
                    }
                    last = seq;
                }
                if last >= 1 + 12 + 12 * 40 {
                    break;
                }
            }
            (last, gaps)
        })
    };
    for writer in writers {
        writer.await.expect("a writer");
    }
    let (table_last, gaps) = table_reader.await.unwrap();
    assert!(
        gaps.is_empty(),
        "the table reader saw seqs appear out of order: {gaps:?}"
    );

    let acked = acked.lock().unwrap().clone();
    let head = 1 + 12 + acked.len() as u64;
    assert_eq!(table_last as u64, head, "every write recorded one event");
    let views: Vec<Vec<Seen>> = eventually(
        Poll::within(Duration::from_secs(20)).every(Duration::from_millis(50)),
        "every reader to reach the head",
        async || {
            let views: Vec<Vec<Seen>> = readers.iter().map(|r| r.lock().unwrap().clone()).collect();
            let lengths: Vec<usize> = views.iter().map(Vec::len).collect();
            if lengths.iter().all(|&n| n as u64 >= head) {
                Ok(views)
            } else {
                Err(format!("readers have {lengths:?} of {head} events"))
            }
        },
    )
    .await;
    for (r, view) in views.iter().enumerate() {
        let seqs: Vec<u64> = view.iter().map(|e| e.seq).collect();
        assert_eq!(
            seqs,
            (1..=head).collect::<Vec<_>>(),
            "reader {r}: every seq once, in order"
        );
        assert_eq!(view, &views[0], "reader {r} disagrees with reader 0");
    }
    let by_seq: BTreeMap<u64, &Seen> = views[0].iter().map(|e| (e.seq, e)).collect();
    for write in &acked {
        assert_eq!(
            by_seq.get(&write.seq),
            Some(&write),
            "an acknowledged write as the log has it"
        );
    }
    // Each user's versions rise by one in seq order: no change was lost or
    // applied on a stale row by a concurrent process.
    let mut versions: BTreeMap<i64, i64> = BTreeMap::new();
    for event in &views[0] {
        let last = versions.insert(event.user_id, event.version).unwrap_or(0);
        assert_eq!(
            event.version,
            last + 1,
            "user {}'s versions at seq {}",
            event.user_id,
            event.seq
        );
    }
    eprintln!(
        "[replicas] 3 user-services, 12 writers: {} events, every reader saw 1..={head} in order",
        head
    );
}

/// One relay at a time: exactly one process publishes; when it is killed
/// (SIGKILL) another takes the relay over within a few seconds, and the
/// stream holds every event exactly once, in seq order, with its seq as id.
#[tokio::test]
async fn the_relay_moves_to_another_user_service_when_its_holder_is_killed() {
    let url = test_support::shared_database("replicas_relay")
        .await
        .unwrap();
    let redis = Redis::start().await;
    let flags = ["--redis-url", &redis.url()];
    let mut replicas = vec![
        Replica::start(&url, &flags).await,
        Replica::start(&url, &flags).await,
    ];
    let holder = eventually(
        Poll::within(Duration::from_secs(10)).every(Duration::from_millis(100)),
        "exactly one replica to hold the relay",
        async || {
            let held = [
                replicas[0].holds("relay").await,
                replicas[1].holds("relay").await,
            ];
            match held {
                [Some(true), Some(false)] => Ok(0),
                [Some(false), Some(true)] => Ok(1),
                other => Err(format!("relay held: {other:?}")),
            }
        },
    )
    .await;
    let survivor = 1 - holder;
    let mut writes = 0;
    for replica in &replicas {
        let mut client = replica.client().await;
        let user = create(&mut client, "Relay").await;
        writes += 1;
        for i in 0..20 {
            rename(&mut client, user.id, &format!("R{i}"))
                .await
                .unwrap();
            writes += 1;
        }
    }

    replicas[holder].process.kill().await;
    let killed = Instant::now();
    let mut client = replicas[survivor].client().await;
    let user = create(&mut client, "After").await;
    writes += 1;
    for i in 0..20 {
        rename(&mut client, user.id, &format!("A{i}"))
            .await
            .unwrap();
        writes += 1;
    }
    let took_over = eventually(
        Poll::within(Duration::from_secs(10)).every(Duration::from_millis(50)),
        "the survivor to take the relay over",
        async || match replicas[survivor].holds("relay").await {
            Some(true) => Ok(killed.elapsed()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
    assert!(
        took_over < Duration::from_secs(5),
        "the takeover took {took_over:?}"
    );
    let entries = eventually(
        Poll::within(Duration::from_secs(15)).every(Duration::from_millis(100)),
        "every event on the stream",
        async || {
            let entries = stream::read_stream(&redis.url()).await;
            if entries.len() >= writes {
                Ok(entries)
            } else {
                Err(format!("{} of {writes} entries", entries.len()))
            }
        },
    )
    .await;
    let seqs: Vec<u64> = entries.iter().map(|e| e.2.seq).collect();
    assert_eq!(
        seqs,
        (1..=writes as u64).collect::<Vec<_>>(),
        "every event once, in order"
    );
    for (id, _, event) in &entries {
        assert_eq!(id, &format!("{}-0", event.seq));
    }
    eprintln!(
        "[replicas] relay taken over {took_over:?} after its holder was killed; {writes} events on the stream once each"
    );
    drop(replicas.remove(0));
}

/// PostgreSQL itself stopped: writes fail fast with UNAVAILABLE and health
/// turns NOT_SERVING; started again, both recover without a restart of the
/// user-service, and every acknowledged write is there.
#[tokio::test]
async fn a_postgresql_restart_gives_unavailable_and_not_serving_then_recovers() {
    let mut postgres = Postgres::start().await.unwrap();
    let url = postgres.create_database("restart").await.unwrap();
    let replica = Replica::start(&url, &[]).await;
    let mut client = replica.client().await;
    let user = create(&mut client, "Before").await;
    rename(&mut client, user.id, "B1").await.unwrap();

    postgres.stop().await.unwrap();
    let started = Instant::now();
    let refused = rename(&mut client, user.id, "Lost").await;
    let refused_in = started.elapsed();
    assert_eq!(
        refused.as_ref().map_err(tonic::Status::code).err(),
        Some(tonic::Code::Unavailable),
        "{refused:?}"
    );
    assert!(
        refused_in < Duration::from_secs(7),
        "the refusal took {refused_in:?}"
    );
    let read = client.get_user(pb::GetUserRequest { id: user.id }).await;
    assert_eq!(
        read.map_err(|s| s.code()).err(),
        Some(tonic::Code::Unavailable)
    );
    eventually(
        Poll::within(Duration::from_secs(10)).every(Duration::from_millis(100)),
        "health to turn NOT_SERVING",
        async || match replica.health().await {
            Some(ServingStatus::NotServing) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;

    postgres.start_again().await.unwrap();
    let back = Instant::now();
    eventually(
        Poll::within(Duration::from_secs(15)).every(Duration::from_millis(100)),
        "health to turn SERVING again",
        async || match replica.health().await {
            Some(ServingStatus::Serving) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
    let after = eventually(
        Poll::within(Duration::from_secs(15)).every(Duration::from_millis(100)),
        "a write to succeed again",
        async || {
            rename(&mut client.clone(), user.id, "After")
                .await
                .map_err(|s| s.to_string())
        },
    )
    .await;
    let now = client
        .get_user(pb::GetUserRequest { id: user.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(now.first_name.as_deref(), Some("After"));
    assert_eq!(now.version, after.version);
    assert_eq!(
        now.version, 3,
        "created, B1, After: the refused write never applied"
    );
    eprintln!(
        "[replicas] PostgreSQL stopped: UNAVAILABLE in {refused_in:?}; SERVING again {:?} after its restart",
        back.elapsed()
    );
}
