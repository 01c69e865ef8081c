-- Reconciliation and lifecycle (the twin of migrations/postgres/…_leases_and_lifecycle.sql):
-- where a supervisor got to in the output file, dismissal, re-dispatch bookkeeping, attempt
-- history, and control requests routed to a worker.

ALTER TABLE agents ADD COLUMN output_offset INTEGER NOT NULL DEFAULT 0;
ALTER TABLE agents ADD COLUMN dismissed INTEGER NOT NULL DEFAULT 0;

ALTER TABLE workers ADD COLUMN pid_start_time INTEGER;

ALTER TABLE requests ADD COLUMN dispatched_at TEXT;
ALTER TABLE requests ADD COLUMN history TEXT NOT NULL DEFAULT '[]';
ALTER TABLE requests ADD COLUMN target_worker TEXT;

CREATE INDEX requests_target_idx ON requests (target_worker) WHERE status = 'pending';
CREATE INDEX requests_agent_idx ON requests (agent_id);
