//! Reconcile delay: from a worker's SIGKILL to its agents being marked by another worker,
//! over repeated kills. Another node judges a dead worker only once its agents' processes are
//! certain to be dead (the dead-man switch: lease TTL + `worker.orphan_grace` + the switch's
//! margin after the last renewal), so that is the bound; the sweep interval comes on top. A survivor on another node is kept busy (one slot, one long agent),
//! so each round's agents run on a fresh victim worker, which is then killed.

use std::time::{Duration, Instant};

use agentfleet::domain::AgentStatus;
use nix::sys::signal::Signal;

use crate::Opts;
use crate::common::TestEnv;
use crate::report::{Table, f, quantile};
use crate::setup;

const HOLD: &str = "#!/bin/bash\nexec sleep 600\n";
const LEASE_TTL: &str = "2s";
const HEARTBEAT: &str = "500ms";
const SWEEP: &str = "500ms";
const ORPHAN_GRACE: &str = "2s";
/// Lease TTL + orphan grace + `sandbox::DEADMAN_KILL_MARGIN` + one sweep, in ms.
const GOAL_MS: f64 = 2_000.0 + 2_000.0 + 3_000.0 + 500.0;
const AGENTS_PER_KILL: usize = 2;

pub async fn run(opts: Opts) {
    let kills = if opts.quick { 5 } else { 20 };
    let mut env = TestEnv::new().await;
    let script = setup::script(&env, "hold", HOLD);
    setup::use_provider(&env, &script, &[]);
    env.set_env("AGENTFLEET__WORKER__LEASE_TTL", LEASE_TTL);
    env.set_env("AGENTFLEET__WORKER__HEARTBEAT_INTERVAL", HEARTBEAT);
    env.set_env("AGENTFLEET__WORKER__SWEEP_INTERVAL", SWEEP);
    env.set_env("AGENTFLEET__WORKER__ORPHAN_GRACE", ORPHAN_GRACE);
    env.set_env("RUST_LOG", "warn");
    let fleet = setup::fleet(&env).await;

    // The survivor: one slot, taken by an agent that outlives the benchmark.
    env.start_worker(&[
        ("AGENTFLEET__WORKER__NODE_ID", "survivor"),
        ("AGENTFLEET__WORKER__CAPACITY", "1"),
    ]);
    let filler = fleet.spawn(setup::request("filler")).await.expect("spawn");
    wait_status(&fleet, &[filler.agent.id], |s| s == AgentStatus::Running).await;

    let mut delays = Vec::new();
    for round in 0..kills {
        let node = format!("victim-{round}");
        let victim = env.workers_started();
        env.start_worker(&[
            ("AGENTFLEET__WORKER__NODE_ID", node.as_str()),
            ("AGENTFLEET__WORKER__CAPACITY", "4"),
        ]);
        let mut ids = Vec::new();
        for _ in 0..AGENTS_PER_KILL {
            ids.push(
                fleet
                    .spawn(setup::request("hold"))
                    .await
                    .expect("spawn")
                    .agent
                    .id,
            );
        }
        wait_status(&fleet, &ids, |s| s == AgentStatus::Running).await;
        let killed = Instant::now();
        env.signal_worker(victim, Signal::SIGKILL);
        wait_status(&fleet, &ids, AgentStatus::is_final).await;
        delays.push(killed.elapsed().as_secs_f64() * 1000.0);
        env.wait_worker(victim, Duration::from_secs(5));
    }
    env.stop_workers();

    let mut table = Table::new(
        &format!(
            "Reconcile delay: SIGKILL → the dead worker's agents marked ({kills} kills, {AGENTS_PER_KILL} agents each; lease TTL {LEASE_TTL}, orphan grace {ORPHAN_GRACE}, heartbeat {HEARTBEAT}, sweep {SWEEP}), ms"
        ),
        &[
            "p50",
            "p90",
            "max",
            "bound (lease TTL + grace + 3 s margin + sweep)",
        ],
    );
    table.row(vec![
        f(quantile(&delays, 0.5), 0),
        f(quantile(&delays, 0.9), 0),
        f(quantile(&delays, 1.0), 0),
        format!("≤ {GOAL_MS:.0}"),
    ]);
    table.print();
}

/// Polls (every 10 ms) until every agent's status satisfies `check`.
async fn wait_status(
    fleet: &agentfleet::fleet::Fleet,
    ids: &[uuid::Uuid],
    check: impl Fn(AgentStatus) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let agents = fleet.store.agents_by_id(ids).await.expect("agents");
        if agents.len() == ids.len() && agents.iter().all(|a| check(a.status)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "agents never reached the expected status: {:?}",
            agents.iter().map(|a| a.status).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
