//! Agents per worker: one worker process supervising N running agents that each print one
//! stream-json line every 100 ms (a bash loop with no fork per line), for N = 100, 500, 1000.
//! Reported: the worker's CPU (its own utime + stime over the window, not its children's),
//! its peak RSS (VmHWM), and the event lag from the line being written (`$EPOCHREALTIME`
//! in the line) to the event arriving on Redis pub/sub, which the worker publishes after
//! storing it in Postgres. All steps run with the sandbox off first, then those up to 500
//! with it on (each with a fresh worker and store), so the sandbox's cost shows in the same
//! run.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentfleet::domain::AgentStatus;
use futures::StreamExt;

use crate::Opts;
use crate::common::{REDIS_URL, TestEnv};
use crate::report::{self, Table, f, quantile};
use crate::setup;

const TICKER: &str = r#"#!/bin/bash
# One claude stream-json line every 100 ms, stamped with the time it is written.
exec {pause}<> <(:)
printf '{"type":"system","subtype":"init","session_id":"s-%s","tools":[],"model":"bench"}\n' $$
for ((i = 0; i < 36000; i++)); do
  printf '{"type":"assistant","message":{"id":"m%s","role":"assistant","content":[{"type":"text","text":"t=%s"}]},"session_id":"s-%s"}\n' $i "$EPOCHREALTIME" $$
  read -t 0.1 -u $pause
done
printf '{"type":"result","subtype":"success","is_error":false,"result":"done","session_id":"s-%s"}\n' $$
"#;

const SETTLE: Duration = Duration::from_secs(3);

pub async fn run(opts: Opts) {
    let (default_steps, window): (&[usize], Duration) = if opts.quick {
        (&[20, 100], Duration::from_secs(5))
    } else {
        (&[100, 500, 1000], Duration::from_secs(10))
    };
    // BENCH_AGENTS=100,500 chooses the steps (e.g. to leave out 1,000 on a small machine).
    let chosen: Vec<usize> = std::env::var("BENCH_AGENTS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_default();
    let steps: &[usize] = if chosen.is_empty() {
        default_steps
    } else {
        &chosen
    };
    let compared = &steps[..steps.len().min(2)];
    let mut table = Table::new(
        "Agents per worker: one worker, N agents each printing a line every 100 ms",
        &[
            "sandbox",
            "agents",
            "worker CPU (cores)",
            "machine busy (of all cores)",
            "peak RSS (MB)",
            "events/s",
            "lag p50 (ms)",
            "lag p99 (ms)",
            "ramp-up (s)",
        ],
    );
    // 1,000 sandboxed agents do not start within the time limit on 2 cores (see the README):
    // the sandbox is compared up to 500.
    let off = one_mode(steps, window, false).await;
    let on = one_mode(compared, window, true).await;
    for (mode, rows) in [("off", &off), ("on", &on)] {
        for (_, row) in rows {
            let mut row = row.clone();
            row.insert(0, mode.to_string());
            table.row(row);
        }
    }
    table.print();
    for ((n, off_cpu), (_, on_cpu)) in off
        .iter()
        .map(|(c, r)| (r[0].clone(), *c))
        .zip(on.iter().map(|(c, r)| (r[0].clone(), *c)))
    {
        println!(
            "sandbox at {n} agents: worker CPU {} → {} cores ({:+.0} %); goal ≤ +10 % at 500",
            f(off_cpu, 2),
            f(on_cpu, 2),
            (on_cpu / off_cpu.max(1e-9) - 1.0) * 100.0
        );
    }
    println!("goal: 1,000 agents with < 1 core and < 200 MB RSS, lag p99 ≤ 50 ms");
}

/// Runs `steps` on a fresh worker and store with the sandbox on or off; per step the
/// worker's CPU (cores) and the table row (from "agents" on).
async fn one_mode(steps: &[usize], window: Duration, sandboxed: bool) -> Vec<(f64, Vec<String>)> {
    let max = *steps.last().unwrap();
    let mut env = TestEnv::new().await;
    setup::fill_remote(&env.remote, 100);
    let script = setup::script(&env, "ticker", TICKER);
    setup::use_provider(&env, &script, &[]);
    let capacity = (max + 10).to_string();
    env.start_worker(&[
        ("AGENTFLEET__WORKER__CAPACITY", capacity.as_str()),
        (
            "AGENTFLEET__SANDBOX__MODE",
            if sandboxed { "on" } else { "off" },
        ),
        ("AGENTFLEET__WORKER__ON_SHUTDOWN", "stop"),
        ("RUST_LOG", "warn"),
    ]);
    env.wait_workers(1).await;
    let worker = env.worker_pid(0);
    let fleet = setup::fleet(&env).await;

    // Every agent's live events, timed on arrival.
    let lags = Arc::new(Mutex::new(Vec::<f64>::new()));
    let measuring = Arc::new(AtomicBool::new(false));
    let listener = {
        let client = redis::Client::open(REDIS_URL).unwrap();
        let mut pubsub = client.get_async_pubsub().await.expect("pubsub");
        pubsub
            .psubscribe(format!("{}:events:*", env.prefix))
            .await
            .expect("psubscribe");
        let (lags, measuring) = (lags.clone(), measuring.clone());
        tokio::spawn(async move {
            let mut messages = pubsub.into_on_message();
            while let Some(msg) = messages.next().await {
                let arrived = setup::now_epoch();
                if !measuring.load(Ordering::Relaxed) {
                    continue;
                }
                let payload = String::from_utf8_lossy(msg.get_payload_bytes());
                if let Some(written) = stamp(&payload) {
                    lags.lock().unwrap().push((arrived - written) * 1000.0);
                }
            }
        })
    };

    let mut rows = Vec::new();
    let mut spawned = 0;
    for &n in steps {
        let ramp = Instant::now();
        while spawned < n {
            fleet.spawn(setup::request("ticker")).await.expect("spawn");
            spawned += 1;
        }
        wait_running(&fleet, n).await;
        let ramp = ramp.elapsed();
        tokio::time::sleep(SETTLE).await;
        lags.lock().unwrap().clear();
        let cpu0 = cpu_ticks(worker);
        let machine0 = report::machine_jiffies();
        let t = Instant::now();
        measuring.store(true, Ordering::Relaxed);
        tokio::time::sleep(window).await;
        measuring.store(false, Ordering::Relaxed);
        let seconds = t.elapsed().as_secs_f64();
        let cores = (cpu_ticks(worker) - cpu0) as f64 / ticks_per_second() / seconds;
        let machine1 = report::machine_jiffies();
        let busy = (machine1.0 - machine0.0) as f64 / (machine1.1 - machine0.1).max(1) as f64;
        let lags = std::mem::take(&mut *lags.lock().unwrap());
        rows.push((
            cores,
            vec![
                n.to_string(),
                f(cores, 2),
                format!("{:.0} %", busy * 100.0),
                f(peak_rss_mb(worker), 0),
                f(lags.len() as f64 / seconds, 0),
                f(quantile(&lags, 0.5), 1),
                f(quantile(&lags, 0.99), 1),
                f(ramp.as_secs_f64(), 1),
            ],
        ));
        println!(
            "{n} agents measured (sandbox {})",
            if sandboxed { "on" } else { "off" }
        );
    }
    listener.abort();
    env.stop_workers();
    rows
}

/// The `t=` stamp in a published event, if it carries one.
fn stamp(payload: &str) -> Option<f64> {
    let at = payload.find("t=")? + 2;
    let digits: String = payload[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    digits.parse().ok()
}

async fn wait_running(fleet: &agentfleet::fleet::Fleet, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let stats = fleet.store.queue_stats().await.expect("stats");
        let running = stats
            .agents_by_status
            .get(AgentStatus::Running.as_str())
            .copied()
            .unwrap_or(0);
        if running as usize >= n {
            return;
        }
        let failed: i64 = [AgentStatus::Failed, AgentStatus::Crashed]
            .iter()
            .filter_map(|s| stats.agents_by_status.get(s.as_str()))
            .sum();
        assert_eq!(failed, 0, "agents failed: {:?}", stats.agents_by_status);
        assert!(
            Instant::now() < deadline,
            "only {running} of {n} agents running"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The process's own user + system CPU time, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("worker stat");
    // Fields after the command name (which may hold spaces), 1-based 14 and 15 overall.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// /proc reports CPU times in USER_HZ, which Linux fixes at 100 for user space.
fn ticks_per_second() -> f64 {
    100.0
}

fn peak_rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}
