//! Usage accounting end to end: the scripted claude stand-in reports usage per message
//! (each message twice, as claude prints one line per content block, and the run's totals
//! and cost in its result), a worker counts each message once, keeps the agent's usage
//! current while it runs, and the totals, the `usage` command, `GET /v1/usage` and the
//! worker's metrics all add up exactly.

use std::time::Duration;

use agentfleet::domain::AgentStatus;

use crate::common::api;
use crate::common::env::{TestEnv, assert_status};
use crate::common::services::free_port;

#[tokio::test(flavor = "multi_thread")]
async fn usage_of_each_message_is_counted_once_and_adds_up_everywhere() {
    let mut env = TestEnv::new().await;
    let metrics = format!("127.0.0.1:{}", free_port());
    env.start_worker(&[("AGENTFLEET__WORKER__METRICS_BIND", &metrics)]);
    env.wait_workers(1).await;

    let agent = env.spawn(
        &["--name", "counted"],
        "#usage 5\n#sleep 0.4\ncount the tokens",
    );
    // Kept current while it runs, not only at the end.
    let running = env
        .wait_agent(agent.id, Duration::from_secs(30), "reported usage", |a| {
            a.usage.turns >= 1
        })
        .await;
    assert_eq!(running.status, AgentStatus::Running, "{running:?}");
    assert_eq!(
        running.usage.cost_usd, None,
        "claude's cost comes with its result"
    );
    let agent = env.wait_final(agent.id, Duration::from_secs(60)).await;
    assert_status(&agent, AgentStatus::Completed);
    let u = agent.usage;
    assert_eq!(
        (
            u.input_tokens,
            u.output_tokens,
            u.cache_read_tokens,
            u.cache_write_tokens
        ),
        (500, 50, 25, 10),
        "each message once, at its highest counts; the result adds nothing more"
    );
    assert_eq!(u.turns, 5);
    assert!(
        (u.cost_usd.unwrap() - 0.05).abs() < 1e-9,
        "{:?}",
        u.cost_usd
    );
    assert!(!u.cost_estimated);

    // `get --json` and `list` show it.
    let got: serde_json::Value =
        serde_json::from_str(&env.cli_ok(&["get", "counted", "--json"])).unwrap();
    assert_eq!(got["usage"]["input_tokens"], 500);
    assert_eq!(got["usage"]["cost_estimated"], false);
    let list = env.cli_ok(&["list"]);
    assert!(
        list.contains("USAGE") && list.contains("585 tok $0.0500"),
        "{list}"
    );

    // The stored usage events add up to the same.
    let store = env.store().await;
    let events = store.events_after(agent.id, 0).await.unwrap();
    let input: i64 = events
        .iter()
        .filter(|e| e.kind == "usage")
        .map(|e| e.data["input_tokens"].as_i64().unwrap())
        .sum();
    assert_eq!(input, 500);

    // A second agent: the stand-in's default run (24 in, 23 out, $0.001 in its result).
    let other = env.spawn(&["--name", "plain"], "plain work");
    let other = env.wait_final(other.id, Duration::from_secs(60)).await;
    assert_eq!(
        (other.usage.input_tokens, other.usage.output_tokens),
        (24, 23)
    );
    assert_eq!(
        other.usage.turns, 1,
        "a run whose messages carry no usage is one turn"
    );

    // Totals: the command line and the API.
    for by in ["project", "provider", "day"] {
        let report: serde_json::Value =
            serde_json::from_str(&env.cli_ok(&["usage", "--by", by, "--since", "1d", "--json"]))
                .unwrap();
        assert_eq!(report["groups"].as_array().unwrap().len(), 1, "{report}");
        assert_eq!(report["groups"][0]["agents"], 2);
        assert_eq!(report["total"]["input_tokens"], 524);
        assert_eq!(report["total"]["turns"], 6);
        assert!((report["total"]["cost_usd"].as_f64().unwrap() - 0.051).abs() < 1e-9);
    }
    let text = env.cli_ok(&["usage", "--by", "account"]);
    assert!(
        text.contains("(own login)") && text.contains("524"),
        "{text}"
    );
    let bad = env.cli(&["usage", "--since", "a week"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--since"));

    let server = api::serve(&env).await;
    let report = server.get_json("/v1/usage?group_by=project&since=2h").await;
    assert_eq!(report["groups"][0]["key"], "demo");
    assert_eq!(report["groups"][0]["usage"]["output_tokens"], 73);
    let none = server.get_json("/v1/usage?until=1h").await;
    assert_eq!(
        none["groups"],
        serde_json::json!([]),
        "nothing is an hour old"
    );
    let resp = server
        .get("/v1/usage?since=yesterday")
        .send()
        .await
        .unwrap();
    let (status, code, message) = api::error_of(resp).await;
    assert_eq!((status.as_u16(), code.as_str()), (400, "invalid_request"));
    assert!(message.contains("since"), "{message}");

    // The worker's metrics count the same tokens.
    let text = reqwest::get(format!("http://{metrics}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = |needle: &str| {
        text.lines()
            .find(|l| l.starts_with(needle))
            .unwrap_or_else(|| panic!("no {needle} in\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse::<f64>()
            .unwrap()
    };
    assert_eq!(
        line(r#"agentfleet_tokens_total{kind="input",provider="claude"}"#),
        524.0
    );
    assert!((line(r#"agentfleet_cost_usd_total{provider="claude"}"#) - 0.051).abs() < 1e-9);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spawns_model_reaches_the_cli_by_its_flag_and_is_recorded() {
    let mut env = TestEnv::new().await;
    // The provider's default model (the config file ends with [providers.claude]).
    let mut config = std::fs::read_to_string(&env.config).unwrap();
    config.push_str("model = \"fake-default\"\n");
    env.set_config(&config);
    env.start_worker(&[]);
    env.wait_workers(1).await;

    let chosen = env.spawn(
        &["--name", "chosen", "--model", "fake-opus[1m]"],
        "#usage 1\nwork",
    );
    let default = env.spawn(&["--name", "defaulted"], "#usage 1\nwork");
    assert_eq!(chosen.model.as_deref(), Some("fake-opus[1m]"));
    assert_eq!(default.model.as_deref(), Some("fake-default"));
    let store = env.store().await;
    for (agent, model) in [(chosen, "fake-opus[1m]"), (default, "fake-default")] {
        let done = env.wait_final(agent.id, Duration::from_secs(60)).await;
        assert_status(&done, AgentStatus::Completed);
        // The stand-in names the model its `--model` argument gave it.
        let events = store.events_after(agent.id, 0).await.unwrap();
        let started = events.iter().find(|e| e.kind == "session_started").unwrap();
        assert_eq!(started.data["model"], model);
        let usage = events.iter().find(|e| e.kind == "usage").unwrap();
        assert_eq!(usage.data["model"], model);
    }

    // A CLI without a model flag, and names that are no model, are refused up front.
    let server = api::serve(&env).await;
    for (provider, model, says) in [
        ("amp", "smart", "no way to choose a model"),
        ("claude", "-rf", "not a model name"),
        ("claude", "a b", "not a model name"),
    ] {
        let resp = server
            .post("/v1/agents")
            .json(&serde_json::json!({"provider": provider, "project": "demo",
                                      "prompt": "p", "model": model}))
            .send()
            .await
            .unwrap();
        let (status, code, message) = api::error_of(resp).await;
        assert_eq!(
            (status.as_u16(), code.as_str()),
            (422, "invalid"),
            "{message}"
        );
        assert!(
            message.contains("model") && message.contains(says),
            "{message}"
        );
    }
    let out = env.cli(&[
        "spawn",
        "--project",
        "demo",
        "--provider",
        "amp",
        "--model",
        "x",
        "p",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no way to choose a model"));
    assert_eq!(
        store
            .list_agents(&agentfleet::store::AgentQuery::with_dismissed())
            .await
            .unwrap()
            .items
            .len(),
        2,
        "nothing recorded"
    );
}

/// The agent of a spawn the API accepted.
async fn accepted(
    sent: impl std::future::Future<Output = reqwest::Result<reqwest::Response>>,
) -> agentfleet::domain::Agent {
    let resp = sent.await.unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    resp.json().await.unwrap()
}

/// 117 tokens per message of the stand-in's `#usage` (100 in, 10 out, 5 + 2 cache).
const MESSAGE_TOKENS: i64 = 117;

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_over_its_budget_is_stopped_within_one_event() {
    let mut env = TestEnv::new().await;
    env.start_worker(&[]);
    env.wait_workers(1).await;
    let script = "#usage 10\n#sleep 0.3\nspend";

    // Tokens, from the command line: the third message goes over 300.
    let tokens = env.spawn(&["--name", "tokens", "--max-tokens", "300"], script);
    assert_eq!(tokens.budget.unwrap().max_tokens, Some(300));
    // Turns and cost, over HTTP.
    let server = api::serve(&env).await;
    let spawn = |name: &str, budget: serde_json::Value| {
        server
            .post("/v1/agents")
            .json(
                &serde_json::json!({"provider": "claude", "project": "demo", "name": name,
                                      "prompt": script, "budget": budget}),
            )
            .send()
    };
    let turns: agentfleet::domain::Agent =
        accepted(spawn("turns", serde_json::json!({"max_turns": 2}))).await;
    // Claude reports its cost with its result: the run's last event goes over.
    let cost: agentfleet::domain::Agent =
        accepted(spawn("cost", serde_json::json!({"max_cost_usd": 0.05}))).await;
    let cheap: agentfleet::domain::Agent = accepted(spawn(
        "cheap",
        serde_json::json!({"max_cost_usd": 0.5, "max_tokens": 5000, "max_turns": 10}),
    ))
    .await;

    let tokens = env.wait_final(tokens.id, Duration::from_secs(60)).await;
    assert_eq!(tokens.status, AgentStatus::Stopped);
    assert_eq!(tokens.error.as_deref(), Some("budget_exceeded:tokens"));
    assert_eq!(
        tokens.usage.tokens(),
        3 * MESSAGE_TOKENS,
        "stopped at the event that crossed"
    );
    let turns = env.wait_final(turns.id, Duration::from_secs(60)).await;
    assert_eq!(turns.error.as_deref(), Some("budget_exceeded:turns"));
    assert_eq!(turns.usage.turns, 3);
    let cost = env.wait_final(cost.id, Duration::from_secs(60)).await;
    assert_eq!(cost.status, AgentStatus::Stopped);
    assert_eq!(cost.error.as_deref(), Some("budget_exceeded:cost"));
    assert!((cost.usage.cost_usd.unwrap() - 0.10).abs() < 1e-9);
    let cheap = env.wait_final(cheap.id, Duration::from_secs(60)).await;
    assert_status(&cheap, AgentStatus::Completed);
    assert_eq!(cheap.usage.tokens(), 10 * MESSAGE_TOKENS);

    // Limits that are no limits are refused, naming the field; nothing is recorded.
    for (budget, field) in [
        (serde_json::json!({"max_tokens": 0}), "budget.max_tokens"),
        (
            serde_json::json!({"max_cost_usd": -1.0}),
            "budget.max_cost_usd",
        ),
        (
            serde_json::json!({"max_cost_usd": 0}),
            "budget.max_cost_usd",
        ),
    ] {
        let (status, code, message) = api::error_of(spawn("refused", budget).await.unwrap()).await;
        assert_eq!(
            (status.as_u16(), code.as_str()),
            (422, "invalid"),
            "{message}"
        );
        assert!(message.contains(field), "{message}");
    }
    let resp = spawn("refused", serde_json::json!({"max_tokenz": 1}))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert_eq!(
        env.store()
            .await
            .list_agents(&agentfleet::store::AgentQuery::with_dismissed())
            .await
            .unwrap()
            .items
            .len(),
        4
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_projects_daily_budget_stops_its_agents_and_refuses_spawns_once_spent() {
    let mut env = TestEnv::new().await;
    env.start_worker(&[]);
    env.wait_workers(1).await;
    let out = env.cli_ok(&["project", "set", "demo", "--daily-cost-usd", "0.025"]);
    assert!(out.contains("daily budget: 0.025"), "{out}");

    // Its cost ($0.05, with its result) goes over the project's day.
    let first = env.spawn(&["--name", "spender"], "#usage 5\n#sleep 0.05\nspend");
    let first = env.wait_final(first.id, Duration::from_secs(60)).await;
    assert_eq!(first.status, AgentStatus::Stopped);
    assert_eq!(
        first.error.as_deref(),
        Some("budget_exceeded:project_daily_cost")
    );

    // Spent: the next spawn is refused, over HTTP and on the command line.
    let server = api::serve(&env).await;
    let resp = server
        .post("/v1/agents")
        .json(&serde_json::json!({"provider": "claude", "project": "demo", "prompt": "p"}))
        .send()
        .await
        .unwrap();
    let (status, code, message) = api::error_of(resp).await;
    assert_eq!(
        (status.as_u16(), code.as_str()),
        (422, "invalid"),
        "{message}"
    );
    assert!(message.contains("daily budget"), "{message}");
    let out = env.cli(&["spawn", "--project", "demo", "p"]);
    assert!(!out.status.success());

    // PATCH raises it (a non-positive one is refused), and null removes it.
    let patch = |body: serde_json::Value| {
        server
            .client
            .patch(format!("{}/v1/projects/demo", server.base))
            .bearer_auth(api::TOKEN)
            .json(&body)
            .send()
    };
    let (status, _, message) = api::error_of(
        patch(serde_json::json!({"daily_cost_usd": 0}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status.as_u16(), 422, "{message}");
    assert!(message.contains("daily_cost_usd"), "{message}");
    let raised: serde_json::Value = patch(serde_json::json!({"daily_cost_usd": 1.0}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(raised["daily_cost_usd"], 1.0);
    let second = env.spawn(&["--name", "within"], "#usage 5\nspend");
    let second = env.wait_final(second.id, Duration::from_secs(60)).await;
    assert_status(&second, AgentStatus::Completed);
    let removed: serde_json::Value = patch(serde_json::json!({"daily_cost_usd": null}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(removed["daily_cost_usd"], serde_json::Value::Null);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_never_runs_more_of_a_provider_than_its_cap_and_all_complete() {
    let mut env = TestEnv::new().await;
    let mut config = std::fs::read_to_string(&env.config).unwrap();
    config.push_str("max_concurrent = 2\n");
    env.set_config(&config);
    for _ in 0..2 {
        env.start_worker(&[("AGENTFLEET__WORKER__CAPACITY", "4")]);
    }
    env.wait_workers(2).await;
    let ids: Vec<uuid::Uuid> = (0..20)
        .map(|i| {
            env.spawn(&["--name", &format!("capped-{i}")], "#sleep 0.1\nwork")
                .id
        })
        .collect();
    let store = env.store().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    let mut most = 0;
    loop {
        let agents = store
            .list_agents(&agentfleet::store::AgentQuery::with_dismissed())
            .await
            .unwrap()
            .items;
        let running = agents
            .iter()
            .filter(|a| matches!(a.status, AgentStatus::Starting | AgentStatus::Running))
            .count();
        most = most.max(running);
        assert!(
            running <= 2,
            "{running} agents of the capped provider at once"
        );
        if agents.iter().all(|a| a.status.is_final()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not all ended:\n{}",
            env.worker_log(0)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(most, 2, "the cap was used");
    for id in ids {
        let agent = store.agent_by_id(id).await.unwrap();
        assert_status(&agent, AgentStatus::Completed);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_projects_cap_holds_its_spawns_in_order_until_a_slot_frees() {
    let mut env = TestEnv::new().await;
    for _ in 0..2 {
        env.start_worker(&[]);
    }
    env.wait_workers(2).await;
    let out = env.cli_ok(&["project", "set", "demo", "--max-concurrent", "1"]);
    assert!(out.contains("at most 1 agents"), "{out}");
    let ids: Vec<uuid::Uuid> = (0..4)
        .map(|i| {
            env.spawn(
                &["--name", &format!("one-at-a-time-{i}")],
                "#sleep 0.1\nwork",
            )
            .id
        })
        .collect();
    let store = env.store().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut started_order = Vec::new();
    loop {
        let agents = store
            .list_agents(&agentfleet::store::AgentQuery::with_dismissed())
            .await
            .unwrap()
            .items;
        let running: Vec<_> = agents
            .iter()
            .filter(|a| matches!(a.status, AgentStatus::Starting | AgentStatus::Running))
            .collect();
        assert!(
            running.len() <= 1,
            "{} of the project at once",
            running.len()
        );
        for a in running {
            if !started_order.contains(&a.id) {
                started_order.push(a.id);
            }
        }
        if agents.iter().all(|a| a.status.is_final()) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not all ended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for id in &ids {
        assert_status(
            &store.agent_by_id(*id).await.unwrap(),
            AgentStatus::Completed,
        );
    }
    // Each seen while it ran came after the ones spawned before it.
    let seen: Vec<usize> = started_order
        .iter()
        .map(|id| ids.iter().position(|i| i == id).unwrap())
        .collect();
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "started in order: {seen:?}"
    );
}
