//! OpenAI Codex (`codex` CLI): `codex exec --json` runs one headless turn and writes its
//! thread events as JSON lines (see [`parser`]). The prompt is read from stdin (`-`);
//! resume is the `exec resume SESSION_ID` subcommand with the thread id from
//! `thread.started`. `CODEX_HOME` relocates its config, credentials and sessions (it must
//! exist, or codex exits). Flags checked against codex 0.169.0's own `--help`.

mod parser;

pub use parser::CodexParser;

use super::{Provider, ProviderError, SpawnOptions, StreamParser};
use crate::domain::AgentMode;

/// The `codex` CLI as a [`Provider`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Codex;

impl Codex {
    fn flags(&self, opts: &SpawnOptions) -> Vec<String> {
        super::run_flags(self, &["--json", "--skip-git-repo-check"], "-m", opts)
    }
}

impl Provider for Codex {
    fn name(&self) -> &str {
        "codex"
    }

    fn spawn_args(&self, opts: &SpawnOptions) -> Vec<String> {
        let mut args = vec!["exec".to_string()];
        args.extend(self.flags(opts));
        // `-`: the prompt comes on stdin.
        args.push("-".into());
        args
    }

    fn resume_args(
        &self,
        session_id: &str,
        opts: &SpawnOptions,
    ) -> Result<Vec<String>, ProviderError> {
        let mut args = vec!["exec".to_string(), "resume".to_string()];
        args.extend(self.flags(opts));
        args.extend([session_id.to_string(), "-".to_string()]);
        Ok(args)
    }

    fn mode_args(&self, mode: AgentMode) -> Vec<String> {
        match mode {
            // `-s` is not accepted by `exec resume`; the config key is, by both.
            AgentMode::Plan | AgentMode::Review | AgentMode::Discuss => {
                vec!["-c".into(), "sandbox_mode=\"read-only\"".into()]
            }
            AgentMode::Execute => vec!["--dangerously-bypass-approvals-and-sandbox".into()],
        }
    }

    fn env(&self) -> Vec<(String, String)> {
        Vec::new()
    }

    fn api_key_env(&self) -> Option<&str> {
        Some("OPENAI_API_KEY")
    }

    fn credentials_file(&self) -> Option<&str> {
        Some("auth.json")
    }

    fn config_dir_env(&self) -> Option<&str> {
        Some("CODEX_HOME")
    }

    fn parser(&self) -> Box<dyn StreamParser> {
        Box::new(CodexParser::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spawn_and_resume_read_the_prompt_from_stdin() {
        let opts = SpawnOptions {
            model: Some("gpt-5".into()),
            mode: AgentMode::Execute,
        };
        let flags = [
            "--json",
            "--skip-git-repo-check",
            "--dangerously-bypass-approvals-and-sandbox",
            "-m",
            "gpt-5",
        ];
        let spawn = [&["exec"][..], &flags, &["-"]].concat();
        assert_eq!(Codex.spawn_args(&opts), spawn);
        let resume = [&["exec", "resume"][..], &flags, &["t-1", "-"]].concat();
        assert_eq!(Codex.resume_args("t-1", &opts).unwrap(), resume);
        let plan = SpawnOptions {
            model: None,
            mode: AgentMode::Review,
        };
        assert!(
            Codex
                .spawn_args(&plan)
                .contains(&"sandbox_mode=\"read-only\"".to_string())
        );
        assert_eq!(Codex.config_dir_env(), Some("CODEX_HOME"));
    }
}
