//! The sandbox every provider process runs in. An agent is an LLM running shell commands
//! with its CLI's permission checks off, so its process is treated as hostile: it sees only
//! its own work.
//!
//! The worker never starts a provider itself. It starts this binary again as a small helper
//! (`agentfleet-agent sandbox-exec EXIT_FILE SPEC_FILE`, dispatched in `main` before any
//! thread exists) in the provider's own session; the helper reads the [`Spec`] the worker
//! wrote, and:
//!
//! 1. enters a new user and PID namespace (unprivileged: no root needed, uid and gid mapped
//!    to themselves) and forks the namespace's init, which takes a mount namespace of its
//!    own with a fresh `/proc` (only the agent's processes) and masks the worker's secret
//!    files with `/dev/null`;
//! 2. init forks the provider, which before `execve` sets rlimits, no-new-privs, an empty
//!    capability bounding set and securebits, then restricts itself with Landlock (read the
//!    system and the CLI, write only its checkout, git dir, HOME, TMPDIR and the account's
//!    config dir; TCP connect only to the allowed ports; no signals or abstract sockets out
//!    of its domain) and a seccomp filter (no ptrace, process_vm_*, io_uring, bpf, keyrings,
//!    unix sockets to the host's services);
//! 3. init reaps, forwards stop signals into the namespace, and watches the agent's process
//!    count, memory and disk use; when the provider ends, init exits and the kernel kills
//!    every process left in the namespace (daemonised ones included);
//! 4. the helper, outside, writes the provider's exit code (and the limit that stopped it,
//!    if one did) to the run's exit file, so a worker that adopts the agent later learns how
//!    it ended.
//!
//! With `sandbox.mode = "off"` the helper only plays the last part (the environment is still
//! the allow-listed one). Why our own helper rather than bubblewrap: Landlock and seccomp are
//! needed either way and bubblewrap applies neither, the exit-file wrapper was needed anyway,
//! and it keeps the host's requirements to the kernel (no setuid binary, no package).

mod cgroups;
mod deadman;
mod env;
mod helper;
mod limits;
mod policy;
mod probe;
mod rules;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use deadman::{DEADMAN_KILL_MARGIN, DeadMan, ORPHANED};
pub use env::{EnvParts, build_env};
pub use helper::helper_main;
pub use policy::{AgentPaths, PolicyError, basic_isolation, isolation, resolve_command};
pub use probe::{Layer, LayerState, Report, probe, probe_for};

/// The argument that makes the binary the sandbox helper.
pub const HELPER_ARG: &str = "sandbox-exec";
/// argv[0] of the helper, so a later run can recognise an earlier run's process.
pub const HELPER_NAME: &str = "agentfleet-agent";
/// The exit code of a helper that could not set the sandbox up (the reason is on stderr
/// and in the exit file).
pub const SETUP_FAILED: i32 = 125;

/// What the helper runs, written by the worker into the run's folder (mode 0600, out of the
/// agent's reach) and removed by the helper once read: it holds the process's environment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spec {
    /// Absolute path of the executable (resolved by the worker on its own PATH).
    pub command: PathBuf,
    pub args: Vec<String>,
    /// The process's whole environment.
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    /// None: `sandbox.mode = "off"`.
    pub isolation: Option<Isolation>,
    /// The worker's heartbeat the helper watches; None: the process runs until it ends.
    #[serde(default)]
    pub deadman: Option<DeadMan>,
}

/// What the provider may reach.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Isolation {
    /// Readable (and executable) trees or files.
    pub read: Vec<PathBuf>,
    /// Readable and writable trees or files.
    pub write: Vec<PathBuf>,
    /// Files hidden behind `/dev/null` (the worker's config, key and store files), in case
    /// one lies under a readable tree.
    pub mask: Vec<PathBuf>,
    /// TCP ports it may connect to; None: any (`sandbox.network.mode = "open"`).
    pub connect_ports: Option<Vec<u16>>,
    pub limits: ResourceLimits,
    /// Where the agent can write files, summed for the disk limit.
    pub disk_roots: Vec<PathBuf>,
}

/// Per-agent resource limits; 0 means none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceLimits {
    pub processes: u64,
    pub memory_bytes: u64,
    pub cpu_seconds: u64,
    pub file_bytes: u64,
    pub disk_bytes: u64,
    pub open_files: u64,
    /// Cap processes and memory with a cgroup per run where one can be made.
    #[serde(default)]
    pub cgroups: bool,
}

/// The limit that stopped an agent (`resource_limit:<which>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    Processes,
    Memory,
    Cpu,
    FileSize,
    Disk,
}

impl Limit {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Processes => "processes",
            Self::Memory => "memory",
            Self::Cpu => "cpu",
            Self::FileSize => "file_size",
            Self::Disk => "disk",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Processes,
            Self::Memory,
            Self::Cpu,
            Self::FileSize,
            Self::Disk,
        ]
        .into_iter()
        .find(|l| l.as_str() == s)
    }
}

/// How the helper reports the end of a run in the exit file: the exit code on the first
/// line (128 + N for a signal, as a shell reports it), then, when the sandbox stopped the
/// agent or could not start it, why (`resource_limit:<which>` or `sandbox: <error>`).
pub fn format_exit(code: i32, reason: Option<&str>) -> String {
    match reason {
        Some(r) => format!("{code}\n{}\n", r.replace('\n', " ")),
        None => format!("{code}\n"),
    }
}

/// The code and reason of an exit file's text.
pub fn parse_exit(text: &str) -> Option<(i32, Option<String>)> {
    let mut lines = text.lines();
    let code = lines.next()?.trim().parse().ok()?;
    let reason = lines
        .next()
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_string);
    Some((code, reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_files_carry_a_code_and_maybe_a_reason() {
        assert_eq!(parse_exit(&format_exit(3, None)), Some((3, None)));
        assert_eq!(
            parse_exit(&format_exit(137, Some("resource_limit:memory"))),
            Some((137, Some("resource_limit:memory".into())))
        );
        // The old wrapper's format (a bare number) still reads.
        assert_eq!(parse_exit("0\n"), Some((0, None)));
        assert_eq!(parse_exit(""), None);
        assert_eq!(Limit::parse("file_size"), Some(Limit::FileSize));
    }
}
