//! An agent's work as a diff: `GET /v1/agents/{id}/diff` and `agentfleet diff` show the files
//! its pushed commit changed against the commit it started from, with counts and the patch
//! (capped), read from the project's remote, so they answer after its checkout is gone.

use std::path::Path;
use std::time::{Duration, Instant};

use agentfleet::domain::AgentStatus;
use reqwest::StatusCode;
use serde_json::Value;

use crate::common::api::{error_of, serve, serve_with};
use crate::common::env::{TestEnv, assert_status};

/// Puts `keep.txt` (three lines) and `gone.txt` (two lines) on the remote's `main`, on top
/// of its first commit; returns the new tip.
fn base_with_files(remote: &Path) -> String {
    let repo = git2::Repository::open_bare(remote).unwrap();
    let parent = repo
        .find_reference("refs/heads/main")
        .unwrap()
        .peel_to_commit()
        .unwrap();
    let mut tree = repo.treebuilder(Some(&parent.tree().unwrap())).unwrap();
    for (name, text) in [("keep.txt", "a\nb\nc\n"), ("gone.txt", "x\ny\n")] {
        let blob = repo.blob(text.as_bytes()).unwrap();
        tree.insert(name, blob, 0o100644).unwrap();
    }
    let tree = repo.find_tree(tree.write().unwrap()).unwrap();
    let sig = git2::Signature::now("test", "test@localhost").unwrap();
    repo.commit(
        Some("refs/heads/main"),
        &sig,
        &sig,
        "files",
        &tree,
        &[&parent],
    )
    .unwrap()
    .to_string()
}

/// The agent adds `new.txt` (two lines, written by the stand-in), changes one line of
/// `keep.txt` and adds another, and deletes `gone.txt`.
const WORK: &str =
    "change things\n#file new.txt\n#run printf 'a\\nB\\nc\\nd\\n' > keep.txt && rm gone.txt";

fn file<'a>(diff: &'a Value, path: &str) -> &'a Value {
    diff["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == path)
        .unwrap_or_else(|| panic!("no {path} in {diff}"))
}

fn has_folder(env: &TestEnv, name: &str) -> bool {
    env.worker_root(0).join("agents").join(name).exists()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agents_diff_shows_its_changes_with_counts_over_http_and_the_cli() {
    let mut env = TestEnv::new().await;
    let base = base_with_files(&env.remote);
    env.start_worker(&[]);
    let api = serve(&env).await;

    let agent = env.spawn(&["--name", "diff-otter"], WORK);
    let ended = env.wait_final(agent.id, Duration::from_secs(60)).await;
    assert_status(&ended, AgentStatus::Completed);
    assert_eq!(ended.base_commit.as_deref(), Some(base.as_str()));
    let pushed = ended.pushed_commit.clone().expect("a pushed commit");
    let tip = git2::Repository::open_bare(&env.remote)
        .unwrap()
        .find_reference(&format!("refs/heads/{}", ended.branch))
        .unwrap()
        .peel_to_commit()
        .unwrap()
        .id()
        .to_string();
    assert_eq!(pushed, tip, "the recorded commit is the branch's tip");

    // `get` shows both commits, in the API's agent shape too.
    let shown = api.get_json("/v1/agents/diff-otter").await;
    assert_eq!(shown["base_commit"], base.as_str());
    assert_eq!(shown["pushed_commit"], pushed.as_str());
    let text = env.cli_ok(&["get", "diff-otter"]);
    assert!(text.contains(&format!("base:      {base}")), "{text}");
    assert!(text.contains(&format!("pushed:    {pushed}")), "{text}");

    let resp = api.get("/v1/agents/diff-otter/diff").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let diff: Value = resp.json().await.unwrap();
    assert_eq!(diff["base_commit"], base.as_str());
    assert_eq!(diff["pushed_commit"], pushed.as_str());
    assert_eq!(diff["files"].as_array().unwrap().len(), 3, "{diff}");
    let expect = [
        ("new.txt", "added", 2, 0),
        ("keep.txt", "modified", 2, 1),
        ("gone.txt", "deleted", 0, 2),
    ];
    for (path, status, additions, deletions) in expect {
        let f = file(&diff, path);
        assert_eq!(f["status"], status, "{f}");
        assert_eq!(f["additions"], additions, "{f}");
        assert_eq!(f["deletions"], deletions, "{f}");
        assert_eq!(f["binary"], false, "{f}");
    }
    assert_eq!(
        (diff["additions"].as_u64(), diff["deletions"].as_u64()),
        (Some(4), Some(3))
    );
    assert_eq!(diff["truncated"], false);
    let patch = diff["patch"].as_str().unwrap();
    assert_eq!(patch.matches("diff --git ").count(), 3, "{patch}");
    assert!(patch.contains("+written by fake-claude"), "{patch}");
    assert!(patch.contains("-b\n+B\n"), "{patch}");
    assert!(patch.contains("deleted file mode"), "{patch}");

    // `stat` leaves the patch out, the files and counts in.
    let stat = api.get_json("/v1/agents/diff-otter/diff?stat=true").await;
    assert_eq!(stat["patch"], Value::Null);
    assert_eq!(stat["files"], diff["files"]);

    // The CLI: text, --stat and --json.
    let text = env.cli_ok(&["diff", "diff-otter"]);
    assert!(text.contains("A  +2 -0"), "{text}");
    assert!(text.contains("M  +2 -1"), "{text}");
    assert!(text.contains("D  +0 -2"), "{text}");
    assert!(
        text.contains("3 file(s) changed, 4 insertion(s), 3 deletion(s)"),
        "{text}"
    );
    assert!(text.contains("diff --git a/keep.txt b/keep.txt"), "{text}");
    let stat = env.cli_ok(&["diff", "diff-otter", "--stat"]);
    assert!(
        stat.lines()
            .any(|l| l.starts_with("M  +2 -1 ") && l.ends_with(" keep.txt")),
        "{stat}"
    );
    assert!(!stat.contains("diff --git"), "{stat}");
    let json: Value = serde_json::from_str(&env.cli_ok(&["diff", "diff-otter", "--json"])).unwrap();
    assert_eq!(json["files"], diff["files"]);
    assert_eq!(json["patch"], diff["patch"]);

    // After `cleanup` removed its checkout, the diff is read from the remote: a cache made
    // afresh answers the same.
    env.cli_ok(&["cleanup", "diff-otter"]);
    let started = Instant::now();
    while has_folder(&env, "diff-otter") {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the checkout stayed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fresh = env.dir.path().join("fresh-cache");
    let out = env
        .command(&["diff", "diff-otter", "--json"])
        .env("AGENTFLEET__API__DIFF_CACHE_DIR", &fresh)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again["files"], diff["files"]);
    assert_eq!(again["patch"], diff["patch"]);
    assert!(fresh.join("mirrors").is_dir(), "read through the cache");
    let after = api.get_json("/v1/agents/diff-otter/diff").await;
    assert_eq!(after["patch"], diff["patch"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_diff_is_capped_and_bad_requests_are_refused() {
    let mut env = TestEnv::new().await;
    base_with_files(&env.remote);
    env.start_worker(&[]);
    let api = serve_with(&env, &[("AGENTFLEET__API__DIFF_MAX_BYTES", "200")]).await;

    // Nothing pushed yet: a conflict that says why.
    let holding = env.spawn(&["--name", "holding-otter"], "hold on\n#hold 60");
    env.wait_agent(holding.id, Duration::from_secs(60), "running", |a| {
        a.status == AgentStatus::Running
    })
    .await;
    let resp = api
        .get("/v1/agents/holding-otter/diff")
        .send()
        .await
        .unwrap();
    let (status, code, message) = error_of(resp).await;
    assert_eq!((status, code.as_str()), (StatusCode::CONFLICT, "conflict"));
    assert!(message.contains("pushed nothing yet"), "{message}");
    env.cli_ok(&["stop", "holding-otter"]);

    let agent = env.spawn(&["--name", "capped-otter"], WORK);
    assert_status(
        &env.wait_final(agent.id, Duration::from_secs(60)).await,
        AgentStatus::Completed,
    );
    let diff = api.get_json("/v1/agents/capped-otter/diff").await;
    assert_eq!(diff["truncated"], true, "{diff}");
    let patch = diff["patch"].as_str().unwrap();
    assert!(!patch.is_empty() && patch.len() <= 200, "{}", patch.len());
    assert!(patch.ends_with('\n'), "cut at a line's end: {patch:?}");
    assert_eq!(
        diff["files"].as_array().unwrap().len(),
        3,
        "files stay whole"
    );
    assert_eq!(diff["additions"], 4);
    let text = env
        .command(&["diff", "capped-otter"])
        .env("AGENTFLEET__API__DIFF_MAX_BYTES", "200")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("the patch was cut"), "{text}");

    // A run that ended with nothing to push (it wrote only where commits never look): an
    // empty diff from its base.
    let idle = env.spawn(
        &["--name", "idle-otter"],
        "look only\n#file .agentfleet/output/note.txt",
    );
    let idle = env.wait_final(idle.id, Duration::from_secs(60)).await;
    assert_status(&idle, AgentStatus::Completed);
    assert!(
        idle.base_commit.is_some() && idle.pushed_commit.is_none(),
        "{idle:?}"
    );
    let empty = api.get_json("/v1/agents/idle-otter/diff").await;
    assert_eq!(empty["files"], serde_json::json!([]), "{empty}");
    assert_eq!(
        (empty["patch"].as_str(), empty["truncated"].as_bool()),
        (Some(""), Some(false))
    );
    assert_eq!(empty["pushed_commit"], Value::Null);

    // An unknown agent, a bad query value.
    let resp = api
        .get("/v1/agents/no-such-otter/diff")
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_of(resp).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::NOT_FOUND, "not_found")
    );
    let resp = api
        .get("/v1/agents/capped-otter/diff?stat=maybe")
        .send()
        .await
        .unwrap();
    let (status, code, message) = error_of(resp).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );
    assert!(message.contains("stat"), "{message}");
    let out = env.cli(&["diff", "no-such-otter"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no-such-otter"), "{stderr}");
}
