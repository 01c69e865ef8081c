//! The HTTP API for upstream services (axum): the same operations as the CLI, JSON errors
//! `{ "error": { "code", "message" } }`, bearer-token auth, and Server-Sent Events for an
//! agent's output (the stored backlog from `Last-Event-ID`, then live).

mod accounts;
mod connection;
mod diff;
mod error;
pub(crate) mod extract;
pub mod openapi;
mod projects;
mod queue;
pub mod readiness;
mod routes;
mod server;
mod usage;
mod webhooks;

pub(crate) use server::{ConnectionLimits, serve as serve_router};

pub use error::ApiError;

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::HeaderValue;
use axum::http::header::AUTHORIZATION;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::fleet::Fleet;

pub fn router(fleet: Fleet) -> Router {
    let v1 = Router::new()
        .route(
            "/v1/agents",
            post(routes::spawn_agent).get(routes::list_agents),
        )
        .route(
            "/v1/agents/{agent}",
            get(routes::get_agent).delete(routes::delete_agent),
        )
        .route("/v1/agents/{agent}/stop", post(routes::stop_agent))
        .route("/v1/agents/{agent}/resume", post(routes::resume_agent))
        .route("/v1/agents/{agent}/dismiss", post(routes::dismiss_agent))
        .route("/v1/agents/{agent}/cleanup", post(routes::cleanup_agent))
        .route("/v1/agents/{agent}/events", get(routes::agent_events))
        .route("/v1/agents/{agent}/diff", get(diff::agent_diff))
        .route("/v1/workers", get(routes::list_workers))
        .route("/v1/usage", get(usage::usage))
        .route("/v1/queue", get(queue::queue))
        .route(
            "/v1/projects",
            post(projects::add_project).get(projects::list_projects),
        )
        .route(
            "/v1/projects/{name}",
            axum::routing::patch(projects::update_project).delete(projects::remove_project),
        )
        .route(
            "/v1/accounts",
            post(accounts::add_account).get(accounts::list_accounts),
        )
        .route(
            "/v1/accounts/{label}",
            axum::routing::delete(accounts::remove_account),
        )
        .route("/v1/accounts/{label}/reset", post(accounts::reset_account))
        .route(
            "/v1/webhooks",
            post(webhooks::add_webhook).get(webhooks::list_webhooks),
        )
        .route(
            "/v1/webhooks/{webhook}",
            get(webhooks::get_webhook).delete(webhooks::remove_webhook),
        )
        .route(
            "/v1/webhooks/{webhook}/deliveries",
            get(webhooks::list_deliveries),
        )
        .route(
            "/v1/webhook-deliveries/{delivery}/redeliver",
            post(webhooks::redeliver),
        );
    // Inside the token check: a request is counted against the token it proved.
    let v1 = match RateLimit::from_settings(&fleet.settings.api) {
        Some(limit) => v1.layer(middleware::from_fn(move |request: Request, next: Next| {
            let limit = limit.clone();
            async move { limit.check(request, next).await }
        })),
        None => v1,
    }
    .layer(middleware::from_fn_with_state(
        fleet.clone(),
        crate::web::authenticate,
    ));
    let max_body_bytes = fleet.settings.api.max_body_bytes;
    Router::new()
        .merge(v1)
        .merge(crate::web::router())
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .route("/metrics", get(routes::metrics))
        .route("/openapi.json", get(openapi::serve_document))
        .route_layer(middleware::from_fn(trace_request))
        // After every route: it is given to the routes there are.
        .method_not_allowed_fallback(error::method_not_allowed)
        .fallback(routes::not_found)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::map_response(move |response: Response| {
            error::into_json_error(response, max_body_bytes)
        }))
        // Outermost: every response, whoever made it, carries the request's id.
        .layer(middleware::from_fn(request_id))
        .with_state(fleet)
}

/// `api.rate_limit`: requests per second per bearer token (one budget for all callers when
/// no tokens are set), with bursts of `api.rate_limit_burst`; over it, 429 with
/// `retry-after`.
#[derive(Clone)]
struct RateLimit(std::sync::Arc<governor::DefaultKeyedRateLimiter<String>>);

impl RateLimit {
    fn from_settings(api: &crate::config::ApiSettings) -> Option<Self> {
        let rate = std::num::NonZeroU32::new(api.rate_limit)?;
        let burst = std::num::NonZeroU32::new(api.rate_limit_burst).unwrap_or(rate);
        let quota = governor::Quota::per_second(rate).allow_burst(burst);
        Some(Self(std::sync::Arc::new(governor::RateLimiter::keyed(
            quota,
        ))))
    }

    async fn check(self, request: Request, next: Next) -> Response {
        let token = request
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token)
            .unwrap_or_default()
            .to_string();
        match self.0.check_key(&token) {
            Ok(()) => next.run(request).await,
            Err(not_until) => {
                use governor::clock::{Clock, DefaultClock};
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                let mut response = ApiError::new(
                    axum::http::StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!(
                        "over api.rate_limit for this token; retry in {} s",
                        seconds.max(1)
                    ),
                )
                .into_response();
                response.headers_mut().insert(
                    axum::http::header::RETRY_AFTER,
                    HeaderValue::from(seconds.max(1)),
                );
                response
            }
        }
    }
}

/// The header that names a request.
const X_REQUEST_ID: &str = "x-request-id";

/// A request's id: the caller's `x-request-id` when it is 1 to 128 visible ASCII
/// characters, else a new one (a UUID). Every response carries it back, and the request's
/// span (so its log lines) names it.
#[derive(Clone)]
struct RequestId(HeaderValue);

async fn request_id(mut request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(X_REQUEST_ID)
        .filter(|v| (1..=128).contains(&v.len()) && v.as_bytes().iter().all(u8::is_ascii_graphic))
        .cloned();
    let id = given.unwrap_or_else(|| {
        HeaderValue::from_str(&uuid::Uuid::now_v7().to_string()).expect("a UUID is a header")
    });
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(request).await;
    response.headers_mut().insert(X_REQUEST_ID, id);
    response
}

/// A SERVER span per request, named by its route, with the request's id; a caller's W3C
/// `traceparent` (and `tracestate`) header makes it part of the caller's trace.
async fn trace_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let span = tracing::info_span!(
        "http request",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        http.request.id = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
    );
    if let Some(RequestId(id)) = request.extensions().get::<RequestId>()
        && let Ok(id) = id.to_str()
    {
        span.record("http.request.id", id);
    }
    let headers = request.headers();
    crate::telemetry::set_parent(
        &span,
        ["traceparent", "tracestate"]
            .into_iter()
            .filter_map(|k| Some((k, headers.get(k)?.to_str().ok()?))),
    );
    let response = next.run(request).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    response
}

/// The token of an `Authorization: Bearer <token>` value. The scheme is matched without
/// regard to case (RFC 7235 §2.1), so `bearer t` is as good as `Bearer t`.
pub(crate) fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim_start_matches(' ');
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Refuses to expose an unauthenticated API beyond this machine.
pub fn check_bind(addr: SocketAddr, tokens: &[String]) -> anyhow::Result<()> {
    if !addr.ip().is_loopback() && tokens.is_empty() {
        anyhow::bail!(
            "refusing to serve on non-loopback address {addr} without api.tokens (set AGENTFLEET__API__TOKENS)"
        );
    }
    Ok(())
}

/// Serves until `stop` is cancelled; returns the bound address through `bound`.
pub async fn serve(
    fleet: Fleet,
    stop: CancellationToken,
    bound: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> anyhow::Result<()> {
    let addr = fleet.settings.api_bind()?;
    check_bind(addr, &fleet.settings.api.tokens)?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, "API listening");
    if let Some(tx) = bound {
        let _ = tx.send(local);
    }
    let limits = server::ConnectionLimits::from_settings(&fleet.settings.api);
    server::serve(listener, router(fleet), limits, stop).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_loopback_needs_tokens() {
        let public: SocketAddr = "0.0.0.0:7070".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:7070".parse().unwrap();
        assert!(check_bind(public, &[]).is_err());
        assert!(check_bind(public, &["t".into()]).is_ok());
        assert!(check_bind(local, &[]).is_ok());
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for value in ["Bearer t", "bearer t", "BEARER t", "bEaReR  t"] {
            assert_eq!(bearer_token(value), Some("t"), "{value}");
        }
        for value in ["Basic t", "Bearer", "Bearer ", "Bearert", "t"] {
            assert_eq!(bearer_token(value), None, "{value}");
        }
    }
}
