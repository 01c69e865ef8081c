//! The dashboard's files, compiled into the binary. Every answer forbids framing and
//! inline scripts (the page's scripts are its own modules), so text an agent wrote can never
//! run as code even if it reached the page as HTML.

use axum::http::HeaderValue;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};

use crate::api::ApiError;
use crate::api::extract::PathParam;

/// Name, content type, content.
const FILES: &[(&str, &str, &str)] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/app.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/api.js"),
    ),
    (
        "dom.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/dom.js"),
    ),
    (
        "markdown.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/markdown.js"),
    ),
    (
        "views.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/views.js"),
    ),
    (
        "agent.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/agent.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("assets/app.css"),
    ),
    ("icon.svg", "image/svg+xml", include_str!("assets/icon.svg")),
];

const INDEX: &str = include_str!("assets/index.html");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
    connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

fn with_headers(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The files change with the binary; a revalidation is cheap on loopback.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("content-security-policy", HeaderValue::from_static(CSP));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    response
}

/// `GET /`: the page (its views are chosen by the URL's fragment).
pub async fn index() -> Response {
    with_headers("text/html; charset=utf-8", INDEX)
}

/// `GET /assets/{file}`.
pub async fn asset(PathParam(file): PathParam) -> Result<Response, ApiError> {
    FILES
        .iter()
        .find(|(name, _, _)| *name == file)
        .map(|(_, content_type, body)| with_headers(content_type, body))
        .ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "not_found",
                format!("no asset '{file}'"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_the_page_imports_is_served() {
        let names: Vec<&str> = FILES.iter().map(|(n, _, _)| *n).collect();
        let sources = FILES.iter().map(|(_, _, b)| *b).chain([INDEX]);
        for source in sources {
            for (i, _) in source.match_indices("./") {
                let rest = &source[i + 2..];
                let end = rest.find(['"', '\'']).unwrap_or(rest.len());
                let name = &rest[..end];
                if name.ends_with(".js") || name.ends_with(".css") || name.ends_with(".svg") {
                    assert!(names.contains(&name), "{name} is imported but not served");
                }
            }
        }
    }
}
