//! The soak test: 3 workers, one SIGKILLed at random every ~1 s and started again on its
//! node, while 200+ agents are spawned. Ignored by default; run it with
//! `cargo nextest run --test fleet --run-ignored ignored-only --no-capture soak::`.
//! Checks that every request completes, no agent ever had two live processes
//! at once, no event sequence has gaps or duplicates, and nothing is left behind; prints
//! the figures.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use agentfleet::domain::AgentStatus;
use nix::sys::signal::Signal;

use crate::common::env::TestEnv;

const WORKERS: usize = 3;
const SPAWNS: usize = 200;
const KILLS: usize = 50;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "soak: minutes long; run on demand"]
async fn soak_random_kills_lose_nothing() {
    let mut env = TestEnv::new().await;
    for (k, v) in [
        ("AGENTFLEET__WORKER__HEARTBEAT_INTERVAL", "200ms"),
        ("AGENTFLEET__WORKER__LEASE_TTL", "2s"),
        ("AGENTFLEET__WORKER__SWEEP_INTERVAL", "500ms"),
        ("AGENTFLEET__QUEUE__REDISPATCH_AFTER", "2s"),
        ("AGENTFLEET__WORKER__CAPACITY", "4"),
        ("RUST_LOG", "warn"),
    ] {
        env.set_env(k, v);
    }
    let node = |n: usize| format!("soak-node-{n}");
    // slot n runs worker process index current[n], on workspace root n and node n.
    let mut current: Vec<usize> = Vec::new();
    for n in 0..WORKERS {
        env.start_worker_on_root(n, &[("AGENTFLEET__WORKER__NODE_ID", &node(n))]);
        current.push(n);
    }
    env.wait_workers(WORKERS).await;
    let store = env.store().await;
    let started = Instant::now();

    // Spawn from a second process (the CLI), steadily, while the killer runs.
    let spawner = {
        let envs = env.env();
        let dir = env.dir.path().to_path_buf();
        std::thread::spawn(move || {
            let mut ids = Vec::new();
            for i in 0..SPAWNS {
                let hold = ["0.3", "0.8", "1.5"][i % 3];
                let out = std::process::Command::new(crate::common::env::bin())
                    .args([
                        "spawn",
                        "--project",
                        "demo",
                        "--json",
                        &format!("soak {i}\n#sleep 0.05\n#ticks 5\n#hold {hold}"),
                    ])
                    .envs(envs.clone())
                    .current_dir(&dir)
                    .output()
                    .expect("spawn");
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let agent: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                ids.push(agent["id"].as_str().unwrap().to_string());
                std::thread::sleep(Duration::from_millis(150));
            }
            ids
        })
    };

    let mut rng_state = 0x9e3779b97f4a7c15u64;
    let mut next = || {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        rng_state
    };
    let mut detection: Vec<Duration> = Vec::new();
    for _ in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(800 + next() % 700)).await;
        let slot = (next() % WORKERS as u64) as usize;
        let victim = current[slot];
        let victim_id = {
            let workers = store.list_workers().await.unwrap();
            let pid = env.worker_pid(victim) as i32;
            workers.into_iter().find(|w| w.pid == pid).map(|w| w.id)
        };
        let killed_at = Instant::now();
        env.signal_worker(victim, Signal::SIGKILL);
        env.wait_worker(victim, Duration::from_secs(10));
        current[slot] = env.workers_started();
        env.start_worker_on_root(slot, &[("AGENTFLEET__WORKER__NODE_ID", &node(slot))]);
        // Detected when the dead worker's row is marked dead (its agents adopted).
        if let Some(id) = victim_id {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let workers = store.list_workers().await.unwrap();
                if workers.iter().any(|w| w.id == id && w.status == "dead") {
                    detection.push(killed_at.elapsed());
                    break;
                }
                assert!(Instant::now() < deadline, "worker {id} never reconciled");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    let ids = spawner.join().expect("spawner");

    // Every request reaches a final state.
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut statuses: HashMap<AgentStatus, usize> = HashMap::new();
    let mut why: HashMap<String, usize> = HashMap::new();
    for id in &ids {
        loop {
            let agent = store.agent(id).await.unwrap();
            if agent.status.is_final() {
                *statuses.entry(agent.status).or_default() += 1;
                if agent.status != AgentStatus::Completed {
                    let reason = agent.error.unwrap_or_default();
                    *why.entry(reason.chars().take(400).collect()).or_default() += 1;
                }
                break;
            }
            assert!(
                Instant::now() < deadline,
                "agent {} stuck in {}",
                agent.name,
                agent.status
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let elapsed = started.elapsed();
    // No gaps or duplicates in any event sequence.
    for id in &ids {
        let agent = store.agent(id).await.unwrap();
        let events = store.events_after(agent.id, 0).await.unwrap();
        for (i, e) in events.iter().enumerate() {
            assert_eq!(
                e.seq,
                i as i64 + 1,
                "agent {}: gap or duplicate",
                agent.name
            );
        }
    }
    // No agent ever had two live processes at once.
    let mut runs: HashMap<String, Vec<(f64, f64)>> = HashMap::new();
    let log = env.run_log();
    for start in log.iter().filter(|r| r.start) {
        let end = log
            .iter()
            .find(|r| !r.start && r.pid == start.pid && r.cwd == start.cwd)
            .map(|r| r.at)
            .unwrap_or(f64::MAX);
        runs.entry(start.cwd.clone())
            .or_default()
            .push((start.at, end));
    }
    let mut reruns = 0;
    for (cwd, mut spans) in runs {
        spans.sort_by(|a, b| a.0.total_cmp(&b.0));
        reruns += spans.len() - 1;
        for w in spans.windows(2) {
            assert!(
                w[0].1 <= w[1].0,
                "{cwd}: two live processes at once: {spans:?}"
            );
        }
    }
    env.stop_workers();
    // No orphaned provider process remains.
    let leftovers = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("cmdline")).ok())
        .filter(|c| c.contains("fake-claude") && c.contains(&env.dir.path().display().to_string()))
        .count();
    detection.sort();
    println!(
        "soak: {} spawns, {} kills in {elapsed:?}; final statuses {statuses:?} {why:?}; {reruns} re-runs; \
         detection (kill -> reconciled) max {:?}, p50 {:?}, p99 {:?}; orphaned processes {leftovers}",
        ids.len(),
        detection.len(),
        detection.last().copied().unwrap_or_default(),
        percentile(&detection, 0.5),
        percentile(&detection, 0.99),
    );
    assert!(ids.len() >= SPAWNS && detection.len() >= KILLS);
    // The stand-in always completes: any other end is a lost run.
    assert!(why.is_empty(), "agents that did not complete: {why:?}");
    assert_eq!(leftovers, 0);
}
