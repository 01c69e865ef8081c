//! SQLite adapter of the store: the embedded default, one file on one machine. Its SQL
//! lives in this folder and in `store/shared/` (the text both dialects share); rows never
//! leave the store. Its files follow the port's groups, as the Postgres adapter's do:
//! `projects`, `agents` (requests and agents), `controls` (control requests and
//! re-dispatch), `workers` (leases and reconciling), `accounts`. Each expands the
//! operations whose SQL both dialects share (`store/shared/`, with the time macros below)
//! and holds what is SQLite's own: loops or JSON arrays (`json_each`) where Postgres binds
//! arrays, multi-statement claims under the write lock where Postgres uses `FOR UPDATE SKIP
//! LOCKED`, and the epoch counter table.
//!
//! The file is opened in WAL mode with `synchronous=NORMAL` (durable across process
//! crashes; never OFF), a busy timeout so writers from several processes (`up` and a CLI
//! `spawn`) wait for each other instead of failing, and foreign keys on. SQLite has one
//! writer at a time, which makes every single-statement claim or fenced write atomic; the
//! multi-statement writes run in `BEGIN IMMEDIATE` transactions, which take the write lock
//! up front so a read-then-write never fails on a stale snapshot.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::StoreError;

pub(super) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Writers wait this long for another process's write to end.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Now, in the one text format every timestamp of this schema uses (it sorts as text).
macro_rules! now {
    () => {
        "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
    };
}

/// Now plus the seconds bound at `$param`, in the schema's timestamp format.
macro_rules! from_now {
    ($param:literal) => {
        concat!(
            "strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '+' || ",
            $param,
            " || ' seconds')"
        )
    };
}

/// Now minus the seconds bound at `$param`, in the schema's timestamp format.
macro_rules! ago {
    ($param:literal) => {
        concat!(
            "strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-' || ",
            $param,
            " || ' seconds')"
        )
    };
}

/// The seconds from the timestamp `$at` to now, as a float.
macro_rules! seconds_since {
    ($at:literal) => {
        concat!("(julianday('now') - julianday(", $at, ")) * 86400.0")
    };
}

/// The wall clock: `now!()`, since SQLite's `'now'` already moves from one statement to
/// the next (with milliseconds, fine enough to order account selections).
macro_rules! clock {
    () => {
        "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
    };
}

/// Nothing: the write lock `begin_write` took already holds every row.
macro_rules! for_update {
    () => {
        ""
    };
}

/// `$array` (a JSON array) with the JSON value bound at `$value` appended.
macro_rules! json_append {
    ($array:literal, $value:literal) => {
        concat!("json_insert(", $array, ", '$[#]', json(", $value, "))")
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

shared_schema!(SqliteStore);

#[derive(Clone, Debug)]
pub struct SqliteStore {
    pub(super) pool: SqlitePool,
}

impl SqliteStore {
    /// Opens the database file (`sqlite:PATH` or `sqlite://PATH`), creating it and its
    /// directory first when asked.
    pub async fn connect(
        url: &str,
        max_connections: u32,
        create_if_missing: bool,
    ) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(create_if_missing)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        if create_if_missing
            && let Some(dir) = options.get_filename().parent()
            && !dir.as_os_str().is_empty()
        {
            create_dir(dir)?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }

    /// A write transaction that holds the write lock from its first statement.
    pub(super) async fn begin_write(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, StoreError> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// That the agent's name starts with `prefix`: GLOB, which is case-sensitive as
    /// Postgres' LIKE is (SQLite's LIKE is not) and uses the names' index; its wildcards
    /// are taken literally by putting each in brackets.
    pub(super) fn push_name_prefix(sql: &mut sqlx::QueryBuilder<sqlx::Sqlite>, prefix: &str) {
        let mut pattern = String::with_capacity(prefix.len() + 1);
        for c in prefix.chars() {
            match c {
                '*' | '?' | '[' => {
                    pattern.push('[');
                    pattern.push(c);
                    pattern.push(']');
                }
                c => pattern.push(c),
            }
        }
        pattern.push('*');
        sql.push("a.name GLOB ").push_bind(pattern);
    }

    /// A time to compare with a timestamp column: text in the schema's format (see
    /// `now!`), which orders as the times do.
    pub(super) fn time_param(at: chrono::DateTime<chrono::Utc>) -> String {
        at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
    }
}

fn create_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::create_dir_all(dir).map_err(|source| StoreError::DataDir {
        path: dir.display().to_string(),
        source,
    })
}
