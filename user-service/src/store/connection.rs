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

/// The one database engine this build runs on, told from the URL's scheme so a
/// typo or another engine's URL is refused instead of taken for a file path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `sqlite://PATH`, `sqlite:PATH`, `sqlite::memory:` or a bare path.
    Sqlite,
}

/// The backend `url` names, or why it names none (with the accepted form).
pub fn backend(url: &str) -> Result<Backend, String> {
    const ACCEPTED: &str = "the accepted form is sqlite://PATH (e.g. sqlite://data/users.db)";
    let scheme = url
        .split_once(':')
        .map(|(scheme, _)| scheme)
        .filter(|scheme| {
            scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        });
    match scheme.map(str::to_ascii_lowercase).as_deref() {
        None | Some("sqlite") => Ok(Backend::Sqlite),
        Some("postgres" | "postgresql") => Err(format!(
            "PostgreSQL URLs are not supported by this version; {ACCEPTED}"
        )),
        Some(other) => Err(format!(
            "unsupported database URL scheme {other:?}; {ACCEPTED}"
        )),
    }
}
