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
//! newer run pushed (`RemoteBranchNotOurs`), nor a new agent the branch an earlier agent of
//! the same name left (`RemoteBranchTaken`: the caller pushes to a branch of its own).
//! The update is a compare-and-swap on the tip the remote advertised when the push
//! connected (checked against this run's history first):
//! - over git's protocols (ssh, https, git) libgit2 sends that tip as the ref's old value,
//!   and the remote's receive-pack updates the ref only if it still holds it;
//! - a local remote (a path or `file://`) gets no such check from libgit2, whose local
//!   transport overwrites an existing ref whatever it holds by then. There the objects the
//!   remote lacks are written into its object database as one pack, named by no ref, and
//!   the branch is then moved by a compare-and-swap under git's ref lock on the remote
//!   repository, from the advertised tip (or from nothing, for a new branch).

use std::cell::RefCell;
use std::path::{Path, PathBuf};

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
        self.publish_branch_fenced(project_key, name, branch, branch, remote_url, &|| {})
    }

    /// [`publish_branch`](Self::publish_branch) of the agent's own branch (the one it was
    /// created with) to the remote as `refs/heads/<remote_branch>`: where the branch of its
    /// name was taken ([`WorkspaceError::RemoteBranchTaken`]), its work goes to a branch of
    /// its own.
    #[tracing::instrument(skip(self, remote_url), fields(remote = %redact_url(remote_url)))]
    pub fn publish_branch_as(
        &self,
        project_key: &str,
        name: &str,
        remote_branch: &str,
        remote_url: &str,
    ) -> Result<Option<Published>, WorkspaceError> {
        check_agent_name(name)?;
        let record = read_record(name, &self.agent_paths(name))?;
        self.publish_branch_fenced(
            project_key,
            name,
            &record.branch,
            remote_branch,
            remote_url,
            &|| {},
        )
    }

    /// [`publish_branch`](Self::publish_branch), calling `before_update` once the remote's
    /// tip was read and judged ours, just before the remote is asked to move it: where
    /// another run's push can race this one.
    pub(super) fn publish_branch_fenced(
        &self,
        project_key: &str,
        name: &str,
        branch: &str,
        remote_branch: &str,
        remote_url: &str,
        before_update: &dyn Fn(),
    ) -> Result<Option<Published>, WorkspaceError> {
        check_project_key(project_key)?;
        check_agent_name(name)?;
        check_branch("branch", branch)?;
        check_branch("remote_branch", remote_branch)?;
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
        push(
            &publish,
            branch,
            remote_branch,
            remote_url,
            tip,
            record.base,
            before_update,
        )?;
        tracing::info!(branch = remote_branch, commit = %tip, "pushed agent branch");
        Ok(Some(Published {
            commit: tip.to_string(),
        }))
    }
}

/// Pushes `refs/heads/<branch>` of `publish` (at `tip`) to `url` as
/// `refs/heads/<remote_branch>`, fenced as the module documentation says.
fn push(
    publish: &Repository,
    branch: &str,
    remote_branch: &str,
    url: &str,
    tip: Oid,
    base: Oid,
    before_update: &dyn Fn(),
) -> Result<(), WorkspaceError> {
    let refname = format!("refs/heads/{branch}");
    let dst = format!("refs/heads/{remote_branch}");
    let push_error = push_error(remote_branch, url);
    let mut remote = publish.remote_anonymous(url).map_err(push_error)?;
    remote.connect(Direction::Push).map_err(push_error)?;
    let current = remote
        .list()
        .map_err(push_error)?
        .iter()
        .find(|head| head.name() == dst)
        .map(|head| head.oid());
    if let Some(current) = current {
        if current == tip {
            return Ok(());
        }
        // This agent's history beyond its base: what any of its runs may have pushed.
        let this_agents = publish.odb().is_ok_and(|odb| odb.exists(current))
            && current != base
            && !publish.graph_descendant_of(base, current).unwrap_or(true)
            && publish.graph_descendant_of(current, base).unwrap_or(false);
        if !this_agents {
            return Err(WorkspaceError::RemoteBranchTaken {
                branch: remote_branch.to_owned(),
                remote: redact_url(url),
                found: current.to_string(),
            });
        }
        if !publish.graph_descendant_of(tip, current).unwrap_or(false) {
            return Err(WorkspaceError::RemoteBranchNotOurs {
                branch: remote_branch.to_owned(),
                remote: redact_url(url),
                found: current.to_string(),
            });
        }
    }

    before_update();
    match local_path(url) {
        Some(path) => push_local(publish, &path, remote_branch, url, tip, current, base),
        None => push_refspec(&mut remote, &refname, &dst, remote_branch, url),
    }
}

/// Pushes `src` of the publish repository as `dst` on the connected `remote`: no `+`, so
/// over git's protocols only from the tip the remote advertised on this connection.
fn push_refspec(
    remote: &mut git2::Remote<'_>,
    src: &str,
    dst: &str,
    branch: &str,
    url: &str,
) -> Result<(), WorkspaceError> {
    let push_error = push_error(branch, url);
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
    let pushed = remote.push(&[format!("{src}:{dst}")], Some(&mut options));
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

/// The repository path of a local remote (a path, or a `file://` URL), which libgit2
/// pushes to by writing into it directly rather than through git's protocol.
fn local_path(url: &str) -> Option<PathBuf> {
    if let Some(path) = url.strip_prefix("file://") {
        return Some(PathBuf::from(path));
    }
    let path = Path::new(url);
    (!url.contains("://") && path.is_dir()).then(|| path.to_path_buf())
}

/// The local-remote push of the module documentation: the objects of `tip` the remote
/// lacks go into its object database as one pack (no ref names them: a temporary ref would
/// break the fetches of other workers that list the remote's refs while it comes and goes),
/// then `branch` is moved from `expected` (`None`: it must not exist) to `tip` in one
/// locked compare-and-swap.
fn push_local(
    publish: &Repository,
    path: &Path,
    branch: &str,
    url: &str,
    tip: Oid,
    expected: Option<Oid>,
    base: Oid,
) -> Result<(), WorkspaceError> {
    let refname = format!("refs/heads/{branch}");
    let push_error = push_error(branch, url);
    let target = Repository::open(path).map_err(push_error)?;
    copy_objects(publish, &target, tip, [expected, Some(base)]).map_err(push_error)?;
    let message = "agentfleet: publish";
    let updated = match expected {
        Some(old) => target.reference_matching(&refname, tip, true, old, message),
        None => target.reference(&refname, tip, false, message),
    };
    match updated {
        Ok(_) => Ok(()),
        Err(e)
            if matches!(
                e.code(),
                git2::ErrorCode::Modified | git2::ErrorCode::Exists
            ) =>
        {
            Err(WorkspaceError::RemoteBranchNotOurs {
                branch: branch.to_owned(),
                remote: redact_url(url),
                found: "a commit pushed meanwhile".into(),
            })
        }
        // As a remote's receive-pack would: the pack is in, this one ref is refused.
        Err(e) => Err(WorkspaceError::PushRejected {
            branch: branch.to_owned(),
            remote: redact_url(url),
            reason: scrub(e.message().trim_end_matches([':', ' ']), url),
        }),
    }
}

/// Writes the objects reachable from `tip` and not from `have` (commits both sides hold)
/// from `from` into `to`'s object database, as one pack.
fn copy_objects(
    from: &Repository,
    to: &Repository,
    tip: Oid,
    have: [Option<Oid>; 2],
) -> Result<(), git2::Error> {
    use std::io::Write;
    let (from_odb, to_odb) = (from.odb()?, to.odb()?);
    let mut walk = from.revwalk()?;
    walk.push(tip)?;
    for commit in have.into_iter().flatten() {
        if from_odb.exists(commit) && to_odb.exists(commit) {
            walk.hide(commit)?;
        }
    }
    let mut pack = from.packbuilder()?;
    pack.insert_walk(&mut walk)?;
    if pack.object_count() == 0 {
        return Ok(());
    }
    let mut writer = to_odb.packwriter()?;
    let mut failed = None;
    pack.foreach(|chunk| match writer.write_all(chunk) {
        Ok(()) => true,
        Err(e) => {
            failed = Some(e);
            false
        }
    })?;
    if let Some(e) = failed {
        return Err(git2::Error::from_str(&format!(
            "cannot write the pack: {e}"
        )));
    }
    writer.commit()?;
    Ok(())
}

fn push_error<'a>(
    branch: &'a str,
    url: &'a str,
) -> impl Fn(git2::Error) -> WorkspaceError + Copy + 'a {
    move |e| WorkspaceError::Push {
        branch: branch.to_owned(),
        remote: redact_url(url),
        detail: scrub(e.message(), url),
    }
}
