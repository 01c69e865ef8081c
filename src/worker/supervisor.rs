//! The supervisor of one running agent: tails the process's output file as it grows, turns
//! each line into normalised events with the provider's parser, writes them to the event log
//! in batches, and when the process ends gathers what decides the agent's outcome. This file
//! is the loop and its I/O (reading, flushing, waiting for a store that is away); what the
//! stream said is kept in `stream_facts.rs`, its usage is counted and its budgets checked
//! in `budget.rs`, the signal file is read in `signal_file.rs`,
//! and the outcome is decided from them in `outcome.rs`. The loop and the steps it takes
//! (read a step, flush or keep, store through an outage, read the rest) share the tail's
//! state and stay together here, a little past 400 lines.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::event_log::{EventLog, LogError, stored_result};
use super::outcome::{Interrupt, decide};
use super::output_reader::{Line, OutputReader};
use super::output_watch::{OutputWatch, Watched};
use super::signal_file::read_signal;
use super::stream_facts::{AccountTrouble, StreamFacts};
use super::usage_meter::UsageMeter;
use crate::agent_files;
use crate::domain::{AgentOutcome, Budget};
use crate::events::{make_storable_text, storable_line};
use crate::process::Running;
use crate::providers::{AgentEvent, StreamParser};
use crate::store::{Owner, Store};

/// How often the output is read when writes to it cannot be watched.
const READ_EVERY: Duration = Duration::from_millis(50);
/// How often a watched output is read anyway (a missed notification costs at most this).
const WATCHED_READ_EVERY: Duration = Duration::from_secs(1);
/// How long to wait before writing to an unavailable store again.
pub const STORE_RETRY: Duration = Duration::from_millis(500);
const STDERR_TAIL_BYTES: u64 = 2048;
/// The stderr tail is read without blocking on it; this bounds a stalled filesystem.
const STDERR_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The event that says why a signal file the agent left was not used.
const SIGNAL_IGNORED_EVENT: &str = "signal.ignored";
/// The event that says the agent's output reached `agent.max_output_bytes`.
const OUTPUT_LIMIT_EVENT: &str = "output.limit";
/// Most output read in one step; a flood is read step by step, yielding in between, so
/// it never holds a runtime thread for long (other agents' events, the lease).
const STEP_BYTES: usize = 256 * 1024;
/// Under a flood, the events are stored at least every this much output.
const FLUSH_BYTES: usize = 1024 * 1024;
/// Reading pauses while the store has not taken this much of what was read (it is away):
/// what waits in memory for it stays bounded.
const MAX_UNFLUSHED: usize = FLUSH_BYTES + 2 * STEP_BYTES;
/// How much of each recent line is kept in memory.
const RECENT_LINE_BYTES: usize = 1024;

/// How supervision ended.
#[derive(Debug)]
pub enum Supervised {
    /// The agent reached a final state.
    Ended(AgentOutcome),
    /// The worker let go of a still-running agent for the next worker on the node.
    Detached,
    /// The agent is someone else's now (lease lost or taken over).
    Fenced,
    /// The process was stopped because of its account: mark it, and maybe fail over.
    AccountTrouble {
        trouble: AccountTrouble,
        outcome: AgentOutcome,
    },
}

/// The signals a supervisor listens to.
#[derive(Clone, Debug)]
pub struct Controls {
    pub stop: CancellationToken,
    pub detach: CancellationToken,
    pub shutdown: CancellationToken,
    pub lease_lost: CancellationToken,
}

/// Limits on a running agent.
#[derive(Clone, Debug)]
pub struct Limits {
    pub stop_grace: Duration,
    pub idle_timeout: Duration,
    pub max_runtime: Duration,
    pub flush_every: Duration,
    pub buffer_lines: usize,
    /// Longest line stored whole (longer ones are cut).
    pub max_event_bytes: usize,
    /// Most output read from one run.
    pub max_output_bytes: u64,
}

pub struct Supervisor<'a> {
    pub agent_id: Uuid,
    pub owner: &'a Owner,
    pub store: &'a Store,
    pub log: &'a mut EventLog,
    pub parser: Box<dyn StreamParser>,
    pub output: PathBuf,
    pub stderr: PathBuf,
    pub workdir: PathBuf,
    /// Where in the output file to start (the end of what is already stored).
    pub offset: u64,
    /// The session id already known (an adopted agent's).
    pub session_id: Option<String>,
    pub controls: Controls,
    pub limits: Limits,
    /// How long the agent has already run (adopted agents).
    pub ran_for: Duration,
    /// The worker's watcher of output files, if inotify works here.
    pub watch: Option<std::sync::Arc<OutputWatch>>,
    /// Counts what the agent uses (its totals before this run within).
    pub meter: UsageMeter,
    pub provider: String,
    /// The agent's limits, checked against the meter at each usage event.
    pub budget: Option<Budget>,
    /// The project's id and daily budget (US dollars), checked against the store's count
    /// of the day at each usage event with a cost.
    pub project_budget: Option<(Uuid, f64)>,
}

/// The tail of the output file as it grows.
struct Tail {
    reader: OutputReader,
    /// The last lines (their starts), for a look at what the agent said last.
    recent: VecDeque<String>,
    last_growth: Instant,
    /// Output read since its events were last stored.
    unflushed: usize,
}

impl Supervisor<'_> {
    /// Runs until the process ends, the agent is interrupted, or the worker lets go.
    pub async fn run(mut self, mut process: Running) -> Result<Supervised, LogError> {
        let mut tail = Tail {
            reader: OutputReader::new(
                self.offset,
                self.limits.max_event_bytes,
                self.limits.max_output_bytes,
            ),
            recent: VecDeque::with_capacity(self.limits.buffer_lines.min(4096)),
            last_growth: Instant::now(),
            unflushed: 0,
        };
        let mut facts = StreamFacts {
            session_id: self.session_id.clone(),
            result_expected: self.parser.reports_result(),
            result: match self.offset {
                0 => None,
                _ => stored_result(self.store, self.agent_id, self.log.last_seq()).await,
            },
            ..Default::default()
        };
        let deadline = Instant::now() + self.limits.max_runtime.saturating_sub(self.ran_for);
        let mut flush_tick = tokio::time::interval(self.limits.flush_every);
        let controls = self.controls.clone();
        let mut interrupted = None;
        let mut watched: Option<Watched> = None;
        let mut next_read = Instant::now();
        let exit = loop {
            let mut read_now = false;
            tokio::select! {
                exit = process.wait() => break exit,
                _ = written(&watched) => read_now = true,
                _ = tokio::time::sleep_until(next_read) => read_now = true,
                _ = flush_tick.tick() => self.flush_or_keep(&mut tail).await?,
                _ = tokio::time::sleep_until(deadline) => interrupted = Some(Interrupt::MaxRuntime),
                _ = controls.stop.cancelled() => interrupted = Some(Interrupt::StopRequested),
                _ = controls.shutdown.cancelled() => interrupted = Some(Interrupt::Shutdown),
                _ = controls.detach.cancelled() => {
                    // The next worker reads on from the offset stored with these events.
                    self.log.flush(tail.reader.consumed()).await?;
                    return Ok(Supervised::Detached);
                }
                _ = controls.lease_lost.cancelled() => return Ok(Supervised::Fenced),
            }
            if read_now {
                // Watch before reading, so a write after this read always wakes us.
                if watched.is_none() {
                    watched = self.watch.as_ref().and_then(|w| w.watch(&self.output));
                }
                let more = self.read_step(&mut tail, &mut facts).await?;
                self.save_session(&mut facts).await?;
                // New events go out at once (the worker's writer batches them with every
                // other agent's, so this costs no commit of its own); under a flood, every
                // FLUSH_BYTES.
                if tail.unflushed > 0 && (!more || tail.unflushed >= FLUSH_BYTES) {
                    self.flush_or_keep(&mut tail).await?;
                }
                if tail.last_growth.elapsed() >= self.limits.idle_timeout {
                    interrupted = Some(Interrupt::IdleTimeout);
                }
                if tail.reader.at_limit() {
                    interrupted = Some(Interrupt::OutputLimit);
                }
                let every = if watched.is_some() {
                    WATCHED_READ_EVERY
                } else {
                    READ_EVERY
                };
                next_read = if more {
                    // More is waiting: read on after the other tasks had their turn.
                    tokio::task::yield_now().await;
                    Instant::now()
                } else {
                    Instant::now() + every
                };
            }
            if interrupted.is_none() && facts.account_trouble.is_some() {
                interrupted = Some(Interrupt::AccountTrouble);
            }
            if interrupted.is_none() && facts.over_budget.is_some() {
                interrupted = Some(Interrupt::OverBudget);
            }
            if interrupted.is_some() {
                break process.terminate(self.limits.stop_grace).await;
            }
        };
        match self.read_rest(&mut tail, &mut facts, interrupted).await {
            Err(LogError::Fenced(_)) => return Ok(Supervised::Fenced),
            other => other?,
        }
        // An interrupt decides the outcome by itself: the signal file is not even looked
        // at then. Otherwise one the agent left that is refused or malformed says why in
        // its events, before the final flush.
        let signal = match interrupted {
            Some(_) => None,
            None => read_signal(&self.workdir).await,
        };
        if let Some(Err(reason)) = &signal {
            tracing::warn!(agent_id = %self.agent_id, %reason, "signal file ignored; using the output stream instead");
            self.log.push(
                SIGNAL_IGNORED_EVENT,
                serde_json::json!({"kind": SIGNAL_IGNORED_EVENT, "reason": reason}),
            );
        }
        if self.store_all(&mut tail).await.is_err() {
            return Ok(Supervised::Fenced);
        }
        let stderr_tail = tail_of(&self.stderr).await;
        let trouble = facts.account_trouble.clone();
        let mut outcome = decide(exit, interrupted, facts, signal, &stderr_tail);
        // The stderr tail and the texts are the agent's bytes: storable like its events.
        for text in [
            &mut outcome.result,
            &mut outcome.error,
            &mut outcome.session_id,
        ] {
            text.iter_mut().for_each(make_storable_text);
        }
        Ok(match (interrupted, trouble) {
            (Some(Interrupt::AccountTrouble), Some(trouble)) => {
                Supervised::AccountTrouble { trouble, outcome }
            }
            _ => Supervised::Ended(outcome),
        })
    }

    /// After the process ended: the output not read yet (to the limit), step by step, and
    /// its last line if that has no newline.
    async fn read_rest(
        &mut self,
        tail: &mut Tail,
        facts: &mut StreamFacts,
        interrupted: Option<Interrupt>,
    ) -> Result<(), LogError> {
        loop {
            if tail.unflushed >= FLUSH_BYTES {
                self.store_all(tail).await?;
            }
            if !self.read_step(tail, facts).await? {
                break;
            }
            tokio::task::yield_now().await;
        }
        if let Some(line) = tail.reader.finish() {
            self.handle_line(line, &mut tail.recent, facts).await?;
        }
        if tail.reader.at_limit() {
            let limit = self.limits.max_output_bytes;
            tracing::warn!(agent_id = %self.agent_id, limit, ?interrupted, "output limit reached; the rest stays in the output file");
            self.log.push(
                OUTPUT_LIMIT_EVENT,
                serde_json::json!({"kind": OUTPUT_LIMIT_EVENT, "limit": limit}),
            );
        }
        Ok(())
    }

    /// Stores the pending events and the offset they reach, waiting for a store that is
    /// away (a restart); fails only when the agent is fenced off or the lease is lost.
    async fn store_all(&mut self, tail: &mut Tail) -> Result<(), LogError> {
        loop {
            match self.log.flush(tail.reader.consumed()).await {
                Ok(()) => {
                    tail.unflushed = 0;
                    return Ok(());
                }
                Err(LogError::Fenced(id)) => return Err(LogError::Fenced(id)),
                Err(LogError::Store(e)) => {
                    tracing::warn!(agent_id = %self.agent_id, error = %e, "flush failed; retrying");
                    tokio::select! {
                        _ = self.controls.lease_lost.cancelled() => return Err(LogError::Fenced(self.agent_id)),
                        _ = tokio::time::sleep(STORE_RETRY) => {}
                    }
                }
            }
        }
    }

    /// Records the session id as soon as it is known (resume and failover need it); a
    /// store that is briefly away gets it on a later read tick, the final state in any case.
    async fn save_session(&mut self, facts: &mut StreamFacts) -> Result<(), LogError> {
        let Some(session_id) = facts.session_id.clone().filter(|_| facts.session_unsaved) else {
            return Ok(());
        };
        match self
            .store
            .set_session_id(self.agent_id, self.owner, &session_id)
            .await
        {
            Ok(true) => {
                facts.session_unsaved = false;
                Ok(())
            }
            Ok(false) => Err(LogError::Fenced(self.agent_id)),
            Err(e) => {
                tracing::warn!(agent_id = %self.agent_id, error = %e, "cannot record the session id yet");
                Ok(())
            }
        }
    }

    async fn flush_or_keep(&mut self, tail: &mut Tail) -> Result<(), LogError> {
        match self.log.flush(tail.reader.consumed()).await {
            Ok(()) => {
                tail.unflushed = 0;
                Ok(())
            }
            Err(LogError::Store(e)) => {
                tracing::warn!(agent_id = %self.agent_id, error = %e, "event flush failed; will retry");
                Ok(())
            }
            other => other,
        }
    }

    /// Reads one step of new output and handles its lines; true when more may be waiting.
    /// Reads nothing while the store is behind (MAX_UNFLUSHED).
    async fn read_step(
        &mut self,
        tail: &mut Tail,
        facts: &mut StreamFacts,
    ) -> Result<bool, LogError> {
        if tail.unflushed >= MAX_UNFLUSHED {
            return Ok(false);
        }
        // A plain read: the output file is local and what is new sits in the page cache,
        // so a blocking-pool round trip per step would cost more than the read itself.
        let mut lines = Vec::new();
        let read = match tail.reader.read(&self.output, STEP_BYTES, &mut lines) {
            Ok(read) => read,
            Err(e) => {
                tracing::debug!(agent_id = %self.agent_id, error = %e, "output not read");
                0
            }
        };
        if read > 0 {
            tail.last_growth = Instant::now();
        }
        tail.unflushed += read;
        for line in lines {
            self.handle_line(line, &mut tail.recent, facts).await?;
        }
        Ok(read == STEP_BYTES)
    }

    async fn handle_line(
        &mut self,
        line: Line,
        recent: &mut VecDeque<String>,
        facts: &mut StreamFacts,
    ) -> Result<(), LogError> {
        let text = storable_line(line.text);
        if recent.len() == self.limits.buffer_lines.max(1) {
            recent.pop_front();
        }
        let mut end = text.len().min(RECENT_LINE_BYTES);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        recent.push_back(text[..end].to_string());
        for event in self.parser.parse_line(&text) {
            if facts.observe(&event) {
                self.save_session(facts).await?;
            }
            if let AgentEvent::SessionStarted {
                model: Some(model), ..
            } = &event
            {
                self.meter.observe_model(model);
            }
            if let AgentEvent::Usage { .. } = &event {
                self.take_usage(&event, facts).await?;
                continue;
            }
            let mut data = serde_json::to_value(&event).unwrap_or_default();
            if let (Some(full), Some(fields)) = (line.cut_from, data.as_object_mut()) {
                // Cut to agent.max_event_bytes: the event says so, and how long the line was.
                fields.insert("truncated".into(), true.into());
                fields.insert("line_bytes".into(), full.into());
            }
            let kind = data
                .get("kind")
                .and_then(|k| k.as_str())
                .unwrap_or("raw")
                .to_string();
            self.log.push(&kind, data);
        }
        Ok(())
    }
}

/// The end of the process's stderr: only that much is read, however much it wrote.
async fn tail_of(path: &Path) -> String {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return String::new();
    };
    let (dir, name) = (dir.to_path_buf(), PathBuf::from(name));
    let read =
        tokio::task::spawn_blocking(move || agent_files::read_tail(&dir, &name, STDERR_TAIL_BYTES));
    match tokio::time::timeout(STDERR_READ_TIMEOUT, read).await {
        Ok(Ok(Ok(Some(bytes)))) => String::from_utf8_lossy(&bytes).trim().to_string(),
        _ => String::new(),
    }
}

/// Resolves when the watched output was written; never without a watch.
async fn written(watched: &Option<Watched>) {
    match watched {
        Some(w) => w.changed().await,
        None => std::future::pending().await,
    }
}
