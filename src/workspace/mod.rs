//! A worker's git state on disk: one mirror per project, and for each agent a repository
//! and checkout of its own, because agents are hostile (an LLM running shell commands
//! without permission prompts) and anything two agents share, or that the worker reads from
//! where an agent can write, is a way for one agent to reach another's work.
//!
//! ```text
//! <root>/mirrors/<project_key>.git   bare mirror of the remote; worker only (agents may read
//!                                    its objects/, nothing else)
//! <root>/agents/<name>/workdir       the agent's checkout, with a `.git` file naming `repo`
//! <root>/agents/<name>/repo          the agent's git dir: HEAD, config, refs/, objects/ whose
//!                                    info/alternates borrows the mirror's objects
//! <root>/agents/<name>/publish.git   worker only: records the agent's branch and base, and
//!                                    is what the agent's branch is pushed from
//! ```
//!
//! The mirror keeps the remote's branches under `refs/remotes/origin/*` and is written only
//! by fetching from the remote; no agent object or ref ever lands in it. The agent may write
//! anything in `workdir` and `repo`, so the worker opens the agent's repository by its path
//! (never through the `.git` file), checks it for links out of it first
//! ([`Workspace::agent_repo`]), and pushes from `publish.git` to the URL the store gives,
//! so nothing in the agent's config (remotes, `insteadOf`, hooks, helpers) takes part.
//!
//! Everything here is blocking libgit2 and filesystem work: callers run it on
//! `spawn_blocking` and serialise the operations on one project.

mod agent_repo;
mod commit;
mod diff;
mod error;
mod layout;
mod mirror;
mod publish;
mod remove;
mod worktree;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

pub use commit::LARGEST_FILE;
pub use diff::{ChangeSet, DiffTarget, FileChange, FileStatus};
pub use error::WorkspaceError;
pub(crate) use error::redact_url;
pub use publish::Published;
pub use remove::delete_remote_branch;

/// Where a worker keeps its git state (see the module documentation for the layout).
#[derive(Debug, Clone)]
pub struct Workspace {
    root: PathBuf,
}

/// The paths of one agent's layout under the workspace root.
#[derive(Debug, Clone)]
struct AgentPaths {
    dir: PathBuf,
    workdir: PathBuf,
    repo: PathBuf,
    publish: PathBuf,
}

impl Workspace {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        // Objects are only read from our own mirrors, whose packs libgit2 hashed when it
        // indexed them on fetch, and from agent repositories whose objects only ever reach
        // that agent's own branch (a remote hashes what it receives); re-hashing every blob
        // on each checkout (libgit2's default, which git itself does not do) cost a large
        // share of a checkout's creation.
        static READ_WITHOUT_REHASH: std::sync::Once = std::sync::Once::new();
        READ_WITHOUT_REHASH.call_once(|| git2::opts::strict_hash_verification(false));
        Self { root: root.into() }
    }

    fn mirror_path(&self, project_key: &str) -> PathBuf {
        self.root.join("mirrors").join(format!("{project_key}.git"))
    }

    /// Agent `name`'s own git dir, which its sandbox may write.
    pub fn agent_git_dir(&self, name: &str) -> PathBuf {
        self.agent_paths(name).repo
    }

    /// The project mirror's object store, which agents' repositories borrow (read-only).
    pub fn mirror_objects(&self, project_key: &str) -> PathBuf {
        self.mirror_path(project_key).join("objects")
    }

    fn agent_paths(&self, agent: &str) -> AgentPaths {
        let dir = self.root.join("agents").join(agent);
        AgentPaths {
            workdir: dir.join("workdir"),
            repo: dir.join("repo"),
            publish: dir.join("publish.git"),
            dir,
        }
    }
}

/// Validate an agent name (or one component of a branch name): non-empty, at most 64
/// characters of `[A-Za-z0-9._-]`, not starting with `-` or `.`, no `..`, not ending in
/// `.lock`, and `refs/heads/agent/<name>` must be a valid git ref.
///
/// The name becomes a directory name and part of a branch name, and arrives from API
/// callers, so anything that could escape the workspace root or confuse git is refused.
pub fn validate_name(name: &str) -> Result<(), String> {
    const MAX_LEN: usize = 64;
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > MAX_LEN {
        return Err(format!(
            "must be at most {MAX_LEN} characters, got {}",
            name.len()
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "may only contain letters, digits, '.', '_' and '-', found {bad:?}"
        ));
    }
    if name.starts_with('-') || name.starts_with('.') {
        return Err("must not start with '-' or '.'".into());
    }
    if name.contains("..") {
        return Err("must not contain '..'".into());
    }
    if name.ends_with(".lock") {
        return Err("must not end with '.lock'".into());
    }
    if !git2::Reference::is_valid_name(&format!("refs/heads/agent/{name}")) {
        return Err("is not valid in a git branch name".into());
    }
    Ok(())
}

fn check_agent_name(name: &str) -> Result<(), WorkspaceError> {
    validate_name(name).map_err(|reason| WorkspaceError::InvalidName {
        what: "agent name",
        name: name.to_owned(),
        reason,
    })
}

/// Project keys name a directory under `mirrors/`; they only need to stay inside it.
fn check_project_key(project_key: &str) -> Result<(), WorkspaceError> {
    let reason = if project_key.is_empty() {
        Some("must not be empty")
    } else if project_key.starts_with('.') {
        Some("must not start with '.'")
    } else if project_key.contains(['/', '\\', '\0']) {
        Some("must not contain '/', '\\' or NUL")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(WorkspaceError::InvalidName {
            what: "project key",
            name: project_key.to_owned(),
            reason: reason.to_owned(),
        }),
        None => Ok(()),
    }
}

/// A branch name (e.g. `agent/brave-otter` or `main`) must form a valid `refs/heads/` ref.
fn check_branch(what: &'static str, branch: &str) -> Result<(), WorkspaceError> {
    if git2::Reference::is_valid_name(&format!("refs/heads/{branch}")) {
        Ok(())
    } else {
        Err(WorkspaceError::InvalidName {
            what,
            name: branch.to_owned(),
            reason: "is not a valid git branch name".into(),
        })
    }
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> WorkspaceError {
    let path = path.to_path_buf();
    move |source| WorkspaceError::Io {
        action,
        path,
        source,
    }
}
