-- Reconciliation and lifecycle: where a supervisor got to in the output file (so a worker
-- that adopts an agent resumes tailing without duplicated or missing events), dismissal,
-- re-dispatch bookkeeping, attempt history, and control requests routed to a worker.

ALTER TABLE agents
    ADD COLUMN output_offset BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN dismissed BOOLEAN NOT NULL DEFAULT false;

ALTER TABLE workers
    ADD COLUMN pid_start_time BIGINT;

ALTER TABLE requests
    ADD COLUMN dispatched_at TIMESTAMPTZ,
    ADD COLUMN history JSONB NOT NULL DEFAULT '[]'::jsonb,
    ADD COLUMN target_worker TEXT;

CREATE INDEX requests_target_idx ON requests (target_worker) WHERE status = 'pending';
-- One spawn request per agent; control requests (stop, delete) are extra rows.
CREATE INDEX requests_agent_idx ON requests (agent_id);
