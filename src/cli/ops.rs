//! What the commands ask of a fleet, answered by either side: the store and queue directly
//! (`Local`, the configured fleet) or the fleet's HTTP API (`Remote`). Each command is
//! written once against these operations and prints the same domain types either way.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::anyhow;
use reqwest::Method;
use uuid::Uuid;

use super::remote::Remote;
use super::{output, user};
use crate::domain::{
    Account, Agent, Project, QueueStats, SpawnRequest, StoredEvent, Webhook, WebhookDelivery,
    WebhookEvent, WorkerInfo,
};
use crate::fleet::{AgentDetail, AgentDiff, Fleet, PendingRequest};
use crate::store::{AgentQuery, ControlQueueStats};
use crate::webhooks::Subscribed;

/// How long `logs` (without `-f`) waits for another event of a running agent through the
/// API before it takes what came as the events stored so far.
const QUIET: Duration = Duration::from_millis(500);

pub enum Ops {
    // Boxed: the fleet is large, and one `Ops` lives for a whole command.
    Local(Box<Fleet>),
    Remote(Remote),
}

/// A new account's secret as read on this machine: validated here, sealed by the store's
/// side (the local fleet, or the API that receives it in the body).
pub struct NewAccountSecret {
    pub input: crate::credentials::Secret,
    /// The text as read: what the API is sent.
    pub text: String,
    pub is_credentials_file: bool,
}

impl Ops {
    /// The local fleet, or a refusal naming the command for the remote mode.
    pub fn local(&self, command: &str) -> anyhow::Result<&Fleet> {
        match self {
            Self::Local(fleet) => Ok(fleet),
            Self::Remote(remote) => Err(refused(command, remote)),
        }
    }

    pub async fn add_project(
        &self,
        name: &str,
        remote: &str,
        branch: &str,
    ) -> anyhow::Result<Project> {
        match self {
            Self::Local(f) => f.add_project(name, remote, branch).await.map_err(user),
            Self::Remote(api) => {
                let body = serde_json::json!({"name": name, "remote_url": remote, "default_branch": branch});
                api.send(api.request(Method::POST, &["projects"]).json(&body))
                    .await
            }
        }
    }

    pub async fn update_project(
        &self,
        name: &str,
        change: &crate::fleet::ProjectChange,
    ) -> anyhow::Result<Project> {
        match self {
            Self::Local(f) => f.change_project(name, change).await.map_err(user),
            Self::Remote(api) => {
                let mut body = serde_json::Map::new();
                if let Some(r) = &change.remote_url {
                    body.insert("remote_url".into(), r.as_str().into());
                }
                if let Some(b) = &change.default_branch {
                    body.insert("default_branch".into(), b.as_str().into());
                }
                if let Some(daily) = change.daily_cost_usd {
                    body.insert("daily_cost_usd".into(), serde_json::json!(daily));
                }
                if let Some(cap) = change.max_concurrent {
                    body.insert("max_concurrent".into(), serde_json::json!(cap));
                }
                let request = api.request(Method::PATCH, &["projects", name]).json(&body);
                api.send(request).await
            }
        }
    }

    /// Removes a project; how many agent records went with it.
    pub async fn remove_project(&self, name: &str, force: bool) -> anyhow::Result<i64> {
        match self {
            Self::Local(f) => f.remove_project(name, force).await.map_err(user),
            Self::Remote(api) => {
                #[derive(serde::Deserialize)]
                struct Removed {
                    agents: i64,
                }
                let request = api
                    .request(Method::DELETE, &["projects", name])
                    .query(&[("force", force)]);
                Ok(api.send::<Removed>(request).await?.agents)
            }
        }
    }

    pub async fn projects(&self) -> anyhow::Result<Vec<Project>> {
        match self {
            Self::Local(f) => f.all_projects().await.map_err(user),
            Self::Remote(api) => api.all_pages(&["projects"], &[]).await,
        }
    }

    pub async fn spawn(&self, request: SpawnRequest) -> anyhow::Result<Agent> {
        match self {
            Self::Local(f) => Ok(f.spawn(request).await.map_err(user)?.agent),
            Self::Remote(api) => {
                api.send(api.request(Method::POST, &["agents"]).json(&request))
                    .await
            }
        }
    }

    pub async fn list_agents(
        &self,
        query: AgentQuery,
        limit: u32,
        cursor: Option<&str>,
    ) -> anyhow::Result<crate::domain::page::Page<Agent>> {
        match self {
            Self::Local(f) => f.list_agents(&query).await.map_err(user),
            Self::Remote(api) => {
                let mut params: Vec<(&str, String)> = vec![("limit", limit.to_string())];
                if query.include_dismissed {
                    params.push(("all", "true".into()));
                }
                for s in &query.statuses {
                    params.push(("status", s.as_str().into()));
                }
                let text = [
                    ("project", &query.project),
                    ("provider", &query.provider),
                    ("task_id", &query.task_id),
                    ("name", &query.name_prefix),
                ];
                for (key, value) in text {
                    if let Some(v) = value {
                        params.push((key, v.clone()));
                    }
                }
                let times = [
                    ("created_after", query.created_after),
                    ("created_before", query.created_before),
                ];
                for (key, at) in times {
                    if let Some(at) = at {
                        params.push((key, at.to_rfc3339()));
                    }
                }
                if let Some(c) = cursor {
                    params.push(("cursor", c.to_string()));
                }
                let request = api.request(Method::GET, &["agents"]).query(&params);
                let page: super::remote::Page<Agent> = api.send(request).await?;
                Ok(crate::domain::page::Page {
                    items: page.items,
                    next_cursor: page.next_cursor,
                })
            }
        }
    }

    pub async fn agent_detail(&self, agent: &str) -> anyhow::Result<AgentDetail> {
        match self {
            Self::Local(f) => f.agent_detail(agent).await.map_err(user),
            Self::Remote(api) => {
                let detail: RemoteDetail = api.get(&["agents", agent]).await?;
                Ok(detail.into())
            }
        }
    }

    /// The agent's branch against its base: files with counts and, `with_patch`, the patch.
    pub async fn agent_diff(&self, agent: &str, with_patch: bool) -> anyhow::Result<AgentDiff> {
        match self {
            Self::Local(f) => f.agent_diff(agent, with_patch).await.map_err(user),
            Self::Remote(api) => {
                let stat = if with_patch { "false" } else { "true" };
                let request = api
                    .request(Method::GET, &["agents", agent, "diff"])
                    .query(&[("stat", stat)]);
                api.send(request).await
            }
        }
    }

    /// The agent by id or name.
    pub async fn agent(&self, agent: &str) -> anyhow::Result<Agent> {
        match self {
            Self::Local(f) => f.store.agent(agent).await.map_err(|e| user(e.into())),
            Self::Remote(_) => Ok(self.agent_detail(agent).await?.agent),
        }
    }

    pub async fn agent_by_id(&self, id: Uuid) -> anyhow::Result<Agent> {
        match self {
            Self::Local(f) => Ok(f.store.agent_by_id(id).await?),
            Self::Remote(_) => self.agent(&id.to_string()).await,
        }
    }

    /// Stops the agent; with `wait`, until it has stopped. (The API always waits.)
    pub async fn stop(&self, agent: &str, wait: bool) -> anyhow::Result<Agent> {
        match self {
            Self::Local(f) => f.stop(agent, wait).await.map_err(user),
            Self::Remote(api) => {
                api.send(api.request(Method::POST, &["agents", agent, "stop"]))
                    .await
            }
        }
    }

    /// Deletes the agent; its name.
    pub async fn delete(&self, agent: &str, remote_branch: bool) -> anyhow::Result<String> {
        match self {
            Self::Local(f) => f.delete(agent, remote_branch).await.map_err(user),
            Self::Remote(api) => {
                #[derive(serde::Deserialize)]
                struct Deleted {
                    deleted: String,
                }
                let request = api
                    .request(Method::DELETE, &["agents", agent])
                    .query(&[("remote_branch", remote_branch)]);
                Ok(api.send::<Deleted>(request).await?.deleted)
            }
        }
    }

    pub async fn dismiss(&self, agent: &str) -> anyhow::Result<Agent> {
        self.agent_action(agent, "dismiss").await
    }

    pub async fn cleanup(&self, agent: &str) -> anyhow::Result<Agent> {
        self.agent_action(agent, "cleanup").await
    }

    async fn agent_action(&self, agent: &str, action: &str) -> anyhow::Result<Agent> {
        match self {
            Self::Local(f) if action == "dismiss" => f.dismiss(agent).await.map_err(user),
            Self::Local(f) => f.cleanup(agent).await.map_err(user),
            Self::Remote(api) => {
                api.send(api.request(Method::POST, &["agents", agent, action]))
                    .await
            }
        }
    }

    pub async fn resume(
        &self,
        agent: &str,
        answers: BTreeMap<String, String>,
    ) -> anyhow::Result<Agent> {
        match self {
            Self::Local(f) => f.resume(agent, answers).await.map_err(user),
            Self::Remote(api) => {
                let body = serde_json::json!({ "answers": answers });
                let request = api
                    .request(Method::POST, &["agents", agent, "resume"])
                    .json(&body);
                api.send(request).await
            }
        }
    }

    /// The agent's events stored so far.
    pub async fn events(&self, agent: &Agent) -> anyhow::Result<Vec<StoredEvent>> {
        match self {
            Self::Local(f) => Ok(f.store.events_after(agent.id, 0).await?),
            Self::Remote(api) => {
                let mut events = Vec::new();
                // An ended agent's stream ends by itself; a running one's is cut once quiet.
                let quiet = (!agent.status.is_final()).then_some(QUIET);
                api.events(&agent.id.to_string(), 0, quiet, |e| events.push(e))
                    .await?;
                Ok(events)
            }
        }
    }

    /// The sequence number of the agent's last stored event (0: none).
    pub async fn last_event_seq(&self, agent: &Agent) -> anyhow::Result<i64> {
        match self {
            Self::Local(f) => Ok(f.store.last_event_seq(agent.id).await?),
            Self::Remote(_) => Ok(self.events(agent).await?.last().map_or(0, |e| e.seq)),
        }
    }

    /// Prints the agent's events after `after` as they come, until it ends.
    pub async fn follow(&self, agent_id: Uuid, json: bool, after: i64) -> anyhow::Result<()> {
        match self {
            Self::Local(f) => super::agents::follow_events(f, agent_id, json, after).await,
            Self::Remote(api) => {
                api.events(&agent_id.to_string(), after, None, |e| {
                    output::event(&e, json)
                })
                .await
            }
        }
    }

    /// Workers, newest first: those seen lately, or every one with `all`.
    pub async fn workers(&self, all: bool) -> anyhow::Result<Vec<WorkerInfo>> {
        let mut workers = match self {
            Self::Local(f) => {
                let mut workers = f.store.list_workers().await?;
                if !all {
                    workers.retain(WorkerInfo::recently_seen);
                }
                workers
            }
            Self::Remote(api) => {
                let all = if all { "true" } else { "false" };
                api.all_pages(&["workers"], &[("all", all)]).await?
            }
        };
        workers.sort_by_key(|w| std::cmp::Reverse((w.started_at, w.id.clone())));
        Ok(workers)
    }

    pub async fn queue(&self) -> anyhow::Result<(QueueStats, Vec<ControlQueueStats>)> {
        match self {
            Self::Local(f) => Ok((
                f.store.queue_stats().await?,
                f.store.control_queue_stats().await?,
            )),
            Self::Remote(api) => {
                #[derive(serde::Deserialize)]
                struct View {
                    #[serde(flatten)]
                    stats: QueueStats,
                    control_queues: Vec<Control>,
                }
                #[derive(serde::Deserialize)]
                struct Control {
                    node_id: Option<String>,
                    depth: i64,
                    oldest_age_seconds: Option<f64>,
                }
                let view: View = api.get(&["queue"]).await?;
                let controls = view
                    .control_queues
                    .into_iter()
                    .map(|c| ControlQueueStats {
                        node_id: c.node_id,
                        depth: c.depth,
                        oldest_age_seconds: c.oldest_age_seconds,
                    })
                    .collect();
                Ok((view.stats, controls))
            }
        }
    }

    pub async fn add_account(
        &self,
        provider: String,
        label: String,
        secret: NewAccountSecret,
        max_concurrent: Option<i32>,
    ) -> anyhow::Result<Account> {
        use crate::credentials::{self, AccountInput};
        match self {
            Self::Local(f) => credentials::add_account(
                &f.settings,
                &f.store,
                &f.providers,
                AccountInput {
                    provider,
                    label,
                    secret: secret.input,
                    max_concurrent,
                },
            )
            .await
            .map_err(|e| user(e.into())),
            Self::Remote(api) => {
                if api.is_plain_http_off_host() {
                    eprintln!(
                        "warning: the account's secret goes to {} over plain http, readable \
                         on the way; use https",
                        api.url()
                    );
                }
                let mut body = serde_json::json!({"provider": provider, "label": label});
                let field = if secret.is_credentials_file {
                    "credentials"
                } else {
                    "api_key"
                };
                body[field] = secret.text.into();
                if let Some(max) = max_concurrent {
                    body["max_concurrent"] = max.into();
                }
                api.send(api.request(Method::POST, &["accounts"]).json(&body))
                    .await
            }
        }
    }

    pub async fn accounts(&self) -> anyhow::Result<Vec<Account>> {
        match self {
            Self::Local(f) => Ok(f.store.list_accounts().await?),
            Self::Remote(api) => api.get(&["accounts"]).await,
        }
    }

    pub async fn remove_account(&self, label: &str) -> anyhow::Result<()> {
        match self {
            Self::Local(f) => f
                .store
                .remove_account(label)
                .await
                .map_err(|e| user(e.into())),
            Self::Remote(api) => {
                let request = api.request(Method::DELETE, &["accounts", label]);
                api.send::<serde_json::Value>(request).await.map(drop)
            }
        }
    }

    pub async fn reset_account(&self, label: &str) -> anyhow::Result<Account> {
        match self {
            Self::Local(f) => f
                .store
                .reset_account(label)
                .await
                .map_err(|e| user(e.into())),
            Self::Remote(api) => {
                api.send(api.request(Method::POST, &["accounts", label, "reset"]))
                    .await
            }
        }
    }

    pub async fn subscribe(
        &self,
        url: &str,
        events: Option<Vec<WebhookEvent>>,
        project: Option<&str>,
    ) -> anyhow::Result<Subscribed> {
        match self {
            Self::Local(f) => crate::webhooks::subscribe(f, url, events, project)
                .await
                .map_err(user),
            Self::Remote(api) => {
                let mut body = serde_json::json!({ "url": url });
                if let Some(events) = events {
                    body["events"] = serde_json::to_value(events)?;
                }
                if let Some(project) = project {
                    body["project"] = project.into();
                }
                let subscribed: RemoteSubscribed = api
                    .send(api.request(Method::POST, &["webhooks"]).json(&body))
                    .await?;
                Ok(Subscribed {
                    webhook: subscribed.webhook,
                    secret: subscribed.secret,
                })
            }
        }
    }

    pub async fn webhooks(&self) -> anyhow::Result<Vec<Webhook>> {
        match self {
            Self::Local(f) => crate::webhooks::list(f).await.map_err(user),
            Self::Remote(api) => api.all_pages(&["webhooks"], &[]).await,
        }
    }

    /// Removes a subscription; its id.
    pub async fn remove_webhook(&self, id: &str) -> anyhow::Result<Uuid> {
        match self {
            Self::Local(f) => crate::webhooks::remove(f, id).await.map_err(user),
            Self::Remote(api) => {
                #[derive(serde::Deserialize)]
                struct Removed {
                    deleted: Uuid,
                }
                let request = api.request(Method::DELETE, &["webhooks", id]);
                Ok(api.send::<Removed>(request).await?.deleted)
            }
        }
    }

    pub async fn deliveries(&self, id: &str) -> anyhow::Result<Vec<WebhookDelivery>> {
        match self {
            Self::Local(f) => crate::webhooks::deliveries(f, id).await.map_err(user),
            Self::Remote(api) => {
                let list: super::remote::Page<WebhookDelivery> =
                    api.get(&["webhooks", id, "deliveries"]).await?;
                Ok(list.items)
            }
        }
    }

    pub async fn redeliver(&self, delivery_id: &str) -> anyhow::Result<WebhookDelivery> {
        match self {
            Self::Local(f) => crate::webhooks::redeliver(f, delivery_id)
                .await
                .map_err(user),
            Self::Remote(api) => {
                let request = api.request(
                    Method::POST,
                    &["webhook-deliveries", delivery_id, "redeliver"],
                );
                api.send(request).await
            }
        }
    }
}

/// Why a command that acts on this machine's fleet is refused in the remote mode.
pub fn refused(command: &str, remote: &Remote) -> anyhow::Error {
    anyhow!(
        "`{command}` works only against the configured store, not through the API at {} \
         (unset AGENTFLEET_API_URL and drop --api to run it here)",
        remote.url()
    )
}

/// `agentfleet` commands that only make sense on a fleet's own machine.
pub fn local_only(command: &super::Command) -> Option<&'static str> {
    use super::{AccountCommand, Command};
    Some(match command {
        Command::Migrate => "migrate",
        Command::Doctor { .. } => "doctor",
        Command::Worker => "worker",
        Command::Serve => "serve",
        Command::Up => "up",
        Command::Cleanup { agent: None, .. } => "cleanup (without an agent)",
        Command::Account(AccountCommand::RotateKey { .. }) => "account rotate-key",
        _ => return None,
    })
}

/// `GET /v1/agents/{agent}` as it comes over the wire.
#[derive(serde::Deserialize)]
struct RemoteDetail {
    #[serde(flatten)]
    agent: Agent,
    prompt: Option<String>,
    #[serde(default)]
    pending_requests: Vec<RemotePending>,
}

#[derive(serde::Deserialize)]
struct RemotePending {
    id: Uuid,
    kind: String,
    sent_to: String,
    target: Option<String>,
    requested_at: chrono::DateTime<chrono::Utc>,
    waiting_for_worker: bool,
    #[serde(default)]
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl From<RemoteDetail> for AgentDetail {
    fn from(d: RemoteDetail) -> Self {
        let pending_requests = d
            .pending_requests
            .into_iter()
            .map(|p| PendingRequest {
                id: p.id,
                kind: p.kind,
                sent_to: if p.sent_to == "worker" {
                    "worker"
                } else {
                    "node"
                },
                target: p.target,
                requested_at: p.requested_at,
                waiting_for_worker: p.waiting_for_worker,
                expires_at: p.expires_at,
            })
            .collect();
        AgentDetail {
            agent: d.agent,
            prompt: d.prompt,
            pending_requests,
        }
    }
}

#[derive(serde::Deserialize)]
struct RemoteSubscribed {
    #[serde(flatten)]
    webhook: Webhook,
    secret: String,
}
