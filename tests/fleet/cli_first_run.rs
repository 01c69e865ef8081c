//! What a first run on the command line meets: `spawn --wait` on an agent that asks says
//! what it asked and how to answer; `get` shows the prompt; a reader that goes away
//! (`logs --json | head`) ends the command quietly; `list --all` marks dismissed agents;
//! `workers` forgets workers that ended long ago; `migrate` says what it did.

use std::io::Read;
use std::process::Stdio;

use crate::common::env::TestEnv;

const ASK: &str = "pick a database\n#signal {\"status\":\"questions\",\"questions\":[{\"id\":\"db\",\"question\":\"Which database?\"}]}";

#[tokio::test(flavor = "multi_thread")]
async fn waiting_agents_say_how_to_answer_closed_pipes_end_quietly_and_dismissed_show() {
    let mut env = TestEnv::new().await;
    env.start_worker(&[]);

    let out = env.cli(&[
        "spawn",
        "--project",
        "demo",
        "--name",
        "asking-otter",
        "--wait",
        ASK,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("question [db]: Which database?"),
        "{stderr}"
    );
    assert!(
        stderr.contains("answer with: agentfleet resume asking-otter --answer db=... --wait"),
        "{stderr}"
    );

    // `get` shows the prompt it was spawned with.
    let shown = env.cli_ok(&["get", "asking-otter"]);
    assert!(
        shown.contains("prompt:    pick a database\n           #signal"),
        "{shown}"
    );
    let shown: serde_json::Value =
        serde_json::from_str(&env.cli_ok(&["get", "asking-otter", "--json"])).unwrap();
    assert_eq!(shown["prompt"], ASK);

    // The reader is gone before the first line: no panic, no error message.
    let mut logs = env
        .command(&["logs", "asking-otter", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(logs.stdout.take());
    let status = logs.wait().unwrap();
    let mut stderr = String::new();
    logs.stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.trim().is_empty(), "{status:?}: {stderr}");

    env.cli_ok(&["dismiss", "asking-otter"]);
    let all = env.cli_ok(&["list", "--all"]);
    let line = all
        .lines()
        .find(|l| l.contains("asking-otter"))
        .unwrap_or_else(|| panic!("{all}"));
    assert!(line.contains("waiting_for_input (dismissed)"), "{line}");

    // A worker that stopped long ago drops out of `workers`; `--all` still shows it.
    env.stop_workers();
    let gone = env.store().await.list_workers().await.unwrap()[0]
        .id
        .clone();
    assert!(
        env.cli_ok(&["workers"]).contains(&gone),
        "just stopped: still listed"
    );
    let pool = sqlx::PgPool::connect(&env.db_url).await.unwrap();
    sqlx::query("UPDATE workers SET last_heartbeat_at = now() - interval '1 hour'")
        .execute(&pool)
        .await
        .unwrap();
    assert!(!env.cli_ok(&["workers"]).contains(&gone));
    assert!(env.cli_ok(&["workers", "--all"]).contains(&gone));
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_says_whether_it_created_the_schema() {
    let env = TestEnv::new().await;
    // A database of its own: the harness's is migrated already.
    let db = env.dir.path().join("fresh.db");
    let url = format!("sqlite://{}", db.display());
    let migrate = || {
        let out = env
            .command(&["migrate"])
            .env("AGENTFLEET__DATABASE__URL", &url)
            .env("AGENTFLEET__REDIS__URL", "")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = migrate();
    assert!(
        first.starts_with("created the database schema ("),
        "{first}"
    );
    assert_eq!(migrate().trim(), "the database schema is up to date");
    // The harness's Postgres database, migrated when the test began.
    assert_eq!(
        env.cli_ok(&["migrate"]).trim(),
        "the database schema is up to date"
    );
}
