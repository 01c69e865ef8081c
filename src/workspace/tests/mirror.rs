//! Cloning, fetching and pushing through the project mirror.

use super::*;

#[test]
fn sync_mirror_clones_once_then_fetches_new_upstream_commits() {
    let upstream = Upstream::new();
    let root = TempDir::new().unwrap();
    let ws = Workspace::new(root.path());

    let mirror = ws
        .sync_mirror(KEY, upstream.remote.to_str().unwrap())
        .unwrap();
    assert_eq!(mirror, root.path().join("mirrors/demo.git"));
    let first = tip(&upstream.remote, "refs/heads/main");
    assert_eq!(tip(&mirror, "refs/remotes/origin/main"), first);

    let second = upstream.commit("CHANGELOG.md", "v2\n");
    let again = ws
        .sync_mirror(KEY, upstream.remote.to_str().unwrap())
        .unwrap();
    assert_eq!(again, mirror);
    assert_eq!(tip(&mirror, "refs/remotes/origin/main"), second);

    let exclude = fs::read_to_string(mirror.join("info/exclude")).unwrap();
    assert_eq!(exclude.matches(".agentfleet/").count(), 1, "{exclude}");
}

#[test]
fn sync_mirror_branch_fetches_only_that_branch_and_drops_it_when_deleted() {
    let upstream = Upstream::new();
    let root = TempDir::new().unwrap();
    let ws = Workspace::new(root.path());
    let remote = upstream.remote.to_str().unwrap();
    let mirror = ws.sync_mirror_branch(KEY, remote, "main").unwrap();

    // A new commit on main and two new upstream branches: only the one asked for comes.
    let newer = upstream.commit("NEWS.md", "news\n");
    let upstream_repo = Repository::open_bare(&upstream.remote).unwrap();
    let head = upstream_repo.find_commit(newer).unwrap();
    upstream_repo
        .branch("agent/elsewhere", &head, false)
        .unwrap();
    upstream_repo.branch("release", &head, false).unwrap();
    ws.sync_mirror_branch(KEY, remote, "main").unwrap();
    let mirror_repo = Repository::open_bare(&mirror).unwrap();
    let has = |name: &str| mirror_repo.find_reference(name).is_ok();
    assert_eq!(tip(&mirror, "refs/remotes/origin/main"), newer);
    assert!(!has("refs/remotes/origin/agent/elsewhere"));
    assert!(!has("refs/remotes/origin/release"));
    ws.sync_mirror_branch(KEY, remote, "release").unwrap();
    assert!(has("refs/remotes/origin/release"));
    ws.create_worktree(KEY, "x", "agent/x", "release").unwrap();

    // Deleted upstream: our copy goes too, and a new worktree names the missing base.
    upstream_repo
        .find_branch("release", git2::BranchType::Local)
        .unwrap()
        .delete()
        .unwrap();
    ws.sync_mirror_branch(KEY, remote, "release").unwrap();
    assert!(!has("refs/remotes/origin/release"));
    assert!(matches!(
        ws.create_worktree(KEY, "y", "agent/y", "release"),
        Err(WorkspaceError::BaseBranchMissing { .. })
    ));
    assert!(ws.sync_mirror_branch(KEY, remote, "bad..name").is_err());
}

#[test]
fn sync_mirror_keeps_local_agent_branches() {
    let upstream = Upstream::new();
    let (_root, ws, workdir) = workspace_with_agent(&upstream);
    fs::write(workdir.join("work.txt"), "done\n").unwrap();
    let commit = ws.commit_all(&workdir, "work").unwrap().unwrap();

    upstream.commit("other.txt", "upstream moved on\n");
    let mirror = ws
        .sync_mirror(KEY, upstream.remote.to_str().unwrap())
        .unwrap();
    assert_eq!(tip(&mirror, "refs/heads/agent/x").to_string(), commit);
}

#[test]
fn sync_mirror_error_hides_credentials_and_leaves_no_mirror() {
    let root = TempDir::new().unwrap();
    let ws = Workspace::new(root.path());
    let err = ws
        .sync_mirror(KEY, "nosuchproto://bob:s3cret@example.invalid/repo.git")
        .unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, WorkspaceError::Fetch { .. }), "{message}");
    assert!(!message.contains("s3cret"), "{message}");
    assert!(!message.contains("bob"), "{message}");
    assert!(message.contains("example.invalid"), "{message}");
    assert!(!root.path().join("mirrors/demo.git").exists());
}

fn push_puts_the_agent_branch_on_the_remote(remote_spec: impl Fn(&Upstream) -> String) {
    let upstream = Upstream::new();
    let root = TempDir::new().unwrap();
    let ws = Workspace::new(root.path());
    ws.sync_mirror(KEY, &remote_spec(&upstream)).unwrap();
    let workdir = ws.create_worktree(KEY, "x", "agent/x", "main").unwrap();
    fs::write(workdir.join("result.txt"), "v1\n").unwrap();
    ws.commit_all(&workdir, "v1").unwrap().unwrap();

    ws.push_branch(KEY, "agent/x").unwrap();
    assert_eq!(
        upstream.remote_file("agent/x", "result.txt").as_deref(),
        Some("v1\n")
    );
    assert_eq!(
        upstream.remote_file("agent/x", "README.md").as_deref(),
        Some("# demo\n")
    );

    // A later push of the same branch updates it.
    fs::write(workdir.join("result.txt"), "v2\n").unwrap();
    ws.commit_all(&workdir, "v2").unwrap().unwrap();
    ws.push_branch(KEY, "agent/x").unwrap();
    assert_eq!(
        upstream.remote_file("agent/x", "result.txt").as_deref(),
        Some("v2\n")
    );
}

#[test]
fn push_branch_to_a_remote_given_as_a_path() {
    push_puts_the_agent_branch_on_the_remote(|u| u.remote.to_str().unwrap().to_owned());
}

#[test]
fn push_branch_to_a_remote_given_as_a_file_url() {
    push_puts_the_agent_branch_on_the_remote(Upstream::file_url);
}

#[test]
fn push_branch_force_updates_a_diverged_remote_branch() {
    let upstream = Upstream::new();
    let (_root, ws, workdir) = workspace_with_agent(&upstream);
    fs::write(workdir.join("result.txt"), "ours\n").unwrap();
    ws.commit_all(&workdir, "ours").unwrap().unwrap();
    // The remote already has an agent/x that is not an ancestor of ours (an earlier run).
    upstream.commit("theirs.txt", "theirs\n");
    let remote = Repository::open_bare(&upstream.remote).unwrap();
    let main = remote.refname_to_id("refs/heads/main").unwrap();
    remote
        .reference("refs/heads/agent/x", main, true, "diverge")
        .unwrap();

    ws.push_branch(KEY, "agent/x").unwrap();
    assert_eq!(
        upstream.remote_file("agent/x", "result.txt").as_deref(),
        Some("ours\n")
    );
    assert_eq!(upstream.remote_file("agent/x", "theirs.txt"), None);
}

#[test]
fn push_branch_reports_a_ref_the_remote_refused() {
    let upstream = Upstream::new();
    let (_root, ws, _workdir) = workspace_with_agent(&upstream);
    // A held ref lock makes the remote refuse this one ref while accepting the pack.
    let locks = upstream.remote.join("refs/heads/agent");
    fs::create_dir_all(&locks).unwrap();
    fs::write(locks.join("x.lock"), "").unwrap();

    let err = ws.push_branch(KEY, "agent/x").unwrap_err();
    assert!(matches!(err, WorkspaceError::PushRejected { .. }), "{err}");
    assert!(err.to_string().contains("agent/x"), "{err}");
    assert_eq!(upstream.remote_file("agent/x", "README.md"), None);
}

#[test]
fn push_branch_of_an_unknown_branch_names_it() {
    let upstream = Upstream::new();
    let (_root, ws, _workdir) = workspace_with_agent(&upstream);
    let err = ws.push_branch(KEY, "agent/nobody").unwrap_err();
    assert!(matches!(err, WorkspaceError::BranchMissing { .. }), "{err}");
    assert!(err.to_string().contains("agent/nobody"), "{err}");
}
