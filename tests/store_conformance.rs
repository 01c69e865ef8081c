//! The store port's conformance suite: every test runs against Postgres (a fresh database)
//! and SQLite (a fresh file), so the two adapters cannot drift. A new store operation gets
//! its test here, listed in `conformance!` at the bottom.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use agentfleet::domain::{AgentMode, AgentOutcome, AgentStatus, PendingQuestion};
use agentfleet::store::{NewEvent, Owner, ProcessRecord, SpawnRecord, Store, StoreError};
use serde_json::json;
use uuid::Uuid;

const LEASE: Duration = Duration::from_secs(30);

async fn with_project(store: &Store) {
    store
        .add_project("demo", "/tmp/demo.git", "main")
        .await
        .unwrap();
}

fn spawn_of<'a>(name: &'a str, key: Option<&'a str>) -> SpawnRecord<'a> {
    SpawnRecord {
        name,
        provider: "claude",
        mode: AgentMode::Execute,
        project: "demo",
        task_id: Some("task-1"),
        idempotency_key: key,
        payload: json!({"prompt": format!("work of {name}"), "nested": {"n": 1}}),
    }
}

async fn worker(store: &Store, id: &str, ttl: Duration) -> Owner {
    let epoch = store
        .register_worker(
            &agentfleet::store::NewWorker {
                id,
                node_id: "node-a",
                host: "host-a",
                pid: 4242,
                pid_start_time: None,
                capacity: 2,
            },
            ttl,
        )
        .await
        .unwrap();
    Owner {
        worker_id: id.to_string(),
        epoch,
    }
}

/// A spawned agent claimed by a fresh worker: (agent id, its owner).
async fn claimed_agent(store: &Store, name: &str) -> (Uuid, Owner) {
    let recorded = store.record_spawn(spawn_of(name, None)).await.unwrap();
    let owner = worker(store, &format!("w-{name}"), LEASE).await;
    let claimed = store
        .claim_request(recorded.request_id, &owner, "node-a")
        .await
        .unwrap()
        .expect("claim");
    (claimed.agent.id, owner)
}

fn event(seq: i64, kind: &str, data: serde_json::Value) -> NewEvent {
    NewEvent {
        seq,
        kind: kind.to_string(),
        data,
    }
}

async fn projects_are_added_once_found_and_listed(store: &Store) {
    let zeta = store
        .add_project("zeta", "/r/z.git", "trunk")
        .await
        .unwrap();
    let alpha = store
        .add_project("alpha", "/r/a.git", "main")
        .await
        .unwrap();
    assert_eq!(zeta.default_branch, "trunk");
    assert!(matches!(
        store.add_project("alpha", "/other.git", "main").await,
        Err(StoreError::ProjectExists(name)) if name == "alpha"
    ));
    assert_eq!(store.project("alpha").await.unwrap(), alpha);
    assert_eq!(store.project_by_id(zeta.id).await.unwrap(), zeta);
    let names: Vec<String> = store
        .list_projects()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["alpha", "zeta"]);
    assert!(matches!(
        store.project("ghost").await,
        Err(StoreError::UnknownProject(_))
    ));
}

async fn record_spawn_is_idempotent_per_key(store: &Store) {
    with_project(store).await;
    let first = store
        .record_spawn(spawn_of("brave-otter", Some("key-1")))
        .await
        .unwrap();
    assert!(first.created);
    assert_eq!(first.agent.status, AgentStatus::Pending);
    assert_eq!(first.agent.branch, "agent/brave-otter");
    assert_eq!(first.agent.project, "demo");
    assert_eq!(first.agent.task_id.as_deref(), Some("task-1"));
    // Same key, even under another name: the same agent and request, nothing new.
    let again = store
        .record_spawn(spawn_of("other-name", Some("key-1")))
        .await
        .unwrap();
    assert!(!again.created);
    assert_eq!(again.agent.id, first.agent.id);
    assert_eq!(again.request_id, first.request_id);
    assert_eq!(store.count_agents().await.unwrap(), 1);
    assert_eq!(
        store.pending_requests(10).await.unwrap(),
        vec![first.request_id]
    );
    let by_name = store.agent("brave-otter").await.unwrap();
    let by_id = store.agent(&first.agent.id.to_string()).await.unwrap();
    assert_eq!(by_name, by_id);
}

async fn record_spawn_refuses_a_taken_name_and_an_unknown_project(store: &Store) {
    with_project(store).await;
    store.record_spawn(spawn_of("taken", None)).await.unwrap();
    assert!(store.name_taken("taken").await.unwrap());
    assert!(!store.name_taken("free").await.unwrap());
    assert!(matches!(
        store.record_spawn(spawn_of("taken", None)).await,
        Err(StoreError::NameTaken(name)) if name == "taken"
    ));
    let mut ghost = spawn_of("ghost-agent", None);
    ghost.project = "ghost";
    assert!(matches!(
        store.record_spawn(ghost).await,
        Err(StoreError::UnknownProject(_))
    ));
    assert_eq!(store.count_agents().await.unwrap(), 1);
    assert!(matches!(
        store.agent("nobody").await,
        Err(StoreError::UnknownAgent(_))
    ));
}

async fn pending_requests_come_oldest_first(store: &Store) {
    with_project(store).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let name = format!("agent-{i}");
        ids.push(
            store
                .record_spawn(spawn_of(&name, None))
                .await
                .unwrap()
                .request_id,
        );
    }
    assert_eq!(store.pending_requests(10).await.unwrap(), ids);
    assert_eq!(store.pending_requests(2).await.unwrap(), ids[..2]);
}

async fn two_concurrent_claimers_claim_a_request_once(store: &Store) {
    with_project(store).await;
    let a = worker(store, "worker-a", LEASE).await;
    let b = worker(store, "worker-b", LEASE).await;
    assert_ne!(a.epoch, b.epoch);
    for i in 0..10 {
        let name = format!("contended-{i}");
        let recorded = store.record_spawn(spawn_of(&name, None)).await.unwrap();
        let claim = |owner: Owner| {
            let store = store.clone();
            let request = recorded.request_id;
            tokio::spawn(async move { store.claim_request(request, &owner, "node-a").await })
        };
        let (first, second) = (claim(a.clone()), claim(b.clone()));
        let results = [
            first.await.unwrap().unwrap(),
            second.await.unwrap().unwrap(),
        ];
        let winners: Vec<_> = results.iter().flatten().collect();
        assert_eq!(winners.len(), 1, "request {i}: exactly one claim wins");
        let won = winners[0];
        assert_eq!(won.attempts, 1);
        assert_eq!(won.agent.status, AgentStatus::Starting);
        assert_eq!(won.agent.node_id.as_deref(), Some("node-a"));
        assert_eq!(won.payload["nested"]["n"], 1);
        let owner = if won.agent.worker_id.as_deref() == Some("worker-a") {
            &a
        } else {
            &b
        };
        assert_eq!(won.agent.owner_epoch, Some(owner.epoch));
        // Delivered again later: still nobody else's.
        assert!(
            store
                .claim_request(recorded.request_id, &a, "node-a")
                .await
                .unwrap()
                .is_none()
        );
    }
    assert!(store.pending_requests(10).await.unwrap().is_empty());
}

async fn claims_need_a_live_lease_of_the_current_epoch(store: &Store) {
    with_project(store).await;
    let recorded = store.record_spawn(spawn_of("leased", None)).await.unwrap();
    let live = worker(store, "worker-live", LEASE).await;
    let stale = Owner {
        worker_id: live.worker_id.clone(),
        epoch: live.epoch - 1,
    };
    assert!(
        store
            .claim_request(recorded.request_id, &stale, "node-a")
            .await
            .unwrap()
            .is_none()
    );
    let expiring = worker(store, "worker-expiring", Duration::from_millis(50)).await;
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert!(
        store
            .claim_request(recorded.request_id, &expiring, "node-a")
            .await
            .unwrap()
            .is_none(),
        "an expired lease claims nothing"
    );
    store.deregister_worker(&live, None).await.unwrap();
    assert!(
        store
            .claim_request(recorded.request_id, &live, "node-a")
            .await
            .unwrap()
            .is_none(),
        "a deregistered worker claims nothing"
    );
    assert_eq!(
        store.pending_requests(10).await.unwrap(),
        vec![recorded.request_id]
    );
}

async fn fenced_writes_are_refused_for_a_wrong_epoch(store: &Store) {
    with_project(store).await;
    let (agent, owner) = claimed_agent(store, "fenced").await;
    let stale = Owner {
        worker_id: owner.worker_id.clone(),
        epoch: owner.epoch + 100,
    };
    let stranger = worker(store, "stranger", LEASE).await;
    let process = ProcessRecord {
        pid: 77,
        pid_start_time: 12345,
        output_path: "/tmp/out.jsonl".into(),
        workdir: "/tmp/wd".into(),
    };
    for wrong in [&stale, &stranger] {
        assert!(!store.mark_running(agent, wrong, &process).await.unwrap());
        assert!(!store.set_session_id(agent, wrong, "sid").await.unwrap());
        assert!(
            !store
                .append_events(agent, wrong, &[event(1, "x", json!(1))], 0)
                .await
                .unwrap()
        );
        let outcome = outcome(AgentStatus::Completed);
        assert!(!store.finish_agent(agent, wrong, &outcome).await.unwrap());
    }
    let untouched = store.agent(&agent.to_string()).await.unwrap();
    assert_eq!(untouched.status, AgentStatus::Starting);
    assert_eq!(untouched.pid, None);
    assert_eq!(store.last_event_seq(agent).await.unwrap(), 0);

    assert!(store.mark_running(agent, &owner, &process).await.unwrap());
    assert!(store.set_session_id(agent, &owner, "sid-1").await.unwrap());
    let running = store.agent(&agent.to_string()).await.unwrap();
    assert_eq!(running.status, AgentStatus::Running);
    assert_eq!(running.pid, Some(77));
    assert_eq!(running.workdir.as_deref(), Some("/tmp/wd"));
    assert_eq!(running.output_path.as_deref(), Some("/tmp/out.jsonl"));
    assert_eq!(running.session_id.as_deref(), Some("sid-1"));
    assert!(running.started_at.is_some());
}

async fn events_are_appended_once_and_read_in_order(store: &Store) {
    with_project(store).await;
    let (agent, owner) = claimed_agent(store, "chatty").await;
    assert!(store.append_events(agent, &owner, &[], 0).await.unwrap());
    let first = [
        event(1, "status", json!({"status": "running", "pid": 9})),
        event(2, "assistant_text", json!("a plain string")),
        event(
            3,
            "usage",
            json!({"tokens": [1, 2, 3], "cost": 0.5, "none": null}),
        ),
    ];
    assert!(store.append_events(agent, &owner, &first, 0).await.unwrap());
    // A retried batch (overlapping what is stored) keeps the first copy.
    let second = [
        event(3, "usage", json!("replaced?")),
        event(4, "result", json!({"text": "done ✓"})),
        event(5, "status", json!({"status": "completed"})),
    ];
    assert!(
        store
            .append_events(agent, &owner, &second, 0)
            .await
            .unwrap()
    );
    assert!(
        store
            .append_events(agent, &owner, &second[..1], 0)
            .await
            .unwrap(),
        "an all-duplicate batch by the owner is not a fence"
    );
    let events = store.events_after(agent, 0).await.unwrap();
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    assert_eq!(events[1].data, json!("a plain string"));
    assert_eq!(events[2].data, first[2].data);
    assert_eq!(events[3].data["text"], "done ✓");
    assert_eq!(events[4].kind, "status");
    assert!(
        events
            .windows(2)
            .all(|w| w[0].created_at <= w[1].created_at)
    );
    let tail: Vec<i64> = store
        .events_after(agent, 3)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(tail, [4, 5]);
    assert_eq!(store.last_event_seq(agent).await.unwrap(), 5);
    assert_eq!(store.last_event_seq(Uuid::now_v7()).await.unwrap(), 0);
}

fn outcome(status: AgentStatus) -> AgentOutcome {
    AgentOutcome {
        status,
        result: None,
        questions: Vec::new(),
        error: None,
        exit_code: Some(0),
        session_id: None,
    }
}

async fn finish_agent_records_the_outcome_and_closes_the_request(store: &Store) {
    with_project(store).await;
    let (asking, owner) = claimed_agent(store, "asking").await;
    let mut waiting = outcome(AgentStatus::WaitingForInput);
    waiting.result = Some("need input".into());
    waiting.session_id = Some("sid-9".into());
    waiting.questions = vec![PendingQuestion {
        id: "q1".into(),
        question: "Which database?".into(),
    }];
    assert!(store.finish_agent(asking, &owner, &waiting).await.unwrap());
    let agent = store.agent(&asking.to_string()).await.unwrap();
    assert_eq!(agent.status, AgentStatus::WaitingForInput);
    assert_eq!(agent.result.as_deref(), Some("need input"));
    assert_eq!(agent.session_id.as_deref(), Some("sid-9"));
    assert_eq!(agent.pending_questions, waiting.questions);
    assert_eq!(agent.exit_code, Some(0));
    assert!(agent.finished_at.is_some());

    let (crashing, owner) = claimed_agent(store, "crashing").await;
    let mut crashed = outcome(AgentStatus::Crashed);
    crashed.exit_code = Some(3);
    crashed.error = Some("exited with code 3".into());
    assert!(
        store
            .finish_agent(crashing, &owner, &crashed)
            .await
            .unwrap()
    );
    let agent = store.agent(&crashing.to_string()).await.unwrap();
    assert_eq!(agent.status, AgentStatus::Crashed);
    assert_eq!(agent.error.as_deref(), Some("exited with code 3"));
    assert!(agent.pending_questions.is_empty());
    assert!(store.pending_requests(10).await.unwrap().is_empty());
    let statuses: HashSet<AgentStatus> = store
        .list_agents(true)
        .await
        .unwrap()
        .iter()
        .map(|a| a.status)
        .collect();
    assert_eq!(
        statuses,
        HashSet::from([AgentStatus::WaitingForInput, AgentStatus::Crashed])
    );
}

async fn failed_requests_fail_their_agent_and_bad_jobs_are_kept(store: &Store) {
    with_project(store).await;
    let recorded = store.record_spawn(spawn_of("doomed", None)).await.unwrap();
    store
        .fail_request(recorded.request_id, "payload cannot be decoded")
        .await
        .unwrap();
    let agent = store.agent("doomed").await.unwrap();
    assert_eq!(agent.status, AgentStatus::Failed);
    assert_eq!(agent.error.as_deref(), Some("payload cannot be decoded"));
    assert!(store.pending_requests(10).await.unwrap().is_empty());

    store
        .record_job_failure("q", None, "{\"not\":1}", "cannot be decoded", "w1")
        .await
        .unwrap();
    assert_eq!(
        store.job_failures().await.unwrap(),
        vec![("{\"not\":1}".to_string(), "cannot be decoded".to_string())]
    );
}

async fn worker_leases_renew_and_deregister(store: &Store) {
    let a = worker(store, "worker-a", LEASE).await;
    let b = worker(store, "worker-b", LEASE).await;
    assert!(b.epoch > a.epoch, "epochs only grow");
    assert!(store.renew_lease(&a, LEASE, 2).await.unwrap());
    let stale = Owner {
        worker_id: a.worker_id.clone(),
        epoch: b.epoch + 1,
    };
    assert!(!store.renew_lease(&stale, LEASE, 0).await.unwrap());
    let workers = store.list_workers().await.unwrap();
    assert_eq!(workers.len(), 2);
    let wa = workers.iter().find(|w| w.id == "worker-a").unwrap();
    assert_eq!(wa.status, "alive");
    assert_eq!(wa.running, 2);
    assert_eq!(wa.capacity, 2);
    assert_eq!(wa.epoch, a.epoch);
    assert_eq!(wa.node_id, "node-a");
    assert!(wa.lease_expires_at > wa.last_heartbeat_at);
    assert!(
        (0.0..5.0).contains(&wa.lease_age_seconds),
        "{}",
        wa.lease_age_seconds
    );

    store.deregister_worker(&a, None).await.unwrap();
    assert!(!store.renew_lease(&a, LEASE, 0).await.unwrap());
    let workers = store.list_workers().await.unwrap();
    let wa = workers.iter().find(|w| w.id == "worker-a").unwrap();
    assert_eq!(wa.status, "stopped");
    assert_eq!(wa.running, 0);
    assert!(store.renew_lease(&b, LEASE, 1).await.unwrap());
}

async fn ping_and_migrate_again(store: &Store) {
    store.ping().await.unwrap();
    store.migrate().await.unwrap();
}

async fn queue_stats_count_the_backlog_and_requests_by_kind(store: &Store) {
    with_project(store).await;
    let empty = store.queue_stats().await.unwrap();
    assert_eq!(empty.depth, 0);
    assert_eq!(empty.oldest_pending_at, None);
    assert_eq!(empty.oldest_pending_age_seconds, None);
    let first = store.record_spawn(spawn_of("qs-a", None)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    store.record_spawn(spawn_of("qs-b", None)).await.unwrap();
    store.record_spawn(spawn_of("qs-c", None)).await.unwrap();
    let owner = worker(store, "w-qs", LEASE).await;
    store
        .claim_request(first.request_id, &owner, "node-a")
        .await
        .unwrap()
        .expect("claim");
    let stats = store.queue_stats().await.unwrap();
    assert_eq!(stats.depth, 2, "{stats:?}");
    let oldest = stats.oldest_pending_at.expect("oldest pending");
    assert!(oldest > first.agent.created_at, "{stats:?}");
    let age = stats.oldest_pending_age_seconds.expect("age");
    assert!((0.0..60.0).contains(&age), "{stats:?}");
    assert_eq!(stats.by_kind["spawn"]["pending"], 2, "{stats:?}");
    assert_eq!(stats.by_kind["spawn"]["claimed"], 1, "{stats:?}");
    assert_eq!(stats.agents_by_status["pending"], 2, "{stats:?}");
    assert_eq!(stats.agents_by_status.values().sum::<i64>(), 3, "{stats:?}");
}

async fn spawn_trace_context_is_read_from_the_stored_payload(store: &Store) {
    with_project(store).await;
    let mut spawn = spawn_of("tc-a", None);
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    spawn.payload["trace_context"] = json!({"traceparent": traceparent, "tracestate": "a=1"});
    let with = store.record_spawn(spawn).await.unwrap();
    let without = store.record_spawn(spawn_of("tc-b", None)).await.unwrap();
    let cx = store.spawn_trace_context(with.request_id).await.unwrap();
    assert_eq!(cx["traceparent"], traceparent);
    assert_eq!(cx["tracestate"], "a=1");
    assert!(
        store
            .spawn_trace_context(without.request_id)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .spawn_trace_context(Uuid::new_v4())
            .await
            .unwrap()
            .is_empty()
    );
}

/// One test per operation group, for each adapter.
macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $test() {
                    let fresh = crate::common::FreshStore::new(
                        agentfleet::store::StoreKind::Postgres,
                    )
                    .await;
                    super::$test(&fresh.store).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $test() {
                    let fresh = crate::common::FreshStore::new(
                        agentfleet::store::StoreKind::Sqlite,
                    )
                    .await;
                    super::$test(&fresh.store).await;
                }
            )*
        }
    };
}

conformance!(
    projects_are_added_once_found_and_listed,
    record_spawn_is_idempotent_per_key,
    record_spawn_refuses_a_taken_name_and_an_unknown_project,
    pending_requests_come_oldest_first,
    two_concurrent_claimers_claim_a_request_once,
    claims_need_a_live_lease_of_the_current_epoch,
    fenced_writes_are_refused_for_a_wrong_epoch,
    events_are_appended_once_and_read_in_order,
    finish_agent_records_the_outcome_and_closes_the_request,
    failed_requests_fail_their_agent_and_bad_jobs_are_kept,
    worker_leases_renew_and_deregister,
    ping_and_migrate_again,
    queue_stats_count_the_backlog_and_requests_by_kind,
    spawn_trace_context_is_read_from_the_stored_payload,
);
