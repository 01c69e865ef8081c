//! Cursor's agent CLI (`cursor-agent`): `-p --output-format stream-json` writes claude's
//! shape (`system/init` with the session id, `assistant`, `user`, final `result`) plus
//! `tool_call` lines (`subtype` `started` / `completed`, the call under a key such as
//! `writeToolCall`) and `thinking` lines. `--force` allows every command; `--resume
//! CHAT_ID` resumes. It is not on npm, so this was never run here: flags and shapes come
//! from Cursor's public CLI docs (see tests/fixtures/transcripts/README.md). The prompt is
//! given as the last argument, since the docs only show it there.

use serde_json::Value;

use super::claude::ClaudeParser;
use super::json::{parse_line, raw, str_at, text_of};
use super::{AgentEvent, PromptVia, Provider, ProviderError, SpawnOptions, StreamParser};
use crate::domain::AgentMode;

/// The `cursor-agent` CLI as a [`Provider`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Cursor;

impl Cursor {
    fn flags(&self, opts: &SpawnOptions) -> Vec<String> {
        super::run_flags(
            self,
            &["-p", "--output-format", "stream-json"],
            "--model",
            opts,
        )
    }
}

impl Provider for Cursor {
    fn name(&self) -> &str {
        "cursor"
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

    /// The prompt is appended as the last argument by the worker.
    fn prompt_via(&self) -> PromptVia {
        PromptVia::Arg
    }

    fn mode_args(&self, mode: AgentMode) -> Vec<String> {
        match mode {
            AgentMode::Plan | AgentMode::Review | AgentMode::Discuss => {
                vec!["--mode".into(), "plan".into()]
            }
            AgentMode::Execute => vec!["--force".into()],
        }
    }

    fn env(&self) -> Vec<(String, String)> {
        Vec::new()
    }

    /// cursor-agent keeps its login under `~/.cursor` with no variable to move it; an
    /// account's key goes in `CURSOR_API_KEY` instead.
    fn api_key_env(&self) -> Option<&str> {
        Some("CURSOR_API_KEY")
    }

    fn config_dir_env(&self) -> Option<&str> {
        None
    }

    fn parser(&self) -> Box<dyn StreamParser> {
        Box::new(CursorParser::default())
    }
}

/// Claude's parser plus cursor's `tool_call` and `thinking` lines.
#[derive(Debug, Default)]
pub struct CursorParser {
    claude: ClaudeParser,
}

impl StreamParser for CursorParser {
    fn parse_line(&mut self, line: &str) -> Vec<AgentEvent> {
        let value = match parse_line(line) {
            Ok(value) => value,
            Err(events) => return events,
        };
        let events = match str_at(&value, "type") {
            Some("tool_call") => tool_call(&value),
            // The model's private reasoning, streamed; nothing for the fleet.
            Some("thinking") => Some(Vec::new()),
            _ => self.claude.parse_value(&value),
        };
        events.unwrap_or_else(|| raw(line))
    }
}

fn tool_call(v: &Value) -> Option<Vec<AgentEvent>> {
    let id = str_at(v, "call_id").map(String::from);
    // `{"writeToolCall": {"args": ..., "result": ...}}`: one key naming the tool.
    let (key, call) = v.get("tool_call")?.as_object()?.iter().next()?;
    let name = key.strip_suffix("ToolCall").unwrap_or(key).to_string();
    match str_at(v, "subtype")? {
        "started" => Some(vec![AgentEvent::ToolUse {
            id,
            name,
            input: call.get("args").cloned().unwrap_or(Value::Null),
        }]),
        "completed" => {
            let result = call.get("result");
            let failure = result.and_then(|r| r.get("error").or_else(|| r.get("failure")));
            let content = match failure {
                Some(f) => str_at(f, "message")
                    .map(String::from)
                    .unwrap_or_else(|| text_of(Some(f))),
                None => text_of(result.and_then(|r| r.get("success")).or(result)),
            };
            Some(vec![AgentEvent::ToolResult {
                tool_use_id: id,
                content,
                is_error: failure.is_some(),
            }])
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn write_file_transcript_becomes_the_whole_run() {
        let mut parser = Cursor.parser();
        let transcript = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/transcripts/cursor-docs-write-file.jsonl"
        ));
        let events: Vec<_> = transcript
            .lines()
            .flat_map(|l| parser.parse_line(l))
            .collect();
        let events = serde_json::to_value(events).unwrap();
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
                "assistant_text",
                "tool_use",
                "tool_result",
                "assistant_text",
                "result"
            ]
        );
        let id = "c6b62c6f-7ead-4fd6-9922-e952131177ff";
        assert_eq!(events[0]["session_id"], id);
        assert_eq!(events[2]["name"], "write");
        assert_eq!(events[2]["input"]["path"], "MOCK_RESULT.txt");
        assert_eq!(events[3]["is_error"], false);
        let result =
            json!({"kind": "result", "success": true, "text": "All done.", "session_id": id});
        assert_eq!(events[5], result);
    }

    #[test]
    fn failed_tool_calls_are_errors() {
        let line = r#"{"type":"tool_call","subtype":"completed","call_id":"c1","tool_call":{"shellToolCall":{"args":{"command":"false"},"result":{"failure":{"message":"exit 1"}}}}}"#;
        let events = CursorParser::default().parse_line(line);
        let expected = AgentEvent::ToolResult {
            tool_use_id: Some("c1".into()),
            content: "exit 1".into(),
            is_error: true,
        };
        assert_eq!(events, [expected]);
    }

    #[test]
    fn the_prompt_is_the_last_argument() {
        let opts = SpawnOptions::default();
        let args =
            crate::providers::place_prompt(Cursor.spawn_args(&opts), Cursor.prompt_via(), "do it");
        assert_eq!(
            args,
            ["-p", "--output-format", "stream-json", "--force", "do it"]
        );
        let resume = Cursor.resume_args("c-1", &opts).unwrap();
        assert_eq!(resume[resume.len() - 2..], ["--resume", "c-1"]);
    }
}
