//! Dispatching a spawn job: decode, claim the request in the store (a duplicate delivery
//! stops here), prepare the worktree, start the provider process, and hand the agent (with
//! the job's slot) to its agent task. The dispatch ends there, so a queue delivery is short;
//! the `agent.dispatch` event says how long each step took.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::Instrument;
use uuid::Uuid;

use super::agent_task;
use super::event_log::EventLog;
use super::launch::{self, InputError, Launch, StartError, Started};
use super::retry;
use super::runtime::Runtime;
use super::signal_file::SIGNAL_FILE;
use crate::agent_files;
use crate::domain::{Agent, SpawnRequest, StoredPayload};
use crate::fleet::validate_input_name;
use crate::providers::{self, SpawnOptions};
use crate::queue::{SpawnJob, take_handed_slot};
use crate::telemetry;

/// Where in the checkout the request's input files go.
const INPUT_DIR: &str = ".agentfleet/input";

/// Dispatches one delivered spawn job. Never fails: every outcome is recorded in the store,
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
                .record_job_failure(&crate::store::JobFailure {
                    queue: rt.fleet.queue.queue_name(),
                    job_id: None,
                    payload: &job.to_string(),
                    reason: &reason,
                    worker_id: &rt.owner.worker_id,
                })
                .await
            {
                tracing::error!(error = %e, "cannot record the malformed job");
            }
            return;
        }
    };
    let (system, queue) = (
        rt.fleet.queue.messaging_system(),
        rt.fleet.queue.queue_name(),
    );
    let span = telemetry::consumer_span(
        system,
        queue,
        job.request_id,
        &job.trace_context,
        &rt.owner.worker_id,
    );
    let _ = tracing::Instrument::instrument(dispatch(rt, job.request_id), span).await;
}

/// How long each step from delivery to a started process took (the `agent.dispatch`
/// event), so a slow start shows which step was slow.
#[derive(Default)]
struct DispatchTimings {
    claim: Duration,
    /// Waiting for the project's git lock, fetching the mirror, checking out the worktree.
    git_lock: Duration,
    /// False when a fetch begun after this delivery already brought the mirror up to date.
    fetched: bool,
    fetch: Duration,
    checkout: Duration,
    launch: Duration,
}

/// Milliseconds to a tenth, as the `agent.dispatch` event shows them.
fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

/// Claims the request and starts its agent; every failure ends in the store.
async fn dispatch(rt: Arc<Runtime>, request_id: Uuid) {
    let slot = take_handed_slot();
    let store = &rt.fleet.store;
    let delivered = Instant::now();
    let delivered_at = chrono::Utc::now();
    let mut timings = DispatchTimings::default();
    if let Some(reason) = rt.slots.closed_reason() {
        // Delivered as the slots closed: left pending for a worker that can run it.
        tracing::warn!(%reason, "taking no spawns; request left for another worker");
        return;
    }
    let caps = provider_caps(&rt);
    let claimed = match retry::store(&rt, "claim the request", || {
        store.claim_request_within(request_id, &rt.owner, &rt.node_id, &caps)
    })
    .instrument(tracing::info_span!("claim"))
    .await
    {
        Ok(Some(claimed)) => claimed,
        Ok(None) => {
            tracing::info!(
                "request already claimed or gone, or held back by a concurrency cap; duplicate delivery ignored"
            );
            return;
        }
        Err(e) => {
            // Left pending in the store: the request is dispatched again later.
            tracing::warn!(error = %e, "cannot claim request");
            return;
        }
    };
    timings.claim = delivered.elapsed();
    let agent = claimed.agent;
    telemetry::record_agent(&tracing::Span::current(), &agent);
    let request: SpawnRequest = match StoredPayload::from_json(claimed.payload) {
        Ok(stored) => stored.request,
        Err(e) => {
            let reason = format!("request payload cannot be decoded: {e}");
            if let Err(e) = store.fail_request(request_id, &reason).await {
                tracing::error!(error = %e, "cannot fail request");
            }
            return;
        }
    };
    let mut log =
        match retry::store(&rt, "open the event log", || rt.open_event_log(agent.id)).await {
            Ok(log) => log,
            Err(e) => {
                tracing::error!(error = %e, "cannot open the event log");
                let _ = store.fail_request(request_id, &e.to_string()).await;
                return;
            }
        };
    tracing::info!(agent_id = %agent.id, agent = %agent.name, provider = %agent.provider, attempt = claimed.attempts, "agent claimed");
    match start_agent(&rt, &agent, &request, &mut log, delivered, &mut timings).await {
        Ok(started) => {
            let queued = (delivered_at - agent.created_at)
                .to_std()
                .unwrap_or_default();
            log.push(
                "agent.dispatch",
                serde_json::json!({
                    "kind": "agent.dispatch",
                    "queued_ms": millis(queued),
                    "claim_ms": millis(timings.claim),
                    "git_lock_ms": millis(timings.git_lock),
                    "fetched": timings.fetched,
                    "fetch_ms": millis(timings.fetch),
                    "checkout_ms": millis(timings.checkout),
                    "launch_ms": millis(timings.launch),
                }),
            );
            agent_task::spawn(rt.clone(), agent, started, log, slot, Duration::ZERO)
        }
        Err(StartError::Fenced) => {
            tracing::warn!(agent_id = %agent.id, "lost ownership of the agent before it started");
        }
        Err(failed) => {
            if hand_back_on_full_disk(&rt, request_id, &failed).await {
                return;
            }
            let reason = failed.to_string();
            agent_task::finish(&rt, &agent, agent_task::failed(reason), &mut log).await;
        }
    }
}

/// A start that failed because this worker cannot write its workspace is no fault of the
/// request: the slots close and the request goes back to the queue for a worker that can
/// (the re-dispatch sweep sends it again). Whether it was handed back.
async fn hand_back_on_full_disk(rt: &Arc<Runtime>, request_id: Uuid, reason: &StartError) -> bool {
    if rt.check_disk().await {
        return false;
    }
    match rt.fleet.store.release_request(request_id, &rt.owner).await {
        Ok(true) => {
            tracing::warn!(%reason, "the workspace cannot be written; request handed back");
            true
        }
        Ok(false) => false,
        Err(e) => {
            tracing::warn!(error = %e, "cannot hand the request back");
            false
        }
    }
}

/// Prepares the worktree and starts the provider process.
async fn start_agent(
    rt: &Arc<Runtime>,
    agent: &Agent,
    request: &SpawnRequest,
    log: &mut EventLog,
    delivered: Instant,
    timings: &mut DispatchTimings,
) -> Result<Started, StartError> {
    let provider = rt.fleet.providers.get(&agent.provider)?;
    let project = retry::store(rt, "load the project", || {
        rt.fleet.store.project(&agent.project)
    })
    .await?;
    let prepared = rt
        .git
        .prepare_worktree(&project, &agent.name, &agent.branch, delivered)
        .await
        .map_err(StartError::Worktree)?;
    (
        timings.git_lock,
        timings.fetched,
        timings.fetch,
        timings.checkout,
    ) = (
        prepared.lock_wait,
        prepared.fetched,
        prepared.fetch,
        prepared.checkout,
    );
    let base = &prepared.base_commit;
    let recorded = retry::store(rt, "record the base commit", || {
        rt.fleet.store.set_base_commit(agent.id, &rt.owner, base)
    })
    .await?;
    if !recorded {
        return Err(StartError::Fenced);
    }
    let workdir = prepared.workdir;
    let step = Instant::now();
    write_inputs(&workdir, request)
        .await
        .map_err(StartError::Inputs)?;
    let opts = SpawnOptions {
        mode: agent.mode,
        model: agent.model.clone(),
    };
    let args = provider.spawn_args(&opts);
    let prompt = providers::prompt_for_mode(agent.mode, &request.prompt);
    let started = launch::start(
        rt,
        Launch {
            agent,
            provider: provider.as_ref(),
            args,
            prompt: &prompt,
            project,
            workdir,
        },
        log,
    )
    .await;
    timings.launch = step.elapsed();
    started
}

/// Input files under `.agentfleet/input/`, and the signal folder. Written beneath the
/// checkout without following a symlink the repository may hold on the way (`.agentfleet`
/// committed as a link elsewhere is replaced by a folder), off the async threads.
async fn write_inputs(workdir: &Path, request: &SpawnRequest) -> Result<(), InputError> {
    // Validated at enqueue; checked again because the payload crossed a queue.
    if let Some(bad) = request
        .inputs
        .iter()
        .find(|i| validate_input_name(&i.name).is_err())
    {
        return Err(InputError::NameNotAllowed(bad.name.clone()));
    }
    let workdir = workdir.to_path_buf();
    let inputs: Vec<(PathBuf, Vec<u8>)> = request
        .inputs
        .iter()
        .map(|i| {
            (
                Path::new(INPUT_DIR).join(&i.name),
                i.content.clone().into_bytes(),
            )
        })
        .collect();
    tokio::task::spawn_blocking(move || {
        agent_files::ensure_dir(&workdir, Path::new(INPUT_DIR))?;
        let signal_dir = Path::new(SIGNAL_FILE).parent().unwrap_or(Path::new(""));
        agent_files::ensure_dir(&workdir, signal_dir)?;
        for (relative, content) in &inputs {
            agent_files::write_file(&workdir, relative, content)?;
        }
        Ok::<_, agent_files::AgentFileError>(())
    })
    .await
    .map_err(InputError::Task)??;
    Ok(())
}

/// `providers.<name>.max_concurrent` of every provider that has one.
fn provider_caps(rt: &Runtime) -> std::collections::BTreeMap<String, i64> {
    rt.fleet
        .settings
        .providers
        .iter()
        .filter_map(|(name, p)| Some((name.clone(), i64::from(p.max_concurrent?))))
        .collect()
}

/// After an agent of a capped provider or project ended: the spawns its cap held back are sent again
/// at once (oldest first; claims keep the cap and the order), rather than at the next
/// re-dispatch sweep.
pub(super) async fn wake_held_spawns(rt: &Runtime, provider: &str, project_capped: bool) {
    if !project_capped && !provider_caps(rt).contains_key(provider) {
        return;
    }
    let store = &rt.fleet.store;
    let Ok(pending) = store.pending_requests(32).await else {
        return;
    };
    for request_id in pending {
        let trace_context = store
            .spawn_trace_context(request_id)
            .await
            .unwrap_or_default();
        let job = crate::queue::SpawnJob {
            request_id,
            trace_context,
        };
        if let Err(e) = rt.fleet.queue.enqueue(&job).await {
            tracing::warn!(%request_id, error = %e, "cannot send a held spawn again");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn dispatch_durations_are_milliseconds_to_a_tenth() {
        use std::time::Duration;
        assert_eq!(super::millis(Duration::from_nanos(1_837_462)), 1.8);
        assert_eq!(super::millis(Duration::from_micros(25)), 0.0);
        assert_eq!(super::millis(Duration::from_secs(2)), 2000.0);
    }
}
