-- The embedded store: the same tables as migrations/postgres, in SQLite's dialect.
-- UUIDs are 16-byte BLOBs (sqlx's encoding of uuid::Uuid); JSON is TEXT; timestamps are
-- UTC TEXT written by SQL as 'YYYY-MM-DDTHH:MM:SS.SSSZ', one format everywhere, so they
-- compare and sort as text. Keep the two schemas in step: the conformance tests
-- (tests/store_conformance.rs) run the same tests against both.

-- Epochs come from a one-row counter (SQLite has no sequences).
CREATE TABLE fleet_epoch (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    value INTEGER NOT NULL
);
INSERT INTO fleet_epoch (id, value) VALUES (1, 0);

CREATE TABLE projects (
    id             BLOB PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    remote_url     TEXT NOT NULL,
    default_branch TEXT NOT NULL,
    created_at     TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE workers (
    id                TEXT PRIMARY KEY,
    node_id           TEXT NOT NULL,
    host              TEXT NOT NULL,
    pid               INTEGER NOT NULL,
    capacity          INTEGER NOT NULL,
    running           INTEGER NOT NULL DEFAULT 0,
    epoch             INTEGER NOT NULL,
    status            TEXT NOT NULL DEFAULT 'alive',
    started_at        TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    last_heartbeat_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    lease_expires_at  TEXT NOT NULL
);

CREATE TABLE agents (
    id                BLOB PRIMARY KEY,
    name              TEXT NOT NULL UNIQUE,
    provider          TEXT NOT NULL,
    mode              TEXT NOT NULL,
    project_id        BLOB NOT NULL REFERENCES projects(id),
    task_id           TEXT,
    status            TEXT NOT NULL,
    session_id        TEXT,
    worker_id         TEXT,
    node_id           TEXT,
    owner_epoch       INTEGER,
    pid               INTEGER,
    pid_start_time    INTEGER,
    output_path       TEXT,
    workdir           TEXT,
    branch            TEXT NOT NULL,
    result            TEXT,
    pending_questions TEXT,
    error             TEXT,
    exit_code         INTEGER,
    created_at        TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at        TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    started_at        TEXT,
    finished_at       TEXT
);
CREATE INDEX agents_worker_idx ON agents (worker_id) WHERE worker_id IS NOT NULL;
CREATE INDEX agents_status_idx ON agents (status);

CREATE TABLE requests (
    id              BLOB PRIMARY KEY,
    kind            TEXT NOT NULL,
    agent_id        BLOB NOT NULL REFERENCES agents(id),
    idempotency_key TEXT UNIQUE,
    payload         TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'pending',
    attempts        INTEGER NOT NULL DEFAULT 0,
    claimed_by      TEXT,
    claimed_at      TEXT,
    error           TEXT,
    created_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
-- The embedded queue is this index: pending requests, oldest first.
CREATE INDEX requests_pending_idx ON requests (created_at) WHERE status = 'pending';

CREATE TABLE agent_events (
    agent_id   BLOB NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    data       TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (agent_id, seq)
);

-- Jobs that reached a worker but could not be decoded into a request: kept for operators.
CREATE TABLE job_failures (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    queue      TEXT NOT NULL,
    job_id     TEXT,
    payload    TEXT NOT NULL,
    reason     TEXT NOT NULL,
    worker_id  TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
