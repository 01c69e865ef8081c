//! The checks a request passes at the front door, before anything is written: strings
//! the store cannot hold (NUL), input file sets the worker could not write, and the
//! fingerprint of a spawn that tells a retry from a different request under the same
//! idempotency key. A caller's mistake found here is a 422 naming the field, never a
//! backend error found later.

use std::collections::BTreeSet;

use sha2::{Digest, Sha256};

use super::FleetError;
use crate::domain::{AgentMode, InputFile, SpawnRequest};

/// Refuses a string the store cannot hold: Postgres text and JSON refuse NUL, and no name,
/// path or prompt needs one.
pub fn no_nul(field: &str, value: &str) -> Result<(), FleetError> {
    match value.contains('\0') {
        true => Err(nul_in(field)),
        false => Ok(()),
    }
}

fn nul_in(field: &str) -> FleetError {
    FleetError::Invalid(format!("{field} contains a NUL character"))
}

/// Refuses a JSON document with a NUL in any string or object key, naming where by its
/// field path (`inputs[0].content`).
pub fn no_nul_in_json(value: &serde_json::Value) -> Result<(), FleetError> {
    match nul_path(value) {
        Some(field) => Err(nul_in(&field)),
        None => Ok(()),
    }
}

/// Where in a JSON document a string (or an object key) holds a NUL, as a field path;
/// `None` when there is none.
fn nul_path(value: &serde_json::Value) -> Option<String> {
    fn walk(value: &serde_json::Value, path: &mut String) -> bool {
        match value {
            serde_json::Value::String(s) => s.contains('\0'),
            serde_json::Value::Array(items) => items.iter().enumerate().any(|(i, item)| {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                let found = walk(item, path);
                if !found {
                    path.truncate(len);
                }
                found
            }),
            serde_json::Value::Object(fields) => fields.iter().any(|(key, item)| {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                // A key with a NUL is named by its escaped form.
                path.push_str(&key.escape_default().to_string());
                let found = key.contains('\0') || walk(item, path);
                if !found {
                    path.truncate(len);
                }
                found
            }),
            _ => false,
        }
    }
    let mut path = String::new();
    walk(value, &mut path).then(|| {
        if path.is_empty() {
            "the body".into()
        } else {
            path
        }
    })
}

/// Every string of a spawn request, checked for NUL and named as in the HTTP body.
pub fn spawn_strings(req: &SpawnRequest) -> Result<(), FleetError> {
    no_nul("provider", &req.provider)?;
    no_nul("project", &req.project)?;
    no_nul("prompt", &req.prompt)?;
    for (field, value) in [
        ("name", &req.name),
        ("mode", &req.mode),
        ("task_id", &req.task_id),
        ("idempotency_key", &req.idempotency_key),
        ("model", &req.model),
    ] {
        if let Some(value) = value {
            no_nul(field, value)?;
        }
    }
    for (i, input) in req.inputs.iter().enumerate() {
        no_nul(&format!("inputs[{i}].name"), &input.name)?;
        no_nul(&format!("inputs[{i}].content"), &input.content)?;
    }
    Ok(())
}

/// Input file names are relative paths that stay inside `.agentfleet/input/`: segments
/// joined by single slashes, none empty, `.` or `..`, no trailing slash (which would name
/// a folder the worker cannot write as a file).
pub fn validate_input_name(name: &str) -> Result<(), FleetError> {
    let bad = |why: &str| {
        Err(FleetError::Invalid(format!(
            "input file name '{}' {why}",
            name.escape_default()
        )))
    };
    if name.is_empty() || name.len() > 255 {
        return bad("must be 1 to 255 bytes");
    }
    if name.contains('\0') || name.contains('\\') {
        return bad("contains a forbidden character");
    }
    if name
        .split('/')
        .any(|segment| matches!(segment, "" | "." | ".."))
    {
        return bad(
            "must be a relative path of file names inside the input folder \
             (no leading or trailing '/', no '//', '.' or '..')",
        );
    }
    Ok(())
}

/// The input files as a set the worker can write: each name valid and within the size
/// limit, no name given twice, and no name that is also the folder of another.
pub fn validate_inputs(inputs: &[InputFile], max_file_bytes: usize) -> Result<(), FleetError> {
    let mut names = BTreeSet::new();
    for input in inputs {
        validate_input_name(&input.name)?;
        if input.content.len() > max_file_bytes {
            return Err(FleetError::Invalid(format!(
                "input file '{}' is {} bytes, over the limit of {max_file_bytes} bytes (limits.max_input_file_bytes)",
                input.name,
                input.content.len()
            )));
        }
        if !names.insert(input.name.as_str()) {
            return Err(FleetError::Invalid(format!(
                "input file '{}' is given twice",
                input.name
            )));
        }
    }
    for name in &names {
        if let Some(folder) = name
            .match_indices('/')
            .map(|(at, _)| &name[..at])
            .find(|folder| names.contains(folder))
        {
            return Err(FleetError::Invalid(format!(
                "input file '{folder}' is also the folder of input file '{name}'"
            )));
        }
    }
    Ok(())
}

/// A model name as the front door takes it: 1 to 200 of letters, digits and `_.:/@+[]-`,
/// not starting with `-` (it is one argument of the CLI's command line, never an option).
pub fn validate_model(model: &str) -> Result<(), FleetError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "_.:/@+[]-".contains(c);
    if model.is_empty()
        || model.len() > 200
        || model.starts_with('-')
        || !model.chars().all(allowed)
    {
        return Err(FleetError::Invalid(format!(
            "model: {model:?} is not a model name (1 to 200 of letters, digits and _.:/@+[]-, \
             not starting with -)"
        )));
    }
    Ok(())
}

/// A fingerprint of what a spawn asks for (`mode` as parsed, so an omitted mode and its
/// default are one request), without its idempotency key: two requests with one key are
/// the same request exactly when their fingerprints are equal.
pub fn request_hash(req: &SpawnRequest, mode: AgentMode) -> String {
    let canonical = SpawnRequest {
        idempotency_key: None,
        mode: Some(mode.as_str().to_string()),
        ..req.clone()
    };
    // Struct fields serialise in declaration order, so equal requests give equal bytes.
    let bytes = serde_json::to_vec(&canonical).unwrap_or_default();
    hex::encode(Sha256::digest(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(name: &str) -> InputFile {
        InputFile {
            name: name.into(),
            content: "x".into(),
        }
    }

    #[test]
    fn input_names_stay_inside_the_input_folder() {
        for ok in ["notes.md", "docs/spec.txt", "a.b-c_d", "a/b/c"] {
            assert!(validate_input_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "../x",
            "/etc/passwd",
            "a/../../b",
            "./x",
            "a\\b",
            "x\0y",
            "a/",
            "a//b",
            "a/./b",
        ] {
            assert!(validate_input_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_input_set_has_no_duplicates_and_no_file_that_is_a_folder() {
        assert!(validate_inputs(&[input("a/b"), input("a/c"), input("b")], 10).is_ok());
        let twice = validate_inputs(&[input("a"), input("a")], 10).unwrap_err();
        assert!(twice.to_string().contains("'a' is given twice"), "{twice}");
        let folder = validate_inputs(&[input("a/b/c"), input("a/b")], 10).unwrap_err();
        assert!(
            folder
                .to_string()
                .contains("'a/b' is also the folder of input file 'a/b/c'"),
            "{folder}"
        );
    }

    #[test]
    fn nul_is_found_and_named_by_its_field() {
        let body =
            serde_json::json!({"prompt": "ok", "inputs": [{"name": "a", "content": "x\u{0}"}]});
        assert_eq!(nul_path(&body).as_deref(), Some("inputs[0].content"));
        let key = serde_json::json!({"answers": {"d\u{0}b": "x"}});
        assert_eq!(nul_path(&key).as_deref(), Some("answers.d\\u{0}b"));
        assert_eq!(nul_path(&serde_json::json!({"a": ["b", 1]})), None);
        let refused = no_nul_in_json(&body).unwrap_err().to_string();
        assert_eq!(refused, "inputs[0].content contains a NUL character");
    }

    #[test]
    fn the_fingerprint_ignores_only_the_key() {
        let req = SpawnRequest {
            provider: "claude".into(),
            project: "demo".into(),
            prompt: "hi".into(),
            name: None,
            mode: None,
            task_id: None,
            idempotency_key: Some("k1".into()),
            inputs: vec![],
            retries: None,
            model: None,
            budget: None,
        };
        let other_key = SpawnRequest {
            idempotency_key: Some("k2".into()),
            ..req.clone()
        };
        let other_prompt = SpawnRequest {
            prompt: "ho".into(),
            ..req.clone()
        };
        let explicit_mode = SpawnRequest {
            mode: Some("execute".into()),
            ..req.clone()
        };
        let hash = |r: &SpawnRequest| request_hash(r, AgentMode::Execute);
        assert_eq!(hash(&req), hash(&other_key));
        assert_eq!(hash(&req), hash(&explicit_mode));
        assert_ne!(hash(&req), hash(&other_prompt));
        assert_ne!(hash(&req), request_hash(&req, AgentMode::Plan));
    }
}
