//! The limits the agent's init watches (the kernel's rlimits are per process, and only root
//! gets cgroups on this kind of host): how many processes the agent has, their memory, the
//! disk its writable trees use, and whether one of its cgroups (`cgroups`) hit its cap. Past one, init kills the namespace and the run ends
//! `resource_limit:<which>`. Rlimits (set on the provider in `rules`) stay the hard
//! backstop between two looks.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::cgroups::RunCgroups;
use super::{Isolation, Limit, ResourceLimits};

/// How often the disk use is summed (a walk of the checkout).
const DISK_EVERY: Duration = Duration::from_secs(5);

pub struct Watch<'a> {
    limits: ResourceLimits,
    cgroups: &'a RunCgroups,
    disk_roots: Vec<PathBuf>,
    next_disk: Instant,
    page_size: u64,
}

impl<'a> Watch<'a> {
    pub fn new(isolation: &Isolation, cgroups: &'a RunCgroups) -> Self {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        Self {
            limits: isolation.limits,
            cgroups,
            disk_roots: isolation.disk_roots.clone(),
            next_disk: Instant::now() + DISK_EVERY,
            page_size: u64::try_from(page).unwrap_or(4096),
        }
    }

    /// The first limit the agent is past, looking at this namespace's `/proc`.
    pub fn exceeded(&mut self) -> Option<Limit> {
        if let Some(limit) = self.cgroups.hit() {
            return Some(limit);
        }
        let (processes, resident) = self.processes();
        // init itself is not the agent's.
        let processes = processes.saturating_sub(1);
        if self.limits.processes > 0 && processes >= self.limits.processes {
            return Some(Limit::Processes);
        }
        if self.limits.memory_bytes > 0 && resident > self.limits.memory_bytes {
            return Some(Limit::Memory);
        }
        if self.limits.disk_bytes > 0 && Instant::now() >= self.next_disk {
            self.next_disk = Instant::now() + DISK_EVERY;
            let used: u64 = self.disk_roots.iter().map(|r| disk_usage(r)).sum::<u64>()
                + self.deleted_but_open();
            if used > self.limits.disk_bytes {
                return Some(Limit::Disk);
            }
        }
        None
    }

    /// Bytes of files under the disk roots that were deleted while a process of the agent
    /// holds them open (still on disk, found through `/proc/<pid>/fd`).
    fn deleted_but_open(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return 0;
        };
        let mut seen = std::collections::HashSet::new();
        let mut total = 0;
        for proc_entry in procs.flatten() {
            let Ok(fds) = std::fs::read_dir(proc_entry.path().join("fd")) else {
                continue;
            };
            for fd in fds.flatten() {
                let Ok(target) = std::fs::read_link(fd.path()) else {
                    continue;
                };
                let target = target.to_string_lossy();
                let Some(path) = target.strip_suffix(" (deleted)") else {
                    continue;
                };
                if !self
                    .disk_roots
                    .iter()
                    .any(|r| Path::new(path).starts_with(r))
                {
                    continue;
                }
                if let Ok(meta) = std::fs::metadata(fd.path())
                    && seen.insert((meta.dev(), meta.ino()))
                {
                    total += meta.blocks() * 512;
                }
            }
        }
        total
    }

    /// (number of processes, their resident memory in bytes).
    fn processes(&self) -> (u64, u64) {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return (0, 0);
        };
        let (mut count, mut pages) = (0u64, 0u64);
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            count += 1;
            if let Ok(statm) = std::fs::read_to_string(format!("/proc/{pid}/statm")) {
                pages += statm
                    .split_whitespace()
                    .nth(1)
                    .and_then(|p| p.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
        (count, pages * self.page_size)
    }
}

/// Bytes allocated under `root`, not following symlinks.
pub fn disk_usage(root: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            total += meta.blocks() * 512;
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    total
}
