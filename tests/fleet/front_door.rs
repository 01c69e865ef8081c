//! What the front door promises before anything is written, over HTTP and the CLI: an id
//! reaches only its own agent, an idempotency key means one request, a NUL or an input
//! set the worker could not write is the caller's 422, two resumes are never one lost, and
//! a remote URL's credentials are never shown.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::api::{Server, error_of, json_of, serve};
use crate::common::env::TestEnv;

/// An environment on the embedded store (SQLite, no Redis), with project `demo`.
async fn embedded_env() -> TestEnv {
    let mut env = TestEnv::new().await;
    let db = env.dir.path().join("data/agentfleet.db");
    env.set_env(
        "AGENTFLEET__DATABASE__URL",
        &format!("sqlite://{}", db.display()),
    );
    env.set_env("AGENTFLEET__REDIS__URL", "");
    env.set_env("AGENTFLEET__DATABASE__CREATE_IF_MISSING", "true");
    env.cli_ok(&["migrate"]);
    assert!(db.exists(), "the embedded store is in use");
    let remote = env.remote.display().to_string();
    env.cli_ok(&["project", "add", "demo", "--remote", &remote]);
    env
}

async fn listed(api: &Server, path: &str) -> usize {
    let page = json_of(api.get(path)).await;
    page["items"].as_array().expect("a page of items").len()
}

/// `agentfleet_backend_errors_total`, summed over backends.
async fn backend_errors(api: &Server) -> f64 {
    let text = api
        .get("/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with("agentfleet_backend_errors_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn cli_fails(env: &TestEnv, args: &[&str], want: &str) {
    let out = env.cli(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(stderr.contains(want), "{args:?}: '{stderr}' lacks '{want}'");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_name_shaped_like_an_id_is_refused_and_an_id_reaches_its_own_agent() {
    let env = TestEnv::new().await;
    let api = serve(&env).await;
    let spawn = |name: String| {
        api.post("/v1/agents")
            .json(&json!({"provider": "claude", "project": "demo", "prompt": "hi", "name": name}))
            .send()
    };
    let victim: Value = spawn("victim".into()).await.unwrap().json().await.unwrap();
    let id = victim["id"].as_str().unwrap().to_string();
    let simple = id.replace('-', "");
    for impostor in [id.clone(), simple.clone(), id.to_uppercase()] {
        let (status, _, message) = error_of(spawn(impostor.clone()).await.unwrap()).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{impostor}: {message}"
        );
        assert!(message.contains("agent name"), "{message}");
    }
    cli_fails(
        &env,
        &["spawn", "--project", "demo", "--name", &simple, "hi"],
        "has the shape of an agent id",
    );
    assert_eq!(
        listed(&api, "/v1/agents?all=true").await,
        1,
        "nothing was written"
    );
    let found = json_of(api.get(&format!("/v1/agents/{id}"))).await;
    assert_eq!(found["name"], "victim");
    // Stop by id stops the victim (pending: cancelled at once).
    let stopped = json_of(api.post(&format!("/v1/agents/{id}/stop"))).await;
    assert_eq!(
        (stopped["name"].clone(), stopped["status"].clone()),
        (json!("victim"), json!("stopped"))
    );
}

/// 20 concurrent retries of one keyed spawn with an explicit name: one 202, nineteen 200,
/// one agent; the key with another request is 422 `idempotency_key_reused`, nothing
/// written, over HTTP and the CLI.
async fn one_key_means_one_request(env: &TestEnv) {
    let api = serve(env).await;
    let body = json!({"provider": "claude", "project": "demo", "prompt": "build it",
                      "name": "retried-otter", "idempotency_key": "order-7"});
    let tries = (0..20).map(|_| api.post("/v1/agents").json(&body).send());
    let mut statuses = Vec::new();
    let mut ids = std::collections::HashSet::new();
    for resp in futures::future::join_all(tries).await {
        let resp = resp.unwrap();
        let status = resp.status();
        let agent: Value = resp.json().await.unwrap();
        statuses.push(status);
        ids.insert(
            agent["id"]
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| agent.to_string()),
        );
    }
    let count = |s: StatusCode| statuses.iter().filter(|x| **x == s).count();
    assert_eq!(
        (count(StatusCode::ACCEPTED), count(StatusCode::OK)),
        (1, 19),
        "{statuses:?} {ids:?}"
    );
    assert_eq!(ids.len(), 1, "one agent: {ids:?}");

    let mut changed = body.clone();
    changed["prompt"] = json!("build something else");
    let (status, code, message) =
        error_of(api.post("/v1/agents").json(&changed).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{message}");
    assert_eq!(code, "idempotency_key_reused");
    assert!(message.contains("'order-7'"), "{message}");
    cli_fails(
        env,
        &[
            "spawn",
            "--project",
            "demo",
            "--name",
            "retried-otter",
            "--idempotency-key",
            "order-7",
            "other",
        ],
        "idempotency_key 'order-7' was already used",
    );
    assert_eq!(
        listed(&api, "/v1/agents?all=true").await,
        1,
        "nothing was written"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_idempotency_key_means_one_request_on_postgres() {
    one_key_means_one_request(&TestEnv::new().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn one_idempotency_key_means_one_request_on_the_embedded_store() {
    one_key_means_one_request(&embedded_env().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_nul_anywhere_is_the_callers_422_naming_the_field() {
    let env = TestEnv::new().await;
    let api = serve(&env).await;
    env.spawn(&["--name", "present"], "hi");
    let errors_before = backend_errors(&api).await;
    let base = json!({"provider": "claude", "project": "demo", "prompt": "do it"});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    let spawns = [
        (with("prompt", json!("a\u{0}b")), "prompt"),
        (with("task_id", json!("t\u{0}")), "task_id"),
        (with("idempotency_key", json!("k\u{0}")), "idempotency_key"),
        (
            with("inputs", json!([{"name": "a.md", "content": "x\u{0}"}])),
            "inputs[0].content",
        ),
        (
            with("inputs", json!([{"name": "a\u{0}.md", "content": "x"}])),
            "inputs[0].name",
        ),
    ];
    let mut cases: Vec<(&str, Value, &str)> = spawns
        .into_iter()
        .map(|(body, field)| ("/v1/agents", body, field))
        .collect();
    cases.push((
        "/v1/agents/present/resume",
        json!({"answers": {"db": "x\u{0}"}}),
        "answers.db",
    ));
    cases.push((
        "/v1/projects",
        json!({"name": "p2", "remote_url": "/r\u{0}.git"}),
        "remote_url",
    ));
    cases.push((
        "/v1/accounts",
        json!({"provider": "claude", "label": "l\u{0}", "api_key": "sk-x"}),
        "label",
    ));
    for (path, body, field) in cases {
        let (status, code, message) =
            error_of(api.post(path).json(&body).send().await.unwrap()).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            "{path} {field}: {message}"
        );
        assert!(
            message.contains(&format!("{field} contains a NUL")),
            "{message}"
        );
    }
    for path in ["/v1/agents/a%00b", "/v1/agents/a%00b/events"] {
        let (status, _, message) = error_of(api.get(path).send().await.unwrap()).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{path}: {message}"
        );
        assert!(
            message.contains("path segment 'agent' contains a NUL"),
            "{message}"
        );
    }
    let (status, _, message) =
        error_of(api.post("/v1/accounts/a%00b/reset").send().await.unwrap()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{message}");
    // An input file read by the CLI may hold a NUL too.
    let binary = env.dir.path().join("blob.bin");
    std::fs::write(&binary, b"x\0y").unwrap();
    cli_fails(
        &env,
        &[
            "spawn",
            "--project",
            "demo",
            "--input",
            binary.to_str().unwrap(),
            "hi",
        ],
        "inputs[0].content contains a NUL",
    );
    assert_eq!(
        listed(&api, "/v1/agents?all=true").await,
        1,
        "no agent was written"
    );
    assert_eq!(
        listed(&api, "/v1/projects").await,
        1,
        "no project was written"
    );
    assert_eq!(
        backend_errors(&api).await,
        errors_before,
        "no backend error counted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn input_sets_the_worker_could_not_write_are_refused_naming_the_input() {
    let env = TestEnv::new().await;
    let api = serve(&env).await;
    let input = |name: &str| json!({"name": name, "content": "x"});
    let cases = [
        (vec![input("a/")], "input file name 'a/'"),
        (vec![input("a//b")], "input file name 'a//b'"),
        (vec![input("a/./b")], "input file name 'a/./b'"),
        (
            vec![input("a.md"), input("a.md")],
            "input file 'a.md' is given twice",
        ),
        (
            vec![input("a/b"), input("a")],
            "input file 'a' is also the folder of input file 'a/b'",
        ),
    ];
    for (inputs, want) in cases {
        let body =
            json!({"provider": "claude", "project": "demo", "prompt": "p", "inputs": inputs});
        let (status, _, message) =
            error_of(api.post("/v1/agents").json(&body).send().await.unwrap()).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{inputs:?}: {message}"
        );
        assert!(message.contains(want), "{message} lacks {want}");
    }
    // Two files of one base name from different folders would collide in the input folder.
    for dir in ["one", "two"] {
        std::fs::create_dir_all(env.dir.path().join(dir)).unwrap();
        std::fs::write(env.dir.path().join(dir).join("notes.md"), dir).unwrap();
    }
    cli_fails(
        &env,
        &[
            "spawn",
            "--project",
            "demo",
            "--input",
            "one/notes.md",
            "--input",
            "two/notes.md",
            "hi",
        ],
        "input file 'notes.md' is given twice",
    );
    assert!(
        listed(&api, "/v1/agents?all=true").await == 0,
        "nothing was written"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_resumes_sent_together_are_one_accepted_and_one_refused() {
    let mut env = TestEnv::new().await;
    let api = serve(&env).await;
    env.start_worker(&[]);
    let ask = "ask\n#signal {\"status\":\"questions\",\"questions\":[{\"id\":\"db\",\"question\":\"Which?\"}]}";
    let asking = env.spawn(&["--name", "ask-otter"], ask);
    let waiting = env.wait_final(asking.id, Duration::from_secs(60)).await;
    assert_eq!(waiting.status.to_string(), "waiting_for_input");
    let resume = |answer: &str| {
        api.post("/v1/agents/ask-otter/resume")
            .json(&json!({"answers": {"db": answer}}))
            .send()
    };
    let (first, second) = tokio::join!(resume("Postgres"), resume("SQLite"));
    let mut answers = vec![first.unwrap(), second.unwrap()];
    answers.sort_by_key(|r| r.status());
    let refused = answers.pop().unwrap();
    assert_eq!(answers[0].status(), StatusCode::ACCEPTED);
    let (status, _, message) = error_of(refused).await;
    assert_eq!(status, StatusCode::CONFLICT, "{message}");
    assert!(message.contains("ask-otter"), "{message}");
    let done = env
        .wait_agent(asking.id, Duration::from_secs(60), "resumed once", |a| {
            a.status.is_final() && a.status.to_string() != "waiting_for_input"
        })
        .await;
    assert_eq!(done.status.to_string(), "completed");
    assert_eq!(env.runs(), 2, "the first run and one resumed run");
    env.stop_workers();
}

#[tokio::test(flavor = "multi_thread")]
async fn remote_url_credentials_are_never_shown() {
    let env = TestEnv::new().await;
    let api = serve(&env).await;
    let url = "https://deploy-bot:s3cret-Pa55@git.example.com/org/repo.git";
    let added = api
        .post("/v1/projects")
        .json(&json!({"name": "private", "remote_url": url}))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), StatusCode::CREATED);
    let mut shown = vec![added.text().await.unwrap()];
    shown.push(
        api.get("/v1/projects")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    shown.push(env.cli_ok(&["project", "list"]));
    shown.push(env.cli_ok(&["project", "list", "--json"]));
    shown.push(env.cli_ok(&["project", "add", "other", "--remote", url]));
    for text in &shown {
        assert!(!text.contains("s3cret"), "credentials shown: {text}");
        assert!(text.contains("git.example.com/org/repo.git"), "{text}");
    }
    // The store keeps them for the worker's push.
    let stored = env.store().await.project("private").await.unwrap();
    assert_eq!(stored.remote_url, url);
}
