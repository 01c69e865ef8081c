//! Provider processes: started detached in their own session (so they outlive a worker
//! restart and can be signalled as a group), with stdin from the prompt file and stdout /
//! stderr going to files on the node. Identity is pid *and* start time, since pids are reused.
//!
//! The provider runs under a small `sh` wrapper that writes its exit code to a file when it
//! ends, so a worker that adopts the process later (it is not the parent) still learns how
//! it ended.

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
    /// Where the wrapper writes the provider's exit code.
    pub exit_file: PathBuf,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    /// Ended while nobody watched, without leaving its exit code.
    Unknown,
}

/// Writes the exit code atomically so a reader never sees half a number.
/// Its pid goes to `<exit file>.pid` first, so a later run of the same agent can find a
/// process of an earlier one that no store row knows about.
const WRAPPER: &str = r#"f=$1; shift; echo $$ > "$f.pid"; "$@"; code=$?; echo $code > "$f.tmp" && mv "$f.tmp" "$f"; exit $code"#;

/// A started process: its pid, its start time (clock ticks since boot, from /proc) and the
/// child handle, which reaps it.
#[derive(Debug)]
pub struct Started {
    pub pid: i32,
    pub start_time: i64,
    pub child: Child,
}

pub fn start(launch: &Launch) -> Result<Started, ProcessError> {
    // A run starts alone and with fresh files: a re-run of the same agent must neither run
    // beside an earlier process (its worker died before recording it) nor see its files.
    kill_stale(&launch.exit_file);
    let _ = std::fs::remove_file(&launch.exit_file);
    let open = |path: &Path, create: bool| {
        let file = if create {
            File::options()
                .create(true)
                .write(true)
                .truncate(true)
                .open(path)
        } else {
            File::open(path)
        };
        file.map_err(|source| ProcessError::File {
            path: path.to_path_buf(),
            source,
        })
    };
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(WRAPPER)
        .arg("agentfleet-agent")
        .arg(&launch.exit_file)
        .arg(&launch.command)
        .args(&launch.args)
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
    stat_fields(pid).map(|(_, start)| start)
}

/// (state, start time) from /proc/<pid>/stat.
fn stat_fields(pid: i32) -> Option<(char, i64)> {
    if pid <= 0 {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: skip past the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    Some((state, fields.nth(18)?.parse().ok()?))
}

/// True when `pid` is alive (not a zombie) and is the process that started at
/// `start_time_ticks`.
pub fn is_same_process_alive(pid: i32, start_time_ticks: i64) -> bool {
    matches!(stat_fields(pid), Some((state, start)) if start == start_time_ticks && state != 'Z' && state != 'X')
}

/// Sends `signal` to the process group; false when the group is gone.
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

/// Kills an earlier run's process group left under `exit_file` (found by the pid file its
/// wrapper wrote, and only if that pid is still that wrapper: pids are reused).
pub fn kill_stale(exit_file: &Path) -> bool {
    let pid_file = PathBuf::from(format!("{}.pid", exit_file.display()));
    let Some(pid) = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
    else {
        return false;
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline);
    let ours =
        cmdline.contains("agentfleet-agent") && cmdline.contains(&exit_file.display().to_string());
    let _ = std::fs::remove_file(&pid_file);
    if !ours || start_time(pid).is_none() {
        return false;
    }
    tracing::warn!(pid, exit_file = %exit_file.display(), "killing an earlier run of this agent");
    signal_group(pid, Signal::SIGKILL);
    true
}

/// The exit code the wrapper left, if it finished.
pub fn read_exit_file(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// A provider process being watched: either our own child (reaped by us) or one adopted
/// from a worker that is gone (watched through /proc).
#[derive(Debug)]
pub struct Running {
    pub pid: i32,
    pub start_time: i64,
    pub exit_file: PathBuf,
    child: Option<Child>,
}

const ADOPTED_POLL: Duration = Duration::from_millis(200);

impl Running {
    pub fn own(started: Started, exit_file: PathBuf) -> Self {
        Self {
            pid: started.pid,
            start_time: started.start_time,
            exit_file,
            child: Some(started.child),
        }
    }

    pub fn adopted(pid: i32, start_time: i64, exit_file: PathBuf) -> Self {
        Self {
            pid,
            start_time,
            exit_file,
            child: None,
        }
    }

    /// Waits for the end. Cancel-safe.
    pub async fn wait(&mut self) -> Exit {
        let signal = match &mut self.child {
            Some(child) => child.wait().await.ok().and_then(|s| {
                use std::os::unix::process::ExitStatusExt;
                s.signal()
            }),
            None => {
                while is_same_process_alive(self.pid, self.start_time) {
                    tokio::time::sleep(ADOPTED_POLL).await;
                }
                None
            }
        };
        match (read_exit_file(&self.exit_file), signal) {
            (Some(code), _) => Exit::Code(code),
            (None, Some(signal)) => Exit::Signal(signal),
            (None, None) => Exit::Unknown,
        }
    }

    /// SIGTERM to the group, then SIGKILL after `grace` if any member is left; reaps.
    pub async fn terminate(&mut self, grace: Duration) -> Exit {
        signal_group(self.pid, Signal::SIGTERM);
        let deadline = tokio::time::Instant::now() + grace;
        while self.group_alive() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if self.group_alive() {
            signal_group(self.pid, Signal::SIGKILL);
        }
        self.wait().await
    }

    /// Whether any member of the process group is left (our own exited wrapper is reaped
    /// first, or its zombie would count).
    fn group_alive(&mut self) -> bool {
        if let Some(child) = &mut self.child {
            let _ = child.try_wait();
        }
        match killpg(Pid::from_raw(self.pid), None) {
            Ok(()) => true,
            Err(Errno::ESRCH) => false,
            Err(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            exit_file: dir.join("exit"),
        }
    }

    fn run(dir: &Path, script: &str) -> Running {
        let l = launch(dir, script);
        Running::own(start(&l).unwrap(), l.exit_file)
    }

    #[tokio::test]
    async fn starts_in_own_session_with_files_env_and_exit_code() {
        let dir = tempfile::tempdir().unwrap();
        let mut running = run(
            dir.path(),
            "cat; echo $AF_TEST; ps -o sid= -p $$ >&2; exit 3",
        );
        assert!(running.start_time > 0);
        assert_eq!(running.wait().await, Exit::Code(3));
        assert_eq!(read_exit_file(&dir.path().join("exit")), Some(3));
        let out = std::fs::read_to_string(dir.path().join("out")).unwrap();
        assert_eq!(out, "hello from stdin\nvalue\n");
        let sid: i32 = std::fs::read_to_string(dir.path().join("err"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(sid, running.pid, "the wrapper leads the provider's session");
    }

    #[tokio::test]
    async fn identity_needs_pid_and_start_time() {
        let dir = tempfile::tempdir().unwrap();
        let mut running = run(dir.path(), "sleep 30");
        assert!(is_same_process_alive(running.pid, running.start_time));
        assert!(!is_same_process_alive(running.pid, running.start_time + 1));
        let exit = running.terminate(Duration::from_millis(200)).await;
        assert!(matches!(exit, Exit::Signal(_) | Exit::Code(_)), "{exit:?}");
        assert!(!is_same_process_alive(running.pid, running.start_time));
        // The group outlives its leader until every member is reaped by init.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while signal_group(running.pid, Signal::SIGTERM) {
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
        let mut running = run(dir.path(), "trap '' INT TERM; sleep 30");
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The wrapper shell dies on SIGTERM; the provider ignores it and needs KILL.
        let exit = running.terminate(Duration::from_millis(200)).await;
        assert_eq!(exit, Exit::Signal(15));
        // Killed members are reaped by init shortly after.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while running.group_alive() {
            assert!(
                std::time::Instant::now() < deadline,
                "a member of the group is left"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn an_adopted_process_is_watched_through_proc() {
        let dir = tempfile::tempdir().unwrap();
        let l = launch(dir.path(), "sleep 0.5; exit 7");
        let started = start(&l).unwrap();
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
        let first = launch(dir.path(), "sleep 30");
        let started = start(&first).unwrap();
        let (pid, start_time) = (started.pid, started.start_time);
        let mut orphan = started.child;
        tokio::spawn(async move { orphan.wait().await });
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !dir.path().join("exit.pid").exists() {
            assert!(std::time::Instant::now() < deadline, "no pid file");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The same agent starts again (its last worker died before recording the pid).
        let mut second = Running::own(
            start(&launch(dir.path(), "exit 0")).unwrap(),
            first.exit_file.clone(),
        );
        assert_eq!(second.wait().await, Exit::Code(0));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while is_same_process_alive(pid, start_time) {
            assert!(
                std::time::Instant::now() < deadline,
                "the earlier run still runs"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // A pid file naming someone else's process is left alone.
        std::fs::write(dir.path().join("exit.pid"), std::process::id().to_string()).unwrap();
        assert!(!kill_stale(&dir.path().join("exit")));
    }

    #[test]
    fn missing_executable_is_a_clear_error_code() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = launch(dir.path(), "true");
        l.command = "/nonexistent/claude".into();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let exit = rt.block_on(async {
            let mut running = Running::own(start(&l).unwrap(), l.exit_file.clone());
            running.wait().await
        });
        // sh reports "not found" as 127 and says so on stderr.
        assert_eq!(exit, Exit::Code(127));
        let err = std::fs::read_to_string(dir.path().join("err")).unwrap();
        assert!(err.contains("/nonexistent/claude"), "{err}");
    }
}
