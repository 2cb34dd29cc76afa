//! The deployment scaled out on one machine: one user-service, three gateways and a
//! Redis as processes on 127.0.0.1, each binary with its manifest's environment
//! (deploy/k8s; addresses rewritten, Secret keys replaced by test values). 300
//! sockets spread over the gateways, each with its own identity (as browsers would
//! be), see every update made through all three, in order. Then one gateway gets
//! SIGTERM mid-run, as Kubernetes stops a pod: its sockets get 1001, and each
//! reconnects to another gateway with `?since=<last seq>&epoch=<epoch>` after
//! updates went on without it, and gets exactly what it missed: nothing lost,
//! nothing twice.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use e2e::{
    Ended, Http, Poll, Socket, eventually, free_port,
    manifests::{self, Manifests, TestSecrets},
};
use futures::{StreamExt, stream};
use serde_json::json;
use tokio::sync::{Barrier, watch};

const SOCKETS: usize = 300;
const GATEWAYS: usize = 3;
/// Updates while all three gateways run, through each in turn.
const BEFORE: u64 = 30;
/// Updates through the two others while the third shuts down.
const DURING: u64 = 15;
/// Updates after the cut-off sockets resumed.
const AFTER: u64 = 15;
/// How long a socket may wait for its next frame.
const FRAME_TIMEOUT: Duration = Duration::from_secs(30);

/// The first name update `n` sets (the event with seq `first + n`).
fn name(n: u64) -> String {
    format!("Name {n}")
}

/// What one socket saw.
#[derive(Debug)]
struct Seen {
    index: usize,
    /// Seqs of the user_update frames, in arrival order.
    seqs: Vec<u64>,
    /// Frames that broke the rules (wrong name for the seq, resync, …).
    problems: Vec<String>,
    /// The close code it was cut off with, if it was.
    cut_off: Option<Ended>,
    /// The gateway it resumed on.
    resumed_on: Option<SocketAddr>,
}

struct Follow {
    index: usize,
    socket: Socket,
    /// The seq its hello announced.
    start: u64,
    epoch: String,
    /// The seq of the create event: update `n` has seq `created + n`.
    created: u64,
    token: String,
    /// Where to reconnect if cut off.
    fallback: SocketAddr,
    /// Set to the last seq once every update is made.
    last: watch::Receiver<Option<u64>>,
    /// Opens once every update of the `DURING` phase is made.
    resume: watch::Receiver<bool>,
    cut: tokio::sync::mpsc::UnboundedSender<usize>,
}

impl Follow {
    async fn run(mut self) -> Seen {
        let mut seen = Seen {
            index: self.index,
            seqs: Vec::new(),
            problems: Vec::new(),
            cut_off: None,
            resumed_on: None,
        };
        let mut newest = self.start;
        loop {
            if self.last.borrow().is_some_and(|last| newest >= last) {
                return seen;
            }
            let frame = tokio::select! {
                frame = self.socket.next(FRAME_TIMEOUT) => frame,
                _ = self.last.changed() => continue,
            };
            match frame {
                Ok(frame) if frame["type"] == "user_update" => {
                    let seq = frame["seq"].as_u64().unwrap_or_default();
                    seen.seqs.push(seq);
                    newest = newest.max(seq);
                    if frame["epoch"] != self.epoch.as_str() {
                        seen.problems.push(format!("another epoch: {frame}"));
                    }
                    if seq > self.created {
                        let n = seq - self.created;
                        let user = &frame["data"]["user"];
                        if user["first_name"] != name(n).as_str() || user["version"] != json!(n + 1)
                        {
                            seen.problems.push(format!("seq {seq} carries {user}"));
                        }
                    }
                }
                Ok(frame) if frame["type"] == "hello" && frame["epoch"] == self.epoch.as_str() => {}
                Ok(frame) => seen.problems.push(format!("unexpected frame {frame}")),
                Err(ended) if seen.cut_off.is_none() => {
                    seen.cut_off = Some(ended);
                    let _ = self.cut.send(self.index);
                    // Reconnect only once updates went on without us.
                    let _ = self.resume.wait_for(|open| *open).await;
                    let query = format!("token={}&since={newest}&epoch={}", self.token, self.epoch);
                    self.socket = Socket::connect(self.fallback, &query).await;
                    seen.resumed_on = Some(self.fallback);
                }
                Err(ended) => {
                    seen.problems.push(format!("ended again: {ended:?}"));
                    return seen;
                }
            }
        }
    }
}

async fn hello(socket: &mut Socket) -> (u64, String) {
    let hello = socket.frame().await;
    assert_eq!(hello["type"], "hello", "{hello}");
    (
        hello["seq"].as_u64().unwrap(),
        hello["epoch"].as_str().unwrap().to_owned(),
    )
}

/// PATCHes user `id`'s first name to `name(n)` through `http` as `bearer`.
async fn update(http: &Http, bearer: &str, id: i64, n: u64) {
    let body = serde_json::to_vec(&json!({"first_name": name(n)})).unwrap();
    let reply = http
        .send(
            "PATCH",
            &format!("/api/users/{id}/"),
            Some("application/json"),
            Some(body),
            &[("authorization", bearer)],
        )
        .await;
    assert_eq!(reply.status, 200, "update {n}: {:?}", reply.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gateways_deliver_every_event_and_a_stopped_ones_sockets_resume_elsewhere() {
    let started = std::time::Instant::now();
    let manifests = Manifests::load();
    let secrets = TestSecrets::new(&manifests);
    let redis = manifests::start_redis(&manifests, &secrets).await;
    let users = manifests::start_user_service(&manifests, &secrets, &redis, free_port()).await;
    let mut gateways = Vec::new();
    for _ in 0..GATEWAYS {
        gateways.push(manifests::start_gateway(&manifests, &secrets, &users.url(), &redis).await);
    }
    let https: Vec<Http> = gateways.iter().map(|g| Http::new(g.addr)).collect();
    for http in &https {
        http.wait_ready().await;
    }
    let stack_up = started.elapsed();
    let writer = format!(
        "Bearer {}",
        manifests::token(&manifests, &secrets, "writer")
    );

    // One user; wait until every gateway has its create event, so every socket
    // starts from the same seq.
    let body = serde_json::to_vec(&json!({"first_name": name(0), "last_name": "Doe"})).unwrap();
    let created = https[0]
        .send(
            "POST",
            "/api/users/",
            Some("application/json"),
            Some(body),
            &[("authorization", writer.as_str())],
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let id = created.json()["id"].as_i64().unwrap();
    let probe_token = manifests::token(&manifests, &secrets, "probe");
    let (created_seq, epoch) = eventually(
        Poll::within(e2e::START_TIMEOUT).every(Duration::from_millis(50)),
        "the gateways to agree on the create event",
        async || {
            let mut heads = Vec::new();
            for gateway in &gateways {
                let mut socket =
                    Socket::connect(gateway.addr, &format!("token={probe_token}")).await;
                heads.push(hello(&mut socket).await);
            }
            if heads.iter().all(|h| h == &heads[0] && h.0 > 0) {
                Ok(heads[0].clone())
            } else {
                Err(format!("their hellos: {heads:?}"))
            }
        },
    )
    .await;

    // 300 sockets, a third on each gateway, each its own identity.
    let (last_tx, last_rx) = watch::channel(None);
    let (resume_tx, resume_rx) = watch::channel(false);
    let (cut_tx, mut cut_rx) = tokio::sync::mpsc::unbounded_channel();
    let addrs: Vec<SocketAddr> = gateways.iter().map(|g| g.addr).collect();
    let ready = Arc::new(Barrier::new(SOCKETS + 1));
    let connecting = stream::iter(0..SOCKETS)
        .map(|index| {
            let token = manifests::token(&manifests, &secrets, &format!("reader-{index}"));
            let addr = addrs[index % GATEWAYS];
            async move {
                let mut socket = Socket::connect(addr, &format!("token={token}")).await;
                let (start, epoch) = hello(&mut socket).await;
                (index, socket, start, epoch, token)
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    let mut followers = Vec::new();
    for (index, socket, start, socket_epoch, token) in connecting {
        assert_eq!(
            (start, &socket_epoch),
            (created_seq, &epoch),
            "socket {index}'s hello"
        );
        let follow = Follow {
            index,
            socket,
            start,
            epoch: socket_epoch,
            created: created_seq,
            token,
            // Gateway 2 is the one stopped: its sockets go to 0 and 1 in turn.
            fallback: addrs[index % 2],
            last: last_rx.clone(),
            resume: resume_rx.clone(),
            cut: cut_tx.clone(),
        };
        let ready = ready.clone();
        followers.push(tokio::spawn(async move {
            ready.wait().await;
            follow.run().await
        }));
    }
    ready.wait().await;
    let connected = started.elapsed() - stack_up;
    let running = std::time::Instant::now();

    // Updates through all three gateways in turn.
    for n in 1..=BEFORE {
        update(&https[(n as usize) % GATEWAYS], &writer, id, n).await;
    }

    // Gateway 2 stops (SIGTERM, as the kubelet sends it) while updates go on
    // through the other two.
    let mut stopped = gateways.pop().unwrap();
    let stopping = tokio::spawn(async move { stopped.terminate(Duration::from_secs(20)).await });
    for n in BEFORE + 1..=BEFORE + DURING {
        update(&https[(n as usize) % 2], &writer, id, n).await;
    }
    let exit = stopping
        .await
        .unwrap()
        .expect("the gateway exits after SIGTERM");
    assert_eq!(exit, 0, "the stopped gateway exits cleanly");
    let on_stopped = (0..SOCKETS).filter(|i| i % GATEWAYS == 2).count();
    for _ in 0..on_stopped {
        tokio::time::timeout(FRAME_TIMEOUT, cut_rx.recv())
            .await
            .expect("every socket of the stopped gateway is closed")
            .unwrap();
    }
    resume_tx.send(true).unwrap();

    for n in BEFORE + DURING + 1..=BEFORE + DURING + AFTER {
        update(&https[(n as usize) % 2], &writer, id, n).await;
    }
    let last = created_seq + BEFORE + DURING + AFTER;
    last_tx.send(Some(last)).unwrap();

    let mut seen = Vec::new();
    for follower in followers {
        seen.push(
            tokio::time::timeout(FRAME_TIMEOUT * 2, follower)
                .await
                .expect("a socket never got every event")
                .unwrap(),
        );
    }
    let expected: Vec<u64> = (created_seq + 1..=last).collect();
    let mut resumed = [0usize; 2];
    for socket in &seen {
        assert!(
            socket.problems.is_empty(),
            "socket {}: {:?}",
            socket.index,
            socket.problems
        );
        assert_eq!(
            socket.seqs, expected,
            "socket {} got every event once, in order",
            socket.index
        );
        if socket.index % GATEWAYS == 2 {
            assert_eq!(
                socket.cut_off,
                Some(Ended::Closed(Some(1001))),
                "socket {} was closed with 1001",
                socket.index
            );
            let on = socket.resumed_on.expect("it resumed");
            resumed[addrs.iter().position(|a| *a == on).unwrap()] += 1;
        } else {
            assert_eq!(socket.cut_off, None, "socket {} stayed open", socket.index);
        }
    }
    assert_eq!(
        resumed,
        [50, 50],
        "the cut-off sockets resumed on both other gateways"
    );
    eprintln!(
        "stack (building the binaries if needed) up in {stack_up:?}; {SOCKETS} sockets over \
         {GATEWAYS} gateways connected in {connected:?}; {} events each, {on_stopped} sockets \
         resumed, in {:?}",
        expected.len(),
        running.elapsed()
    );
}
