//! The API's front edge: every error in the JSON shape (body limit, unknown method, bad
//! query and path values), a body limit that fits the largest valid spawn, the bearer
//! scheme in any case, and the connection limits (header timeout, idle timeout, maximum
//! number of connections).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::api::{Server, TOKEN, serve, serve_with};
use crate::common::env::TestEnv;

/// Asserts the response is `status` with a JSON `{"error": {"code", "message"}}` body and
/// a JSON content type; returns the message.
async fn assert_json_error(resp: reqwest::Response, status: StatusCode, what: &str) -> String {
    assert_eq!(resp.status(), status, "{what}");
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        content_type.starts_with("application/json"),
        "{what}: content-type {content_type:?}"
    );
    assert!(
        resp.headers()
            .get("x-request-id")
            .is_some_and(|v| !v.is_empty()),
        "{what}: no x-request-id"
    );
    let text = resp.text().await.unwrap();
    let body: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: {e}: {text:?}"));
    let code = body["error"]["code"].as_str();
    let message = body["error"]["message"].as_str();
    assert!(
        code.is_some_and(|c| !c.is_empty()) && message.is_some_and(|m| !m.is_empty()),
        "{what}: {body}"
    );
    message.unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_error_has_the_json_shape() {
    let env = TestEnv::new().await;
    // Small spawn limits allow a small body limit, so the 413 needs no large upload.
    let api = serve_with(
        &env,
        &[
            ("AGENTFLEET__LIMITS__MAX_PROMPT_BYTES", "1024"),
            ("AGENTFLEET__LIMITS__MAX_INPUT_FILE_BYTES", "1024"),
            ("AGENTFLEET__API__MAX_BODY_BYTES", "100000"),
        ],
    )
    .await;

    // The server answers before it reads the body and closes the connection, which may
    // reset it under a client still sending: tried again then.
    let mut tries = 0;
    let too_large = loop {
        tries += 1;
        match api
            .post("/v1/agents")
            .body(vec![b' '; 200_000])
            .send()
            .await
        {
            Ok(resp) => break resp,
            Err(e) if tries < 5 => eprintln!("413 try {tries}: {e}"),
            Err(e) => panic!("no answer to an oversized body: {e}"),
        }
    };
    let message = assert_json_error(too_large, StatusCode::PAYLOAD_TOO_LARGE, "413").await;
    assert!(
        message.contains("api.max_body_bytes") && message.contains("100000"),
        "{message}"
    );

    let wrong_method = api
        .client
        .put(format!("{}/v1/agents", api.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let allow = wrong_method
        .headers()
        .get("allow")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow:?}");
    let message = assert_json_error(wrong_method, StatusCode::METHOD_NOT_ALLOWED, "405").await;
    assert!(message.contains("PUT"), "{message}");

    let all = api.get("/v1/agents?all=maybe").send().await.unwrap();
    let message = assert_json_error(all, StatusCode::BAD_REQUEST, "?all=maybe").await;
    assert!(message.contains("all"), "{message}");

    let remote_branch = api
        .client
        .delete(format!("{}/v1/agents/nobody?remote_branch=maybe", api.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let message = assert_json_error(
        remote_branch,
        StatusCode::BAD_REQUEST,
        "?remote_branch=maybe",
    )
    .await;
    assert!(message.contains("remote_branch"), "{message}");

    let not_utf8 = api.get("/v1/agents/%FF%FE").send().await.unwrap();
    assert_json_error(not_utf8, StatusCode::BAD_REQUEST, "%FF in the path").await;

    let unknown = api.get("/v2/nothing").send().await.unwrap();
    assert_json_error(unknown, StatusCode::NOT_FOUND, "unknown route").await;

    // Nothing was written by any of them.
    assert_eq!(
        api.get_json("/v1/agents?all=true").await,
        json!({"items": [], "next_cursor": null})
    );
}

/// Every response names its request: the caller's `x-request-id` when it sends a sane
/// one, a fresh one for each request otherwise.
#[tokio::test(flavor = "multi_thread")]
async fn every_response_carries_a_request_id_and_a_callers_is_kept() {
    let env = TestEnv::new().await;
    let api = serve(&env).await;
    let id_of = |resp: &reqwest::Response| {
        resp.headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let first = api.get("/v1/agents").send().await.unwrap();
    let second = api.get("/healthz").send().await.unwrap();
    let (first, second) = (id_of(&first).unwrap(), id_of(&second).unwrap());
    assert_ne!(first, second, "one id per request");
    assert!(uuid::Uuid::parse_str(&first).is_ok(), "{first}");

    let kept = api
        .get("/v1/agents/nobody")
        .header("x-request-id", "caller-7f3a.42")
        .send()
        .await
        .unwrap();
    assert_eq!(kept.status(), StatusCode::NOT_FOUND);
    assert_eq!(id_of(&kept).as_deref(), Some("caller-7f3a.42"));
    // Unauthenticated, and an id that is not a sane token (too long): a fresh one.
    let unauthenticated = api
        .client
        .get(format!("{}/v1/agents", api.base))
        .header("x-request-id", "x".repeat(129))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED);
    let fresh = id_of(&unauthenticated).unwrap();
    assert!(uuid::Uuid::parse_str(&fresh).is_ok(), "{fresh}");
}

/// `api.rate_limit` per token: over its burst a token gets 429 with `retry-after` (in the
/// API's error shape) while another token and the health routes are not held back.
#[tokio::test(flavor = "multi_thread")]
async fn each_token_has_its_own_rate_limit() {
    let env = TestEnv::new().await;
    let other = "other-token-91c2";
    let api = serve_with(
        &env,
        &[
            ("AGENTFLEET__API__TOKENS", &format!("{TOKEN},{other}")),
            ("AGENTFLEET__API__RATE_LIMIT", "1"),
            ("AGENTFLEET__API__RATE_LIMIT_BURST", "3"),
        ],
    )
    .await;
    for _ in 0..3 {
        assert_eq!(
            api.get("/v1/agents").send().await.unwrap().status(),
            StatusCode::OK
        );
    }
    let limited = api.get("/v1/agents").send().await.unwrap();
    let retry_after: u64 = limited
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("retry-after");
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let message = assert_json_error(limited, StatusCode::TOO_MANY_REQUESTS, "429").await;
    assert!(message.contains("api.rate_limit"), "{message}");
    let by_other = api
        .client
        .get(format!("{}/v1/agents", api.base))
        .bearer_auth(other)
        .send()
        .await
        .unwrap();
    assert_eq!(by_other.status(), StatusCode::OK, "another token's budget");
    let health = api.client.get(format!("{}/healthz", api.base)).send().await;
    assert_eq!(health.unwrap().status(), StatusCode::OK);
    // The budget refills at its rate.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        api.get("/v1/agents").send().await.unwrap().status(),
        StatusCode::OK
    );
}

/// A spawn with an input of the largest allowed size, whose JSON escaping doubles it, is
/// within the default body limit (the 2 MiB limit refused it).
#[tokio::test(flavor = "multi_thread")]
async fn the_largest_valid_spawn_fits_the_body_limit() {
    let env = TestEnv::new().await;
    let api = serve(&env).await;
    let content = "\"".repeat(1024 * 1024);
    let resp = api
        .post("/v1/agents")
        .json(&json!({
            "provider": "claude",
            "project": "demo",
            "prompt": "read the input",
            "inputs": [{"name": "quotes.txt", "content": content}],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::ACCEPTED,
        "{}",
        resp.text().await.unwrap()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_bearer_scheme_is_case_insensitive() {
    let env = TestEnv::new().await;
    let api = serve(&env).await;
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let resp = api
            .client
            .get(format!("{}/v1/agents", api.base))
            .header("authorization", format!("{scheme} {TOKEN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "scheme {scheme:?}");
    }
    let wrong = api
        .client
        .get(format!("{}/v1/agents", api.base))
        .header("authorization", "bearer not-the-token")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
}

fn connect(api: &Server) -> TcpStream {
    let conn = TcpStream::connect(("127.0.0.1", api.port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    conn
}

/// Reads until the server closes the connection (or the read timeout); returns what it
/// sent and how long that took.
fn read_until_closed(conn: &mut TcpStream) -> (String, Duration) {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!(
                "the connection was not closed after {:?}: {e}",
                started.elapsed()
            ),
        }
    }
    (
        String::from_utf8_lossy(&received).into_owned(),
        started.elapsed(),
    )
}

async fn serve_with_timeouts(env: &TestEnv, header: &str, idle: &str) -> Server {
    serve_with(
        env,
        &[
            ("AGENTFLEET__API__HEADER_TIMEOUT", header),
            ("AGENTFLEET__API__IDLE_TIMEOUT", idle),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_that_sends_no_header_in_time_is_closed() {
    let env = TestEnv::new().await;
    let api = serve_with_timeouts(&env, "1s", "60s").await;
    // Nothing at all, and half a header (a slow client).
    let opened = Instant::now();
    let mut silent = connect(&api);
    let mut partial = connect(&api);
    partial
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .unwrap();
    for conn in [&mut silent, &mut partial] {
        read_until_closed(conn);
        let after = opened.elapsed();
        assert!(
            after >= Duration::from_millis(800) && after < Duration::from_secs(5),
            "closed after {after:?}, expected about 1 s"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_keep_alive_connection_is_closed() {
    let env = TestEnv::new().await;
    let api = serve_with_timeouts(&env, "60s", "1s").await;
    let mut conn = connect(&api);
    conn.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    let (response, after) = read_until_closed(&mut conn);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        after >= Duration::from_millis(800) && after < Duration::from_secs(5),
        "closed after {after:?}, expected about 1 s"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_over_the_limit_are_refused() {
    let env = TestEnv::new().await;
    let mut api = serve_with(&env, &[("AGENTFLEET__API__MAX_CONNECTIONS", "3")]).await;
    // The client that saw the server start holds a pooled connection: closed, so the count
    // is of the ones opened here.
    api.client = reqwest::Client::new();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut held: Vec<TcpStream> = (0..3).map(|_| connect(&api)).collect();
    // The server counts a connection once it accepted it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut over = connect(&api);
    let (response, after) = read_until_closed(&mut over);
    assert!(after < Duration::from_secs(2), "refused after {after:?}");
    assert!(response.starts_with("HTTP/1.1 503"), "{response:?}");
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    let body: Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["error"]["code"], "unavailable");

    // A closed connection frees its place.
    held.pop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut next = connect(&api);
    next.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let (response, _) = read_until_closed(&mut next);
    assert!(response.starts_with("HTTP/1.1 200"), "{response:?}");
}

/// Reads one response of `Content-Length` framing from a kept-alive connection.
fn read_response(conn: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&received).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .expect("a content-length");
            if body.len() >= length {
                return text;
            }
        }
        let n = conn.read(&mut buf).expect("a response");
        assert!(n > 0, "closed before a whole response: {text:?}");
        received.extend_from_slice(&buf[..n]);
    }
}

/// `agentfleet_api_connections{state=...}` as the server reports it.
async fn connections(api: &Server, state: &str) -> i64 {
    let text = api
        .client
        .get(format!("{}/metrics", api.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!("agentfleet_api_connections{{state=\"{state}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_connection_is_parked_and_serves_again() {
    let env = TestEnv::new().await;
    let api = serve(&env).await;
    let parked_before = connections(&api, "parked").await;
    let mut conns: Vec<TcpStream> = (0..5).map(|_| connect(&api)).collect();
    for conn in &mut conns {
        conn.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .unwrap();
        assert!(read_response(conn).starts_with("HTTP/1.1 200"));
    }
    // Idle for longer than the server waits before parking.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let parked = connections(&api, "parked").await;
    assert!(
        parked >= parked_before + 5,
        "{parked} parked connections (before: {parked_before})"
    );
    // A parked connection serves its next request as if nothing happened.
    for conn in &mut conns {
        conn.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .unwrap();
        assert!(read_response(conn).starts_with("HTTP/1.1 200"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bytes_read_before_a_connection_is_parked_are_kept() {
    let env = TestEnv::new().await;
    let api = serve(&env).await;
    let mut conn = connect(&api);
    // A whole request and the start of the next in one write: the server reads both.
    conn.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\nGET /heal")
        .unwrap();
    assert!(read_response(&mut conn).starts_with("HTTP/1.1 200"));
    // Parked meanwhile, with the start of the second request kept.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    conn.write_all(b"thz HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    let second = read_response(&mut conn);
    assert!(second.starts_with("HTTP/1.1 200"), "{second:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_workers_health_endpoint_has_the_same_limits() {
    let mut env = TestEnv::new().await;
    let port = crate::common::services::free_port();
    let bind = format!("127.0.0.1:{port}");
    env.start_worker(&[
        ("AGENTFLEET__WORKER__METRICS_BIND", bind.as_str()),
        ("AGENTFLEET__API__HEADER_TIMEOUT", "1s"),
    ]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut probe = loop {
        if let Ok(conn) = TcpStream::connect(("127.0.0.1", port)) {
            break conn;
        }
        assert!(Instant::now() < deadline, "no health endpoint");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    probe
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    probe
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    assert!(read_response(&mut probe).starts_with("HTTP/1.1 200"));
    // A connection that never says anything is let go after the header timeout.
    let opened = Instant::now();
    let mut silent = TcpStream::connect(("127.0.0.1", port)).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    read_until_closed(&mut silent);
    let after = opened.elapsed();
    assert!(
        after >= Duration::from_millis(800) && after < Duration::from_secs(5),
        "closed after {after:?}, expected about 1 s"
    );
    env.stop_workers();
}
