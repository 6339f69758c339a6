//! The backup source, reached through descriptors only.
//!
//! **Invariant: a backup reads what it looked at.** Every entry below a
//! top-level path is reached from its directory's descriptor (`statat`,
//! `openat`, `readlinkat` with `O_NOFOLLOW`), never by re-resolving a path;
//! whatever is opened is compared (`fstat`: device, inode, type) with what
//! was looked at, so a symlink or another file swapped in between is never
//! read in its place. Files are opened `O_NONBLOCK`, so a FIFO swapped in for
//! a file cannot block the backup; FIFOs, sockets and devices are never
//! opened at all (see `walk.rs`).

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};

/// What kind of entry the file system holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EntryKind {
    File,
    Dir,
    Symlink,
    /// FIFO, socket, character or block device: never opened.
    Special,
}

/// An entry's status (`lstat` or `fstat`), as the walk uses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Status {
    pub kind: EntryKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: (i64, u32),
    pub ctime: (i64, u32),
    pub dev: u64,
    pub ino: u64,
}

impl Status {
    // The field types of `struct stat` differ between architectures; these
    // conversions are the identity on some of them.
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    fn from_stat(st: &Stat) -> Self {
        let kind = match FileType::from_raw_mode(st.st_mode as _) {
            FileType::RegularFile => EntryKind::File,
            FileType::Directory => EntryKind::Dir,
            FileType::Symlink => EntryKind::Symlink,
            _ => EntryKind::Special,
        };
        let nanos = |n| u32::try_from(n).unwrap_or(0).min(999_999_999);
        Self {
            kind,
            mode: (st.st_mode as u32) & 0o7777,
            uid: st.st_uid as u32,
            gid: st.st_gid as u32,
            size: u64::try_from(st.st_size).unwrap_or(0),
            mtime: (st.st_mtime as i64, nanos(st.st_mtime_nsec)),
            ctime: (st.st_ctime as i64, nanos(st.st_ctime_nsec)),
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
        }
    }

    /// Whether `other` is the same file system object of the same kind.
    fn same_object(&self, other: &Status) -> bool {
        self.kind == other.kind && self.dev == other.dev && self.ino == other.ino
    }
}

/// The status of an open file.
pub(crate) fn fstatus(fd: impl AsFd) -> io::Result<Status> {
    Ok(Status::from_stat(&rustix::fs::fstat(fd)?))
}

fn replaced(what: &str) -> io::Error {
    io::Error::other(format!("replaced by another {what} while being backed up"))
}

/// Where an entry is: a top-level path as given, or a name in a directory
/// the walk holds open.
#[derive(Clone)]
pub(crate) enum Location {
    Path(PathBuf),
    At(Arc<OwnedFd>, Vec<u8>),
}

impl Location {
    /// The entry's own status (`lstat`: a symlink is not followed).
    pub fn status(&self) -> io::Result<Status> {
        let st = match self {
            Location::Path(path) => rustix::fs::lstat(path)?,
            Location::At(dir, name) => {
                rustix::fs::statat(&**dir, name.as_slice(), AtFlags::SYMLINK_NOFOLLOW)?
            }
        };
        Ok(Status::from_stat(&st))
    }

    fn open(&self, flags: OFlags) -> io::Result<OwnedFd> {
        let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        Ok(match self {
            Location::Path(path) => rustix::fs::open(path, flags, Mode::empty())?,
            Location::At(dir, name) => {
                rustix::fs::openat(&**dir, name.as_slice(), flags, Mode::empty())?
            }
        })
    }

    /// Opens the directory that `expected` describes.
    pub fn open_dir(&self, expected: &Status) -> io::Result<Arc<OwnedFd>> {
        let fd = self.open(OFlags::RDONLY | OFlags::DIRECTORY)?;
        if !fstatus(&fd)?.same_object(expected) {
            return Err(replaced("directory"));
        }
        Ok(Arc::new(fd))
    }

    /// Opens the regular file that `expected` describes, without blocking
    /// (a FIFO swapped in would otherwise hang the backup). Returns it with
    /// its status as opened (the reader's first "before" status: one `fstat`
    /// per file, not two).
    pub fn open_file(&self, expected: &Status) -> io::Result<(File, Status)> {
        let fd = self.open(OFlags::RDONLY | OFlags::NONBLOCK)?;
        let status = fstatus(&fd)?;
        if !status.same_object(expected) {
            return Err(replaced("file"));
        }
        Ok((File::from(fd), status))
    }

    /// A symlink's target bytes.
    pub fn read_link(&self) -> io::Result<Vec<u8>> {
        let target = match self {
            Location::Path(path) => rustix::fs::readlink(path, Vec::new())?,
            Location::At(dir, name) => rustix::fs::readlinkat(&**dir, name.as_slice(), Vec::new())?,
        };
        Ok(target.into_bytes())
    }
}

/// The names in an open directory (without `.` and `..`), sorted.
pub(crate) fn read_names(dir: &OwnedFd) -> io::Result<Vec<Vec<u8>>> {
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let name = entry?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            names.push(name);
        }
    }
    names.sort_unstable();
    Ok(names)
}

/// `dir/name` for messages.
pub(crate) fn join(dir: &Path, name: &[u8]) -> PathBuf {
    dir.join(OsStr::from_bytes(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(dir: &Path, name: &str) -> Location {
        let fd = rustix::fs::open(dir, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())
            .expect("open dir");
        Location::At(Arc::new(fd), name.as_bytes().to_vec())
    }

    /// Regression: a file swapped for a symlink between `lstat` and `open`
    /// was followed, and a FIFO swapped in blocked the backup.
    #[test]
    fn what_is_opened_is_what_was_looked_at() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("file");
        std::fs::write(&file, b"mine").expect("write");
        std::fs::write(dir.path().join("secret"), b"not mine").expect("write");
        for location in [at(dir.path(), "file"), Location::Path(file.clone())] {
            let seen = location.status().expect("status");
            assert_eq!(seen.kind, EntryKind::File);
            // Keep the inode alive, so its number cannot be reused below.
            let keep = dir.path().join("keep");
            std::fs::hard_link(&file, &keep).expect("link");
            std::fs::remove_file(&file).expect("rm");
            std::os::unix::fs::symlink("secret", &file).expect("symlink");
            assert!(location.open_file(&seen).is_err(), "followed a symlink");
            std::fs::remove_file(&file).expect("rm");
            let made = std::process::Command::new("mkfifo")
                .arg(&file)
                .status()
                .expect("mkfifo");
            assert!(made.success());
            // Must return at once, not block on the FIFO.
            assert!(location.open_file(&seen).is_err(), "opened a FIFO");
            // Another file renamed over the name.
            std::fs::remove_file(&file).expect("rm");
            let other = dir.path().join("other");
            std::fs::write(&other, b"another file, same name").expect("write");
            std::fs::rename(&other, &file).expect("rename");
            assert!(location.open_file(&seen).is_err(), "opened another file");
            std::fs::remove_file(&file).expect("rm");
            std::fs::rename(&keep, &file).expect("put the original back");
            assert!(location.open_file(&seen).is_ok(), "the original opens");
        }
        // A directory swapped for a symlink to another directory.
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).expect("mkdir");
        let location = at(dir.path(), "sub");
        let seen = location.status().expect("status");
        std::fs::rename(&sub, dir.path().join("moved")).expect("mv");
        std::os::unix::fs::symlink("/", &sub).expect("symlink");
        assert!(location.open_dir(&seen).is_err());
    }
}
