//! `GET /v1/queue`: what `agentfleet queue --json` prints — the spawn backlog, requests per
//! kind and status, agents per status, and the control queues per node.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};

use super::ApiError;
use super::error::ErrorBody;
use crate::fleet::Fleet;

/// The queue as the store sees it now.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct QueueView {
    /// Spawn requests waiting for a worker.
    pub depth: i64,
    /// When the oldest of them was recorded.
    pub oldest_pending_at: Option<DateTime<Utc>>,
    /// How long the oldest of them has waited, by the store's clock.
    pub oldest_pending_age_seconds: Option<f64>,
    /// Requests per kind (`spawn`, `stop`, `delete`, `resume`, …), then per status.
    pub by_kind: BTreeMap<String, BTreeMap<String, i64>>,
    /// Agents per status.
    pub agents_by_status: BTreeMap<String, i64>,
    /// Pending control requests (stop, delete, resume, …) per node.
    pub control_queues: Vec<ControlQueue>,
}

/// The pending control requests of one node.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ControlQueue {
    /// The node; `null` for agents never placed on one.
    pub node_id: Option<String>,
    pub depth: i64,
    pub oldest_age_seconds: Option<f64>,
}

#[utoipa::path(
    get, path = "/v1/queue", tag = "workers",
    responses(
        (status = 200, description = "the spawn backlog, requests per kind and status, agents per status, control queues per node", body = QueueView),
        (status = 401, description = "missing or wrong bearer token (`unauthorized`)", body = ErrorBody),
        (status = 503, description = "the store or the queue is unavailable (`unavailable`)", body = ErrorBody)
    )
)]
/// The queue: what `agentfleet queue --json` prints.
pub async fn queue(State(fleet): State<Fleet>) -> Result<Response, ApiError> {
    let stats = fleet.store.queue_stats().await?;
    let controls = fleet.store.control_queue_stats().await?;
    Ok(Json(QueueView {
        depth: stats.depth,
        oldest_pending_at: stats.oldest_pending_at,
        oldest_pending_age_seconds: stats.oldest_pending_age_seconds,
        by_kind: stats.by_kind,
        agents_by_status: stats.agents_by_status,
        control_queues: controls
            .into_iter()
            .map(|c| ControlQueue {
                node_id: c.node_id,
                depth: c.depth,
                oldest_age_seconds: c.oldest_age_seconds,
            })
            .collect(),
    })
    .into_response())
}
