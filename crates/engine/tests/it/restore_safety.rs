//! Restore is private until done, works through descriptors, and never leaves
//! a file that looks complete when it is not (issue 6, items 3 and 9).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use cairn::{Error, Progress};

use crate::support::*;

/// Every directory and regular file under `root` (not following symlinks).
fn walk(root: &Path) -> Vec<(PathBuf, fs::Metadata)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path).expect("meta");
        if meta.is_dir() {
            stack.extend(
                fs::read_dir(&path)
                    .expect("dir")
                    .map(|e| e.expect("e").path()),
            );
        }
        out.push((path, meta));
    }
    out
}

/// Cancels once `after` bytes were written.
struct CancelAfter {
    after: u64,
    written: AtomicU64,
}

impl Progress for CancelAfter {
    fn bytes(&self, bytes: u64) {
        self.written.fetch_add(bytes, Ordering::Relaxed);
    }
    fn is_cancelled(&self) -> bool {
        self.written.load(Ordering::Relaxed) >= self.after
    }
}

/// Regression: a restore that failed left a 0600 file as 0644 inside its 0700
/// directory as 0755, at full size with zero-filled holes that looked complete.
/// Now every directory stays 0700 and only complete files have real names.
#[test]
fn an_interrupted_restore_leaves_only_private_directories() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    let mut rng = Rng(9);
    for i in 0..12 {
        write(
            &src.join(format!("private/f{i}.bin")),
            &rng.bytes(300_000 + i * 1000),
        );
        write(&src.join(format!("public/g{i}.bin")), &rng.bytes(200_000));
    }
    fs::set_permissions(src.join("private"), fs::Permissions::from_mode(0o700)).expect("chmod");
    fs::set_permissions(src.join("public"), fs::Permissions::from_mode(0o755)).expect("chmod");
    let (_store, mut repo, _key) = memory_repo();
    let report = backup(&mut repo, &src);

    let target = dir.path().join("out");
    let progress = CancelAfter {
        after: 1_000_000,
        written: AtomicU64::new(0),
    };
    let err = repo
        .restore(&report.snapshot_id, None, &target, &progress)
        .unwrap_err();
    assert!(matches!(err, Error::Cancelled), "{err}");
    let left = walk(&target);
    assert!(left.len() > 2);
    for (path, meta) in left {
        // Files finished before the stop are whole and exact; nothing
        // partial is left, not even under a temporary name.
        if meta.is_file() {
            let name = path.file_name().expect("name").to_string_lossy();
            assert!(!name.starts_with(".cairn-partial"), "{}", path.display());
            let source = src.join(path.strip_prefix(target.join("src")).expect("inside"));
            assert_eq!(
                fs::read(&path).expect("read"),
                fs::read(source).expect("source")
            );
        }
        // Every directory is still private.
        if meta.is_dir() {
            assert_eq!(meta.mode() & 0o777, 0o700, "{}", path.display());
        }
    }
}

/// Swaps a restored directory for a symlink to `outside` when the planner
/// reaches `trigger`.
struct SwapOnFile {
    trigger: &'static str,
    victim: Mutex<Option<PathBuf>>,
    outside: PathBuf,
    swapped: AtomicBool,
}

impl Progress for SwapOnFile {
    fn file(&self, path: &Path, _size: u64) {
        if path.ends_with(self.trigger) && !self.swapped.swap(true, Ordering::SeqCst) {
            let victim = self.victim.lock().expect("lock").take().expect("victim");
            let moved = victim.with_extension("moved");
            fs::rename(&victim, &moved).expect("move the restored directory away");
            std::os::unix::fs::symlink(&self.outside, &victim).expect("plant the symlink");
        }
    }
}

/// Regression: restore re-resolved paths, so swapping a restored directory
/// for a symlink redirected later writes and chmods through it.
#[test]
fn a_directory_swapped_for_a_symlink_redirects_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    for i in 0..5 {
        write(&src.join(format!("a_sub/f{i}")), &Rng(i).bytes(50_000));
    }
    write(&src.join("z_last.txt"), b"planned after a_sub is filled");
    fs::set_permissions(src.join("a_sub/f0"), fs::Permissions::from_mode(0o777)).expect("chmod");
    let (_store, mut repo, _key) = memory_repo();
    let report = backup(&mut repo, &src);

    let outside = dir.path().join("outside");
    fs::create_dir(&outside).expect("mkdir");
    fs::set_permissions(&outside, fs::Permissions::from_mode(0o751)).expect("chmod");
    let target = dir.path().join("out");
    let progress = SwapOnFile {
        trigger: "z_last.txt",
        victim: Mutex::new(Some(target.join("src/a_sub"))),
        outside: outside.clone(),
        swapped: AtomicBool::new(false),
    };
    let result = repo.restore(&report.snapshot_id, None, &target, &progress);
    assert!(progress.swapped.load(Ordering::SeqCst));
    assert!(result.is_err(), "{result:?}");
    assert_eq!(
        fs::read_dir(&outside).expect("outside").count(),
        0,
        "nothing written through the symlink"
    );
    assert_eq!(
        fs::metadata(&outside).expect("meta").mode() & 0o7777,
        0o751,
        "no chmod through the symlink"
    );
}

/// A complete restore widens every mode to the recorded one, and a
/// temporary name never shadows a real one.
#[test]
fn a_complete_restore_has_recorded_modes_and_no_temporary_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    write(&src.join("open/readme"), b"hello");
    // A snapshot may hold names like the restore's temporary ones.
    write(&src.join("open/.cairn-partial-0"), b"a real file");
    write(&src.join("open/.cairn-partial-1"), b"another");
    fs::set_permissions(src.join("open/readme"), fs::Permissions::from_mode(0o644)).expect("chmod");
    fs::set_permissions(src.join("open"), fs::Permissions::from_mode(0o755)).expect("chmod");
    let (_store, mut repo, _key) = memory_repo();
    let report = backup(&mut repo, &src);
    let target = restore(&repo, &report.snapshot_id, dir.path()).expect("restore");
    assert_same_tree(&src, &target.join("src"));
}

/// Records the target's mode whenever a file is planned.
struct ModeProbe {
    target: PathBuf,
    seen: Mutex<Vec<u32>>,
}

impl Progress for ModeProbe {
    fn file(&self, _path: &Path, _size: u64) {
        let mode = fs::metadata(&self.target).expect("target").mode() & 0o7777;
        self.seen.lock().expect("lock").push(mode);
    }
}

/// An existing target (which others may be able to write) is private while
/// the restore runs, so nobody can swap a file cairn created and then reopens;
/// it gets its own mode back at the end.
#[test]
fn an_existing_target_is_private_while_the_restore_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    write(&src.join("a"), b"a");
    write(&src.join("b"), b"b");
    let (_store, mut repo, _key) = memory_repo();
    let report = backup(&mut repo, &src);
    let target = dir.path().join("shared");
    fs::create_dir(&target).expect("mkdir");
    fs::set_permissions(&target, fs::Permissions::from_mode(0o777)).expect("chmod");
    let probe = ModeProbe {
        target: target.clone(),
        seen: Mutex::new(Vec::new()),
    };
    let restored = repo
        .restore(
            &report.snapshot_id,
            Some(Path::new("src/a")),
            &target,
            &probe,
        )
        .expect("restore");
    assert!(restored.is_complete());
    assert_eq!(*probe.seen.lock().expect("lock"), [0o700]);
    assert_eq!(fs::metadata(&target).expect("meta").mode() & 0o7777, 0o777);
    assert_eq!(fs::read(target.join("a")).expect("a"), b"a");
}

/// Swaps a file cairn created for a FIFO or for a file of the swapper's,
/// when the planner reaches `trigger`.
struct SwapTemp {
    dir: PathBuf,
    trigger: &'static str,
    fifo: bool,
    swapped: AtomicBool,
}

impl Progress for SwapTemp {
    fn file(&self, path: &Path, _size: u64) {
        if !path.ends_with(self.trigger) || self.swapped.swap(true, Ordering::SeqCst) {
            return;
        }
        for entry in fs::read_dir(&self.dir).expect("dir") {
            let path = entry.expect("entry").path();
            if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".cairn-partial"))
            {
                fs::rename(&path, self.dir.join("moved-away")).expect("move ours away");
                if self.fifo {
                    let made = std::process::Command::new("mkfifo")
                        .arg(&path)
                        .status()
                        .expect("mkfifo");
                    assert!(made.success());
                } else {
                    fs::write(&path, b"").expect("plant");
                    fs::hard_link(&path, self.dir.join("swapper's view")).expect("link");
                }
            }
        }
    }
}

/// Regression: a worker reopened a temporary file by name, so whoever could
/// swap it (the owner of an existing target) made a root restore write
/// secrets into their file, or hang on a FIFO. A reopened file must be the
/// one cairn created. (Only files of several chunks are created before the
/// data phase and reopened; a file of one chunk is created where it is
/// written.)
#[test]
fn a_temporary_file_swapped_for_another_is_never_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    // Several chunks: incompressible and larger than the largest chunk.
    write(&src.join("a/secret"), &Rng(17).bytes(9 << 20));
    write(&src.join("b/last"), b"planned after a/secret");
    let (_store, mut repo, _key) = memory_repo();
    let report = backup(&mut repo, &src);
    for fifo in [false, true] {
        let target = dir.path().join(format!("out-{fifo}"));
        let progress = SwapTemp {
            dir: target.join("src/a"),
            trigger: "last",
            fifo,
            swapped: AtomicBool::new(false),
        };
        // Returns (a FIFO does not block it) with an error.
        let err = repo
            .restore(&report.snapshot_id, None, &target, &progress)
            .unwrap_err();
        assert!(progress.swapped.load(Ordering::SeqCst));
        if !fifo {
            assert!(err.to_string().contains("replaced"), "{err}");
            let theirs = fs::read(target.join("src/a/swapper's view")).expect("theirs");
            assert!(theirs.is_empty(), "the secret went into the swapper's file");
        }
    }
}

/// Regression: root restoring into a directory another user owns let that
/// user swap files under it. Such a target is refused.
#[test]
fn a_target_owned_by_another_user_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    write(&src.join("a"), b"a");
    let (_store, mut repo, _key) = memory_repo();
    let report = backup(&mut repo, &src);
    let target = dir.path().join("theirs");
    fs::create_dir(&target).expect("mkdir");
    let me = fs::metadata(dir.path()).expect("meta").uid();
    match std::os::unix::fs::chown(&target, Some(me + 1), None) {
        Ok(()) => {
            let err = repo
                .restore(&report.snapshot_id, None, &target, &cairn::NoProgress)
                .unwrap_err();
            assert!(err.to_string().contains("another user"), "{err}");
            assert_eq!(fs::read_dir(&target).expect("dir").count(), 0);
        }
        // Not root: nobody else's directory can be made here, and the
        // kernel keeps us from writing into one anyway.
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied),
    }
}

/// An existing target gets its mode back after a failed restore too.
#[test]
fn a_failed_restore_gives_an_existing_target_its_mode_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    for i in 0..8 {
        write(&src.join(format!("f{i}")), &Rng(i).bytes(400_000));
    }
    let (_store, mut repo, _key) = memory_repo();
    let report = backup(&mut repo, &src);
    let target = dir.path().join("mine");
    fs::create_dir(&target).expect("mkdir");
    fs::set_permissions(&target, fs::Permissions::from_mode(0o750)).expect("chmod");
    let progress = CancelAfter {
        after: 500_000,
        written: AtomicU64::new(0),
    };
    repo.restore(&report.snapshot_id, None, &target, &progress)
        .unwrap_err();
    assert_eq!(fs::metadata(&target).expect("meta").mode() & 0o7777, 0o750);
}
