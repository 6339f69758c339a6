//! The filesystem source, reached through descriptors only.
//!
//! **Invariant: a backup reads what it looked at.** Every entry below a
//! top-level path is reached from its directory's descriptor (`statat`,
//! `openat`, `readlinkat` with `O_NOFOLLOW`), never by re-resolving a path;
//! whatever is opened is compared (`fstat`: device, inode, type) with what
//! was looked at, so a symlink or another file swapped in between is never
//! read in its place. Files are opened `O_NONBLOCK`, so a FIFO swapped in for
//! a file cannot block the backup; FIFOs, sockets and devices are never
//! opened at all (see `walk.rs`).

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};

use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::rules::PathRules;
use crate::source::readahead::Prefetch;
use crate::source::{Item, ItemKind, Root, Source, Status};

// The field types of `struct stat` differ between architectures; these
// conversions are the identity on some of them.
#[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
fn kind_and_status(st: &Stat) -> (ItemKind, Status) {
    let kind = match FileType::from_raw_mode(st.st_mode as _) {
        FileType::RegularFile => ItemKind::File,
        FileType::Directory => ItemKind::Dir,
        FileType::Symlink => ItemKind::Symlink,
        _ => ItemKind::Other,
    };
    let nanos = |n| u32::try_from(n).unwrap_or(0).min(999_999_999);
    let status = Status {
        mode: (st.st_mode as u32) & 0o7777,
        uid: st.st_uid as u32,
        gid: st.st_gid as u32,
        size: u64::try_from(st.st_size).unwrap_or(0),
        mtime: (st.st_mtime as i64, nanos(st.st_mtime_nsec)),
        ctime: (st.st_ctime as i64, nanos(st.st_ctime_nsec)),
        device: st.st_dev as u64,
        inode: st.st_ino as u64,
    };
    (kind, status)
}

/// Whether `st` is the file system object `expected` describes, of the
/// same kind.
fn same_object(st: &Stat, expected: &Item) -> bool {
    let (kind, status) = kind_and_status(st);
    kind == expected.kind
        && status.device == expected.status.device
        && status.inode == expected.status.inode
}

/// The status of an open file.
pub(crate) fn fstatus(fd: impl AsFd) -> io::Result<Status> {
    Ok(kind_and_status(&rustix::fs::fstat(fd)?).1)
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
    /// The entry as an item (`lstat`: a symlink is not followed, and its
    /// target is read).
    pub fn look(&self) -> io::Result<Item> {
        let st = match self {
            Location::Path(path) => rustix::fs::lstat(path)?,
            Location::At(dir, name) => {
                rustix::fs::statat(&**dir, name.as_slice(), AtFlags::SYMLINK_NOFOLLOW)?
            }
        };
        let (kind, status) = kind_and_status(&st);
        let mut item = Item::new(kind, status);
        if kind == ItemKind::Symlink {
            item.link_target = self.read_link()?;
        }
        Ok(item)
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
    pub fn open_dir(&self, expected: &Item) -> io::Result<Arc<OwnedFd>> {
        let fd = self.open(OFlags::RDONLY | OFlags::DIRECTORY)?;
        if !same_object(&rustix::fs::fstat(&fd)?, expected) {
            return Err(replaced("directory"));
        }
        Ok(Arc::new(fd))
    }

    /// Opens the regular file that `expected` describes, without blocking
    /// (a FIFO swapped in would otherwise hang the backup). Returns it with
    /// its status as opened (the reader's first "before" status: one `fstat`
    /// per file, not two).
    pub fn open_file(&self, expected: &Item) -> io::Result<(File, Status)> {
        let fd = self.open(OFlags::RDONLY | OFlags::NONBLOCK)?;
        let st = rustix::fs::fstat(&fd)?;
        if !same_object(&st, expected) {
            return Err(replaced("file"));
        }
        Ok((File::from(fd), kind_and_status(&st).1))
    }

    /// A symlink's target bytes.
    fn read_link(&self) -> io::Result<Vec<u8>> {
        let target = match self {
            Location::Path(path) => rustix::fs::readlink(path, Vec::new())?,
            Location::At(dir, name) => rustix::fs::readlinkat(&**dir, name.as_slice(), Vec::new())?,
        };
        Ok(target.into_bytes())
    }
}

/// The filesystem as a backup source: each path given becomes one entry of
/// the snapshot's root, named by its last component. Reached through
/// descriptors only (see the invariant above); metadata is read ahead on
/// helper threads ([`Prefetch`]).
pub struct FsSource {
    roots: Vec<(Vec<u8>, PathBuf)>,
    prefetch: Prefetch,
}

impl FsSource {
    /// The source of `paths` (made absolute without resolving a final
    /// symlink: a symlink given is backed up as a symlink). Refuses no path,
    /// and two paths whose last components clash.
    pub fn new(paths: &[PathBuf]) -> Result<Self> {
        let roots = resolve_roots(paths)?;
        let prefetch = Prefetch::new(roots.iter().map(|(_, path)| path.clone()));
        Ok(Self { roots, prefetch })
    }
}

/// Each path's root entry name and absolute path. Refuses clashing names.
fn resolve_roots(paths: &[PathBuf]) -> Result<Vec<(Vec<u8>, PathBuf)>> {
    let mut roots: Vec<(Vec<u8>, PathBuf)> = Vec::with_capacity(paths.len());
    for path in paths {
        // Absolute without resolving a final symlink (a symlink given as a path
        // is backed up as a symlink); `..` and `/`-ending forms have no final
        // name until canonicalized.
        let mut absolute = std::path::absolute(path).map_err(Error::io(path))?;
        if absolute.file_name().is_none() {
            absolute = std::fs::canonicalize(path).map_err(Error::io(path))?;
        }
        let name = absolute
            .file_name()
            .ok_or_else(|| Error::InvalidInput(format!("cannot back up {}", path.display())))?
            .as_bytes()
            .to_vec();
        if roots.iter().any(|(n, _)| *n == name) {
            return Err(Error::InvalidInput(format!(
                "two paths share the name {:?}",
                String::from_utf8_lossy(&name)
            )));
        }
        roots.push((name, absolute));
    }
    if roots.is_empty() {
        return Err(Error::InvalidInput("no paths to back up".into()));
    }
    Ok(roots)
}

/// The filesystem source's handle on an item (opaque).
pub struct FsEntry(Location);

impl Source for FsSource {
    type Entry = FsEntry;
    type Reader = File;

    fn paths(&self) -> Vec<String> {
        self.roots
            .iter()
            .map(|(_, p)| p.display().to_string())
            .collect()
    }

    fn roots(&self) -> Result<Vec<Root<FsEntry>>> {
        Ok(self
            .roots
            .iter()
            .map(|(name, path)| Root {
                name: name.clone(),
                display: path.clone(),
                entry: FsEntry(Location::Path(path.clone())),
            })
            .collect())
    }

    fn look(&self, entry: &FsEntry) -> io::Result<Item> {
        entry.0.look()
    }

    fn list(&self, dir: &FsEntry, item: &Item) -> io::Result<Vec<(Vec<u8>, FsEntry)>> {
        let fd = dir.0.open_dir(item)?;
        Ok(read_names(&fd)?
            .into_iter()
            .map(|name| (name.clone(), FsEntry(Location::At(fd.clone(), name))))
            .collect())
    }

    fn open(&self, entry: &FsEntry, item: &Item) -> io::Result<(File, Option<Status>)> {
        let (file, status) = entry.0.open_file(item)?;
        Ok((file, Some(status)))
    }

    fn status(&self, reader: &File) -> io::Result<Option<Status>> {
        fstatus(reader).map(Some)
    }

    fn readahead_threads(&self) -> usize {
        crate::source::readahead::PREFETCH_THREADS
    }

    fn readahead(
        &self,
        contents: bool,
        exclude: Option<&PathRules>,
        totals: Option<&dyn Progress>,
    ) {
        self.prefetch.run(contents, exclude, totals);
    }

    fn stop_readahead(&self) {
        self.prefetch.stop();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn at(dir: &std::path::Path, name: &str) -> Location {
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
            let seen = location.look().expect("status");
            assert_eq!(seen.kind, ItemKind::File);
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
        let seen = location.look().expect("status");
        std::fs::rename(&sub, dir.path().join("moved")).expect("mv");
        std::os::unix::fs::symlink("/", &sub).expect("symlink");
        assert!(location.open_dir(&seen).is_err());
    }
}
