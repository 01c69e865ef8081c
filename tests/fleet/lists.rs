//! Lists callers page through: filters, cursors newest first through concurrent spawns,
//! and bad parameters refused naming the parameter — over HTTP and on the command line.

use std::collections::HashSet;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::api::{Server, serve};
use crate::common::env::TestEnv;

async fn spawn(api: &Server, name: &str, provider: &str, task: &str) {
    let spawned = api
        .post("/v1/agents")
        .json(
            &json!({"provider": provider, "project": "demo", "prompt": "p",
                      "name": name, "task_id": task}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(spawned.status(), StatusCode::ACCEPTED, "{name}");
}

fn names(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .expect("a page of items")
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_string())
        .collect()
}

/// The error a request answers: (status, code, message).
async fn refused(api: &Server, path: &str) -> (StatusCode, String, String) {
    let response = api.get(path).send().await.unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    let error = &body["error"];
    (
        status,
        error["code"].as_str().unwrap().to_string(),
        error["message"].as_str().unwrap().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agents_list_filters_and_pages_newest_first_over_http() {
    let env = TestEnv::new().await;
    // No worker: every agent stays pending, so the list is what the spawns made.
    let api = serve(&env).await;
    for n in 0..12 {
        let provider = if n % 3 == 0 { "codex" } else { "claude" };
        spawn(
            &api,
            &format!("page-{n:02}"),
            provider,
            &format!("task-{}", n % 2),
        )
        .await;
    }

    // Pages of 5, a status given twice; spawns between pages are newer than every page
    // that follows, so they are not shown and nothing shifts.
    let mut seen = Vec::new();
    let mut path = "/v1/agents?limit=5&status=pending&status=running".to_string();
    let mut late = 0;
    loop {
        let page = api.get_json(&path).await;
        seen.extend(names(&page));
        late += 1;
        spawn(&api, &format!("late-{late}"), "claude", "late").await;
        match page["next_cursor"].as_str() {
            Some(next) => {
                path = format!("/v1/agents?limit=5&status=pending&status=running&cursor={next}")
            }
            None => break,
        }
    }
    let expected: Vec<String> = (0..12).rev().map(|n| format!("page-{n:02}")).collect();
    assert_eq!(seen, expected, "newest first, each once");
    assert_eq!(late, 3, "12 agents in pages of 5");

    let codex = api
        .get_json("/v1/agents?provider=codex&task_id=task-0")
        .await;
    assert_eq!(names(&codex), ["page-06", "page-00"]);
    assert_eq!(codex["next_cursor"], Value::Null);
    let prefixed = api.get_json("/v1/agents?name=late-&limit=2").await;
    assert_eq!(names(&prefixed), ["late-3", "late-2"]);
    assert!(prefixed["next_cursor"].is_string());
    let none = api.get_json("/v1/agents?status=completed").await;
    assert_eq!(none, json!({"items": [], "next_cursor": null}));
    let future = api
        .get_json("/v1/agents?created_after=2999-01-01T00:00:00Z")
        .await;
    assert_eq!(names(&future), Vec::<String>::new());

    for (path, status, code, names_it) in [
        ("/v1/agents?limit=0", 422, "invalid", "limit"),
        ("/v1/agents?limit=1001", 422, "invalid", "limit"),
        ("/v1/agents?limit=", 400, "invalid_request", "limit"),
        ("/v1/agents?limit=ten", 400, "invalid_request", "limit"),
        (
            "/v1/agents?cursor=bm90LWEtY3Vyc29y",
            422,
            "invalid",
            "cursor",
        ),
        (
            "/v1/agents?status=sleeping",
            400,
            "invalid_request",
            "status",
        ),
        (
            "/v1/agents?created_after=yesterday",
            400,
            "invalid_request",
            "created_after",
        ),
        ("/v1/agents?project=de%00mo", 422, "invalid", "project"),
        ("/v1/projects?limit=0", 422, "invalid", "limit"),
        ("/v1/workers?cursor=%2F%2F", 422, "invalid", "cursor"),
    ] {
        let (got, got_code, message) = refused(&api, path).await;
        assert_eq!(got.as_u16(), status, "{path}: {message}");
        assert_eq!(got_code, code, "{path}");
        assert!(message.contains(names_it), "{path}: {message}");
    }

    // Projects page the same way.
    for n in 0..3 {
        let added = api
            .post("/v1/projects")
            .json(&json!({"name": format!("more-{n}"), "remote_url": env.remote.to_str().unwrap()}))
            .send()
            .await
            .unwrap();
        assert_eq!(added.status(), StatusCode::CREATED);
    }
    let mut projects = Vec::new();
    let mut path = "/v1/projects?limit=3".to_string();
    loop {
        let page = api.get_json(&path).await;
        projects.extend(names(&page));
        match page["next_cursor"].as_str() {
            Some(next) => path = format!("/v1/projects?limit=3&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(projects, ["more-2", "more-1", "more-0", "demo"]);
    assert_eq!(
        api.get_json("/v1/workers").await,
        json!({"items": [], "next_cursor": null})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn list_on_the_command_line_filters_and_pages() {
    let env = TestEnv::new().await;
    for n in 0..5 {
        let provider = if n % 2 == 0 { "codex" } else { "claude" };
        env.spawn(
            &["--name", &format!("cli-{n}"), "--provider", provider],
            "p",
        );
    }
    let out = env.cli(&["list", "--provider", "codex", "--limit", "2"]);
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        table.contains("cli-4") && table.contains("cli-2"),
        "{table}"
    );
    assert!(
        !table.contains("cli-0") && !table.contains("cli-1"),
        "{table}"
    );
    let cursor = stderr
        .trim()
        .strip_prefix("more: add --cursor ")
        .unwrap_or_else(|| panic!("no cursor hint: {stderr}"));
    let rest: Value = serde_json::from_str(&env.cli_ok(&[
        "list",
        "--provider",
        "codex",
        "--limit",
        "2",
        "--cursor",
        cursor,
        "--json",
    ]))
    .unwrap();
    assert_eq!(names(&rest), ["cli-0"]);
    assert_eq!(rest["next_cursor"], Value::Null);

    let recent: Value = serde_json::from_str(&env.cli_ok(&[
        "list",
        "--created-after",
        "1h",
        "--status",
        "pending",
        "--name",
        "cli-",
        "--json",
    ]))
    .unwrap();
    let all: HashSet<String> = names(&recent).into_iter().collect();
    assert_eq!(all.len(), 5);
    let old: Value =
        serde_json::from_str(&env.cli_ok(&["list", "--created-before", "1h", "--json"])).unwrap();
    assert_eq!(names(&old), Vec::<String>::new());

    let bad = env.cli(&["list", "--status", "sleeping"]);
    assert!(!bad.status.success());
    let message = String::from_utf8_lossy(&bad.stderr);
    assert!(message.contains("waiting_for_input"), "{message}");
}
