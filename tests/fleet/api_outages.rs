//! The API and a worker's probe while a service of the test's own hangs (SIGSTOP: open
//! connections go unanswered rather than refused) or restarts: readiness answers in time,
//! and a spawn right after a Redis restart reaches a worker without waiting for the
//! re-dispatch.

use std::time::{Duration, Instant};

use agentfleet::domain::AgentStatus;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::api::serve;
use crate::common::env::{TestEnv, assert_status};
use crate::common::services::{PrivatePostgres, PrivateRedis, free_port};

/// A probe's status and how long it took to answer (a 10 s client timeout: a hung probe
/// fails the test instead of hanging it).
async fn probe(client: &reqwest::Client, url: &str) -> (StatusCode, Duration, Value) {
    let started = Instant::now();
    let resp = client
        .get(url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url} did not answer: {e}"));
    let took = started.elapsed();
    let status = resp.status();
    (status, took, resp.json().await.unwrap_or(Value::Null))
}

async fn wait_ready(client: &reqwest::Client, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let resp = client.get(url).timeout(Duration::from_secs(5)).send().await;
        if resp.is_ok_and(|r| r.status() == StatusCode::OK) {
            return;
        }
        assert!(Instant::now() < deadline, "{url} never became ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Readiness must answer within 1 s; the bound leaves room for a loaded machine.
const ANSWER_WITHIN: Duration = Duration::from_millis(1500);

#[tokio::test(flavor = "multi_thread")]
async fn readiness_answers_503_in_time_when_postgres_or_redis_hangs() {
    let pg = PrivatePostgres::init(free_port());
    let redis = PrivateRedis::start(free_port());
    let mut env = TestEnv::with_services(
        &format!("127.0.0.1:{}", pg.port),
        &format!("redis://127.0.0.1:{}", redis.port),
    )
    .await;
    // A lease that outlives the freezes, so the worker's readiness is about its services.
    env.set_env("AGENTFLEET__WORKER__LEASE_TTL", "60s");
    let health = format!("127.0.0.1:{}", free_port());
    env.start_worker(&[("AGENTFLEET__WORKER__METRICS_BIND", &health)]);
    let api = serve(&env).await;
    let client = reqwest::Client::new();
    let urls = [
        format!("{}/readyz", api.base),
        format!("http://{health}/readyz"),
    ];
    for url in &urls {
        wait_ready(&client, url).await;
    }

    for (service, freeze) in [
        ("store", &(|f| pg.freeze(f)) as &dyn Fn(bool)),
        ("redis", &|f| redis.freeze(f)),
    ] {
        freeze(true);
        for url in &urls {
            let (status, took, body) = probe(&client, url).await;
            assert_eq!(
                status,
                StatusCode::SERVICE_UNAVAILABLE,
                "{url} with {service} hung: {body}"
            );
            assert!(
                took <= ANSWER_WITHIN,
                "{url} with {service} hung took {took:?}"
            );
            // The worker calls its event bus "redis", the API "events".
            let key = match service {
                "redis" if body.get("redis").is_some() => "redis",
                "redis" => "events",
                _ => "store",
            };
            assert_ne!(body[key], "ok", "{url}: {body}");
        }
        freeze(false);
        for url in &urls {
            wait_ready(&client, url).await;
        }
    }
    drop(api);
    env.stop_workers();
    assert!(!env.worker_log(0).contains("panicked"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spawn_right_after_a_redis_restart_reaches_a_worker_promptly() {
    let port = free_port();
    let mut redis = PrivateRedis::start(port);
    let mut env =
        TestEnv::with_services("127.0.0.1:5432", &format!("redis://127.0.0.1:{port}")).await;
    env.start_worker(&[]);
    let api = serve(&env).await;
    let spawn = |prompt: &'static str| {
        api.post("/v1/agents")
            .json(&json!({"provider": "claude", "project": "demo", "prompt": prompt}))
            .send()
    };
    let before: Value = spawn("before the restart")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let before = uuid::Uuid::parse_str(before["id"].as_str().unwrap()).unwrap();
    assert_status(
        &env.wait_final(before, Duration::from_secs(30)).await,
        AgentStatus::Completed,
    );

    // Redis restarts empty; the API's connection to it is now dead.
    redis.kill();
    let _redis = PrivateRedis::start(port);
    // The worker finds the new Redis on its own (its poll reconnects).
    tokio::time::sleep(Duration::from_secs(2)).await;

    let resp = spawn("after the restart").await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let after: Value = resp.json().await.unwrap();
    let after = uuid::Uuid::parse_str(after["id"].as_str().unwrap()).unwrap();
    let started = Instant::now();
    // Well under queue.redispatch_after (30 s), which is what a lost push waits for.
    env.wait_agent(
        after,
        Duration::from_secs(10),
        "was claimed by a worker",
        |a| a.status != AgentStatus::Pending,
    )
    .await;
    eprintln!("claimed {:?} after the spawn", started.elapsed());
    assert_status(
        &env.wait_final(after, Duration::from_secs(30)).await,
        AgentStatus::Completed,
    );
}
