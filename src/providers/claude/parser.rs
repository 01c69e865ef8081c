//! Claude's stream-json lines as [`AgentEvent`]s: `system/init` (the session id),
//! `assistant` and `user` turns with their content blocks, `system/api_retry` (a rate limit
//! or a refused key while the CLI keeps retrying) and the final `result`.
//!
//! Usage: claude prints a message once per content block, each with the message's usage
//! as known so far (the output count grows, or stays at its first value), and the run's
//! totals and cost in `result`. Each message's usage is reported once, as what it adds to
//! the highest counts seen for its id (a message is one turn), and the result as the run's
//! totals ([`UsageScope::Run`]), of which only what the messages did not already report
//! is counted.

use serde_json::Value;

use super::super::json::{classify, classify_text, parse_line, raw, str_at, u64_at};
use super::super::{AgentEvent, StreamParser, UsageScope};

/// Turns claude's stream-json lines into [`AgentEvent`]s. Amp and cursor-agent write the
/// same ("Claude Code-compatible") format, so their parsers build on this one.
#[derive(Debug, Default)]
pub struct ClaudeParser {
    /// Remembered from `system/init` so a `result` line that lacks its own
    /// session id can still be tied to the session to resume.
    session_id: Option<String>,
    /// The highest usage seen per message id, so a message repeated per content block
    /// counts once.
    messages: std::collections::HashMap<String, Tokens>,
}

/// One message's token counts: input, output, cache read, cache write.
type Tokens = [u64; 4];

/// The token counts of a usage object (claude's `usage`, with its cache fields).
fn tokens_of(usage: &Value) -> Tokens {
    let n = |key| u64_at(usage, key).unwrap_or(0);
    [
        n("input_tokens"),
        n("output_tokens"),
        n("cache_read_input_tokens"),
        n("cache_creation_input_tokens"),
    ]
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

    fn reports_cost(&self) -> bool {
        true
    }
}

impl ClaudeParser {
    /// The events of one parsed line; `None` for a shape this format does not have.
    pub(crate) fn parse_value(&mut self, value: &Value) -> Option<Vec<AgentEvent>> {
        match str_at(value, "type") {
            Some("system") => self.system(value),
            Some("assistant") => {
                let mut events = assistant(value)?;
                events.extend(self.message_usage(value));
                Some(events)
            }
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

    /// What an assistant message's usage adds to what its id reported before (None when
    /// nothing: a repeat of the same counts). A message seen for the first time is a turn.
    fn message_usage(&mut self, v: &Value) -> Option<AgentEvent> {
        let message = v.get("message")?;
        let usage = message.get("usage").filter(|u| u.is_object())?;
        let now = tokens_of(usage);
        // A message without an id (amp's, cursor's) cannot be told from the next one: each
        // counts as it is.
        let id =
            str_at(message, "id").map_or_else(|| format!("#{}", self.messages.len()), String::from);
        let first = !self.messages.contains_key(&id);
        let seen = self.messages.entry(id).or_default();
        let mut added = [0; 4];
        for i in 0..4 {
            added[i] = now[i].saturating_sub(seen[i]);
            seen[i] = seen[i].max(now[i]);
        }
        if !first && added == [0; 4] {
            return None;
        }
        Some(AgentEvent::Usage {
            input_tokens: added[0],
            output_tokens: added[1],
            cache_read_tokens: added[2],
            cache_write_tokens: added[3],
            cost_usd: None,
            turns: u64::from(first),
            scope: UsageScope::Delta,
        })
    }

    fn result(&self, v: &Value) -> Vec<AgentEvent> {
        let mut events = Vec::with_capacity(2);
        let usage = v.get("usage").filter(|u| u.is_object());
        let cost_usd = v.get("total_cost_usd").and_then(Value::as_f64);
        if usage.is_some() || cost_usd.is_some() {
            let [input, output, cache_read, cache_write] = usage.map(tokens_of).unwrap_or_default();
            events.push(AgentEvent::Usage {
                input_tokens: input,
                output_tokens: output,
                cache_read_tokens: cache_read,
                cache_write_tokens: cache_write,
                cost_usd,
                // The messages counted the turns; a run without any still had one.
                turns: u64::from(self.messages.is_empty()),
                scope: UsageScope::Run,
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
    use serde_json::json;

    use super::*;
    use crate::providers::Provider;
    use crate::providers::claude::Claude;

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
            // Each message's usage once, as claude knew it when it printed the message...
            {"kind": "usage", "input_tokens": 12, "output_tokens": 1, "cache_read_tokens": 0,
             "cache_write_tokens": 0, "cost_usd": null, "turns": 1, "scope": "delta"},
            {"kind": "tool_result", "tool_use_id": tool, "content": written, "is_error": false},
            {"kind": "assistant_text", "text": "All done."},
            {"kind": "usage", "input_tokens": 12, "output_tokens": 1, "cache_read_tokens": 0,
             "cache_write_tokens": 0, "cost_usd": null, "turns": 1, "scope": "delta"},
            // ...and the run's totals with its cost.
            {"kind": "usage", "input_tokens": 24, "output_tokens": 23, "cache_read_tokens": 0,
             "cache_write_tokens": 0, "cost_usd": 0.0006950000000000001, "turns": 0, "scope": "run"},
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
            [
                "session_started",
                "assistant_text",
                "usage",
                "usage",
                "result"
            ]
        );
        assert_eq!(events[0]["session_id"], SESSION);
        assert_eq!(events[4]["session_id"], SESSION);
        assert_eq!(events[4]["success"], true);
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
        let usage = json!({"kind": "usage", "input_tokens": 0, "output_tokens": 0,
            "cache_read_tokens": 0, "cache_write_tokens": 0, "cost_usd": null, "turns": 1,
            "scope": "run"});
        assert_eq!(parse(odd)[0], usage);
    }

    /// Claude prints a message once per content block, each time with the usage known so
    /// far: the message counts once, with its highest counts, as one turn.
    #[test]
    fn a_message_repeated_per_block_counts_once_with_its_highest_usage() {
        let block = |text: &str, output: u64| {
            format!(
                r#"{{"type":"assistant","message":{{"id":"msg_1","content":[{{"type":"text","text":"{text}"}}],"usage":{{"input_tokens":100,"output_tokens":{output},"cache_read_input_tokens":7,"cache_creation_input_tokens":3}}}}}}"#
            )
        };
        let lines = [block("a", 1), block("b", 1), block("c", 40)].join("\n");
        let usage: Vec<Value> = parse(&lines)
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "usage")
            .cloned()
            .collect();
        assert_eq!(
            usage.len(),
            2,
            "the repeat with the same counts adds nothing"
        );
        assert_eq!(
            (
                &usage[0]["input_tokens"],
                &usage[0]["output_tokens"],
                &usage[0]["turns"]
            ),
            (&json!(100), &json!(1), &json!(1))
        );
        assert_eq!(usage[0]["cache_read_tokens"], 7);
        assert_eq!(usage[0]["cache_write_tokens"], 3);
        assert_eq!(
            (
                &usage[1]["input_tokens"],
                &usage[1]["output_tokens"],
                &usage[1]["turns"]
            ),
            (&json!(0), &json!(39), &json!(0)),
            "only what the later block adds, and no new turn"
        );
    }

    #[test]
    fn failed_results_with_an_error_field_are_classified() {
        let line = r#"{"type":"result","subtype":"error_during_execution","is_error":true,"error":"429 Too Many Requests"}"#;
        assert_eq!(kinds(&parse(line)), ["rate_limited", "result"]);
        assert_eq!(parse(line)[1]["text"], "429 Too Many Requests");
    }
}
