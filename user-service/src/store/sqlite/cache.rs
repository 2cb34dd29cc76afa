//! Recently read and written users, kept in memory so `GetUser` skips SQLite.
//!
//! The writer task is the only writer, so it can keep the cache exact: before a
//! batch commits it marks every user the batch touches as *pending* (readers of a
//! pending user go to the database, which still shows the committed state), and
//! once the batch has committed it stores the new rows (or forgets deleted and
//! failed ones). A reader that missed stores what it read only if no write began
//! since it looked ([`UserCache::generation`]), so a slow read can never put an
//! older row over a newer one. Reads therefore see exactly what the database
//! holds: never a row before its commit, never an old row after it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use crate::domain::User;

/// How many users the cache holds at most; beyond it, reads that miss are not
/// stored (writes still replace what is there).
pub const CAPACITY: usize = 100_000;

enum Slot {
    Cached(Arc<User>),
    /// A write to this user is in a batch that has not committed yet.
    Pending,
}

#[derive(Default)]
struct Inner {
    slots: HashMap<i64, Slot>,
    /// Bumped each time writes begin; see [`UserCache::insert_read`].
    generation: u64,
}

/// The cache; cheap to share, as the store's readers and the writer each hold
/// it.
#[derive(Clone, Default)]
pub struct UserCache {
    inner: Arc<Mutex<Inner>>,
}

impl UserCache {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-made entry: every
        // change below is a single map operation.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The user, if cached and not being written.
    pub fn get(&self, id: i64) -> Option<Arc<User>> {
        match self.lock().slots.get(&id) {
            Some(Slot::Cached(user)) => Some(user.clone()),
            _ => None,
        }
    }

    /// Taken by a reader before it reads the database on a miss.
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Stores what a reader read, unless a write began since `generation` (the
    /// row read may then be older than the one being committed).
    pub fn insert_read(&self, generation: u64, user: User) {
        let mut inner = self.lock();
        if inner.generation != generation || inner.slots.len() >= CAPACITY {
            return;
        }
        inner
            .slots
            .entry(user.id)
            .or_insert_with(|| Slot::Cached(Arc::new(user)));
    }

    /// Called by the writer before a batch that touches `ids` commits.
    pub fn begin_writes(&self, ids: impl IntoIterator<Item = i64>) {
        let mut inner = self.lock();
        inner.generation += 1;
        for id in ids {
            inner.slots.insert(id, Slot::Pending);
        }
    }

    /// Called by the writer once the batch has committed (or failed): `user` is
    /// the row as committed, or `None` when it is gone or its write failed (the
    /// next read fetches it).
    pub fn end_write(&self, id: i64, user: Option<&User>) {
        let mut inner = self.lock();
        match user {
            Some(user) => {
                inner.slots.insert(id, Slot::Cached(Arc::new(user.clone())));
            }
            None => {
                inner.slots.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: i64, version: i64) -> User {
        User {
            id,
            first_name: format!("v{version}"),
            last_name: String::new(),
            create_time: 0,
            update_time: 0,
            version,
        }
    }

    #[test]
    fn a_read_is_cached_and_served() {
        let cache = UserCache::default();
        assert!(cache.get(1).is_none());
        let generation = cache.generation();
        cache.insert_read(generation, user(1, 1));
        assert_eq!(cache.get(1).unwrap().version, 1);
    }

    #[test]
    fn a_pending_write_sends_readers_to_the_database() {
        let cache = UserCache::default();
        cache.insert_read(cache.generation(), user(1, 1));
        cache.begin_writes([1]);
        assert!(cache.get(1).is_none(), "pending: not served from memory");
        cache.end_write(1, Some(&user(1, 2)));
        assert_eq!(cache.get(1).unwrap().version, 2);
    }

    #[test]
    fn a_read_that_raced_a_write_is_not_stored() {
        let cache = UserCache::default();
        // The reader looks, then a write begins and commits, then the reader's
        // (older) row arrives.
        let generation = cache.generation();
        cache.begin_writes([1]);
        cache.end_write(1, Some(&user(1, 2)));
        cache.insert_read(generation, user(1, 1));
        assert_eq!(cache.get(1).unwrap().version, 2, "the newer row stays");
        // Same race, but the write failed: nothing is stored at all.
        let generation = cache.generation();
        cache.begin_writes([2]);
        cache.end_write(2, None);
        cache.insert_read(generation, user(2, 1));
        assert!(cache.get(2).is_none());
    }

    #[test]
    fn a_read_never_replaces_a_pending_mark() {
        let cache = UserCache::default();
        cache.begin_writes([1]);
        let generation = cache.generation();
        cache.insert_read(generation, user(1, 1));
        assert!(
            cache.get(1).is_none(),
            "still pending until the writer ends it"
        );
    }

    #[test]
    fn deletes_forget_the_user() {
        let cache = UserCache::default();
        cache.insert_read(cache.generation(), user(1, 1));
        cache.begin_writes([1]);
        cache.end_write(1, None);
        assert!(cache.get(1).is_none());
        assert!(cache.lock().slots.is_empty());
    }
}
