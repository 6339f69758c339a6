//! Daily backups cost what changed: unchanged files are not read, unchanged
//! directories are not re-encoded, and the result does not depend on threads.

use std::fs;
use std::sync::Mutex;

use cairn::{BackupOptions, NoProgress, Parent, Progress, Repository};

use crate::support::*;

fn backup_with(
    repo: &mut Repository,
    path: &std::path::Path,
    parent: Parent,
    threads: usize,
) -> cairn::BackupReport {
    let opts = BackupOptions {
        parent,
        threads,
        ..options()
    };
    repo.backup(&[path.to_path_buf()], &opts, &NoProgress)
        .expect("backup")
}

#[test]
fn thread_count_does_not_change_the_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    generate_tree(&src, 400, 0, 51);
    write(&src.join("media.bin"), &Rng(52).bytes(12 * 1024 * 1024));
    let mut roots = Vec::new();
    for threads in [1, 2, 4] {
        let (_store, mut repo, _key) = memory_repo();
        let report = backup_with(&mut repo, &src, Parent::None, threads);
        let (_, snap) = repo
            .find_snapshot(&report.snapshot_id.to_hex())
            .expect("find");
        let listing = repo.list(&report.snapshot_id, None).expect("list");
        roots.push((listing, report.summary.bytes_read));
        // Each repository has its own keys, so compare the trees by content.
        let target = restore(&repo, &report.snapshot_id, dir.path()).expect("restore");
        assert_same_tree(&src, &target.join("src"));
        make_writable_and_remove(&target).expect("cleanup");
        assert_eq!(snap.summary.n_files, report.summary.n_files);
    }
    let names = |l: &[cairn::ListEntry]| {
        l.iter()
            .map(|e| (e.path.clone(), e.node.size))
            .collect::<Vec<_>>()
    };
    // Chunk boundaries differ between repositories (each has its own chunker
    // key), so compare paths, sizes and bytes read.
    assert!(names(&roots[0].0) == names(&roots[1].0));
    assert!(names(&roots[0].0) == names(&roots[2].0));
    assert_eq!(roots[0].1, roots[2].1);

    // In one repository (one set of keys) the root tree IDs are identical.
    let (_store, mut repo, _key) = memory_repo();
    let a = backup_with(&mut repo, &src, Parent::None, 1);
    let b = backup_with(&mut repo, &src, Parent::None, 4);
    let root = |id| repo.load_snapshot(id).expect("snapshot").root;
    assert_eq!(root(&a.snapshot_id), root(&b.snapshot_id));
}

#[test]
fn unchanged_files_cost_a_stat_and_force_reads_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    generate_tree(&src, 300, 0, 53);
    let (_store, mut repo, _key) = memory_repo();
    let first = backup_with(&mut repo, &src, Parent::Latest, 0);
    assert_eq!(first.parent, None);
    assert!(first.summary.bytes_read > 0);

    let stored = repo.load_snapshot(&first.snapshot_id).expect("snapshot");
    assert_eq!(
        stored.summary, first.summary,
        "the report carries the stored totals"
    );

    let second = backup_with(&mut repo, &src, Parent::Latest, 0);
    assert_eq!(second.parent, Some(first.snapshot_id));
    assert_eq!(second.summary.bytes_read, 0, "nothing is read");
    assert_eq!(second.n_files_unchanged, second.summary.n_files);
    assert_eq!(second.n_blobs_new, 0, "no tree is re-encoded as new");
    let root = |id| repo.load_snapshot(id).expect("snapshot").root;
    assert_eq!(root(&first.snapshot_id), root(&second.snapshot_id));

    let forced = backup_with(&mut repo, &src, Parent::None, 0);
    assert_eq!(forced.parent, None);
    assert_eq!(forced.summary.bytes_read, first.summary.bytes_read);
    assert_eq!(forced.n_files_unchanged, 0);

    let given = backup_with(&mut repo, &src, Parent::Snapshot(first.snapshot_id), 0);
    assert_eq!(given.parent, Some(first.snapshot_id));
    assert_eq!(given.summary.bytes_read, 0);
}

#[test]
fn a_change_with_same_size_and_mtime_but_new_ctime_is_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    write(&src.join("db.sqlite"), &vec![b'a'; 100_000]);
    write(&src.join("other"), b"untouched");
    let (_store, mut repo, _key) = memory_repo();
    backup_with(&mut repo, &src, Parent::Latest, 0);

    let path = src.join("db.sqlite");
    let before = fs::metadata(&path).expect("meta");
    let mtime = filetime::FileTime::from_last_modification_time(&before);
    // Same size, mtime put back: only ctime (and the bytes) tell.
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::write(&path, vec![b'b'; 100_000]).expect("write");
    filetime::set_file_mtime(&path, mtime).expect("mtime");
    let after = fs::metadata(&path).expect("meta");
    assert_eq!(after.len(), before.len());
    assert_eq!(
        filetime::FileTime::from_last_modification_time(&after),
        mtime
    );

    let report = backup_with(&mut repo, &src, Parent::Latest, 0);
    assert_eq!(report.n_files_unchanged, 1, "only `other` is reused");
    assert_eq!(report.summary.bytes_read, 100_000);
    let target = restore(&repo, &report.snapshot_id, dir.path()).expect("restore");
    assert_eq!(
        fs::read(target.join("src/db.sqlite")).expect("read"),
        vec![b'b'; 100_000]
    );
}

/// Appends to a file while the backup reads it, `n_times` times.
struct Meddler {
    path: std::path::PathBuf,
    n_left: Mutex<u32>,
}

impl Progress for Meddler {
    fn bytes(&self, _bytes: u64) {
        let mut n = self.n_left.lock().expect("lock");
        if *n > 0 {
            *n -= 1;
            let mut data = fs::read(&self.path).expect("read");
            data.extend_from_slice(b" more");
            fs::write(&self.path, data).expect("write");
        }
    }
}

#[test]
fn a_file_changing_while_read_is_read_again_or_flagged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    let path = src.join("live.db");
    write(&path, b"initial content");
    let (_store, mut repo, _key) = memory_repo();

    // Changed once: the second read is stable and stored, no warning.
    let once = Meddler {
        path: path.clone(),
        n_left: Mutex::new(1),
    };
    let report = repo
        .backup(std::slice::from_ref(&src), &options(), &once)
        .expect("backup");
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    let mut stored = Vec::new();
    std::io::Read::read_to_end(
        &mut repo
            .open_file(&report.snapshot_id, std::path::Path::new("src/live.db"))
            .expect("open"),
        &mut stored,
    )
    .expect("read");
    assert_eq!(stored, fs::read(&path).expect("read"));

    // Changing on every read: stored as last read, with a warning.
    let always = Meddler {
        path: path.clone(),
        n_left: Mutex::new(100),
    };
    let opts = BackupOptions {
        parent: Parent::None,
        ..options()
    };
    let report = repo
        .backup(std::slice::from_ref(&src), &opts, &always)
        .expect("backup");
    assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
    assert!(report.warnings[0].contains("changed while being read"));
}

/// Reports the totals, and holds the walk at its first file until they
/// arrive (or a generous timeout), so the test does not race the walk.
#[derive(Default)]
struct WaitForTotals {
    totals: Mutex<Option<(u64, u64)>>,
    arrived: std::sync::Condvar,
}

impl Progress for WaitForTotals {
    fn scanned(&self, n_files: u64, n_bytes: u64) {
        *self.totals.lock().expect("lock") = Some((n_files, n_bytes));
        self.arrived.notify_all();
    }
    fn file(&self, _path: &std::path::Path, _size: u64) {
        let totals = self.totals.lock().expect("lock");
        let _unused = self
            .arrived
            .wait_timeout_while(totals, std::time::Duration::from_secs(30), |t| t.is_none())
            .expect("wait");
    }
}

/// The totals for an ETA come from the metadata readahead (one walk ahead
/// of the backup, not a second scan): every regular file and its bytes,
/// with one thread or several, and a top-level file counts too.
#[test]
fn totals_count_every_file_with_any_number_of_threads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    generate_tree(&src, 200, 0, 5);
    let lone = dir.path().join("lone file");
    write(&lone, b"alone");
    for threads in [1, 2] {
        let (_store, mut repo, _key) = memory_repo();
        let progress = WaitForTotals::default();
        let opts = BackupOptions {
            threads,
            scan_totals: true,
            ..options()
        };
        let report = repo
            .backup(&[src.clone(), lone.clone()], &opts, &progress)
            .expect("backup");
        let totals = *progress.totals.lock().expect("lock");
        assert_eq!(
            totals,
            Some((report.summary.n_files, report.summary.total_bytes)),
            "{threads} threads"
        );
    }
}

/// The walk keeps up to a few hundred files and directories in flight and
/// finishes the oldest first: across many small directories, nested and
/// wide, with or without a parent, the snapshot is the same for any number
/// of threads and restores exactly.
#[test]
fn many_small_directories_give_the_same_snapshot_for_any_thread_count() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    for a in 0..30 {
        for b in 0..8 {
            for f in 0..3 {
                write(
                    &src.join(format!("d{a}/e{b}/f{f}")),
                    format!("{a} {b} {f}").as_bytes(),
                );
            }
            fs::create_dir_all(src.join(format!("d{a}/empty{b}"))).expect("mkdir");
        }
    }
    let (_store, mut repo, _key) = memory_repo();
    let one = backup_with(&mut repo, &src, Parent::None, 1);
    let two = backup_with(&mut repo, &src, Parent::None, 2);
    let root = |repo: &Repository, id| repo.load_snapshot(id).expect("snapshot").root;
    assert_eq!(root(&repo, &one.snapshot_id), root(&repo, &two.snapshot_id));
    assert_eq!(one.summary.n_files, 30 * 8 * 3);
    assert_eq!(one.summary.n_dirs, 1 + 30 + 30 * 8 * 2);
    // A day later: one file changed deep inside; the rest reused from the
    // parent, and the tree equals a fresh backup's.
    write(&src.join("d17/e5/f1"), b"changed");
    let daily = backup_with(&mut repo, &src, Parent::Latest, 2);
    assert_eq!(daily.n_files_unchanged, 30 * 8 * 3 - 1);
    let fresh = backup_with(&mut repo, &src, Parent::None, 1);
    assert_eq!(
        root(&repo, &daily.snapshot_id),
        root(&repo, &fresh.snapshot_id)
    );
    let target = restore(&repo, &daily.snapshot_id, dir.path()).expect("restore");
    assert_same_tree(&src, &target.join("src"));
}
