//! Usage: what agents used, the same SQL in both dialects where it can be. Each usage
//! event an agent's owner stores is a `usage_records` row keyed like the event, inserted
//! in the transaction that appends the event, and only a row actually inserted adds to the
//! agent's totals: a batch written again after a lost commit acknowledgement counts once.
//! The sums by group are each adapter's own (the day of a timestamp is spelt differently).

/// The usage operations both adapters run inside their event appends, expanded in
/// `postgres/usage.rs` and `sqlite/usage.rs`.
macro_rules! shared_usage {
    ($store:ty, $db:ty) => {
        const _: () = {
            use uuid::Uuid;

            use crate::store::{StoreError, UsageEntry};

            impl $store {
                /// Records `entries` of the agent's usage (in the caller's transaction,
                /// after its owner fence held) and adds those not recorded before to the
                /// agent's totals.
                pub(super) async fn record_usage_in(
                    conn: &mut <$db as sqlx::Database>::Connection,
                    agent_id: Uuid,
                    entries: &[UsageEntry],
                ) -> Result<(), StoreError> {
                    for entry in entries {
                        let u = &entry.usage;
                        let inserted = sqlx::query(
                            "INSERT INTO usage_records (agent_id, seq, project_id, project, \
                             provider, account_id, model, input_tokens, output_tokens, \
                             cache_read_tokens, cache_write_tokens, cost_usd, cost_estimated, \
                             turns) \
                             SELECT a.id, $2, a.project_id, p.name, a.provider, a.account_id, \
                             $3, $4, $5, $6, $7, $8, $9, $10 \
                             FROM agents a JOIN projects p ON p.id = a.project_id \
                             WHERE a.id = $1 \
                             ON CONFLICT (agent_id, seq) DO NOTHING",
                        )
                        .bind(agent_id)
                        .bind(entry.seq)
                        .bind(entry.model.as_deref())
                        .bind(u.input_tokens)
                        .bind(u.output_tokens)
                        .bind(u.cache_read_tokens)
                        .bind(u.cache_write_tokens)
                        .bind(u.cost_usd)
                        .bind(u.cost_estimated)
                        .bind(u.turns)
                        .execute(&mut *conn)
                        .await?;
                        if inserted.rows_affected() == 0 {
                            continue;
                        }
                        sqlx::query(
                            "UPDATE agents SET \
                             usage_input_tokens = usage_input_tokens + $2, \
                             usage_output_tokens = usage_output_tokens + $3, \
                             usage_cache_read_tokens = usage_cache_read_tokens + $4, \
                             usage_cache_write_tokens = usage_cache_write_tokens + $5, \
                             usage_cost_usd = CASE WHEN $6 IS NULL THEN usage_cost_usd \
                             ELSE COALESCE(usage_cost_usd, 0) + $6 END, \
                             usage_cost_estimated = (usage_cost_estimated OR $7), \
                             usage_turns = usage_turns + $8 \
                             WHERE id = $1",
                        )
                        .bind(agent_id)
                        .bind(u.input_tokens)
                        .bind(u.output_tokens)
                        .bind(u.cache_read_tokens)
                        .bind(u.cache_write_tokens)
                        .bind(u.cost_usd)
                        .bind(u.cost_estimated)
                        .bind(u.turns)
                        .execute(&mut *conn)
                        .await?;
                    }
                    Ok(())
                }
            }
        };
    };
}

/// The sums of the usage records by `$key` (an expression over `u`, the record, and `ac`,
/// its account) recorded in `[$1, $2)` (a NULL bound: no bound).
macro_rules! usage_totals_sql {
    ($key:literal) => {
        concat!(
            "SELECT ",
            $key,
            " AS key, count(DISTINCT u.agent_id) AS agents, ",
            "CAST(COALESCE(sum(u.input_tokens), 0) AS BIGINT) AS input_tokens, ",
            "CAST(COALESCE(sum(u.output_tokens), 0) AS BIGINT) AS output_tokens, ",
            "CAST(COALESCE(sum(u.cache_read_tokens), 0) AS BIGINT) AS cache_read_tokens, ",
            "CAST(COALESCE(sum(u.cache_write_tokens), 0) AS BIGINT) AS cache_write_tokens, ",
            "sum(u.cost_usd) AS cost_usd, ",
            "CAST(COALESCE(max(CASE WHEN u.cost_estimated THEN 1 ELSE 0 END), 0) AS BIGINT) ",
            "AS cost_estimated, ",
            "CAST(COALESCE(sum(u.turns), 0) AS BIGINT) AS turns ",
            "FROM usage_records u LEFT JOIN accounts ac ON ac.id = u.account_id ",
            "WHERE ($1 IS NULL OR u.recorded_at >= $1) AND ($2 IS NULL OR u.recorded_at < $2) ",
            "GROUP BY 1 ORDER BY 1"
        )
    };
}
