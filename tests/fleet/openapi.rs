//! The API against its own OpenAPI document, checked from outside by schemathesis (PyPI):
//! a distributed fleet (Postgres, Redis, a worker with the scripted provider) with a token,
//! a project, an account and an agent that ran, so the `{agent}` and `{label}` routes have
//! something to find; schemathesis runs every check it has (server errors, status codes,
//! content types, response schemas, positive data accepted, negative data rejected, auth)
//! and must find nothing. The document served is the one kept in `docs/openapi.json`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::api::{TOKEN, serve};
use crate::common::env::TestEnv;

const KEY_B64: &str = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=";

/// The venv `.ci/install-provider-clis` makes, with the pinned schemathesis.
fn schemathesis() -> PathBuf {
    let exe = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/schemathesis/bin/schemathesis");
    assert!(
        exe.is_file(),
        "{} is missing: run .ci/install-provider-clis (it installs schemathesis, pinned, \
         into a venv under target/)",
        exe.display()
    );
    exe
}

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_nothing_against_the_documented_api() {
    let exe = schemathesis();
    let mut env = TestEnv::new().await;
    env.set_env("AGENTFLEET__SECRETS__KEY", KEY_B64);
    env.start_worker(&[]);
    let api = serve(&env).await;

    let served: Value = api.get_json("/openapi.json").await;
    let kept: Value = serde_json::from_str(include_str!("../../docs/openapi.json")).unwrap();
    assert!(
        served == kept,
        "GET /openapi.json differs from docs/openapi.json"
    );

    let account = api
        .post("/v1/accounts")
        .json(&json!({"provider": "claude", "label": "contract-alpha", "api_key": "sk-contract-7c1d"}))
        .send()
        .await
        .unwrap();
    assert_eq!(account.status(), StatusCode::CREATED);
    // A subscription before the agent runs, so it has deliveries (to a name that does not
    // resolve: they stay pending, retried).
    let webhook: Value = api
        .post("/v1/webhooks")
        .json(&json!({"url": "https://receiver.invalid/hook"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let webhook = webhook["id"].as_str().expect("a subscription").to_string();
    let spawned = api
        .post("/v1/agents")
        .json(
            &json!({"provider": "claude", "project": "demo", "prompt": "contract",
                      "name": "contract-heron"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(spawned.status(), StatusCode::ACCEPTED);
    let agent: agentfleet::domain::Agent = spawned.json().await.unwrap();
    env.wait_final(agent.id, Duration::from_secs(60)).await;
    // A second project, so the list of projects has a page after its first.
    let second = api
        .post("/v1/projects")
        .json(&json!({"name": "contract-second", "remote_url": env.remote.to_str().unwrap()}))
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), StatusCode::CREATED);
    let first: Value = api.get_json("/v1/projects?limit=1").await;
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_string();
    let deliveries = api
        .get_json(&format!("/v1/webhooks/{webhook}/deliveries"))
        .await;
    let delivery = deliveries["items"][0]["id"]
        .as_str()
        .expect("a delivery")
        .to_string();

    // Half the `{agent}` and `{label}` path parameters name what exists (the agent by name
    // and by id, the account), so those routes answer with data as well as with 404s. A
    // spawn's 422 for a reused idempotency key depends on what was sent before under the
    // key (the stateful phase replays keys), which no schema can say; every other 422 of
    // a schema-valid spawn is still a failure, as is every 422 elsewhere — bar a new
    // webhook's: whether its URL is a private target (`webhooks.allow_private`) or parses
    // as a URL at all is more than a pattern can say. A list's cursor is opaque — only a
    // page gives one, any other string is refused — so the cursor sent is one a page
    // gave (an empty one asks for the first page).
    let config = env.dir.path().join("schemathesis.toml");
    std::fs::write(
        &config,
        format!(
            r#"[dictionaries.agents]
values = ["{name}", "{id}"]

[dictionaries.labels]
values = ["contract-alpha"]

[dictionaries.cursors]
values = ["{cursor}"]

[dictionaries.webhooks]
values = ["{webhook}"]

[dictionaries.deliveries]
values = ["{delivery}"]

[parameters]
"query.cursor" = {{ dictionary = "cursors", probability = 1.0 }}
"path.agent" = {{ dictionary = "agents", probability = 0.5 }}
"path.label" = {{ dictionary = "labels", probability = 0.5 }}
"path.webhook" = {{ dictionary = "webhooks", probability = 0.5 }}
"path.delivery" = {{ dictionary = "deliveries", probability = 0.5 }}

[[operations]]
include-name = "POST /v1/agents"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]

[[operations]]
include-name = "POST /v1/webhooks"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]
"#,
            name = agent.name,
            id = agent.id,
            cursor = cursor,
        ),
    )
    .unwrap();
    let out = Command::new(&exe)
        .current_dir(env.dir.path())
        .args(["--config-file", config.to_str().unwrap()])
        .args(["run", &format!("{}/openapi.json", api.base)])
        .args(["--checks", "all"])
        .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
        .args(["--seed", "20261205", "--max-examples", "30"])
        .args(["--generation-database", "none", "--workers", "1"])
        // A delete waits for the agent's worker (up to worker.stop_grace + 30 s).
        .args(["--request-timeout", "60", "--no-color"])
        .env("SCHEMATHESIS_HOOKS", "")
        .output()
        .expect("schemathesis runs");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "schemathesis found problems:\n{text}");
    println!("{text}");
}
