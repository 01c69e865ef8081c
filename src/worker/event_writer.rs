//! One writer of agent events per worker: supervisors hand it their pending events and it
//! stores whatever has gathered in one transaction (group commit), so a worker with many
//! agents makes one commit per round instead of one per agent. Each caller learns whether
//! its own write was taken or fenced off, and gets its events back if the store failed.

use std::collections::HashSet;

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};
use uuid::Uuid;

use crate::store::{EventAppend, NewEvent, Owner, Store, StoreError, UsageEntry};

/// Most agents written in one transaction.
const MAX_BATCH: usize = 512;
/// Transactions in flight at once: the next batch gathers and is sent while earlier ones
/// wait for their commit.
const IN_FLIGHT: usize = 2;

/// The event that stands for one the store refused to hold.
pub const REFUSED_EVENT: &str = "event.refused";

/// What a caller gets back: its events (to keep on failure) and whether the write was
/// taken (false: fenced off).
type Reply = (Vec<NewEvent>, Result<bool, StoreError>);

struct Member {
    owner: Owner,
    append: EventAppend,
    reply: oneshot::Sender<Reply>,
}

#[derive(Clone, Debug)]
pub struct EventWriter {
    tx: mpsc::UnboundedSender<Member>,
}

impl EventWriter {
    /// Starts the writer task; it ends when the last handle is dropped.
    pub fn start(store: Store) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(store, rx));
        Self { tx }
    }

    /// Stores `events`, `output_offset` and the `usage` they carry for the agent while
    /// `owner` owns it.
    pub async fn append(
        &self,
        owner: &Owner,
        agent_id: Uuid,
        events: Vec<NewEvent>,
        output_offset: i64,
        usage: Vec<UsageEntry>,
    ) -> Reply {
        let (reply, answer) = oneshot::channel();
        let member = Member {
            owner: owner.clone(),
            append: EventAppend {
                agent_id,
                events,
                output_offset,
                usage,
            },
            reply,
        };
        if let Err(mpsc::error::SendError(member)) = self.tx.send(member) {
            return (member.append.events, Err(gone()));
        }
        answer.await.unwrap_or_else(|_| (Vec::new(), Err(gone())))
    }
}

fn gone() -> StoreError {
    StoreError::Shared("the event writer has stopped".into())
}

async fn run(store: Store, mut rx: mpsc::UnboundedReceiver<Member>) {
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut batch = Vec::new();
    loop {
        // Gather only once a transaction can start: what arrives meanwhile joins the batch.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        if rx.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        // One transaction per owner, and an agent at most once in each (a log waits for
        // its flush, so an agent appears twice only across owners).
        let mut groups = Vec::new();
        while !batch.is_empty() {
            let owner = batch[0].owner.clone();
            let mut seen = HashSet::new();
            let (now, later): (Vec<Member>, Vec<Member>) = batch
                .drain(..)
                .partition(|m| m.owner == owner && seen.insert(m.append.agent_id));
            batch = later;
            groups.push((owner, now));
        }
        let store = store.clone();
        tokio::spawn(async move {
            for (owner, members) in groups {
                write(&store, &owner, members).await;
            }
            drop(permit);
        });
    }
}

async fn write(store: &Store, owner: &Owner, members: Vec<Member>) {
    let (replies, mut appends): (Vec<_>, Vec<_>) =
        members.into_iter().map(|m| (m.reply, m.append)).unzip();
    let mut result = store.append_events_many(owner, &appends).await;
    if result.as_ref().is_err_and(StoreError::rejects_content) {
        result = isolate(store, owner, &mut appends).await;
    }
    for (reply, append) in replies.into_iter().zip(appends) {
        let outcome = match &result {
            Ok(taken) => Ok(taken.contains(&append.agent_id)),
            Err(e) => Err(StoreError::Shared(e.to_string())),
        };
        let _ = reply.send((append.events, outcome));
    }
}

/// After the store refused a batch for its content: each agent's write alone, so one
/// agent's event cannot fail the others', and in an agent's write that still fails, each
/// event alone, the ones refused replaced by a note (see [`refused`]). Retrying the batch as
/// it was would fail forever.
async fn isolate(
    store: &Store,
    owner: &Owner,
    appends: &mut [EventAppend],
) -> Result<HashSet<Uuid>, StoreError> {
    let mut taken = HashSet::new();
    for append in appends.iter_mut() {
        let alone = match store
            .append_events_many(owner, std::slice::from_ref(append))
            .await
        {
            Err(e) if e.rejects_content() => replace_refused(store, owner, append).await?,
            other => other?,
        };
        taken.extend(alone);
    }
    Ok(taken)
}

/// Stores `append`'s events one at a time (without moving its offset: an event stored
/// twice is ignored by the store), replaces those refused, then stores the whole.
async fn replace_refused(
    store: &Store,
    owner: &Owner,
    append: &mut EventAppend,
) -> Result<HashSet<Uuid>, StoreError> {
    for event in append.events.iter_mut() {
        let one = EventAppend {
            agent_id: append.agent_id,
            events: vec![event.clone()],
            output_offset: 0,
            usage: Vec::new(),
        };
        match store.append_events_many(owner, &[one]).await {
            Ok(taken) if taken.is_empty() => return Ok(taken),
            Ok(_) => {}
            Err(e) if e.rejects_content() => {
                tracing::warn!(agent_id = %append.agent_id, seq = event.seq, kind = %event.kind, error = %e, "the store refused an event; stored a note instead");
                *event = refused(event.seq);
            }
            Err(e) => return Err(e),
        }
    }
    store
        .append_events_many(owner, std::slice::from_ref(append))
        .await
}

/// What stands in the log for an event the store refused: its place (the sequence stays
/// gapless) and that it was refused, not its content.
fn refused(seq: i64) -> NewEvent {
    NewEvent {
        seq,
        kind: REFUSED_EVENT.into(),
        data: serde_json::json!({
            "kind": REFUSED_EVENT,
            "reason": "the store refused this event's content",
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::domain::AgentMode;
    use crate::store::{NewWorker, SpawnRecord, StoreKind};

    /// A fresh store of `kind` with one spawned agent claimed by a live worker.
    async fn store_with_agent(
        kind: StoreKind,
        dir: &std::path::Path,
        pg_name: &str,
    ) -> (Store, Uuid, Owner) {
        let url = match kind {
            StoreKind::Postgres => format!("postgres://postgres@127.0.0.1:5432/{pg_name}"),
            StoreKind::Sqlite => format!("sqlite://{}", dir.join("store.db").display()),
        };
        let store = Store::connect(&url, 4, true).await.expect("store");
        store.migrate().await.expect("migrate");
        store
            .add_project("demo", "/tmp/demo.git", "main")
            .await
            .unwrap();
        let recorded = store
            .record_spawn(SpawnRecord {
                name: "nul-agent",
                provider: "claude",
                mode: AgentMode::Execute,
                project: "demo",
                task_id: None,
                idempotency_key: None,
                request_hash: "",
                payload: json!({"prompt": "p"}),
                model: None,
                budget: None,
            })
            .await
            .unwrap();
        let worker = NewWorker {
            id: "w-1",
            node_id: "node-a",
            host: "host-a",
            pid: 1,
            pid_start_time: None,
            capacity: 2,
        };
        let epoch = store
            .register_worker(&worker, Duration::from_secs(60))
            .await
            .unwrap();
        let owner = Owner {
            worker_id: "w-1".into(),
            epoch,
        };
        let claimed = store
            .claim_request(recorded.request_id, &owner, "node-a")
            .await
            .unwrap()
            .expect("claimed");
        (store, claimed.agent.id, owner)
    }

    fn event(seq: i64, data: serde_json::Value) -> NewEvent {
        NewEvent {
            seq,
            kind: "raw".into(),
            data,
        }
    }

    /// An event the store cannot hold (Postgres refuses a NUL in jsonb) is replaced by a
    /// note and the batch's other events are stored, once: the write is not failed (and
    /// retried) forever. SQLite holds it as it is.
    async fn a_refused_event_is_isolated(kind: StoreKind) {
        let dir = tempfile::tempdir().unwrap();
        let pg_name = format!("af_unit_{}", &Uuid::new_v4().simple().to_string()[..12]);
        let (store, agent, owner) = store_with_agent(kind, dir.path(), &pg_name).await;
        let writer = EventWriter::start(store.clone());
        let events = vec![
            event(1, json!({"line": "before"})),
            event(2, json!({"line": "nul \u{0} inside"})),
            event(3, json!({"line": "after"})),
        ];
        let (returned, taken) = writer.append(&owner, agent, events, 42, Vec::new()).await;
        assert!(taken.expect("stored, not failed"));
        let stored = store.events_after(agent, 0).await.unwrap();
        let kinds: Vec<&str> = stored.iter().map(|e| e.kind.as_str()).collect();
        let expected = match kind {
            StoreKind::Postgres => ["raw", REFUSED_EVENT, "raw"],
            StoreKind::Sqlite => ["raw", "raw", "raw"],
        };
        assert_eq!(kinds, expected);
        assert_eq!(returned.len(), 3, "the events as stored, to publish");
        assert_eq!(returned[1].kind, expected[1]);
        assert_eq!(stored[2].data["line"], "after");
        let agent_row = store.agent_by_id(agent).await.unwrap();
        assert_eq!(
            agent_row.output_offset, 42,
            "the offset moved with the events"
        );
        drop((writer, store));
        if kind == StoreKind::Postgres {
            // Best effort: leave no test database behind.
            let admin = "postgres://postgres@127.0.0.1:5432/postgres";
            if let Ok(pool) = sqlx::PgPool::connect(admin).await {
                let drop_it = format!("DROP DATABASE IF EXISTS {pg_name} WITH (FORCE)");
                let _ = sqlx::query(sqlx::AssertSqlSafe(drop_it))
                    .execute(&pool)
                    .await;
            }
        }
    }

    #[tokio::test]
    async fn a_refused_event_is_isolated_in_postgres() {
        a_refused_event_is_isolated(StoreKind::Postgres).await;
    }

    #[tokio::test]
    async fn a_refused_event_is_isolated_in_sqlite() {
        a_refused_event_is_isolated(StoreKind::Sqlite).await;
    }
}
