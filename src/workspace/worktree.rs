//! Creating an agent's checkout: a repository of its own on a fresh branch from the remote's
//! base branch (layout in `layout.rs`), made again cleanly when a killed attempt left half
//! of one, and left untouched when a redelivered job finds it complete.

use std::fs;
use std::path::PathBuf;

use git2::ErrorCode;

use super::agent_repo::read_record;
use super::layout::{check_out, write_agent_repo, write_publish_repo, write_workdir};
use super::mirror::{open_mirror, origin_for_display};
use super::{
    AgentPaths, Workspace, WorkspaceError, check_agent_name, check_branch, check_project_key,
    io_error,
};

impl Workspace {
    /// Create agent `name`'s repository and checkout (`root/agents/<name>/{repo,workdir}`,
    /// plus the worker's `publish.git`) on a new branch `branch`, starting at the remote's
    /// `base_branch` as of the last [`sync_mirror`](Self::sync_mirror). Returns the workdir.
    ///
    /// Redelivery of the same job is expected: if this agent's layout is complete on
    /// `branch`, its workdir is returned and nothing is touched. What an interrupted
    /// attempt left is removed and made again; a workdir with files but no layout made
    /// here is refused ([`WorkspaceError::WorkdirOccupied`]).
    #[tracing::instrument(skip(self))]
    pub fn create_worktree(
        &self,
        project_key: &str,
        name: &str,
        branch: &str,
        base_branch: &str,
    ) -> Result<PathBuf, WorkspaceError> {
        check_project_key(project_key)?;
        check_agent_name(name)?;
        check_branch("branch", branch)?;
        check_branch("base branch", base_branch)?;

        let mirror = self.mirror_path(project_key);
        if !mirror.exists() {
            return Err(WorkspaceError::MirrorMissing {
                project_key: project_key.to_owned(),
                path: mirror,
            });
        }
        let paths = self.agent_paths(name);
        if complete_layout(name, &paths, branch)? {
            tracing::debug!(workdir = %paths.workdir.display(), "checkout already exists");
            return Ok(paths.workdir);
        }

        let repo = open_mirror(project_key, &mirror)?;
        let wt_error = |e: git2::Error| WorkspaceError::Worktree {
            agent: name.to_owned(),
            path: paths.workdir.clone(),
            detail: e.message().to_owned(),
        };
        let base = match repo.find_reference(&format!("refs/remotes/origin/{base_branch}")) {
            Ok(reference) => reference.peel_to_commit().map_err(wt_error)?.id(),
            Err(e) if e.code() == ErrorCode::NotFound => {
                return Err(WorkspaceError::BaseBranchMissing {
                    branch: base_branch.to_owned(),
                    remote: origin_for_display(&repo),
                });
            }
            Err(e) => return Err(wt_error(e)),
        };
        drop(repo);
        let mirror_objects = mirror
            .canonicalize()
            .map_err(io_error("resolve", &mirror))?
            .join("objects");

        clear_leftovers(project_key, name, &paths)?;
        fs::create_dir_all(&paths.dir).map_err(io_error("create directory", &paths.dir))?;
        write_agent_repo(&paths, branch, base, &mirror_objects)?;
        write_workdir(&paths)?;
        check_out(name, &paths, &mirror_objects, base)?;
        write_publish_repo(&paths, branch, base, &mirror_objects)?;
        tracing::info!(workdir = %paths.workdir.display(), base = %base, "created checkout");
        Ok(paths.workdir)
    }
}

/// Whether agent `name`'s layout was completed (it has a `publish.git`) on `branch`.
///
/// One on another branch, or whose workdir has gone, is an error rather than something to
/// replace: the agent's repository may hold its commits.
fn complete_layout(name: &str, paths: &AgentPaths, branch: &str) -> Result<bool, WorkspaceError> {
    if fs::symlink_metadata(&paths.publish).is_err() {
        return Ok(false);
    }
    let record = read_record(name, paths)?;
    let mismatch = |found: String| WorkspaceError::WorktreeMismatch {
        agent: name.to_owned(),
        path: paths.workdir.clone(),
        expected: branch.to_owned(),
        found,
    };
    if record.branch != branch {
        return Err(mismatch(format!("it is on branch '{}'", record.branch)));
    }
    if !paths.workdir.is_dir() || !paths.repo.is_dir() {
        return Err(mismatch(
            "its workdir or repository is gone; remove the agent to start it again".into(),
        ));
    }
    Ok(true)
}

/// Removes what an interrupted creation left (no `publish.git` yet, so the agent never
/// ran): its repository, a staging `publish.git`, and the workdir it was checking out. A
/// workdir with files but no repository was not made here and is not ours to delete.
fn clear_leftovers(
    project_key: &str,
    name: &str,
    paths: &AgentPaths,
) -> Result<(), WorkspaceError> {
    let ours = fs::symlink_metadata(&paths.repo).is_ok();
    if fs::symlink_metadata(&paths.workdir).is_ok() {
        let empty = fs::read_dir(&paths.workdir)
            .map(|mut entries| entries.next().is_none())
            .unwrap_or(false);
        if !ours && !empty {
            return Err(WorkspaceError::WorkdirOccupied {
                project_key: project_key.to_owned(),
                agent: name.to_owned(),
                path: paths.workdir.clone(),
            });
        }
        remove(&paths.workdir)?;
    }
    if ours {
        remove(&paths.repo)?;
        tracing::warn!(
            agent = name,
            "removed the leftovers of an interrupted checkout"
        );
    }
    remove(&paths.dir.join(".publish.git.partial"))
}

/// Removes a folder (or whatever is at `path`) without following symlinks.
fn remove(path: &std::path::Path) -> Result<(), WorkspaceError> {
    match fs::symlink_metadata(path) {
        Err(_) => Ok(()),
        Ok(meta) if meta.is_dir() => {
            fs::remove_dir_all(path).map_err(io_error("remove leftover", path))
        }
        Ok(_) => fs::remove_file(path).map_err(io_error("remove leftover", path)),
    }
}
