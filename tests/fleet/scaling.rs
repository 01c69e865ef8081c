//! What ops do when they scale: 1 → 3 → 1 worker processes against one queue. The same
//! backlog drains faster with 3 workers than with 1, and scaling back down (SIGTERM to two
//! workers while their agents run) loses nothing: every agent completes, each ran once.
//! The figures are printed (`--no-capture`).

use std::time::{Duration, Instant};

use agentfleet::domain::{Agent, AgentStatus};
use nix::sys::signal::Signal;

use crate::common::env::{TestEnv, assert_status};

const CAPACITY: &str = "2";
const BACKLOG: usize = 6;

async fn fleet_env() -> TestEnv {
    let mut env = TestEnv::new().await;
    for (k, v) in [
        ("AGENTFLEET__WORKER__CAPACITY", CAPACITY),
        ("AGENTFLEET__WORKER__HEARTBEAT_INTERVAL", "200ms"),
        ("AGENTFLEET__WORKER__LEASE_TTL", "2s"),
        ("AGENTFLEET__WORKER__SWEEP_INTERVAL", "500ms"),
        ("AGENTFLEET__WORKER__HANDOFF_GRACE", "2s"),
    ] {
        env.set_env(k, v);
    }
    env
}

/// Enqueues `n` agents that each hold for `hold` seconds.
fn backlog(env: &TestEnv, label: &str, n: usize, hold: f64) -> Vec<Agent> {
    (0..n)
        .map(|i| env.spawn(&[], &format!("{label} job {i}\n#hold {hold}")))
        .collect()
}

async fn drain(env: &TestEnv, agents: &[Agent]) -> Vec<Agent> {
    let mut done = Vec::new();
    for a in agents {
        done.push(env.wait_final(a.id, Duration::from_secs(120)).await);
    }
    done
}

#[tokio::test(flavor = "multi_thread")]
async fn backlog_drains_faster_with_three_workers_and_scale_down_loses_nothing() {
    let mut env = fleet_env().await;

    // 1 worker.
    env.start_worker(&[]);
    env.wait_workers(1).await;
    let started = Instant::now();
    let first = backlog(&env, "one", BACKLOG, 1.5);
    println!("queue with 1 worker:\n{}", env.cli_ok(&["queue"]));
    for a in drain(&env, &first).await {
        assert_status(&a, AgentStatus::Completed);
    }
    let with_one = started.elapsed();

    // 1 → 3 workers.
    env.start_worker(&[]);
    env.start_worker(&[]);
    env.wait_workers(3).await;
    let started = Instant::now();
    let second = backlog(&env, "three", BACKLOG, 1.5);
    for a in drain(&env, &second).await {
        assert_status(&a, AgentStatus::Completed);
    }
    let with_three = started.elapsed();
    println!(
        "backlog of {BACKLOG} agents (1.5 s each, capacity {CAPACITY} per worker): \
         1 worker {with_one:.1?}, 3 workers {with_three:.1?} ({:.2}x faster)",
        with_one.as_secs_f64() / with_three.as_secs_f64()
    );
    assert!(
        with_three.as_secs_f64() < with_one.as_secs_f64() * 0.75,
        "3 workers ({with_three:?}) should drain well before 1 ({with_one:?})"
    );

    // 3 → 1 while agents run and more wait: nothing is lost.
    let third = backlog(&env, "down", BACKLOG + 2, 6.0);
    let store = env.store().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let agents = store
            .list_agents(&agentfleet::store::AgentQuery::with_dismissed())
            .await
            .unwrap()
            .items;
        let running = agents
            .iter()
            .filter(|a| a.status == AgentStatus::Running)
            .count();
        // Enough in flight that the drained workers leave some behind (a loaded machine
        // spawns slowly, so not necessarily every slot at once).
        if running >= BACKLOG / 2 {
            break;
        }
        assert!(Instant::now() < deadline, "the workers never filled up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let scaled_down = Instant::now();
    env.signal_worker(1, Signal::SIGTERM);
    env.signal_worker(2, Signal::SIGTERM);
    assert_eq!(env.wait_worker(1, Duration::from_secs(40)), Some(0));
    assert_eq!(env.wait_worker(2, Duration::from_secs(40)), Some(0));
    let done = drain(&env, &third).await;
    for a in &done {
        assert_status(a, AgentStatus::Completed);
    }
    let mut adopted = 0;
    for a in &done {
        let events = store.events_after(a.id, 0).await.unwrap();
        adopted += usize::from(events.iter().any(|e| e.kind == "adopted"));
    }
    println!(
        "scale-down 3 -> 1 with {} agents in flight: all completed {:.1?} after SIGTERM, \
         {adopted} adopted by the remaining worker",
        third.len(),
        scaled_down.elapsed()
    );
    assert!(
        adopted >= 1,
        "the drained workers' running agents were adopted"
    );
    let total = first.len() + second.len() + third.len();
    assert_eq!(env.runs(), total, "every agent ran exactly once");
    println!("queue after:\n{}", env.cli_ok(&["queue"]));
    let stats = store.queue_stats().await.unwrap();
    assert_eq!(stats.depth, 0);
    assert_eq!(
        stats.agents_by_status.get("completed").copied(),
        Some(total as i64)
    );
}
