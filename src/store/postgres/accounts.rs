//! Postgres adapter: provider accounts. The SQL both dialects share is expanded from
//! `store/shared/accounts.rs`; selection is Postgres's own: one transaction that locks the
//! provider's account rows first, so concurrent selections for one provider queue up and
//! each sees the reservations the one before it committed — two workers never over-commit
//! an account.

use uuid::Uuid;

use super::PgStore;
use crate::store::rows::account_from_row;
use crate::store::{AccountPick, AcquireParams, StoreError};

shared_accounts!(PgStore, sqlx::Postgres);

impl PgStore {
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
        let all: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM accounts WHERE provider = $1 ORDER BY id FOR UPDATE",
        )
        .bind(provider)
        .fetch_all(&mut *tx)
        .await?;
        let mut pick = AccountPick {
            account: None,
            provider_accounts: all.len() as i64,
        };
        if all.is_empty() {
            return Ok(pick);
        }
        let row = sqlx::query(select_accounts!(
            "WHERE a.provider = $1 AND a.invalid_reason IS NULL \
             AND (a.exhausted_until IS NULL OR a.exhausted_until <= now()) \
             AND NOT (a.id = ANY($2)) \
             AND (a.max_concurrent IS NULL OR (SELECT count(*) FROM agents g \
                  WHERE g.account_id = a.id AND g.account_held AND g.id <> $3) < a.max_concurrent) \
             ORDER BY a.last_used_at ASC NULLS FIRST, a.created_at, a.id LIMIT 1"
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
