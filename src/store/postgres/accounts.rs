//! Postgres adapter: provider accounts. Selection is one transaction that locks
//! the provider's account rows first, so concurrent selections for one provider queue up
//! and each sees the reservations the one before it committed: two workers never
//! over-commit an account.

use std::time::Duration;

use uuid::Uuid;

use super::PgStore;
use crate::domain::Account;
use crate::store::rows::account_from_row;
use crate::store::{AccountPick, NewAccount, Owner, StoreError};

/// A SELECT of an account with the number of agents holding it, followed by `$rest`.
macro_rules! select_accounts {
    ($rest:literal) => {
        concat!(
            "SELECT a.id, a.provider, a.label, a.kind, a.sealed, a.key_id, a.fingerprint, ",
            "a.max_concurrent, a.last_used_at, a.exhausted_until, a.invalid_reason, a.created_at, ",
            "(SELECT count(*) FROM agents g WHERE g.account_id = a.id AND g.account_held) AS in_use ",
            "FROM accounts a ",
            $rest
        )
    };
}

impl PgStore {
    pub async fn add_account(&self, new: &NewAccount<'_>) -> Result<Account, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO accounts (id, provider, label, kind, sealed, key_id, fingerprint, max_concurrent) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (label) DO NOTHING",
        )
        .bind(new.id)
        .bind(new.provider)
        .bind(new.label)
        .bind(new.kind.as_str())
        .bind(new.sealed)
        .bind(new.key_id)
        .bind(new.fingerprint)
        .bind(new.max_concurrent)
        .execute(&self.pool)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(StoreError::AccountExists(new.label.to_string()));
        }
        self.account_by_id(new.id).await
    }

    pub async fn list_accounts(&self) -> Result<Vec<Account>, StoreError> {
        let rows = sqlx::query(select_accounts!("ORDER BY a.provider, a.label"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(account_from_row).collect()
    }

    pub async fn account_by_id(&self, id: Uuid) -> Result<Account, StoreError> {
        sqlx::query(select_accounts!("WHERE a.id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| account_from_row(&r))
            .transpose()?
            .ok_or_else(|| StoreError::UnknownAccount(id.to_string()))
    }

    pub async fn remove_account(&self, label: &str) -> Result<(), StoreError> {
        let done = sqlx::query("DELETE FROM accounts WHERE label = $1")
            .bind(label)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::UnknownAccount(label.to_string()));
        }
        Ok(())
    }

    pub async fn reset_account(&self, label: &str) -> Result<Account, StoreError> {
        let id: Option<Uuid> = sqlx::query_scalar(
            "UPDATE accounts SET exhausted_until = NULL, invalid_reason = NULL, updated_at = now() \
             WHERE label = $1 RETURNING id",
        )
        .bind(label)
        .fetch_optional(&self.pool)
        .await?;
        let id = id.ok_or_else(|| StoreError::UnknownAccount(label.to_string()))?;
        self.account_by_id(id).await
    }

    pub async fn acquire_account(
        &self,
        agent_id: Uuid,
        owner: &Owner,
        provider: &str,
        exclude: &[Uuid],
    ) -> Result<AccountPick, StoreError> {
        let mut tx = self.pool.begin().await?;
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
        let held = sqlx::query(
            "UPDATE agents SET account_id = $4, account_held = true, updated_at = now() \
             WHERE id = $1 AND worker_id = $2 AND owner_epoch = $3",
        )
        .bind(agent_id)
        .bind(&owner.worker_id)
        .bind(owner.epoch)
        .bind(account.id)
        .execute(&mut *tx)
        .await?;
        if held.rows_affected() == 0 {
            return Ok(pick);
        }
        sqlx::query("UPDATE accounts SET last_used_at = clock_timestamp() WHERE id = $1")
            .bind(account.id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        pick.account = Some(account);
        Ok(pick)
    }

    pub async fn hold_account(
        &self,
        agent_id: Uuid,
        owner: &Owner,
        account_id: Uuid,
    ) -> Result<Option<Account>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let held = sqlx::query(
            "UPDATE agents SET account_id = $4, account_held = true, updated_at = now() \
             WHERE id = $1 AND worker_id = $2 AND owner_epoch = $3 \
             AND EXISTS (SELECT 1 FROM accounts WHERE id = $4)",
        )
        .bind(agent_id)
        .bind(&owner.worker_id)
        .bind(owner.epoch)
        .bind(account_id)
        .execute(&mut *tx)
        .await?;
        if held.rows_affected() == 0 {
            return Ok(None);
        }
        sqlx::query("UPDATE accounts SET last_used_at = clock_timestamp() WHERE id = $1")
            .bind(account_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(self.account_by_id(account_id).await?))
    }

    pub async fn mark_account_exhausted(
        &self,
        account_id: Uuid,
        for_: Duration,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE accounts SET exhausted_until = now() + $2 * interval '1 millisecond', \
             updated_at = now() WHERE id = $1",
        )
        .bind(account_id)
        .bind(for_.as_millis() as f64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn mark_account_invalid(
        &self,
        account_id: Uuid,
        reason: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE accounts SET invalid_reason = $2, updated_at = now() WHERE id = $1")
            .bind(account_id)
            .bind(reason)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn lock_account_refresh(
        &self,
        account_id: Uuid,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE accounts SET refresh_holder = $2, \
             refresh_until = now() + $3 * interval '1 millisecond' \
             WHERE id = $1 AND (refresh_holder IS NULL OR refresh_holder = $2 OR refresh_until < now())",
        )
        .bind(account_id)
        .bind(holder)
        .bind(ttl.as_millis() as f64)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn unlock_account_refresh(
        &self,
        account_id: Uuid,
        holder: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE accounts SET refresh_holder = NULL, refresh_until = NULL \
             WHERE id = $1 AND refresh_holder = $2",
        )
        .bind(account_id)
        .bind(holder)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn store_refreshed_account(
        &self,
        account_id: Uuid,
        holder: &str,
        sealed: &[u8],
        key_id: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE accounts SET sealed = $3, key_id = $4, refresh_holder = NULL, \
             refresh_until = NULL, updated_at = now() WHERE id = $1 AND refresh_holder = $2",
        )
        .bind(account_id)
        .bind(holder)
        .bind(sealed)
        .bind(key_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn reseal_account(
        &self,
        account_id: Uuid,
        old: &[u8],
        sealed: &[u8],
        key_id: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE accounts SET sealed = $3, key_id = $4, updated_at = now() \
             WHERE id = $1 AND sealed = $2",
        )
        .bind(account_id)
        .bind(old)
        .bind(sealed)
        .bind(key_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn restart_run(&self, agent_id: Uuid, owner: &Owner) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE agents SET status = 'starting', output_offset = 0, pid = NULL, \
             pid_start_time = NULL, updated_at = now() \
             WHERE id = $1 AND worker_id = $2 AND owner_epoch = $3",
        )
        .bind(agent_id)
        .bind(&owner.worker_id)
        .bind(owner.epoch)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
