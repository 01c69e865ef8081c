//! Contract test: the real `gemini` CLI, run with our command lines and environment
//! against a scripted mock of the Gemini API (`GOOGLE_GEMINI_BASE_URL`, Gemini API
//! `streamGenerateContent?alt=sse`), read by our parser. Covers a spawn whose `write_file`
//! call writes a file, a resume of the same session with an answer, and 429 (a per-day
//! quota) / 401 answers reported as rate-limit / auth events.

use std::path::Path;
use std::time::Duration;

use agentfleet::providers::{AgentEvent, Provider, SpawnOptions, built_in};

use crate::mock_model::run::{
    Expect, Sandbox, assert_failure_reported, cli, spawn_then_resume, strings,
};
use crate::mock_model::{Behaviour, MockModel};

const LIMIT: Duration = Duration::from_secs(40);

/// The account's settings a deployment pointing gemini at its own endpoint needs: with
/// `GOOGLE_GEMINI_BASE_URL` set and no auth type chosen, gemini 0.61.0 picks its
/// "gateway" auth type and then refuses it ("Invalid auth method selected."); with
/// `gemini-api-key` chosen it sends the key to the base URL. Usage statistics off keeps
/// it from calling Google.
fn write_settings(config_dir: &Path) {
    let dir = config_dir.join(".gemini");
    std::fs::create_dir_all(&dir).unwrap();
    let settings = serde_json::json!({
        "security": {"auth": {"selectedType": "gemini-api-key"}},
        "privacy": {"usageStatisticsEnabled": false},
        "telemetry": {"enabled": false},
    });
    std::fs::write(dir.join("settings.json"), settings.to_string()).unwrap();
}

fn env(p: &dyn Provider, sandbox: &Sandbox, mock: &MockModel) -> Vec<(String, String)> {
    write_settings(&sandbox.config());
    let mut env = p.env();
    env.push((
        p.config_dir_env().unwrap().to_string(),
        sandbox.config().display().to_string(),
    ));
    env.push((
        p.api_key_env().unwrap().to_string(),
        "mock-gemini-key".into(),
    ));
    env.extend(strings(&[
        ("HOME", &sandbox.home().display().to_string()),
        ("GOOGLE_GEMINI_BASE_URL", &mock.base_url),
    ]));
    env
}

/// A fixed model: with the default ("auto") gemini first asks a classifier model to
/// route the prompt, a side call the mock does not script.
fn opts() -> SpawnOptions {
    SpawnOptions {
        model: Some("gemini-2.5-flash".into()),
        mode: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_gemini_spawns_writes_a_file_and_resumes_the_same_session() {
    let gemini = cli("gemini");
    let p = built_in("gemini").unwrap();
    let sandbox = Sandbox::new();
    let content = "written by the real gemini CLI\n";
    let mock = MockModel::start(Behaviour::Script, content).await;
    let env = env(p.as_ref(), &sandbox, &mock);
    let expect = Expect {
        tool: "write_file",
        path_key: "file_path",
        session_dir: ".gemini/tmp",
    };
    spawn_then_resume(
        &gemini,
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
    assert!(last.to_string().contains("functionResponse"), "{last}");
    assert!(last["contents"].as_array().unwrap().len() >= 4, "{last}");
}

async fn failing_api_is_reported(status: u16, expect: fn(&AgentEvent) -> bool) {
    let gemini = cli("gemini");
    let p = built_in("gemini").unwrap();
    let sandbox = Sandbox::new();
    let mock = MockModel::start(Behaviour::Fail(status), "").await;
    let env = env(p.as_ref(), &sandbox, &mock);
    let args = p.spawn_args(&opts());
    assert_failure_reported(
        &gemini,
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
async fn providers_gemini_quota_exhausted_is_reported_as_a_rate_limit() {
    failing_api_is_reported(429, |e| matches!(e, AgentEvent::RateLimited { .. })).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_gemini_auth_failure_is_reported() {
    failing_api_is_reported(401, |e| matches!(e, AgentEvent::AuthFailed { .. })).await;
}
