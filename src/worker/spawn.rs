//! The spawn job, from delivery to the agent's end: decode, claim the request in the store
//! (a duplicate delivery stops here), prepare the worktree, start the provider process,
//! supervise it, then commit and push the agent's branch and record the outcome.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use uuid::Uuid;

use super::Runtime;
use super::event_log::{EventLog, LogError};
use super::supervisor::Supervisor;
use crate::domain::{Agent, AgentOutcome, AgentStatus, SpawnRequest};
use crate::events::STATUS_EVENT;
use crate::fleet::validate_input_name;
use crate::process::{self, Launch};
use crate::providers::{self, SpawnOptions};
use crate::queue::SpawnJob;
use crate::store::ProcessRecord;

/// Runs one delivered job to its end. Never fails: every outcome is recorded in the store,
/// so apalis has nothing to retry.
pub async fn handle(rt: Arc<Runtime>, job: serde_json::Value) {
    let job: SpawnJob = match serde_json::from_value(job.clone()) {
        Ok(job) => job,
        Err(e) => {
            let reason = format!("job payload cannot be decoded: {e}");
            tracing::error!(%reason, "dropping malformed job");
            if let Err(e) = rt
                .fleet
                .store
                .record_job_failure(
                    rt.fleet.queue.queue_name(),
                    None,
                    &job.to_string(),
                    &reason,
                    &rt.owner.worker_id,
                )
                .await
            {
                tracing::error!(error = %e, "cannot record the malformed job");
            }
            return;
        }
    };
    let span = tracing::info_span!("spawn_job", request_id = %job.request_id, worker_id = %rt.owner.worker_id);
    let _ = tracing::Instrument::instrument(run(rt, job.request_id), span).await;
}

async fn run(rt: Arc<Runtime>, request_id: Uuid) {
    let store = &rt.fleet.store;
    let claimed = match store
        .claim_request(request_id, &rt.owner, &rt.node_id)
        .await
    {
        Ok(Some(claimed)) => claimed,
        Ok(None) => {
            tracing::info!("request already claimed or gone; duplicate delivery ignored");
            return;
        }
        Err(e) => {
            // Left pending in the store: the request is dispatched again later.
            tracing::warn!(error = %e, "cannot claim request");
            return;
        }
    };
    let agent = claimed.agent;
    let request: SpawnRequest = match serde_json::from_value(claimed.payload) {
        Ok(r) => r,
        Err(e) => {
            let reason = format!("request payload cannot be decoded: {e}");
            if let Err(e) = store.fail_request(request_id, &reason).await {
                tracing::error!(error = %e, "cannot fail request");
            }
            return;
        }
    };
    let mut log = match EventLog::open(
        agent.id,
        rt.owner.clone(),
        store.clone(),
        rt.fleet.events.clone(),
    )
    .await
    {
        Ok(log) => log,
        Err(e) => {
            tracing::error!(error = %e, "cannot open the event log");
            let _ = store.fail_request(request_id, &e.to_string()).await;
            return;
        }
    };
    tracing::info!(agent_id = %agent.id, agent = %agent.name, provider = %agent.provider, "agent claimed");
    let outcome = match run_agent(&rt, &agent, &request, &mut log).await {
        Ok(outcome) => outcome,
        Err(RunError::Fenced) => {
            tracing::warn!(agent_id = %agent.id, "lost ownership of the agent; leaving it");
            return;
        }
        Err(RunError::Failed(reason)) => AgentOutcome {
            status: AgentStatus::Failed,
            result: None,
            questions: Vec::new(),
            error: Some(reason),
            exit_code: None,
            session_id: None,
        },
    };
    finish(&rt, &agent, outcome, &mut log).await;
}

enum RunError {
    Fenced,
    Failed(String),
}

impl From<LogError> for RunError {
    fn from(e: LogError) -> Self {
        match e {
            LogError::Fenced(_) => Self::Fenced,
            LogError::Store(e) => Self::Failed(e.to_string()),
        }
    }
}

async fn run_agent(
    rt: &Arc<Runtime>,
    agent: &Agent,
    request: &SpawnRequest,
    log: &mut EventLog,
) -> Result<AgentOutcome, RunError> {
    let store = &rt.fleet.store;
    let provider =
        providers::provider(&agent.provider).map_err(|e| RunError::Failed(e.to_string()))?;
    let project = store
        .project(&agent.project)
        .await
        .map_err(|e| RunError::Failed(e.to_string()))?;
    let workdir = rt
        .prepare_worktree(&project, &agent.name, &agent.branch)
        .await
        .map_err(RunError::Failed)?;
    let run_dir = rt.agent_dir(&agent.name).join("run");
    write_files(&workdir, &run_dir, request)
        .await
        .map_err(|e| RunError::Failed(format!("cannot write the agent's files: {e}")))?;

    let settings = rt.fleet.settings.provider(provider.name());
    let mut args = provider.spawn_args(&SpawnOptions::default());
    args.extend(settings.args.iter().cloned());
    // Most CLIs read the prompt from stdin (below); the others take it as an argument.
    let args = providers::place_prompt(args, provider.prompt_via(), &request.prompt);
    let mut env = provider.env();
    env.extend(settings.env.clone());
    let launch = Launch {
        command: settings
            .command
            .unwrap_or_else(|| provider.name().to_string()),
        args,
        env,
        cwd: workdir.clone(),
        stdin: run_dir.join("prompt.txt"),
        stdout: run_dir.join("output.jsonl"),
        stderr: run_dir.join("stderr.log"),
    };
    let started = process::start(&launch).map_err(|e| RunError::Failed(e.to_string()))?;
    let record = ProcessRecord {
        pid: started.pid,
        pid_start_time: started.start_time,
        output_path: launch.stdout.display().to_string(),
        workdir: workdir.display().to_string(),
    };
    if !store
        .mark_running(agent.id, &rt.owner, &record)
        .await
        .map_err(|e| RunError::Failed(e.to_string()))?
    {
        let mut child = started.child;
        process::terminate(&mut child, started.pid, std::time::Duration::from_secs(1)).await;
        return Err(RunError::Fenced);
    }
    tracing::info!(agent_id = %agent.id, pid = started.pid, "provider process started");
    log.push(
        STATUS_EVENT,
        serde_json::json!({"kind": STATUS_EVENT, "status": AgentStatus::Running, "pid": started.pid}),
    );
    log.flush().await?;
    let supervisor = Supervisor {
        agent_id: agent.id,
        owner: &rt.owner,
        store,
        log,
        parser: provider.parser(),
        output: launch.stdout.clone(),
        stderr: launch.stderr.clone(),
        workdir: workdir.clone(),
        flush_every: rt.fleet.settings.worker.event_flush_interval,
        buffer_lines: rt.fleet.settings.worker.output_buffer_lines,
        shutdown: rt.hard_stop.clone(),
        lease_lost: rt.lease_lost.clone(),
    };
    let mut outcome = supervisor.run(started).await?;
    if let Err(e) = rt
        .publish_branch(&project, &agent.name, &agent.branch, &workdir)
        .await
    {
        tracing::warn!(agent_id = %agent.id, error = %e, "branch not pushed");
        let note = format!("branch {} not pushed: {e}", agent.branch);
        outcome.error = Some(match outcome.error.take() {
            Some(err) => format!("{err}; {note}"),
            None => note,
        });
    }
    Ok(outcome)
}

/// Input files under `.agentfleet/input/`, the signal folder, and the prompt (fed on
/// stdin: argv is size-limited and visible to every user of the node).
async fn write_files(
    workdir: &Path,
    run_dir: &Path,
    request: &SpawnRequest,
) -> std::io::Result<()> {
    let input_dir = workdir.join(".agentfleet/input");
    tokio::fs::create_dir_all(&input_dir).await?;
    tokio::fs::create_dir_all(workdir.join(".agentfleet/output")).await?;
    for input in &request.inputs {
        // Validated at enqueue; checked again because the payload crossed a queue.
        if validate_input_name(&input.name).is_err() {
            return Err(std::io::Error::other(format!(
                "input file name '{}' is not allowed",
                input.name
            )));
        }
        let path: PathBuf = input_dir.join(&input.name);
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        tokio::fs::write(&path, &input.content).await?;
    }
    tokio::fs::create_dir_all(run_dir).await?;
    tokio::fs::write(run_dir.join("prompt.txt"), &request.prompt).await?;
    Ok(())
}

async fn finish(rt: &Arc<Runtime>, agent: &Agent, outcome: AgentOutcome, log: &mut EventLog) {
    let store = &rt.fleet.store;
    // Events parsed so far first, so the log is complete when the status turns final.
    if let Err(LogError::Fenced(_)) = log.flush().await {
        return;
    }
    match store.finish_agent(agent.id, &rt.owner, &outcome).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(agent_id = %agent.id, "final state refused: agent owned elsewhere");
            return;
        }
        Err(e) => {
            tracing::error!(agent_id = %agent.id, error = %e, "cannot record the final state");
            return;
        }
    }
    tracing::info!(agent_id = %agent.id, status = %outcome.status, "agent finished");
    log.push(
        STATUS_EVENT,
        serde_json::json!({
            "kind": STATUS_EVENT,
            "status": outcome.status,
            "exit_code": outcome.exit_code,
            "error": outcome.error,
        }),
    );
    if let Err(e) = log.flush().await {
        tracing::warn!(agent_id = %agent.id, error = %e, "cannot store the final status event");
    }
}
