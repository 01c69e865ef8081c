//! The API's OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]`
//! annotations and the types they take and return: served at `GET /openapi.json` and kept
//! in `docs/openapi.json` (a test fails when the two differ; `agentfleet openapi` prints it).
//! What the derives cannot say is added to the generated JSON here: the providers a body
//! may name (the fleet's catalog, so the served document names the configured ones too),
//! which of them take an API key or a credentials file, and the shape of one Server-Sent
//! Event. The document is the contract schemathesis checks the server against
//! (`tests/fleet/openapi.rs`): a request it calls valid is accepted, one it calls invalid
//! refused.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{accounts, diff, projects, queue, routes, usage, webhooks};
use crate::fleet::Fleet;
use crate::providers::{Provider, Providers};

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
        diff::agent_diff,
        routes::list_workers,
        usage::usage,
        queue::queue,
        projects::add_project,
        projects::list_projects,
        projects::update_project,
        projects::remove_project,
        accounts::add_account,
        accounts::list_accounts,
        accounts::remove_account,
        accounts::reset_account,
        webhooks::add_webhook,
        webhooks::list_webhooks,
        webhooks::get_webhook,
        webhooks::remove_webhook,
        webhooks::list_deliveries,
        webhooks::redeliver,
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
        (name = "usage", description = "Tokens and cost the agents used"),
        (name = "webhooks", description = "Subscriptions to agents' status changes, signed per Standard Webhooks"),
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

/// The document of a fleet with the built-in providers only, as JSON text: what
/// `docs/openapi.json` holds and `agentfleet openapi` prints.
pub fn document() -> String {
    let doc = with_catalog(&Providers::default(), |p| p.api_key_env().is_some());
    let mut text = serde_json::to_string_pretty(&doc).expect("the OpenAPI document serializes");
    text.push('\n');
    text
}

/// `GET /openapi.json`: the document of this fleet's catalog (a provider configured under
/// `providers`, or an API key variable given to one, is in it).
pub async fn serve_document(State(fleet): State<Fleet>) -> Response {
    let settings = &fleet.settings;
    let doc = with_catalog(&fleet.providers, |p| {
        crate::credentials::run::api_key_env(settings, p).is_some()
    });
    Json(doc).into_response()
}

/// The generated document with the provider names of `providers` where a body names one:
/// a spawn any of them, a new account one that takes what it brings (`takes_api_key`: one
/// whose key has a variable to go in; a credentials file: one that reads it from a config
/// dir). Exactly one of `api_key` and `credentials` is given (`oneOf`).
fn with_catalog(providers: &Providers, takes_api_key: impl Fn(&dyn Provider) -> bool) -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the OpenAPI document serializes");
    let names = providers.names();
    let taking = |takes: &dyn Fn(&dyn Provider) -> bool| -> Vec<&String> {
        names
            .iter()
            .filter(|name| providers.get(name).is_ok_and(|p| takes(p.as_ref())))
            .collect()
    };
    let with_key = taking(&takes_api_key);
    let with_file = taking(&|p| p.credentials_file().is_some() && p.config_dir_env().is_some());
    let schemas = &mut doc["components"]["schemas"];
    schemas["SpawnRequest"]["properties"]["provider"]["enum"] = json!(names);
    let account = &mut schemas["NewAccountBody"];
    account["properties"]["provider"]["enum"] = json!(names);
    let api_key = account["properties"]["api_key"]["pattern"].clone();
    account["oneOf"] = json!([
        {
            "title": "an API key",
            "required": ["api_key"],
            "properties": {
                "provider": {"enum": with_key},
                "api_key": {"type": "string", "pattern": api_key},
                "credentials": {"type": "null"},
            },
        },
        {
            "title": "a credentials file",
            "required": ["credentials"],
            "properties": {
                "provider": {"enum": with_file},
                "credentials": {"$ref": "#/components/schemas/CredentialsFile"},
                "api_key": {"type": "null"},
            },
        },
    ]);
    schemas["CredentialsFile"] = credentials_file();
    schemas["JsonWithoutNul"] = json_without_nul();
    schemas["ProjectUpdate"]["minProperties"] = json!(1);
    let answers = &mut schemas["ResumeBody"]["properties"]["answers"];
    answers["minProperties"] = json!(1);
    answers["propertyNames"] = json!({"pattern": NO_NUL});
    answers["additionalProperties"]["pattern"] = json!(NO_NUL);
    // `api.rate_limit` answers any /v1 route 429 over a token's budget.
    for (path, item) in doc["paths"].as_object_mut().into_iter().flatten() {
        if !path.starts_with("/v1/") {
            continue;
        }
        for (method, operation) in item.as_object_mut().into_iter().flatten() {
            // A read-only token (or a signed-in page without its CSRF token) may change
            // nothing.
            if method != "get" {
                operation["responses"]["403"] = json!({
                    "description": "a read-only token, a dashboard session without its `x-csrf-token`, or a change sent from another site's page (`forbidden`)",
                    "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/ErrorBody"},
                    }},
                });
            }
            operation["responses"]["429"] = json!({
                "description": "over `api.rate_limit` for this token (`rate_limited`)",
                "headers": {"retry-after": {
                    "description": "seconds until the token may try again",
                    "schema": {"type": "integer", "minimum": 1},
                }},
                "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/ErrorBody"},
                }},
            });
        }
    }
    let events = "/v1/agents/{agent}/events";
    doc["paths"][events]["get"]["responses"]["200"]["content"]["text/event-stream"]["schema"] =
        event_message();
    doc
}

/// A provider's credentials file as an account brings it: a JSON object with OAuth tokens
/// (`accessToken` or `refreshToken`, camel or snake case) at its top level.
fn credentials_file() -> Value {
    let tokens = [
        "accessToken",
        "access_token",
        "refreshToken",
        "refresh_token",
    ];
    json!({
        "type": "object",
        "description": "The provider's credentials file, a JSON object with its OAuth tokens \
            (`accessToken` or `refreshToken`, camel or snake case) at its top level or in one \
            object there (as Claude's `claudeAiOauth`); its text as a JSON string is accepted \
            too.",
        "anyOf": tokens.map(|t| json!({"required": [t]})),
        "propertyNames": {"pattern": NO_NUL},
        "additionalProperties": {"$ref": "#/components/schemas/JsonWithoutNul"},
    })
}

/// A string without NUL (the store cannot hold one; the API refuses it anywhere in a body).
const NO_NUL: &str = "^[^\\u0000]*$";

/// Any JSON value with no NUL in a string or an object key, at any depth.
fn json_without_nul() -> Value {
    let this = json!({"$ref": "#/components/schemas/JsonWithoutNul"});
    json!({
        "description": "Any JSON value without a NUL character in a string or a key.",
        "anyOf": [
            {"type": ["null", "boolean", "number"]},
            {"type": "string", "pattern": NO_NUL},
            {"type": "array", "items": this},
            {"type": "object", "propertyNames": {"pattern": NO_NUL}, "additionalProperties": this},
        ],
    })
}

/// One Server-Sent Event of an agent's stream, as an OpenAPI 3.1 `text/event-stream`
/// schema describes each event: `id` its sequence number, `event` its kind, `data` the
/// stored event as JSON; an `error` event (no `id`) carries an `ErrorBody`.
fn event_message() -> Value {
    json!({
        "type": "object",
        "required": ["event", "data"],
        "properties": {
            "id": {"type": "string", "pattern": "^[0-9]+$"},
            "event": {"type": "string"},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/StoredEvent"},
                        {"$ref": "#/components/schemas/ErrorBody"},
                    ],
                },
            },
        },
    })
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
