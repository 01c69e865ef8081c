//! `GET /v1/agents/{agent}/diff`: the agent's pushed work against the commit it started
//! from (see `fleet::diff` for when there is one).

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::ApiError;
use super::error::ErrorBody;
use super::extract::{PathParam, Query};
use crate::fleet::{AgentDiff, Fleet};

/// What to include.
#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DiffQuery {
    /// The files and counts only, without the patch (`patch` is null).
    #[serde(default)]
    stat: bool,
}

#[utoipa::path(
    get, path = "/v1/agents/{agent}/diff", tag = "agents",
    params(("agent" = String, Path, pattern = r"^[^\u0000]*$", description = "the agent's id or name"), DiffQuery),
    responses(
        (status = 200, description = "the files the agent's pushed commit changed against its base commit, with line counts, and the unified patch (cut at `api.diff_max_bytes`, then `truncated` is true); empty when its run ended without pushing", body = AgentDiff),
        (status = 400, description = "malformed body, query or path (`invalid_request`)", body = ErrorBody),
        (status = 401, description = "missing or wrong bearer token (`unauthorized`)", body = ErrorBody),
        (status = 404, description = "no such agent (`not_found`)", body = ErrorBody),
        (status = 409, description = "the agent has pushed nothing yet, or its pushed commit is no longer on the remote (`conflict`)", body = ErrorBody),
        (status = 422, description = "a field is invalid; the message names it (`invalid`)", body = ErrorBody),
        (status = 503, description = "the store, or the project's remote, is unavailable (`unavailable`)", body = ErrorBody)
    )
)]
pub async fn agent_diff(
    State(fleet): State<Fleet>,
    PathParam(agent): PathParam,
    Query(q): Query<DiffQuery>,
) -> Result<Response, ApiError> {
    Ok(Json(fleet.agent_diff(&agent, !q.stat).await?).into_response())
}
