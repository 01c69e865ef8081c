//! Fleet benchmarks against the real services: dispatch latency, queue throughput (with
//! BullMQ on the same Redis), agents per worker, reconcile delay, control latency (stop and
//! resume through the API and Redis), the idle cost of workers and a filtered page of
//! 100,000 agents. Each prints a table and the machine it ran on.
//!
//!   cargo bench --bench fleet                  # all of them
//!   cargo bench --bench fleet -- dispatch      # one (dispatch, queue, agents, reconcile)
//!   cargo bench --bench fleet -- queue --quick # fewer iterations
//!
//! Postgres (127.0.0.1:5432) and Redis (127.0.0.1:6379) must be running; each benchmark
//! uses a fresh database and Redis key prefix and removes them at the end.

/// The tests' harness (`tests/common/`), of which the benchmarks use a part (the lint stays
/// on for the test binaries, each of which declares only the modules it uses whole).
#[allow(dead_code)]
#[path = "../../tests/common"]
mod common {
    pub mod api;
    pub mod databases;
    pub mod env;
    pub mod services;
    pub mod workers;

    pub use databases::{REDIS_URL, delete_redis_keys};
    pub use env::TestEnv;
}

#[path = "../machine/mod.rs"]
mod machine;

mod agents;
mod control;
mod dispatch;
mod idle;
mod lists;
mod queue;
mod reconcile;
mod report;
mod services;
mod setup;

use std::time::Instant;

const ALL: [&str; 7] = [
    "dispatch",
    "queue",
    "agents",
    "reconcile",
    "control",
    "idle",
    "lists",
];

/// Options shared by every benchmark.
#[derive(Debug, Clone, Copy)]
pub struct Opts {
    /// Fewer iterations: a quick look, not figures to publish.
    pub quick: bool,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Children of the queue benchmark (separate consumer processes).
    if args.first().map(String::as_str) == Some("--child") {
        return queue::child(&args[1..]);
    }
    // `cargo test` / nextest run bench targets as tests: there are none here.
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    let opts = Opts {
        quick: args.iter().any(|a| a == "--quick"),
    };
    let mut names: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if names.is_empty() || names == ["all"] {
        names = ALL.to_vec();
    }
    if let Some(bad) = names.iter().find(|n| !ALL.contains(n)) {
        eprintln!("unknown benchmark '{bad}'; choose from {}", ALL.join(", "));
        std::process::exit(2);
    }
    report::machine();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let started = Instant::now();
    for name in names {
        let t = Instant::now();
        runtime.block_on(async {
            match name {
                "dispatch" => dispatch::run(opts).await,
                "queue" => queue::run(opts).await,
                "agents" => agents::run(opts).await,
                "reconcile" => reconcile::run(opts).await,
                "control" => control::run(opts).await,
                "idle" => idle::run(opts).await,
                "lists" => lists::run(opts).await,
                _ => unreachable!("checked above"),
            }
        });
        println!("({name}: {:.0} s)\n", t.elapsed().as_secs_f64());
    }
    println!(
        "fleet benchmarks: {:.0} s in all",
        started.elapsed().as_secs_f64()
    );
}
