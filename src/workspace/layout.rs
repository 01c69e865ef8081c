//! Writing a new agent's layout by hand: its own git dir (`repo`), the checkout (`workdir`)
//! with a `.git` file naming that dir, and the worker-only `publish.git`. Nothing of it goes
//! into the project mirror, which hostile agents must not be able to change for each other;
//! the objects are not copied either: `objects/info/alternates` borrows the mirror's.
//!
//! Written by hand rather than by `git init` / libgit2's init for speed (no templates, no
//! config round trips), as measured by the worktree benchmark. The checkout also skips
//! libgit2's per-file attribute lookup when nothing could set an attribute or a line-ending
//! conversion (no `.gitattributes` in the tree, no attributes file in the repository, the
//! user's or the system's config, no `core.autocrlf` or `core.eol`): over half of its time
//! per file, for the same bytes written.
//!
//! Order matters for redelivery after a kill midway: `repo` first, then `workdir` and its
//! checkout (index last), and `publish.git` last of all, built aside and renamed into place.
//! A `publish.git` therefore means a complete layout; without one, whatever exists is the
//! leftover of an interrupted creation (see `worktree.rs`).

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use git2::build::CheckoutBuilder;
use git2::{Odb, Oid, Repository, Tree, TreeWalkMode, TreeWalkResult};

use super::{AgentPaths, WorkspaceError, io_error};

/// What the worker's own `.agentfleet/` files in a workdir are kept out of commits by.
pub(super) const EXCLUDE_LINE: &str = ".agentfleet/";

/// The worker's record of an agent's base commit, in `publish.git`.
pub(super) const BASE_REF: &str = "refs/agentfleet/base";

const AGENT_CONFIG: &str = "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\
                            \tbare = false\n\tlogallrefupdates = true\n";
const PUBLISH_CONFIG: &str =
    "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = true\n";

/// Writes agent `name`'s git dir at `paths.repo` with `refs/heads/<branch>` at `base` and
/// HEAD on it, borrowing objects from `mirror_objects`. `paths.repo` must not exist.
pub(super) fn write_agent_repo(
    paths: &AgentPaths,
    branch: &str,
    base: Oid,
    mirror_objects: &Path,
) -> Result<(), WorkspaceError> {
    let repo = &paths.repo;
    fs::create_dir(repo).map_err(io_error("create directory", repo))?;
    for dir in ["objects/info", "objects/pack", "refs/tags", "info"] {
        let dir = repo.join(dir);
        fs::create_dir_all(&dir).map_err(io_error("create directory", &dir))?;
    }
    write(&repo.join("config"), AGENT_CONFIG.as_bytes())?;
    write(
        &repo.join("info/exclude"),
        format!("{EXCLUDE_LINE}\n").as_bytes(),
    )?;
    write(
        &repo.join("objects/info/alternates"),
        &line(b"", mirror_objects),
    )?;
    write_ref(repo, &format!("refs/heads/{branch}"), base)?;
    write(
        &repo.join("HEAD"),
        format!("ref: refs/heads/{branch}\n").as_bytes(),
    )
}

/// Creates the (new) workdir with its `.git` file, so the agent's own `git` finds `repo`.
pub(super) fn write_workdir(paths: &AgentPaths) -> Result<PathBuf, WorkspaceError> {
    fs::create_dir(&paths.workdir).map_err(io_error("create directory", &paths.workdir))?;
    let workdir = paths
        .workdir
        .canonicalize()
        .map_err(io_error("resolve", &paths.workdir))?;
    let repo = paths
        .repo
        .canonicalize()
        .map_err(io_error("resolve", &paths.repo))?;
    write(&workdir.join(".git"), &line(b"gitdir: ", &repo))?;
    Ok(workdir)
}

/// Checks `base` out into the new workdir through the agent's repository opened by path,
/// reading objects straight from the mirror (the agent's own object store is still empty,
/// and asking it first would cost a failed lookup per file). The index is written last.
pub(super) fn check_out(
    name: &str,
    paths: &AgentPaths,
    mirror_objects: &Path,
    base: Oid,
) -> Result<(), WorkspaceError> {
    let wt_error = |e: git2::Error| WorkspaceError::Worktree {
        agent: name.to_owned(),
        path: paths.workdir.clone(),
        detail: e.message().to_owned(),
    };
    let repo = Repository::open_bare(&paths.repo).map_err(wt_error)?;
    repo.set_workdir(&paths.workdir, false).map_err(wt_error)?;
    let odb = Odb::new().map_err(wt_error)?;
    let objects = mirror_objects
        .to_str()
        .ok_or_else(|| WorkspaceError::Worktree {
            agent: name.to_owned(),
            path: mirror_objects.to_path_buf(),
            detail: "the mirror's path is not UTF-8".into(),
        })?;
    odb.add_disk_alternate(objects).map_err(wt_error)?;
    repo.set_odb(&odb).map_err(wt_error)?;
    let tree = repo
        .find_commit(base)
        .and_then(|c| c.tree())
        .map_err(wt_error)?;
    let mut options = CheckoutBuilder::new();
    options
        .force()
        .disable_filters(!filters_may_apply(&repo, &tree));
    repo.checkout_head(Some(&mut options)).map_err(wt_error)
}

/// Builds `publish.git` beside its place and renames it in: the worker's record of the
/// agent's branch (HEAD) and base commit, and the repository its branch is pushed from,
/// borrowing the agent's and the mirror's objects. Its existence marks a complete layout.
pub(super) fn write_publish_repo(
    paths: &AgentPaths,
    branch: &str,
    base: Oid,
    mirror_objects: &Path,
) -> Result<(), WorkspaceError> {
    let staging = paths.dir.join(".publish.git.partial");
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(io_error("remove", &staging))?;
    }
    fs::create_dir(&staging).map_err(io_error("create directory", &staging))?;
    for dir in ["objects/info", "objects/pack", "refs/heads"] {
        let dir = staging.join(dir);
        fs::create_dir_all(&dir).map_err(io_error("create directory", &dir))?;
    }
    let repo_objects = paths
        .repo
        .canonicalize()
        .map_err(io_error("resolve", &paths.repo))?
        .join("objects");
    let mut alternates = line(b"", &repo_objects);
    alternates.extend(line(b"", mirror_objects));
    write(&staging.join("objects/info/alternates"), &alternates)?;
    write(&staging.join("config"), PUBLISH_CONFIG.as_bytes())?;
    write_ref(&staging, BASE_REF, base)?;
    write(
        &staging.join("HEAD"),
        format!("ref: refs/heads/{branch}\n").as_bytes(),
    )?;
    fs::rename(&staging, &paths.publish).map_err(io_error("move into place", &paths.publish))
}

/// Writes the loose ref `refname` (`refs/...`) of the git dir `git_dir`, creating its
/// folders.
fn write_ref(git_dir: &Path, refname: &str, id: Oid) -> Result<(), WorkspaceError> {
    let file = git_dir.join(refname);
    if let Some(parent) = file.parent() {
        fs::create_dir_all(parent).map_err(io_error("create directory", parent))?;
    }
    write(&file, format!("{id}\n").as_bytes())
}

fn write(file: &Path, content: &[u8]) -> Result<(), WorkspaceError> {
    fs::write(file, content).map_err(io_error("write", file))
}

/// `prefix`, `path` and a newline (paths need not be UTF-8).
pub(super) fn line(prefix: &[u8], path: &Path) -> Vec<u8> {
    let mut line = prefix.to_vec();
    line.extend_from_slice(path.as_os_str().as_bytes());
    line.push(b'\n');
    line
}

/// Whether checking out `tree` in `repo` could run any filter: an attribute from the tree,
/// the repository, the user or the system, or a line-ending setting.
fn filters_may_apply(repo: &Repository, tree: &Tree<'_>) -> bool {
    let configured = match repo.config() {
        Ok(config) => {
            let set = |key: &str| config.get_string(key).is_ok();
            let autocrlf = config
                .get_string("core.autocrlf")
                .is_ok_and(|v| !v.eq_ignore_ascii_case("false"));
            autocrlf || set("core.eol") || set("core.attributesFile")
        }
        Err(_) => true,
    };
    configured || attribute_files(repo).iter().any(|f| f.exists()) || has_attributes_file(tree)
}

/// The attributes files git reads besides the tree's own: the repository's, the user's
/// (XDG) and the system's.
fn attribute_files(repo: &Repository) -> Vec<PathBuf> {
    let mut files = vec![
        repo.path().join("info/attributes"),
        "/etc/gitattributes".into(),
    ];
    match std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        Some(xdg) => files.push(PathBuf::from(xdg).join("git/attributes")),
        None => {
            if let Some(home) = std::env::var_os("HOME") {
                files.push(PathBuf::from(home).join(".config/git/attributes"));
            }
        }
    }
    files
}

/// Whether any folder of `tree` holds a `.gitattributes` (an unreadable tree counts).
pub(super) fn has_attributes_file(tree: &Tree<'_>) -> bool {
    let mut found = false;
    let walked = tree.walk(TreeWalkMode::PreOrder, |_, entry| {
        if entry.name_bytes() == b".gitattributes" {
            found = true;
            TreeWalkResult::Abort
        } else {
            TreeWalkResult::Ok
        }
    });
    found || walked.is_err()
}
