//! Metadata readahead: a few threads walk the source ahead of the backup's
//! own walk and look at every entry (`getdents`, `lstat`), so that the walk,
//! which goes one entry at a time, finds directories and inodes already in
//! the kernel's caches instead of waiting for the disk once per entry.
//!
//! With a cold cache the status of 100,000 files is ~1.5 s of one-at-a-time
//! disk reads (the whole cost of a daily backup); several requests in flight
//! take a fraction of that. The readahead decides nothing and keeps nothing:
//! it only warms caches, so it cannot change a snapshot. It never leaves the
//! source: each directory is reached from its top-level path's descriptor
//! by a relative path that may not cross a symlink (`openat2` with
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, or one `O_NOFOLLOW` component at
//! a time where that is missing), so a directory swapped for a symlink ends
//! the look there. Queued directories are paths, not descriptors: a wide
//! tree cannot exhaust the process's descriptors. It stops when the backup's
//! walk is done.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};

use std::ffi::CStr;
use std::num::NonZeroU64;
use std::os::fd::OwnedFd;

use rustix::fs::{Advice, AtFlags, FileType, Mode, OFlags, ResolveFlags};

use crate::backup::SMALL_FILE_MAX;
use crate::progress::Progress;
use crate::rules::PathRules;

/// Threads of the readahead: they mostly wait on the disk.
pub(crate) const PREFETCH_THREADS: usize = 4;

/// Directories waiting to be looked at, last in first out (depth first, in
/// name order, as the walk goes), and how many threads are looking at one.
#[derive(Default)]
struct Queue {
    pending: Vec<Pending>,
    busy: usize,
    /// Whether the end of the tree was reached (and the totals reported).
    finished: bool,
}

/// The shared state of the readahead threads.
pub(crate) struct Prefetch {
    /// The top-level directories, opened once.
    roots: Vec<OwnedFd>,
    /// Also ask the kernel to read small files' contents ahead.
    contents: AtomicBool,
    /// Regular files seen and their bytes.
    n_files: AtomicU64,
    n_bytes: AtomicU64,
    queue: Mutex<Queue>,
    wake: Condvar,
    stop: AtomicBool,
}

impl Prefetch {
    /// Readahead of the trees under `roots` (run [`Self::run`] on threads).
    pub fn new(roots: impl IntoIterator<Item = PathBuf>) -> Self {
        let (mut n_files, mut n_bytes) = (0, 0);
        let (mut pending, mut dirs) = (Vec::new(), Vec::new());
        for root in roots {
            match rustix::fs::lstat(&root) {
                Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                    if let Ok(fd) = rustix::fs::open(&root, DIR_FLAGS, Mode::empty()) {
                        pending.push(Pending {
                            root_idx: dirs.len(),
                            relative: PathBuf::new(),
                        });
                        dirs.push(fd);
                    }
                }
                Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => {
                    n_files += 1;
                    n_bytes += u64::try_from(st.st_size).unwrap_or(0);
                }
                _ => {}
            }
        }
        pending.reverse();
        Self {
            roots: dirs,
            contents: AtomicBool::new(false),
            n_files: AtomicU64::new(n_files),
            n_bytes: AtomicU64::new(n_bytes),
            queue: Mutex::new(Queue {
                pending,
                ..Queue::default()
            }),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
        }
    }

    /// Stops every readahead thread soon (the walk is done or failed).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        let _guard = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        self.wake.notify_all();
    }

    /// The body of one readahead thread: until stopped or out of
    /// directories. The thread that finds the whole tree seen reports the
    /// totals to `progress`, if given. With `contents`, small files'
    /// contents are read ahead too (only when every file will be read: a
    /// first backup, not a daily one, which reads only what changed).
    /// What `exclude` leaves out is neither looked at nor counted.
    pub fn run(
        &self,
        contents: bool,
        exclude: Option<&PathRules>,
        progress: Option<&dyn Progress>,
    ) {
        if contents {
            self.contents.store(true, Ordering::Relaxed);
        }
        loop {
            let dir = match self.next() {
                Next::Dir(dir) => dir,
                Next::Stopped => return,
                Next::Finished => {
                    if let Some(progress) = progress {
                        progress.scanned(
                            self.n_files.load(Ordering::Relaxed),
                            self.n_bytes.load(Ordering::Relaxed),
                        );
                    }
                    return;
                }
            };
            let subdirs = if self.stop.load(Ordering::Relaxed) {
                Vec::new()
            } else {
                self.look_at(&dir, exclude)
            };
            let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            queue.busy -= 1;
            // Reversed, so they are taken in name order.
            queue.pending.extend(subdirs.into_iter().rev());
            self.wake.notify_all();
        }
    }

    /// The next directory to look at; `Finished` for the one thread that
    /// finds none left and no other thread busy (so none may add one).
    fn next(&self) -> Next {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if self.stop.load(Ordering::Relaxed) || queue.finished {
                return Next::Stopped;
            }
            if let Some(dir) = queue.pending.pop() {
                queue.busy += 1;
                return Next::Dir(dir);
            }
            if queue.busy == 0 {
                queue.finished = true;
                self.wake.notify_all();
                return Next::Finished;
            }
            queue = self.wake.wait(queue).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Reads a directory and the status of each entry (counting regular
    /// files and, with `contents`, asking for small ones' contents);
    /// returns its subdirectories, sorted. Errors just end the look.
    fn look_at(&self, dir: &Pending, exclude: Option<&PathRules>) -> Vec<Pending> {
        let Some(root) = self.roots.get(dir.root_idx) else {
            return Vec::new();
        };
        let Ok(fd) = open_beneath(root, &dir.relative) else {
            return Vec::new();
        };
        let Ok(entries) = rustix::fs::Dir::read_from(&fd) else {
            return Vec::new();
        };
        let mut subdirs = Vec::new();
        for entry in entries {
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            let Ok(entry) = entry else { break };
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            if let Some(rules) = exclude
                && rules.matches_in(Some(dir.relative.as_os_str().as_bytes()), name)
            {
                continue;
            }
            let Ok(st) = rustix::fs::statat(&fd, entry.file_name(), AtFlags::SYMLINK_NOFOLLOW)
            else {
                continue;
            };
            match FileType::from_raw_mode(st.st_mode) {
                FileType::Directory => subdirs.push(Pending {
                    root_idx: dir.root_idx,
                    relative: dir.relative.join(std::ffi::OsStr::from_bytes(name)),
                }),
                FileType::RegularFile => {
                    let size = u64::try_from(st.st_size).unwrap_or(0);
                    self.n_files.fetch_add(1, Ordering::Relaxed);
                    self.n_bytes.fetch_add(size, Ordering::Relaxed);
                    if let Some(len) = NonZeroU64::new(size).filter(|n| {
                        self.contents.load(Ordering::Relaxed) && n.get() <= SMALL_FILE_MAX
                    }) {
                        read_ahead(&fd, entry.file_name(), len);
                    }
                }
                _ => {}
            }
        }
        subdirs.sort_unstable_by(|a, b| a.relative.cmp(&b.relative));
        subdirs
    }
}

/// A directory to look at: a path relative to a top-level directory.
struct Pending {
    root_idx: usize,
    relative: PathBuf,
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Opens the directory at `relative` below `root` without crossing a
/// symlink or leaving `root`.
fn open_beneath(root: &OwnedFd, relative: &Path) -> std::io::Result<OwnedFd> {
    if relative.as_os_str().is_empty() {
        return Ok(rustix::fs::openat(root, ".", DIR_FLAGS, Mode::empty())?);
    }
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    match rustix::fs::openat2(root, relative, DIR_FLAGS, Mode::empty(), resolve) {
        // Kernels before 5.6 (and some sandboxes) lack openat2.
        Err(rustix::io::Errno::NOSYS | rustix::io::Errno::PERM) => {}
        other => return Ok(other?),
    }
    open_component_wise(root, relative)
}

/// [`open_beneath`] without `openat2`: one `O_NOFOLLOW` component at a time.
fn open_component_wise(root: &OwnedFd, relative: &Path) -> std::io::Result<OwnedFd> {
    let mut fd = rustix::fs::openat(root, ".", DIR_FLAGS, Mode::empty())?;
    for component in relative.components() {
        let std::path::Component::Normal(name) = component else {
            return Err(std::io::Error::other("not a plain relative path"));
        };
        fd = rustix::fs::openat(&fd, name, DIR_FLAGS, Mode::empty())?;
    }
    Ok(fd)
}

/// What a readahead thread does next.
enum Next {
    Dir(Pending),
    Stopped,
    Finished,
}

/// Asks the kernel to start reading a small file (`WILLNEED` queues the
/// reads and returns), so that several are in flight however many file
/// workers wait. Opened like the walk opens files: without following a
/// symlink, without blocking on a FIFO swapped in.
fn read_ahead(dir: &OwnedFd, name: &CStr, len: NonZeroU64) {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    if let Ok(file) = rustix::fs::openat(dir, name, flags, Mode::empty()) {
        let _ = rustix::fs::fadvise(&file, 0, Some(len), Advice::WillNeed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: directories were reopened by full path with
    /// `O_NOFOLLOW`, which guards only the last component; a sender who
    /// swapped a queued directory's parent for a symlink sent the readahead
    /// (listing, `lstat`, opening small files) outside the source until the
    /// backup ended.
    #[test]
    fn the_readahead_never_leaves_the_source_through_a_swapped_parent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("src");
        std::fs::create_dir_all(root.join("a/b")).expect("mkdir");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(outside.join("b/private-dir")).expect("mkdir");
        let prefetch = Prefetch::new([root.clone()]);
        prefetch.contents.store(true, Ordering::Relaxed);
        let names = |pending: &[Pending]| -> Vec<PathBuf> {
            pending.iter().map(|p| p.relative.clone()).collect()
        };
        let top = prefetch.look_at(
            &Pending {
                root_idx: 0,
                relative: PathBuf::new(),
            },
            None,
        );
        assert_eq!(names(&top), [PathBuf::from("a")]);
        let queued = prefetch.look_at(&top[0], None);
        assert_eq!(names(&queued), [PathBuf::from("a/b")]);
        // Then `a` becomes a symlink to a directory outside the source.
        std::fs::rename(root.join("a"), dir.path().join("a.moved")).expect("mv");
        std::os::unix::fs::symlink(&outside, root.join("a")).expect("symlink");
        let seen = prefetch.look_at(&queued[0], None);
        assert!(
            seen.is_empty(),
            "listed outside the source: {:?}",
            names(&seen)
        );
        // The fallback for kernels without `openat2` refuses it too, and
        // still opens what is really below the root.
        let root_fd = &prefetch.roots[0];
        assert!(open_component_wise(root_fd, Path::new("a/b")).is_err());
        std::fs::create_dir_all(root.join("c/d")).expect("mkdir");
        assert!(open_component_wise(root_fd, Path::new("c/d")).is_ok());
        assert!(open_component_wise(root_fd, Path::new("c/../a")).is_err());
    }

    /// Records what the readahead reports.
    #[derive(Default)]
    struct Totals(Mutex<Vec<(u64, u64)>>);

    impl Progress for Totals {
        fn scanned(&self, n_files: u64, n_bytes: u64) {
            self.0.lock().expect("lock").push((n_files, n_bytes));
        }
    }

    /// The readahead visits the whole tree, counts its regular files and
    /// bytes (not symlinks, directories or what is below a symlink),
    /// reports the totals exactly once, and every thread returns by itself;
    /// a stop ends it early, without totals.
    #[test]
    fn visits_the_whole_tree_counts_it_and_ends() {
        let dir = tempfile::tempdir().expect("tempdir");
        for i in 0..20 {
            let sub = dir.path().join(format!("d{i}/e{i}/f{i}"));
            std::fs::create_dir_all(&sub).expect("mkdir");
            std::fs::write(sub.join("file"), vec![7; i]).expect("write");
        }
        std::os::unix::fs::symlink(dir.path().join("d1"), dir.path().join("link")).expect("ln");
        let lone = dir.path().join("d0/e0/f0/file");
        let totals = Totals::default();
        let prefetch = Prefetch::new([dir.path().to_path_buf(), lone]);
        std::thread::scope(|scope| {
            for _ in 0..PREFETCH_THREADS {
                scope.spawn(|| prefetch.run(true, None, Some(&totals)));
            }
        });
        let queue = prefetch.queue.lock().expect("lock");
        assert!(queue.pending.is_empty());
        assert_eq!(queue.busy, 0);
        drop(queue);
        // 20 files of 0..19 bytes, plus the one given as a root.
        assert_eq!(*totals.0.lock().expect("lock"), [(21, 190)]);

        let totals = Totals::default();
        let stopped = Prefetch::new([dir.path().to_path_buf()]);
        stopped.stop();
        std::thread::scope(|scope| {
            scope.spawn(|| stopped.run(false, None, Some(&totals)));
        });
        assert_eq!(
            stopped.queue.lock().expect("lock").pending.len(),
            1,
            "a stopped readahead looks at nothing"
        );
        assert!(totals.0.lock().expect("lock").is_empty());

        // What the backup excludes is neither looked at nor counted.
        let totals = Totals::default();
        let exclude = PathRules::new(&["d1".to_owned(), "d2/e2/**".to_owned()]).expect("rules");
        let excluding = Prefetch::new([dir.path().to_path_buf()]);
        excluding.run(false, Some(&exclude), Some(&totals));
        assert_eq!(*totals.0.lock().expect("lock"), [(18, 190 - 1 - 2)]);
    }
}
