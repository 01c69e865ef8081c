//! Files an agent can plant where libgit2 reads by name or follows links (FIFOs, symlinks,
//! huge files, links into another agent's repository): the worker neither hangs on them nor
//! carries another agent's work out through them.

use std::os::unix::fs::symlink;

use nix::sys::stat::Mode;

use super::*;

#[test]
fn special_files_in_the_workdir_neither_hang_the_worker_nor_leak() {
    let upstream = Upstream::new();
    let (root, ws, x, y) = two_agents(&upstream);
    fs::write(y.join("secret.txt"), "y's secret\n").unwrap();
    nix::unistd::mkfifo(&x.join("pipe"), Mode::S_IRWXU).unwrap();
    symlink(y.join("secret.txt"), x.join("link")).unwrap();
    symlink(&y, x.join("folder-link")).unwrap();
    let big = fs::File::create(x.join("big.bin")).unwrap();
    big.set_len(LARGEST_FILE + 1).unwrap(); // sparse: costs no disk
    fs::write(x.join("work.txt"), "work\n").unwrap();

    let worker = ws.clone();
    within(move || worker.commit_all("x", "work"))
        .unwrap()
        .unwrap();
    let paths = head_tree_paths(&x);
    for present in ["link", "folder-link", "work.txt"] {
        assert!(paths.contains(&present.to_owned()), "{paths:?}");
    }
    for absent in ["pipe", "big.bin", "folder-link/secret.txt"] {
        assert!(!paths.contains(&absent.to_owned()), "{paths:?}");
    }
    let repo = agent_repo(root.path(), "x");
    let tree = repo.head().unwrap().peel_to_tree().unwrap();
    let link = tree.get_name("link").unwrap();
    assert_eq!(link.filemode(), 0o120000);
    let blob = repo.find_blob(link.id()).unwrap();
    assert_eq!(
        blob.content(),
        y.join("secret.txt").as_os_str().as_encoded_bytes()
    );

    // Where libgit2 opens a file by name, a FIFO (or a link to one) is refused, not opened.
    fs::create_dir(x.join("sub")).unwrap();
    let fifo = root.path().join("agents/x/tmp-fifo");
    nix::unistd::mkfifo(&fifo, Mode::S_IRWXU).unwrap();
    let repo_dir = root.path().join("agents/x/repo");
    let config = fs::read_to_string(repo_dir.join("config")).unwrap();
    type Plant = Box<dyn Fn() + Send>;
    let plants: Vec<(&str, Plant, Plant)> = vec![
        (
            "sub/.gitignore as a FIFO",
            Box::new({
                let x = x.clone();
                move || nix::unistd::mkfifo(&x.join("sub/.gitignore"), Mode::S_IRWXU).unwrap()
            }),
            Box::new({
                let x = x.clone();
                move || fs::remove_file(x.join("sub/.gitignore")).unwrap()
            }),
        ),
        (
            ".gitattributes linked to a FIFO",
            Box::new({
                let (x, fifo) = (x.clone(), fifo.clone());
                move || symlink(&fifo, x.join(".gitattributes")).unwrap()
            }),
            Box::new({
                let x = x.clone();
                move || fs::remove_file(x.join(".gitattributes")).unwrap()
            }),
        ),
        (
            "a config including a FIFO",
            Box::new({
                let (repo_dir, fifo, config) = (repo_dir.clone(), fifo.clone(), config.clone());
                move || {
                    let text = format!("{config}[Include]\n\tpath = {}\n", fifo.display());
                    fs::write(repo_dir.join("config"), text).unwrap()
                }
            }),
            Box::new({
                let (repo_dir, config) = (repo_dir.clone(), config.clone());
                move || fs::write(repo_dir.join("config"), &config).unwrap()
            }),
        ),
        (
            "the branch ref as a FIFO",
            Box::new({
                let repo_dir = repo_dir.clone();
                move || {
                    let r = repo_dir.join("refs/heads/agent/x");
                    fs::rename(&r, repo_dir.join("saved-ref")).unwrap();
                    nix::unistd::mkfifo(&r, Mode::S_IRWXU).unwrap()
                }
            }),
            Box::new({
                let repo_dir = repo_dir.clone();
                move || {
                    let r = repo_dir.join("refs/heads/agent/x");
                    fs::remove_file(&r).unwrap();
                    fs::rename(repo_dir.join("saved-ref"), &r).unwrap()
                }
            }),
        ),
        (
            "a nested .git naming a git dir elsewhere",
            Box::new({
                let (x, y) = (x.clone(), y.clone());
                move || fs::write(x.join("sub/.git"), format!("gitdir: {}\n", y.display())).unwrap()
            }),
            Box::new({
                let x = x.clone();
                move || fs::remove_file(x.join("sub/.git")).unwrap()
            }),
        ),
    ];
    for (what, plant, undo) in plants {
        plant();
        let worker = ws.clone();
        let err = within(move || worker.commit_all("x", "more")).unwrap_err();
        assert!(
            matches!(err, WorkspaceError::AgentRepo { .. }),
            "{what}: {err}"
        );
        let worker = ws.clone();
        let url = upstream.remote.to_str().unwrap().to_owned();
        if what.contains("ref") || what.contains("config") {
            let err = within(move || worker.publish_branch(KEY, "x", "agent/x", &url));
            assert!(
                matches!(err, Err(WorkspaceError::AgentRepo { .. })),
                "{what}: {err:?}"
            );
        }
        undo();
    }
    ws.commit_all("x", "after").unwrap();
}

/// The agent's repository borrowing the victim's objects, or its refs, or the victim's
/// whole repository: refused, or undone, before the worker reads anything through it.
#[test]
fn links_from_the_agents_repo_to_another_agents_are_refused() {
    let upstream = Upstream::new();
    let (root, ws, x, y) = two_agents(&upstream);
    fs::write(y.join("secret.txt"), "y's secret\n").unwrap();
    let y_tip = ws.commit_all("y", "y's work").unwrap().unwrap();
    fs::write(x.join("x.txt"), "x\n").unwrap();
    ws.commit_all("x", "x's work").unwrap().unwrap();
    let x_repo = root.path().join("agents/x/repo");
    let y_repo = root.path().join("agents/y/repo");
    let alternates = x_repo.join("objects/info/alternates");
    let pinned = fs::read(&alternates).unwrap();
    let x_ref = x_repo.join("refs/heads/agent/x");
    let saved_ref = fs::read(&x_ref).unwrap();

    // Borrowing y's objects and naming y's tip in packed-refs: the alternates are reset,
    // so y's commit is simply not there.
    fs::write(
        &alternates,
        format!("{}\n", y_repo.join("objects").display()),
    )
    .unwrap();
    fs::remove_file(&x_ref).unwrap();
    fs::write(
        x_repo.join("packed-refs"),
        format!("{y_tip} refs/heads/agent/x\n"),
    )
    .unwrap();
    assert!(publish_x(&ws, &upstream).is_err());
    assert_eq!(fs::read(&alternates).unwrap(), pinned);
    fs::remove_file(x_repo.join("packed-refs")).unwrap();

    // The ref as a symlink to y's, or y's repository as x's commondir or object folder.
    symlink(y_repo.join("refs/heads/agent/y"), &x_ref).unwrap();
    assert!(matches!(
        publish_x(&ws, &upstream),
        Err(WorkspaceError::AgentRepo { .. })
    ));
    fs::remove_file(&x_ref).unwrap();
    fs::write(&x_ref, &saved_ref).unwrap();
    fs::write(x_repo.join("commondir"), format!("{}\n", y_repo.display())).unwrap();
    assert!(matches!(
        publish_x(&ws, &upstream),
        Err(WorkspaceError::AgentRepo { .. })
    ));
    fs::remove_file(x_repo.join("commondir")).unwrap();
    let fan_out = y_tip[..2].to_owned();
    let x_fan_out = x_repo.join("objects").join(&fan_out);
    if x_fan_out.exists() {
        fs::rename(&x_fan_out, x_repo.join("saved-fan-out")).unwrap();
    }
    symlink(y_repo.join("objects").join(&fan_out), &x_fan_out).unwrap();
    assert!(matches!(
        ws.commit_all("x", "more"),
        Err(WorkspaceError::AgentRepo { .. })
    ));
    fs::remove_file(&x_fan_out).unwrap();
    if x_repo.join("saved-fan-out").exists() {
        fs::rename(x_repo.join("saved-fan-out"), &x_fan_out).unwrap();
    }

    assert_eq!(upstream.remote_file("agent/x", "secret.txt"), None);
    publish_x(&ws, &upstream).unwrap().unwrap();
    assert_eq!(
        upstream.remote_file("agent/x", "x.txt").as_deref(),
        Some("x\n")
    );
    assert_eq!(upstream.remote_file("agent/x", "secret.txt"), None);
}
