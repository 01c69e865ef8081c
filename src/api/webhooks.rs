//! `/v1/webhooks`: the same subscription operations as `agentfleet webhook` — subscribe
//! (the answer carries the signing secret, the only time it is shown), list, get, remove,
//! a subscription's recent deliveries, and redelivering one.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::ApiError;
use super::error::ErrorBody;
use super::extract::{self, BodyError, PathParam, Query};
use super::routes::PageQuery;
use crate::domain::{Cursor, Page, Webhook, WebhookDelivery, WebhookEvent};
use crate::fleet::Fleet;
use crate::webhooks::{self, Subscribed};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWebhookBody {
    /// Where to POST the events: an `http://` or `https://` URL without a user or password.
    /// Private, loopback and link-local targets are refused unless `webhooks.allow_private`.
    #[schema(max_length = 2048, pattern = r"^[hH][tT][tT][pP][sS]?://[^\u0000]+$")]
    url: String,
    /// The events to receive (at least one); all of them when left out.
    #[serde(default, deserialize_with = "present")]
    #[schema(min_items = 1, nullable = false)]
    events: Option<Vec<WebhookEvent>>,
    /// Only agents of this project; every project when left out.
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false, pattern = r"^[^\u0000]*$")]
    project: Option<String>,
}

impl BodyError for NewWebhookBody {}

/// A field that may be left out but not given as `null` (the document says what it is).
fn present<'de, D, T>(de: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(de).map(Some)
}

#[utoipa::path(
    post, path = "/v1/webhooks", tag = "webhooks", request_body = NewWebhookBody,
    responses(
        (status = 201, description = "subscribed; `secret` (`whsec_…`) is shown this once", body = Subscribed),
        (status = 400, description = "malformed body, query or path (`invalid_request`)", body = ErrorBody),
        (status = 401, description = "missing or wrong bearer token (`unauthorized`)", body = ErrorBody),
        (status = 404, description = "no such project (`not_found`)", body = ErrorBody),
        (status = 413, description = "the body is over `api.max_body_bytes` (`body_too_large`)", body = ErrorBody),
        (status = 422, description = "a field is invalid, or the URL is a private target (`invalid`); the message names it", body = ErrorBody),
        (status = 503, description = "the store or the queue is unavailable (`unavailable`)", body = ErrorBody)
    )
)]
pub async fn add_webhook(
    State(fleet): State<Fleet>,
    extract::Json(body): extract::Json<NewWebhookBody>,
) -> Result<Response, ApiError> {
    let subscribed =
        webhooks::subscribe(&fleet, &body.url, body.events, body.project.as_deref()).await?;
    Ok((StatusCode::CREATED, Json(subscribed)).into_response())
}

#[utoipa::path(
    get, path = "/v1/webhooks", tag = "webhooks", params(PageQuery),
    responses(
        (status = 200, description = "one page of the subscriptions (never their secrets), newest first", body = Page<Webhook>),
        (status = 400, description = "malformed body, query or path (`invalid_request`)", body = ErrorBody),
        (status = 401, description = "missing or wrong bearer token (`unauthorized`)", body = ErrorBody),
        (status = 422, description = "a field is invalid; the message names it (`invalid`)", body = ErrorBody),
        (status = 503, description = "the store or the queue is unavailable (`unavailable`)", body = ErrorBody)
    )
)]
pub async fn list_webhooks(
    State(fleet): State<Fleet>,
    Query(q): Query<PageQuery>,
) -> Result<Response, ApiError> {
    let page = q.page()?;
    // Subscriptions stay few: read whole, paged here.
    let items = webhooks::list(&fleet).await?;
    let page = Page::from_all(items, &page, |w: &Webhook| Cursor::new(w.created_at, w.id));
    Ok(Json(page).into_response())
}

#[utoipa::path(
    get, path = "/v1/webhooks/{webhook}", tag = "webhooks",
    params(("webhook" = String, Path, pattern = r"^[^\u0000]*$", description = "the subscription's id")),
    responses(
        (status = 200, description = "the subscription (never its secret)", body = Webhook),
        (status = 400, description = "malformed body, query or path (`invalid_request`)", body = ErrorBody),
        (status = 401, description = "missing or wrong bearer token (`unauthorized`)", body = ErrorBody),
        (status = 404, description = "no such subscription (`not_found`)", body = ErrorBody),
        (status = 503, description = "the store or the queue is unavailable (`unavailable`)", body = ErrorBody)
    )
)]
pub async fn get_webhook(
    State(fleet): State<Fleet>,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    Ok(Json(webhooks::get(&fleet, &id).await?).into_response())
}

/// `DELETE /v1/webhooks/{webhook}`'s answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct WebhookRemoved {
    /// The removed subscription's id.
    pub deleted: uuid::Uuid,
}

#[utoipa::path(
    delete, path = "/v1/webhooks/{webhook}", tag = "webhooks",
    params(("webhook" = String, Path, pattern = r"^[^\u0000]*$", description = "the subscription's id")),
    responses(
        (status = 200, description = "removed, with its deliveries (those not sent yet are dropped)", body = WebhookRemoved),
        (status = 400, description = "malformed body, query or path (`invalid_request`)", body = ErrorBody),
        (status = 401, description = "missing or wrong bearer token (`unauthorized`)", body = ErrorBody),
        (status = 404, description = "no such subscription (`not_found`)", body = ErrorBody),
        (status = 503, description = "the store or the queue is unavailable (`unavailable`)", body = ErrorBody)
    )
)]
pub async fn remove_webhook(
    State(fleet): State<Fleet>,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    let deleted = webhooks::remove(&fleet, &id).await?;
    Ok(Json(WebhookRemoved { deleted }).into_response())
}

/// `GET /v1/webhooks/{webhook}/deliveries`' answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct DeliveryList {
    /// The most recent deliveries (at most 50), newest first.
    pub items: Vec<WebhookDelivery>,
    /// Always `null`.
    pub next_cursor: Option<String>,
}

#[utoipa::path(
    get, path = "/v1/webhooks/{webhook}/deliveries", tag = "webhooks",
    params(("webhook" = String, Path, pattern = r"^[^\u0000]*$", description = "the subscription's id")),
    responses(
        (status = 200, description = "its recent deliveries, newest first: event, status, attempts, last error", body = DeliveryList),
        (status = 400, description = "malformed body, query or path (`invalid_request`)", body = ErrorBody),
        (status = 401, description = "missing or wrong bearer token (`unauthorized`)", body = ErrorBody),
        (status = 404, description = "no such subscription (`not_found`)", body = ErrorBody),
        (status = 503, description = "the store or the queue is unavailable (`unavailable`)", body = ErrorBody)
    )
)]
pub async fn list_deliveries(
    State(fleet): State<Fleet>,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    let items = webhooks::deliveries(&fleet, &id).await?;
    Ok(Json(DeliveryList {
        items,
        next_cursor: None,
    })
    .into_response())
}

#[utoipa::path(
    post, path = "/v1/webhook-deliveries/{delivery}/redeliver", tag = "webhooks",
    params(("delivery" = String, Path, pattern = r"^[^\u0000]*$", description = "the delivery's id (its `webhook-id`)")),
    responses(
        (status = 202, description = "due again now, with the same `webhook-id`; a worker sends it", body = WebhookDelivery),
        (status = 400, description = "malformed body, query or path (`invalid_request`)", body = ErrorBody),
        (status = 401, description = "missing or wrong bearer token (`unauthorized`)", body = ErrorBody),
        (status = 404, description = "no such delivery (`not_found`)", body = ErrorBody),
        (status = 503, description = "the store or the queue is unavailable (`unavailable`)", body = ErrorBody)
    )
)]
pub async fn redeliver(
    State(fleet): State<Fleet>,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    let delivery = webhooks::redeliver(&fleet, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(delivery)).into_response())
}
