-- What agents used. Each agent keeps its running totals (updated in the transaction that
-- stores the usage event), and each usage event is also a row of usage_records, keyed like
-- the event (agent, seq) so a batch written twice counts once. The records keep the
-- project's and provider's names and the account as they were, and outlive the agent's
-- deletion: the fleet's usage totals do not shrink when an agent's records are removed.
ALTER TABLE agents ADD COLUMN usage_input_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE agents ADD COLUMN usage_output_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE agents ADD COLUMN usage_cache_read_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE agents ADD COLUMN usage_cache_write_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE agents ADD COLUMN usage_cost_usd DOUBLE PRECISION;
ALTER TABLE agents ADD COLUMN usage_cost_estimated BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE agents ADD COLUMN usage_turns BIGINT NOT NULL DEFAULT 0;

-- The model an agent runs: asked for at spawn, or its provider's configured default.
ALTER TABLE agents ADD COLUMN model TEXT;
-- An agent's budget (NULL: no such limit); going over one stops it.
ALTER TABLE agents ADD COLUMN budget_max_tokens BIGINT;
ALTER TABLE agents ADD COLUMN budget_max_cost_usd DOUBLE PRECISION;
ALTER TABLE agents ADD COLUMN budget_max_turns BIGINT;

-- A project's daily budget in US dollars (NULL: none), over its agents' usage records of
-- the UTC day.
ALTER TABLE projects ADD COLUMN daily_cost_usd DOUBLE PRECISION;
-- Most of a project's agents starting or running at once, fleet-wide (NULL: no cap).
ALTER TABLE projects ADD COLUMN max_concurrent INTEGER;

CREATE TABLE usage_records (
    agent_id           UUID NOT NULL,
    seq                BIGINT NOT NULL,
    project_id         UUID NOT NULL,
    project            TEXT NOT NULL,
    provider           TEXT NOT NULL,
    account_id         UUID,
    model              TEXT,
    input_tokens       BIGINT NOT NULL,
    output_tokens      BIGINT NOT NULL,
    cache_read_tokens  BIGINT NOT NULL,
    cache_write_tokens BIGINT NOT NULL,
    cost_usd           DOUBLE PRECISION,
    cost_estimated     BOOLEAN NOT NULL,
    turns              BIGINT NOT NULL,
    recorded_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (agent_id, seq)
);
CREATE INDEX usage_records_recorded_at ON usage_records (recorded_at);
CREATE INDEX usage_records_project_day ON usage_records (project_id, recorded_at);
