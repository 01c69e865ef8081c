//! The provider port's own tests, and the conformance suite every stream parser passes.

use super::*;
use proptest::prelude::*;
use serde_json::json;

#[test]
fn every_known_provider_can_resume_and_keeps_its_mode_flags() {
    let plan = SpawnOptions {
        model: None,
        mode: AgentMode::Plan,
    };
    for b in BUILT_IN {
        let (name, p) = (b.name, built_in(b.name).unwrap());
        let resume = p.resume_args("sess-1", &plan).unwrap();
        assert!(resume.iter().any(|a| a == "sess-1"), "{name}: {resume:?}");
        for flag in p.mode_args(AgentMode::Plan) {
            assert!(resume.contains(&flag), "{name}: {resume:?}");
        }
        let execute = p.spawn_args(&SpawnOptions::default());
        for flag in p.mode_args(AgentMode::Execute) {
            assert!(execute.contains(&flag), "{name}: {execute:?}");
        }
    }
}

/// Each CLI gets a spawn's model by its own flag, on spawns and resumes alike; amp, which
/// picks models by agent mode, takes none.
#[test]
fn a_model_goes_to_each_cli_by_its_own_flag() {
    let opts = SpawnOptions {
        model: Some("the-model".into()),
        mode: AgentMode::Execute,
    };
    let flags = [
        ("claude", "--model"),
        ("codex", "-m"),
        ("gemini", "-m"),
        ("cursor", "--model"),
        ("auggie", "--model"),
        ("opencode", "-m"),
    ];
    for b in BUILT_IN {
        let p = built_in(b.name).unwrap();
        let spawn = p.spawn_args(&opts);
        let resume = p.resume_args("sess-1", &opts).unwrap();
        match flags.iter().find(|(name, _)| *name == b.name) {
            Some((name, flag)) => {
                assert!(p.takes_model(), "{name}");
                for args in [&spawn, &resume] {
                    let at = args.iter().position(|a| a == flag);
                    assert_eq!(
                        at.map(|i| args[i + 1].as_str()),
                        Some("the-model"),
                        "{name}: {args:?}"
                    );
                }
            }
            None => {
                assert_eq!(b.name, "amp");
                assert!(!p.takes_model());
                assert!(!spawn.iter().chain(&resume).any(|a| a == "the-model"));
            }
        }
    }
}

#[test]
fn the_prompt_replaces_its_placeholder_or_comes_last() {
    let args = vec![
        "-i".to_string(),
        PROMPT_PLACEHOLDER.to_string(),
        "-q".to_string(),
    ];
    assert_eq!(
        place_prompt(args.clone(), PromptVia::Arg, "p"),
        ["-i", "p", "-q"]
    );
    assert_eq!(place_prompt(args.clone(), PromptVia::Stdin, "p"), args);
    assert_eq!(
        place_prompt(vec!["-x".into()], PromptVia::Arg, "p"),
        ["-x", "p"]
    );
}

#[test]
fn events_serialise_with_a_kind_tag() {
    let ev = AgentEvent::AssistantText { text: "hi".into() };
    let v = serde_json::to_value(&ev).unwrap();
    assert_eq!(v, json!({"kind": "assistant_text", "text": "hi"}));
    assert_eq!(serde_json::from_value::<AgentEvent>(v).unwrap(), ev);
}

// Conformance suite for the `StreamParser` contract, run against every
// implemented provider: whatever a CLI (or a dying pipe) writes, parsing
// must not panic, blank lines give nothing and non-JSON is kept verbatim.

/// Every built-in provider's parser and every configurable parser kind.
fn all_parsers() -> Vec<(String, Box<dyn StreamParser>)> {
    let builtin = BUILT_IN
        .iter()
        .map(|b| (b.name.to_string(), built_in(b.name).unwrap().parser()));
    let kinds = ParserKind::NAMES
        .iter()
        .map(|k| (k.to_string(), ParserKind::parse(k).unwrap().parser()));
    builtin.chain(kinds).collect()
}

macro_rules! transcripts {
    ($($file:literal),*) => {
        [$(include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/transcripts/", $file))),*]
    };
}

fn recorded_lines() -> Vec<&'static str> {
    transcripts!(
        "claude-2.1.197-write-file.jsonl",
        "claude-2.1.197-rate-limited.jsonl",
        "claude-2.1.197-auth-failed.jsonl",
        "claude-2.1.197-resume.jsonl",
        "codex-0.169.0-hello.jsonl",
        "codex-0.169.0-write-file.jsonl",
        "codex-0.169.0-resume.jsonl",
        "codex-0.169.0-rate-limited.jsonl",
        "codex-0.169.0-auth-failed.jsonl",
        "gemini-docs-write-file.jsonl",
        "gemini-0.61.0-write-file.jsonl",
        "gemini-0.61.0-resume.jsonl",
        "gemini-0.61.0-rate-limited.jsonl",
        "gemini-0.61.0-auth-failed.jsonl",
        "opencode-docs-write-file.jsonl",
        "opencode-1.18.33-write-file.jsonl",
        "opencode-1.18.33-resume.jsonl",
        "opencode-1.18.33-rate-limited.jsonl",
        "opencode-1.18.33-auth-failed.jsonl",
        "cursor-docs-write-file.jsonl",
        "amp-docs-write-file.jsonl",
        "auggie-0.36.0-bundle-result.jsonl"
    )
    .iter()
    .flat_map(|t| t.lines())
    .collect()
}

fn any_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,8}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            proptest::collection::btree_map(".{0,6}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Replace the value found by walking `path` (each step picks a key or an
/// element modulo its count), or remove it when it is an object's field.
fn mutate(v: &mut serde_json::Value, path: &[usize], new: serde_json::Value, remove: bool) {
    let Some((&step, rest)) = path.split_first() else {
        *v = new;
        return;
    };
    match v {
        serde_json::Value::Object(map) if !map.is_empty() => {
            let key = map
                .keys()
                .nth(step % map.len())
                .cloned()
                .unwrap_or_default();
            if rest.is_empty() && remove {
                map.remove(&key);
            } else if let Some(child) = map.get_mut(&key) {
                mutate(child, rest, new, remove);
            }
        }
        serde_json::Value::Array(items) if !items.is_empty() => {
            let len = items.len();
            mutate(&mut items[step % len], rest, new, remove);
        }
        _ => *v = new,
    }
}

fn parse_everywhere(line: &str) {
    for (name, mut parser) in all_parsers() {
        let events = parser.parse_line(line);
        if line.trim().is_empty() {
            assert_eq!(events, [], "{name}: blank line {line:?}");
        } else if name == "lines" {
            let text = line.to_string();
            assert_eq!(events, [AgentEvent::AssistantText { text }], "{name}");
        } else if serde_json::from_str::<serde_json::Value>(line).is_err() {
            let raw = AgentEvent::Raw {
                line: line.to_string(),
            };
            assert_eq!(events, [raw], "{name}");
        }
    }
}

proptest! {
    #[test]
    fn parse_signal_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse_signal(&bytes);
    }

    #[test]
    fn parsers_survive_arbitrary_strings(line in any::<String>()) {
        parse_everywhere(&line);
    }

    #[test]
    fn parsers_survive_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        parse_everywhere(&String::from_utf8_lossy(&bytes));
    }

}

proptest! {
    // Cheap per case, and mutations only bite when they hit a field the
    // parser reads, so run many more cases than the default 256.
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn parsers_survive_mutated_recorded_lines(
        pick in any::<usize>(),
        path in proptest::collection::vec(any::<usize>(), 0..5),
        new in any_json(),
        remove in any::<bool>(),
        cut in any::<usize>(),
    ) {
        let lines = recorded_lines();
        let mut value: serde_json::Value = serde_json::from_str(lines[pick % lines.len()]).unwrap();
        mutate(&mut value, &path, new, remove);
        let mutated = value.to_string();
        parse_everywhere(&mutated);
        // A line cut short, as a killed process leaves it.
        let chars: Vec<char> = mutated.chars().collect();
        parse_everywhere(&chars[..cut % (chars.len() + 1)].iter().collect::<String>());
    }
}
