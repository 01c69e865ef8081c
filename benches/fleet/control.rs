//! Control latency through the front door (the `Fleet` the API handlers call) and Redis to a
//! separate worker process: a stop request → SIGTERM delivered to the agent's process group
//! (the provider script traps it and writes `$EPOCHREALTIME`), and a resume request → the
//! provider process started again (its first act writes `$EPOCHREALTIME`). One request at a
//! time on an otherwise idle worker; the worker's control fallback poll is a minute, so every
//! request is carried by its push.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use agentfleet::domain::AgentStatus;
use agentfleet::fleet::Fleet;
use uuid::Uuid;

use crate::Opts;
use crate::common::TestEnv;
use crate::report::{Table, f, quantile};
use crate::setup;

const PROVIDER: &str = r#"#!/bin/bash
if [[ " $* " == *" --resume "* ]]; then
  echo "$PWD resumed $EPOCHREALTIME" >> "$BENCH_STAMPS"
  printf '{"type":"system","subtype":"init","session_id":"s-%s","tools":[],"model":"bench"}\n' $$
  printf '{"type":"result","subtype":"success","is_error":false,"result":"done","session_id":"s-%s"}\n' $$
  exit 0
fi
printf '{"type":"system","subtype":"init","session_id":"s-%s","tools":[],"model":"bench"}\n' $$
prompt=$(cat)
if [[ "$prompt" == ask* ]]; then
  mkdir -p .agentfleet/output
  printf '{"status":"questions","questions":[{"id":"q","question":"Which?"}]}' > .agentfleet/output/signal.json
  printf '{"type":"result","subtype":"success","is_error":false,"result":"asking","session_id":"s-%s"}\n' $$
  exit 0
fi
trap 'echo "$PWD term $EPOCHREALTIME" >> "$BENCH_STAMPS"; kill $! 2>/dev/null; exit 143' TERM
sleep 600 &
echo "$PWD ready $EPOCHREALTIME" >> "$BENCH_STAMPS"
wait
"#;

pub async fn run(opts: Opts) {
    let (stops, resumes) = if opts.quick { (20, 10) } else { (100, 30) };
    let mut env = TestEnv::new().await;
    let stamps = env.dir.path().join("stamps.log");
    std::fs::write(&stamps, "").unwrap();
    let script = setup::script(&env, "control-provider", PROVIDER);
    setup::use_provider(&env, &script, &[("BENCH_STAMPS", stamps.to_str().unwrap())]);
    env.set_env("RUST_LOG", "warn");
    env.start_worker(&[
        ("AGENTFLEET__WORKER__CAPACITY", "4"),
        ("AGENTFLEET__WORKER__CONTROL_POLL_INTERVAL", "60s"),
    ]);
    env.wait_workers(1).await;
    let fleet = setup::fleet(&env).await;

    let mut stop_ms = Vec::new();
    for i in 0..stops + 2 {
        let id = spawn_until(&fleet, "hold", |s| s == AgentStatus::Running).await;
        let dir = name(&fleet, id).await;
        // The script traps SIGTERM from here on.
        stamp(&stamps, &dir, "ready").await;
        let asked = setup::now_epoch();
        fleet.stop(&id.to_string(), false).await.expect("stop");
        let term = stamp(&stamps, &dir, "term").await;
        // The first two warm the connections up.
        if i >= 2 {
            stop_ms.push((term - asked) * 1000.0);
        }
        wait_status(&fleet, id, AgentStatus::is_final).await;
    }

    let mut resume_ms = Vec::new();
    for i in 0..resumes + 2 {
        let id = spawn_until(&fleet, "ask", |s| s == AgentStatus::WaitingForInput).await;
        let dir = name(&fleet, id).await;
        let answers = BTreeMap::from([("q".to_string(), "this one".to_string())]);
        let asked = setup::now_epoch();
        fleet
            .resume(&id.to_string(), answers)
            .await
            .expect("resume");
        let started = stamp(&stamps, &dir, "resumed").await;
        if i >= 2 {
            resume_ms.push((started - asked) * 1000.0);
        }
        wait_status(&fleet, id, |s| s == AgentStatus::Completed).await;
    }
    env.stop_workers();

    let mut table = Table::new(
        "Control latency through the front door and Redis to a worker process (fallback poll 60 s), ms",
        &["request", "n", "p50", "p90", "p99", "max", "goal"],
    );
    for (what, values, goal) in [
        (
            "stop → SIGTERM in the agent",
            &stop_ms,
            "p50 ≤ 20, p99 ≤ 100",
        ),
        ("resume → provider started", &resume_ms, "p50 ≤ 30"),
    ] {
        table.row(vec![
            what.into(),
            values.len().to_string(),
            f(quantile(values, 0.5), 1),
            f(quantile(values, 0.9), 1),
            f(quantile(values, 0.99), 1),
            f(quantile(values, 1.0), 1),
            goal.into(),
        ]);
    }
    table.print();
}

async fn spawn_until(fleet: &Fleet, prompt: &str, check: impl Fn(AgentStatus) -> bool) -> Uuid {
    let id = fleet
        .spawn(setup::request(prompt))
        .await
        .expect("spawn")
        .agent
        .id;
    wait_status(fleet, id, check).await;
    id
}

async fn name(fleet: &Fleet, id: Uuid) -> String {
    fleet.store.agent_by_id(id).await.expect("agent").name
}

/// Polls (every 2 ms) until the agent's status satisfies `check`.
async fn wait_status(fleet: &Fleet, id: Uuid, check: impl Fn(AgentStatus) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let agent = fleet.store.agent_by_id(id).await.expect("agent");
        if check(agent.status) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "agent {id} stayed {}",
            agent.status
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The time the provider of agent `name` wrote `what`.
async fn stamp(stamps: &Path, name: &str, what: &str) -> f64 {
    let needle = format!("/agents/{name}/workdir {what} ");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(stamps).unwrap_or_default();
        let found = text.lines().rev().find_map(|l| {
            l.split_once(&needle)
                .and_then(|(_, t)| t.trim().parse().ok())
        });
        if let Some(t) = found {
            return t;
        }
        assert!(Instant::now() < deadline, "no '{what}' stamp from {name}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
