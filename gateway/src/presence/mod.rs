//! Presence: who has a window open on a user, and what they are doing there
//! (`meta`, e.g. which field they type in). Best-effort by design: it is
//! never stored, never replayed, and never delays or closes a socket.
//!
//! Each gateway keeps its own sockets' members and, with Redis, every other
//! gateway's ([`bus`]); a socket following user U gets the whole list of U's
//! members whenever it changes, at most once per [`COALESCE`] (changes in
//! between are merged), and once right after it starts following U.

pub mod bus;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::{events::Hub, observe};

/// Longest encoded `meta`.
pub const MAX_META_BYTES: usize = 512;
/// Presence messages one socket may send per second.
pub const MESSAGES_PER_SECOND: u32 = 10;
/// How often changed users' lists go out: at most one frame per user per
/// socket in this time.
pub const COALESCE: Duration = Duration::from_millis(100);
/// A gateway not heard from for this long is taken for dead and its members
/// dropped (it announces itself every [`bus::HEARTBEAT`]).
pub const GATEWAY_EXPIRY: Duration = Duration::from_secs(20);

/// One window on a user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Opaque and stable for the socket's life: `<gateway>.<socket>`.
    pub id: String,
    /// The token's `sub`; `None` without authentication.
    pub sub: Option<String>,
    /// What the client said about itself: a JSON object of at most
    /// [`MAX_META_BYTES`].
    pub meta: Map<String, Value>,
}

/// Members by user, each user's ordered by member id.
type Members = HashMap<i64, BTreeMap<String, Member>>;

/// A change this gateway's sockets made, for the other gateways.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Delta {
    /// A member joined `user` or changed its meta.
    Set { user: i64, member: Member },
    /// Member `id` left `user`.
    Leave { user: i64, id: String },
}

/// Another gateway's members, and when it last spoke.
struct Remote {
    members: Members,
    heard: Instant,
}

#[derive(Default)]
struct Registry {
    local: Members,
    remote: HashMap<String, Remote>,
    /// Users whose list changed since the last flush.
    dirty: HashSet<i64>,
}

/// This gateway's view of everyone's presence, and the way to tell the others.
pub struct Presence {
    /// A random id for this gateway process: the prefix of its member ids, and
    /// how other gateways tell its announcements apart.
    gateway: String,
    registry: Mutex<Registry>,
    hub: Arc<Hub>,
    /// Where local changes go towards Redis, when presence crosses gateways.
    outbox: Option<mpsc::Sender<Delta>>,
}

impl Presence {
    /// Presence for sockets of `hub`; with `outbox`, local changes are also
    /// sent there (see [`bus`]).
    pub fn new(hub: Arc<Hub>, outbox: Option<mpsc::Sender<Delta>>) -> Presence {
        Presence {
            gateway: service_runtime::request_id::generate()[..16].to_owned(),
            registry: Mutex::new(Registry::default()),
            hub,
            outbox,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// This gateway's id.
    pub fn gateway(&self) -> &str {
        &self.gateway
    }

    /// The member id of this gateway's socket `socket`.
    pub fn member_id(&self, socket: u64) -> String {
        format!("{}.{socket}", self.gateway)
    }

    /// A local socket joins `user` or changes its meta.
    pub fn set(&self, user: i64, member: Member) {
        let mut registry = self.lock();
        let members = registry.local.entry(user).or_default();
        if members.get(&member.id) == Some(&member) {
            return;
        }
        members.insert(member.id.clone(), member.clone());
        registry.dirty.insert(user);
        drop(registry);
        self.tell_others(Delta::Set { user, member });
    }

    /// A local socket leaves `user` (its `null` meta, an unsubscribe, or its
    /// close).
    pub fn leave(&self, user: i64, id: &str) {
        let mut registry = self.lock();
        let Some(members) = registry.local.get_mut(&user) else {
            return;
        };
        if members.remove(id).is_none() {
            return;
        }
        if members.is_empty() {
            registry.local.remove(&user);
        }
        registry.dirty.insert(user);
        drop(registry);
        self.tell_others(Delta::Leave {
            user,
            id: id.to_owned(),
        });
    }

    fn tell_others(&self, delta: Delta) {
        if let Some(outbox) = &self.outbox
            && outbox.try_send(delta).is_err()
        {
            metrics::counter!(observe::PRESENCE_DROPPED).increment(1);
        }
    }

    /// The `presence` frame of `user` as it is now: what a socket gets right
    /// after it starts following `user`.
    pub fn snapshot(&self, user: i64) -> Arc<Message> {
        let registry = self.lock();
        Arc::new(frame(user, &registry.members_of(user)))
    }

    /// Every local member, by user: what a heartbeat carries to the others.
    pub fn local_members(&self) -> Vec<(i64, Vec<Member>)> {
        let registry = self.lock();
        registry
            .local
            .iter()
            .map(|(&user, members)| (user, members.values().cloned().collect()))
            .collect()
    }

    /// Another gateway's change.
    pub fn apply_remote(&self, gateway: &str, delta: Delta) {
        let mut registry = self.lock();
        let remote = registry.remote_of(gateway);
        let user = match delta {
            Delta::Set { user, member } => {
                remote
                    .members
                    .entry(user)
                    .or_default()
                    .insert(member.id.clone(), member);
                user
            }
            Delta::Leave { user, id } => {
                if let Some(members) = remote.members.get_mut(&user) {
                    members.remove(&id);
                    if members.is_empty() {
                        remote.members.remove(&user);
                    }
                }
                user
            }
        };
        registry.dirty.insert(user);
    }

    /// Another gateway's whole state (its heartbeat): replaces what we had of it.
    pub fn replace_remote(&self, gateway: &str, users: Vec<(i64, Vec<Member>)>) {
        let mut registry = self.lock();
        let members: Members = users
            .into_iter()
            .map(|(user, list)| (user, list.into_iter().map(|m| (m.id.clone(), m)).collect()))
            .collect();
        let remote = registry.remote_of(gateway);
        let before = std::mem::replace(&mut remote.members, members);
        let changed: Vec<i64> = before
            .iter()
            .filter(|(user, list)| remote.members.get(user) != Some(list))
            .map(|(&user, _)| user)
            .chain(
                remote
                    .members
                    .iter()
                    .filter(|(user, list)| before.get(user) != Some(list))
                    .map(|(&user, _)| user),
            )
            .collect();
        registry.dirty.extend(changed);
    }

    /// Another gateway said goodbye, or went silent: its members go.
    pub fn drop_remote(&self, gateway: &str) {
        let mut registry = self.lock();
        if let Some(gone) = registry.remote.remove(gateway) {
            registry.dirty.extend(gone.members.keys());
        }
    }

    /// Sends one frame per changed user to its followers, and drops gateways
    /// silent for [`GATEWAY_EXPIRY`]; every [`COALESCE`] until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(COALESCE);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.expire_silent(Instant::now());
            self.flush();
        }
    }

    fn expire_silent(&self, now: Instant) {
        let silent: Vec<String> = self
            .lock()
            .remote
            .iter()
            .filter(|(_, remote)| now.duration_since(remote.heard) > GATEWAY_EXPIRY)
            .map(|(gateway, _)| gateway.clone())
            .collect();
        for gateway in silent {
            tracing::info!(
                gateway,
                "presence: a gateway went silent; its members are gone"
            );
            self.drop_remote(&gateway);
        }
    }

    /// Sends the changed users' lists now.
    pub fn flush(&self) {
        let frames: Vec<(i64, Message)> = {
            let mut registry = self.lock();
            let dirty = std::mem::take(&mut registry.dirty);
            let count: usize = registry.local.values().map(BTreeMap::len).sum::<usize>()
                + registry
                    .remote
                    .values()
                    .flat_map(|r| r.members.values())
                    .map(BTreeMap::len)
                    .sum::<usize>();
            metrics::gauge!(observe::PRESENCE_MEMBERS).set(count as f64);
            dirty
                .into_iter()
                .map(|user| (user, frame(user, &registry.members_of(user))))
                .collect()
        };
        for (user, message) in frames {
            let sent = self.hub.offer_to_followers(user, Arc::new(message));
            metrics::counter!(observe::PRESENCE_FRAMES).increment(sent);
        }
    }
}

impl Registry {
    fn remote_of(&mut self, gateway: &str) -> &mut Remote {
        let remote = self
            .remote
            .entry(gateway.to_owned())
            .or_insert_with(|| Remote {
                members: Members::new(),
                heard: Instant::now(),
            });
        remote.heard = Instant::now();
        remote
    }

    /// `user`'s members on every gateway, ordered by id.
    fn members_of(&self, user: i64) -> Vec<&Member> {
        let mut all: Vec<&Member> = self
            .local
            .get(&user)
            .into_iter()
            .chain(self.remote.values().filter_map(|r| r.members.get(&user)))
            .flat_map(BTreeMap::values)
            .collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }
}

/// `{"type": "presence", "user": …, "members": […]}`.
fn frame(user: i64, members: &[&Member]) -> Message {
    Message::text(json!({ "type": "presence", "user": user, "members": members }).to_string())
}

/// Reads a presence message's `meta`: `Some(object)` joins or updates, `None`
/// (JSON `null`) leaves; anything else, or an object over [`MAX_META_BYTES`]
/// encoded, is refused with the error frame's detail.
pub fn read_meta(meta: Option<&Value>) -> Result<Option<Map<String, Value>>, String> {
    match meta {
        Some(Value::Null) => Ok(None),
        Some(Value::Object(object)) => {
            let size = serde_json::to_string(object).map_or(usize::MAX, |text| text.len());
            if size > MAX_META_BYTES {
                return Err(format!(
                    "\"meta\" may be at most {MAX_META_BYTES} bytes of JSON, not {size}."
                ));
            }
            Ok(Some(object.clone()))
        }
        _ => Err("\"meta\" must be a JSON object, or null to leave.".into()),
    }
}

/// A socket's presence budget: [`MESSAGES_PER_SECOND`] per second, counted in
/// whole-second windows (simple, and exact enough for a fairness limit).
#[derive(Debug)]
pub struct Budget {
    window: Instant,
    spent: u32,
}

impl Default for Budget {
    fn default() -> Budget {
        Budget {
            window: Instant::now(),
            spent: 0,
        }
    }
}

impl Budget {
    /// Spends one message at `now`; `false` when the second's budget is spent.
    pub fn spend(&mut self, now: Instant) -> bool {
        if now.duration_since(self.window) >= Duration::from_secs(1) {
            self.window = now;
            self.spent = 0;
        }
        self.spent += 1;
        self.spent <= MESSAGES_PER_SECOND
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::UserSet;

    fn member(id: &str, typing: bool) -> Member {
        let Value::Object(meta) = json!({ "window": 1, "typing": typing }) else {
            unreachable!()
        };
        Member {
            id: id.into(),
            sub: Some("alice".into()),
            meta,
        }
    }

    fn text(message: &Message) -> Value {
        serde_json::from_str(message.to_text().unwrap()).unwrap()
    }

    #[test]
    fn changes_coalesce_into_one_frame_per_user_for_its_followers() {
        let hub = Arc::new(Hub::new(10, 16));
        hub.reposition("e1", 0);
        let (outbox, mut sent) = mpsc::channel(16);
        let presence = Presence::new(hub.clone(), Some(outbox));
        let mut follower = hub.join(None, Some(UserSet::parse_query("1").unwrap()));
        let mut other = hub.join(None, Some(UserSet::parse_query("2").unwrap()));
        presence.set(1, member("a.1", false));
        presence.set(1, member("a.1", true));
        presence.set(1, member("a.1", true));
        presence.apply_remote(
            "b",
            Delta::Set {
                user: 1,
                member: member("b.7", false),
            },
        );
        presence.flush();
        let Ok(crate::events::Outbound::Control(frame)) = follower.subscription.queue.try_recv()
        else {
            panic!("the follower gets a presence frame");
        };
        assert_eq!(
            text(&frame),
            json!({ "type": "presence", "user": 1, "members": [
                { "id": "a.1", "sub": "alice", "meta": { "window": 1, "typing": true } },
                { "id": "b.7", "sub": "alice", "meta": { "window": 1, "typing": false } }
            ]})
        );
        assert!(
            follower.subscription.queue.try_recv().is_err(),
            "coalesced into one"
        );
        assert!(
            other.subscription.queue.try_recv().is_err(),
            "not a follower of user 1"
        );
        // Two distinct local changes went to the other gateways; the repeat did not.
        assert!(matches!(sent.try_recv(), Ok(Delta::Set { .. })));
        assert!(matches!(sent.try_recv(), Ok(Delta::Set { .. })));
        assert!(sent.try_recv().is_err());
    }

    #[test]
    fn leaving_and_a_silent_gateway_take_members_away() {
        let hub = Arc::new(Hub::new(10, 16));
        let presence = Presence::new(hub, None);
        presence.set(1, member("a.1", false));
        presence.replace_remote("b", vec![(1, vec![member("b.2", true)])]);
        assert_eq!(
            text(&presence.snapshot(1))["members"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        presence.leave(1, "a.1");
        presence.expire_silent(Instant::now() + GATEWAY_EXPIRY + Duration::from_secs(1));
        assert_eq!(text(&presence.snapshot(1))["members"], json!([]));
    }

    #[test]
    fn meta_is_an_object_of_at_most_512_bytes_or_null() {
        assert_eq!(read_meta(Some(&Value::Null)), Ok(None));
        assert!(
            read_meta(Some(&json!({ "typing": true })))
                .unwrap()
                .is_some()
        );
        for bad in [json!(1), json!("x"), json!([1])] {
            assert!(read_meta(Some(&bad)).is_err(), "{bad}");
        }
        assert!(read_meta(None).is_err());
        let big = json!({ "x": "y".repeat(600) });
        assert!(read_meta(Some(&big)).unwrap_err().contains("512"));
    }

    #[test]
    fn the_budget_allows_ten_a_second() {
        let mut budget = Budget::default();
        let start = Instant::now();
        assert!((0..10).all(|_| budget.spend(start)));
        assert!(!budget.spend(start));
        assert!(budget.spend(start + Duration::from_secs(1)));
    }
}
