//! The API's handlers: thin translations between HTTP and the fleet's operations.

use std::convert::Infallible;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use serde::Deserialize;

use super::ApiError;
use super::error::ErrorBody;
use super::extract::{self, BodyError, PathParam, Query};
use crate::domain::SpawnRequest;
use crate::domain::{Agent, AgentStatus, Page, PageRequest, StoredEvent, WorkerInfo};
use crate::events;
use crate::fleet::AgentDetail;
use crate::fleet::Fleet;
use crate::store::AgentQuery;
use chrono::{DateTime, Utc};

impl BodyError for SpawnRequest {}

#[utoipa::path(
    post, path = "/v1/agents", tag = "agents",
    request_body = SpawnRequest,
    responses(
        (status = 202, description = "recorded and enqueued", body = Agent),
        (status = 200, description = "a retry of an earlier spawn with the same idempotency key: its agent", body = Agent),
        (status = 400, description = "malformed body, query or path (`invalid_request`)", body = ErrorBody),
        (status = 401, description = "missing or wrong bearer token (`unauthorized`)", body = ErrorBody),
        (status = 404, description = "no such agent (`not_found`)", body = ErrorBody),
        (status = 409, description = "the agent is not in a state that allows it (`conflict`)", body = ErrorBody),
        (status = 413, description = "the body is over `api.max_body_bytes` (`body_too_large`)", body = ErrorBody),
        (status = 422, description = "a field is invalid (`invalid`), or the idempotency key was used for another request (`idempotency_key_reused`)", body = ErrorBody),
        (status = 503, description = "the store or the queue is unavailable (`unavailable`)", body = ErrorBody)
    )
)]
pub async fn spawn_agent(
    State(fleet): State<Fleet>,
    extract::Json(req): extract::Json<SpawnRequest>,
) -> Result<Response, ApiError> {
    let recorded = fleet.spawn(req).await?;
    let status = if recorded.created {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(recorded.agent)).into_response())
}

#[utoipa::path(
    get, path = "/v1/agents", tag = "agents", params(AgentListQuery),
    responses(
        (status = 200, description = "one page of the agents the filters select, newest first", body = Page<Agent>),
        (status = 400, description = "malformed body, query or path (`invalid_request`)", body = ErrorBody),
        (status = 401, description = "missing or wrong bearer token (`unauthorized`)", body = ErrorBody),
        (status = 422, description = "a field is invalid; the message names it (`invalid`)", body = ErrorBody),
        (status = 503, description = "the store or the queue is unavailable (`unavailable`)", body = ErrorBody)
    )
)]
pub async fn list_agents(
    State(fleet): State<Fleet>,
    Query(q): Query<AgentListQuery>,
) -> Result<Response, ApiError> {
    let query = AgentQuery {
        statuses: q.status,
        project: q.project,
        provider: q.provider,
        task_id: q.task_id,
        name_prefix: q.name,
        search: q.search,
        created_after: q.created_after,
        created_before: q.created_before,
        include_dismissed: q.all,
        page: PageRequest::parse(q.limit, q.cursor.as_deref()).map_err(ApiError::invalid)?,
    };
    Ok(Json(fleet.list_agents(&query).await?).into_response())
}

#[utoipa::path(
    get, path = "/v1/agents/{agent}", tag = "agents", params(("agent" = String, Path, pattern = r"^[^\u0000]*$", description = "the agent's id or name")),
    responses(
        (status = 200, description = "the agent, its prompt and its pending requests", body = AgentDetail),
        (status = 400, description = "malformed body, query or path (`invalid_request`)", body = ErrorBody),
        (status = 401, description = "missing or wrong bearer token (`unauthorized`)", body = ErrorBody),
        (status = 404, description = "no such agent (`not_found`)", body = ErrorBody),
        (status = 422, description = "a field is invalid; the message names it (`invalid`)", body = ErrorBody),
        (status = 503, description = "the store or the queue is unavailable (`unavailable`)", body = ErrorBody)
    )
)]
pub async fn get_agent(
    State(fleet): State<Fleet>,
    PathParam(agent): PathParam,
) -> Result<Response, ApiError> {
    Ok(Json(fleet.agent_detail(&agent).await?).into_response())
}

#[utoipa::path(
    post, path = "/v1/agents/{agent}/stop", tag = "agents", params(("agent" = String, Path, pattern = r"^[^\u0000]*$", description = "the agent's id or name")),
    responses(
        (status = 200, description = "the agent, stopped", body = Agent),
        (status = 400, description = "malformed body, query or path (`invalid_request`)", body = ErrorBody),
        (status = 401, description = "missing or wrong bearer token (`unauthorized`)", body = ErrorBody),
        (status = 404, description = "no such agent (`not_found`)", body = ErrorBody),
        (status = 409, description = "the agent is not in a state that allows it (`conflict`)", body = ErrorBody),
        (status = 422, description = "a field is invalid; the message names it (`invalid`)", body = ErrorBody),
        (status = 503, description = "the store or the queue is unavailable (`unavailable`)", body = ErrorBody)
    )
)]
/// Stops the agent and answers once it has stopped.
pub async fn stop_agent(
    State(fleet): State<Fleet>,
    PathParam(agent): PathParam,
) -> Result<Response, ApiError> {
    Ok(Json(fleet.stop(&agent, true).await?).into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResumeBody {
    /// Question id → answer; at least one, no NUL in either.
    answers: std::collections::BTreeMap<String, String>,
}

impl BodyError for ResumeBody {}

#[utoipa::path(
    post, path = "/v1/agents/{agent}/resume", tag = "agents", params(("agent" = String, Path, pattern = r"^[^\u0000]*$", description = "the agent's id or name")),
    request_body = ResumeBody,
    responses(
        (status = 202, description = "recorded; the worker on the agent's node resumes it", body = Agent),
        (status = 400, description = "malformed body, query or path (`invalid_request`)", body = ErrorBody),
        (status = 401, description = "missing or wrong bearer token (`unauthorized`)", body = ErrorBody),
        (status = 404, description = "no such agent (`not_found`)", body = ErrorBody),
        (status = 409, description = "the agent is not in a state that allows it (`conflict`)", body = ErrorBody),
        (status = 413, description = "the body is over `api.max_body_bytes` (`body_too_large`)", body = ErrorBody),
        (status = 422, description = "a field is invalid; the message names it (`invalid`)", body = ErrorBody),
        (status = 503, description = "the store or the queue is unavailable (`unavailable`)", body = ErrorBody)
    )
)]
/// Records the resume; 202 with the agent (its worker picks the request up).
pub async fn resume_agent(
    State(fleet): State<Fleet>,
    PathParam(agent): PathParam,
    extract::Json(body): extract::Json<ResumeBody>,
) -> Result<Response, ApiError> {
    let agent = fleet.resume(&agent, body.answers).await?;
    Ok((StatusCode::ACCEPTED, Json(agent)).into_response())
}

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// Delete the agent's branch on the remote too.
    #[serde(default)]
    remote_branch: bool,
}

#[utoipa::path(
    delete, path = "/v1/agents/{agent}", tag = "agents", params(("agent" = String, Path, pattern = r"^[^\u0000]*$", description = "the agent's id or name"), DeleteQuery),
    responses(
        (status = 200, description = "deleted: `{\"deleted\": NAME}`", body = Deleted),
        (status = 400, description = "malformed body, query or path (`invalid_request`)", body = ErrorBody),
        (status = 401, description = "missing or wrong bearer token (`unauthorized`)", body = ErrorBody),
        (status = 404, description = "no such agent (`not_found`)", body = ErrorBody),
        (status = 422, description = "a field is invalid; the message names it (`invalid`)", body = ErrorBody),
        (status = 503, description = "the store or the queue is unavailable (`unavailable`)", body = ErrorBody)
    )
)]
pub async fn delete_agent(
    State(fleet): State<Fleet>,
    PathParam(agent): PathParam,
    Query(q): Query<DeleteQuery>,
) -> Result<Response, ApiError> {
    let name = fleet.delete(&agent, q.remote_branch).await?;
    Ok(Json(serde_json::json!({"deleted": name})).into_response())
}

#[utoipa::path(
    post, path = "/v1/agents/{agent}/dismiss", tag = "agents", params(("agent" = String, Path, pattern = r"^[^\u0000]*$", description = "the agent's id or name")),
    responses(
        (status = 200, description = "hidden from lists", body = Agent),
        (status = 400, description = "malformed body, query or path (`invalid_request`)", body = ErrorBody),
        (status = 401, description = "missing or wrong bearer token (`unauthorized`)", body = ErrorBody),
        (status = 404, description = "no such agent (`not_found`)", body = ErrorBody),
        (status = 422, description = "a field is invalid; the message names it (`invalid`)", body = ErrorBody),
        (status = 503, description = "the store or the queue is unavailable (`unavailable`)", body = ErrorBody)
    )
)]
pub async fn dismiss_agent(
    State(fleet): State<Fleet>,
    PathParam(agent): PathParam,
) -> Result<Response, ApiError> {
    Ok(Json(fleet.dismiss(&agent).await?).into_response())
}

#[utoipa::path(
    post, path = "/v1/agents/{agent}/cleanup", tag = "agents", params(("agent" = String, Path, pattern = r"^[^\u0000]*$", description = "the agent's id or name")),
    responses(
        (status = 202, description = "recorded; the agent's node frees its checkout", body = Agent),
        (status = 400, description = "malformed body, query or path (`invalid_request`)", body = ErrorBody),
        (status = 401, description = "missing or wrong bearer token (`unauthorized`)", body = ErrorBody),
        (status = 404, description = "no such agent (`not_found`)", body = ErrorBody),
        (status = 409, description = "the agent is not in a state that allows it (`conflict`)", body = ErrorBody),
        (status = 422, description = "a field is invalid; the message names it (`invalid`)", body = ErrorBody),
        (status = 503, description = "the store or the queue is unavailable (`unavailable`)", body = ErrorBody)
    )
)]
/// Frees an ended agent's checkout on its node; 202 with the agent.
pub async fn cleanup_agent(
    State(fleet): State<Fleet>,
    PathParam(agent): PathParam,
) -> Result<Response, ApiError> {
    let agent = fleet.cleanup(&agent).await?;
    Ok((axum::http::StatusCode::ACCEPTED, Json(agent)).into_response())
}

/// Which agents, and which page of them: every filter given must hold.
#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AgentListQuery {
    /// Dismissed agents too.
    #[serde(default)]
    all: bool,
    /// Only agents in one of these statuses (repeat the parameter for several).
    #[serde(default)]
    status: Vec<AgentStatus>,
    /// Only the agents of this project.
    project: Option<String>,
    /// Only agents of this provider.
    provider: Option<String>,
    /// Only agents spawned with this task id.
    task_id: Option<String>,
    /// Only agents whose name starts with this.
    name: Option<String>,
    /// Only agents whose name starts with this or whose task id is this.
    search: Option<String>,
    /// Only agents created at or after this time (RFC 3339).
    created_after: Option<DateTime<Utc>>,
    /// Only agents created before this time (RFC 3339).
    created_before: Option<DateTime<Utc>>,
    /// How many per page (default 100).
    #[param(minimum = 1, maximum = 1000)]
    #[serde(default, deserialize_with = "page_limit")]
    limit: Option<u32>,
    /// The `next_cursor` of the page before.
    cursor: Option<String>,
}

/// A page size as given: a number (an empty `limit=` is refused, not taken as none).
fn page_limit<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let text = String::deserialize(d)?;
    text.parse()
        .map(Some)
        .map_err(|_| serde::de::Error::custom(format!("limit must be a number, not '{text}'")))
}

/// Which page of a list.
#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// How many per page (default 100).
    #[param(minimum = 1, maximum = 1000)]
    #[serde(default, deserialize_with = "page_limit")]
    limit: Option<u32>,
    /// The `next_cursor` of the page before.
    cursor: Option<String>,
}

impl PageQuery {
    pub fn page(&self) -> Result<PageRequest, ApiError> {
        PageRequest::parse(self.limit, self.cursor.as_deref()).map_err(ApiError::invalid)
    }
}

/// Which workers, and which page of them.
#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WorkerListQuery {
    /// Every one, also workers that ended more than ten minutes ago.
    #[serde(default)]
    all: bool,
    /// How many per page (default 100).
    #[param(minimum = 1, maximum = 1000)]
    #[serde(default, deserialize_with = "page_limit")]
    limit: Option<u32>,
    /// The `next_cursor` of the page before.
    cursor: Option<String>,
}

#[utoipa::path(
    get, path = "/v1/agents/{agent}/events", tag = "agents",
    params(("agent" = String, Path, pattern = r"^[^\u0000]*$", description = "the agent's id or name"), ("last-event-id" = Option<i64>, Header, nullable = false, minimum = 0, maximum = 9223372036854775807_i64, description = "resume after this event sequence number")),
    responses(
        (status = 200, content_type = "text/event-stream", body = StoredEvent, description = "Server-Sent Events: the stored backlog after `Last-Event-ID`, then live. Each event has `id` (its sequence number), `event` (its kind) and `data` (the stored event as JSON); an `error` event carries `{\"error\": {\"code\": \"unavailable\", \"message\"}}`"),
        (status = 400, description = "malformed body, query or path (`invalid_request`)", body = ErrorBody),
        (status = 401, description = "missing or wrong bearer token (`unauthorized`)", body = ErrorBody),
        (status = 404, description = "no such agent (`not_found`)", body = ErrorBody),
        (status = 422, description = "a field is invalid; the message names it (`invalid`)", body = ErrorBody),
        (status = 503, description = "the store or the queue is unavailable (`unavailable`)", body = ErrorBody)
    )
)]
pub async fn agent_events(
    State(fleet): State<Fleet>,
    PathParam(agent): PathParam,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let agent = fleet.store.agent(&agent).await?;
    let after = match headers.get("last-event-id") {
        None => 0,
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .filter(|n| *n >= 0)
            .ok_or_else(|| {
                ApiError::bad_request("Last-Event-ID must be an event sequence number")
            })?,
    };
    let stream =
        events::follow(fleet.store.clone(), fleet.events.clone(), agent.id, after).map(|item| {
            Ok(match item {
                Ok(event) => Event::default()
                    .id(event.seq.to_string())
                    .event(event.kind.clone())
                    .data(serde_json::to_string(&event).unwrap_or_default()),
                Err(message) => Event::default().event("error").data(
                    serde_json::json!({"error": {"code": "unavailable", "message": message}})
                        .to_string(),
                ),
            })
        });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

#[utoipa::path(
    get, path = "/v1/workers", tag = "workers", params(WorkerListQuery),
    responses(
        (status = 200, description = "one page of the live workers and those that ended in the last ten minutes (`all`: every one), newest first", body = Page<WorkerInfo>),
        (status = 400, description = "malformed body, query or path (`invalid_request`)", body = ErrorBody),
        (status = 401, description = "missing or wrong bearer token (`unauthorized`)", body = ErrorBody),
        (status = 422, description = "a field is invalid; the message names it (`invalid`)", body = ErrorBody),
        (status = 503, description = "the store or the queue is unavailable (`unavailable`)", body = ErrorBody)
    )
)]
/// Live workers and those that ended in the last ten minutes; `?all=true`: every one.
pub async fn list_workers(
    State(fleet): State<Fleet>,
    Query(q): Query<WorkerListQuery>,
) -> Result<Response, ApiError> {
    let page = PageRequest::parse(q.limit, q.cursor.as_deref()).map_err(ApiError::invalid)?;
    Ok(Json(fleet.list_workers(q.all, &page).await?).into_response())
}

#[utoipa::path(
    get, path = "/healthz", tag = "health", security(),
    responses((status = 200, description = "the process is up: `{\"status\": \"ok\"}`", body = Health))
)]
pub async fn healthz() -> Response {
    Json(serde_json::json!({"status": "ok"})).into_response()
}

#[utoipa::path(
    get, path = "/metrics", tag = "health", security(),
    responses((status = 200, description = "Prometheus text", content_type = "text/plain", body = String))
)]
/// Prometheus text: this process's metrics and the fleet's queue, read from the store.
pub async fn metrics(State(fleet): State<Fleet>) -> Response {
    crate::metrics::response(fleet.store.queue_stats().await)
}

#[utoipa::path(
    get, path = "/readyz", tag = "health", security(),
    responses(
        (status = 200, description = "ready", body = Readiness),
        (status = 503, description = "the store (or Redis) is unreachable", body = Readiness)
    )
)]
pub async fn readyz(State(fleet): State<Fleet>) -> Response {
    let deps = super::readiness::probe(&fleet).await;
    let ok = deps.ready();
    let (store, events) = (deps.store, deps.events);
    let mode = match fleet.settings.backend() {
        crate::config::Backend::Embedded => "embedded",
        crate::config::Backend::Distributed => "distributed",
    };
    let body = serde_json::json!({
        "status": if ok { "ready" } else { "unavailable" },
        "mode": mode,
        "store": store.err().unwrap_or_else(|| "ok".into()),
        "events": events.err().unwrap_or_else(|| "ok".into()),
    });
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

/// `DELETE /v1/agents/{agent}`'s answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Deleted {
    /// The deleted agent's name.
    pub deleted: String,
}

/// `GET /healthz`'s answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: String,
}

/// `GET /readyz`'s answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ready` or `unavailable`.
    pub status: String,
    /// `embedded` or `distributed`.
    pub mode: String,
    /// `ok`, or why the store cannot be reached.
    pub store: String,
    /// `ok`, or why the event bus (Redis) cannot be reached.
    pub events: String,
}
