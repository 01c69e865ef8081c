//! Observability end to end: a real OTLP/HTTP receiver started here collects the spans of a
//! spawn that goes through the API process, Redis and a separate worker process; the test
//! checks one trace from the caller's `traceparent` to `agent.run`, the parentage and the
//! attributes, that JSON log lines carry the trace id, that no secret appears in any log
//! line or span, and that `/metrics`, `/healthz`, `/readyz` answer on the API and the worker.

use std::collections::HashMap;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use serde_json::json;

use crate::common::env::TestEnv;

/// A span as received, flattened for assertions.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    name: String,
    kind: i32,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attributes: HashMap<String, String>,
    events: Vec<(String, HashMap<String, String>)>,
    status_code: i32,
    status_message: String,
}

// OTLP span kinds and status codes.
const SERVER: i32 = 2;
const PRODUCER: i32 = 4;
const CONSUMER: i32 = 5;
const STATUS_OK: i32 = 1;

fn attrs(kvs: &[KeyValue]) -> HashMap<String, String> {
    kvs.iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(AnyValue::StringValue(s)) => s.clone(),
                Some(AnyValue::IntValue(i)) => i.to_string(),
                Some(AnyValue::BoolValue(b)) => b.to_string(),
                Some(AnyValue::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

type Spans = Arc<Mutex<Vec<Received>>>;

async fn receive(State(spans): State<Spans>, body: Bytes) -> impl axum::response::IntoResponse {
    let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
    let mut out = spans.lock().unwrap();
    for rs in request.resource_spans {
        let resource = rs
            .resource
            .map(|r| attrs(&r.attributes))
            .unwrap_or_default();
        let service = resource.get("service.name").cloned().unwrap_or_default();
        for ss in rs.scope_spans {
            for s in ss.spans {
                let status = s.status.clone().unwrap_or_default();
                out.push(Received {
                    service: service.clone(),
                    name: s.name.clone(),
                    kind: s.kind,
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent_span_id: hex(&s.parent_span_id),
                    attributes: attrs(&s.attributes),
                    events: s
                        .events
                        .iter()
                        .map(|e| (e.name.clone(), attrs(&e.attributes)))
                        .collect(),
                    status_code: status.code,
                    status_message: status.message,
                });
            }
        }
    }
    (
        [("content-type", "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn otlp_receiver() -> (String, Spans) {
    let spans: Spans = Arc::default();
    let app = axum::Router::new()
        .route("/v1/traces", post(receive))
        .with_state(spans.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), spans)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_http(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while reqwest::get(url).await.is_err() {
        assert!(Instant::now() < deadline, "{url} did not answer");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn sigterm_and_wait(child: &mut Child) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn find<'a>(spans: &'a [Received], trace: &str, name: &str) -> &'a Received {
    spans
        .iter()
        .find(|s| s.trace_id == trace && s.name == name)
        .unwrap_or_else(|| {
            let names: Vec<_> = spans.iter().map(|s| (&s.name, &s.trace_id)).collect();
            panic!("no span {name:?} in trace {trace}; received {names:?}")
        })
}

#[tokio::test(flavor = "multi_thread")]
async fn one_trace_from_the_callers_traceparent_to_agent_run_and_no_secret_leaks() {
    let mut env = TestEnv::new().await;
    let (endpoint, spans) = otlp_receiver().await;
    let token = format!("tok-SECRET-{}", uuid::Uuid::new_v4().simple());
    let db_password = format!(
        "pw-SECRET-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    // Trust auth ignores the password, so it only has to stay out of logs and spans.
    let db_url = env
        .db_url
        .replace("postgres@", &format!("postgres:{db_password}@"));
    for (k, v) in [
        ("AGENTFLEET__DATABASE__URL", db_url.as_str()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("RUST_LOG", "debug"),
    ] {
        env.set_env(k, v);
    }

    // The API process.
    let api_port = free_port();
    let api_log_path = env.dir.path().join("api.log");
    let mut api = env
        .command(&["serve"])
        .env("AGENTFLEET__API__BIND", format!("127.0.0.1:{api_port}"))
        .env("AGENTFLEET__API__TOKENS", &token)
        .env("OTEL_SERVICE_NAME", "agentfleet-api")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&api_log_path).unwrap())
        .spawn()
        .unwrap();
    let api_base = format!("http://127.0.0.1:{api_port}");
    wait_http(&format!("{api_base}/healthz")).await;

    // A second process: the worker, with its health endpoint.
    let health_port = free_port();
    let health = format!("127.0.0.1:{health_port}");
    env.start_worker(&[
        ("OTEL_SERVICE_NAME", "agentfleet-worker"),
        ("AGENTFLEET__WORKER__METRICS_BIND", &health),
    ]);
    env.wait_workers(1).await;
    let health_base = format!("http://{health}");
    wait_http(&format!("{health_base}/healthz")).await;

    // The upstream caller's trace.
    let trace_id = hex(uuid::Uuid::new_v4().as_bytes());
    let caller_span = &hex(uuid::Uuid::new_v4().as_bytes())[..16];
    let client = reqwest::Client::new();
    let resp = client
        .post(format!("{api_base}/v1/agents"))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .header("tracestate", "upstream=1")
        .json(&json!({"provider": "claude", "project": "demo", "prompt": "trace me"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::ACCEPTED);
    let agent: serde_json::Value = resp.json().await.unwrap();
    let agent_id: uuid::Uuid = agent["id"].as_str().unwrap().parse().unwrap();
    let agent = env.wait_final(agent_id, Duration::from_secs(60)).await;
    crate::common::env::assert_status(&agent, agentfleet::domain::AgentStatus::Completed);

    // Metrics and health, on both processes.
    let worker_metrics = reqwest::get(format!("{health_base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "agentfleet_spawn_latency_seconds_bucket",
        "agentfleet_agent_run_duration_seconds_count",
        "agentfleet_agents_finished_total",
        "agentfleet_queue_depth 0",
        "agentfleet_queue_oldest_pending_age_seconds",
        "agentfleet_agents{status=\"completed\"} 1",
        "agentfleet_worker_free_slots",
        "agentfleet_worker_running_agents",
    ] {
        assert!(
            worker_metrics.contains(name),
            "worker /metrics lacks {name}:\n{worker_metrics}"
        );
    }
    let ready = reqwest::get(format!("{health_base}/readyz")).await.unwrap();
    assert_eq!(ready.status(), reqwest::StatusCode::OK);
    let ready: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(ready["lease"], "held", "{ready}");
    let api_metrics = reqwest::get(format!("{api_base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        api_metrics.contains("agentfleet_requests_total{kind=\"spawn\",outcome=\"accepted\"} 1"),
        "{api_metrics}"
    );
    assert!(
        api_metrics.contains("agentfleet_queue_depth 0"),
        "{api_metrics}"
    );

    // The CLI's enqueue is traced too (its PRODUCER span is flushed before it exits).
    env.set_env("OTEL_SERVICE_NAME", "agentfleet-cli");
    let cli_agent = env.spawn(&[], "traced from the CLI");
    env.wait_final(cli_agent.id, Duration::from_secs(60)).await;

    // A stop through the API: one trace from the caller to the worker's act.
    let stop_trace = hex(uuid::Uuid::new_v4().as_bytes());
    let stop_caller = &hex(uuid::Uuid::new_v4().as_bytes())[..16];
    let held = env.spawn(&["--name", "traced-otter"], "hold on\n#hold 120");
    env.wait_agent(held.id, Duration::from_secs(60), "running", |a| {
        a.status == agentfleet::domain::AgentStatus::Running
    })
    .await;
    let resp = client
        .post(format!("{api_base}/v1/agents/traced-otter/stop"))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{stop_trace}-{stop_caller}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::OK);

    // SIGTERM both: each flushes its spans on the way out.
    env.stop_workers();
    sigterm_and_wait(&mut api);

    let deadline = Instant::now() + Duration::from_secs(15);
    let spans = loop {
        let got = spans.lock().unwrap().clone();
        let has = |name: &str| got.iter().any(|s| s.trace_id == trace_id && s.name == name);
        if has("agent.run")
            && has("POST /v1/agents")
            && got
                .iter()
                .any(|s| s.trace_id == stop_trace && s.name == "agent.stop")
        {
            break got;
        }
        assert!(Instant::now() < deadline, "spans never arrived: {got:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let queue = format!("{}:spawn", env.prefix);
    let server = find(&spans, &trace_id, "POST /v1/agents");
    assert_eq!(server.kind, SERVER);
    assert_eq!(
        server.parent_span_id, caller_span,
        "the caller's span is the parent"
    );
    assert_eq!(server.service, "agentfleet-api");
    assert_eq!(server.attributes["http.response.status_code"], "202");

    let producer = find(&spans, &trace_id, &format!("send {queue}"));
    assert_eq!(producer.kind, PRODUCER);
    assert_eq!(producer.parent_span_id, server.span_id);
    let consumer = find(&spans, &trace_id, &format!("process {queue}"));
    assert_eq!(consumer.kind, CONSUMER);
    assert_eq!(consumer.parent_span_id, producer.span_id);
    assert_eq!(consumer.service, "agentfleet-worker");
    for (span, op) in [(producer, "send"), (consumer, "process")] {
        let a = &span.attributes;
        assert_eq!(a["messaging.system"], "redis", "{span:?}");
        assert_eq!(a["messaging.operation.type"], op);
        assert_eq!(a["messaging.destination.name"], queue);
        assert_eq!(a["agentfleet.agent.id"], agent_id.to_string());
        assert_eq!(a["agentfleet.agent.name"], agent.name);
        assert_eq!(a["agentfleet.agent.provider"], "claude");
    }
    let message_id = &producer.attributes["messaging.message.id"];
    assert_eq!(&consumer.attributes["messaging.message.id"], message_id);
    assert!(consumer.attributes["agentfleet.worker.id"].contains('-'));

    for child in [
        "claim",
        "mirror fetch",
        "worktree create",
        "process start",
        "agent.run",
    ] {
        let span = find(&spans, &trace_id, child);
        assert_eq!(
            span.parent_span_id, consumer.span_id,
            "{child} is a child of the consumer"
        );
    }
    let run = find(&spans, &trace_id, "agent.run");
    assert_eq!(run.attributes["agentfleet.agent.status"], "completed");
    assert_eq!(
        run.attributes["agentfleet.worker.id"],
        consumer.attributes["agentfleet.worker.id"]
    );
    assert_eq!(run.status_code, STATUS_OK, "{}", run.status_message);
    assert!(
        run.events
            .iter()
            .any(|(_, a)| a.get("status").map(String::as_str) == Some("completed")),
        "agent.run has a status event: {:?}",
        run.events
    );

    let cli_producer = spans
        .iter()
        .find(|s| {
            s.kind == PRODUCER
                && s.attributes.get("agentfleet.agent.id") == Some(&cli_agent.id.to_string())
        })
        .expect("the CLI's PRODUCER span");
    assert_eq!(cli_producer.service, "agentfleet-cli");
    assert_eq!(
        cli_producer.parent_span_id, "",
        "a CLI enqueue starts its trace"
    );
    let cli_consumer = spans
        .iter()
        .find(|s| s.kind == CONSUMER && s.parent_span_id == cli_producer.span_id)
        .expect("the worker continues the CLI's trace");
    assert_eq!(cli_consumer.trace_id, cli_producer.trace_id);
    find(&spans, &cli_producer.trace_id, "agent.run");

    // The stop: the API's SERVER span, the PRODUCER span of the push to the owner's control
    // queue, the worker's CONSUMER span, and the act (until the process ended) under it.
    let in_stop = |kind: i32| {
        spans
            .iter()
            .find(|s| s.trace_id == stop_trace && s.kind == kind)
            .unwrap_or_else(|| panic!("no span of kind {kind} in the stop's trace: {spans:#?}"))
    };
    let (stop_server, stop_producer, stop_consumer) =
        (in_stop(SERVER), in_stop(PRODUCER), in_stop(CONSUMER));
    assert_eq!(stop_server.parent_span_id, stop_caller);
    assert_eq!(stop_producer.parent_span_id, stop_server.span_id);
    assert!(
        stop_producer.attributes["messaging.destination.name"]
            .starts_with(&format!("{}:control:worker:", env.prefix)),
        "{stop_producer:?}"
    );
    assert_eq!(stop_consumer.parent_span_id, stop_producer.span_id);
    assert_eq!(stop_consumer.service, "agentfleet-worker");
    let act = find(&spans, &stop_trace, "agent.stop");
    assert_eq!(act.parent_span_id, stop_consumer.span_id);
    assert_eq!(act.attributes["agentfleet.agent.id"], held.id.to_string());

    // JSON log lines carry the trace id.
    let worker_log = env.worker_log(0);
    let claimed = worker_log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["fields"]["message"] == "agent claimed")
        .unwrap_or_else(|| panic!("no JSON 'agent claimed' line:\n{worker_log}"));
    assert_eq!(claimed["trace_id"], trace_id.as_str(), "{claimed}");
    assert_eq!(claimed["span_id"], consumer.span_id.as_str(), "{claimed}");

    // The start-up line says the mode, the store (without its password) and the workspace.
    let registered = worker_log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["fields"]["message"] == "worker registered")
        .unwrap_or_else(|| panic!("no 'worker registered' line:\n{worker_log}"));
    let fields = &registered["fields"];
    assert_eq!(fields["mode"], "distributed", "{registered}");
    let store = fields["store"].as_str().unwrap_or_default();
    assert!(
        store.starts_with("postgres://") && store.contains(&env.db_name),
        "{registered}"
    );
    assert!(
        fields["workspace"]
            .as_str()
            .is_some_and(|w| w.starts_with('/')),
        "{registered}"
    );

    // No secret in any log line or exported span.
    let api_log = std::fs::read_to_string(&api_log_path).unwrap();
    assert!(api_log.lines().count() > 3 && worker_log.lines().count() > 3);
    for secret in [&token, &db_password] {
        for (what, log) in [("API log", &api_log), ("worker log", &worker_log)] {
            assert!(!log.contains(secret.as_str()), "{what} leaks a secret");
        }
        for span in &spans {
            let text = format!("{span:?}");
            assert!(
                !text.contains(secret.as_str()),
                "span {} leaks a secret",
                span.name
            );
        }
    }
    println!(
        "received {} spans; trace {trace_id}: {:?}",
        spans.len(),
        spans
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
    );
}
