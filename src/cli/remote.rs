//! The remote mode's client: the fleet's own HTTP API at `--api URL` (or
//! `AGENTFLEET_API_URL`), with the bearer token from `--token`, `AGENTFLEET_API_TOKEN` or
//! `client.token_file`. It answers with the same domain types the store does, so the
//! commands print the same either way; an `{"error": {"code", "message"}}` answer becomes
//! the message, as a local error would be.
//!
//! The token goes only to the configured URL: redirects are not followed and no proxy is
//! used (a proxy of plain http would see the header).

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use reqwest::{Method, RequestBuilder, Url};
use serde::de::DeserializeOwned;

use crate::domain::StoredEvent;

/// The API of one fleet, and how to prove we may use it.
pub struct Remote {
    base: Url,
    token: Option<String>,
    http: reqwest::Client,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("base", &self.base.as_str())
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl Remote {
    /// A client of the API at `url` (`http://` or `https://`, no user or password in it).
    pub fn new(url: &str, token: Option<String>) -> anyhow::Result<Self> {
        let mut base = Url::parse(url.trim())
            .map_err(|e| anyhow!("--api / AGENTFLEET_API_URL '{url}' is not a URL: {e}"))?;
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
            bail!("--api / AGENTFLEET_API_URL must be an http:// or https:// URL with a host");
        }
        if !base.username().is_empty() || base.password().is_some() {
            bail!("--api / AGENTFLEET_API_URL must not hold a user or password; use --token");
        }
        if base.query().is_some() || base.fragment().is_some() {
            bail!("--api / AGENTFLEET_API_URL must not have a query or fragment");
        }
        // Paths are appended to it: `https://host/fleet` serves `https://host/fleet/v1/...`.
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let token = token
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        if let Some(t) = &token
            && reqwest::header::HeaderValue::from_str(&format!("Bearer {t}")).is_err()
        {
            bail!("the API token holds characters an HTTP header cannot carry");
        }
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("agentfleet/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Self { base, token, http })
    }

    /// Where the commands go (for `--help`'s mode line and messages).
    pub fn url(&self) -> &str {
        self.base.as_str()
    }

    /// Whether a secret sent to this API crosses a network in the clear: plain http to a
    /// host that is not this machine.
    pub fn is_plain_http_off_host(&self) -> bool {
        if self.base.scheme() != "http" {
            return false;
        }
        let host = self.base.host_str().unwrap_or_default();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        match host.parse::<std::net::IpAddr>() {
            Ok(ip) => !ip.is_loopback(),
            Err(_) => !host.eq_ignore_ascii_case("localhost"),
        }
    }

    /// A request to `v1/<segments...>`, each segment percent-encoded (an agent's name
    /// cannot reach another route).
    pub fn request(&self, method: Method, segments: &[&str]) -> RequestBuilder {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("an http(s) URL has path segments")
            .pop_if_empty()
            .push("v1")
            .extend(segments);
        let request = self.http.request(method, url);
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    pub async fn get<T: DeserializeOwned>(&self, segments: &[&str]) -> anyhow::Result<T> {
        self.send(self.request(Method::GET, segments)).await
    }

    /// Sends the request; a 2xx answer's JSON body as `T`, else the API's error message.
    pub async fn send<T: DeserializeOwned>(&self, request: RequestBuilder) -> anyhow::Result<T> {
        let response = self.answer(request).await?;
        let body = response
            .bytes()
            .await
            .map_err(|e| anyhow!("reading the answer of {}: {}", self.url(), why(e)))?;
        serde_json::from_slice(&body)
            .with_context(|| format!("the API at {} answered unexpected JSON", self.url()))
    }

    /// Sends the request; the response when it is a 2xx, else the API's error message.
    async fn answer(&self, request: RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let response = request
            .send()
            .await
            .map_err(|e| anyhow!("cannot reach the API at {}: {}", self.url(), why(e)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.bytes().await.unwrap_or_default();
        Err(match error_message(&body) {
            Some(message) => anyhow!(message),
            None if status.is_redirection() => anyhow!(
                "the API at {} answered {status} (a redirect, not followed: give the URL it \
                 moves to)",
                self.url()
            ),
            None => anyhow!("the API at {} answered {status}", self.url()),
        })
    }

    /// Every item of a paged list (`{"items", "next_cursor"}`), page after page.
    pub async fn all_pages<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> anyhow::Result<Vec<T>> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut request = self
                .request(Method::GET, segments)
                .query(query)
                .query(&[("limit", crate::domain::page::MAX_PAGE)]);
            if let Some(c) = &cursor {
                request = request.query(&[("cursor", c)]);
            }
            let page: Page<T> = self.send(request).await?;
            items.extend(page.items);
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(items),
            }
        }
    }

    /// The agent's events after `after` from `GET /v1/agents/{agent}/events` (SSE), each
    /// handed to `each` as it comes, until the stream ends (the agent ended) or, with
    /// `quiet`, until no event came for that long (the events stored so far).
    pub async fn events(
        &self,
        agent: &str,
        after: i64,
        quiet: Option<Duration>,
        mut each: impl FnMut(StoredEvent),
    ) -> anyhow::Result<()> {
        let mut request = self
            .request(Method::GET, &["agents", agent, "events"])
            .header(reqwest::header::ACCEPT, "text/event-stream");
        if after > 0 {
            request = request.header("last-event-id", after.to_string());
        }
        let mut response = self.answer(request).await?;
        let mut parser = SseParser::default();
        loop {
            let chunk = match quiet {
                None => response.chunk().await,
                Some(quiet) => match tokio::time::timeout(quiet, response.chunk()).await {
                    Ok(chunk) => chunk,
                    Err(_) => return Ok(()),
                },
            };
            let chunk = chunk
                .map_err(|e| anyhow!("following agent {agent}: the stream broke: {}", why(e)))?;
            let Some(chunk) = chunk else {
                return Ok(());
            };
            for message in parser.push(&chunk) {
                if message.event == "error" {
                    let why = error_message(message.data.as_bytes())
                        .unwrap_or_else(|| "the API reported an error".to_string());
                    bail!("following agent {agent}: {why}");
                }
                let event: StoredEvent = serde_json::from_str(&message.data)
                    .with_context(|| format!("following agent {agent}: an event is not JSON"))?;
                each(event);
            }
        }
    }
}

/// A page as the API answers it.
#[derive(serde::Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// A transport error with its causes (reqwest's own message alone says only "error
/// sending request").
fn why(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// The message of an `{"error": {"code", "message"}}` body.
fn error_message(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value["error"]["message"].as_str().map(str::to_string)
}

/// One server-sent event: its `event:` name and its `data:` lines joined.
#[derive(Debug, Default, PartialEq)]
struct SseMessage {
    event: String,
    data: String,
}

/// Server-sent events from a byte stream cut anywhere (the WHATWG framing: lines ending in
/// LF, CRLF or CR; a blank line ends a message; `:` starts a comment).
#[derive(Default)]
struct SseParser {
    line: Vec<u8>,
    pending_cr: bool,
    current: SseMessage,
    has_data: bool,
}

impl SseParser {
    fn push(&mut self, bytes: &[u8]) -> Vec<SseMessage> {
        let mut out = Vec::new();
        for &b in bytes {
            if self.pending_cr {
                self.pending_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\n' | b'\r' => {
                    self.pending_cr = b == b'\r';
                    let line = std::mem::take(&mut self.line);
                    if let Some(message) = self.line_done(&String::from_utf8_lossy(&line)) {
                        out.push(message);
                    }
                }
                _ => self.line.push(b),
            }
        }
        out
    }

    fn line_done(&mut self, line: &str) -> Option<SseMessage> {
        if line.is_empty() {
            let message = std::mem::take(&mut self.current);
            return std::mem::take(&mut self.has_data).then_some(message);
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.current.event = value.to_string(),
            "data" => {
                if self.has_data {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(value);
                self.has_data = true;
            }
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_messages_are_found_across_cut_chunks_and_line_endings() {
        let stream = b": keep-alive\n\nid: 1\nevent: status\ndata: {\"a\":\r\ndata: 1}\r\n\r\nevent: error\rdata: x\r\r";
        for cut in 0..stream.len() {
            let mut parser = SseParser::default();
            let mut got = parser.push(&stream[..cut]);
            got.extend(parser.push(&stream[cut..]));
            assert_eq!(
                got,
                vec![
                    SseMessage {
                        event: "status".into(),
                        data: "{\"a\":\n1}".into()
                    },
                    SseMessage {
                        event: "error".into(),
                        data: "x".into()
                    }
                ],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn the_api_url_is_checked_and_paths_are_encoded_beneath_it() {
        for bad in [
            "ftp://host",
            "not a url",
            "http://user:pw@host",
            "http://host/?a=1",
        ] {
            assert!(Remote::new(bad, None).is_err(), "{bad}");
        }
        let remote = Remote::new("https://fleet.example/base", Some("t".into())).unwrap();
        let request = remote
            .request(Method::GET, &["agents", "../x y?", "events"])
            .build()
            .unwrap();
        assert_eq!(
            request.url().as_str(),
            "https://fleet.example/base/v1/agents/..%2Fx%20y%3F/events"
        );
        assert!(!remote.is_plain_http_off_host());
        assert!(
            Remote::new("http://10.1.2.3:7070", None)
                .unwrap()
                .is_plain_http_off_host()
        );
        assert!(
            !Remote::new("http://127.0.0.1:7070", None)
                .unwrap()
                .is_plain_http_off_host()
        );
        assert!(!format!("{remote:?}").contains("\"t\""));
    }
}
