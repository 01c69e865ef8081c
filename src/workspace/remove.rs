//! Taking an agent's git state away again: its whole folder (`agents/<name>`: checkout,
//! repository, `publish.git` and the run files), and on request its branch on the remote.
//! Agents made by older versions were worktrees of the project mirror with a branch in it;
//! their worktree record and branch go too. Also the inventory the orphan cleanup needs:
//! which agents have a folder (or, from older versions, a worktree or branch) here.

use std::collections::BTreeSet;
use std::path::Path;

use git2::{BranchType, Repository, WorktreePruneOptions};

use super::error::redact_url;
use super::{Workspace, WorkspaceError};

fn io_err(action: &'static str, path: &Path, source: std::io::Error) -> WorkspaceError {
    WorkspaceError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

fn git_err(project_key: &str, path: &Path, e: &git2::Error) -> WorkspaceError {
    WorkspaceError::Mirror {
        project_key: project_key.to_string(),
        path: path.to_path_buf(),
        detail: e.message().to_string(),
    }
}

impl Workspace {
    /// Removes agent `name`'s folder (checkout, repository, `publish.git` and run files)
    /// and, from older versions' layout, its worktree record and local branch in every
    /// mirror under this root. Missing pieces are fine.
    pub fn remove_agent(&self, name: &str, branch: &str) -> Result<(), WorkspaceError> {
        let dir = self.root.join("agents").join(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| io_err("remove", &dir, e))?;
        }
        for (key, path) in self.mirrors()? {
            let repo = Repository::open_bare(&path).map_err(|e| git_err(&key, &path, &e))?;
            prune_worktree(&repo, name);
            if let Ok(mut b) = repo.find_branch(branch, BranchType::Local) {
                b.delete().map_err(|e| git_err(&key, &path, &e))?;
            }
        }
        Ok(())
    }

    /// Agent names that have a folder here, or (older versions) a worktree record or an
    /// `agent/*` branch in a mirror.
    pub fn agent_names(&self) -> Result<BTreeSet<String>, WorkspaceError> {
        let mut names = BTreeSet::new();
        let agents = self.root.join("agents");
        if agents.exists() {
            for entry in std::fs::read_dir(&agents).map_err(|e| io_err("list", &agents, e))? {
                let entry = entry.map_err(|e| io_err("list", &agents, e))?;
                if let Some(name) = entry.file_name().to_str() {
                    names.insert(name.to_string());
                }
            }
        }
        for (key, path) in self.mirrors()? {
            let repo = Repository::open_bare(&path).map_err(|e| git_err(&key, &path, &e))?;
            if let Ok(worktrees) = repo.worktrees() {
                names.extend(worktrees.iter().flatten().flatten().map(str::to_string));
            }
            if let Ok(branches) = repo.branches(Some(BranchType::Local)) {
                for (b, _) in branches.flatten() {
                    if let Ok(Some(n)) = b.name()
                        && let Some(agent) = n.strip_prefix("agent/")
                    {
                        names.insert(agent.to_string());
                    }
                }
            }
        }
        Ok(names)
    }

    fn mirrors(&self) -> Result<Vec<(String, std::path::PathBuf)>, WorkspaceError> {
        let dir = self.root.join("mirrors");
        if !dir.exists() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| io_err("list", &dir, e))? {
            let entry = entry.map_err(|e| io_err("list", &dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(key) = name.strip_suffix(".git") {
                out.push((key.to_string(), entry.path()));
            }
        }
        Ok(out)
    }
}

fn prune_worktree(repo: &Repository, name: &str) {
    if let Ok(wt) = repo.find_worktree(name) {
        let mut opts = WorktreePruneOptions::new();
        opts.valid(true).working_tree(true).locked(true);
        if let Err(e) = wt.prune(Some(&mut opts)) {
            tracing::warn!(worktree = name, error = %e.message(), "cannot prune worktree");
        }
    }
}

/// Deletes `branch` on the remote at `url` (any URL git2 can push to), from a throwaway
/// repository, so it works without a mirror on this machine.
pub fn delete_remote_branch(url: &str, branch: &str) -> Result<(), WorkspaceError> {
    let tmp = tempfile_dir()?;
    let result = (|| {
        let repo = Repository::init_bare(&tmp).map_err(|e| git_err("-", &tmp, &e))?;
        let mut remote = repo
            .remote_anonymous(url)
            .map_err(|e| git_err("-", &tmp, &e))?;
        remote
            .push(&[format!(":refs/heads/{branch}")], None)
            .map_err(|e| WorkspaceError::Push {
                branch: branch.to_string(),
                remote: redact_url(url),
                detail: e.message().to_string(),
            })
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

fn tempfile_dir() -> Result<std::path::PathBuf, WorkspaceError> {
    let dir = std::env::temp_dir().join(format!("agentfleet-push-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).map_err(|e| io_err("create", &dir, e))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote_with_main(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("remote.git");
        let repo = Repository::init_bare(&path).unwrap();
        let sig = git2::Signature::now("t", "t@localhost").unwrap();
        let blob = repo.blob(b"x").unwrap();
        let mut tb = repo.treebuilder(None).unwrap();
        tb.insert("README.md", blob, 0o100644).unwrap();
        let tree = repo.find_tree(tb.write().unwrap()).unwrap();
        repo.commit(Some("refs/heads/main"), &sig, &sig, "init", &tree, &[])
            .unwrap();
        path
    }

    #[test]
    fn remove_agent_takes_away_the_agents_folder() {
        let dir = tempfile::tempdir().unwrap();
        let remote = remote_with_main(dir.path());
        let ws = Workspace::new(dir.path().join("root"));
        ws.sync_mirror("p1", remote.to_str().unwrap()).unwrap();
        let wd = ws
            .create_worktree("p1", "otter", "agent/otter", "main")
            .unwrap();
        std::fs::write(wd.join("f.txt"), "work").unwrap();
        ws.commit_all("otter", "work").unwrap();
        ws.publish_branch("p1", "otter", "agent/otter", remote.to_str().unwrap())
            .unwrap()
            .unwrap();
        assert!(ws.agent_names().unwrap().contains("otter"));

        ws.remove_agent("otter", "agent/otter").unwrap();
        assert!(!dir.path().join("root/agents/otter").exists());
        assert!(ws.agent_names().unwrap().is_empty());
        // The name can be used again.
        ws.create_worktree("p1", "otter", "agent/otter", "main")
            .unwrap();

        let bare = Repository::open_bare(&remote).unwrap();
        assert!(bare.find_reference("refs/heads/agent/otter").is_ok());
        delete_remote_branch(remote.to_str().unwrap(), "agent/otter").unwrap();
        assert!(bare.find_reference("refs/heads/agent/otter").is_err());
    }
}
