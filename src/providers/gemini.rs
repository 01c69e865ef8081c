//! Google's Gemini CLI (`gemini`): `--output-format stream-json` writes `init` (with the
//! session id), `message` (assistant text, streamed as `delta` chunks), `tool_use`,
//! `tool_result`, `error` and a final `result` with stats. With stdin not a terminal it
//! runs headless and reads the prompt from stdin. Resume is `--resume SESSION_UUID`
//! (0.61.0 accepts "latest", an index or a session UUID). `GEMINI_CLI_HOME` relocates the
//! home under which it keeps `.gemini/` (settings, credentials, sessions).
//! Command lines, stream shapes, resume by UUID and the error `result` lines verified
//! against the real gemini 0.61.0 (tests/contract/gemini.rs, transcripts
//! tests/fixtures/transcripts/gemini-0.61.0-*.jsonl). A per-day-quota 429 and a 401 end
//! the run at once; a plain 429 it retries (10 attempts, backoff) logging only on stderr,
//! unless the settings' `general.maxAttempts` is lowered.

use serde_json::Value;

use super::json::{classify_text, parse_line, raw, str_at, text_of, u64_at};
use super::{AgentEvent, Provider, ProviderError, SpawnOptions, StreamParser, UsageScope};
use crate::domain::AgentMode;

/// The `gemini` CLI as a [`Provider`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Gemini;

impl Gemini {
    fn flags(&self, opts: &SpawnOptions) -> Vec<String> {
        // `--skip-trust`: the worktree is ours; without it a fresh config dir asks to trust it.
        let base = ["--output-format", "stream-json", "--skip-trust"];
        super::run_flags(self, &base, "-m", opts)
    }
}

impl Provider for Gemini {
    fn name(&self) -> &str {
        "gemini"
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
            "--resume",
            session_id,
        ))
    }

    fn mode_args(&self, mode: AgentMode) -> Vec<String> {
        let approval = match mode {
            AgentMode::Plan | AgentMode::Review | AgentMode::Discuss => "plan",
            AgentMode::Execute => "yolo",
        };
        vec!["--approval-mode".into(), approval.into()]
    }

    fn env(&self) -> Vec<(String, String)> {
        Vec::new()
    }

    fn api_key_env(&self) -> Option<&str> {
        Some("GEMINI_API_KEY")
    }

    fn credentials_file(&self) -> Option<&str> {
        Some(".gemini/oauth_creds.json")
    }

    fn config_dir_env(&self) -> Option<&str> {
        Some("GEMINI_CLI_HOME")
    }

    fn parser(&self) -> Box<dyn StreamParser> {
        Box::new(GeminiParser::default())
    }
}

/// Turns gemini's stream-json lines into [`AgentEvent`]s. Assistant deltas are joined
/// into one text, reported when the next non-message line (or the result) arrives.
#[derive(Debug, Default)]
pub struct GeminiParser {
    session_id: Option<String>,
    pending: String,
    last_text: Option<String>,
}

impl StreamParser for GeminiParser {
    fn parse_line(&mut self, line: &str) -> Vec<AgentEvent> {
        let value = match parse_line(line) {
            Ok(value) => value,
            Err(events) => return events,
        };
        let Some(kind) = str_at(&value, "type") else {
            return raw(line);
        };
        if kind == "message" {
            return match (str_at(&value, "role"), str_at(&value, "content")) {
                (Some("assistant"), Some(text)) => {
                    self.pending.push_str(text);
                    if value.get("delta").and_then(Value::as_bool) == Some(true) {
                        Vec::new()
                    } else {
                        self.flush()
                    }
                }
                (Some(_), Some(_)) => Vec::new(),
                _ => raw(line),
            };
        }
        let mut events = self.flush();
        match self.event(kind, &value) {
            Some(more) => events.extend(more),
            None => events.extend(raw(line)),
        }
        events
    }
}

impl GeminiParser {
    fn flush(&mut self) -> Vec<AgentEvent> {
        if self.pending.is_empty() {
            return Vec::new();
        }
        let text = std::mem::take(&mut self.pending);
        self.last_text = Some(text.clone());
        vec![AgentEvent::AssistantText { text }]
    }

    fn event(&mut self, kind: &str, v: &Value) -> Option<Vec<AgentEvent>> {
        Some(match kind {
            "init" => {
                let id = str_at(v, "session_id")?.to_string();
                self.session_id = Some(id.clone());
                vec![AgentEvent::SessionStarted {
                    session_id: id,
                    model: str_at(v, "model").map(String::from),
                }]
            }
            "tool_use" => vec![AgentEvent::ToolUse {
                id: str_at(v, "tool_id").map(String::from),
                name: str_at(v, "tool_name")?.to_string(),
                input: v.get("parameters").cloned().unwrap_or(Value::Null),
            }],
            "tool_result" => {
                let failed = str_at(v, "status") == Some("error");
                let content = match v.get("error") {
                    Some(e) if failed => str_at(e, "message")
                        .map(String::from)
                        .unwrap_or_else(|| text_of(Some(e))),
                    _ => text_of(v.get("output")),
                };
                vec![AgentEvent::ToolResult {
                    tool_use_id: str_at(v, "tool_id").map(String::from),
                    content,
                    is_error: failed,
                }]
            }
            "error" => vec![classify_text(str_at(v, "message")?.to_string())],
            "result" => self.result(v),
            _ => return None,
        })
    }

    fn result(&self, v: &Value) -> Vec<AgentEvent> {
        let mut events = Vec::new();
        if let Some(stats) = v.get("stats").filter(|s| s.is_object()) {
            // The run's totals; `cached` is the part of the input read from the cache,
            // which our input count leaves out.
            let cached = u64_at(stats, "cached").unwrap_or(0);
            events.push(AgentEvent::Usage {
                input_tokens: u64_at(stats, "input_tokens")
                    .unwrap_or(0)
                    .saturating_sub(cached),
                output_tokens: u64_at(stats, "output_tokens").unwrap_or(0),
                cache_read_tokens: cached,
                cache_write_tokens: 0,
                cost_usd: None,
                turns: 1,
                scope: UsageScope::Run,
            });
        }
        let success = str_at(v, "status") == Some("success");
        let error = v
            .get("error")
            .and_then(|e| str_at(e, "message").or(e.as_str()));
        if let Some(message) = error.filter(|_| !success) {
            events.push(classify_text(message.to_string()));
        }
        events.push(AgentEvent::Result {
            success,
            text: if success {
                self.last_text.clone()
            } else {
                error.map(String::from)
            },
            session_id: self.session_id.clone(),
        });
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(transcript: &str) -> Value {
        let mut parser = Gemini.parser();
        let events: Vec<_> = transcript
            .lines()
            .flat_map(|l| parser.parse_line(l))
            .collect();
        serde_json::to_value(events).unwrap()
    }

    #[test]
    fn write_file_transcript_becomes_the_whole_run() {
        let events = parse(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/transcripts/gemini-docs-write-file.jsonl"
        )));
        let kinds: Vec<_> = events
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].clone())
            .collect();
        assert_eq!(
            kinds,
            [
                "session_started",
                "tool_use",
                "tool_result",
                "assistant_text",
                "usage",
                "result"
            ]
        );
        let id = "c2c8e4a6-5b7d-4f43-9a55-2b1e8f7d0c11";
        assert_eq!(events[0]["session_id"], id);
        assert_eq!(events[1]["name"], "write_file");
        assert_eq!(events[1]["input"]["file_path"], "MOCK_RESULT.txt");
        assert_eq!(events[3]["text"], "All done. I wrote MOCK_RESULT.txt.");
        let result = json!({"kind": "result", "success": true,
            "text": "All done. I wrote MOCK_RESULT.txt.", "session_id": id});
        assert_eq!(events[5], result);
    }

    macro_rules! recorded {
        ($file:literal) => {
            parse(include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/transcripts/gemini-0.61.0-",
                $file
            )))
        };
    }

    fn kinds(events: &Value) -> Vec<String> {
        let events = events.as_array().cloned().unwrap_or_default();
        events
            .iter()
            .map(|e| e["kind"].as_str().unwrap_or("").to_string())
            .collect()
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
                "assistant_text",
                "usage",
                "result"
            ]
        );
        let id = events[0]["session_id"].clone();
        assert_eq!(events[1]["name"], "write_file");
        assert_eq!(events[1]["input"]["file_path"], "MOCK_RESULT.txt");
        assert_eq!(events[2]["is_error"], false);
        assert_eq!(events[5]["text"], "All done.");
        assert_eq!(events[5]["session_id"], id);
        let resumed = recorded!("resume.jsonl");
        assert_eq!(resumed[0]["session_id"], id);
        let last = resumed.as_array().unwrap().last().unwrap().clone();
        assert_eq!(last["text"], "Thanks, continuing with your answers.");
        assert_eq!(last["success"], true);
    }

    #[test]
    fn recorded_quota_and_auth_failures_are_classified() {
        let events = recorded!("rate-limited.jsonl");
        assert_eq!(
            kinds(&events),
            ["session_started", "usage", "rate_limited", "result"]
        );
        assert_eq!(events[3]["success"], false);
        let events = recorded!("auth-failed.jsonl");
        assert_eq!(
            kinds(&events),
            ["session_started", "usage", "auth_failed", "result"]
        );
    }

    #[test]
    fn quota_errors_are_rate_limits_and_failed_results_say_why() {
        let lines = r#"{"type":"error","timestamp":"t","severity":"error","message":"[API Error: 429 RESOURCE_EXHAUSTED quota exceeded]"}
{"type":"result","timestamp":"t","status":"error","error":{"type":"FatalAuthenticationError","message":"API key not valid (401 UNAUTHENTICATED)"}}"#;
        let events = parse(lines);
        assert_eq!(events[0]["kind"], "rate_limited");
        assert_eq!(events[1]["kind"], "auth_failed");
        assert_eq!(events[2]["success"], false);
    }

    #[test]
    fn command_lines_read_the_prompt_from_stdin() {
        let args = Gemini.spawn_args(&SpawnOptions::default());
        assert_eq!(
            args,
            [
                "--output-format",
                "stream-json",
                "--skip-trust",
                "--approval-mode",
                "yolo"
            ]
        );
        let resume = Gemini.resume_args("u-1", &SpawnOptions::default()).unwrap();
        assert_eq!(resume[resume.len() - 2..], ["--resume", "u-1"]);
        assert_eq!(
            Gemini.mode_args(AgentMode::Plan),
            ["--approval-mode", "plan"]
        );
        assert_eq!(Gemini.prompt_via(), crate::providers::PromptVia::Stdin);
    }
}
