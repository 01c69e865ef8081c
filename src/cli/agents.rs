//! The agent commands that wait on an agent: `spawn` (with `--wait`), `resume` (answers
//! and `--wait`), and following an agent's events until it ends.

use anyhow::{Context, bail};
use futures::StreamExt;

use super::ops::Ops;
use super::{SpawnArgs, output};
use crate::domain::{InputFile, SpawnRequest};
use crate::events;
use crate::fleet::Fleet;

/// Answers from `ID=TEXT` flags or a JSON file.
pub(super) fn parse_answers(
    flags: &[String],
    file: Option<&std::path::Path>,
) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    if let Some(file) = file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read answers file {}", file.display()))?;
        return serde_json::from_str(&text).with_context(|| {
            format!(
                "answers file {} is not a JSON object of strings",
                file.display()
            )
        });
    }
    flags
        .iter()
        .map(|a| match a.split_once('=') {
            Some((id, text)) if !id.trim().is_empty() => {
                Ok((id.trim().to_string(), text.to_string()))
            }
            _ => bail!("--answer '{a}' is not ID=TEXT"),
        })
        .collect()
}

pub(super) async fn spawn(ops: &Ops, args: SpawnArgs) -> anyhow::Result<i32> {
    let prompt = match (&args.prompt, &args.prompt_file) {
        (Some(p), None) => p.clone(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .with_context(|| format!("cannot read prompt file {}", f.display()))?,
        (None, None) => bail!("give a prompt (PROMPT or --prompt-file FILE)"),
        (Some(_), Some(_)) => bail!("give either PROMPT or --prompt-file, not both"),
    };
    let mut inputs = Vec::new();
    for path in &args.inputs {
        let content = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read input file {}", path.display()))?;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| format!("input file {} has no usable name", path.display()))?;
        inputs.push(InputFile {
            name: name.to_string(),
            content,
        });
    }
    let agent = ops
        .spawn(SpawnRequest {
            provider: args.provider,
            project: args.project,
            prompt,
            name: args.name,
            mode: args.mode,
            task_id: args.task_id,
            idempotency_key: args.idempotency_key,
            inputs,
            retries: args.retries,
            model: args.model,
            budget: Some(crate::domain::Budget {
                max_tokens: args.max_tokens,
                max_cost_usd: args.max_cost_usd,
                max_turns: args.max_turns,
            })
            .filter(|b| !b.is_empty()),
        })
        .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&agent)?);
    } else {
        println!("{} {}", agent.id, agent.name);
    }
    if !args.wait {
        return Ok(0);
    }
    wait_for_end(ops, agent.id, 0).await
}

/// Follows the agent's events after `after` until it ends; the exit code says how.
pub(super) async fn wait_for_end(
    ops: &Ops,
    agent_id: uuid::Uuid,
    after: i64,
) -> anyhow::Result<i32> {
    ops.follow(agent_id, false, after).await?;
    let agent = ops.agent_by_id(agent_id).await?;
    eprintln!("agent {} ended: {}", agent.name, agent.status);
    if let Some(error) = &agent.error {
        eprintln!("error: {error}");
    }
    if agent.status == crate::domain::AgentStatus::WaitingForInput {
        for q in &agent.pending_questions {
            eprintln!("question [{}]: {}", q.id, q.question);
        }
        let answers: Vec<String> = agent
            .pending_questions
            .iter()
            .map(|q| format!("--answer {}=...", shell_word(&q.id)))
            .collect();
        eprintln!(
            "answer with: agentfleet resume {} {} --wait",
            agent.name,
            answers.join(" ")
        );
    }
    Ok(if agent.status.is_success() { 0 } else { 1 })
}

/// Waits until a worker has taken up a resume (the agent leaves `waiting_for_input`).
pub(super) async fn wait_until_resumed(ops: &Ops, agent_id: uuid::Uuid) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let agent = ops.agent_by_id(agent_id).await?;
        if agent.status != crate::domain::AgentStatus::WaitingForInput {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "no worker has taken up the resume of {} yet; it stays recorded",
                agent.name
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

pub(super) async fn follow_events(
    fleet: &Fleet,
    agent_id: uuid::Uuid,
    json: bool,
    after: i64,
) -> anyhow::Result<()> {
    let stream = events::follow(fleet.store.clone(), fleet.events.clone(), agent_id, after);
    let mut stream = std::pin::pin!(stream);
    while let Some(item) = stream.next().await {
        match item {
            Ok(event) => output::event(&event, json),
            Err(e) => bail!("following agent {agent_id}: {e}"),
        }
    }
    Ok(())
}

/// `word` as one shell word: as it is when it holds nothing a shell would read, else in
/// single quotes.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.,:/@%+".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}
