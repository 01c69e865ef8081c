//! The supervisor of one running agent: tails the process's output file as it grows, turns
//! each line into normalised events with the provider's parser, writes them to the event log
//! in batches, and when the process ends decides the agent's outcome (the signal file wins
//! over the parsed stream).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::event_log::{EventLog, LogError};
use crate::domain::{AgentOutcome, AgentStatus, PendingQuestion};
use crate::process::{self, Started};
use crate::providers::{self, AgentEvent, SignalStatus, StreamParser};
use crate::store::{Owner, Store};

const READ_EVERY: Duration = Duration::from_millis(50);
const KILL_GRACE: Duration = Duration::from_secs(3);
const STDERR_TAIL_BYTES: u64 = 2048;

/// Why supervision ended without a process exit of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupt {
    /// The worker is shutting down hard: the agent is stopped.
    Shutdown,
    /// The worker lost its lease: the agent is someone else's now.
    LeaseLost,
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
    pub flush_every: Duration,
    pub buffer_lines: usize,
    pub shutdown: CancellationToken,
    pub lease_lost: CancellationToken,
}

/// What the stream told us, kept as it goes.
#[derive(Default)]
struct StreamFacts {
    session_id: Option<String>,
    result: Option<(bool, Option<String>)>,
    last_text: Option<String>,
    last_error: Option<String>,
}

impl Supervisor<'_> {
    /// Runs until the process ends (or the worker is interrupted) and returns the outcome.
    pub async fn run(mut self, mut started: Started) -> Result<AgentOutcome, LogError> {
        let mut file = open_when_present(&self.output).await;
        let mut offset = 0u64;
        let mut partial = Vec::new();
        let mut recent: VecDeque<String> = VecDeque::with_capacity(self.buffer_lines);
        let mut facts = StreamFacts::default();
        let mut read_tick = tokio::time::interval(READ_EVERY);
        let mut flush_tick = tokio::time::interval(self.flush_every);
        let mut interrupted = None;
        let exit = loop {
            tokio::select! {
                status = started.child.wait() => break status.ok(),
                _ = read_tick.tick() => {
                    self.read_new(&mut file, &mut offset, &mut partial, &mut recent, &mut facts).await?;
                }
                _ = flush_tick.tick() => self.flush_or_keep().await?,
                _ = self.shutdown.cancelled(), if interrupted.is_none() => {
                    interrupted = Some(Interrupt::Shutdown);
                    process::terminate(&mut started.child, started.pid, KILL_GRACE).await;
                }
                _ = self.lease_lost.cancelled(), if interrupted.is_none() => {
                    interrupted = Some(Interrupt::LeaseLost);
                    process::terminate(&mut started.child, started.pid, KILL_GRACE).await;
                }
            }
        };
        if file.is_none() {
            file = open_when_present(&self.output).await;
        }
        self.read_new(
            &mut file,
            &mut offset,
            &mut partial,
            &mut recent,
            &mut facts,
        )
        .await?;
        if !partial.is_empty() {
            let line = String::from_utf8_lossy(&partial).into_owned();
            self.handle_line(&line, &mut recent, &mut facts).await?;
        }
        self.log.flush().await?;
        if interrupted == Some(Interrupt::LeaseLost) {
            return Err(LogError::Fenced(self.agent_id));
        }
        let stderr_tail = tail_of(&self.stderr).await;
        Ok(decide(
            exit,
            interrupted,
            facts,
            read_signal(&self.workdir).await,
            &stderr_tail,
        ))
    }

    async fn flush_or_keep(&mut self) -> Result<(), LogError> {
        match self.log.flush().await {
            Err(LogError::Store(e)) => {
                tracing::warn!(agent_id = %self.agent_id, error = %e, "event flush failed; will retry");
                Ok(())
            }
            other => other,
        }
    }

    async fn read_new(
        &mut self,
        file: &mut Option<tokio::fs::File>,
        offset: &mut u64,
        partial: &mut Vec<u8>,
        recent: &mut VecDeque<String>,
        facts: &mut StreamFacts,
    ) -> Result<(), LogError> {
        if file.is_none() {
            *file = open_when_present(&self.output).await;
        }
        let Some(f) = file.as_mut() else {
            return Ok(());
        };
        let mut chunk = Vec::new();
        if f.seek(std::io::SeekFrom::Start(*offset)).await.is_err()
            || f.read_to_end(&mut chunk).await.is_err()
        {
            return Ok(());
        }
        *offset += chunk.len() as u64;
        partial.extend_from_slice(&chunk);
        while let Some(pos) = partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = partial.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
            self.handle_line(&line, recent, facts).await?;
        }
        Ok(())
    }

    async fn handle_line(
        &mut self,
        line: &str,
        recent: &mut VecDeque<String>,
        facts: &mut StreamFacts,
    ) -> Result<(), LogError> {
        if recent.len() == self.buffer_lines.max(1) {
            recent.pop_front();
        }
        recent.push_back(line.to_string());
        for event in self.parser.parse_line(line) {
            match &event {
                AgentEvent::SessionStarted { session_id, .. }
                    if facts.session_id.as_deref() != Some(session_id.as_str()) =>
                {
                    facts.session_id = Some(session_id.clone());
                    if !self
                        .store
                        .set_session_id(self.agent_id, self.owner, session_id)
                        .await?
                    {
                        return Err(LogError::Fenced(self.agent_id));
                    }
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
                AgentEvent::Error { message } | AgentEvent::AuthFailed { message } => {
                    facts.last_error = Some(message.clone());
                }
                AgentEvent::RateLimited { message, .. } => {
                    facts.last_error = Some(format!("rate limited: {message}"));
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

async fn open_when_present(path: &Path) -> Option<tokio::fs::File> {
    tokio::fs::File::open(path).await.ok()
}

async fn tail_of(path: &Path) -> String {
    let Ok(bytes) = tokio::fs::read(path).await else {
        return String::new();
    };
    let start = bytes.len().saturating_sub(STDERR_TAIL_BYTES as usize);
    String::from_utf8_lossy(&bytes[start..]).trim().to_string()
}

/// The signal file, if the agent wrote one: Some(Err) when it is malformed.
async fn read_signal(workdir: &Path) -> Option<Result<providers::Signal, String>> {
    let path = workdir.join(".agentfleet/output/signal.json");
    let bytes = tokio::fs::read(&path).await.ok()?;
    Some(providers::parse_signal(&bytes))
}

fn decide(
    exit: Option<ExitStatus>,
    interrupted: Option<Interrupt>,
    facts: StreamFacts,
    signal: Option<Result<providers::Signal, String>>,
    stderr_tail: &str,
) -> AgentOutcome {
    let mut outcome = AgentOutcome {
        status: AgentStatus::Crashed,
        result: None,
        questions: Vec::new(),
        error: None,
        exit_code: exit.and_then(|e| e.code()),
        session_id: facts.session_id.clone(),
    };
    if interrupted == Some(Interrupt::Shutdown) {
        outcome.status = AgentStatus::Stopped;
        outcome.error = Some("stopped: the worker shut down".into());
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
            tracing::warn!(%reason, "malformed signal file; using the output stream instead");
        }
        None => {}
    }
    let code = exit.and_then(|e| e.code());
    match code {
        Some(0) => match facts.result {
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
        },
        _ => {
            let how = match (code, exit) {
                (Some(c), _) => format!("exited with code {c}"),
                (None, Some(status)) => {
                    use std::os::unix::process::ExitStatusExt;
                    match status.signal() {
                        Some(s) => format!("killed by signal {s}"),
                        None => "ended abnormally".to_string(),
                    }
                }
                (None, None) => "ended (exit status unknown)".to_string(),
            };
            let detail = facts
                .last_error
                .or_else(|| (!stderr_tail.is_empty()).then(|| stderr_tail.to_string()));
            outcome.error = Some(match detail {
                Some(d) => format!("provider process {how}: {d}"),
                None => format!("provider process {how}"),
            });
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn exit(code: i32) -> Option<ExitStatus> {
        Some(ExitStatus::from_raw(code << 8))
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
    fn shutdown_stops() {
        let o = decide(
            None,
            Some(Interrupt::Shutdown),
            StreamFacts::default(),
            None,
            "",
        );
        assert_eq!(o.status, AgentStatus::Stopped);
    }
}
