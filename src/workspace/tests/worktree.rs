//! Creating agents' repositories and checkouts, and committing what agents leave in them.

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

    let id = ws.commit_all("x", "agent work").unwrap().unwrap();
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

    assert_eq!(ws.commit_all("x", "again").unwrap(), None);
}

#[test]
fn commit_all_accepts_work_the_agent_already_committed() {
    let upstream = Upstream::new();
    let (_root, ws, workdir) = workspace_with_agent(&upstream);
    let repo = Repository::open(&workdir).unwrap();
    fs::write(workdir.join("a.txt"), "a\n").unwrap();
    commit_everything(&repo, "agent's own commit");

    assert_eq!(ws.commit_all("x", "leftovers").unwrap(), None);

    fs::write(workdir.join("b.txt"), "b\n").unwrap();
    let id = ws.commit_all("x", "leftovers").unwrap().unwrap();
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

    ws.commit_all("x", "work").unwrap().unwrap();
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
    assert_eq!(ws.commit_all("x", "noop").unwrap(), None);
}

#[test]
fn commit_all_of_an_agent_without_a_checkout_is_a_clear_error() {
    let dir = TempDir::new().unwrap();
    let ws = Workspace::new(dir.path());
    let err = ws.commit_all("nobody", "x").unwrap_err();
    assert!(matches!(err, WorkspaceError::AgentRepo { .. }), "{err}");
    assert!(err.to_string().contains("nobody"), "{err}");
}

/// The layout is written by hand: git itself and libgit2 must both see a complete, clean
/// checkout on the agent's branch, in which the agent can commit, and the mirror knows
/// nothing of it.
#[test]
fn create_worktree_is_a_clean_checkout_to_git_and_libgit2() {
    let upstream = Upstream::new();
    upstream.commit("src.txt", "line one\nline two\n");
    let (root, ws, workdir) = workspace_with_agent(&upstream);
    assert_eq!(git(&workdir, &["status", "--porcelain"]), "");
    assert_eq!(
        git(&workdir, &["rev-parse", "--abbrev-ref", "HEAD"]).trim(),
        "agent/x"
    );
    let repo = agent_repo(root.path(), "x");
    assert!(repo.statuses(None).unwrap().is_empty());
    assert_eq!(repo.head().unwrap().name().ok(), Some("refs/heads/agent/x"));

    let agent_dir = root.path().join("agents/x");
    let mirror = root.path().join(format!("mirrors/{KEY}.git"));
    let alternates = fs::read_to_string(agent_dir.join("repo/objects/info/alternates")).unwrap();
    assert_eq!(
        alternates,
        format!(
            "{}\n",
            mirror.canonicalize().unwrap().join("objects").display()
        )
    );
    let exclude = fs::read_to_string(agent_dir.join("repo/info/exclude")).unwrap();
    assert!(exclude.lines().any(|l| l == ".agentfleet/"), "{exclude}");
    assert!(agent_dir.join("publish.git/HEAD").is_file());
    assert!(!mirror.join("worktrees").exists());
    let mirror_repo = Repository::open_bare(&mirror).unwrap();
    assert!(mirror_repo.find_reference("refs/heads/agent/x").is_err());

    // The agent's own git works as usual.
    fs::write(workdir.join("src.txt"), "changed\n").unwrap();
    git(&workdir, &["commit", "-q", "-am", "agent edit"]);
    assert_eq!(git(&workdir, &["status", "--porcelain"]), "");
    assert_eq!(
        git(&workdir, &["log", "-1", "--format=%s"]).trim(),
        "agent edit"
    );

    // A second agent gets its own; removing one leaves the other intact.
    let other = ws.create_worktree(KEY, "y", "agent/y", "main").unwrap();
    assert_eq!(git(&other, &["status", "--porcelain"]), "");
    assert_eq!(
        fs::read_to_string(other.join("src.txt")).unwrap(),
        "line one\nline two\n"
    );
    ws.remove_agent("x", "agent/x").unwrap();
    assert_eq!(git(&other, &["status", "--porcelain"]), "");
}

/// A creation killed at any step leaves something that the next delivery removes and makes
/// again; a complete layout is never rebuilt.
#[test]
fn create_worktree_makes_again_what_an_interrupted_attempt_left() {
    let upstream = Upstream::new();
    let (root, ws, workdir) = workspace_with_agent(&upstream);
    let agent_dir = root.path().join("agents/x");
    let states: [(&str, &dyn Fn()); 6] = [
        ("only the agent folder", &|| {
            fs::remove_dir_all(&agent_dir).unwrap();
            fs::create_dir_all(&agent_dir).unwrap();
        }),
        ("a git dir without HEAD", &|| {
            fs::remove_dir_all(agent_dir.join("workdir")).unwrap();
            fs::remove_file(agent_dir.join("repo/HEAD")).unwrap();
        }),
        ("a git dir without the branch, an empty workdir", &|| {
            fs::remove_file(agent_dir.join("repo/refs/heads/agent/x")).unwrap();
            fs::remove_dir_all(agent_dir.join("workdir")).unwrap();
            fs::create_dir(agent_dir.join("workdir")).unwrap();
        }),
        ("a partial checkout without an index", &|| {
            fs::remove_file(agent_dir.join("repo/index")).unwrap();
            fs::remove_file(agent_dir.join("workdir/README.md")).unwrap();
        }),
        ("a checkout without publish.git", &|| {}),
        ("a half-written publish.git", &|| {
            fs::create_dir(agent_dir.join(".publish.git.partial")).unwrap();
        }),
    ];
    for (state, make) in states {
        fs::remove_dir_all(agent_dir.join("publish.git")).unwrap();
        make();
        let again = ws
            .create_worktree(KEY, "x", "agent/x", "main")
            .unwrap_or_else(|e| panic!("{state}: {e}"));
        assert_eq!(again, workdir, "{state}");
        assert_eq!(git(&workdir, &["status", "--porcelain"]), "", "{state}");
        assert_eq!(
            fs::read_to_string(workdir.join("README.md")).unwrap(),
            "# demo\n",
            "{state}"
        );
        assert!(agent_dir.join("publish.git/HEAD").exists(), "{state}");
        assert!(!agent_dir.join(".publish.git.partial").exists(), "{state}");
    }

    // Files in a workdir with no repository made here may be someone's work: refused.
    fs::remove_dir_all(&agent_dir).unwrap();
    fs::create_dir_all(&workdir).unwrap();
    fs::write(workdir.join("notes.txt"), "mine\n").unwrap();
    let err = ws.create_worktree(KEY, "x", "agent/x", "main").unwrap_err();
    assert!(
        matches!(err, WorkspaceError::WorkdirOccupied { .. }),
        "{err}"
    );
    assert!(workdir.join("notes.txt").exists());
}

/// Filters are skipped only when nothing could ask for one: a `.gitattributes` anywhere in
/// the tree turns them on, and its line-ending conversion is applied.
#[test]
fn create_worktree_applies_the_projects_attributes() {
    let upstream = Upstream::new();
    upstream.commit("notes.txt", "a\nb\n");
    let (_root, ws, plain) = workspace_with_agent(&upstream);
    assert_eq!(fs::read(plain.join("notes.txt")).unwrap(), b"a\nb\n");
    let head_tree = |dir: &Path| {
        let repo = Repository::open(dir).unwrap();
        let tree = repo.head().unwrap().peel_to_tree().unwrap().id();
        super::super::layout::has_attributes_file(&repo.find_tree(tree).unwrap())
    };
    assert!(!head_tree(&plain), "no .gitattributes in this tree");

    fs::create_dir_all(upstream.seed.join("docs")).unwrap();
    upstream.commit("docs/.gitattributes", "*.txt text eol=crlf\n");
    upstream.commit("docs/guide.txt", "one\ntwo\n");
    ws.sync_mirror(KEY, upstream.remote.to_str().unwrap())
        .unwrap();
    let filtered = ws.create_worktree(KEY, "z", "agent/z", "main").unwrap();
    assert_eq!(
        fs::read(filtered.join("docs/guide.txt")).unwrap(),
        b"one\r\ntwo\r\n",
        "the nested .gitattributes converts line endings"
    );
    assert!(head_tree(&filtered));
    assert_eq!(fs::read(filtered.join("notes.txt")).unwrap(), b"a\nb\n");
}
