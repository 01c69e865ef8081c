//! Contract test: the real `codex` CLI, run with our command lines and environment
//! against a scripted mock of the OpenAI Responses API (declared as a custom model
//! provider with `-c`, as `providers.codex.args` would), read by our parser. Covers a
//! spawn whose shell call writes a file, a resume of the same thread with an answer, and
//! 429 / 401 answers reported as rate-limit / auth events while codex reconnects.

use std::collections::BTreeMap;
use std::time::Duration;

use agentfleet::providers::{
    AgentEvent, Provider, SpawnOptions, built_in, format_answers, place_prompt,
};

use crate::mock_model::run::{
    Sandbox, assert_failure_reported, cli, result_of, run, session_ids, strings,
};
use crate::mock_model::{ANSWER_TEXT, Behaviour, FILE, FINAL_TEXT, MockModel};

const LIMIT: Duration = Duration::from_secs(40);

fn env(p: &dyn Provider, sandbox: &Sandbox) -> Vec<(String, String)> {
    let mut env = p.env();
    env.push((
        p.config_dir_env().unwrap().to_string(),
        sandbox.config().display().to_string(),
    ));
    env.extend(strings(&[
        ("HOME", &sandbox.home().display().to_string()),
        ("OPENAI_API_KEY", "sk-mock"),
    ]));
    env
}

/// The extra args a deployment would configure to reach its model endpoint.
fn mock_provider_args(mock: &MockModel) -> Vec<String> {
    let base_url = format!("model_providers.mock.base_url=\"{}/v1\"", mock.base_url);
    [
        "-c",
        "model_provider=mock",
        "-c",
        "model_providers.mock.name=\"mock\"",
        "-c",
        &base_url,
        "-c",
        "model_providers.mock.env_key=\"OPENAI_API_KEY\"",
        "-c",
        "model_providers.mock.wire_api=\"responses\"",
        "-c",
        "model_providers.mock.request_max_retries=0",
        "-c",
        "model_providers.mock.stream_max_retries=20",
        "-m",
        "gpt-5",
    ]
    .map(String::from)
    .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_codex_spawns_writes_a_file_and_resumes_the_same_thread() {
    let codex = cli("codex");
    let p = built_in("codex").unwrap();
    let sandbox = Sandbox::new();
    let content = "written by the real codex CLI";
    let mock = MockModel::start(Behaviour::Script, content).await;
    let env = env(p.as_ref(), &sandbox);
    let opts = SpawnOptions::default();

    let mut args = p.spawn_args(&opts);
    args.extend(mock_provider_args(&mock));
    let args = place_prompt(args, p.prompt_via(), "Write the file.");
    let first = run(
        &codex,
        &args,
        &env,
        &sandbox.work(),
        "Write the file.",
        p.parser(),
        |_| false,
        LIMIT,
    )
    .await;
    let dump = format!("stdout:\n{}\nstderr:\n{}", first.stdout, first.stderr);
    assert_eq!(first.exit_code, Some(0), "{dump}");
    let ids = session_ids(&first.events);
    assert!(
        !ids.is_empty() && ids.iter().all(|id| *id == ids[0]),
        "{ids:?}"
    );
    assert!(
        first
            .events
            .iter()
            .any(|e| matches!(e, AgentEvent::ToolUse { .. })),
        "{dump}"
    );
    assert!(
        first.events.iter().any(|e| matches!(
            e,
            AgentEvent::ToolResult {
                is_error: false,
                ..
            }
        )),
        "{dump}"
    );
    assert_eq!(
        result_of(&first.events),
        Some((true, Some(FINAL_TEXT.to_string()))),
        "{dump}"
    );
    assert_eq!(
        std::fs::read_to_string(sandbox.work().join(FILE)).unwrap(),
        content
    );

    let answer = format_answers(&BTreeMap::from([(
        "db".to_string(),
        "Postgres".to_string(),
    )]));
    let mut args = p.resume_args(&ids[0], &opts).unwrap();
    args.extend(mock_provider_args(&mock));
    let args = place_prompt(args, p.prompt_via(), &answer);
    let second = run(
        &codex,
        &args,
        &env,
        &sandbox.work(),
        &answer,
        p.parser(),
        |_| false,
        LIMIT,
    )
    .await;
    let dump = format!("stdout:\n{}\nstderr:\n{}", second.stdout, second.stderr);
    assert_eq!(second.exit_code, Some(0), "{dump}");
    let resumed = session_ids(&second.events);
    assert!(
        !resumed.is_empty() && resumed.iter().all(|id| *id == ids[0]),
        "{resumed:?} vs {ids:?}"
    );
    assert_eq!(
        result_of(&second.events),
        Some((true, Some(ANSWER_TEXT.to_string()))),
        "{dump}"
    );
    // The earlier turns were sent again: the thread really continued.
    let requests = mock.requests.lock().unwrap();
    let last = &requests.last().unwrap().1;
    assert!(last.to_string().contains("call_mock_1"), "{last}");
}

async fn failing_api_is_reported(status: u16, expect: fn(&AgentEvent) -> bool) {
    let codex = cli("codex");
    let p = built_in("codex").unwrap();
    let sandbox = Sandbox::new();
    let mock = MockModel::start(Behaviour::Fail(status), "").await;
    let env = env(p.as_ref(), &sandbox);
    let mut args = p.spawn_args(&SpawnOptions::default());
    args.extend(mock_provider_args(&mock));
    assert_failure_reported(
        &codex,
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
async fn providers_codex_rate_limit_is_reported() {
    failing_api_is_reported(429, |e| matches!(e, AgentEvent::RateLimited { .. })).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_codex_auth_failure_is_reported() {
    failing_api_is_reported(401, |e| matches!(e, AgentEvent::AuthFailed { .. })).await;
}
