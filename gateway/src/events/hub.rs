//! The fan-out point between the one event source and every socket: the window
//! of recent frames for resuming sockets, each socket's bounded queue, the feed's
//! head that writes wait on, and whether the source is live.
//!
//! Sockets are indexed by what they want: unfiltered ones (every event) in one
//! map, filtered ones (`?users=`) in another with an index from user to socket,
//! so an event costs work for the unfiltered sockets and its user's subscribers
//! only, not for every socket; its frame is still encoded once.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::sync::{mpsc, watch as state};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use users_proto::v1 as pb;

use super::{
    filter::UserSet,
    frame::{Frame, Outbound, encode, hello_json, resync_json, subscribed_json},
};
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

impl Subscription {
    /// The socket's number in this hub, unique for the hub's life: what a
    /// presence member id is made from.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Whether this socket follows `user`: `None` for an unfiltered socket
    /// (which follows no one in particular).
    pub fn follows(&self, user: i64) -> Option<bool> {
        let state = self.hub.lock();
        state.filtered.get(&self.id).map(|f| f.users.contains(user))
    }

    /// Queues `message` for this socket if its queue has room (presence frames:
    /// best-effort, never a reason to close the socket).
    pub fn offer(&self, message: Arc<Message>) {
        let state = self.hub.lock();
        if let Some(filtered) = state.filtered.get(&self.id) {
            filtered.socket.offer(&Outbound::Control(message));
        }
    }

    /// Changes a filtered socket's set (`subscribe` / `unsubscribe`) and queues
    /// its `subscribed` frame, behind every event queued before the change and
    /// ahead of every one after: events with a seq above the frame's go by the
    /// new set. Refused, the set unchanged, for an unfiltered socket or a set
    /// over [`super::filter::MAX_USERS`].
    pub fn change(&self, change: Change) -> Result<(), String> {
        let mut state = self.hub.lock();
        let state = &mut *state;
        let Some(socket) = state.filtered.get_mut(&self.id) else {
            return Err(
                "Only a socket opened with ?users= can subscribe; reconnect with ?users=<ids>."
                    .into(),
            );
        };
        let now = match &change {
            Change::Subscribe(ids) => socket.users.with(ids)?,
            Change::Unsubscribe(ids) => socket.users.without(ids),
        };
        let before = std::mem::replace(&mut socket.users, now);
        let frame = Message::text(subscribed_json(socket.users.ids(), state.head));
        let queued = socket.socket.queue(&Outbound::Control(Arc::new(frame)));
        let id = self.id;
        for &user in before.ids().iter().filter(|&&u| !socket.users.contains(u)) {
            unindex(&mut state.by_user, user, id);
        }
        for &user in socket.users.ids().iter().filter(|&&u| !before.contains(u)) {
            state.by_user.entry(user).or_default().push(id);
        }
        if !queued {
            state.remove(id);
        }
        state.count_subscriptions();
        Ok(())
    }
}

/// A change of a filtered socket's set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Follow these users too.
    Subscribe(Vec<i64>),
    /// Stop following these.
    Unsubscribe(Vec<i64>),
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut state = self.hub.lock();
        state.remove(self.id);
        state.count_subscriptions();
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

impl Socket {
    /// Queues `item`; `false` when the socket must go (its queue is full: it is
    /// told to close; or its task has ended).
    fn queue(&self, item: &Outbound) -> bool {
        match self.queue.try_send(item.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.overflowed.cancel();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Queues `item` if there is room; a full queue just misses it (for what is
    /// best-effort: presence).
    fn offer(&self, item: &Outbound) -> bool {
        self.queue.try_send(item.clone()).is_ok()
    }
}

/// A socket that gets only its users' events.
struct Filtered {
    socket: Socket,
    users: UserSet,
}

struct State {
    epoch: String,
    /// The newest seq the hub has seen (or was told of).
    head: u64,
    /// The newest frames, oldest first, contiguous in seq.
    window: VecDeque<Arc<Frame>>,
    /// Sockets that get every event.
    sockets: HashMap<u64, Socket>,
    /// Sockets that get their users' events only.
    filtered: HashMap<u64, Filtered>,
    /// For each user, the filtered sockets that follow it.
    by_user: HashMap<i64, Vec<u64>>,
    next_id: u64,
    /// Set at shutdown: no socket is queued to any more.
    closed: bool,
}

impl State {
    /// Forgets socket `id`, filtered or not.
    fn remove(&mut self, id: u64) {
        if self.sockets.remove(&id).is_some() {
            return;
        }
        if let Some(gone) = self.filtered.remove(&id) {
            for &user in gone.users.ids() {
                unindex(&mut self.by_user, user, id);
            }
        }
    }

    /// Sets the subscription gauges; called with the lock held after a change.
    fn count_subscriptions(&self) {
        metrics::gauge!(observe::WS_SOCKETS_BY_FILTER, "filter" => "unfiltered")
            .set(self.sockets.len() as f64);
        metrics::gauge!(observe::WS_SOCKETS_BY_FILTER, "filter" => "filtered")
            .set(self.filtered.len() as f64);
        metrics::gauge!(observe::WS_SUBSCRIBED_USERS).set(self.by_user.len() as f64);
    }
}

/// Takes socket `id` off `user`'s list, and the list off the index once empty.
fn unindex(by_user: &mut HashMap<i64, Vec<u64>>, user: i64, id: u64) {
    if let Some(ids) = by_user.get_mut(&user) {
        ids.retain(|&other| other != id);
        if ids.is_empty() {
            by_user.remove(&user);
        }
    }
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
    /// Whether the source has ever been live: a gateway that never reached
    /// its events has not started (readiness).
    ever_live: std::sync::atomic::AtomicBool,
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
                filtered: HashMap::new(),
                by_user: HashMap::new(),
                next_id: 0,
                closed: false,
            }),
            head: state::channel(0).0,
            live: state::channel(false).0,
            ever_live: std::sync::atomic::AtomicBool::new(false),
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

    /// Whether the source has followed its stream at least once since start.
    pub fn was_ever_live(&self) -> bool {
        self.ever_live.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The source says whether it is following its stream.
    pub fn set_live(&self, live: bool) {
        if live {
            self.ever_live
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
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

    /// Offers `message` to every filtered socket that follows `user` (presence
    /// frames): a socket whose queue is full misses it and stays open, so
    /// presence never delays nor closes anything. Returns how many got it.
    pub fn offer_to_followers(&self, user: i64, message: Arc<Message>) -> u64 {
        let state = self.lock();
        let item = Outbound::Control(message);
        let Some(ids) = state.by_user.get(&user) else {
            return 0;
        };
        ids.iter()
            .filter_map(|id| state.filtered.get(id))
            .filter(|filtered| filtered.socket.offer(&item))
            .count() as u64
    }

    /// How many sockets are registered.
    pub fn socket_count(&self) -> usize {
        let state = self.lock();
        state.sockets.len() + state.filtered.len()
    }

    /// The source starts again from `(epoch, head)` with no continuity to what came
    /// before: the window is emptied and every socket gets a `resync` frame.
    pub fn reposition(&self, epoch: &str, head: u64) {
        let mut state = self.lock();
        state.epoch = epoch.to_owned();
        state.head = head;
        state.window.clear();
        let message = Message::text(resync_json(head, epoch));
        let resync = Arc::new(Frame {
            seq: head,
            user: 0,
            message,
        });
        let queued = fan_out(&mut state, None, &Outbound::Resync(resync));
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
            let user = frame.user;
            let queued = fan_out(&mut state, Some(user), &Outbound::Event(frame));
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
        state.filtered.clear();
        state.by_user.clear();
    }

    /// Registers a socket and decides how it starts: live, a replay of the window
    /// after `since`, or `resync` when that gap is not in the window or the epoch
    /// is not ours. A socket with `users` gets only those users' events (and
    /// replay), and its `hello` names them.
    pub fn join(self: &Arc<Self>, resume: Option<&Resume>, users: Option<UserSet>) -> Joined {
        let (queue, receiver) = mpsc::channel(self.queue_len);
        let overflowed = CancellationToken::new();
        let mut state = self.lock();
        let hello = Message::text(hello_json(
            state.head,
            &state.epoch,
            users.as_ref().map(UserSet::ids),
        ));
        let (after, start) = match resume {
            None => (state.head, Start::Live),
            Some(resume) => decide_start(&state, resume, users.as_ref()),
        };
        let id = state.next_id;
        state.next_id += 1;
        let socket = Socket {
            queue,
            overflowed: overflowed.clone(),
        };
        // After shutdown the queue is dropped at once: the socket sees it closed.
        if !state.closed {
            match users {
                None => {
                    state.sockets.insert(id, socket);
                }
                Some(users) => {
                    for &user in users.ids() {
                        state.by_user.entry(user).or_default().push(id);
                    }
                    state.filtered.insert(id, Filtered { socket, users });
                }
            }
            state.count_subscriptions();
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

fn decide_start(state: &State, resume: &Resume, users: Option<&UserSet>) -> (u64, Start) {
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
                .filter(|f| f.seq > since && users.is_none_or(|users| users.contains(f.user)))
                .cloned()
                .collect();
            (since, Start::Replay(frames))
        }
        _ => resync(),
    }
}

/// Queues `item` to every unfiltered socket and to the filtered ones that
/// follow `user` (every filtered one when `None`: a `resync`); full queues are
/// cut loose, closed ones dropped. Returns how many sockets it was queued to.
fn fan_out(state: &mut State, user: Option<i64>, item: &Outbound) -> u64 {
    state.sockets.retain(|_, socket| socket.queue(item));
    let mut queued = state.sockets.len() as u64;
    let mut gone = Vec::new();
    match user {
        Some(user) => {
            for &id in state
                .by_user
                .get(&user)
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                match state.filtered.get(&id) {
                    Some(filtered) if filtered.socket.queue(item) => queued += 1,
                    _ => gone.push(id),
                }
            }
        }
        None => {
            for (&id, filtered) in &state.filtered {
                if filtered.socket.queue(item) {
                    queued += 1;
                } else {
                    gone.push(id);
                }
            }
        }
    }
    for id in gone {
        state.remove(id);
    }
    queued
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
        let mut a = hub.join(None, None);
        let mut b = hub.join(None, None);
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

    /// An event of user `user`.
    fn event_of(seq: u64, user: i64) -> pb::UserEvent {
        let mut event = event(seq, "x");
        if let Some(u) = event.user.as_mut() {
            u.id = user;
        }
        event
    }

    /// The seqs of events queued for `joined` (and any control frames' text).
    fn drain(joined: &mut Joined) -> Vec<String> {
        let mut seen = Vec::new();
        while let Ok(item) = joined.subscription.queue.try_recv() {
            seen.push(match item {
                Outbound::Event(frame) => frame.seq.to_string(),
                Outbound::Resync(frame) => format!("resync {}", frame.seq),
                Outbound::Control(message) => text(&message).to_owned(),
            });
        }
        seen
    }

    fn users(text: &str) -> Option<UserSet> {
        Some(UserSet::parse_query(text).unwrap())
    }

    #[test]
    fn a_filtered_socket_gets_only_its_users_and_an_unfiltered_one_everything() {
        let hub = Arc::new(Hub::new(10, 16));
        hub.reposition("e1", 0);
        let mut all = hub.join(None, None);
        let mut one = hub.join(None, users("1"));
        let mut none = hub.join(None, users(""));
        assert_eq!(
            text(&one.hello),
            r#"{"type":"hello","seq":0,"epoch":"e1","users":[1]}"#
        );
        for (seq, user) in [(1, 1), (2, 2), (3, 1)] {
            hub.publish(&event_of(seq, user));
        }
        assert_eq!(drain(&mut all), ["1", "2", "3"]);
        assert_eq!(drain(&mut one), ["1", "3"]);
        assert!(drain(&mut none).is_empty());
        assert_eq!(hub.socket_count(), 3);
        drop(one);
        assert!(
            hub.lock().by_user.is_empty(),
            "a gone socket leaves no index entry"
        );
    }

    #[test]
    fn a_change_applies_from_its_subscribed_frame_on() {
        let hub = Arc::new(Hub::new(10, 16));
        hub.reposition("e1", 0);
        let mut socket = hub.join(None, users("1"));
        hub.publish(&event_of(1, 2));
        socket
            .subscription
            .change(Change::Subscribe(vec![2, 3]))
            .unwrap();
        hub.publish(&event_of(2, 2));
        socket
            .subscription
            .change(Change::Unsubscribe(vec![1]))
            .unwrap();
        hub.publish(&event_of(3, 1));
        hub.publish(&event_of(4, 3));
        assert_eq!(
            drain(&mut socket),
            [
                r#"{"type":"subscribed","users":[1,2,3],"seq":1}"#,
                "2",
                r#"{"type":"subscribed","users":[2,3],"seq":2}"#,
                "4"
            ]
        );
        let unfiltered = hub.join(None, None);
        assert!(
            unfiltered
                .subscription
                .change(Change::Subscribe(vec![1]))
                .is_err()
        );
        let too_many: Vec<i64> = (10..1010).collect();
        let error = socket
            .subscription
            .change(Change::Subscribe(too_many))
            .unwrap_err();
        assert!(error.contains("at most 1000"), "{error}");
        hub.publish(&event_of(5, 2));
        assert_eq!(
            drain(&mut socket),
            ["5"],
            "the set is unchanged after a refusal"
        );
    }

    #[test]
    fn a_filtered_resume_replays_only_its_users() {
        let hub = Arc::new(Hub::new(10, 16));
        hub.reposition("e1", 0);
        for seq in 1..=6 {
            hub.publish(&event_of(seq, (seq % 3) as i64 + 1));
        }
        let resume = Resume {
            since: 2,
            epoch: Some("e1".into()),
        };
        let joined = hub.join(Some(&resume), users("1,3"));
        let Start::Replay(frames) = joined.start else {
            panic!("a replay");
        };
        assert_eq!(frames.iter().map(|f| f.seq).collect::<Vec<_>>(), [3, 5, 6]);
    }

    #[test]
    fn a_full_queue_cuts_only_that_socket_loose() {
        let hub = Arc::new(Hub::new(100, 2));
        hub.reposition("e1", 0);
        let slow = hub.join(None, None);
        let mut fast = hub.join(None, None);
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
        let joined = hub.join(
            Some(&Resume {
                since: 5,
                epoch: Some("e1".into()),
            }),
            None,
        );
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
        let old = hub.join(
            Some(&Resume {
                since: 2,
                epoch: Some("e1".into()),
            }),
            None,
        );
        assert!(matches!(old.start, Start::Resync(_)));
        let edge = hub.join(
            Some(&Resume {
                since: 5,
                epoch: Some("e1".into()),
            }),
            None,
        );
        assert!(matches!(edge.start, Start::Replay(ref f) if f.len() == 3));
        let other = hub.join(
            Some(&Resume {
                since: 7,
                epoch: Some("e2".into()),
            }),
            None,
        );
        let Start::Resync(message) = other.start else {
            panic!("another epoch resyncs");
        };
        assert_eq!(text(&message), r#"{"type":"resync","seq":8,"epoch":"e1"}"#);
        let ahead = hub.join(
            Some(&Resume {
                since: 9,
                epoch: Some("e1".into()),
            }),
            None,
        );
        assert!(matches!(ahead.start, Start::Live));
        assert_eq!(ahead.after, 9);
    }

    #[test]
    fn hello_names_the_newest_seq_and_epoch() {
        let hub = Arc::new(Hub::new(3, 8));
        hub.reposition("e1", 4);
        hub.remember(&event(5, "x"));
        let joined = hub.join(None, None);
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
        let mut before = hub.join(None, None);
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
        let after = hub.join(None, None);
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
        let joined = hub.join(None, None);
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
