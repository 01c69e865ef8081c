//! The signal file: where in its checkout an agent may say how it finished, and how that
//! file is read without trusting it (a symlink, a FIFO or a huge file is refused, a stalled
//! read given up). What the file says is weighed against the rest in `outcome.rs`.

use std::path::Path;
use std::time::Duration;

use crate::agent_files;
use crate::providers;

/// Where in its checkout an agent may say how it finished.
pub const SIGNAL_FILE: &str = ".agentfleet/output/signal.json";
/// A signal file is a few lines of JSON; a larger one is refused unread.
const MAX_SIGNAL_BYTES: u64 = 1024 * 1024;
/// The signal file is read without blocking on it; this bounds a stalled filesystem.
const SIGNAL_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The signal file, if the agent wrote one: Some(Err) with the reason when it is refused (a
/// symlink on its path, not a regular file, too large) or malformed. Never blocks: a FIFO
/// is refused at open, and a stalled read is given up after `SIGNAL_READ_TIMEOUT`.
pub(super) async fn read_signal(workdir: &Path) -> Option<Result<providers::Signal, String>> {
    let dir = workdir.to_path_buf();
    let read = tokio::task::spawn_blocking(move || {
        agent_files::read_regular(&dir, Path::new(SIGNAL_FILE), MAX_SIGNAL_BYTES)
    });
    let bytes = match tokio::time::timeout(SIGNAL_READ_TIMEOUT, read).await {
        Ok(Ok(Ok(bytes))) => bytes?,
        Ok(Ok(Err(e))) => return Some(Err(format!("signal file refused: {e}"))),
        Ok(Err(e)) => return Some(Err(format!("signal file not read: {e}"))),
        Err(_) => {
            return Some(Err(format!(
                "signal file not read within {SIGNAL_READ_TIMEOUT:?}"
            )));
        }
    };
    Some(providers::parse_signal(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_planted_signal_file_is_refused_promptly() {
        let tmp = tempfile::tempdir().unwrap();
        let (workdir, outside) = (tmp.path().join("workdir"), tmp.path().join("outside.json"));
        std::fs::create_dir_all(workdir.join(".agentfleet/output")).unwrap();
        let signal = workdir.join(SIGNAL_FILE);
        // Absent: nothing to say.
        assert!(read_signal(&workdir).await.is_none());
        // A FIFO: refused at once, not waited on.
        nix::unistd::mkfifo(&signal, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        let read = tokio::time::timeout(Duration::from_secs(2), read_signal(&workdir)).await;
        let reason = read.expect("blocked on a FIFO").unwrap().unwrap_err();
        assert!(reason.contains("FIFO"), "{reason}");
        // A symlink to a forged result elsewhere: refused, not read.
        std::fs::remove_file(&signal).unwrap();
        std::fs::write(&outside, r#"{"status":"done","result":"forged"}"#).unwrap();
        std::os::unix::fs::symlink(&outside, &signal).unwrap();
        let reason = read_signal(&workdir).await.unwrap().unwrap_err();
        assert!(reason.contains("symlink"), "{reason}");
        // A plain one is read.
        std::fs::remove_file(&signal).unwrap();
        std::fs::write(&signal, r#"{"status":"done","result":"mine"}"#).unwrap();
        let ok = read_signal(&workdir).await.unwrap().unwrap();
        assert_eq!(ok.result, Some(serde_json::json!("mine")));
    }
}
