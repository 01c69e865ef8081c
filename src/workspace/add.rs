//! Adding an agent's worktree to a project mirror: what `git worktree add` (and libgit2's
//! `git_worktree_add`) writes, done here for two reasons measured by the worktree and
//! dispatch benchmarks:
//!
//! - libgit2 first checks that no other worktree has the branch checked out by opening
//!   every registered worktree, which made each new agent slower than the last (about
//!   +18 ms at 500 worktrees on one mirror). The branch is this agent's own
//!   (`start_branch`), so the check can only ever pass.
//! - libgit2's checkout looks up each file's attributes to choose its filters (line
//!   endings, ident, filter drivers) — over half of its time per file. When nothing could
//!   set an attribute or a line-ending conversion (no `.gitattributes` in the tree, no
//!   attributes file in the mirror, the user's or the system's config, no `core.autocrlf`
//!   or `core.eol`), the checkout skips that lookup; it writes the same bytes.
//!
//! The layout matches git's: `<mirror>/worktrees/<name>/{HEAD,commondir,gitdir}` and a
//! `.git` file in the workdir pointing back; the index is written last, by the checkout, so
//! a worktree without one was interrupted (see `existing_worktree`).

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use git2::build::CheckoutBuilder;
use git2::{Repository, Tree, TreeWalkMode, TreeWalkResult};

use super::{WorkspaceError, io_error};

/// Registers worktree `name` of the mirror `repo` at `workdir` (which must not exist) with
/// HEAD on `refs/heads/<branch>`, and checks out `base` there.
pub(super) fn add_worktree(
    repo: &Repository,
    name: &str,
    workdir: &Path,
    branch: &str,
    base: &Tree<'_>,
) -> Result<(), WorkspaceError> {
    let wt_error = |e: git2::Error| WorkspaceError::Worktree {
        agent: name.to_owned(),
        path: workdir.to_path_buf(),
        detail: e.message().to_owned(),
    };
    let common = repo
        .path()
        .canonicalize()
        .map_err(io_error("resolve", repo.path()))?;
    let admins = common.join("worktrees");
    fs::create_dir_all(&admins).map_err(io_error("create directory", &admins))?;
    let admin = admins.join(name);
    // Both must be new, as `git worktree add` requires.
    fs::create_dir(&admin).map_err(io_error("create directory", &admin))?;
    fs::create_dir(workdir).map_err(io_error("create directory", workdir))?;
    let workdir = workdir
        .canonicalize()
        .map_err(io_error("resolve", workdir))?;
    write_line(&workdir.join(".git"), b"gitdir: ", &admin)?;
    write_line(&admin.join("commondir"), b"", &common)?;
    write_line(&admin.join("gitdir"), b"", &workdir.join(".git"))?;
    let head = format!("ref: refs/heads/{branch}\n");
    fs::write(admin.join("HEAD"), head).map_err(io_error("write", &admin.join("HEAD")))?;

    let checkout = Repository::open(&workdir).map_err(wt_error)?;
    let mut options = CheckoutBuilder::new();
    options
        .force()
        .disable_filters(!filters_may_apply(repo, base));
    checkout.checkout_head(Some(&mut options)).map_err(wt_error)
}

/// Writes `prefix`, `path` and a newline to `file` (paths need not be UTF-8).
fn write_line(file: &Path, prefix: &[u8], path: &Path) -> Result<(), WorkspaceError> {
    let mut line = prefix.to_vec();
    line.extend_from_slice(path.as_os_str().as_bytes());
    line.push(b'\n');
    fs::write(file, line).map_err(io_error("write", file))
}

/// Whether checking out `tree` in a worktree of `repo` could run any filter: an attribute
/// from the tree, the mirror, the user or the system, or a line-ending setting.
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
