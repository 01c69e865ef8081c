//! `/v1/projects`: the same project operations as `agentfleet project` — add, list,
//! update (remote, default branch) and remove (with its agents' records; `force` stops its
//! running agents first).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::ApiError;
use super::error::ErrorBody;
use super::extract::{self, BodyError, PathParam, Query};
use super::routes::PageQuery;
use crate::domain::{Page, Project};
use crate::fleet::Fleet;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProject {
    /// 1 to 64 of `[A-Za-z0-9._-]`, as a git branch name allows.
    #[schema(pattern = r"^(?!.*\.\.)(?!.*\.lock$)(?!.*\.$)[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$")]
    name: String,
    /// Not blank.
    #[schema(
        pattern = r"^[^\u0000]*[^\u0000\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\u0000]*$"
    )]
    remote_url: String,
    /// A valid git branch name; `main` when absent.
    #[serde(default)]
    #[schema(
        pattern = r"^(?!@$)(?![\s\S]*@\{)(?![\s\S]*\.\.)(?![\s\S]*//)(?!/)(?![\s\S]*/$)(?![\s\S]*\.$)(?!([\s\S]*/)?\.)(?![\s\S]*\.lock(/|$))[^\u0000-\u0020\u007f~^:?*\[\\]+$"
    )]
    default_branch: Option<String>,
}

impl BodyError for NewProject {}

#[utoipa::path(
    post, path = "/v1/projects", tag = "projects", request_body = NewProject,
    responses(
        (status = 201, description = "the project (its URL without credentials)", body = Project),
        (status = 400, description = "malformed body, query or path (`invalid_request`)", body = ErrorBody),
        (status = 401, description = "missing or wrong bearer token (`unauthorized`)", body = ErrorBody),
        (status = 409, description = "a project of that name exists (`conflict`)", body = ErrorBody),
        (status = 413, description = "the body is over `api.max_body_bytes` (`body_too_large`)", body = ErrorBody),
        (status = 422, description = "a field is invalid; the message names it (`invalid`)", body = ErrorBody),
        (status = 503, description = "the store or the queue is unavailable (`unavailable`)", body = ErrorBody)
    )
)]
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

#[utoipa::path(
    get, path = "/v1/projects", tag = "projects", params(PageQuery),
    responses(
        (status = 200, description = "one page of the projects (URLs without credentials), newest first", body = Page<Project>),
        (status = 400, description = "malformed body, query or path (`invalid_request`)", body = ErrorBody),
        (status = 401, description = "missing or wrong bearer token (`unauthorized`)", body = ErrorBody),
        (status = 422, description = "a field is invalid; the message names it (`invalid`)", body = ErrorBody),
        (status = 503, description = "the store or the queue is unavailable (`unavailable`)", body = ErrorBody)
    )
)]
pub async fn list_projects(
    State(fleet): State<Fleet>,
    Query(q): Query<PageQuery>,
) -> Result<Response, ApiError> {
    Ok(Json(fleet.list_projects(&q.page()?).await?).into_response())
}

/// A project's new remote, default branch and/or daily budget; at least one (`minProperties`, set in
/// `openapi.rs`: utoipa's `min_properties` comes out as `maxProperties`).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectUpdate {
    /// The new remote; not blank.
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    #[schema(
        pattern = r"^[^\u0000]*[^\u0000\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\u0000]*$"
    )]
    remote_url: Option<String>,
    /// The new default branch: a valid git branch name.
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    #[schema(
        pattern = r"^(?!@$)(?![\s\S]*@\{)(?![\s\S]*\.\.)(?![\s\S]*//)(?!/)(?![\s\S]*/$)(?![\s\S]*\.$)(?!([\s\S]*/)?\.)(?![\s\S]*\.lock(/|$))[^\u0000-\u0020\u007f~^:?*\[\\]+$"
    )]
    default_branch: Option<String>,
    /// What the project's agents may cost in a UTC day, in US dollars; `null` removes the
    /// budget.
    #[serde(default, deserialize_with = "given")]
    #[schema(value_type = Option<f64>, exclusive_minimum = 0.0)]
    daily_cost_usd: Option<Option<f64>>,
    /// Most of its agents starting or running at once, fleet-wide; `null` removes the cap.
    #[serde(default, deserialize_with = "given_count")]
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 2147483647)]
    max_concurrent: Option<Option<i64>>,
}

/// An integer field that may be left out (outer None) or given as `null` (inner None).
fn given_count<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<Option<i64>>, D::Error> {
    crate::domain::integral::option(de).map(Some)
}

impl BodyError for ProjectUpdate {}

/// A field that may be left out (outer None) or given as `null` (inner None).
fn given<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<Option<f64>>, D::Error> {
    Option::<f64>::deserialize(de).map(Some)
}

/// A field that may be left out but not given as `null` (the document says a string).
fn present<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<String>, D::Error> {
    String::deserialize(de).map(Some)
}

#[utoipa::path(
    patch, path = "/v1/projects/{name}", tag = "projects",
    params(("name" = String, Path, pattern = r"^[^\u0000]*$", description = "the project's name")),
    request_body = ProjectUpdate,
    responses(
        (status = 200, description = "the project as it is now (its URL without credentials)", body = Project),
        (status = 400, description = "malformed body, query or path (`invalid_request`)", body = ErrorBody),
        (status = 401, description = "missing or wrong bearer token (`unauthorized`)", body = ErrorBody),
        (status = 404, description = "no such project (`not_found`)", body = ErrorBody),
        (status = 413, description = "the body is over `api.max_body_bytes` (`body_too_large`)", body = ErrorBody),
        (status = 422, description = "a field is invalid, or there is nothing to change (`invalid`)", body = ErrorBody),
        (status = 503, description = "the store or the queue is unavailable (`unavailable`)", body = ErrorBody)
    )
)]
pub async fn update_project(
    State(fleet): State<Fleet>,
    PathParam(name): PathParam,
    extract::Json(update): extract::Json<ProjectUpdate>,
) -> Result<Response, ApiError> {
    let change = crate::fleet::ProjectChange {
        remote_url: update.remote_url,
        default_branch: update.default_branch,
        daily_cost_usd: update.daily_cost_usd,
        max_concurrent: update.max_concurrent,
    };
    let project = fleet.change_project(&name, &change).await?;
    Ok(Json(project).into_response())
}

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RemoveQuery {
    /// Stop the project's pending and running agents first (else 409 while it has any).
    #[serde(default)]
    force: bool,
}

#[utoipa::path(
    delete, path = "/v1/projects/{name}", tag = "projects",
    params(("name" = String, Path, pattern = r"^[^\u0000]*$", description = "the project's name"), RemoveQuery),
    responses(
        (status = 200, description = "removed, with its agents' records", body = ProjectRemoved),
        (status = 400, description = "malformed body, query or path (`invalid_request`)", body = ErrorBody),
        (status = 401, description = "missing or wrong bearer token (`unauthorized`)", body = ErrorBody),
        (status = 404, description = "no such project (`not_found`)", body = ErrorBody),
        (status = 409, description = "an agent of the project is pending or running (`conflict`)", body = ErrorBody),
        (status = 422, description = "a field is invalid (`invalid`)", body = ErrorBody),
        (status = 503, description = "the store or the queue is unavailable (`unavailable`)", body = ErrorBody)
    )
)]
pub async fn remove_project(
    State(fleet): State<Fleet>,
    PathParam(name): PathParam,
    Query(q): Query<RemoveQuery>,
) -> Result<Response, ApiError> {
    let agents = fleet.remove_project(&name, q.force).await?;
    Ok(Json(ProjectRemoved {
        removed: name,
        agents,
    })
    .into_response())
}

/// `DELETE /v1/projects/{name}`'s answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ProjectRemoved {
    /// The removed project's name.
    pub removed: String,
    /// How many agents' records went with it.
    pub agents: i64,
}
