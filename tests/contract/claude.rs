//! Contract test: the real `claude` CLI, run with our command lines and environment
//! against a scripted mock of the Anthropic API, read by our parser. Covers a spawn whose
//! tool call writes a file, a resume of the same session with an answer, and 429 / 401
//! answers reported as rate-limit / auth events while the CLI is still retrying.

use std::collections::BTreeMap;
use std::time::Duration;

use agentfleet::providers::{
    AgentEvent, Provider, SpawnOptions, built_in, format_answers, place_prompt,
};

use crate::mock_model::run::{Sandbox, cli, result_of, run, session_ids, strings};
use crate::mock_model::{ANSWER_TEXT, Behaviour, FILE, FINAL_TEXT, MockModel};

const LIMIT: Duration = Duration::from_secs(40);

fn env(p: &dyn Provider, sandbox: &Sandbox, mock: &MockModel) -> Vec<(String, String)> {
    let mut env = p.env();
    env.push((
        p.config_dir_env().unwrap().to_string(),
        sandbox.config().display().to_string(),
    ));
    env.extend(strings(&[
        ("HOME", &sandbox.home().display().to_string()),
        ("ANTHROPIC_BASE_URL", &mock.base_url),
        ("ANTHROPIC_API_KEY", "sk-ant-mock"),
        ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
    ]));
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_claude_spawns_writes_a_file_and_resumes_the_same_session() {
    let claude = cli("claude");
    let p = built_in("claude").unwrap();
    let sandbox = Sandbox::new();
    let content = "written by the real claude CLI\n";
    let mock = MockModel::start(Behaviour::Script, content).await;
    let env = env(p.as_ref(), &sandbox, &mock);
    let opts = SpawnOptions::default();

    let args = place_prompt(p.spawn_args(&opts), p.prompt_via(), "Write the file.");
    let first = run(
        &claude,
        &args,
        &env,
        &sandbox.work(),
        "Write the file.",
        p.parser(),
        |_| false,
        LIMIT,
    )
    .await;
    assert_eq!(first.exit_code, Some(0), "stderr: {}", first.stderr);
    let ids = session_ids(&first.events);
    assert!(
        !ids.is_empty() && ids.iter().all(|id| *id == ids[0]),
        "{ids:?}"
    );
    let dump = format!("stdout:\n{}\nstderr:\n{}", first.stdout, first.stderr);
    assert!(
        first
            .events
            .iter()
            .any(|e| matches!(e, AgentEvent::ToolUse { name, .. } if name == "Write")),
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
        Some((true, Some(FINAL_TEXT.to_string())))
    );
    assert_eq!(
        std::fs::read_to_string(sandbox.work().join(FILE)).unwrap(),
        content
    );

    let answers = BTreeMap::from([("db".to_string(), "Postgres".to_string())]);
    let answer = format_answers(&answers);
    let args = place_prompt(
        p.resume_args(&ids[0], &opts).unwrap(),
        p.prompt_via(),
        &answer,
    );
    let second = run(
        &claude,
        &args,
        &env,
        &sandbox.work(),
        &answer,
        p.parser(),
        |_| false,
        LIMIT,
    )
    .await;
    assert_eq!(second.exit_code, Some(0), "stderr: {}", second.stderr);
    let resumed = session_ids(&second.events);
    assert!(
        !resumed.is_empty() && resumed.iter().all(|id| *id == ids[0]),
        "{resumed:?} vs {ids:?}"
    );
    assert_eq!(
        result_of(&second.events),
        Some((true, Some(ANSWER_TEXT.to_string())))
    );
    // The earlier turns were sent again: the session really continued.
    let requests = mock.requests.lock().unwrap();
    let last = &requests.last().unwrap().1;
    assert!(last["messages"].as_array().unwrap().len() >= 4, "{last}");
}

async fn failing_api_is_reported(status: u16, expect: fn(&AgentEvent) -> bool) {
    let claude = cli("claude");
    let p = built_in("claude").unwrap();
    let sandbox = Sandbox::new();
    let mock = MockModel::start(Behaviour::Fail(status), "").await;
    let env = env(p.as_ref(), &sandbox, &mock);
    let args = p.spawn_args(&SpawnOptions::default());
    let started = std::time::Instant::now();
    let out = run(
        &claude,
        &args,
        &env,
        &sandbox.work(),
        "Write the file.",
        p.parser(),
        expect,
        LIMIT,
    )
    .await;
    assert!(
        out.events.iter().any(expect),
        "{:#?}\nstderr: {}",
        out.events,
        out.stderr
    );
    assert_eq!(
        out.exit_code, None,
        "the test stopped it while it was retrying"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_claude_rate_limit_is_reported_while_it_retries() {
    failing_api_is_reported(429, |e| matches!(e, AgentEvent::RateLimited { .. })).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_claude_auth_failure_is_reported_while_it_retries() {
    failing_api_is_reported(401, |e| matches!(e, AgentEvent::AuthFailed { .. })).await;
}
