//! opencode (`opencode run`): `--format json` writes one event per line, each with the
//! `sessionID` (`ses_...`): `step_start`, `text`, `tool_use` (a finished tool call with
//! its input and output), `step_finish` (tokens, cost, and why the step ended: `stop` ends
//! the run) and `error`. The prompt is read from stdin when it is not a terminal; resume
//! is `--session ID`. Credentials and sessions live under `$XDG_DATA_HOME/opencode`.
//! Command lines, stream shapes, resume and the 429 / 401 `error` events verified against
//! the real opencode 1.18.33 (tests/contract/opencode.rs, transcripts
//! tests/fixtures/transcripts/opencode-1.18.33-*.jsonl). It retries a 429 five times
//! (per `retry-after`, else 2 s doubling to 30 s) before the `error` line, printing
//! nothing meanwhile.

use serde_json::Value;

use super::json::{classify, parse_line, raw, str_at, text_of, u64_at};
use super::{AgentEvent, Provider, ProviderError, SpawnOptions, StreamParser, UsageScope};
use crate::domain::AgentMode;

/// The `opencode` CLI as a [`Provider`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Opencode;

impl Opencode {
    fn flags(&self, opts: &SpawnOptions) -> Vec<String> {
        super::run_flags(self, &["run", "--format", "json"], "-m", opts)
    }
}

impl Provider for Opencode {
    fn name(&self) -> &str {
        "opencode"
    }

    fn spawn_args(&self, opts: &SpawnOptions) -> Vec<String> {
        self.flags(opts)
    }

    fn resume_args(
        &self,
        session_id: &str,
        opts: &SpawnOptions,
    ) -> Result<Vec<String>, ProviderError> {
        Ok(super::with_session(
            self.flags(opts),
            "--session",
            session_id,
        ))
    }

    fn mode_args(&self, mode: AgentMode) -> Vec<String> {
        match mode {
            // opencode's built-in `plan` agent cannot edit files.
            AgentMode::Plan | AgentMode::Review | AgentMode::Discuss => {
                vec!["--agent".into(), "plan".into()]
            }
            AgentMode::Execute => vec!["--auto".into()],
        }
    }

    fn env(&self) -> Vec<(String, String)> {
        Vec::new()
    }

    fn config_dir_env(&self) -> Option<&str> {
        Some("XDG_DATA_HOME")
    }

    fn parser(&self) -> Box<dyn StreamParser> {
        Box::new(OpencodeParser::default())
    }
}

/// Turns opencode's JSON events into [`AgentEvent`]s.
#[derive(Debug, Default)]
pub struct OpencodeParser {
    session_id: Option<String>,
    last_text: Option<String>,
}

impl StreamParser for OpencodeParser {
    /// Each `step_finish` carries the step's cost.
    fn reports_cost(&self) -> bool {
        true
    }

    fn parse_line(&mut self, line: &str) -> Vec<AgentEvent> {
        let value = match parse_line(line) {
            Ok(value) => value,
            Err(events) => return events,
        };
        let Some(mut events) = self.event(&value) else {
            return raw(line);
        };
        // Every event names the session; the first one to do so starts it.
        if let Some(id) = str_at(&value, "sessionID").filter(|_| self.session_id.is_none()) {
            self.session_id = Some(id.to_string());
            let started = AgentEvent::SessionStarted {
                session_id: id.to_string(),
                model: None,
            };
            events.insert(0, started);
        }
        events
    }
}

impl OpencodeParser {
    fn event(&mut self, v: &Value) -> Option<Vec<AgentEvent>> {
        let part = v.get("part");
        Some(match str_at(v, "type")? {
            "step_start" => Vec::new(),
            "text" => {
                let text = str_at(part?, "text")?.to_string();
                self.last_text = Some(text.clone());
                vec![AgentEvent::AssistantText { text }]
            }
            "tool_use" => {
                let part = part?;
                let state = part.get("state")?;
                let id = str_at(part, "callID").map(String::from);
                let failed = str_at(state, "status") == Some("error");
                vec![
                    AgentEvent::ToolUse {
                        id: id.clone(),
                        name: str_at(part, "tool")?.to_string(),
                        input: state.get("input").cloned().unwrap_or(Value::Null),
                    },
                    AgentEvent::ToolResult {
                        tool_use_id: id,
                        content: text_of(state.get(if failed { "error" } else { "output" })),
                        is_error: failed,
                    },
                ]
            }
            "step_finish" => {
                let part = part?;
                let tokens = part.get("tokens");
                let count = |key| tokens.and_then(|t| u64_at(t, key)).unwrap_or(0);
                let cache = |key| {
                    tokens
                        .and_then(|t| t.get("cache"))
                        .and_then(|c| u64_at(c, key))
                        .unwrap_or(0)
                };
                let mut events = vec![AgentEvent::Usage {
                    input_tokens: count("input"),
                    output_tokens: count("output"),
                    cache_read_tokens: cache("read"),
                    cache_write_tokens: cache("write"),
                    cost_usd: part.get("cost").and_then(Value::as_f64),
                    turns: 1,
                    scope: UsageScope::Delta,
                }];
                if str_at(part, "reason") == Some("stop") {
                    events.push(AgentEvent::Result {
                        success: true,
                        text: self.last_text.clone(),
                        session_id: str_at(v, "sessionID")
                            .map(String::from)
                            .or_else(|| self.session_id.clone()),
                    });
                }
                events
            }
            "error" => {
                let error = v.get("error")?;
                let data = error.get("data");
                let message = data
                    .and_then(|d| str_at(d, "message"))
                    .or_else(|| str_at(error, "message"))
                    .or_else(|| str_at(error, "name"))
                    .unwrap_or("opencode error")
                    .to_string();
                let status = data.and_then(|d| u64_at(d, "statusCode"));
                let kind = str_at(error, "name")
                    .and_then(|n| (n == "ProviderAuthError").then_some("authentication_failed"));
                vec![
                    classify(status, kind, message.clone(), None),
                    AgentEvent::Result {
                        success: false,
                        text: Some(message),
                        session_id: self.session_id.clone(),
                    },
                ]
            }
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(transcript: &str) -> Value {
        let mut parser = Opencode.parser();
        let events: Vec<_> = transcript
            .lines()
            .flat_map(|l| parser.parse_line(l))
            .collect();
        serde_json::to_value(events).unwrap()
    }

    fn kinds(events: &Value) -> Vec<String> {
        let events = events.as_array().cloned().unwrap_or_default();
        events
            .iter()
            .map(|e| e["kind"].as_str().unwrap_or("").to_string())
            .collect()
    }

    #[test]
    fn write_file_transcript_becomes_the_whole_run() {
        let events = parse(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/transcripts/opencode-docs-write-file.jsonl"
        )));
        assert_eq!(
            kinds(&events),
            [
                "session_started",
                "tool_use",
                "tool_result",
                "usage",
                "assistant_text",
                "usage",
                "result"
            ]
        );
        let id = "ses_494719016ffe85dkDMj0FPRbHK";
        assert_eq!(events[0]["session_id"], id);
        assert_eq!(events[1]["name"], "write");
        assert_eq!(events[1]["input"]["filePath"], "MOCK_RESULT.txt");
        let result =
            json!({"kind": "result", "success": true, "text": "All done.", "session_id": id});
        assert_eq!(events[6], result);
    }

    macro_rules! recorded {
        ($file:literal) => {
            parse(include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/transcripts/opencode-1.18.33-",
                $file
            )))
        };
    }

    #[test]
    fn recorded_write_file_and_resume_are_one_session() {
        let events = recorded!("write-file.jsonl");
        assert_eq!(
            kinds(&events),
            [
                "session_started",
                "tool_use",
                "tool_result",
                "usage",
                "assistant_text",
                "usage",
                "result"
            ]
        );
        let id = events[0]["session_id"].clone();
        assert!(id.as_str().unwrap().starts_with("ses_"));
        assert_eq!(events[1]["name"], "write");
        assert_eq!(events[1]["input"]["filePath"], "MOCK_RESULT.txt");
        assert_eq!(events[2]["is_error"], false);
        let result =
            json!({"kind": "result", "success": true, "text": "All done.", "session_id": id});
        assert_eq!(events[6], result);
        let resumed = recorded!("resume.jsonl");
        assert_eq!(resumed[0]["session_id"], id);
        let last = resumed.as_array().unwrap().last().unwrap().clone();
        assert_eq!(last["text"], "Thanks, continuing with your answers.");
    }

    #[test]
    fn recorded_quota_and_auth_failures_are_classified() {
        assert_eq!(
            kinds(&recorded!("rate-limited.jsonl")),
            ["session_started", "rate_limited", "result"]
        );
        assert_eq!(
            kinds(&recorded!("auth-failed.jsonl")),
            ["session_started", "auth_failed", "result"]
        );
    }

    #[test]
    fn api_errors_are_classified_by_status() {
        let line = r#"{"type":"error","timestamp":1,"sessionID":"ses_1","error":{"name":"APIError","data":{"message":"Too Many Requests","statusCode":429,"isRetryable":true}}}"#;
        assert_eq!(
            kinds(&parse(line)),
            ["session_started", "rate_limited", "result"]
        );
        let line = r#"{"type":"error","sessionID":"ses_1","error":{"name":"ProviderAuthError","data":{"providerID":"x","message":"bad key"}}}"#;
        assert_eq!(kinds(&parse(line))[1], "auth_failed");
    }

    #[test]
    fn command_lines() {
        let opts = SpawnOptions::default();
        assert_eq!(
            Opencode.spawn_args(&opts),
            ["run", "--format", "json", "--auto"]
        );
        let resume = Opencode.resume_args("ses_1", &opts).unwrap();
        assert_eq!(
            resume,
            ["run", "--format", "json", "--auto", "--session", "ses_1"]
        );
    }
}
