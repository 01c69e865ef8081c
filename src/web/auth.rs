//! Who may call `/v1`: a bearer token (`api.tokens`: everything; `api.read_only_tokens`:
//! reads only), or the dashboard's session cookie, whose changes must also carry the
//! session's CSRF token (`x-csrf-token`). A read-only caller's change is refused with 403
//! `forbidden` before any handler runs. Without any token configured (loopback only, see
//! `api::check_bind`) every caller may do everything, except that a change a browser sends
//! from another site (its `Origin` is not this host) is refused.

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, HOST, ORIGIN};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use super::session::{self, Role, Session};
use crate::api::{ApiError, bearer_token};
use crate::fleet::Fleet;

/// The header that carries the CSRF token of a cookie-authenticated change.
pub const CSRF_HEADER: &str = "x-csrf-token";

pub fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
}

/// Whether a request changes something (anything but a read).
fn is_change(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The middleware in front of `/v1`.
pub async fn authenticate(
    State(fleet): State<Fleet>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let api = &fleet.settings.api;
    let change = is_change(request.method());
    if !session::auth_required(api) {
        if change && from_another_site(&request) {
            return Err(forbidden(
                "a change sent from another site's page is refused",
            ));
        }
        return Ok(next.run(request).await);
    }
    let headers = request.headers();
    let bearer = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    let role = if let Some(token) = bearer {
        session::role_of_token(api, token)
            .ok_or_else(|| ApiError::unauthorized("invalid bearer token"))?
    } else if let Some(cookie) = session::cookie_of(headers) {
        let session = Session::verify(cookie, api, session::now()).ok_or_else(|| {
            ApiError::unauthorized("the session has ended or is not valid; sign in again")
        })?;
        if change {
            let given = headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if !session.csrf_matches(given) {
                return Err(forbidden(format!(
                    "missing or wrong {CSRF_HEADER} header (a signed-in change needs the session's CSRF token)"
                )));
            }
        }
        session.role
    } else {
        return Err(ApiError::unauthorized(
            "missing bearer token (Authorization: Bearer <token>)",
        ));
    };
    if change && role == Role::ReadOnly {
        return Err(forbidden(
            "this token is read-only: it cannot change anything",
        ));
    }
    Ok(next.run(request).await)
}

/// A browser's request whose `Origin` names another host than the one it was sent to.
fn from_another_site(request: &Request) -> bool {
    let headers = request.headers();
    let Some(origin) = headers.get(ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let host = headers
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let origin_host = origin
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or(origin);
    origin == "null" || !origin_host.eq_ignore_ascii_case(host)
}
