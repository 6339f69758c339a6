//! A repository in a local directory.
//!
//! Layout: `config/`, `keys/`, `index/`, `snapshots/` hold their objects directly;
//! `packs/xy/` holds packs whose name starts with `xy` (keeps directories small);
//! `tmp/` holds writes in progress. A put writes to `tmp/`, fsyncs the file,
//! hard-links it to its final name (which fails if the name exists, so a put never
//! overwrites, even when two writers race), removes the temporary name and fsyncs
//! the directory. After a crash a put is either complete or absent.
//!
//! A temporary file is locked (`flock`) by its writer for as long as it exists
//! under that name, and the kernel drops the lock when the writer dies; so
//! [`Store::clean_interrupted_writes`] removes exactly the temporary files no
//! live process is writing. Everything is created private to the owner (files
//! 0600, directories 0700), whatever the umask: another local user can neither
//! read ciphertext sizes nor plant or delete objects.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Error, Namespace, ObjectName, Store};

const TMP_DIR: &str = "tmp";

/// `open(2)` flags for reading an object: never block on a FIFO, never
/// follow a symlink (both planted by someone else, not written by cairn).
fn read_flags() -> i32 {
    (rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::NOFOLLOW).bits() as i32
}
const FILE_MODE: u32 = 0o600;
const DIR_MODE: u32 = 0o700;

/// A store in a local directory.
#[derive(Debug)]
pub struct LocalStore {
    root: PathBuf,
    tmp_counter: AtomicU64,
}

fn io_error(name: impl ToString) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Io {
        name: name.to_string(),
        source,
    }
}

/// Creates a directory 0700. The mode is set again after creation: a umask
/// such as 0277 would otherwise leave the owner unable to write.
fn create_private_dir(path: &Path) -> io::Result<()> {
    match DirBuilder::new().mode(DIR_MODE).create(path) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(e) => Err(e),
        Ok(()) => fs::set_permissions(path, fs::Permissions::from_mode(DIR_MODE)),
    }
}

/// Whether `root` holds only what an interrupted `create` or repository
/// initialisation leaves: layout directories, none of them holding an object
/// except key slots (which an interrupted init writes before its config).
fn is_unfinished_layout(root: &Path) -> io::Result<bool> {
    let layout: Vec<&str> = Namespace::ALL
        .iter()
        .map(|ns| ns.dir())
        .chain([TMP_DIR])
        .collect();
    for entry in fs::read_dir(root)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str().filter(|n| layout.contains(n)) else {
            return Ok(false);
        };
        if !entry.file_type()?.is_dir() {
            return Ok(false);
        }
        let may_hold_files = name == Namespace::Keys.dir() || name == TMP_DIR;
        if !may_hold_files && fs::read_dir(entry.path())?.next().is_some() {
            return Ok(false);
        }
    }
    Ok(true)
}

impl LocalStore {
    /// The objects of `namespace`, sorted, with their sizes when `sized`
    /// (0 otherwise: a listing that does not need them stats nothing).
    fn entries(&self, namespace: Namespace, sized: bool) -> Result<Vec<(String, u64)>, Error> {
        let dir = self.root.join(namespace.dir());
        let err = || io_error(dir.display());
        if !Namespace::FIRST.contains(&namespace) && !dir.exists() {
            return Ok(Vec::new());
        }
        let mut dirs = vec![dir.clone()];
        if namespace == Namespace::Packs {
            dirs.clear();
            for entry in fs::read_dir(&dir).map_err(err())? {
                let entry = entry.map_err(err())?;
                if entry.file_type().map_err(err())?.is_dir() {
                    dirs.push(entry.path());
                }
            }
        }
        let mut names = Vec::new();
        for d in dirs {
            for entry in fs::read_dir(&d).map_err(err())? {
                let entry = entry.map_err(err())?;
                if !entry.file_type().map_err(err())?.is_file() {
                    continue;
                }
                // Files that are not valid object names are not ours: skip them.
                if let Some(n) = entry.file_name().to_str()
                    && ObjectName::new(namespace, n).is_ok()
                {
                    let size = if sized {
                        match entry.metadata() {
                            Ok(metadata) => metadata.len(),
                            // Deleted since the directory was read.
                            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                            Err(e) => return Err(err()(e)),
                        }
                    } else {
                        0
                    };
                    names.push((n.to_owned(), size));
                }
            }
        }
        names.sort();
        Ok(names)
    }

    /// Creates the directory layout at `root`, which must not exist, be empty,
    /// or hold what an interrupted initialisation left (layout directories
    /// without a config or any other object).
    pub fn create(root: impl AsRef<Path>) -> Result<Self, Error> {
        let root = root.as_ref().to_path_buf();
        let shown = root.display().to_string();
        if root.exists() && !is_unfinished_layout(&root).map_err(io_error(&shown))? {
            return Err(Error::Io {
                name: shown,
                source: io::Error::new(io::ErrorKind::AlreadyExists, "directory is not empty"),
            });
        }
        if !root.exists() {
            if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
                fs::create_dir_all(parent).map_err(io_error(&shown))?;
            }
            create_private_dir(&root).map_err(io_error(&shown))?;
        }
        for dir in Namespace::ALL.iter().map(|ns| ns.dir()).chain([TMP_DIR]) {
            create_private_dir(&root.join(dir)).map_err(io_error(&shown))?;
        }
        sync_dir(&root).map_err(io_error(&shown))?;
        Ok(Self {
            root,
            tmp_counter: AtomicU64::new(0),
        })
    }

    /// Opens an existing layout at `root`.
    pub fn open(root: impl AsRef<Path>) -> Result<Self, Error> {
        let root = root.as_ref().to_path_buf();
        for ns in Namespace::FIRST {
            let dir = root.join(ns.dir());
            if !dir.is_dir() {
                return Err(Error::Io {
                    name: root.display().to_string(),
                    source: io::Error::new(
                        io::ErrorKind::NotFound,
                        "not a cairn repository (missing directories)",
                    ),
                });
            }
        }
        create_private_dir(&root.join(TMP_DIR)).map_err(io_error(root.display()))?;
        // Namespaces added after the first format: a repository written
        // before has none. Creating them needs write access; a read-only
        // repository lists them as empty (see `list`).
        for ns in Namespace::ALL {
            if !Namespace::FIRST.contains(&ns) {
                let _ = create_private_dir(&root.join(ns.dir()));
            }
        }
        Ok(Self {
            root,
            tmp_counter: AtomicU64::new(0),
        })
    }

    fn dir_of(&self, name: &ObjectName) -> PathBuf {
        let dir = self.root.join(name.namespace().dir());
        match name.namespace() {
            Namespace::Packs => dir.join(name.name().get(..2).unwrap_or("__")),
            _ => dir,
        }
    }

    fn path_of(&self, name: &ObjectName) -> PathBuf {
        self.dir_of(name).join(name.name())
    }

    /// Opens an object for reading. Never blocks (a FIFO planted in the
    /// repository would otherwise hang every command) and never follows a
    /// symlink; anything but a regular file is refused.
    fn open_existing(&self, name: &ObjectName) -> Result<File, Error> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(read_flags())
            .open(self.path_of(name))
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => Error::NotFound(name.clone()),
                _ => Error::Io {
                    name: name.to_string(),
                    source: e,
                },
            })?;
        if !file.metadata().map_err(io_error(name))?.is_file() {
            return Err(Error::Io {
                name: name.to_string(),
                source: io::Error::other("not a regular file"),
            });
        }
        Ok(file)
    }

    /// Creates and locks a fresh temporary file for a put of `name`. If a
    /// cleaner removed the name between creation and locking (it saw an
    /// unlocked file), the file is unlinked and another name is tried.
    fn locked_temporary(&self, name: &ObjectName) -> Result<(PathBuf, File), Error> {
        loop {
            let tmp = self.root.join(TMP_DIR).join(format!(
                "{}-{}-{}",
                std::process::id(),
                self.tmp_counter.fetch_add(1, Ordering::Relaxed),
                name.name()
            ));
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(FILE_MODE)
                .open(&tmp)
                .map_err(io_error(name))?;
            // Exactly 0600, whatever the umask took away.
            file.set_permissions(fs::Permissions::from_mode(FILE_MODE))
                .map_err(io_error(name))?;
            file.lock().map_err(io_error(name))?;
            if file.metadata().map_err(io_error(name))?.nlink() > 0 {
                return Ok((tmp, file));
            }
        }
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Store for LocalStore {
    fn put(&self, name: &ObjectName, bytes: &[u8]) -> Result<(), Error> {
        self.put_parts(name, &[bytes])
    }

    fn put_parts(&self, name: &ObjectName, parts: &[&[u8]]) -> Result<(), Error> {
        let err = || io_error(name);
        let dir = self.dir_of(name);
        if !dir.is_dir() {
            create_private_dir(&dir).map_err(err())?;
            if let Some(parent) = dir.parent() {
                sync_dir(parent).map_err(err())?;
            }
        }
        let (tmp, mut file) = self.locked_temporary(name)?;
        let result = (|| {
            for part in parts {
                file.write_all(part).map_err(err())?;
            }
            file.sync_all().map_err(err())?;
            fs::hard_link(&tmp, self.path_of(name)).map_err(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => Error::AlreadyExists(name.clone()),
                _ => Error::Io {
                    name: name.to_string(),
                    source: e,
                },
            })?;
            sync_dir(&dir).map_err(err())
        })();
        // The temporary name is garbage either way; if removing it fails, the
        // next clean-up removes it (the lock goes with the descriptor).
        let _ = fs::remove_file(&tmp);
        drop(file);
        result
    }

    fn get(&self, name: &ObjectName, max_len: u64) -> Result<Vec<u8>, Error> {
        let file = self.open_existing(name)?;
        let size = file.metadata().map_err(io_error(name))?.len();
        if size > max_len {
            return Err(Error::TooLarge {
                name: name.clone(),
                size,
                max_len,
            });
        }
        let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        // Never more than allowed, even if the file grows while read.
        file.take(max_len.saturating_add(1))
            .read_to_end(&mut out)
            .map_err(io_error(name))?;
        if out.len() as u64 > max_len {
            return Err(Error::TooLarge {
                name: name.clone(),
                size: out.len() as u64,
                max_len,
            });
        }
        Ok(out)
    }

    fn get_range(&self, name: &ObjectName, offset: u64, len: u64) -> Result<Vec<u8>, Error> {
        let mut file = self.open_existing(name)?;
        let size = file.metadata().map_err(io_error(name))?.len();
        let end = offset
            .checked_add(len)
            .ok_or_else(|| Error::OutOfRange(name.clone()))?;
        if end > size {
            return Err(Error::OutOfRange(name.clone()));
        }
        let len = usize::try_from(len).map_err(|_| Error::OutOfRange(name.clone()))?;
        file.seek(SeekFrom::Start(offset)).map_err(io_error(name))?;
        let mut out = vec![0u8; len];
        file.read_exact(&mut out).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => Error::OutOfRange(name.clone()),
            _ => Error::Io {
                name: name.to_string(),
                source: e,
            },
        })?;
        Ok(out)
    }

    fn read_range_into(&self, name: &ObjectName, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        let file = self.open_existing(name)?;
        let size = file.metadata().map_err(io_error(name))?.len();
        let end = offset
            .checked_add(buf.len() as u64)
            .ok_or_else(|| Error::OutOfRange(name.clone()))?;
        if end > size {
            return Err(Error::OutOfRange(name.clone()));
        }
        std::os::unix::fs::FileExt::read_exact_at(&file, buf, offset).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => Error::OutOfRange(name.clone()),
            _ => Error::Io {
                name: name.to_string(),
                source: e,
            },
        })
    }

    fn size(&self, name: &ObjectName) -> Result<u64, Error> {
        Ok(self
            .open_existing(name)?
            .metadata()
            .map_err(io_error(name))?
            .len())
    }

    fn list(&self, namespace: Namespace) -> Result<Vec<String>, Error> {
        Ok(self
            .entries(namespace, false)?
            .into_iter()
            .map(|(name, _)| name)
            .collect())
    }

    fn list_sized(&self, namespace: Namespace) -> Result<Vec<(String, u64)>, Error> {
        self.entries(namespace, true)
    }

    fn delete(&self, name: &ObjectName) -> Result<(), Error> {
        fs::remove_file(self.path_of(name)).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::NotFound(name.clone()),
            _ => Error::Io {
                name: name.to_string(),
                source: e,
            },
        })?;
        sync_dir(&self.dir_of(name)).map_err(io_error(name))
    }

    fn clean_interrupted_writes(&self) -> Result<u64, Error> {
        let dir = self.root.join(TMP_DIR);
        let err = || io_error(dir.display());
        let mut n_removed = 0;
        for entry in fs::read_dir(&dir).map_err(err())? {
            let entry = entry.map_err(err())?;
            // Only regular files are ours (a planted FIFO must not block us).
            if !entry.file_type().map_err(err())?.is_file() {
                continue;
            }
            let path = entry.path();
            // Vanished meanwhile, or not a file we can open: not ours to judge.
            let Ok(file) = OpenOptions::new()
                .read(true)
                .custom_flags(read_flags())
                .open(&path)
            else {
                continue;
            };
            match file.try_lock() {
                // No live writer holds it: the put that made it was interrupted.
                Ok(()) => {
                    if fs::remove_file(&path).is_ok() {
                        n_removed += 1;
                    }
                }
                Err(std::fs::TryLockError::WouldBlock) => {}
                Err(std::fs::TryLockError::Error(e)) => return Err(err()(e)),
            }
        }
        Ok(n_removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conformance() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::create(dir.path().join("repo")).expect("create");
        crate::conformance::run(&store);
        // Reopening sees the same objects.
        let reopened = LocalStore::open(dir.path().join("repo")).expect("open");
        assert_eq!(reopened.list(Namespace::Packs).expect("list").len(), 2);
        assert!(
            reopened
                .list(Namespace::Packs)
                .expect("list")
                .contains(&"aa01".to_owned())
        );
    }

    #[test]
    fn create_refuses_non_empty_and_open_refuses_non_repo() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("file"), b"x").expect("write");
        assert!(LocalStore::create(dir.path()).is_err());
        assert!(LocalStore::open(dir.path()).is_err());
    }

    #[test]
    fn create_accepts_an_interrupted_creation_but_not_a_repository() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("repo");
        let store = LocalStore::create(&root).expect("create");
        let slot = ObjectName::new(Namespace::Keys, "abc").expect("name");
        store.put(&slot, b"stale slot").expect("put");
        LocalStore::create(&root).expect("create over an unfinished layout");
        let config = ObjectName::new(Namespace::Config, "config").expect("name");
        store.put(&config, b"config").expect("put");
        assert!(LocalStore::create(&root).is_err());
    }

    #[test]
    fn no_temporary_files_left_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::create(dir.path()).expect("create");
        let n = ObjectName::new(Namespace::Index, "abc").expect("name");
        store.put(&n, b"1").expect("put");
        assert!(store.put(&n, b"2").is_err());
        assert_eq!(
            fs::read_dir(dir.path().join("tmp")).expect("tmp").count(),
            0
        );
        assert_eq!(store.get(&n, 1).expect("get"), b"1");
    }

    /// Regression: under umask 000 objects were 0666 and directories 0777.
    #[test]
    fn everything_is_private_to_the_owner() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("repo");
        let store = LocalStore::create(&root).expect("create");
        for (ns, name) in [
            (Namespace::Packs, "ab12"),
            (Namespace::Index, "cd34"),
            (Namespace::Keys, "ef56"),
        ] {
            store
                .put(&ObjectName::new(ns, name).expect("name"), b"x")
                .expect("put");
        }
        let mut n_checked = 0;
        let mut stack = vec![root.clone()];
        while let Some(path) = stack.pop() {
            let meta = fs::symlink_metadata(&path).expect("meta");
            let expected = if meta.is_dir() { 0o700 } else { 0o600 };
            assert_eq!(meta.mode() & 0o777, expected, "{}", path.display());
            n_checked += 1;
            if meta.is_dir() {
                stack.extend(
                    fs::read_dir(&path)
                        .expect("dir")
                        .map(|e| e.expect("e").path()),
                );
            }
        }
        assert!(n_checked > 9);
    }

    /// Regression: a FIFO planted in the repository hung every command that
    /// read it, and one in `tmp/` hung every backup.
    #[test]
    fn planted_fifos_are_refused_not_waited_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::create(dir.path()).expect("create");
        for path in [
            dir.path().join("config/config"),
            dir.path().join("tmp/1-0-x"),
        ] {
            rustix::fs::mknodat(
                rustix::fs::CWD,
                &path,
                rustix::fs::FileType::Fifo,
                rustix::fs::Mode::from_raw_mode(0o600),
                0,
            )
            .expect("mkfifo");
        }
        let config = ObjectName::new(Namespace::Config, "config").expect("name");
        assert!(matches!(store.get(&config, 1024), Err(Error::Io { .. })));
        assert!(store.size(&config).is_err());
        assert_eq!(store.clean_interrupted_writes().expect("clean"), 0);
    }

    /// Regression: a put interrupted by a crash left its temporary file in
    /// `tmp/` for ever. A temporary file a live writer holds stays.
    #[test]
    fn clean_up_removes_only_abandoned_temporaries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::create(dir.path()).expect("create");
        let tmp = dir.path().join(TMP_DIR);
        // What a killed writer leaves: an unlocked file.
        fs::write(tmp.join("999999-0-abandoned"), vec![7u8; 4096]).expect("write");
        // A writer in progress: locked.
        let busy = File::create(tmp.join("1-0-in-progress")).expect("create");
        busy.lock().expect("lock");
        assert_eq!(store.clean_interrupted_writes().expect("clean"), 1);
        let left: Vec<_> = fs::read_dir(&tmp)
            .expect("tmp")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(left, ["1-0-in-progress"]);
        drop(busy);
        assert_eq!(store.clean_interrupted_writes().expect("clean"), 1);
    }
}
