//! Requests about an existing agent — stop, delete, resume, dismiss and cleanup — from the
//! API and the CLI. The store records them; the worker that owns the agent's process and
//! worktree carries them out (see `worker::control`); an agent nobody runs is handled here
//! directly.

use std::collections::BTreeMap;
use std::time::Duration;

use tracing::Instrument;
use uuid::Uuid;

use super::{Fleet, FleetError, counted, no_nul};
use crate::domain::{Agent, AgentStatus, ControlArgs, StoredEvent, StoredPayload};
use crate::events::STATUS_EVENT;
use crate::providers;
use crate::queue::{ControlJob, ControlTarget};
use crate::store::{ControlKind, StoreError};
use crate::telemetry;
use crate::workspace;

const POLL: Duration = Duration::from_millis(100);

/// The event of a resume that waits for a worker on its agent's node.
pub const RESUME_WAITING_EVENT: &str = "resume.waiting";
/// The event of a checkout freed by a dismiss or a cleanup.
pub const CHECKOUT_REMOVED_EVENT: &str = "checkout.removed";

impl Fleet {
    /// Stops an agent; with `wait`, returns once it has stopped.
    pub async fn stop(&self, agent_ref: &str, wait: bool) -> Result<Agent, FleetError> {
        counted("stop", self.stop_agent(agent_ref, wait).await)
    }

    async fn stop_agent(&self, agent_ref: &str, wait: bool) -> Result<Agent, FleetError> {
        let store = &self.store;
        let agent = store.agent(agent_ref).await?;
        if agent.status.is_final() {
            return Err(FleetError::Conflict(format!(
                "agent '{}' is not running (it is {})",
                agent.name, agent.status
            )));
        }
        if agent.status == AgentStatus::Pending
            && store
                .cancel_pending(agent.id, "stopped before it started")
                .await?
        {
            self.record_unowned_event(
                agent.id,
                &serde_json::json!({"kind": STATUS_EVENT, "status": AgentStatus::Stopped}),
            )
            .await;
            return Ok(store.agent(&agent.id.to_string()).await?);
        }
        // Claimed in the meantime, or running: route the stop to its owner.
        let agent = store.agent(&agent.id.to_string()).await?;
        self.send_control(
            &agent,
            ControlKind::Stop,
            agent.worker_id.as_deref(),
            ControlArgs::new(),
        )
        .await?;
        if !wait {
            return Ok(agent);
        }
        let limit = self.settings.worker.stop_grace + Duration::from_secs(30);
        self.wait_final(agent.id, limit).await
    }

    async fn wait_final(&self, agent_id: Uuid, limit: Duration) -> Result<Agent, FleetError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let agent = self.store.agent(&agent_id.to_string()).await?;
            if agent.status.is_final() {
                return Ok(agent);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(FleetError::Unavailable(format!(
                    "agent '{}' has not stopped yet; the request stays recorded",
                    agent.name
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Deletes an agent: stopped if running, then its worktree, branch, files and rows
    /// (its remote branch too with `remote_branch`). Returns its name once it is gone.
    pub async fn delete(&self, agent_ref: &str, remote_branch: bool) -> Result<String, FleetError> {
        counted("delete", self.delete_agent(agent_ref, remote_branch).await)
    }

    async fn delete_agent(
        &self,
        agent_ref: &str,
        remote_branch: bool,
    ) -> Result<String, FleetError> {
        let store = &self.store;
        let mut agent = store.agent(agent_ref).await?;
        if agent.status == AgentStatus::Pending {
            store.cancel_pending(agent.id, "deleted").await?;
            agent = store.agent(&agent.id.to_string()).await?;
        }
        let args = ControlArgs::from_iter([("remote_branch".into(), remote_branch.into())]);
        let live = !agent.status.is_final();
        let node_has_worker = match &agent.node_id {
            Some(node) => store
                .list_workers()
                .await?
                .iter()
                .any(|w| &w.node_id == node && w.status == "alive"),
            None => false,
        };
        if live || (agent.workdir.is_some() && node_has_worker) {
            let target = if live {
                agent.worker_id.as_deref()
            } else {
                None
            };
            self.send_control(&agent, ControlKind::Delete, target, args)
                .await?;
            let deadline = tokio::time::Instant::now()
                + self.settings.worker.stop_grace
                + Duration::from_secs(30);
            while store.agent(&agent.id.to_string()).await.is_ok() {
                if tokio::time::Instant::now() > deadline {
                    return Err(FleetError::Unavailable(format!(
                        "agent '{}' is not deleted yet; the request stays recorded",
                        agent.name
                    )));
                }
                tokio::time::sleep(POLL).await;
            }
            return Ok(agent.name);
        }
        // Nobody can reach its files now: the rows go here, the files with the next cleanup
        // on its node.
        if remote_branch {
            let project = store.project(&agent.project).await?;
            let (url, branch) = (project.remote_url, agent.branch.clone());
            tokio::task::spawn_blocking(move || workspace::delete_remote_branch(&url, &branch))
                .await
                .map_err(|e| FleetError::Unavailable(e.to_string()))?
                .map_err(|e| FleetError::Unavailable(e.to_string()))?;
        }
        store.delete_agent_rows(agent.id).await?;
        Ok(agent.name)
    }

    /// Hides an agent from lists at once; an ended agent's checkout is freed on its node
    /// (its work is on its pushed branch). A running agent keeps running.
    pub async fn dismiss(&self, agent_ref: &str) -> Result<Agent, FleetError> {
        let store = &self.store;
        let mut agent = store.agent(agent_ref).await?;
        store.set_dismissed(agent.id).await?;
        agent.dismissed = true;
        if agent.status.is_final() && agent.workdir.is_some() && agent.node_id.is_some() {
            self.send_control(&agent, ControlKind::Dismiss, None, ControlArgs::new())
                .await?;
        }
        Ok(agent)
    }

    /// Frees an ended agent's checkout and run files on its node; its record, events and
    /// pushed branch stay. Refused while the agent runs or waits for input (it needs them).
    pub async fn cleanup(&self, agent_ref: &str) -> Result<Agent, FleetError> {
        counted("cleanup", self.cleanup_agent(agent_ref).await)
    }

    async fn cleanup_agent(&self, agent_ref: &str) -> Result<Agent, FleetError> {
        let agent = self.store.agent(agent_ref).await?;
        if !agent.status.is_final() {
            return Err(FleetError::Conflict(format!(
                "agent '{}' is {}: its checkout is in use (stop it first)",
                agent.name, agent.status
            )));
        }
        if agent.workdir.is_some() && agent.node_id.is_some() {
            self.send_control(&agent, ControlKind::Cleanup, None, ControlArgs::new())
                .await?;
        }
        Ok(agent)
    }

    /// Resumes an agent that waits for input with `answers` (question id → text): the worker
    /// on its node runs the provider's resume command with the stored session id in the
    /// same worktree. Refused, with nothing changed, when the agent is not waiting, has no
    /// session or its provider cannot resume. With no live worker on its node the request
    /// waits for one (a `resume.waiting` event) until `worker.resume_timeout`.
    pub async fn resume(
        &self,
        agent_ref: &str,
        answers: BTreeMap<String, String>,
    ) -> Result<Agent, FleetError> {
        counted("resume", self.resume_agent(agent_ref, answers).await)
    }

    async fn resume_agent(
        &self,
        agent_ref: &str,
        answers: BTreeMap<String, String>,
    ) -> Result<Agent, FleetError> {
        for (id, text) in &answers {
            let field = format!("answers.{}", id.escape_default());
            no_nul(&field, id)?;
            no_nul(&field, text)?;
        }
        let store = &self.store;
        let agent = store.agent(agent_ref).await?;
        if agent.status != AgentStatus::WaitingForInput {
            return Err(FleetError::Conflict(format!(
                "agent '{}' is not waiting for input (it is {})",
                agent.name, agent.status
            )));
        }
        let Some(session) = agent.session_id.as_deref() else {
            return Err(FleetError::Conflict(format!(
                "agent '{}' has no session to resume",
                agent.name
            )));
        };
        let provider = self
            .providers
            .get(&agent.provider)
            .map_err(|e| FleetError::Invalid(e.to_string()))?;
        provider
            .resume_args(session, &providers::SpawnOptions::default())
            .map_err(|e| FleetError::Invalid(e.to_string()))?;
        if answers.is_empty() {
            return Err(FleetError::Invalid("give at least one answer".into()));
        }
        if !agent.pending_questions.is_empty()
            && let Some(unknown) = answers
                .keys()
                .find(|id| !agent.pending_questions.iter().any(|q| &q.id == *id))
        {
            let known: Vec<&str> = agent
                .pending_questions
                .iter()
                .map(|q| q.id.as_str())
                .collect();
            return Err(FleetError::Invalid(format!(
                "agent '{}' asked no question '{unknown}' (its questions: {})",
                agent.name,
                known.join(", ")
            )));
        }
        let limit = self.settings.limits.max_prompt_bytes;
        let size: usize = answers.iter().map(|(k, v)| k.len() + v.len()).sum();
        if size > limit {
            return Err(FleetError::Invalid(format!(
                "the answers are {size} bytes, over the limit of {limit} bytes (limits.max_prompt_bytes)"
            )));
        }
        let workers = store.list_workers().await?;
        let alive = |id: &str| workers.iter().any(|w| w.id == id && w.status == "alive");
        // The owner if it lives; else any worker on the agent's node, now or when one
        // starts there (until worker.resume_timeout).
        let target = match (&agent.worker_id, &agent.node_id) {
            (Some(owner), _) if alive(owner) => Some(owner.clone()),
            (_, Some(node)) => {
                if !workers
                    .iter()
                    .any(|w| &w.node_id == node && w.status == "alive")
                {
                    let data = serde_json::json!({
                        "kind": RESUME_WAITING_EVENT, "node": node,
                        "reason": "no live worker on the agent's node; the resume waits for one",
                    });
                    self.record_unowned_event(agent.id, &data).await;
                }
                None
            }
            (_, None) => {
                return Err(FleetError::Unavailable(format!(
                    "agent '{}' was never placed on a node; nothing can resume it",
                    agent.name
                )));
            }
        };
        self.send_control(
            &agent,
            ControlKind::Resume,
            target.as_deref(),
            ControlArgs::from_iter([("answers".into(), serde_json::json!(answers))]),
        )
        .await?;
        Ok(agent)
    }

    /// Records a control request about `agent` (the durable record), then pushes its job
    /// to `target_worker`'s control queue, or to the queue of the agent's node. The
    /// PRODUCER span's trace context goes with the job and into the stored payload, so one
    /// trace runs from the request to the worker's act, re-sent or not. A failed push
    /// leaves the request to the re-dispatcher.
    async fn send_control(
        &self,
        agent: &Agent,
        kind: ControlKind,
        target_worker: Option<&str>,
        args: ControlArgs,
    ) -> Result<Uuid, FleetError> {
        let target = ControlTarget::of(target_worker, agent.node_id.as_deref());
        let destination = target
            .as_ref()
            .map(|t| self.queue.control_queue_name(t))
            .unwrap_or_else(|| "control".into());
        let span = telemetry::producer_span(
            self.queue.messaging_system(),
            &destination,
            &agent.name,
            &agent.provider,
        );
        span.record("agentfleet.agent.id", tracing::field::display(agent.id));
        let trace_context = telemetry::inject(&span);
        let payload = StoredPayload {
            request: args,
            trace_context: trace_context.clone(),
        }
        .to_json()
        .map_err(|e| FleetError::Invalid(format!("request cannot be encoded: {e}")))?;
        let request_id = self
            .store
            .record_control(agent.id, kind, target_worker, payload)
            .instrument(span.clone())
            .await
            .map_err(|e| match e {
                StoreError::ResumeRefused(why) => {
                    FleetError::Conflict(format!("agent '{}' {why}", agent.name))
                }
                other => other.into(),
            })?;
        span.record("messaging.message.id", tracing::field::display(request_id));
        if let Some(target) = target {
            let job = ControlJob {
                request_id,
                trace_context,
            };
            if let Err(e) = self
                .queue
                .push_control(&target, &job)
                .instrument(span.clone())
                .await
            {
                tracing::warn!(%request_id, error = %e, "control push failed; left for re-dispatch");
            }
        }
        Ok(request_id)
    }

    /// Stores an event on an agent no worker supervises, then publishes it.
    pub async fn record_unowned_event(&self, agent_id: Uuid, data: &serde_json::Value) {
        let kind = data
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or(STATUS_EVENT)
            .to_string();
        match self.store.append_event_unowned(agent_id, &kind, data).await {
            Ok(seq) => {
                let event = StoredEvent {
                    seq,
                    kind,
                    data: data.clone(),
                    created_at: chrono::Utc::now(),
                };
                if let Err(e) = self.events.publish(agent_id, &event).await {
                    tracing::warn!(%agent_id, error = %e, "cannot publish event");
                }
            }
            Err(e) => tracing::warn!(%agent_id, error = %e, "cannot store event"),
        }
    }
}
