//! The HTTP API as upstream services use it: bearer auth, JSON errors, spawn, get, list,
//! workers, projects and the SSE event stream (backlog from Last-Event-ID, then live).

use std::time::Duration;

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::api::{TOKEN, error_of, serve};
use crate::common::env::TestEnv;

#[tokio::test(flavor = "multi_thread")]
async fn requests_need_a_valid_bearer_token() {
    let env = TestEnv::new().await;
    let api = serve(&env).await;
    let url = format!("{}/v1/agents", api.base);
    let (status, code, _) = error_of(api.client.get(&url).send().await.unwrap()).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    let wrong = api
        .client
        .get(&url)
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let ok = api.get("/v1/agents").send().await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    // Probes stay open for orchestrators.
    let ready = api
        .client
        .get(format!("{}/readyz", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn server_refuses_a_public_address_without_tokens() {
    let env = TestEnv::new().await;
    let out = env
        .command(&["serve"])
        .env("AGENTFLEET__API__BIND", "0.0.0.0:0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("non-loopback"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn spawn_over_http_then_follow_its_events() {
    let mut env = TestEnv::new().await;
    let api = serve(&env).await;
    let project = api
        .post("/v1/projects")
        .json(&json!({"name": "other", "remote_url": env.remote.to_str().unwrap()}))
        .send()
        .await
        .unwrap();
    assert_eq!(project.status(), StatusCode::CREATED);
    let projects: Vec<Value> = items(api.get("/v1/projects")).await;
    assert_eq!(projects.len(), 2);

    let resp = api
        .post("/v1/agents")
        .json(
            &json!({"provider": "claude", "project": "other", "prompt": "over http",
                      "name": "http-heron", "idempotency_key": "k1"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let agent: Value = resp.json().await.unwrap();
    let id = agent["id"].as_str().unwrap().to_string();
    assert_eq!(agent["status"], "pending");
    // The same key with the same request again: the same agent, 200.
    let again = api
        .post("/v1/agents")
        .json(
            &json!({"provider": "claude", "project": "other", "prompt": "over http",
                      "name": "http-heron", "idempotency_key": "k1"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.json::<Value>().await.unwrap()["id"], agent["id"]);

    // Follow live from before the worker starts.
    let events = api
        .get(&format!("/v1/agents/{id}/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), StatusCode::OK);
    env.start_worker(&[]);
    let body = tokio::time::timeout(Duration::from_secs(30), async {
        let mut text = String::new();
        let mut stream = events.bytes_stream();
        while let Some(chunk) = stream.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            if text.contains("\"status\":\"completed\"") {
                break;
            }
        }
        text
    })
    .await
    .expect("SSE stream reached the end");
    for kind in [
        "event: session_started",
        "event: tool_use",
        "event: result",
        "id: 1",
    ] {
        assert!(body.contains(kind), "SSE lacks {kind}: {body}");
    }

    let by_name: Value = api
        .get("/v1/agents/http-heron")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(by_name["id"], agent["id"]);
    assert_eq!(by_name["status"], "completed");

    // Resume the stream after event 3: only later events come.
    let resumed = api
        .get(&format!("/v1/agents/{id}/events"))
        .header("Last-Event-ID", "3")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !resumed.contains("id: 3\n") && resumed.contains("id: 4\n"),
        "{resumed}"
    );

    let workers: Vec<Value> = items(api.get("/v1/workers")).await;
    assert_eq!(workers.len(), 1);
    assert_eq!(by_name["worker_id"], workers[0]["id"]);
    assert_eq!(by_name["pending_requests"], json!([]));

    // Its checkout freed on its node: 202, the record stays; an unknown agent is a 404.
    let cleanup = api
        .post("/v1/agents/http-heron/cleanup")
        .send()
        .await
        .unwrap();
    assert_eq!(cleanup.status(), StatusCode::ACCEPTED);
    assert_eq!(cleanup.json::<Value>().await.unwrap()["id"], agent["id"]);
    let missing = api
        .post("/v1/agents/no-such-heron/cleanup")
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_of(missing).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::NOT_FOUND, "not_found")
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let events = api
            .get(&format!("/v1/agents/{id}/events"))
            .header("Last-Event-ID", "4")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if events.contains("event: checkout.removed") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{events}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    env.stop_workers();
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_clear_json_errors_and_write_nothing() {
    let env = TestEnv::new().await;
    let api = serve(&env).await;
    let store = env.store().await;
    env.spawn(&["--name", "taken-name"], "first");
    let before = store.count_agents().await.unwrap();

    let malformed = api
        .post("/v1/agents")
        .header("content-type", "application/json")
        .body("{\"provider\": \"claude\",")
        .send()
        .await
        .unwrap();
    let (status, _, message) = error_of(malformed).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message.contains("malformed JSON"), "{message}");

    let base = json!({"provider": "claude", "project": "demo", "prompt": "do it"});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    let cases = [
        (
            with("provider", json!("nope")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "known providers: claude, codex",
        ),
        (
            with("project", json!("ghost")),
            StatusCode::NOT_FOUND,
            "unknown project 'ghost'",
        ),
        (
            with("name", json!("taken-name")),
            StatusCode::CONFLICT,
            "already exists",
        ),
        (
            with("name", json!("a/b")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "agent name",
        ),
        (
            with("name", json!("..")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "agent name",
        ),
        (
            with("name", json!("x.lock")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "agent name",
        ),
        (
            with("prompt", json!("   ")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "prompt is empty",
        ),
        (
            with("prompt", json!("x".repeat(300 * 1024))),
            StatusCode::UNPROCESSABLE_ENTITY,
            "over the limit",
        ),
        (
            with("mode", json!("yolo")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown mode",
        ),
        (
            with(
                "inputs",
                json!([{"name": "../../etc/passwd", "content": "x"}]),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "input file name",
        ),
        (
            with("inputs", json!([{"name": "/abs", "content": "x"}])),
            StatusCode::UNPROCESSABLE_ENTITY,
            "input file name",
        ),
        (
            with("surprise", json!(1)),
            StatusCode::BAD_REQUEST,
            "unknown field",
        ),
    ];
    for (body, want_status, want_text) in cases {
        let resp = api.post("/v1/agents").json(&body).send().await.unwrap();
        let (status, _, message) = error_of(resp).await;
        assert_eq!(status, want_status, "{body}: {message}");
        assert!(message.contains(want_text), "{message} lacks {want_text}");
    }
    let unknown = api.get("/v1/agents/nobody").send().await.unwrap();
    assert_eq!(error_of(unknown).await.0, StatusCode::NOT_FOUND);
    let dup_project = api
        .post("/v1/projects")
        .json(&json!({"name": "demo", "remote_url": "/x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(dup_project).await.0, StatusCode::CONFLICT);
    assert_eq!(
        store.count_agents().await.unwrap(),
        before,
        "nothing was written"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn lifecycle_over_http_resume_stop_dismiss_delete() {
    let mut env = TestEnv::new().await;
    let api = serve(&env).await;
    env.start_worker(&[]);
    let ask = "ask\n#signal {\"status\":\"questions\",\"questions\":[{\"id\":\"db\",\"question\":\"Which?\"}]}";
    let spawn = |name: &str, prompt: &str| {
        api.post("/v1/agents")
            .json(&json!({"provider": "claude", "project": "demo", "prompt": prompt, "name": name}))
            .send()
    };
    assert_eq!(
        spawn("ask-otter", ask).await.unwrap().status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        spawn("slow-otter", "slow\n#hold 60")
            .await
            .unwrap()
            .status(),
        StatusCode::ACCEPTED
    );
    let store = env.store().await;
    let asking = store.agent("ask-otter").await.unwrap();
    let waiting = env.wait_final(asking.id, Duration::from_secs(30)).await;
    assert_eq!(waiting.status.to_string(), "waiting_for_input");

    // Resume: a body that is not {"answers": {...}} is refused; the right one is accepted.
    let bad = api
        .post("/v1/agents/ask-otter/resume")
        .json(&json!({"answer": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(bad).await.0, StatusCode::BAD_REQUEST);
    let resumed = api
        .post("/v1/agents/ask-otter/resume")
        .json(&json!({"answers": {"db": "Postgres"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resumed.status(), StatusCode::ACCEPTED);
    env.wait_agent(asking.id, Duration::from_secs(30), "resumed", |a| {
        a.status.to_string() == "completed"
    })
    .await;

    // Stop answers once the agent has stopped.
    let slow = store.agent("slow-otter").await.unwrap();
    env.wait_agent(slow.id, Duration::from_secs(30), "ran", |a| {
        a.status.to_string() == "running"
    })
    .await;
    let stopped: Value = api
        .post("/v1/agents/slow-otter/stop")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stopped["status"], "stopped");
    let again = api.post("/v1/agents/slow-otter/stop").send().await.unwrap();
    assert_eq!(error_of(again).await.0, StatusCode::CONFLICT);

    // Dismiss hides it from the list; ?all=true shows it.
    let dismissed = api
        .post("/v1/agents/slow-otter/dismiss")
        .send()
        .await
        .unwrap();
    assert_eq!(dismissed.status(), StatusCode::OK);
    let listed: Vec<Value> = items(api.get("/v1/agents")).await;
    assert_eq!(listed.len(), 1);
    let all: Vec<Value> = items(api.get("/v1/agents?all=true")).await;
    assert_eq!(all.len(), 2);

    // Delete, with the remote branch.
    assert!(env.remote_file("agent/ask-otter", "RESUMED.txt").is_some());
    let deleted = api
        .client
        .delete(format!(
            "{}/v1/agents/ask-otter?remote_branch=true",
            api.base
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::OK);
    let gone = api.get("/v1/agents/ask-otter").send().await.unwrap();
    assert_eq!(error_of(gone).await.0, StatusCode::NOT_FOUND);
    assert!(env.remote_file("agent/ask-otter", "RESUMED.txt").is_none());
    env.stop_workers();
}

/// The items of the page a list request answers.
async fn items(request: reqwest::RequestBuilder) -> Vec<Value> {
    let page: Value = request.send().await.unwrap().json().await.unwrap();
    serde_json::from_value(page["items"].clone()).expect("a page of items")
}
