//! SQLite adapter: spawn requests and agents. The SQL both dialects share is expanded
//! from `store/shared/agents.rs`; here are SQLite's own: the writes and reads over many
//! agents at once, one statement per agent inside one write transaction (or a JSON array
//! for names) where Postgres binds arrays, and the batch of events that travels as one
//! JSON array.

use std::collections::HashSet;

use uuid::Uuid;

use super::SqliteStore;
use crate::domain::Agent;
use crate::store::{EventAppend, NewEvent, Owner, StoreError, UsageEntry};

shared_agents!(SqliteStore, sqlx::Sqlite);

impl SqliteStore {
    /// Nothing to do: the write lock `begin_write` took first orders spawns with one key,
    /// so each later one finds the first's row.
    async fn order_spawns_by_key(
        _: &mut sqlx::SqliteConnection,
        _: &str,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    /// Nothing to do: the write lock `begin_write` took orders capped claims.
    async fn order_capped_claims(
        _: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    /// Agents by id (few at a time: the ones a reconciliation touched).
    pub async fn agents_by_id(&self, ids: &[Uuid]) -> Result<Vec<Agent>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            match self.agent_by_id(*id).await {
                Ok(a) => out.push(a),
                Err(StoreError::UnknownAgent(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Appends a batch of events (it travels as one JSON array) and records how far into
    /// the output file they reach, only while `owner` owns the agent. Returns false when the
    /// write was fenced off.
    pub async fn append_events(
        &self,
        agent_id: Uuid,
        owner: &Owner,
        events: &[NewEvent],
        output_offset: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let owned = append_in(&mut tx, agent_id, owner, events, output_offset, &[]).await?;
        if owned {
            tx.commit().await?;
        }
        Ok(owned)
    }

    pub async fn append_events_many(
        &self,
        owner: &Owner,
        appends: &[EventAppend],
    ) -> Result<HashSet<Uuid>, StoreError> {
        // One write transaction, one statement pair per agent: SQLite runs them in process.
        let mut tx = self.begin_write().await?;
        let mut owned = HashSet::new();
        for a in appends {
            if append_in(
                &mut tx,
                a.agent_id,
                owner,
                &a.events,
                a.output_offset,
                &a.usage,
            )
            .await?
            {
                owned.insert(a.agent_id);
            }
        }
        tx.commit().await?;
        Ok(owned)
    }

    pub async fn existing_agent_names(
        &self,
        names: &[String],
    ) -> Result<HashSet<String>, StoreError> {
        let json = serde_json::to_string(names).unwrap_or_else(|_| "[]".into());
        Ok(sqlx::query_scalar(
            "SELECT name FROM agents WHERE name IN (SELECT value FROM json_each($1))",
        )
        .bind(json)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .collect())
    }
}

/// Records `events`, the output offset they reach and the `usage` they carry if `owner`
/// owns the agent (in `tx`).
async fn append_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    agent_id: Uuid,
    owner: &Owner,
    events: &[NewEvent],
    output_offset: i64,
    usage: &[UsageEntry],
) -> Result<bool, StoreError> {
    let owned = sqlx::query(concat!(
        "UPDATE agents SET output_offset = max(output_offset, $4) WHERE ",
        owned_by!()
    ))
    .bind(agent_id)
    .bind(&owner.worker_id)
    .bind(owner.epoch)
    .bind(output_offset)
    .execute(&mut **tx)
    .await?;
    if owned.rows_affected() == 0 {
        return Ok(false);
    }
    if !events.is_empty() {
        let batch: Vec<serde_json::Value> = events
            .iter()
            .map(|e| serde_json::json!({"seq": e.seq, "kind": e.kind, "data": e.data}))
            .collect();
        // `WHERE true` before `ON CONFLICT` keeps SQLite's parser from reading the
        // upsert as part of the SELECT.
        sqlx::query(
            "INSERT INTO agent_events (agent_id, seq, kind, data) \
             SELECT $1, e.value ->> '$.seq', e.value ->> '$.kind', e.value -> '$.data' \
             FROM json_each($2) AS e WHERE true \
             ON CONFLICT (agent_id, seq) DO NOTHING",
        )
        .bind(agent_id)
        .bind(serde_json::Value::Array(batch))
        .execute(&mut **tx)
        .await?;
    }
    SqliteStore::record_usage_in(tx, agent_id, usage).await?;
    Ok(true)
}
