//! The fan-out point between the one event source and every socket: the window
//! of recent frames for resuming sockets, each socket's bounded queue, the feed's
//! head that writes wait on, and whether the source is live.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::sync::{mpsc, watch as state};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use users_proto::v1 as pb;

use super::frame::{Frame, Outbound, encode, hello_json, resync_json};
use crate::observe;

/// Where a reconnecting client says it stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resume {
    pub since: u64,
    /// `None` when the client gave none (not checked, as WatchUsers does).
    pub epoch: Option<String>,
}

/// How a new socket starts, decided atomically with its registration so no event
/// falls between the replay and the live queue.
#[derive(Debug)]
pub enum Start {
    /// Live events only, after `hello`.
    Live,
    /// These frames (every event after `since`), then live ones.
    Replay(Vec<Arc<Frame>>),
    /// The gap cannot be replayed: send this `resync` frame, then live ones.
    Resync(Message),
}

/// A socket's place in the hub: its queue, and the token the hub cancels when the
/// queue overflows. Dropping it unregisters the socket.
pub struct Subscription {
    hub: Arc<Hub>,
    id: u64,
    /// Frames for this socket, in seq order.
    pub queue: mpsc::Receiver<Outbound>,
    /// Cancelled by the hub when the queue overflowed: close with 1013.
    pub overflowed: CancellationToken,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.lock().sockets.remove(&self.id);
    }
}

/// What a socket gets when it joins.
pub struct Joined {
    /// The `hello` frame: the newest seq and the epoch.
    pub hello: Message,
    /// The seq after which this socket wants events.
    pub after: u64,
    pub start: Start,
    pub subscription: Subscription,
}

struct Socket {
    queue: mpsc::Sender<Outbound>,
    overflowed: CancellationToken,
}

struct State {
    epoch: String,
    /// The newest seq the hub has seen (or was told of).
    head: u64,
    /// The newest frames, oldest first, contiguous in seq.
    window: VecDeque<Arc<Frame>>,
    sockets: HashMap<u64, Socket>,
    next_id: u64,
    /// Set at shutdown: no socket is queued to any more.
    closed: bool,
}

/// How a write's wait for its event to reach the hub ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeedWait {
    // In the order of `observe::WRITE_FEED_WAIT_OUTCOMES`.
    /// The event is on the feed: every socket registered before it has it queued.
    OnFeed,
    /// The bound passed first; the write is answered anyway.
    TimedOut,
    /// The source is not following its stream, so waiting could not help.
    SourceDown,
}

impl FeedWait {
    /// The `outcome` label of [`observe::WRITE_FEED_WAITS`].
    pub fn label(self) -> &'static str {
        observe::WRITE_FEED_WAIT_OUTCOMES[self as usize]
    }
}

/// The fan-out point between the one event source and every socket.
pub struct Hub {
    state: Mutex<State>,
    /// Mirrors `State::head`, moved only once an event is queued to every socket:
    /// what writes wait on before they are answered.
    head: state::Sender<u64>,
    live: state::Sender<bool>,
    window_cap: usize,
    queue_len: usize,
}

impl Hub {
    /// `window_cap` frames are kept for resuming; each socket queues `queue_len`.
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
            head: state::channel(0).0,
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

    /// Waits, at most `bound`, until the event with `seq` is on this hub's feed:
    /// queued to every socket registered before it, and counted in the `hello` of
    /// every socket that joins after it. Writes wait here before they are
    /// answered, the order the POC kept by broadcasting before answering.
    pub async fn wait_for_seq(&self, seq: u64, bound: Duration) -> FeedWait {
        let mut head = self.head.subscribe();
        let outcome = if *head.borrow_and_update() >= seq {
            FeedWait::OnFeed
        } else if !self.is_live() {
            FeedWait::SourceDown
        } else {
            match tokio::time::timeout(bound, head.wait_for(|head| *head >= seq)).await {
                Ok(Ok(_)) => FeedWait::OnFeed,
                _ => FeedWait::TimedOut,
            }
        };
        metrics::counter!(observe::WRITE_FEED_WAITS, "outcome" => outcome.label()).increment(1);
        outcome
    }

    /// Tells waiting writes how far the feed is; called with the state locked,
    /// after the newest event was queued to every socket.
    fn announce(&self, state: &State) {
        self.head.send_if_modified(|head| {
            let changed = *head != state.head;
            *head = state.head;
            changed
        });
    }

    /// How many sockets are registered.
    pub fn socket_count(&self) -> usize {
        self.lock().sockets.len()
    }

    /// The source starts again from `(epoch, head)` with no continuity to what came
    /// before: the window is emptied and every socket gets a `resync` frame.
    pub fn reposition(&self, epoch: &str, head: u64) {
        let mut state = self.lock();
        state.epoch = epoch.to_owned();
        state.head = head;
        state.window.clear();
        let message = Message::text(resync_json(head, epoch));
        let resync = Arc::new(Frame { seq: head, message });
        let queued = fan_out(&mut state, &Outbound::Resync(resync));
        self.announce(&state);
        drop(state);
        metrics::counter!(observe::WS_RESYNCS).increment(queued);
    }

    /// Adds an event to the window without sending it: the start-up fill of events
    /// that happened before anyone here could be watching.
    pub fn remember(&self, event: &pb::UserEvent) {
        let frame = encode(event);
        let mut state = self.lock();
        self.push(&mut state, event, frame);
        self.announce(&state);
    }

    /// Adds an event to the window and queues its frame to every socket. A socket
    /// whose queue is full is cut loose and told so; the others never wait.
    pub fn publish(&self, event: &pb::UserEvent) {
        let frame = encode(event);
        let mut state = self.lock();
        if let Some(frame) = self.push(&mut state, event, frame) {
            let queued = fan_out(&mut state, &Outbound::Event(frame));
            // Counted before the lock is let go: a socket that has the frame
            // finds it counted (one counter and one histogram per event).
            record_fan_out(event, queued);
        }
        self.announce(&state);
    }

    fn push(
        &self,
        state: &mut State,
        event: &pb::UserEvent,
        frame: Option<Frame>,
    ) -> Option<Arc<Frame>> {
        if state.epoch.is_empty() {
            state.epoch = event.epoch.clone();
        }
        state.head = state.head.max(event.seq);
        let frame = Arc::new(frame?);
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

    /// Drops every socket's queue (at shutdown): each socket's loop sees its queue
    /// end once it has written what was queued, which costs the loops nothing
    /// while they run (a cancellation token shared by every socket is a lock
    /// they would all take on every wake-up).
    pub fn close_sockets(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.sockets.clear();
    }

    /// Registers a socket and decides how it starts: live, a replay of the window
    /// after `since`, or `resync` when that gap is not in the window or the epoch
    /// is not ours.
    pub fn join(self: &Arc<Self>, resume: Option<&Resume>) -> Joined {
        let (queue, receiver) = mpsc::channel(self.queue_len);
        let overflowed = CancellationToken::new();
        let mut state = self.lock();
        let hello = Message::text(hello_json(state.head, &state.epoch));
        let (after, start) = match resume {
            None => (state.head, Start::Live),
            Some(resume) => decide_start(&state, resume),
        };
        let id = state.next_id;
        state.next_id += 1;
        // After shutdown the queue is dropped at once: the socket sees it closed.
        if !state.closed {
            state.sockets.insert(
                id,
                Socket {
                    queue,
                    overflowed: overflowed.clone(),
                },
            );
        }
        drop(state);
        match (&start, resume) {
            (Start::Resync(_), _) => metrics::counter!(observe::WS_RESYNCS).increment(1),
            (_, Some(_)) => metrics::counter!(observe::WS_RESUMES).increment(1),
            (_, None) => {}
        }
        Joined {
            hello,
            after,
            start,
            subscription: Subscription {
                hub: self.clone(),
                id,
                queue: receiver,
                overflowed,
            },
        }
    }
}

fn decide_start(state: &State, resume: &Resume) -> (u64, Start) {
    let resync = || {
        (
            state.head,
            Start::Resync(Message::text(resync_json(state.head, &state.epoch))),
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

/// Queues `item` to every socket; full queues are cut loose, closed ones dropped.
/// Returns how many sockets it was queued to.
fn fan_out(state: &mut State, item: &Outbound) -> u64 {
    state
        .sockets
        .retain(|_, socket| match socket.queue.try_send(item.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                socket.overflowed.cancel();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
    state.sockets.len() as u64
}

/// Counts one event fanned out to `queued` sockets and records its age: once per
/// event, whatever the number of sockets. The age is taken when the frame is
/// queued; each socket's task writes it from there within microseconds unless
/// that socket is slow (and a slow one is closed once its queue is full).
fn record_fan_out(event: &pb::UserEvent, queued: u64) {
    metrics::counter!(observe::EVENTS_FANNED_OUT).increment(1);
    metrics::counter!(observe::WS_FRAMES_QUEUED).increment(queued);
    if let Some(commit) = &event.commit_time {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let committed = commit.seconds as f64 + f64::from(commit.nanos) / 1e9;
        metrics::histogram!(observe::FANOUT_LAG).record((now - committed).max(0.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::frame::sample_event;

    fn event(seq: u64, first: &str) -> pb::UserEvent {
        sample_event(seq, pb::Action::Update, first)
    }

    fn text(message: &Message) -> &str {
        message.to_text().unwrap()
    }

    #[test]
    fn an_event_becomes_the_pocs_frame_with_seq_and_epoch() {
        let frame = encode(&event(42, "John")).unwrap();
        assert_eq!(
            text(&frame.message),
            r#"{"type":"user_update","seq":42,"epoch":"e1","data":{"action":"update","user":{"id":7,"first_name":"John","last_name":"Doe","created_at":"2026-01-13T10:00:00.123456Z","updated_at":"2026-01-13T10:00:01.000000Z","version":2},"changed":["first_name"]}}"#
        );
    }

    #[test]
    fn every_socket_gets_the_same_frame() {
        let hub = Arc::new(Hub::new(10, 4));
        hub.reposition("e1", 0);
        let mut a = hub.join(None);
        let mut b = hub.join(None);
        hub.publish(&event(1, "A"));
        let (Ok(Outbound::Event(fa)), Ok(Outbound::Event(fb))) = (
            a.subscription.queue.try_recv(),
            b.subscription.queue.try_recv(),
        ) else {
            panic!("both sockets get the event");
        };
        assert_eq!(fa.seq, 1);
        assert_eq!(
            text(&fa.message).as_ptr(),
            text(&fb.message).as_ptr(),
            "one shared buffer"
        );
    }

    #[test]
    fn a_full_queue_cuts_only_that_socket_loose() {
        let hub = Arc::new(Hub::new(100, 2));
        hub.reposition("e1", 0);
        let slow = hub.join(None);
        let mut fast = hub.join(None);
        for seq in 1..=3 {
            hub.publish(&event(seq, "x"));
            assert!(
                matches!(fast.subscription.queue.try_recv(), Ok(Outbound::Event(f)) if f.seq == seq)
            );
        }
        assert!(slow.subscription.overflowed.is_cancelled());
        assert!(!fast.subscription.overflowed.is_cancelled());
        assert_eq!(hub.socket_count(), 1);
    }

    #[test]
    fn resume_replays_exactly_the_events_after_since() {
        let hub = Arc::new(Hub::new(5, 8));
        hub.reposition("e1", 0);
        for seq in 1..=8 {
            hub.publish(&event(seq, "x"));
        }
        let joined = hub.join(Some(&Resume {
            since: 5,
            epoch: Some("e1".into()),
        }));
        let Start::Replay(frames) = joined.start else {
            panic!("within the window: a replay");
        };
        assert_eq!(frames.iter().map(|f| f.seq).collect::<Vec<_>>(), [6, 7, 8]);
        assert_eq!(joined.after, 5);
    }

    #[test]
    fn a_gap_older_than_the_window_or_another_epoch_resyncs() {
        let hub = Arc::new(Hub::new(3, 8));
        hub.reposition("e1", 0);
        for seq in 1..=8 {
            hub.publish(&event(seq, "x"));
        }
        let old = hub.join(Some(&Resume {
            since: 2,
            epoch: Some("e1".into()),
        }));
        assert!(matches!(old.start, Start::Resync(_)));
        let edge = hub.join(Some(&Resume {
            since: 5,
            epoch: Some("e1".into()),
        }));
        assert!(matches!(edge.start, Start::Replay(ref f) if f.len() == 3));
        let other = hub.join(Some(&Resume {
            since: 7,
            epoch: Some("e2".into()),
        }));
        let Start::Resync(message) = other.start else {
            panic!("another epoch resyncs");
        };
        assert_eq!(text(&message), r#"{"type":"resync","seq":8,"epoch":"e1"}"#);
        let ahead = hub.join(Some(&Resume {
            since: 9,
            epoch: Some("e1".into()),
        }));
        assert!(matches!(ahead.start, Start::Live));
        assert_eq!(ahead.after, 9);
    }

    #[test]
    fn hello_names_the_newest_seq_and_epoch() {
        let hub = Arc::new(Hub::new(3, 8));
        hub.reposition("e1", 4);
        hub.remember(&event(5, "x"));
        let joined = hub.join(None);
        assert_eq!(
            text(&joined.hello),
            r#"{"type":"hello","seq":5,"epoch":"e1"}"#
        );
        assert!(matches!(joined.start, Start::Live));
    }

    #[tokio::test]
    async fn a_write_waits_until_its_event_is_queued_to_every_socket() {
        let hub = Arc::new(Hub::new(10, 8));
        hub.reposition("e1", 0);
        hub.set_live(true);
        let mut before = hub.join(None);
        let waiter = {
            let hub = hub.clone();
            tokio::spawn(async move { hub.wait_for_seq(2, Duration::from_secs(5)).await })
        };
        hub.publish(&event(1, "A"));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "seq 1 is not the write's event");
        hub.publish(&event(2, "B"));
        assert_eq!(waiter.await.unwrap(), FeedWait::OnFeed);
        let queued: Vec<u64> = std::iter::from_fn(|| match before.subscription.queue.try_recv() {
            Ok(Outbound::Event(frame)) => Some(frame.seq),
            _ => None,
        })
        .collect();
        assert_eq!(queued, [1, 2]);
        let after = hub.join(None);
        assert_eq!(
            after.after, 2,
            "a socket joining after the answer starts past it"
        );
        assert_eq!(
            hub.wait_for_seq(1, Duration::ZERO).await,
            FeedWait::OnFeed,
            "an event already on the feed is not waited for"
        );
    }

    #[tokio::test]
    async fn a_write_is_answered_after_the_bound_or_at_once_without_a_source() {
        let hub = Arc::new(Hub::new(10, 8));
        hub.reposition("e1", 0);
        hub.set_live(true);
        let started = std::time::Instant::now();
        assert_eq!(
            hub.wait_for_seq(1, Duration::from_millis(50)).await,
            FeedWait::TimedOut
        );
        assert!(started.elapsed() >= Duration::from_millis(50));
        hub.set_live(false);
        assert_eq!(
            hub.wait_for_seq(1, Duration::from_secs(60)).await,
            FeedWait::SourceDown
        );
    }

    #[test]
    fn a_dropped_subscription_unregisters() {
        let hub = Arc::new(Hub::new(3, 8));
        let joined = hub.join(None);
        assert_eq!(hub.socket_count(), 1);
        drop(joined);
        assert_eq!(hub.socket_count(), 0);
    }

    #[test]
    fn a_queued_frame_is_a_pointer() {
        // Each socket's queue allocates 32 of these up front.
        assert!(std::mem::size_of::<Outbound>() <= 16);
    }
}
