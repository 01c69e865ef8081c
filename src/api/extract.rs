//! Extractors of the handlers: axum's `Query` and `Path` with `ApiError` as their
//! rejection, so a bad query value (`?all=maybe`) or path segment (`%FF`) is answered in
//! the API's error shape, naming what was wrong, like every other bad request.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::ApiError;
use crate::fleet::no_nul;

/// The query string, deserialized; a bad one is a 400 naming the parameter.
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Query(value) =
            axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(Self(value))
    }
}

/// The route's path parameters; a segment that is not UTF-8 is a 400.
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(value) =
            axum::extract::Path::<T>::from_request_parts(parts, state).await?;
        Ok(Self(value))
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
