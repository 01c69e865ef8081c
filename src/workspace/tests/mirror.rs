//! Cloning and fetching the project mirror.

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
fn sync_mirror_leaves_agent_branches_alone() {
    let upstream = Upstream::new();
    let (root, ws, workdir) = workspace_with_agent(&upstream);
    fs::write(workdir.join("work.txt"), "done\n").unwrap();
    let commit = ws.commit_all("x", "work").unwrap().unwrap();

    upstream.commit("other.txt", "upstream moved on\n");
    let mirror = ws
        .sync_mirror(KEY, upstream.remote.to_str().unwrap())
        .unwrap();
    let agent = agent_repo(root.path(), "x");
    assert_eq!(
        agent
            .refname_to_id("refs/heads/agent/x")
            .unwrap()
            .to_string(),
        commit
    );
    let mirror = Repository::open_bare(&mirror).unwrap();
    assert!(mirror.find_reference("refs/heads/agent/x").is_err());
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

/// A worker killed in the middle of a fetch leaves git's lock files in the mirror; the next
/// sync on the node (another worker, or the restarted one) must not fail on them.
#[test]
fn sync_mirror_removes_the_locks_a_killed_fetch_left() {
    let upstream = Upstream::new();
    let root = TempDir::new().unwrap();
    let ws = Workspace::new(root.path());
    let url = upstream.remote.to_str().unwrap();
    let mirror = ws.sync_mirror(KEY, url).unwrap();
    for lock in [
        "refs/remotes/origin/main.lock",
        "packed-refs.lock",
        "config.lock",
    ] {
        fs::write(mirror.join(lock), "").unwrap();
    }
    let newer = upstream.commit("newer.txt", "newer\n");
    ws.sync_mirror_branch(KEY, url, "main").unwrap();
    assert_eq!(tip(&mirror, "refs/remotes/origin/main"), newer);
    let workdir = ws.create_worktree(KEY, "x", "agent/x", "main").unwrap();
    assert!(workdir.join("newer.txt").is_file());
}
