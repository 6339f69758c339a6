//! Backups and prunes interleaved at every store operation: a backup that
//! deduplicates against what a prune is removing never commits a snapshot
//! with a missing blob (docs/format.md, "Sharing a repository").
//!
//! A `HookStore` runs a whole second operation (a backup inside a prune,
//! or a prune inside a backup) at the N-th store operation of the first,
//! for every N: each interleaving of the two at store-operation grain in
//! which the inner one runs without a pause.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cairn::{
    BackupOptions, CheckOptions, ForgetOptions, ForgetWhat, NoProgress, PruneOptions, ReadData,
    Repository, SnapshotId,
};
use cairn_store::{Error, MemoryStore, Namespace, ObjectName, Store};

use crate::history::*;
use crate::support::assert_sound;

type Hook = Box<dyn FnOnce() + Send>;

/// What a store operation is, for a [`Watcher`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Put,
    Get,
    /// Ranged reads, sizes, listings, deletes.
    Other,
}

/// Sees every operation of a [`Watched`] store before it reaches the store.
trait Watcher: Send + Sync {
    fn before(&self, inner: &MemoryStore, op: Op, name: Option<&ObjectName>);
}

/// A memory store whose operations a [`Watcher`] sees first: the one
/// wrapper behind every interleaving here.
struct Watched<W> {
    inner: Arc<MemoryStore>,
    watcher: W,
}

impl<W: Watcher> Store for Watched<W> {
    fn put(&self, name: &ObjectName, bytes: &[u8]) -> Result<(), Error> {
        self.watcher.before(&self.inner, Op::Put, Some(name));
        self.inner.put(name, bytes)
    }
    fn get(&self, name: &ObjectName, max_len: u64) -> Result<Vec<u8>, Error> {
        self.watcher.before(&self.inner, Op::Get, Some(name));
        self.inner.get(name, max_len)
    }
    fn get_range(&self, name: &ObjectName, offset: u64, len: u64) -> Result<Vec<u8>, Error> {
        self.watcher.before(&self.inner, Op::Other, Some(name));
        self.inner.get_range(name, offset, len)
    }
    fn size(&self, name: &ObjectName) -> Result<u64, Error> {
        self.watcher.before(&self.inner, Op::Other, Some(name));
        self.inner.size(name)
    }
    fn list(&self, namespace: Namespace) -> Result<Vec<String>, Error> {
        self.watcher.before(&self.inner, Op::Other, None);
        self.inner.list(namespace)
    }
    fn delete(&self, name: &ObjectName) -> Result<(), Error> {
        self.watcher.before(&self.inner, Op::Other, Some(name));
        self.inner.delete(name)
    }
    fn clean_interrupted_writes(&self) -> Result<u64, Error> {
        self.inner.clean_interrupted_writes()
    }
}

/// Counts every operation and runs a hook once, before operation `trigger`.
struct Trigger {
    n_ops: AtomicU64,
    trigger: u64,
    hook: Mutex<Option<Hook>>,
}

impl Watcher for Trigger {
    fn before(&self, _: &MemoryStore, _: Op, _: Option<&ObjectName>) {
        if self.n_ops.fetch_add(1, Ordering::SeqCst) == self.trigger {
            let hook = self.hook.lock().expect("hook").take();
            if let Some(hook) = hook {
                hook();
            }
        }
    }
}

type HookStore = Watched<Trigger>;

impl HookStore {
    fn new(inner: Arc<MemoryStore>, trigger: u64, hook: Option<Hook>) -> Self {
        Self {
            inner,
            watcher: Trigger {
                n_ops: AtomicU64::new(0),
                trigger,
                hook: Mutex::new(hook),
            },
        }
    }

    fn n_ops(&self) -> u64 {
        self.watcher.n_ops.load(Ordering::SeqCst)
    }

    fn fired(&self) -> bool {
        self.watcher.hook.lock().expect("hook").is_none()
    }
}

/// Day 1's media live only in the forgotten days 0-4: a backup of day 1
/// deduplicates against exactly what prune removes.
const REVIVED_DAY: u64 = 1;

fn prepared(scratch: &Path) -> (MemoryStore, cairn::RecoveryKey, Vec<SnapshotId>) {
    let (store, repo, key, ids) = repo_with_days(scratch, 8);
    repo.forget(&ForgetOptions {
        what: ForgetWhat::Ids(ids[..5].to_vec()),
        dry_run: false,
    })
    .expect("forget");
    (store.duplicate(), key, ids)
}

fn backup_revived(repo: &mut Repository, src: &Path) -> SnapshotId {
    make_day(src, REVIVED_DAY);
    let options = BackupOptions {
        host: "tablet".into(),
        threads: 1,
        ..BackupOptions::default()
    };
    repo.backup(&[src.to_path_buf()], &options, &NoProgress)
        .expect("backup")
        .snapshot_id
}

fn assert_all_restore(
    store: &Arc<MemoryStore>,
    key: &cairn::RecoveryKey,
    ids: &[SnapshotId],
    revived: &SnapshotId,
    scratch: &Path,
    when: &str,
) {
    let repo = Repository::open(store.clone(), key).expect("open");
    eprintln!("checking: {when}");
    assert_sound(&repo);
    assert_restores_day(&repo, revived, REVIVED_DAY, scratch);
    for (d, id) in ids.iter().enumerate().skip(5) {
        assert_restores_day(&repo, id, d as u64, scratch);
    }
}

/// Runs `f` against a hooked store that never fires and returns how many
/// store operations it made.
fn count_ops(base: &MemoryStore, f: impl FnOnce(Arc<HookStore>)) -> u64 {
    let hooked = Arc::new(HookStore::new(Arc::new(base.duplicate()), u64::MAX, None));
    f(hooked.clone());
    hooked.n_ops()
}

#[test]
fn a_backup_completing_at_any_step_of_a_prune_loses_nothing() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let (base, key, ids) = prepared(scratch.path());
    let n_ops = count_ops(&base, |store| {
        let repo = Repository::open(store, &key).expect("open");
        repo.prune(&PruneOptions::default(), &NoProgress)
            .expect("prune");
    });
    assert!(n_ops > 20, "prune made {n_ops} store operations");
    for trigger in 0..n_ops {
        let inner = Arc::new(base.duplicate());
        let revived: Arc<Mutex<Option<SnapshotId>>> = Arc::default();
        let hook: Hook = {
            let (inner, key, revived) = (inner.clone(), key.clone(), revived.clone());
            let src = scratch.path().join("tablet").join("chat");
            Box::new(move || {
                let mut repo = Repository::open(inner, &key).expect("open inside prune");
                *revived.lock().expect("id") = Some(backup_revived(&mut repo, &src));
            })
        };
        let hooked = Arc::new(HookStore::new(inner.clone(), trigger, Some(hook)));
        let repo = Repository::open(hooked.clone(), &key).expect("open");
        repo.prune(&PruneOptions::default(), &NoProgress)
            .unwrap_or_else(|e| panic!("prune with a backup at op {trigger}: {e}"));
        assert!(hooked.fired());
        let revived = revived.lock().expect("id").expect("backup ran");
        let when = format!("backup at prune op {trigger}");
        assert_all_restore(&inner, &key, &ids, &revived, scratch.path(), &when);
        // A later prune (the backup is over) keeps it all too.
        let repo = Repository::open(inner.clone(), &key).expect("open");
        let later = repo
            .prune(&PruneOptions::default(), &NoProgress)
            .expect("later prune");
        assert!(later.deferred.is_none());
        assert_all_restore(&inner, &key, &ids, &revived, scratch.path(), &when);
    }
}

#[test]
fn a_prune_running_at_any_step_of_a_backup_loses_nothing() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let (base, key, ids) = prepared(scratch.path());
    let src = scratch.path().join("tablet").join("chat");
    let n_ops = count_ops(&base, |store| {
        let mut repo = Repository::open(store, &key).expect("open");
        backup_revived(&mut repo, &src);
    });
    assert!(n_ops > 10, "backup made {n_ops} store operations");
    let mut n_deferred = 0;
    for trigger in 0..n_ops {
        let inner = Arc::new(base.duplicate());
        let deferred: Arc<Mutex<Option<bool>>> = Arc::default();
        let hook: Hook = {
            let (inner, key, deferred) = (inner.clone(), key.clone(), deferred.clone());
            Box::new(move || {
                let repo = Repository::open(inner, &key).expect("open inside backup");
                let report = repo
                    .prune(&PruneOptions::default(), &NoProgress)
                    .expect("prune inside backup");
                *deferred.lock().expect("flag") = Some(report.deferred.is_some());
            })
        };
        let hooked = Arc::new(HookStore::new(inner.clone(), trigger, Some(hook)));
        let mut repo = Repository::open(hooked.clone(), &key).expect("open");
        let revived = backup_revived(&mut repo, &src);
        assert!(hooked.fired());
        n_deferred += usize::from(*deferred.lock().expect("flag") == Some(true));
        let when = format!("prune at backup op {trigger}");
        assert_all_restore(&inner, &key, &ids, &revived, scratch.path(), &when);
        let repo = Repository::open(inner.clone(), &key).expect("open");
        let later = repo
            .prune(&PruneOptions::default(), &NoProgress)
            .expect("later prune");
        assert!(later.deferred.is_none());
        assert_all_restore(&inner, &key, &ids, &revived, scratch.path(), &when);
    }
    // While the backup's marker was there, prunes put deleting off.
    assert!(n_deferred > 0);
}

/// Runs a hook once, at the first put into one namespace.
struct OnPutTo {
    namespace: Namespace,
    hook: Mutex<Option<Hook>>,
}

impl Watcher for OnPutTo {
    fn before(&self, _: &MemoryStore, op: Op, name: Option<&ObjectName>) {
        if op == Op::Put && name.is_some_and(|n| n.namespace() == self.namespace) {
            let hook = self.hook.lock().expect("hook").take();
            if let Some(hook) = hook {
                hook();
            }
        }
    }
}

#[test]
fn a_long_lived_process_never_deduplicates_against_condemned_packs() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let (base, key, ids) = prepared(scratch.path());
    let src = scratch.path().join("tablet").join("chat");
    let inner = Arc::new(base.duplicate());
    // Opened before anything is condemned, as a frontend keeps it open.
    let mut long_lived = Repository::open(inner.clone(), &key).expect("open");
    // A prune condemns day 1's packs but cannot delete them: a backup
    // starts after its first look at the sessions and is still running
    // (paused before its snapshot) when it looks again.
    let n_ops = count_ops(&base, |store| {
        let mut repo = Repository::open(store, &key).expect("open");
        backup_revived(&mut repo, &src);
    });
    let (paused_tx, paused_rx) = crossbeam_channel::bounded::<()>(1);
    let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(1);
    let running: Arc<Mutex<Option<std::thread::JoinHandle<SnapshotId>>>> = Arc::default();
    let hook: Hook = {
        let (inner, key, src, running) = (inner.clone(), key.clone(), src.clone(), running.clone());
        Box::new(move || {
            let pause: Hook = Box::new(move || {
                paused_tx.send(()).expect("paused");
                release_rx.recv().expect("released");
            });
            // The second-to-last operation of that backup is its snapshot.
            let paused = Arc::new(HookStore::new(inner, n_ops - 2, Some(pause)));
            let thread = std::thread::spawn(move || {
                let mut repo = Repository::open(paused, &key).expect("open");
                backup_revived(&mut repo, &src)
            });
            paused_rx.recv().expect("backup paused");
            *running.lock().expect("thread") = Some(thread);
        })
    };
    let pruning = Arc::new(Watched {
        inner: inner.clone(),
        watcher: OnPutTo {
            namespace: Namespace::Condemned,
            hook: Mutex::new(Some(hook)),
        },
    });
    let report = Repository::open(pruning, &key)
        .expect("open")
        .prune(&PruneOptions::default(), &NoProgress)
        .expect("prune");
    assert!(report.deferred.is_some(), "{report:?}");
    assert!(!inner.list(Namespace::Condemned).expect("list").is_empty());
    release_tx.send(()).expect("release");
    let thread = running
        .lock()
        .expect("thread")
        .take()
        .expect("backup started");
    let first = thread.join().expect("paused backup");
    // The long-lived process backs up the same day: what it would reuse is
    // condemned, so it stores it again rather than rely on it.
    make_day(&src, REVIVED_DAY);
    let report = long_lived
        .backup(
            std::slice::from_ref(&src),
            &BackupOptions {
                host: "tablet".into(),
                threads: 1,
                ..BackupOptions::default()
            },
            &NoProgress,
        )
        .expect("backup");
    assert!(
        report.n_blobs_new >= 4,
        "day 1's photos are condemned and must be stored again: {report:?}"
    );
    let repo = Repository::open(inner.clone(), &key).expect("open");
    let done = repo
        .prune(&PruneOptions::default(), &NoProgress)
        .expect("prune");
    assert!(done.deferred.is_none());
    assert_all_restore(&inner, &key, &ids, &first, scratch.path(), "after");
    assert_all_restore(
        &inner,
        &key,
        &ids,
        &report.snapshot_id,
        scratch.path(),
        "after",
    );
}

#[test]
fn a_restore_during_a_prune_that_moves_its_blobs_is_complete() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let (base, key, ids) = prepared(scratch.path());
    let restore_last = |store: Arc<HookStore>| {
        let repo = Repository::open(store, &key).expect("open");
        let target = scratch.path().join("during");
        let _ = std::fs::remove_dir_all(&target);
        let report = repo
            .restore(&ids[7], None, &target, &NoProgress)
            .expect("restore");
        assert!(report.is_complete(), "{:?}", report.failed);
        crate::support::assert_files_match_source(&scratch.path().join("expected-7"), &target);
        std::fs::remove_dir_all(&target).expect("cleanup");
    };
    make_day(&scratch.path().join("expected-7").join("chat"), 7);
    let n_ops = count_ops(&base, restore_last);
    let mut n_moved = 0;
    for trigger in 0..n_ops {
        let inner = Arc::new(base.duplicate());
        let hook: Hook = {
            let (inner, key) = (inner.clone(), key.clone());
            Box::new(move || {
                let repo = Repository::open(inner, &key).expect("open");
                // Every partly used pack is repacked: day 7's blobs move.
                let report = repo
                    .prune(
                        &PruneOptions {
                            max_unused: 0.0,
                            ..PruneOptions::default()
                        },
                        &NoProgress,
                    )
                    .expect("prune");
                assert!(report.deferred.is_none());
            })
        };
        let hooked = Arc::new(HookStore::new(inner.clone(), trigger, Some(hook)));
        restore_last(hooked.clone());
        assert!(hooked.fired());
        n_moved += 1;
    }
    assert!(n_moved > 5);
}

#[test]
fn a_check_during_a_prune_reports_no_false_damage() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let (base, key, _ids) = prepared(scratch.path());
    let check = |store: Arc<HookStore>| {
        let repo = Repository::open(store, &key).expect("open");
        repo.check(
            &CheckOptions {
                read_data: ReadData::All,
            },
            &NoProgress,
        )
        .expect("check")
    };
    let n_ops = count_ops(&base, |store| {
        assert!(check(store).is_ok());
    });
    for trigger in 0..n_ops {
        let inner = Arc::new(base.duplicate());
        let hook: Hook = {
            let (inner, key) = (inner.clone(), key.clone());
            Box::new(move || {
                let repo = Repository::open(inner, &key).expect("open");
                let options = PruneOptions {
                    max_unused: 0.0,
                    ..PruneOptions::default()
                };
                repo.prune(&options, &NoProgress).expect("prune");
            })
        };
        let hooked = Arc::new(HookStore::new(inner.clone(), trigger, Some(hook)));
        let report = check(hooked.clone());
        assert!(hooked.fired());
        assert!(
            report.is_ok(),
            "prune at check op {trigger}: {:?}",
            report.problems
        );
    }
}

/// Deletes each snapshot file just before it is first read, as a `forget`
/// on another device between a listing and the read would.
struct ForgetBeforeRead {
    victims: Mutex<Vec<String>>,
}

impl Watcher for ForgetBeforeRead {
    fn before(&self, inner: &MemoryStore, op: Op, name: Option<&ObjectName>) {
        let Some(name) = name.filter(|n| op == Op::Get && n.namespace() == Namespace::Snapshots)
        else {
            return;
        };
        let mut victims = self.victims.lock().expect("victims");
        if let Some(i) = victims.iter().position(|v| v == name.name()) {
            victims.remove(i);
            inner.delete(name).expect("forget");
        }
    }
}

/// Regression (second review): a snapshot forgotten between a listing and
/// its read failed backups, prunes and checks.
#[test]
fn snapshots_forgotten_meanwhile_fail_nothing() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let (base, key, ids) = prepared(scratch.path());
    let run = |f: &dyn Fn(&Repository)| {
        let inner = Arc::new(base.duplicate());
        let store = Arc::new(Watched {
            inner: inner.clone(),
            watcher: ForgetBeforeRead {
                victims: Mutex::new(vec![ids[5].to_hex()]),
            },
        });
        f(&Repository::open(store, &key).expect("open"));
    };
    run(&|repo| {
        repo.prune(&PruneOptions::default(), &NoProgress)
            .expect("prune");
    });
    run(&|repo| {
        let report = repo
            .check(&CheckOptions::default(), &NoProgress)
            .expect("check");
        assert!(report.is_ok(), "{:?}", report.problems);
    });
    let inner = Arc::new(base.duplicate());
    let store = Arc::new(Watched {
        inner: inner.clone(),
        watcher: ForgetBeforeRead {
            victims: Mutex::new(vec![ids[7].to_hex()]),
        },
    });
    let mut repo = Repository::open(store, &key).expect("open");
    backup_revived(&mut repo, &scratch.path().join("tablet").join("chat"));
}

/// Regression (second review): a backup that could not read a
/// condemnation record went on deduplicating against the packs it names,
/// even while the prune that wrote it was deleting them.
#[test]
fn an_unreadable_record_stops_a_backup_only_while_a_prune_runs() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let (base, key, _ids) = prepared(scratch.path());
    let src = scratch.path().join("tablet").join("chat");
    let inner = Arc::new(base.duplicate());
    let junk = ObjectName::new(Namespace::Condemned, &"cd".repeat(32)).expect("name");
    inner.put(&junk, b"not a record").expect("plant");
    // No prune runs: the backup goes on (and says what it skipped).
    let mut repo = Repository::open(inner.clone(), &key).expect("open");
    backup_revived(&mut repo, &src);
    // A prune runs (paused before its record): the backup waits for it.
    let (paused_tx, paused_rx) = crossbeam_channel::bounded::<()>(1);
    let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(1);
    let pause: Hook = Box::new(move || {
        paused_tx.send(()).expect("paused");
        release_rx.recv().expect("released");
    });
    let pruning = Arc::new(Watched {
        inner: inner.clone(),
        watcher: OnPutTo {
            namespace: Namespace::Condemned,
            hook: Mutex::new(Some(pause)),
        },
    });
    let prune = {
        let key = key.clone();
        std::thread::spawn(move || {
            Repository::open(pruning, &key)
                .expect("open")
                .prune(&PruneOptions::default(), &NoProgress)
        })
    };
    paused_rx.recv().expect("prune paused");
    let mut repo = Repository::open(inner.clone(), &key).expect("open");
    make_day(&src, REVIVED_DAY);
    let waited = repo.backup(
        std::slice::from_ref(&src),
        &BackupOptions {
            host: "tablet".into(),
            threads: 1,
            ..BackupOptions::default()
        },
        &NoProgress,
    );
    assert!(
        matches!(waited, Err(cairn::Error::PruneRunning(_))),
        "{waited:?}"
    );
    release_tx.send(()).expect("release");
    // That prune voids the junk (it read it at its start); backups go on.
    let report = prune.join().expect("prune thread").expect("prune");
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("condemns nothing")),
        "{report:?}"
    );
    assert!(inner.list(Namespace::Condemned).expect("list").is_empty());
    let mut repo = Repository::open(inner.clone(), &key).expect("open");
    backup_revived(&mut repo, &src);
}
