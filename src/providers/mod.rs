//! The port between the fleet and the coding-agent CLIs it runs.
//!
//! Every CLI (claude, codex, gemini, ...) has its own command line, its own
//! environment quirks and its own stream format. This module is the one place
//! where those differences are named: a [`Provider`] says how to start a CLI
//! headlessly, and its [`StreamParser`] turns the CLI's output lines into the
//! common [`AgentEvent`]s that the supervisor, the store and the API share.
//! Provider quirks stay inside their own file (`claude.rs`, ...) so nothing
//! outside this folder has to know which CLI produced an event.
//!
//! `signal.rs` holds the signal file convention ([`Signal`]), the other channel
//! through which an agent tells the fleet how it finished.

pub mod amp;
pub mod auggie;
mod catalog;
mod channel;
pub mod claude;
pub mod codex;
pub mod command;
pub mod cursor;
pub mod gemini;
mod json;
pub mod mode;
pub mod opencode;
mod signal;

use serde::{Deserialize, Serialize};

use crate::domain::AgentMode;

pub use catalog::{BUILT_IN, BuiltIn, ProviderSettings, Providers, built_in, default_command};
pub use channel::{QUESTION_CHANNEL, with_question_channel};
pub use command::{CommandProvider, CommandSpec, ParserKind};
pub use mode::{format_answers, mode_preamble, prompt_for_mode};
pub use signal::{Question, Signal, SignalStatus, parse_signal};

/// Normalised event every provider parser emits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AgentEvent {
    SessionStarted {
        session_id: String,
        model: Option<String>,
    },
    AssistantText {
        text: String,
    },
    ToolUse {
        id: Option<String>,
        name: String,
        input: serde_json::Value,
    },
    ToolResult {
        tool_use_id: Option<String>,
        content: String,
        is_error: bool,
    },
    /// Tokens (and cost, where the CLI reports it) as the CLI counts them; `scope` says
    /// what the numbers cover, so each token is counted once (see [`UsageScope`]).
    Usage {
        input_tokens: u64,
        output_tokens: u64,
        #[serde(default)]
        cache_read_tokens: u64,
        #[serde(default)]
        cache_write_tokens: u64,
        cost_usd: Option<f64>,
        /// Model turns (API responses) these numbers add.
        #[serde(default)]
        turns: u64,
        #[serde(default)]
        scope: UsageScope,
    },
    Result {
        success: bool,
        text: Option<String>,
        session_id: Option<String>,
    },
    /// The account hit a rate or usage limit. CLIs keep retrying on their own, so the
    /// supervisor must act on the first of these (stop, mark the account, fail over).
    RateLimited {
        message: String,
        retry_after_ms: Option<u64>,
    },
    /// The credentials were refused; retrying with the same account cannot help.
    AuthFailed {
        message: String,
    },
    Error {
        message: String,
    },
    /// Any line we don't understand (non-JSON, unknown type) is kept verbatim,
    /// so nothing the CLI said is lost from the agent's log.
    Raw {
        line: String,
    },
}

/// What the numbers of an [`AgentEvent::Usage`] cover.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageScope {
    /// What one message or step added.
    #[default]
    Delta,
    /// Everything this run of the CLI used so far (claude's and gemini's final totals).
    Run,
    /// Everything the session used so far, earlier runs of it included (codex's
    /// `turn.completed`).
    Session,
}

/// A streaming parser: fed one line (without trailing newline) at a time,
/// returns zero or more events. Must never panic, whatever bytes.
pub trait StreamParser: Send {
    fn parse_line(&mut self, line: &str) -> Vec<AgentEvent>;
    /// Whether the format ends a run with a result (`AgentEvent::Result`): a stream that
    /// ends without one was cut short. Formats without results say so.
    fn reports_result(&self) -> bool {
        true
    }
    /// Whether the format reports what a run cost (claude's `total_cost_usd`, opencode's
    /// `cost`); for those that do not, cost is estimated from the configured prices.
    fn reports_cost(&self) -> bool {
        false
    }
}

/// How the prompt reaches the CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptVia {
    /// On stdin (the worker feeds the prompt file). Preferred: argv has a 128 KiB
    /// per-argument limit and is visible to every user of the node in `ps`.
    Stdin,
    /// On the command line, for CLIs that cannot read it from stdin: the worker puts it
    /// in place of a [`PROMPT_PLACEHOLDER`] argument if the args have one, or appends it
    /// as the last argument otherwise (see [`place_prompt`]). Stdin is then left empty.
    Arg,
}

/// An argument that stands for the prompt, for CLIs that take it at a fixed position.
pub const PROMPT_PLACEHOLDER: &str = "{prompt}";

/// How to run one CLI headlessly.
pub trait Provider: Send + Sync {
    /// The name agents are spawned with (`claude`, ..., or a configured command provider).
    fn name(&self) -> &str;
    /// Args (after the executable) for a new headless run in `opts.mode` (execute when
    /// unset): machine-readable streaming output, no permission prompts. The prompt is
    /// not among them unless the args hold a [`PROMPT_PLACEHOLDER`]: see [`Self::prompt_via`].
    fn spawn_args(&self, opts: &SpawnOptions) -> Vec<String>;
    /// Args to continue session `session_id` with a new prompt (the answers), in the same
    /// worktree and with the same config dir as the run that started it. The prompt goes
    /// the same way as for a spawn ([`Self::prompt_via`]).
    fn resume_args(
        &self,
        session_id: &str,
        opts: &SpawnOptions,
    ) -> Result<Vec<String>, ProviderError>;
    /// Args that append `text` to the CLI's system prompt (claude:
    /// `--append-system-prompt`); None when it has no such flag, and the text goes before
    /// the prompt instead (see [`with_question_channel`]).
    fn system_prompt_args(&self, _text: &str) -> Option<Vec<String>> {
        None
    }
    /// Whether the CLI can be told which model to run (a spawn's `model` is refused
    /// otherwise); it then gets it by its own flag in [`Self::spawn_args`] and
    /// [`Self::resume_args`].
    fn takes_model(&self) -> bool {
        true
    }
    /// Whether the CLI reads the prompt from stdin or needs it as an argument.
    fn prompt_via(&self) -> PromptVia {
        PromptVia::Stdin
    }
    /// The permission flags of a run in `mode`. `execute` lets the agent edit and
    /// run anything in its worktree; `plan`, `review` and `discuss` use the CLI's own
    /// read-only switch where it has one (and the prompt preamble in every case, see
    /// [`prompt_for_mode`]). Already part of [`Self::spawn_args`] / [`Self::resume_args`].
    fn mode_args(&self, mode: AgentMode) -> Vec<String>;
    /// Env vars to set for the process (the sandbox adds `IS_SANDBOX=1`, which claude
    /// needs to accept `--dangerously-skip-permissions` as root).
    fn env(&self) -> Vec<(String, String)>;
    /// Env var that relocates the CLI's config/credential dir (claude:
    /// `CLAUDE_CONFIG_DIR`), so each account gets its own; `None` when the CLI has none.
    fn config_dir_env(&self) -> Option<&str>;
    /// Env var the CLI reads an API key from (claude: `ANTHROPIC_API_KEY`); an API-key
    /// account's key is given to the process there, never on its command line.
    fn api_key_env(&self) -> Option<&str> {
        None
    }
    /// Where, relative to the config dir, the CLI keeps its OAuth credentials file (claude:
    /// `.credentials.json`); None when it has no such file we can write.
    fn credentials_file(&self) -> Option<&str> {
        None
    }
    fn parser(&self) -> Box<dyn StreamParser>;
}

/// The flags of a headless run that most CLIs share: `base`, then the mode's permission
/// flags, then `model_flag MODEL` when a model is asked for.
fn run_flags(
    provider: &dyn Provider,
    base: &[&str],
    model_flag: &str,
    opts: &SpawnOptions,
) -> Vec<String> {
    let mut args: Vec<String> = base.iter().map(|a| a.to_string()).collect();
    args.extend(provider.mode_args(opts.mode));
    if let Some(model) = &opts.model {
        args.extend([model_flag.to_string(), model.clone()]);
    }
    args
}

/// `args` followed by `flag SESSION`: how most CLIs continue a session.
fn with_session(mut args: Vec<String>, flag: &str, session_id: &str) -> Vec<String> {
    args.extend([flag.to_string(), session_id.to_string()]);
    args
}

/// What varies between two runs of the same provider.
#[derive(Debug, Clone, Default)]
pub struct SpawnOptions {
    pub model: Option<String>,
    pub mode: AgentMode,
}

/// The prompt put where `via` says: in place of a [`PROMPT_PLACEHOLDER`] argument, else
/// appended last for [`PromptVia::Arg`]; args unchanged for [`PromptVia::Stdin`].
pub fn place_prompt(mut args: Vec<String>, via: PromptVia, prompt: &str) -> Vec<String> {
    if via == PromptVia::Stdin {
        return args;
    }
    match args.iter().position(|a| a == PROMPT_PLACEHOLDER) {
        Some(at) => args[at] = prompt.to_string(),
        None => args.push(prompt.to_string()),
    }
    args
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProviderError {
    #[error("unknown provider '{name}' (known providers: {known})")]
    Unknown { name: String, known: String },
    #[error("provider '{provider}' does not support resume")]
    ResumeUnsupported { provider: String },
    #[error("provider '{provider}': {reason}")]
    Misconfigured { provider: String, reason: String },
}

#[cfg(test)]
mod tests;
