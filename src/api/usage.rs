//! `GET /v1/usage`: what the fleet's agents used, summed by project, account, provider or
//! UTC day over a period, from the usage records the workers store with each usage event.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::Deserialize;

use super::ApiError;
use super::error::ErrorBody;
use super::extract::Query;
use crate::domain::{UsageGroup, UsageReport, parse_ago};
use crate::fleet::Fleet;
use crate::store::UsageQuery;

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageParams {
    /// What to sum by (default `project`).
    #[serde(default)]
    group_by: Option<UsageGroup>,
    /// Usage recorded since this long ago: a number and a unit, `s`, `m`, `h`, `d` or `w`
    /// (`7d`). Default: all of it.
    #[param(pattern = r"^[0-9]{1,6}[smhdw]$")]
    #[serde(default)]
    since: Option<String>,
    /// Usage recorded until this long ago (same form). Default: until now.
    #[param(pattern = r"^[0-9]{1,6}[smhdw]$")]
    #[serde(default)]
    until: Option<String>,
}

#[utoipa::path(
    get, path = "/v1/usage", tag = "usage", params(UsageParams),
    responses(
        (status = 200, description = "the usage per group and in all", body = UsageReport),
        (status = 400, description = "malformed body, query or path (`invalid_request`)", body = ErrorBody),
        (status = 401, description = "missing or wrong bearer token (`unauthorized`)", body = ErrorBody),
        (status = 503, description = "the store or the queue is unavailable (`unavailable`)", body = ErrorBody)
    )
)]
/// The usage of the agents, summed by `group_by` over `[since, until)`.
pub async fn usage(
    State(fleet): State<Fleet>,
    Query(q): Query<UsageParams>,
) -> Result<Response, ApiError> {
    let now = Utc::now();
    let bound = |name: &str, value: Option<&str>| match value {
        None => Ok(None),
        Some(text) => parse_ago(text, now).ok_or_else(|| {
            ApiError::bad_request(format!(
                "{name} must be a number and a unit (s, m, h, d or w), e.g. 7d; got {text:?}"
            ))
        }),
    };
    let query = UsageQuery {
        group_by: q.group_by.unwrap_or_default(),
        since: bound("since", q.since.as_deref())?,
        until: bound("until", q.until.as_deref())?,
    };
    let groups = fleet.store.usage_totals(&query).await?;
    let report = UsageReport::new(query.group_by, query.since, query.until, groups);
    Ok(Json(report).into_response())
}
