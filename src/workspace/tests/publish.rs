//! Publishing agent branches: what reaches the remote, and the fence that keeps a push from
//! overwriting a remote branch it did not make.

use super::*;

fn publish(ws: &Workspace, upstream: &Upstream, name: &str) -> Option<Published> {
    ws.publish_branch(
        KEY,
        name,
        &format!("agent/{name}"),
        upstream.remote.to_str().unwrap(),
    )
    .unwrap()
}

fn publish_puts_the_agents_work_on_the_remote(remote_spec: impl Fn(&Upstream) -> String) {
    let upstream = Upstream::new();
    let root = TempDir::new().unwrap();
    let ws = Workspace::new(root.path());
    let url = remote_spec(&upstream);
    ws.sync_mirror(KEY, &url).unwrap();
    let workdir = ws.create_worktree(KEY, "x", "agent/x", "main").unwrap();
    // One commit of the agent's own (with the git CLI), one file it left uncommitted.
    fs::write(workdir.join("committed.txt"), "by the agent\n").unwrap();
    git(&workdir, &["add", "committed.txt"]);
    git(&workdir, &["commit", "-q", "-m", "agent commit"]);
    fs::write(workdir.join("result.txt"), "v1\n").unwrap();
    let committed = ws.commit_all("x", "leftovers").unwrap().unwrap();

    let published = ws
        .publish_branch(KEY, "x", "agent/x", &url)
        .unwrap()
        .unwrap();
    assert_eq!(published.commit, committed);
    assert_eq!(
        tip(&upstream.remote, "refs/heads/agent/x").to_string(),
        committed
    );
    for (file, content) in [
        ("committed.txt", "by the agent\n"),
        ("result.txt", "v1\n"),
        ("README.md", "# demo\n"),
    ] {
        assert_eq!(
            upstream.remote_file("agent/x", file).as_deref(),
            Some(content),
            "{file}"
        );
    }
    let remote = Repository::open_bare(&upstream.remote).unwrap();
    let pushed = remote
        .find_commit(published.commit.parse().unwrap())
        .unwrap();
    assert_eq!(
        pushed.parent(0).unwrap().message().ok(),
        Some("agent commit\n")
    );

    // A resumed agent's later push fast-forwards the branch.
    fs::write(workdir.join("result.txt"), "v2\n").unwrap();
    let second = ws.commit_all("x", "v2").unwrap().unwrap();
    let published = ws
        .publish_branch(KEY, "x", "agent/x", &url)
        .unwrap()
        .unwrap();
    assert_eq!(published.commit, second);
    assert_eq!(
        upstream.remote_file("agent/x", "result.txt").as_deref(),
        Some("v2\n")
    );
    // Publishing again with nothing new is a no-op that reports the same commit.
    assert_eq!(
        ws.publish_branch(KEY, "x", "agent/x", &url).unwrap(),
        Some(Published { commit: second })
    );
}

#[test]
fn publish_branch_to_a_remote_given_as_a_path() {
    publish_puts_the_agents_work_on_the_remote(|u| u.remote.to_str().unwrap().to_owned());
}

#[test]
fn publish_branch_to_a_remote_given_as_a_file_url() {
    publish_puts_the_agents_work_on_the_remote(Upstream::file_url);
}

#[test]
fn publish_branch_without_commits_beyond_the_base_pushes_nothing() {
    let upstream = Upstream::new();
    let (_root, ws, _workdir) = workspace_with_agent(&upstream);
    assert_eq!(ws.commit_all("x", "nothing").unwrap(), None);
    assert_eq!(publish(&ws, &upstream, "x"), None);
    // Nor when the agent moved its branch back behind its base.
    let first = tip(&upstream.remote, "refs/heads/main");
    upstream.commit("later.txt", "later\n");
    ws.sync_mirror(KEY, upstream.remote.to_str().unwrap())
        .unwrap();
    let (_root2, ws2, workdir2) = workspace_with_agent(&upstream);
    git(&workdir2, &["reset", "-q", "--hard", &first.to_string()]);
    assert_eq!(publish(&ws2, &upstream, "x"), None);
    let remote = Repository::open_bare(&upstream.remote).unwrap();
    assert!(remote.find_reference("refs/heads/agent/x").is_err());
}

/// A remote branch that moved to a commit not in the history being pushed (nor anywhere in
/// this agent's) is left alone, with an error naming it.
#[test]
fn publish_branch_never_overwrites_a_remote_branch_that_moved_elsewhere() {
    let upstream = Upstream::new();
    let (_root, ws, workdir) = workspace_with_agent(&upstream);
    fs::write(workdir.join("result.txt"), "ours\n").unwrap();
    ws.commit_all("x", "ours").unwrap().unwrap();
    // The remote's agent/x is at a commit this run never saw.
    let theirs = upstream.commit("theirs.txt", "theirs\n");
    let remote = Repository::open_bare(&upstream.remote).unwrap();
    remote
        .reference("refs/heads/agent/x", theirs, true, "newer run")
        .unwrap();

    let err = ws
        .publish_branch(KEY, "x", "agent/x", upstream.remote.to_str().unwrap())
        .unwrap_err();
    assert!(
        matches!(err, WorkspaceError::RemoteBranchTaken { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("'agent/x'"), "{err}");
    assert_eq!(tip(&upstream.remote, "refs/heads/agent/x"), theirs);
}

/// An agent deleted and created again under the same name starts from the base: the branch
/// its predecessor pushed is not its own, and stays; its own work goes to another branch.
#[test]
fn publish_branch_leaves_the_branch_of_an_earlier_agent_of_the_same_name() {
    let upstream = Upstream::new();
    let (_root, ws, workdir) = workspace_with_agent(&upstream);
    fs::write(workdir.join("result.txt"), "first agent\n").unwrap();
    ws.commit_all("x", "first").unwrap().unwrap();
    let first = publish(&ws, &upstream, "x").unwrap();

    ws.remove_agent("x", "agent/x").unwrap();
    let workdir = ws.create_worktree(KEY, "x", "agent/x", "main").unwrap();
    fs::write(workdir.join("result.txt"), "second agent\n").unwrap();
    ws.commit_all("x", "second").unwrap().unwrap();
    let err = ws
        .publish_branch(KEY, "x", "agent/x", upstream.remote.to_str().unwrap())
        .unwrap_err();
    assert!(
        matches!(err, WorkspaceError::RemoteBranchTaken { .. }),
        "{err}"
    );
    // Its work goes to a branch of its own; a later run moves that one forward, still
    // leaving the earlier agent's alone.
    let url = upstream.remote.to_str().unwrap();
    for run in ["second agent", "second agent, resumed"] {
        fs::write(workdir.join("result.txt"), format!("{run}\n")).unwrap();
        ws.commit_all("x", run).unwrap();
        let pushed = ws.publish_branch_as(KEY, "x", "agent/x-2", url).unwrap();
        let own = tip(&upstream.remote, "refs/heads/agent/x-2").to_string();
        assert_eq!(Some(own), pushed.map(|p| p.commit), "{run}");
        let earlier = tip(&upstream.remote, "refs/heads/agent/x").to_string();
        assert_eq!(earlier, first.commit, "{run}");
    }
}

#[test]
fn publish_branch_reports_a_ref_the_remote_refused() {
    let upstream = Upstream::new();
    let (_root, ws, workdir) = workspace_with_agent(&upstream);
    fs::write(workdir.join("result.txt"), "work\n").unwrap();
    ws.commit_all("x", "work").unwrap().unwrap();
    // A held ref lock makes the remote refuse this one ref while accepting the pack.
    let locks = upstream.remote.join("refs/heads/agent");
    fs::create_dir_all(&locks).unwrap();
    fs::write(locks.join("x.lock"), "").unwrap();

    let err = ws
        .publish_branch(KEY, "x", "agent/x", upstream.remote.to_str().unwrap())
        .unwrap_err();
    assert!(matches!(err, WorkspaceError::PushRejected { .. }), "{err}");
    assert!(err.to_string().contains("agent/x"), "{err}");
    assert_eq!(upstream.remote_file("agent/x", "README.md"), None);
}

#[test]
fn publish_branch_of_another_project_or_branch_is_refused() {
    let upstream = Upstream::new();
    let (_root, ws, workdir) = workspace_with_agent(&upstream);
    fs::write(workdir.join("result.txt"), "work\n").unwrap();
    ws.commit_all("x", "work").unwrap().unwrap();
    ws.sync_mirror("other", upstream.remote.to_str().unwrap())
        .unwrap();
    let url = upstream.remote.to_str().unwrap();
    for (key, branch) in [("other", "agent/x"), (KEY, "main")] {
        let err = ws.publish_branch(key, "x", branch, url).unwrap_err();
        assert!(matches!(err, WorkspaceError::AgentRepo { .. }), "{err}");
    }
    let remote = Repository::open_bare(&upstream.remote).unwrap();
    assert!(remote.find_reference("refs/heads/agent/x").is_err());
}

/// The fence holds at the moment of the update, not only when the remote was read: a newer
/// run that moves the remote branch after this push judged it (the race of two runs of one
/// agent) keeps its commit, on a local remote as on git's protocols.
#[test]
fn publish_branch_never_overwrites_a_remote_branch_moved_during_the_push() {
    for remote_spec in [
        |u: &Upstream| u.remote.to_str().unwrap().to_owned(),
        Upstream::file_url,
    ] {
        let upstream = Upstream::new();
        let url = remote_spec(&upstream);
        let (_root, ws, workdir) = workspace_with_agent(&upstream);
        fs::write(workdir.join("result.txt"), "first\n").unwrap();
        ws.commit_all("x", "first").unwrap().unwrap();
        publish(&ws, &upstream, "x").unwrap();
        fs::write(workdir.join("result.txt"), "stale run\n").unwrap();
        ws.commit_all("x", "stale").unwrap().unwrap();

        let theirs = upstream.commit("theirs.txt", "newer run\n");
        let newer_run = || {
            let remote = Repository::open_bare(&upstream.remote).unwrap();
            remote
                .reference("refs/heads/agent/x", theirs, true, "newer run")
                .unwrap();
        };
        // The push loses the race: refused, the newer run's tip stays.
        let loses = |ws: &Workspace| {
            let err = ws
                .publish_branch_fenced(KEY, "x", "agent/x", "agent/x", &url, &newer_run)
                .unwrap_err();
            assert!(
                matches!(err, WorkspaceError::RemoteBranchNotOurs { .. }),
                "{url}: {err}"
            );
            assert_eq!(tip(&upstream.remote, "refs/heads/agent/x"), theirs, "{url}");
        };
        loses(&ws);
        // Nothing of the attempt is left on the remote but its objects.
        let remote = Repository::open_bare(&upstream.remote).unwrap();
        let refs: Vec<String> = remote
            .references()
            .unwrap()
            .map(|r| r.unwrap().name().unwrap().to_owned())
            .collect();
        assert!(
            refs.iter().all(|r| !r.starts_with("refs/agentfleet/")),
            "{refs:?}"
        );

        // A branch created meanwhile by another run is not overwritten either.
        let (_root2, ws2, workdir2) = workspace_with_agent(&upstream);
        fs::write(workdir2.join("result.txt"), "ours\n").unwrap();
        ws2.commit_all("x", "ours").unwrap().unwrap();
        remote
            .find_reference("refs/heads/agent/x")
            .unwrap()
            .delete()
            .unwrap();
        loses(&ws2);
    }
}

#[test]
fn fetches_from_a_local_remote_never_trip_over_a_publish_in_progress() {
    // One node publishes agents' branches while another fetches the same local remote: a
    // fetch lists the remote's refs and reads each, so a ref that comes and goes during a
    // publish made it fail ("reference ... not found").
    let upstream = Upstream::new();
    let url = upstream.remote.to_str().unwrap().to_owned();
    let publisher_root = TempDir::new().unwrap();
    let publisher = Workspace::new(publisher_root.path());
    publisher.sync_mirror(KEY, &url).unwrap();
    let names: Vec<String> = (0..40).map(|i| format!("p{i}")).collect();
    for name in &names {
        let workdir = publisher
            .create_worktree(KEY, name, &format!("agent/{name}"), "main")
            .unwrap();
        fs::write(workdir.join("work.txt"), format!("{name}\n")).unwrap();
        publisher.commit_all(name, "work").unwrap().unwrap();
    }
    let fetcher_root = TempDir::new().unwrap();
    let fetcher = Workspace::new(fetcher_root.path());
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let fetching = {
        let (done, url) = (done.clone(), url.clone());
        std::thread::spawn(move || {
            let mut fetches = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                fetcher.sync_mirror(KEY, &url).unwrap();
                fetches += 1;
            }
            fetches
        })
    };
    for name in &names {
        publish(&publisher, &upstream, name).expect("published");
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(fetching.join().expect("no fetch failed") > 0);
    // Nothing but the branches is left on the remote.
    let remote = Repository::open_bare(&upstream.remote).unwrap();
    let refs: Vec<String> = remote
        .references()
        .unwrap()
        .flatten()
        .filter_map(|r| r.name().ok().map(str::to_owned))
        .filter(|r| !r.starts_with("refs/heads/"))
        .collect();
    assert!(refs.is_empty(), "{refs:?}");
    for name in &names {
        assert_eq!(
            upstream.remote_file(&format!("agent/{name}"), "work.txt"),
            Some(format!("{name}\n"))
        );
    }
}
