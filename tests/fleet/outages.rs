//! Outages of the services the fleet depends on: a Redis and a Postgres of the test's own
//! (on free ports, so parallel tests are not disturbed) are stopped and started again while
//! a worker runs. The worker survives, reconnects, and no request is lost.

use std::time::{Duration, Instant};

use agentfleet::domain::AgentStatus;

use crate::common::env::{TestEnv, assert_status};
use crate::common::services::{PrivatePostgres, PrivateRedis, free_port};

fn fast(env: &mut TestEnv) {
    for (k, v) in [
        ("AGENTFLEET__WORKER__HEARTBEAT_INTERVAL", "200ms"),
        ("AGENTFLEET__WORKER__LEASE_TTL", "3s"),
        ("AGENTFLEET__WORKER__ORPHAN_GRACE", "20s"),
        ("AGENTFLEET__WORKER__SWEEP_INTERVAL", "500ms"),
        ("AGENTFLEET__QUEUE__REDISPATCH_AFTER", "1s"),
    ] {
        env.set_env(k, v);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn worker_survives_a_redis_restart_and_loses_no_request() {
    let port = free_port();
    let mut redis = PrivateRedis::start(port);
    let mut env =
        TestEnv::with_services("127.0.0.1:5432", &format!("redis://127.0.0.1:{port}")).await;
    fast(&mut env);
    // One slot: the first agent runs through the outage, the others wait in the queue that
    // Redis is about to lose.
    env.start_worker(&[("AGENTFLEET__WORKER__CAPACITY", "1")]);
    let running = env.spawn(&[], "through the outage\n#hold 3");
    env.wait_agent(running.id, Duration::from_secs(20), "ran", |a| {
        a.status == AgentStatus::Running
    })
    .await;
    let queued: Vec<_> = (0..2)
        .map(|i| env.spawn(&[], &format!("queued {i}")))
        .collect();

    // Redis goes away and comes back empty (it keeps nothing on disk).
    redis.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _redis = PrivateRedis::start(port);
    for a in std::iter::once(&running).chain(&queued) {
        let a = env.wait_final(a.id, Duration::from_secs(40)).await;
        assert_status(&a, AgentStatus::Completed);
    }
    let after = env.spawn(&[], "after the outage");
    assert_status(
        &env.wait_final(after.id, Duration::from_secs(30)).await,
        AgentStatus::Completed,
    );
    assert_eq!(env.runs(), 4, "every request ran exactly once");
    env.stop_workers();
    assert!(!env.worker_log(0).contains("panicked"));
}

#[tokio::test(flavor = "multi_thread")]
async fn worker_survives_a_postgres_restart_and_finishes_its_agent() {
    let port = free_port();
    let pg = PrivatePostgres::init(port);
    let mut env = TestEnv::with_services(
        &format!("127.0.0.1:{port}"),
        crate::common::databases::REDIS_URL,
    )
    .await;
    fast(&mut env);
    env.start_worker(&[]);
    let agent = env.spawn(&[], "outlive the outage\n#sleep 0.2\n#ticks 20");
    env.wait_agent(agent.id, Duration::from_secs(20), "ran", |a| {
        a.status == AgentStatus::Running
    })
    .await;
    pg.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    pg.start();
    let done = env.wait_final(agent.id, Duration::from_secs(40)).await;
    assert_status(&done, AgentStatus::Completed);
    let events = env.store().await.events_after(agent.id, 0).await.unwrap();
    let ticks = events
        .iter()
        .filter(|e| {
            e.data["text"]
                .as_str()
                .is_some_and(|t| t.starts_with("tick"))
        })
        .count();
    assert_eq!(ticks, 20, "no output lost across the outage");
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as i64 + 1);
    }
    // The worker is still the same process and still takes work.
    let next = env.spawn(&[], "after the outage");
    assert_status(
        &env.wait_final(next.id, Duration::from_secs(30)).await,
        AgentStatus::Completed,
    );
    env.stop_workers();
}

/// Stands for a managed Postgres failing over: the store is away for three leases while 20
/// agents run on two nodes, then restarts once more. Nobody is declared dead, no agent is
/// stopped, every agent completes exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_outage_of_three_leases_costs_no_agent() {
    let port = free_port();
    let pg = PrivatePostgres::init(port);
    let mut env = TestEnv::with_services(
        &format!("127.0.0.1:{port}"),
        crate::common::databases::REDIS_URL,
    )
    .await;
    fast(&mut env);
    let lease = Duration::from_secs(3);
    for node in ["node-a", "node-b"] {
        env.start_worker(&[
            ("AGENTFLEET__WORKER__NODE_ID", node),
            ("AGENTFLEET__WORKER__CAPACITY", "10"),
        ]);
    }
    let agents: Vec<_> = (0..20)
        .map(|i| env.spawn(&[], &format!("agent {i}\n#sleep 0.25\n#ticks 100")))
        .collect();
    for a in &agents {
        env.wait_agent(a.id, Duration::from_secs(90), "ran", |a| {
            a.status == AgentStatus::Running
        })
        .await;
    }
    pg.stop();
    let outage = Instant::now();
    tokio::time::sleep(lease * 3).await;
    pg.start();
    println!("store away for {:?}", outage.elapsed());
    // A plain restart a little later, while the agents still run.
    tokio::time::sleep(Duration::from_secs(3)).await;
    pg.stop();
    pg.start();
    for a in &agents {
        let done = env.wait_final(a.id, Duration::from_secs(120)).await;
        assert_status(&done, AgentStatus::Completed);
    }
    assert_eq!(env.runs(), 20, "every agent ran exactly once");
    for n in 0..2 {
        let log = env.worker_log(n);
        assert!(
            !log.contains("lease lost"),
            "worker {n} lost its lease:\n{log}"
        );
        assert!(
            !log.contains("reconciled dead worker"),
            "worker {n} judged a peer:\n{log}"
        );
    }
    env.stop_workers();
}

/// A store outage longer than `lease_ttl + orphan_grace`: the worker keeps its agent past
/// the lease, stops it at `worker.partition_timeout`, and the fleet reconciles it once the
/// store is back.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_cut_off_past_its_partition_timeout_stops_its_agent() {
    let port = free_port();
    let pg = PrivatePostgres::init(port);
    let mut env = TestEnv::with_services(
        &format!("127.0.0.1:{port}"),
        crate::common::databases::REDIS_URL,
    )
    .await;
    fast(&mut env);
    // Lease 3 s + grace 3 s: the worker holds on for 6 s without the store.
    env.set_env("AGENTFLEET__WORKER__ORPHAN_GRACE", "3s");
    env.start_worker(&[("AGENTFLEET__WORKER__NODE_ID", "node-a")]);
    let agent = env.spawn(&[], "cut off\n#hold 120");
    let running = env
        .wait_agent(agent.id, Duration::from_secs(30), "ran", |a| {
            a.status == AgentStatus::Running
        })
        .await;
    let (pid, start) = (running.pid.unwrap(), running.pid_start_time.unwrap());
    pg.stop();
    let cut_off = Instant::now();
    while agentfleet::process::is_same_process_alive(pid, start) {
        assert!(
            cut_off.elapsed() < Duration::from_secs(30),
            "the agent ran on"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stopped = cut_off.elapsed();
    println!("store away: the agent was stopped after {stopped:?}");
    assert!(
        stopped > Duration::from_secs(4),
        "stopped at the lease already: {stopped:?}"
    );
    assert!(stopped < Duration::from_secs(10), "took {stopped:?}");
    pg.start();
    env.start_worker(&[("AGENTFLEET__WORKER__NODE_ID", "node-b")]);
    let done = env.wait_final(agent.id, Duration::from_secs(60)).await;
    assert_status(&done, AgentStatus::Crashed);
    // The worker that let go exits with an error once its shutdown is through.
    assert_ne!(env.wait_worker(0, Duration::from_secs(90)), Some(0));
}
