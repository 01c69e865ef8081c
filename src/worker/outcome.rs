//! How a supervised run ended, decided without I/O: the interrupts that can end a run, and
//! `decide`, which weighs the process's exit, an interrupt, the signal file the agent may
//! have left (`signal_file.rs`) and what its output stream said (`stream_facts.rs`), in that
//! order of precedence, into the agent's outcome. The supervisor (`supervisor.rs`) gathers
//! all of these and stores what is decided here.

use super::stream_facts::{AccountTrouble, StreamFacts};
use crate::domain::{AgentOutcome, AgentStatus, PendingQuestion};
use crate::process::Exit;
use crate::providers::{self, SignalStatus};

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
    /// Printed more than `max_output_bytes`.
    OutputLimit,
    /// The stream reported a usage/rate limit or refused credentials; the CLI would only
    /// keep retrying, so it is stopped at once.
    AccountTrouble,
    /// The agent went over a limit of its budget (`StreamFacts::over_budget`).
    OverBudget,
}

/// The agent's outcome. Precedence: an interrupt, a limit the sandbox enforced, the signal
/// file, then the exit code with the parsed stream.
pub(super) fn decide(
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
        Some(Interrupt::OutputLimit) => {
            outcome.error = Some(
                "output_limit: printed more than agent.max_output_bytes; the rest of its \
                 output is in its output file on the node"
                    .into(),
            );
            return outcome;
        }
        Some(Interrupt::OverBudget) => {
            outcome.status = AgentStatus::Stopped;
            let which = facts.over_budget.as_deref().unwrap_or("budget");
            outcome.error = Some(crate::domain::budget_reason(which));
            return outcome;
        }
        Some(Interrupt::AccountTrouble) => {
            outcome.status = AgentStatus::Failed;
            outcome.error = Some(match &facts.account_trouble {
                // With an account of ours the failover words it; here the CLI ran on its
                // own login on the worker.
                Some(AccountTrouble::Refused { message }) => format!(
                    "auth_failed: {message} (the CLI's own login on the worker; add an \
                     account with `agentfleet account add`, or log the CLI in there)"
                ),
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
            None if facts.result_expected => {
                // Exit 0 but the stream ended before its result: the run was cut short
                // (the CLI was killed mid-write, or crashed and exited 0 anyway).
                outcome.status = AgentStatus::Failed;
                outcome.error = Some(format!(
                    "no_result: the provider exited 0 without a result{}",
                    facts
                        .last_error
                        .map(|e| format!(" (last error: {e})"))
                        .unwrap_or_default()
                ));
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
        let flood = stop(Interrupt::OutputLimit);
        assert_eq!(flood.status, AgentStatus::Crashed);
        assert!(flood.error.unwrap().starts_with("output_limit"));
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
    fn exit_zero_without_a_result_fails_unless_the_parser_has_no_results_or_a_signal_says() {
        let cut = || StreamFacts {
            result_expected: true,
            last_text: Some("halfway".into()),
            ..Default::default()
        };
        let o = decide(exit(0), None, cut(), None, "");
        assert_eq!(o.status, AgentStatus::Failed);
        assert!(o.error.unwrap().starts_with("no_result"));
        let done = providers::parse_signal(br#"{"status":"done","result":"signalled"}"#);
        let o = decide(exit(0), None, cut(), Some(done), "");
        assert_eq!(o.status, AgentStatus::Completed);
        assert_eq!(o.result.as_deref(), Some("signalled"));
        // The `lines` parser never reports a result: exit 0 is success there.
        let lines = StreamFacts {
            last_text: Some("last line".into()),
            ..Default::default()
        };
        let o = decide(exit(0), None, lines, None, "");
        assert_eq!(o.status, AgentStatus::Completed);
        assert_eq!(o.result.as_deref(), Some("last line"));
    }

    #[test]
    fn unwatched_end_without_exit_code_is_a_crash() {
        let o = decide(Exit::Unknown, None, StreamFacts::default(), None, "");
        assert_eq!(o.status, AgentStatus::Crashed);
        assert!(o.error.unwrap().contains("exit status unknown"));
    }
}
