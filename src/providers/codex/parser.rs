//! Codex's `exec --json` events: `thread.started` (the thread id is the session to
//! resume), `turn.started`, `item.started` / `item.updated` / `item.completed` carrying
//! one item (`agent_message`, `reasoning`, `command_execution`, `file_change`,
//! `mcp_tool_call`, `web_search`, `todo_list`, `error`), `turn.completed` with usage,
//! `turn.failed`, and a top-level `error` that codex prints while it reconnects after a
//! failed request (e.g. `Reconnecting... 1/5 (unexpected status 429 ...)`), which is how a
//! rate limit or a refused key shows up. Shapes from codex 0.169.0's real output (see
//! `tests/fixtures/transcripts/codex-0.169.0-*.jsonl`).

use std::collections::HashSet;

use serde_json::{Value, json};

use super::super::json::{classify_text, parse_line, raw, str_at, text_of, u64_at};
use super::super::{AgentEvent, StreamParser, UsageScope};

/// Turns codex's JSON lines into [`AgentEvent`]s.
#[derive(Debug, Default)]
pub struct CodexParser {
    session_id: Option<String>,
    /// Items whose start was already reported as a tool use.
    started: HashSet<String>,
    last_text: Option<String>,
}

impl StreamParser for CodexParser {
    fn parse_line(&mut self, line: &str) -> Vec<AgentEvent> {
        let value = match parse_line(line) {
            Ok(value) => value,
            Err(events) => return events,
        };
        self.parse_value(&value).unwrap_or_else(|| raw(line))
    }
}

impl CodexParser {
    fn parse_value(&mut self, v: &Value) -> Option<Vec<AgentEvent>> {
        match str_at(v, "type")? {
            "thread.started" => {
                let id = str_at(v, "thread_id")?.to_string();
                self.session_id = Some(id.clone());
                Some(vec![AgentEvent::SessionStarted {
                    session_id: id,
                    model: None,
                }])
            }
            "turn.started" => Some(Vec::new()),
            "item.started" | "item.updated" => Some(self.item_started(v.get("item")?)),
            "item.completed" => self.item_completed(v.get("item")?),
            "turn.completed" => {
                let usage = v.get("usage").filter(|u| u.is_object());
                let tokens = |key| usage.and_then(|u| u64_at(u, key)).unwrap_or(0);
                Some(vec![
                    // The thread's totals so far, earlier runs of the session included.
                    // Its input count includes the cached part; ours does not.
                    AgentEvent::Usage {
                        input_tokens: tokens("input_tokens")
                            .saturating_sub(tokens("cached_input_tokens")),
                        output_tokens: tokens("output_tokens"),
                        cache_read_tokens: tokens("cached_input_tokens"),
                        cache_write_tokens: tokens("cache_write_input_tokens"),
                        cost_usd: None,
                        turns: 1,
                        scope: UsageScope::Session,
                    },
                    AgentEvent::Result {
                        success: true,
                        text: self.last_text.clone(),
                        session_id: self.session_id.clone(),
                    },
                ])
            }
            "turn.failed" => {
                let message = error_message(v.get("error"))
                    .unwrap_or_else(|| "codex turn failed".to_string());
                Some(vec![
                    classify_text(message.clone()),
                    AgentEvent::Result {
                        success: false,
                        text: Some(message),
                        session_id: self.session_id.clone(),
                    },
                ])
            }
            "error" => Some(vec![classify_text(str_at(v, "message")?.to_string())]),
            _ => None,
        }
    }

    fn item_started(&mut self, item: &Value) -> Vec<AgentEvent> {
        let (Some(id), Some(tool)) = (str_at(item, "id"), tool_use(item)) else {
            return Vec::new();
        };
        if !self.started.insert(id.to_string()) {
            return Vec::new();
        }
        vec![tool]
    }

    fn item_completed(&mut self, item: &Value) -> Option<Vec<AgentEvent>> {
        let id = str_at(item, "id");
        let mut events = Vec::new();
        match str_at(item, "type")? {
            "agent_message" => {
                let text = str_at(item, "text")?.to_string();
                self.last_text = Some(text.clone());
                events.push(AgentEvent::AssistantText { text });
            }
            // The model's private reasoning and its todo list say nothing to the fleet.
            "reasoning" | "todo_list" => {}
            "error" => events.push(classify_text(str_at(item, "message")?.to_string())),
            _ => {
                let tool = tool_use(item)?;
                if id.is_none_or(|id| !self.started.contains(id)) {
                    events.push(tool);
                }
                events.push(AgentEvent::ToolResult {
                    tool_use_id: id.map(String::from),
                    content: tool_output(item),
                    is_error: tool_failed(item),
                });
            }
        }
        Some(events)
    }
}

/// The tool use an item stands for, or `None` if it is not a tool call.
fn tool_use(item: &Value) -> Option<AgentEvent> {
    let kind = str_at(item, "type")?;
    let (name, input) = match kind {
        "command_execution" => ("shell".to_string(), json!({"command": item.get("command")})),
        "file_change" => (
            "file_change".to_string(),
            json!({"changes": item.get("changes")}),
        ),
        "mcp_tool_call" => (
            format!(
                "{}.{}",
                str_at(item, "server").unwrap_or("mcp"),
                str_at(item, "tool").unwrap_or("tool")
            ),
            item.get("arguments").cloned().unwrap_or(Value::Null),
        ),
        "web_search" => (
            "web_search".to_string(),
            json!({"query": item.get("query")}),
        ),
        _ => return None,
    };
    Some(AgentEvent::ToolUse {
        id: str_at(item, "id").map(String::from),
        name,
        input,
    })
}

fn tool_output(item: &Value) -> String {
    match str_at(item, "type") {
        Some("command_execution") => text_of(item.get("aggregated_output")),
        Some("file_change") => item
            .get("changes")
            .and_then(Value::as_array)
            .map(|changes| {
                changes
                    .iter()
                    .map(|c| format!("{} {}", text_of(c.get("kind")), text_of(c.get("path"))))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default(),
        Some("mcp_tool_call") => {
            error_message(item.get("error")).unwrap_or_else(|| text_of(item.get("result")))
        }
        _ => String::new(),
    }
}

fn tool_failed(item: &Value) -> bool {
    str_at(item, "status") == Some("failed")
        || item
            .get("exit_code")
            .and_then(Value::as_i64)
            .is_some_and(|c| c != 0)
        || item.get("error").is_some_and(|e| !e.is_null())
}

fn error_message(error: Option<&Value>) -> Option<String> {
    match error? {
        Value::String(s) => Some(s.clone()),
        e @ Value::Object(_) => Some(
            str_at(e, "message")
                .map(String::from)
                .unwrap_or_else(|| e.to_string()),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(transcript: &str) -> Value {
        let mut parser = CodexParser::default();
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

    macro_rules! fixture {
        ($file:literal) => {
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/transcripts/",
                $file
            ))
        };
    }

    #[test]
    fn hello_transcript_is_a_session_a_warning_a_message_and_a_result() {
        let events = parse(fixture!("codex-0.169.0-hello.jsonl"));
        assert_eq!(
            kinds(&events),
            [
                "session_started",
                "error",
                "assistant_text",
                "usage",
                "result"
            ]
        );
        let id = "01a210e1-8739-7ff1-9b18-76effb83b279";
        assert_eq!(events[0]["session_id"], id);
        assert_eq!(events[3]["input_tokens"], 10);
        assert_eq!(events[3]["output_tokens"], 5);
        let result = json!({"kind": "result", "success": true, "text": "Hello from the mock.", "session_id": id});
        assert_eq!(events[4], result);
    }

    #[test]
    fn commands_and_file_changes_are_tool_uses_with_results() {
        let lines = r#"{"type":"item.started","item":{"id":"item_1","type":"command_execution","command":"bash -lc ls","aggregated_output":"","exit_code":null,"status":"in_progress"}}
{"type":"item.completed","item":{"id":"item_1","type":"command_execution","command":"bash -lc ls","aggregated_output":"a\n","exit_code":2,"status":"failed"}}
{"type":"item.completed","item":{"id":"item_2","type":"file_change","changes":[{"path":"a.txt","kind":"add"}],"status":"completed"}}"#;
        let events = parse(lines);
        assert_eq!(
            kinds(&events),
            ["tool_use", "tool_result", "tool_use", "tool_result"]
        );
        assert_eq!(events[0]["name"], "shell");
        assert_eq!(events[1]["is_error"], true);
        assert_eq!(events[3]["content"], "add a.txt");
        assert_eq!(events[3]["is_error"], false);
    }

    #[test]
    fn reconnect_errors_and_failed_turns_are_classified() {
        let lines = r#"{"type":"error","message":"Reconnecting... 1/5 (unexpected status 429 Too Many Requests: slow down)"}
{"type":"error","message":"Reconnecting... 2/5 (unexpected status 401 Unauthorized: bad key)"}
{"type":"turn.failed","error":{"message":"stream disconnected before completion"}}"#;
        let events = parse(lines);
        assert_eq!(
            kinds(&events),
            ["rate_limited", "auth_failed", "error", "result"]
        );
        assert_eq!(events[3]["success"], false);
    }

    #[test]
    fn recorded_write_file_and_resume_runs_keep_their_thread() {
        let events = parse(fixture!("codex-0.169.0-write-file.jsonl"));
        assert_eq!(
            kinds(&events),
            [
                "session_started",
                "error",
                "tool_use",
                "tool_result",
                "assistant_text",
                "usage",
                "result"
            ]
        );
        assert_eq!(events[2]["name"], "shell");
        assert_eq!(events[3]["is_error"], false);
        assert_eq!(events[6]["text"], "All done.");
        let resumed = parse(fixture!("codex-0.169.0-resume.jsonl"));
        assert_eq!(resumed.as_array().unwrap().last().unwrap()["success"], true);
    }

    #[test]
    fn recorded_429_and_401_runs_are_rate_limit_and_auth_events() {
        let events = parse(fixture!("codex-0.169.0-rate-limited.jsonl"));
        assert_eq!(kinds(&events).last().unwrap(), "rate_limited");
        let events = parse(fixture!("codex-0.169.0-auth-failed.jsonl"));
        assert_eq!(kinds(&events).last().unwrap(), "auth_failed");
    }
}
