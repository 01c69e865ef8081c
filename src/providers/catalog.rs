//! The providers a fleet can run, as a value: the built-in CLIs (one table, [`BUILT_IN`])
//! and the `kind = "command"` CLIs its configuration declares. The front door builds it
//! once from the settings ([`Providers::from_settings`]) and every part that resolves a
//! provider by name asks it, so two fleets in one process (tests) see only their own.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

use super::command::{CommandProvider, CommandSpec};
use super::{Provider, ProviderError, amp, auggie, claude, codex, cursor, gemini, opencode};

/// `providers.<name>` in the configuration: options of a built-in CLI (its command, extra
/// arguments and environment, account handling) or, with `kind = "command"`, a CLI described
/// entirely here (see [`super::command`]).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ProviderSettings {
    pub command: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    // The keys below describe a CLI configured entirely here (`kind = "command"`);
    // see `providers::command` for their meaning.
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub spawn_args: Vec<String>,
    #[serde(default)]
    pub resume_args: Vec<String>,
    #[serde(default)]
    pub parser: Option<String>,
    #[serde(default)]
    pub prompt: Option<String>,
    #[serde(default)]
    pub config_dir_env: Option<String>,
    /// Refuse to run without an account (instead of on the CLI's own login).
    #[serde(default)]
    pub require_account: bool,
    /// The env var an API-key account's key goes in (overrides the provider's own).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// OAuth token endpoint for refreshing a credentials file's access token.
    #[serde(default)]
    pub token_url: Option<String>,
    /// OAuth client id sent with a refresh.
    #[serde(default)]
    pub oauth_client_id: Option<String>,
    /// The model agents run when a spawn names none (for a CLI that can choose one).
    #[serde(default)]
    pub model: Option<String>,
    /// Most agents of this provider starting or running at once, fleet-wide; further
    /// spawns wait, in order.
    #[serde(default)]
    pub max_concurrent: Option<u32>,
}

/// A CLI the fleet knows without configuration.
pub struct BuiltIn {
    pub name: &'static str,
    /// The executable run when `providers.<name>.command` is not set.
    pub command: &'static str,
    /// Where its CLI comes from (`agentfleet doctor` says it when the command is missing).
    pub install: &'static str,
    make: fn() -> Box<dyn Provider>,
}

/// Every built-in provider, in the order they are listed to users.
pub const BUILT_IN: &[BuiltIn] = &[
    BuiltIn {
        name: "claude",
        command: "claude",
        install: "npm install -g @anthropic-ai/claude-code",
        make: || Box::new(claude::Claude),
    },
    BuiltIn {
        name: "codex",
        command: "codex",
        install: "npm install -g @openai/codex",
        make: || Box::new(codex::Codex),
    },
    BuiltIn {
        name: "gemini",
        command: "gemini",
        install: "npm install -g @google/gemini-cli",
        make: || Box::new(gemini::Gemini),
    },
    BuiltIn {
        name: "cursor",
        command: "cursor-agent",
        install: "install cursor-agent (see cursor.com/cli)",
        make: || Box::new(cursor::Cursor),
    },
    BuiltIn {
        name: "auggie",
        command: "auggie",
        install: "npm install -g @augmentcode/auggie",
        make: || Box::new(auggie::Auggie),
    },
    BuiltIn {
        name: "amp",
        command: "amp",
        install: "npm install -g @ampcode/cli",
        make: || Box::new(amp::Amp),
    },
    BuiltIn {
        name: "opencode",
        command: "opencode",
        install: "npm install -g opencode-ai",
        make: || Box::new(opencode::Opencode),
    },
];

/// The executable a provider runs when its `command` is not configured: the built-in's
/// (`cursor-agent` for cursor), else the provider's name.
pub fn default_command(name: &str) -> &str {
    BUILT_IN
        .iter()
        .find(|b| b.name == name)
        .map_or(name, |b| b.command)
}

/// The built-in provider of that name.
pub fn built_in(name: &str) -> Option<Box<dyn Provider>> {
    BUILT_IN.iter().find(|b| b.name == name).map(|b| (b.make)())
}

/// The providers of one fleet: the built-in ones and those its configuration declares.
#[derive(Debug, Clone, Default)]
pub struct Providers {
    commands: BTreeMap<String, Arc<CommandSpec>>,
}

impl Providers {
    /// Validates every `kind = "command"` provider in `providers`; `Err((key, reason))`
    /// names the bad key.
    pub fn from_settings(
        providers: &BTreeMap<String, ProviderSettings>,
    ) -> Result<Self, (String, String)> {
        let mut commands = BTreeMap::new();
        for (name, settings) in providers {
            match settings.kind.as_deref() {
                None => {}
                Some("command") => {
                    let spec = CommandSpec::from_settings(name, settings)?;
                    commands.insert(name.clone(), Arc::new(spec));
                }
                Some(other) => {
                    return Err((
                        format!("providers.{name}.kind"),
                        format!("unknown kind '{other}' (the only kind is \"command\")"),
                    ));
                }
            }
        }
        Ok(Self { commands })
    }

    /// The provider of that name: a built-in one, or a configured command provider.
    pub fn get(&self, name: &str) -> Result<Box<dyn Provider>, ProviderError> {
        if let Some(provider) = built_in(name) {
            return Ok(provider);
        }
        match self.commands.get(name) {
            Some(spec) => Ok(Box::new(CommandProvider::from_spec(spec.clone()))),
            None => Err(ProviderError::Unknown {
                name: name.to_string(),
                known: self.names().join(", "),
            }),
        }
    }

    /// Every provider's name: the built-in ones first, then the configured ones.
    pub fn names(&self) -> Vec<String> {
        BUILT_IN
            .iter()
            .map(|b| b.name.to_string())
            .chain(self.commands.keys().cloned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_provider_error_lists_known_providers() {
        let err = Providers::default().get("nope").err().unwrap().to_string();
        assert_eq!(
            err,
            "unknown provider 'nope' (known providers: \
             claude, codex, gemini, cursor, auggie, amp, opencode)"
        );
    }

    #[test]
    fn cursor_runs_cursor_agent_and_the_others_their_own_name() {
        assert_eq!(default_command("cursor"), "cursor-agent");
        assert_eq!(default_command("claude"), "claude");
        assert_eq!(default_command("mycli"), "mycli");
    }

    #[test]
    fn every_built_in_provider_resolves_with_its_own_name() {
        for b in BUILT_IN {
            assert_eq!(Providers::default().get(b.name).unwrap().name(), b.name);
        }
    }
}
