//! SQLite adapter: provider accounts.
//! Selection runs under SQLite's write lock (`BEGIN IMMEDIATE`), so concurrent selections
//! queue up and each sees the reservations the one before it committed.

use std::time::Duration;

use uuid::Uuid;

use super::SqliteStore;
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

impl SqliteStore {
    pub async fn add_account(&self, new: &NewAccount<'_>) -> Result<Account, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO accounts (id, provider, label, kind, sealed, key_id, fingerprint, max_concurrent) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (label) DO NOTHING",
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
        sqlx::query(select_accounts!("WHERE a.id = ?1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| account_from_row(&r))
            .transpose()?
            .ok_or_else(|| StoreError::UnknownAccount(id.to_string()))
    }

    pub async fn remove_account(&self, label: &str) -> Result<(), StoreError> {
        let done = sqlx::query("DELETE FROM accounts WHERE label = ?1")
            .bind(label)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::UnknownAccount(label.to_string()));
        }
        Ok(())
    }

    pub async fn reset_account(&self, label: &str) -> Result<Account, StoreError> {
        let id: Option<Uuid> = sqlx::query_scalar(concat!(
            "UPDATE accounts SET exhausted_until = NULL, invalid_reason = NULL, updated_at = ",
            now!(),
            " WHERE label = ?1 RETURNING id"
        ))
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
        let mut tx = self.begin_write().await?;
        let total: i64 = sqlx::query_scalar("SELECT count(*) FROM accounts WHERE provider = ?1")
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
                "WHERE a.provider = ?1 AND a.invalid_reason IS NULL \
                 AND lower(hex(a.id)) NOT IN (SELECT value FROM json_each(?2)) \
                 AND (a.max_concurrent IS NULL OR (SELECT count(*) FROM agents g \
                      WHERE g.account_id = a.id AND g.account_held AND g.id <> ?3) < a.max_concurrent) \
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
        let held = sqlx::query(concat!(
            "UPDATE agents SET account_id = ?4, account_held = 1, updated_at = ",
            now!(),
            " WHERE ",
            owned_by!()
        ))
        .bind(agent_id)
        .bind(&owner.worker_id)
        .bind(owner.epoch)
        .bind(account.id)
        .execute(&mut *tx)
        .await?;
        if held.rows_affected() == 0 {
            return Ok(pick);
        }
        touch(&mut tx, account.id).await?;
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
        let mut tx = self.begin_write().await?;
        let held = sqlx::query(concat!(
            "UPDATE agents SET account_id = ?4, account_held = 1, updated_at = ",
            now!(),
            " WHERE ",
            owned_by!(),
            " AND EXISTS (SELECT 1 FROM accounts WHERE id = ?4)"
        ))
        .bind(agent_id)
        .bind(&owner.worker_id)
        .bind(owner.epoch)
        .bind(account_id)
        .execute(&mut *tx)
        .await?;
        if held.rows_affected() == 0 {
            return Ok(None);
        }
        touch(&mut tx, account_id).await?;
        tx.commit().await?;
        Ok(Some(self.account_by_id(account_id).await?))
    }

    pub async fn mark_account_exhausted(
        &self,
        account_id: Uuid,
        for_: Duration,
    ) -> Result<(), StoreError> {
        sqlx::query(concat!(
            "UPDATE accounts SET exhausted_until = ",
            lease_until!("?2"),
            ", updated_at = ",
            now!(),
            " WHERE id = ?1"
        ))
        .bind(account_id)
        .bind(for_.as_secs_f64())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn mark_account_invalid(
        &self,
        account_id: Uuid,
        reason: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(concat!(
            "UPDATE accounts SET invalid_reason = ?2, updated_at = ",
            now!(),
            " WHERE id = ?1"
        ))
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
        let done = sqlx::query(concat!(
            "UPDATE accounts SET refresh_holder = ?2, refresh_until = ",
            lease_until!("?3"),
            " WHERE id = ?1 AND (refresh_holder IS NULL OR refresh_holder = ?2 OR refresh_until < ",
            now!(),
            ")"
        ))
        .bind(account_id)
        .bind(holder)
        .bind(ttl.as_secs_f64())
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
             WHERE id = ?1 AND refresh_holder = ?2",
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
        let done = sqlx::query(concat!(
            "UPDATE accounts SET sealed = ?3, key_id = ?4, refresh_holder = NULL, \
             refresh_until = NULL, updated_at = ",
            now!(),
            " WHERE id = ?1 AND refresh_holder = ?2"
        ))
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
        let done = sqlx::query(concat!(
            "UPDATE accounts SET sealed = ?3, key_id = ?4, updated_at = ",
            now!(),
            " WHERE id = ?1 AND sealed = ?2"
        ))
        .bind(account_id)
        .bind(old)
        .bind(sealed)
        .bind(key_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn restart_run(&self, agent_id: Uuid, owner: &Owner) -> Result<bool, StoreError> {
        let done = sqlx::query(concat!(
            "UPDATE agents SET status = 'starting', output_offset = 0, pid = NULL, \
             pid_start_time = NULL, updated_at = ",
            now!(),
            " WHERE ",
            owned_by!()
        ))
        .bind(agent_id)
        .bind(&owner.worker_id)
        .bind(owner.epoch)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

/// Marks the account as just used. The timestamp format sorts as text, with milliseconds,
/// which is fine enough to order selections.
async fn touch(tx: &mut sqlx::SqliteConnection, account_id: Uuid) -> Result<(), StoreError> {
    sqlx::query(concat!(
        "UPDATE accounts SET last_used_at = ",
        now!(),
        " WHERE id = ?1"
    ))
    .bind(account_id)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
