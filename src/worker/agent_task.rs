//! The life of one agent on this worker after its process started (or after the worker
//! adopted it): a tracked task that supervises it, then commits and pushes its branch and
//! records its outcome. It holds the agent's slot until it ends.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use super::event_log::{EventLog, LogError, stored_run_usage};
use super::failover::{self, Failover};
use super::launch::{RunFiles, Started};
use super::runtime::Runtime;
use super::supervisor::{Controls, Limits, Supervised, Supervisor};
use super::usage_meter::UsageMeter;
use crate::domain::{Agent, AgentOutcome, AgentStatus};
use crate::events::STATUS_EVENT;
use crate::process::{self, Running};

/// Supervises the agent in a tracked task until it ends (or the worker lets go).
pub fn spawn(
    rt: Arc<Runtime>,
    agent: Agent,
    started: Started,
    log: EventLog,
    slot: Option<OwnedSemaphorePermit>,
    ran_for: Duration,
) {
    let stop = rt.track_agent(agent.id);
    let task_rt = rt.clone();
    // A child of the job's CONSUMER span (an adopted agent's starts a trace of its own).
    let span = crate::telemetry::agent_run_span(&agent, &rt.owner.worker_id);
    rt.agent_tasks.spawn(
        async move {
            let rt = task_rt;
            let agent_id = agent.id;
            supervise(&rt, agent, started, log, stop, ran_for).await;
            rt.untrack_agent(agent_id);
            drop(slot);
        }
        .instrument(span),
    );
}

async fn supervise(
    rt: &Arc<Runtime>,
    mut agent: Agent,
    mut started: Started,
    mut log: EventLog,
    stop: tokio_util::sync::CancellationToken,
    mut ran_for: Duration,
) {
    let settings = &rt.fleet.settings;
    let parser = match rt.fleet.providers.get(&agent.provider) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(agent_id = %agent.id, error = %e, "no parser for the agent's provider");
            return;
        }
    };
    let began = std::time::Instant::now().checked_sub(ran_for);
    let prices = settings
        .pricing
        .get(&agent.provider)
        .cloned()
        .unwrap_or_default();
    tracing::info!(agent_id = %agent.id, status = %AgentStatus::Running, "agent supervised");
    // One pass per process: a failover to another account starts a new one.
    let mut outcome = loop {
        let stream = parser.parser();
        let mut meter = UsageMeter::new(
            agent.usage,
            stream.reports_cost(),
            prices.clone(),
            agent.model.clone(),
        );
        if agent.output_offset > 0 {
            // Adopted mid-run: what the run stored already is in the agent's totals.
            meter = meter.with_run_stored(stored_run_usage(&rt.fleet.store, agent.id).await);
        }
        let supervisor = Supervisor {
            agent_id: agent.id,
            owner: &rt.owner,
            store: &rt.fleet.store,
            log: &mut log,
            parser: stream,
            meter,
            provider: agent.provider.clone(),
            budget: agent.budget,
            project_budget: started
                .project
                .daily_cost_usd
                .map(|limit| (started.project.id, limit)),
            output: started.files.output.clone(),
            stderr: started.files.stderr.clone(),
            workdir: started.workdir.clone(),
            offset: agent.output_offset.max(0) as u64,
            session_id: agent.session_id.clone(),
            watch: rt.output_watch.clone(),
            controls: Controls {
                stop: stop.clone(),
                detach: rt.detach.clone(),
                shutdown: rt.hard_stop.clone(),
                lease_lost: rt.lease_lost.clone(),
            },
            limits: Limits {
                stop_grace: settings.worker.stop_grace,
                idle_timeout: settings.agent.idle_timeout,
                max_runtime: settings.agent.max_runtime,
                flush_every: settings.worker.event_flush_interval,
                buffer_lines: settings.worker.output_buffer_lines,
                max_event_bytes: settings.agent.max_event_bytes,
                max_output_bytes: settings.agent.max_output_bytes,
            },
            ran_for,
        };
        let pid = started.process.pid;
        let start_time = started.process.start_time;
        match supervisor.run(started.process).await {
            Ok(Supervised::Ended(outcome)) => break outcome,
            Ok(Supervised::AccountTrouble { trouble, outcome }) => {
                let (project, workdir) = (started.project.clone(), started.workdir.clone());
                match failover::after_trouble(
                    rt, &agent, project, workdir, &trouble, outcome, &mut log,
                )
                .await
                {
                    Failover::Restarted(next, restarted) => {
                        started = *next;
                        agent = *restarted;
                        ran_for = Duration::ZERO;
                        continue;
                    }
                    Failover::End(outcome) => break outcome,
                }
            }
            Ok(Supervised::Detached) => {
                tracing::info!(agent_id = %agent.id, "left running for the next worker on this node");
                return;
            }
            Ok(Supervised::Fenced) | Err(LogError::Fenced(_)) => {
                let_go(rt, &agent, pid, start_time).await;
                return;
            }
            Err(LogError::Store(e)) => {
                tracing::error!(agent_id = %agent.id, error = %e, "supervision failed");
                // A store error right after this worker was paused is often the first sign
                // that its lease is gone (the lease task learns it within a heartbeat): then
                // the process is the fleet's to reconcile and must not run on unwatched.
                let wait = rt.fleet.settings.worker.lease_ttl * 2;
                tokio::select! {
                    _ = rt.lease_lost.cancelled() => let_go(rt, &agent, pid, start_time).await,
                    _ = tokio::time::sleep(wait) => {}
                }
                return;
            }
        }
    };
    let publication = rt
        .git
        .publish_branch(&rt.fleet.store, &rt.owner, &started.project, &agent)
        .await;
    if let Some(from) = &publication.renamed_from {
        log.push(
            "branch.renamed",
            serde_json::json!({"kind": "branch.renamed", "from": from, "to": publication.branch}),
        );
    }
    match publication.pushed {
        Ok(Some(commit)) => {
            tracing::info!(agent_id = %agent.id, %commit, branch = %publication.branch, "branch pushed");
            // Fenced like the final state written next: a worker that lost the agent records
            // neither.
            let store = &rt.fleet.store;
            match store.set_pushed_commit(agent.id, &rt.owner, &commit).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(agent_id = %agent.id, "pushed commit not recorded: the agent is no longer this worker's")
                }
                Err(e) => {
                    tracing::warn!(agent_id = %agent.id, error = %e, "pushed commit not recorded")
                }
            }
        }
        Ok(None) => tracing::info!(agent_id = %agent.id, "no commits to push"),
        Err(e) => {
            tracing::warn!(agent_id = %agent.id, error = %e, "branch not pushed");
            let note = format!("branch {} not pushed: {e}", publication.branch);
            outcome.error = Some(match outcome.error.take() {
                Some(err) => format!("{err}; {note}"),
                None => note,
            });
        }
    }
    let status = outcome.status;
    finish(rt, &agent, outcome, &mut log).await;
    let project_capped = started.project.max_concurrent.is_some();
    super::dispatch::wake_held_spawns(rt, &agent.provider, project_capped).await;
    if let Some(began) = began {
        crate::metrics::agent_run(&agent.provider, &status.to_string(), began.elapsed());
    }
}

/// The agent is no longer ours. If nobody on this node took it over, its process must not
/// run on unsupervised (the fleet has reconciled it elsewhere): kill it.
async fn let_go(rt: &Arc<Runtime>, agent: &Agent, pid: i32, start_time: i64) {
    let current = rt.fleet.store.agent_by_id(agent.id).await.ok();
    let adopted_here = current.as_ref().is_some_and(|a| {
        !a.status.is_final()
            && a.node_id.as_deref() == Some(rt.node_id.as_str())
            && a.worker_id.as_deref() != Some(rt.owner.worker_id.as_str())
    });
    if adopted_here {
        tracing::warn!(agent_id = %agent.id, "agent adopted by another worker on this node; letting go");
        return;
    }
    let alive = process::is_same_process_alive(pid, start_time);
    tracing::warn!(agent_id = %agent.id, pid, alive, "agent taken over; killing its stale process");
    // The group may outlive its leader: signal the group either way.
    let mut stale = Running::adopted(pid, start_time, PathBuf::new());
    stale.terminate(rt.fleet.settings.worker.stop_grace).await;
}

/// Records the final state (fenced), then its status event.
pub async fn finish(rt: &Arc<Runtime>, agent: &Agent, outcome: AgentOutcome, log: &mut EventLog) {
    let store = &rt.fleet.store;
    // Events parsed so far first, so the log is complete when the status turns final. The
    // store may be briefly away (a restart): the final state waits for it, unless the
    // agent stops being ours meanwhile.
    loop {
        let result = match log.flush_events().await {
            Ok(()) => store.finish_agent(agent.id, &rt.owner, &outcome).await,
            Err(LogError::Fenced(_)) => Ok(false),
            Err(LogError::Store(e)) => Err(e),
        };
        match result {
            Ok(true) => break,
            Ok(false) => {
                tracing::warn!(agent_id = %agent.id, "final state refused: agent owned elsewhere");
                return;
            }
            Err(e) => {
                tracing::warn!(agent_id = %agent.id, error = %e, "cannot record the final state yet");
                tokio::select! {
                    _ = rt.lease_lost.cancelled() => return,
                    _ = tokio::time::sleep(super::supervisor::STORE_RETRY) => {}
                }
            }
        }
    }
    tracing::info!(agent_id = %agent.id, status = %outcome.status, "agent finished");
    crate::telemetry::record_final_status(outcome.status, outcome.error.as_deref());
    crate::metrics::agent_finished(&agent.provider, &outcome.status.to_string());
    log.push(
        STATUS_EVENT,
        serde_json::json!({
            "kind": STATUS_EVENT,
            "status": outcome.status,
            "exit_code": outcome.exit_code,
            "error": outcome.error,
        }),
    );
    if let Err(e) = log.flush_events().await {
        tracing::warn!(agent_id = %agent.id, error = %e, "cannot store the final status event");
    }
}

/// Takes over supervision of an agent adopted from a dead worker on this node: its process
/// may still run (tail it from where the stored events end) or have ended unwatched
/// (finalise it from its output and exit files).
pub async fn adopt(rt: &Arc<Runtime>, agent: Agent) {
    let (Some(pid), Some(start_time), Some(output), Some(workdir)) = (
        agent.pid,
        agent.pid_start_time,
        agent.output_path.clone(),
        agent.workdir.clone(),
    ) else {
        tracing::warn!(agent_id = %agent.id, "adopted agent has no process record");
        return;
    };
    let store = &rt.fleet.store;
    let project = match store.project(&agent.project).await {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(agent_id = %agent.id, error = %e, "adopted agent's project is gone");
            return;
        }
    };
    let run_dir = Path::new(&output)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let files = RunFiles::in_dir(&run_dir);
    // Its dead-man switch learns at once that a worker supervises it again.
    if let Err(e) = rt
        .liveness
        .watch(agent.id, run_dir.join(super::liveness::HEARTBEAT_FILE))
    {
        tracing::warn!(agent_id = %agent.id, error = %e, "cannot freshen the adopted agent's heartbeat");
    }
    let mut log =
        match super::retry::store(rt, "open the event log", || rt.open_event_log(agent.id)).await {
            Ok(log) => log,
            Err(e) => {
                // Unsupervised, the process stops itself after the orphan grace.
                tracing::error!(agent_id = %agent.id, error = %e, "cannot open the event log");
                rt.liveness.unwatch(agent.id);
                return;
            }
        };
    let alive = process::is_same_process_alive(pid, start_time);
    tracing::info!(agent_id = %agent.id, pid, alive, "adopted agent");
    log.push(
        "adopted",
        serde_json::json!({"kind": "adopted", "worker_id": rt.owner.worker_id, "process_alive": alive}),
    );
    if let Err(e) = log.flush_events().await {
        tracing::warn!(agent_id = %agent.id, error = %e, "cannot record the adoption");
        rt.liveness.unwatch(agent.id);
        return;
    }
    let ran_for = agent
        .started_at
        .map(|t| (chrono::Utc::now() - t).to_std().unwrap_or_default())
        .unwrap_or_default();
    let started = Started {
        process: Running::adopted(pid, start_time, files.exit.clone()),
        project,
        workdir: PathBuf::from(workdir),
        files,
    };
    // Adopted agents take a free slot when there is one; they run either way.
    let slot = rt.slots.try_take();
    spawn(rt.clone(), agent, started, log, slot, ran_for);
}

/// The outcome of an agent whose process could not be started.
pub fn failed(reason: String) -> AgentOutcome {
    AgentOutcome {
        status: AgentStatus::Failed,
        result: None,
        questions: Vec::new(),
        error: Some(reason),
        exit_code: None,
        session_id: None,
    }
}
