//! An agent's work as a diff: the files its pushed commit changed against the commit its
//! checkout started from, with counts, and the unified patch, capped in size.
//!
//! The diff is read from a bare cache of the project's remote (a mirror made by the same
//! code as a worker's, under whatever root the caller gives): the process that answers may
//! run on another machine than the worker, and the agent's checkout may be gone. The cache
//! fetches the agent's branch only when it lacks the pushed commit, so asking again costs
//! no network round trip.

use git2::{Delta, DiffFindOptions, DiffOptions, Oid, Patch, Repository};
use serde::{Deserialize, Serialize};

use super::mirror::open_mirror;
use super::{Workspace, WorkspaceError, check_branch, check_project_key};

/// What to diff: a pushed commit of a branch against the commit it started from.
#[derive(Debug, Clone)]
pub struct DiffTarget<'a> {
    pub project_key: &'a str,
    /// The project's remote URL.
    pub remote: &'a str,
    /// The remote branch the commit was pushed to.
    pub branch: &'a str,
    pub base: &'a str,
    pub head: &'a str,
    /// Largest patch returned, in bytes; a longer one is cut at a line's end.
    pub max_patch_bytes: usize,
    /// Whether to build the patch at all (false: the files and counts only).
    pub with_patch: bool,
}

/// How a file changed between the two commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FileStatus {
    Added,
    Modified,
    Deleted,
    Renamed,
    Copied,
    /// A file became a symlink or the reverse, or changed its mode only.
    TypeChanged,
}

impl FileStatus {
    /// One letter, as `git diff --name-status` prints it.
    pub fn letter(self) -> char {
        match self {
            Self::Added => 'A',
            Self::Modified => 'M',
            Self::Deleted => 'D',
            Self::Renamed => 'R',
            Self::Copied => 'C',
            Self::TypeChanged => 'T',
        }
    }
}

/// One file the agent's work changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FileChange {
    /// The file's path after the change (before it, for a deleted file).
    pub path: String,
    /// Its path before a rename or copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_path: Option<String>,
    pub status: FileStatus,
    /// Lines added (0 for a binary file).
    pub additions: u64,
    /// Lines removed (0 for a binary file).
    pub deletions: u64,
    pub binary: bool,
}

/// The files a diff changed, with totals, and its patch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChangeSet {
    pub files: Vec<FileChange>,
    /// Lines added in all files.
    pub additions: u64,
    /// Lines removed in all files.
    pub deletions: u64,
    /// The unified patch (`git diff` format); `None` when only the files were asked for.
    pub patch: Option<String>,
    /// Whether the patch was cut at the size cap (the files and counts are always whole).
    pub truncated: bool,
}

impl Workspace {
    /// The diff of `target.head` against `target.base`, from this workspace's mirror of the
    /// project, which is made or fetched (the branch alone) when it lacks `head`.
    #[tracing::instrument(skip_all, fields(project = target.project_key, branch = target.branch))]
    pub fn branch_diff(&self, target: &DiffTarget<'_>) -> Result<ChangeSet, WorkspaceError> {
        check_project_key(target.project_key)?;
        check_branch("branch", target.branch)?;
        let base = parse_commit_id("base commit", target.base)?;
        let head = parse_commit_id("pushed commit", target.head)?;
        let path = self.mirror_path(target.project_key);
        let cached = path.exists()
            && open_mirror(target.project_key, &path)
                .is_ok_and(|repo| has_commits(&repo, &[base, head]));
        if !cached {
            self.sync_mirror_branch(target.project_key, target.remote, target.branch)?;
        }
        let repo = open_mirror(target.project_key, &path)?;
        for (what, id) in [("base", base), ("pushed", head)] {
            if repo.find_commit(id).is_err() {
                return Err(WorkspaceError::CommitMissing {
                    what,
                    commit: id.to_string(),
                    branch: target.branch.to_owned(),
                });
            }
        }
        change_set(&repo, base, head, target.max_patch_bytes, target.with_patch).map_err(|e| {
            WorkspaceError::Mirror {
                project_key: target.project_key.to_owned(),
                path: path.clone(),
                detail: e.message().to_owned(),
            }
        })
    }
}

fn parse_commit_id(what: &'static str, id: &str) -> Result<Oid, WorkspaceError> {
    let invalid = || WorkspaceError::InvalidName {
        what,
        name: id.to_owned(),
        reason: "is not a full commit id".into(),
    };
    if id.len() != 40 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid());
    }
    Oid::from_str(id).map_err(|_| invalid())
}

fn has_commits(repo: &Repository, ids: &[Oid]) -> bool {
    ids.iter().all(|id| repo.find_commit(*id).is_ok())
}

/// The files, counts and (capped) patch of `head` against `base`, renames found.
pub(super) fn change_set(
    repo: &Repository,
    base: Oid,
    head: Oid,
    max_patch_bytes: usize,
    with_patch: bool,
) -> Result<ChangeSet, git2::Error> {
    let old = repo.find_commit(base)?.tree()?;
    let new = repo.find_commit(head)?.tree()?;
    let mut options = DiffOptions::new();
    options.ignore_submodules(true);
    let mut diff = repo.diff_tree_to_tree(Some(&old), Some(&new), Some(&mut options))?;
    diff.find_similar(Some(DiffFindOptions::new().renames(true)))?;

    let mut set = ChangeSet::default();
    let mut patch = with_patch.then(String::new);
    for index in 0..diff.deltas().len() {
        let Some(delta) = diff.get_delta(index) else {
            continue;
        };
        let status = match delta.status() {
            Delta::Added | Delta::Untracked => FileStatus::Added,
            Delta::Deleted => FileStatus::Deleted,
            Delta::Renamed => FileStatus::Renamed,
            Delta::Copied => FileStatus::Copied,
            Delta::Typechange => FileStatus::TypeChanged,
            Delta::Modified => FileStatus::Modified,
            // Unmodified, ignored, unreadable, conflicted: not in a tree-to-tree diff.
            _ => continue,
        };
        let path_of = |file: git2::DiffFile<'_>| {
            file.path()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let (old_path, new_path) = (path_of(delta.old_file()), path_of(delta.new_file()));
        let file_patch = Patch::from_diff(&diff, index)?;
        let binary = delta.flags().is_binary()
            || file_patch
                .as_ref()
                .is_some_and(|p| p.delta().flags().is_binary());
        let (additions, deletions) = match &file_patch {
            Some(p) if !binary => {
                let (_, added, removed) = p.line_stats()?;
                (added as u64, removed as u64)
            }
            _ => (0, 0),
        };
        set.additions += additions;
        set.deletions += deletions;
        set.files.push(FileChange {
            path: if status == FileStatus::Deleted {
                old_path.clone()
            } else {
                new_path.clone()
            },
            old_path: matches!(status, FileStatus::Renamed | FileStatus::Copied)
                .then_some(old_path),
            status,
            additions,
            deletions,
            binary,
        });
        if let (Some(text), Some(mut file_patch)) = (patch.as_mut(), file_patch)
            && !set.truncated
        {
            let buf = file_patch.to_buf()?;
            set.truncated = !append_capped(text, &String::from_utf8_lossy(&buf), max_patch_bytes);
        }
    }
    set.patch = patch;
    Ok(set)
}

/// Appends `more` to `text` as far as `cap` bytes allow, cutting at a line's end; false
/// when it had to cut.
fn append_capped(text: &mut String, more: &str, cap: usize) -> bool {
    let room = cap.saturating_sub(text.len());
    if more.len() <= room {
        text.push_str(more);
        return true;
    }
    // A line's end is a char boundary: the cut text stays valid UTF-8.
    let cut = more.as_bytes()[..room]
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    text.push_str(&more[..cut]);
    false
}

#[cfg(test)]
mod tests {
    use super::append_capped;

    #[test]
    fn a_capped_patch_ends_at_a_whole_line() {
        let mut text = String::new();
        assert!(append_capped(&mut text, "a\nb\n", 10));
        assert!(!append_capped(&mut text, "ccc\ndddd\n", 10));
        assert_eq!(text, "a\nb\nccc\n");
        let mut text = String::from("12345678");
        assert!(!append_capped(&mut text, "long line\n", 10));
        assert_eq!(text, "12345678", "no part of a line that does not fit");
    }

    #[test]
    fn a_cut_never_splits_a_character() {
        let mut text = String::new();
        assert!(!append_capped(&mut text, "é\néé\n", 5));
        assert_eq!(text, "é\n");
    }
}
