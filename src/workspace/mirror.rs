//! The per-project bare mirror: created once from the project's remote and refreshed before
//! each agent starts. It is written only by fetching from the remote: agents borrow its
//! objects read-only (through their repositories' alternates) and their branches are
//! pushed from elsewhere (`publish.rs`), so no agent object or ref ever lands here.
//!
//! Workers on one node may share the workspace root, and a worker can be killed midway
//! through a fetch, leaving git's `*.lock` files behind; libgit2 then refuses every later
//! update of those refs, so every spawn of the project on the node would fail. A sync
//! therefore holds an exclusive `flock` on `mirrors/.<project_key>.lock` (released by the
//! kernel when its holder dies), and while holding it removes any git lock file left in the
//! mirror: no living writer can own one.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use git2::{AutotagOption, FetchOptions, FetchPrune, Repository};
use nix::fcntl::{Flock, FlockArg};

use super::error::{redact_url, scrub};
use super::layout::EXCLUDE_LINE;
use super::{Workspace, WorkspaceError, check_branch, check_project_key, io_error};

/// The remote's branches land here rather than in `refs/heads/*` (where older versions kept
/// agent branches); pruning is then confined to `refs/remotes/origin/*`.
const FETCH_REFSPEC: &str = "+refs/heads/*:refs/remotes/origin/*";

impl Workspace {
    /// Clone `remote` as the project's bare mirror if it is absent, otherwise fetch its
    /// branches; returns the mirror's path.
    ///
    /// `remote` is a local path, a `file://` URL or any URL libgit2 can fetch. The remote's
    /// branches are kept as `refs/remotes/origin/*`. Also makes sure `.agentfleet/` is in
    /// the mirror's `info/exclude` (each agent's repository has its own as well).
    pub fn sync_mirror(&self, project_key: &str, remote: &str) -> Result<PathBuf, WorkspaceError> {
        self.sync(project_key, remote, None)
    }

    /// As [`sync_mirror`](Self::sync_mirror), but an existing mirror fetches only `branch`:
    /// what a new agent starts from. A remote that every agent pushes its branch to has
    /// many branches, and fetching them all made each start slower than the last.
    pub fn sync_mirror_branch(
        &self,
        project_key: &str,
        remote: &str,
        branch: &str,
    ) -> Result<PathBuf, WorkspaceError> {
        check_branch("base branch", branch)?;
        self.sync(project_key, remote, Some(branch))
    }

    #[tracing::instrument(skip(self, remote), fields(remote = %redact_url(remote)))]
    fn sync(
        &self,
        project_key: &str,
        remote: &str,
        branch: Option<&str>,
    ) -> Result<PathBuf, WorkspaceError> {
        check_project_key(project_key)?;
        let path = self.mirror_path(project_key);
        let remote = absolute_if_local(remote);
        let _held = self.lock_mirror(project_key)?;
        remove_stale_locks(&path)?;

        if !path.exists() {
            self.create_mirror(project_key, &remote, &path)?;
            tracing::info!(mirror = %path.display(), "cloned project mirror");
        } else {
            let repo = open_mirror(project_key, &path)?;
            // The project's remote may have moved (or its token rotated) since the clone.
            let current = repo
                .find_remote("origin")
                .ok()
                .and_then(|r| r.url().map(str::to_owned).ok());
            if current.as_deref() != Some(remote.as_str()) {
                let result = match current {
                    Some(_) => repo.remote_set_url("origin", &remote),
                    None => repo
                        .remote_with_fetch("origin", &remote, FETCH_REFSPEC)
                        .map(drop),
                };
                result.map_err(|e| mirror_error(project_key, &path, &e, &remote))?;
            }
            match branch {
                Some(branch) => {
                    let refspec = format!("+refs/heads/{branch}:refs/remotes/origin/{branch}");
                    // Pruning drops our copy of the branch if the remote deleted it, so the
                    // checkout reports it missing instead of starting from a stale base.
                    fetch_refspec(&repo, project_key, &remote, &refspec, FetchPrune::On)?
                }
                None => fetch(&repo, project_key, &remote)?,
            }
            tracing::debug!(mirror = %path.display(), "fetched project mirror");
        }
        ensure_excluded(&path)?;
        Ok(path)
    }

    /// Builds the mirror beside its final place and renames it in, so a mirror directory
    /// that exists is always a complete clone, even after a crash mid-fetch.
    fn create_mirror(
        &self,
        project_key: &str,
        remote: &str,
        path: &Path,
    ) -> Result<(), WorkspaceError> {
        static ATTEMPT: AtomicU64 = AtomicU64::new(0);
        let parent = path.parent().unwrap_or(&self.root);
        fs::create_dir_all(parent).map_err(io_error("create directory", parent))?;
        let staging = parent.join(format!(
            ".{project_key}.git.partial-{}-{}",
            std::process::id(),
            ATTEMPT.fetch_add(1, Ordering::Relaxed)
        ));
        let result = (|| {
            let repo = Repository::init_bare(&staging)
                .map_err(|e| mirror_error(project_key, &staging, &e, remote))?;
            repo.remote_with_fetch("origin", remote, FETCH_REFSPEC)
                .map_err(|e| mirror_error(project_key, &staging, &e, remote))?;
            fetch(&repo, project_key, remote)?;
            drop(repo);
            fs::rename(&staging, path).map_err(io_error("move the new mirror to", path))
        })();
        if result.is_err() {
            // Best effort: a leftover staging directory is only wasted space.
            let _ = fs::remove_dir_all(&staging);
            // Another process may have won the race to create it; use theirs.
            if path.join("HEAD").exists() {
                let repo = open_mirror(project_key, path)?;
                return fetch(&repo, project_key, remote);
            }
        }
        result
    }
}

impl Workspace {
    /// Waits for and takes the node-wide lock on `project_key`'s mirror.
    fn lock_mirror(&self, project_key: &str) -> Result<Flock<fs::File>, WorkspaceError> {
        let dir = self.root.join("mirrors");
        fs::create_dir_all(&dir).map_err(io_error("create directory", &dir))?;
        let path = dir.join(format!(".{project_key}.lock"));
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_error("open", &path))?;
        Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| io_error("lock", &path)(std::io::Error::from(errno)))
    }
}

/// Removes git lock files (`*.lock`) from the mirror's top level and `refs/`: the leftovers
/// of a writer that died (the caller holds the mirror's lock, so none is alive).
fn remove_stale_locks(mirror: &Path) -> Result<(), WorkspaceError> {
    fn walk(dir: &Path, recurse: bool) -> Result<(), WorkspaceError> {
        let Ok(entries) = fs::read_dir(dir) else {
            return Ok(());
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() && recurse {
                walk(&path, true)?;
            } else if !kind.is_dir() && path.extension().is_some_and(|e| e == "lock") {
                fs::remove_file(&path).map_err(io_error("remove stale lock", &path))?;
                tracing::warn!(lock = %path.display(), "removed a lock left by an interrupted git update");
            }
        }
        Ok(())
    }
    walk(mirror, false)?;
    walk(&mirror.join("refs"), true)
}

pub(super) fn open_mirror(project_key: &str, path: &Path) -> Result<Repository, WorkspaceError> {
    Repository::open_bare(path).map_err(|e| mirror_error(project_key, path, &e, ""))
}

/// The URL of the mirror's `origin`, credentials removed, for messages.
pub(super) fn origin_for_display(repo: &Repository) -> String {
    repo.find_remote("origin")
        .ok()
        .and_then(|r| r.url().ok().map(redact_url))
        .unwrap_or_else(|| "origin".to_owned())
}

fn fetch(repo: &Repository, project_key: &str, remote: &str) -> Result<(), WorkspaceError> {
    fetch_refspec(repo, project_key, remote, FETCH_REFSPEC, FetchPrune::On)
}

fn fetch_refspec(
    repo: &Repository,
    project_key: &str,
    remote: &str,
    refspec: &str,
    prune: FetchPrune,
) -> Result<(), WorkspaceError> {
    let fetch_error = |e: git2::Error| WorkspaceError::Fetch {
        project_key: project_key.to_owned(),
        remote: redact_url(remote),
        detail: scrub(e.message(), remote),
    };
    let mut origin = repo.find_remote("origin").map_err(fetch_error)?;
    let mut options = FetchOptions::new();
    // Pruning only touches refs/remotes/origin/*, so a branch deleted upstream stops being
    // offered as a base while agent branches stay.
    options
        .prune(prune)
        .download_tags(AutotagOption::None)
        .update_fetchhead(false);
    origin
        .fetch(&[refspec], Some(&mut options), None)
        .map_err(fetch_error)
}

/// Adds `.agentfleet/` to `info/exclude` unless it is already there.
fn ensure_excluded(mirror: &Path) -> Result<(), WorkspaceError> {
    let info = mirror.join("info");
    let exclude = info.join("exclude");
    let existing = match fs::read_to_string(&exclude) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io_error("read", &exclude)(e)),
    };
    if existing.lines().any(|line| line.trim() == EXCLUDE_LINE) {
        return Ok(());
    }
    fs::create_dir_all(&info).map_err(io_error("create directory", &info))?;
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&exclude)
        .map_err(io_error("open", &exclude))?;
    let separator = if existing.is_empty() || existing.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    writeln!(file, "{separator}{EXCLUDE_LINE}").map_err(io_error("write", &exclude))
}

/// A relative local path is stored as absolute in the mirror's config, so fetches from the
/// mirror later do not depend on the process's working directory.
fn absolute_if_local(remote: &str) -> String {
    let path = Path::new(remote);
    if !remote.contains("://")
        && path.is_relative()
        && path.exists()
        && let Ok(absolute) = std::path::absolute(path)
    {
        return absolute.to_string_lossy().into_owned();
    }
    remote.to_owned()
}

fn mirror_error(project_key: &str, path: &Path, e: &git2::Error, url: &str) -> WorkspaceError {
    WorkspaceError::Mirror {
        project_key: project_key.to_owned(),
        path: path.to_path_buf(),
        detail: scrub(e.message(), url),
    }
}
