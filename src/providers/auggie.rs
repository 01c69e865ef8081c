//! Augment's CLI (`auggie`): `--print --output-format json` runs one task and writes a
//! single JSON line at the end, claude's `result` shape (`result`, `is_error`, `subtype`,
//! `session_id`, `num_turns`) plus `retry_stats` listing the retries it made, each with a
//! `retry_reason` (`rate_limited`, ...). The session id is only known then. Resume is
//! `--resume SESSION_ID`. The instruction is given as the last argument (auggie reads
//! piped stdin as context, not as the instruction). Its cache dir (sessions, login)
//! defaults to `~/.augment` and moves only with a flag, `--augment-cache-dir`; an
//! account's login can be given whole in `AUGMENT_SESSION_AUTH`. Shapes read from auggie
//! 0.36.0's own bundle; flags from its `--help`.

use serde_json::Value;

use super::claude::ClaudeParser;
use super::json::{parse_line, raw, str_at};
use super::{AgentEvent, PromptVia, Provider, ProviderError, SpawnOptions, StreamParser};
use crate::domain::AgentMode;

/// The `auggie` CLI as a [`Provider`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Auggie;

impl Auggie {
    fn flags(&self, opts: &SpawnOptions) -> Vec<String> {
        super::run_flags(
            self,
            &["--print", "--output-format", "json"],
            "--model",
            opts,
        )
    }
}

impl Provider for Auggie {
    fn name(&self) -> &str {
        "auggie"
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

    /// The instruction is appended as the last argument by the worker.
    fn prompt_via(&self) -> PromptVia {
        PromptVia::Arg
    }

    fn mode_args(&self, mode: AgentMode) -> Vec<String> {
        match mode {
            // Ask mode: retrieval and non-editing tools only.
            AgentMode::Plan | AgentMode::Review | AgentMode::Discuss => vec!["--ask".into()],
            AgentMode::Execute => Vec::new(),
        }
    }

    fn env(&self) -> Vec<(String, String)> {
        Vec::new()
    }

    fn config_dir_env(&self) -> Option<&str> {
        None
    }

    fn parser(&self) -> Box<dyn StreamParser> {
        Box::new(AuggieParser::default())
    }
}

/// Claude's `result` reader, plus the session start and the rate limits that auggie
/// only reports in its final line.
#[derive(Debug, Default)]
pub struct AuggieParser {
    claude: ClaudeParser,
}

impl StreamParser for AuggieParser {
    fn parse_line(&mut self, line: &str) -> Vec<AgentEvent> {
        let value = match parse_line(line) {
            Ok(value) => value,
            Err(events) => return events,
        };
        if str_at(&value, "type") != Some("result") {
            return raw(line);
        }
        let mut events = Vec::new();
        if let Some(id) = str_at(&value, "session_id") {
            events.push(AgentEvent::SessionStarted {
                session_id: id.to_string(),
                model: None,
            });
        }
        events.extend(rate_limits(&value));
        events.extend(self.claude.parse_value(&value).unwrap_or_default());
        events
    }
}

fn rate_limits(v: &Value) -> Vec<AgentEvent> {
    let retries = v.get("retry_stats").and_then(|s| s.get("events"));
    let retries = retries
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    retries
        .iter()
        .filter(|e| str_at(e, "retry_reason") == Some("rate_limited"))
        .map(|e| AgentEvent::RateLimited {
            message: str_at(e, "error_message")
                .unwrap_or("rate limited")
                .to_string(),
            retry_after_ms: e.get("backoff_ms").and_then(Value::as_u64),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(transcript: &str) -> serde_json::Value {
        let mut parser = Auggie.parser();
        let events: Vec<_> = transcript
            .lines()
            .flat_map(|l| parser.parse_line(l))
            .collect();
        serde_json::to_value(events).unwrap()
    }

    #[test]
    fn result_transcript_gives_session_rate_limits_and_result() {
        let events = parse(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/transcripts/auggie-0.36.0-bundle-result.jsonl"
        )));
        let id = "0f6e5a52-86a4-4f1b-a7f4-0e1b1c0b4e55";
        let expected = json!([
            {"kind": "session_started", "session_id": id, "model": null},
            {"kind": "rate_limited", "message": "Rate limited", "retry_after_ms": 2000},
            {"kind": "result", "success": true, "text": "All done.", "session_id": id},
        ]);
        assert_eq!(events, expected);
    }

    #[test]
    fn the_instruction_is_the_last_argument() {
        let opts = SpawnOptions::default();
        let args =
            crate::providers::place_prompt(Auggie.spawn_args(&opts), Auggie.prompt_via(), "do it");
        assert_eq!(args, ["--print", "--output-format", "json", "do it"]);
        assert_eq!(Auggie.mode_args(AgentMode::Plan), ["--ask"]);
    }
}
