//! `/v1/accounts`: the same account operations as `agentfleet account`. A new account's
//! secret arrives in the body and leaves only sealed: responses show its fingerprint, and
//! a malformed body is reported by position, never by echoing what it held.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::ApiError;
use super::error::ErrorBody;
use super::extract::{self, BodyError, PathParam};
use crate::credentials::{self, AccountInput, CredentialError};
use crate::domain::Account;
use crate::fleet::{Fleet, FleetError};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAccountBody {
    provider: String,
    /// 1 to 64 of `[A-Za-z0-9._-]`, as a git branch name allows.
    #[schema(pattern = r"^(?!.*\.\.)(?!.*\.lock$)(?!.*\.$)[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$")]
    label: String,
    /// The key, without spaces or control characters (surrounding white space is trimmed).
    #[serde(default)]
    #[schema(
        pattern = r"^[\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\u0000-\u001f\u007f-\u009f]+[\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"
    )]
    api_key: Option<String>,
    /// The provider's credentials file: a JSON object, or its text.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    credentials: Option<serde_json::Value>,
    /// How many agents may hold it at once (no limit when absent).
    #[serde(default, deserialize_with = "crate::domain::integral::option")]
    #[schema(minimum = 1)]
    max_concurrent: Option<i32>,
}

fn invalid(e: CredentialError) -> ApiError {
    FleetError::from(e).into()
}

/// serde's message may quote a value from the body: a secret, perhaps.
impl BodyError for NewAccountBody {
    fn describe(e: &serde_json::Error) -> String {
        format!(
            "malformed account body at line {} column {}: expected {{\"provider\", \"label\", \
             \"api_key\" | \"credentials\", \"max_concurrent\"?}}",
            e.line(),
            e.column()
        )
    }
}

#[utoipa::path(
    post, path = "/v1/accounts", tag = "accounts", request_body = NewAccountBody,
    responses(
        (status = 201, description = "the account, sealed: its fingerprint, never its secret", body = Account),
        (status = 400, description = "malformed body, query or path (`invalid_request`)", body = ErrorBody),
        (status = 401, description = "missing or wrong bearer token (`unauthorized`)", body = ErrorBody),
        (status = 409, description = "an account with that label exists (`conflict`)", body = ErrorBody),
        (status = 413, description = "the body is over `api.max_body_bytes` (`body_too_large`)", body = ErrorBody),
        (status = 422, description = "a field is invalid; the message names it (`invalid`)", body = ErrorBody),
        (status = 503, description = "the store or the queue is unavailable (`unavailable`)", body = ErrorBody)
    )
)]
pub async fn add_account(
    State(fleet): State<Fleet>,
    extract::Json(body): extract::Json<NewAccountBody>,
) -> Result<Response, ApiError> {
    let secret = match (body.api_key, body.credentials) {
        (Some(key), None) => AccountInput::api_key(&key, "api_key").map_err(invalid)?,
        (None, Some(serde_json::Value::String(text))) => {
            AccountInput::credentials_file(&text, "credentials").map_err(invalid)?
        }
        (None, Some(file)) => {
            AccountInput::credentials_file(&file.to_string(), "credentials").map_err(invalid)?
        }
        _ => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                "give exactly one of api_key and credentials",
            ));
        }
    };
    let account = credentials::add_account(
        &fleet.settings,
        &fleet.store,
        &fleet.providers,
        AccountInput {
            provider: body.provider,
            label: body.label,
            secret,
            max_concurrent: body.max_concurrent,
        },
    )
    .await
    .map_err(invalid)?;
    Ok((StatusCode::CREATED, Json(account)).into_response())
}

#[utoipa::path(
    get, path = "/v1/accounts", tag = "accounts",
    responses(
        (status = 200, description = "accounts, by provider and label", body = Vec<Account>),
        (status = 401, description = "missing or wrong bearer token (`unauthorized`)", body = ErrorBody),
        (status = 503, description = "the store or the queue is unavailable (`unavailable`)", body = ErrorBody)
    )
)]
pub async fn list_accounts(State(fleet): State<Fleet>) -> Result<Response, ApiError> {
    Ok(Json(fleet.store.list_accounts().await?).into_response())
}

#[utoipa::path(
    delete, path = "/v1/accounts/{label}", tag = "accounts", params(("label" = String, Path, pattern = r"^[^\u0000]*$", description = "the account's label")),
    responses(
        (status = 200, description = "removed: `{\"removed\": LABEL}`", body = Removed),
        (status = 400, description = "malformed body, query or path (`invalid_request`)", body = ErrorBody),
        (status = 401, description = "missing or wrong bearer token (`unauthorized`)", body = ErrorBody),
        (status = 404, description = "no such account (`not_found`)", body = ErrorBody),
        (status = 422, description = "a field is invalid; the message names it (`invalid`)", body = ErrorBody),
        (status = 503, description = "the store or the queue is unavailable (`unavailable`)", body = ErrorBody)
    )
)]
pub async fn remove_account(
    State(fleet): State<Fleet>,
    PathParam(label): PathParam,
) -> Result<Response, ApiError> {
    fleet.store.remove_account(&label).await?;
    Ok(Json(serde_json::json!({"removed": label})).into_response())
}

#[utoipa::path(
    post, path = "/v1/accounts/{label}/reset", tag = "accounts", params(("label" = String, Path, pattern = r"^[^\u0000]*$", description = "the account's label")),
    responses(
        (status = 200, description = "exhaustion and invalidity cleared", body = Account),
        (status = 400, description = "malformed body, query or path (`invalid_request`)", body = ErrorBody),
        (status = 401, description = "missing or wrong bearer token (`unauthorized`)", body = ErrorBody),
        (status = 404, description = "no such account (`not_found`)", body = ErrorBody),
        (status = 422, description = "a field is invalid; the message names it (`invalid`)", body = ErrorBody),
        (status = 503, description = "the store or the queue is unavailable (`unavailable`)", body = ErrorBody)
    )
)]
pub async fn reset_account(
    State(fleet): State<Fleet>,
    PathParam(label): PathParam,
) -> Result<Response, ApiError> {
    Ok(Json(fleet.store.reset_account(&label).await?).into_response())
}

/// `DELETE /v1/accounts/{label}`'s answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Removed {
    /// The removed account's label.
    pub removed: String,
}
