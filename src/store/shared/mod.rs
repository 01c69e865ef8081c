//! The SQL both dialects run as one text, written once. sqlx-sqlite binds `$1, $2, …` by
//! number, SQLite reads `true`/`false` as 1/0, and each dialect spells its clock with the
//! same macros, so most statements need no second copy.
//!
//! Each file here holds one macro, named for its group (`shared_agents!` in `agents.rs`),
//! that the adapters' files of the same name (`postgres/agents.rs`, `sqlite/agents.rs`)
//! expand into their own inherent operations, against their own pool. Each adapter defines,
//! before its modules, the time macros these texts use: `now!()`, `from_now!("$n")` and
//! `ago!("$n")` (now plus or minus `$n` seconds), `seconds_since!("column")`, `clock!()`
//! (the wall clock, moving within a transaction) and `for_update!()` (a row lock where
//! the dialect has one). Each adapter also has `begin_write` (a transaction that may
//! write). What truly differs stays in the adapter's own file, and its module doc says
//! what and why.

/// A SELECT of the agent's API shape (with its project's name), followed by `$rest`.
macro_rules! select_agents {
    ($rest:literal) => {
        concat!(
            "SELECT a.id, a.name, a.provider, a.mode, p.name AS project, a.task_id, a.status, ",
            "a.session_id, a.worker_id, a.node_id, a.owner_epoch, a.pid, a.branch, a.workdir, ",
            "a.output_path, a.result, a.pending_questions, a.error, a.exit_code, a.created_at, ",
            "a.updated_at, a.started_at, a.finished_at, a.dismissed, a.output_offset, ",
            "a.pid_start_time, a.account_id, ",
            "a.usage_input_tokens, a.usage_output_tokens, a.usage_cache_read_tokens, ",
            "a.usage_cache_write_tokens, a.usage_cost_usd, a.usage_cost_estimated, a.usage_turns, ",
            "a.model, a.budget_max_tokens, a.budget_max_cost_usd, a.budget_max_turns, ",
            "a.base_commit, a.pushed_commit ",
            "FROM agents a JOIN projects p ON p.id = a.project_id ",
            $rest
        )
    };
}

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

/// The fence every write about an owned agent carries (`$1` agent, `$2` worker, `$3` epoch).
macro_rules! owned_by {
    () => {
        "id = $1 AND worker_id = $2 AND owner_epoch = $3"
    };
}

/// The control kinds a worker acts on.
macro_rules! controls {
    () => {
        "('stop', 'delete', 'resume', 'dismiss', 'cleanup')"
    };
}

/// The schema and liveness operations, expanded in each adapter's `mod.rs` (beside its
/// `MIGRATOR`).
macro_rules! shared_schema {
    ($store:ty) => {
        impl $store {
            pub async fn migrate(&self) -> Result<usize, StoreError> {
                // None when the schema was never created (no bookkeeping table yet).
                let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM _sqlx_migrations")
                    .fetch_all(&self.pool)
                    .await
                    .unwrap_or_default();
                MIGRATOR.run(&self.pool).await?;
                Ok(crate::store::migrations_applied(&MIGRATOR, &applied))
            }

            pub async fn ping(&self) -> Result<(), StoreError> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }
        }
    };
}

// Declared after the macros above so they see them; `macro_use` lets the adapters,
// declared after this module, expand the group macros.
#[macro_use]
mod accounts;
#[macro_use]
mod agents;
#[macro_use]
mod controls;
#[macro_use]
mod projects;
#[macro_use]
mod usage;
#[macro_use]
pub(super) mod workers;
#[macro_use]
mod webhooks;
