//! The web dashboard that `serve` and `up` show at `/`: a page of plain JavaScript modules
//! and CSS embedded in the binary (nothing to build, nothing else to run) that reads and acts
//! through the same `/v1` API as every other client. This module serves the page and its
//! assets, and signs a browser in and out: a token given once in a form becomes an
//! HttpOnly, SameSite=Strict session cookie (`session`), which `/v1` accepts beside bearer
//! tokens (`auth`).

mod assets;
pub mod auth;
pub mod session;

pub use auth::authenticate;

use axum::Router;
use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::api::ApiError;
use crate::fleet::Fleet;
use session::Session;

/// The page, its assets and the sign-in routes (outside `/v1`'s token check: the page must
/// load before anyone has signed in, and signing in is how one proves a token).
pub fn router() -> Router<Fleet> {
    Router::new()
        .route("/", get(assets::index))
        .route("/assets/{file}", get(assets::asset))
        .route("/web/session", get(session_state).post(sign_in))
        .route("/web/sign-out", post(sign_out))
}

/// What the page needs to know about its caller.
#[derive(serde::Serialize)]
struct SessionState {
    /// Whether tokens are configured (else there is no sign-in).
    auth_required: bool,
    signed_in: bool,
    /// `full` or `read_only`, when signed in.
    role: Option<&'static str>,
    /// The value for `x-csrf-token` on changes, when signed in with a cookie.
    csrf: Option<String>,
    /// When the session ends (Unix seconds).
    expires: Option<i64>,
}

impl SessionState {
    fn of(session: &Session) -> Self {
        Self {
            auth_required: true,
            signed_in: true,
            role: Some(session.role.as_str()),
            csrf: Some(session.csrf()),
            expires: Some(session.expires),
        }
    }
}

fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `GET /web/session`: whether this browser is signed in, and its CSRF token.
async fn session_state(State(fleet): State<Fleet>, headers: HeaderMap) -> Response {
    let api = &fleet.settings.api;
    let state = if !session::auth_required(api) {
        SessionState {
            auth_required: false,
            signed_in: true,
            role: Some(session::Role::Full.as_str()),
            csrf: None,
            expires: None,
        }
    } else {
        match session::cookie_of(&headers).and_then(|c| Session::verify(c, api, session::now())) {
            Some(s) => SessionState::of(&s),
            None => SessionState {
                auth_required: true,
                signed_in: false,
                role: None,
                csrf: None,
                expires: None,
            },
        }
    };
    no_store(axum::Json(state).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    token: String,
}

/// `POST /web/session` with `{"token"}`: a session cookie for a configured token.
async fn sign_in(
    State(fleet): State<Fleet>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let api = &fleet.settings.api;
    if !session::auth_required(api) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "no api.tokens are configured: there is nothing to sign in to",
        ));
    }
    // serde's message could quote the body, which holds a token: say only what is wrong.
    let SignIn { token } = serde_json::from_slice(&body)
        .map_err(|_| ApiError::bad_request("the body must be {\"token\": \"...\"}"))?;
    let role = session::role_of_token(api, token.trim())
        .ok_or_else(|| ApiError::unauthorized("that token is not accepted here"))?;
    let session = Session::new(role, token.trim(), session::now());
    let mut response = no_store(axum::Json(SessionState::of(&session)).into_response());
    response.headers_mut().insert(
        SET_COOKIE,
        HeaderValue::from_str(&session::set_cookie(&session)).expect("a cookie is a header"),
    );
    Ok(response)
}

/// `POST /web/sign-out`: the browser forgets its session.
async fn sign_out() -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        SET_COOKIE,
        HeaderValue::from_str(&session::clear_cookie()).expect("a cookie is a header"),
    );
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}
