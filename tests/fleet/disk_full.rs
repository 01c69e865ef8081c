//! A worker whose workspace disk is full: it takes no spawns (slots closed, `/readyz` 503
//! naming the disk) while a spawn waits pending rather than failing, hands back a spawn it
//! claimed just as the disk filled, and takes work again once space returns; an agent whose
//! disk fills while it runs still has its real exit code recorded. The workspace root is a
//! small tmpfs, filled for real (the tests need root to mount it).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use agentfleet::domain::AgentStatus;

use crate::common::env::{TestEnv, assert_status};
use crate::common::services::free_port;

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path) -> Option<Self> {
        std::fs::create_dir_all(path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
            .arg(path)
            .status()
            .ok()?;
        status.success().then(|| Self(path.to_path_buf()))
    }

    /// Writes a file until the file system refuses more.
    fn fill(&self) -> PathBuf {
        let path = self.0.join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        for chunk in [1 << 20, 4096, 1] {
            while file.write_all(&vec![0u8; chunk]).is_ok() {}
        }
        let _ = file.sync_all();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        crate::common::env::kill_agents_under(&self.0);
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// `/readyz`'s status and body.
async fn readyz(port: u16) -> Option<(u16, serde_json::Value)> {
    let response = reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
        .await
        .ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.ok()?))
}

async fn wait_readyz(port: u16, want: u16) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some((status, body)) = readyz(port).await
            && status == want
        {
            return body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/readyz never answered {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts a worker whose workspace is a fresh 8 MiB tmpfs (None: no tmpfs can be mounted
/// here, the test is skipped). A long disk-check interval: after the start-up probe only a
/// spawn that failed on the disk notices it is full.
fn worker_on_tmpfs(
    env: &mut TestEnv,
    extra: &[(&str, &str)],
) -> Option<(tempfile::TempDir, Tmpfs)> {
    let dir = tempfile::tempdir().unwrap();
    let Some(tmpfs) = Tmpfs::mount(&dir.path().join("ws")) else {
        println!("cannot mount a tmpfs (not root?): test skipped");
        return None;
    };
    let root = tmpfs.0.display().to_string();
    let mut vars = vec![
        ("AGENTFLEET__WORKER__WORKSPACE_ROOT", root.as_str()),
        ("AGENTFLEET__WORKER__MIN_FREE_DISK_MB", "1"),
        ("AGENTFLEET__WORKER__DISK_CHECK_INTERVAL", "1h"),
    ];
    vars.extend_from_slice(extra);
    env.start_worker(&vars);
    Some((dir, tmpfs))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_with_a_full_disk_takes_no_spawns_and_hands_back_what_it_claimed() {
    let mut env = TestEnv::new().await;
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    env.set_env("AGENTFLEET__QUEUE__REDISPATCH_AFTER", "2s");
    let Some((_dir, tmpfs)) = worker_on_tmpfs(
        &mut env,
        &[
            ("AGENTFLEET__WORKER__METRICS_BIND", &bind),
            ("AGENTFLEET__WORKER__SWEEP_INTERVAL", "500ms"),
        ],
    ) else {
        return;
    };
    let root = tmpfs.0.display().to_string();
    wait_readyz(port, 200).await;

    // The disk fills after the worker looked: the spawn it takes fails on the disk, and is
    // handed back instead of failed.
    let filler = tmpfs.fill();
    let agent = env.spawn(&[], "first");
    let body = wait_readyz(port, 503).await;
    let reason = body["disk"].as_str().unwrap();
    assert!(reason.contains(&root), "{body}");
    // Meanwhile it stays pending: not failed, not claimed by the full worker.
    for _ in 0..30 {
        let now = env.store().await.agent_by_id(agent.id).await.unwrap();
        assert!(
            matches!(now.status, AgentStatus::Pending | AgentStatus::Starting),
            "{:?}: {:?}\n{}",
            now.status,
            now.error,
            env.worker_log(0)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = env.worker_log(0);
    assert!(log.contains("request handed back"), "{log}");

    // A spawn while the slots are closed is not even taken.
    let second = env.spawn(&[], "second");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let now = env.store().await.agent_by_id(second.id).await.unwrap();
    assert_eq!(now.status, AgentStatus::Pending, "{:?}", now.error);

    // Space returns: the worker is ready again within a second or so and runs both.
    std::fs::remove_file(filler).unwrap();
    wait_readyz(port, 200).await;
    for id in [agent.id, second.id] {
        let done = env.wait_final(id, Duration::from_secs(90)).await;
        assert_status(&done, AgentStatus::Completed);
    }
    env.stop_workers();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_exit_code_of_an_agent_is_recorded_when_the_disk_filled_while_it_ran() {
    let mut env = TestEnv::new().await;
    let Some((_dir, tmpfs)) = worker_on_tmpfs(&mut env, &[]) else {
        return;
    };
    let agent = env.spawn(&[], "fill\n#hold 4\n#exit 3");
    env.wait_agent(agent.id, Duration::from_secs(60), "ran", |a| {
        a.status == AgentStatus::Running
    })
    .await;
    // The agent has written its file and holds: the disk fills before it exits.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _filler = tmpfs.fill();
    let done = env.wait_final(agent.id, Duration::from_secs(60)).await;
    assert_status(&done, AgentStatus::Crashed);
    assert_eq!(done.exit_code, Some(3), "{:?}", done.error);
    let error = done.error.unwrap_or_default();
    assert!(
        error.contains("code 3") && !error.contains("unwatched"),
        "{error}"
    );
    env.stop_workers();
}
