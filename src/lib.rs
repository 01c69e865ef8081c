//! agentfleet: a job-queue worker fleet that runs AI coding-agent CLIs headlessly, each in
//! its own git repository and checkout. The flow, folder by folder: `api` / `cli` → `fleet` (validate,
//! record, enqueue) → `store` (the record: SQLite embedded, or Postgres in a fleet) +
//! `queue` (the store's pending requests, or Redis) → `worker` (claim, `workspace`,
//! `process` starting each provider in its `sandbox`, supervisor with `providers`' parsers)
//! → `store` + `events`. Files in places an agent can write (its checkout, its config dir)
//! go through `agent_files`, never a plain path. Status changes reach subscribers through
//! `webhooks` (an outbox the store writes with each change, sent by every worker).

pub mod agent_files;
pub mod api;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod domain;
pub mod events;
pub mod fleet;
pub mod metrics;
pub mod process;
pub mod providers;
pub mod queue;
pub mod sandbox;
pub mod store;
pub mod telemetry;
pub mod web;
pub mod webhooks;
pub mod worker;
pub mod workspace;
