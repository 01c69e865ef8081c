//! The helper process (see the module doc of `sandbox`): three roles in three processes.
//!
//! - **outside** (the process the worker started and watches by pid + start time): enters
//!   the user and PID namespaces, forks init, waits for it, writes the exit file;
//! - **init** (pid 1 of the agent's namespace): mounts, forks the provider, reaps, forwards
//!   stop signals, enforces the watched limits, and by exiting ends every process left;
//! - **provider**: locks itself down and `execve`s the CLI.
//!
//! It runs before any thread exists (dispatched first thing in `main`), so `fork` is safe
//! and each role may allocate.

use std::ffi::{CString, OsString};
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal, kill, sigaction, sigprocmask};
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};

use super::cgroups::RunCgroups;
use super::limits::Watch;
use super::{Isolation, Limit, SETUP_FAILED, Spec, format_exit, rules};

/// Entry point of `agentfleet-agent sandbox-exec EXIT_FILE SPEC_FILE` (or `--probe`).
pub fn helper_main() -> ! {
    let args: Vec<OsString> = std::env::args_os().collect();
    if args.get(2).is_some_and(|a| a == "--probe") {
        super::probe::probe_child();
    }
    let (Some(exit_file), Some(spec_file)) = (args.get(2), args.get(3)) else {
        eprintln!("usage: agentfleet-agent sandbox-exec EXIT_FILE SPEC_FILE");
        std::process::exit(2);
    };
    let exit_file = PathBuf::from(exit_file);
    let (code, reason) = match outside(&exit_file, Path::new(spec_file)) {
        Ok(end) => end,
        Err(e) => {
            eprintln!("agentfleet sandbox: {e}");
            (SETUP_FAILED, Some(format!("sandbox: {e}")))
        }
    };
    write_exit_file(&exit_file, code, reason.as_deref());
    super::deadman::finish_orphan(reason.as_deref());
    std::process::exit(code)
}

/// The outside role: returns the run's exit code and, when the sandbox ended it, why.
fn outside(exit_file: &Path, spec_file: &Path) -> Result<(i32, Option<String>), String> {
    let text = std::fs::read(spec_file)
        .map_err(|e| format!("cannot read the spec {}: {e}", spec_file.display()))?;
    // It holds the provider's environment (its API key): gone as soon as it is read.
    let _ = std::fs::remove_file(spec_file);
    let spec: Spec = serde_json::from_slice(&text).map_err(|e| format!("bad spec: {e}"))?;
    let pid_file = PathBuf::from(format!("{}.pid", exit_file.display()));
    std::fs::write(&pid_file, format!("{}\n", std::process::id()))
        .map_err(|e| format!("cannot write {}: {e}", pid_file.display()))?;
    // A stop signal must not end this process before it records how the provider ended; a
    // handler (not SIG_IGN, which children would inherit) lets waitpid be interrupted.
    for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        set_handler(signal, SigHandler::Handler(ignore))?;
    }
    let Some(isolation) = &spec.isolation else {
        let Some(child) = fork_child()? else {
            provider(&spec, None)
        };
        return wait_child(child, &spec);
    };
    // Hard caps where this host gives cgroups; joined before anything is forked.
    let run_id = format!("{}-{:08x}", std::process::id(), rand::random::<u32>());
    let cgroups = RunCgroups::join(&run_id, &isolation.limits);
    // Read before the new namespace: inside it, unmapped ids read as the overflow id.
    let ids = (nix::unistd::getuid(), nix::unistd::getgid());
    unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWPID)
        .map_err(|e| format!("cannot create the user and PID namespaces: {e}"))?;
    map_ids(ids)?;
    let (reason_rx, reason_tx) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let Some(init_pid) = fork_child()? else {
        drop(reason_rx);
        init(&spec, isolation, &cgroups, reason_tx)
    };
    drop(reason_tx);
    let (code, orphaned) = wait_child(init_pid, &spec)?;
    if orphaned.is_some() {
        return Ok((code, orphaned));
    }
    let mut reason = String::new();
    let _ = std::io::Read::read_to_string(&mut std::fs::File::from(reason_rx), &mut reason);
    let reason = reason
        .lines()
        .next()
        .filter(|r| !r.is_empty())
        .map(str::to_string)
        .or_else(|| {
            cgroups
                .hit()
                .map(|limit| format!("resource_limit:{}", limit.as_str()))
        });
    Ok((code, reason))
}

extern "C" fn ignore(_: libc::c_int) {}

fn set_handler(signal: Signal, handler: SigHandler) -> Result<(), String> {
    let action = nix::sys::signal::SigAction::new(
        handler,
        nix::sys::signal::SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler does nothing; no other thread exists.
    unsafe { sigaction(signal, &action) }
        .map(drop)
        .map_err(|e| format!("sigaction: {e}"))
}

/// uid and gid inside the namespace are the worker's own: files the agent creates belong
/// to the worker, and nothing else is mapped.
fn map_ids((uid, gid): (nix::unistd::Uid, nix::unistd::Gid)) -> Result<(), String> {
    let write = |file: &str, text: String| {
        std::fs::write(file, text).map_err(|e| format!("cannot write {file}: {e}"))
    };
    write("/proc/self/setgroups", "deny".into())?;
    write("/proc/self/uid_map", format!("{uid} {uid} 1"))?;
    write("/proc/self/gid_map", format!("{gid} {gid} 1"))
}

/// Forks: the child's pid in the parent, None in the child.
fn fork_child() -> Result<Option<Pid>, String> {
    // SAFETY: single-threaded (see the module doc).
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Parent { child } => Ok(Some(child)),
        ForkResult::Child => Ok(None),
    }
}

/// Waits for the provider (or the sandbox's init), under the dead-man switch if the spec
/// asks for one.
fn wait_child(child: Pid, spec: &Spec) -> Result<(i32, Option<String>), String> {
    match &spec.deadman {
        Some(deadman) => super::deadman::wait_watched(child, deadman),
        None => Ok((wait_code(child)?, None)),
    }
}

/// Waits for `pid`; its exit code, 128 + N when a signal ended it (as a shell reports).
fn wait_code(pid: Pid) -> Result<i32, String> {
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, signal, _)) => return Ok(128 + signal as i32),
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("waitpid: {e}")),
        }
    }
}

fn write_exit_file(path: &Path, code: i32, reason: Option<&str>) {
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    if std::fs::write(&tmp, format_exit(code, reason)).is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
}

/// pid 1 of the agent's namespace.
fn init(spec: &Spec, isolation: &Isolation, cgroups: &RunCgroups, reason_tx: OwnedFd) -> ! {
    let fail = |what: String| -> ! {
        let _ = writeln!(std::io::stderr(), "agentfleet sandbox: {what}");
        let mut tx = std::fs::File::from(reason_tx.try_clone().expect("dup"));
        let _ = writeln!(tx, "sandbox: {what}");
        std::process::exit(SETUP_FAILED)
    };
    // If the helper outside dies (it is what the worker watches), the agent must not run
    // on unwatched: init, and with it the whole namespace, dies too.
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    if let Err(e) = private_mounts(isolation) {
        fail(e);
    }
    // The provider cannot ptrace or read init's memory (it has no capabilities either).
    let _ = nix::sys::prctl::set_dumpable(false);
    let mut signals = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        signals.add(s);
    }
    if let Err(e) = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&signals), None) {
        fail(format!("sigprocmask: {e}"));
    }
    let signal_fd = match SignalFd::with_flags(
        &signals,
        nix::sys::signalfd::SfdFlags::SFD_CLOEXEC | nix::sys::signalfd::SfdFlags::SFD_NONBLOCK,
    ) {
        Ok(fd) => fd,
        Err(e) => fail(format!("signalfd: {e}")),
    };
    let provider_pid = match fork_child() {
        Ok(Some(pid)) => pid,
        Ok(None) => provider(spec, Some(isolation)),
        Err(e) => fail(e),
    };
    let mut watch = Watch::new(isolation, cgroups);
    let mut tx = std::fs::File::from(reason_tx);
    let mut stopped_by: Option<Limit> = None;
    let mut next_check = Instant::now();
    loop {
        let timeout = next_check.saturating_duration_since(Instant::now());
        let mut fds = [nix::poll::PollFd::new(
            signal_fd.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let millis = timeout.as_millis().min(u16::MAX as u128) as u16;
        let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(millis));
        while let Ok(Some(info)) = signal_fd.read_signal() {
            if info.ssi_signo != Signal::SIGCHLD as u32 {
                // A stop: the whole namespace is asked to end.
                let _ = kill(Pid::from_raw(-1), Signal::SIGTERM);
            }
        }
        // Reap whatever ended; the provider's end ends the namespace.
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == provider_pid => {
                    finish(&mut tx, stopped_by, None);
                    std::process::exit(code)
                }
                Ok(WaitStatus::Signaled(pid, signal, _)) if pid == provider_pid => {
                    let by_signal = match signal {
                        Signal::SIGXCPU => Some(Limit::Cpu),
                        Signal::SIGXFSZ => Some(Limit::FileSize),
                        _ => None,
                    };
                    finish(&mut tx, stopped_by, by_signal);
                    std::process::exit(128 + signal as i32)
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            }
        }
        if Instant::now() >= next_check {
            next_check = Instant::now() + Duration::from_millis(500);
            if stopped_by.is_none()
                && let Some(limit) = watch.exceeded()
            {
                stopped_by = Some(limit);
                let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
            }
        }
    }
}

fn finish(tx: &mut std::fs::File, watched: Option<Limit>, by_signal: Option<Limit>) {
    if let Some(limit) = watched.or(by_signal) {
        let _ = writeln!(tx, "resource_limit:{}", limit.as_str());
    }
    // Anything still running in the namespace dies with init.
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
}

/// A mount namespace of the agent's own: nothing propagates back to the host, `/proc`
/// shows only the agent's processes, and secret files of the worker read as empty.
fn private_mounts(isolation: &Isolation) -> Result<(), String> {
    unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS)
        .map_err(|e| format!("cannot create the mount namespace: {e}"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("cannot make mounts private: {e}"))?;
    mount(
        Some("proc"),
        "/proc",
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| format!("cannot mount /proc: {e}"))?;
    for file in &isolation.mask {
        if !file.is_file() {
            continue;
        }
        mount(
            Some("/dev/null"),
            file,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| format!("cannot mask {}: {e}", file.display()))?;
    }
    Ok(())
}

/// The provider's own process: locks itself down, then becomes the CLI.
fn provider(spec: &Spec, isolation: Option<&Isolation>) -> ! {
    let fail = |what: String| -> ! {
        let _ = writeln!(std::io::stderr(), "agentfleet sandbox: {what}");
        std::process::exit(SETUP_FAILED)
    };
    // Children get no blocked signals and default dispositions (exec resets handlers).
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    // Only stdin, stdout and stderr cross into the provider.
    // SAFETY: plain syscall on fds this process owns.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    if let Err(e) = std::env::set_current_dir(&spec.cwd) {
        fail(format!("cannot enter {}: {e}", spec.cwd.display()));
    }
    let command = match CString::new(spec.command.as_os_str().as_bytes()) {
        Ok(c) => c,
        Err(_) => fail("the command holds a NUL byte".into()),
    };
    let mut argv = vec![command.clone()];
    let mut envp = Vec::new();
    for arg in &spec.args {
        match CString::new(arg.as_bytes()) {
            Ok(a) => argv.push(a),
            Err(_) => fail("an argument holds a NUL byte".into()),
        }
    }
    for (k, v) in &spec.env {
        match CString::new(format!("{k}={v}")) {
            Ok(e) => envp.push(e),
            Err(_) => fail(format!("environment variable {k} holds a NUL byte")),
        }
    }
    if let Some(isolation) = isolation
        && let Err(e) = rules::lock_down(isolation)
    {
        fail(e);
    }
    let err = nix::unistd::execve(&command, &argv, &envp).unwrap_err();
    let code = if err == nix::errno::Errno::ENOENT {
        127
    } else {
        126
    };
    let _ = writeln!(
        std::io::stderr(),
        "agentfleet sandbox: cannot run {}: {err}",
        spec.command.display()
    );
    std::process::exit(code)
}
