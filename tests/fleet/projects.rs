//! Projects from the command line: a project's remote and branch change for the agents
//! spawned after; a project with a running agent is removed only with `--force`, which
//! stops the agent first, and its agents' records go with it.

use std::time::Duration;

use agentfleet::domain::AgentStatus;
use reqwest::StatusCode;

use crate::cli_bad_input::fails_with;
use crate::common::api::{TOKEN, error_of, json_of, serve};
use crate::common::env::TestEnv;

#[tokio::test(flavor = "multi_thread")]
async fn projects_are_updated_and_removed_only_with_force_while_an_agent_runs() {
    let mut env = TestEnv::new().await;
    let listed = |env: &TestEnv| -> serde_json::Value {
        serde_json::from_str(&env.cli_ok(&["project", "list", "--json"])).unwrap()
    };
    let remote = listed(&env)[0]["remote_url"].as_str().unwrap().to_string();
    let out = env.cli_ok(&["project", "update", "demo", "--branch", "trunk"]);
    assert!(out.contains("branch trunk"), "{out}");
    assert_eq!(listed(&env)[0]["default_branch"], "trunk");
    assert_eq!(listed(&env)[0]["remote_url"], remote.as_str());
    env.cli_ok(&["project", "update", "demo", "--branch", "main"]);
    fails_with(&env, &["project", "update", "demo"], "nothing to change");
    fails_with(
        &env,
        &["project", "update", "demo", "--branch", "bad..branch"],
        "not a valid branch name",
    );
    fails_with(
        &env,
        &["project", "update", "ghost", "--branch", "x"],
        "unknown project 'ghost'",
    );

    env.start_worker(&[]);
    let agent = env.spawn(&["--name", "busy-otter"], "hold on\n#hold 120");
    env.wait_agent(agent.id, Duration::from_secs(60), "running", |a| {
        a.status == AgentStatus::Running
    })
    .await;
    fails_with(
        &env,
        &["project", "remove", "demo"],
        "project 'demo' has 1 agent(s) pending or running",
    );
    assert_eq!(listed(&env).as_array().unwrap().len(), 1, "nothing removed");
    let out = env.cli_ok(&["project", "remove", "demo", "--force"]);
    assert!(out.contains("with 1 agent record(s)"), "{out}");
    assert_eq!(listed(&env), serde_json::json!([]));
    fails_with(&env, &["get", "busy-otter"], "no agent with id or name");
    // The agent's process was stopped, not left running without a record.
    let store = env.store().await;
    assert!(
        store
            .list_agents(&agentfleet::store::AgentQuery::with_dismissed())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    env.stop_workers();
}

/// The same over HTTP: `PATCH /v1/projects/{name}` and `DELETE /v1/projects/{name}`
/// (`?force=true` stops the running agent first).
#[tokio::test(flavor = "multi_thread")]
async fn projects_are_updated_and_removed_over_http() {
    let mut env = TestEnv::new().await;
    let api = serve(&env).await;
    let patch = |body: serde_json::Value| {
        api.client
            .patch(format!("{}/v1/projects/demo", api.base))
            .bearer_auth(TOKEN)
            .json(&body)
    };
    let project = json_of(patch(serde_json::json!({"default_branch": "trunk"}))).await;
    assert_eq!(project["default_branch"], "trunk");
    json_of(patch(serde_json::json!({"default_branch": "main"}))).await;
    let (status, code, _) = error_of(patch(serde_json::json!({})).send().await.unwrap()).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid")
    );
    let (status, _, _) = error_of(
        patch(serde_json::json!({"remote_url": null}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    env.start_worker(&[]);
    let agent = env.spawn(&["--name", "busy-otter"], "hold on\n#hold 120");
    env.wait_agent(agent.id, Duration::from_secs(60), "running", |a| {
        a.status == AgentStatus::Running
    })
    .await;
    let delete = |query: &str| {
        api.client
            .delete(format!("{}/v1/projects/demo{query}", api.base))
            .bearer_auth(TOKEN)
            .send()
    };
    let (status, code, message) = error_of(delete("").await.unwrap()).await;
    assert_eq!((status, code.as_str()), (StatusCode::CONFLICT, "conflict"));
    assert!(
        message.contains("1 agent(s) pending or running"),
        "{message}"
    );
    let removed: serde_json::Value = delete("?force=true").await.unwrap().json().await.unwrap();
    assert_eq!(removed, serde_json::json!({"removed": "demo", "agents": 1}));
    assert_eq!(
        api.get_json("/v1/projects").await["items"],
        serde_json::json!([])
    );
    let (status, _, _) = error_of(delete("").await.unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    env.stop_workers();
}
