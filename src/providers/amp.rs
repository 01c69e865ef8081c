//! Amp (`amp`): execute mode (`-x`) with `--stream-json` writes Claude Code-compatible
//! stream JSON (`system/init` whose session id is the thread id `T-...`, `assistant`,
//! `user`, `result`; a failed run's reason is in `error`), so claude's parser reads it.
//! The prompt is read from stdin in execute mode; resume is `threads continue THREAD_ID`.
//! Amp keeps its login and threads under `$XDG_DATA_HOME/amp` (its key may also come in
//! `AMP_API_KEY`). Amp 0.0.1790142911 has no flag to skip command confirmations (its
//! `--help` lists none, and it silently accepts unknown flags, so a guessed one would
//! pass unnoticed): they are turned off by the setting `"amp.dangerouslyAllowAll": true`
//! in the settings file of the account (`$XDG_CONFIG_HOME/amp/settings.json`, or the
//! file named by `AMP_SETTINGS_FILE`), which whoever writes the account's config must
//! set. Flags from its `--help`; shapes from Amp's public docs (see
//! tests/fixtures/transcripts/README.md).

use super::claude::ClaudeParser;
use super::{Provider, ProviderError, SpawnOptions, StreamParser};
use crate::domain::AgentMode;

/// The `amp` CLI as a [`Provider`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Amp;

impl Amp {
    fn flags(&self, opts: &SpawnOptions) -> Vec<String> {
        // Amp picks models by agent mode (low, medium, high, ...), not by model id: it takes
        // no model (`takes_model`).
        let opts = SpawnOptions {
            model: None,
            ..opts.clone()
        };
        super::run_flags(self, &["-x", "--stream-json"], "", &opts)
    }
}

impl Provider for Amp {
    fn name(&self) -> &str {
        "amp"
    }

    fn takes_model(&self) -> bool {
        false
    }

    fn spawn_args(&self, opts: &SpawnOptions) -> Vec<String> {
        self.flags(opts)
    }

    fn resume_args(
        &self,
        session_id: &str,
        opts: &SpawnOptions,
    ) -> Result<Vec<String>, ProviderError> {
        let mut args = vec![
            "threads".to_string(),
            "continue".to_string(),
            session_id.to_string(),
        ];
        args.extend(self.flags(opts));
        Ok(args)
    }

    /// Amp has no permission flags (see the module doc): modes rely on the prompt
    /// preamble alone.
    fn mode_args(&self, _mode: AgentMode) -> Vec<String> {
        Vec::new()
    }

    fn env(&self) -> Vec<(String, String)> {
        Vec::new()
    }

    fn api_key_env(&self) -> Option<&str> {
        Some("AMP_API_KEY")
    }

    fn config_dir_env(&self) -> Option<&str> {
        Some("XDG_DATA_HOME")
    }

    fn parser(&self) -> Box<dyn StreamParser> {
        Box::new(ClaudeParser::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn write_file_transcript_becomes_the_whole_run() {
        let mut parser = Amp.parser();
        let transcript = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/transcripts/amp-docs-write-file.jsonl"
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
                "tool_use",
                "usage",
                "tool_result",
                "assistant_text",
                "usage",
                "usage",
                "result"
            ]
        );
        let id = "T-5928a90d-d53b-488f-a829-4e36442142ee";
        assert_eq!(events[0]["session_id"], id);
        assert_eq!(events[1]["name"], "create_file");
        let result =
            json!({"kind": "result", "success": true, "text": "All done.", "session_id": id});
        assert_eq!(events[7], result);
    }

    #[test]
    fn failed_run_reports_its_error() {
        let mut parser = Amp.parser();
        let line = r#"{"type":"result","subtype":"error_during_execution","duration_ms":10,"is_error":true,"num_turns":1,"error":"Insufficient credit balance: out of credits","session_id":"T-1"}"#;
        let events = serde_json::to_value(parser.parse_line(line)).unwrap();
        assert_eq!(events[0]["kind"], "rate_limited");
        assert_eq!(events[1]["success"], Value::Bool(false));
    }

    #[test]
    fn resume_continues_the_thread() {
        let args = Amp.resume_args("T-1", &SpawnOptions::default()).unwrap();
        assert_eq!(args, ["threads", "continue", "T-1", "-x", "--stream-json"]);
    }
}
