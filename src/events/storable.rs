//! Makes what an agent printed storable in both stores. Provider output is arbitrary bytes:
//! invalid UTF-8 is replaced when a line is read, but a NUL survives that, and a JSON line
//! may carry one escaped (`\u0000`) into a parsed string. Postgres refuses both, in `text`
//! and in `jsonb`, and one refused event used to stop an agent's whole log; so every NUL
//! becomes U+FFFD before an event or an outcome is written, in one place for both stores.

use std::borrow::Cow;

/// What stands in for a NUL.
pub const NUL_REPLACEMENT: char = '\u{fffd}';

/// `text` with every NUL replaced.
pub fn storable_text(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', &NUL_REPLACEMENT.to_string()))
    } else {
        Cow::Borrowed(text)
    }
}

/// Replaces every NUL in `text`, in place.
pub fn make_storable_text(text: &mut String) {
    if let Cow::Owned(clean) = storable_text(text) {
        *text = clean;
    }
}

/// A line of output made storable before it is parsed: a NUL in it, and in a JSON line a
/// NUL escape (`\u0000`, not an escaped backslash followed by `u0000`), become U+FFFD, so
/// nothing parsed from the line (texts, session ids, error messages) holds a NUL.
pub fn storable_line(line: String) -> String {
    let line = match storable_text(&line) {
        Cow::Owned(clean) => clean,
        Cow::Borrowed(_) => line,
    };
    const ESCAPE: &str = "\\u0000";
    if !line.contains(ESCAPE) {
        return line;
    }
    let mut out = String::with_capacity(line.len());
    let mut rest = line.as_str();
    while let Some(at) = rest.find(ESCAPE) {
        let before = &rest[..at];
        // An escape when the backslashes right before it pair up among themselves.
        let backslashes = before.len() - before.trim_end_matches('\\').len();
        out.push_str(before);
        out.push_str(if backslashes % 2 == 0 {
            "\\ufffd"
        } else {
            ESCAPE
        });
        rest = &rest[at + ESCAPE.len()..];
    }
    out.push_str(rest);
    out
}

/// Replaces every NUL in the strings and keys of `value`, in place.
pub fn make_storable(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::String(s) => make_storable_text(s),
        Value::Array(items) => items.iter_mut().for_each(make_storable),
        Value::Object(map) => {
            if map.keys().any(|k| k.contains('\0')) {
                let entries = std::mem::take(map);
                for (key, mut item) in entries {
                    make_storable(&mut item);
                    map.insert(storable_text(&key).into_owned(), item);
                }
            } else {
                map.values_mut().for_each(make_storable);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn nuls_are_replaced_in_strings_keys_and_nested_values() {
        let mut value: serde_json::Value =
            serde_json::from_str(r#"{"a\u0000":["x\u0000y",{"k":"\u0000"}],"n":1}"#).unwrap();
        make_storable(&mut value);
        assert_eq!(
            value,
            json!({"a\u{fffd}": ["x\u{fffd}y", {"k": "\u{fffd}"}], "n": 1})
        );
        assert!(!serde_json::to_string(&value).unwrap().contains("\\u0000"));
        assert!(matches!(storable_text("clean"), Cow::Borrowed(_)));
    }

    #[test]
    fn a_line_loses_its_nuls_and_nul_escapes_but_not_an_escaped_backslash() {
        let line = r#"{"t":"a\u0000b","u":"\\u0000","v":"\\\u0000","w":"x\u0000"}"#;
        let line = format!("{line}\0");
        let clean = storable_line(line);
        assert_eq!(
            clean,
            r#"{"t":"a\ufffdb","u":"\\u0000","v":"\\\ufffd","w":"x\ufffd"}"#.to_string()
                + "\u{fffd}"
        );
        let parsed: serde_json::Value =
            serde_json::from_str(clean.trim_end_matches('\u{fffd}')).unwrap();
        assert_eq!(parsed["u"], "\\u0000");
        assert_eq!(parsed["v"], "\\\u{fffd}");
    }
}
