//! Control requests on Redis: stop, resume, delete, dismiss and cleanup are recorded in the
//! store and pushed to the worker that can act on them (its own queue, or its node's),
//! which acts at once — the fallback poll is set to a minute here, so only the push can be
//! that fast. Lost and duplicated jobs act exactly once; a stop pending at a dead owner
//! reaches its adopter; a resume with no worker on its node shows as waiting in `get`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agentfleet::domain::AgentStatus;
use agentfleet::events::STATUS_EVENT;
use agentfleet::queue::{ControlJob, ControlTarget, Queue, RedisQueue};
use futures::StreamExt;
use nix::sys::signal::Signal;
use uuid::Uuid;

use crate::common::env::{TestEnv, assert_status};
use crate::common::services::{PrivateRedis, free_port};

const ASK: &str = "pick a database\n#signal {\"status\":\"questions\",\"questions\":[{\"id\":\"db\",\"question\":\"Which database?\"}]}";
const SLOW_POLL: (&str, &str) = ("AGENTFLEET__WORKER__CONTROL_POLL_INTERVAL", "60s");

/// Counts the push announcements on every control queue of the test's prefix.
async fn watch_control_pushes(env: &TestEnv) -> tokio::sync::watch::Receiver<usize> {
    let client = redis::Client::open(env.redis_url.as_str()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub
        .psubscribe(format!("{}:control:*:pushed", env.prefix))
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::watch::channel(0usize);
    tokio::spawn(async move {
        let mut messages = pubsub.into_on_message();
        while messages.next().await.is_some() {
            tx.send_modify(|n| *n += 1);
        }
    });
    rx
}

/// Stopped-status events in the agent's log.
async fn stopped_events(env: &TestEnv, id: Uuid) -> usize {
    env.store()
        .await
        .events_after(id, 0)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.kind == STATUS_EVENT && e.data["status"] == "stopped")
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_resume_and_delete_are_pushed_to_the_worker_and_act_at_once() {
    let mut env = TestEnv::new().await;
    env.start_worker(&[SLOW_POLL]);
    let pushes = watch_control_pushes(&env).await;

    let holding = env.spawn(&["--name", "holding-otter"], "hold on\n#hold 120");
    env.wait_agent(holding.id, Duration::from_secs(60), "running", |a| {
        a.status == AgentStatus::Running
    })
    .await;
    let asked = Instant::now();
    env.cli_ok(&["stop", "holding-otter", "--no-wait"]);
    let stopped = env.wait_final(holding.id, Duration::from_secs(30)).await;
    assert_status(&stopped, AgentStatus::Stopped);
    assert!(
        asked.elapsed() < Duration::from_secs(8),
        "stopped after {:?} with a 60 s fallback poll",
        asked.elapsed()
    );
    assert_eq!(
        *pushes.borrow(),
        1,
        "the stop was pushed to a control queue"
    );

    let asking = env.spawn(&["--name", "asking-otter"], ASK);
    let waiting = env.wait_final(asking.id, Duration::from_secs(60)).await;
    assert_status(&waiting, AgentStatus::WaitingForInput);
    let asked = Instant::now();
    env.cli_ok(&["resume", "asking-otter", "--answer", "db=Postgres"]);
    let done = env
        .wait_agent(asking.id, Duration::from_secs(30), "resumed", |a| {
            a.status == AgentStatus::Completed
        })
        .await;
    assert_status(&done, AgentStatus::Completed);
    assert!(
        asked.elapsed() < Duration::from_secs(15),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(*pushes.borrow(), 2, "the resume was pushed");

    let asked = Instant::now();
    env.cli_ok(&["delete", "asking-otter"]);
    assert!(env.store().await.agent("asking-otter").await.is_err());
    assert!(
        asked.elapsed() < Duration::from_secs(15),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(*pushes.borrow(), 3, "the delete was pushed");
    env.stop_workers();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resume_waits_for_a_worker_on_its_node() {
    let mut env = TestEnv::new().await;
    env.start_worker(&[]);
    let asking = env.spawn(&["--name", "asking-otter"], ASK);
    let waiting = env.wait_final(asking.id, Duration::from_secs(60)).await;
    assert_status(&waiting, AgentStatus::WaitingForInput);
    env.stop_workers();

    // Nobody on the node: accepted, and visibly waiting.
    env.cli_ok(&["resume", "asking-otter", "--answer", "db=Postgres"]);
    let store = env.store().await;
    assert_status(
        &store.agent("asking-otter").await.unwrap(),
        AgentStatus::WaitingForInput,
    );
    let events = store.events_after(asking.id, 0).await.unwrap();
    assert!(
        events.iter().any(|e| e.kind == "resume.waiting"),
        "{events:?}"
    );
    let queue: serde_json::Value = serde_json::from_str(&env.cli_ok(&["queue", "--json"])).unwrap();
    let node = waiting.node_id.clone().expect("node");
    let shown: serde_json::Value =
        serde_json::from_str(&env.cli_ok(&["get", "asking-otter", "--json"])).unwrap();
    let pending = &shown["pending_requests"];
    assert_eq!(pending.as_array().map(Vec::len), Some(1), "{shown}");
    assert_eq!(pending[0]["kind"], "resume");
    assert_eq!(pending[0]["sent_to"], "node");
    assert_eq!(pending[0]["target"], node.as_str());
    assert_eq!(pending[0]["waiting_for_worker"], true);
    assert!(pending[0]["expires_at"].is_string(), "{shown}");
    let text = env.cli_ok(&["get", "asking-otter"]);
    assert!(
        text.contains("request:   resume to node") && text.contains("waiting for a worker"),
        "{text}"
    );
    assert_eq!(
        queue["control_queues"],
        serde_json::json!([{"node_id": node, "depth": 1,
            "oldest_age_seconds": queue["control_queues"][0]["oldest_age_seconds"]}]),
        "the waiting resume shows in its node's control queue"
    );

    // A worker starts on the node (same workspace) and takes it.
    env.start_worker_on_root(0, &[SLOW_POLL]);
    let done = env
        .wait_agent(asking.id, Duration::from_secs(60), "resumed", |a| {
            a.status == AgentStatus::Completed
        })
        .await;
    assert_eq!(done.workdir, waiting.workdir, "same worktree");
    let shown: serde_json::Value =
        serde_json::from_str(&env.cli_ok(&["get", "asking-otter", "--json"])).unwrap();
    assert_eq!(shown["pending_requests"], serde_json::json!([]));
    env.stop_workers();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stop_pending_at_a_killed_owner_is_carried_out_by_its_adopter() {
    let mut env = TestEnv::new().await;
    env.start_worker(&[SLOW_POLL]);
    let agent = env.spawn(&["--name", "orphan-otter"], "hold on\n#hold 120");
    let running = env
        .wait_agent(agent.id, Duration::from_secs(60), "running", |a| {
            a.status == AgentStatus::Running
        })
        .await;
    // The owner takes no job any more, then dies with the stop in its queue.
    env.signal_worker(0, Signal::SIGSTOP);
    env.cli_ok(&["stop", "orphan-otter", "--no-wait"]);
    env.signal_worker(0, Signal::SIGKILL);
    env.wait_worker(0, Duration::from_secs(10));
    assert_status(
        &env.store().await.agent("orphan-otter").await.unwrap(),
        AgentStatus::Running,
    );
    let pid = nix::unistd::Pid::from_raw(running.pid.expect("pid"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        nix::sys::signal::kill(pid, None).is_ok(),
        "the provider process outlives its worker"
    );

    let dead = running.worker_id.clone().expect("owner");
    let dead_queue = format!("{}:control:worker:{dead}:*", env.prefix);
    assert!(
        !control_keys(&env, &dead_queue).await.is_empty(),
        "the stop waits in the dead worker's queue"
    );
    let dead_consumers = format!("{}:*:workers:metadata:{dead}-*", env.prefix);
    assert!(!control_keys(&env, &dead_consumers).await.is_empty());

    // The next worker on the node adopts the agent, and the stop with it.
    env.start_worker_on_root(0, &[SLOW_POLL]);
    let stopped = env.wait_final(agent.id, Duration::from_secs(60)).await;
    assert_status(&stopped, AgentStatus::Stopped);
    let deadline = Instant::now() + Duration::from_secs(20);
    while nix::sys::signal::kill(pid, None).is_ok() {
        assert!(Instant::now() < deadline, "the provider process still runs");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The dead worker's queue and its consumers' records are gone from Redis; so is the
    // next worker's queue once it stops.
    assert_eq!(control_keys(&env, &dead_queue).await, Vec::<String>::new());
    assert_eq!(
        control_keys(&env, &dead_consumers).await,
        Vec::<String>::new()
    );
    let adopter = env
        .store()
        .await
        .list_workers()
        .await
        .unwrap()
        .into_iter()
        .find(|w| w.status == "alive")
        .expect("the new worker")
        .id;
    let adopter_queue = format!("{}:control:worker:{adopter}:*", env.prefix);
    // A job for a request that does not exist: handled as nothing, its keys stay.
    let queue = Queue::Redis(Box::new(
        RedisQueue::connect(
            &env.redis_url,
            &env.prefix,
            Duration::from_secs(1),
            Duration::from_secs(5),
        )
        .await
        .unwrap(),
    ));
    let job = ControlJob {
        request_id: Uuid::now_v7(),
        trace_context: Default::default(),
    };
    queue
        .push_control(&ControlTarget::Worker(adopter.clone()), &job)
        .await
        .unwrap();
    assert!(!control_keys(&env, &adopter_queue).await.is_empty());
    env.stop_workers();
    let log = std::fs::read_to_string(env.dir.path().join("worker1.log")).unwrap_or_default();
    assert_eq!(
        control_keys(&env, &adopter_queue).await,
        Vec::<String>::new(),
        "{log}"
    );
}

/// The Redis keys matching `pattern`.
async fn control_keys(env: &TestEnv, pattern: &str) -> Vec<String> {
    let client = redis::Client::open(env.redis_url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(pattern)
        .query_async(&mut conn)
        .await
        .unwrap();
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread")]
async fn lost_and_duplicated_control_jobs_act_exactly_once() {
    // A redis-server of the test's own, so that FLUSHALL touches no other test.
    let redis = PrivateRedis::start(free_port());
    let redis_url = format!("redis://127.0.0.1:{}", redis.port);
    let mut env = TestEnv::with_services("127.0.0.1:5432", &redis_url).await;
    env.start_worker(&[("AGENTFLEET__WORKER__CONTROL_POLL_INTERVAL", "1s")]);
    let agents: Vec<_> = (0..2)
        .map(|i| env.spawn(&[], &format!("hold on {i}\n#hold 120")))
        .collect();
    for a in &agents {
        env.wait_agent(a.id, Duration::from_secs(60), "running", |a| {
            a.status == AgentStatus::Running
        })
        .await;
    }
    let store = env.store().await;
    let worker = store.list_workers().await.unwrap().remove(0);

    // The stops are pushed while the worker takes nothing, then Redis loses them.
    env.signal_worker(0, Signal::SIGSTOP);
    for a in &agents {
        env.cli_ok(&["stop", &a.id.to_string(), "--no-wait"]);
    }
    let pending = store
        .pending_controls(&worker.id, &worker.node_id)
        .await
        .unwrap();
    assert_eq!(pending.len(), 2);
    let client = redis::Client::open(redis_url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("FLUSHALL")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    // And one of them arrives three times.
    let queue = Queue::Redis(Box::new(
        RedisQueue::connect(
            &redis_url,
            &env.prefix,
            Duration::from_secs(1),
            Duration::from_secs(5),
        )
        .await
        .unwrap(),
    ));
    let job = ControlJob {
        request_id: pending[0],
        trace_context: Default::default(),
    };
    for _ in 0..3 {
        queue
            .push_control(&ControlTarget::Worker(worker.id.clone()), &job)
            .await
            .unwrap();
    }
    env.signal_worker(0, Signal::SIGCONT);

    for a in &agents {
        let stopped = env.wait_final(a.id, Duration::from_secs(60)).await;
        assert_status(&stopped, AgentStatus::Stopped);
        assert_eq!(stopped_events(&env, a.id).await, 1, "one stop per agent");
    }
    // The worker closes a request once its agent has stopped: wait for both.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stats = store.queue_stats().await.unwrap();
        let done = stats
            .by_kind
            .get("stop")
            .and_then(|s| s.get("done"))
            .copied();
        if done == Some(2) {
            break;
        }
        assert!(Instant::now() < deadline, "{stats:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let handled = env.worker_log(0).matches("control request handled").count();
    assert_eq!(handled, 2, "each stop handled once:\n{}", env.worker_log(0));
    env.stop_workers();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forged_live_status_ends_neither_spawn_wait_nor_logs_follow() {
    let mut env = TestEnv::new().await;
    env.start_worker(&[]);
    let quiet = |mut cmd: Command| {
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        cmd.spawn().unwrap()
    };
    let mut spawn_wait = quiet(env.command(&[
        "spawn",
        "--project",
        "demo",
        "--name",
        "forged-otter",
        "--wait",
        "hold on\n#hold 6",
    ]));
    let store = env.store().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let agent = loop {
        if let Ok(a) = store.agent("forged-otter").await
            && a.status == AgentStatus::Running
        {
            break a;
        }
        assert!(Instant::now() < deadline, "the agent never ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut follow = quiet(env.command(&["logs", "-f", "forged-otter"]));
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Final statuses at every next sequence number, none of them stored.
    let client = redis::Client::open(env.redis_url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    for seq in 1..=40 {
        let forged = agentfleet::domain::StoredEvent {
            seq,
            kind: STATUS_EVENT.into(),
            data: serde_json::json!({"kind": STATUS_EVENT, "status": "completed"}),
            created_at: chrono::Utc::now(),
        };
        redis::cmd("PUBLISH")
            .arg(format!("{}:events:{}", env.prefix, agent.id))
            .arg(serde_json::to_string(&forged).unwrap())
            .query_async::<i64>(&mut conn)
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        spawn_wait.try_wait().unwrap().is_none(),
        "spawn --wait ended on a forged event"
    );
    assert!(
        follow.try_wait().unwrap().is_none(),
        "logs -f ended on a forged event"
    );
    assert_status(
        &store.agent("forged-otter").await.unwrap(),
        AgentStatus::Running,
    );

    // The real end still ends both.
    let wait_exit = |child: &mut Child| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "did not end with the agent");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    assert!(wait_exit(&mut spawn_wait).success());
    assert!(wait_exit(&mut follow).success());
    env.stop_workers();
}

/// Whether the agent's folder (checkout and run files) is still on the node.
fn has_folder(env: &TestEnv, name: &str) -> bool {
    env.dir.path().join("worker0/agents").join(name).exists()
}

async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < limit,
            "{what} did not happen in {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread")]
async fn dismiss_and_cleanup_are_pushed_and_free_an_ended_agents_checkout() {
    let mut env = TestEnv::new().await;
    env.start_worker(&[SLOW_POLL]);
    let pushes = watch_control_pushes(&env).await;

    let holding = env.spawn(&["--name", "holding-otter"], "hold on\n#hold 120");
    env.wait_agent(holding.id, Duration::from_secs(60), "running", |a| {
        a.status == AgentStatus::Running
    })
    .await;
    // A running agent: cleanup is refused and changes nothing; dismiss hides it, and it
    // runs on with its checkout.
    let refused = env.cli(&["cleanup", "holding-otter"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("stop it first"), "{stderr}");
    env.cli_ok(&["dismiss", "holding-otter"]);
    let listed = env.cli_ok(&["list"]);
    assert!(!listed.contains("holding-otter"), "{listed}");
    assert!(env.cli_ok(&["list", "--all"]).contains("holding-otter"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let store = env.store().await;
    assert_status(
        &store.agent("holding-otter").await.unwrap(),
        AgentStatus::Running,
    );
    assert!(has_folder(&env, "holding-otter"));
    assert_eq!(*pushes.borrow(), 0, "nothing to send for a running agent");

    // An ended agent: cleanup frees its checkout on the node at once (pushed: the
    // fallback poll is a minute), and keeps its record, events and branch.
    let done = env.spawn(&["--name", "done-otter"], "all done");
    assert_status(
        &env.wait_final(done.id, Duration::from_secs(60)).await,
        AgentStatus::Completed,
    );
    assert!(has_folder(&env, "done-otter"));
    env.cli_ok(&["cleanup", "done-otter"]);
    let took = wait_until("the cleanup", Duration::from_secs(10), || {
        !has_folder(&env, "done-otter")
    })
    .await;
    assert!(took < Duration::from_secs(8), "{took:?}");
    assert_eq!(*pushes.borrow(), 1, "the cleanup was pushed");
    let kept = store.agent("done-otter").await.unwrap();
    assert_status(&kept, AgentStatus::Completed);
    // The worker records `checkout.removed` just after the folder is gone.
    let started = Instant::now();
    loop {
        let events = store.events_after(done.id, 0).await.unwrap();
        if events
            .iter()
            .any(|e| e.kind == "checkout.removed" && e.data["request"] == "cleanup")
        {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{events:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        has_folder(&env, "holding-otter"),
        "only its own folder went"
    );

    // Dismissing an ended agent hides it and frees its checkout the same way.
    let other = env.spawn(&["--name", "other-otter"], "all done");
    env.wait_final(other.id, Duration::from_secs(60)).await;
    env.cli_ok(&["dismiss", "other-otter"]);
    wait_until("the dismiss", Duration::from_secs(8), || {
        !has_folder(&env, "other-otter")
    })
    .await;
    assert_eq!(*pushes.borrow(), 2, "the dismiss was pushed");
    assert!(store.agent("other-otter").await.unwrap().dismissed);
    // Both requests are done (just after the folder went): nothing pending shows.
    wait_until("the dismiss request's end", Duration::from_secs(5), || {
        let shown: serde_json::Value =
            serde_json::from_str(&env.cli_ok(&["get", "other-otter", "--json"])).unwrap();
        shown["pending_requests"] == serde_json::json!([])
    })
    .await;
    env.stop_workers();
}
