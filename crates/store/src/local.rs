//! A repository in a local directory.
//!
//! Layout: `config/`, `keys/`, `index/`, `snapshots/` hold their objects directly;
//! `packs/xy/` holds packs whose name starts with `xy` (keeps directories small);
//! `tmp/` holds writes in progress. A put writes to `tmp/`, fsyncs the file,
//! hard-links it to its final name (which fails if the name exists, so a put never
//! overwrites, even when two writers race), removes the temporary name and fsyncs
//! the directory. After a crash a put is either complete or absent; `tmp/` may hold
//! leftovers, which nothing reads.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Error, Namespace, ObjectName, Store};

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

impl LocalStore {
    /// Creates the directory layout at `root`, which must not exist or be empty.
    pub fn create(root: impl AsRef<Path>) -> Result<Self, Error> {
        let root = root.as_ref().to_path_buf();
        let shown = root.display().to_string();
        if root.exists() {
            let mut entries = fs::read_dir(&root).map_err(io_error(&shown))?;
            if entries.next().is_some() {
                return Err(Error::Io {
                    name: shown,
                    source: io::Error::new(io::ErrorKind::AlreadyExists, "directory is not empty"),
                });
            }
        }
        for ns in Namespace::ALL {
            fs::create_dir_all(root.join(ns.dir())).map_err(io_error(&shown))?;
        }
        fs::create_dir_all(root.join("tmp")).map_err(io_error(&shown))?;
        sync_dir(&root).map_err(io_error(&shown))?;
        Ok(Self {
            root,
            tmp_counter: AtomicU64::new(0),
        })
    }

    /// Opens an existing layout at `root`.
    pub fn open(root: impl AsRef<Path>) -> Result<Self, Error> {
        let root = root.as_ref().to_path_buf();
        for ns in Namespace::ALL {
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
        fs::create_dir_all(root.join("tmp")).map_err(io_error(root.display()))?;
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

    fn open_existing(&self, name: &ObjectName) -> Result<File, Error> {
        File::open(self.path_of(name)).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::NotFound(name.clone()),
            _ => Error::Io {
                name: name.to_string(),
                source: e,
            },
        })
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
            fs::create_dir_all(&dir).map_err(err())?;
            if let Some(parent) = dir.parent() {
                sync_dir(parent).map_err(err())?;
            }
        }
        let tmp = self.root.join("tmp").join(format!(
            "{}-{}-{}",
            std::process::id(),
            self.tmp_counter.fetch_add(1, Ordering::Relaxed),
            name.name()
        ));
        let result = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(err())?;
            for part in parts {
                file.write_all(part).map_err(err())?;
            }
            file.sync_all().map_err(err())?;
            drop(file);
            fs::hard_link(&tmp, self.path_of(name)).map_err(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => Error::AlreadyExists(name.clone()),
                _ => Error::Io {
                    name: name.to_string(),
                    source: e,
                },
            })?;
            sync_dir(&dir).map_err(err())
        })();
        // The temporary name is garbage either way; failing to remove it loses
        // nothing.
        let _ = fs::remove_file(&tmp);
        result
    }

    fn get(&self, name: &ObjectName) -> Result<Vec<u8>, Error> {
        let mut file = self.open_existing(name)?;
        let mut out = Vec::new();
        file.read_to_end(&mut out).map_err(io_error(name))?;
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
        let dir = self.root.join(namespace.dir());
        let err = || io_error(dir.display());
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
                    names.push(n.to_owned());
                }
            }
        }
        names.sort();
        Ok(names)
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
        assert_eq!(store.get(&n).expect("get"), b"1");
    }
}
