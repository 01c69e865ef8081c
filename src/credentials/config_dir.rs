//! An agent's copy of its account's config dir on a node:
//! `<agent folder>/accounts/<account id>/`, mode 0700 (and `accounts/` too), holding the
//! provider's credentials file (mode 0600, written fresh for each run). The provider's
//! config-dir variable points the process at it, so the CLI's sessions and settings live
//! there too. Each agent has its own: settings or hooks one agent plants in it never run
//! in another agent of the account, and no agent reads another's sessions. A resume (same
//! agent, same account) finds its session there; a failover carries the session's files to
//! the agent's dir of the new account.
//!
//! The agent writes in this dir, so the worker handles what it finds there through
//! [`crate::agent_files`]: a symlink the agent left (`.credentials.json` or `.gemini` → a
//! file elsewhere) is replaced, never written through, and carrying a session copies
//! regular files only, each size-capped.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::agent_files::{self, AgentFileError, Modes};

/// A credentials file is a few hundred bytes of JSON.
const MAX_CREDENTIALS_BYTES: u64 = 1024 * 1024;
/// A session's transcript can be long; larger than this, it is not carried.
const MAX_SESSION_FILE_BYTES: u64 = 256 * 1024 * 1024;
/// Carrying stops after this many entries or this depth (the agent shapes the tree).
const MAX_CARRY_ENTRIES: usize = 100_000;
const MAX_CARRY_DEPTH: usize = 16;

/// The agent's copy of the account's config dir, in the agent's folder.
pub fn account_dir(agent_dir: &Path, account_id: Uuid) -> PathBuf {
    accounts_dir(agent_dir).join(account_id.to_string())
}

fn accounts_dir(agent_dir: &Path) -> PathBuf {
    agent_dir.join("accounts")
}

/// Creates `dir` (and missing parents) and makes it 0700. For the worker's own folders,
/// which no agent writes in.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> AgentFileError {
    let path = path.to_path_buf();
    move |source| AgentFileError::Io {
        action,
        path,
        source,
    }
}

/// Creates the agent's dir of the account (0700) and, for a credentials-file account,
/// writes the file at `relative` (0600) with `contents`, renamed into place. Blocking: run
/// it off the async threads.
pub fn write(
    agent_dir: &Path,
    account_id: Uuid,
    file: Option<(&str, &[u8])>,
) -> Result<PathBuf, AgentFileError> {
    let accounts = accounts_dir(agent_dir);
    private_dir(&accounts).map_err(io_error("create", &accounts))?;
    let id = account_id.to_string();
    agent_files::ensure_dir_with(&accounts, Path::new(&id), Modes::PRIVATE.dir)?;
    let dir = accounts.join(id);
    if let Some((relative, contents)) = file {
        agent_files::write_file_with(&dir, Path::new(relative), contents, Modes::PRIVATE)?;
    }
    Ok(dir)
}

/// The credentials file as the CLI left it (it may have refreshed the tokens itself), if
/// it is a regular file of a sensible size.
pub fn read(agent_dir: &Path, account_id: Uuid, relative: &str) -> Option<Vec<u8>> {
    let dir = account_dir(agent_dir, account_id);
    agent_files::read_regular(&dir, Path::new(relative), MAX_CREDENTIALS_BYTES)
        .ok()
        .flatten()
}

/// Copies the files of session `session_id` (those whose name holds the id, at the same
/// place relative to the dir) from the agent's dir of account `from` to its dir of account
/// `to`, so the CLI can resume it there. Only regular files are copied, never through a
/// symlink, each up to `MAX_SESSION_FILE_BYTES`; anything else is skipped. Files are
/// private (0600), as everything in these dirs. Returns how many were copied.
pub fn carry_session(
    agent_dir: &Path,
    from: Uuid,
    to: Uuid,
    session_id: &str,
) -> Result<usize, AgentFileError> {
    if session_id.len() < 8 || session_id.contains('/') {
        return Ok(0);
    }
    let accounts = accounts_dir(agent_dir);
    private_dir(&accounts).map_err(io_error("create", &accounts))?;
    agent_files::ensure_dir_with(&accounts, Path::new(&to.to_string()), Modes::PRIVATE.dir)?;
    let (from, to) = (account_dir(agent_dir, from), account_dir(agent_dir, to));
    if !std::fs::symlink_metadata(&from).is_ok_and(|m| m.is_dir()) {
        return Ok(0);
    }
    let (mut copied, mut seen) = (0, 0);
    let mut stack = vec![PathBuf::new()];
    while let Some(relative) = stack.pop() {
        // A folder swapped for a symlink after it was listed only shows names from
        // elsewhere: every file is read beneath `from`, through no symlink.
        let Ok(entries) = std::fs::read_dir(from.join(&relative)) else {
            continue;
        };
        for entry in entries.flatten() {
            seen += 1;
            if seen > MAX_CARRY_ENTRIES {
                tracing::warn!(from = %from.display(), "config dir too large; the rest of the session is not carried");
                return Ok(copied);
            }
            // The entry's own type: a symlink is a symlink here, never what it points at.
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let path = relative.join(entry.file_name());
            if kind.is_dir() && path.components().count() < MAX_CARRY_DEPTH {
                stack.push(path);
            } else if kind.is_file() && entry.file_name().to_string_lossy().contains(session_id) {
                let carried = agent_files::read_regular(&from, &path, MAX_SESSION_FILE_BYTES)
                    .and_then(|bytes| match bytes {
                        Some(bytes) => {
                            agent_files::write_file_with(&to, &path, &bytes, Modes::PRIVATE)
                                .map(|()| 1)
                        }
                        None => Ok(0),
                    });
                match carried {
                    Ok(n) => copied += n,
                    Err(e) => tracing::warn!(error = %e, "session file not carried"),
                }
            }
        }
    }
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    }

    const SID: &str = "583e6d30-8b67-41db-90b6-f8235a8882eb";

    #[test]
    fn dirs_are_0700_and_credentials_0600() {
        let tmp = tempfile::tempdir().unwrap();
        let agent = tmp.path().join("agents/otter");
        let id = Uuid::new_v4();
        let dir = write(&agent, id, Some((".credentials.json", b"{}"))).unwrap();
        assert_eq!(dir, account_dir(&agent, id));
        assert!(dir.starts_with(&agent));
        assert_eq!(mode(&agent.join("accounts")), 0o700);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(".credentials.json")), 0o600);
        // Written again (each run): still 0600, new contents.
        write(&agent, id, Some((".credentials.json", b"{\"a\":1}"))).unwrap();
        assert_eq!(read(&agent, id, ".credentials.json").unwrap(), b"{\"a\":1}");
        let nested = write(&agent, id, Some((".gemini/oauth_creds.json", b"{}"))).unwrap();
        assert_eq!(mode(&nested.join(".gemini")), 0o700);
    }

    #[test]
    fn two_agents_of_one_account_have_their_own_dirs() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("agents/a"), tmp.path().join("agents/b"));
        let id = Uuid::new_v4();
        let dir_a = write(&a, id, Some((".credentials.json", b"{}"))).unwrap();
        std::fs::write(dir_a.join("settings.json"), r#"{"hooks":{}}"#).unwrap();
        let dir_b = write(&b, id, Some((".credentials.json", b"{}"))).unwrap();
        assert_ne!(dir_a, dir_b);
        assert!(!dir_b.join("settings.json").exists());
    }

    #[test]
    fn a_symlink_left_in_the_dir_is_replaced_not_written_through() {
        let tmp = tempfile::tempdir().unwrap();
        let agent = tmp.path().join("agents/otter");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("target"), "keep").unwrap();
        let id = Uuid::new_v4();
        let dir = write(&agent, id, None).unwrap();
        symlink(outside.join("target"), dir.join(".credentials.json")).unwrap();
        symlink(&outside, dir.join(".gemini")).unwrap();
        write(&agent, id, Some((".credentials.json", b"{\"fresh\":1}"))).unwrap();
        write(&agent, id, Some((".gemini/oauth_creds.json", b"{}"))).unwrap();
        let creds = dir.join(".credentials.json");
        assert!(std::fs::symlink_metadata(&creds).unwrap().is_file());
        assert_eq!(std::fs::read(&creds).unwrap(), b"{\"fresh\":1}");
        assert!(
            std::fs::symlink_metadata(dir.join(".gemini"))
                .unwrap()
                .is_dir()
        );
        assert_eq!(std::fs::read(outside.join("target")).unwrap(), b"keep");
        let names: Vec<_> = std::fs::read_dir(&outside).unwrap().collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn an_account_dir_replaced_by_a_symlink_is_neither_written_nor_carried_from() {
        let tmp = tempfile::tempdir().unwrap();
        let (agent, old, new, a, b) = two_accounts(tmp.path());
        let other = tmp.path().join("agents/other/accounts/x");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join(format!("{SID}.jsonl")), "another agent's").unwrap();
        std::fs::remove_dir(&a).unwrap();
        symlink(&other, &a).unwrap();
        assert_eq!(carry_session(&agent, old, new, SID).unwrap(), 0);
        assert!(!b.join(format!("{SID}.jsonl")).exists());
        write(&agent, old, Some((".credentials.json", b"{}"))).unwrap();
        assert!(std::fs::symlink_metadata(&a).unwrap().is_dir());
        assert!(!other.join(".credentials.json").exists());
    }

    /// An agent's folder and its dirs of two accounts (the first made, the second not).
    fn two_accounts(tmp: &Path) -> (PathBuf, Uuid, Uuid, PathBuf, PathBuf) {
        let agent = tmp.join("agents/otter");
        let (old, new) = (Uuid::new_v4(), Uuid::new_v4());
        let a = write(&agent, old, None).unwrap();
        let b = account_dir(&agent, new);
        (agent, old, new, a, b)
    }

    #[test]
    fn a_session_is_carried_to_another_account() {
        let tmp = tempfile::tempdir().unwrap();
        let (agent, old, new, a, b) = two_accounts(tmp.path());
        std::fs::create_dir_all(a.join("projects/-work-x")).unwrap();
        std::fs::write(a.join(format!("projects/-work-x/{SID}.jsonl")), "{}").unwrap();
        std::fs::write(a.join("projects/-work-x/other.jsonl"), "{}").unwrap();
        std::fs::write(a.join(".credentials.json"), "{}").unwrap();
        assert_eq!(carry_session(&agent, old, new, SID).unwrap(), 1);
        assert_eq!(mode(&b), 0o700);
        let carried = b.join(format!("projects/-work-x/{SID}.jsonl"));
        assert!(carried.exists());
        assert_eq!(mode(&carried), 0o600);
        assert!(!b.join(".credentials.json").exists());
        assert!(!b.join("projects/-work-x/other.jsonl").exists());
    }

    #[test]
    fn carrying_a_session_follows_no_symlink_and_skips_what_is_not_a_file() {
        let tmp = tempfile::tempdir().unwrap();
        let (agent, old, new, a, b) = two_accounts(tmp.path());
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(outside.join("projects")).unwrap();
        std::fs::write(outside.join("secret"), "not the agent's").unwrap();
        std::fs::write(outside.join(format!("projects/{SID}.jsonl")), "elsewhere").unwrap();
        std::fs::create_dir_all(a.join("p")).unwrap();
        // A file link and a folder link named for the session, a FIFO, and a real file.
        symlink(outside.join("secret"), a.join(format!("p/{SID}.jsonl"))).unwrap();
        symlink(outside.join("projects"), a.join(format!("linked-{SID}"))).unwrap();
        symlink(outside.join("projects"), a.join("q")).unwrap();
        nix::unistd::mkfifo(
            &a.join(format!("{SID}.fifo")),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        std::fs::write(a.join(format!("{SID}.json")), "mine").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(carry_session(&agent, old, new, SID).unwrap()));
        let copied = rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("carrying blocked");
        assert_eq!(copied, 1);
        assert_eq!(
            std::fs::read(b.join(format!("{SID}.json"))).unwrap(),
            b"mine"
        );
        for absent in [
            format!("p/{SID}.jsonl"),
            format!("linked-{SID}"),
            format!("q/{SID}.jsonl"),
            format!("{SID}.fifo"),
        ] {
            assert!(
                std::fs::symlink_metadata(b.join(&absent)).is_err(),
                "{absent}"
            );
        }
    }
}
