-- Webhook subscriptions and their outbox. A trigger on `agents` writes one delivery per
-- matching subscription in the same transaction as the status change (or the delete) it
-- reports, with a snapshot of the row as it was then; workers deliver the outbox.

CREATE TABLE webhooks (
    id            UUID PRIMARY KEY,
    url           TEXT NOT NULL,
    -- The event types it receives (a JSON array of strings); NULL: every one.
    events        JSONB,
    -- Only agents of this project (by name); NULL: every project.
    project       TEXT,
    -- The signing secret, sealed with the fleet's key (as accounts' credentials are).
    sealed        BYTEA NOT NULL,
    key_id        TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- The worker delivering for it now, and until when its claim holds.
    claimed_by    TEXT,
    claimed_until TIMESTAMPTZ
);

CREATE TABLE webhook_deliveries (
    seq             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The `webhook-id` header: the same for every attempt of the delivery.
    id              UUID NOT NULL UNIQUE,
    webhook_id      UUID NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    agent_id        UUID NOT NULL,
    event           TEXT NOT NULL,
    -- The agent row when the event happened, with its project's name (`project`).
    payload         JSONB NOT NULL,
    status          TEXT NOT NULL DEFAULT 'pending',
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Retries stop `webhooks.retry_for` after this (its creation, or its redelivery).
    retry_since     TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_error      TEXT,
    last_status     INTEGER,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    delivered_at    TIMESTAMPTZ
);
CREATE INDEX webhook_deliveries_pending_idx ON webhook_deliveries (webhook_id, seq)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_webhook_idx ON webhook_deliveries (webhook_id, seq);

-- A UUID version 7 (time-ordered); Postgres 15 has no built-in one.
CREATE FUNCTION webhook_uuid_v7() RETURNS UUID LANGUAGE sql VOLATILE AS $$
    SELECT encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid())
        PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint)
        FROM 3) FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid
$$;

-- One delivery per matching subscription for an agent's status change or delete. Only
-- statuses an upstream acts on are events: `running` (agent.started, also after a resume
-- or a failover), the final ones, and deletion; a failure caused by a rate limit or an
-- exhausted account is told apart by the reason the worker recorded.
CREATE FUNCTION webhook_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_agent agents;
    v_event TEXT;
    v_project TEXT;
BEGIN
    IF TG_OP = 'DELETE' THEN
        v_agent := OLD;
        v_event := 'agent.deleted';
    ELSE
        v_agent := NEW;
        v_event := CASE NEW.status
            WHEN 'running' THEN 'agent.started'
            WHEN 'completed' THEN 'agent.completed'
            WHEN 'waiting_for_input' THEN 'agent.waiting_for_input'
            WHEN 'crashed' THEN 'agent.crashed'
            WHEN 'stopped' THEN 'agent.stopped'
            WHEN 'failed' THEN CASE
                WHEN NEW.error LIKE 'rate_limited%' THEN 'agent.rate_limited'
                WHEN NEW.error LIKE 'account_exhausted%' THEN 'agent.account_exhausted'
                ELSE 'agent.failed' END
        END;
    END IF;
    IF v_event IS NULL OR NOT EXISTS (SELECT 1 FROM webhooks) THEN
        RETURN NULL;
    END IF;
    SELECT name INTO v_project FROM projects WHERE id = v_agent.project_id;
    INSERT INTO webhook_deliveries (id, webhook_id, agent_id, event, payload)
    SELECT webhook_uuid_v7(), w.id, v_agent.id, v_event,
           to_jsonb(v_agent) || jsonb_build_object('project', v_project)
    FROM webhooks w
    WHERE (w.events IS NULL OR w.events ? v_event)
      AND (w.project IS NULL OR w.project = v_project)
    ORDER BY w.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER agents_webhook_status AFTER UPDATE OF status ON agents
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION webhook_outbox();
CREATE TRIGGER agents_webhook_delete AFTER DELETE ON agents
    FOR EACH ROW EXECUTE FUNCTION webhook_outbox();
