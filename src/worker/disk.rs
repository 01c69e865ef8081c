//! Whether this worker can write its workspace. A worker whose disk is full can only fail
//! the spawns it takes (each in a fraction of a second, while a healthy worker idles), so
//! while it cannot write there its slots are closed (it takes no spawn) and `/readyz`
//! answers 503 with the reason; a spawn that failed on the disk all the same is handed back
//! to the queue instead of failed (`dispatch.rs`). A small service probes the workspace every
//! `worker.disk_check_interval` (every second while closed, so work resumes soon after
//! space returns) and opens or closes the slots.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::runtime::Runtime;

/// What a probe writes: enough to need a block, as any checkout does.
const PROBE_BYTES: usize = 64 * 1024;

/// How often a closed worker looks again.
const CLOSED_RECHECK: Duration = Duration::from_secs(1);

/// Checks that `root` has `min_free` bytes available and takes a small write; the reason
/// it cannot be used otherwise.
fn probe(root: &Path, min_free: u64) -> Result<(), String> {
    let stat = nix::sys::statvfs::statvfs(root)
        .map_err(|e| format!("cannot read the free space of {}: {e}", root.display()))?;
    let free = stat.blocks_available() as u64 * stat.fragment_size() as u64;
    if free < min_free {
        return Err(format!(
            "the workspace {} has {} KiB free, less than worker.min_free_disk_mb ({} MiB)",
            root.display(),
            free / 1024,
            min_free / (1024 * 1024)
        ));
    }
    let file = root.join(format!(".disk-probe-{}", std::process::id()));
    let written = std::fs::write(&file, vec![0u8; PROBE_BYTES]);
    let _ = std::fs::remove_file(&file);
    written.map_err(|e| format!("cannot write the workspace {}: {e}", root.display()))
}

impl Runtime {
    /// Probes the workspace now and opens or closes the slots by the result; whether it is
    /// writable.
    pub(super) async fn check_disk(&self) -> bool {
        let root = self.git.root().to_path_buf();
        let min_free = self.fleet.settings.worker.min_free_disk_mb * 1024 * 1024;
        let result = tokio::task::spawn_blocking(move || probe(&root, min_free))
            .await
            .unwrap_or_else(|e| Err(format!("the disk probe failed: {e}")));
        let was_closed = self.slots.closed_reason().is_some();
        match result {
            Ok(()) => {
                if was_closed {
                    tracing::info!("the workspace is writable again; taking spawns");
                }
                self.slots.open();
                true
            }
            Err(reason) => {
                if !was_closed {
                    tracing::warn!(%reason, "the workspace cannot be written; taking no spawns");
                }
                self.slots.close(&reason);
                false
            }
        }
    }
}

/// The disk watch: one probe per interval, and every second while the slots are closed
/// (by this watch, or by a spawn that failed on the disk meanwhile).
pub(super) async fn run(rt: Arc<Runtime>, stop: CancellationToken) {
    let interval = rt.fleet.settings.worker.disk_check_interval;
    let step = interval.min(CLOSED_RECHECK);
    loop {
        rt.check_disk().await;
        let mut waited = Duration::ZERO;
        while waited < interval && rt.slots.closed_reason().is_none() {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(step) => waited += step,
            }
        }
        if rt.slots.closed_reason().is_some() {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(step) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::probe;

    #[test]
    fn probe_refuses_a_workspace_short_of_the_minimum_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        probe(dir.path(), 0).unwrap();
        let err = probe(dir.path(), u64::MAX).unwrap_err();
        assert!(err.contains("worker.min_free_disk_mb"), "{err}");
        let err = probe(&dir.path().join("missing"), 0).unwrap_err();
        assert!(err.contains("missing"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
