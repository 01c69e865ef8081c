//! A scripted model server on 127.0.0.1 for the contract tests: it speaks enough of the
//! Anthropic Messages API (claude), the OpenAI Responses API (codex), the Gemini API
//! (`streamGenerateContent?alt=sse`, gemini) and OpenAI chat completions (opencode's
//! `@ai-sdk/openai-compatible` provider) for a real CLI to run one agent turn against it. A fresh request gets a tool call that writes
//! `MOCK_RESULT.txt` in the CLI's cwd; a request that carries that tool's result gets the
//! final text; a request whose last message contains [`RESUME_MARKER`] (the start of
//! the prompt `providers::format_answers` makes for a resume) gets [`ANSWER_TEXT`]. It can instead answer every request with an HTTP error (429, 401) to
//! see how the CLI reports it. Every request body is kept for assertions.

pub mod run;

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::Response;
use serde_json::{Value, json};
use tokio::net::TcpListener;

pub const FILE: &str = "MOCK_RESULT.txt";
pub const FINAL_TEXT: &str = "All done.";
/// Opens every answers prompt (`providers::format_answers`).
pub const RESUME_MARKER: &str = "answers to your questions";
pub const ANSWER_TEXT: &str = "Thanks, continuing with your answers.";

/// What the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Tool call, then final text (and the answer text on resume).
    Script,
    /// Every request fails with this HTTP status.
    Fail(u16),
    /// Requests that carry [`EXHAUSTED_KEY`] as their API key fail with this status (an
    /// account out of quota); the others get [`Behaviour::Script`].
    FailForKey(u16),
    /// claude only: when the request's system prompt tells how to ask (it names
    /// [`SIGNAL_FILE`]), the first turn writes [`QUESTIONS_SIGNAL`] as the agent's signal
    /// file (it asks a question) and a resume writes [`FILE`] with the content, then final
    /// text; a request that does not tell it gets [`Behaviour::Script`].
    AskThenWrite,
}

/// The API key of the account [`Behaviour::FailForKey`] refuses.
pub const EXHAUSTED_KEY: &str = "sk-ant-api03-mock-exhausted-0000";

/// The signal file an asking agent writes (`.agentfleet/output/signal.json`).
pub const SIGNAL_FILE: &str = ".agentfleet/output/signal.json";
/// The id of the tool call a resumed [`Behaviour::AskThenWrite`] turn makes.
const RESUME_TOOL_ID: &str = "toolu_mock_resume";
pub const QUESTIONS_SIGNAL: &str =
    r#"{"status":"questions","questions":[{"id":"db","question":"Which database?"}]}"#;

/// The ports of every mock this test process started: the sandbox lets the CLIs run by
/// `run::run` connect to them (and nothing else).
pub static MOCK_PORTS: Mutex<Vec<u16>> = Mutex::new(Vec::new());

pub struct MockModel {
    pub base_url: String,
    pub requests: Arc<Mutex<Vec<(String, Value)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockModel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct Mock {
    behaviour: Behaviour,
    content: String,
    requests: Arc<Mutex<Vec<(String, Value)>>>,
}

impl MockModel {
    /// The mock's `host:port`, for `sandbox.network.allow`.
    pub fn address(&self) -> &str {
        self.base_url.trim_start_matches("http://")
    }

    /// The sandbox settings that let agents reach the mock (and write `runlog`).
    pub fn sandbox_toml(&self, runlog: &std::path::Path) -> String {
        format!(
            "[sandbox]\nwrite_paths = [{:?}]\n\n[sandbox.network]\nallow = [{:?}]\n",
            runlog.display().to_string(),
            self.address()
        )
    }

    /// Starts on a free loopback port; `content` is what the scripted tool call writes.
    pub async fn start(behaviour: Behaviour, content: &str) -> Self {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let mock = Mock {
            behaviour,
            content: content.to_string(),
            requests: requests.clone(),
        };
        let app = Router::new().fallback(handle).with_state(mock);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        MOCK_PORTS.lock().unwrap().push(addr.port());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            base_url: format!("http://{addr}"),
            requests,
            task,
        }
    }
}

async fn handle(
    State(mock): State<Mock>,
    uri: Uri,
    headers: axum::http::HeaderMap,
    body: String,
) -> Response {
    let path = uri.path().to_string();
    let request: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    mock.requests
        .lock()
        .unwrap()
        .push((path.clone(), request.clone()));
    let api = if path.ends_with("/messages") {
        Api::Anthropic
    } else if path.ends_with("/responses") {
        Api::Responses
    } else if path.ends_with(":streamGenerateContent") {
        Api::Gemini
    } else if path.ends_with("/chat/completions") {
        Api::Chat
    } else {
        // Includes gemini's non-streaming `:generateContent` side calls (routing,
        // next-speaker checks): it carries on without them.
        return plain(StatusCode::NOT_FOUND, "application/json", "{}".into());
    };
    let anthropic = api == Api::Anthropic;
    if let Behaviour::Fail(status) = mock.behaviour {
        return failure(status, api);
    }
    if let Behaviour::FailForKey(status) = mock.behaviour {
        let key = headers
            .get("x-api-key")
            .or_else(|| headers.get("x-goog-api-key"))
            .or_else(|| headers.get(header::AUTHORIZATION))
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if key.contains(EXHAUSTED_KEY) {
            return failure(status, api);
        }
    }
    match api {
        Api::Gemini => return sse(gemini_turn(&request, &mock.content), false),
        Api::Chat => return sse(chat_turn(&request, &mock.content), true),
        Api::Anthropic | Api::Responses => {}
    }
    let turn = if anthropic {
        anthropic_turn(&request)
    } else {
        openai_turn(&request)
    };
    // A model asks only when it was told how (the fleet's question channel in the system
    // prompt), as a real one would.
    let asking = mock.behaviour == Behaviour::AskThenWrite
        && request["system"].to_string().contains(SIGNAL_FILE);
    let events = match (turn, anthropic) {
        (Turn::Tool, true) if asking => {
            anthropic_tool_to(SIGNAL_FILE, QUESTIONS_SIGNAL, "toolu_mock_1")
        }
        (Turn::Text(t), true) if asking && t == ANSWER_TEXT => {
            anthropic_tool_to(FILE, &mock.content, RESUME_TOOL_ID)
        }
        (Turn::Tool, true) => anthropic_tool(&mock.content),
        (Turn::Tool, false) => openai_tool(&request, &mock.content),
        (Turn::Text(t), true) => anthropic_text(t),
        (Turn::Text(t), false) => openai_text(t),
    };
    let mut sse = String::new();
    for event in events {
        let name = event["type"].as_str().unwrap_or("message").to_string();
        sse.push_str(&format!("event: {name}\ndata: {event}\n\n"));
    }
    plain(StatusCode::OK, "text/event-stream", sse)
}

fn plain(status: StatusCode, content_type: &str, body: String) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body))
        .unwrap()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    Anthropic,
    Responses,
    Gemini,
    Chat,
}

/// Server-sent events with `data:` lines only (Gemini, chat completions), `[DONE]` last
/// for chat completions.
fn sse(chunks: Vec<Value>, done: bool) -> Response {
    let mut body = String::new();
    for chunk in chunks {
        body.push_str(&format!("data: {chunk}\n\n"));
    }
    if done {
        body.push_str("data: [DONE]\n\n");
    }
    plain(StatusCode::OK, "text/event-stream", body)
}

fn failure(status: u16, api: Api) -> Response {
    let (kind, message) = match status {
        429 => ("rate_limit_error", "Rate limited by the mock"),
        401 => ("authentication_error", "invalid x-api-key"),
        _ => ("api_error", "mock failure"),
    };
    let body = match api {
        Api::Anthropic => json!({"type": "error", "error": {"type": kind, "message": message}}),
        Api::Responses => json!({"error": {"type": kind, "code": kind, "message": message}}),
        Api::Gemini => gemini_error(status),
        Api::Chat => chat_error(status),
    };
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = plain(code, "application/json", body.to_string());
    if api == Api::Chat && status == 429 {
        // opencode retries a 429 five times, waiting what `retry-after` says (2 s
        // doubling to 30 s without it, about a minute in all) before it prints the error.
        response
            .headers_mut()
            .insert("retry-after", header::HeaderValue::from_static("1"));
    }
    response
}

enum Turn {
    Tool,
    Text(&'static str),
}

fn anthropic_turn(request: &Value) -> Turn {
    let messages = request["messages"].as_array().cloned().unwrap_or_default();
    let Some(last) = messages.last() else {
        return Turn::Tool;
    };
    // On a resume, claude sends the answers in the same message as the last tool result,
    // and keeps sending them with later tool results: the resume's own tool call has its
    // own id, and its result ends the turn.
    let text = last.to_string();
    if text.contains(RESUME_TOOL_ID) {
        return Turn::Text(FINAL_TEXT);
    }
    if text.contains(RESUME_MARKER) {
        return Turn::Text(ANSWER_TEXT);
    }
    let blocks = last["content"].as_array().cloned().unwrap_or_default();
    if blocks.iter().any(|b| b["type"] == "tool_result") {
        return Turn::Text(FINAL_TEXT);
    }
    Turn::Tool
}

fn openai_turn(request: &Value) -> Turn {
    let input = request["input"].as_array().cloned().unwrap_or_default();
    let Some(last) = input.last() else {
        return Turn::Tool;
    };
    if last.to_string().contains(RESUME_MARKER) {
        return Turn::Text(ANSWER_TEXT);
    }
    let kind = last["type"].as_str().unwrap_or("");
    if kind.ends_with("call_output") {
        return Turn::Text(FINAL_TEXT);
    }
    Turn::Tool
}

fn anthropic_message_start() -> Value {
    json!({"type": "message_start", "message": {"id": "msg_mock", "type": "message",
        "role": "assistant", "model": "claude-mock", "content": [], "stop_reason": null,
        "stop_sequence": null, "usage": {"input_tokens": 12, "output_tokens": 1}}})
}

fn anthropic_end(stop_reason: &str) -> Vec<Value> {
    vec![
        json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null},
            "usage": {"output_tokens": 10}}),
        json!({"type": "message_stop"}),
    ]
}

fn anthropic_tool(content: &str) -> Vec<Value> {
    anthropic_tool_to(FILE, content, "toolu_mock_1")
}

fn anthropic_tool_to(file: &str, content: &str, id: &str) -> Vec<Value> {
    let input = json!({"file_path": file, "content": content}).to_string();
    let mut events = vec![
        anthropic_message_start(),
        json!({"type": "content_block_start", "index": 0, "content_block":
            {"type": "tool_use", "id": id, "name": "Write", "input": {}}}),
        json!({"type": "content_block_delta", "index": 0, "delta":
            {"type": "input_json_delta", "partial_json": input}}),
        json!({"type": "content_block_stop", "index": 0}),
    ];
    events.extend(anthropic_end("tool_use"));
    events
}

fn anthropic_text(text: &str) -> Vec<Value> {
    let mut events = vec![
        anthropic_message_start(),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}),
        json!({"type": "content_block_stop", "index": 0}),
    ];
    events.extend(anthropic_end("end_turn"));
    events
}

fn openai_completed() -> Value {
    json!({"type": "response.completed", "response": {"id": "resp_mock", "usage": {
        "input_tokens": 10, "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 5, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 15}}})
}

/// A shell call in whichever shape of shell tool the CLI offered.
fn openai_tool(request: &Value, content: &str) -> Vec<Value> {
    let tools = request["tools"].as_array().cloned().unwrap_or_default();
    let offered = |n: &str| tools.iter().any(|t| t["name"] == n);
    let script = format!("printf '%s' '{}' > {FILE}", content.replace('\'', ""));
    let (name, arguments) = if offered("shell") {
        ("shell", json!({"command": ["bash", "-lc", script]}))
    } else if offered("shell_command") {
        ("shell_command", json!({"command": script}))
    } else {
        ("exec_command", json!({"cmd": script}))
    };
    let item = json!({"type": "function_call", "id": "fc_mock_1", "call_id": "call_mock_1",
        "name": name, "arguments": arguments.to_string()});
    vec![
        json!({"type": "response.created", "response": {"id": "resp_mock"}}),
        json!({"type": "response.output_item.done", "output_index": 0, "item": item}),
        openai_completed(),
    ]
}

fn openai_text(text: &str) -> Vec<Value> {
    let item = json!({"type": "message", "role": "assistant", "id": "msg_mock",
        "content": [{"type": "output_text", "text": text, "annotations": []}]});
    vec![
        json!({"type": "response.created", "response": {"id": "resp_mock"}}),
        json!({"type": "response.output_item.added", "output_index": 0, "item":
            {"type": "message", "role": "assistant", "id": "msg_mock", "content": []}}),
        json!({"type": "response.output_text.delta", "output_index": 0, "content_index": 0, "delta": text}),
        json!({"type": "response.output_item.done", "output_index": 0, "item": item}),
        openai_completed(),
    ]
}

/// What the Gemini API answers an account out of quota (a per-day quota: gemini 0.61.0
/// gives up at once and says so; a bare 429 it retries for minutes, on stderr only) or a
/// refused key.
fn gemini_error(status: u16) -> Value {
    match status {
        429 => json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED",
            "message": "You exceeded your current quota, please check your plan and billing details.",
            "details": [{"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{
                "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                "quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
                "quotaDimensions": {"location": "global", "model": "gemini-2.5-flash"},
                "quotaValue": "250"}]}]}}),
        401 => json!({"error": {"code": 401, "status": "UNAUTHENTICATED",
            "message": "Request had invalid authentication credentials."}}),
        _ => json!({"error": {"code": status, "status": "INTERNAL", "message": "mock failure"}}),
    }
}

/// What an OpenAI-compatible API answers an account out of credits (`insufficient_quota`)
/// or a refused key. opencode 1.18.33 prints nothing on stdout while it retries a 429.
fn chat_error(status: u16) -> Value {
    let (kind, message) = match status {
        429 => (
            "insufficient_quota",
            "You exceeded your current quota, please check your plan and billing details.",
        ),
        401 => ("invalid_api_key", "Incorrect API key provided."),
        _ => ("server_error", "mock failure"),
    };
    json!({"error": {"message": message, "type": kind, "code": kind, "param": null}})
}

fn gemini_turn(request: &Value, content: &str) -> Vec<Value> {
    let contents = request["contents"].as_array().cloned().unwrap_or_default();
    let last = contents.last().cloned().unwrap_or(Value::Null);
    let parts = last["parts"].as_array().cloned().unwrap_or_default();
    let part = if last.to_string().contains(RESUME_MARKER) {
        json!({"text": ANSWER_TEXT})
    } else if parts.iter().any(|p| p.get("functionResponse").is_some()) {
        json!({"text": FINAL_TEXT})
    } else {
        json!({"functionCall": {"name": "write_file",
            "args": {"file_path": FILE, "content": content}}})
    };
    vec![json!({
        "candidates": [{"content": {"role": "model", "parts": [part]},
            "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 5, "totalTokenCount": 17},
        "modelVersion": "gemini-2.5-flash",
    })]
}

fn chat_turn(request: &Value, content: &str) -> Vec<Value> {
    let messages = request["messages"].as_array().cloned().unwrap_or_default();
    let last = messages.last().cloned().unwrap_or(Value::Null);
    let offers_tools = request["tools"].as_array().is_some_and(|t| !t.is_empty());
    let (delta, finish) = if !offers_tools {
        // opencode asks for a session title on the side, without tools.
        (
            json!({"role": "assistant", "content": "Mock title"}),
            "stop",
        )
    } else if last["role"] == "tool" {
        (json!({"role": "assistant", "content": FINAL_TEXT}), "stop")
    } else if last.to_string().contains(RESUME_MARKER) {
        (json!({"role": "assistant", "content": ANSWER_TEXT}), "stop")
    } else {
        let arguments = json!({"filePath": FILE, "content": content}).to_string();
        let call = json!({"index": 0, "id": "call_mock_1", "type": "function",
            "function": {"name": "write", "arguments": arguments}});
        (
            json!({"role": "assistant", "tool_calls": [call]}),
            "tool_calls",
        )
    };
    let model = request["model"].clone();
    let chunk = |choices: Value, usage: Value| {
        json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1,
            "model": model, "choices": choices, "usage": usage})
    };
    vec![
        chunk(
            json!([{"index": 0, "delta": delta, "finish_reason": null}]),
            Value::Null,
        ),
        chunk(
            json!([{"index": 0, "delta": {}, "finish_reason": finish}]),
            Value::Null,
        ),
        chunk(
            json!([]),
            json!({"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}),
        ),
    ]
}
