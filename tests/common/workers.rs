//! Worker processes past starting and stopping them: their pids, signals and exits, a
//! worker run as another user, and the processes below one.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::env::{TestEnv, bin};

impl TestEnv {
    /// Starts a worker as `uid`:`gid` with no supplementary groups (through `setpriv`),
    /// with its own workspace root and HOME in the test's folder; returns its pid. The
    /// caller makes the test's folder that user's.
    pub fn start_worker_as(&mut self, uid: u32, gid: u32, extra: &[(&str, &str)]) -> u32 {
        let n = self.workers.len();
        let root = self.worker_root(n);
        let home = self.dir.path().join(format!("home{n}"));
        std::fs::create_dir_all(&home).unwrap();
        std::os::unix::fs::chown(&home, Some(uid), Some(gid)).unwrap();
        let log = std::fs::File::create(self.dir.path().join(format!("worker{n}.log"))).unwrap();
        let mut cmd = Command::new("setpriv");
        cmd.args([
            &format!("--reuid={uid}"),
            &format!("--regid={gid}"),
            "--clear-groups",
            "--",
            world_readable_copy(Path::new(bin())).to_str().unwrap(),
            "worker",
        ])
        .envs(self.env())
        .current_dir(self.dir.path())
        .env("HOME", &home)
        .env("AGENTFLEET__WORKER__WORKSPACE_ROOT", &root)
        .envs(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())))
        .stdout(Stdio::null())
        .stderr(log);
        let child = cmd.spawn().expect("start worker through setpriv");
        let pid = child.id();
        self.workers.push(child);
        pid
    }

    /// The pid of worker process n.
    pub fn worker_pid(&self, n: usize) -> u32 {
        self.workers[n].id()
    }

    /// How many worker processes this test has started (the next one's index).
    pub fn workers_started(&self) -> usize {
        self.workers.len()
    }

    /// Sends `signal` to worker n.
    pub fn signal_worker(&self, n: usize, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.workers[n].id() as i32),
            signal,
        )
        .expect("signal worker");
    }

    /// Waits for worker n to exit and returns its exit code.
    pub fn wait_worker(&mut self, n: usize, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.workers[n].try_wait() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "worker {n} did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `n` workers hold a live lease.
    pub async fn wait_workers(&self, n: usize) {
        let store = self.store().await;
        let deadline = Instant::now() + Duration::from_secs(20);
        while store
            .list_workers()
            .await
            .unwrap()
            .iter()
            .filter(|w| w.status == "alive")
            .count()
            < n
        {
            assert!(Instant::now() < deadline, "workers did not register");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A copy of `path` (an executable) in a folder any user can reach, for processes that run
/// as another user than the test (the checkout may sit under a private folder).
pub fn world_readable_copy(path: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("agentfleet-shared-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = dir.join(path.file_name().unwrap());
    // Copied once per test process (a folder of an earlier process with the same pid may
    // hold an older build).
    static COPIED: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    let mut copied = COPIED.lock().unwrap();
    if !copied.contains(&copy) {
        copied.push(copy.clone());
        let tmp = dir.join(format!(".{}.tmp", uuid::Uuid::new_v4()));
        std::fs::copy(path, &tmp).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&tmp, &copy).unwrap();
    }
    copy
}

/// The pids of `pid`'s descendants (a sandboxed provider runs two levels below the helper
/// the worker started, under a pid of its own namespace).
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(p) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|v| v.parse().ok()) {
            parents.push((p, ppid));
        }
    }
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    found.remove(0);
    found
}
