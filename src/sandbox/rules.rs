//! What the provider process does to itself just before `execve`: rlimits, no new
//! privileges, no capabilities (none now, none after exec, even as uid 0), Landlock rules for
//! files, TCP and scopes, and a seccomp filter. Each step is one the kernel cannot undo for
//! this process or its children.

use std::collections::BTreeMap;

use landlock::{
    ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, NetPort, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, Scope, path_beneath_rules,
};
use nix::sys::resource::{Resource, setrlimit};
use seccompiler::{
    SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
};

use super::Isolation;

/// The Landlock ABI whose rights are asked for: files (incl. truncate and device ioctls),
/// TCP connect, and scopes.
const ABI_WANTED: ABI = ABI::V6;

/// Devices any CLI needs, readable and writable.
const DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
];

pub fn lock_down(isolation: &Isolation) -> Result<(), String> {
    set_limits(isolation)?;
    prctl(libc::PR_SET_NO_NEW_PRIVS, 1, "no_new_privs")?;
    drop_capabilities_for_good()?;
    landlock(isolation)?;
    seccomp()?;
    clear_capabilities()
}

fn set_limits(isolation: &Isolation) -> Result<(), String> {
    let l = isolation.limits;
    let set = |resource: Resource, soft: u64, hard: u64| {
        setrlimit(resource, soft, hard).map_err(|e| format!("setrlimit {resource:?}: {e}"))
    };
    // A core file would land in the checkout (and could be pushed) with the environment.
    set(Resource::RLIMIT_CORE, 0, 0)?;
    if l.processes > 0 {
        // Counted per user namespace: only the agent's own processes.
        set(Resource::RLIMIT_NPROC, l.processes, l.processes)?;
    }
    if l.memory_bytes > 0 {
        set(Resource::RLIMIT_DATA, l.memory_bytes, l.memory_bytes)?;
    }
    if l.cpu_seconds > 0 {
        // SIGXCPU at the soft limit, SIGKILL a little later.
        set(Resource::RLIMIT_CPU, l.cpu_seconds, l.cpu_seconds + 5)?;
    }
    if l.file_bytes > 0 {
        set(Resource::RLIMIT_FSIZE, l.file_bytes, l.file_bytes)?;
    }
    if l.open_files > 0 {
        set(Resource::RLIMIT_NOFILE, l.open_files, l.open_files)?;
    }
    Ok(())
}

fn prctl(option: libc::c_int, arg: libc::c_ulong, what: &str) -> Result<(), String> {
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(option, arg, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!("prctl {what}: {}", std::io::Error::last_os_error()))
    }
}

/// Empties the bounding and ambient sets and locks root's special treatment off, so that
/// `execve` grants no capability even to uid 0 (the worker may run as root).
fn drop_capabilities_for_good() -> Result<(), String> {
    prctl(
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL as _,
        "ambient",
    )?;
    let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse::<libc::c_ulong>().ok())
        .unwrap_or(40);
    for cap in 0..=last {
        prctl(libc::PR_CAPBSET_DROP, cap, "capbset_drop")?;
    }
    const SECBIT_NOROOT: libc::c_ulong = 1 << 0;
    const SECBIT_NOROOT_LOCKED: libc::c_ulong = 1 << 1;
    const SECBIT_NO_SETUID_FIXUP: libc::c_ulong = 1 << 2;
    const SECBIT_NO_SETUID_FIXUP_LOCKED: libc::c_ulong = 1 << 3;
    const SECBIT_KEEP_CAPS_LOCKED: libc::c_ulong = 1 << 5;
    const SECBIT_NO_CAP_AMBIENT_RAISE: libc::c_ulong = 1 << 6;
    const SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED: libc::c_ulong = 1 << 7;
    prctl(
        libc::PR_SET_SECUREBITS,
        SECBIT_NOROOT
            | SECBIT_NOROOT_LOCKED
            | SECBIT_NO_SETUID_FIXUP
            | SECBIT_NO_SETUID_FIXUP_LOCKED
            | SECBIT_KEEP_CAPS_LOCKED
            | SECBIT_NO_CAP_AMBIENT_RAISE
            | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED,
        "securebits",
    )
}

/// Effective, permitted and inheritable sets to empty.
fn clear_capabilities() -> Result<(), String> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capset with a valid header and two data structs, as VERSION_3 requires.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!("capset: {}", std::io::Error::last_os_error()))
    }
}

fn landlock(isolation: &Isolation) -> Result<(), String> {
    let err = |e: landlock::RulesetError| format!("landlock: {e}");
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(ABI::V1))
        .map_err(err)?
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(ABI_WANTED))
        .map_err(err)?;
    if isolation.connect_ports.is_some() {
        // Restricting the network is asked for: a kernel that cannot is refused, not
        // silently allowed everything.
        ruleset = ruleset
            .set_compatibility(CompatLevel::HardRequirement)
            .handle_access(AccessNet::ConnectTcp)
            .map_err(|e| format!("landlock cannot restrict TCP (needs ABI 4): {e}"))?
            .set_compatibility(CompatLevel::BestEffort);
    }
    let mut created = ruleset
        .scope(Scope::Signal | Scope::AbstractUnixSocket)
        .map_err(err)?
        .create()
        .map_err(err)?
        .add_rules(path_beneath_rules(
            &isolation.read,
            AccessFs::from_read(ABI_WANTED),
        ))
        .map_err(err)?
        .add_rules(path_beneath_rules(
            &isolation.write,
            AccessFs::from_all(ABI_WANTED),
        ))
        .map_err(err)?
        .add_rules(path_beneath_rules(DEVICES, AccessFs::from_all(ABI_WANTED)))
        .map_err(err)?
        .add_rules(path_beneath_rules(
            ["/proc"],
            AccessFs::from_read(ABI_WANTED),
        ))
        .map_err(err)?;
    for port in isolation.connect_ports.iter().flatten() {
        created = created
            .add_rule(NetPort::new(*port, AccessNet::ConnectTcp))
            .map_err(err)?;
    }
    let status = created.restrict_self().map_err(err)?;
    if status.ruleset == RulesetStatus::NotEnforced {
        return Err("landlock is not enforced by this kernel".into());
    }
    Ok(())
}

/// Syscalls the provider never needs and an attacker would: reading or steering other
/// processes, kernel attack surface that bypasses or outlives the other layers, and unix
/// sockets (the host's Postgres, Redis and other daemons listen on them; socketpair, which
/// Node uses for its child processes, stays allowed).
fn seccomp() -> Result<(), String> {
    let err = |e: seccompiler::Error| format!("seccomp: {e}");
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for call in [
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_userfaultfd,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_kexec_load,
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_open_tree,
        libc::SYS_move_mount,
        libc::SYS_fsopen,
        libc::SYS_fsmount,
        libc::SYS_setns,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
    ] {
        rules.insert(call, Vec::new());
    }
    let unix = SeccompCondition::new(
        0,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::Eq,
        libc::AF_UNIX as u64,
    )
    .map_err(|e| format!("seccomp: {e}"))?;
    rules.insert(
        libc::SYS_socket,
        vec![SeccompRule::new(vec![unix]).map_err(|e| format!("seccomp: {e}"))?],
    );
    let arch = std::env::consts::ARCH
        .try_into()
        .map_err(|e: seccompiler::BackendError| format!("seccomp: {e}"))?;
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(|e| format!("seccomp: {e}"))?;
    let program: seccompiler::BpfProgram =
        filter.try_into().map_err(|e| format!("seccomp: {e}"))?;
    seccompiler::apply_filter(&program).map_err(err)
}

/// No new privileges and the seccomp filter, nothing else (the probe's check).
pub fn lock_down_seccomp_only() -> Result<(), String> {
    prctl(libc::PR_SET_NO_NEW_PRIVS, 1, "no_new_privs")?;
    seccomp()
}
