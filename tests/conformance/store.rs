//! The store port's conformance suite: every test runs against Postgres (a fresh database)
//! and SQLite (a fresh file), so the two adapters cannot drift. A new store operation gets
//! its test here, listed in `conformance!` at the bottom.

use std::collections::HashSet;
use std::time::Duration;

use agentfleet::domain::AccountKind;
use agentfleet::domain::{AgentMode, AgentOutcome, AgentStatus, PendingQuestion};
use agentfleet::domain::{Cursor, PageRequest};
use agentfleet::store::{
    AcquireParams, AgentQuery, ControlKind, EventAppend, JobFailure, NewAccount, NewEvent, Owner,
    ProcessRecord, ReconcileParams, ReconcilePolicy, SpawnRecord, Store, StoreError, UsageEntry,
    UsageQuery,
};
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
        request_hash: "the-same-request",
        payload: json!({"prompt": format!("work of {name}"), "nested": {"n": 1}}),
        model: None,
        budget: None,
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

/// Owners whose writes about `owner`'s agents are refused: its worker under a stale epoch,
/// and another worker.
async fn wrong_owners(store: &Store, owner: &Owner) -> [Owner; 2] {
    let stale = Owner {
        worker_id: owner.worker_id.clone(),
        epoch: owner.epoch + 100,
    };
    [stale, worker(store, "stranger", LEASE).await]
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

/// Records a spawn named `name` on `project` for `provider`, with task id `task`.
async fn spawned(store: &Store, name: &str, project: &str, provider: &str, task: &str) -> Uuid {
    let spawn = SpawnRecord {
        name,
        provider,
        project,
        task_id: Some(task),
        ..spawn_of(name, None)
    };
    store.record_spawn(spawn).await.unwrap().agent.id
}

/// Every page of `query`, in order, with the hook run between pages.
async fn pages(
    store: &Store,
    mut query: AgentQuery,
    between: impl AsyncFn(usize),
) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    loop {
        let page = store.list_agents(&query).await.unwrap();
        assert!(page.items.len() <= query.page.limit as usize);
        pages.push(page.items.iter().map(|a| a.name.clone()).collect());
        between(pages.len()).await;
        match page.next_cursor {
            Some(next) => query.page.after = Some(Cursor::decode(&next).unwrap()),
            None => return pages,
        }
    }
}

async fn agent_lists_filter_and_page_newest_first(store: &Store) {
    with_project(store).await;
    store
        .add_project("second", "/tmp/second.git", "main")
        .await
        .unwrap();
    let mut ids = Vec::new();
    for n in 0..23 {
        let project = if n % 2 == 0 { "demo" } else { "second" };
        let provider = if n % 3 == 0 { "codex" } else { "claude" };
        let task = format!("task-{}", n % 4);
        ids.push(spawned(store, &format!("agent-{n:02}"), project, provider, &task).await);
        // Apart in time even at SQLite's millisecond precision (the window below).
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // LIKE's wildcards in a prefix are taken literally.
    let literal = spawned(store, "x_y-1", "demo", "claude", "t").await;
    spawned(store, "xzy-2", "demo", "claude", "t").await;
    spawned(store, "X-case", "demo", "claude", "t").await;
    store
        .finish_unowned(ids[1], "failed", "broke")
        .await
        .unwrap();
    store
        .finish_unowned(ids[2], "stopped", "asked")
        .await
        .unwrap();
    store.set_dismissed(ids[2]).await.unwrap();

    // Pages of 7 cover every agent once, newest first, while agents are added between pages
    // (newer: they belong before the first page, not in the ones that follow).
    let all = AgentQuery {
        page: PageRequest {
            limit: 7,
            after: None,
        },
        include_dismissed: true,
        ..AgentQuery::default()
    };
    let names: Vec<String> = pages(store, all, async |n| {
        spawned(store, &format!("late-{n}"), "demo", "claude", "t").await;
    })
    .await
    .concat();
    assert_eq!(names.len(), 26, "{names:?}");
    let listed: HashSet<_> = names.iter().collect();
    assert_eq!(listed.len(), 26, "an agent shown twice: {names:?}");
    assert!(names.iter().all(|n| !n.starts_with("late-")), "{names:?}");
    let everyone = store
        .list_agents(&AgentQuery::with_dismissed())
        .await
        .unwrap()
        .items;
    let order: Vec<_> = everyone.iter().map(|a| (a.created_at, a.id)).collect();
    let mut newest_first = order.clone();
    newest_first.sort_by(|a, b| b.cmp(a));
    assert_eq!(order, newest_first);

    let query = |q: AgentQuery| async move {
        let mut names: Vec<String> = store
            .list_agents(&q)
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|a| a.name)
            .collect();
        names.sort();
        names
    };
    assert_eq!(
        query(AgentQuery {
            statuses: vec![AgentStatus::Failed, AgentStatus::Stopped],
            include_dismissed: true,
            ..AgentQuery::default()
        })
        .await,
        ["agent-01", "agent-02"]
    );
    // Several statuses, paged: each once, newest first, across the statuses.
    let two = AgentQuery {
        statuses: vec![
            AgentStatus::Pending,
            AgentStatus::Failed,
            AgentStatus::Pending,
        ],
        include_dismissed: true,
        page: PageRequest {
            limit: 4,
            after: None,
        },
        ..AgentQuery::default()
    };
    let paged: Vec<String> = pages(store, two, async |_| {}).await.concat();
    let expected: Vec<String> = store
        .list_agents(&AgentQuery::with_dismissed())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|a| a.status != AgentStatus::Stopped)
        .map(|a| a.name)
        .collect();
    assert_eq!(paged, expected);
    assert_eq!(paged.len(), 29, "{paged:?}");
    // Dismissed agents only when asked for.
    assert_eq!(
        query(AgentQuery {
            statuses: vec![AgentStatus::Stopped],
            ..AgentQuery::default()
        })
        .await,
        Vec::<String>::new()
    );
    let second_codex = query(AgentQuery {
        project: Some("second".into()),
        provider: Some("codex".into()),
        ..AgentQuery::default()
    })
    .await;
    assert_eq!(
        second_codex,
        ["agent-03", "agent-09", "agent-15", "agent-21"]
    );
    let task = query(AgentQuery {
        task_id: Some("task-3".into()),
        ..AgentQuery::default()
    })
    .await;
    assert_eq!(
        task,
        ["agent-03", "agent-07", "agent-11", "agent-15", "agent-19"]
    );
    let prefixed = query(AgentQuery {
        name_prefix: Some("x_".into()),
        ..AgentQuery::default()
    })
    .await;
    assert_eq!(prefixed, ["x_y-1"]);
    let searched = query(AgentQuery {
        search: Some("task-3".into()),
        ..AgentQuery::default()
    })
    .await;
    assert_eq!(searched, task, "a task id");
    let searched = query(AgentQuery {
        search: Some("agent-2".into()),
        ..AgentQuery::default()
    })
    .await;
    assert_eq!(
        searched,
        ["agent-20", "agent-21", "agent-22"],
        "a name prefix"
    );
    // Case-sensitive in both dialects.
    for (prefix, expected) in [("X", vec!["X-case"]), ("x-", vec![])] {
        let q = AgentQuery {
            name_prefix: Some(prefix.into()),
            ..AgentQuery::default()
        };
        assert_eq!(query(q).await, expected, "{prefix}");
    }
    assert_eq!(store.agent_by_id(literal).await.unwrap().name, "x_y-1");
    // A window of creation times: [after, before).
    let at = |i: usize| everyone.iter().find(|a| a.id == ids[i]).unwrap().created_at;
    let window = query(AgentQuery {
        created_after: Some(at(5)),
        created_before: Some(at(8)),
        ..AgentQuery::default()
    })
    .await;
    assert_eq!(window, ["agent-05", "agent-06", "agent-07"]);
    // A cursor that names no agent id is the caller's mistake, not the database's.
    let bad = AgentQuery {
        page: PageRequest {
            limit: 5,
            after: Some(Cursor::new(chrono::Utc::now(), "not-an-id")),
        },
        ..AgentQuery::default()
    };
    assert!(matches!(
        store.list_agents(&bad).await,
        Err(StoreError::InvalidQuery(_))
    ));
}

async fn projects_are_updated_and_removed_with_their_ended_agents_only(store: &Store) {
    with_project(store).await;
    let moved = store
        .update_project("demo", Some("/r/moved.git"), None)
        .await
        .unwrap();
    assert_eq!(
        (moved.remote_url.as_str(), moved.default_branch.as_str()),
        ("/r/moved.git", "main")
    );
    let moved = store
        .update_project("demo", None, Some("trunk"))
        .await
        .unwrap();
    assert_eq!(moved.remote_url, "/r/moved.git");
    assert_eq!(store.project("demo").await.unwrap(), moved);
    assert!(matches!(
        store.update_project("ghost", Some("/x.git"), None).await,
        Err(StoreError::UnknownProject(name)) if name == "ghost"
    ));

    // A running agent keeps the project, and nothing is removed.
    let (running, owner) = claimed_agent(store, "busy-otter").await;
    let ended = store
        .record_spawn(spawn_of("done-otter", None))
        .await
        .unwrap();
    store
        .finish_unowned(ended.agent.id, "completed", "")
        .await
        .unwrap();
    store
        .append_event_unowned(ended.agent.id, "note", &json!({"kind": "note"}))
        .await
        .unwrap();
    assert!(matches!(
        store.remove_project("demo").await,
        Err(StoreError::ProjectBusy { name, live: 1 }) if name == "demo"
    ));
    assert!(store.agent_by_id(ended.agent.id).await.is_ok());
    assert!(store.project("demo").await.is_ok());

    // Once it has ended, the project goes with both agents' records.
    let outcome = AgentOutcome {
        status: AgentStatus::Stopped,
        result: None,
        questions: Vec::new(),
        error: None,
        exit_code: None,
        session_id: None,
    };
    assert!(store.finish_agent(running, &owner, &outcome).await.unwrap());
    assert_eq!(store.remove_project("demo").await.unwrap(), 2);
    assert!(matches!(
        store.project("demo").await,
        Err(StoreError::UnknownProject(_))
    ));
    for id in [running, ended.agent.id] {
        assert!(matches!(
            store.agent_by_id(id).await,
            Err(StoreError::UnknownAgent(_))
        ));
        assert!(store.events_after(id, 0).await.unwrap().is_empty());
    }
    assert!(matches!(
        store.remove_project("demo").await,
        Err(StoreError::UnknownProject(_))
    ));
    // The name is free again.
    store
        .add_project("demo", "/r/new.git", "main")
        .await
        .unwrap();
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
    assert_eq!(store.agent_by_id(first.agent.id).await.unwrap(), by_id);

    // The key with a different request: refused, nothing written.
    let mut different = spawn_of("third-name", Some("key-1"));
    different.request_hash = "another-request";
    assert!(matches!(
        store.record_spawn(different).await,
        Err(StoreError::IdempotencyKeyReused(key)) if key == "key-1"
    ));
    assert_eq!(store.count_agents().await.unwrap(), 1);
    assert!(store.agent("third-name").await.is_err());
}

/// Retries of one spawn racing each other (the same key, the same explicit name) are one
/// spawn: one records it, every other gets the same agent, none sees its name as taken.
async fn concurrent_retries_of_a_keyed_spawn_get_one_agent(store: &Store) {
    with_project(store).await;
    let tries = (0..20).map(|_| store.record_spawn(spawn_of("retried-otter", Some("retry-key"))));
    let results = futures::future::join_all(tries).await;
    let recorded: Vec<_> = results
        .into_iter()
        .map(|r| r.expect("every retry gets the agent"))
        .collect();
    assert_eq!(recorded.iter().filter(|r| r.created).count(), 1);
    let first = &recorded[0].agent.id;
    assert!(recorded.iter().all(|r| &r.agent.id == first));
    assert_eq!(store.count_agents().await.unwrap(), 1);
}

/// A name shaped like another agent's id does not shadow it: a reference that parses as
/// an id finds only the agent with that id.
async fn a_reference_that_parses_as_an_id_finds_only_that_id(store: &Store) {
    with_project(store).await;
    let victim = store.record_spawn(spawn_of("victim", None)).await.unwrap();
    let id = victim.agent.id.to_string();
    // The front door refuses such names; a row recorded before it did must not win.
    store.record_spawn(spawn_of(&id, None)).await.unwrap();
    // An update moves the victim's row behind the impostor's (as a running agent's do).
    store.set_dismissed(victim.agent.id).await.unwrap();
    for _ in 0..5 {
        assert_eq!(store.agent(&id).await.unwrap().id, victim.agent.id);
    }
    let simple = victim.agent.id.simple().to_string();
    assert_eq!(store.agent(&simple).await.unwrap().id, victim.agent.id);
}

async fn record_spawn_refuses_a_taken_name_and_an_unknown_project(store: &Store) {
    with_project(store).await;
    store.record_spawn(spawn_of("taken", None)).await.unwrap();
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
    assert!(matches!(
        store.agent_by_id(Uuid::now_v7()).await,
        Err(StoreError::UnknownAgent(_))
    ));
}

/// A worker that cannot start what it claimed (its disk is full) hands it back: pending
/// again with the attempt not counted, claimable by another worker; only its claimer can.
async fn a_claimed_request_is_handed_back_by_its_claimer_only(store: &Store) {
    with_project(store).await;
    let recorded = store
        .record_spawn(spawn_of("full-disk", None))
        .await
        .unwrap();
    let full = worker(store, "w-full", LEASE).await;
    let other = worker(store, "w-other", LEASE).await;
    let claimed = store
        .claim_request(recorded.request_id, &full, "node-a")
        .await
        .unwrap()
        .expect("claim");
    assert!(
        !store
            .release_request(recorded.request_id, &other)
            .await
            .unwrap(),
        "another worker's claim"
    );
    assert!(
        store
            .release_request(recorded.request_id, &full)
            .await
            .unwrap()
    );
    let agent = store.agent_by_id(claimed.agent.id).await.unwrap();
    assert_eq!(agent.status, AgentStatus::Pending);
    assert_eq!(agent.worker_id, None);
    assert_eq!(
        store.pending_requests(10).await.unwrap(),
        [recorded.request_id]
    );
    let again = store
        .claim_request(recorded.request_id, &other, "node-a")
        .await
        .unwrap()
        .expect("claimed by another worker");
    assert_eq!(
        again.attempts, claimed.attempts,
        "the hand-back is no attempt"
    );
    assert!(
        !store
            .release_request(recorded.request_id, &full)
            .await
            .unwrap(),
        "no longer its claim"
    );
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
    let [stale, stranger] = wrong_owners(store, &owner).await;
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
    let untouched = store.agent_by_id(agent).await.unwrap();
    assert_eq!(untouched.status, AgentStatus::Starting);
    assert_eq!(untouched.pid, None);
    assert_eq!(store.last_event_seq(agent).await.unwrap(), 0);

    assert!(store.mark_running(agent, &owner, &process).await.unwrap());
    assert!(store.set_session_id(agent, &owner, "sid-1").await.unwrap());
    let running = store.agent_by_id(agent).await.unwrap();
    assert_eq!(running.status, AgentStatus::Running);
    assert_eq!(running.pid, Some(77));
    assert_eq!(running.workdir.as_deref(), Some("/tmp/wd"));
    assert_eq!(running.output_path.as_deref(), Some("/tmp/out.jsonl"));
    assert_eq!(running.session_id.as_deref(), Some("sid-1"));
    assert!(running.started_at.is_some());
}

async fn an_agents_branch_is_renamed_by_its_owner_only(store: &Store) {
    with_project(store).await;
    let (agent, owner) = claimed_agent(store, "renamed").await;
    let [stale, stranger] = wrong_owners(store, &owner).await;
    let branch = |agent: Uuid| async move { store.agent_by_id(agent).await.unwrap().branch };
    assert_eq!(branch(agent).await, "agent/renamed");
    for wrong in [&stale, &stranger] {
        let renamed = store
            .rename_branch(agent, wrong, "agent/renamed", "agent/renamed-1")
            .await
            .unwrap();
        assert!(!renamed, "a write of {wrong:?} was taken");
    }
    assert_eq!(branch(agent).await, "agent/renamed");
    assert!(
        !store
            .rename_branch(agent, &owner, "agent/other", "agent/renamed-1")
            .await
            .unwrap(),
        "renamed from a branch it does not have"
    );
    assert!(
        store
            .rename_branch(agent, &owner, "agent/renamed", "agent/renamed-1")
            .await
            .unwrap()
    );
    let renamed = store.agent_by_id(agent).await.unwrap();
    assert_eq!(renamed.branch, "agent/renamed-1");
    assert_eq!(
        store.agent("renamed").await.unwrap().branch,
        "agent/renamed-1"
    );
}

async fn an_agents_commits_are_recorded_by_its_owner_only(store: &Store) {
    with_project(store).await;
    let (agent, owner) = claimed_agent(store, "committed").await;
    let [stale, stranger] = wrong_owners(store, &owner).await;
    let (base, pushed) = ("a".repeat(40), "b".repeat(40));
    let fresh = store.agent_by_id(agent).await.unwrap();
    assert_eq!((fresh.base_commit, fresh.pushed_commit), (None, None));
    for wrong in [&stale, &stranger] {
        assert!(!store.set_base_commit(agent, wrong, &base).await.unwrap());
        assert!(
            !store
                .set_pushed_commit(agent, wrong, &pushed)
                .await
                .unwrap()
        );
    }
    let untouched = store.agent_by_id(agent).await.unwrap();
    assert_eq!(
        (untouched.base_commit, untouched.pushed_commit),
        (None, None)
    );
    assert!(store.set_base_commit(agent, &owner, &base).await.unwrap());
    assert!(
        store
            .set_pushed_commit(agent, &owner, &pushed)
            .await
            .unwrap()
    );
    let outcome = AgentOutcome {
        status: AgentStatus::Completed,
        result: Some("done".into()),
        questions: Vec::new(),
        error: None,
        exit_code: Some(0),
        session_id: None,
    };
    assert!(store.finish_agent(agent, &owner, &outcome).await.unwrap());
    let recorded = store.agent("committed").await.unwrap();
    assert_eq!(recorded.base_commit.as_deref(), Some(base.as_str()));
    assert_eq!(recorded.pushed_commit.as_deref(), Some(pushed.as_str()));
    let listed = store.agents_by_id(&[agent]).await.unwrap();
    assert_eq!(listed[0].pushed_commit.as_deref(), Some(pushed.as_str()));
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

async fn batched_appends_store_owned_agents_and_fence_the_rest(store: &Store) {
    with_project(store).await;
    let (mine, owner) = claimed_agent(store, "batch-mine").await;
    let (theirs, _) = claimed_agent(store, "batch-theirs").await;
    // A second agent of the same owner: claimed by it, not by a fresh worker.
    let recorded = store
        .record_spawn(spawn_of("batch-also", None))
        .await
        .unwrap();
    let also = store
        .claim_request(recorded.request_id, &owner, "node-a")
        .await
        .unwrap()
        .expect("claim")
        .agent
        .id;
    store
        .append_events(also, &owner, &[event(1, "a", json!(1))], 10)
        .await
        .unwrap();
    let appends = [
        EventAppend {
            agent_id: mine,
            events: vec![event(1, "a", json!("one")), event(2, "b", json!({"n": 2}))],
            output_offset: 120,
            usage: Vec::new(),
        },
        EventAppend {
            agent_id: theirs,
            events: vec![event(1, "x", json!("not mine"))],
            output_offset: 999,
            usage: Vec::new(),
        },
        EventAppend {
            agent_id: also,
            // seq 1 is stored already: kept as it was; the offset never goes back.
            events: vec![event(1, "a", json!("again")), event(2, "c", json!(null))],
            output_offset: 5,
            usage: Vec::new(),
        },
    ];
    let taken = store.append_events_many(&owner, &appends).await.unwrap();
    assert_eq!(taken, [mine, also].into_iter().collect());
    let kinds = |events: Vec<agentfleet::domain::StoredEvent>| {
        events
            .into_iter()
            .map(|e| (e.seq, e.kind, e.data))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        kinds(store.events_after(mine, 0).await.unwrap()),
        [
            (1, "a".into(), json!("one")),
            (2, "b".into(), json!({"n": 2}))
        ]
    );
    assert_eq!(
        kinds(store.events_after(also, 0).await.unwrap()),
        [(1, "a".into(), json!(1)), (2, "c".into(), json!(null))]
    );
    assert!(store.events_after(theirs, 0).await.unwrap().is_empty());
    let offsets = |id: Uuid| async move { store.agent_by_id(id).await.unwrap().output_offset };
    assert_eq!(offsets(mine).await, 120);
    assert_eq!(offsets(also).await, 10);
    assert_eq!(offsets(theirs).await, 0);
    // Nothing to write for nobody's agents is not an error.
    assert!(
        store
            .append_events_many(&owner, &[])
            .await
            .unwrap()
            .is_empty()
    );
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
    let agent = store.agent_by_id(asking).await.unwrap();
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
    let agent = store.agent_by_id(crashing).await.unwrap();
    assert_eq!(agent.status, AgentStatus::Crashed);
    assert_eq!(agent.error.as_deref(), Some("exited with code 3"));
    assert!(agent.pending_questions.is_empty());
    assert!(store.pending_requests(10).await.unwrap().is_empty());
    let statuses: HashSet<AgentStatus> = store
        .list_agents(&agentfleet::store::AgentQuery::with_dismissed())
        .await
        .unwrap()
        .items
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
        .record_job_failure(&JobFailure {
            queue: "q",
            job_id: None,
            payload: "{\"not\":1}",
            reason: "cannot be decoded",
            worker_id: "w1",
        })
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

async fn add_account(store: &Store, label: &str, max: Option<i32>) -> agentfleet::domain::Account {
    store
        .add_account(&NewAccount {
            id: Uuid::now_v7(),
            provider: "claude",
            label,
            kind: AccountKind::ApiKey,
            sealed: format!("sealed-{label}").as_bytes(),
            key_id: "k1",
            fingerprint: &format!("sha256:{label}"),
            max_concurrent: max,
        })
        .await
        .unwrap()
}

async fn accounts_are_added_listed_reset_and_removed(store: &Store) {
    let a = add_account(store, "acct-a", Some(2)).await;
    assert_eq!(a.sealed, b"sealed-acct-a");
    assert_eq!(a.key_id, "k1");
    assert_eq!(a.max_concurrent, Some(2));
    assert_eq!(a.in_use, 0);
    assert!(a.exhausted_until.is_none() && a.invalid_reason.is_none());
    let err = store
        .add_account(&NewAccount {
            id: Uuid::now_v7(),
            provider: "codex",
            label: "acct-a",
            kind: AccountKind::Oauth,
            sealed: b"x",
            key_id: "k1",
            fingerprint: "f",
            max_concurrent: None,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::AccountExists(ref l) if l == "acct-a"),
        "{err}"
    );
    add_account(store, "acct-b", None).await;
    let labels: Vec<String> = store
        .list_accounts()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.label)
        .collect();
    assert_eq!(labels, ["acct-a", "acct-b"]);
    store
        .mark_account_exhausted(a.id, Duration::from_secs(3600))
        .await
        .unwrap();
    store.mark_account_invalid(a.id, "refused").await.unwrap();
    let marked = store.account_by_id(a.id).await.unwrap();
    assert!(marked.exhausted_until.unwrap() > chrono::Utc::now());
    assert_eq!(marked.invalid_reason.as_deref(), Some("refused"));
    let reset = store.reset_account("acct-a").await.unwrap();
    assert!(reset.exhausted_until.is_none() && reset.invalid_reason.is_none());
    assert!(matches!(
        store.reset_account("nope").await,
        Err(StoreError::UnknownAccount(_))
    ));
    store.remove_account("acct-a").await.unwrap();
    assert!(matches!(
        store.remove_account("acct-a").await,
        Err(StoreError::UnknownAccount(_))
    ));
    assert_eq!(store.list_accounts().await.unwrap().len(), 1);
    // Key rotation replaces a sealed secret only if it is unchanged.
    let b = store.list_accounts().await.unwrap().remove(0);
    assert!(
        !store
            .reseal_account(b.id, b"stale", b"new", "k2")
            .await
            .unwrap()
    );
    assert!(
        store
            .reseal_account(b.id, &b.sealed, b"new", "k2")
            .await
            .unwrap()
    );
    let b = store.account_by_id(b.id).await.unwrap();
    assert_eq!(
        (b.sealed.as_slice(), b.key_id.as_str()),
        (&b"new"[..], "k2")
    );
}

async fn account_selection_prefers_the_least_recently_used_free_account(store: &Store) {
    with_project(store).await;
    let (first, owner1) = claimed_agent(store, "sel-1").await;
    // No account for the provider: run without one.
    let pick = store
        .acquire_account(&AcquireParams {
            agent_id: first,
            owner: &owner1,
            provider: "claude",
            exclude: &[],
        })
        .await
        .unwrap();
    assert!(pick.account.is_none());
    assert_eq!(pick.provider_accounts, 0);
    let a = add_account(store, "sel-a", Some(1)).await;
    let b = add_account(store, "sel-b", None).await;
    let pick = |agent: Uuid, owner: Owner, exclude: Vec<Uuid>| {
        let store = store.clone();
        async move {
            store
                .acquire_account(&AcquireParams {
                    agent_id: agent,
                    owner: &owner,
                    provider: "claude",
                    exclude: &exclude,
                })
                .await
                .unwrap()
        }
    };
    assert_eq!(
        pick(first, owner1.clone(), vec![])
            .await
            .account
            .unwrap()
            .id,
        a.id
    );
    let (second, owner2) = claimed_agent(store, "sel-2").await;
    assert_eq!(
        pick(second, owner2.clone(), vec![])
            .await
            .account
            .unwrap()
            .id,
        b.id
    );
    // a is at max_concurrent: b again, although it was used last.
    let (third, owner3) = claimed_agent(store, "sel-3").await;
    assert_eq!(
        pick(third, owner3.clone(), vec![])
            .await
            .account
            .unwrap()
            .id,
        b.id
    );
    let agent = store.agent_by_id(third).await.unwrap();
    assert_eq!(agent.account_id, Some(b.id));
    assert_eq!(store.account_by_id(b.id).await.unwrap().in_use, 2);
    // b exhausted, a full: nothing free, though the provider has accounts.
    store
        .mark_account_exhausted(b.id, Duration::from_secs(3600))
        .await
        .unwrap();
    let (fourth, owner4) = claimed_agent(store, "sel-4").await;
    let none = pick(fourth, owner4.clone(), vec![]).await;
    assert!(none.account.is_none());
    assert_eq!(none.provider_accounts, 2);
    // The agent on a ends: a is free again.
    let done = store
        .finish_agent(first, &owner1, &outcome(AgentStatus::Completed))
        .await
        .unwrap();
    assert!(done);
    assert_eq!(store.account_by_id(a.id).await.unwrap().in_use, 0);
    assert_eq!(
        pick(fourth, owner4.clone(), vec![])
            .await
            .account
            .unwrap()
            .id,
        a.id
    );
    // An excluded account is never picked; an exhausted one comes back by itself.
    store
        .mark_account_exhausted(b.id, Duration::from_millis(300))
        .await
        .unwrap();
    let (fifth, owner5) = claimed_agent(store, "sel-5").await;
    assert!(pick(fifth, owner5.clone(), vec![]).await.account.is_none());
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        pick(fifth, owner5.clone(), vec![b.id])
            .await
            .account
            .is_none()
    );
    assert_eq!(
        pick(fifth, owner5.clone(), vec![])
            .await
            .account
            .unwrap()
            .id,
        b.id
    );
    // Fenced: a stale owner reserves nothing.
    let stale = Owner {
        worker_id: owner5.worker_id.clone(),
        epoch: owner5.epoch + 100,
    };
    store.reset_account("sel-b").await.unwrap();
    let (sixth, _) = claimed_agent(store, "sel-6").await;
    assert!(pick(sixth, stale, vec![]).await.account.is_none());
    // A resume holds the agent's own account again, whatever its limit.
    assert_eq!(
        store
            .hold_account(fourth, &owner4, a.id)
            .await
            .unwrap()
            .map(|x| x.id),
        Some(a.id)
    );
    assert!(store.restart_run(fourth, &owner4).await.unwrap());
    assert_eq!(
        store.agent_by_id(fourth).await.unwrap().status,
        AgentStatus::Starting
    );
}

async fn concurrent_selections_never_over_commit_an_account(store: &Store) {
    with_project(store).await;
    add_account(store, "busy-a", Some(2)).await;
    add_account(store, "busy-b", Some(1)).await;
    let mut agents = Vec::new();
    for i in 0..8 {
        agents.push(claimed_agent(store, &format!("busy-{i}")).await);
    }
    let tasks: Vec<_> = agents
        .into_iter()
        .map(|(agent, owner)| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .acquire_account(&AcquireParams {
                        agent_id: agent,
                        owner: &owner,
                        provider: "claude",
                        exclude: &[],
                    })
                    .await
            })
        })
        .collect();
    let mut got = Vec::new();
    for t in tasks {
        if let Some(a) = t.await.unwrap().unwrap().account {
            got.push(a.label);
        }
    }
    got.sort();
    assert_eq!(got, ["busy-a", "busy-a", "busy-b"]);
    for a in store.list_accounts().await.unwrap() {
        assert!(
            a.in_use <= a.max_concurrent.unwrap() as i64,
            "{a:?} {}",
            a.in_use
        );
    }
}

async fn one_worker_refreshes_an_account_at_a_time(store: &Store) {
    let a = add_account(store, "refresh-a", None).await;
    let ttl = Duration::from_secs(30);
    assert!(store.lock_account_refresh(a.id, "w1", ttl).await.unwrap());
    assert!(!store.lock_account_refresh(a.id, "w2", ttl).await.unwrap());
    assert!(store.lock_account_refresh(a.id, "w1", ttl).await.unwrap());
    assert!(
        !store
            .store_refreshed_account(a.id, "w2", b"x", "k1")
            .await
            .unwrap()
    );
    assert!(
        store
            .store_refreshed_account(a.id, "w1", b"fresh", "k1")
            .await
            .unwrap()
    );
    assert_eq!(store.account_by_id(a.id).await.unwrap().sealed, b"fresh");
    // Storing released the lock; an expired lock is free too.
    assert!(
        store
            .lock_account_refresh(a.id, "w2", Duration::from_millis(200))
            .await
            .unwrap()
    );
    assert!(!store.lock_account_refresh(a.id, "w3", ttl).await.unwrap());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(store.lock_account_refresh(a.id, "w3", ttl).await.unwrap());
    store.unlock_account_refresh(a.id, "w3").await.unwrap();
    assert!(store.lock_account_refresh(a.id, "w1", ttl).await.unwrap());
}

async fn dead_workers_release_their_accounts(store: &Store) {
    with_project(store).await;
    let a = add_account(store, "dead-a", Some(5)).await;
    let recorded = store.record_spawn(spawn_of("orphan", None)).await.unwrap();
    let dead = worker(store, "w-dead", Duration::from_millis(200)).await;
    let claimed = store
        .claim_request(recorded.request_id, &dead, "node-b")
        .await
        .unwrap()
        .unwrap();
    let picked = store
        .acquire_account(&AcquireParams {
            agent_id: claimed.agent.id,
            owner: &dead,
            provider: "claude",
            exclude: &[],
        })
        .await
        .unwrap();
    assert_eq!(picked.account.unwrap().id, a.id);
    let (other, other_owner) = claimed_agent(store, "other").await;
    store
        .acquire_account(&AcquireParams {
            agent_id: other,
            owner: &other_owner,
            provider: "claude",
            exclude: &[],
        })
        .await
        .unwrap();
    assert_eq!(store.account_by_id(a.id).await.unwrap().in_use, 2);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let me = worker(store, "w-alive", LEASE).await;
    // Its processes may still run until the orphan grace after its lease is over.
    let patient = ReconcilePolicy {
        max_attempts: 3,
        orphan_grace: Duration::from_secs(30),
    };
    assert!(
        store
            .reconcile_one(&ReconcileParams {
                me: &me,
                node: "node-a",
                known_dead: &[],
                policy: &patient
            })
            .await
            .unwrap()
            .is_none()
    );
    let done = store
        .reconcile_one(&ReconcileParams {
            me: &me,
            node: "node-a",
            known_dead: &[],
            policy: &ReconcilePolicy {
                max_attempts: 3,
                orphan_grace: Duration::ZERO,
            },
        })
        .await
        .unwrap()
        .expect("the dead worker is reconciled");
    assert_eq!(done.worker_id, "w-dead");
    assert_eq!(store.account_by_id(a.id).await.unwrap().in_use, 1);
    // Finishing without an owner releases too.
    store
        .finish_unowned(other, "crashed", "lost")
        .await
        .unwrap();
    assert_eq!(store.account_by_id(a.id).await.unwrap().in_use, 0);
}

async fn ping_and_migrate_again(store: &Store) {
    store.ping().await.unwrap();
    assert_eq!(store.migrate().await.unwrap(), 0, "nothing left to apply");
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

/// Resumes of one agent are recorded one at a time: a second is refused while the first
/// is pending or in a live worker's hands, and once the agent left `waiting_for_input`.
async fn a_second_resume_is_refused_while_one_is_pending(store: &Store) {
    with_project(store).await;
    let (asking, owner) = claimed_agent(store, "asking").await;
    let mut waiting = outcome(AgentStatus::WaitingForInput);
    waiting.session_id = Some("sid-1".into());
    assert!(store.finish_agent(asking, &owner, &waiting).await.unwrap());
    let answers = || json!({"answers": {"q1": "yes"}});
    let resume = |target: Option<&'static str>| {
        store.record_control(asking, ControlKind::Resume, target, answers())
    };
    let first = resume(None).await.unwrap();
    let refused = resume(None).await;
    assert!(
        matches!(&refused, Err(StoreError::ResumeRefused(why)) if why.contains("already resuming")),
        "{refused:?}"
    );
    // Taken by a live worker that has not moved the agent on yet: still refused.
    let taken = store
        .claim_control(first, &owner.worker_id, "node-a")
        .await
        .unwrap();
    assert_eq!(taken.map(|c| c.id), Some(first));
    assert!(matches!(
        resume(None).await,
        Err(StoreError::ResumeRefused(_))
    ));
    // Its worker gone, the request it held no longer blocks the agent.
    store.deregister_worker(&owner, None).await.unwrap();
    resume(None).await.expect("a resume after the worker left");
    let requests = store.queue_stats().await.unwrap().by_kind;
    assert_eq!(requests["resume"].values().sum::<i64>(), 2);
    // Nothing is recorded for an agent that does not wait for input.
    let (running, _) = claimed_agent(store, "running").await;
    assert!(matches!(
        store.record_control(running, ControlKind::Resume, None, answers()).await,
        Err(StoreError::ResumeRefused(why)) if why.contains("not waiting for input")
    ));
}

async fn control_requests_are_claimed_once_and_resent_to_their_owner(store: &Store) {
    use agentfleet::store::{ControlKind, DueControl, DueParams};
    with_project(store).await;
    let (agent, owner) = claimed_agent(store, "ctl-otter").await;
    let stop = store
        .record_control(
            agent,
            ControlKind::Stop,
            Some(&owner.worker_id),
            serde_json::json!({}),
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .pending_controls(&owner.worker_id, "node-a")
            .await
            .unwrap(),
        vec![stop]
    );
    assert!(
        store
            .claim_control(stop, "w-other", "node-b")
            .await
            .unwrap()
            .is_none()
    );
    let stats = store.control_queue_stats().await.unwrap();
    assert_eq!((stats.len(), stats[0].depth), (1, 1));
    let shown = store.agent_controls(agent).await.unwrap();
    assert_eq!(shown.len(), 1);
    assert_eq!(
        (
            shown[0].id,
            shown[0].kind.as_str(),
            shown[0].target_worker.as_deref()
        ),
        (stop, "stop", Some(owner.worker_id.as_str()))
    );
    assert!(
        (chrono::Utc::now() - shown[0].requested_at)
            .num_seconds()
            .abs()
            < 60
    );

    // Lost by the queue: due again, pointed at the agent's owner.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let hour = Duration::from_secs(3600);
    let due = DueParams {
        spawn_after: hour,
        control_after: Duration::ZERO,
        resume_timeout: hour,
        limit: 10,
    };
    let found = store.take_due_requests(&due).await.unwrap();
    assert!(found.spawns.is_empty());
    assert_eq!(
        found.controls,
        vec![DueControl {
            id: stop,
            target_worker: Some(owner.worker_id.clone()),
            node_id: Some("node-a".into()),
        }]
    );

    // Delivered twice: claimed once.
    let claimed = store
        .claim_control(stop, &owner.worker_id, "node-a")
        .await
        .unwrap()
        .expect("claimed");
    assert_eq!((claimed.id, claimed.kind), (stop, ControlKind::Stop));
    assert!(
        store
            .claim_control(stop, &owner.worker_id, "node-a")
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.agent_controls(agent).await.unwrap().is_empty());

    // A resume nobody took within resume_timeout fails instead of being sent again (an
    // agent is resumed only while it waits for input).
    let mut waiting = outcome(AgentStatus::WaitingForInput);
    waiting.session_id = Some("sid-1".into());
    assert!(store.finish_agent(agent, &owner, &waiting).await.unwrap());
    let resume = store
        .record_control(agent, ControlKind::Resume, None, serde_json::json!({}))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let expire = DueParams {
        resume_timeout: Duration::from_millis(1),
        ..due
    };
    assert!(
        store
            .take_due_requests(&expire)
            .await
            .unwrap()
            .controls
            .is_empty()
    );
    assert!(
        store
            .claim_control(resume, "w-any", "node-a")
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.control_queue_stats().await.unwrap().is_empty());

    // Dismiss and cleanup go to any worker on the agent's node.
    let cleanup = store
        .record_control(agent, ControlKind::Cleanup, None, serde_json::json!({}))
        .await
        .unwrap();
    let shown = store.agent_controls(agent).await.unwrap();
    assert_eq!(
        (
            shown.len(),
            shown[0].kind.as_str(),
            shown[0].target_worker.clone()
        ),
        (1, "cleanup", None)
    );
    let claimed = store
        .claim_control(cleanup, "w-any", "node-a")
        .await
        .unwrap()
        .expect("claimed by a worker of the node");
    assert_eq!(claimed.kind, ControlKind::Cleanup);
}

fn usage_entry(seq: i64, input: i64, cost: Option<f64>, estimated: bool) -> UsageEntry {
    UsageEntry {
        seq,
        model: Some("m-1".into()),
        usage: agentfleet::domain::Usage {
            input_tokens: input,
            output_tokens: 2 * input,
            cache_read_tokens: 3,
            cache_write_tokens: 1,
            cost_usd: cost,
            cost_estimated: estimated,
            turns: 1,
        },
    }
}

async fn usage_is_counted_once_per_event_and_summed_by_group(store: &Store) {
    use agentfleet::domain::UsageGroup;
    with_project(store).await;
    let (agent, owner) = claimed_agent(store, "usage-a").await;
    let append = |usage: Vec<UsageEntry>, seqs: &[i64]| EventAppend {
        agent_id: agent,
        events: seqs.iter().map(|s| event(*s, "usage", json!({}))).collect(),
        output_offset: 0,
        usage,
    };
    let first = append(
        vec![
            usage_entry(1, 10, None, false),
            usage_entry(2, 5, Some(0.25), false),
        ],
        &[1, 2],
    );
    assert!(
        !store
            .append_events_many(&owner, std::slice::from_ref(&first))
            .await
            .unwrap()
            .is_empty()
    );
    // The same batch again (its commit's answer was lost): counted once.
    store.append_events_many(&owner, &[first]).await.unwrap();
    let usage = store.agent_by_id(agent).await.unwrap().usage;
    assert_eq!(
        (
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_read_tokens
        ),
        (15, 30, 6)
    );
    assert_eq!((usage.cache_write_tokens, usage.turns), (2, 2));
    assert_eq!(usage.cost_usd, Some(0.25));
    assert!(!usage.cost_estimated);
    // A fenced write adds nothing.
    for wrong in wrong_owners(store, &owner).await {
        let fenced = append(vec![usage_entry(3, 1000, Some(9.0), true)], &[3]);
        assert!(
            store
                .append_events_many(&wrong, &[fenced])
                .await
                .unwrap()
                .is_empty()
        );
    }
    assert_eq!(store.agent_by_id(agent).await.unwrap().usage, usage);
    // An estimate marks the totals estimated.
    store
        .append_events_many(
            &owner,
            &[append(vec![usage_entry(3, 1, Some(0.5), true)], &[3])],
        )
        .await
        .unwrap();
    let usage = store.agent_by_id(agent).await.unwrap().usage;
    assert_eq!(usage.input_tokens, 16);
    assert_eq!(usage.cost_usd, Some(0.75));
    assert!(usage.cost_estimated);

    // A second agent, of another provider's records, in the same project.
    let (other, other_owner) = claimed_agent(store, "usage-b").await;
    let b = EventAppend {
        agent_id: other,
        events: vec![event(1, "usage", json!({}))],
        output_offset: 0,
        usage: vec![usage_entry(1, 100, None, false)],
    };
    store.append_events_many(&other_owner, &[b]).await.unwrap();
    let totals = |group_by| async move {
        store
            .usage_totals(&UsageQuery {
                group_by,
                ..Default::default()
            })
            .await
            .unwrap()
    };
    let by_project = totals(UsageGroup::Project).await;
    assert_eq!(by_project.len(), 1);
    assert_eq!(by_project[0].key, "demo");
    assert_eq!(by_project[0].agents, 2);
    assert_eq!(by_project[0].usage.input_tokens, 116);
    assert_eq!(by_project[0].usage.turns, 4);
    assert_eq!(by_project[0].usage.cost_usd, Some(0.75));
    assert!(by_project[0].usage.cost_estimated);
    let by_day = totals(UsageGroup::Day).await;
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    assert_eq!(by_day.len(), 1);
    assert!(by_day[0].key <= today, "a UTC day: {}", by_day[0].key);
    assert_eq!(by_day[0].key.len(), 10);
    let by_provider = totals(UsageGroup::Provider).await;
    assert_eq!(by_provider[0].key, "claude");
    let by_account = totals(UsageGroup::Account).await;
    assert_eq!(by_account[0].key, "", "the CLI's own login");
    // The period: nothing recorded after now, everything since an hour ago.
    let now = chrono::Utc::now();
    let later = store
        .usage_totals(&UsageQuery {
            group_by: UsageGroup::Project,
            since: Some(now + chrono::TimeDelta::seconds(60)),
            until: None,
        })
        .await
        .unwrap();
    assert!(later.is_empty());
    let recent = store
        .usage_totals(&UsageQuery {
            group_by: UsageGroup::Project,
            since: Some(now - chrono::TimeDelta::seconds(3600)),
            until: Some(now + chrono::TimeDelta::seconds(60)),
        })
        .await
        .unwrap();
    assert_eq!(recent[0].usage.input_tokens, 116);
    // The records outlive the agent's.
    store.delete_agent_rows(other).await.unwrap();
    assert_eq!(totals(UsageGroup::Project).await[0].usage.input_tokens, 116);

    // A project's daily budget, and its cost of the day so far.
    let project = store.project("demo").await.unwrap();
    assert_eq!(project.daily_cost_usd, None);
    let spent = |since| async move { store.project_cost_since(project.id, since).await.unwrap() };
    assert!((spent(now - chrono::TimeDelta::seconds(3600)).await - 0.75).abs() < 1e-12);
    assert_eq!(spent(now + chrono::TimeDelta::seconds(60)).await, 0.0);
    let budgeted = store
        .set_project_daily_budget("demo", Some(2.5))
        .await
        .unwrap();
    assert_eq!(budgeted.daily_cost_usd, Some(2.5));
    assert_eq!(
        store.project("demo").await.unwrap().daily_cost_usd,
        Some(2.5)
    );
    let cleared = store.set_project_daily_budget("demo", None).await.unwrap();
    assert_eq!(cleared.daily_cost_usd, None);
    assert!(matches!(
        store.set_project_daily_budget("nope", Some(1.0)).await,
        Err(StoreError::UnknownProject(_))
    ));
}

async fn a_capped_provider_is_claimed_up_to_its_cap_oldest_first(store: &Store) {
    with_project(store).await;
    let owner = worker(store, "w-capped", LEASE).await;
    let caps = std::collections::BTreeMap::from([("claude".to_string(), 1_i64)]);
    let mut requests = Vec::new();
    for name in ["cap-a", "cap-b", "cap-c"] {
        requests.push(
            store
                .record_spawn(spawn_of(name, None))
                .await
                .unwrap()
                .request_id,
        );
    }
    // The newest cannot go before the older pending one (the cap's one slot is its).
    let claim = |id| {
        let (owner, caps) = (&owner, &caps);
        async move {
            store
                .claim_request_within(id, owner, "node-a", caps)
                .await
                .unwrap()
        }
    };
    assert!(claim(requests[1]).await.is_none(), "cap-a is older");
    let first = claim(requests[0]).await.expect("the oldest takes the slot");
    assert!(claim(requests[1]).await.is_none(), "the slot is taken");
    assert_eq!(
        store.queue_stats().await.unwrap().depth,
        2,
        "held requests stay pending"
    );
    // Another provider's cap, or none, does not hold it back.
    assert!(
        store
            .claim_request(requests[2], &owner, "node-a")
            .await
            .unwrap()
            .is_some()
    );
    store
        .finish_agent(first.agent.id, &owner, &outcome(AgentStatus::Completed))
        .await
        .unwrap();
    let finished = store.agent("cap-c").await.unwrap().id;
    store
        .finish_agent(finished, &owner, &outcome(AgentStatus::Completed))
        .await
        .unwrap();
    assert!(claim(requests[1]).await.is_some(), "a slot came free");

    // A project's cap holds every provider's spawns of it, with no provider cap given.
    let project = store
        .set_project_max_concurrent("demo", Some(1))
        .await
        .unwrap();
    assert_eq!(project.max_concurrent, Some(1));
    let held = store.record_spawn(spawn_of("cap-d", None)).await.unwrap();
    assert!(
        store
            .claim_request(held.request_id, &owner, "node-a")
            .await
            .unwrap()
            .is_none(),
        "cap-b runs"
    );
    store
        .set_project_max_concurrent("demo", None)
        .await
        .unwrap();
    assert!(
        store
            .claim_request(held.request_id, &owner, "node-a")
            .await
            .unwrap()
            .is_some()
    );
}

/// One test per operation group, for each adapter.
macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $test() {
                    let fresh = crate::common::fresh_store::FreshStore::new(
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
                    let fresh = crate::common::fresh_store::FreshStore::new(
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
    agent_lists_filter_and_page_newest_first,
    projects_are_added_once_found_and_listed,
    projects_are_updated_and_removed_with_their_ended_agents_only,
    control_requests_are_claimed_once_and_resent_to_their_owner,
    record_spawn_is_idempotent_per_key,
    concurrent_retries_of_a_keyed_spawn_get_one_agent,
    a_reference_that_parses_as_an_id_finds_only_that_id,
    record_spawn_refuses_a_taken_name_and_an_unknown_project,
    pending_requests_come_oldest_first,
    a_claimed_request_is_handed_back_by_its_claimer_only,
    two_concurrent_claimers_claim_a_request_once,
    claims_need_a_live_lease_of_the_current_epoch,
    fenced_writes_are_refused_for_a_wrong_epoch,
    an_agents_branch_is_renamed_by_its_owner_only,
    an_agents_commits_are_recorded_by_its_owner_only,
    events_are_appended_once_and_read_in_order,
    batched_appends_store_owned_agents_and_fence_the_rest,
    finish_agent_records_the_outcome_and_closes_the_request,
    a_second_resume_is_refused_while_one_is_pending,
    failed_requests_fail_their_agent_and_bad_jobs_are_kept,
    worker_leases_renew_and_deregister,
    accounts_are_added_listed_reset_and_removed,
    account_selection_prefers_the_least_recently_used_free_account,
    concurrent_selections_never_over_commit_an_account,
    one_worker_refreshes_an_account_at_a_time,
    dead_workers_release_their_accounts,
    ping_and_migrate_again,
    queue_stats_count_the_backlog_and_requests_by_kind,
    spawn_trace_context_is_read_from_the_stored_payload,
    usage_is_counted_once_per_event_and_summed_by_group,
    a_capped_provider_is_claimed_up_to_its_cap_oldest_first,
);
