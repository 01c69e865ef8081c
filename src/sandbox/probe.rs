//! What the sandbox can enforce on this host, found by trying each layer in a throw-away
//! child of the helper (`agentfleet-agent sandbox-exec --probe`, printing JSON): the worker
//! asks at start (and refuses to start when a required layer is missing), `/readyz` shows
//! it, `agentfleet doctor` prints it.

use std::path::Path;

use nix::sched::{CloneFlags, unshare};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, fork};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerState {
    On,
    Off,
    Unavailable,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Layer {
    pub name: String,
    pub state: LayerState,
    pub detail: String,
    /// The sandbox refuses to run without it.
    pub required: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    pub layers: Vec<Layer>,
}

impl Report {
    /// The required layers that are not available, with why.
    pub fn missing(&self) -> Vec<&Layer> {
        self.layers
            .iter()
            .filter(|l| l.required && l.state == LayerState::Unavailable)
            .collect()
    }

    /// Every layer marked off (the sandbox is switched off).
    pub fn switched_off(mut self) -> Self {
        for layer in &mut self.layers {
            layer.state = LayerState::Off;
            layer.required = false;
            layer.detail = "sandbox.mode = \"off\"".into();
        }
        self
    }
}

/// Runs the probe through `helper` (the agentfleet binary) for `settings` (whether Landlock's
/// TCP rules are required, whether cgroups are wanted).
pub fn probe_for(helper: &Path, settings: &crate::config::Settings) -> Report {
    let mut report = probe(helper, settings.sandbox_connect_ports().is_some());
    if !settings.sandbox.limits.cgroups {
        for layer in report.layers.iter_mut().filter(|l| l.name == "cgroups") {
            layer.state = LayerState::Off;
            layer.detail = "sandbox.limits.cgroups = false".into();
        }
    }
    report
}

/// Runs the probe through `helper` (the agentfleet binary). `restrict_network`: whether
/// Landlock's TCP rules are required.
pub fn probe(helper: &Path, restrict_network: bool) -> Report {
    let output = std::process::Command::new(helper)
        .args([super::HELPER_ARG, "--probe"])
        .env_clear()
        .output();
    let mut report: Report = match output {
        Ok(out) => serde_json::from_slice(&out.stdout).unwrap_or_else(|e| Report {
            layers: vec![Layer {
                name: "probe".into(),
                state: LayerState::Unavailable,
                detail: format!(
                    "the probe answered nonsense ({e}): {}",
                    String::from_utf8_lossy(&out.stderr)
                ),
                required: true,
            }],
        }),
        Err(e) => Report {
            layers: vec![Layer {
                name: "probe".into(),
                state: LayerState::Unavailable,
                detail: format!("cannot run {}: {e}", helper.display()),
                required: true,
            }],
        },
    };
    for layer in &mut report.layers {
        if layer.name == "landlock network" {
            layer.required = restrict_network;
            if !restrict_network && layer.state == LayerState::On {
                layer.state = LayerState::Off;
                layer.detail = "sandbox.network.mode = \"open\"".into();
            }
        }
    }
    report
}

/// The probe itself, in the helper process (single-threaded): prints the report, exits.
pub fn probe_child() -> ! {
    let mut layers = Vec::new();
    // Read before the new namespace: inside it, unmapped ids read as the overflow id.
    let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
    let ns = in_child(|| {
        if let Err(e) = unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWPID) {
            eprintln!("probe: user and pid namespaces: {e}");
            return 10;
        }
        let mapped = std::fs::write("/proc/self/setgroups", "deny").is_ok()
            && std::fs::write("/proc/self/uid_map", format!("{uid} {uid} 1")).is_ok()
            && std::fs::write("/proc/self/gid_map", format!("{gid} {gid} 1")).is_ok();
        if !mapped {
            eprintln!("probe: cannot map ids: {}", std::io::Error::last_os_error());
            return 10;
        }
        in_child(|| {
            if nix::unistd::getpid().as_raw() != 1 {
                return 11;
            }
            if unshare(CloneFlags::CLONE_NEWNS).is_err() {
                return 12;
            }
            let flags = nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE;
            if nix::mount::mount(None::<&str>, "/", None::<&str>, flags, None::<&str>).is_err() {
                return 12;
            }
            let proc_flags = nix::mount::MsFlags::MS_NOSUID
                | nix::mount::MsFlags::MS_NODEV
                | nix::mount::MsFlags::MS_NOEXEC;
            if nix::mount::mount(
                Some("proc"),
                "/proc",
                Some("proc"),
                proc_flags,
                None::<&str>,
            )
            .is_err()
            {
                return 13;
            }
            0
        })
    });
    let ns_layer = |name: &str, fails_at: i32, what: &str| Layer {
        name: name.into(),
        state: if ns == 0 || ns > fails_at {
            LayerState::On
        } else {
            LayerState::Unavailable
        },
        detail: if ns == 0 || ns > fails_at {
            what.into()
        } else {
            format!("cannot be created here (kernel or sysctl forbids it; code {ns})")
        },
        required: true,
    };
    layers.push(ns_layer(
        "user namespace",
        10,
        "uid/gid mapped to the worker's own; no capability survives exec",
    ));
    layers.push(ns_layer(
        "pid namespace",
        11,
        "agents see only their own processes; all die with the agent",
    ));
    layers.push(ns_layer(
        "mount namespace",
        13,
        "fresh /proc; the worker's config, key and store files masked",
    ));
    // SAFETY: the version query takes no pointers.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            1u32,
        )
    };
    let abi = if abi < 0 { 0 } else { abi };
    let landlock = |name: &str, min: i64, what: &str, required: bool| Layer {
        name: name.into(),
        state: if abi >= min {
            LayerState::On
        } else {
            LayerState::Unavailable
        },
        detail: if abi >= min {
            format!("{what} (Landlock ABI {abi})")
        } else {
            format!("needs Landlock ABI {min}, this kernel has {abi}")
        },
        required,
    };
    layers.push(landlock(
        "landlock filesystem",
        1,
        "read the system and the CLI, write only the agent's own work",
        true,
    ));
    layers.push(landlock(
        "landlock network",
        4,
        "TCP connect only to sandbox.network.allow ports",
        true,
    ));
    layers.push(landlock(
        "landlock scopes",
        6,
        "no signals or abstract unix sockets outside the agent",
        false,
    ));
    let seccomp = in_child(|| {
        if super::rules::lock_down_seccomp_only().is_ok() {
            0
        } else {
            1
        }
    });
    layers.push(Layer {
        name: "seccomp".into(),
        state: if seccomp == 0 {
            LayerState::On
        } else {
            LayerState::Unavailable
        },
        detail: if seccomp == 0 {
            "no ptrace, process_vm_*, io_uring, bpf, keyrings, mounts or unix sockets".into()
        } else {
            "filters cannot be installed here".into()
        },
        required: true,
    });
    layers.push(Layer {
        name: "resource limits".into(),
        state: if ns == 0 {
            LayerState::On
        } else {
            LayerState::Unavailable
        },
        detail: "rlimits per process (processes, data size, CPU time, file size, open \
                 files); the agent's init watches processes, total memory and disk"
            .into(),
        required: false,
    });
    let cgroups = in_child(|| i32::from(super::cgroups::available().is_err()));
    layers.push(Layer {
        name: "cgroups".into(),
        state: if cgroups == 0 {
            LayerState::On
        } else {
            LayerState::Unavailable
        },
        detail: if cgroups == 0 {
            "memory and pids capped by the kernel per agent (cgroup v1)".into()
        } else {
            "no writable cgroup-v1 memory and pids hierarchies (root on a v1 host needed); \
             the watched limits and rlimits apply"
                .into()
        },
        required: false,
    });
    let report = Report { layers };
    println!("{}", serde_json::to_string(&report).unwrap_or_default());
    std::process::exit(0)
}

/// Runs `check` in a forked child and returns its exit code (-1 if it died otherwise).
fn in_child(check: impl FnOnce() -> i32) -> i32 {
    // SAFETY: the helper is single-threaded.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => std::process::exit(check()),
        Ok(ForkResult::Parent { child }) => match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => code,
            _ => -1,
        },
        Err(_) => -1,
    }
}
