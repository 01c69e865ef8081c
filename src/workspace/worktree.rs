//! An agent's worktree: created on a fresh branch from the remote's default branch, and
//! committed wholesale when the agent is done, whether or not it committed by itself.

use std::fs;
use std::path::{Path, PathBuf};

use git2::build::CheckoutBuilder;
use git2::{BranchType, ErrorCode, IndexAddOption, Oid, Reference, Repository, Signature};

use super::add::add_worktree;
use super::mirror::{open_mirror, origin_for_display};
use super::{Workspace, WorkspaceError, check_branch, check_project_key, io_error, validate_name};

const AUTHOR_NAME: &str = "agentfleet";
const AUTHOR_EMAIL: &str = "agentfleet@localhost";

impl Workspace {
    /// Create the worktree of agent `name` at `root/agents/<name>/workdir` on a new branch
    /// `branch`, starting at the remote's `base_branch` as of the last
    /// [`sync_mirror`](Self::sync_mirror).
    ///
    /// Redelivery of the same job is expected: if this agent's worktree already exists on
    /// `branch`, its path is returned and nothing is touched.
    #[tracing::instrument(skip(self))]
    pub fn create_worktree(
        &self,
        project_key: &str,
        name: &str,
        branch: &str,
        base_branch: &str,
    ) -> Result<PathBuf, WorkspaceError> {
        check_project_key(project_key)?;
        validate_name(name).map_err(|reason| WorkspaceError::InvalidName {
            what: "agent name",
            name: name.to_owned(),
            reason,
        })?;
        check_branch("branch", branch)?;
        check_branch("base branch", base_branch)?;

        let mirror = self.mirror_path(project_key);
        if !mirror.exists() {
            return Err(WorkspaceError::MirrorMissing {
                project_key: project_key.to_owned(),
                path: mirror,
            });
        }
        let repo = open_mirror(project_key, &mirror)?;
        let workdir = self.workdir_path(name);
        let wt_error = |e: git2::Error| WorkspaceError::Worktree {
            agent: name.to_owned(),
            path: workdir.clone(),
            detail: e.message().to_owned(),
        };

        if existing_worktree(&repo, name, branch, &workdir)? {
            tracing::debug!(workdir = %workdir.display(), "worktree already exists");
            return Ok(workdir);
        }

        let base = match repo.find_reference(&format!("refs/remotes/origin/{base_branch}")) {
            Ok(reference) => reference.peel_to_commit().map_err(wt_error)?,
            Err(e) if e.code() == ErrorCode::NotFound => {
                return Err(WorkspaceError::BaseBranchMissing {
                    branch: base_branch.to_owned(),
                    remote: origin_for_display(&repo),
                });
            }
            Err(e) => return Err(wt_error(e)),
        };
        let branch_ref = start_branch(&repo, project_key, branch, base_branch, base.id())?;

        clear_leftovers(&mirror, project_key, name, &workdir)?;
        let agent_dir = workdir.parent().unwrap_or(&self.root);
        fs::create_dir_all(agent_dir).map_err(io_error("create directory", agent_dir))?;
        let branch_name = branch_ref.name().unwrap_or_default().to_owned();
        let branch_name = branch_name.strip_prefix("refs/heads/").unwrap_or(branch);
        add_worktree(
            &repo,
            name,
            &workdir,
            branch_name,
            &base.tree().map_err(wt_error)?,
        )?;
        tracing::info!(workdir = %workdir.display(), base = %base.id(), "created worktree");
        Ok(workdir)
    }

    /// Stage everything in `workdir` (honouring `.gitignore` and the mirror's
    /// `info/exclude`) and, if that differs from `HEAD`, commit it on the checked-out branch
    /// as agentfleet. Returns the new commit's id, or `None` when there was nothing to commit
    /// (including when the agent already committed all of its work itself).
    #[tracing::instrument(skip(self, message))]
    pub fn commit_all(
        &self,
        workdir: &Path,
        message: &str,
    ) -> Result<Option<String>, WorkspaceError> {
        let commit_error = |e: git2::Error| WorkspaceError::Commit {
            path: workdir.to_path_buf(),
            detail: e.message().to_owned(),
        };
        let repo = Repository::open(workdir).map_err(|e| WorkspaceError::NotAWorktree {
            path: workdir.to_path_buf(),
            detail: e.message().to_owned(),
        })?;
        if repo.is_bare() {
            return Err(WorkspaceError::NotAWorktree {
                path: workdir.to_path_buf(),
                detail: "it is a bare repository".into(),
            });
        }

        let parent = match repo.head() {
            Ok(head) if !head.is_branch() => {
                return Err(WorkspaceError::DetachedHead {
                    path: workdir.to_path_buf(),
                });
            }
            Ok(head) => Some(head.peel_to_commit().map_err(commit_error)?),
            Err(e) if e.code() == ErrorCode::UnbornBranch => None,
            Err(e) => return Err(commit_error(e)),
        };

        let mut index = repo.index().map_err(commit_error)?;
        // add_all picks up new and modified files; update_all records deletions.
        index
            .add_all(["*"], IndexAddOption::DEFAULT, None)
            .map_err(commit_error)?;
        index.update_all(["*"], None).map_err(commit_error)?;
        index.write().map_err(commit_error)?;
        let tree_id = index.write_tree().map_err(commit_error)?;
        if parent.as_ref().map(|p| p.tree_id()) == Some(tree_id) {
            return Ok(None);
        }

        let tree = repo.find_tree(tree_id).map_err(commit_error)?;
        let signature = Signature::now(AUTHOR_NAME, AUTHOR_EMAIL).map_err(commit_error)?;
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        let id = repo
            .commit(
                Some("HEAD"),
                &signature,
                &signature,
                message,
                &tree,
                &parents,
            )
            .map_err(commit_error)?;
        tracing::info!(commit = %id, "committed agent changes");
        Ok(Some(id.to_string()))
    }
}

/// Whether agent `name` already has a usable worktree at `workdir` on `branch`.
///
/// A registration whose directory is gone is pruned so the worktree can be made again; one
/// elsewhere or on another branch is an error rather than something to silently replace.
fn existing_worktree(
    repo: &Repository,
    name: &str,
    branch: &str,
    workdir: &Path,
) -> Result<bool, WorkspaceError> {
    let wt_error = |e: git2::Error| WorkspaceError::Worktree {
        agent: name.to_owned(),
        path: workdir.to_path_buf(),
        detail: e.message().to_owned(),
    };
    let worktree = match repo.find_worktree(name) {
        Ok(worktree) => worktree,
        Err(e) if e.code() == ErrorCode::NotFound => return Ok(false),
        Err(e) => return Err(wt_error(e)),
    };
    if worktree.validate().is_err() {
        worktree.prune(None).map_err(wt_error)?;
        tracing::warn!(
            agent = name,
            "pruned a worktree whose directory had vanished"
        );
        return Ok(false);
    }

    let registered = worktree.path();
    if !same_path(registered, workdir) {
        return Err(WorkspaceError::WorktreeMismatch {
            agent: name.to_owned(),
            path: registered.to_path_buf(),
            expected: branch.to_owned(),
            found: format!("it is not at {}", workdir.display()),
        });
    }
    let checkout = Repository::open_from_worktree(&worktree).map_err(wt_error)?;
    let head = checkout.find_reference("HEAD").map_err(wt_error)?;
    let expected = format!("refs/heads/{branch}");
    let target = head.symbolic_target().map_err(wt_error)?;
    if target != Some(expected.as_str()) {
        let found = match target {
            Some(target) => format!(
                "it is on branch '{}'",
                target.strip_prefix("refs/heads/").unwrap_or(target)
            ),
            None => "its HEAD is detached".to_owned(),
        };
        return Err(WorkspaceError::WorktreeMismatch {
            agent: name.to_owned(),
            path: workdir.to_path_buf(),
            expected: branch.to_owned(),
            found,
        });
    }
    // libgit2 writes the index last when it adds a worktree; without one the checkout was
    // interrupted, and committing that empty directory would delete the whole project.
    if !checkout.path().join("index").exists() {
        checkout
            .checkout_head(Some(CheckoutBuilder::new().force()))
            .map_err(wt_error)?;
        tracing::warn!(agent = name, "finished an interrupted worktree checkout");
    }
    Ok(true)
}

/// Creates `branch` at `base`, or reuses it if an earlier attempt left it without commits of
/// its own (moving it up to `base`). A branch carrying other work is refused.
fn start_branch<'r>(
    repo: &'r Repository,
    project_key: &str,
    branch: &str,
    base_branch: &str,
    base: Oid,
) -> Result<Reference<'r>, WorkspaceError> {
    let git_error = |e: git2::Error| WorkspaceError::Mirror {
        project_key: project_key.to_owned(),
        path: repo.path().to_path_buf(),
        detail: e.message().to_owned(),
    };
    let base_commit = repo.find_commit(base).map_err(git_error)?;
    match repo.find_branch(branch, BranchType::Local) {
        Ok(existing) => {
            let tip = existing.get().peel_to_commit().map_err(git_error)?.id();
            if tip == base {
                return Ok(existing.into_reference());
            }
            if repo.graph_descendant_of(base, tip).map_err(git_error)? {
                let moved = repo.branch(branch, &base_commit, true).map_err(git_error)?;
                return Ok(moved.into_reference());
            }
            Err(WorkspaceError::BranchExists {
                project_key: project_key.to_owned(),
                branch: branch.to_owned(),
                base_branch: base_branch.to_owned(),
            })
        }
        Err(e) if e.code() == ErrorCode::NotFound => repo
            .branch(branch, &base_commit, false)
            .map(git2::Branch::into_reference)
            .map_err(git_error),
        Err(e) => Err(git_error(e)),
    }
}

/// Removes what a failed or interrupted earlier attempt may have left, which would make
/// libgit2 refuse to add the worktree: unregistered metadata under `worktrees/<name>`, and
/// an empty workdir. A non-empty workdir is not ours to delete.
fn clear_leftovers(
    mirror: &Path,
    project_key: &str,
    name: &str,
    workdir: &Path,
) -> Result<(), WorkspaceError> {
    let metadata = mirror.join("worktrees").join(name);
    if metadata.exists() {
        fs::remove_dir_all(&metadata)
            .map_err(io_error("remove stale worktree metadata", &metadata))?;
    }
    if workdir.exists() {
        let empty = fs::read_dir(workdir)
            .map_err(io_error("read", workdir))?
            .next()
            .is_none();
        if !empty {
            return Err(WorkspaceError::WorkdirOccupied {
                project_key: project_key.to_owned(),
                agent: name.to_owned(),
                path: workdir.to_path_buf(),
            });
        }
        fs::remove_dir(workdir).map_err(io_error("remove empty directory", workdir))?;
    }
    Ok(())
}

fn same_path(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}
