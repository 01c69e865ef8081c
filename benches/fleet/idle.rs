//! Idle cost: what worker processes with the default intervals cost the store (Postgres
//! transactions of the benchmark's database, from `pg_stat_database`) and Redis (commands
//! processed by a redis-server of the benchmark's own) per second, by number of workers and
//! of running agents (which print nothing). Workers start, settle, then are measured over a
//! window.

use std::time::{Duration, Instant};

use agentfleet::domain::AgentStatus;

use crate::Opts;
use crate::common::TestEnv;
use crate::common::services::{PrivatePostgres, free_port};
use crate::report::{Table, f};
use crate::services::{PrivateRedis, transactions};
use crate::setup;

const HOLD: &str = "#!/bin/bash\nexec sleep 900\n";
/// Start-up work (first sweep, cleanup, registration) is over by then.
const SETTLE: Duration = Duration::from_secs(20);

pub async fn run(opts: Opts) {
    let window = Duration::from_secs(if opts.quick { 20 } else { 60 });
    // BENCH_IDLE=1x0,10x100 chooses the steps (workers x agents).
    let cells: Vec<(usize, usize)> = std::env::var("BENCH_IDLE")
        .ok()
        .map(|v| {
            v.split(',')
                .filter_map(|c| c.split_once('x'))
                .filter_map(|(w, a)| Some((w.trim().parse().ok()?, a.trim().parse().ok()?)))
                .collect()
        })
        .unwrap_or_else(|| vec![(1, 0), (10, 0), (50, 0), (10, 100)]);
    let mut table = Table::new(
        &format!(
            "Idle cost with the default intervals ({} s window): store transactions/s and Redis commands/s",
            window.as_secs()
        ),
        &[
            "workers",
            "agents",
            "store xact/s",
            "per worker",
            "redis cmd/s",
            "per worker",
            "goal",
        ],
    );
    for (workers, agents) in cells {
        let (xacts, commands) = measure(workers, agents, window).await;
        // Printed as measured too: a later step that fails leaves these figures.
        println!(
            "idle: {workers} workers, {agents} agents: {xacts:.2} xact/s, {commands:.1} cmd/s"
        );
        table.row(vec![
            workers.to_string(),
            agents.to_string(),
            f(xacts, 1),
            f(xacts / workers as f64, 2),
            f(commands, 1),
            f(commands / workers as f64, 2),
            if agents == 0 {
                "≤ 1 xact/s and ≤ 10 cmd/s per worker".into()
            } else {
                "-".into()
            },
        ]);
    }
    table.print();
}

async fn measure(workers: usize, agents: usize, window: Duration) -> (f64, f64) {
    let redis = PrivateRedis::start();
    // A Postgres of its own, with room for 50 workers' connections (each: a pool of 2 and
    // the lease heartbeat's own) beyond a default server's 100.
    let pg = PrivatePostgres::init_with(free_port(), &[("max_connections", "400")]);
    let mut env = TestEnv::with_services(&format!("127.0.0.1:{}", pg.port), &redis.url).await;
    let script = setup::script(&env, "hold", HOLD);
    setup::use_provider(&env, &script, &[]);
    // The harness's fast test intervals, back to the defaults.
    let defaults = agentfleet::config::Settings::load(None).expect("default settings");
    let lease = &defaults.worker;
    env.set_env(
        "AGENTFLEET__WORKER__HEARTBEAT_INTERVAL",
        &format!("{}ms", lease.heartbeat_interval.as_millis()),
    );
    env.set_env(
        "AGENTFLEET__WORKER__LEASE_TTL",
        &format!("{}ms", lease.lease_ttl.as_millis()),
    );
    env.set_env("RUST_LOG", "warn");
    let capacity = agents.div_ceil(workers).max(4).to_string();
    for _ in 0..workers {
        // An idle worker needs few connections; 50 of them with the default pool would
        // crowd a default Postgres (max_connections 100).
        env.start_worker(&[
            ("AGENTFLEET__WORKER__CAPACITY", capacity.as_str()),
            ("AGENTFLEET__DATABASE__MAX_CONNECTIONS", "2"),
        ]);
    }
    wait_workers(&env, workers).await;
    if agents > 0 {
        let fleet = setup::fleet(&env).await;
        let mut ids = Vec::new();
        for _ in 0..agents {
            ids.push(
                fleet
                    .spawn(setup::request("hold"))
                    .await
                    .expect("spawn")
                    .agent
                    .id,
            );
        }
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let found = fleet.store.agents_by_id(&ids).await.expect("agents");
            if found.iter().all(|a| a.status == AgentStatus::Running) {
                break;
            }
            assert!(Instant::now() < deadline, "the agents never all ran");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    tokio::time::sleep(SETTLE).await;
    let (x0, c0) = (transactions(pg.port, &env.db_name), redis.commands().await);
    tokio::time::sleep(window).await;
    let (x1, c1) = (transactions(pg.port, &env.db_name), redis.commands().await);
    env.stop_workers();
    let secs = window.as_secs_f64();
    // One INFO of the pair is ours.
    (
        (x1 - x0) as f64 / secs,
        (c1 - c0).saturating_sub(1) as f64 / secs,
    )
}

/// Waits (a loaded machine starts 50 workers slowly) until `n` workers are alive.
async fn wait_workers(env: &TestEnv, n: usize) {
    let store = env.store().await;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let workers = store.list_workers().await.expect("workers");
        if workers.iter().filter(|w| w.status == "alive").count() >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the workers did not all register"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
