//! What the store keeps of a request: its own fields and the trace context of its enqueue.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A request's payload as the store keeps it: the request's own fields (a spawn's
/// [`SpawnRequest`], a control request's arguments) with, beside them, the W3C trace context
/// of its enqueue, so a job rebuilt from the store (the embedded queue, re-dispatch)
/// continues the caller's trace. The front door encodes it; the store and the worker decode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredPayload<T> {
    #[serde(flatten)]
    pub request: T,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub trace_context: BTreeMap<String, String>,
}

/// A control request's arguments (`{"answers": …}` of a resume, `{"remote_branch": …}` of a
/// delete; none for the others).
pub type ControlArgs = serde_json::Map<String, serde_json::Value>;

impl<T: Serialize> StoredPayload<T> {
    pub fn to_json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::to_value(self)
    }
}

impl<T: serde::de::DeserializeOwned> StoredPayload<T> {
    pub fn from_json(payload: serde_json::Value) -> Result<Self, serde_json::Error> {
        serde_json::from_value(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::SpawnRequest;

    #[test]
    fn a_stored_spawn_keeps_the_trace_context_beside_the_request() {
        let trace = BTreeMap::from([(
            "traceparent".to_string(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string(),
        )]);
        let payload = serde_json::json!({
            "provider": "claude", "project": "demo", "prompt": "hi", "trace_context": trace,
        });
        let stored = StoredPayload::<SpawnRequest>::from_json(payload.clone()).unwrap();
        assert_eq!(stored.request.prompt, "hi");
        assert_eq!(stored.trace_context, trace);
        let again = StoredPayload::from_json(stored.to_json().unwrap()).unwrap();
        assert_eq!(stored, again);
        // Without a trace context (stored before there was one, or none to keep).
        let bare = serde_json::json!({"provider": "claude", "project": "demo", "prompt": "hi"});
        let stored = StoredPayload::<SpawnRequest>::from_json(bare.clone()).unwrap();
        assert!(stored.trace_context.is_empty());
        assert!(stored.to_json().unwrap().get("trace_context").is_none());
    }

    #[test]
    fn an_integer_may_come_as_a_number_without_a_fraction() {
        let spawn = |retries: serde_json::Value| {
            serde_json::from_value::<SpawnRequest>(serde_json::json!({
                "provider": "claude", "project": "demo", "prompt": "hi", "retries": retries,
            }))
            .map(|r| r.retries)
        };
        assert_eq!(spawn(serde_json::json!(822)).unwrap(), Some(822));
        assert_eq!(spawn(serde_json::json!(822.0)).unwrap(), Some(822));
        assert_eq!(spawn(serde_json::Value::Null).unwrap(), None);
        for bad in [
            serde_json::json!(822.5),
            serde_json::json!(-1),
            serde_json::json!(4294967296_u64),
            serde_json::json!("3"),
        ] {
            assert!(spawn(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_stored_control_request_keeps_its_arguments() {
        let payload = serde_json::json!({"answers": {"1": "yes"}, "trace_context": {"a": "b"}});
        let stored = StoredPayload::<ControlArgs>::from_json(payload).unwrap();
        assert_eq!(stored.request["answers"]["1"], "yes");
        assert_eq!(stored.trace_context["a"], "b");
        assert!(!stored.request.contains_key("trace_context"));
    }
}
