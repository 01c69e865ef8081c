//! Per-account config dirs on a node: `<credentials.config_root>/<account id>/`, mode 0700
//! (and the root too), holding the provider's credentials file (mode 0600, written to a
//! temporary file and renamed, so a CLI never reads half a file). The provider's
//! config-dir variable points the process at it, so the CLI's sessions live there too: a
//! resume must use the same account, and a failover carries the session's files over.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use uuid::Uuid;

/// The account's config dir under `root`.
pub fn account_dir(root: &Path, account_id: Uuid) -> PathBuf {
    root.join(account_id.to_string())
}

/// Creates `dir` (and missing parents) and makes it 0700.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Creates the account's dir (0700) and, for a credentials-file account, writes the file
/// at `relative` (0600) with `contents`. Blocking: run it off the async threads.
pub fn write(
    root: &Path,
    account_id: Uuid,
    file: Option<(&str, &[u8])>,
) -> std::io::Result<PathBuf> {
    private_dir(root)?;
    let dir = account_dir(root, account_id);
    private_dir(&dir)?;
    if let Some((relative, contents)) = file {
        let path = dir.join(relative);
        if let Some(parent) = path.parent() {
            private_dir(parent)?;
        }
        // Unique per writer: agents of several workers may write the same account's file.
        let tmp = path.with_file_name(format!(
            ".{}.tmp-{}-{:016x}",
            path.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("credentials"),
            std::process::id(),
            rand::random::<u64>()
        ));
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        out.write_all(contents)?;
        out.sync_all()?;
        std::fs::rename(&tmp, &path)?;
    }
    Ok(dir)
}

/// The credentials file as the CLI left it (it may have refreshed the tokens itself).
pub fn read(root: &Path, account_id: Uuid, relative: &str) -> Option<Vec<u8>> {
    std::fs::read(account_dir(root, account_id).join(relative)).ok()
}

/// Copies the files of session `session_id` (those whose name holds the id, at the same
/// place relative to the dir) from one account's dir to another's, so the CLI can resume
/// it there. Files are private (0600), as everything in these dirs. Returns how many.
pub fn carry_session(from: &Path, to: &Path, session_id: &str) -> std::io::Result<usize> {
    if session_id.len() < 8 || session_id.contains('/') {
        return Ok(0);
    }
    let mut copied = 0;
    let mut stack = vec![from.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file()
                && entry.file_name().to_string_lossy().contains(session_id)
                && let Ok(relative) = path.strip_prefix(from)
            {
                let target = to.join(relative);
                if let Some(parent) = target.parent() {
                    private_dir(parent)?;
                }
                std::fs::copy(&path, &target)?;
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600))?;
                copied += 1;
            }
        }
    }
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn dirs_are_0700_and_credentials_0600() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("accounts");
        let id = Uuid::new_v4();
        let dir = write(&root, id, Some((".credentials.json", b"{}"))).unwrap();
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(".credentials.json")), 0o600);
        // Written again (a refresh): still 0600, new contents.
        write(&root, id, Some((".credentials.json", b"{\"a\":1}"))).unwrap();
        assert_eq!(read(&root, id, ".credentials.json").unwrap(), b"{\"a\":1}");
        let nested = write(&root, id, Some((".gemini/oauth_creds.json", b"{}"))).unwrap();
        assert_eq!(mode(&nested.join(".gemini")), 0o700);
    }

    #[test]
    fn a_session_is_carried_to_another_account() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        let sid = "583e6d30-8b67-41db-90b6-f8235a8882eb";
        std::fs::create_dir_all(a.join("projects/-work-x")).unwrap();
        std::fs::write(a.join(format!("projects/-work-x/{sid}.jsonl")), "{}").unwrap();
        std::fs::write(a.join("projects/-work-x/other.jsonl"), "{}").unwrap();
        std::fs::write(a.join(".credentials.json"), "{}").unwrap();
        assert_eq!(carry_session(&a, &b, sid).unwrap(), 1);
        assert!(b.join(format!("projects/-work-x/{sid}.jsonl")).exists());
        assert!(!b.join(".credentials.json").exists());
        assert!(!b.join("projects/-work-x/other.jsonl").exists());
    }
}
