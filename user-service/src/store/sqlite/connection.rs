//! How every connection to the database file is set up, whichever library
//! opens it (sqlx for the read pool, the migrator and the checkpointer, rusqlite
//! for the writer): one list, so the writer cannot run with settings the readers
//! do not share.

use std::time::Duration;

/// How much a commit survives, SQLite's `synchronous` setting in WAL mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Durability {
    /// fsync on every commit: an answered write survives a power loss.
    #[default]
    Full,
    /// fsync only at checkpoints: an answered write survives a crash of the process,
    /// but the last ones may be lost on a power loss. Faster on slow disks.
    Normal,
}

/// Who copies the WAL back into the database file (checkpoints).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Checkpoints {
    /// This service: a PASSIVE checkpoint shortly after writes, off the write path.
    #[default]
    Service,
    /// Another process on the same file, and only it: Litestream, which must
    /// own checkpointing to copy every WAL frame before the WAL restarts. The
    /// service never checkpoints; without that other process the WAL only grows.
    External,
}

/// How the SQLite engine keeps its file: what a commit survives and who
/// checkpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SqliteSettings {
    /// See [`Durability`].
    pub durability: Durability,
    /// See [`Checkpoints`].
    pub checkpoints: Checkpoints,
}

/// The PRAGMAs every connection runs with, beside WAL and the busy timeout (which
/// sqlx and rusqlite each set their own way): sqlx applies them to the read pool,
/// the migrator and the checkpointer, the writer to its own connection.
pub(super) fn pragmas(durability: Durability) -> [(&'static str, &'static str); 3] {
    let synchronous = match durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    [
        ("synchronous", synchronous),
        ("foreign_keys", "ON"),
        // Commits never checkpoint; `checkpoint::run` does, beside them.
        ("wal_autocheckpoint", "0"),
    ]
}

/// How long a connection waits for another process's lock before failing. Our own
/// writers never wait on each other here: they queue for the writer task.
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
