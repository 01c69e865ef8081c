//! One writer of agent events per worker: supervisors hand it their pending events and it
//! stores whatever has gathered in one transaction (group commit), so a worker with many
//! agents makes one commit per round instead of one per agent. Each caller learns whether
//! its own write was taken or fenced off, and gets its events back if the store failed.

use std::collections::HashSet;

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};
use uuid::Uuid;

use crate::store::{EventAppend, NewEvent, Owner, Store, StoreError};

/// Most agents written in one transaction.
const MAX_BATCH: usize = 512;
/// Transactions in flight at once: the next batch gathers and is sent while earlier ones
/// wait for their commit.
const IN_FLIGHT: usize = 2;

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

    /// Stores `events` and `output_offset` for the agent while `owner` owns it.
    pub async fn append(
        &self,
        owner: &Owner,
        agent_id: Uuid,
        events: Vec<NewEvent>,
        output_offset: i64,
    ) -> Reply {
        let (reply, answer) = oneshot::channel();
        let member = Member {
            owner: owner.clone(),
            append: EventAppend {
                agent_id,
                events,
                output_offset,
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
    let (replies, appends): (Vec<_>, Vec<_>) =
        members.into_iter().map(|m| (m.reply, m.append)).unzip();
    let result = store.append_events_many(owner, &appends).await;
    for (reply, append) in replies.into_iter().zip(appends) {
        let outcome = match &result {
            Ok(taken) => Ok(taken.contains(&append.agent_id)),
            Err(e) => Err(StoreError::Shared(e.to_string())),
        };
        let _ = reply.send((append.events, outcome));
    }
}
