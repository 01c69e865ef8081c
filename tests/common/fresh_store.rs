//! A fresh, migrated store of either adapter, for tests that drive the store or the queue
//! directly rather than through the binary.

use agentfleet::store::{Store, StoreKind};
use uuid::Uuid;

use super::databases::drop_database;

/// A fresh, migrated store of either adapter: a randomly named Postgres database, or a
/// SQLite file in its own temporary folder. Both are removed when it is dropped.
pub struct FreshStore {
    pub store: Store,
    pub url: String,
    pg_database: Option<String>,
    _dir: tempfile::TempDir,
}

impl FreshStore {
    pub async fn new(kind: StoreKind) -> Self {
        let id = Uuid::new_v4().simple().to_string();
        let dir = tempfile::tempdir().expect("tempdir");
        let (url, pg_database) = match kind {
            StoreKind::Postgres => {
                let name = format!("af_conf_{}", &id[..12]);
                (
                    format!("postgres://postgres@127.0.0.1:5432/{name}"),
                    Some(name),
                )
            }
            StoreKind::Sqlite => (
                format!("sqlite://{}", dir.path().join("store.db").display()),
                None,
            ),
        };
        let store = Store::connect(&url, 8, true).await.expect("connect store");
        store.migrate().await.expect("migrate");
        Self {
            store,
            url,
            pg_database,
            _dir: dir,
        }
    }

    /// A second, independent connection to the same database (as another process has).
    pub async fn reconnect(&self) -> Store {
        Store::connect(&self.url, 4, false)
            .await
            .expect("reconnect")
    }
}

impl Drop for FreshStore {
    fn drop(&mut self) {
        if let Some(name) = &self.pg_database {
            drop_database(name);
        }
    }
}
