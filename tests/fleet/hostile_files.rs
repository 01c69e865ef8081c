//! Hostile agents and repositories, end to end (Postgres, Redis, a worker process and the
//! scripted claude stand-in): what an agent plants where the worker reads — a FIFO, or a
//! symlink to a forged result, at its signal file — is refused without blocking the worker
//! or `agentfleet stop`, and a repository that commits `.agentfleet` as a symlink elsewhere
//! does not make the worker write input files (or remove anything) outside the checkout.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agentfleet::domain::{Agent, AgentStatus};

use crate::common::env::{TestEnv, assert_status};

const FORGED: &str = r#"{"status":"done","result":"forged"}"#;

/// The reasons of the agent's `signal.ignored` events.
async fn ignored_reasons(env: &TestEnv, agent: &Agent) -> Vec<String> {
    env.store()
        .await
        .events_after(agent.id, 0)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "signal.ignored")
        .filter_map(|e| e.data["reason"].as_str().map(str::to_string))
        .collect()
}

/// Adds a commit to `main` of the bare `remote` with a symlink `name` → `target`.
fn commit_symlink(remote: &Path, name: &str, target: &Path) {
    let repo = git2::Repository::open_bare(remote).unwrap();
    let parent = repo
        .find_reference("refs/heads/main")
        .unwrap()
        .peel_to_commit()
        .unwrap();
    let link = repo.blob(target.as_os_str().as_bytes()).unwrap();
    let mut tb = repo.treebuilder(Some(&parent.tree().unwrap())).unwrap();
    tb.insert(name, link, 0o120000).unwrap();
    let tree = repo.find_tree(tb.write().unwrap()).unwrap();
    let sig = git2::Signature::now("test", "test@localhost").unwrap();
    repo.commit(
        Some("refs/heads/main"),
        &sig,
        &sig,
        "a symlink",
        &tree,
        &[&parent],
    )
    .unwrap();
}

/// Every path under `dir` with its contents (None for folders).
fn snapshot(dir: &Path) -> Vec<(PathBuf, Option<Vec<u8>>)> {
    let mut seen = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                seen.push((path.clone(), None));
                stack.push(path);
            } else {
                seen.push((path.clone(), std::fs::read(&path).ok()));
            }
        }
    }
    seen.sort();
    seen
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fifo_at_the_signal_file_is_refused_and_the_agent_ends_promptly() {
    let mut env = TestEnv::new().await;
    env.start_worker(&[]);
    let started = Instant::now();
    let agent = env.spawn(
        &[],
        "plant a fifo\n#run mkdir -p .agentfleet/output && mkfifo .agentfleet/output/signal.json",
    );
    let done = env.wait_final(agent.id, Duration::from_secs(30)).await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "finalising waited on the FIFO: {:?}",
        started.elapsed()
    );
    // The stream decides, and the agent's error and events say why the file was not used.
    assert_status(&done, AgentStatus::Completed);
    assert_eq!(done.result.as_deref(), Some("All done."));
    let error = done.error.clone().unwrap_or_default();
    assert!(
        error.contains("signal file ignored") && error.contains("FIFO"),
        "{error}"
    );
    let reasons = ignored_reasons(&env, &done).await;
    assert!(reasons.iter().any(|r| r.contains("FIFO")), "{reasons:?}");
    env.stop_workers();
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_returns_promptly_for_an_agent_that_planted_a_fifo() {
    let mut env = TestEnv::new().await;
    env.set_env("AGENTFLEET__WORKER__STOP_GRACE", "1s");
    env.start_worker(&[]);
    let agent = env.spawn(
        &[],
        "plant a fifo and keep running\n\
         #run mkdir -p .agentfleet/output && mkfifo .agentfleet/output/signal.json\n#hold 60",
    );
    let running = env
        .wait_agent(agent.id, Duration::from_secs(30), "ran", |a| {
            a.status == AgentStatus::Running && a.workdir.is_some()
        })
        .await;
    let fifo =
        PathBuf::from(running.workdir.clone().unwrap()).join(".agentfleet/output/signal.json");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::symlink_metadata(&fifo).is_ok_and(|m| m.file_type().is_fifo()) {
        assert!(Instant::now() < deadline, "the agent planted no FIFO");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let asked = Instant::now();
    let mut stop = env
        .command(&["stop", &agent.name])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(status) = stop.try_wait().unwrap() {
            break status;
        }
        if asked.elapsed() > Duration::from_secs(20) {
            let _ = stop.kill();
            panic!("agentfleet stop hung on the planted FIFO");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let out = stop.wait_with_output().unwrap();
    assert!(status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        asked.elapsed() < Duration::from_secs(15),
        "{:?}",
        asked.elapsed()
    );
    let stopped = env.store().await.agent(&agent.name).await.unwrap();
    assert_status(&stopped, AgentStatus::Stopped);
    env.stop_workers();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signal_file_linked_outside_the_checkout_does_not_speak_for_the_agent() {
    let mut env = TestEnv::new().await;
    let forged = env.dir.path().join("other-agent-signal.json");
    std::fs::write(&forged, FORGED).unwrap();
    env.start_worker(&[]);
    // A forged result elsewhere, and an endless one.
    let linked = env.spawn(
        &[],
        &format!(
            "forge a result\n#run mkdir -p .agentfleet/output && ln -s {} .agentfleet/output/signal.json",
            forged.display()
        ),
    );
    let zero = env.spawn(
        &[],
        "read forever\n#run mkdir -p .agentfleet/output && ln -s /dev/zero .agentfleet/output/signal.json",
    );
    for agent in [&linked, &zero] {
        let done = env.wait_final(agent.id, Duration::from_secs(30)).await;
        assert_status(&done, AgentStatus::Completed);
        assert_eq!(done.result.as_deref(), Some("All done."), "{}", done.name);
        let error = done.error.clone().unwrap_or_default();
        assert!(
            error.contains("signal file ignored") && error.contains("symlink"),
            "{error}"
        );
        let reasons = ignored_reasons(&env, &done).await;
        assert!(reasons.iter().any(|r| r.contains("symlink")), "{reasons:?}");
    }
    assert_eq!(std::fs::read_to_string(&forged).unwrap(), FORGED);
    env.stop_workers();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_committed_agentfleet_symlink_keeps_input_files_inside_the_checkout() {
    let mut env = TestEnv::new().await;
    let outside = env.dir.path().join("outside");
    std::fs::create_dir_all(outside.join("output")).unwrap();
    std::fs::write(outside.join("output/signal.json"), FORGED).unwrap();
    let before = snapshot(&outside);
    commit_symlink(&env.remote, ".agentfleet", &outside);
    env.start_worker(&[]);
    let input = env.dir.path().join("spec.md");
    std::fs::write(&input, "the spec").unwrap();
    let agent = env.spawn(
        &["--input", input.to_str().unwrap()],
        "read the spec\n#run cat .agentfleet/input/spec.md > GOT.txt",
    );
    let done = env.wait_final(agent.id, Duration::from_secs(30)).await;
    assert_status(&done, AgentStatus::Completed);
    // Nothing written, read as a signal, or removed outside.
    assert_eq!(done.result.as_deref(), Some("All done."));
    assert_eq!(snapshot(&outside), before);
    let workdir = PathBuf::from(done.workdir.clone().unwrap());
    assert!(
        std::fs::symlink_metadata(workdir.join(".agentfleet"))
            .unwrap()
            .is_dir()
    );
    assert_eq!(
        std::fs::read_to_string(workdir.join(".agentfleet/input/spec.md")).unwrap(),
        "the spec"
    );
    assert_eq!(
        env.remote_file(&done.branch, "GOT.txt").as_deref(),
        Some("the spec")
    );
    env.stop_workers();
}
