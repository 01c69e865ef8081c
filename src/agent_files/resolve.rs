//! Resolving a path beneath a directory the worker chose, never through a symlink:
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` where the kernel has it, otherwise a walk
//! of `openat(O_NOFOLLOW)` one component at a time (creating missing directories when asked).

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat, openat2};
use nix::sys::stat::{FileStat, Mode, fchmod, fstat, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, unlinkat};

use super::{AgentFileError, FileKind, io};

/// How the path beneath the directory is resolved (the walk is also what tests pin when
/// the kernel has `openat2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Resolver {
    Openat2,
    Walk,
}

/// What a walk does about a missing directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Walk {
    Existing,
    Create { mode: u32 },
}

/// Opens the regular file at `relative` beneath `dir` for reading; None if absent.
pub(super) fn open_regular(
    dir: &Path,
    relative: &Path,
    resolver: Resolver,
) -> Result<Option<(OwnedFd, FileStat)>, AgentFileError> {
    let parts = parts(relative)?;
    let path = dir.join(relative);
    // O_NONBLOCK: a FIFO opens at once (and is refused below) instead of waiting for a
    // writer; O_NOCTTY: a terminal planted there never becomes the worker's.
    let flags = OFlag::O_RDONLY
        | OFlag::O_NOFOLLOW
        | OFlag::O_NONBLOCK
        | OFlag::O_NOCTTY
        | OFlag::O_CLOEXEC;
    let fd = match resolver {
        Resolver::Openat2 => {
            let root = open_root(dir)?;
            let how = OpenHow::new().flags(flags).resolve(
                ResolveFlag::RESOLVE_BENEATH
                    | ResolveFlag::RESOLVE_NO_SYMLINKS
                    | ResolveFlag::RESOLVE_NO_MAGICLINKS,
            );
            match openat2(&root, relative, how) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => return Ok(None),
                // No openat2 (ENOSYS), or refused: the walk says which component and why.
                Err(
                    Errno::ENOSYS | Errno::ELOOP | Errno::ENOTDIR | Errno::EXDEV | Errno::ENXIO,
                ) => {
                    return open_regular(dir, relative, Resolver::Walk);
                }
                Err(e) => return Err(io("open", &path)(e.into())),
            }
        }
        Resolver::Walk => {
            let (name, parents) = parts.split_last().expect("parts are never empty");
            let Some(parent) = open_dirs(dir, parents, Walk::Existing)? else {
                return Ok(None);
            };
            match openat(&parent, *name, flags, Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => return Ok(None),
                // A symlink (O_NOFOLLOW) or a socket (ENXIO): say what it is.
                Err(e @ (Errno::ELOOP | Errno::ENXIO)) => {
                    return Err(match kind_at(&parent, name) {
                        Some(FileKind::Symlink) => AgentFileError::Symlink { path },
                        Some(kind) => AgentFileError::NotRegular { path, kind },
                        None => io("open", &path)(e.into()),
                    });
                }
                Err(e) => return Err(io("open", &path)(e.into())),
            }
        }
    };
    let stat = fstat(&fd).map_err(|e| io("inspect", &path)(e.into()))?;
    match FileKind::of(&stat) {
        FileKind::Regular => {}
        kind => return Err(AgentFileError::NotRegular { path, kind }),
    }
    // Another name for a file elsewhere (an agent can link what it can see): not its own.
    if stat.st_nlink > 1 {
        // nlink_t is narrower than u64 on some targets.
        #[allow(clippy::useless_conversion)]
        return Err(AgentFileError::HardLinked {
            path,
            links: u64::from(stat.st_nlink),
        });
    }
    Ok(Some((fd, stat)))
}

/// The directory the caller chose; the one path here that is trusted.
pub(super) fn open_root(dir: &Path) -> Result<OwnedFd, AgentFileError> {
    nix::fcntl::open(
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io("open", dir)(e.into()))
}

/// Opens the directory `parts` beneath `dir`, one component at a time, never through a
/// symlink. With `Walk::Existing`, None when a component is missing and an error for a
/// symlink; with `Walk::Create`, missing directories are made and a symlink is replaced.
pub(super) fn open_dirs(
    dir: &Path,
    parts: &[&OsStr],
    walk: Walk,
) -> Result<Option<OwnedFd>, AgentFileError> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut current = open_root(dir)?;
    let mut path = dir.to_path_buf();
    for part in parts {
        path.push(part);
        let mut created = false;
        // Twice at most: once to find what is there, once after making the directory.
        let next = loop {
            match openat(&current, *part, flags, Mode::empty()) {
                Ok(fd) => break fd,
                Err(Errno::ENOENT) if !created => match walk {
                    Walk::Existing => return Ok(None),
                    Walk::Create { mode } => {
                        match mkdirat(&current, *part, Mode::from_bits_truncate(mode)) {
                            Ok(()) | Err(Errno::EEXIST) => created = true,
                            Err(e) => return Err(io("create", &path)(e.into())),
                        }
                    }
                },
                Err(e @ (Errno::ELOOP | Errno::ENOTDIR)) if !created => {
                    match (kind_at(&current, part), walk) {
                        (Some(FileKind::Symlink), Walk::Create { mode }) => {
                            tracing::warn!(path = %path.display(), "replacing a symlink with a directory");
                            unlinkat(&current, *part, UnlinkatFlags::NoRemoveDir)
                                .and_then(|()| {
                                    mkdirat(&current, *part, Mode::from_bits_truncate(mode))
                                })
                                .map_err(|e| io("replace the symlink", &path)(e.into()))?;
                            created = true;
                        }
                        (Some(FileKind::Symlink), Walk::Existing) => {
                            return Err(AgentFileError::Symlink { path });
                        }
                        (Some(kind), _) => {
                            return Err(AgentFileError::NotADirectory { path, kind });
                        }
                        (None, _) => return Err(io("open", &path)(e.into())),
                    }
                }
                Err(e) => return Err(io("open", &path)(e.into())),
            }
        };
        if created && let Walk::Create { mode } = walk {
            // mkdir's mode passed through the umask.
            fchmod(&next, Mode::from_bits_truncate(mode))
                .map_err(|e| io("set the mode of", &path)(e.into()))?;
        }
        current = next;
    }
    Ok(Some(current))
}

/// What is at `name` in `dir`, without following it.
pub(super) fn kind_at(dir: &impl AsFd, name: &OsStr) -> Option<FileKind> {
    fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
        .ok()
        .map(|s| FileKind::of(&s))
}

/// The plain names of `relative`: no root, no `..`, no `.`, not empty.
pub(super) fn parts(relative: &Path) -> Result<Vec<&OsStr>, AgentFileError> {
    let mut parts = Vec::new();
    for c in relative.components() {
        match c {
            Component::Normal(name) if !name.as_bytes().is_empty() => parts.push(name),
            _ => {
                return Err(AgentFileError::BadPath {
                    path: relative.to_path_buf(),
                });
            }
        }
    }
    if parts.is_empty() {
        return Err(AgentFileError::BadPath {
            path: relative.to_path_buf(),
        });
    }
    Ok(parts)
}
