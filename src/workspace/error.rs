//! What can go wrong while a worker prepares, commits and pushes an agent's git state, told
//! in the terms of the project, agent, branch or remote involved. Remote URLs can carry
//! credentials (`https://user:token@host/...`), so every URL and every libgit2 message that
//! may echo one passes through [`redact_url`] / [`scrub`] before it lands in an error.

use std::path::PathBuf;

/// A failure of one [`Workspace`](super::Workspace) operation.
///
/// libgit2 messages are kept as text rather than as `#[source]`, because they can quote the
/// remote URL verbatim and must be scrubbed of credentials first.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    /// A caller-supplied name cannot be used as a path component or git ref.
    #[error("invalid {what} '{name}': {reason}")]
    InvalidName {
        what: &'static str,
        name: String,
        reason: String,
    },

    /// A file or directory under the workspace root could not be read or written.
    #[error("could not {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The project's remote could not be cloned or fetched.
    #[error("could not fetch project '{project_key}' from remote {remote}: {detail}")]
    Fetch {
        project_key: String,
        remote: String,
        detail: String,
    },

    /// The mirror exists on disk but libgit2 could not use it.
    #[error("the git mirror of project '{project_key}' at {} is unusable: {detail}", path.display())]
    Mirror {
        project_key: String,
        path: PathBuf,
        detail: String,
    },

    /// An operation needs the mirror, but `sync_mirror` has not created it yet.
    #[error("project '{project_key}' has no git mirror at {} yet; sync it first", path.display())]
    MirrorMissing { project_key: String, path: PathBuf },

    /// The branch the agent should start from is not on the remote (as of the last sync).
    #[error("base branch '{branch}' does not exist on remote {remote}")]
    BaseBranchMissing { branch: String, remote: String },

    /// A commit an agent's diff needs is not on the remote's branch (deleted, or moved
    /// elsewhere by a forced push).
    #[error("the {what} commit {commit} is no longer on the remote's branch '{branch}'")]
    CommitMissing {
        what: &'static str,
        commit: String,
        branch: String,
    },

    /// The agent's workdir holds files but no repository this worker finished creating.
    #[error(
        "directory {} for agent '{agent}' already exists and is not a checkout of project \
         '{project_key}' made here",
        path.display()
    )]
    WorkdirOccupied {
        project_key: String,
        agent: String,
        path: PathBuf,
    },

    /// A checkout for this agent exists, but not on the branch this request expects.
    #[error(
        "agent '{agent}' already has a checkout at {} that does not fit this request: {found} \
         (expected branch '{expected}')",
        path.display()
    )]
    WorktreeMismatch {
        agent: String,
        path: PathBuf,
        expected: String,
        found: String,
    },

    /// libgit2 failed to create or inspect an agent's repository and checkout.
    #[error("could not set up the checkout of agent '{agent}' at {}: {detail}", path.display())]
    Worktree {
        agent: String,
        path: PathBuf,
        detail: String,
    },

    /// The agent's own repository (`agents/<name>/repo`) is missing, unusable, or holds
    /// something that could make the worker read or write outside it (a symlinked or special
    /// file where git reads by name, a `commondir`, a config that includes other files).
    #[error("the git repository of agent '{agent}' at {} cannot be used: {detail}", path.display())]
    AgentRepo {
        agent: String,
        path: PathBuf,
        detail: String,
    },

    /// Staging or committing the agent's changes failed.
    #[error("could not commit the changes in checkout {}: {detail}", path.display())]
    Commit { path: PathBuf, detail: String },

    /// The push could not be carried out (connection, transport, pack upload).
    #[error("could not push branch '{branch}' to remote {remote}: {detail}")]
    Push {
        branch: String,
        remote: String,
        detail: String,
    },

    /// The remote's branch holds commits of this agent that are not in the history being
    /// pushed: a newer run of it pushed them. It is left as is.
    #[error(
        "branch '{branch}' on remote {remote} is at {found}, which is not in the history this \
         run is pushing (pushed by another run of this agent); not overwriting it"
    )]
    RemoteBranchNotOurs {
        branch: String,
        remote: String,
        found: String,
    },

    /// The remote's branch exists and was not made by this agent (an earlier agent of the
    /// same name, or someone else, left it there). It is left as is; this agent's work
    /// belongs on a branch of its own.
    #[error(
        "branch '{branch}' on remote {remote} is at {found}, which this agent did not push; \
         not overwriting it"
    )]
    RemoteBranchTaken {
        branch: String,
        remote: String,
        found: String,
    },

    /// The remote received the push but refused to update the branch.
    #[error("remote {remote} rejected branch '{branch}': {reason}")]
    PushRejected {
        branch: String,
        remote: String,
        reason: String,
    },
}

/// `url` without any `user[:password]@` part, for messages and logs.
pub(crate) fn redact_url(url: &str) -> String {
    match userinfo(url) {
        Some(info) => url.replacen(&format!("{info}@"), "", 1),
        None => url.to_owned(),
    }
}

/// `text` with the credentials embedded in `url` removed; libgit2 errors may quote the URL.
pub(crate) fn scrub(text: &str, url: &str) -> String {
    let Some(info) = userinfo(url) else {
        return text.to_owned();
    };
    let mut out = text.replace(&format!("{info}@"), "");
    // A password can also appear on its own (e.g. after percent-decoding by the transport).
    if let Some((_, password)) = info.split_once(':')
        && !password.is_empty()
    {
        out = out.replace(password, "***");
    }
    out
}

/// The `user[:password]` part of a `scheme://user:password@host/...` URL, if any.
fn userinfo(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let at = authority.rfind('@')?;
    Some(&authority[..at])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(
            redact_url("https://bob:s3cret@example.com/org/repo.git"),
            "https://example.com/org/repo.git"
        );
        assert_eq!(
            redact_url("https://token@example.com/r.git"),
            "https://example.com/r.git"
        );
        assert_eq!(redact_url("/srv/git/repo.git"), "/srv/git/repo.git");
        assert_eq!(redact_url("file:///srv/a@b/repo"), "file:///srv/a@b/repo");
        assert_eq!(
            redact_url("git@example.com:org/repo.git"),
            "git@example.com:org/repo.git"
        );
    }

    #[test]
    fn libgit2_messages_are_scrubbed_of_the_urls_credentials() {
        let url = "https://bob:s3cret@example.com/r.git";
        let msg = "failed to connect to bob:s3cret@example.com; password s3cret rejected";
        let clean = scrub(msg, url);
        assert!(!clean.contains("s3cret"), "{clean}");
        assert!(clean.contains("example.com"), "{clean}");
    }
}
