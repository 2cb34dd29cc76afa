//! Events: one source task per gateway (the Redis stream, or the user-service's
//! WatchUsers) feeds the [`Hub`], which turns each event into its WebSocket frame
//! once, keeps a bounded window of recent frames for resuming sockets, and writes
//! the same frame to every socket's [`Outlet`] from the source's task: a socket
//! whose kernel buffer takes it costs one `write` and no wake-up of its own task.

pub mod redis;
pub mod watch;

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use serde::Serialize;
use tokio::{sync::watch as state, task::unconstrained};
use users_proto::v1 as pb;

use crate::{
    json::UserJson,
    observe,
    outlet::{Ending, Offered, Outlet, text_frame},
};

/// One event's frame, encoded once (WebSocket header included) and shared by
/// every socket and the replay window.
#[derive(Clone, Debug)]
pub struct Frame {
    pub seq: u64,
    /// The whole frame as written to a socket.
    pub wire: Bytes,
}

/// Where a reconnecting client says it stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resume {
    pub since: u64,
    /// `None` when the client gave none (not checked, as WatchUsers does).
    pub epoch: Option<String>,
}

/// A socket's place in the hub. Dropping it unregisters the socket.
pub struct Subscription {
    hub: Arc<Hub>,
    id: u64,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.lock().sockets.remove(&self.id);
    }
}

struct State {
    epoch: String,
    /// The newest seq the hub has seen (or was told of).
    head: u64,
    /// The newest frames, oldest first, contiguous in seq.
    window: VecDeque<Frame>,
    sockets: HashMap<u64, Arc<Outlet>>,
    next_id: u64,
    /// Set at shutdown: no socket is written to any more.
    closed: bool,
}

/// The fan-out point between the one event source and every socket.
pub struct Hub {
    state: Mutex<State>,
    live: state::Sender<bool>,
    window_cap: usize,
    queue_len: usize,
}

impl Hub {
    /// `window_cap` frames are kept for resuming; a socket may have `queue_len`
    /// frames waiting for its kernel buffer before it is cut loose.
    pub fn new(window_cap: usize, queue_len: usize) -> Hub {
        Hub {
            state: Mutex::new(State {
                epoch: String::new(),
                head: 0,
                window: VecDeque::new(),
                sockets: HashMap::new(),
                next_id: 0,
                closed: false,
            }),
            live: state::channel(false).0,
            window_cap: window_cap.max(1),
            queue_len: queue_len.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many frames the window keeps.
    pub fn window_cap(&self) -> usize {
        self.window_cap
    }

    /// The epoch and newest seq.
    pub fn position(&self) -> (String, u64) {
        let state = self.lock();
        (state.epoch.clone(), state.head)
    }

    /// Whether the source is following its stream (readiness, and new sockets).
    pub fn is_live(&self) -> bool {
        *self.live.borrow()
    }

    /// The source says whether it is following its stream.
    pub fn set_live(&self, live: bool) {
        self.live.send_if_modified(|current| {
            let changed = *current != live;
            *current = live;
            changed
        });
        metrics::gauge!(observe::EVENT_SOURCE_UP).set(if live { 1.0 } else { 0.0 });
    }

    /// Waits up to `timeout` for the source to be live.
    pub async fn wait_live(&self, timeout: Duration) -> bool {
        let mut live = self.live.subscribe();
        tokio::time::timeout(timeout, live.wait_for(|l| *l))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// How many sockets are registered.
    pub fn socket_count(&self) -> usize {
        self.lock().sockets.len()
    }

    /// The source starts again from `(epoch, head)` with no continuity to what came
    /// before: the window is emptied and every socket gets a `resync` frame.
    pub async fn reposition(&self, epoch: &str, head: u64) {
        let outlets = {
            let mut state = self.lock();
            state.epoch = epoch.to_owned();
            state.head = head;
            state.window.clear();
            snapshot(&state)
        };
        let frame = text_frame(resync_json(head, epoch).as_bytes());
        let given = write_all(outlets, Give::Resync(head, frame), self.queue_len).await;
        self.forget(&given.refused);
        metrics::counter!(observe::WS_RESYNCS).increment(given.taken);
    }

    /// Adds an event to the window without sending it: the start-up fill of events
    /// that happened before anyone here could be watching.
    pub fn remember(&self, event: &pb::UserEvent) {
        let frame = encode(event);
        let mut state = self.lock();
        self.push(&mut state, event, frame);
    }

    /// Adds an event to the window and writes its frame to every socket. A socket
    /// with too many frames waiting is cut loose and told so; the others never
    /// wait for it.
    ///
    /// Only the source's task publishes, so events are written in order; the
    /// writes happen after the lock is let go, so sockets come and go meanwhile.
    /// A socket that joins now gets `head` (this event) in its `hello` or replay
    /// and is not in this event's list.
    pub async fn publish(&self, event: &pb::UserEvent) {
        let frame = encode(event);
        let (frame, outlets) = {
            let mut state = self.lock();
            let Some(frame) = self.push(&mut state, event, frame) else {
                return;
            };
            (frame, snapshot(&state))
        };
        // Counted before any socket can have the frame.
        metrics::counter!(observe::EVENTS_FANNED_OUT).increment(1);
        metrics::counter!(observe::WS_FRAMES_QUEUED).increment(outlets.len() as u64);
        let given = write_all(outlets, Give::Event(frame.seq, frame.wire), self.queue_len).await;
        self.forget(&given.refused);
        record_fan_out_lag(event);
    }

    fn push(
        &self,
        state: &mut State,
        event: &pb::UserEvent,
        frame: Option<Frame>,
    ) -> Option<Frame> {
        if state.epoch.is_empty() {
            state.epoch = event.epoch.clone();
        }
        state.head = state.head.max(event.seq);
        let frame = frame?;
        if state
            .window
            .back()
            .is_some_and(|last| last.seq + 1 != frame.seq)
        {
            // Frames must stay contiguous for replay to be exact.
            state.window.clear();
        }
        state.window.push_back(frame.clone());
        while state.window.len() > self.window_cap {
            state.window.pop_front();
        }
        Some(frame)
    }

    /// Unregisters sockets that take no more events.
    fn forget(&self, ids: &[u64]) {
        if !ids.is_empty() {
            let mut state = self.lock();
            for id in ids {
                state.sockets.remove(id);
            }
        }
    }

    /// Ends every socket's outlet (at shutdown): each socket's task writes what
    /// waits, then closes with 1001.
    pub fn close_sockets(&self) {
        let mut state = self.lock();
        state.closed = true;
        for (_, outlet) in state.sockets.drain() {
            outlet.end(Ending::Shutdown);
        }
    }

    /// Registers a socket's outlet and starts it, atomically with respect to
    /// events: `hello` (the newest seq and the epoch), then a replay of the
    /// window after the resume's `since`, or `resync` when that gap is not in the
    /// window or the epoch is not ours; live events follow.
    pub fn join(self: &Arc<Self>, resume: Option<&Resume>, outlet: &Arc<Outlet>) -> Subscription {
        let mut state = self.lock();
        let hello = text_frame(hello_json(state.head, &state.epoch).as_bytes());
        let (after, start) = match resume {
            None => (state.head, Start::Live),
            Some(resume) => decide_start(&state, resume),
        };
        let id = state.next_id;
        state.next_id += 1;
        let mut frames = vec![hello];
        match &start {
            Start::Live => {}
            Start::Replay(replay) => frames.extend(replay.iter().map(|f| f.wire.clone())),
            Start::Resync(resync) => frames.push(resync.clone()),
        }
        outlet.start(frames, after);
        if state.closed {
            outlet.end(Ending::Shutdown);
        } else {
            state.sockets.insert(id, outlet.clone());
        }
        drop(state);
        match (&start, resume) {
            (Start::Resync(_), _) => metrics::counter!(observe::WS_RESYNCS).increment(1),
            (_, Some(_)) => metrics::counter!(observe::WS_RESUMES).increment(1),
            (_, None) => {}
        }
        Subscription {
            hub: self.clone(),
            id,
        }
    }
}

/// How a new socket starts.
enum Start {
    /// Live events only, after `hello`.
    Live,
    /// These frames (every event after `since`), then live ones.
    Replay(Vec<Frame>),
    /// The gap cannot be replayed: this `resync` frame, then live ones.
    Resync(Bytes),
}

fn decide_start(state: &State, resume: &Resume) -> (u64, Start) {
    let resync = || {
        (
            state.head,
            Start::Resync(text_frame(resync_json(state.head, &state.epoch).as_bytes())),
        )
    };
    let epoch_matches = resume.epoch.as_deref() == Some(state.epoch.as_str());
    if resume.epoch.is_some() && !epoch_matches {
        return resync();
    }
    let since = resume.since;
    if since >= state.head {
        // Ahead of us is fine when the epoch is vouched for: this gateway is a
        // little behind another one; events up to `since` are skipped.
        return if since == state.head || epoch_matches {
            (since, Start::Live)
        } else {
            resync()
        };
    }
    match state.window.front() {
        Some(oldest) if oldest.seq <= since + 1 => {
            let frames = state
                .window
                .iter()
                .filter(|f| f.seq > since)
                .cloned()
                .collect();
            (since, Start::Replay(frames))
        }
        _ => resync(),
    }
}

/// Every registered socket, with its id, taken under the lock.
fn snapshot(state: &State) -> Vec<(u64, Arc<Outlet>)> {
    state
        .sockets
        .iter()
        .map(|(id, outlet)| (*id, outlet.clone()))
        .collect()
}

/// Fewest sockets worth a task of their own in one fan-out.
const MIN_SOCKETS_PER_TASK: usize = 64;
/// Sockets written to between two chances for other tasks to run (about half a
/// millisecond of writes).
const SOCKETS_PER_TURN: usize = 64;

/// One frame for every socket.
#[derive(Clone)]
enum Give {
    /// Event `seq`'s frame: only to sockets behind it.
    Event(u64, Bytes),
    /// A `resync` frame moving every socket to `seq`.
    Resync(u64, Bytes),
}

/// What a fan-out did: how many sockets took the frame, and which take no more.
#[derive(Default)]
struct Given {
    taken: u64,
    refused: Vec<u64>,
}

/// Gives one frame to every outlet, the sockets split evenly between this task
/// and one more task per further runtime worker, so the writes (each a `write`
/// call, most of a fan-out's cost) run on every core as a task per socket would,
/// but with one wake-up per core instead of one per socket. Returns when every
/// socket has the frame, so events reach each socket in order.
///
/// The writes run outside tokio's cooperative budget: each is a non-blocking
/// `write`, and with the budget every write after the 128th would report its
/// socket full and hand the frame to that socket's task for nothing.
async fn write_all(outlets: Vec<(u64, Arc<Outlet>)>, give: Give, limit: usize) -> Given {
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    let share = outlets
        .len()
        .div_ceil(workers.max(1))
        .max(MIN_SOCKETS_PER_TASK);
    let mut mine = outlets;
    let mut helpers = Vec::new();
    while mine.len() > share {
        let theirs = mine.split_off(mine.len() - share);
        let give = give.clone();
        helpers.push(tokio::spawn(async move {
            give_each(&theirs, &give, limit).await
        }));
    }
    let mut given = give_each(&mine, &give, limit).await;
    for helper in helpers {
        if let Ok(theirs) = helper.await {
            given.taken += theirs.taken;
            given.refused.extend(theirs.refused);
        }
    }
    given
}

/// Gives the frame to each outlet in turn, letting other tasks (requests, the
/// event stream) run between groups of [`SOCKETS_PER_TURN`] sockets, so a big
/// fan-out never holds a worker for long.
async fn give_each(outlets: &[(u64, Arc<Outlet>)], give: &Give, limit: usize) -> Given {
    let mut given = Given::default();
    for (turn, group) in outlets.chunks(SOCKETS_PER_TURN).enumerate() {
        if turn > 0 {
            tokio::task::yield_now().await;
        }
        unconstrained(async {
            for (id, outlet) in group {
                let offered = match give {
                    Give::Event(seq, frame) => outlet.offer(*seq, frame, limit),
                    Give::Resync(seq, frame) => outlet.reposition(*seq, frame, limit),
                };
                match offered {
                    Offered::Taken => given.taken += 1,
                    Offered::Skipped => {}
                    Offered::Refused => given.refused.push(*id),
                }
            }
        })
        .await;
    }
    given
}

/// Records an event's age once its frame was given to every socket: once per
/// event, whatever the number of sockets.
fn record_fan_out_lag(event: &pb::UserEvent) {
    if let Some(commit) = &event.commit_time {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let committed = commit.seconds as f64 + f64::from(commit.nanos) / 1e9;
        metrics::histogram!(observe::FANOUT_LAG).record((now - committed).max(0.0));
    }
}

#[derive(Serialize)]
struct UpdateFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    seq: u64,
    epoch: &'a str,
    data: UpdateData<'a>,
}

#[derive(Serialize)]
struct UpdateData<'a> {
    action: &'static str,
    user: UserJson,
    changed: &'a [String],
}

/// An event's `user_update` frame; `None` for an event with no action or user
/// (never sent by a correct user-service).
pub fn encode(event: &pb::UserEvent) -> Option<Frame> {
    let action = match pb::Action::try_from(event.action).ok()? {
        pb::Action::Create => "create",
        pb::Action::Update => "update",
        pb::Action::Delete => "delete",
        pb::Action::Unspecified => return None,
    };
    let frame = UpdateFrame {
        kind: "user_update",
        seq: event.seq,
        epoch: &event.epoch,
        data: UpdateData {
            action,
            user: UserJson::from(event.user.as_ref()?),
            changed: &event.changed_fields,
        },
    };
    let text = serde_json::to_vec(&frame).ok()?;
    Some(Frame {
        seq: event.seq,
        wire: text_frame(&text),
    })
}

/// `{"type": "hello", "seq": …, "epoch": …}`.
pub fn hello_json(seq: u64, epoch: &str) -> String {
    serde_json::json!({ "type": "hello", "seq": seq, "epoch": epoch }).to_string()
}

/// `{"type": "resync", …}`, with the position the client's refetch will be at
/// least as new as (additive keys, for its next resume).
pub fn resync_json(seq: u64, epoch: &str) -> String {
    serde_json::json!({ "type": "resync", "seq": seq, "epoch": epoch }).to_string()
}

/// Capped exponential backoff for reconnecting sources.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    const START: Duration = Duration::from_millis(100);
    const CAP: Duration = Duration::from_secs(5);

    /// Starts at the smallest wait.
    pub fn new() -> Backoff {
        Backoff { next: Self::START }
    }

    /// The wait before the next attempt; doubles up to the cap.
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(Self::CAP);
        wait
    }

    /// After a success, start small again.
    pub fn reset(&mut self) {
        self.next = Self::START;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outlet::{
        Ending,
        testing::{pair, payload, read_texts},
    };
    use prost_types::Timestamp;
    use serde_json::Value;

    fn event(seq: u64, first: &str) -> pb::UserEvent {
        pb::UserEvent {
            seq,
            epoch: "e1".into(),
            action: pb::Action::Update as i32,
            user: Some(pb::User {
                id: 7,
                first_name: Some(first.into()),
                last_name: Some("Doe".into()),
                create_time: Some(Timestamp {
                    seconds: 1_768_298_400,
                    nanos: 123_456_000,
                }),
                update_time: Some(Timestamp {
                    seconds: 1_768_298_401,
                    nanos: 0,
                }),
                version: 2,
            }),
            changed_fields: vec!["first_name".into()],
            commit_time: None,
        }
    }

    /// `(type, seq)` of each frame.
    fn kinds(texts: &[String]) -> Vec<(String, u64)> {
        texts
            .iter()
            .map(|t| {
                let v: Value = serde_json::from_str(t).unwrap();
                (
                    v["type"].as_str().unwrap().to_owned(),
                    v["seq"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    fn kind(name: &str, seq: u64) -> (String, u64) {
        (name.to_owned(), seq)
    }

    #[test]
    fn an_event_becomes_the_pocs_frame_with_seq_and_epoch() {
        let frame = encode(&event(42, "John")).unwrap();
        assert_eq!(
            payload(&frame.wire),
            r#"{"type":"user_update","seq":42,"epoch":"e1","data":{"action":"update","user":{"id":7,"first_name":"John","last_name":"Doe","created_at":"2026-01-13T10:00:00.123456Z","updated_at":"2026-01-13T10:00:01.000000Z","version":2},"changed":["first_name"]}}"#
        );
    }

    #[tokio::test]
    async fn every_socket_gets_hello_then_the_same_frame() {
        let hub = Arc::new(Hub::new(10, 4));
        hub.reposition("e1", 0).await;
        let (a, a_wire) = pair(1 << 16);
        let (b, b_wire) = pair(1 << 16);
        let _a = hub.join(None, &a);
        let _b = hub.join(None, &b);
        hub.publish(&event(1, "A")).await;
        let a_texts = read_texts(a_wire, 2).await;
        assert_eq!(kinds(&a_texts), [kind("hello", 0), kind("user_update", 1)]);
        assert_eq!(a_texts, read_texts(b_wire, 2).await);
    }

    #[tokio::test]
    async fn a_socket_too_far_behind_is_cut_loose_alone() {
        let hub = Arc::new(Hub::new(100, 2));
        hub.reposition("e1", 0).await;
        // The slow one's pipe takes one byte and is never read.
        let (slow, _slow_wire) = pair(1);
        let (fast, fast_wire) = pair(1 << 16);
        let _slow = hub.join(None, &slow);
        let _fast = hub.join(None, &fast);
        for seq in 1..=3 {
            hub.publish(&event(seq, "x")).await;
        }
        assert_eq!(slow.ending(), Some(Ending::Overflow));
        assert_eq!(fast.ending(), None);
        assert_eq!(hub.socket_count(), 1);
        let texts = read_texts(fast_wire, 4).await;
        assert_eq!(
            kinds(&texts)[1..],
            [1, 2, 3].map(|s| kind("user_update", s))
        );
    }

    #[tokio::test]
    async fn resume_replays_exactly_the_events_after_since_then_goes_live() {
        let hub = Arc::new(Hub::new(5, 8));
        hub.reposition("e1", 0).await;
        for seq in 1..=8 {
            hub.publish(&event(seq, "x")).await;
        }
        let (outlet, wire) = pair(1 << 16);
        let _joined = hub.join(
            Some(&Resume {
                since: 5,
                epoch: Some("e1".into()),
            }),
            &outlet,
        );
        hub.publish(&event(9, "x")).await;
        let texts = read_texts(wire, 5).await;
        assert_eq!(
            kinds(&texts),
            [
                kind("hello", 8),
                kind("user_update", 6),
                kind("user_update", 7),
                kind("user_update", 8),
                kind("user_update", 9)
            ]
        );
    }

    /// What a socket resuming with `since` in `epoch` gets first after `hello`,
    /// with two events published after it joined.
    async fn first_after_hello(hub: &Arc<Hub>, since: u64, epoch: &str) -> (String, u64) {
        let (outlet, wire) = pair(1 << 16);
        let resume = Resume {
            since,
            epoch: Some(epoch.into()),
        };
        let _joined = hub.join(Some(&resume), &outlet);
        for _ in 0..2 {
            hub.publish(&event(hub.position().1 + 1, "next")).await;
        }
        kinds(&read_texts(wire, 2).await)[1].clone()
    }

    #[tokio::test]
    async fn a_gap_older_than_the_window_or_another_epoch_resyncs() {
        let hub = Arc::new(Hub::new(3, 8));
        hub.reposition("e1", 0).await;
        for seq in 1..=8 {
            hub.publish(&event(seq, "x")).await;
        }
        assert_eq!(first_after_hello(&hub, 2, "e1").await, kind("resync", 8));
        // The window now holds 8..=10.
        assert_eq!(
            first_after_hello(&hub, 7, "e1").await,
            kind("user_update", 8)
        );
        assert_eq!(first_after_hello(&hub, 7, "e2").await, kind("resync", 12));
        // Ahead of this gateway (head 14), in its epoch: live, skipping up to
        // `since`.
        assert_eq!(
            first_after_hello(&hub, 15, "e1").await,
            kind("user_update", 16)
        );
    }

    #[tokio::test]
    async fn hello_names_the_newest_seq_and_epoch() {
        let hub = Arc::new(Hub::new(3, 8));
        hub.reposition("e1", 4).await;
        hub.remember(&event(5, "x"));
        let (outlet, wire) = pair(1 << 16);
        let _joined = hub.join(None, &outlet);
        assert_eq!(
            read_texts(wire, 1).await,
            [r#"{"type":"hello","seq":5,"epoch":"e1"}"#]
        );
    }

    #[tokio::test]
    async fn shutdown_ends_every_outlet_and_turns_new_ones_away() {
        let hub = Arc::new(Hub::new(3, 8));
        let (before, _w1) = pair(1 << 16);
        let _before = hub.join(None, &before);
        hub.close_sockets();
        assert_eq!(before.ending(), Some(Ending::Shutdown));
        let (after, _w2) = pair(1 << 16);
        let _after = hub.join(None, &after);
        assert_eq!(after.ending(), Some(Ending::Shutdown));
        assert_eq!(hub.socket_count(), 0);
    }

    #[tokio::test]
    async fn a_dropped_subscription_unregisters() {
        let hub = Arc::new(Hub::new(3, 8));
        let (outlet, _wire) = pair(1 << 16);
        let joined = hub.join(None, &outlet);
        assert_eq!(hub.socket_count(), 1);
        drop(joined);
        assert_eq!(hub.socket_count(), 0);
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let mut backoff = Backoff::new();
        let waits: Vec<_> = (0..8).map(|_| backoff.next_wait()).collect();
        assert_eq!(waits[0], Duration::from_millis(100));
        assert_eq!(waits[1], Duration::from_millis(200));
        assert_eq!(*waits.last().unwrap(), Duration::from_secs(5));
    }
}
