//! API errors as JSON `{ "error": { "code": ..., "message": ... } }` with the status that
//! fits: the caller's mistakes are 4xx, our trouble is 5xx. Rejections of the extractors
//! (`extract`) and error responses made below our handlers (body limit, unknown method)
//! are given the same shape, so a client parses every error one way.

use axum::Json;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::http::header::{CONNECTION, CONTENT_TYPE};
use axum::http::{HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use crate::fleet::FleetError;
use crate::store::StoreError;

/// Every error's body: `{"error": {"code", "message"}}`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// What kind of error: `invalid_request`, `unauthorized`, `forbidden`, `not_found`,
    /// `method_not_allowed`, `conflict`, `body_too_large`, `unsupported_media_type`,
    /// `invalid`, `idempotency_key_reused`, `rate_limited`, `unavailable`, `internal`.
    pub code: String,
    /// What went wrong, naming the field or the agent; never a secret.
    pub message: String,
}

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn unauthorized(message: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// A value the caller sent is not one the API takes; the message names it.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
    }

    /// The body was over `api.max_body_bytes`.
    pub fn body_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is over the limit of {limit} bytes (api.max_body_bytes)"),
        )
    }

    /// The code of an error response we did not make ourselves, by its status.
    fn code_for(status: StatusCode) -> &'static str {
        match status {
            StatusCode::BAD_REQUEST => "invalid_request",
            StatusCode::UNAUTHORIZED => "unauthorized",
            StatusCode::FORBIDDEN => "forbidden",
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
            StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            StatusCode::UNPROCESSABLE_ENTITY => "invalid",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            s if s.is_client_error() => "invalid_request",
            _ => "internal",
        }
    }
}

impl From<FleetError> for ApiError {
    fn from(e: FleetError) -> Self {
        match e {
            FleetError::Invalid(m) => Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", m),
            FleetError::NotFound(m) => Self::new(StatusCode::NOT_FOUND, "not_found", m),
            FleetError::Conflict(m) => Self::new(StatusCode::CONFLICT, "conflict", m),
            FleetError::IdempotencyKeyReused(m) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                m,
            ),
            FleetError::Unavailable(m) => {
                tracing::error!(error = %m, "service unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "a backing service is unavailable",
                )
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        FleetError::from(e).into()
    }
}

/// A path segment that is not UTF-8 (`%FF`) or not of the expected type.
impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        match e.status() {
            s if s.is_server_error() => Self::new(s, "internal", e.body_text()),
            _ => Self::bad_request(e.body_text()),
        }
    }
}

/// A body that could not be read: over `api.max_body_bytes`, or cut off.
impl From<BytesRejection> for ApiError {
    fn from(e: BytesRejection) -> Self {
        let status = e.status();
        Self::new(status, Self::code_for(status), e.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

/// The answer to a method a route does not serve (axum's own is an empty 405).
pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// Largest body of an error response made below the handlers that is kept as the message
/// (those are one line; anything longer is cut).
const MAX_FOREIGN_MESSAGE: usize = 1024;

/// Gives an error response that is not in the API's shape (made by axum or a layer below
/// the handlers: a body over the limit, an unknown method) the shape, keeping its status,
/// its headers (`Allow`) and its text as the message. `max_body_bytes` names the limit in
/// a 413.
pub async fn into_json_error(response: Response, max_body_bytes: usize) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    // Event streams and metrics are successes; only errors are reshaped. A 413 is always
    // (re)made here: only this layer knows the limit, and the connection must close.
    if !(status.is_client_error() || status.is_server_error())
        || (is_json && status != StatusCode::PAYLOAD_TOO_LARGE)
    {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let error = if status == StatusCode::PAYLOAD_TOO_LARGE {
        // The rest of the body is not read, so the connection cannot carry another
        // request: saying so keeps a client from sending its next one on it.
        parts
            .headers
            .insert(CONNECTION, HeaderValue::from_static("close"));
        ApiError::body_too_large(max_body_bytes)
    } else {
        let text = axum::body::to_bytes(body, MAX_FOREIGN_MESSAGE)
            .await
            .map(|b| String::from_utf8_lossy(&b).trim().to_string())
            .unwrap_or_default();
        let message = if text.is_empty() {
            status.canonical_reason().unwrap_or("error").to_string()
        } else {
            text
        };
        ApiError::new(status, ApiError::code_for(status), message)
    };
    let (_, body) = error.into_response().into_parts();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    parts
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Response::from_parts(parts, body)
}
