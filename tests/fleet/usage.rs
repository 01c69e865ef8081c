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
        store.list_agents(true).await.unwrap().len(),
        2,
        "nothing recorded"
    );
}
