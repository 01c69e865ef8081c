//! The CLI in its remote mode: run with nothing but PATH, HOME and the API's URL and token
//! against a real `serve` (Postgres, Redis, a worker with the scripted provider), every
//! agent, project, account, webhook, worker and queue command works over the API, prints
//! what the local mode prints, and writes nothing on this machine.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use agentfleet::domain::AgentStatus;

use crate::common::api::{TOKEN, serve_with};
use crate::common::env::{TestEnv, assert_status, bin};

const KEY_B64: &str = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=";
const SECRET: &str = "sk-ant-api03-SECRET-remote-4e2a91";
const ASK: &str = "pick a database\n#signal {\"status\":\"questions\",\"questions\":[{\"id\":\"db\",\"question\":\"Which database?\"}]}";

/// The remote CLI: a cleared environment, a fresh HOME and working directory.
struct RemoteCli {
    url: String,
    home: tempfile::TempDir,
    cwd: tempfile::TempDir,
}

impl RemoteCli {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin());
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("AGENTFLEET_API_URL", &self.url)
            .env("AGENTFLEET_API_TOKEN", TOKEN)
            .current_dir(self.cwd.path())
            .args(args);
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = self.command(args).output().expect("run agentfleet");
        for stream in [&out.stdout, &out.stderr] {
            assert!(
                !String::from_utf8_lossy(stream).contains(TOKEN),
                "the token was printed by {args:?}"
            );
        }
        out
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "remote agentfleet {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The stderr of a command expected to fail.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "{args:?} should have failed");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

/// Every file and folder beneath `dir`.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        out.push(entry.path().display().to_string());
        if entry.file_type().unwrap().is_dir() {
            out.extend(files_under(&entry.path()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn every_command_works_over_the_api_and_writes_nothing_here() {
    let mut env = TestEnv::new().await;
    env.set_env("AGENTFLEET__SECRETS__KEY", KEY_B64);
    env.start_worker(&[]);
    let server = serve_with(&env, &[("AGENTFLEET__WEBHOOKS__ALLOW_PRIVATE", "true")]).await;
    let cli = RemoteCli {
        url: server.base.clone(),
        home: tempfile::tempdir().unwrap(),
        cwd: tempfile::tempdir().unwrap(),
    };

    let help = cli.ok(&["--help"]);
    assert!(
        help.contains("Mode: remote") && help.contains(&server.base),
        "{help}"
    );
    let local_help = env.cli_ok(&["--help"]);
    assert!(local_help.contains("Mode: local"), "{local_help}");

    // spawn --wait follows the event stream to the end.
    let out = cli.run(&[
        "spawn",
        "--project",
        "demo",
        "--name",
        "remote-otter",
        "--task-id",
        "T-1",
        "--wait",
        "just finish",
    ]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.lines().next().unwrap().ends_with(" remote-otter"),
        "{stdout}"
    );
    assert!(
        stdout.contains("] result"),
        "the events were followed: {stdout}"
    );
    assert!(
        stderr.contains("agent remote-otter ended: completed"),
        "{stderr}"
    );

    // An agent that asks: --wait ends at its questions and says how to answer.
    let out = cli.run(&[
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

    // get, list and logs print what the local mode prints.
    for args in [
        &["get", "remote-otter"][..],
        &["get", "remote-otter", "--json"],
        &["logs", "remote-otter"],
        &["logs", "remote-otter", "--json"],
        &["logs", "-f", "asking-otter"],
        &["list"],
        &["list", "--json", "--status", "completed"],
        &["list", "--task-id", "T-1"],
        &["list", "--name", "ask", "--created-after", "1h"],
        &["project", "list", "--json"],
    ] {
        assert_eq!(cli.ok(args), env.cli_ok(args), "{args:?}");
    }
    let completed = cli.ok(&["list", "--status", "completed"]);
    assert!(completed.contains("remote-otter") && !completed.contains("asking-otter"));

    // Pages: the cursor printed on stderr leads to the next page.
    let out = cli.run(&["list", "--limit", "1"]);
    assert!(out.status.success());
    let first = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        first.contains("asking-otter") && !first.contains("remote-otter"),
        "{first}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let cursor = stderr
        .trim()
        .strip_prefix("more: add --cursor ")
        .unwrap_or_else(|| panic!("a next cursor: {stderr}"))
        .to_string();
    let second = cli.ok(&["list", "--limit", "1", "--cursor", &cursor]);
    assert!(second.contains("remote-otter"), "{second}");

    // resume --wait: the answers reach the same session, followed to the end.
    let out = cli.run(&[
        "resume",
        "asking-otter",
        "--answer",
        "db=Postgres",
        "--wait",
    ]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.starts_with("asking-otter resuming"), "{stdout}");
    assert!(
        stderr.contains("agent asking-otter ended: completed"),
        "{stderr}"
    );
    let store = env.store().await;
    assert_status(
        &store.agent("asking-otter").await.unwrap(),
        AgentStatus::Completed,
    );

    // stop a running agent.
    let long = cli.ok(&[
        "spawn",
        "--project",
        "demo",
        "--name",
        "long-otter",
        "#hold 60\nwork",
    ]);
    let long_id: uuid::Uuid = long.split_whitespace().next().unwrap().parse().unwrap();
    env.wait_agent(long_id, Duration::from_secs(60), "running", |a| {
        a.status == AgentStatus::Running
    })
    .await;
    assert_eq!(cli.ok(&["stop", "long-otter"]).trim(), "long-otter stopped");

    // dismiss, delete, and an error as the local mode words it.
    assert_eq!(
        cli.ok(&["dismiss", "remote-otter"]).trim(),
        "remote-otter dismissed"
    );
    assert!(!cli.ok(&["list"]).contains("remote-otter"));
    assert!(cli.ok(&["list", "--all"]).contains("completed (dismissed)"));
    assert_eq!(
        cli.ok(&["delete", "asking-otter"]).trim(),
        "asking-otter deleted"
    );
    let remote_error = cli.fails(&["get", "asking-otter"]);
    let local = env.cli(&["get", "asking-otter"]);
    assert!(!local.status.success());
    assert_eq!(remote_error, String::from_utf8_lossy(&local.stderr));

    // Projects.
    let other = env.dir.path().join("other.git");
    crate::common::env::make_remote(&other);
    let other = other.to_str().unwrap();
    assert!(
        cli.ok(&["project", "add", "other", "--remote", other])
            .starts_with("project other added")
    );
    assert!(cli.ok(&["project", "list"]).contains(other));
    assert_eq!(
        cli.ok(&["project", "update", "other", "--branch", "dev"])
            .trim(),
        format!("project other updated ({other}, branch dev)")
    );
    // A daily budget and a cap go over the API too, and come off with `none`.
    let budgeted = cli.ok(&[
        "project",
        "update",
        "other",
        "--daily-cost-usd",
        "2.5",
        "--max-concurrent",
        "3",
    ]);
    assert!(
        budgeted.contains("project other runs at most 3 agents at once"),
        "{budgeted}"
    );
    assert!(
        budgeted.contains("project other daily budget: 2.5 US dollars"),
        "{budgeted}"
    );
    let cleared = cli.ok(&["project", "update", "other", "--daily-cost-usd", "none"]);
    assert!(!cleared.contains("daily budget"), "{cleared}");
    assert_eq!(
        cli.ok(&["project", "remove", "other"]).trim(),
        "project other removed (with 0 agent record(s))"
    );
    assert!(!cli.ok(&["project", "list"]).contains(other));

    // Accounts: the key read here, sent in the body, sealed by the API; never printed.
    let out = cli
        .command(&["account", "add", "--provider", "claude", "--label", "team"])
        .args(["--api-key-env", "REMOTE_TEST_KEY"])
        .env("REMOTE_TEST_KEY", SECRET)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("account team added (claude api_key"),
        "{stdout}"
    );
    let listed = cli.ok(&["account", "list"]);
    assert!(
        listed.contains("team") && !listed.contains(SECRET),
        "{listed}"
    );
    assert_eq!(
        cli.ok(&["account", "list", "--json"]),
        env.cli_ok(&["account", "list", "--json"])
    );
    assert_eq!(
        cli.ok(&["account", "reset", "team"]).trim(),
        "account team reset"
    );
    assert_eq!(
        cli.ok(&["account", "remove", "team"]).trim(),
        "account team removed"
    );
    assert!(!cli.ok(&["account", "list"]).contains("team"));

    // Webhooks.
    let added = cli.ok(&[
        "webhook",
        "add",
        "http://127.0.0.1:9/hook",
        "--event",
        "agent.completed",
    ]);
    assert!(added.contains("secret: whsec_"), "{added}");
    let id = added.split_whitespace().nth(1).unwrap().to_string();
    assert_eq!(
        cli.ok(&["webhook", "list"]),
        env.cli_ok(&["webhook", "list"])
    );
    assert!(cli.ok(&["webhook", "list"]).contains(&id));
    assert!(cli.ok(&["webhook", "deliveries", &id]).starts_with("ID"));
    assert_eq!(
        cli.ok(&["webhook", "remove", &id]).trim(),
        format!("webhook {id} removed")
    );

    // Workers and the queue.
    let workers = cli.ok(&["workers"]);
    assert_eq!(
        workers.lines().count(),
        2,
        "the header and one worker: {workers}"
    );
    let listed: serde_json::Value = serde_json::from_str(&cli.ok(&["workers", "--json"])).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert!(cli.ok(&["queue"]).starts_with("pending spawns:  0"));
    let queue: serde_json::Value = serde_json::from_str(&cli.ok(&["queue", "--json"])).unwrap();
    assert!(queue["control_queues"].is_array() && queue["agents_by_status"].is_object());

    // What acts on this machine's fleet is refused, with nothing started.
    for args in [&["worker"][..], &["migrate"], &["cleanup"], &["doctor"]] {
        let stderr = cli.fails(args);
        assert!(
            stderr.contains("works only against the configured store"),
            "{args:?}: {stderr}"
        );
    }

    // The token from client.token_file; a wrong one is refused with the API's message.
    let config = cli.home.path().join("agentfleet.toml");
    let token_file = env.dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    std::fs::write(
        &config,
        format!(
            "[client]\ntoken_file = {:?}\n",
            token_file.display().to_string()
        ),
    )
    .unwrap();
    let out = cli
        .command(&["--config", config.to_str().unwrap(), "project", "list"])
        .env_remove("AGENTFLEET_API_TOKEN")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_file(&config).unwrap();
    let stderr = cli.fails(&["--token", "wrong", "project", "list"]);
    assert!(
        stderr.starts_with("error: ") && stderr.contains("token"),
        "{stderr}"
    );

    assert_eq!(
        files_under(cli.home.path()),
        Vec::<String>::new(),
        "nothing written in HOME"
    );
    assert_eq!(
        files_under(cli.cwd.path()),
        Vec::<String>::new(),
        "nothing written here"
    );
    drop(server);
    env.stop_workers();
}
