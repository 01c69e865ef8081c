//! The web dashboard in a real browser (headless Chromium through chromedriver): signing in,
//! a spawn appearing and its output streaming live, answering a question from the page,
//! stopping from the page, the read-only role (and a forged change refused), filters and
//! pages over 1,000 agents. The tests write a screenshot of every view at 1280×800 to
//! `docs/screenshots/`.

use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::api::{Server, TOKEN, serve_with};
use crate::common::browser::{self, Browser};
use crate::common::env::TestEnv;

const READ_ONLY: &str = "read-only-token-51c2";
const WAIT: Duration = Duration::from_secs(30);

async fn spawn(api: &Server, name: &str, prompt: &str) -> String {
    let resp = api
        .post("/v1/agents")
        .json(&json!({"provider": "claude", "project": "demo", "prompt": prompt, "name": name}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let agent: Value = resp.json().await.unwrap();
    agent["id"].as_str().unwrap().to_string()
}

async fn status_of(api: &Server, id: &str) -> String {
    api.get_json(&format!("/v1/agents/{id}")).await["status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn setup(with_worker: bool) -> Option<(TestEnv, Server, Browser)> {
    let browser = browser::open().await?;
    let mut env = TestEnv::new().await;
    if with_worker {
        env.start_worker(&[]);
    }
    let api = serve_with(&env, &[("AGENTFLEET__API__READ_ONLY_TOKENS", READ_ONLY)]).await;
    Some((env, api, browser))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spawn_appears_and_its_output_streams_live() {
    let Some((mut env, api, b)) = setup(true).await else {
        return;
    };
    b.sign_in(&api.base, TOKEN).await;
    b.goto(&format!("{}/#/agents", api.base)).await;
    let id = spawn(&api, "live-lynx", "stream slowly\n#sleep 0.4\n#ticks 25").await;
    b.wait("tr[data-agent='live-lynx']", WAIT).await;
    b.click("tr[data-agent='live-lynx'] a").await;
    b.wait_text("#conversation", "tick 2", WAIT).await;
    // The page follows the stream: a tick reaches it while the agent is still writing.
    let store = env.store().await;
    let agent_id: uuid::Uuid = id.parse().unwrap();
    let mut seen_live = 0;
    let deadline = Instant::now() + WAIT;
    while seen_live < 3 && Instant::now() < deadline {
        let events = store.events_after(agent_id, 0).await.unwrap();
        let last_tick = events
            .iter()
            .rev()
            .find_map(|e| e.data["text"].as_str().filter(|t| t.starts_with("tick ")));
        if let Some(tick) = last_tick.map(str::to_string)
            && tick != "tick 25"
        {
            let written = Instant::now();
            b.wait_text(
                "#conversation",
                &format!("{tick}\n"),
                Duration::from_secs(1),
            )
            .await;
            assert!(written.elapsed() <= Duration::from_secs(1));
            seen_live += 1;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(seen_live >= 3, "the page showed ticks as they were written");
    b.screenshot("agent").await;
    b.wait_text("#agent-status", "Completed", WAIT).await;
    b.wait_text("#conversation", "All done.", WAIT).await;
    // The diff, read again once the run ended and pushed its work.
    b.wait_text("#diff", "+written by fake-claude", WAIT).await;
    b.screenshot("agent-completed").await;

    // Every other view, for the screenshots and to see each renders its data.
    for (hash, name, css, want) in [
        ("#/", "overview", "#ov-workers", "1"),
        ("#/agents", "agents", "#agents-table", "live-lynx"),
        ("#/queue", "queue", "#q-depth", "0"),
        ("#/workers", "workers", "main table", "alive"),
        ("#/accounts", "accounts", "main", "No accounts"),
        ("#/projects", "projects", "main table", "demo"),
    ] {
        b.goto(&format!("{}/{hash}", api.base)).await;
        b.wait_text(css, want, WAIT).await;
        b.screenshot(name).await;
    }
    // A phone-width screen shows the same page, without sideways scrolling of the page.
    b.client.set_window_size(390, 844).await.unwrap();
    b.goto(&format!("{}/#/agents", api.base)).await;
    b.wait_text("#agents-table", "live-lynx", WAIT).await;
    let overflow = b
        .run("return document.documentElement.scrollWidth <= window.innerWidth + 1;")
        .await;
    assert_eq!(overflow, json!(true), "the page fits a phone's width");
    b.screenshot("agents-phone").await;
    env.stop_workers();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_question_answered_in_the_page_resumes_the_agent() {
    let Some((mut env, api, b)) = setup(true).await else {
        return;
    };
    let ask = "pick a database\n#signal {\"status\":\"questions\",\"questions\":[{\"id\":\"db\",\"question\":\"Which database?\"}]}";
    let id = spawn(&api, "asking-ibis", ask).await;
    b.sign_in(&api.base, TOKEN).await;
    b.goto(&format!("{}/#/agents", api.base)).await;
    b.wait("tr.waiting[data-agent='asking-ibis']", WAIT).await;
    b.goto(&format!("{}/#/agents/{id}", api.base)).await;
    b.wait_text("#questions", "Which database?", WAIT).await;
    b.screenshot("agent-question").await;
    b.wait("#answer-db", WAIT)
        .await
        .send_keys("Postgres, please")
        .await
        .unwrap();
    b.click("#answer-submit").await;
    b.wait_text("#agent-status", "Completed", Duration::from_secs(60))
        .await;
    let resumed = env
        .remote_file("agent/asking-ibis", "RESUMED.txt")
        .expect("the resumed run pushed its file");
    assert!(resumed.contains("Postgres, please"), "{resumed}");
    env.stop_workers();
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_in_the_page_stops_a_running_agent() {
    let Some((mut env, api, b)) = setup(true).await else {
        return;
    };
    let id = spawn(&api, "holding-heron", "hold on\n#hold 120").await;
    b.sign_in(&api.base, TOKEN).await;
    b.goto(&format!("{}/#/agents/{id}", api.base)).await;
    b.wait_text("#agent-status", "Running", WAIT).await;
    b.click("#stop").await;
    b.wait_text("#agent-status", "Stopped", WAIT).await;
    assert_eq!(status_of(&api, &id).await, "stopped");
    env.stop_workers();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_only_token_sees_everything_and_changes_nothing() {
    let Some((_env, api, b)) = setup(false).await else {
        return;
    };
    let id = spawn(&api, "pending-puffin", "wait in the queue").await;
    b.sign_in(&api.base, READ_ONLY).await;
    assert_eq!(b.text_of("#role").await, "Read-only");
    b.goto(&format!("{}/#/agents", api.base)).await;
    b.wait("tr[data-agent='pending-puffin']", WAIT).await;
    assert!(!b.exists("#bulk-stop").await, "no bulk actions");
    b.goto(&format!("{}/#/agents/{id}", api.base)).await;
    b.wait_text("#agent-actions", "Read-only", WAIT).await;
    assert!(!b.exists("#stop").await && !b.exists("#delete").await);
    // The API refuses a change from this session, with or without the CSRF token.
    let forged = b
        .run(&format!(
            "const s = await (await fetch('/web/session')).json();
             const a = await fetch('/v1/agents/{id}/stop', {{method: 'POST'}});
             const b = await fetch('/v1/agents/{id}/stop', {{method: 'POST', headers: {{'x-csrf-token': s.csrf}}}});
             return [a.status, (await a.json()).error.code, b.status, (await b.json()).error.code];"
        ))
        .await;
    assert_eq!(forged, json!([403, "forbidden", 403, "forbidden"]));
    // And the bearer token alike.
    let resp = api
        .client
        .post(format!("{}/v1/agents/{id}/stop", api.base))
        .bearer_auth(READ_ONLY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = api
        .client
        .get(format!("{}/v1/queue", api.base))
        .bearer_auth(READ_ONLY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(status_of(&api, &id).await, "pending");

    // A full session's change without its CSRF token is refused too; with it, it works.
    b.click("#sign-out").await;
    b.sign_in(&api.base, TOKEN).await;
    let full = b
        .run(&format!(
            "const s = await (await fetch('/web/session')).json();
             const a = await fetch('/v1/agents/{id}/dismiss', {{method: 'POST'}});
             const b = await fetch('/v1/agents/{id}/dismiss', {{method: 'POST', headers: {{'x-csrf-token': s.csrf}}}});
             return [a.status, b.status, document.cookie];"
        ))
        .await;
    assert_eq!(
        full,
        json!([403, 200, ""]),
        "HttpOnly: the page cannot read the cookie"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn filters_and_pages_over_a_thousand_agents() {
    let Some((env, api, b)) = setup(false).await else {
        return;
    };
    let project = api
        .post("/v1/projects")
        .json(&json!({"name": "other", "remote_url": env.remote.to_str().unwrap()}))
        .send()
        .await
        .unwrap();
    assert_eq!(project.status(), StatusCode::CREATED);
    let started = Instant::now();
    let statuses: Vec<StatusCode> = futures::stream::iter(0..1000)
        .map(|i| {
            let body = json!({
                "provider": if i % 4 == 0 { "codex" } else { "claude" },
                "project": if i % 2 == 0 { "demo" } else { "other" },
                "prompt": "queued",
                "name": format!("bulk-{i:04}"),
                "task_id": format!("task-{i}"),
            });
            let req = api.post("/v1/agents").json(&body);
            async move { req.send().await.unwrap().status() }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == StatusCode::ACCEPTED));
    eprintln!("1000 spawns recorded in {:?}", started.elapsed());

    b.sign_in(&api.base, TOKEN).await;
    b.goto(&format!("{}/#/agents", api.base)).await;
    b.wait_text("#page-info", "1–50", WAIT).await;
    let rows = b
        .client
        .find_all(fantoccini::Locator::Css("#agents-table tbody tr"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 50);
    b.screenshot("agents-many").await;

    let select = |css: &'static str, value: &'static str| {
        let b = &b;
        async move {
            b.wait(css, WAIT)
                .await
                .select_by_value(value)
                .await
                .unwrap_or_else(|e| panic!("select {value} in {css}: {e}"));
        }
    };
    // The names of the rows shown (read in one script: the table is redrawn as it refreshes).
    let shown = || async {
        let names = b
            .client
            .execute(
                "return [...document.querySelectorAll('#agents-table tbody tr[data-agent]')]\
                 .map((r) => r.dataset.agent);",
                vec![],
            )
            .await
            .unwrap();
        serde_json::from_value::<Vec<String>>(names).unwrap()
    };
    let number = |name: &str| name.trim_start_matches("bulk-").parse::<u32>().unwrap();
    select("#f-project", "other").await;
    b.wait_text("#page-info", "1–50", WAIT).await;
    // Only the other project's agents (the odd ones), newest first.
    let deadline = Instant::now() + WAIT;
    while shown().await.iter().any(|n| number(n) % 2 == 0) && Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let first_page = shown().await;
    assert_eq!(first_page.len(), 50);
    assert!(
        first_page.iter().all(|n| number(n) % 2 == 1),
        "{first_page:?}"
    );
    select("#f-provider", "codex").await;
    // Of the odd numbers (other), those divisible by 4 (codex): none.
    b.wait_text("#page-info", "No agents match", WAIT).await;
    select("#f-provider", "claude").await;
    b.wait_text("#page-info", "1–50", WAIT).await;
    b.click("#next-page").await;
    b.wait_text("#page-info", "51–100", WAIT).await;
    let second_page = shown().await;
    assert!(
        second_page.iter().all(|n| !first_page.contains(n)),
        "a page shows agents of the page before: {second_page:?}"
    );
    b.click("#prev-page").await;
    b.wait_text("#page-info", "1–50", WAIT).await;
    select("#f-project", "").await;
    select("#f-provider", "").await;
    b.wait("#f-text", WAIT)
        .await
        .send_keys("bulk-0042")
        .await
        .unwrap();
    b.wait_text("#page-info", "1–1", WAIT).await;
    assert!(b.exists("tr[data-agent='bulk-0042']").await);
    b.wait("#f-text", WAIT).await.clear().await.unwrap();
    // A task id finds its agent.
    b.wait("#f-text", WAIT)
        .await
        .send_keys("task-7")
        .await
        .unwrap();
    b.wait("tr[data-agent='bulk-0007']", WAIT).await;
    b.wait_text("#page-info", "1–1", WAIT).await;
    select("#f-status", "running").await;
    b.wait_text("#page-info", "No agents match", WAIT).await;
}
