//! The signal file: an agent may write `.agentfleet/output/signal.json` in its workdir to
//! say how it finished (done, questions, error), which is more reliable than guessing from
//! its last words. What an agent writes is untrusted: anything malformed is refused with a
//! reason fit for its log.

use serde::{Deserialize, Deserializer, Serialize};

/// What the signal file says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signal {
    pub status: SignalStatus,
    #[serde(default)]
    pub result: Option<serde_json::Value>,
    /// `null` is read as none: agents write it for "no questions" as often as `[]`.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub questions: Vec<Question>,
    #[serde(default)]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalStatus {
    Done,
    Questions,
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Question {
    /// Agents number their questions as often as they name them, so a JSON
    /// number is accepted and kept as its decimal string.
    #[serde(deserialize_with = "string_or_number")]
    pub id: String,
    pub question: String,
}

fn null_as_empty<'de, D: Deserializer<'de>>(de: D) -> Result<Vec<Question>, D::Error> {
    Ok(Option::<Vec<Question>>::deserialize(de)?.unwrap_or_default())
}

fn string_or_number<'de, D: Deserializer<'de>>(de: D) -> Result<String, D::Error> {
    match serde_json::Value::deserialize(de)? {
        serde_json::Value::String(s) => Ok(s),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        other => Err(serde::de::Error::custom(format!(
            "question id must be a string or a number, not {other}"
        ))),
    }
}

/// Parse the signal file's bytes; `Err` with a reason fit for the agent's log
/// if it is malformed.
pub fn parse_signal(bytes: &[u8]) -> Result<Signal, String> {
    // Some editors and tools write a UTF-8 byte order mark; it says nothing.
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let signal: Signal =
        serde_json::from_slice(bytes).map_err(|e| format!("invalid signal file: {e}"))?;
    // Asking for answers without saying what to answer would leave the job
    // waiting on a person who has nothing to reply to.
    if signal.status == SignalStatus::Questions && signal.questions.is_empty() {
        return Err("invalid signal file: status is \"questions\" but no questions given".into());
    }
    Ok(signal)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn done_signal_keeps_its_result() {
        let s = parse_signal(br#"{"status":"done","result":{"files":["a.rs"]}}"#).unwrap();
        assert_eq!(s.status, SignalStatus::Done);
        assert_eq!(s.result, Some(json!({"files": ["a.rs"]})));
        assert!(s.questions.is_empty());
        assert_eq!(s.error, None);

        let s =
            parse_signal(b"\xEF\xBB\xBF{\"status\":\"done\",\"result\":\"ok\",\"questions\":null}");
        let s = s.unwrap();
        assert_eq!(s.result, Some(json!("ok")));
    }

    #[test]
    fn questions_signal_accepts_string_and_numeric_ids() {
        let s = parse_signal(
            br#"{"status":"questions","questions":[
                {"id":"q1","question":"Which DB?"},{"id":2,"question":"Which port?"}]}"#,
        )
        .unwrap();
        assert_eq!(s.status, SignalStatus::Questions);
        assert_eq!(
            s.questions,
            vec![
                Question {
                    id: "q1".into(),
                    question: "Which DB?".into()
                },
                Question {
                    id: "2".into(),
                    question: "Which port?".into()
                },
            ]
        );
    }

    #[test]
    fn error_signal_keeps_its_message() {
        let s = parse_signal(br#"{"status":"error","error":"tests do not compile"}"#).unwrap();
        assert_eq!(s.status, SignalStatus::Error);
        assert_eq!(s.error.as_deref(), Some("tests do not compile"));
    }

    #[test]
    fn malformed_signals_are_rejected_with_a_reason() {
        for bad in [
            &b""[..],
            b"not json",
            b"{}",
            br#"{"status":"finished"}"#,
            br#"{"status":"done","error":42}"#,
            br#"{"status":"questions","questions":[{"id":true,"question":"?"}]}"#,
            br#"{"status":"questions","questions":[{"id":"1"}]}"#,
            br#"{"status":"questions"}"#,
            b"\xff\xfe",
        ] {
            let err = parse_signal(bad).unwrap_err();
            assert!(err.starts_with("invalid signal file"), "{err}");
        }
    }
}
