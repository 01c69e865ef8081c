//! Contract test of account failover with the real `claude` CLI: two accounts, the first
//! one's key out of quota at the mock model (HTTP 429, which the CLI retries for minutes).
//! The worker sees the rate limit, stops the CLI, marks the account exhausted and resumes
//! the same session on the second account, in the same worktree, to a pushed branch.

use std::time::Duration;

use agentfleet::domain::AgentStatus;

use crate::common::env::{TestEnv, assert_status};
use crate::mock_model::run::cli;
use crate::mock_model::{Behaviour, EXHAUSTED_KEY, FILE, MockModel};

const KEY_B64: &str = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=";
const GOOD_KEY: &str = "sk-ant-api03-mock-good-1111";

fn add_account(env: &TestEnv, label: &str, key: &str) {
    let out = env
        .command(&["account", "add", "--provider", "claude", "--label", label])
        .args(["--api-key-env", "TEST_ACCOUNT_KEY"])
        .env("TEST_ACCOUNT_KEY", key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn real_claude_fails_over_to_a_second_account_on_a_rate_limit() {
    let claude = cli("claude");
    let content = "written after the failover\n";
    let mock = MockModel::start(Behaviour::FailForKey(429), content).await;
    let mut env = TestEnv::new().await;
    env.set_env("AGENTFLEET__SECRETS__KEY", KEY_B64);
    env.set_config(&format!(
        "[providers.claude]\ncommand = {:?}\nenv = {{ ANTHROPIC_BASE_URL = {:?}, \
         CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC = \"1\" }}\n\n{}",
        claude.display().to_string(),
        mock.base_url,
        mock.sandbox_toml(&env.runlog),
    ));
    // Added first, so chosen first (least recently used, then oldest).
    add_account(&env, "exhausted", EXHAUSTED_KEY);
    add_account(&env, "good", GOOD_KEY);
    env.start_worker(&[]);
    let agent = env.spawn(&["--name", "failover-otter"], "Write the file.");
    let done = env.wait_final(agent.id, Duration::from_secs(120)).await;
    assert_status(&done, AgentStatus::Completed);
    assert_eq!(
        env.remote_file("agent/failover-otter", FILE).as_deref(),
        Some(content),
        "the file the real CLI wrote on the second account is on the pushed branch"
    );
    let events = env.store().await.events_after(agent.id, 0).await.unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert!(kinds.contains(&"rate_limited"), "{kinds:?}");
    let sessions: Vec<&str> = events
        .iter()
        .filter(|e| e.kind == "session_started")
        .filter_map(|e| e.data["session_id"].as_str())
        .collect();
    assert!(
        sessions.len() >= 2 && sessions.iter().all(|s| *s == sessions[0]),
        "the same session went on: {sessions:?}"
    );
    let accounts: Vec<serde_json::Value> =
        serde_json::from_str(&env.cli_ok(&["account", "list", "--json"])).unwrap();
    let exhausted = accounts.iter().find(|a| a["label"] == "exhausted").unwrap();
    assert!(!exhausted["exhausted_until"].is_null(), "{exhausted}");
    let listing = serde_json::to_string(&accounts).unwrap();
    assert!(!listing.contains(GOOD_KEY) && !listing.contains(EXHAUSTED_KEY));
    env.stop_workers();
}
