//! Extractors of the handlers, each with `ApiError` as its rejection, so a bad body, query
//! value (`?all=maybe`) or path segment (`%FF`) is answered in the API's error shape, naming
//! what was wrong, like every other bad request: `Query` reads a repeated parameter into a
//! list, `Path` is axum's with that rejection; `Json` reads the body as bytes (any content type, as the API always has),
//! refuses a NUL in any string and parses it typed; `PathParam` is a route's one parameter.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::ApiError;
use crate::fleet::{no_nul, no_nul_in_json};

/// The query string, deserialized (a parameter given several times fills a list:
/// `?status=running&status=pending`); a bad one is a 400 naming the parameter.
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default().as_bytes();
        serde_path_to_error::deserialize(serde_html_form::Deserializer::from_bytes(query))
            .map(Self)
            .map_err(|e| {
                ApiError::bad_request(format!("bad query parameter {}: {}", e.path(), e.inner()))
            })
    }
}

/// The route's path parameters; a segment that is not UTF-8 is a 400.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// How a body that does not parse is described to its sender.
pub trait BodyError {
    /// The message of the 400; by default serde's, which may quote the body.
    fn describe(e: &serde_json::Error) -> String {
        format!("malformed JSON body: {e}")
    }
}

/// The JSON body, typed; a malformed one is a 400 (`T::describe` says how), one with a NUL
/// in any string a 422 naming the field (not its value, which may be a secret): the store
/// cannot hold one, and it is the caller's mistake.
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned + BodyError,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let body = axum::body::Bytes::from_request(req, state).await?;
        // Malformed JSON is not refused here: the typed parse that follows says where.
        if let Ok(value) = serde_json::from_slice::<serde_json::Value>(&body) {
            no_nul_in_json(&value)?;
        }
        serde_json::from_slice(&body)
            .map(Self)
            .map_err(|e| ApiError::bad_request(T::describe(&e)))
    }
}

/// The one parameter of a route's path (an agent's id or name, an account's label),
/// percent-decoded and refused with a 422 naming it when it holds a NUL.
pub struct PathParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(params) = Path::<Vec<(String, String)>>::from_request_parts(parts, state).await?;
        let Some((name, value)) = params.into_iter().next() else {
            return Err(ApiError::bad_request("the path names nothing"));
        };
        no_nul(&format!("path segment '{name}'"), &value)?;
        Ok(Self(value))
    }
}
