//! Dispatch latency: from the enqueue call to the provider process running, through Redis
//! and a separate worker process, on a warm mirror of a ~100-file repository. One spawn at a
//! time on an idle worker (each waits for the previous agent to finish), so every figure is
//! the latency of an idle fleet, not of a backlog. The provider is a bash script whose first
//! act is to write `$EPOCHREALTIME` (no fork) with its working directory.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use agentfleet::domain::AgentStatus;

use crate::Opts;
use crate::common::TestEnv;
use crate::report::{Table, f, quantile};
use crate::setup;

const STAMP_SCRIPT: &str = r#"#!/bin/bash
echo "$PWD $EPOCHREALTIME" >> "$BENCH_STAMPS"
printf '{"type":"system","subtype":"init","session_id":"s-%s","tools":[],"model":"bench"}\n' $$
printf '{"type":"result","subtype":"success","is_error":false,"result":"done","session_id":"s-%s"}\n' $$
"#;

const WARMUP: usize = 5;

pub async fn run(opts: Opts) {
    let spawns = if opts.quick { 60 } else { 500 };
    let mut env = TestEnv::new().await;
    setup::fill_remote(&env.remote, 100);
    let stamps = env.dir.path().join("stamps.log");
    std::fs::write(&stamps, "").unwrap();
    let script = setup::script(&env, "stamp-provider", STAMP_SCRIPT);
    setup::use_provider(&env, &script, &[("BENCH_STAMPS", stamps.to_str().unwrap())]);
    let fleet = setup::fleet(&env).await;
    // The same spawns through a worker with the sandbox off, then one with it on (its
    // figures are the tables below); workers alternate so both see the same machine.
    let mut off = Vec::new();
    let mut on = Vec::new();
    let mut on_launch = Vec::new();
    let mut off_launch = Vec::new();
    let mut agents = Vec::new();
    let mut total = Vec::new();
    let mut enqueue = Vec::new();
    let rounds = 2;
    for round in 0..rounds {
        for sandboxed in [false, true] {
            let mode = if sandboxed { "on" } else { "off" };
            let n = env.workers_started();
            env.start_worker(&[
                ("AGENTFLEET__WORKER__CAPACITY", "4"),
                ("AGENTFLEET__SANDBOX__MODE", mode),
            ]);
            env.wait_workers(1).await;
            let warmup = if round == 0 { WARMUP } else { 0 };
            let measured = one_mode(&fleet, &stamps, warmup, spawns / rounds).await;
            env.signal_worker(n, nix::sys::signal::Signal::SIGTERM);
            env.wait_worker(n, Duration::from_secs(30));
            for (t, e, id) in measured {
                let launch = launch_ms(&fleet, id).await;
                if sandboxed {
                    on.push(t);
                    on_launch.push(launch);
                    total.push(t);
                    enqueue.push(e);
                    agents.push(id);
                } else {
                    off.push(t);
                    off_launch.push(launch);
                }
            }
        }
    }
    // The worker's own account of each step, from the agent.dispatch events.
    let mut steps: HashMap<&str, Vec<f64>> = HashMap::new();
    const STEPS: [(&str, &str); 7] = [
        ("queued_ms", "queue: recorded → delivered to the worker"),
        ("claim_ms", "claim the request (Postgres)"),
        ("git_lock_ms", "wait for the project's git lock"),
        ("fetch_ms", "fetch the mirror from the remote"),
        ("checkout_ms", "create the worktree (checkout)"),
        ("launch_ms", "start the process + record it running"),
        ("", ""),
    ];
    for id in &agents {
        let events = fleet.store.events_after(*id, 0).await.expect("events");
        let dispatch = events
            .iter()
            .find(|e| e.kind == "agent.dispatch")
            .expect("agent.dispatch event");
        for (key, _) in STEPS.iter().filter(|(k, _)| !k.is_empty()) {
            let ms = dispatch.data[key].as_f64().unwrap_or(0.0);
            steps.entry(key).or_default().push(ms);
        }
    }
    env.stop_workers();

    let mut cmp = Table::new(
        &format!(
            "Dispatch with the sandbox off and on ({} spawns each, alternating workers), ms",
            spawns
        ),
        &[
            "sandbox",
            "total p50",
            "total p99",
            "launch p50",
            "launch p99",
        ],
    );
    for (label, t, l) in [("off", &off, &off_launch), ("on", &on, &on_launch)] {
        cmp.row(vec![
            label.to_string(),
            f(quantile(t, 0.5), 1),
            f(quantile(t, 0.99), 1),
            f(quantile(l, 0.5), 1),
            f(quantile(l, 0.99), 1),
        ]);
    }
    cmp.print();
    println!(
        "goal: the sandbox adds ≤ 5 ms to dispatch p50 → +{} ms",
        f(quantile(&on, 0.5) - quantile(&off, 0.5), 1)
    );

    let mut table = Table::new(
        &format!(
            "Dispatch latency, enqueue → provider exec'd ({spawns} spawns, 1 worker, ~100-file repo, warm mirror), ms"
        ),
        &["step", "p50", "p99", "max"],
    );
    let mut row = |label: &str, values: &[f64]| {
        table.row(vec![
            label.to_string(),
            f(quantile(values, 0.5), 1),
            f(quantile(values, 0.99), 1),
            f(quantile(values, 1.0), 1),
        ]);
    };
    row("record + enqueue (caller side)", &enqueue);
    for (key, label) in STEPS.iter().filter(|(k, _)| !k.is_empty()) {
        row(label, &steps[key]);
    }
    row("total: enqueue → exec'd", &total);
    table.print();

    // Each agent keeps its worktree (it may be resumed), so later spawns add a worktree to
    // a mirror that already has many: the steps that grow with that show here.
    let mut growth = Table::new(
        "Dispatch latency by worktrees already on the mirror, p50 ms",
        &["spawns", "mirror fetch", "worktree checkout", "total"],
    );
    let chunk = spawns.div_ceil(5);
    for start in (0..spawns).step_by(chunk) {
        let end = (start + chunk).min(spawns);
        let p50 = |v: &[f64]| f(quantile(&v[start..end], 0.5), 1);
        growth.row(vec![
            format!("{}–{}", start + WARMUP + 1, end + WARMUP),
            p50(&steps["fetch_ms"]),
            p50(&steps["checkout_ms"]),
            p50(&total),
        ]);
    }
    growth.print();
    println!(
        "goal: p50 ≤ 20 ms, p99 ≤ 100 ms → p50 {} ms, p99 {} ms",
        f(quantile(&total, 0.5), 1),
        f(quantile(&total, 0.99), 1)
    );
}

/// Runs `warmup + spawns` spawns one at a time on an idle worker; (total ms, enqueue ms,
/// agent) of the measured ones.
async fn one_mode(
    fleet: &agentfleet::fleet::Fleet,
    stamps: &std::path::Path,
    warmup: usize,
    spawns: usize,
) -> Vec<(f64, f64, uuid::Uuid)> {
    let mut out = Vec::new();
    for i in 0..warmup + spawns {
        let t0 = setup::now_epoch();
        let recorded = fleet
            .spawn(setup::request("dispatch"))
            .await
            .expect("spawn");
        let t1 = setup::now_epoch();
        let name = recorded.agent.name.clone();
        let exec = wait_stamp(stamps, &name).await;
        // The next spawn finds an idle worker: this agent has finished and pushed.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let agent = fleet.store.agent(&name).await.expect("agent");
            if agent.status.is_final() {
                assert_eq!(
                    agent.status,
                    AgentStatus::Completed,
                    "agent {name}: {:?}",
                    agent.error
                );
                break;
            }
            assert!(Instant::now() < deadline, "agent {name} did not finish");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if i >= warmup {
            out.push(((exec - t0) * 1000.0, (t1 - t0) * 1000.0, recorded.agent.id));
        }
    }
    out
}

async fn launch_ms(fleet: &agentfleet::fleet::Fleet, id: uuid::Uuid) -> f64 {
    let events = fleet.store.events_after(id, 0).await.expect("events");
    events
        .iter()
        .find(|e| e.kind == "agent.dispatch")
        .and_then(|e| e.data["launch_ms"].as_f64())
        .unwrap_or(0.0)
}

/// Waits for the script's line from the agent's worktree; its `$EPOCHREALTIME`.
async fn wait_stamp(stamps: &std::path::Path, name: &str) -> f64 {
    let needle = format!("/agents/{name}/workdir ");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(stamps).unwrap_or_default();
        if let Some(at) = text
            .lines()
            .rev()
            .find_map(|l| l.split_once(&needle).map(|(_, t)| t.trim().to_string()))
        {
            return at.parse().expect("stamp");
        }
        assert!(Instant::now() < deadline, "agent {name} never started");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
