//! Provider processes started through the sandbox helper (the real binary), with the
//! sandbox off and on: sessions, files, exit codes, identity, termination, adoption, and
//! that nothing an agent starts outlives it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agentfleet::process::{self, Exit, Launch, Running};
use agentfleet::sandbox::{self, AgentPaths, ResourceLimits, Spec};
use nix::sys::signal::Signal;

fn launch(dir: &Path, script: &str, sandboxed: bool) -> Launch {
    std::fs::write(dir.join("in"), "hello from stdin\n").unwrap();
    let paths = AgentPaths::in_folder(dir, dir.join("workspace"));
    paths.create().unwrap();
    let work = paths.workdir.clone();
    let path_var = std::env::var("PATH").unwrap_or_default();
    let isolation = sandboxed.then(|| {
        let limits = ResourceLimits {
            processes: 64,
            ..Default::default()
        };
        sandbox::basic_isolation(
            &paths,
            Path::new("/bin/sh"),
            &path_var,
            &[],
            Some(vec![]),
            limits,
        )
    });
    Launch {
        helper: PathBuf::from(env!("CARGO_BIN_EXE_agentfleet")),
        spec: Spec {
            command: PathBuf::from("/bin/sh"),
            args: vec!["-c".into(), script.into()],
            env: vec![
                ("PATH".into(), path_var),
                ("AF_TEST".into(), "value".into()),
            ],
            cwd: work,
            isolation,
            deadman: None,
        },
        spec_file: dir.join("spec.json"),
        stdin: dir.join("in"),
        stdout: dir.join("out"),
        stderr: dir.join("err"),
        exit_file: dir.join("exit"),
    }
}

fn run(dir: &Path, script: &str, sandboxed: bool) -> Running {
    let l = launch(dir, script, sandboxed);
    Running::own(process::start(&l).unwrap(), l.exit_file)
}

fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn starts_in_own_session_with_files_env_and_exit_code() {
    for sandboxed in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let mut running = run(
            dir.path(),
            "cat; echo $AF_TEST; ps -o sid= -p $$ >&2; exit 3",
            sandboxed,
        );
        assert!(running.start_time > 0);
        assert_eq!(running.wait().await, Exit::Code(3));
        assert_eq!(
            process::read_exit_file(&dir.path().join("exit")),
            Some((3, None))
        );
        let out = std::fs::read_to_string(dir.path().join("out")).unwrap();
        assert_eq!(out, "hello from stdin\nvalue\n");
        assert!(
            !dir.path().join("spec.json").exists(),
            "the spec (the provider's environment) is removed once read"
        );
        if !sandboxed {
            let sid: i32 = std::fs::read_to_string(dir.path().join("err"))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            assert_eq!(sid, running.pid, "the helper leads the provider's session");
        }
    }
}

#[tokio::test]
async fn identity_needs_pid_and_start_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut running = run(dir.path(), "sleep 30", true);
    assert!(process::is_same_process_alive(
        running.pid,
        running.start_time
    ));
    assert!(!process::is_same_process_alive(
        running.pid,
        running.start_time + 1
    ));
    let exit = running.terminate(Duration::from_millis(500)).await;
    assert!(matches!(exit, Exit::Signal(_) | Exit::Code(_)), "{exit:?}");
    assert!(!process::is_same_process_alive(
        running.pid,
        running.start_time
    ));
    eventually("process group still there", || {
        !process::signal_group(running.pid, Signal::SIGTERM)
    });
}

#[tokio::test]
async fn terminate_asks_then_kills() {
    for sandboxed in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        // A provider that stops on SIGTERM ends with its own exit code on record.
        let mut polite = run(dir.path(), "trap 'exit 0' TERM; sleep 30 & wait", sandboxed);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let exit = polite.terminate(Duration::from_secs(5)).await;
        assert_eq!(exit, Exit::Code(0), "sandboxed: {sandboxed}");
        // One that ignores it is killed, helper and all, after the grace.
        let dir = tempfile::tempdir().unwrap();
        let mut stubborn = run(dir.path(), "trap '' INT TERM; sleep 30", sandboxed);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let began = Instant::now();
        let exit = stubborn.terminate(Duration::from_millis(300)).await;
        assert_eq!(exit, Exit::Signal(9), "sandboxed: {sandboxed}");
        assert!(began.elapsed() < Duration::from_secs(3));
        eventually("a member of the group is left", || {
            !process::signal_group(stubborn.pid, Signal::SIGCONT)
        });
    }
}

#[tokio::test]
async fn an_adopted_process_is_watched_through_proc() {
    let dir = tempfile::tempdir().unwrap();
    let l = launch(dir.path(), "sleep 0.5; exit 7", true);
    let started = process::start(&l).unwrap();
    let (pid, start_time) = (started.pid, started.start_time);
    // Someone else reaps it, as init would after the worker died.
    let mut child = started.child;
    tokio::spawn(async move { child.wait().await });
    let mut adopted = Running::adopted(pid, start_time, l.exit_file);
    assert_eq!(adopted.wait().await, Exit::Code(7));
}

#[tokio::test]
async fn a_new_run_kills_an_earlier_unrecorded_one() {
    let dir = tempfile::tempdir().unwrap();
    let first = launch(dir.path(), "sleep 30", true);
    let started = process::start(&first).unwrap();
    let (pid, start_time) = (started.pid, started.start_time);
    let mut orphan = started.child;
    tokio::spawn(async move { orphan.wait().await });
    eventually("no pid file", || dir.path().join("exit.pid").exists());
    // The same agent starts again (its last worker died before recording the pid).
    let mut second = Running::own(
        process::start(&launch(dir.path(), "exit 0", true)).unwrap(),
        first.exit_file.clone(),
    );
    assert_eq!(second.wait().await, Exit::Code(0));
    eventually("the earlier run still runs", || {
        !process::is_same_process_alive(pid, start_time)
    });
    // A pid file naming someone else's process is left alone.
    std::fs::write(dir.path().join("exit.pid"), std::process::id().to_string()).unwrap();
    assert!(!process::kill_stale(&dir.path().join("exit")));
}

#[tokio::test]
async fn a_missing_executable_is_a_clear_error_code() {
    for sandboxed in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let mut l = launch(dir.path(), "true", sandboxed);
        l.spec.command = "/nonexistent/claude".into();
        let mut running = Running::own(process::start(&l).unwrap(), l.exit_file.clone());
        assert_eq!(running.wait().await, Exit::Code(127));
        let err = std::fs::read_to_string(dir.path().join("err")).unwrap();
        assert!(err.contains("/nonexistent/claude"), "{err}");
    }
}

#[tokio::test]
async fn nothing_an_agent_starts_outlives_it() {
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("{}", 600 + std::process::id() % 300);
    let script = format!(
        "setsid sleep {marker}.1 & (sleep {marker}.2 &) & nohup sleep {marker}.3 >/dev/null 2>&1 & sleep 0.3; exit 0"
    );
    let mut running = run(dir.path(), &script, true);
    assert_eq!(running.wait().await, Exit::Code(0));
    let left = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| {
                std::fs::read(e.path().join("cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).contains(&format!("{marker}.")))
                    .unwrap_or(false)
            })
            .count()
    };
    eventually("a process the agent started is still running", || {
        left() == 0
    });
}

#[tokio::test]
async fn a_limit_stops_the_agent_and_says_which() {
    let dir = tempfile::tempdir().unwrap();
    // 64 processes at most (see `launch`): a bounded fork bomb is stopped.
    let mut running = run(
        dir.path(),
        "for i in $(seq 1 200); do sleep 30 & done; wait",
        true,
    );
    let exit = tokio::time::timeout(Duration::from_secs(10), running.wait())
        .await
        .expect("stopped in time");
    // Stopped by init's watch (137) or ended by its own failed forks under a pids cgroup:
    // either way the run names the limit.
    assert!(
        matches!(&exit, Exit::Sandbox { reason, .. } if reason == "resource_limit:processes"),
        "{exit:?}"
    );
}

#[tokio::test]
async fn runs_get_cgroups_where_the_helper_may_make_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = launch(dir.path(), "cat /proc/self/cgroup; sleep 0.2", true);
    if let Some(isolation) = l.spec.isolation.as_mut() {
        isolation.limits.cgroups = true;
        isolation.limits.memory_bytes = 1 << 30;
    }
    let mut running = Running::own(process::start(&l).unwrap(), l.exit_file.clone());
    let helper = running.pid;
    let cgroups = std::fs::read_to_string(format!("/proc/{helper}/cgroup")).unwrap_or_default();
    assert_eq!(running.wait().await, Exit::Code(0));
    let inside = std::fs::read_to_string(dir.path().join("out")).unwrap();
    let root = nix::unistd::geteuid().is_root()
        && std::path::Path::new("/sys/fs/cgroup/pids/cgroup.procs").exists();
    // The provider's own view (its cgroup namespace is the host's) names the run's groups.
    assert_eq!(
        inside.contains("pids:/agentfleet/") && inside.contains("memory:/agentfleet/"),
        root,
        "root: {root}; provider's cgroups:\n{inside}\nhelper's: {cgroups}"
    );
    // Removed once the run ended.
    if root {
        let group = inside
            .lines()
            .find_map(|l| {
                l.strip_prefix(|c: char| c.is_ascii_digit())
                    .and_then(|l| l.split_once(":pids:"))
            })
            .map(|(_, g)| g.to_string())
            .unwrap();
        let path = format!("/sys/fs/cgroup/pids{group}");
        eventually("the run's cgroup is removed", || {
            !std::path::Path::new(&path).exists()
        });
    }
}

/// A run under a dead-man switch of `grace` whose heartbeat file is fresh now.
fn watched(dir: &Path, script: &str, sandboxed: bool, grace: Duration) -> (Running, PathBuf) {
    let heartbeat = dir.join("heartbeat");
    std::fs::write(&heartbeat, "").unwrap();
    let mut l = launch(dir, script, sandboxed);
    l.spec.deadman = Some(sandbox::DeadMan {
        heartbeat: heartbeat.clone(),
        grace_ms: grace.as_millis() as u64,
    });
    (
        Running::own(process::start(&l).unwrap(), l.exit_file),
        heartbeat,
    )
}

fn freshen(heartbeat: &Path) {
    let f = std::fs::File::options()
        .write(true)
        .open(heartbeat)
        .unwrap();
    f.set_modified(std::time::SystemTime::now()).unwrap();
}

#[tokio::test]
async fn an_unsupervised_run_stops_itself_after_the_grace() {
    let grace = Duration::from_secs(1);
    for sandboxed in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        // One that ignores SIGTERM, with a child that does too: both must go.
        let (mut running, _heartbeat) = watched(
            dir.path(),
            "trap '' TERM; sleep 60 & sleep 60",
            sandboxed,
            grace,
        );
        let began = Instant::now();
        let exit = tokio::time::timeout(Duration::from_secs(15), running.wait())
            .await
            .expect("the orphaned run did not stop itself");
        let took = began.elapsed();
        println!(
            "sandboxed {sandboxed}: an orphaned run stopped {took:?} after its start (grace {grace:?})"
        );
        match &exit {
            Exit::Sandbox { reason, .. } => assert!(reason.starts_with("orphaned"), "{reason}"),
            other => panic!("sandboxed {sandboxed}: {other:?}"),
        }
        assert!(took >= grace, "stopped before the grace: {took:?}");
        assert!(
            took <= grace + sandbox::DEADMAN_KILL_MARGIN,
            "took {took:?}"
        );
        eventually("a member of the orphaned run's group is left", || {
            !process::signal_group(running.pid, Signal::SIGCONT)
        });
    }
}

#[tokio::test]
async fn a_fresh_heartbeat_keeps_a_run_going() {
    for sandboxed in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (mut running, heartbeat) =
            watched(dir.path(), "sleep 60", sandboxed, Duration::from_secs(1));
        // Three graces long, the worker keeps it fresh: the run goes on.
        for _ in 0..15 {
            freshen(&heartbeat);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(
            process::is_same_process_alive(running.pid, running.start_time),
            "sandboxed {sandboxed}: a supervised run was stopped"
        );
        // A heartbeat that disappears (or was never written) counts as stale.
        std::fs::remove_file(&heartbeat).unwrap();
        let exit = tokio::time::timeout(Duration::from_secs(10), running.wait())
            .await
            .expect("a run without a heartbeat went on");
        assert!(
            matches!(&exit, Exit::Sandbox { reason, .. } if reason.starts_with("orphaned")),
            "{exit:?}"
        );
    }
}
