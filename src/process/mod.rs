//! Provider processes: started detached in their own session (so they outlive a worker
//! restart and can be signalled as a group), with stdin from the prompt file and stdout /
//! stderr going to files on the node. Identity is pid *and* start time, since pids are reused.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot start '{command}': {source}")]
    Start {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot open '{path}': {source}")]
    File {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Everything needed to start one provider process.
#[derive(Debug, Clone)]
pub struct Launch {
    pub command: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub stdin: PathBuf,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

/// A started process: its pid, its start time (clock ticks since boot, from /proc) and the
/// child handle, which reaps it.
#[derive(Debug)]
pub struct Started {
    pub pid: i32,
    pub start_time: i64,
    pub child: Child,
}

pub fn start(launch: &Launch) -> Result<Started, ProcessError> {
    let open = |path: &Path, create: bool| {
        let file = if create {
            File::options().create(true).append(true).open(path)
        } else {
            File::open(path)
        };
        file.map_err(|source| ProcessError::File {
            path: path.to_path_buf(),
            source,
        })
    };
    let mut cmd = Command::new(&launch.command);
    cmd.args(&launch.args)
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&launch.cwd)
        .stdin(Stdio::from(open(&launch.stdin, false)?))
        .stdout(Stdio::from(open(&launch.stdout, true)?))
        .stderr(Stdio::from(open(&launch.stderr, true)?))
        .kill_on_drop(false);
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| nix::unistd::setsid().map(|_| ()).map_err(io::Error::from));
    }
    let child = cmd.spawn().map_err(|source| ProcessError::Start {
        command: launch.command.clone(),
        source,
    })?;
    let pid = child.id().unwrap_or_default() as i32;
    let start_time = start_time(pid).unwrap_or_default();
    Ok(Started {
        pid,
        start_time,
        child,
    })
}

/// The process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat).
pub fn start_time(pid: i32) -> Option<i64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: skip past the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// True when `pid` is alive and is the same process that started at `start_time`.
pub fn is_same_process_alive(pid: i32, start_time_ticks: i64) -> bool {
    start_time(pid) == Some(start_time_ticks)
}

/// Sends `signal` to the process group; a group that is gone counts as done.
pub fn signal_group(pid: i32, signal: Signal) -> bool {
    match killpg(Pid::from_raw(pid), signal) {
        Ok(()) => true,
        Err(Errno::ESRCH) => false,
        Err(e) => {
            tracing::warn!(pid, %signal, error = %e, "cannot signal process group");
            false
        }
    }
}

/// Stops a process group politely, then firmly: SIGINT, SIGTERM, SIGKILL with `grace`
/// between them, and reaps the child.
pub async fn terminate(child: &mut Child, pid: i32, grace: Duration) {
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGKILL] {
        if !signal_group(pid, signal) {
            break;
        }
        if tokio::time::timeout(grace, child.wait()).await.is_ok() {
            return;
        }
    }
    let _ = child.wait().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn launch(dir: &Path, script: &str) -> Launch {
        std::fs::write(dir.join("in"), "hello from stdin\n").unwrap();
        Launch {
            command: "sh".into(),
            args: vec!["-c".into(), script.into()],
            env: vec![("AF_TEST".into(), "value".into())],
            cwd: dir.to_path_buf(),
            stdin: dir.join("in"),
            stdout: dir.join("out"),
            stderr: dir.join("err"),
        }
    }

    #[tokio::test]
    async fn starts_in_own_session_with_files_and_env() {
        let dir = tempfile::tempdir().unwrap();
        let mut started = start(&launch(
            dir.path(),
            "cat; echo $AF_TEST; ps -o sid= -p $$ >&2; exit 3",
        ))
        .unwrap();
        assert!(started.start_time > 0);
        let status = started.child.wait().await.unwrap();
        assert_eq!(status.code(), Some(3));
        let out = std::fs::read_to_string(dir.path().join("out")).unwrap();
        assert_eq!(out, "hello from stdin\nvalue\n");
        let sid: i32 = std::fs::read_to_string(dir.path().join("err"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(sid, started.pid, "the process leads its own session");
    }

    #[tokio::test]
    async fn identity_needs_pid_and_start_time() {
        let dir = tempfile::tempdir().unwrap();
        let mut started = start(&launch(dir.path(), "sleep 30")).unwrap();
        assert!(is_same_process_alive(started.pid, started.start_time));
        assert!(!is_same_process_alive(started.pid, started.start_time + 1));
        terminate(&mut started.child, started.pid, Duration::from_millis(200)).await;
        assert!(!is_same_process_alive(started.pid, started.start_time));
        // The group outlives its leader until every member is reaped by init.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while signal_group(started.pid, Signal::SIGTERM) {
            assert!(
                std::time::Instant::now() < deadline,
                "process group still there"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn terminate_escalates_to_sigkill() {
        let dir = tempfile::tempdir().unwrap();
        let mut started = start(&launch(dir.path(), "trap '' INT TERM; sleep 30")).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        terminate(&mut started.child, started.pid, Duration::from_millis(200)).await;
        let status = started.child.wait().await.unwrap();
        assert_eq!(status.signal(), Some(9));
    }

    #[test]
    fn missing_executable_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = launch(dir.path(), "true");
        l.command = "/nonexistent/claude".into();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let err = rt.block_on(async { start(&l).unwrap_err().to_string() });
        assert!(err.contains("/nonexistent/claude"), "{err}");
    }
}
