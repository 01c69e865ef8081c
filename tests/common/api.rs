//! `agentfleet serve` started as a real process on a free port, with a client that
//! speaks its bearer auth and reads its JSON errors.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use super::env::TestEnv;
use super::services::free_port;

pub const TOKEN: &str = "test-token-7f3a";

pub struct Server {
    pub child: Child,
    pub port: u16,
    pub base: String,
    pub client: reqwest::Client,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn serve(env: &TestEnv) -> Server {
    serve_with(env, &[]).await
}

/// `agentfleet serve` with `extra` environment, once it answers `/healthz`.
pub async fn serve_with(env: &TestEnv, extra: &[(&str, &str)]) -> Server {
    let port = free_port();
    let child = env
        .command(&["serve"])
        .env("AGENTFLEET__API__BIND", format!("127.0.0.1:{port}"))
        .env("AGENTFLEET__API__TOKENS", TOKEN)
        .envs(extra.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server {
        child,
        port,
        base: format!("http://127.0.0.1:{port}"),
        client: reqwest::Client::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while server
        .client
        .get(format!("{}/healthz", server.base))
        .send()
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "API did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server
}

impl Server {
    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .get(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
    }

    /// `GET path`'s JSON body.
    pub async fn get_json(&self, path: &str) -> Value {
        let resp = self.get(path).send().await.expect("GET");
        resp.json().await.expect("JSON body")
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
    }
}

/// The JSON body of a request's answer, whatever its status.
pub async fn json_of(request: reqwest::RequestBuilder) -> Value {
    request.send().await.unwrap().json().await.unwrap()
}

pub async fn error_of(resp: reqwest::Response) -> (StatusCode, String, String) {
    let status = resp.status();
    let body: Value = resp.json().await.expect("JSON error body");
    (
        status,
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}
