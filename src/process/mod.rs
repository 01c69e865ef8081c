//! Provider processes: started detached in their own session (so they outlive a worker
//! restart and can be signalled as a group), with stdin from the prompt file and stdout /
//! stderr going to files on the node. Identity is pid *and* start time, since pids are reused.
//!
//! The provider runs under the sandbox helper (`sandbox`), the process this module starts
//! and watches: it isolates the provider (unless the sandbox is off) and writes the exit code
//! to a file when the provider ends, so a worker that adopts the process later (it is not
//! the parent) still learns how it ended.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use crate::sandbox::{self, Spec};

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot start the sandbox helper '{helper}': {source}")]
    Start {
        helper: String,
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
    /// The agentfleet binary, which runs as the sandbox helper.
    pub helper: PathBuf,
    /// What the helper runs, and in which sandbox.
    pub spec: Spec,
    /// Where the spec is handed over (the helper removes it once read).
    pub spec_file: PathBuf,
    pub stdin: PathBuf,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    /// Where the helper writes the provider's exit code.
    pub exit_file: PathBuf,
}

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    /// The sandbox ended it (a resource limit) or could not start it; the reason says which
    /// (`resource_limit:<which>`, `sandbox: <error>`).
    Sandbox {
        code: i32,
        reason: String,
    },
    /// Ended while nobody watched, without leaving its exit code.
    Unknown,
}

/// A started process: its pid, its start time (clock ticks since boot, from /proc) and the
/// child handle, which reaps it.
#[derive(Debug)]
pub struct Started {
    pub pid: i32,
    pub start_time: i64,
    pub child: Child,
}

/// Opens a run file the worker writes, never through a symlink.
fn create_private(path: &Path, mode: u32) -> Result<File, ProcessError> {
    File::options()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|source| ProcessError::File {
            path: path.to_path_buf(),
            source,
        })
}

pub fn start(launch: &Launch) -> Result<Started, ProcessError> {
    // A run starts alone and with fresh files: a re-run of the same agent must neither run
    // beside an earlier process (its worker died before recording it) nor see its files.
    kill_stale(&launch.exit_file);
    let _ = std::fs::remove_file(&launch.exit_file);
    let _ = std::fs::remove_file(&launch.spec_file);
    let spec = serde_json::to_vec(&launch.spec).map_err(|e| ProcessError::File {
        path: launch.spec_file.clone(),
        source: io::Error::other(e),
    })?;
    // The spec holds the provider's environment (its API key): private to the worker.
    create_private(&launch.spec_file, 0o600)?
        .write_all(&spec)
        .map_err(|source| ProcessError::File {
            path: launch.spec_file.clone(),
            source,
        })?;
    let stdin = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&launch.stdin)
        .map_err(|source| ProcessError::File {
            path: launch.stdin.clone(),
            source,
        })?;
    let mut cmd = Command::new(&launch.helper);
    cmd.as_std_mut().arg0(sandbox::HELPER_NAME);
    cmd.arg(sandbox::HELPER_ARG)
        .arg(&launch.exit_file)
        .arg(&launch.spec_file)
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::from(create_private(&launch.stdout, 0o600)?))
        .stderr(Stdio::from(create_private(&launch.stderr, 0o600)?))
        .kill_on_drop(false);
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| nix::unistd::setsid().map(|_| ()).map_err(io::Error::from));
    }
    let child = cmd.spawn().map_err(|source| ProcessError::Start {
        helper: launch.helper.display().to_string(),
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
    let ours = cmdline.contains(sandbox::HELPER_NAME)
        && cmdline.contains(&exit_file.display().to_string());
    let _ = std::fs::remove_file(&pid_file);
    if !ours || start_time(pid).is_none() {
        return false;
    }
    tracing::warn!(pid, exit_file = %exit_file.display(), "killing an earlier run of this agent");
    signal_group(pid, Signal::SIGKILL);
    true
}

/// The exit code the helper left, if it finished, and why the sandbox ended it, if it did.
pub fn read_exit_file(path: &Path) -> Option<(i32, Option<String>)> {
    let mut text = String::new();
    File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?
        .take(4096)
        .read_to_string(&mut text)
        .ok()?;
    sandbox::parse_exit(&text)
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
        use std::os::unix::process::ExitStatusExt;
        let status = match &mut self.child {
            Some(child) => child.wait().await.ok(),
            None => {
                while is_same_process_alive(self.pid, self.start_time) {
                    tokio::time::sleep(ADOPTED_POLL).await;
                }
                None
            }
        };
        let (signal, code) = (
            status.and_then(|s| s.signal()),
            status.and_then(|s| s.code()),
        );
        match (read_exit_file(&self.exit_file), signal, code) {
            (Some((code, Some(reason))), ..) => Exit::Sandbox { code, reason },
            (Some((code, None)), ..) => Exit::Code(code),
            (None, Some(signal), _) => Exit::Signal(signal),
            // The helper exits with the run's code; the file saying so is missing when it
            // could not be written (a full disk).
            (None, None, Some(code)) => Exit::Code(code),
            (None, None, None) => Exit::Unknown,
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
