//! Postgres adapter of the store: the fleet mode, one database every worker and API
//! process shares. The SQL lives in this folder and nowhere else; rows never leave it (they
//! become domain types at the boundary). Its files follow the port's groups, as the SQLite
//! adapter's do: `projects`, `agents` (requests and agents), `controls` (control requests
//! and re-dispatch), `workers` (leases and reconciling), `accounts`.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};

use super::StoreError;

pub(super) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// A SELECT of the agent's API shape (with its project's name), followed by `$rest`.
macro_rules! select_agents {
    ($rest:literal) => {
        concat!(
            "SELECT a.id, a.name, a.provider, a.mode, p.name AS project, a.task_id, a.status, ",
            "a.session_id, a.worker_id, a.node_id, a.owner_epoch, a.pid, a.branch, a.workdir, ",
            "a.output_path, a.result, a.pending_questions, a.error, a.exit_code, a.created_at, ",
            "a.updated_at, a.started_at, a.finished_at, a.dismissed, a.output_offset, ",
            "a.pid_start_time, a.account_id ",
            "FROM agents a JOIN projects p ON p.id = a.project_id ",
            $rest
        )
    };
}

// Declared after the macros above so they see them.
mod accounts;
mod agents;
mod controls;
mod projects;
mod workers;

#[derive(Clone, Debug)]
pub struct PgStore {
    pub(super) pool: PgPool,
}

impl PgStore {
    /// Connects, creating the database first when asked and it is missing.
    pub async fn connect(
        url: &str,
        max_connections: u32,
        create_if_missing: bool,
    ) -> Result<Self, StoreError> {
        // A worker paused (or partitioned) inside a transaction must not hold its row locks
        // for ever: the reconciler waits on exactly those rows.
        let options = PgConnectOptions::from_str(url)?
            .options([("idle_in_transaction_session_timeout", "5s")]);
        if create_if_missing {
            create_database_if_missing(&options).await?;
        }
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }

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

async fn create_database_if_missing(options: &PgConnectOptions) -> Result<(), StoreError> {
    let Some(name) = options.get_database().map(str::to_string) else {
        return Ok(());
    };
    let mut conn = options.clone().database("postgres").connect().await?;
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_optional(&mut conn)
        .await?;
    if exists.is_none() {
        let quoted = name.replace('"', "\"\"");
        // Two processes may race to create it; the loser's "already exists" is fine.
        if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{quoted}\"")))
            .execute(&mut conn)
            .await
        {
            let duplicate = e
                .as_database_error()
                .and_then(|d| d.code())
                .is_some_and(|c| c == "42P04" || c == "23505");
            if !duplicate {
                return Err(e.into());
            }
        }
    }
    conn.close().await?;
    Ok(())
}
