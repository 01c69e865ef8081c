//! Spawn requests and agents: the operations whose SQL is the same in both dialects —
//! recording a spawn (its idempotency-key ordering is each adapter's `order_spawns_by_key`),
//! claiming and releasing it, the owner-fenced writes of a running agent, reading its
//! events back, and the unowned writes (cancel, finish, delete) for agents no worker holds.
//!
//! At some 650 lines it is past the size we aim for: it is the port's largest group, kept
//! as one macro so the adapters' `agents.rs` expand one name and a reader follows a spawn
//! from its recording to its finish in one file.

/// The request and agent operations, expanded in `postgres/agents.rs` and
/// `sqlite/agents.rs` (`$db`: the adapter's `sqlx::Database`).
macro_rules! shared_agents {
    ($store:ty, $db:ty) => {
        const _: () = {
            use std::collections::BTreeMap;

            use sqlx::Row;
            use uuid::Uuid;

            use crate::domain::{
                Agent, AgentOutcome, ControlArgs, QueueStats, StoredEvent, StoredPayload,
            };
            use crate::store::rows::{agent_from_row, event_from_row};
            use crate::store::{
                ClaimedRequest, JobFailure, Owner, ProcessRecord, RecordedSpawn, SpawnRecord, StoreError,
            };

            impl $store {
                /// Records a spawn: the agent row (status `pending`) and its request, in one
                /// transaction. An idempotency key seen before returns the earlier agent
                /// unchanged for the same request and is refused for a different one, with
                /// nothing written.
                pub async fn record_spawn(
                    &self,
                    spawn: SpawnRecord<'_>,
                ) -> Result<RecordedSpawn, StoreError> {
                    let mut tx = self.begin_write().await?;
                    if let Some(key) = spawn.idempotency_key {
                        Self::order_spawns_by_key(&mut *tx, key).await?;
                        let earlier = sqlx::query(
                            "SELECT id, agent_id, request_hash FROM requests \
                             WHERE idempotency_key = $1",
                        )
                        .bind(key)
                        .fetch_optional(&mut *tx)
                        .await?;
                        if let Some(row) = earlier {
                            tx.rollback().await?;
                            let hash = row.try_get("request_hash")?;
                            crate::store::same_request(key, hash, spawn.request_hash)?;
                            let agent_id: Uuid = row.try_get("agent_id")?;
                            return Ok(RecordedSpawn {
                                agent: self.agent_by_id(agent_id).await?,
                                request_id: row.try_get("id")?,
                                created: false,
                            });
                        }
                    }
                    let project: Option<Uuid> =
                        sqlx::query_scalar("SELECT id FROM projects WHERE name = $1")
                            .bind(spawn.project)
                            .fetch_optional(&mut *tx)
                            .await?;
                    let project_id = project
                        .ok_or_else(|| StoreError::UnknownProject(spawn.project.to_string()))?;
                    let agent_id = Uuid::now_v7();
                    let inserted = sqlx::query(
                        "INSERT INTO agents (id, name, provider, mode, project_id, task_id, status, \
                         branch, model, budget_max_tokens, budget_max_cost_usd, budget_max_turns) \
                         VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $8, $9, $10, $11) \
                         ON CONFLICT (name) DO NOTHING",
                    )
                    .bind(agent_id)
                    .bind(spawn.name)
                    .bind(spawn.provider)
                    .bind(spawn.mode.as_str())
                    .bind(project_id)
                    .bind(spawn.task_id)
                    .bind(format!("agent/{}", spawn.name))
                    .bind(spawn.model)
                    .bind(spawn.budget.and_then(|b| b.max_tokens))
                    .bind(spawn.budget.and_then(|b| b.max_cost_usd))
                    .bind(spawn.budget.and_then(|b| b.max_turns))
                    .execute(&mut *tx)
                    .await?;
                    if inserted.rows_affected() == 0 {
                        return Err(StoreError::NameTaken(spawn.name.to_string()));
                    }
                    let request_id = Uuid::now_v7();
                    sqlx::query(concat!(
                        "INSERT INTO requests (id, kind, agent_id, idempotency_key, request_hash, \
                         payload, dispatched_at) VALUES ($1, 'spawn', $2, $3, $4, $5, ",
                        now!(),
                        ")"
                    ))
                    .bind(request_id)
                    .bind(agent_id)
                    .bind(spawn.idempotency_key)
                    .bind(spawn.request_hash)
                    .bind(&spawn.payload)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    let agent = self.agent_by_id(agent_id).await?;
                    Ok(RecordedSpawn {
                        agent,
                        request_id,
                        created: true,
                    })
                }

                /// The spawn backlog and the count of requests and agents by status.
                pub async fn queue_stats(&self) -> Result<QueueStats, StoreError> {
                    let row = sqlx::query(concat!(
                        "SELECT count(*) AS depth, min(created_at) AS oldest, ",
                        seconds_since!("min(created_at)"),
                        " AS age FROM requests WHERE kind = 'spawn' AND status = 'pending'"
                    ))
                    .fetch_one(&self.pool)
                    .await?;
                    let mut stats = QueueStats {
                        depth: row.try_get("depth")?,
                        oldest_pending_at: row.try_get("oldest")?,
                        oldest_pending_age_seconds: row.try_get("age")?,
                        ..QueueStats::default()
                    };
                    let rows: Vec<(String, String, i64)> = sqlx::query_as(
                        "SELECT kind, status, count(*) FROM requests GROUP BY kind, status",
                    )
                    .fetch_all(&self.pool)
                    .await?;
                    for (kind, status, n) in rows {
                        stats.by_kind.entry(kind).or_default().insert(status, n);
                    }
                    let rows: Vec<(String, i64)> =
                        sqlx::query_as("SELECT status, count(*) FROM agents GROUP BY status")
                            .fetch_all(&self.pool)
                            .await?;
                    stats.agents_by_status = rows.into_iter().collect();
                    Ok(stats)
                }

                /// The W3C trace context stored with a spawn request (empty when there is
                /// none), read from its payload as the front door stored it.
                pub async fn spawn_trace_context(
                    &self,
                    request_id: Uuid,
                ) -> Result<BTreeMap<String, String>, StoreError> {
                    let payload: Option<serde_json::Value> =
                        sqlx::query_scalar("SELECT payload FROM requests WHERE id = $1")
                            .bind(request_id)
                            .fetch_optional(&self.pool)
                            .await?;
                    Ok(payload
                        .and_then(|p| StoredPayload::<ControlArgs>::from_json(p).ok())
                        .map(|p| p.trace_context)
                        .unwrap_or_default())
                }

                pub async fn spawn_prompt(&self, agent_id: Uuid) -> Result<Option<String>, StoreError> {
                    Ok(sqlx::query_scalar(
                        "SELECT payload->>'prompt' FROM requests WHERE agent_id = $1 \
                         AND kind = 'spawn' ORDER BY created_at LIMIT 1",
                    )
                    .bind(agent_id)
                    .fetch_optional(&self.pool)
                    .await?
                    .flatten())
                }

                /// Request ids still waiting for a worker, oldest first.
                pub async fn pending_requests(&self, limit: i64) -> Result<Vec<Uuid>, StoreError> {
                    Ok(sqlx::query_scalar(
                        "SELECT id FROM requests WHERE kind = 'spawn' AND status = 'pending' \
                         ORDER BY created_at, id LIMIT $1",
                    )
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?)
                }

                /// Claims a pending request for a worker that holds its lease: the request's
                /// UPDATE decides, so a job delivered twice (or to two workers) is claimed
                /// once.
                pub async fn claim_request(
                    &self,
                    request_id: Uuid,
                    owner: &Owner,
                    node_id: &str,
                ) -> Result<Option<ClaimedRequest>, StoreError> {
                    let uncapped = std::collections::BTreeMap::new();
                    self.claim_request_within(request_id, owner, node_id, &uncapped)
                        .await
                }

                /// `claim_request`, but none while the agent's provider has its cap in
                /// `provider_caps` of agents starting or running fleet-wide, or its project
                /// its `max_concurrent`, counting the older spawns of it still pending (they
                /// go first): the request stays pending.
                pub async fn claim_request_within(
                    &self,
                    request_id: Uuid,
                    owner: &Owner,
                    node_id: &str,
                    provider_caps: &std::collections::BTreeMap<String, i64>,
                ) -> Result<Option<ClaimedRequest>, StoreError> {
                    let mut tx = self.begin_write().await?;
                    let caps: Option<(String, Option<i32>)> = sqlx::query_as(
                        "SELECT a.provider, p.max_concurrent FROM requests r \
                         JOIN agents a ON a.id = r.agent_id JOIN projects p ON p.id = a.project_id \
                         WHERE r.id = $1",
                    )
                    .bind(request_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let (provider_max, project_max) = match &caps {
                        Some((provider, project)) => {
                            (provider_caps.get(provider).copied(), project.map(i64::from))
                        }
                        None => (None, None),
                    };
                    if provider_max.is_some() || project_max.is_some() {
                        // Capped claims one at a time, so two cannot both take the last slot.
                        Self::order_capped_claims(&mut tx).await?;
                    }
                    if let Some(max) = project_max {
                        let taken: Option<i64> = sqlx::query_scalar(
                            "SELECT (SELECT count(*) FROM agents b WHERE b.project_id = a.project_id \
                             AND b.status IN ('starting', 'running')) + (SELECT count(*) \
                             FROM requests r2 JOIN agents c ON c.id = r2.agent_id \
                             WHERE r2.kind = 'spawn' AND r2.status = 'pending' \
                             AND c.project_id = a.project_id AND r2.created_at < r.created_at) \
                             FROM requests r JOIN agents a ON a.id = r.agent_id \
                             WHERE r.id = $1 AND r.status = 'pending'",
                        )
                        .bind(request_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                        if taken.is_some_and(|taken| taken >= max) {
                            return Ok(None);
                        }
                    }
                    if let Some(max) = provider_max {
                        let taken: Option<i64> = sqlx::query_scalar(
                            "SELECT (SELECT count(*) FROM agents b WHERE b.provider = a.provider \
                             AND b.status IN ('starting', 'running')) + (SELECT count(*) \
                             FROM requests r2 JOIN agents c ON c.id = r2.agent_id \
                             WHERE r2.kind = 'spawn' AND r2.status = 'pending' \
                             AND c.provider = a.provider AND r2.created_at < r.created_at) \
                             FROM requests r JOIN agents a ON a.id = r.agent_id \
                             WHERE r.id = $1 AND r.status = 'pending'",
                        )
                        .bind(request_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                        if taken.is_some_and(|taken| taken >= max) {
                            return Ok(None);
                        }
                    }
                    let row = sqlx::query(concat!(
                        "UPDATE requests SET status = 'claimed', claimed_by = $2, claimed_at = ",
                        now!(),
                        ", attempts = attempts + 1, updated_at = ",
                        now!(),
                        " WHERE id = $1 AND status = 'pending' AND EXISTS (SELECT 1 FROM workers w \
                           WHERE w.id = $2 AND w.epoch = $3 AND w.status = 'alive' \
                           AND w.lease_expires_at > ",
                        now!(),
                        ") RETURNING agent_id, payload, attempts"
                    ))
                    .bind(request_id)
                    .bind(&owner.worker_id)
                    .bind(owner.epoch)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let Some(row) = row else {
                        return Ok(None);
                    };
                    let agent_id: Uuid = row.try_get("agent_id")?;
                    let updated = sqlx::query(concat!(
                        "UPDATE agents SET status = 'starting', worker_id = $2, owner_epoch = $3, \
                         node_id = $4, updated_at = ",
                        now!(),
                        " WHERE id = $1 AND status = 'pending'"
                    ))
                    .bind(agent_id)
                    .bind(&owner.worker_id)
                    .bind(owner.epoch)
                    .bind(node_id)
                    .execute(&mut *tx)
                    .await?;
                    if updated.rows_affected() == 0 {
                        return Ok(None);
                    }
                    tx.commit().await?;
                    Ok(Some(ClaimedRequest {
                        agent: self.agent_by_id(agent_id).await?,
                        payload: row.try_get("payload")?,
                        attempts: row.try_get("attempts")?,
                    }))
                }

                /// Hands a request this worker claimed back: pending again, the attempt not
                /// counted, its agent `pending` with no owner. Fenced: only while the agent
                /// is still `starting` under this owner. Whether it was handed back.
                pub async fn release_request(
                    &self,
                    request_id: Uuid,
                    owner: &Owner,
                ) -> Result<bool, StoreError> {
                    let mut tx = self.begin_write().await?;
                    let agent: Option<Uuid> = sqlx::query_scalar(concat!(
                        "UPDATE requests SET status = 'pending', claimed_by = NULL, \
                         claimed_at = NULL, attempts = attempts - 1, updated_at = ",
                        now!(),
                        " WHERE id = $1 AND status = 'claimed' AND claimed_by = $2 RETURNING agent_id"
                    ))
                    .bind(request_id)
                    .bind(&owner.worker_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let Some(agent) = agent else {
                        return Ok(false);
                    };
                    let updated = sqlx::query(concat!(
                        "UPDATE agents SET status = 'pending', worker_id = NULL, owner_epoch = NULL, \
                         node_id = NULL, updated_at = ",
                        now!(),
                        " WHERE ",
                        owned_by!(),
                        " AND status = 'starting'"
                    ))
                    .bind(agent)
                    .bind(&owner.worker_id)
                    .bind(owner.epoch)
                    .execute(&mut *tx)
                    .await?;
                    if updated.rows_affected() == 0 {
                        return Ok(false);
                    }
                    tx.commit().await?;
                    Ok(true)
                }

                /// Fails a request (and its agent if not yet final) with a reason, unfenced:
                /// used when a request can never run (bad payload, unknown project at claim
                /// time).
                pub async fn fail_request(&self, request_id: Uuid, reason: &str) -> Result<(), StoreError> {
                    let mut tx = self.begin_write().await?;
                    let agent: Option<Uuid> = sqlx::query_scalar(concat!(
                        "UPDATE requests SET status = 'failed', error = $2, updated_at = ",
                        now!(),
                        " WHERE id = $1 RETURNING agent_id"
                    ))
                    .bind(request_id)
                    .bind(reason)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if let Some(agent) = agent {
                        sqlx::query(concat!(
                            "UPDATE agents SET status = 'failed', error = $2, account_held = false, \
                             finished_at = ",
                            now!(),
                            ", updated_at = ",
                            now!(),
                            " WHERE id = $1 AND status IN ('pending', 'starting')"
                        ))
                        .bind(agent)
                        .bind(reason)
                        .execute(&mut *tx)
                        .await?;
                    }
                    tx.commit().await?;
                    Ok(())
                }

                pub async fn record_job_failure(
                    &self,
                    failure: &JobFailure<'_>,
                ) -> Result<(), StoreError> {
                    sqlx::query(
                        "INSERT INTO job_failures (queue, job_id, payload, reason, worker_id) \
                         VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(failure.queue)
                    .bind(failure.job_id)
                    .bind(failure.payload)
                    .bind(failure.reason)
                    .bind(failure.worker_id)
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                }

                pub async fn job_failures(&self) -> Result<Vec<(String, String)>, StoreError> {
                    let rows = sqlx::query("SELECT payload, reason FROM job_failures ORDER BY id")
                        .fetch_all(&self.pool)
                        .await?;
                    rows.iter()
                        .map(|r| Ok((r.try_get("payload")?, r.try_get("reason")?)))
                        .collect()
                }

                /// Looks an agent up by id when the reference parses as one, else by name
                /// (names never parse as ids, so one agent cannot be reached through
                /// another's id).
                pub async fn agent(&self, id_or_name: &str) -> Result<Agent, StoreError> {
                    let unknown = || StoreError::UnknownAgent(id_or_name.to_string());
                    match Uuid::parse_str(id_or_name) {
                        // The error names the reference as the caller wrote it.
                        Ok(id) => self.agent_by_id(id).await.map_err(|e| match e {
                            StoreError::UnknownAgent(_) => unknown(),
                            e => e,
                        }),
                        Err(_) => sqlx::query(select_agents!("WHERE a.name = $1"))
                            .bind(id_or_name)
                            .fetch_optional(&self.pool)
                            .await?
                            .map(|r| agent_from_row(&r))
                            .transpose()?
                            .ok_or_else(unknown),
                    }
                }

                pub async fn agent_by_id(&self, id: Uuid) -> Result<Agent, StoreError> {
                    sqlx::query(select_agents!("WHERE a.id = $1"))
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await?
                        .map(|r| agent_from_row(&r))
                        .transpose()?
                        .ok_or_else(|| StoreError::UnknownAgent(id.to_string()))
                }

                /// One page of the agents `query` selects, newest first.
                pub async fn list_agents(
                    &self,
                    query: &crate::store::AgentQuery,
                ) -> Result<crate::domain::Page<Agent>, StoreError> {
                    let after = match &query.page.after {
                        Some(cursor) => Some((
                            cursor.at,
                            cursor.uuid().map_err(StoreError::InvalidQuery)?,
                        )),
                        None => None,
                    };
                    let mut statuses: Vec<&'static str> =
                        query.statuses.iter().map(|s| s.as_str()).collect();
                    statuses.sort_unstable();
                    statuses.dedup();
                    let mut sql = sqlx::QueryBuilder::<$db>::new("");
                    if statuses.len() < 2 {
                        Self::push_agents_page(&mut sql, query, statuses.first().copied(), after);
                    } else {
                        // One page per status, each read in its own index order, merged:
                        // a single `status IN (...)` would sort every match first.
                        for (i, status) in statuses.iter().enumerate() {
                            if i > 0 {
                                sql.push(" UNION ALL ");
                            }
                            sql.push("SELECT * FROM (");
                            Self::push_agents_page(&mut sql, query, Some(status), after);
                            sql.push(format!(") AS s{i}"));
                        }
                        sql.push(" ORDER BY created_at DESC, id DESC LIMIT ")
                            .push_bind(i64::from(query.page.limit) + 1);
                    }
                    let rows = sql.build().fetch_all(&self.pool).await?;
                    let agents = rows.iter().map(agent_from_row).collect::<Result<_, _>>()?;
                    Ok(crate::domain::Page::from_rows(agents, query.page.limit, |a: &Agent| {
                        crate::domain::Cursor::new(a.created_at, a.id)
                    }))
                }

                /// The SELECT of one page of `query`'s agents (of `status`, when given),
                /// after `after`, newest first: only the filters given, so each shape gets a
                /// plan that uses its index.
                fn push_agents_page(
                    sql: &mut sqlx::QueryBuilder<$db>,
                    query: &crate::store::AgentQuery,
                    status: Option<&'static str>,
                    after: Option<(chrono::DateTime<chrono::Utc>, Uuid)>,
                ) {
                    sql.push(select_agents!("WHERE true"));
                    if !query.include_dismissed {
                        sql.push(" AND NOT a.dismissed");
                    }
                    if let Some(status) = status {
                        sql.push(" AND a.status = ").push_bind(status);
                    }
                    if let Some(project) = &query.project {
                        // By id, so the project's index range is read whatever the plan.
                        sql.push(" AND a.project_id = (SELECT id FROM projects WHERE name = ")
                            .push_bind(project.clone())
                            .push(")");
                    }
                    if let Some(provider) = &query.provider {
                        sql.push(" AND a.provider = ").push_bind(provider.clone());
                    }
                    if let Some(task_id) = &query.task_id {
                        sql.push(" AND a.task_id = ").push_bind(task_id.clone());
                    }
                    if let Some(prefix) = &query.name_prefix {
                        sql.push(" AND ");
                        Self::push_name_prefix(sql, prefix);
                    }
                    if let Some(text) = &query.search {
                        sql.push(" AND (");
                        Self::push_name_prefix(sql, text);
                        sql.push(" OR a.task_id = ").push_bind(text.clone()).push(")");
                    }
                    if let Some(after) = query.created_after {
                        sql.push(" AND a.created_at >= ").push_bind(Self::time_param(after));
                    }
                    if let Some(before) = query.created_before {
                        sql.push(" AND a.created_at < ").push_bind(Self::time_param(before));
                    }
                    if let Some((at, id)) = after {
                        sql.push(" AND (a.created_at, a.id) < (")
                            .push_bind(Self::time_param(at))
                            .push(", ")
                            .push_bind(id)
                            .push(")");
                    }
                    sql.push(" ORDER BY a.created_at DESC, a.id DESC LIMIT ")
                        .push_bind(i64::from(query.page.limit) + 1);
                }

                pub async fn count_agents(&self) -> Result<i64, StoreError> {
                    Ok(sqlx::query_scalar("SELECT count(*) FROM agents")
                        .fetch_one(&self.pool)
                        .await?)
                }

                /// Records the started process; fenced by the owner.
                pub async fn mark_running(
                    &self,
                    agent_id: Uuid,
                    owner: &Owner,
                    process: &ProcessRecord,
                ) -> Result<bool, StoreError> {
                    let done = sqlx::query(concat!(
                        "UPDATE agents SET status = 'running', pid = $4, pid_start_time = $5, \
                         output_path = $6, workdir = $7, started_at = ",
                        now!(),
                        ", updated_at = ",
                        now!(),
                        " WHERE ",
                        owned_by!()
                    ))
                    .bind(agent_id)
                    .bind(&owner.worker_id)
                    .bind(owner.epoch)
                    .bind(process.pid)
                    .bind(process.pid_start_time)
                    .bind(&process.output_path)
                    .bind(&process.workdir)
                    .execute(&self.pool)
                    .await?;
                    Ok(done.rows_affected() == 1)
                }

                pub async fn set_session_id(
                    &self,
                    agent_id: Uuid,
                    owner: &Owner,
                    session_id: &str,
                ) -> Result<bool, StoreError> {
                    let done = sqlx::query(concat!(
                        "UPDATE agents SET session_id = $4, updated_at = ",
                        now!(),
                        " WHERE ",
                        owned_by!()
                    ))
                    .bind(agent_id)
                    .bind(&owner.worker_id)
                    .bind(owner.epoch)
                    .bind(session_id)
                    .execute(&self.pool)
                    .await?;
                    Ok(done.rows_affected() == 1)
                }

                pub async fn rename_branch(
                    &self,
                    agent_id: Uuid,
                    owner: &Owner,
                    from: &str,
                    to: &str,
                ) -> Result<bool, StoreError> {
                    let done = sqlx::query(concat!(
                        "UPDATE agents SET branch = $5, updated_at = ",
                        now!(),
                        " WHERE ",
                        owned_by!(),
                        " AND branch = $4"
                    ))
                    .bind(agent_id)
                    .bind(&owner.worker_id)
                    .bind(owner.epoch)
                    .bind(from)
                    .bind(to)
                    .execute(&self.pool)
                    .await?;
                    Ok(done.rows_affected() == 1)
                }

                pub async fn set_base_commit(
                    &self,
                    agent_id: Uuid,
                    owner: &Owner,
                    commit: &str,
                ) -> Result<bool, StoreError> {
                    let done = sqlx::query(concat!(
                        "UPDATE agents SET base_commit = $4, updated_at = ",
                        now!(),
                        " WHERE ",
                        owned_by!()
                    ))
                    .bind(agent_id)
                    .bind(&owner.worker_id)
                    .bind(owner.epoch)
                    .bind(commit)
                    .execute(&self.pool)
                    .await?;
                    Ok(done.rows_affected() == 1)
                }

                pub async fn set_pushed_commit(
                    &self,
                    agent_id: Uuid,
                    owner: &Owner,
                    commit: &str,
                ) -> Result<bool, StoreError> {
                    let done = sqlx::query(concat!(
                        "UPDATE agents SET pushed_commit = $4, updated_at = ",
                        now!(),
                        " WHERE ",
                        owned_by!()
                    ))
                    .bind(agent_id)
                    .bind(&owner.worker_id)
                    .bind(owner.epoch)
                    .bind(commit)
                    .execute(&self.pool)
                    .await?;
                    Ok(done.rows_affected() == 1)
                }

                pub async fn last_event_seq(&self, agent_id: Uuid) -> Result<i64, StoreError> {
                    let seq: Option<i64> =
                        sqlx::query_scalar("SELECT max(seq) FROM agent_events WHERE agent_id = $1")
                            .bind(agent_id)
                            .fetch_one(&self.pool)
                            .await?;
                    Ok(seq.unwrap_or(0))
                }

                pub async fn events_after(
                    &self,
                    agent_id: Uuid,
                    after_seq: i64,
                ) -> Result<Vec<StoredEvent>, StoreError> {
                    let rows = sqlx::query(
                        "SELECT seq, kind, data, created_at FROM agent_events \
                         WHERE agent_id = $1 AND seq > $2 ORDER BY seq",
                    )
                    .bind(agent_id)
                    .bind(after_seq)
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter().map(event_from_row).collect()
                }

                /// Writes the agent's final state and closes its request; fenced by the owner.
                pub async fn finish_agent(
                    &self,
                    agent_id: Uuid,
                    owner: &Owner,
                    outcome: &AgentOutcome,
                ) -> Result<bool, StoreError> {
                    let mut tx = self.begin_write().await?;
                    let questions = serde_json::to_value(&outcome.questions).unwrap_or_default();
                    let done = sqlx::query(concat!(
                        "UPDATE agents SET status = $4, result = $5, pending_questions = $6, \
                         error = $7, exit_code = $8, session_id = COALESCE($9, session_id), \
                         account_held = false, finished_at = ",
                        now!(),
                        ", updated_at = ",
                        now!(),
                        " WHERE ",
                        owned_by!()
                    ))
                    .bind(agent_id)
                    .bind(&owner.worker_id)
                    .bind(owner.epoch)
                    .bind(outcome.status.as_str())
                    .bind(&outcome.result)
                    .bind(questions)
                    .bind(&outcome.error)
                    .bind(outcome.exit_code)
                    .bind(&outcome.session_id)
                    .execute(&mut *tx)
                    .await?;
                    if done.rows_affected() == 0 {
                        return Ok(false);
                    }
                    let request_status = if outcome.status.is_success() {
                        "done"
                    } else {
                        "failed"
                    };
                    sqlx::query(concat!(
                        "UPDATE requests SET status = $2, error = $3, updated_at = ",
                        now!(),
                        " WHERE agent_id = $1 AND status = 'claimed' AND kind IN ('spawn', 'resume')"
                    ))
                    .bind(agent_id)
                    .bind(request_status)
                    .bind(&outcome.error)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(true)
                }

                /// Finishes an agent without an owner check (its owner is gone or was never
                /// there).
                pub async fn finish_unowned(
                    &self,
                    agent_id: Uuid,
                    status: &str,
                    reason: &str,
                ) -> Result<(), StoreError> {
                    let mut tx = self.begin_write().await?;
                    Self::finish_unowned_in(&mut tx, agent_id, status, reason).await?;
                    tx.commit().await?;
                    Ok(())
                }

                /// `finish_unowned` inside the caller's transaction.
                pub(super) async fn finish_unowned_in(
                    tx: &mut sqlx::Transaction<'static, $db>,
                    agent_id: Uuid,
                    status: &str,
                    reason: &str,
                ) -> Result<(), StoreError> {
                    // Clearing the owner epoch fences off the worker that ran it, should it
                    // come back.
                    sqlx::query(concat!(
                        "UPDATE agents SET status = $2, error = $3, owner_epoch = NULL, \
                         account_held = false, finished_at = ",
                        now!(),
                        ", updated_at = ",
                        now!(),
                        " WHERE id = $1"
                    ))
                    .bind(agent_id)
                    .bind(status)
                    .bind(reason)
                    .execute(&mut **tx)
                    .await?;
                    sqlx::query(concat!(
                        "UPDATE requests SET status = 'failed', error = $2, updated_at = ",
                        now!(),
                        " WHERE agent_id = $1 AND kind IN ('spawn', 'resume') \
                         AND status IN ('pending', 'claimed')"
                    ))
                    .bind(agent_id)
                    .bind(reason)
                    .execute(&mut **tx)
                    .await?;
                    Ok(())
                }

                /// Appends one event to an agent's log without an owner (the reconciler and
                /// other control paths, when no worker supervises the agent).
                pub async fn append_event_unowned(
                    &self,
                    agent_id: Uuid,
                    kind: &str,
                    data: &serde_json::Value,
                ) -> Result<i64, StoreError> {
                    let mut tx = self.begin_write().await?;
                    let seq: i64 = sqlx::query_scalar(
                        "INSERT INTO agent_events (agent_id, seq, kind, data) \
                         SELECT $1, COALESCE(max(seq), 0) + 1, $2, $3 FROM agent_events \
                         WHERE agent_id = $1 RETURNING seq",
                    )
                    .bind(agent_id)
                    .bind(kind)
                    .bind(data)
                    .fetch_one(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(seq)
                }

                /// Stops an agent that no worker has claimed yet; false if a worker got it
                /// first.
                pub async fn cancel_pending(&self, agent_id: Uuid, reason: &str) -> Result<bool, StoreError> {
                    let mut tx = self.begin_write().await?;
                    let cancelled = sqlx::query(concat!(
                        "UPDATE requests SET status = 'cancelled', error = $2, updated_at = ",
                        now!(),
                        " WHERE agent_id = $1 AND kind = 'spawn' AND status = 'pending'"
                    ))
                    .bind(agent_id)
                    .bind(reason)
                    .execute(&mut *tx)
                    .await?;
                    if cancelled.rows_affected() == 0 {
                        return Ok(false);
                    }
                    Self::finish_unowned_in(&mut tx, agent_id, "stopped", reason).await?;
                    tx.commit().await?;
                    Ok(true)
                }

                /// Takes an agent that waits for input back into `starting` for `owner`.
                pub async fn claim_resume(
                    &self,
                    agent_id: Uuid,
                    owner: &Owner,
                    node: &str,
                ) -> Result<bool, StoreError> {
                    let done = sqlx::query(concat!(
                        "UPDATE agents SET status = 'starting', worker_id = $2, owner_epoch = $3, \
                         node_id = $4, pending_questions = NULL, result = NULL, error = NULL, \
                         exit_code = NULL, output_offset = 0, finished_at = NULL, updated_at = ",
                        now!(),
                        " WHERE id = $1 AND status = 'waiting_for_input'"
                    ))
                    .bind(agent_id)
                    .bind(&owner.worker_id)
                    .bind(owner.epoch)
                    .bind(node)
                    .execute(&self.pool)
                    .await?;
                    Ok(done.rows_affected() == 1)
                }

                /// Removes an agent's rows: events, requests, the agent.
                pub async fn delete_agent_rows(&self, agent_id: Uuid) -> Result<(), StoreError> {
                    let mut tx = self.begin_write().await?;
                    for sql in [
                        "DELETE FROM agent_events WHERE agent_id = $1",
                        "DELETE FROM requests WHERE agent_id = $1",
                        "DELETE FROM agents WHERE id = $1",
                    ] {
                        sqlx::query(sql).bind(agent_id).execute(&mut *tx).await?;
                    }
                    tx.commit().await?;
                    Ok(())
                }

                pub async fn set_dismissed(&self, agent_id: Uuid) -> Result<(), StoreError> {
                    sqlx::query(concat!(
                        "UPDATE agents SET dismissed = true, updated_at = ",
                        now!(),
                        " WHERE id = $1"
                    ))
                    .bind(agent_id)
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                }
            }
        };
    };
}
