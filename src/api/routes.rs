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
use super::extract::{self, BodyError, PathParam, Query};
use crate::domain::SpawnRequest;
use crate::events;
use crate::fleet::Fleet;

impl BodyError for SpawnRequest {}

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

pub async fn list_agents(
    State(fleet): State<Fleet>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    Ok(Json(fleet.store.list_agents(q.all).await?).into_response())
}

pub async fn get_agent(
    State(fleet): State<Fleet>,
    PathParam(agent): PathParam,
) -> Result<Response, ApiError> {
    Ok(Json(fleet.agent_detail(&agent).await?).into_response())
}

/// Stops the agent and answers once it has stopped.
pub async fn stop_agent(
    State(fleet): State<Fleet>,
    PathParam(agent): PathParam,
) -> Result<Response, ApiError> {
    Ok(Json(fleet.stop(&agent, true).await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResumeBody {
    answers: std::collections::BTreeMap<String, String>,
}

impl BodyError for ResumeBody {}

/// Records the resume; 202 with the agent (its worker picks the request up).
pub async fn resume_agent(
    State(fleet): State<Fleet>,
    PathParam(agent): PathParam,
    extract::Json(body): extract::Json<ResumeBody>,
) -> Result<Response, ApiError> {
    let agent = fleet.resume(&agent, body.answers).await?;
    Ok((StatusCode::ACCEPTED, Json(agent)).into_response())
}

#[derive(Deserialize, Default)]
pub struct DeleteQuery {
    #[serde(default)]
    remote_branch: bool,
}

pub async fn delete_agent(
    State(fleet): State<Fleet>,
    PathParam(agent): PathParam,
    Query(q): Query<DeleteQuery>,
) -> Result<Response, ApiError> {
    let name = fleet.delete(&agent, q.remote_branch).await?;
    Ok(Json(serde_json::json!({"deleted": name})).into_response())
}

pub async fn dismiss_agent(
    State(fleet): State<Fleet>,
    PathParam(agent): PathParam,
) -> Result<Response, ApiError> {
    Ok(Json(fleet.dismiss(&agent).await?).into_response())
}

/// Frees an ended agent's checkout on its node; 202 with the agent.
pub async fn cleanup_agent(
    State(fleet): State<Fleet>,
    PathParam(agent): PathParam,
) -> Result<Response, ApiError> {
    let agent = fleet.cleanup(&agent).await?;
    Ok((axum::http::StatusCode::ACCEPTED, Json(agent)).into_response())
}

#[derive(Deserialize, Default)]
pub struct ListQuery {
    #[serde(default)]
    all: bool,
}

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

/// Live workers and those that ended in the last ten minutes; `?all=true`: every one.
pub async fn list_workers(
    State(fleet): State<Fleet>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let mut workers = fleet.store.list_workers().await?;
    if !q.all {
        workers.retain(crate::domain::WorkerInfo::recently_seen);
    }
    Ok(Json(workers).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewProject {
    name: String,
    remote_url: String,
    #[serde(default)]
    default_branch: Option<String>,
}

impl BodyError for NewProject {}

pub async fn add_project(
    State(fleet): State<Fleet>,
    extract::Json(p): extract::Json<NewProject>,
) -> Result<Response, ApiError> {
    let project = fleet
        .add_project(
            &p.name,
            &p.remote_url,
            p.default_branch.as_deref().unwrap_or("main"),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(project)).into_response())
}

pub async fn list_projects(State(fleet): State<Fleet>) -> Result<Response, ApiError> {
    Ok(Json(fleet.list_projects().await?).into_response())
}

pub async fn healthz() -> Response {
    Json(serde_json::json!({"status": "ok"})).into_response()
}

/// Prometheus text: this process's metrics and the fleet's queue, read from the store.
pub async fn metrics(State(fleet): State<Fleet>) -> Response {
    crate::metrics::response(&fleet.store).await
}

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
