//! What a mode means to the CLI and to the prompt. A mode (`execute`, `plan`, `review`,
//! `discuss`, as in the seed) is said twice: as the CLI's own permission flags, which each
//! provider gives in `mode_args`, and as a short preamble before the prompt, which is the
//! same for every CLI and lives here. Also how answers to an agent's questions become the
//! prompt of its resume, since every provider resumes with a prompt.

use std::collections::BTreeMap;

use crate::domain::AgentMode;

/// The text put before the prompt in `mode`; `None` for `execute` (the prompt is the task).
pub fn mode_preamble(mode: AgentMode) -> Option<&'static str> {
    match mode {
        AgentMode::Plan => Some(
            "You are in PLAN mode. Do not change any file. Study the code and write a \
             step-by-step plan for the task below. If something must be decided first, \
             ask it as a question.",
        ),
        AgentMode::Review => Some(
            "You are in REVIEW mode. Do not change any file. Review the work described \
             below and report problems, risks and suggested changes, most important first.",
        ),
        AgentMode::Discuss => Some(
            "You are in DISCUSS mode. Do not change any file. Discuss the topic below: \
             answer, weigh the options, and ask questions where the intent is unclear.",
        ),
        AgentMode::Execute => None,
    }
}

/// The prompt the CLI gets for `prompt` in `mode`.
pub fn prompt_for_mode(mode: AgentMode, prompt: &str) -> String {
    match mode_preamble(mode) {
        Some(preamble) => format!("{preamble}\n\n{prompt}"),
        None => prompt.to_string(),
    }
}

/// Answers to an agent's questions as the prompt of its resume, one block per question id.
pub fn format_answers(answers: &BTreeMap<String, String>) -> String {
    let mut prompt = String::from("Here are the answers to your questions:\n");
    for (id, answer) in answers {
        prompt.push_str(&format!("\n[{id}]: {answer}\n"));
    }
    prompt.push_str("\nContinue the task with these answers.");
    prompt
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execute_keeps_the_prompt_and_other_modes_get_a_preamble() {
        assert_eq!(prompt_for_mode(AgentMode::Execute, "fix it"), "fix it");
        for mode in &AgentMode::ALL[1..] {
            let p = prompt_for_mode(*mode, "fix it");
            assert!(
                p.ends_with("\n\nfix it") && p.contains("Do not change any file"),
                "{p}"
            );
        }
    }

    #[test]
    fn answers_are_listed_by_question_id() {
        let answers = BTreeMap::from([
            ("q1".to_string(), "Postgres".to_string()),
            ("2".to_string(), "8080".to_string()),
        ]);
        let p = format_answers(&answers);
        assert!(p.contains("[2]: 8080\n\n[q1]: Postgres"), "{p}");
    }
}
