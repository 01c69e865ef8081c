//! What a hostile agent can write (its checkout and its repository, anything in them) must
//! not steer the worker to another agent's work, another remote, another branch, or a
//! hang; and an agent's whole life leaves the shared mirror as it found it.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

use super::*;

fn remote_refs(remote: &Path) -> BTreeMap<String, git2::Oid> {
    let repo = Repository::open_bare(remote).unwrap();
    repo.references()
        .unwrap()
        .flatten()
        .map(|r| (r.name().unwrap().to_owned(), r.target().unwrap()))
        .collect()
}

/// The victim's state the attacker must not change: its branch tip, its index, and its
/// uncommitted secret still uncommitted.
fn victim_state(root: &Path, y: &Path) -> (git2::Oid, String, Vec<u8>) {
    // Without optional locks, git status leaves the index as it is.
    let status = git(y, &["--no-optional-locks", "status", "--porcelain"]);
    (
        tip(&root.join("agents/y/repo"), "refs/heads/agent/y"),
        status,
        fs::read(root.join("agents/y/repo/index")).unwrap(),
    )
}

#[test]
fn a_repointed_git_file_leads_the_worker_nowhere_but_the_agents_own_repo() {
    let upstream = Upstream::new();
    let (root, ws, x, y) = two_agents(&upstream);
    fs::write(y.join("committed-secret.txt"), "y's commit\n").unwrap();
    git(&y, &["add", "."]);
    git(&y, &["commit", "-q", "-m", "y's work"]);
    fs::write(y.join("secret.txt"), "y's uncommitted secret\n").unwrap();
    let before = victim_state(root.path(), &y);
    let y_repo = root.path().join("agents/y/repo");

    // Straight at the victim's repository, then at a fake admin dir naming it.
    let fake = x.join(".fake");
    fs::create_dir(&fake).unwrap();
    fs::write(fake.join("HEAD"), "ref: refs/heads/agent/y\n").unwrap();
    fs::write(fake.join("commondir"), format!("{}\n", y_repo.display())).unwrap();
    fs::write(
        fake.join("gitdir"),
        format!("{}\n", y.join(".git").display()),
    )
    .unwrap();
    for (round, gitfile) in [
        format!("gitdir: {}\n", y_repo.display()),
        "gitdir: .fake\n".to_owned(),
    ]
    .into_iter()
    .enumerate()
    {
        fs::write(x.join(".git"), gitfile).unwrap();
        fs::write(x.join("x.txt"), format!("x's work {round}\n")).unwrap();
        ws.commit_all("x", "x's work").unwrap().unwrap();
        publish_x(&ws, &upstream).unwrap().unwrap();

        assert_eq!(
            upstream.remote_file("agent/x", "x.txt"),
            Some(format!("x's work {round}\n"))
        );
        for leaked in ["secret.txt", "committed-secret.txt"] {
            assert_eq!(upstream.remote_file("agent/x", leaked), None, "{leaked}");
        }
        assert_eq!(victim_state(root.path(), &y), before);
        assert!(!remote_refs(&upstream.remote).contains_key("refs/heads/agent/y"));
    }
}

#[test]
fn the_agents_config_and_hooks_do_not_steer_the_push() {
    let upstream = Upstream::new();
    let (root, ws, x) = workspace_with_agent(&upstream);
    let evil = root.path().join("evil.git");
    Repository::init_bare(&evil).unwrap();
    let marker = root.path().join("hook-ran");
    let hooks = root.path().join("agents/x/repo/hooks");
    fs::create_dir_all(&hooks).unwrap();
    for hook in [
        "pre-push",
        "post-commit",
        "pre-commit",
        "reference-transaction",
    ] {
        let script = hooks.join(hook);
        fs::write(
            &script,
            format!("#!/bin/sh\necho {hook} >> {}\n", marker.display()),
        )
        .unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let remote = upstream.remote.display().to_string();
    let evil_url = evil.display().to_string();
    let mut config = fs::read_to_string(root.path().join("agents/x/repo/config")).unwrap();
    config.push_str(&format!(
        "[url \"{evil_url}\"]\n\tinsteadOf = {remote}\n\tpushInsteadOf = {remote}\n\
         [remote \"origin\"]\n\turl = {evil_url}\n\tpushurl = {evil_url}\n\
         \tfetch = +refs/heads/*:refs/remotes/origin/*\n\
         [core]\n\thooksPath = {}\n\
         [credential]\n\thelper = !echo {} >> {}\n",
        hooks.display(),
        "helper",
        marker.display()
    ));
    fs::write(root.path().join("agents/x/repo/config"), config).unwrap();

    fs::write(x.join("work.txt"), "work\n").unwrap();
    ws.commit_all("x", "work").unwrap().unwrap();
    publish_x(&ws, &upstream).unwrap().unwrap();

    assert_eq!(
        upstream.remote_file("agent/x", "work.txt").as_deref(),
        Some("work\n")
    );
    assert!(remote_refs(&evil).is_empty(), "{:?}", remote_refs(&evil));
    let evil_objects = walk(&evil.join("objects"));
    assert!(
        evil_objects
            .keys()
            .all(|p| p.starts_with("info") || p.starts_with("pack")),
        "{evil_objects:?}"
    );
    assert!(!marker.exists(), "{}", fs::read_to_string(&marker).unwrap());
}

#[test]
fn refs_the_agent_moves_in_its_own_repo_are_not_pushed() {
    let upstream = Upstream::new();
    let (root, ws, x, y) = two_agents(&upstream);
    fs::write(y.join("y.txt"), "y\n").unwrap();
    ws.commit_all("y", "y's work").unwrap().unwrap();
    ws.publish_branch(KEY, "y", "agent/y", upstream.remote.to_str().unwrap())
        .unwrap()
        .unwrap();
    let before = remote_refs(&upstream.remote);

    fs::write(x.join("x.txt"), "planted\n").unwrap();
    git(&x, &["add", "."]);
    git(&x, &["commit", "-q", "-m", "planted"]);
    git(&x, &["branch", "-f", "main"]);
    git(&x, &["update-ref", "refs/heads/agent/y", "HEAD"]);
    git(&x, &["tag", "v1"]);
    ws.commit_all("x", "nothing more").unwrap();
    let pushed = publish_x(&ws, &upstream).unwrap().unwrap();

    let mut expected = before;
    expected.insert("refs/heads/agent/x".into(), pushed.commit.parse().unwrap());
    assert_eq!(remote_refs(&upstream.remote), expected);
    assert_eq!(upstream.remote_file("main", "x.txt"), None);
    assert_eq!(upstream.remote_file("agent/y", "x.txt"), None);
    drop(root);
}

/// Every file under `dir`, by relative path, with its bytes (a symlink as its target).
fn walk(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in fs::read_dir(&folder).unwrap().flatten() {
            let path = entry.path();
            let kind = entry.file_type().unwrap();
            let relative = path.strip_prefix(dir).unwrap().to_path_buf();
            if kind.is_dir() {
                files.insert(relative, b"<dir>".to_vec());
                folders.push(path);
            } else if kind.is_symlink() {
                let target = fs::read_link(&path).unwrap();
                files.insert(relative, target.as_os_str().as_encoded_bytes().to_vec());
            } else {
                files.insert(relative, fs::read(&path).unwrap());
            }
        }
    }
    files
}

#[test]
fn an_agents_whole_life_leaves_the_mirror_untouched() {
    let upstream = Upstream::new();
    let root = TempDir::new().unwrap();
    let ws = Workspace::new(root.path());
    let mirror = ws
        .sync_mirror(KEY, upstream.remote.to_str().unwrap())
        .unwrap();
    let before = walk(&mirror);

    let x = ws.create_worktree(KEY, "x", "agent/x", "main").unwrap();
    fs::write(x.join("own.txt"), "committed by the agent\n").unwrap();
    git(&x, &["add", "."]);
    git(&x, &["commit", "-q", "-m", "own"]);
    git(&x, &["gc", "-q"]);
    fs::write(x.join("left.txt"), "left for the worker\n").unwrap();
    ws.commit_all("x", "left").unwrap().unwrap();
    ws.publish_branch(KEY, "x", "agent/x", upstream.remote.to_str().unwrap())
        .unwrap()
        .unwrap();
    ws.remove_agent("x", "agent/x").unwrap();

    assert_eq!(walk(&mirror), before);
}
