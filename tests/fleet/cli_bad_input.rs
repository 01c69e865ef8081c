//! Bad input on the command line: a clear error, a non-zero exit, and nothing written.

use crate::common::env::TestEnv;

/// Runs the CLI and asserts it failed, saying `want`, without a panic.
pub(crate) fn fails_with(env: &TestEnv, args: &[&str], want: &str) {
    let out = env.cli(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(stderr.contains(want), "{args:?}: '{stderr}' lacks '{want}'");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_spawns_are_refused_before_anything_is_written() {
    let env = TestEnv::new().await;
    env.spawn(&["--name", "taken-name"], "first");
    let store = env.store().await;
    let before = store.count_agents().await.unwrap();
    let big = env.dir.path().join("big.txt");
    std::fs::write(&big, "x".repeat(256 * 1024 + 1)).unwrap();
    let big = big.to_str().unwrap();
    let spawn = |extra: &[&str]| {
        let mut a = vec!["spawn", "--project", "demo"];
        a.extend_from_slice(extra);
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            spawn(&["--provider", "gpt-9", "hi"]),
            "unknown provider 'gpt-9' (known providers: claude, codex, gemini, cursor, auggie, amp, opencode)",
        ),
        (
            vec![
                "spawn".into(),
                "--project".into(),
                "ghost".into(),
                "hi".into(),
            ],
            "unknown project 'ghost'",
        ),
        (
            spawn(&["--name", "taken-name", "hi"]),
            "an agent named 'taken-name' already exists",
        ),
        (spawn(&["--name", "bad/name", "hi"]), "agent name"),
        (spawn(&["--name=-dash", "hi"]), "agent name"),
        (spawn(&["--name", "a..b", "hi"]), "agent name"),
        (spawn(&[""]), "the prompt is empty"),
        (
            spawn(&["--prompt-file", big]),
            "over the limit of 262144 bytes",
        ),
        (
            spawn(&["--prompt-file", "/nonexistent/prompt"]),
            "cannot read prompt file",
        ),
        (
            spawn(&["--input", "/nonexistent/file", "hi"]),
            "cannot read input file",
        ),
        (spawn(&[]), "give a prompt"),
    ];
    for (args, want) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        fails_with(&env, &args, want);
    }
    assert_eq!(
        store.count_agents().await.unwrap(),
        before,
        "nothing was written"
    );
    assert_eq!(store.pending_requests(100).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_projects_and_lookups_are_refused() {
    let env = TestEnv::new().await;
    fails_with(
        &env,
        &["project", "add", "demo", "--remote", "/x"],
        "a project named 'demo' already exists",
    );
    fails_with(
        &env,
        &[
            "project",
            "add",
            "p2",
            "--remote",
            "/x",
            "--branch",
            "bad..branch",
        ],
        "not a valid branch name",
    );
    fails_with(
        &env,
        &["project", "add", "a/b", "--remote", "/x"],
        "project name",
    );
    fails_with(
        &env,
        &["get", "nobody"],
        "no agent with id or name 'nobody'",
    );
    fails_with(
        &env,
        &["logs", "nobody"],
        "no agent with id or name 'nobody'",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_configuration_names_the_key() {
    let env = TestEnv::new().await;
    let out = env
        .command(&["list"])
        .env("AGENTFLEET__WORKER__CAPACITY", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("worker.capacity"));
    let out = env
        .command(&["list"])
        .env("AGENTFLEET__WORKER__LEASE_TTL", "soon")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("lease_ttl"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_twice_is_a_no_op() {
    let env = TestEnv::new().await;
    env.cli_ok(&["migrate"]);
    env.cli_ok(&["migrate"]);
    assert!(env.cli_ok(&["project", "list"]).contains("demo"));
}
