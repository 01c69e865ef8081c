//! Postgres adapter of the store: the distributed mode, one database every worker and API
//! process shares. Its SQL lives in this folder and in `store/shared/` (the text both
//! dialects share); rows never leave the store (they become domain types at the boundary).
//! Its files follow the port's groups, as the SQLite adapter's do: `projects`, `agents`
//! (requests and agents), `controls` (control requests and re-dispatch), `workers` (leases
//! and reconciling), `accounts`. Each expands the operations whose SQL both dialects share
//! (`store/shared/`, with the time macros below) and holds what is Postgres's own: arrays
//! (`ANY`, `unnest`) where SQLite loops or reads JSON, one-statement claims with `FOR
//! UPDATE SKIP LOCKED` where SQLite takes its write lock, advisory locks, and the epoch
//! sequence.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};

use super::StoreError;

pub(super) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Now: the transaction's start, which every timestamp one transaction writes shares.
macro_rules! now {
    () => {
        "now()"
    };
}

/// Now plus the seconds bound at `$param`.
macro_rules! from_now {
    ($param:literal) => {
        concat!("now() + ", $param, " * interval '1 second'")
    };
}

/// Now minus the seconds bound at `$param`.
macro_rules! ago {
    ($param:literal) => {
        concat!("now() - ", $param, " * interval '1 second'")
    };
}

/// The seconds from the timestamp `$at` to now, as a float.
macro_rules! seconds_since {
    ($at:literal) => {
        concat!("extract(epoch FROM now() - ", $at, ")::float8")
    };
}

/// The wall clock, which moves within a transaction (unlike `now()`).
macro_rules! clock {
    () => {
        "clock_timestamp()"
    };
}

/// Locks the rows a SELECT reads until the transaction ends.
macro_rules! for_update {
    () => {
        " FOR UPDATE"
    };
}

/// `$array` (a JSON array) with the JSON value bound at `$value` appended.
macro_rules! json_append {
    ($array:literal, $value:literal) => {
        concat!($array, " || ", $value, "::jsonb")
    };
}

// Declared after the macros above so they see them.
mod accounts;
mod agents;
mod controls;
mod projects;
mod usage;
mod webhooks;
mod workers;

shared_schema!(PgStore);

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

    /// A transaction that may write. Postgres orders writers by the row locks they take,
    /// so it begins as any other (SQLite's takes its write lock up front).
    pub(super) async fn begin_write(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
        Ok(self.pool.begin().await?)
    }

    /// That the agent's name starts with `prefix`: LIKE (case-sensitive here), its
    /// wildcards escaped; `agents_name_prefix_idx` (text_pattern_ops) answers it.
    pub(super) fn push_name_prefix(sql: &mut sqlx::QueryBuilder<sqlx::Postgres>, prefix: &str) {
        let mut pattern = String::with_capacity(prefix.len() + 1);
        for c in prefix.chars() {
            if matches!(c, '%' | '_' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push('%');
        sql.push("a.name LIKE ")
            .push_bind(pattern)
            .push(" ESCAPE '\\'");
    }

    /// A time to compare with a timestamp column, as this dialect binds it.
    pub(super) fn time_param(at: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
        at
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
