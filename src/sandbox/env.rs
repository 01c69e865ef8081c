//! The provider's environment, built from an allow-list: never the worker's own (which
//! holds the sealing key, the store and Redis URLs, API tokens, and whatever else the
//! operator's shell exported).

use std::collections::BTreeMap;
use std::path::Path;

/// Variables copied from the worker's environment when set: they only say how to find
/// programs and how to talk to a terminal.
const PASSED: &[&str] = &[
    "PATH",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "LC_MESSAGES",
    "TERM",
    "TZ",
    "USER",
    "LOGNAME",
    "SHELL",
];

/// What goes into one provider process's environment, later entries winning.
pub struct EnvParts<'a> {
    /// The agent's private HOME and TMPDIR.
    pub home: &'a Path,
    pub tmp: &'a Path,
    /// The provider's own variables (from its module).
    pub provider: Vec<(String, String)>,
    /// `providers.<name>.env`.
    pub configured: &'a BTreeMap<String, String>,
    /// `sandbox.env_passthrough`.
    pub passthrough: &'a [String],
    /// The account's config dir and key.
    pub account: &'a [(String, String)],
    /// Whether the process runs in the sandbox (claude then skips its own root check).
    pub sandboxed: bool,
}

/// The environment, from `worker_env` (the worker's own) and `parts`.
pub fn build_env(
    worker_env: impl IntoIterator<Item = (String, String)>,
    parts: &EnvParts<'_>,
) -> Vec<(String, String)> {
    let worker: BTreeMap<String, String> = worker_env.into_iter().collect();
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for name in PASSED
        .iter()
        .copied()
        .chain(parts.passthrough.iter().map(String::as_str))
    {
        if let Some(value) = worker.get(name) {
            env.insert(name.to_string(), value.clone());
        }
    }
    env.entry("PATH".into())
        .or_insert_with(|| "/usr/local/bin:/usr/bin:/bin".into());
    let home = parts.home.display().to_string();
    let tmp = parts.tmp.display().to_string();
    for (k, v) in [
        ("HOME", &home),
        ("TMPDIR", &tmp),
        ("TMP", &tmp),
        ("TEMP", &tmp),
    ] {
        env.insert(k.into(), v.clone());
    }
    if parts.sandboxed {
        env.insert("IS_SANDBOX".into(), "1".into());
    }
    env.extend(parts.provider.iter().cloned());
    env.extend(parts.configured.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.extend(parts.account.iter().cloned());
    env.retain(|k, _| !k.to_ascii_uppercase().starts_with("AGENTFLEET"));
    env.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allowed_variables_reach_the_provider() {
        let worker = [
            ("PATH", "/usr/bin"),
            ("AGENTFLEET__SECRETS__KEY", "sealing-key"),
            ("AGENTFLEET__DATABASE__URL", "postgres://x"),
            ("OTHER_ACCOUNT_KEY", "sk-other"),
            ("LANG", "C.UTF-8"),
            ("MY_PROXY", "http://proxy"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let configured = BTreeMap::from([
            ("FAKE_RUNLOG".to_string(), "/x".to_string()),
            ("agentfleet_sneaky".to_string(), "no".to_string()),
        ]);
        let account = [("ANTHROPIC_API_KEY".to_string(), "sk-mine".to_string())];
        let env = build_env(
            worker,
            &EnvParts {
                home: Path::new("/a/home"),
                tmp: Path::new("/a/tmp"),
                provider: vec![],
                configured: &configured,
                passthrough: &["MY_PROXY".to_string()],
                account: &account,
                sandboxed: true,
            },
        );
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("PATH"), Some("/usr/bin"));
        assert_eq!(get("HOME"), Some("/a/home"));
        assert_eq!(get("TMPDIR"), Some("/a/tmp"));
        assert_eq!(get("LANG"), Some("C.UTF-8"));
        assert_eq!(get("MY_PROXY"), Some("http://proxy"));
        assert_eq!(get("FAKE_RUNLOG"), Some("/x"));
        assert_eq!(get("ANTHROPIC_API_KEY"), Some("sk-mine"));
        assert_eq!(get("IS_SANDBOX"), Some("1"));
        for k in [
            "AGENTFLEET__SECRETS__KEY",
            "AGENTFLEET__DATABASE__URL",
            "OTHER_ACCOUNT_KEY",
            "agentfleet_sneaky",
        ] {
            assert_eq!(get(k), None, "{k} leaked");
        }
    }
}
