//! The queue port's conformance suite: every test runs against apalis-redis (a fresh key
//! prefix, with a fresh Postgres store) and the embedded queue (a fresh SQLite file), so
//! both deliver jobs the same way: quickly, from another handle (another process) too,
//! never more at once than the consumer's slots, and with the jobs in hand finished on
//! stop. The handler claims each request in the store, as the worker's does.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use agentfleet::domain::AgentMode;
use agentfleet::queue::{EmbeddedQueue, JobHandler, Queue, RedisQueue, Slots, SpawnJob};
use agentfleet::store::{Owner, SpawnRecord, Store, StoreKind};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::common::databases::{REDIS_URL, delete_redis_keys};
use crate::common::fresh_store::FreshStore;

const POLL: Duration = Duration::from_millis(100);

struct Harness {
    fresh: FreshStore,
    /// The consumer's handle.
    queue: Queue,
    /// An independent handle, as a CLI process has.
    other: Queue,
    redis_prefix: Option<String>,
}

impl Harness {
    async fn redis() -> Self {
        let fresh = FreshStore::new(StoreKind::Postgres).await;
        let prefix = format!("afqueue:{}", &Uuid::new_v4().simple().to_string()[..12]);
        let connect = || RedisQueue::connect(REDIS_URL, &prefix, POLL, Duration::from_secs(5));
        let queue = Queue::Redis(Box::new(connect().await.unwrap()));
        let other = Queue::Redis(Box::new(connect().await.unwrap()));
        Self::ready(fresh, queue, other, Some(prefix)).await
    }

    async fn embedded() -> Self {
        let fresh = FreshStore::new(StoreKind::Sqlite).await;
        let queue = Queue::Embedded(EmbeddedQueue::new(fresh.store.clone(), POLL));
        let other = Queue::Embedded(EmbeddedQueue::new(fresh.reconnect().await, POLL));
        Self::ready(fresh, queue, other, None).await
    }

    async fn ready(fresh: FreshStore, queue: Queue, other: Queue, prefix: Option<String>) -> Self {
        fresh
            .store
            .add_project("demo", "/tmp/demo.git", "main")
            .await
            .unwrap();
        Self {
            fresh,
            queue,
            other,
            redis_prefix: prefix,
        }
    }

    fn store(&self) -> &Store {
        &self.fresh.store
    }

    async fn owner(&self, id: &str) -> Owner {
        let epoch = self
            .store()
            .register_worker(
                &agentfleet::store::NewWorker {
                    id,
                    node_id: "node",
                    host: "host",
                    pid: 1,
                    pid_start_time: None,
                    capacity: 4,
                },
                Duration::from_secs(60),
            )
            .await
            .unwrap();
        Owner {
            worker_id: id.into(),
            epoch,
        }
    }

    /// Records a spawn and enqueues its job through `queue`, as the front door does.
    async fn send(&self, queue: &Queue, name: &str) -> Uuid {
        let recorded = self
            .store()
            .record_spawn(SpawnRecord {
                name,
                provider: "claude",
                mode: AgentMode::Execute,
                project: "demo",
                task_id: None,
                idempotency_key: None,
                request_hash: "",
                payload: serde_json::json!({}),
                model: None,
                budget: None,
            })
            .await
            .unwrap();
        queue
            .enqueue(&SpawnJob {
                request_id: recorded.request_id,
                trace_context: Default::default(),
            })
            .await
            .unwrap();
        recorded.request_id
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(prefix) = &self.redis_prefix {
            delete_redis_keys(prefix);
        }
    }
}

/// What the handlers saw: claimed request ids (on a channel), how many ran at once.
#[derive(Default)]
struct Observed {
    running: AtomicUsize,
    peak: AtomicUsize,
    finished: AtomicUsize,
}

/// A handler that claims the job's request as `owner` and, when it wins, reports it and
/// holds its slot for `hold`.
fn claiming_handler(
    store: Store,
    owner: Owner,
    hold: Duration,
    claimed: mpsc::UnboundedSender<Uuid>,
    seen: Arc<Observed>,
) -> JobHandler {
    JobHandler::new(move |job| {
        let (store, owner, claimed, seen) =
            (store.clone(), owner.clone(), claimed.clone(), seen.clone());
        async move {
            let job: SpawnJob = serde_json::from_value(job).expect("a spawn job");
            let now = seen.running.fetch_add(1, Ordering::SeqCst) + 1;
            seen.peak.fetch_max(now, Ordering::SeqCst);
            let won = store
                .claim_request(job.request_id, &owner, "node")
                .await
                .unwrap()
                .is_some();
            if won {
                let _ = claimed.send(job.request_id);
                tokio::time::sleep(hold).await;
            }
            seen.running.fetch_sub(1, Ordering::SeqCst);
            seen.finished.fetch_add(1, Ordering::SeqCst);
        }
    })
}

struct Consumer {
    stop: CancellationToken,
    task: JoinHandle<()>,
    seen: Arc<Observed>,
    claimed: mpsc::UnboundedReceiver<Uuid>,
}

async fn start(
    h: &Harness,
    queue: &Queue,
    name: &str,
    capacity: usize,
    hold: Duration,
) -> Consumer {
    let owner = h.owner(name).await;
    let (tx, rx) = mpsc::unbounded_channel();
    let seen = Arc::new(Observed::default());
    let handler = claiming_handler(h.store().clone(), owner, hold, tx, seen.clone());
    let stop = CancellationToken::new();
    let (queue, stopper, name) = (
        queue.clone(),
        stop.clone(),
        format!("{name}-{}", Uuid::new_v4()),
    );
    let task = tokio::spawn(async move {
        let slots = Slots::new(capacity);
        queue.consume(name, slots, stopper, handler).await.unwrap();
    });
    Consumer {
        stop,
        task,
        seen,
        claimed: rx,
    }
}

async fn next_claim(consumer: &mut Consumer, within: Duration) -> Uuid {
    tokio::time::timeout(within, consumer.claimed.recv())
        .await
        .expect("a job within the time limit")
        .expect("consumer alive")
}

async fn jobs_reach_an_idle_consumer_quickly_from_any_handle(h: Harness) {
    let mut consumer = start(&h, &h.queue, "quick", 2, Duration::ZERO).await;
    // Let the consumer go idle first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (queue, name) in [(&h.queue, "same-handle"), (&h.other, "other-handle")] {
        let started = Instant::now();
        let id = h.send(queue, name).await;
        assert_eq!(next_claim(&mut consumer, Duration::from_secs(5)).await, id);
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(1500),
            "{name}: picked up after {took:?}"
        );
    }
    consumer.stop.cancel();
    consumer.task.await.unwrap();
}

async fn a_consumer_never_runs_more_jobs_than_its_slots(h: Harness) {
    let mut consumer = start(&h, &h.queue, "slotted", 2, Duration::from_millis(300)).await;
    let mut sent = HashSet::new();
    for i in 0..6 {
        sent.insert(h.send(&h.queue, &format!("burst-{i}")).await);
    }
    let mut got = HashSet::new();
    while got.len() < sent.len() {
        got.insert(next_claim(&mut consumer, Duration::from_secs(20)).await);
    }
    assert_eq!(got, sent);
    let peak = consumer.seen.peak.load(Ordering::SeqCst);
    assert!(peak <= 2, "ran {peak} jobs at once with 2 slots");
    consumer.stop.cancel();
    consumer.task.await.unwrap();
}

async fn stopping_finishes_the_jobs_in_hand(h: Harness) {
    let mut consumer = start(&h, &h.queue, "stopping", 1, Duration::from_millis(700)).await;
    h.send(&h.queue, "in-hand").await;
    next_claim(&mut consumer, Duration::from_secs(5)).await;
    consumer.stop.cancel();
    consumer.task.await.unwrap();
    assert_eq!(
        consumer.seen.finished.load(Ordering::SeqCst),
        1,
        "consume returned before its job ended"
    );
}

async fn two_consumers_run_each_request_once(h: Harness) {
    let mut a = start(&h, &h.queue, "consumer-a", 2, Duration::from_millis(100)).await;
    let mut b = start(&h, &h.other, "consumer-b", 2, Duration::from_millis(100)).await;
    let mut sent = HashSet::new();
    for i in 0..8 {
        let queue = if i % 2 == 0 { &h.queue } else { &h.other };
        sent.insert(h.send(queue, &format!("shared-{i}")).await);
    }
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < sent.len() && Instant::now() < deadline {
        tokio::select! {
            Some(id) = a.claimed.recv() => got.push(id),
            Some(id) = b.claimed.recv() => got.push(id),
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    // Give late duplicates time to show up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    while let Ok(id) = a.claimed.try_recv() {
        got.push(id);
    }
    while let Ok(id) = b.claimed.try_recv() {
        got.push(id);
    }
    assert_eq!(got.len(), sent.len(), "each request claimed exactly once");
    assert_eq!(got.into_iter().collect::<HashSet<_>>(), sent);
    for c in [a, b] {
        c.stop.cancel();
        c.task.await.unwrap();
    }
}

macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $test() {
                    super::$test(super::Harness::redis().await).await;
                }
            )*
        }
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $test() {
                    super::$test(super::Harness::embedded().await).await;
                }
            )*
        }
    };
}

conformance!(
    jobs_reach_an_idle_consumer_quickly_from_any_handle,
    a_consumer_never_runs_more_jobs_than_its_slots,
    stopping_finishes_the_jobs_in_hand,
    two_consumers_run_each_request_once,
);

/// apalis-redis announces no push; the adapter's notification wakes an idle consumer at
/// once, so pickup does not wait for its poll (here 3 s), whichever handle pushed.
#[tokio::test(flavor = "multi_thread")]
async fn redis_pushes_wake_an_idle_consumer_before_its_poll() {
    let fresh = FreshStore::new(StoreKind::Postgres).await;
    let prefix = format!("afqueue:{}", &Uuid::new_v4().simple().to_string()[..12]);
    let slow_poll = Duration::from_secs(3);
    let connect = || RedisQueue::connect(REDIS_URL, &prefix, slow_poll, Duration::from_secs(10));
    let queue = Queue::Redis(Box::new(connect().await.unwrap()));
    let other = Queue::Redis(Box::new(connect().await.unwrap()));
    let h = Harness::ready(fresh, queue, other, Some(prefix)).await;
    let mut consumer = start(&h, &h.queue, "woken", 1, Duration::ZERO).await;
    // Past the first fetch and heartbeat: the consumer is idle until its next poll.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (queue, name) in [
        (&h.queue, "woken-same"),
        (&h.other, "woken-other"),
        (&h.other, "woken-again"),
    ] {
        let started = Instant::now();
        let id = h.send(queue, name).await;
        assert_eq!(next_claim(&mut consumer, Duration::from_secs(10)).await, id);
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(500),
            "{name}: picked up after {took:?}, as if by the {slow_poll:?} poll"
        );
    }
    consumer.stop.cancel();
    consumer.task.await.unwrap();
}
