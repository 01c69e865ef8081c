//! Creating agent worktrees and committing what agents leave in them.

use super::*;

#[test]
fn create_worktree_checks_out_the_base_on_a_new_agent_branch() {
    let upstream = Upstream::new();
    let (root, _ws, workdir) = workspace_with_agent(&upstream);

    assert_eq!(workdir, root.path().join("agents/x/workdir"));
    assert_eq!(
        fs::read_to_string(workdir.join("README.md")).unwrap(),
        "# demo\n"
    );
    let repo = Repository::open(&workdir).unwrap();
    let head = repo.head().unwrap();
    assert_eq!(head.name().ok(), Some("refs/heads/agent/x"));
    assert_eq!(
        head.target(),
        Some(tip(&upstream.remote, "refs/heads/main"))
    );
}

#[test]
fn create_worktree_redelivery_returns_the_same_worktree_untouched() {
    let upstream = Upstream::new();
    let (_root, ws, workdir) = workspace_with_agent(&upstream);
    fs::write(workdir.join("in-progress.txt"), "half done\n").unwrap();

    let again = ws.create_worktree(KEY, "x", "agent/x", "main").unwrap();
    assert_eq!(again, workdir);
    assert!(workdir.join("in-progress.txt").exists());
}

#[test]
fn create_worktree_on_another_branch_for_the_same_agent_is_refused() {
    let upstream = Upstream::new();
    let (_root, ws, _workdir) = workspace_with_agent(&upstream);
    let err = ws
        .create_worktree(KEY, "x", "agent/other", "main")
        .unwrap_err();
    assert!(
        matches!(err, WorkspaceError::WorktreeMismatch { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("agent/x"), "{err}");
}

#[test]
fn create_worktree_recreates_a_worktree_whose_directory_vanished() {
    let upstream = Upstream::new();
    let (root, ws, workdir) = workspace_with_agent(&upstream);
    fs::remove_dir_all(root.path().join("agents/x")).unwrap();

    let again = ws.create_worktree(KEY, "x", "agent/x", "main").unwrap();
    assert_eq!(again, workdir);
    assert!(workdir.join("README.md").exists());
}

#[test]
fn create_worktree_refuses_an_orphaned_branch_with_its_own_commits() {
    let upstream = Upstream::new();
    let (root, ws, workdir) = workspace_with_agent(&upstream);
    fs::write(workdir.join("work.txt"), "done\n").unwrap();
    ws.commit_all(&workdir, "work").unwrap().unwrap();
    fs::remove_dir_all(root.path().join("agents/x")).unwrap();

    let err = ws.create_worktree(KEY, "x", "agent/x", "main").unwrap_err();
    assert!(matches!(err, WorkspaceError::BranchExists { .. }), "{err}");
}

#[test]
fn create_worktree_with_unknown_base_branch_names_it() {
    let upstream = Upstream::new();
    let root = TempDir::new().unwrap();
    let ws = Workspace::new(root.path());
    ws.sync_mirror(KEY, upstream.remote.to_str().unwrap())
        .unwrap();

    let err = ws
        .create_worktree(KEY, "x", "agent/x", "develop")
        .unwrap_err();
    assert!(
        matches!(err, WorkspaceError::BaseBranchMissing { .. }),
        "{err}"
    );
    let message = err.to_string();
    assert!(message.contains("'develop'"), "{message}");
    assert!(message.contains("remote.git"), "{message}");
    assert!(!root.path().join("agents/x/workdir").exists());
}

#[test]
fn create_worktree_before_sync_says_to_sync_first() {
    let root = TempDir::new().unwrap();
    let ws = Workspace::new(root.path());
    let err = ws.create_worktree(KEY, "x", "agent/x", "main").unwrap_err();
    assert!(matches!(err, WorkspaceError::MirrorMissing { .. }), "{err}");
}

#[test]
fn commit_all_commits_uncommitted_work_once() {
    let upstream = Upstream::new();
    let (_root, ws, workdir) = workspace_with_agent(&upstream);
    fs::write(workdir.join("feature.rs"), "fn main() {}\n").unwrap();

    let id = ws.commit_all(&workdir, "agent work").unwrap().unwrap();
    let repo = Repository::open(&workdir).unwrap();
    let head = repo.head().unwrap();
    assert_eq!(head.name().ok(), Some("refs/heads/agent/x"));
    let commit = head.peel_to_commit().unwrap();
    assert_eq!(commit.id().to_string(), id);
    assert_eq!(commit.message().ok(), Some("agent work"));
    assert_eq!(commit.author().name().ok(), Some("agentfleet"));
    assert_eq!(
        commit.committer().email().ok(),
        Some("agentfleet@localhost")
    );
    assert!(head_tree_paths(&workdir).contains(&"feature.rs".to_owned()));

    assert_eq!(ws.commit_all(&workdir, "again").unwrap(), None);
}

#[test]
fn commit_all_accepts_work_the_agent_already_committed() {
    let upstream = Upstream::new();
    let (_root, ws, workdir) = workspace_with_agent(&upstream);
    let repo = Repository::open(&workdir).unwrap();
    fs::write(workdir.join("a.txt"), "a\n").unwrap();
    commit_everything(&repo, "agent's own commit");

    assert_eq!(ws.commit_all(&workdir, "leftovers").unwrap(), None);

    fs::write(workdir.join("b.txt"), "b\n").unwrap();
    let id = ws.commit_all(&workdir, "leftovers").unwrap().unwrap();
    let commit = repo.find_commit(git2::Oid::from_str(&id).unwrap()).unwrap();
    assert_eq!(
        commit.parent(0).unwrap().message().ok(),
        Some("agent's own commit")
    );
}

#[test]
fn commit_all_records_deletions_and_honours_ignores() {
    let upstream = Upstream::new();
    let (_root, ws, workdir) = workspace_with_agent(&upstream);
    fs::remove_file(workdir.join("README.md")).unwrap();
    fs::create_dir_all(workdir.join(".agentfleet/input")).unwrap();
    fs::write(workdir.join(".agentfleet/input/prompt.md"), "secret task\n").unwrap();
    fs::write(workdir.join(".gitignore"), "*.log\n").unwrap();
    fs::write(workdir.join("debug.log"), "noise\n").unwrap();
    fs::write(workdir.join("kept.txt"), "kept\n").unwrap();

    ws.commit_all(&workdir, "work").unwrap().unwrap();
    let paths = head_tree_paths(&workdir);
    assert!(!paths.contains(&"README.md".to_owned()), "{paths:?}");
    assert!(paths.contains(&"kept.txt".to_owned()), "{paths:?}");
    assert!(paths.contains(&".gitignore".to_owned()), "{paths:?}");
    assert!(!paths.contains(&"debug.log".to_owned()), "{paths:?}");
    assert!(
        !paths.iter().any(|p| p.starts_with(".agentfleet")),
        "{paths:?}"
    );

    // Only ignored files remain changed: nothing to commit.
    fs::write(workdir.join(".agentfleet/output.txt"), "more\n").unwrap();
    assert_eq!(ws.commit_all(&workdir, "noop").unwrap(), None);
}

#[test]
fn commit_all_outside_a_repository_is_a_clear_error() {
    let dir = TempDir::new().unwrap();
    let ws = Workspace::new(dir.path());
    let err = ws.commit_all(dir.path(), "x").unwrap_err();
    assert!(matches!(err, WorkspaceError::NotAWorktree { .. }), "{err}");
}
