//! Committing what an agent leaves in its checkout, wholesale, whether or not it committed
//! by itself, on the branch the worker recorded for it (not wherever the agent's HEAD
//! points).
//!
//! The checkout is the agent's, so libgit2 is kept from anything in it that it would open
//! by name or follow (see `agent_repo.rs` for the repository side): an ignore, attributes
//! or modules file that is not a regular file is refused (a FIFO there would block the
//! worker in `open()`; a symlink would be followed anywhere), as is a nested `.git` that
//! is not a plain folder of the checkout or a file naming one of the agent's own modules.
//! While staging, libgit2 itself skips FIFOs, sockets and devices; the staging callback also
//! leaves out nested repositories (libgit2 would open them to record a gitlink) and files
//! over [`LARGEST_FILE`]. Symlinks are committed as links, never followed.
//!
//! The new commit is written without moving any ref through libgit2 (which would append to
//! a reflog the agent may have made a symlink to any file); the branch ref is then replaced
//! by a rename in folders checked to be real.

use std::fs;
use std::path::{Path, PathBuf};

use git2::{IndexAddOption, ObjectType, Oid, Signature};

use super::agent_repo::{kind, open_agent_repo, read_record, real_dir, regular_or_absent};
use super::{AgentPaths, Workspace, WorkspaceError, check_agent_name, io_error};

const AUTHOR_NAME: &str = "agentfleet";
const AUTHOR_EMAIL: &str = "agentfleet@localhost";

/// Files larger than this are left out of the commit: hosting refuses them anyway (GitHub's
/// limit), and with a filter active libgit2 reads a file whole into memory.
pub const LARGEST_FILE: u64 = 100 * 1024 * 1024;

/// Files git reads by name in every folder of a checkout.
const CONTROL_FILES: &[&str] = &[".gitignore", ".gitattributes", ".gitmodules"];

impl Workspace {
    /// Stage everything in agent `name`'s workdir (honouring `.gitignore` and the
    /// repository's `info/exclude`) and, if that differs from the agent's branch, commit it
    /// there as agentfleet. Returns the new commit's id, or `None` when there was nothing to
    /// commit (including when the agent already committed all of its work itself).
    #[tracing::instrument(skip(self, message))]
    pub fn commit_all(&self, name: &str, message: &str) -> Result<Option<String>, WorkspaceError> {
        check_agent_name(name)?;
        let paths = self.agent_paths(name);
        let record = read_record(name, &paths)?;
        let repo = open_agent_repo(name, &paths, &record)?;
        check_workdir(name, &paths)?;
        let commit_error = |e: git2::Error| WorkspaceError::Commit {
            path: paths.workdir.clone(),
            detail: e.message().to_owned(),
        };

        let refname = format!("refs/heads/{}", record.branch);
        // A branch the agent deleted continues from where it began.
        let parent_id = match repo.refname_to_id(&refname) {
            Ok(id) => id,
            Err(e) if e.code() == git2::ErrorCode::NotFound => record.base,
            Err(e) => return Err(commit_error(e)),
        };
        let parent = repo
            .find_object(parent_id, None)
            .map_err(commit_error)?
            .into_commit()
            .map_err(|object| WorkspaceError::Commit {
                path: paths.workdir.clone(),
                detail: format!(
                    "branch {} points at a {}, not a commit",
                    record.branch,
                    object.kind().unwrap_or(ObjectType::Any)
                ),
            })?;

        let mut index = repo.index().map_err(commit_error)?;
        let workdir = paths.workdir.clone();
        let mut stage = |path: &Path, _: &[u8]| stage_decision(&workdir, path);
        // add_all picks up new and modified files; update_all records deletions.
        index
            .add_all(["*"], IndexAddOption::DEFAULT, Some(&mut stage))
            .map_err(commit_error)?;
        index
            .update_all(["*"], Some(&mut stage))
            .map_err(commit_error)?;
        index.write().map_err(commit_error)?;
        let tree_id = index.write_tree().map_err(commit_error)?;
        if parent.tree_id() == tree_id {
            return Ok(None);
        }

        let tree = repo.find_tree(tree_id).map_err(commit_error)?;
        let signature = Signature::now(AUTHOR_NAME, AUTHOR_EMAIL).map_err(commit_error)?;
        let id = repo
            .commit(None, &signature, &signature, message, &tree, &[&parent])
            .map_err(commit_error)?;
        set_branch(name, &paths, &refname, id)?;
        tracing::info!(commit = %id, "committed agent changes");
        Ok(Some(id.to_string()))
    }
}

/// libgit2's staging callback: 0 stages `path`, 1 leaves it out.
fn stage_decision(workdir: &Path, path: &Path) -> i32 {
    let Ok(meta) = fs::symlink_metadata(workdir.join(path)) else {
        return 0; // gone: update_all records the deletion
    };
    let file_type = meta.file_type();
    if file_type.is_symlink() {
        return 0;
    }
    if file_type.is_file() {
        if meta.len() > LARGEST_FILE {
            tracing::warn!(path = %path.display(), bytes = meta.len(), "file too large; not committed");
            return 1;
        }
        return 0;
    }
    if file_type.is_dir() {
        tracing::warn!(path = %path.display(), "nested repository; not committed");
    }
    1
}

/// Refuses what in the workdir libgit2 would open by name and could block on or follow out
/// of the checkout (see the module documentation). Symlinked folders are not entered.
fn check_workdir(name: &str, paths: &AgentPaths) -> Result<(), WorkspaceError> {
    let refuse = |detail: String| WorkspaceError::AgentRepo {
        agent: name.to_owned(),
        path: paths.workdir.clone(),
        detail,
    };
    let modules = paths.repo.join("modules");
    let mut folders = vec![paths.workdir.clone()];
    while let Some(folder) = folders.pop() {
        let entries = fs::read_dir(&folder).map_err(io_error("list", &folder))?;
        for entry in entries {
            let entry = entry.map_err(io_error("list", &folder))?;
            let path = entry.path();
            let file_type = entry.file_type().map_err(io_error("inspect", &path))?;
            let file_name = entry.file_name();
            if file_name == ".git" {
                if folder != paths.workdir {
                    nested_git(&path, &modules).map_err(refuse)?;
                }
            } else if CONTROL_FILES.iter().any(|c| file_name == *c) {
                regular_or_absent(&path).map_err(refuse)?;
            } else if file_type.is_dir() {
                folders.push(path);
            }
        }
    }
    Ok(())
}

/// A nested `.git` (a repository inside the checkout, e.g. a submodule), which libgit2 may
/// open: a plain folder, or a file naming a folder under the agent's `repo/modules`; either
/// passing the same checks as the agent's own git dir.
fn nested_git(path: &Path, modules: &Path) -> Result<(), String> {
    let meta = fs::symlink_metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let git_dir = if meta.is_dir() {
        path.to_path_buf()
    } else if meta.file_type().is_file() && meta.len() < 4096 {
        let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let target = text
            .trim_end()
            .strip_prefix("gitdir: ")
            .map(|t| path.parent().unwrap_or(path).join(t))
            .ok_or_else(|| format!("{} does not name a git dir", path.display()))?;
        let target = target.canonicalize().unwrap_or(target);
        let modules = modules.canonicalize().unwrap_or_else(|_| modules.into());
        if !target.starts_with(&modules) {
            return Err(format!(
                "{} names a git dir outside the agent's repository",
                path.display()
            ));
        }
        target
    } else {
        return Err(format!("{} is {}", path.display(), kind(&meta.file_type())));
    };
    real_dir(&git_dir)?;
    super::agent_repo::check_git_dir(&git_dir)
}

/// Points `refname` of the agent's repository at `id`: a new file renamed over the old
/// one (so a symlink there is replaced, not written through), in folders that are real.
fn set_branch(
    name: &str,
    paths: &AgentPaths,
    refname: &str,
    id: Oid,
) -> Result<(), WorkspaceError> {
    let file = paths.repo.join(refname);
    let mut folder = paths.repo.clone();
    let components: Vec<_> = Path::new(refname).components().collect();
    for component in &components[..components.len() - 1] {
        folder.push(component);
        match fs::symlink_metadata(&folder) {
            Err(_) => fs::create_dir(&folder).map_err(io_error("create directory", &folder))?,
            Ok(meta) if meta.is_dir() => {}
            Ok(meta) => {
                return Err(WorkspaceError::AgentRepo {
                    agent: name.to_owned(),
                    path: folder.clone(),
                    detail: format!("it is {}", kind(&meta.file_type())),
                });
            }
        }
    }
    let staging: PathBuf = folder.join(format!(".agentfleet-ref.{}", std::process::id()));
    let _ = fs::remove_file(&staging);
    fs::write(&staging, format!("{id}\n")).map_err(io_error("write", &staging))?;
    fs::rename(&staging, &file).map_err(io_error("update", &file))
}
