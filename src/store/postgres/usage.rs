//! Postgres adapter: usage. Recording it is shared (`store/shared/usage.rs`); the sums by
//! group are Postgres's own, for the day of a timestamp (`to_char` in UTC) and an account
//! id as text.

use super::PgStore;
use crate::domain::{UsageGroup, UsageTotal};
use crate::store::rows::usage_total_from_row;
use crate::store::{StoreError, UsageQuery};

shared_usage!(PgStore, sqlx::Postgres);

impl PgStore {
    pub async fn usage_totals(&self, query: &UsageQuery) -> Result<Vec<UsageTotal>, StoreError> {
        let sql = match query.group_by {
            UsageGroup::Project => usage_totals_sql!("u.project"),
            UsageGroup::Provider => usage_totals_sql!("u.provider"),
            UsageGroup::Account => {
                usage_totals_sql!("COALESCE(ac.label, CAST(u.account_id AS TEXT), '')")
            }
            UsageGroup::Day => {
                usage_totals_sql!("to_char(u.recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')")
            }
        };
        let rows = sqlx::query(sql)
            .bind(query.since)
            .bind(query.until)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(usage_total_from_row).collect()
    }

    pub async fn project_cost_since(
        &self,
        project_id: uuid::Uuid,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<f64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT COALESCE(sum(cost_usd), 0) FROM usage_records \
             WHERE project_id = $1 AND recorded_at >= $2",
        )
        .bind(project_id)
        .bind(since)
        .fetch_one(&self.pool)
        .await?)
    }
}
