-- The agents' snapshots in webhook deliveries carry the usage, model, budget and commit
-- columns too (the agent as GET shows it): the triggers are made again with them.
DROP TRIGGER agents_webhook_status;
DROP TRIGGER agents_webhook_delete;

CREATE TRIGGER agents_webhook_status AFTER UPDATE OF status ON agents
WHEN OLD.status IS NOT NEW.status
    AND NEW.status IN ('running', 'completed', 'waiting_for_input', 'failed', 'crashed', 'stopped')
    AND EXISTS (SELECT 1 FROM webhooks)
BEGIN
    INSERT INTO webhook_deliveries (id, webhook_id, agent_id, event, payload)
    SELECT unhex(printf('%012x', CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)) || '7' ||
                 substr(hex(randomblob(2)), 1, 3) || substr('89AB', 1 + (random() & 3), 1) ||
                 substr(hex(randomblob(2)), 1, 3) || hex(randomblob(6))),
           w.id, NEW.id, e.event,
           json_object('id', hex(NEW.id), 'project_id', hex(NEW.project_id), 'name', NEW.name,
               'provider', NEW.provider, 'mode', NEW.mode, 'task_id', NEW.task_id,
               'status', NEW.status, 'session_id', NEW.session_id, 'worker_id', NEW.worker_id,
               'node_id', NEW.node_id, 'owner_epoch', NEW.owner_epoch, 'pid', NEW.pid,
               'pid_start_time', NEW.pid_start_time, 'output_path', NEW.output_path,
               'workdir', NEW.workdir, 'branch', NEW.branch, 'result', NEW.result,
               'pending_questions', NEW.pending_questions, 'error', NEW.error,
               'exit_code', NEW.exit_code, 'created_at', NEW.created_at,
               'updated_at', NEW.updated_at, 'started_at', NEW.started_at,
               'finished_at', NEW.finished_at, 'dismissed', NEW.dismissed,
               'output_offset', NEW.output_offset,
               'usage_input_tokens', NEW.usage_input_tokens,
               'usage_output_tokens', NEW.usage_output_tokens,
               'usage_cache_read_tokens', NEW.usage_cache_read_tokens,
               'usage_cache_write_tokens', NEW.usage_cache_write_tokens,
               'usage_cost_usd', NEW.usage_cost_usd,
               'usage_cost_estimated', NEW.usage_cost_estimated,
               'usage_turns', NEW.usage_turns,
               'model', NEW.model,
               'budget_max_tokens', NEW.budget_max_tokens,
               'budget_max_cost_usd', NEW.budget_max_cost_usd,
               'budget_max_turns', NEW.budget_max_turns,
               'base_commit', NEW.base_commit, 'pushed_commit', NEW.pushed_commit,
               'account_id', CASE WHEN NEW.account_id IS NULL THEN NULL ELSE hex(NEW.account_id) END,
               'project', (SELECT name FROM projects WHERE id = NEW.project_id))
    FROM webhooks w, (SELECT CASE NEW.status
               WHEN 'running' THEN 'agent.started'
               WHEN 'completed' THEN 'agent.completed'
               WHEN 'waiting_for_input' THEN 'agent.waiting_for_input'
               WHEN 'crashed' THEN 'agent.crashed'
               WHEN 'stopped' THEN 'agent.stopped'
               WHEN 'failed' THEN CASE
                   WHEN NEW.error LIKE 'rate_limited%' THEN 'agent.rate_limited'
                   WHEN NEW.error LIKE 'account_exhausted%' THEN 'agent.account_exhausted'
                   ELSE 'agent.failed' END
               END AS event) e
    WHERE (w.events IS NULL OR EXISTS (SELECT 1 FROM json_each(w.events) WHERE value = e.event))
      AND (w.project IS NULL
           OR w.project = (SELECT name FROM projects WHERE id = NEW.project_id))
    ORDER BY w.id;
END;

CREATE TRIGGER agents_webhook_delete AFTER DELETE ON agents
WHEN EXISTS (SELECT 1 FROM webhooks)
BEGIN
    INSERT INTO webhook_deliveries (id, webhook_id, agent_id, event, payload)
    SELECT unhex(printf('%012x', CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)) || '7' ||
                 substr(hex(randomblob(2)), 1, 3) || substr('89AB', 1 + (random() & 3), 1) ||
                 substr(hex(randomblob(2)), 1, 3) || hex(randomblob(6))),
           w.id, OLD.id, 'agent.deleted',
           json_object('id', hex(OLD.id), 'project_id', hex(OLD.project_id), 'name', OLD.name,
               'provider', OLD.provider, 'mode', OLD.mode, 'task_id', OLD.task_id,
               'status', OLD.status, 'session_id', OLD.session_id, 'worker_id', OLD.worker_id,
               'node_id', OLD.node_id, 'owner_epoch', OLD.owner_epoch, 'pid', OLD.pid,
               'pid_start_time', OLD.pid_start_time, 'output_path', OLD.output_path,
               'workdir', OLD.workdir, 'branch', OLD.branch, 'result', OLD.result,
               'pending_questions', OLD.pending_questions, 'error', OLD.error,
               'exit_code', OLD.exit_code, 'created_at', OLD.created_at,
               'updated_at', OLD.updated_at, 'started_at', OLD.started_at,
               'finished_at', OLD.finished_at, 'dismissed', OLD.dismissed,
               'output_offset', OLD.output_offset,
               'usage_input_tokens', OLD.usage_input_tokens,
               'usage_output_tokens', OLD.usage_output_tokens,
               'usage_cache_read_tokens', OLD.usage_cache_read_tokens,
               'usage_cache_write_tokens', OLD.usage_cache_write_tokens,
               'usage_cost_usd', OLD.usage_cost_usd,
               'usage_cost_estimated', OLD.usage_cost_estimated,
               'usage_turns', OLD.usage_turns,
               'model', OLD.model,
               'budget_max_tokens', OLD.budget_max_tokens,
               'budget_max_cost_usd', OLD.budget_max_cost_usd,
               'budget_max_turns', OLD.budget_max_turns,
               'base_commit', OLD.base_commit, 'pushed_commit', OLD.pushed_commit,
               'account_id', CASE WHEN OLD.account_id IS NULL THEN NULL ELSE hex(OLD.account_id) END,
               'project', (SELECT name FROM projects WHERE id = OLD.project_id))
    FROM webhooks w
    WHERE (w.events IS NULL
           OR EXISTS (SELECT 1 FROM json_each(w.events) WHERE value = 'agent.deleted'))
      AND (w.project IS NULL
           OR w.project = (SELECT name FROM projects WHERE id = OLD.project_id))
    ORDER BY w.id;
END;
