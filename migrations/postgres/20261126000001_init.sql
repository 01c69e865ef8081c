-- The system of record: projects, workers (leases), requests (the durable side of every
-- queued job), agents and their event log. Redis only carries copies of what is here.

CREATE SEQUENCE fleet_epoch_seq;

CREATE TABLE projects (
    id             UUID PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    remote_url     TEXT NOT NULL,
    default_branch TEXT NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE workers (
    id                TEXT PRIMARY KEY,
    node_id           TEXT NOT NULL,
    host              TEXT NOT NULL,
    pid               INTEGER NOT NULL,
    capacity          INTEGER NOT NULL,
    running           INTEGER NOT NULL DEFAULT 0,
    epoch             BIGINT NOT NULL,
    status            TEXT NOT NULL DEFAULT 'alive',
    started_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_heartbeat_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    lease_expires_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE agents (
    id                UUID PRIMARY KEY,
    name              TEXT NOT NULL UNIQUE,
    provider          TEXT NOT NULL,
    mode              TEXT NOT NULL,
    project_id        UUID NOT NULL REFERENCES projects(id),
    task_id           TEXT,
    status            TEXT NOT NULL,
    session_id        TEXT,
    worker_id         TEXT,
    node_id           TEXT,
    owner_epoch       BIGINT,
    pid               INTEGER,
    pid_start_time    BIGINT,
    output_path       TEXT,
    workdir           TEXT,
    branch            TEXT NOT NULL,
    result            TEXT,
    pending_questions JSONB,
    error             TEXT,
    exit_code         INTEGER,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at        TIMESTAMPTZ,
    finished_at       TIMESTAMPTZ
);
CREATE INDEX agents_worker_idx ON agents (worker_id) WHERE worker_id IS NOT NULL;
CREATE INDEX agents_status_idx ON agents (status);

CREATE TABLE requests (
    id              UUID PRIMARY KEY,
    kind            TEXT NOT NULL,
    agent_id        UUID NOT NULL REFERENCES agents(id),
    idempotency_key TEXT UNIQUE,
    payload         JSONB NOT NULL,
    status          TEXT NOT NULL DEFAULT 'pending',
    attempts        INTEGER NOT NULL DEFAULT 0,
    claimed_by      TEXT,
    claimed_at      TIMESTAMPTZ,
    error           TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX requests_pending_idx ON requests (created_at) WHERE status = 'pending';

CREATE TABLE agent_events (
    agent_id   UUID NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    seq        BIGINT NOT NULL,
    kind       TEXT NOT NULL,
    data       JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (agent_id, seq)
);

-- Jobs that reached a worker but could not be decoded into a request: kept for operators.
CREATE TABLE job_failures (
    id         BIGSERIAL PRIMARY KEY,
    queue      TEXT NOT NULL,
    job_id     TEXT,
    payload    TEXT NOT NULL,
    reason     TEXT NOT NULL,
    worker_id  TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
