//! Postgres adapter: projects. Their SQL is the same in both dialects
//! (`store/shared/projects.rs`).

use super::PgStore;

shared_projects!(PgStore);
