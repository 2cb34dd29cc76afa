-- Users, the event log (transactional outbox and replay log), and the database's
-- identity. Timestamps are microseconds since the Unix epoch, UTC.

CREATE TABLE users (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    first_name  TEXT    NOT NULL,
    last_name   TEXT    NOT NULL,
    create_time INTEGER NOT NULL,
    update_time INTEGER NOT NULL,
    version     INTEGER NOT NULL CHECK (version >= 1)
);

-- One row per committed change, written in the same transaction as the change.
-- AUTOINCREMENT: a seq is never reused, even after old events are pruned.
-- The user columns hold the user after the change (before it, for a delete).
CREATE TABLE events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    action      INTEGER NOT NULL CHECK (action IN (1, 2, 3)),
    user_id     INTEGER NOT NULL,
    first_name  TEXT    NOT NULL,
    last_name   TEXT    NOT NULL,
    create_time INTEGER NOT NULL,
    update_time INTEGER NOT NULL,
    version     INTEGER NOT NULL,
    -- Comma-separated field names whose value changed.
    changed     TEXT    NOT NULL,
    commit_time INTEGER NOT NULL
);

-- Facts about this database: its epoch (a random id made here, at creation) and the
-- relay's cursor (the newest seq published to Redis).
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

INSERT INTO meta (key, value) VALUES ('epoch', lower(hex(randomblob(16))));
INSERT INTO meta (key, value) VALUES ('published_seq', '0');
