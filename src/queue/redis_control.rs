//! The control queues on Redis: one apalis queue per worker and one per node, under
//! `redis.prefix` beside the spawn queue. A push is followed by a PUBLISH on the queue's
//! `:pushed` channel, which wakes its consumers at once; their apalis heartbeat (when an
//! idle consumer also looks for jobs) runs only at `worker.control_poll_interval`, so an
//! idle worker costs Redis next to nothing.

use std::time::Duration;

use apalis::prelude::{TaskSink, WorkerBuilder};
use apalis_redis::{Config, RedisStorage};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::super::control::{ControlConsumer, ControlJob, ControlTarget};
use super::super::{JobHandler, QueueError, SlotGateLayer, Slots, Wakeup};
use super::{RedisQueue, run_job, wake_on};

/// Control jobs one worker handles at once (a stop waits for its agent to end).
const CONTROL_CONCURRENCY: usize = 32;

fn redis_error(e: impl std::fmt::Display) -> QueueError {
    QueueError::Redis(e.to_string())
}

impl RedisQueue {
    pub fn control_queue_name(&self, target: &ControlTarget) -> String {
        format!("{}:{}", self.prefix, target.queue_suffix())
    }

    /// `poll`: the apalis heartbeat, when an idle consumer looks for jobs without a push.
    fn control_storage(&self, queue: &str, poll: Duration) -> RedisStorage<serde_json::Value> {
        let poll = poll.max(self.poll_interval);
        let config = Config::default()
            .queue(queue)
            .batch_size(8)
            .heartbeat_interval(poll)
            .missed_heartbeats(3);
        RedisStorage::new(self.conn.clone()).with_config(config)
    }

    pub async fn push_control(
        &self,
        target: &ControlTarget,
        job: &ControlJob,
    ) -> Result<(), QueueError> {
        let queue = self.control_queue_name(target);
        let value = serde_json::to_value(job).map_err(redis_error)?;
        let mut storage = self.control_storage(&queue, self.poll_interval);
        storage.push(value).await.map_err(redis_error)?;
        // The job is safe in Redis; a lost wake-up only delays it to the consumer's poll.
        let mut conn = self.conn.clone();
        if let Err(e) = redis::cmd("PUBLISH")
            .arg(format!("{queue}:pushed"))
            .arg("")
            .query_async::<i64>(&mut conn)
            .await
        {
            tracing::debug!(error = %e, "cannot announce the pushed control job");
        }
        Ok(())
    }

    /// Removes what a gone worker left in Redis: every key of its control queue, and the
    /// apalis metadata of its consumers in every queue (apalis drops a dead consumer from
    /// a queue's worker set and hands its jobs back, but keeps that hash for good). Its
    /// control requests live on in the store, pointed at whoever owns their agents now.
    pub async fn forget_worker(&self, worker_id: &str) -> Result<usize, QueueError> {
        let queue = self.control_queue_name(&ControlTarget::Worker(worker_id.to_string()));
        let own_queue = format!("{queue}:");
        // Consumer names start with the worker's id (`<id>-<generation>`,
        // `<id>-control-<generation>-<n>`).
        let consumer = format!(":workers:metadata:{worker_id}-");
        // One pass over the fleet's keys finds both.
        let keys: Vec<String> = self
            .scan(&format!("{}:*", glob_escape(&self.prefix)))
            .await?
            .into_iter()
            .filter(|k| k.starts_with(&own_queue) || k.contains(&consumer))
            .collect();
        let mut conn = self.conn.clone();
        for chunk in keys.chunks(500) {
            redis::cmd("UNLINK")
                .arg(chunk)
                .query_async::<i64>(&mut conn)
                .await
                .map_err(redis_error)?;
        }
        Ok(keys.len())
    }

    /// The keys matching `pattern`.
    async fn scan(&self, pattern: &str) -> Result<Vec<String>, QueueError> {
        let mut conn = self.conn.clone();
        let mut keys: Vec<String> = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, found): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .map_err(redis_error)?;
            keys.extend(found);
            if next == 0 {
                return Ok(keys);
            }
            cursor = next;
        }
    }

    /// One apalis worker per control queue of this worker, all woken by one subscription.
    pub async fn consume_controls(
        &self,
        consumer: &str,
        targets: &ControlConsumer<'_>,
        stop: CancellationToken,
        handler: JobHandler,
    ) -> Result<(), QueueError> {
        let names: Vec<String> = targets
            .targets()
            .iter()
            .map(|t| self.control_queue_name(t))
            .collect();
        // One waker per apalis worker: each registers its own consumer task.
        let wakeups: Vec<Wakeup> = names.iter().map(|_| Wakeup::default()).collect();
        let channels: Vec<String> = names.iter().map(|n| format!("{n}:pushed")).collect();
        let notifications = stop.child_token();
        let workers = names
            .iter()
            .zip(&wakeups)
            .enumerate()
            .map(|(i, (name, wakeup))| {
                let worker = WorkerBuilder::new(format!("{consumer}-{i}"))
                    .backend(self.control_storage(name, targets.fallback_poll))
                    .layer(
                        SlotGateLayer::new(Slots::new(CONTROL_CONCURRENCY))
                            .with_wakeup(wakeup.clone()),
                    )
                    .data(handler.clone())
                    .build(run_job);
                let stop = stop.clone();
                worker.run_until(async move {
                    stop.cancelled().await;
                    Ok::<(), std::io::Error>(())
                })
            });
        // Each apalis worker fetches whenever it is polled while ready, so each needs its
        // own waker: in one `join_all` every fetch that completes would make the other
        // fetch again, for ever.
        let consumed = workers
            .collect::<futures::stream::FuturesUnordered<_>>()
            .collect::<Vec<_>>();
        let woken = wake_on(&self.client, &channels, &wakeups, notifications.clone());
        let (results, ()) = tokio::join!(
            async {
                let results = consumed.await;
                notifications.cancel();
                results
            },
            woken
        );
        results
            .into_iter()
            .collect::<Result<Vec<()>, _>>()
            .map(|_| ())
            .map_err(redis_error)
    }
}

/// `text` as a literal in a Redis MATCH pattern.
fn glob_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    #[test]
    fn glob_escape_keeps_names_literal() {
        assert_eq!(
            super::glob_escape("af:control:worker:h-1"),
            "af:control:worker:h-1"
        );
        assert_eq!(super::glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
