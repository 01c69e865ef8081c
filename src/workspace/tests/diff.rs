//! An agent's pushed work as a diff, read through a cache of the remote that never saw the
//! agent's checkout.

use super::*;

/// Agent `x` renames `notes.txt`, adds a binary file and edits `README.md`; its branch is
/// pushed. Returns the base and pushed commits.
fn pushed_work(upstream: &Upstream) -> (TempDir, String, String) {
    upstream.commit("notes.txt", "one\ntwo\nthree\nfour\nfive\n");
    let (root, ws, workdir) = workspace_with_agent(upstream);
    fs::rename(workdir.join("notes.txt"), workdir.join("moved.txt")).unwrap();
    fs::write(workdir.join("blob.bin"), [0u8, 159, 146, 150, 0, 1]).unwrap();
    fs::write(workdir.join("README.md"), "# demo\nmore\n").unwrap();
    ws.commit_all("x", "work").unwrap();
    let url = upstream.file_url();
    let published = ws.publish_branch(KEY, "x", "agent/x", &url).unwrap();
    let base = ws.agent_base_commit("x").unwrap();
    (root, base, published.expect("pushed").commit)
}

fn target<'a>(url: &'a str, base: &'a str, head: &'a str, cap: usize) -> DiffTarget<'a> {
    DiffTarget {
        project_key: KEY,
        remote: url,
        branch: "agent/x",
        base,
        head,
        max_patch_bytes: cap,
        with_patch: true,
    }
}

#[test]
fn a_diff_finds_renames_and_binary_files_from_the_remote() {
    let upstream = Upstream::new();
    let (_root, base, head) = pushed_work(&upstream);
    let cache_dir = TempDir::new().unwrap();
    let cache = Workspace::new(cache_dir.path());
    let url = upstream.file_url();
    let set = cache
        .branch_diff(&target(&url, &base, &head, 1 << 20))
        .unwrap();
    let by_path = |p: &str| set.files.iter().find(|f| f.path == p).unwrap().clone();
    assert_eq!(set.files.len(), 3, "{:?}", set.files);
    let moved = by_path("moved.txt");
    assert_eq!(moved.status, FileStatus::Renamed);
    assert_eq!(moved.old_path.as_deref(), Some("notes.txt"));
    assert_eq!((moved.additions, moved.deletions), (0, 0));
    let blob = by_path("blob.bin");
    assert_eq!((blob.status, blob.binary), (FileStatus::Added, true));
    let readme = by_path("README.md");
    assert_eq!(
        (readme.status, readme.additions, readme.deletions),
        (FileStatus::Modified, 1, 0)
    );
    let patch = set.patch.unwrap();
    assert!(patch.contains("rename from notes.txt"), "{patch}");
    assert!(!set.truncated);

    // Asked again, the cache answers without the remote.
    let moved_remote = upstream.remote.with_extension("moved");
    fs::rename(&upstream.remote, &moved_remote).unwrap();
    let again = cache
        .branch_diff(&target(&url, &base, &head, 1 << 20))
        .unwrap();
    assert_eq!(again.files, set.files);
    fs::rename(&moved_remote, &upstream.remote).unwrap();
}

#[test]
fn a_pushed_commit_gone_from_the_remote_is_named() {
    let upstream = Upstream::new();
    let (_root, base, head) = pushed_work(&upstream);
    crate::workspace::delete_remote_branch(&upstream.file_url(), "agent/x").unwrap();
    let cache_dir = TempDir::new().unwrap();
    let cache = Workspace::new(cache_dir.path());
    let url = upstream.file_url();
    let err = cache
        .branch_diff(&target(&url, &base, &head, 1 << 20))
        .unwrap_err();
    assert!(
        matches!(&err, WorkspaceError::CommitMissing { commit, .. } if *commit == head),
        "{err}"
    );
    let err = cache
        .branch_diff(&target(&url, "HEAD~1", &head, 10))
        .unwrap_err();
    assert!(err.to_string().contains("base commit"), "{err}");
}
