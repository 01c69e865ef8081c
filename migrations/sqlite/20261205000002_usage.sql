-- What agents used (see migrations/postgres): per-agent running totals, and one
-- usage_records row per usage event, keyed like the event, outliving the agent.
ALTER TABLE agents ADD COLUMN usage_input_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE agents ADD COLUMN usage_output_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE agents ADD COLUMN usage_cache_read_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE agents ADD COLUMN usage_cache_write_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE agents ADD COLUMN usage_cost_usd REAL;
ALTER TABLE agents ADD COLUMN usage_cost_estimated INTEGER NOT NULL DEFAULT 0;
ALTER TABLE agents ADD COLUMN usage_turns INTEGER NOT NULL DEFAULT 0;

-- The model an agent runs: asked for at spawn, or its provider's configured default.
ALTER TABLE agents ADD COLUMN model TEXT;
-- An agent's budget (NULL: no such limit); going over one stops it.
ALTER TABLE agents ADD COLUMN budget_max_tokens INTEGER;
ALTER TABLE agents ADD COLUMN budget_max_cost_usd REAL;
ALTER TABLE agents ADD COLUMN budget_max_turns INTEGER;

-- A project's daily budget in US dollars (NULL: none), over its agents' usage records of
-- the UTC day.
ALTER TABLE projects ADD COLUMN daily_cost_usd REAL;
-- Most of a project's agents starting or running at once, fleet-wide (NULL: no cap).
ALTER TABLE projects ADD COLUMN max_concurrent INTEGER;

CREATE TABLE usage_records (
    agent_id           BLOB NOT NULL,
    seq                INTEGER NOT NULL,
    project_id         BLOB NOT NULL,
    project            TEXT NOT NULL,
    provider           TEXT NOT NULL,
    account_id         BLOB,
    model              TEXT,
    input_tokens       INTEGER NOT NULL,
    output_tokens      INTEGER NOT NULL,
    cache_read_tokens  INTEGER NOT NULL,
    cache_write_tokens INTEGER NOT NULL,
    cost_usd           REAL,
    cost_estimated     INTEGER NOT NULL,
    turns              INTEGER NOT NULL,
    recorded_at        TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (agent_id, seq)
);
CREATE INDEX usage_records_recorded_at ON usage_records (recorded_at);
CREATE INDEX usage_records_project_day ON usage_records (project_id, recorded_at);
