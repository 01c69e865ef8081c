//! The fleet end to end: the `agentfleet` binary started as real processes (the CLI, the
//! API, workers) against a fresh Postgres database and Redis key prefix per test, or
//! embedded, with the scripted claude stand-in (`tests/fixtures/fake-claude`) as the
//! provider. The soak test is ignored by default; run it with
//! `cargo nextest run --test fleet --run-ignored ignored-only --no-capture soak::`.

/// The parts of the tests' shared harness (`tests/common/`) used here: each binary declares
/// only the modules it uses whole, so a helper no test uses still warns.
#[path = "../common"]
mod common {
    pub mod api;
    pub mod browser;
    pub mod databases;
    pub mod env;
    pub mod fresh_store;
    pub mod run_log;
    pub mod services;
    pub mod workers;
}

// The spine, and what a user meets on the command line.
mod accounts;
mod cli_bad_input;
mod cli_first_run;
mod embedded;
mod process;
mod projects;
mod remote_cli;
mod resume;
mod spine;
mod usage;

// The API's and the control plane's contracts.
mod api;
mod api_limits;
mod control;
mod dashboard;
mod diff;
mod front_door;
mod lists;
mod observability;
mod openapi;
mod webhooks;

// Faults injected: processes, services, disks, output and agents that misbehave.
mod api_outages;
mod disk_full;
mod hostile_files;
mod outages;
mod output_limits;
mod reconcile;
mod sandbox_attacks;
mod soak;

// What ops apply and do.
mod deploy;
mod scaling;
