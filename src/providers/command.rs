//! The generic provider: a CLI described entirely in configuration, so users can add one
//! without code. `providers.<name>` with `kind = "command"` gives the executable
//! (`command`), the arguments of a run (`spawn_args`) and of a resume (`resume_args`,
//! empty = the CLI cannot resume), in which `{session_id}` and `{model}` are replaced
//! (also inside a longer argument) and an argument that is exactly `{prompt}` receives the
//! prompt; which of the known stream formats its output is in (`parser`); how the prompt
//! is passed (`prompt` = "stdin" | "arg"); and the env var that moves its config dir.
//! The fleet's [`super::Providers`] holds the declared ones and resolves them by name like
//! the built-in ones.

use std::sync::Arc;

use super::json::parse_line;
use super::{
    AgentEvent, PROMPT_PLACEHOLDER, PromptVia, Provider, ProviderError, ProviderSettings,
    SpawnOptions, StreamParser, auggie, claude, codex, cursor, gemini, opencode,
};
use crate::domain::AgentMode;

/// The stream formats a configured CLI's output can be read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParserKind {
    ClaudeStreamJson,
    CodexJson,
    GeminiStreamJson,
    OpencodeJson,
    CursorStreamJson,
    AuggieJson,
    /// Plain text: every non-blank line is assistant text.
    Lines,
}

impl ParserKind {
    pub const NAMES: &[&str] = &[
        "claude-stream-json",
        "amp-stream-json",
        "codex-json",
        "gemini-stream-json",
        "opencode-json",
        "cursor-stream-json",
        "auggie-json",
        "lines",
    ];

    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            // Amp writes claude's format.
            "claude-stream-json" | "amp-stream-json" => Self::ClaudeStreamJson,
            "codex-json" => Self::CodexJson,
            "gemini-stream-json" => Self::GeminiStreamJson,
            "opencode-json" => Self::OpencodeJson,
            "cursor-stream-json" => Self::CursorStreamJson,
            "auggie-json" => Self::AuggieJson,
            "lines" => Self::Lines,
            _ => return None,
        })
    }

    pub fn parser(self) -> Box<dyn StreamParser> {
        match self {
            Self::ClaudeStreamJson => claude::Claude.parser(),
            Self::CodexJson => codex::Codex.parser(),
            Self::GeminiStreamJson => gemini::Gemini.parser(),
            Self::OpencodeJson => opencode::Opencode.parser(),
            Self::CursorStreamJson => cursor::Cursor.parser(),
            Self::AuggieJson => auggie::Auggie.parser(),
            Self::Lines => Box::new(LinesParser),
        }
    }
}

/// A configured CLI, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandSpec {
    pub name: String,
    pub spawn_args: Vec<String>,
    /// `None`: the CLI cannot resume.
    pub resume_args: Option<Vec<String>>,
    pub parser: ParserKind,
    pub prompt_via: PromptVia,
    pub config_dir_env: Option<String>,
}

impl CommandSpec {
    /// The spec for `providers.<name>`, or why it is not a valid one (the key is named).
    pub fn from_settings(name: &str, s: &ProviderSettings) -> Result<Self, (String, String)> {
        let key = |k: &str| format!("providers.{name}.{k}");
        if super::built_in(name).is_some() {
            return Err((key("kind"), format!("'{name}' is a built-in provider")));
        }
        if s.command.as_deref().is_none_or(|c| c.trim().is_empty()) {
            return Err((
                key("command"),
                "a command provider needs an executable".into(),
            ));
        }
        let parser_name = s.parser.as_deref().unwrap_or("lines");
        let parser = ParserKind::parse(parser_name).ok_or_else(|| {
            let known = ParserKind::NAMES.join(", ");
            (
                key("parser"),
                format!("unknown parser '{parser_name}' (known: {known})"),
            )
        })?;
        let has_placeholder = s.spawn_args.iter().any(|a| a == PROMPT_PLACEHOLDER);
        let prompt_via = match s.prompt.as_deref() {
            None if has_placeholder => PromptVia::Arg,
            None | Some("stdin") => PromptVia::Stdin,
            Some("arg") => PromptVia::Arg,
            Some(other) => {
                return Err((
                    key("prompt"),
                    format!("must be \"stdin\" or \"arg\", not '{other}'"),
                ));
            }
        };
        if !s.resume_args.is_empty() && !s.resume_args.iter().any(|a| a.contains("{session_id}")) {
            return Err((key("resume_args"), "must contain {session_id}".into()));
        }
        Ok(Self {
            name: name.to_string(),
            spawn_args: s.spawn_args.clone(),
            resume_args: (!s.resume_args.is_empty()).then(|| s.resume_args.clone()),
            parser,
            prompt_via,
            config_dir_env: s.config_dir_env.clone().filter(|e| !e.is_empty()),
        })
    }
}

/// A [`CommandSpec`] as a [`Provider`].
#[derive(Debug, Clone)]
pub struct CommandProvider {
    spec: Arc<CommandSpec>,
}

impl CommandProvider {
    pub fn new(spec: CommandSpec) -> Self {
        Self::from_spec(Arc::new(spec))
    }

    pub(super) fn from_spec(spec: Arc<CommandSpec>) -> Self {
        Self { spec }
    }

    fn fill(&self, template: &[String], session_id: &str, opts: &SpawnOptions) -> Vec<String> {
        let model = opts.model.as_deref().unwrap_or("");
        template
            .iter()
            .map(|a| {
                a.replace("{session_id}", session_id)
                    .replace("{model}", model)
            })
            .collect()
    }
}

impl Provider for CommandProvider {
    fn name(&self) -> &str {
        &self.spec.name
    }

    /// Only where its arguments have a `{model}` placeholder.
    fn takes_model(&self) -> bool {
        self.spec.spawn_args.iter().any(|a| a.contains("{model}"))
    }

    fn spawn_args(&self, opts: &SpawnOptions) -> Vec<String> {
        self.fill(&self.spec.spawn_args, "", opts)
    }

    fn resume_args(
        &self,
        session_id: &str,
        opts: &SpawnOptions,
    ) -> Result<Vec<String>, ProviderError> {
        match &self.spec.resume_args {
            Some(template) => Ok(self.fill(template, session_id, opts)),
            None => Err(ProviderError::ResumeUnsupported {
                provider: self.spec.name.clone(),
            }),
        }
    }

    fn prompt_via(&self) -> PromptVia {
        self.spec.prompt_via
    }

    /// A configured CLI's modes are said by the prompt preamble only.
    fn mode_args(&self, _mode: AgentMode) -> Vec<String> {
        Vec::new()
    }

    fn env(&self) -> Vec<(String, String)> {
        // `providers.<name>.env` is added by the worker, as for every provider.
        Vec::new()
    }

    fn config_dir_env(&self) -> Option<&str> {
        self.spec.config_dir_env.as_deref()
    }

    fn parser(&self) -> Box<dyn StreamParser> {
        self.spec.parser.parser()
    }
}

/// Plain-text output: each non-blank line is something the agent said.
#[derive(Debug, Default)]
pub struct LinesParser;

impl StreamParser for LinesParser {
    fn parse_line(&mut self, line: &str) -> Vec<AgentEvent> {
        if parse_line(line).is_err_and(|e| e.is_empty()) {
            return Vec::new();
        }
        vec![AgentEvent::AssistantText {
            text: line.to_string(),
        }]
    }

    /// Plain text has no result line: the process's exit code is the run's outcome.
    fn reports_result(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::providers::{Providers, place_prompt};

    fn settings(toml: &str) -> BTreeMap<String, ProviderSettings> {
        #[derive(serde::Deserialize)]
        struct Doc {
            providers: BTreeMap<String, ProviderSettings>,
        }
        let doc: Doc = ::config::Config::builder()
            .add_source(::config::File::from_str(toml, ::config::FileFormat::Toml))
            .build()
            .unwrap()
            .try_deserialize()
            .unwrap();
        doc.providers
    }

    #[test]
    fn configured_command_provider_resolves_by_name_and_fills_its_templates() {
        let providers = settings(
            r#"
            [providers.mycli]
            kind = "command"
            command = "/opt/mycli"
            spawn_args = ["run", "--json", "--model={model}", "{prompt}"]
            resume_args = ["run", "--json", "--session", "{session_id}", "{prompt}"]
            parser = "codex-json"
            config_dir_env = "MYCLI_HOME"
            "#,
        );
        let p = Providers::from_settings(&providers)
            .unwrap()
            .get("mycli")
            .unwrap();
        assert_eq!(p.name(), "mycli");
        assert_eq!(p.prompt_via(), PromptVia::Arg);
        assert_eq!(p.config_dir_env(), Some("MYCLI_HOME"));
        let opts = SpawnOptions {
            model: Some("m1".into()),
            mode: AgentMode::Execute,
        };
        let args = place_prompt(p.spawn_args(&opts), p.prompt_via(), "hi there");
        assert_eq!(args, ["run", "--json", "--model=m1", "hi there"]);
        let args = place_prompt(p.resume_args("s-9", &opts).unwrap(), p.prompt_via(), "yes");
        assert_eq!(args, ["run", "--json", "--session", "s-9", "yes"]);
        let line = r#"{"type":"thread.started","thread_id":"t"}"#;
        assert_eq!(p.parser().parse_line(line).len(), 1);
    }

    #[test]
    fn a_command_provider_without_resume_args_refuses_resume() {
        let providers = settings(
            "[providers.plain]\nkind = \"command\"\ncommand = \"echo\"\nspawn_args = [\"{prompt}\"]\n",
        );
        let p = Providers::from_settings(&providers)
            .unwrap()
            .get("plain")
            .unwrap();
        let err = p.resume_args("s", &SpawnOptions::default()).unwrap_err();
        assert_eq!(err.to_string(), "provider 'plain' does not support resume");
        let mut parser = p.parser();
        assert_eq!(parser.parse_line("  "), []);
        assert_eq!(
            parser.parse_line("hello"),
            [AgentEvent::AssistantText {
                text: "hello".into()
            }]
        );
    }

    #[test]
    fn bad_command_providers_name_the_key() {
        let cases = [
            (
                "[providers.x]\nkind = \"shell\"\ncommand = \"a\"\n",
                "providers.x.kind",
            ),
            ("[providers.x]\nkind = \"command\"\n", "providers.x.command"),
            (
                "[providers.x]\nkind = \"command\"\ncommand = \"a\"\nparser = \"xml\"\n",
                "providers.x.parser",
            ),
            (
                "[providers.x]\nkind = \"command\"\ncommand = \"a\"\nprompt = \"file\"\n",
                "providers.x.prompt",
            ),
            (
                "[providers.x]\nkind = \"command\"\ncommand = \"a\"\nresume_args = [\"-r\"]\n",
                "providers.x.resume_args",
            ),
            (
                "[providers.codex]\nkind = \"command\"\ncommand = \"a\"\n",
                "providers.codex.kind",
            ),
        ];
        for (toml, key) in cases {
            let (got, reason) = Providers::from_settings(&settings(toml)).unwrap_err();
            assert_eq!(got, key, "{reason}");
        }
    }
}
