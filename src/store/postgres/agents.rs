//! Postgres adapter: spawn requests and agents. The SQL both dialects share is expanded
//! from `store/shared/agents.rs`; here are Postgres's own: the advisory lock that orders
//! spawns with one idempotency key, and the writes and reads over many agents at once as
//! arrays (`ANY`, `unnest`: one statement where SQLite loops).

use std::collections::HashSet;

use uuid::Uuid;

use super::PgStore;
use crate::domain::Agent;
use crate::store::rows::agent_from_row;
use crate::store::{EventAppend, NewEvent, Owner, StoreError};

/// The first key of the advisory locks that serialise spawns sharing an idempotency key
/// (the second is the key's hash), apart from any other advisory lock.
const IDEMPOTENCY_LOCK_CLASS: i32 = 0x1d3e;
/// The advisory lock that serialises claims under a concurrency cap.
const CAPPED_CLAIM_LOCK_CLASS: i32 = 0x1d3f;

shared_agents!(PgStore, sqlx::Postgres);

impl PgStore {
    /// Makes spawns with one idempotency key wait for each other until the first commits,
    /// so each later one finds the first's row (read committed: a fresh snapshot per query).
    async fn order_spawns_by_key(tx: &mut sqlx::PgConnection, key: &str) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .bind(IDEMPOTENCY_LOCK_CLASS)
            .bind(key)
            .execute(tx)
            .await?;
        Ok(())
    }

    /// Makes capped claims wait for each other until the first commits (its agent then
    /// counts as starting).
    async fn order_capped_claims(
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    ) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_advisory_xact_lock($1, 0)")
            .bind(CAPPED_CLAIM_LOCK_CLASS)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Agents by id, in one query.
    pub async fn agents_by_id(&self, ids: &[Uuid]) -> Result<Vec<Agent>, StoreError> {
        let rows = sqlx::query(select_agents!(
            "WHERE a.id = ANY($1) ORDER BY a.created_at, a.id"
        ))
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(agent_from_row).collect()
    }

    /// Appends a batch of events and records how far into the output file they reach,
    /// only while `owner` owns the agent. Returns false when the write was fenced off.
    pub async fn append_events(
        &self,
        agent_id: Uuid,
        owner: &Owner,
        events: &[NewEvent],
        output_offset: i64,
    ) -> Result<bool, StoreError> {
        let append = EventAppend {
            agent_id,
            events: events.to_vec(),
            output_offset,
            usage: Vec::new(),
        };
        let taken = self.append_events_many(owner, &[append]).await?;
        Ok(taken.contains(&agent_id))
    }

    pub async fn append_events_many(
        &self,
        owner: &Owner,
        appends: &[EventAppend],
    ) -> Result<HashSet<Uuid>, StoreError> {
        let ids: Vec<Uuid> = appends.iter().map(|a| a.agent_id).collect();
        let offsets: Vec<i64> = appends.iter().map(|a| a.output_offset).collect();
        let mut tx = self.begin_write().await?;
        let owned: HashSet<Uuid> = sqlx::query_scalar(
            "UPDATE agents a SET output_offset = GREATEST(a.output_offset, u.off) \
             FROM unnest($1::uuid[], $2::bigint[]) AS u(id, off) \
             WHERE a.id = u.id AND a.worker_id = $3 AND a.owner_epoch = $4 RETURNING a.id",
        )
        .bind(&ids)
        .bind(&offsets)
        .bind(&owner.worker_id)
        .bind(owner.epoch)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        let events = appends
            .iter()
            .filter(|a| owned.contains(&a.agent_id))
            .flat_map(|a| a.events.iter().map(move |e| (a.agent_id, e)));
        let (mut agent_ids, mut seqs, mut kinds, mut data) = (vec![], vec![], vec![], vec![]);
        for (agent_id, e) in events {
            agent_ids.push(agent_id);
            seqs.push(e.seq);
            kinds.push(e.kind.as_str());
            data.push(&e.data);
        }
        if !agent_ids.is_empty() {
            sqlx::query(
                "INSERT INTO agent_events (agent_id, seq, kind, data) \
                 SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::jsonb[]) \
                 ON CONFLICT (agent_id, seq) DO NOTHING",
            )
            .bind(&agent_ids)
            .bind(&seqs)
            .bind(&kinds)
            .bind(&data)
            .execute(&mut *tx)
            .await?;
        }
        for a in appends.iter().filter(|a| owned.contains(&a.agent_id)) {
            Self::record_usage_in(&mut tx, a.agent_id, &a.usage).await?;
        }
        tx.commit().await?;
        Ok(owned)
    }

    /// Of `names`, those that still have an agent row.
    pub async fn existing_agent_names(
        &self,
        names: &[String],
    ) -> Result<HashSet<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT name FROM agents WHERE name = ANY($1)")
                .bind(names)
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .collect(),
        )
    }
}
