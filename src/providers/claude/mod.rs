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

mod parser;

pub use parser::ClaudeParser;

use super::{Provider, ProviderError, SpawnOptions, StreamParser};
use crate::domain::AgentMode;

/// The `claude` CLI as a [`Provider`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Claude;

impl Claude {
    fn common(&self, opts: &SpawnOptions) -> Vec<String> {
        // No prompt argument: with `-p` and none given, claude reads it from stdin.
        // `--verbose` is required by claude for stream-json in print mode.
        let base = ["-p", "--output-format", "stream-json", "--verbose"];
        super::run_flags(self, &base, "--model", opts)
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
        Ok(super::with_session(
            self.common(opts),
            "--resume",
            session_id,
        ))
    }

    fn system_prompt_args(&self, text: &str) -> Option<Vec<String>> {
        Some(vec!["--append-system-prompt".into(), text.into()])
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
