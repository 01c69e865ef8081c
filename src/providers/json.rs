//! Small readers shared by the stream parsers: typed lookups into a JSON line that never
//! panic, and the one place that decides whether a failure the CLI reported is a rate
//! limit, an authentication failure or something else. Every CLI words these differently
//! (HTTP statuses, error kinds, free text), so the decision lives here rather than in
//! seven slightly different copies.

use serde_json::Value;

use super::AgentEvent;

/// The line as JSON, or the events a parser returns for a line that is not JSON: nothing
/// for a blank line, the line verbatim otherwise.
pub(crate) fn parse_line(line: &str) -> Result<Value, Vec<AgentEvent>> {
    if line.trim().is_empty() {
        return Err(Vec::new());
    }
    serde_json::from_str::<Value>(line).map_err(|_| raw(line))
}

pub(crate) fn raw(line: &str) -> Vec<AgentEvent> {
    vec![AgentEvent::Raw {
        line: line.to_string(),
    }]
}

pub(crate) fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

pub(crate) fn u64_at(v: &Value, key: &str) -> Option<u64> {
    v.get(key).and_then(Value::as_u64)
}

/// A JSON value as log text: strings as they are, anything else as JSON.
pub(crate) fn text_of(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Classifies a failure from what the CLI said about it: an HTTP status and an error
/// kind where it gives them, the message text otherwise.
pub(crate) fn classify(
    status: Option<u64>,
    kind: Option<&str>,
    message: String,
    retry_after_ms: Option<u64>,
) -> AgentEvent {
    let kind = kind.map(str::to_ascii_lowercase);
    let kind = kind.as_deref();
    if status == Some(429)
        || matches!(kind, Some("rate_limit" | "rate_limited" | "usage_limit"))
        || (status.is_none() && kind.is_none() && mentions_rate_limit(&message))
    {
        AgentEvent::RateLimited {
            message,
            retry_after_ms,
        }
    } else if matches!(status, Some(401 | 403))
        || matches!(kind, Some("authentication_failed" | "unauthorized"))
        || (status.is_none() && kind.is_none() && mentions_auth_failure(&message))
    {
        AgentEvent::AuthFailed { message }
    } else {
        AgentEvent::Error { message }
    }
}

/// [`classify`] for CLIs that only give a message (codex, gemini, amp).
pub(crate) fn classify_text(message: String) -> AgentEvent {
    classify(None, None, message, None)
}

fn mentions_rate_limit(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("429")
        || m.contains("too many requests")
        || m.contains("rate limit")
        || m.contains("rate_limit")
        || m.contains("usage limit")
        || m.contains("quota")
        || m.contains("resource_exhausted")
        || m.contains("out of credits")
}

fn mentions_auth_failure(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("401")
        || m.contains("unauthorized")
        || m.contains("unauthenticated")
        || m.contains("authentication")
        || m.contains("invalid api key")
        || m.contains("invalid_api_key")
        || m.contains("not logged in")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_classified_by_status_kind_then_text() {
        let kind = |e: AgentEvent| serde_json::to_value(e).unwrap()["kind"].clone();
        assert_eq!(
            kind(classify(Some(429), None, "x".into(), None)),
            "rate_limited"
        );
        assert_eq!(
            kind(classify(Some(403), None, "x".into(), None)),
            "auth_failed"
        );
        assert_eq!(kind(classify(Some(500), None, "429".into(), None)), "error");
        assert_eq!(
            kind(classify(None, Some("rate_limit"), "x".into(), None)),
            "rate_limited"
        );
        let text = "unexpected status 429 Too Many Requests";
        assert_eq!(kind(classify_text(text.into())), "rate_limited");
        let text = "unexpected status 401 Unauthorized: bad key";
        assert_eq!(kind(classify_text(text.into())), "auth_failed");
        assert_eq!(kind(classify_text("stream disconnected".into())), "error");
    }
}
