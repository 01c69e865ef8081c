//! The worker's own small HTTP endpoint (`worker.metrics_bind`): `GET /metrics`
//! (Prometheus text), `/healthz` (the process answers) and `/readyz` (the store and Redis
//! answer in time and the lease is held) — what orchestrators probe and Prometheus scrapes.
//! Workers serve no API, so this is all they listen for; it runs on the API's server, with
//! its connection limits.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use super::runtime::Runtime;

/// Serves until `stop`; does nothing when `worker.metrics_bind` is empty.
pub async fn run(rt: Arc<Runtime>, addr: Option<SocketAddr>, stop: CancellationToken) {
    let Some(addr) = addr else { return };
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(%addr, error = %e, "cannot serve the worker health endpoint");
            return;
        }
    };
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(addr = %local, "worker health endpoint listening");
    let limits = crate::api::ConnectionLimits::from_settings(&rt.fleet.settings.api);
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(rt);
    // The API's server, with its limits (`api.header_timeout`, `api.idle_timeout`,
    // `api.max_connections`): a probe that connects and says nothing is let go.
    crate::api::serve_router(listener, app, limits, stop).await;
}

async fn metrics(State(rt): State<Arc<Runtime>>) -> Response {
    crate::metrics::response(rt.fleet.store.queue_stats().await)
}

async fn healthz(State(rt): State<Arc<Runtime>>) -> Response {
    Json(serde_json::json!({"status": "ok", "worker_id": rt.owner.worker_id})).into_response()
}

async fn readyz(State(rt): State<Arc<Runtime>>) -> Response {
    let deps = crate::api::readiness::probe(&rt.fleet).await;
    let lease_held = !rt.lease_lost.is_cancelled();
    // Slots closed: the workspace cannot be written (see `disk.rs`).
    let disk = rt.slots.closed_reason();
    let ok = deps.ready() && lease_held && disk.is_none();
    let (store, redis) = (deps.store, deps.events);
    let body = serde_json::json!({
        "status": if ok { "ready" } else { "unavailable" },
        "worker_id": rt.owner.worker_id,
        "store": store.err().unwrap_or_else(|| "ok".into()),
        "redis": redis.err().unwrap_or_else(|| "ok".into()),
        "lease": if lease_held { "held" } else { "lost" },
        "disk": disk.unwrap_or_else(|| "ok".into()),
        "sandbox": {
            "mode": if rt.sandbox.enabled { "on" } else { "off" },
            "layers": rt.sandbox.report.layers,
        },
    });
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}
