//! The supervisor of one running agent: tails the process's output file as it grows, turns
//! each line into normalised events with the provider's parser, writes them to the event log
//! in batches, and when the process ends decides the agent's outcome (the signal file wins
//! over the parsed stream).

use std::collections::VecDeque;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::event_log::{EventLog, LogError};
use super::output_watch::{OutputWatch, Watched};
use crate::agent_files;
use crate::domain::{AgentOutcome, AgentStatus, PendingQuestion};
use crate::process::{Exit, Running};
use crate::providers::{self, AgentEvent, SignalStatus, StreamParser};
use crate::store::{Owner, Store};

/// How often the output is read when writes to it cannot be watched.
const READ_EVERY: Duration = Duration::from_millis(50);
/// How often a watched output is read anyway (a missed notification costs at most this).
const WATCHED_READ_EVERY: Duration = Duration::from_secs(1);
/// How long to wait before writing to an unavailable store again.
pub const STORE_RETRY: Duration = Duration::from_millis(500);
const STDERR_TAIL_BYTES: u64 = 2048;
/// Where in its checkout an agent may say how it finished.
pub const SIGNAL_FILE: &str = ".agentfleet/output/signal.json";
/// A signal file is a few lines of JSON; a larger one is refused unread.
const MAX_SIGNAL_BYTES: u64 = 1024 * 1024;
/// The signal file is read without blocking on it; this bounds a stalled filesystem.
const SIGNAL_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The event that says why a signal file the agent left was not used.
const SIGNAL_IGNORED_EVENT: &str = "signal.ignored";

/// Why supervision ended other than by the process's own exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupt {
    /// Someone asked to stop the agent.
    StopRequested,
    /// The worker is shutting down and stops its agents.
    Shutdown,
    /// No output for `idle_timeout`.
    IdleTimeout,
    /// Ran past `max_runtime`.
    MaxRuntime,
    /// The stream reported a usage/rate limit or refused credentials; the CLI would only
    /// keep retrying, so it is stopped at once.
    AccountTrouble,
}

/// What the stream said about the account the agent runs on.
#[derive(Debug, Clone, PartialEq)]
pub enum AccountTrouble {
    /// A usage or rate limit; the provider's retry delay, if it gave one.
    Exhausted {
        message: String,
        retry_after: Option<Duration>,
    },
    /// The credentials were refused.
    Refused { message: String },
}

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
}

/// What the stream told us, kept as it goes.
#[derive(Default)]
struct StreamFacts {
    session_id: Option<String>,
    /// The session id is known but not yet in the store.
    session_unsaved: bool,
    result: Option<(bool, Option<String>)>,
    last_text: Option<String>,
    last_error: Option<String>,
    account_trouble: Option<AccountTrouble>,
}

/// The tail of the output file as it grows.
struct Tail {
    file: Option<std::fs::File>,
    offset: u64,
    partial: Vec<u8>,
    recent: VecDeque<String>,
    last_growth: Instant,
}

impl Supervisor<'_> {
    /// Runs until the process ends, the agent is interrupted, or the worker lets go.
    pub async fn run(mut self, mut process: Running) -> Result<Supervised, LogError> {
        let mut tail = Tail {
            file: None,
            offset: self.offset,
            partial: Vec::new(),
            recent: VecDeque::with_capacity(self.limits.buffer_lines.min(4096)),
            last_growth: Instant::now(),
        };
        let mut facts = StreamFacts {
            session_id: self.session_id.clone(),
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
                _ = flush_tick.tick() => self.flush_or_keep(tail.offset).await?,
                _ = tokio::time::sleep_until(deadline) => interrupted = Some(Interrupt::MaxRuntime),
                _ = controls.stop.cancelled() => interrupted = Some(Interrupt::StopRequested),
                _ = controls.shutdown.cancelled() => interrupted = Some(Interrupt::Shutdown),
                _ = controls.detach.cancelled() => {
                    self.read_new(&mut tail, &mut facts).await?;
                    self.log.flush(tail.offset).await?;
                    return Ok(Supervised::Detached);
                }
                _ = controls.lease_lost.cancelled() => return Ok(Supervised::Fenced),
            }
            if read_now {
                // Watch before reading, so a write after this read always wakes us.
                if watched.is_none() {
                    watched = self.watch.as_ref().and_then(|w| w.watch(&self.output));
                }
                self.read_new(&mut tail, &mut facts).await?;
                self.save_session(&mut facts).await?;
                // New events go out at once: the worker's writer batches them with every
                // other agent's, so this costs no commit of its own.
                if self.log.has_pending() {
                    self.flush_or_keep(tail.offset).await?;
                }
                if tail.last_growth.elapsed() >= self.limits.idle_timeout {
                    interrupted = Some(Interrupt::IdleTimeout);
                }
                let every = if watched.is_some() {
                    WATCHED_READ_EVERY
                } else {
                    READ_EVERY
                };
                next_read = Instant::now() + every;
            }
            if interrupted.is_none() && facts.account_trouble.is_some() {
                interrupted = Some(Interrupt::AccountTrouble);
            }
            if interrupted.is_some() {
                break process.terminate(self.limits.stop_grace).await;
            }
        };
        self.read_new(&mut tail, &mut facts).await?;
        if !tail.partial.is_empty() {
            let line = String::from_utf8_lossy(&tail.partial).into_owned();
            tail.offset += tail.partial.len() as u64;
            tail.partial.clear();
            self.handle_line(&line, &mut tail.recent, &mut facts)
                .await?;
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
        // The store may be briefly away (a restart): the last events wait for it.
        loop {
            match self.log.flush(tail.offset).await {
                Ok(()) => break,
                Err(LogError::Fenced(_)) => return Ok(Supervised::Fenced),
                Err(LogError::Store(e)) => {
                    tracing::warn!(agent_id = %self.agent_id, error = %e, "final flush failed; retrying");
                    tokio::select! {
                        _ = controls.lease_lost.cancelled() => return Ok(Supervised::Fenced),
                        _ = tokio::time::sleep(STORE_RETRY) => {}
                    }
                }
            }
        }
        let stderr_tail = tail_of(&self.stderr).await;
        let trouble = facts.account_trouble.clone();
        let outcome = decide(exit, interrupted, facts, signal, &stderr_tail);
        Ok(match (interrupted, trouble) {
            (Some(Interrupt::AccountTrouble), Some(trouble)) => {
                Supervised::AccountTrouble { trouble, outcome }
            }
            _ => Supervised::Ended(outcome),
        })
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

    async fn flush_or_keep(&mut self, offset: u64) -> Result<(), LogError> {
        match self.log.flush(offset).await {
            Err(LogError::Store(e)) => {
                tracing::warn!(agent_id = %self.agent_id, error = %e, "event flush failed; will retry");
                Ok(())
            }
            other => other,
        }
    }

    async fn read_new(&mut self, tail: &mut Tail, facts: &mut StreamFacts) -> Result<(), LogError> {
        // A plain read: the output file is local and what is new sits in the page cache,
        // so a blocking-pool round trip per read would cost more than the read itself.
        if tail.file.is_none() {
            tail.file = std::fs::File::open(&self.output).ok();
        }
        let Some(f) = tail.file.as_mut() else {
            return Ok(());
        };
        let read_from = tail.offset + tail.partial.len() as u64;
        let mut chunk = Vec::new();
        if f.seek(std::io::SeekFrom::Start(read_from)).is_err()
            || f.read_to_end(&mut chunk).is_err()
        {
            return Ok(());
        }
        if !chunk.is_empty() {
            tail.last_growth = Instant::now();
        }
        tail.partial.extend_from_slice(&chunk);
        while let Some(pos) = tail.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = tail.partial.drain(..=pos).collect();
            tail.offset += line.len() as u64;
            let line = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
            self.handle_line(&line, &mut tail.recent, facts).await?;
        }
        Ok(())
    }
    async fn handle_line(
        &mut self,
        line: &str,
        recent: &mut VecDeque<String>,
        facts: &mut StreamFacts,
    ) -> Result<(), LogError> {
        if recent.len() == self.limits.buffer_lines.max(1) {
            recent.pop_front();
        }
        recent.push_back(line.to_string());
        for event in self.parser.parse_line(line) {
            match &event {
                AgentEvent::SessionStarted { session_id, .. }
                    if facts.session_id.as_deref() != Some(session_id.as_str()) =>
                {
                    facts.session_id = Some(session_id.clone());
                    facts.session_unsaved = true;
                    self.save_session(facts).await?;
                }
                AgentEvent::AssistantText { text } => facts.last_text = Some(text.clone()),
                AgentEvent::Result {
                    success,
                    text,
                    session_id,
                } => {
                    facts.result = Some((*success, text.clone()));
                    if facts.session_id.is_none() {
                        facts.session_id = session_id.clone();
                    }
                }
                AgentEvent::Error { message } => facts.last_error = Some(message.clone()),
                AgentEvent::AuthFailed { message } => {
                    facts.last_error = Some(message.clone());
                    facts
                        .account_trouble
                        .get_or_insert(AccountTrouble::Refused {
                            message: message.clone(),
                        });
                }
                AgentEvent::RateLimited {
                    message,
                    retry_after_ms,
                } => {
                    facts.last_error = Some(format!("rate limited: {message}"));
                    facts
                        .account_trouble
                        .get_or_insert(AccountTrouble::Exhausted {
                            message: message.clone(),
                            retry_after: retry_after_ms.map(Duration::from_millis),
                        });
                }
                _ => {}
            }
            let data = serde_json::to_value(&event).unwrap_or_default();
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
    match tokio::time::timeout(SIGNAL_READ_TIMEOUT, read).await {
        Ok(Ok(Ok(Some(bytes)))) => String::from_utf8_lossy(&bytes).trim().to_string(),
        _ => String::new(),
    }
}

/// The signal file, if the agent wrote one: Some(Err) with the reason when it is refused (a
/// symlink on its path, not a regular file, too large) or malformed. Never blocks: a FIFO
/// is refused at open, and a stalled read is given up after `SIGNAL_READ_TIMEOUT`.
async fn read_signal(workdir: &Path) -> Option<Result<providers::Signal, String>> {
    let dir = workdir.to_path_buf();
    let read = tokio::task::spawn_blocking(move || {
        agent_files::read_regular(&dir, Path::new(SIGNAL_FILE), MAX_SIGNAL_BYTES)
    });
    let bytes = match tokio::time::timeout(SIGNAL_READ_TIMEOUT, read).await {
        Ok(Ok(Ok(bytes))) => bytes?,
        Ok(Ok(Err(e))) => return Some(Err(format!("signal file refused: {e}"))),
        Ok(Err(e)) => return Some(Err(format!("signal file not read: {e}"))),
        Err(_) => {
            return Some(Err(format!(
                "signal file not read within {SIGNAL_READ_TIMEOUT:?}"
            )));
        }
    };
    Some(providers::parse_signal(&bytes))
}

fn decide(
    exit: Exit,
    interrupted: Option<Interrupt>,
    facts: StreamFacts,
    signal: Option<Result<providers::Signal, String>>,
    stderr_tail: &str,
) -> AgentOutcome {
    let code = match exit {
        Exit::Code(c) | Exit::Sandbox { code: c, .. } => Some(c),
        _ => None,
    };
    let mut outcome = AgentOutcome {
        status: AgentStatus::Crashed,
        result: None,
        questions: Vec::new(),
        error: None,
        exit_code: code,
        session_id: facts.session_id.clone(),
    };
    match interrupted {
        Some(Interrupt::StopRequested) => {
            outcome.status = AgentStatus::Stopped;
            outcome.error = Some("stopped by request".into());
            return outcome;
        }
        Some(Interrupt::Shutdown) => {
            outcome.status = AgentStatus::Stopped;
            outcome.error = Some("stopped: the worker shut down".into());
            return outcome;
        }
        Some(Interrupt::IdleTimeout) => {
            outcome.error = Some("idle_timeout: no output for agent.idle_timeout".into());
            return outcome;
        }
        Some(Interrupt::MaxRuntime) => {
            outcome.error = Some("max_runtime: ran past agent.max_runtime".into());
            return outcome;
        }
        Some(Interrupt::AccountTrouble) => {
            outcome.status = AgentStatus::Failed;
            outcome.error = Some(match &facts.account_trouble {
                Some(AccountTrouble::Refused { message }) => format!("auth_failed: {message}"),
                Some(AccountTrouble::Exhausted { message, .. }) => {
                    format!("rate_limited: {message}")
                }
                None => "rate_limited".into(),
            });
            return outcome;
        }
        None => {}
    }
    if let Exit::Sandbox { reason, .. } = &exit {
        // A limit the sandbox enforced, or a sandbox that could not be set up: whatever
        // the agent reported, it did not end by itself.
        outcome.error = Some(match reason.strip_prefix("resource_limit:") {
            Some(which) => format!("{reason}: the agent went past sandbox.limits ({which})"),
            None => reason.clone(),
        });
        return outcome;
    }
    match signal {
        Some(Ok(signal)) => {
            let result = signal.result.map(|r| match r {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            });
            match signal.status {
                SignalStatus::Done => {
                    outcome.status = AgentStatus::Completed;
                    outcome.result = result.or_else(|| facts.result.and_then(|r| r.1));
                }
                SignalStatus::Questions => {
                    outcome.status = AgentStatus::WaitingForInput;
                    outcome.result = result;
                    outcome.questions = signal
                        .questions
                        .into_iter()
                        .map(|q| PendingQuestion {
                            id: q.id,
                            question: q.question,
                        })
                        .collect();
                }
                SignalStatus::Error => {
                    outcome.status = AgentStatus::Failed;
                    outcome.result = result;
                    outcome.error = Some(
                        signal
                            .error
                            .unwrap_or_else(|| "the agent reported an error".into()),
                    );
                }
            }
            return outcome;
        }
        Some(Err(reason)) => {
            let mut outcome = from_stream(exit, facts, stderr_tail, outcome);
            let note = format!("signal file ignored: {reason}");
            outcome.error = Some(match outcome.error.take() {
                Some(error) => format!("{error}; {note}"),
                None => note,
            });
            return outcome;
        }
        None => {}
    }
    from_stream(exit, facts, stderr_tail, outcome)
}

/// The outcome the process's exit and its parsed stream give, without a signal file.
fn from_stream(
    exit: Exit,
    facts: StreamFacts,
    stderr_tail: &str,
    mut outcome: AgentOutcome,
) -> AgentOutcome {
    let code = outcome.exit_code;
    if code == Some(0) {
        match facts.result {
            Some((false, text)) => {
                outcome.status = AgentStatus::Failed;
                outcome.error = Some(
                    text.or(facts.last_error)
                        .unwrap_or_else(|| "the provider reported an error".into()),
                );
            }
            Some((true, text)) => {
                outcome.status = AgentStatus::Completed;
                outcome.result = text.or(facts.last_text);
            }
            None => {
                outcome.status = AgentStatus::Completed;
                outcome.result = facts.last_text;
            }
        }
        return outcome;
    }
    let how = match exit {
        Exit::Code(c) => format!("exited with code {c}"),
        Exit::Signal(s) => format!("killed by signal {s}"),
        Exit::Sandbox { code, .. } => format!("exited with code {code}"),
        Exit::Unknown => "ended while unwatched, exit status unknown".to_string(),
    };
    let detail = facts
        .last_error
        .or_else(|| (!stderr_tail.is_empty()).then(|| stderr_tail.to_string()));
    outcome.error = Some(match detail {
        Some(d) => format!("provider process {how}: {d}"),
        None => format!("provider process {how}"),
    });
    outcome
}

/// Resolves when the watched output was written; never without a watch.
async fn written(watched: &Option<Watched>) {
    match watched {
        Some(w) => w.changed().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(code: i32) -> Exit {
        Exit::Code(code)
    }

    #[test]
    fn non_zero_exit_is_a_crash_with_stderr() {
        let o = decide(
            exit(2),
            None,
            StreamFacts::default(),
            None,
            "boom: bad thing",
        );
        assert_eq!(o.status, AgentStatus::Crashed);
        assert_eq!(o.exit_code, Some(2));
        let error = o.error.unwrap();
        assert!(
            error.contains("code 2") && error.contains("boom"),
            "{error}"
        );
    }

    #[test]
    fn success_result_completes() {
        let facts = StreamFacts {
            result: Some((true, Some("All done.".into()))),
            ..Default::default()
        };
        let o = decide(exit(0), None, facts, None, "");
        assert_eq!(o.status, AgentStatus::Completed);
        assert_eq!(o.result.as_deref(), Some("All done."));
    }

    #[test]
    fn signal_file_wins_over_the_stream() {
        let signal = providers::parse_signal(
            br#"{"status":"questions","questions":[{"id":"q1","question":"Which DB?"}]}"#,
        );
        let facts = StreamFacts {
            result: Some((true, Some("ignored".into()))),
            ..Default::default()
        };
        let o = decide(exit(0), None, facts, Some(signal), "");
        assert_eq!(o.status, AgentStatus::WaitingForInput);
        assert_eq!(o.questions[0].question, "Which DB?");
    }

    #[test]
    fn an_ignored_signal_file_falls_back_to_the_stream_and_says_why() {
        let facts = StreamFacts {
            result: Some((true, Some("from the stream".into()))),
            ..Default::default()
        };
        let refused = Some(Err("signal file refused: it is a FIFO".to_string()));
        let o = decide(exit(0), None, facts, refused, "");
        assert_eq!(o.status, AgentStatus::Completed);
        assert_eq!(o.result.as_deref(), Some("from the stream"));
        assert_eq!(
            o.error.as_deref(),
            Some("signal file ignored: signal file refused: it is a FIFO")
        );
        let crashed = decide(
            exit(3),
            None,
            StreamFacts::default(),
            Some(Err("bad".into())),
            "",
        );
        assert_eq!(crashed.status, AgentStatus::Crashed);
        let error = crashed.error.unwrap();
        assert!(
            error.contains("code 3") && error.ends_with("signal file ignored: bad"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_planted_signal_file_is_refused_promptly() {
        let tmp = tempfile::tempdir().unwrap();
        let (workdir, outside) = (tmp.path().join("workdir"), tmp.path().join("outside.json"));
        std::fs::create_dir_all(workdir.join(".agentfleet/output")).unwrap();
        let signal = workdir.join(SIGNAL_FILE);
        // Absent: nothing to say.
        assert!(read_signal(&workdir).await.is_none());
        // A FIFO: refused at once, not waited on.
        nix::unistd::mkfifo(&signal, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        let read = tokio::time::timeout(Duration::from_secs(2), read_signal(&workdir)).await;
        let reason = read.expect("blocked on a FIFO").unwrap().unwrap_err();
        assert!(reason.contains("FIFO"), "{reason}");
        // A symlink to a forged result elsewhere: refused, not read.
        std::fs::remove_file(&signal).unwrap();
        std::fs::write(&outside, r#"{"status":"done","result":"forged"}"#).unwrap();
        std::os::unix::fs::symlink(&outside, &signal).unwrap();
        let reason = read_signal(&workdir).await.unwrap().unwrap_err();
        assert!(reason.contains("symlink"), "{reason}");
        // A plain one is read.
        std::fs::remove_file(&signal).unwrap();
        std::fs::write(&signal, r#"{"status":"done","result":"mine"}"#).unwrap();
        let ok = read_signal(&workdir).await.unwrap().unwrap();
        assert_eq!(ok.result, Some(serde_json::json!("mine")));
    }

    #[test]
    fn interrupts_decide_the_outcome() {
        let stop = |i| decide(Exit::Signal(15), Some(i), StreamFacts::default(), None, "");
        assert_eq!(stop(Interrupt::Shutdown).status, AgentStatus::Stopped);
        assert_eq!(stop(Interrupt::StopRequested).status, AgentStatus::Stopped);
        let idle = stop(Interrupt::IdleTimeout);
        assert_eq!(idle.status, AgentStatus::Crashed);
        assert!(idle.error.unwrap().starts_with("idle_timeout"));
        let long = stop(Interrupt::MaxRuntime);
        assert!(long.error.unwrap().starts_with("max_runtime"));
    }

    #[test]
    fn a_limit_the_sandbox_enforced_crashes_the_agent_with_its_name() {
        let exit = Exit::Sandbox {
            code: 137,
            reason: "resource_limit:memory".into(),
        };
        let facts = StreamFacts {
            result: Some((true, Some("claims success".into()))),
            ..Default::default()
        };
        let o = decide(exit, None, facts, None, "");
        assert_eq!(o.status, AgentStatus::Crashed);
        assert!(
            o.error.unwrap().starts_with("resource_limit:memory"),
            "the reason names the limit"
        );
    }

    #[test]
    fn unwatched_end_without_exit_code_is_a_crash() {
        let o = decide(Exit::Unknown, None, StreamFacts::default(), None, "");
        assert_eq!(o.status, AgentStatus::Crashed);
        assert!(o.error.unwrap().contains("exit status unknown"));
    }
}
