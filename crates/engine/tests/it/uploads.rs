//! Several packs uploaded at once on a store that asks for it
//! (`Store::parallelism`): the snapshot is the same, uploads overlap, a pack
//! is always written before the index file naming it, and a failure of
//! one upload fails the backup with nothing committed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn::{InitOptions, NoProgress, Repository};
use cairn_store::{Counts, Error, MemoryStore, Namespace, ObjectName, Store};

use crate::support::*;

/// A store behind a slow link: each put takes a while, several may be in
/// flight, and the N-th put can be made to fail.
struct SlowLink {
    inner: MemoryStore,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
    puts: AtomicUsize,
    fail_put: Mutex<Option<usize>>,
    /// Names in the order their puts completed.
    completed: Mutex<Vec<ObjectName>>,
    /// Whether the next pack's name is taken by other bytes first.
    squat: std::sync::atomic::AtomicBool,
}

impl SlowLink {
    fn new() -> Self {
        Self {
            inner: MemoryStore::new(),
            in_flight: AtomicUsize::new(0),
            most_in_flight: AtomicUsize::new(0),
            puts: AtomicUsize::new(0),
            fail_put: Mutex::new(None),
            completed: Mutex::new(Vec::new()),
            squat: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl Store for SlowLink {
    fn put(&self, name: &ObjectName, bytes: &[u8]) -> Result<(), Error> {
        let n = self.puts.fetch_add(1, Ordering::SeqCst);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_in_flight.fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(15));
        if name.namespace() == Namespace::Packs && self.squat.swap(false, Ordering::SeqCst) {
            self.inner.put(name, b"not what the name says")?;
        }
        let result = if *self.fail_put.lock().expect("lock") == Some(n) {
            Err(Error::Injected)
        } else {
            self.inner.put(name, bytes)
        };
        if result.is_ok() {
            self.completed.lock().expect("lock").push(name.clone());
        }
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        result
    }
    fn get(&self, name: &ObjectName, max_len: u64) -> Result<Vec<u8>, Error> {
        self.inner.get(name, max_len)
    }
    fn get_range(&self, name: &ObjectName, offset: u64, len: u64) -> Result<Vec<u8>, Error> {
        self.inner.get_range(name, offset, len)
    }
    fn size(&self, name: &ObjectName) -> Result<u64, Error> {
        self.inner.size(name)
    }
    fn list(&self, namespace: Namespace) -> Result<Vec<String>, Error> {
        self.inner.list(namespace)
    }
    fn delete(&self, name: &ObjectName) -> Result<(), Error> {
        self.inner.delete(name)
    }
    fn requests(&self) -> Option<Counts> {
        None
    }
    fn parallelism(&self) -> usize {
        4
    }
}

fn small_packs() -> InitOptions {
    InitOptions {
        pack_target_size: 256 * 1024,
        ..InitOptions::default()
    }
}

#[test]
fn packs_go_up_several_at_once_and_before_their_index_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    generate_tree(&src, 40, 0, 5);
    write(&src.join("messages.db"), &Rng(6).bytes(4 << 20));
    let store = Arc::new(SlowLink::new());
    let (mut repo, key) = Repository::init(store.clone(), &small_packs()).expect("init");
    let report = backup(&mut repo, &src);
    assert!(report.n_packs_written >= 10, "{}", report.n_packs_written);
    assert!(
        store.most_in_flight.load(Ordering::SeqCst) > 1,
        "uploads never overlapped"
    );
    // Every index file was completed after every pack it names.
    let completed = store.completed.lock().expect("lock").clone();
    let last_pack = completed
        .iter()
        .rposition(|n| n.namespace() == Namespace::Packs)
        .expect("packs");
    let first_index = completed
        .iter()
        .position(|n| n.namespace() == Namespace::Index)
        .expect("an index file");
    assert!(first_index > last_pack, "{completed:?}");
    // The same repository, read by a new process.
    let reopened = Repository::open(store.clone(), &key).expect("open");
    let scratch = tempfile::tempdir().expect("scratch");
    let restored = restore(&reopened, &report.snapshot_id, scratch.path()).expect("restore");
    assert_same_tree(&src, &restored.join("src"));
}

#[test]
fn a_failed_upload_fails_the_backup_and_the_next_one_reuses_what_went_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    let db_len = 16 << 20;
    write(&src.join("messages.db"), &Rng(7).bytes(db_len));
    let store = Arc::new(SlowLink::new());
    let (mut repo, key) = Repository::init(store.clone(), &small_packs()).expect("init");
    let puts_before = store.puts.load(Ordering::SeqCst);
    // The 50th put of the backup fails (a pack, with others in flight),
    // after the checkpoint at 32 packs and before the last of its ~64.
    *store.fail_put.lock().expect("lock") = Some(puts_before + 50);
    let failed = repo.backup(std::slice::from_ref(&src), &options(), &NoProgress);
    assert!(failed.is_err(), "the backup must fail");
    assert!(store.list(Namespace::Snapshots).expect("list").is_empty());
    assert_eq!(store.list(Namespace::Index).expect("list").len(), 1);
    // The retry (by the same process: a frontend keeps its repository
    // open) succeeds and does not upload again what the checkpoint's
    // index file names; a new process's backup then finds it all.
    *store.fail_put.lock().expect("lock") = None;
    let report = backup(&mut repo, &src);
    let reused = db_len as u64 - report.summary.bytes_new;
    assert!(
        reused >= 32 * 250 * 1024,
        "the same process reused only {reused} bytes of the 32 packs checkpointed"
    );
    let mut repo = Repository::open(store.clone(), &key).expect("open");
    let report = backup(&mut repo, &src);
    assert_eq!(report.summary.bytes_new, 0);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    let scratch = tempfile::tempdir().expect("scratch");
    let restored = restore(&repo, &report.snapshot_id, scratch.path()).expect("restore");
    assert_same_tree(&src, &restored.join("src"));
}

/// A pack's name already taken by other bytes (a hostile or damaged
/// store): the backup fails with an integrity error naming it, and commits
/// nothing that relies on it.
#[test]
fn a_pack_name_taken_by_other_bytes_fails_the_backup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    write(&src.join("messages.db"), &Rng(8).bytes(1 << 20));
    let store = Arc::new(SlowLink::new());
    let (mut repo, _key) = Repository::init(store.clone(), &small_packs()).expect("init");
    store.squat.store(true, Ordering::SeqCst);
    let err = repo
        .backup(std::slice::from_ref(&src), &options(), &NoProgress)
        .expect_err("a squatted pack name");
    assert!(matches!(err, cairn::Error::Integrity { .. }), "{err}");
    assert!(err.to_string().contains("packs/"), "{err}");
    assert!(store.list(Namespace::Snapshots).expect("list").is_empty());
}
