//! An agent's event log as its supervisor writes it: numbers each event, stores batches of
//! them through the worker's event writer (fenced by the owner, together with the other
//! agents' events) and publishes each stored event live. Publishing comes
//! after storing, so a follower that sees a live event can always find its predecessors.
//! An adopted agent's log is read back here too, for the result its last worker stored.

use chrono::Utc;
use uuid::Uuid;

use super::event_writer::EventWriter;
use crate::domain::{StoredEvent, Usage};
use crate::events::{EventBus, STATUS_EVENT, make_storable, storable_text};
use crate::store::{NewEvent, Owner, Store, StoreError, UsageEntry};

/// The kind of the events that say what the agent used (see [`EventLog::push_usage`]).
pub const USAGE_EVENT: &str = "usage";
/// The kind of the event a stream's result is stored as.
const RESULT_EVENT: &str = "result";
/// How many of an adopted agent's last stored events are searched for its result (only
/// usage and status events follow one).
const RESULT_LOOKBACK: i64 = 16;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("agent {0} is no longer owned by this worker")]
    Fenced(Uuid),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct EventLog {
    agent_id: Uuid,
    owner: Owner,
    writer: EventWriter,
    bus: EventBus,
    next_seq: i64,
    pending: Vec<NewEvent>,
    /// The usage the pending events carry (kept, like them, until the store takes them).
    pending_usage: Vec<UsageEntry>,
    stored_offset: u64,
}

impl EventLog {
    /// Continues the agent's log after the last stored event.
    pub async fn open(
        agent_id: Uuid,
        owner: Owner,
        store: &Store,
        writer: EventWriter,
        bus: EventBus,
    ) -> Result<Self, StoreError> {
        let last = store.last_event_seq(agent_id).await?;
        Ok(Self {
            agent_id,
            owner,
            writer,
            bus,
            next_seq: last + 1,
            pending: Vec::new(),
            pending_usage: Vec::new(),
            stored_offset: 0,
        })
    }

    /// The sequence number of the last event pushed.
    pub fn last_seq(&self) -> i64 {
        self.next_seq - 1
    }

    /// Adds an event to the next flush, made storable first (output is arbitrary bytes).
    pub fn push(&mut self, kind: &str, mut data: serde_json::Value) {
        make_storable(&mut data);
        self.pending.push(NewEvent {
            seq: self.next_seq,
            kind: storable_text(kind).into_owned(),
            data,
        });
        self.next_seq += 1;
    }

    /// Adds a usage event to the next flush: what `usage` adds to the agent's totals, stored
    /// with the event in one transaction.
    pub fn push_usage(&mut self, usage: Usage, model: Option<&str>) {
        let mut data = serde_json::to_value(usage).unwrap_or_default();
        if let Some(fields) = data.as_object_mut() {
            fields.insert("kind".into(), USAGE_EVENT.into());
            fields.insert("model".into(), model.into());
        }
        self.pending_usage.push(UsageEntry {
            seq: self.next_seq,
            model: model.map(String::from),
            usage,
        });
        self.push(USAGE_EVENT, data);
    }

    /// Stores the pending events without moving the output offset.
    pub async fn flush_events(&mut self) -> Result<(), LogError> {
        self.flush(self.stored_offset).await
    }

    /// Stores the pending batch with the output offset it reaches, then publishes it. A
    /// failed store write keeps the batch for the next flush; a fenced one is final.
    pub async fn flush(&mut self, output_offset: u64) -> Result<(), LogError> {
        if self.pending.is_empty() && output_offset <= self.stored_offset {
            return Ok(());
        }
        let events = std::mem::take(&mut self.pending);
        let usage = self.pending_usage.clone();
        let (events, taken) = self
            .writer
            .append(
                &self.owner,
                self.agent_id,
                events,
                output_offset as i64,
                usage,
            )
            .await;
        self.pending = events;
        if !taken? {
            return Err(LogError::Fenced(self.agent_id));
        }
        self.pending_usage.clear();
        self.stored_offset = output_offset;
        let now = Utc::now();
        for event in self.pending.drain(..) {
            let stored = StoredEvent {
                seq: event.seq,
                kind: event.kind,
                data: event.data,
                created_at: now,
            };
            if let Err(e) = self.bus.publish(self.agent_id, &stored).await {
                // Followers fill gaps from the store; a lost publish only delays them.
                tracing::warn!(agent_id = %self.agent_id, error = %e, "cannot publish event");
            }
        }
        Ok(())
    }
}

/// An adopted agent's result, if the worker before read it already: adoption reads on
/// after the stored events, and the result is among the last of them.
pub(super) async fn stored_result(
    store: &Store,
    agent_id: Uuid,
    last_seq: i64,
) -> Option<(bool, Option<String>)> {
    let after = (last_seq - RESULT_LOOKBACK).max(0);
    let events = store.events_after(agent_id, after).await.ok()?;
    // This run's only: an earlier run's result (before a resume) lies before the status
    // event that says this run started.
    let mut this_run = events
        .iter()
        .rev()
        .take_while(|e| !(e.kind == STATUS_EVENT && e.data["status"] == "running"));
    let result = this_run.find(|e| e.kind == RESULT_EVENT)?;
    let success = result.data["success"].as_bool().unwrap_or(false);
    Some((success, result.data["text"].as_str().map(String::from)))
}

/// What an adopted agent's current run already stored of its usage (the usage events after
/// the status event that says the run started), so its run totals are not counted twice.
pub(super) async fn stored_run_usage(store: &Store, agent_id: Uuid) -> Usage {
    let Ok(events) = store.events_after(agent_id, 0).await else {
        return Usage::default();
    };
    events
        .iter()
        .rev()
        .take_while(|e| !(e.kind == STATUS_EVENT && e.data["status"] == "running"))
        .filter(|e| e.kind == USAGE_EVENT)
        .filter_map(|e| serde_json::from_value::<Usage>(e.data.clone()).ok())
        .fold(Usage::default(), |sum, u| sum.plus(&u))
}
