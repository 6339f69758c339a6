//! The restore target, worked on through opened descriptors only.
//!
//! **Invariant: restore writes only inside its target, and privately until
//! done.** The target directory is opened once (`O_NOFOLLOW`); every
//! directory below it is created `0700` and reached again only by `openat`
//! from its parent with `O_NOFOLLOW | O_DIRECTORY`, one validated name at a
//! time, so swapping a restored directory for a symlink makes the next
//! operation fail instead of writing elsewhere. Files are created `0600`
//! under a temporary name (`O_CREAT | O_EXCL | O_NOFOLLOW`), and get their
//! owner, mode and time (`fchown`, `fchmod`, `futimens` on the descriptor)
//! and their real name (`renameat`) only once their content is complete; a
//! restore that stops early leaves no file that looks complete.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_meta::Node;
use rustix::fs::{AtFlags, Mode, OFlags, Timespec, Timestamps};

/// Mode of directories and files while the restore runs.
const PRIVATE_DIR: u32 = 0o700;
const PRIVATE_FILE: u32 = 0o600;
/// Directory descriptors a worker keeps open.
const MAX_CACHED_DIRS: usize = 64;

/// One directory of the restore: index 0 is the target itself.
pub(crate) struct DirEntry {
    parent: usize,
    name: Vec<u8>,
}

/// The directories created so far, and the target's descriptor.
pub(crate) struct Target {
    root_path: PathBuf,
    root: Arc<OwnedFd>,
    dirs: Vec<DirEntry>,
    /// The mode an existing target had: it is made 0700 while the restore
    /// runs (so nobody else can swap what cairn creates in it) and gets this
    /// mode back when the restore succeeds.
    original_mode: Option<u32>,
}

/// Descriptors of directories recently used by one thread.
#[derive(Default)]
pub(crate) struct DirCache {
    fds: HashMap<usize, Arc<OwnedFd>>,
}

fn open_dir_at(parent: &OwnedFd, name: &[u8]) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

fn timestamps(node: &Node) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
        last_modification: Timespec {
            tv_sec: node.mtime_secs,
            tv_nsec: node.mtime_nanos.into(),
        },
    }
}

/// Sets owner (where permitted), mode and modification time on an open
/// descriptor. Owner before mode: chown clears setuid and setgid bits.
pub(crate) fn apply_metadata(fd: &OwnedFd, node: &Node) -> io::Result<()> {
    match rustix::fs::fchown(
        fd,
        Some(rustix::fs::Uid::from_raw(node.uid)),
        Some(rustix::fs::Gid::from_raw(node.gid)),
    ) {
        // Not root (or the IDs do not exist in this user namespace): files
        // stay the restoring user's, as with restic and borg.
        Ok(()) | Err(rustix::io::Errno::PERM | rustix::io::Errno::INVAL) => {}
        Err(e) => return Err(e.into()),
    }
    rustix::fs::fchmod(fd, Mode::from_raw_mode(node.mode & 0o7777))?;
    rustix::fs::futimens(fd, &timestamps(node))?;
    Ok(())
}

impl Target {
    /// Prepares `path`: creates it (0700) if missing, else requires an empty
    /// directory that is not a symlink and makes it 0700 for the duration;
    /// then opens it.
    pub fn prepare(path: &Path) -> crate::Result<Self> {
        let io_err = crate::Error::io(path);
        let mut existed = false;
        match std::fs::symlink_metadata(path) {
            Ok(meta) => {
                if !meta.is_dir() {
                    return Err(crate::Error::TargetNotEmpty(path.to_path_buf()));
                }
                existed = true;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).map_err(crate::Error::io(parent))?;
                }
                rustix::fs::mkdir(path, Mode::from_raw_mode(PRIVATE_DIR))
                    .map_err(|e| crate::Error::io(path)(e.into()))?;
            }
            Err(e) => return Err(io_err(e)),
        }
        let root = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| crate::Error::io(path)(e.into()))?;
        let mut original_mode = None;
        let st = rustix::fs::fstat(&root).map_err(|e| crate::Error::io(path)(e.into()))?;
        // Its owner could swap what cairn creates in it, whatever its mode:
        // only a directory of the restoring user (root included) will do.
        // Checked for a directory just created too: someone who can write to
        // its parent could have put theirs in its place before it was opened.
        if st.st_uid != rustix::process::geteuid().as_raw() {
            return Err(crate::Error::io(path)(io::Error::other(
                "the restore target belongs to another user; restore into a new \
                 directory or one you own",
            )));
        }
        let empty = |root: &OwnedFd| -> crate::Result<bool> {
            for entry in
                rustix::fs::Dir::read_from(root).map_err(|e| crate::Error::io(path)(e.into()))?
            {
                let entry = entry.map_err(|e| crate::Error::io(path)(e.into()))?;
                let name = entry.file_name().to_bytes();
                if name != b"." && name != b".." {
                    return Ok(false);
                }
            }
            Ok(true)
        };
        if !existed && !empty(&root)? {
            return Err(crate::Error::TargetNotEmpty(path.to_path_buf()));
        }
        if existed {
            // Checked before its mode is touched (a mistaken `-t /` must not
            // change anything), and again once nobody else can add to it.
            if !empty(&root)? {
                return Err(crate::Error::TargetNotEmpty(path.to_path_buf()));
            }
            let mode = st.st_mode & 0o7777;
            // Setgid stays: a kernel would not let a non-member set it back.
            let private = PRIVATE_DIR | (mode & 0o2000);
            rustix::fs::fchmod(&root, Mode::from_raw_mode(private))
                .map_err(|e| crate::Error::io(path)(e.into()))?;
            original_mode = Some(mode);
            if !empty(&root)? {
                let _ = rustix::fs::fchmod(&root, Mode::from_raw_mode(mode));
                return Err(crate::Error::TargetNotEmpty(path.to_path_buf()));
            }
        }
        Ok(Self {
            root_path: path.to_path_buf(),
            root: Arc::new(root),
            dirs: vec![DirEntry {
                parent: 0,
                name: Vec::new(),
            }],
            original_mode,
        })
    }

    /// After a restore (complete or not): an existing target gets its mode
    /// back. What is left in it is private anyway (directories 0700, files
    /// only once complete).
    pub fn finish(&self) -> io::Result<()> {
        if let Some(mode) = self.original_mode {
            rustix::fs::fchmod(&*self.root, Mode::from_raw_mode(mode))?;
        }
        Ok(())
    }

    /// The target's own descriptor.
    pub fn root(&self) -> &Arc<OwnedFd> {
        &self.root
    }

    /// A path for messages (never used to reach anything).
    pub fn display_path(&self, dir_idx: usize, name: &[u8]) -> PathBuf {
        let mut names = vec![name];
        let mut idx = dir_idx;
        while idx != 0 {
            let Some(dir) = self.dirs.get(idx) else { break };
            names.push(&dir.name);
            idx = dir.parent;
        }
        let mut path = self.root_path.clone();
        for n in names.iter().rev().filter(|n| !n.is_empty()) {
            path.push(OsStr::from_bytes(n));
        }
        path
    }

    /// Creates directory `name` (0700) in `parent` and opens it. Returns its
    /// index and descriptor.
    pub fn create_dir(
        &mut self,
        parent_idx: usize,
        parent: &OwnedFd,
        name: &[u8],
    ) -> io::Result<(usize, OwnedFd)> {
        rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(PRIVATE_DIR))?;
        let fd = open_dir_at(parent, name)?;
        self.dirs.push(DirEntry {
            parent: parent_idx,
            name: name.to_vec(),
        });
        Ok((self.dirs.len() - 1, fd))
    }

    /// Creates a new, empty file (0600) of `size` bytes (a hole) at `name`.
    /// A file that cannot be given its size (a file-size limit, a file
    /// system without holes that is full) is removed again: a failure
    /// leaves nothing behind.
    pub fn create_file(dir: &OwnedFd, name: &[u8], size: u64) -> io::Result<OwnedFd> {
        let fd = rustix::fs::openat(
            dir,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(PRIVATE_FILE),
        )?;
        if size > 0
            && let Err(e) = rustix::fs::ftruncate(&fd, size)
        {
            // Created just now (`O_EXCL`) in a private directory: ours.
            let _ = Self::remove_file(dir, name);
            return Err(e.into());
        }
        Ok(fd)
    }

    /// Gives a complete file, open as `fd`, its metadata, then its real name.
    pub fn complete_file(
        dir: &OwnedFd,
        fd: &OwnedFd,
        tmp_name: &[u8],
        node: &Node,
    ) -> io::Result<()> {
        apply_metadata(fd, node)?;
        rustix::fs::renameat(dir, tmp_name, dir, node.name.as_slice())?;
        Ok(())
    }

    /// Creates a symlink and sets its owner (where permitted) and time.
    pub fn create_symlink(dir: &OwnedFd, name: &[u8], node: &Node) -> io::Result<()> {
        rustix::fs::symlinkat(node.link_target.as_slice(), dir, name)?;
        match rustix::fs::chownat(
            dir,
            name,
            Some(rustix::fs::Uid::from_raw(node.uid)),
            Some(rustix::fs::Gid::from_raw(node.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        ) {
            Ok(()) | Err(rustix::io::Errno::PERM | rustix::io::Errno::INVAL) => {}
            Err(e) => return Err(e.into()),
        }
        rustix::fs::utimensat(dir, name, &timestamps(node), AtFlags::SYMLINK_NOFOLLOW)?;
        Ok(())
    }

    /// The descriptor of directory `idx`, reached from the target by
    /// `openat(O_NOFOLLOW)` one name at a time (cached per thread).
    pub fn dir(&self, cache: &mut DirCache, idx: usize) -> io::Result<Arc<OwnedFd>> {
        if idx == 0 {
            return Ok(self.root.clone());
        }
        if let Some(fd) = cache.fds.get(&idx) {
            return Ok(fd.clone());
        }
        let entry = self
            .dirs
            .get(idx)
            .ok_or_else(|| io::Error::other("unknown restore directory"))?;
        // Parents have lower indices (created first): the recursion ends.
        if entry.parent >= idx {
            return Err(io::Error::other("restore directories out of order"));
        }
        let parent = self.dir(cache, entry.parent)?;
        let fd = Arc::new(open_dir_at(&parent, &entry.name)?);
        if cache.fds.len() >= MAX_CACHED_DIRS {
            cache.fds.clear();
        }
        cache.fds.insert(idx, fd.clone());
        Ok(fd)
    }

    /// Opens a file created by [`Target::create_file`] for writing; it must
    /// still be the same regular file (`identity` from [`Target::identity`]),
    /// and opening never blocks.
    pub fn open_for_writing(
        dir: &OwnedFd,
        name: &[u8],
        identity: (u64, u64),
    ) -> io::Result<OwnedFd> {
        let fd = rustix::fs::openat(
            dir,
            name,
            OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        if Self::identity(&fd)? != identity {
            return Err(io::Error::other("replaced while being restored"));
        }
        Ok(fd)
    }

    /// Device and inode of a regular file (an error for anything else).
    // `st_dev` and `st_ino` differ in type between architectures.
    #[allow(clippy::unnecessary_cast)]
    pub fn identity(fd: &OwnedFd) -> io::Result<(u64, u64)> {
        let st = rustix::fs::fstat(fd)?;
        if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
            return Err(io::Error::other("not a regular file"));
        }
        Ok((st.st_dev as u64, st.st_ino as u64))
    }

    /// Gives a completed file its metadata, then its real name (reopening
    /// it by its temporary name: the target is private while restoring).
    pub fn finish_file(
        dir: &OwnedFd,
        tmp_name: &[u8],
        identity: (u64, u64),
        node: &Node,
    ) -> io::Result<()> {
        let fd = Self::open_for_writing(dir, tmp_name, identity)?;
        Self::complete_file(dir, &fd, tmp_name, node)
    }

    /// Removes an incomplete file.
    pub fn remove_file(dir: &OwnedFd, tmp_name: &[u8]) -> io::Result<()> {
        Ok(rustix::fs::unlinkat(dir, tmp_name, AtFlags::empty())?)
    }

    /// Gives directory `idx` its metadata (after everything inside it).
    pub fn finish_dir(&self, cache: &mut DirCache, idx: usize, node: &Node) -> io::Result<()> {
        let fd = self.dir(cache, idx)?;
        apply_metadata(&fd, node)
    }
}
