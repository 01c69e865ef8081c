//! SQLite adapter: provider accounts. The SQL both dialects share is expanded from
//! `store/shared/accounts.rs`; selection is SQLite's own: it runs under the write lock
//! (`BEGIN IMMEDIATE`), so concurrent selections queue up and each sees the reservations
//! the one before it committed, and it reads the excluded ids as a JSON array.

use super::SqliteStore;
use crate::store::rows::account_from_row;
use crate::store::{AccountPick, AcquireParams, StoreError};

shared_accounts!(SqliteStore, sqlx::Sqlite);

impl SqliteStore {
    pub async fn acquire_account(
        &self,
        params: &AcquireParams<'_>,
    ) -> Result<AccountPick, StoreError> {
        let AcquireParams {
            agent_id,
            owner,
            provider,
            exclude,
        } = *params;
        let mut tx = self.begin_write().await?;
        let total: i64 = sqlx::query_scalar("SELECT count(*) FROM accounts WHERE provider = $1")
            .bind(provider)
            .fetch_one(&mut *tx)
            .await?;
        let mut pick = AccountPick {
            account: None,
            provider_accounts: total,
        };
        if total == 0 {
            return Ok(pick);
        }
        let exclude: Vec<String> = exclude.iter().map(|id| id.simple().to_string()).collect();
        let exclude = serde_json::to_string(&exclude).unwrap_or_else(|_| "[]".into());
        let row = sqlx::query(concat!(
            select_accounts!(
                "WHERE a.provider = $1 AND a.invalid_reason IS NULL \
                 AND lower(hex(a.id)) NOT IN (SELECT value FROM json_each($2)) \
                 AND (a.max_concurrent IS NULL OR (SELECT count(*) FROM agents g \
                      WHERE g.account_id = a.id AND g.account_held AND g.id <> $3) < a.max_concurrent) \
                 AND (a.exhausted_until IS NULL OR a.exhausted_until <= "
            ),
            now!(),
            ") ORDER BY a.last_used_at IS NOT NULL, a.last_used_at, a.created_at, a.id LIMIT 1"
        ))
        .bind(provider)
        .bind(exclude)
        .bind(agent_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(pick) };
        let account = account_from_row(&row)?;
        if !Self::hold_account_in(&mut tx, agent_id, owner, account.id).await? {
            return Ok(pick);
        }
        tx.commit().await?;
        pick.account = Some(account);
        Ok(pick)
    }
}
