//! Claude Code (`claude` CLI): how to run it headlessly and how to read it.
//!
//! The CLI is run in print mode with `--output-format stream-json`, which
//! writes one JSON object per line: a `system/init` line with the session id,
//! `assistant` and `user` turns carrying content blocks, and a final `result`.
//! On HTTP 429/401 it does not exit but prints `system/api_retry` lines and
//! keeps retrying for minutes, so those lines are turned into
//! [`AgentEvent::RateLimited`] / [`AgentEvent::AuthFailed`] for the supervisor
//! to act on. The shapes were taken from claude 2.1.197's own output (see
//! `tests/fixtures/transcripts/claude-2.1.197-*.jsonl`).

use crate::domain::AgentMode;
use serde_json::Value;

use super::json::{classify, classify_text, parse_line, raw, str_at, u64_at};
use super::{AgentEvent, Provider, ProviderError, SpawnOptions, StreamParser};

/// The `claude` CLI as a [`Provider`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Claude;

impl Claude {
    fn common(&self, opts: &SpawnOptions) -> Vec<String> {
        // No prompt argument: with `-p` and none given, claude reads it from stdin.
        // `--verbose` is required by claude for stream-json in print mode.
        let mut args: Vec<String> = ["-p", "--output-format", "stream-json", "--verbose"]
            .map(String::from)
            .to_vec();
        args.extend(self.mode_args(opts.mode));
        if let Some(model) = &opts.model {
            args.extend(["--model".to_string(), model.clone()]);
        }
        args
    }
}

impl Provider for Claude {
    fn name(&self) -> &str {
        "claude"
    }

    fn spawn_args(&self, opts: &SpawnOptions) -> Vec<String> {
        self.common(opts)
    }

    /// Sessions live under the config dir, keyed by the cwd: resume with both unchanged.
    fn resume_args(
        &self,
        session_id: &str,
        opts: &SpawnOptions,
    ) -> Result<Vec<String>, ProviderError> {
        let mut args = self.common(opts);
        args.extend(["--resume".to_string(), session_id.to_string()]);
        Ok(args)
    }

    fn mode_args(&self, mode: AgentMode) -> Vec<String> {
        match mode {
            AgentMode::Plan | AgentMode::Review | AgentMode::Discuss => {
                vec!["--permission-mode".into(), "plan".into()]
            }
            AgentMode::Execute => vec!["--dangerously-skip-permissions".into()],
        }
    }

    fn env(&self) -> Vec<(String, String)> {
        Vec::new()
    }

    fn api_key_env(&self) -> Option<&str> {
        Some("ANTHROPIC_API_KEY")
    }

    fn credentials_file(&self) -> Option<&str> {
        Some(".credentials.json")
    }

    fn config_dir_env(&self) -> Option<&str> {
        Some("CLAUDE_CONFIG_DIR")
    }

    fn parser(&self) -> Box<dyn StreamParser> {
        Box::new(ClaudeParser::default())
    }
}

/// Turns claude's stream-json lines into [`AgentEvent`]s. Amp and cursor-agent write the
/// same ("Claude Code-compatible") format, so their parsers build on this one.
#[derive(Debug, Default)]
pub struct ClaudeParser {
    /// Remembered from `system/init` so a `result` line that lacks its own
    /// session id can still be tied to the session to resume.
    session_id: Option<String>,
}

impl StreamParser for ClaudeParser {
    fn parse_line(&mut self, line: &str) -> Vec<AgentEvent> {
        let value = match parse_line(line) {
            Ok(value) => value,
            Err(events) => return events,
        };
        // `None` means the line had a shape we do not know: keep it verbatim
        // rather than guess at its meaning.
        self.parse_value(&value).unwrap_or_else(|| raw(line))
    }
}

impl ClaudeParser {
    /// The events of one parsed line; `None` for a shape this format does not have.
    pub(crate) fn parse_value(&mut self, value: &Value) -> Option<Vec<AgentEvent>> {
        match str_at(value, "type") {
            Some("system") => self.system(value),
            Some("assistant") => assistant(value),
            Some("user") => user(value),
            Some("result") => Some(self.result(value)),
            _ => None,
        }
    }

    fn system(&mut self, v: &Value) -> Option<Vec<AgentEvent>> {
        match str_at(v, "subtype")? {
            "init" => {
                let session_id = str_at(v, "session_id")?.to_string();
                self.session_id = Some(session_id.clone());
                let model = str_at(v, "model").map(String::from);
                Some(vec![AgentEvent::SessionStarted { session_id, model }])
            }
            "api_retry" => Some(vec![api_retry(v)]),
            _ => None,
        }
    }

    fn result(&self, v: &Value) -> Vec<AgentEvent> {
        let mut events = Vec::with_capacity(2);
        let usage = v.get("usage").filter(|u| u.is_object());
        let cost_usd = v.get("total_cost_usd").and_then(Value::as_f64);
        if usage.is_some() || cost_usd.is_some() {
            let tokens = |key| usage.and_then(|u| u64_at(u, key)).unwrap_or(0);
            events.push(AgentEvent::Usage {
                input_tokens: tokens("input_tokens"),
                output_tokens: tokens("output_tokens"),
                cost_usd,
            });
        }
        let is_error = v.get("is_error").and_then(Value::as_bool).unwrap_or(false);
        // Amp puts the reason of a failed run in `error` rather than `result`.
        let error = str_at(v, "error").filter(|_| is_error);
        if let Some(error) = error {
            events.push(classify_text(error.to_string()));
        }
        events.push(AgentEvent::Result {
            success: str_at(v, "subtype") == Some("success") && !is_error,
            text: str_at(v, "result").or(error).map(String::from),
            session_id: str_at(v, "session_id")
                .map(String::from)
                .or_else(|| self.session_id.clone()),
        });
        events
    }
}

/// `assistant` turns: what the model said and which tools it called. Other
/// block kinds (thinking, ...) are internal to the model and dropped.
fn assistant(v: &Value) -> Option<Vec<AgentEvent>> {
    let content = v.get("message")?.get("content")?;
    let mut events = Vec::new();
    match content {
        Value::String(text) => push_text(&mut events, text),
        Value::Array(blocks) => {
            for block in blocks {
                match str_at(block, "type") {
                    Some("text") => push_text(&mut events, str_at(block, "text").unwrap_or("")),
                    Some("tool_use") => {
                        let Some(name) = str_at(block, "name") else {
                            continue;
                        };
                        events.push(AgentEvent::ToolUse {
                            id: str_at(block, "id").map(String::from),
                            name: name.to_string(),
                            input: block.get("input").cloned().unwrap_or(Value::Null),
                        });
                    }
                    _ => {}
                }
            }
        }
        _ => return None,
    }
    // When the API call itself failed, claude still emits an assistant turn
    // ("API Error: ...") and tags it with an `error` kind; surface that too.
    if let Some(kind) = str_at(v, "error") {
        let message = events
            .iter()
            .find_map(|e| match e {
                AgentEvent::AssistantText { text } => Some(text.clone()),
                _ => None,
            })
            .unwrap_or_else(|| format!("claude API error: {kind}"));
        events.push(classify(None, Some(kind), message, None));
    }
    Some(events)
}

/// `user` turns carry the results of tool calls back to the model; the
/// prompt itself (plain text) is ours already and not repeated as an event.
fn user(v: &Value) -> Option<Vec<AgentEvent>> {
    let content = v.get("message")?.get("content")?;
    let blocks = match content {
        Value::String(_) => return Some(Vec::new()),
        Value::Array(blocks) => blocks,
        _ => return None,
    };
    let events = blocks
        .iter()
        .filter(|b| str_at(b, "type") == Some("tool_result"))
        .map(|b| AgentEvent::ToolResult {
            tool_use_id: str_at(b, "tool_use_id").map(String::from),
            content: tool_result_text(b.get("content")),
            is_error: b.get("is_error").and_then(Value::as_bool).unwrap_or(false),
        })
        .collect();
    Some(events)
}

/// A tool result's content is either a string or a list of blocks, of which
/// only the text ones mean anything in a log.
fn tool_result_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .filter(|b| str_at(b, "type") == Some("text"))
            .filter_map(|b| str_at(b, "text"))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// `system/api_retry`: claude keeps retrying on its own, so the fleet must
/// learn from these lines that the account is limited or its key is bad.
fn api_retry(v: &Value) -> AgentEvent {
    let status = u64_at(v, "error_status");
    let kind = str_at(v, "error");
    let retry_after_ms = v
        .get("retry_delay_ms")
        .and_then(Value::as_f64)
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
        // Claude reports a jittered float; whole milliseconds are plenty.
        .map(|ms| ms.round() as u64);
    let attempt = match (u64_at(v, "attempt"), u64_at(v, "max_retries")) {
        (Some(n), Some(max)) => format!(" (attempt {n} of {max})"),
        (Some(n), None) => format!(" (attempt {n})"),
        _ => String::new(),
    };
    let status_text = status.map(|s| format!("HTTP {s} ")).unwrap_or_default();
    let message = format!(
        "claude API request failed: {status_text}{}, retrying{attempt}",
        kind.unwrap_or("unknown error")
    );
    classify(status, kind, message, retry_after_ms)
}

fn push_text(events: &mut Vec<AgentEvent>, text: &str) {
    if !text.is_empty() {
        events.push(AgentEvent::AssistantText {
            text: text.to_string(),
        });
    }
}

#[cfg(test)]
mod tests {
    //! Recorded transcripts pin the mapping; the never-panic fuzzing that
    //! every parser must pass lives with the trait in `mod.rs`.
    use super::*;
    use serde_json::json;

    macro_rules! fixture {
        ($file:literal) => {
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/transcripts/",
                $file
            ))
        };
    }
    const SESSION: &str = "40a6b8c2-3fa6-45f3-aef9-c71cc24993b5";

    /// Events as JSON, so expectations read like the transcripts they mirror.
    fn parse(transcript: &str) -> Value {
        let mut parser = Claude.parser();
        let events: Vec<_> = transcript
            .lines()
            .flat_map(|l| parser.parse_line(l))
            .collect();
        serde_json::to_value(events).unwrap()
    }

    fn kinds(events: &Value) -> Vec<&str> {
        let events = events.as_array().map(Vec::as_slice).unwrap_or_default();
        events.iter().filter_map(|e| e["kind"].as_str()).collect()
    }

    #[test]
    fn write_file_transcript_becomes_the_whole_run() {
        let tool = "toolu_0a22114d6c884fe5bbfd";
        let written = "File created successfully at: MOCK_RESULT.txt \
            (file state is current in your context \u{2014} no need to Read it back)";
        let expected = json!([
            {"kind": "session_started", "session_id": SESSION, "model": "claude-opus-4-8[1m]"},
            {"kind": "tool_use", "id": tool, "name": "Write",
             "input": {"file_path": "MOCK_RESULT.txt", "content": "written by the real claude CLI\n"}},
            {"kind": "tool_result", "tool_use_id": tool, "content": written, "is_error": false},
            {"kind": "assistant_text", "text": "All done."},
            {"kind": "usage", "input_tokens": 24, "output_tokens": 23, "cost_usd": 0.0006950000000000001},
            {"kind": "result", "success": true, "text": "All done.", "session_id": SESSION},
        ]);
        assert_eq!(parse(fixture!("claude-2.1.197-write-file.jsonl")), expected);
    }

    #[test]
    fn rate_limited_transcript_reports_rate_limits_with_retry_delay() {
        let events = parse(fixture!("claude-2.1.197-rate-limited.jsonl"));
        assert_eq!(
            kinds(&events),
            ["session_started", "rate_limited", "rate_limited"]
        );
        let message = "claude API request failed: HTTP 429 rate_limit, retrying (attempt 1 of 10)";
        let expected = json!({"kind": "rate_limited", "message": message, "retry_after_ms": 1000});
        assert_eq!(events[1], expected);
        // claude reports a jittered float delay; it is rounded, not truncated.
        assert_eq!(events[2]["retry_after_ms"], 1139);
    }

    #[test]
    fn auth_failed_transcript_reports_auth_failures() {
        let events = parse(fixture!("claude-2.1.197-auth-failed.jsonl"));
        assert_eq!(
            kinds(&events),
            ["session_started", "auth_failed", "auth_failed"]
        );
        assert!(
            events[1]["message"]
                .to_string()
                .contains("HTTP 401 authentication_failed")
        );
    }

    #[test]
    fn resume_transcript_keeps_the_session_id() {
        let events = parse(fixture!("claude-2.1.197-resume.jsonl"));
        assert_eq!(
            kinds(&events),
            ["session_started", "assistant_text", "usage", "result"]
        );
        assert_eq!(events[0]["session_id"], SESSION);
        assert_eq!(events[3]["session_id"], SESSION);
        assert_eq!(events[3]["success"], true);
    }

    #[test]
    fn lines_of_another_cli_are_kept_verbatim() {
        let codex = fixture!("codex-0.169.0-hello.jsonl");
        let raw: Vec<_> = codex
            .lines()
            .map(|l| json!({"kind": "raw", "line": l}))
            .collect();
        assert_eq!(parse(codex), Value::Array(raw));
    }

    #[test]
    fn tool_result_blocks_are_joined_and_errors_kept() {
        let line = r#"{"type":"user","message":{"content":[{"type":"tool_result","tool_use_id":"t1","is_error":true,"content":[{"type":"text","text":"a"},{"type":"image"},{"type":"text","text":"b"}]}]}}"#;
        let expected = json!([{"kind": "tool_result", "tool_use_id": "t1", "content": "a\nb", "is_error": true}]);
        assert_eq!(parse(line), expected);
    }

    #[test]
    fn failed_results_are_not_success() {
        let line = r#"{"type":"result","subtype":"error_max_turns","is_error":false}"#;
        let expected =
            json!([{"kind": "result", "success": false, "text": null, "session_id": null}]);
        assert_eq!(parse(line), expected);
        let line = r#"{"type":"result","subtype":"success","is_error":true,"result":"API Error"}"#;
        assert_eq!(parse(line)[0]["success"], false);
    }

    #[test]
    fn other_api_retries_are_errors_and_tagged_assistant_errors_are_classified() {
        let line =
            r#"{"type":"system","subtype":"api_retry","error_status":529,"error":"overloaded"}"#;
        assert_eq!(kinds(&parse(line)), ["error"]);
        let line = r#"{"type":"system","subtype":"api_retry","error_status":403}"#;
        assert_eq!(kinds(&parse(line)), ["auth_failed"]);
        let line = r#"{"type":"assistant","message":{"content":[{"type":"text","text":"API Error: 429"}]},"error":"rate_limit"}"#;
        assert_eq!(kinds(&parse(line)), ["assistant_text", "rate_limited"]);
    }

    #[test]
    fn blank_lines_give_nothing_and_strange_lines_are_kept_raw() {
        let mut parser = ClaudeParser::default();
        assert_eq!(parser.parse_line(""), []);
        assert_eq!(parser.parse_line(" \t\r"), []);
        let strange = r#"not json
[1,2]
"text"
{"type":42}
{"type":"stream_event"}
{"type":"system","subtype":"init","session_id":5}
{"type":"assistant","message":{"content":7}}
{"type":"user","message":[]}"#;
        assert_eq!(kinds(&parse(strange)), ["raw"; 8]);
        let odd = r#"{"type":"result","usage":{"input_tokens":"x","output_tokens":-1},"total_cost_usd":"?"}"#;
        let usage =
            json!({"kind": "usage", "input_tokens": 0, "output_tokens": 0, "cost_usd": null});
        assert_eq!(parse(odd)[0], usage);
    }

    #[test]
    fn spawn_and_resume_args_env_and_config_dir() {
        let base = ["-p", "--output-format", "stream-json", "--verbose"];
        let execute = [&base[..], &["--dangerously-skip-permissions"]].concat();
        assert_eq!(Claude.spawn_args(&SpawnOptions::default()), execute);
        let opts = SpawnOptions {
            model: Some("opus".into()),
            mode: AgentMode::Plan,
        };
        let plan = [&base[..], &["--permission-mode", "plan", "--model", "opus"]].concat();
        assert_eq!(Claude.spawn_args(&opts), plan);
        let resume = Claude.resume_args("s 1", &SpawnOptions::default()).unwrap();
        assert_eq!(resume, [&execute[..], &["--resume", "s 1"]].concat());
        assert_eq!(Claude.prompt_via(), crate::providers::PromptVia::Stdin);
        // IS_SANDBOX (which disarms claude's root check) is set only by the sandbox.
        assert!(Claude.env().is_empty());
        assert_eq!(Claude.config_dir_env(), Some("CLAUDE_CONFIG_DIR"));
        assert_eq!(Claude.name(), "claude");
    }

    #[test]
    fn failed_results_with_an_error_field_are_classified() {
        let line = r#"{"type":"result","subtype":"error_during_execution","is_error":true,"error":"429 Too Many Requests"}"#;
        assert_eq!(kinds(&parse(line)), ["rate_limited", "result"]);
        assert_eq!(parse(line)[1]["text"], "429 Too Many Requests");
    }
}
