//! Publishing an agent's branch: its tip is read from the agent's repository (opened by
//! path, see `agent_repo.rs`) and pushed from the worker's own `publish.git` to the URL the
//! caller passes (the project's remote from the store), through an anonymous remote.
//!
//! Nothing the agent can write takes part in the push: `publish.git`'s config is the
//! worker's, so `url.<x>.insteadOf`, `pushurl`, `remote.*` and credential helpers in the
//! agent's config are never read, and only `refs/heads/<branch>` exists there to push.
//! libgit2 never runs hooks (`pre-push`, `post-commit`, …), whatever the config says.
//!
//! The push is fenced: an existing remote branch is only moved forward, from a tip that is
//! already in this agent's own history beyond its base. A stale run cannot overwrite what a
//! newer run pushed, nor a new agent the branch an earlier agent of the same name left.
//! libgit2 pushes without `+` refuse anything but a fast-forward of the remote tip it was
//! advertised, and git's receive-pack updates the ref only if it still holds that tip.

use std::cell::RefCell;

use git2::{Direction, ObjectType, Oid, PushOptions, RemoteCallbacks, Repository};

use super::agent_repo::{open_agent_repo, read_record};
use super::error::{redact_url, scrub};
use super::{Workspace, WorkspaceError, check_agent_name, check_branch, check_project_key};

/// What [`Workspace::publish_branch`] put on the remote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The id of the commit the remote branch now points at.
    pub commit: String,
}

impl Workspace {
    /// Push agent `name`'s `branch` to `remote_url` as `refs/heads/<branch>`.
    ///
    /// Returns `None`, pushing nothing, when the branch has no commit beyond the one it
    /// started from (an agent that crashed or did nothing leaves no empty branch behind).
    /// A remote branch whose tip is not in this branch's history beyond its base is left
    /// alone: [`WorkspaceError::RemoteBranchNotOurs`].
    #[tracing::instrument(skip(self, remote_url), fields(remote = %redact_url(remote_url)))]
    pub fn publish_branch(
        &self,
        project_key: &str,
        name: &str,
        branch: &str,
        remote_url: &str,
    ) -> Result<Option<Published>, WorkspaceError> {
        check_project_key(project_key)?;
        check_agent_name(name)?;
        check_branch("branch", branch)?;
        let paths = self.agent_paths(name);
        let record = read_record(name, &paths)?;
        let broken = |detail: String| WorkspaceError::AgentRepo {
            agent: name.to_owned(),
            path: paths.publish.clone(),
            detail,
        };
        if record.branch != branch {
            return Err(broken(format!(
                "the agent's branch is '{}', not '{branch}'",
                record.branch
            )));
        }
        let mirror_objects = self.mirror_path(project_key).join("objects");
        let same_mirror = match (
            mirror_objects.canonicalize(),
            record.mirror_objects.canonicalize(),
        ) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
        if !same_mirror {
            return Err(broken(format!(
                "the agent was not created from project '{project_key}'"
            )));
        }

        let refname = format!("refs/heads/{branch}");
        let tip = {
            let agent = open_agent_repo(name, &paths, &record)?;
            let agent_error = |e: git2::Error| WorkspaceError::AgentRepo {
                agent: name.to_owned(),
                path: paths.repo.clone(),
                detail: e.message().to_owned(),
            };
            let tip = match agent.find_reference(&refname) {
                Ok(reference) => reference
                    .target()
                    .ok_or_else(|| WorkspaceError::AgentRepo {
                        agent: name.to_owned(),
                        path: paths.repo.clone(),
                        detail: format!("{refname} is a symbolic ref"),
                    })?,
                Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(None),
                Err(e) => return Err(agent_error(e)),
            };
            let kind = agent.find_object(tip, None).map_err(agent_error)?.kind();
            if kind != Some(ObjectType::Commit) {
                return Err(agent_error(git2::Error::from_str(&format!(
                    "{refname} points at a {}, not a commit",
                    kind.unwrap_or(ObjectType::Any)
                ))));
            }
            tip
        };

        // Everything from here on is read through the worker's repository: its object
        // store is the agent's and the mirror's, its config and refs are the worker's.
        let publish =
            Repository::open_bare(&paths.publish).map_err(|e| broken(e.message().into()))?;
        let git_error = |e: git2::Error| broken(e.message().to_owned());
        if tip == record.base
            || publish
                .graph_descendant_of(record.base, tip)
                .map_err(git_error)?
        {
            tracing::info!(branch, "no commits beyond the base; nothing to push");
            return Ok(None);
        }
        publish
            .reference(&refname, tip, true, "publish")
            .map_err(git_error)?;
        push(&publish, branch, remote_url, tip, record.base)?;
        tracing::info!(branch, commit = %tip, "pushed agent branch");
        Ok(Some(Published {
            commit: tip.to_string(),
        }))
    }
}

/// Pushes `refs/heads/<branch>` of `publish` (at `tip`) to `url`, fenced as the module
/// documentation says.
fn push(
    publish: &Repository,
    branch: &str,
    url: &str,
    tip: Oid,
    base: Oid,
) -> Result<(), WorkspaceError> {
    let refname = format!("refs/heads/{branch}");
    let push_error = |e: git2::Error| WorkspaceError::Push {
        branch: branch.to_owned(),
        remote: redact_url(url),
        detail: scrub(e.message(), url),
    };
    let mut remote = publish.remote_anonymous(url).map_err(push_error)?;
    remote.connect(Direction::Push).map_err(push_error)?;
    let current = remote
        .list()
        .map_err(push_error)?
        .iter()
        .find(|head| head.name() == refname)
        .map(|head| head.oid());
    if let Some(current) = current {
        if current == tip {
            return Ok(());
        }
        let ours = publish.odb().is_ok_and(|odb| odb.exists(current))
            && current != base
            && !publish.graph_descendant_of(base, current).unwrap_or(true)
            && publish.graph_descendant_of(tip, current).unwrap_or(false);
        if !ours {
            return Err(WorkspaceError::RemoteBranchNotOurs {
                branch: branch.to_owned(),
                remote: redact_url(url),
                found: current.to_string(),
            });
        }
    }

    // libgit2 reports a refused ref through this callback, not through push()'s result.
    let rejection = RefCell::new(None::<String>);
    let mut callbacks = RemoteCallbacks::new();
    callbacks.push_update_reference(|_refname, status| {
        if let Some(message) = status {
            *rejection.borrow_mut() = Some(message.to_owned());
        }
        Ok(())
    });
    let mut options = PushOptions::new();
    options.remote_callbacks(callbacks);
    // No `+`: only a fast-forward of the tip the remote advertised on this connection.
    let pushed = remote.push(&[format!("{refname}:{refname}")], Some(&mut options));
    drop(options);
    match pushed {
        Err(e) if e.code() == git2::ErrorCode::NotFastForward => {
            return Err(WorkspaceError::RemoteBranchNotOurs {
                branch: branch.to_owned(),
                remote: redact_url(url),
                found: "a commit pushed meanwhile".into(),
            });
        }
        other => other.map_err(push_error)?,
    }
    if let Some(reason) = rejection.take() {
        return Err(WorkspaceError::PushRejected {
            branch: branch.to_owned(),
            remote: redact_url(url),
            // libgit2 leaves a dangling ": " when the OS gave no detail.
            reason: scrub(reason.trim_end_matches([':', ' ']), url),
        });
    }
    Ok(())
}
