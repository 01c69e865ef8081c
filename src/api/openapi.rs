//! The API's OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]`
//! annotations and the types they take and return: served at `GET /openapi.json` and kept
//! in `docs/openapi.json` (a test fails when the two differ; `agentfleet openapi` prints it).

use axum::Json;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{accounts, routes};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "agentfleet",
        description = "Run AI coding-agent CLIs as a fleet of queue workers: spawn agents, \
            follow their output, answer their questions, stop and delete them."
    ),
    paths(
        routes::spawn_agent,
        routes::list_agents,
        routes::get_agent,
        routes::delete_agent,
        routes::stop_agent,
        routes::resume_agent,
        routes::dismiss_agent,
        routes::cleanup_agent,
        routes::agent_events,
        routes::list_workers,
        routes::add_project,
        routes::list_projects,
        accounts::add_account,
        accounts::list_accounts,
        accounts::remove_account,
        accounts::reset_account,
        routes::healthz,
        routes::readyz,
        routes::metrics,
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "agents", description = "Agents: spawn, follow, resume, stop, delete"),
        (name = "projects", description = "Git remotes agents work on"),
        (name = "accounts", description = "Provider accounts, sealed at rest"),
        (name = "workers", description = "Workers and their leases"),
        (name = "health", description = "Liveness, readiness and metrics (no token needed)"),
    )
)]
pub struct ApiDoc;

/// `api.tokens`: every `/v1` route needs `Authorization: Bearer <token>` when tokens are
/// configured.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document as JSON text, as `docs/openapi.json` holds it.
pub fn document() -> String {
    let mut text = ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serializes");
    text.push('\n');
    text
}

/// `GET /openapi.json`.
pub async fn serve_document() -> Response {
    Json(ApiDoc::openapi()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/openapi.json` is the document the code generates; after changing the API, write
    /// it again with `cargo run -- openapi > docs/openapi.json`.
    #[test]
    fn the_kept_document_is_the_generated_one() {
        let kept = include_str!("../../docs/openapi.json");
        assert!(
            kept == document(),
            "docs/openapi.json differs from the generated document: \
             run `cargo run -- openapi > docs/openapi.json`"
        );
    }

    #[test]
    fn every_route_is_documented_with_its_errors_in_the_api_shape() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().unwrap();
        for (path, methods) in paths {
            for (method, op) in methods.as_object().unwrap() {
                let responses = op["responses"].as_object().unwrap();
                for (status, response) in responses {
                    if status.starts_with('4') {
                        let schema = &response["content"]["application/json"]["schema"];
                        assert_eq!(
                            schema["$ref"], "#/components/schemas/ErrorBody",
                            "{method} {path} {status}"
                        );
                    }
                }
                if path.starts_with("/v1/") {
                    assert!(responses.contains_key("401"), "{method} {path}");
                }
            }
        }
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
    }
}
