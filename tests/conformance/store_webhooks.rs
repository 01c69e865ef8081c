//! The store's webhook group against both adapters: the triggers that write a delivery per
//! matching subscription with each status change or delete (and the snapshot they keep,
//! read back as the agent was), the claim that lets one worker at a time deliver for a
//! subscription, per-agent order, attempts, redelivery and removal.

use std::time::Duration;

use agentfleet::domain::{
    AgentMode, AgentOutcome, AgentStatus, DeliveryStatus, PendingQuestion, WebhookEvent,
};
use agentfleet::store::{
    AttemptResult, DeliveryAttempt, NewWebhook, NewWorker, Owner, ProcessRecord, SpawnRecord,
    Store, StoreError,
};
use serde_json::json;
use uuid::Uuid;

const CLAIM: Duration = Duration::from_secs(30);

async fn subscribe(store: &Store, events: Option<&[WebhookEvent]>, project: Option<&str>) -> Uuid {
    let id = Uuid::now_v7();
    store
        .add_webhook(&NewWebhook {
            id,
            url: "http://127.0.0.1:9/hook",
            events,
            project,
            sealed: b"sealed-secret",
            key_id: "k1",
        })
        .await
        .unwrap();
    id
}

/// A spawned agent of `project`, claimed by a fresh worker: (agent id, its owner).
async fn claimed_agent(store: &Store, name: &str, project: &str) -> (Uuid, Owner) {
    let recorded = store
        .record_spawn(SpawnRecord {
            name,
            provider: "claude",
            mode: AgentMode::Execute,
            project,
            task_id: None,
            idempotency_key: None,
            request_hash: "h",
            payload: json!({"prompt": "p"}),
            model: None,
            budget: None,
        })
        .await
        .unwrap();
    let worker_id = format!("w-{name}");
    let epoch = store
        .register_worker(
            &NewWorker {
                id: &worker_id,
                node_id: "node-a",
                host: "host-a",
                pid: 4242,
                pid_start_time: None,
                capacity: 2,
            },
            CLAIM,
        )
        .await
        .unwrap();
    let owner = Owner { worker_id, epoch };
    store
        .claim_request(recorded.request_id, &owner, "node-a")
        .await
        .unwrap()
        .expect("claim");
    (recorded.agent.id, owner)
}

async fn run(store: &Store, agent: Uuid, owner: &Owner) {
    let process = ProcessRecord {
        pid: 77,
        pid_start_time: 123,
        output_path: "/tmp/out".into(),
        workdir: "/tmp/work".into(),
    };
    assert!(store.mark_running(agent, owner, &process).await.unwrap());
}

fn ended(status: AgentStatus) -> AgentOutcome {
    AgentOutcome {
        status,
        result: Some("done".into()),
        questions: Vec::new(),
        error: None,
        exit_code: Some(0),
        session_id: Some("sid".into()),
    }
}

async fn events_of(store: &Store, webhook: Uuid) -> Vec<WebhookEvent> {
    let mut events: Vec<WebhookEvent> = store
        .list_deliveries(webhook, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.event)
        .collect();
    events.reverse();
    events
}

fn attempt(
    delivery: Uuid,
    webhook: Uuid,
    worker: &str,
    result: AttemptResult,
) -> DeliveryAttempt<'_> {
    DeliveryAttempt {
        delivery_id: delivery,
        webhook_id: webhook,
        worker,
        result,
        claim_for: CLAIM,
    }
}

async fn status_changes_and_deletes_write_deliveries_for_matching_subscriptions(store: &Store) {
    store
        .add_project("demo", "/tmp/demo.git", "main")
        .await
        .unwrap();
    store
        .add_project("other", "/tmp/other.git", "main")
        .await
        .unwrap();
    // Before any subscription: nothing is written.
    let (early, owner) = claimed_agent(store, "early", "demo").await;
    run(store, early, &owner).await;
    assert_eq!(store.webhook_outbox_depth().await.unwrap(), 0);

    let all = subscribe(store, None, None).await;
    let completions = subscribe(store, Some(&[WebhookEvent::Completed]), Some("demo")).await;
    let elsewhere = subscribe(store, None, Some("other")).await;

    let (agent, owner) = claimed_agent(store, "worker-bee", "demo").await;
    run(store, agent, &owner).await;
    let running = store.agent_by_id(agent).await.unwrap();
    let mut asking = ended(AgentStatus::WaitingForInput);
    asking.questions = vec![PendingQuestion {
        id: "q1".into(),
        question: "Which database?".into(),
    }];
    assert!(store.finish_agent(agent, &owner, &asking).await.unwrap());
    let waiting = store.agent_by_id(agent).await.unwrap();
    assert!(store.claim_resume(agent, &owner, "node-a").await.unwrap());
    run(store, agent, &owner).await;
    assert!(
        store
            .finish_agent(agent, &owner, &ended(AgentStatus::Completed))
            .await
            .unwrap()
    );
    let (limited, _) = claimed_agent(store, "limited", "demo").await;
    store
        .finish_unowned(limited, "failed", "rate_limited: slow down")
        .await
        .unwrap();
    let (exhausted, _) = claimed_agent(store, "exhausted", "demo").await;
    store
        .finish_unowned(
            exhausted,
            "failed",
            "account_exhausted: account 'a' hit a usage limit",
        )
        .await
        .unwrap();
    store.delete_agent_rows(agent).await.unwrap();

    use WebhookEvent::*;
    assert_eq!(
        events_of(store, all).await,
        [
            Started,
            WaitingForInput,
            Started,
            Completed,
            RateLimited,
            AccountExhausted,
            Deleted
        ]
    );
    assert_eq!(events_of(store, completions).await, [Completed]);
    assert!(events_of(store, elsewhere).await.is_empty());
    assert_eq!(store.webhook_outbox_depth().await.unwrap(), 8);

    // Each delivery carries the agent as it was at its event, mapped as the store maps rows.
    assert!(
        store
            .claim_webhooks("deliverer", CLAIM, 10)
            .await
            .unwrap()
            .len()
            == 2
    );
    let first = store.next_delivery(all).await.unwrap().expect("due");
    assert_eq!((first.event, first.agent.as_ref()), (Started, Ok(&running)));
    assert!(
        store
            .record_attempt(&attempt(
                first.id,
                all,
                "deliverer",
                AttemptResult::Delivered { status: 200 }
            ))
            .await
            .unwrap()
    );
    let second = store.next_delivery(all).await.unwrap().expect("due");
    assert_eq!(
        (second.event, second.agent.as_ref()),
        (WaitingForInput, Ok(&waiting))
    );
    assert_eq!(second.agent.unwrap().pending_questions, asking.questions);
    assert_eq!(second.attempts, 0);
    // Pruning removes the delivered one only; the pending ones stay.
    assert_eq!(store.prune_deliveries(Duration::ZERO).await.unwrap(), 1);
    assert_eq!(store.webhook_outbox_depth().await.unwrap(), 7);
}

async fn one_worker_delivers_for_a_subscription_in_order_per_agent(store: &Store) {
    store
        .add_project("demo", "/tmp/demo.git", "main")
        .await
        .unwrap();
    let hook = subscribe(store, None, None).await;
    let (one, owner_one) = claimed_agent(store, "one", "demo").await;
    let (two, owner_two) = claimed_agent(store, "two", "demo").await;
    run(store, one, &owner_one).await;
    run(store, two, &owner_two).await;
    assert!(
        store
            .finish_agent(one, &owner_one, &ended(AgentStatus::Completed))
            .await
            .unwrap()
    );

    let claimed = store.claim_webhooks("w1", CLAIM, 10).await.unwrap();
    assert_eq!(claimed.iter().map(|w| w.id).collect::<Vec<_>>(), [hook]);
    assert_eq!(claimed[0].sealed, b"sealed-secret");
    assert!(
        store
            .claim_webhooks("w2", CLAIM, 10)
            .await
            .unwrap()
            .is_empty(),
        "claimed once"
    );

    let started_one = store.next_delivery(hook).await.unwrap().unwrap();
    assert_eq!(
        (started_one.agent.as_ref().unwrap().id, started_one.event),
        (one, WebhookEvent::Started)
    );
    // Another worker's attempt is refused: the claim is w1's.
    let failing = AttemptResult::Retry {
        error: "HTTP 500".into(),
        status: Some(500),
        after: Duration::from_secs(60),
    };
    assert!(
        !store
            .record_attempt(&attempt(started_one.id, hook, "w2", failing.clone()))
            .await
            .unwrap()
    );
    assert!(
        store
            .record_attempt(&attempt(started_one.id, hook, "w1", failing))
            .await
            .unwrap()
    );
    // Agent one's next event waits behind its failing one; agent two's goes on.
    let next = store.next_delivery(hook).await.unwrap().unwrap();
    assert_eq!(
        (next.agent.as_ref().unwrap().id, next.event),
        (two, WebhookEvent::Started)
    );
    let listed = store.list_deliveries(hook, 10).await.unwrap();
    let retried = listed.iter().find(|d| d.id == started_one.id).unwrap();
    assert_eq!(
        (
            retried.status,
            retried.attempts,
            retried.last_status,
            retried.last_error.as_deref()
        ),
        (DeliveryStatus::Pending, 1, Some(500), Some("HTTP 500"))
    );
    assert!(retried.next_attempt_at > chrono::Utc::now() + chrono::TimeDelta::seconds(50));

    // Released, a subscription with nothing due is not claimed again; a redelivery is due.
    store.release_webhook(hook, "w1").await.unwrap();
    assert!(
        store
            .record_attempt(&attempt(
                next.id,
                hook,
                "w1",
                AttemptResult::Delivered { status: 204 }
            ))
            .await
            .is_ok_and(|ok| !ok)
    );
    let claimed = store.claim_webhooks("w2", CLAIM, 10).await.unwrap();
    assert_eq!(claimed.len(), 1, "agent two's started is due");
    assert!(
        store
            .record_attempt(&attempt(
                next.id,
                hook,
                "w2",
                AttemptResult::Delivered { status: 204 }
            ))
            .await
            .unwrap()
    );
    store.release_webhook(hook, "w2").await.unwrap();
    assert!(
        store
            .claim_webhooks("w3", CLAIM, 10)
            .await
            .unwrap()
            .is_empty(),
        "nothing due"
    );
    let again = store.redeliver(started_one.id).await.unwrap();
    assert_eq!(
        (again.id, again.status),
        (started_one.id, DeliveryStatus::Pending)
    );
    assert_eq!(
        store.claim_webhooks("w3", CLAIM, 10).await.unwrap().len(),
        1
    );
    assert_eq!(
        store.next_delivery(hook).await.unwrap().unwrap().id,
        started_one.id
    );
}

async fn failed_deliveries_keep_their_error_and_removal_drops_the_outbox(store: &Store) {
    store
        .add_project("demo", "/tmp/demo.git", "main")
        .await
        .unwrap();
    let hook = subscribe(store, Some(&[WebhookEvent::Started]), None).await;
    let (agent, owner) = claimed_agent(store, "gives-up", "demo").await;
    run(store, agent, &owner).await;
    store.claim_webhooks("w1", CLAIM, 1).await.unwrap();
    let due = store.next_delivery(hook).await.unwrap().unwrap();
    let failed = AttemptResult::Failed {
        error: "connection refused".into(),
        status: None,
    };
    assert!(
        store
            .record_attempt(&attempt(due.id, hook, "w1", failed))
            .await
            .unwrap()
    );
    let listed = store.list_deliveries(hook, 10).await.unwrap();
    assert_eq!(listed[0].status, DeliveryStatus::Failed);
    assert_eq!(listed[0].last_error.as_deref(), Some("connection refused"));
    assert_eq!(store.webhook_outbox_depth().await.unwrap(), 0);
    assert!(store.next_delivery(hook).await.unwrap().is_none());

    // Pruning takes ended deliveries past their age only.
    assert_eq!(
        store
            .prune_deliveries(Duration::from_secs(3600))
            .await
            .unwrap(),
        0
    );
    let listed_hooks = store.list_webhooks().await.unwrap();
    assert_eq!(listed_hooks.len(), 1);
    assert_eq!(listed_hooks[0].events, Some(vec![WebhookEvent::Started]));
    store.redeliver(due.id).await.unwrap();
    assert_eq!(store.webhook_outbox_depth().await.unwrap(), 1);
    assert_eq!(
        store.prune_deliveries(Duration::ZERO).await.unwrap(),
        0,
        "pending stays"
    );
    store.remove_webhook(hook).await.unwrap();
    assert_eq!(store.webhook_outbox_depth().await.unwrap(), 0);
    assert!(matches!(
        store.remove_webhook(hook).await,
        Err(StoreError::UnknownWebhook(_))
    ));
    assert!(matches!(
        store.list_deliveries(hook, 10).await,
        Err(StoreError::UnknownWebhook(_))
    ));
    assert!(matches!(
        store.redeliver(due.id).await,
        Err(StoreError::UnknownDelivery(_))
    ));
    // Without subscriptions, changes write nothing.
    assert!(
        store
            .finish_agent(agent, &owner, &ended(AgentStatus::Completed))
            .await
            .unwrap()
    );
    assert_eq!(store.webhook_outbox_depth().await.unwrap(), 0);
}

/// One test per behaviour, for each adapter.
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
    status_changes_and_deletes_write_deliveries_for_matching_subscriptions,
    one_worker_delivers_for_a_subscription_in_order_per_agent,
    failed_deliveries_keep_their_error_and_removal_drops_the_outbox,
);
