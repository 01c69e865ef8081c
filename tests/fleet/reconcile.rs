//! Fault injection: workers paused, killed, restarted and drained; agents stopped, deleted,
//! hung; the queue's data lost. Real Postgres, Redis, worker processes and scripted agents.

use std::time::{Duration, Instant};

use agentfleet::domain::AgentStatus;
use agentfleet::process;
use nix::sys::signal::Signal;
use sqlx::Connection;

use crate::common::env::{TestEnv, assert_status};

/// Fast leases so faults show within seconds.
async fn fast_env() -> TestEnv {
    let mut env = TestEnv::new().await;
    for (k, v) in [
        ("AGENTFLEET__WORKER__HEARTBEAT_INTERVAL", "200ms"),
        ("AGENTFLEET__WORKER__LEASE_TTL", "2s"),
        ("AGENTFLEET__WORKER__ORPHAN_GRACE", "3s"),
        ("AGENTFLEET__WORKER__SWEEP_INTERVAL", "500ms"),
        ("AGENTFLEET__WORKER__STOP_GRACE", "1s"),
        ("AGENTFLEET__QUEUE__REDISPATCH_AFTER", "1s"),
    ] {
        env.set_env(k, v);
    }
    env
}

/// Spawns an agent and waits until its process runs.
async fn spawn_running(env: &TestEnv, prompt: &str) -> agentfleet::domain::Agent {
    let agent = env.spawn(&[], prompt);
    env.wait_agent(agent.id, Duration::from_secs(30), "ran", |a| {
        a.status == AgentStatus::Running
    })
    .await
}

fn alive(agent: &agentfleet::domain::Agent) -> bool {
    match (agent.pid, agent.pid_start_time) {
        (Some(pid), Some(start)) => process::is_same_process_alive(pid, start),
        _ => false,
    }
}

fn event_seqs_are_contiguous(events: &[agentfleet::domain::StoredEvent]) {
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as i64 + 1, "gap or duplicate at {i}: {events:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_worker_cannot_write_after_takeover() {
    let mut env = fast_env().await;
    env.start_worker(&[("AGENTFLEET__WORKER__NODE_ID", "node-a")]);
    let running = spawn_running(&env, "long\n#sleep 0.2\n#ticks 100").await;
    let agent = running.clone();
    env.signal_worker(0, Signal::SIGSTOP);
    env.start_worker(&[("AGENTFLEET__WORKER__NODE_ID", "node-b")]);
    let crashed = env.wait_final(agent.id, Duration::from_secs(20)).await;
    assert_status(&crashed, AgentStatus::Crashed);
    assert_eq!(crashed.error.as_deref(), Some("worker_lost"));
    let store = env.store().await;
    // The reconciler stores the crashed status event just after the status itself.
    let deadline = Instant::now() + Duration::from_secs(10);
    let events_at_takeover = loop {
        let events = store.events_after(agent.id, 0).await.unwrap();
        if events.iter().any(|e| !e.data["reconciled_by"].is_null()) {
            break events.len();
        }
        assert!(Instant::now() < deadline, "no reconciler event: {events:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    env.signal_worker(0, Signal::SIGCONT);
    // The stale worker finds its lease gone, writes nothing, and kills its process.
    let code = env.wait_worker(0, Duration::from_secs(20));
    assert_ne!(
        code,
        Some(0),
        "a worker that lost its lease exits with an error"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(&running) {
        assert!(
            Instant::now() < deadline,
            "the stale process still runs:\n{}",
            env.worker_log(0)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = store.agent_by_id(agent.id).await.unwrap();
    assert_status(&after, AgentStatus::Crashed);
    assert_eq!(after.worker_id, crashed.worker_id);
    assert_eq!(
        store.events_after(agent.id, 0).await.unwrap().len(),
        events_at_takeover,
        "the stale worker stored nothing after the takeover"
    );
    assert!(env.worker_log(0).contains("lease lost"));
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_workers_agents_are_reconciled_within_ttl_plus_grace() {
    let mut env = fast_env().await;
    // node-b (one slot) takes a long blocker first, so the victims land on node-a.
    env.start_worker(&[
        ("AGENTFLEET__WORKER__NODE_ID", "node-b"),
        ("AGENTFLEET__WORKER__CAPACITY", "1"),
    ]);
    let blocker = env.spawn(&[], "block\n#hold 30");
    env.wait_agent(blocker.id, Duration::from_secs(20), "ran", |a| {
        a.status == AgentStatus::Running
    })
    .await;
    env.start_worker(&[("AGENTFLEET__WORKER__NODE_ID", "node-a")]);
    env.wait_workers(2).await;
    let victims: Vec<_> = (0..2)
        .map(|i| env.spawn(&[], &format!("victim {i}\n#hold 30")))
        .collect();
    for v in &victims {
        let a = env
            .wait_agent(v.id, Duration::from_secs(20), "ran", |a| {
                a.status == AgentStatus::Running
            })
            .await;
        assert_eq!(a.node_id.as_deref(), Some("node-a"));
    }
    let killed_at = Instant::now();
    env.signal_worker(1, Signal::SIGKILL);
    for v in &victims {
        let a = env.wait_final(v.id, Duration::from_secs(20)).await;
        assert_status(&a, AgentStatus::Crashed);
        assert_eq!(a.error.as_deref(), Some("worker_lost"));
    }
    let delay = killed_at.elapsed();
    println!(
        "reconciled {} agents {delay:?} after SIGKILL",
        victims.len()
    );
    // Not before lease_ttl 2 s + orphan_grace 3 s + the switch's margin 3 s (the processes
    // are certain to be dead only then); + sweep 0.5 s, with room for a loaded machine.
    assert!(delay > Duration::from_millis(7500), "too early: {delay:?}");
    assert!(delay < Duration::from_secs(11), "took {delay:?}");
    let workers = env.store().await.list_workers().await.unwrap();
    assert!(
        workers
            .iter()
            .any(|w| w.node_id == "node-a" && w.status == "dead")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn restarted_worker_reattaches_and_misses_no_output() {
    let mut env = fast_env().await;
    env.start_worker(&[]);
    let agent = env.spawn(&[], "ticking\n#sleep 0.1\n#ticks 40");
    let running = env
        .wait_agent(agent.id, Duration::from_secs(20), "ticked", |a| {
            a.status == AgentStatus::Running && a.output_offset > 300
        })
        .await;
    env.signal_worker(0, Signal::SIGKILL);
    env.wait_worker(0, Duration::from_secs(5));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(alive(&running), "the agent outlives its worker");
    // A new incarnation on the same node, same workspace.
    env.start_worker_on_root(0, &[]);
    let done = env.wait_final(agent.id, Duration::from_secs(30)).await;
    assert_status(&done, AgentStatus::Completed);
    assert_ne!(
        done.worker_id, running.worker_id,
        "adopted by the new worker"
    );
    assert!(done.owner_epoch > running.owner_epoch);
    let events = env.store().await.events_after(agent.id, 0).await.unwrap();
    event_seqs_are_contiguous(&events);
    let ticks: Vec<_> = events
        .iter()
        .filter(|e| e.kind == "assistant_text")
        .filter_map(|e| e.data["text"].as_str())
        .filter(|t| t.starts_with("tick"))
        .collect();
    let expected: Vec<String> = (1..=40).map(|i| format!("tick {i}")).collect();
    assert_eq!(ticks, expected, "every line once, in order");
    assert!(events.iter().any(|e| e.kind == "adopted"));
    assert!(env.remote_file(&done.branch, "FAKE_RESULT.txt").is_some());
    assert_eq!(env.runs(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_that_ended_unwatched_is_finalised_from_its_files() {
    let mut env = fast_env().await;
    env.start_worker(&[]);
    let agent = env.spawn(&[], "quick\n#hold 1.5\n#exit 0");
    let running = env
        .wait_agent(agent.id, Duration::from_secs(20), "ran", |a| {
            a.status == AgentStatus::Running
        })
        .await;
    env.signal_worker(0, Signal::SIGKILL);
    env.wait_worker(0, Duration::from_secs(5));
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(&running) {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    env.start_worker_on_root(0, &[]);
    let done = env.wait_final(agent.id, Duration::from_secs(20)).await;
    assert_status(&done, AgentStatus::Completed);
    assert_eq!(done.result.as_deref(), Some("All done."));
    assert_eq!(done.exit_code, Some(0));
    event_seqs_are_contiguous(&env.store().await.events_after(agent.id, 0).await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn drained_worker_leaves_agents_to_the_next_one_on_the_node() {
    let mut env = fast_env().await;
    env.start_worker(&[]);
    let agent = env.spawn(&[], "drain me\n#sleep 0.1\n#ticks 30");
    let running = env
        .wait_agent(agent.id, Duration::from_secs(20), "ran", |a| {
            a.status == AgentStatus::Running
        })
        .await;
    let asked = Instant::now();
    env.signal_worker(0, Signal::SIGTERM);
    assert_eq!(env.wait_worker(0, Duration::from_secs(10)), Some(0));
    println!("drained in {:?}", asked.elapsed());
    assert!(alive(&running), "the agent keeps running through the drain");
    env.start_worker_on_root(0, &[]);
    let done = env.wait_final(agent.id, Duration::from_secs(30)).await;
    assert_status(&done, AgentStatus::Completed);
    assert_eq!(env.runs(), 1, "no job ran twice because of the drain");
    event_seqs_are_contiguous(&env.store().await.events_after(agent.id, 0).await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_reaches_the_owner_and_kills_the_process() {
    let mut env = fast_env().await;
    env.start_worker(&[]);
    let agent = env.spawn(&[], "stop me\n#hold 60");
    let running = env
        .wait_agent(agent.id, Duration::from_secs(20), "ran", |a| {
            a.status == AgentStatus::Running
        })
        .await;
    let out = env.cli_ok(&["stop", &agent.name]);
    assert!(out.contains("stopped"), "{out}");
    let stopped = env.store().await.agent(&agent.name).await.unwrap();
    assert_status(&stopped, AgentStatus::Stopped);
    assert!(!alive(&running));
    // Stopping again is refused clearly; a pending agent stops at once.
    let again = env.cli(&["stop", &agent.name]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("is not running"));
}

#[tokio::test(flavor = "multi_thread")]
async fn pending_agent_stops_without_running() {
    let env = fast_env().await;
    let agent = env.spawn(&[], "never runs");
    assert!(env.cli_ok(&["stop", &agent.name]).contains("stopped"));
    let a = env.store().await.agent(&agent.name).await.unwrap();
    assert_status(&a, AgentStatus::Stopped);
    assert_eq!(env.runs(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_removes_worktree_branch_files_and_rows() {
    let mut env = fast_env().await;
    env.start_worker(&[]);
    let done = env.spawn(&["--name", "done-otter"], "finish");
    let done = env.wait_final(done.id, Duration::from_secs(20)).await;
    let live = env.spawn(&["--name", "live-otter"], "run\n#hold 60");
    let live = env
        .wait_agent(live.id, Duration::from_secs(20), "ran", |a| {
            a.status == AgentStatus::Running
        })
        .await;
    assert!(
        env.remote_file("agent/done-otter", "FAKE_RESULT.txt")
            .is_some()
    );
    let workdir = std::path::PathBuf::from(done.workdir.clone().unwrap());
    assert!(workdir.exists());

    env.cli_ok(&["delete", "done-otter", "--remote-branch"]);
    env.cli_ok(&["delete", "live-otter"]);
    let store = env.store().await;
    assert!(store.agent("done-otter").await.is_err());
    assert!(store.agent("live-otter").await.is_err());
    assert!(!workdir.exists());
    assert!(
        !workdir.parent().unwrap().exists(),
        "run files are gone too"
    );
    assert!(!alive(&live));
    assert!(
        env.remote_file("agent/done-otter", "FAKE_RESULT.txt")
            .is_none()
    );
    let mirrors = env.dir.path().join("worker0/mirrors");
    // The mirror itself, not the lock file that sits beside it (`.<key>.lock`).
    let mirror = std::fs::read_dir(&mirrors)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .expect("a mirror");
    let repo = git2::Repository::open_bare(mirror).unwrap();
    assert!(
        repo.find_branch("agent/done-otter", git2::BranchType::Local)
            .is_err()
    );
    assert!(repo.find_worktree("live-otter").is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn dismissed_agents_are_hidden_unless_asked_for() {
    let env = fast_env().await;
    env.spawn(&["--name", "keep-otter"], "a");
    env.spawn(&["--name", "hide-otter"], "b");
    env.cli_ok(&["dismiss", "hide-otter"]);
    let list: serde_json::Value = serde_json::from_str(&env.cli_ok(&["list", "--json"])).unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let all: serde_json::Value =
        serde_json::from_str(&env.cli_ok(&["list", "--json", "--all"])).unwrap();
    assert_eq!(all["items"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_lost_by_the_queue_are_dispatched_again() {
    let mut env = fast_env().await;
    let agents: Vec<_> = (0..3)
        .map(|i| env.spawn(&[], &format!("lost {i}")))
        .collect();
    // Redis loses everything of this fleet (FLUSHALL, scoped to the test's prefix).
    let client = redis::Client::open(crate::common::databases::REDIS_URL).unwrap();
    let mut conn = client.get_connection().unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", env.prefix))
        .query(&mut conn)
        .unwrap();
    assert!(!keys.is_empty(), "the jobs were in Redis");
    let _: () = redis::cmd("DEL").arg(keys).query(&mut conn).unwrap();
    env.start_worker(&[]);
    for a in &agents {
        let a = env.wait_final(a.id, Duration::from_secs(30)).await;
        assert_status(&a, AgentStatus::Completed);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(env.runs(), 3, "each request ran exactly once");
}

#[tokio::test(flavor = "multi_thread")]
async fn hung_agent_is_stopped_after_its_idle_timeout() {
    let mut env = fast_env().await;
    env.start_worker(&[("AGENTFLEET__AGENT__IDLE_TIMEOUT", "1s")]);
    let agent = env.spawn(&[], "hang\n#hold 30");
    let a = env.wait_final(agent.id, Duration::from_secs(20)).await;
    assert_status(&a, AgentStatus::Crashed);
    assert!(a.error.as_deref().unwrap().starts_with("idle_timeout"));
    assert!(!alive(&a));
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_past_its_max_runtime_is_stopped() {
    let mut env = fast_env().await;
    env.start_worker(&[("AGENTFLEET__AGENT__MAX_RUNTIME", "1s")]);
    let agent = env.spawn(&[], "slow\n#sleep 0.1\n#ticks 100");
    let a = env.wait_final(agent.id, Duration::from_secs(20)).await;
    assert_status(&a, AgentStatus::Crashed);
    assert!(a.error.unwrap().starts_with("max_runtime"));
}

#[tokio::test(flavor = "multi_thread")]
async fn poison_request_is_failed_after_max_attempts() {
    let mut env = fast_env().await;
    env.set_env("AGENTFLEET__QUEUE__MAX_ATTEMPTS", "2");
    // Each attempt lands on a worker that then dies; the request allows retries.
    let agent = env.spawn(&["--retries", "5"], "deadly\n#hold 30");
    for n in 0..2 {
        env.start_worker(&[("AGENTFLEET__WORKER__NODE_ID", &format!("node-{n}"))]);
        let a = env
            .wait_agent(agent.id, Duration::from_secs(20), "ran", |a| {
                a.status == AgentStatus::Running
                    && a.node_id.as_deref() == Some(&format!("node-{n}"))
                    && a.output_offset > 0
            })
            .await;
        env.signal_worker(n, Signal::SIGKILL);
        env.wait_worker(n, Duration::from_secs(5));
        // The orphaned stand-in would run on; end it as the node's next worker would.
        let _ = process::signal_group(a.pid.unwrap(), Signal::SIGKILL);
    }
    env.start_worker(&[("AGENTFLEET__WORKER__NODE_ID", "node-judge")]);
    let a = env.wait_final(agent.id, Duration::from_secs(20)).await;
    assert_status(&a, AgentStatus::Crashed);
    assert!(
        a.error
            .as_deref()
            .unwrap()
            .contains("gave up after 2 attempts"),
        "{:?}",
        a.error
    );
    assert_eq!(env.runs(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn cleanup_removes_what_belongs_to_no_agent() {
    let mut env = fast_env().await;
    env.start_worker(&[]);
    let keep = env.spawn(&["--name", "keep-otter"], "keep");
    let gone = env.spawn(&["--name", "gone-otter"], "gone");
    env.wait_final(keep.id, Duration::from_secs(20)).await;
    let gone = env.wait_final(gone.id, Duration::from_secs(20)).await;
    env.stop_workers();
    // Deleted while its node's worker was away: only the rows went.
    env.store().await.delete_agent_rows(gone.id).await.unwrap();
    let root = env.dir.path().join("worker0");
    let with_root = |args: &[&str]| {
        env.command(args)
            .env("AGENTFLEET__WORKER__WORKSPACE_ROOT", &root)
            .output()
            .unwrap()
    };
    let dry = String::from_utf8_lossy(&with_root(&["cleanup", "--dry-run"]).stdout).into_owned();
    assert!(
        dry.contains("would remove gone-otter") && !dry.contains("keep-otter"),
        "{dry}"
    );
    assert!(root.join("agents/gone-otter").exists());
    let real = String::from_utf8_lossy(&with_root(&["cleanup"]).stdout).into_owned();
    assert!(real.contains("removed gone-otter"), "{real}");
    assert!(!root.join("agents/gone-otter").exists());
    assert!(root.join("agents/keep-otter").exists());
}

/// The helper processes (the session leaders) of agent `name` under any of `roots`: its live
/// runs on every node of this machine.
fn live_runs(roots: &[std::path::PathBuf], name: &str) -> Vec<i32> {
    let marks: Vec<String> = roots
        .iter()
        .map(|r| {
            format!(
                "{}/agents/{name}/",
                r.canonicalize().unwrap_or(r.clone()).display()
            )
        })
        .collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            cmdline.starts_with(agentfleet::sandbox::HELPER_NAME)
                && marks.iter().any(|m| cmdline.contains(m.as_str()))
                && nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(*pid)))
                    .is_ok_and(|g| g.as_raw() == *pid)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_whose_worker_died_stops_itself_within_the_grace() {
    let mut env = fast_env().await;
    env.start_worker(&[("AGENTFLEET__WORKER__NODE_ID", "node-a")]);
    let running = spawn_running(&env, "orphan\n#hold 60").await;
    let agent = running.clone();
    env.signal_worker(0, Signal::SIGKILL);
    let killed_at = Instant::now();
    // No worker replaces it: the process stops by itself, without the store.
    while alive(&running) {
        assert!(
            killed_at.elapsed() < Duration::from_secs(20),
            "the orphaned process still runs"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stopped = killed_at.elapsed();
    // Not at once (a worker restarted within the grace would re-attach), and within
    // orphan_grace 3 s + the switch's margin 3 s after the last heartbeat.
    assert!(
        stopped > Duration::from_secs(2),
        "stopped too soon: {stopped:?}"
    );
    assert!(stopped < Duration::from_secs(6), "took {stopped:?}");
    // Another node judges the agent once the process is certain to be dead.
    env.start_worker(&[("AGENTFLEET__WORKER__NODE_ID", "node-b")]);
    let crashed = env.wait_final(agent.id, Duration::from_secs(30)).await;
    let reconciled = killed_at.elapsed();
    assert_status(&crashed, AgentStatus::Crashed);
    println!(
        "orphaned process stopped {stopped:?} after SIGKILL; agent reconciled after {reconciled:?}"
    );
}

/// Makes every worker's statement that records a started process wait until the returned
/// connection lets go (`let_records_through`): a trigger takes a lock the test holds.
async fn hold_process_records(env: &TestEnv) -> sqlx::PgConnection {
    let mut conn = sqlx::PgConnection::connect(&env.db_url).await.unwrap();
    for sql in [
        "CREATE FUNCTION test_hold_record() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN PERFORM pg_advisory_xact_lock(4242); RETURN NEW; END $$",
        "CREATE TRIGGER test_hold_record BEFORE UPDATE ON agents FOR EACH ROW \
         WHEN (OLD.status = 'starting' AND NEW.status = 'running') \
         EXECUTE FUNCTION test_hold_record()",
        "SELECT pg_advisory_lock(4242)",
    ] {
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    }
    conn
}

async fn let_records_through(mut lock: sqlx::PgConnection) {
    sqlx::query("SELECT pg_advisory_unlock(4242)")
        .execute(&mut lock)
        .await
        .unwrap();
}

/// Terminates the connections that wait on a lock `lock` holds (as a Postgres restart or a
/// failover would), once there are some (within `within`).
async fn cut_blocked_connections(lock: &mut sqlx::PgConnection, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let blocked: Vec<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
             AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()",
        )
        .fetch_all(&mut *lock)
        .await
        .unwrap();
        if !blocked.is_empty() {
            for pid in blocked {
                sqlx::query("SELECT pg_terminate_backend($1)")
                    .bind(pid)
                    .execute(&mut *lock)
                    .await
                    .unwrap();
            }
            return;
        }
        if Instant::now() > deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A worker on node-a dies between starting an agent's process and recording it; a worker
/// on `next_node` (a restart on node-a's workspace, or a fresh node-b) takes over. At no
/// moment do two runs of the agent live, and it completes on `next_node`.
async fn killed_before_recording(next_node: &str) {
    let mut env = fast_env().await;
    env.start_worker(&[("AGENTFLEET__WORKER__NODE_ID", "node-a")]);
    let mut lock = hold_process_records(&env).await;
    let agent = env.spawn(&[], "unrecorded\n#hold 8");
    let roots = vec![env.worker_root(0), env.dir.path().join("worker1")];
    wait_for("the process never started", Duration::from_secs(30), || {
        !live_runs(&roots, &agent.name).is_empty()
    })
    .await;
    // Started, not recorded: the worker dies now, and its statement, if it was sent
    // already, with it.
    env.signal_worker(0, Signal::SIGKILL);
    cut_blocked_connections(&mut lock, Duration::from_secs(1)).await;
    let_records_through(lock).await;
    if next_node == "node-a" {
        env.start_worker_on_root(0, &[("AGENTFLEET__WORKER__NODE_ID", "node-a")]);
    } else {
        env.start_worker(&[("AGENTFLEET__WORKER__NODE_ID", next_node)]);
    }
    let store = env.store().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut most = 0;
    loop {
        let runs = live_runs(&roots, &agent.name);
        most = most.max(runs.len());
        assert!(runs.len() <= 1, "two live runs of one agent: {runs:?}");
        let a = store.agent_by_id(agent.id).await.unwrap();
        if a.status.is_final() {
            assert_status(&a, AgentStatus::Completed);
            assert_eq!(a.node_id.as_deref(), Some(next_node));
            break;
        }
        assert!(Instant::now() < deadline, "never finished: {a:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(most, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_before_recording_its_process_never_leaves_two_runs() {
    killed_before_recording("node-b").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_worker_stops_the_unrecorded_run_before_running_it_again() {
    killed_before_recording("node-a").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_dropped_while_recording_the_process_costs_no_agent() {
    let mut env = fast_env().await;
    env.start_worker(&[("AGENTFLEET__WORKER__NODE_ID", "node-a")]);
    let mut lock = hold_process_records(&env).await;
    let agent = env.spawn(&[], "through a dropped connection\n#hold 1");
    // The worker's statement that records the process waits: cut its connection.
    cut_blocked_connections(&mut lock, Duration::from_secs(30)).await;
    let_records_through(lock).await;
    let done = env.wait_final(agent.id, Duration::from_secs(30)).await;
    assert_status(&done, AgentStatus::Completed);
    assert_eq!(env.runs(), 1, "the agent ran once");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_starting_on_a_node_stops_processes_owned_elsewhere() {
    let mut env = fast_env().await;
    // A long grace: what stops the process here is the new worker, not its dead-man switch.
    env.set_env("AGENTFLEET__WORKER__ORPHAN_GRACE", "60s");
    env.start_worker(&[("AGENTFLEET__WORKER__NODE_ID", "node-a")]);
    let running = spawn_running(&env, "judged elsewhere\n#hold 120").await;
    let agent = running.clone();
    env.signal_worker(0, Signal::SIGKILL);
    env.wait_worker(0, Duration::from_secs(5));
    // Meanwhile the fleet decided the agent is over (as a reconciler on another node does).
    env.store()
        .await
        .finish_unowned(agent.id, "crashed", "worker_lost")
        .await
        .unwrap();
    assert!(alive(&running));
    let restarted = Instant::now();
    env.start_worker_on_root(0, &[("AGENTFLEET__WORKER__NODE_ID", "node-a")]);
    while alive(&running) {
        assert!(
            restarted.elapsed() < Duration::from_secs(30),
            "the new worker left a process whose agent is over running"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "stale process stopped {:?} after the new worker started",
        restarted.elapsed()
    );
    let after = env.store().await.agent_by_id(agent.id).await.unwrap();
    assert_status(&after, AgentStatus::Crashed);
}
