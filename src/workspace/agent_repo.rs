//! Opening an agent's repository the way the worker can trust: by its path under the
//! workspace root, with the checkout the worker made, never through the `.git` file in the
//! workdir (which the agent can re-point at another agent's repository) nor `core.worktree`.
//!
//! The agent can write anything in `repo` and `workdir`, and the worker reads and writes
//! there with more rights than the agent has. So before libgit2 touches them, everything
//! libgit2 would follow out of the agent's directories or block on is refused: a
//! `commondir` (borrowing another repository's refs and objects), a symlink or special file
//! where libgit2 reads or writes by name (`HEAD`, `config`, `index`, refs, reflogs, objects,
//! `.gitignore`, …: libgit2 follows symlinks and an `open()` of a FIFO blocks until a writer
//! comes), a config that includes other files or names ignore or attribute files elsewhere,
//! and nested repositories that are not plain folders inside the checkout.
//! `objects/info/alternates` is rewritten to the mirror's objects recorded in the worker's
//! `publish.git`, so no other object store (another agent's) is ever borrowed.
//!
//! These checks hold once the agent has stopped: a process of it still running could change
//! the files between the check and libgit2's use of them.

use std::fs;
use std::path::{Path, PathBuf};

use git2::{ConfigLevel, Oid, Repository};

use super::layout::{BASE_REF, line};
use super::{AgentPaths, Workspace, WorkspaceError, check_agent_name, io_error};

/// Larger control files (`.gitignore`, `config`, `index`, …) are refused: libgit2 reads
/// each one whole into memory.
const LARGEST_CONTROL_FILE: u64 = 256 * 1024 * 1024;

/// Files of a git dir that libgit2 reads or writes by name.
const GIT_DIR_FILES: &[&str] = &[
    "HEAD",
    "config",
    "config.worktree",
    "index",
    "packed-refs",
    "shallow",
    "info/exclude",
    "info/attributes",
    "info/grafts",
    "objects/info/alternates",
];

/// Folders of a git dir in which only regular files and real folders may be.
const GIT_DIR_TREES: &[&str] = &["refs", "logs", "objects"];

/// What the worker recorded about an agent when it created its layout (`publish.git`).
#[derive(Debug, Clone)]
pub(super) struct Record {
    /// The agent's branch, e.g. `agent/brave-otter`.
    pub branch: String,
    /// The commit the branch started from.
    pub base: Oid,
    /// The mirror's objects dir, which the agent's repository borrows from.
    pub mirror_objects: PathBuf,
}

impl Workspace {
    /// Opens agent `name`'s repository at `<root>/agents/<name>/repo` with its workdir at
    /// `<root>/agents/<name>/workdir`, after refusing anything in them that could lead
    /// libgit2 elsewhere (see the module documentation) and resetting its alternates to the
    /// mirror's objects.
    pub fn agent_repo(&self, name: &str) -> Result<Repository, WorkspaceError> {
        check_agent_name(name)?;
        let paths = self.agent_paths(name);
        let record = read_record(name, &paths)?;
        open_agent_repo(name, &paths, &record)
    }
}

pub(super) fn open_agent_repo(
    name: &str,
    paths: &AgentPaths,
    record: &Record,
) -> Result<Repository, WorkspaceError> {
    let refuse = |path: &Path, detail: String| WorkspaceError::AgentRepo {
        agent: name.to_owned(),
        path: path.to_path_buf(),
        detail,
    };
    for dir in [&paths.dir, &paths.repo, &paths.workdir] {
        real_dir(dir).map_err(|detail| refuse(dir, detail))?;
    }
    check_git_dir(&paths.repo).map_err(|detail| refuse(&paths.repo, detail))?;
    pin_alternates(&paths.repo, &record.mirror_objects)?;

    let repo = Repository::open_bare(&paths.repo)
        .and_then(|repo| repo.set_workdir(&paths.workdir, false).map(|()| repo))
        .map_err(|e| refuse(&paths.repo, e.message().to_owned()))?;
    // Read lazily by libgit2 from wherever they point; an ignore or attributes file is
    // the project's business, in the tree, not somewhere on the machine.
    let local = repo
        .config()
        .and_then(|c| c.open_level(ConfigLevel::Local))
        .map_err(|e| refuse(&paths.repo, e.message().to_owned()))?;
    for key in ["core.excludesFile", "core.attributesFile"] {
        if local.get_entry(key).is_ok() {
            return Err(refuse(&paths.repo, format!("its config sets {key}")));
        }
    }
    Ok(repo)
}

impl Workspace {
    /// The commit agent `name`'s checkout here started from (recorded when it was made).
    pub fn agent_base_commit(&self, name: &str) -> Result<String, WorkspaceError> {
        check_agent_name(name)?;
        Ok(read_record(name, &self.agent_paths(name))?.base.to_string())
    }
}

/// Reads the worker's record of agent `name` from `publish.git` (worker-written only).
pub(super) fn read_record(name: &str, paths: &AgentPaths) -> Result<Record, WorkspaceError> {
    let broken = |detail: String| WorkspaceError::AgentRepo {
        agent: name.to_owned(),
        path: paths.publish.clone(),
        detail,
    };
    if !paths.publish.is_dir() {
        return Err(broken(
            "the agent has no complete layout here (no publish.git); create its checkout first"
                .into(),
        ));
    }
    let read = |file: &str| {
        let path = paths.publish.join(file);
        fs::read_to_string(&path).map_err(|e| broken(format!("cannot read {file}: {e}")))
    };
    let head = read("HEAD")?;
    let branch = head
        .trim_end()
        .strip_prefix("ref: refs/heads/")
        .ok_or_else(|| broken(format!("HEAD is not a branch: {head:?}")))?
        .to_owned();
    let base = Oid::from_str(read(BASE_REF)?.trim()).map_err(|e| broken(e.message().into()))?;
    let alternates = read("objects/info/alternates")?;
    let mirror_objects = alternates
        .lines()
        .nth(1)
        .ok_or_else(|| broken("its alternates do not name the mirror".into()))?
        .into();
    Ok(Record {
        branch,
        base,
        mirror_objects,
    })
}

/// Refuses what would make libgit2 leave the git dir `dir` or block: see the module doc.
pub(super) fn check_git_dir(dir: &Path) -> Result<(), String> {
    if fs::symlink_metadata(dir.join("commondir")).is_ok() {
        return Err("it has a commondir, borrowing another repository's refs".into());
    }
    for name in GIT_DIR_FILES {
        let path = dir.join(name);
        if let Some(parent) = Path::new(name)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
        {
            real_dir_or_absent(&dir.join(parent))?;
        }
        regular_or_absent(&path)?;
    }
    for tree in GIT_DIR_TREES {
        let path = dir.join(tree);
        real_dir_or_absent(&path)?;
        if path.exists() {
            only_files_and_folders(&path)?;
        }
    }
    let config = fs::read(dir.join("config")).unwrap_or_default();
    if includes_other_files(&config) {
        return Err("its config includes other files".into());
    }
    Ok(())
}

/// Whether a git config text has an `[include]` or `[includeIf …]` section (git matches
/// section names without regard to case).
fn includes_other_files(config: &[u8]) -> bool {
    String::from_utf8_lossy(config).lines().any(|line| {
        let line = line.trim_start();
        line.strip_prefix('[').is_some_and(|rest| {
            rest.trim_start()
                .get(..7)
                .is_some_and(|s| s.eq_ignore_ascii_case("include"))
        })
    })
}

/// Sets the agent repository's alternates to the mirror's objects only, replacing (not
/// writing through) whatever is there.
fn pin_alternates(repo: &Path, mirror_objects: &Path) -> Result<(), WorkspaceError> {
    let file = repo.join("objects/info/alternates");
    let wanted = line(b"", mirror_objects);
    if fs::read(&file).is_ok_and(|current| current == wanted) {
        return Ok(());
    }
    let info = repo.join("objects/info");
    fs::create_dir_all(&info).map_err(io_error("create directory", &info))?;
    let staging = info.join(format!(".alternates.{}", std::process::id()));
    let _ = fs::remove_file(&staging);
    fs::write(&staging, wanted).map_err(io_error("write", &staging))?;
    fs::rename(&staging, &file).map_err(io_error("replace", &file))
}

pub(super) fn real_dir(path: &Path) -> Result<(), String> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(format!("{} is not a plain folder", path.display())),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

fn real_dir_or_absent(path: &Path) -> Result<(), String> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        _ => real_dir(path),
    }
}

/// A regular file of sane size (not a symlink, FIFO, socket or device), or nothing.
pub(super) fn regular_or_absent(path: &Path) -> Result<(), String> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("{}: {e}", path.display())),
        Ok(meta) if !meta.file_type().is_file() => Err(format!(
            "{} is {}, not a regular file",
            path.display(),
            kind(&meta.file_type())
        )),
        Ok(meta) if meta.len() > LARGEST_CONTROL_FILE => Err(format!(
            "{} is {} bytes, more than git control files may be",
            path.display(),
            meta.len()
        )),
        Ok(_) => Ok(()),
    }
}

/// Every entry below `dir` is a regular file or a real folder (readdir's types, no stat).
fn only_files_and_folders(dir: &Path) -> Result<(), String> {
    let entries = fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let kind_of = entry
            .file_type()
            .map_err(|e| format!("{}: {e}", entry.path().display()))?;
        if kind_of.is_dir() {
            only_files_and_folders(&entry.path())?;
        } else if !kind_of.is_file() {
            return Err(format!("{} is {}", entry.path().display(), kind(&kind_of)));
        }
    }
    Ok(())
}

/// What a path is, for a message ("a FIFO", "a symlink").
pub(super) fn kind(file_type: &fs::FileType) -> String {
    format!("a {}", crate::agent_files::FileKind::from(file_type))
}
