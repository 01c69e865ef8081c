//! Webhooks end to end, in both modes: a receiver of the test's own (a real HTTP server on
//! 127.0.0.1) that checks every request's Standard Webhooks signature with its own HMAC,
//! answers the first attempts 500, and sees them sent again with the same `webhook-id`; an
//! agent's start, end and deletion arrive in order with the agent as it was; a redelivery
//! repeats an id. In the embedded mode `up` (SQLite, one process) delivers (under a key
//! rotated since the subscription) and the CLI subscribes; in the distributed mode a worker (Postgres, Redis) delivers and the API
//! subscribes. Private targets are refused unless `webhooks.allow_private`.

use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::StatusCode as ClientStatus;
use serde_json::{Value, json};

use crate::cli_bad_input::fails_with;
use crate::common::api::{TOKEN, error_of, serve_with};
use crate::common::env::TestEnv;
use crate::common::services::free_port;

const KEY_B64: &str = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=";

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    id: String,
    answered: u16,
    body: Value,
    signature_ok: bool,
}

/// A webhook receiver: refuses the first `fail_first` requests with 500, takes the rest.
#[derive(Clone)]
struct Receiver {
    addr: SocketAddr,
    secret: Arc<Mutex<Option<Vec<u8>>>>,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start(fail_first: usize) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let receiver = Self {
            addr: listener.local_addr().unwrap(),
            secret: Arc::default(),
            got: Arc::default(),
        };
        let state = receiver.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let state = state.clone();
                async move { state.take(&headers, &body, fail_first) }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        receiver
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn take(&self, headers: &HeaderMap, body: &[u8], fail_first: usize) -> StatusCode {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let (id, timestamp) = (header("webhook-id"), header("webhook-timestamp"));
        let key = self.secret.lock().unwrap().clone().expect("secret set");
        // Our own HMAC, per the spec: "id.timestamp.body", keyed with the secret's bytes.
        let mac = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key),
            [id.as_bytes(), b".", timestamp.as_bytes(), b".", body]
                .concat()
                .as_slice(),
        );
        let expected = format!("v1,{}", STANDARD.encode(mac.as_ref()));
        let signature_ok = header("webhook-signature")
            .split(' ')
            .any(|s| s == expected)
            && (chrono::Utc::now().timestamp() - timestamp.parse::<i64>().unwrap_or(0)).abs() < 60;
        let mut got = self.got.lock().unwrap();
        let answered = if got.len() < fail_first { 500 } else { 204 };
        got.push(Received {
            id,
            answered,
            body: serde_json::from_slice(body).unwrap_or(Value::Null),
            signature_ok,
        });
        StatusCode::from_u16(answered).unwrap()
    }

    fn set_secret(&self, text: &str) {
        let b64 = text.strip_prefix("whsec_").expect("whsec_ secret");
        *self.secret.lock().unwrap() = Some(STANDARD.decode(b64).unwrap());
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until a request of event `kind` was taken (answered 2xx).
    async fn wait_for(&self, kind: &str, log: impl Fn() -> String) -> Received {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(r) = self
                .received()
                .into_iter()
                .find(|r| r.answered < 300 && r.body["type"] == kind)
            {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "no {kind} delivered; got {:?}\n{}",
                self.received(),
                log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Settings both modes share: fast polling and retries, the receiver on 127.0.0.1 allowed.
fn fast_webhooks(env: &mut TestEnv) {
    env.set_env("AGENTFLEET__SECRETS__KEY", KEY_B64);
    env.set_env("AGENTFLEET__WEBHOOKS__ALLOW_PRIVATE", "true");
    env.set_env("AGENTFLEET__WEBHOOKS__POLL_INTERVAL", "100ms");
    env.set_env("AGENTFLEET__WEBHOOKS__RETRY_INITIAL", "200ms");
}

/// What both modes check once an agent ran, with `receiver` subscribed to every event
/// (the first two requests refused) as `webhook`: order, retries, signatures, payloads.
async fn check_deliveries(
    env: &TestEnv,
    receiver: &Receiver,
    webhook: &str,
    agent: &agentfleet::domain::Agent,
    log: impl Fn() -> String,
) {
    let started = receiver.wait_for("agent.started", &log).await;
    let completed = receiver.wait_for("agent.completed", &log).await;
    let got = receiver.received();
    assert!(
        got.iter().all(|r| r.signature_ok),
        "a bad signature: {got:?}"
    );
    // The first request (agent.started) was refused twice and then taken, under one id.
    assert_eq!(got[0].id, started.id, "{got:?}");
    assert_eq!(
        got.iter()
            .filter(|r| r.id == started.id)
            .map(|r| r.answered)
            .collect::<Vec<_>>(),
        [500, 500, 204]
    );
    let first_taken = |id: &str| got.iter().position(|r| r.id == id && r.answered < 300);
    assert!(
        first_taken(&started.id) < first_taken(&completed.id),
        "in order: {got:?}"
    );
    assert_ne!(started.id, completed.id);
    for (received, status) in [(&started, "running"), (&completed, "completed")] {
        let data = &received.body["data"];
        assert_eq!(data["id"], agent.id.to_string());
        assert_eq!(data["name"], agent.name);
        assert_eq!(data["project"], "demo");
        assert_eq!(data["status"], status);
        assert!(
            received.body["timestamp"]
                .as_str()
                .is_some_and(|t| t.contains('T'))
        );
    }
    assert!(completed.body["data"]["finished_at"].is_string());
    let deliveries: Value =
        serde_json::from_str(&env.cli_ok(&["webhook", "deliveries", webhook, "--json"])).unwrap();
    let of = |id: &str| {
        deliveries
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("delivery {id} listed: {deliveries}"))
    };
    let first = of(&started.id);
    assert_eq!(
        (&first["status"], &first["attempts"], &first["last_status"]),
        (&json!("delivered"), &json!(3), &json!(204))
    );
    // Redelivered: the same id again.
    let out = env.cli_ok(&["webhook", "redeliver", &completed.id]);
    assert!(out.contains("will be sent again"), "{out}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while receiver
        .received()
        .iter()
        .filter(|r| r.id == completed.id)
        .count()
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "redelivery never came\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_up_delivers_signed_events_in_order_and_retries_with_the_same_id() {
    let mut env = TestEnv::new().await;
    let db = env.dir.path().join("embedded.db");
    env.set_env(
        "AGENTFLEET__DATABASE__URL",
        &format!("sqlite://{}", db.display()),
    );
    env.set_env("AGENTFLEET__REDIS__URL", "");
    fast_webhooks(&mut env);
    env.cli_ok(&[
        "project",
        "add",
        "demo",
        "--remote",
        env.remote.to_str().unwrap(),
    ]);
    let receiver = Receiver::start(2).await;
    let added: Value =
        serde_json::from_str(&env.cli_ok(&["webhook", "add", &receiver.url(), "--json"])).unwrap();
    let (webhook, secret) = (
        added["id"].as_str().unwrap(),
        added["secret"].as_str().unwrap(),
    );
    receiver.set_secret(secret);
    // Only completions of another project: never called.
    let elsewhere = Receiver::start(0).await;
    env.cli_ok(&[
        "project",
        "add",
        "other",
        "--remote",
        env.remote.to_str().unwrap(),
    ]);
    env.cli_ok(&[
        "webhook",
        "add",
        &elsewhere.url(),
        "--event",
        "agent.completed",
        "--project",
        "other",
    ]);
    let listed = env.cli_ok(&["webhook", "list", "--json"]);
    assert!(
        !listed.contains(&secret[6..]),
        "the secret is shown once: {listed}"
    );
    // A key rotation re-seals the secrets: the receiver's secret still verifies.
    let new_key = env.dir.path().join("new.key");
    let out = env.cli_ok(&[
        "account",
        "rotate-key",
        "--new-key-file",
        new_key.to_str().unwrap(),
    ]);
    assert!(out.contains("2 webhook secret(s) re-sealed"), "{out}");
    let new_key = std::fs::read_to_string(&new_key).unwrap();
    env.set_env("AGENTFLEET__SECRETS__KEY", new_key.trim());

    let log_path = env.dir.path().join("up.log");
    let port = free_port();
    let mut up: Child = env
        .command(&["up"])
        .env("AGENTFLEET__API__BIND", format!("127.0.0.1:{port}"))
        .env("AGENTFLEET__WORKER__WORKSPACE_ROOT", env.worker_root(0))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let agent = env.spawn(&[], "say hello");
    check_deliveries(&env, &receiver, webhook, &agent, log).await;
    env.cli_ok(&["delete", &agent.name]);
    let deleted = receiver.wait_for("agent.deleted", log).await;
    assert_eq!(deleted.body["data"]["id"], agent.id.to_string());
    assert!(elsewhere.received().is_empty());
    // `up` serves the sender's metrics: the two refused attempts, the deliveries, and their
    // latency.
    let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "agentfleet_webhook_deliveries_total{outcome=\"retried\"} 2",
        "agentfleet_webhook_delivery_latency_seconds_count{event=\"agent.completed\"}",
        "agentfleet_webhook_outbox_depth",
    ] {
        assert!(metrics.contains(line), "/metrics lacks {line}:\n{metrics}");
    }
    let _ = up.kill();
    let _ = up.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn distributed_workers_deliver_signed_events_in_order_and_retry_with_the_same_id() {
    let mut env = TestEnv::new().await;
    fast_webhooks(&mut env);
    let api = serve_with(&env, &[]).await;
    let receiver = Receiver::start(2).await;
    let added = api
        .post("/v1/webhooks")
        .json(&json!({"url": receiver.url(), "project": "demo"}))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), ClientStatus::CREATED);
    let added: Value = added.json().await.unwrap();
    receiver.set_secret(added["secret"].as_str().unwrap());
    let webhook = added["id"].as_str().unwrap().to_string();
    let shown = api.get_json(&format!("/v1/webhooks/{webhook}")).await;
    assert_eq!(shown["project"], "demo");
    assert!(shown.get("secret").is_none(), "{shown}");
    let listed = api.get_json("/v1/webhooks").await;
    assert_eq!(listed["items"][0]["id"], webhook.as_str());
    assert_eq!(listed["next_cursor"], Value::Null);

    env.start_worker(&[]);
    let agent = env.spawn(&[], "say hello");
    let log = || env.worker_log(0);
    check_deliveries(&env, &receiver, &webhook, &agent, log).await;
    let deliveries = api
        .get_json(&format!("/v1/webhooks/{webhook}/deliveries"))
        .await;
    assert!(
        deliveries["items"].as_array().unwrap().len() >= 2,
        "{deliveries}"
    );

    // Removed: nothing more is sent, and the subscription is gone.
    let removed = api
        .client
        .delete(format!("{}/v1/webhooks/{webhook}", api.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), ClientStatus::OK);
    let gone = api
        .get(&format!("/v1/webhooks/{webhook}"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(gone).await.0, ClientStatus::NOT_FOUND);
    env.stop_workers();
}

#[tokio::test(flavor = "multi_thread")]
async fn private_targets_and_bad_subscriptions_are_refused() {
    let mut env = TestEnv::new().await;
    env.set_env("AGENTFLEET__SECRETS__KEY", KEY_B64);
    fails_with(
        &env,
        &["webhook", "add", "http://127.0.0.1:9/hook"],
        "webhooks.allow_private",
    );
    fails_with(
        &env,
        &[
            "webhook",
            "add",
            "https://example.com/hook",
            "--event",
            "agent.exploded",
        ],
        "unknown event",
    );
    fails_with(
        &env,
        &[
            "webhook",
            "add",
            "https://example.com/hook",
            "--project",
            "ghost",
        ],
        "unknown project 'ghost'",
    );
    fails_with(
        &env,
        &["webhook", "remove", "not-an-id"],
        "no webhook 'not-an-id'",
    );
    let api = serve_with(&env, &[]).await;
    for (body, status, says) in [
        (
            json!({"url": "http://169.254.169.254/latest"}),
            422,
            "webhooks.allow_private",
        ),
        (
            json!({"url": "ftp://example.com/"}),
            422,
            "http:// or https://",
        ),
        (
            json!({"url": "https://example.com/", "events": []}),
            422,
            "at least one event",
        ),
        (
            json!({"url": "https://example.com/", "events": ["agent.nope"]}),
            400,
            "agent.nope",
        ),
        (
            json!({"url": "https://example.com/", "events": null}),
            400,
            "",
        ),
        (
            json!({"url": "https://example.com/", "project": "ghost"}),
            404,
            "ghost",
        ),
        (
            json!({"url": "https://example.com/", "extra": 1}),
            400,
            "extra",
        ),
    ] {
        let resp = api.post("/v1/webhooks").json(&body).send().await.unwrap();
        let (got, _, message) = error_of(resp).await;
        assert_eq!(got.as_u16(), status, "{body}: {message}");
        assert!(message.contains(says), "{body}: {message}");
    }
    let added = api
        .post("/v1/webhooks")
        .json(&json!({"url": "https://example.com/hook", "events": ["agent.completed", "agent.completed"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), ClientStatus::CREATED);
    let added: Value = added.json().await.unwrap();
    assert_eq!(added["events"], json!(["agent.completed"]));
    assert!(added["secret"].as_str().unwrap().starts_with("whsec_"));
    let missing = api
        .post("/v1/webhook-deliveries/0190c5a0-0000-7000-8000-000000000000/redeliver")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(missing).await.0, ClientStatus::NOT_FOUND);
}

/// A subscription recorded straight in the store, its secret sealed with `keyring`; with
/// the secret's text.
async fn subscribe_in_store(
    store: &agentfleet::store::Store,
    keyring: &agentfleet::credentials::Keyring,
    url: &str,
) -> (uuid::Uuid, String) {
    let secret = agentfleet::webhooks::SigningSecret::generate().unwrap();
    let id = uuid::Uuid::now_v7();
    let sealed = keyring.seal(id, secret.as_bytes()).unwrap();
    store
        .add_webhook(&agentfleet::store::NewWebhook {
            id,
            url,
            events: None,
            project: None,
            sealed: &sealed,
            key_id: keyring.id(),
        })
        .await
        .unwrap();
    (id, secret.to_text())
}

/// An agent of `demo` that started running (an `agent.started` for every subscription).
async fn started_agent(store: &agentfleet::store::Store, name: &str) {
    use agentfleet::store::{NewWorker, Owner, ProcessRecord, SpawnRecord};
    let recorded = store
        .record_spawn(SpawnRecord {
            name,
            provider: "claude",
            mode: agentfleet::domain::AgentMode::Execute,
            project: "demo",
            task_id: None,
            idempotency_key: None,
            request_hash: "h",
            payload: json!({"prompt": "p"}),
            model: None,
            budget: None,
        })
        .await
        .unwrap();
    let worker = format!("w-{name}");
    let new_worker = NewWorker {
        id: &worker,
        node_id: "n",
        host: "h",
        pid: 1,
        pid_start_time: None,
        capacity: 1,
    };
    let epoch = store
        .register_worker(&new_worker, Duration::from_secs(30))
        .await
        .unwrap();
    let owner = Owner {
        worker_id: worker.clone(),
        epoch,
    };
    store
        .claim_request(recorded.request_id, &owner, "n")
        .await
        .unwrap()
        .unwrap();
    let process = ProcessRecord {
        pid: 7,
        pid_start_time: 7,
        output_path: "/tmp/o".into(),
        workdir: "/tmp/w".into(),
    };
    assert!(
        store
            .mark_running(recorded.agent.id, &owner, &process)
            .await
            .unwrap()
    );
}

fn webhook_settings(allow_private: bool) -> agentfleet::config::WebhookSettings {
    agentfleet::config::WebhookSettings {
        allow_private,
        timeout: Duration::from_secs(2),
        retry_initial: Duration::from_secs(5),
        retry_max: Duration::from_secs(60),
        retry_for: Duration::from_secs(3600),
        poll_interval: Duration::from_millis(100),
        concurrency: 4,
        keep_for: Duration::from_secs(86400),
    }
}

/// The sender's step against a SQLite store: a receiver that never answers holds up only
/// its own subscription (the other is delivered at once; the slow one fails on
/// `webhooks.timeout` and waits for its retry), and a host name that resolves to a private
/// address is refused at delivery when private targets are not allowed.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_receiver_holds_up_only_its_own_subscription_and_private_names_are_refused() {
    use agentfleet::domain::DeliveryStatus;
    use agentfleet::webhooks::Deliverer;
    let fresh =
        crate::common::fresh_store::FreshStore::new(agentfleet::store::StoreKind::Sqlite).await;
    let store = fresh.store.clone();
    store
        .add_project("demo", "/tmp/demo.git", "main")
        .await
        .unwrap();
    let keyring = agentfleet::credentials::Keyring::generate().unwrap();
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("http://{}/hook", silent.local_addr().unwrap());
    // Accepts connections and never answers.
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = silent.accept().await {
            held.push(conn);
        }
    });
    let fast = Receiver::start(0).await;
    let (slow_id, _) = subscribe_in_store(&store, &keyring, &silent_url).await;
    let (fast_id, fast_secret) = subscribe_in_store(&store, &keyring, &fast.url()).await;
    fast.set_secret(&fast_secret);
    started_agent(&store, "one").await;

    let deliverer = Arc::new(
        Deliverer::new(
            store.clone(),
            webhook_settings(true),
            Ok(keyring.clone()),
            "sender-1".into(),
        )
        .unwrap(),
    );
    let began = Instant::now();
    let report = deliverer.run_once().await;
    assert_eq!((report.claimed, report.outbox), (2, 2));
    assert!(
        began.elapsed() < Duration::from_secs(1),
        "the step waits for no receiver"
    );
    let taken = fast.wait_for("agent.started", String::new).await;
    assert!(taken.signature_ok);
    assert!(
        began.elapsed() < Duration::from_millis(1500),
        "the fast receiver waited for the slow one: {:?}",
        began.elapsed()
    );
    let tasks = deliverer.tasks();
    tasks.close();
    tasks.wait().await;
    let slow = store.list_deliveries(slow_id, 10).await.unwrap().remove(0);
    assert_eq!((slow.status, slow.attempts), (DeliveryStatus::Pending, 1));
    assert!(
        slow.last_error
            .as_deref()
            .is_some_and(|e| e.contains("timed out")),
        "{slow:?}"
    );
    assert!(slow.next_attempt_at > chrono::Utc::now());
    let delivered = store.list_deliveries(fast_id, 10).await.unwrap().remove(0);
    assert_eq!(delivered.status, DeliveryStatus::Delivered);

    // A name (this machine's) that resolves to a private address: refused at delivery.
    store.remove_webhook(slow_id).await.unwrap();
    store.remove_webhook(fast_id).await.unwrap();
    let host = hostname::get().unwrap().to_string_lossy().into_owned();
    let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
        .await
        .map(|a| a.collect())
        .unwrap_or_default();
    if resolved.is_empty()
        || resolved
            .iter()
            .any(|a| !agentfleet::webhooks::target::is_private(a.ip()))
    {
        println!("{host} does not resolve to private addresses only ({resolved:?}): not checked");
        return;
    }
    let url = format!("http://{host}:{}/hook", fast.addr.port());
    assert!(
        agentfleet::webhooks::target::check_url(&url, false).is_ok(),
        "a plain name passes the literal check"
    );
    let (named_id, _) = subscribe_in_store(&store, &keyring, &url).await;
    started_agent(&store, "two").await;
    let strict = Arc::new(
        Deliverer::new(
            store.clone(),
            webhook_settings(false),
            Ok(keyring),
            "sender-2".into(),
        )
        .unwrap(),
    );
    assert_eq!(strict.run_once().await.claimed, 1);
    let tasks = strict.tasks();
    tasks.close();
    tasks.wait().await;
    let refused = store.list_deliveries(named_id, 10).await.unwrap().remove(0);
    assert!(
        refused
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("no public address")),
        "{refused:?}"
    );
    assert_eq!(fast.received().len(), 1, "nothing reached the receiver");
}
