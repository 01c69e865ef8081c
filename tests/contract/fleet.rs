//! Contract test through the whole fleet: the real `claude` CLI (from npm) as the provider
//! of a worker process, against a scripted mock of the Anthropic API on 127.0.0.1. Told
//! by the fleet how to ask (the mock asks only then, as a model would), the
//! agent writes its signal file asking a question, waits for input, is resumed with the
//! answer in the same session and worktree, writes a file, completes, and its branch with
//! that file is on the remote. The usage the CLI reports lands on the agent.

use std::time::Duration;

use agentfleet::domain::AgentStatus;

use crate::common::env::{TestEnv, assert_status};
use crate::mock_model::run::cli;
use crate::mock_model::{Behaviour, FILE, FINAL_TEXT, MockModel};

#[tokio::test(flavor = "multi_thread")]
async fn real_claude_asks_is_resumed_and_pushes_its_work() {
    let claude = cli("claude");
    let content = "written by the real claude CLI through agentfleet\n";
    let mock = MockModel::start(Behaviour::AskThenWrite, content).await;
    let mut env = TestEnv::new().await;
    // The sandbox gives the CLI a private HOME (its config and sessions live there).
    env.set_config(&format!(
        "[providers.claude]\ncommand = {:?}\nenv = {{ ANTHROPIC_BASE_URL = {:?}, ANTHROPIC_API_KEY = \"sk-ant-mock\", \
         CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC = \"1\" }}\n\n{}",
        claude.display().to_string(),
        mock.base_url,
        mock.sandbox_toml(&env.runlog),
    ));
    env.start_worker(&[]);
    let agent = env.spawn(&["--name", "real-otter"], "Ask me which database to use.");
    let waiting = env.wait_final(agent.id, Duration::from_secs(90)).await;
    assert_status(&waiting, AgentStatus::WaitingForInput);
    assert_eq!(waiting.pending_questions[0].id, "db");
    assert_eq!(waiting.pending_questions[0].question, "Which database?");
    let session = waiting.session_id.clone().expect("claude's session id");

    env.cli_ok(&["resume", "real-otter", "--answer", "db=Postgres"]);
    env.wait_agent(agent.id, Duration::from_secs(30), "resumed", |a| {
        a.status != AgentStatus::WaitingForInput
    })
    .await;
    let done = env.wait_final(agent.id, Duration::from_secs(90)).await;
    if done.status != AgentStatus::Completed {
        let run = std::path::Path::new(done.output_path.as_deref().unwrap_or("/nonexistent"));
        panic!(
            "{:?}: {:?}\noutput:\n{}\nstderr:\n{}\nworker:\n{}",
            done.status,
            done.error,
            std::fs::read_to_string(run).unwrap_or_default(),
            std::fs::read_to_string(run.with_file_name("stderr.log")).unwrap_or_default(),
            env.worker_log(0)
        );
    }
    assert_status(&done, AgentStatus::Completed);
    assert_eq!(
        done.session_id.as_deref(),
        Some(session.as_str()),
        "same session"
    );
    assert_eq!(done.result.as_deref(), Some(FINAL_TEXT));
    // The usage the real CLI reported landed on the agent, and the resumed run's added to
    // the first's.
    let (first, both) = (waiting.usage, done.usage);
    assert!(first.input_tokens > 0 && first.turns > 0, "{first:?}");
    assert!(
        first.cost_usd.is_some_and(|c| c > 0.0),
        "claude reports its cost: {first:?}"
    );
    assert!(!both.cost_estimated);
    assert!(
        both.input_tokens > first.input_tokens,
        "{first:?} then {both:?}"
    );
    assert!(both.output_tokens > first.output_tokens && both.turns > first.turns);
    assert!(both.cost_usd > first.cost_usd);
    assert_eq!(
        env.remote_file("agent/real-otter", FILE).as_deref(),
        Some(content),
        "the file the real CLI wrote is on the pushed branch"
    );
    // The answers reached the model inside the resumed session, and every request told the
    // model how to ask (in claude's system prompt, the user's prompt left as it was).
    let requests = mock.requests.lock().unwrap().clone();
    for (_, body) in requests.iter().filter(|(_, b)| b["messages"].is_array()) {
        assert!(
            body["system"]
                .to_string()
                .contains(".agentfleet/output/signal.json"),
            "{body}"
        );
    }
    assert!(
        requests
            .iter()
            .any(|(_, body)| body.to_string().contains("Postgres")),
        "the answer reached the model"
    );

    let events = env.store().await.events_after(agent.id, 0).await.unwrap();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as i64 + 1, "one event sequence across both runs");
    }
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    for kind in [
        "session_started",
        "tool_use",
        "tool_result",
        "result",
        "agent.resumed",
    ] {
        assert!(kinds.contains(&kind), "no {kind} event in {kinds:?}");
    }
    let sessions: Vec<&str> = events
        .iter()
        .filter(|e| e.kind == "session_started")
        .filter_map(|e| e.data["session_id"].as_str())
        .collect();
    assert!(sessions.iter().all(|s| *s == session), "{sessions:?}");
    env.stop_workers();
}
