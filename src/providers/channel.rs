//! The question channel, as the model is told about it. An agent runs unattended, so the
//! only way it can ask something is the signal file (see `signal.rs`); a real model knows
//! nothing of it unless told. Every run — spawn, resume, a failover's continuation — tells
//! it: in the system prompt where the CLI takes an addition to it
//! ([`Provider::system_prompt_args`]), otherwise before the prompt. Never by writing files
//! the repository owns (its `CLAUDE.md` / `AGENTS.md` stay as they are).

use super::Provider;

/// What every agent is told about asking questions and saying how it ended.
pub const QUESTION_CHANNEL: &str = "You are running unattended: nobody reads this \
conversation while you work. If you cannot go on without an answer from the person who gave \
you this task, write the file .agentfleet/output/signal.json in your working directory \
(create the folder if it is missing) containing \
{\"status\": \"questions\", \"questions\": [{\"id\": \"1\", \"question\": \"your question\"}]} \
and end your turn: the session continues later with the answers. When the task is done you \
may write {\"status\": \"done\", \"result\": \"a short summary\"} there, or \
{\"status\": \"error\", \"error\": \"why\"} if it cannot be done.";

/// The run's arguments and prompt with the question channel described: appended to the
/// system prompt where the provider can take it, else put before the prompt.
pub fn with_question_channel(
    provider: &dyn Provider,
    mut args: Vec<String>,
    prompt: &str,
) -> (Vec<String>, String) {
    match provider.system_prompt_args(QUESTION_CHANNEL) {
        Some(extra) => {
            args.extend(extra);
            (args, prompt.to_string())
        }
        None => (args, format!("{QUESTION_CHANNEL}\n\n{prompt}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::{SpawnOptions, built_in};

    #[test]
    fn claude_is_told_in_its_system_prompt_and_the_others_in_the_prompt() {
        let claude = built_in("claude").unwrap();
        let (args, prompt) = with_question_channel(
            claude.as_ref(),
            claude.spawn_args(&SpawnOptions::default()),
            "fix it",
        );
        assert_eq!(prompt, "fix it");
        let at = args
            .iter()
            .position(|a| a == "--append-system-prompt")
            .unwrap();
        assert!(args[at + 1].contains(".agentfleet/output/signal.json"));
        for name in ["codex", "gemini", "opencode", "auggie", "amp", "cursor"] {
            let p = built_in(name).unwrap();
            let spawn = p.spawn_args(&SpawnOptions::default());
            let (args, prompt) = with_question_channel(p.as_ref(), spawn.clone(), "fix it");
            assert_eq!(args, spawn, "{name}");
            assert!(prompt.starts_with(QUESTION_CHANNEL) && prompt.ends_with("\n\nfix it"));
        }
    }

    #[test]
    fn the_format_it_describes_is_the_one_the_signal_file_reads() {
        let example =
            r#"{"status": "questions", "questions": [{"id": "1", "question": "your question"}]}"#;
        assert!(QUESTION_CHANNEL.contains(example));
        let signal = crate::providers::parse_signal(example.as_bytes()).unwrap();
        assert_eq!(signal.questions.len(), 1);
        for other in [
            r#"{"status": "done", "result": "a short summary"}"#,
            r#"{"status": "error", "error": "why"}"#,
        ] {
            assert!(QUESTION_CHANNEL.contains(other));
            crate::providers::parse_signal(other.as_bytes()).unwrap();
        }
    }
}
