//! A backup interrupted at any point leaves the repository usable: earlier
//! snapshots list and restore, and the next backup succeeds.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cairn::{Error, InitOptions, Progress, Repository};
use cairn_store::{Fault, FaultyStore, MemoryStore, Namespace, Store};

use crate::support::*;

fn setup() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    generate_tree(&src, 60, 0, 31);
    write(&src.join("media.bin"), &Rng(32).bytes(3 * 1024 * 1024));
    // The source directory's mtime equals media.bin's, so `ungrow` can reset it.
    let mtime = filetime::FileTime::from_last_modification_time(
        &std::fs::metadata(src.join("media.bin")).expect("meta"),
    );
    filetime::set_file_mtime(&src, mtime).expect("mtime");
    (dir, src)
}

fn grow(src: &std::path::Path) {
    for i in 0..5 {
        write(
            &src.join(format!("new/photo{i}.jpg")),
            &Rng(40 + i).bytes(1024 * 1024),
        );
    }
}

/// Undoes [`grow`], including the source directory's modification time, so the
/// source again equals the first snapshot.
fn ungrow(src: &std::path::Path) {
    let mtime = filetime::FileTime::from_last_modification_time(
        &std::fs::metadata(src.join("media.bin")).expect("meta"),
    );
    std::fs::remove_dir_all(src.join("new")).expect("cleanup");
    filetime::set_file_mtime(src, mtime).expect("mtime");
}

#[test]
fn store_failure_at_every_put_leaves_earlier_snapshots_intact() {
    let (dir, src) = setup();
    // Fail the second backup at its first put, then its second, and so on,
    // until it makes fewer puts than the fault allows. Each repository has its
    // own chunker key, so the number of puts is counted per repository, not
    // borrowed from another one.
    let mut n_failure_points = 0;
    for fail_at in 0.. {
        let store = Arc::new(FaultyStore::new(MemoryStore::new()));
        let (mut repo, key) = Repository::init(
            store.clone(),
            &InitOptions {
                pack_target_size: 1 << 20,
                ..InitOptions::default()
            },
        )
        .expect("init");
        let first = backup(&mut repo, &src).snapshot_id;
        grow(&src);
        store.set_fault(Fault::PutsAfter(fail_at));
        let err = match repo.backup(std::slice::from_ref(&src), &options(), &cairn::NoProgress) {
            Ok(_) => {
                ungrow(&src);
                break;
            }
            Err(err) => err,
        };
        assert!(matches!(err, Error::Store(_)), "{err}");
        n_failure_points += 1;
        drop(repo);
        store.set_fault(Fault::None);

        let mut reopened = Repository::open(store.clone(), &key).expect("reopen after crash");
        let listed: Vec<_> = reopened
            .snapshots()
            .expect("list")
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(listed, vec![first]);
        ungrow(&src);
        let target = restore(&reopened, &first, dir.path()).expect("restore earlier snapshot");
        assert_same_tree(&src, &target.join("src"));
        make_writable_and_remove(&target).expect("cleanup");
        // The next backup succeeds and restores.
        grow(&src);
        let next = backup(&mut reopened, &src).snapshot_id;
        let target = restore(&reopened, &next, dir.path()).expect("restore next snapshot");
        assert_same_tree(&src, &target.join("src"));
        make_writable_and_remove(&target).expect("cleanup");
        ungrow(&src);
    }
    assert!(
        n_failure_points >= 4,
        "packs, index and snapshot: {n_failure_points} puts"
    );
}

/// Cancels once the backup reaches a given file: the engine is dropped
/// mid-backup with packs written but no snapshot.
struct CancelAt(&'static str, AtomicBool);

impl Progress for CancelAt {
    fn file(&self, path: &std::path::Path, _size: u64) {
        if path.ends_with(self.0) {
            self.1.store(true, Ordering::Relaxed);
        }
    }
    fn is_cancelled(&self) -> bool {
        self.1.load(Ordering::Relaxed)
    }
}

#[test]
fn dropping_the_engine_mid_backup_loses_nothing() {
    let (dir, src) = setup();
    let store = Arc::new(MemoryStore::new());
    let (mut repo, key) = Repository::init(
        store.clone(),
        &InitOptions {
            pack_target_size: 1 << 16,
            ..InitOptions::default()
        },
    )
    .expect("init");
    let first = backup(&mut repo, &src).snapshot_id;
    grow(&src);
    let packs_before = store.list(Namespace::Packs).expect("list").len();
    let err = repo
        .backup(
            std::slice::from_ref(&src),
            &options(),
            &CancelAt("new/photo3.jpg", AtomicBool::new(false)),
        )
        .unwrap_err();
    assert!(matches!(err, Error::Cancelled));
    assert!(
        store.list(Namespace::Packs).expect("list").len() > packs_before,
        "packs were written before the cancel"
    );
    drop(repo);
    let mut repo = Repository::open(store.clone(), &key).expect("reopen");
    assert_eq!(repo.snapshots().expect("list").len(), 1);
    ungrow(&src);
    let target = restore(&repo, &first, dir.path()).expect("restore");
    assert_same_tree(&src, &target.join("src"));
    grow(&src);
    let next = backup(&mut repo, &src).snapshot_id;
    let target = restore(&repo, &next, dir.path()).expect("restore");
    assert_same_tree(&src, &target.join("src"));
}

/// Regression: a crash during a pack write left its temporary file in `tmp/`
/// for ever (after 173 kills: 61 files, 92 MB). The next backup removes them.
#[test]
fn the_next_backup_removes_what_interrupted_puts_left() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    write(&src.join("a"), b"data");
    let root = dir.path().join("repo");
    let store = Arc::new(cairn_store::LocalStore::create(&root).expect("create"));
    let (mut repo, _key) = Repository::init(store, &InitOptions::default()).expect("init");
    // What a writer killed mid-put leaves: an unlocked temporary file.
    std::fs::write(root.join("tmp/4242-0-deadbeef"), vec![0u8; 100_000]).expect("write");
    backup(&mut repo, &src);
    assert_eq!(std::fs::read_dir(root.join("tmp")).expect("tmp").count(), 0);
}
