//! Hard limits from cgroups, where the helper may create them (root on a cgroup-v1 host:
//! `/sys/fs/cgroup/{memory,pids}/agentfleet/<run>`): the kernel then caps the agent's
//! memory (page cache included) and its number of tasks, and the counters say when a cap
//! was hit, which init watches so the agent is stopped with the limit named. Elsewhere the
//! rlimits and init's own watch are all there is (`agentfleet doctor` says which).

use std::path::{Path, PathBuf};

use super::{Limit, ResourceLimits};

const V1_ROOT: &str = "/sys/fs/cgroup";
const GROUP: &str = "agentfleet";

/// The cgroups of one run; removed when dropped after the run ends.
#[derive(Debug, Default)]
pub struct RunCgroups {
    memory: Option<PathBuf>,
    pids: Option<PathBuf>,
}

impl RunCgroups {
    /// Creates the run's cgroups with `limits` and moves this process (and so everything
    /// it starts) into them; empty when cgroups cannot be had here.
    pub fn join(run: &str, limits: &ResourceLimits) -> Self {
        let mut groups = Self::default();
        if !limits.cgroups {
            return groups;
        }
        if limits.memory_bytes > 0 {
            groups.memory = create(
                "memory",
                run,
                &[
                    ("memory.limit_in_bytes", limits.memory_bytes),
                    // Swap counts too where the kernel accounts it.
                    ("memory.memsw.limit_in_bytes", limits.memory_bytes),
                ],
            );
        }
        if limits.processes > 0 {
            groups.pids = create("pids", run, &[("pids.max", limits.processes)]);
        }
        groups
    }

    /// The limit a cgroup enforced so far, if any.
    pub fn hit(&self) -> Option<Limit> {
        if let Some(dir) = &self.memory {
            let oom = std::fs::read_to_string(dir.join("memory.oom_control")).unwrap_or_default();
            if counter(&oom, "oom_kill") > 0 {
                return Some(Limit::Memory);
            }
        }
        if let Some(dir) = &self.pids {
            let events = std::fs::read_to_string(dir.join("pids.events")).unwrap_or_default();
            if counter(&events, "max") > 0 {
                return Some(Limit::Processes);
            }
        }
        None
    }
}

impl Drop for RunCgroups {
    fn drop(&mut self) {
        for dir in [&self.memory, &self.pids].into_iter().flatten() {
            // This process leaves first (a cgroup with a member cannot be removed).
            if let Some(root) = dir.parent().and_then(Path::parent) {
                let _ = std::fs::write(root.join("cgroup.procs"), std::process::id().to_string());
            }
            // The namespace's last processes may take a moment to be reaped.
            for _ in 0..50 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
}

/// `/sys/fs/cgroup/<controller>/agentfleet/<run>` with `settings`, this process in it.
fn create(controller: &str, run: &str, settings: &[(&str, u64)]) -> Option<PathBuf> {
    let base = Path::new(V1_ROOT).join(controller);
    if !base.join("cgroup.procs").exists() {
        return None;
    }
    remove_stale(&base.join(GROUP));
    let dir = base.join(GROUP).join(run);
    std::fs::create_dir_all(&dir).ok()?;
    for (file, value) in settings {
        let path = dir.join(file);
        if path.exists() && std::fs::write(&path, value.to_string()).is_err() {
            tracing::debug!(path = %path.display(), "cannot set a cgroup limit");
        }
    }
    if std::fs::write(dir.join("cgroup.procs"), std::process::id().to_string()).is_err() {
        let _ = std::fs::remove_dir(&dir);
        return None;
    }
    Some(dir)
}

/// Removes the empty cgroups of earlier runs whose helper was killed before it could
/// (a cgroup with members refuses; a minute's age keeps clear of one being joined now).
fn remove_stale(group: &Path) {
    let Ok(entries) = std::fs::read_dir(group) else {
        return;
    };
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > std::time::Duration::from_secs(60));
        if old && entry.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = std::fs::remove_dir(entry.path());
        }
    }
}

/// The value of `key N` in a cgroup counter file.
fn counter(text: &str, key: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Whether runs get cgroups here (the probe's check): one can be made and joined.
pub fn available() -> Result<(), String> {
    let probe = format!("probe-{}", std::process::id());
    let limits = ResourceLimits {
        processes: 1 << 20,
        memory_bytes: 1 << 40,
        cgroups: true,
        ..Default::default()
    };
    let groups = RunCgroups::join(&probe, &limits);
    let ok = groups.memory.is_some() && groups.pids.is_some();
    drop(groups);
    if ok {
        Ok(())
    } else {
        Err("no writable cgroup-v1 memory and pids hierarchies (root on a v1 host needed)".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_by_name() {
        assert_eq!(
            counter("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n", "oom_kill"),
            3
        );
        assert_eq!(counter("max 0\n", "max"), 0);
        assert_eq!(counter("", "max"), 0);
    }
}
