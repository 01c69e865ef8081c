//! The dead-man switch of a provider process: the helper, outside the agent's sandbox (or
//! as its only wrapper with the sandbox off), watches a heartbeat file in the run's folder
//! whose modification time the supervising worker keeps fresh. When it has been stale for
//! the grace, no worker watches the agent any more (the worker is gone and nobody on the
//! node adopted the agent, or the worker was fenced off): the helper stops the process tree
//! and records why. It needs no store, so it works while the store or the network is away.
//!
//! The worker never dates the heartbeat later than its lease runs (as far as it knows), so a
//! process is certain to be dead `lease + grace + DEADMAN_KILL_MARGIN` after its owner's last
//! renewal: the point from which another node may run the agent again.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, killpg, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, getpgrp};
use serde::{Deserialize, Serialize};

/// The exit-file reason of a run its dead-man switch stopped.
pub const ORPHANED: &str = "orphaned";
/// How often the helper looks at the heartbeat.
const CHECK_EVERY: Duration = Duration::from_millis(250);
/// SIGTERM to the process group, then SIGKILL after this long.
const TERM_GRACE: Duration = Duration::from_secs(1);
/// From the moment the heartbeat is stale for the grace to a dead process tree: one check
/// interval, the SIGTERM grace, and slack for a loaded node.
pub const DEADMAN_KILL_MARGIN: Duration = Duration::from_secs(3);

/// What the helper watches, from the spec.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadMan {
    /// In the run's folder, out of the agent's reach.
    pub heartbeat: PathBuf,
    /// How long the heartbeat may be stale before the run is stopped.
    pub grace_ms: u64,
}

impl DeadMan {
    /// How long the heartbeat has been stale. A missing heartbeat counts as stale since ever:
    /// the worker writes it before it starts the helper.
    fn stale_for(&self) -> Duration {
        let fresh = std::fs::symlink_metadata(&self.heartbeat)
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        SystemTime::now().duration_since(fresh).unwrap_or_default()
    }
}

/// Waits for `child` (the provider, or the sandbox's init) while watching the heartbeat:
/// its exit code (128 + N for a signal), and the reason when the switch stopped it.
/// Runs in the single-threaded helper.
pub fn wait_watched(child: Pid, deadman: &DeadMan) -> Result<(i32, Option<String>), String> {
    let grace = Duration::from_millis(deadman.grace_ms);
    // SIGCHLD stays pending while blocked, so a child that ends between a check and the
    // wait below still wakes it.
    let mut chld = SigSet::empty();
    chld.add(Signal::SIGCHLD);
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&chld), None)
        .map_err(|e| format!("sigprocmask: {e}"))?;
    loop {
        if let Some(code) = reaped(child)? {
            return Ok((code, None));
        }
        let stale = deadman.stale_for();
        if stale > grace {
            return Ok(stop_orphan(child, &chld, stale));
        }
        wait_for_signal(&chld, CHECK_EVERY);
    }
}

/// The child's exit code if it ended.
fn reaped(child: Pid) -> Result<Option<i32>, String> {
    loop {
        return match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => Ok(Some(code)),
            Ok(WaitStatus::Signaled(_, signal, _)) => Ok(Some(128 + signal as i32)),
            Ok(WaitStatus::StillAlive) => Ok(None),
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => Err(format!("waitpid: {e}")),
        };
    }
}

fn wait_for_signal(set: &SigSet, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: plain syscall with a valid set and timespec; a null info pointer is allowed.
    unsafe { libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &ts) };
}

/// SIGTERM to the run's process group (this helper ignores it), SIGKILL to the child after
/// `TERM_GRACE`. What is left of the group dies after the exit file is written
/// (`finish_orphan`).
fn stop_orphan(child: Pid, chld: &SigSet, stale: Duration) -> (i32, Option<String>) {
    let reason = format!(
        "{ORPHANED}: no worker supervised the agent for {}s, so it was stopped",
        stale.as_secs()
    );
    let _ = killpg(getpgrp(), Signal::SIGTERM);
    let deadline = Instant::now() + TERM_GRACE;
    while Instant::now() < deadline {
        if let Ok(Some(code)) = reaped(child) {
            return (code, Some(reason));
        }
        wait_for_signal(chld, Duration::from_millis(100));
    }
    let _ = kill(child, Signal::SIGKILL);
    let code = loop {
        match reaped(child) {
            Ok(Some(code)) => break code,
            Ok(None) => wait_for_signal(chld, Duration::from_millis(50)),
            Err(_) => break 128 + Signal::SIGKILL as i32,
        }
    };
    (code, Some(reason))
}

/// After an orphaned run's exit file is written: whatever its process group still holds
/// (processes the provider left behind with the sandbox off) dies, this helper with it.
pub fn finish_orphan(reason: Option<&str>) {
    if reason.is_some_and(|r| r.starts_with(ORPHANED)) {
        let _ = killpg(getpgrp(), Signal::SIGKILL);
    }
}
