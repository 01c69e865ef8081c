//! Contract test: the real `opencode` CLI, run with our command lines and environment
//! against a scripted mock of an OpenAI-compatible chat completions API (declared in the
//! file `OPENCODE_CONFIG` names, as a custom provider through `@ai-sdk/openai-compatible`
//! with a `baseURL`), read by our parser. Covers a spawn whose `write` call writes a file,
//! a resume of the same session with an answer, and 429 (`insufficient_quota`) / 401
//! answers reported as rate-limit / auth events.

use std::path::Path;
use std::time::Duration;

use agentfleet::providers::{AgentEvent, Provider, SpawnOptions, built_in};

use crate::mock_model::run::{
    Expect, Sandbox, assert_failure_reported, cli, spawn_then_resume, strings,
};
use crate::mock_model::{Behaviour, MockModel};

const LIMIT: Duration = Duration::from_secs(40);

/// The config file a deployment would point `OPENCODE_CONFIG` at to reach its endpoint.
fn write_config(path: &Path, mock: &MockModel) {
    let config = serde_json::json!({
        "$schema": "https://opencode.ai/config.json",
        "autoupdate": false,
        "share": "disabled",
        "provider": {"mock": {
            "npm": "@ai-sdk/openai-compatible",
            "name": "Mock",
            "options": {"baseURL": format!("{}/v1", mock.base_url), "apiKey": "{env:MOCK_API_KEY}"},
            "models": {"mock-model": {"name": "Mock model"}},
        }},
    });
    std::fs::write(path, config.to_string()).unwrap();
}

fn env(p: &dyn Provider, sandbox: &Sandbox, mock: &MockModel) -> Vec<(String, String)> {
    let config = sandbox.dir.path().join("opencode.json");
    write_config(&config, mock);
    let mut env = p.env();
    env.push((
        p.config_dir_env().unwrap().to_string(),
        sandbox.config().display().to_string(),
    ));
    env.extend(strings(&[
        ("HOME", &sandbox.home().display().to_string()),
        ("OPENCODE_CONFIG", &config.display().to_string()),
        ("MOCK_API_KEY", "sk-mock"),
    ]));
    env
}

fn opts() -> SpawnOptions {
    SpawnOptions {
        model: Some("mock/mock-model".into()),
        mode: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_opencode_spawns_writes_a_file_and_resumes_the_same_session() {
    let opencode = cli("opencode");
    let p = built_in("opencode").unwrap();
    let sandbox = Sandbox::new();
    let content = "written by the real opencode CLI\n";
    let mock = MockModel::start(Behaviour::Script, content).await;
    let env = env(p.as_ref(), &sandbox, &mock);
    let expect = Expect {
        tool: "write",
        path_key: "filePath",
        session_dir: "opencode",
    };
    spawn_then_resume(
        &opencode,
        p.as_ref(),
        &opts(),
        &env,
        &sandbox,
        content,
        expect,
    )
    .await;
    // The earlier turns were sent again: the session really continued.
    let requests = mock.requests.lock().unwrap();
    let last = &requests.last().unwrap().1;
    assert!(last.to_string().contains("call_mock_1"), "{last}");
    assert!(last["messages"].as_array().unwrap().len() >= 4, "{last}");
}

async fn failing_api_is_reported(status: u16, expect: fn(&AgentEvent) -> bool) {
    let opencode = cli("opencode");
    let p = built_in("opencode").unwrap();
    let sandbox = Sandbox::new();
    let mock = MockModel::start(Behaviour::Fail(status), "").await;
    let env = env(p.as_ref(), &sandbox, &mock);
    let args = p.spawn_args(&opts());
    assert_failure_reported(
        &opencode,
        &args,
        &env,
        &sandbox.work(),
        p.parser(),
        expect,
        LIMIT,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_opencode_quota_exhausted_is_reported_as_a_rate_limit() {
    failing_api_is_reported(429, |e| matches!(e, AgentEvent::RateLimited { .. })).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_opencode_auth_failure_is_reported() {
    failing_api_is_reported(401, |e| matches!(e, AgentEvent::AuthFailed { .. })).await;
}
