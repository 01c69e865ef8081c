//! Provider accounts: the operations whose SQL is the same in both dialects — adding,
//! listing, removing and resetting accounts, re-holding one for a resume, marking one
//! exhausted or invalid, the refresh lock, and re-sealing. Selection (`acquire_account`)
//! differs per dialect.

/// The account operations, expanded in `postgres/accounts.rs` and `sqlite/accounts.rs`.
macro_rules! shared_accounts {
    ($store:ty, $db:ty) => {
        const _: () = {
            use std::time::Duration;

            use uuid::Uuid;

            use crate::domain::Account;
            use crate::store::rows::account_from_row;
            use crate::store::{NewAccount, Owner, StoreError};

            impl $store {
                pub async fn add_account(&self, new: &NewAccount<'_>) -> Result<Account, StoreError> {
                    let inserted = sqlx::query(
                        "INSERT INTO accounts (id, provider, label, kind, sealed, key_id, \
                         fingerprint, max_concurrent) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                         ON CONFLICT (label) DO NOTHING",
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
                    let id: Option<Uuid> = sqlx::query_scalar(concat!(
                        "UPDATE accounts SET exhausted_until = NULL, invalid_reason = NULL, \
                         updated_at = ",
                        now!(),
                        " WHERE label = $1 RETURNING id"
                    ))
                    .bind(label)
                    .fetch_optional(&self.pool)
                    .await?;
                    let id = id.ok_or_else(|| StoreError::UnknownAccount(label.to_string()))?;
                    self.account_by_id(id).await
                }

                pub async fn hold_account(
                    &self,
                    agent_id: Uuid,
                    owner: &Owner,
                    account_id: Uuid,
                ) -> Result<Option<Account>, StoreError> {
                    let mut tx = self.begin_write().await?;
                    if !Self::hold_account_in(&mut tx, agent_id, owner, account_id).await? {
                        return Ok(None);
                    }
                    tx.commit().await?;
                    Ok(Some(self.account_by_id(account_id).await?))
                }

                /// Reserves the account for the agent `owner` runs and marks it as just used
                /// (by the wall clock: selections order by it, finer than one transaction's
                /// `now()`); false when the write was fenced off or the account is gone.
                pub(super) async fn hold_account_in(
                    tx: &mut sqlx::Transaction<'static, $db>,
                    agent_id: Uuid,
                    owner: &Owner,
                    account_id: Uuid,
                ) -> Result<bool, StoreError> {
                    let held = sqlx::query(concat!(
                        "UPDATE agents SET account_id = $4, account_held = true, updated_at = ",
                        now!(),
                        " WHERE ",
                        owned_by!(),
                        " AND EXISTS (SELECT 1 FROM accounts WHERE id = $4)"
                    ))
                    .bind(agent_id)
                    .bind(&owner.worker_id)
                    .bind(owner.epoch)
                    .bind(account_id)
                    .execute(&mut **tx)
                    .await?;
                    if held.rows_affected() == 0 {
                        return Ok(false);
                    }
                    sqlx::query(concat!(
                        "UPDATE accounts SET last_used_at = ",
                        clock!(),
                        " WHERE id = $1"
                    ))
                    .bind(account_id)
                    .execute(&mut **tx)
                    .await?;
                    Ok(true)
                }

                pub async fn mark_account_exhausted(
                    &self,
                    account_id: Uuid,
                    for_: Duration,
                ) -> Result<(), StoreError> {
                    sqlx::query(concat!(
                        "UPDATE accounts SET exhausted_until = ",
                        from_now!("$2"),
                        ", updated_at = ",
                        now!(),
                        " WHERE id = $1"
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
                        "UPDATE accounts SET invalid_reason = $2, updated_at = ",
                        now!(),
                        " WHERE id = $1"
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
                        "UPDATE accounts SET refresh_holder = $2, refresh_until = ",
                        from_now!("$3"),
                        " WHERE id = $1 AND (refresh_holder IS NULL OR refresh_holder = $2 \
                         OR refresh_until < ",
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
                    let done = sqlx::query(concat!(
                        "UPDATE accounts SET sealed = $3, key_id = $4, refresh_holder = NULL, \
                         refresh_until = NULL, updated_at = ",
                        now!(),
                        " WHERE id = $1 AND refresh_holder = $2"
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
                        "UPDATE accounts SET sealed = $3, key_id = $4, updated_at = ",
                        now!(),
                        " WHERE id = $1 AND sealed = $2"
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
        };
    };
}
