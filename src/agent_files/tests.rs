//! Every way an agent-written path can point elsewhere, against both resolvers (`openat2`
//! and the `openat` walk used without it), and that nothing outside the directory is read,
//! written or removed. One file on purpose: each attack is run the same way against both
//! resolvers, and the cases read best as one list.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use super::*;

const RESOLVERS: [Resolver; 2] = [Resolver::Openat2, Resolver::Walk];
const CAP: u64 = 1024 * 1024;

/// A directory the worker chose (`inside`) and one the agent must not reach (`outside`).
struct Dirs {
    _tmp: tempfile::TempDir,
    inside: PathBuf,
    outside: PathBuf,
}

impl Dirs {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let (inside, outside) = (tmp.path().join("inside"), tmp.path().join("outside"));
        std::fs::create_dir(&inside).unwrap();
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("secret"), "outside secret").unwrap();
        std::fs::write(
            outside.join("signal.json"),
            r#"{"status":"done","result":"forged"}"#,
        )
        .unwrap();
        Self {
            _tmp: tmp,
            inside,
            outside,
        }
    }

    fn put(&self, relative: &str, contents: &str) {
        let path = self.inside.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }

    fn link(&self, relative: &str, target: &Path) {
        let path = self.inside.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        symlink(target, path).unwrap();
    }

    /// Every path under `outside` with its contents (None for directories).
    fn outside_snapshot(&self) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
        let mut seen = BTreeMap::new();
        let mut stack = vec![self.outside.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let path = entry.path();
                if entry.file_type().unwrap().is_dir() {
                    seen.insert(path.clone(), None);
                    stack.push(path);
                } else {
                    seen.insert(path.clone(), std::fs::read(&path).ok());
                }
            }
        }
        seen
    }
}

fn read(
    dirs: &Dirs,
    relative: &str,
    resolver: Resolver,
) -> Result<Option<Vec<u8>>, AgentFileError> {
    read_with(&dirs.inside, Path::new(relative), CAP, resolver)
}

fn mkfifo(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    nix::unistd::mkfifo(path, Mode::from_bits_truncate(0o644)).unwrap();
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

/// Runs `f` on a thread and fails the test if it does not return within two seconds.
fn promptly<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(2))
        .expect("the call blocked")
}

#[test]
fn a_regular_file_is_read_and_an_absent_one_is_none() {
    let dirs = Dirs::new();
    dirs.put(".agentfleet/output/signal.json", "{}");
    for resolver in RESOLVERS {
        let got = read(&dirs, ".agentfleet/output/signal.json", resolver).unwrap();
        assert_eq!(got.as_deref(), Some(&b"{}"[..]), "{resolver:?}");
        assert!(
            read(&dirs, ".agentfleet/output/none.json", resolver)
                .unwrap()
                .is_none()
        );
        assert!(read(&dirs, "missing/dir/file", resolver).unwrap().is_none());
    }
}

#[test]
fn a_symlinked_file_is_refused_wherever_it_points() {
    let dirs = Dirs::new();
    dirs.link("out/forged.json", &dirs.outside.join("signal.json"));
    dirs.link("out/zero", Path::new("/dev/zero"));
    dirs.put("out/real", "inside");
    dirs.link("out/relative", Path::new("real"));
    for resolver in RESOLVERS {
        for name in ["out/forged.json", "out/zero", "out/relative"] {
            match read(&dirs, name, resolver) {
                Err(AgentFileError::Symlink { path }) => {
                    assert_eq!(path, dirs.inside.join(name), "{resolver:?}")
                }
                other => panic!("{name} with {resolver:?}: {other:?}"),
            }
        }
    }
}

#[test]
fn a_symlink_on_the_way_is_refused() {
    let dirs = Dirs::new();
    std::fs::create_dir_all(dirs.outside.join("output")).unwrap();
    std::fs::write(dirs.outside.join("output/signal.json"), "{}").unwrap();
    // The first component, and one in the middle.
    dirs.link(".agentfleet", &dirs.outside);
    dirs.link("a/output", &dirs.outside.join("output"));
    for resolver in RESOLVERS {
        for (name, link) in [
            (".agentfleet/output/signal.json", ".agentfleet"),
            ("a/output/signal.json", "a/output"),
        ] {
            match read(&dirs, name, resolver) {
                Err(AgentFileError::Symlink { path }) => {
                    assert_eq!(path, dirs.inside.join(link), "{resolver:?}")
                }
                other => panic!("{name} with {resolver:?}: {other:?}"),
            }
        }
    }
}

#[test]
fn a_fifo_is_refused_without_blocking() {
    let dirs = Dirs::new();
    mkfifo(&dirs.inside.join(".agentfleet/output/signal.json"));
    for resolver in RESOLVERS {
        let inside = dirs.inside.clone();
        let got = promptly(move || {
            read_with(
                &inside,
                Path::new(".agentfleet/output/signal.json"),
                CAP,
                resolver,
            )
        });
        match got {
            Err(AgentFileError::NotRegular { kind, .. }) => assert_eq!(kind, FileKind::Fifo),
            other => panic!("{resolver:?}: {other:?}"),
        }
    }
    let e = read(&dirs, ".agentfleet/output/signal.json", Resolver::Openat2).unwrap_err();
    assert!(
        e.to_string().contains("is a FIFO, not a regular file"),
        "{e}"
    );
}

#[test]
fn directories_sockets_and_devices_are_not_regular_files() {
    let dirs = Dirs::new();
    std::fs::create_dir_all(dirs.inside.join("d/signal.json")).unwrap();
    let _socket = std::os::unix::net::UnixListener::bind(dirs.inside.join("d/sock")).unwrap();
    for resolver in RESOLVERS {
        for (name, want) in [
            ("d/signal.json", FileKind::Directory),
            ("d/sock", FileKind::Socket),
        ] {
            match read(&dirs, name, resolver) {
                Err(AgentFileError::NotRegular { kind, .. }) => assert_eq!(kind, want),
                other => panic!("{name} with {resolver:?}: {other:?}"),
            }
        }
        // A device opened directly (a node the agent made, if it could).
        match read_with(Path::new("/dev"), Path::new("null"), CAP, resolver) {
            Err(AgentFileError::NotRegular { kind, .. }) => assert_eq!(kind, FileKind::CharDevice),
            other => panic!("{resolver:?}: {other:?}"),
        }
    }
}

#[test]
fn a_file_over_the_cap_is_refused() {
    let dirs = Dirs::new();
    dirs.put("big", "");
    std::fs::File::options()
        .write(true)
        .open(dirs.inside.join("big"))
        .unwrap()
        .set_len(64 * 1024 * 1024 * 1024)
        .unwrap();
    dirs.put("exact", &"x".repeat(1024));
    for resolver in RESOLVERS {
        match read(&dirs, "big", resolver) {
            Err(AgentFileError::TooLarge { max_bytes, .. }) => assert_eq!(max_bytes, CAP),
            other => panic!("{resolver:?}: {:?}", other.map(|b| b.map(|b| b.len()))),
        }
        let exact = read_with(&dirs.inside, Path::new("exact"), 1024, resolver).unwrap();
        assert_eq!(exact.unwrap().len(), 1024);
        assert!(matches!(
            read_with(&dirs.inside, Path::new("exact"), 1023, resolver),
            Err(AgentFileError::TooLarge { .. })
        ));
    }
}

#[test]
fn a_hard_link_is_refused() {
    let dirs = Dirs::new();
    dirs.put("out/x", "");
    std::fs::hard_link(dirs.outside.join("secret"), dirs.inside.join("out/secret")).unwrap();
    for resolver in RESOLVERS {
        assert!(
            matches!(
                read(&dirs, "out/secret", resolver),
                Err(AgentFileError::HardLinked { links: 2, .. })
            ),
            "{resolver:?}"
        );
    }
}

#[test]
fn paths_that_leave_the_directory_are_refused() {
    let dirs = Dirs::new();
    for bad in [
        "../outside/secret",
        "/etc/passwd",
        "",
        "a/../../outside/secret",
        "./x",
    ] {
        assert!(
            matches!(
                read_regular(&dirs.inside, Path::new(bad), CAP),
                Err(AgentFileError::BadPath { .. })
            ),
            "{bad}"
        );
        assert!(matches!(
            write_file(&dirs.inside, Path::new(bad), b"x"),
            Err(AgentFileError::BadPath { .. })
        ));
        assert!(matches!(
            remove_file(&dirs.inside, Path::new(bad)),
            Err(AgentFileError::BadPath { .. })
        ));
    }
}

#[test]
fn the_tail_is_the_last_bytes_and_refused_like_a_read() {
    let dirs = Dirs::new();
    dirs.put("run/stderr.log", &format!("{}END", "x".repeat(10_000)));
    let tail = read_tail(&dirs.inside, Path::new("run/stderr.log"), 5).unwrap();
    assert_eq!(tail.as_deref(), Some(&b"xxEND"[..]));
    dirs.put("short", "ab");
    let all = read_tail(&dirs.inside, Path::new("short"), 5).unwrap();
    assert_eq!(all.as_deref(), Some(&b"ab"[..]));
    dirs.link("zero", Path::new("/dev/zero"));
    assert!(matches!(
        read_tail(&dirs.inside, Path::new("zero"), 5),
        Err(AgentFileError::Symlink { .. })
    ));
}

#[test]
fn a_write_creates_its_directories_and_file() {
    let dirs = Dirs::new();
    write_file(&dirs.inside, Path::new(".agentfleet/input/a/b.txt"), b"one").unwrap();
    let path = dirs.inside.join(".agentfleet/input/a/b.txt");
    assert_eq!(std::fs::read(&path).unwrap(), b"one");
    assert_eq!(mode(&path), 0o644);
    assert_eq!(mode(&dirs.inside.join(".agentfleet/input/a")), 0o755);
    // Again: replaced, and no temporary file left beside it.
    write_file(&dirs.inside, Path::new(".agentfleet/input/a/b.txt"), b"two").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"two");
    let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["b.txt"]);
}

#[test]
fn a_private_write_is_owner_only() {
    let dirs = Dirs::new();
    write_file_with(
        &dirs.inside,
        Path::new(".gemini/oauth.json"),
        b"{}",
        Modes::PRIVATE,
    )
    .unwrap();
    assert_eq!(mode(&dirs.inside.join(".gemini")), 0o700);
    assert_eq!(mode(&dirs.inside.join(".gemini/oauth.json")), 0o600);
    ensure_dir_with(&dirs.inside, Path::new("acct"), 0o700).unwrap();
    std::fs::set_permissions(
        dirs.inside.join("acct"),
        std::fs::Permissions::from_mode(0o777),
    )
    .unwrap();
    ensure_dir_with(&dirs.inside, Path::new("acct"), 0o700).unwrap();
    assert_eq!(mode(&dirs.inside.join("acct")), 0o700);
}

#[test]
fn a_write_replaces_symlinked_directories_instead_of_following_them() {
    let dirs = Dirs::new();
    let before = dirs.outside_snapshot();
    // `.agentfleet` → outside (as a repository can commit it), `x/input` → outside.
    dirs.link(".agentfleet", &dirs.outside);
    dirs.link("x/input", &dirs.outside);
    for name in [".agentfleet/input/task.md", "x/input/task.md"] {
        write_file(&dirs.inside, Path::new(name), b"task").unwrap();
        assert_eq!(std::fs::read(dirs.inside.join(name)).unwrap(), b"task");
    }
    assert!(
        std::fs::symlink_metadata(dirs.inside.join(".agentfleet"))
            .unwrap()
            .is_dir()
    );
    assert!(
        std::fs::symlink_metadata(dirs.inside.join("x/input"))
            .unwrap()
            .is_dir()
    );
    assert_eq!(dirs.outside_snapshot(), before);
}

#[test]
fn a_write_replaces_whatever_is_at_the_files_place() {
    let dirs = Dirs::new();
    let before = dirs.outside_snapshot();
    dirs.link("in/linked", &dirs.outside.join("secret"));
    dirs.link("in/dangling", &dirs.outside.join("new-file"));
    std::fs::hard_link(dirs.outside.join("secret"), dirs.inside.join("in/hard")).unwrap();
    mkfifo(&dirs.inside.join("in/fifo"));
    for name in ["in/linked", "in/dangling", "in/hard", "in/fifo"] {
        let inside = dirs.inside.clone();
        promptly(move || write_file(&inside, Path::new(name), b"mine")).unwrap();
        let meta = std::fs::symlink_metadata(dirs.inside.join(name)).unwrap();
        assert!(meta.is_file() && meta.nlink() == 1, "{name}");
        assert_eq!(std::fs::read(dirs.inside.join(name)).unwrap(), b"mine");
    }
    assert_eq!(dirs.outside_snapshot(), before);
}

#[test]
fn a_write_through_a_file_or_onto_a_directory_fails_clearly() {
    let dirs = Dirs::new();
    dirs.put("plain", "keep");
    std::fs::create_dir_all(dirs.inside.join("dir/task.md")).unwrap();
    match write_file(&dirs.inside, Path::new("plain/task.md"), b"x") {
        Err(e @ AgentFileError::NotADirectory { .. }) => {
            assert!(
                e.to_string()
                    .contains("plain' is a regular file, not a directory"),
                "{e}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read(dirs.inside.join("plain")).unwrap(), b"keep");
    assert!(matches!(
        write_file(&dirs.inside, Path::new("dir/task.md"), b"x"),
        Err(AgentFileError::NotRegular {
            kind: FileKind::Directory,
            ..
        })
    ));
}

#[test]
fn ensure_dir_replaces_a_symlink() {
    let dirs = Dirs::new();
    let before = dirs.outside_snapshot();
    dirs.link(".agentfleet", &dirs.outside);
    ensure_dir(&dirs.inside, Path::new(".agentfleet/output")).unwrap();
    assert!(
        std::fs::symlink_metadata(dirs.inside.join(".agentfleet/output"))
            .unwrap()
            .is_dir()
    );
    assert_eq!(dirs.outside_snapshot(), before);
}

#[test]
fn a_removal_never_reaches_outside() {
    let dirs = Dirs::new();
    let before = dirs.outside_snapshot();
    // A symlinked parent: refused, the file behind it stays.
    dirs.link(".agentfleet/output", &dirs.outside);
    assert!(matches!(
        remove_file(&dirs.inside, Path::new(".agentfleet/output/signal.json")),
        Err(AgentFileError::Symlink { .. })
    ));
    // A symlink at the file's place: the link goes, not its target.
    dirs.link("out/signal.json", &dirs.outside.join("signal.json"));
    remove_file(&dirs.inside, Path::new("out/signal.json")).unwrap();
    assert!(!dirs.inside.join("out/signal.json").exists());
    assert_eq!(dirs.outside_snapshot(), before);
    // A plain file goes; absent (or an absent folder) is fine.
    dirs.put("out/plain", "x");
    remove_file(&dirs.inside, Path::new("out/plain")).unwrap();
    assert!(!dirs.inside.join("out/plain").exists());
    remove_file(&dirs.inside, Path::new("out/plain")).unwrap();
    remove_file(&dirs.inside, Path::new("nowhere/signal.json")).unwrap();
}
