//! Files in places an agent can write — its checkout (the input files, the signal file) and
//! its account config dir — read and written by the worker without trusting what is there.
//! The agent is hostile and so is the repository it checked out: any component of such a
//! path may be a symlink (to another agent's files, to `/dev/zero`), a FIFO (a read that
//! never returns) or a file of any size. So every path is resolved beneath a directory the
//! worker chose, never through a symlink: `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`
//! where the kernel has it (Linux 5.6), otherwise a walk of `openat(O_NOFOLLOW)` one
//! component at a time. Reads take regular files only, up to a size cap; writes (made before
//! the agent runs) replace a symlink on the way instead of following it, and put the file in
//! place by a rename, so nothing is ever written through a link.
//!
//! Each call is a few system calls and at most one bounded read or write: call it from
//! `spawn_blocking`.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, openat, renameat};
use nix::sys::stat::{FileStat, Mode, fchmod, fstatat};
use nix::unistd::{UnlinkatFlags, unlinkat};

/// What a path turned out to be, for the error that refuses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Regular,
    Directory,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
    Unknown,
}

impl FileKind {
    fn of(stat: &FileStat) -> Self {
        use nix::libc;
        match stat.st_mode & libc::S_IFMT {
            libc::S_IFREG => Self::Regular,
            libc::S_IFDIR => Self::Directory,
            libc::S_IFLNK => Self::Symlink,
            libc::S_IFIFO => Self::Fifo,
            libc::S_IFSOCK => Self::Socket,
            libc::S_IFCHR => Self::CharDevice,
            libc::S_IFBLK => Self::BlockDevice,
            _ => Self::Unknown,
        }
    }
}

impl From<&std::fs::FileType> for FileKind {
    fn from(file_type: &std::fs::FileType) -> Self {
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_symlink() {
            Self::Symlink
        } else if file_type.is_file() {
            Self::Regular
        } else if file_type.is_dir() {
            Self::Directory
        } else if file_type.is_fifo() {
            Self::Fifo
        } else if file_type.is_socket() {
            Self::Socket
        } else if file_type.is_char_device() {
            Self::CharDevice
        } else if file_type.is_block_device() {
            Self::BlockDevice
        } else {
            Self::Unknown
        }
    }
}

impl std::fmt::Display for FileKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Regular => "regular file",
            Self::Directory => "directory",
            Self::Symlink => "symlink",
            Self::Fifo => "FIFO",
            Self::Socket => "socket",
            Self::CharDevice => "character device",
            Self::BlockDevice => "block device",
            Self::Unknown => "file of unknown type",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentFileError {
    #[error("'{path}' is not a relative path of plain names")]
    BadPath { path: PathBuf },
    #[error("'{path}' is a symlink, which is not followed")]
    Symlink { path: PathBuf },
    #[error("'{path}' is a {kind}, not a regular file")]
    NotRegular { path: PathBuf, kind: FileKind },
    #[error("'{path}' is a {kind}, not a directory")]
    NotADirectory { path: PathBuf, kind: FileKind },
    #[error("'{path}' has {links} hard links; a file written in place has one")]
    HardLinked { path: PathBuf, links: u64 },
    #[error("'{path}' is larger than {max_bytes} bytes")]
    TooLarge { path: PathBuf, max_bytes: u64 },
    #[error("cannot {action} '{path}': {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The modes of what a write creates: the directories on the way and the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Modes {
    pub dir: u32,
    pub file: u32,
}

impl Modes {
    /// A checkout's files: the agent's tools read them as the agent's own.
    pub const CHECKOUT: Modes = Modes {
        dir: 0o755,
        file: 0o644,
    };
    /// A config dir holding credentials: the owner only.
    pub const PRIVATE: Modes = Modes {
        dir: 0o700,
        file: 0o600,
    };
}

/// The regular file at `relative` beneath `dir`, if there is one, up to `max_bytes`.
/// A symlink anywhere on the way, a FIFO, socket, device or directory, a file with other
/// hard links or one larger than `max_bytes` is refused; opening never blocks (a FIFO is
/// opened non-blocking, then refused).
pub fn read_regular(
    dir: &Path,
    relative: &Path,
    max_bytes: u64,
) -> Result<Option<Vec<u8>>, AgentFileError> {
    read_with(dir, relative, max_bytes, Resolver::Openat2)
}

/// The last `max_bytes` of the regular file at `relative` beneath `dir` (all of it when
/// shorter), refused as [`read_regular`] refuses, except for its size.
pub fn read_tail(
    dir: &Path,
    relative: &Path,
    max_bytes: u64,
) -> Result<Option<Vec<u8>>, AgentFileError> {
    let path = dir.join(relative);
    let Some((file, stat)) = open_regular(dir, relative, Resolver::Openat2)? else {
        return Ok(None);
    };
    let size = stat.st_size.max(0) as u64;
    let mut file = std::fs::File::from(file);
    let start = size.saturating_sub(max_bytes);
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(start)).map_err(io("read", &path))?;
    let mut bytes = Vec::new();
    file.take(max_bytes)
        .read_to_end(&mut bytes)
        .map_err(io("read", &path))?;
    Ok(Some(bytes))
}

/// Writes `contents` to `relative` beneath `dir` (directories 0755, the file 0644).
/// See [`write_file_with`].
pub fn write_file(dir: &Path, relative: &Path, contents: &[u8]) -> Result<(), AgentFileError> {
    write_file_with(dir, relative, contents, Modes::CHECKOUT)
}

/// Writes `contents` to `relative` beneath `dir`, creating the directories on the way. A
/// component on the way that is a symlink is removed and made a directory (it came from the
/// repository or an earlier run; it is never followed); one that is another kind of file
/// fails the write. The file is written under a temporary name and renamed into place, so
/// whatever was at its place (a symlink, a FIFO, a hard link) is replaced, never written
/// through, and a reader never sees half of it.
pub fn write_file_with(
    dir: &Path,
    relative: &Path,
    contents: &[u8],
    modes: Modes,
) -> Result<(), AgentFileError> {
    let parts = parts(relative)?;
    let (name, parents) = parts.split_last().expect("parts are never empty");
    let parent = open_dirs(dir, parents, Walk::Create { mode: modes.dir })?
        .expect("a creating walk always ends in a directory");
    let path = dir.join(relative);
    match fstatat(&parent, *name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(stat) if FileKind::of(&stat) == FileKind::Directory => {
            return Err(AgentFileError::NotRegular {
                path,
                kind: FileKind::Directory,
            });
        }
        Ok(_) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(io("inspect", &path)(e.into())),
    }
    let mut tmp = OsString::from(".");
    tmp.push(name);
    tmp.push(format!(
        ".agentfleet-{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    let flags =
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mode = Mode::from_bits_truncate(modes.file);
    let written = openat(&parent, tmp.as_os_str(), flags, mode)
        .and_then(|fd| fchmod(&fd, mode).map(|()| fd))
        .map_err(std::io::Error::from)
        .and_then(|fd| std::fs::File::from(fd).write_all(contents))
        .and_then(|()| {
            renameat(&parent, tmp.as_os_str(), &parent, *name).map_err(std::io::Error::from)
        });
    if let Err(e) = written {
        let _ = unlinkat(&parent, tmp.as_os_str(), UnlinkatFlags::NoRemoveDir);
        return Err(io("write", &path)(e));
    }
    Ok(())
}

/// Removes the file at `relative` beneath `dir`; absent is fine. A symlink there is removed
/// itself; a symlink on the way is not followed (an error: nothing of ours is behind it).
pub fn remove_file(dir: &Path, relative: &Path) -> Result<(), AgentFileError> {
    let parts = parts(relative)?;
    let (name, parents) = parts.split_last().expect("parts are never empty");
    let Some(parent) = open_dirs(dir, parents, Walk::Existing)? else {
        return Ok(());
    };
    match unlinkat(&parent, *name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(Errno::EISDIR) => Err(AgentFileError::NotRegular {
            path: dir.join(relative),
            kind: FileKind::Directory,
        }),
        Err(e) => Err(io("remove", &dir.join(relative))(e.into())),
    }
}

/// Makes `relative` beneath `dir` a directory (0755), creating what is missing and
/// replacing a symlink on the way, as [`write_file_with`] does.
pub fn ensure_dir(dir: &Path, relative: &Path) -> Result<(), AgentFileError> {
    ensure_dir_with(dir, relative, Modes::CHECKOUT.dir)
}

/// [`ensure_dir`] with the mode of the directories it creates; the last one gets `mode`
/// even if it existed.
pub fn ensure_dir_with(dir: &Path, relative: &Path, mode: u32) -> Result<(), AgentFileError> {
    let parts = parts(relative)?;
    let last = open_dirs(dir, &parts, Walk::Create { mode })?
        .expect("a creating walk always ends in a directory");
    fchmod(&last, Mode::from_bits_truncate(mode))
        .map_err(|e| io("set the mode of", &dir.join(relative))(e.into()))
}

fn read_with(
    dir: &Path,
    relative: &Path,
    max_bytes: u64,
    resolver: Resolver,
) -> Result<Option<Vec<u8>>, AgentFileError> {
    let path = dir.join(relative);
    let Some((file, stat)) = open_regular(dir, relative, resolver)? else {
        return Ok(None);
    };
    let too_large = || AgentFileError::TooLarge {
        path: path.clone(),
        max_bytes,
    };
    if stat.st_size.max(0) as u64 > max_bytes {
        return Err(too_large());
    }
    // The size at open says nothing about what the agent appends meanwhile.
    let mut bytes = Vec::new();
    std::fs::File::from(file)
        .take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io("read", &path))?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_large());
    }
    Ok(Some(bytes))
}

pub(super) fn io(
    action: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> AgentFileError {
    let path = path.to_path_buf();
    move |source| AgentFileError::Io {
        action,
        path,
        source,
    }
}

mod resolve;
#[cfg(test)]
mod tests;

use resolve::{Resolver, Walk, open_dirs, open_regular, parts};
