//! The fleet spine end to end: CLI → Postgres → Redis → worker processes → worktree →
//! provider process → events → result → branch pushed.

use std::time::Duration;

use agentfleet::domain::AgentStatus;
use agentfleet::queue::{RedisQueue, SpawnJob};

use crate::common::databases::REDIS_URL;
use crate::common::env::{TestEnv, assert_status};

async fn queue(env: &TestEnv) -> RedisQueue {
    RedisQueue::connect(
        REDIS_URL,
        &env.prefix,
        Duration::from_millis(100),
        Duration::from_secs(5),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn spawn_runs_on_one_of_two_workers_and_pushes_the_branch() {
    let mut env = TestEnv::new().await;
    env.start_worker(&[]);
    env.start_worker(&[]);
    env.wait_workers(2).await;

    let out = env
        .command(&[
            "spawn",
            "--project",
            "demo",
            "--name",
            "first-otter",
            "--wait",
            "make the file",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "spawn --wait failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("first-otter"), "{stdout}");
    assert!(
        stdout.contains("All done."),
        "--wait shows the output: {stdout}"
    );

    let agent: serde_json::Value =
        serde_json::from_str(&env.cli_ok(&["get", "first-otter", "--json"])).unwrap();
    assert_eq!(agent["status"], "completed");
    assert_eq!(agent["result"], "All done.");
    assert_eq!(agent["branch"], "agent/first-otter");
    assert_eq!(agent["provider"], "claude");
    assert_eq!(agent["mode"], "execute");
    assert!(agent["session_id"].as_str().is_some_and(|s| s.len() == 36));
    assert!(agent["pid"].as_i64().is_some_and(|p| p > 0));
    assert!(agent["node_id"].is_string());
    for key in [
        "pending_questions",
        "error",
        "created_at",
        "updated_at",
        "id",
        "name",
    ] {
        assert!(agent.get(key).is_some(), "missing {key}");
    }
    let workers: Vec<serde_json::Value> =
        serde_json::from_str(&env.cli_ok(&["workers", "--json"])).unwrap();
    assert_eq!(workers.len(), 2);
    let ids: Vec<&str> = workers.iter().map(|w| w["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&agent["worker_id"].as_str().unwrap()));

    let file = env
        .remote_file("agent/first-otter", "FAKE_RESULT.txt")
        .expect("branch with the agent's file on the remote");
    assert!(file.starts_with("written by fake-claude\nmake the file"));
    assert!(
        env.remote_file("agent/first-otter", ".agentfleet/input")
            .is_none(),
        "agentfleet's own folder is never committed"
    );

    let logs = env.cli_ok(&["logs", "first-otter"]);
    for kind in [
        "session_started",
        "tool_use",
        "tool_result",
        "assistant_text",
        "result",
    ] {
        assert!(logs.contains(kind), "logs lack {kind}: {logs}");
    }
    let list: serde_json::Value = serde_json::from_str(&env.cli_ok(&["list", "--json"])).unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    // How long each step from delivery to a running process took.
    let store = env.store().await;
    let id = agent["id"].as_str().unwrap().parse().unwrap();
    let events = store.events_after(id, 0).await.unwrap();
    let dispatch = events
        .iter()
        .find(|e| e.kind == "agent.dispatch")
        .expect("an agent.dispatch event");
    for step in [
        "queued_ms",
        "claim_ms",
        "git_lock_ms",
        "fetch_ms",
        "checkout_ms",
        "launch_ms",
    ] {
        let ms = dispatch.data[step].as_f64();
        assert!(
            ms.is_some_and(|ms| (0.0..60_000.0).contains(&ms)),
            "{step}: {ms:?}"
        );
    }
    assert_eq!(dispatch.data["fetched"], true, "the first spawn fetches");
    env.stop_workers();
}

/// Adds `file` to `main` of the bare remote, as a caller pushing before it spawns.
fn push_to_main(remote: &std::path::Path, file: &str) {
    let repo = git2::Repository::open_bare(remote).unwrap();
    let parent = repo
        .find_reference("refs/heads/main")
        .unwrap()
        .peel_to_commit()
        .unwrap();
    let blob = repo.blob(file.as_bytes()).unwrap();
    let mut tree = repo.treebuilder(Some(&parent.tree().unwrap())).unwrap();
    tree.insert(file, blob, 0o100644).unwrap();
    let tree = repo.find_tree(tree.write().unwrap()).unwrap();
    let sig = git2::Signature::now("caller", "caller@localhost").unwrap();
    repo.commit(Some("refs/heads/main"), &sig, &sig, file, &tree, &[&parent])
        .unwrap();
}

/// Spawns that wait behind one fetch may share it, but never start from a remote older than
/// their own request: every agent spawned after a push has the pushed file.
#[tokio::test(flavor = "multi_thread")]
async fn spawns_after_a_push_start_from_it_even_in_a_burst() {
    let mut env = TestEnv::new().await;
    env.start_worker(&[("AGENTFLEET__WORKER__CAPACITY", "8")]);
    env.wait_workers(1).await;
    let store = env.store().await;
    let mut fetched = 0;
    for round in 0..3 {
        let file = format!("pushed-{round}.txt");
        push_to_main(&env.remote, &file);
        let agents: Vec<_> = (0..4)
            .map(|i| env.spawn(&[], &format!("round {round} agent {i}")))
            .collect();
        for a in &agents {
            let agent = env.wait_final(a.id, Duration::from_secs(60)).await;
            assert_status(&agent, AgentStatus::Completed);
            assert!(
                env.remote_file(&agent.branch, &file).is_some(),
                "{} started from a base without {file}",
                agent.name
            );
            let events = store.events_after(agent.id, 0).await.unwrap();
            let dispatch = events.iter().find(|e| e.kind == "agent.dispatch").unwrap();
            fetched += usize::from(dispatch.data["fetched"] == true);
        }
    }
    assert!(
        fetched >= 3,
        "at least one fetch after each push, saw {fetched}"
    );
    env.stop_workers();
}

#[tokio::test(flavor = "multi_thread")]
async fn capacity_is_respected_under_a_burst() {
    let mut env = TestEnv::new().await;
    env.start_worker(&[("AGENTFLEET__WORKER__CAPACITY", "1")]);
    env.start_worker(&[("AGENTFLEET__WORKER__CAPACITY", "2")]);
    env.wait_workers(2).await;
    let agents: Vec<_> = (0..6)
        .map(|i| env.spawn(&[], &format!("burst {i}\n#hold 0.8")))
        .collect();
    let mut done = Vec::new();
    for a in &agents {
        let agent = env.wait_final(a.id, Duration::from_secs(60)).await;
        assert_status(&agent, AgentStatus::Completed);
        done.push(agent);
    }
    let workers = env.store().await.list_workers().await.unwrap();
    for w in &workers {
        let mine: Vec<_> = done
            .iter()
            .filter(|a| a.worker_id.as_deref() == Some(&w.id))
            .collect();
        // The most agents of this worker alive at one instant.
        let mut peak = 0;
        for a in &mine {
            let t = a.started_at.unwrap();
            let alive = mine
                .iter()
                .filter(|b| b.started_at.unwrap() <= t && b.finished_at.unwrap() > t)
                .count();
            peak = peak.max(alive);
        }
        assert!(
            peak <= w.capacity as usize,
            "worker {} (capacity {}) ran {peak} at once",
            w.id,
            w.capacity
        );
    }
    assert_eq!(env.runs(), 6);
    env.stop_workers();
}

#[tokio::test(flavor = "multi_thread")]
async fn same_idempotency_key_returns_the_same_agent_and_runs_once() {
    let mut env = TestEnv::new().await;
    let first = env.spawn(&["--idempotency-key", "job-42"], "once only");
    let second = env.spawn(&["--idempotency-key", "job-42"], "once only");
    assert_eq!(first.id, second.id);
    assert_eq!(first.name, second.name);
    env.start_worker(&[]);
    let agent = env.wait_final(first.id, Duration::from_secs(30)).await;
    assert_status(&agent, AgentStatus::Completed);
    let third = env.spawn(&["--idempotency-key", "job-42"], "once only");
    assert_eq!(third.id, first.id);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(env.runs(), 1);
    assert_eq!(env.store().await.count_agents().await.unwrap(), 1);
    env.stop_workers();
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicate_delivery_of_a_job_runs_the_agent_once() {
    let mut env = TestEnv::new().await;
    let agent = env.spawn(&[], "deliver me twice\n#hold 0.5");
    let store = env.store().await;
    let request_id = store.pending_requests(10).await.unwrap()[0];
    let q = queue(&env).await;
    for _ in 0..2 {
        q.enqueue(&SpawnJob {
            request_id,
            trace_context: Default::default(),
        })
        .await
        .unwrap();
    }
    env.start_worker(&[]);
    env.start_worker(&[]);
    let done = env.wait_final(agent.id, Duration::from_secs(30)).await;
    assert_status(&done, AgentStatus::Completed);
    // Give the extra deliveries time to reach a worker and be refused.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(env.runs(), 1, "three deliveries, one run");
    let logs = env.worker_log(0) + &env.worker_log(1);
    assert!(
        logs.contains("duplicate delivery ignored"),
        "the duplicates reached a worker: {logs}"
    );
    env.stop_workers();
}

#[tokio::test(flavor = "multi_thread")]
async fn provider_exiting_non_zero_is_crashed_with_the_reason() {
    let mut env = TestEnv::new().await;
    env.start_worker(&[]);
    let out = env
        .command(&[
            "spawn",
            "--project",
            "demo",
            "--wait",
            "break\n#exit 3\n#stderr kaboom: the model is on fire",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "--wait exits non-zero on a crash"
    );
    let agents = env
        .store()
        .await
        .list_agents(&agentfleet::store::AgentQuery::with_dismissed())
        .await
        .unwrap()
        .items;
    let agent = &agents[0];
    assert_status(agent, AgentStatus::Crashed);
    assert_eq!(agent.exit_code, Some(3));
    let error = agent.error.as_deref().unwrap();
    assert!(
        error.contains("code 3") && error.contains("kaboom"),
        "{error}"
    );
    env.stop_workers();
}

#[tokio::test(flavor = "multi_thread")]
async fn error_result_fails_and_signal_file_questions_wait_for_input() {
    let mut env = TestEnv::new().await;
    env.start_worker(&[]);
    let failing = env.spawn(&[], "try\n#fail could not compile");
    let asking = env.spawn(
        &[],
        "ask\n#signal {\"status\":\"questions\",\"questions\":[{\"id\":\"q1\",\"question\":\"Which database?\"}]}",
    );
    let failing = env.wait_final(failing.id, Duration::from_secs(30)).await;
    assert_status(&failing, AgentStatus::Failed);
    assert_eq!(failing.error.as_deref(), Some("could not compile"));
    let asking = env.wait_final(asking.id, Duration::from_secs(30)).await;
    assert_status(&asking, AgentStatus::WaitingForInput);
    assert_eq!(asking.pending_questions[0].question, "Which database?");
    let shown: serde_json::Value =
        serde_json::from_str(&env.cli_ok(&["get", &asking.name, "--json"])).unwrap();
    assert_eq!(shown["pending_questions"][0]["id"], "q1");
    env.stop_workers();
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_job_is_recorded_and_the_worker_keeps_working() {
    let mut env = TestEnv::new().await;
    env.start_worker(&[]);
    env.wait_workers(1).await;
    let q = queue(&env).await;
    q.enqueue_raw(serde_json::json!({"not": "a spawn job"}))
        .await
        .unwrap();
    let agent = env.spawn(&[], "after the garbage");
    let agent = env.wait_final(agent.id, Duration::from_secs(30)).await;
    assert_status(&agent, AgentStatus::Completed);
    let failures = env.store().await.job_failures().await.unwrap();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(failures[0].0.contains("a spawn job"));
    assert!(
        failures[0].1.contains("cannot be decoded"),
        "{}",
        failures[0].1
    );
    env.stop_workers();
}

#[tokio::test(flavor = "multi_thread")]
async fn input_files_reach_the_worktree() {
    let mut env = TestEnv::new().await;
    env.start_worker(&[]);
    let input = env.dir.path().join("spec.md");
    std::fs::write(&input, "the spec").unwrap();
    let agent = env.spawn(&["--input", input.to_str().unwrap()], "read the spec");
    let agent = env.wait_final(agent.id, Duration::from_secs(30)).await;
    assert_status(&agent, AgentStatus::Completed);
    let workdir = std::path::PathBuf::from(agent.workdir.unwrap());
    assert_eq!(
        std::fs::read_to_string(workdir.join(".agentfleet/input/spec.md")).unwrap(),
        "the spec"
    );
    env.stop_workers();
}

/// Only work reaches the remote: an agent that crashed, or finished, without a commit or a
/// change of its own pushes no branch, while one that left a change pushes it.
#[tokio::test(flavor = "multi_thread")]
async fn agents_that_changed_nothing_push_no_branch() {
    let mut env = TestEnv::new().await;
    env.start_worker(&[]);
    // The fake writes its file under `.agentfleet/`, which is never committed.
    let crashed = env.spawn(
        &["--name", "crashed-otter"],
        "nothing\n#file .agentfleet/scratch.txt\n#exit 3",
    );
    let empty = env.spawn(
        &["--name", "empty-otter"],
        "nothing\n#file .agentfleet/scratch.txt",
    );
    let crashed_with_work = env.spawn(&["--name", "working-otter"], "work\n#exit 3");
    for (agent, status) in [
        (&crashed, AgentStatus::Crashed),
        (&empty, AgentStatus::Completed),
        (&crashed_with_work, AgentStatus::Crashed),
    ] {
        let done = env.wait_final(agent.id, Duration::from_secs(60)).await;
        assert_status(&done, status);
    }
    let remote = git2::Repository::open_bare(&env.remote).unwrap();
    for branch in ["agent/crashed-otter", "agent/empty-otter"] {
        assert!(
            remote
                .find_reference(&format!("refs/heads/{branch}"))
                .is_err(),
            "{branch} was pushed"
        );
    }
    assert!(
        env.remote_file("agent/working-otter", "FAKE_RESULT.txt")
            .is_some(),
        "a crashed agent's change is pushed"
    );
    env.stop_workers();
}

/// An agent deleted with its remote branch kept, and a new agent given its name: the new
/// agent never overwrites the branch it did not create, and pushes its work to a branch of
/// its own, recorded on it and announced by an event.
#[tokio::test(flavor = "multi_thread")]
async fn a_reused_name_pushes_to_a_branch_of_its_own_leaving_the_earlier_agents() {
    let mut env = TestEnv::new().await;
    env.start_worker(&[]);
    let first = env.spawn(&["--name", "reused-otter"], "first\n#file FIRST.txt");
    let done = env.wait_final(first.id, Duration::from_secs(60)).await;
    assert_status(&done, AgentStatus::Completed);
    let tip = |branch: &str| {
        git2::Repository::open_bare(&env.remote)
            .unwrap()
            .refname_to_id(&format!("refs/heads/{branch}"))
            .ok()
    };
    let first_tip = tip("agent/reused-otter").expect("the first agent's branch");
    env.cli_ok(&["delete", "reused-otter"]);

    let second = env.spawn(&["--name", "reused-otter"], "second\n#file SECOND.txt");
    let done = env.wait_final(second.id, Duration::from_secs(60)).await;
    assert_status(&done, AgentStatus::Completed);
    assert_eq!(done.error, None);
    assert_eq!(
        tip("agent/reused-otter"),
        Some(first_tip),
        "the earlier agent's branch was overwritten"
    );
    assert!(env.remote_file("agent/reused-otter", "FIRST.txt").is_some());
    assert!(
        env.remote_file("agent/reused-otter", "SECOND.txt")
            .is_none()
    );
    // Its own work is on a branch of its own, which `get` shows.
    let own = format!(
        "agent/reused-otter-{}",
        &second.id.simple().to_string()[..8]
    );
    assert_eq!(done.branch, own);
    let shown: serde_json::Value =
        serde_json::from_str(&env.cli_ok(&["get", "reused-otter", "--json"])).unwrap();
    assert_eq!(shown["branch"], own.as_str());
    assert!(env.remote_file(&own, "SECOND.txt").is_some());
    assert!(env.remote_file(&own, "FIRST.txt").is_none());
    let events = env.store().await.events_after(second.id, 0).await.unwrap();
    let renamed = events
        .iter()
        .find(|e| e.kind == "branch.renamed")
        .expect("a branch.renamed event");
    assert_eq!(renamed.data["from"], "agent/reused-otter");
    assert_eq!(renamed.data["to"], own.as_str());
    env.stop_workers();
}

/// A resumed agent whose work went to a branch of its own goes on there.
#[tokio::test(flavor = "multi_thread")]
async fn a_resumed_agent_goes_on_to_the_branch_of_its_own() {
    let mut env = TestEnv::new().await;
    env.start_worker(&[]);
    let first = env.spawn(&["--name", "asking-otter"], "first\n#file FIRST.txt");
    env.wait_final(first.id, Duration::from_secs(60)).await;
    env.cli_ok(&["delete", "asking-otter"]);
    let ask = "ask\n#file SECOND.txt\n#signal {\"status\":\"questions\",\
               \"questions\":[{\"id\":\"db\",\"question\":\"Which database?\"}]}";
    let second = env.spawn(&["--name", "asking-otter"], ask);
    let waiting = env.wait_final(second.id, Duration::from_secs(60)).await;
    assert_status(&waiting, AgentStatus::WaitingForInput);
    let own = format!(
        "agent/asking-otter-{}",
        &second.id.simple().to_string()[..8]
    );
    assert_eq!(waiting.branch, own);
    let first_tip = env.remote_file("agent/asking-otter", "FIRST.txt");
    assert!(first_tip.is_some());

    env.cli_ok(&[
        "resume",
        "asking-otter",
        "--answer",
        "db=Postgres",
        "--wait",
    ]);
    let done = env.store().await.agent("asking-otter").await.unwrap();
    assert_status(&done, AgentStatus::Completed);
    assert_eq!(done.error, None);
    assert_eq!(done.branch, own);
    assert!(env.remote_file(&own, "SECOND.txt").is_some());
    assert!(env.remote_file(&own, "RESUMED.txt").is_some());
    assert!(
        env.remote_file("agent/asking-otter", "RESUMED.txt")
            .is_none()
    );
    assert!(
        env.remote_file("agent/asking-otter", "SECOND.txt")
            .is_none()
    );
    let events = env.store().await.events_after(second.id, 0).await.unwrap();
    let renames = events.iter().filter(|e| e.kind == "branch.renamed").count();
    assert_eq!(renames, 1, "renamed once, by the first run");
    env.stop_workers();
}
