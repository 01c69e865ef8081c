//! SQLite adapter: projects. Their SQL is the same in both dialects
//! (`store/shared/projects.rs`).

use super::SqliteStore;

shared_projects!(SqliteStore);
