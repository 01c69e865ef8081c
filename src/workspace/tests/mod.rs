//! Behaviour of [`Workspace`] against real git repositories in temporary directories: a
//! bare "remote" fed from a seed repository, as a project's hosting would be.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use git2::{Repository, RepositoryInitOptions, Signature};
use tempfile::TempDir;

use super::*;

mod attacks;
mod diff;
mod hostile_files;
mod mirror;
mod publish;
mod worktree;

const KEY: &str = "demo";

/// A bare remote with `main`, plus the normal repository its commits are pushed from.
struct Upstream {
    _dir: TempDir,
    seed: PathBuf,
    remote: PathBuf,
}

impl Upstream {
    fn new() -> Self {
        let dir = TempDir::new().unwrap();
        let seed = dir.path().join("seed");
        let remote = dir.path().join("remote.git");
        let mut opts = RepositoryInitOptions::new();
        opts.initial_head("main");
        Repository::init_opts(&seed, &opts).unwrap();
        opts.bare(true);
        Repository::init_opts(&remote, &opts).unwrap();
        let upstream = Self {
            _dir: dir,
            seed,
            remote,
        };
        upstream.commit("README.md", "# demo\n");
        upstream
    }

    fn file_url(&self) -> String {
        format!("file://{}", self.remote.display())
    }

    /// Commits `file` on the seed's `main` and pushes it to the remote; returns the commit.
    fn commit(&self, file: &str, content: &str) -> git2::Oid {
        let repo = Repository::open(&self.seed).unwrap();
        fs::write(self.seed.join(file), content).unwrap();
        let id = commit_everything(&repo, &format!("add {file}"));
        let mut origin = repo
            .remote_anonymous(self.remote.to_str().unwrap())
            .unwrap();
        origin
            .push(&["refs/heads/main:refs/heads/main"], None)
            .unwrap();
        id
    }

    /// The content of `file` on `branch` of the remote, if both exist.
    fn remote_file(&self, branch: &str, file: &str) -> Option<String> {
        let repo = Repository::open_bare(&self.remote).unwrap();
        let reference = repo.find_reference(&format!("refs/heads/{branch}")).ok()?;
        let tree = reference.peel_to_tree().unwrap();
        let entry = tree.get_path(Path::new(file)).ok()?;
        let blob = entry.to_object(&repo).unwrap().peel_to_blob().unwrap();
        Some(String::from_utf8(blob.content().to_vec()).unwrap())
    }
}

/// Stages all files of a normal repository and commits them on HEAD, as an agent would.
fn commit_everything(repo: &Repository, message: &str) -> git2::Oid {
    let mut index = repo.index().unwrap();
    index
        .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
        .unwrap();
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = Signature::now("someone", "someone@example.com").unwrap();
    let parent = repo.head().ok().map(|h| h.peel_to_commit().unwrap());
    let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
    repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
        .unwrap()
}

/// A workspace with the upstream mirrored and agent `x` on `agent/x`.
fn workspace_with_agent(upstream: &Upstream) -> (TempDir, Workspace, PathBuf) {
    let root = TempDir::new().unwrap();
    let ws = Workspace::new(root.path());
    ws.sync_mirror(KEY, upstream.remote.to_str().unwrap())
        .unwrap();
    let workdir = ws.create_worktree(KEY, "x", "agent/x", "main").unwrap();
    (root, ws, workdir)
}

/// Runs the git CLI in `dir`, as an agent would; panics unless it succeeds.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "agent")
        .env("GIT_AUTHOR_EMAIL", "agent@example.com")
        .env("GIT_COMMITTER_NAME", "agent")
        .env("GIT_COMMITTER_EMAIL", "agent@example.com")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// Agent `name`'s repository, opened by path as the worker does.
fn agent_repo(root: &Path, name: &str) -> Repository {
    let repo = Repository::open_bare(root.join("agents").join(name).join("repo")).unwrap();
    repo.set_workdir(&root.join("agents").join(name).join("workdir"), false)
        .unwrap();
    repo
}

/// Runs `f` on its own thread; panics if it does not return within 30 s (a hung worker).
fn within<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("the worker hung")
}

/// Two agents, `x` (the attacker) and `y` (the victim), on one mirror.
fn two_agents(upstream: &Upstream) -> (TempDir, Workspace, PathBuf, PathBuf) {
    let (root, ws, x) = workspace_with_agent(upstream);
    let y = ws.create_worktree(KEY, "y", "agent/y", "main").unwrap();
    (root, ws, x, y)
}

fn publish_x(ws: &Workspace, upstream: &Upstream) -> Result<Option<Published>, WorkspaceError> {
    ws.publish_branch(KEY, "x", "agent/x", upstream.remote.to_str().unwrap())
}

fn tip(repo_path: &Path, refname: &str) -> git2::Oid {
    let repo = Repository::open(repo_path).unwrap();
    repo.refname_to_id(refname).unwrap()
}

fn head_tree_paths(workdir: &Path) -> Vec<String> {
    let repo = Repository::open(workdir).unwrap();
    let tree = repo.head().unwrap().peel_to_tree().unwrap();
    let mut paths = Vec::new();
    tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
        paths.push(format!("{dir}{}", entry.name().unwrap()));
        git2::TreeWalkResult::Ok
    })
    .unwrap();
    paths
}

#[test]
fn names_that_could_escape_the_root_are_refused() {
    let root = TempDir::new().unwrap();
    let ws = Workspace::new(root.path());
    for (key, name) in [("../evil", "x"), ("demo", "../x"), ("", "x")] {
        let err = ws
            .create_worktree(key, name, "agent/x", "main")
            .unwrap_err();
        assert!(matches!(err, WorkspaceError::InvalidName { .. }), "{err}");
    }
    let err = ws.sync_mirror("a/b", "/nowhere").unwrap_err();
    assert!(matches!(err, WorkspaceError::InvalidName { .. }), "{err}");
    let err = ws
        .publish_branch(KEY, "x", "bad..branch", "/nowhere")
        .unwrap_err();
    assert!(matches!(err, WorkspaceError::InvalidName { .. }), "{err}");
}

#[test]
fn validate_name_rejects_unsafe_names() {
    let too_long = "a".repeat(65);
    for name in [
        "",
        "a/b",
        "..",
        "-x",
        "a..b",
        "x.lock",
        "has space",
        too_long.as_str(),
        ".hidden",
        "tab\t",
    ] {
        assert!(validate_name(name).is_err(), "{name:?} should be rejected");
    }
}

#[test]
fn validate_name_accepts_ordinary_names() {
    for name in ["brave-otter", "a_b.c-1", "x", &"a".repeat(64)] {
        assert_eq!(validate_name(name), Ok(()), "{name:?}");
    }
}
