//! SQLite adapter: usage. Recording it is shared (`store/shared/usage.rs`); the sums by
//! group are SQLite's own: the day is the start of the schema's timestamp text, an account
//! id (a BLOB) is shown in hex, and the bounds are bound in the schema's timestamp format
//! so they compare as text.

use chrono::{DateTime, Utc};

use super::SqliteStore;
use crate::domain::{UsageGroup, UsageTotal};
use crate::store::rows::usage_total_from_row;
use crate::store::{StoreError, UsageQuery};

shared_usage!(SqliteStore, sqlx::Sqlite);

/// A time in the one timestamp format of this schema (`now!()`'s).
fn timestamp(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

impl SqliteStore {
    pub async fn usage_totals(&self, query: &UsageQuery) -> Result<Vec<UsageTotal>, StoreError> {
        let sql = match query.group_by {
            UsageGroup::Project => usage_totals_sql!("u.project"),
            UsageGroup::Provider => usage_totals_sql!("u.provider"),
            UsageGroup::Account => {
                usage_totals_sql!("COALESCE(ac.label, lower(hex(u.account_id)), '')")
            }
            UsageGroup::Day => usage_totals_sql!("substr(u.recorded_at, 1, 10)"),
        };
        let rows = sqlx::query(sql)
            .bind(query.since.map(timestamp))
            .bind(query.until.map(timestamp))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(usage_total_from_row).collect()
    }

    pub async fn project_cost_since(
        &self,
        project_id: uuid::Uuid,
        since: DateTime<Utc>,
    ) -> Result<f64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT CAST(COALESCE(sum(cost_usd), 0) AS REAL) FROM usage_records \
             WHERE project_id = $1 AND recorded_at >= $2",
        )
        .bind(project_id)
        .bind(timestamp(since))
        .fetch_one(&self.pool)
        .await?)
    }
}
