//! apalis-redis adapter of the queue. Designed around apalis-redis's known defects: every
//! worker process uses a unique worker name, apalis retries and attempts are never relied
//! on (handlers always succeed; outcomes live in the store), and the backend heartbeat —
//! which is also when an idle worker looks for new jobs — runs at `worker.poll_interval`.
//!
//! apalis-redis announces nothing when a job is pushed, so an idle worker would see a new
//! job only at its next poll. Every push is therefore followed by a PUBLISH on
//! `<queue>:pushed`, and each consumer wakes its fetch loop on those messages. The poll
//! stays the guarantee: a lost notification (or a consumer between subscriptions) only
//! costs the poll interval.

use std::time::Duration;

use apalis::prelude::{BoxDynError, Data, TaskSink, WorkerBuilder};
use apalis_redis::{Config, ConnectionManager, RedisStorage};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{JobHandler, QueueError, SlotGateLayer, Slots, SpawnJob, Wakeup};

pub const SPAWN_QUEUE: &str = "spawn";

#[path = "redis_control.rs"]
mod control;

#[derive(Clone)]
pub struct RedisQueue {
    storage: RedisStorage<serde_json::Value>,
    client: redis::Client,
    conn: ConnectionManager,
    queue_name: String,
    /// `redis.prefix`, which the control queues share.
    prefix: String,
    poll_interval: Duration,
}

impl std::fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQueue")
            .field("queue", &self.queue_name)
            .finish()
    }
}

impl RedisQueue {
    /// Connects to Redis; `prefix` namespaces the queue keys; `poll_interval` and
    /// `orphan_after` tune how fast idle workers see jobs and how soon the jobs of a vanished
    /// worker go back to the queue.
    pub async fn connect(
        url: &str,
        prefix: &str,
        poll_interval: Duration,
        orphan_after: Duration,
    ) -> Result<Self, QueueError> {
        let redis_error = |e: redis::RedisError| QueueError::Redis(e.to_string());
        let client = redis::Client::open(url).map_err(redis_error)?;
        let conn = client.get_connection_manager().await.map_err(redis_error)?;
        let queue_name = format!("{prefix}:{SPAWN_QUEUE}");
        let missed = (orphan_after.as_millis() / poll_interval.as_millis().max(1)).max(3) as usize;
        let config = Config::default()
            .queue(&queue_name)
            // One job per fetch: a worker only fetches while it has a free slot.
            .batch_size(1)
            .heartbeat_interval(poll_interval)
            .missed_heartbeats(missed);
        Ok(Self {
            storage: RedisStorage::new(conn.clone()).with_config(config),
            client,
            conn,
            queue_name,
            prefix: prefix.to_string(),
            poll_interval,
        })
    }

    pub fn queue_name(&self) -> &str {
        &self.queue_name
    }

    fn pushed_channel(&self) -> String {
        format!("{}:pushed", self.queue_name)
    }

    pub async fn enqueue(&self, job: &SpawnJob) -> Result<(), QueueError> {
        let value = serde_json::to_value(job).map_err(|e| QueueError::Redis(e.to_string()))?;
        self.enqueue_raw(value).await
    }

    /// Pushes any JSON value as a job (operators' tools and tests of malformed jobs).
    ///
    /// A push that fails is tried once more: the first command on a connection that Redis
    /// closed (a restart) fails with a broken pipe, and the connection manager answers the
    /// second on a fresh connection. Without it the request would wait for the re-dispatch
    /// (`queue.redispatch_after`). A push that did reach Redis before failing may be
    /// delivered twice; the claim in the store makes the second delivery a no-op.
    pub async fn enqueue_raw(&self, value: serde_json::Value) -> Result<(), QueueError> {
        let mut storage = self.storage.clone();
        if let Err(first) = storage.push(value.clone()).await {
            tracing::debug!(error = %first, "push failed; trying again on a fresh connection");
            storage
                .push(value)
                .await
                .map_err(|e| QueueError::Redis(e.to_string()))?;
        }
        // The job is safe in Redis; a lost wake-up only delays it to the next poll. Awaited,
        // so a short-lived caller (the CLI) does not exit before it is sent.
        let mut conn = self.conn.clone();
        if let Err(e) = redis::cmd("PUBLISH")
            .arg(self.pushed_channel())
            .arg("")
            .query_async::<i64>(&mut conn)
            .await
        {
            tracing::debug!(error = %e, "cannot announce the pushed job");
        }
        Ok(())
    }

    /// Wakes `wakeup` on every push announced on the queue's channel, until `stop`.
    async fn wake_on_push(&self, wakeup: Wakeup, stop: CancellationToken) {
        wake_on(&self.client, &[self.pushed_channel()], &[wakeup], stop).await
    }

    /// A backend for one apalis worker.
    pub fn backend(&self) -> RedisStorage<serde_json::Value> {
        self.storage.clone()
    }

    /// Runs one apalis worker named `consumer` until `stop`. The slot gate makes it fetch
    /// only while a slot is free.
    pub async fn consume(
        &self,
        consumer: &str,
        slots: Slots,
        stop: CancellationToken,
        handler: JobHandler,
    ) -> Result<(), QueueError> {
        let wakeup = Wakeup::default();
        let worker = WorkerBuilder::new(consumer)
            .backend(self.backend())
            .layer(SlotGateLayer::new(slots).with_wakeup(wakeup.clone()))
            .data(handler)
            .build(run_job);
        let notifications = stop.child_token();
        let woken = self.wake_on_push(wakeup, notifications.clone());
        let consumed = worker.run_until(async move {
            stop.cancelled().await;
            Ok::<(), std::io::Error>(())
        });
        let (result, ()) = tokio::join!(
            async {
                let result = consumed.await;
                notifications.cancel();
                result
            },
            woken
        );
        result.map_err(|e| QueueError::Redis(e.to_string()))
    }
}

/// Wakes the consumers twice more shortly after a push: one still busy with its previous
/// job when the first wake came (its handler returning, its slot coming back) asks the
/// queue only on its next wake, which would otherwise be its poll.
fn wake_again_soon(wakeups: &[Wakeup]) {
    let wakeups = wakeups.to_vec();
    tokio::spawn(async move {
        for after in [Duration::from_millis(100), Duration::from_millis(300)] {
            tokio::time::sleep(after).await;
            wakeups.iter().for_each(Wakeup::wake);
        }
    });
}

/// Wakes `wakeup` on every message on `channels`, until `stop`; re-subscribes after a lost
/// connection.
pub(super) async fn wake_on(
    client: &redis::Client,
    channels: &[String],
    wakeups: &[Wakeup],
    stop: CancellationToken,
) {
    let wake = || wakeups.iter().for_each(Wakeup::wake);
    while !stop.is_cancelled() {
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            for channel in channels {
                pubsub.subscribe(channel).await?;
            }
            Ok::<_, redis::RedisError>(pubsub)
        };
        match subscribed.await {
            Ok(pubsub) => {
                // Jobs pushed before the subscription took are fetched now.
                wake();
                let mut messages = pubsub.into_on_message();
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        msg = messages.next() => match msg {
                            Some(_) => {
                                wake();
                                wake_again_soon(wakeups);
                            }
                            None => break,
                        },
                    }
                }
                tracing::debug!("push notifications lost; subscribing again");
            }
            Err(e) => tracing::debug!(error = %e, "cannot subscribe to push notifications"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Handlers never fail: outcomes live in the store, so apalis has nothing to retry.
async fn run_job(job: serde_json::Value, handler: Data<JobHandler>) -> Result<(), BoxDynError> {
    handler.call(job).await;
    Ok(())
}
