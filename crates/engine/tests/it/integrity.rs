//! Any flipped byte in any repository file is detected: open or restore fails
//! with an integrity error, never returns wrong data, never panics. The one
//! exception is a padded pack's padding (format 3): filler nothing reads,
//! so a flip there changes no result, and `check --read-data` (which hashes
//! every pack against its name) reports it.

use std::path::Path;
use std::sync::Arc;

use cairn::{NoProgress, RecoveryKey, Repository, SnapshotId};
use cairn_store::{MemoryStore, Namespace, ObjectName, Store};
use proptest::prelude::*;

use crate::support::*;

struct Fixture {
    _dir: tempfile::TempDir,
    src: std::path::PathBuf,
    scratch: std::path::PathBuf,
    store: Arc<MemoryStore>,
    key: RecoveryKey,
    snapshots: Vec<SnapshotId>,
    objects: Vec<ObjectName>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    generate_tree(&src, 40, 0, 21);
    write(&src.join("media.bin"), &Rng(22).bytes(2 * 1024 * 1024));
    write(
        &src.join("text.txt"),
        "compressible text\n".repeat(40_000).as_bytes(),
    );
    let (store, mut repo, key) = memory_repo();
    let mut snapshots = vec![backup(&mut repo, &src).snapshot_id];
    write(&src.join("day2.txt"), b"second day");
    snapshots.push(backup(&mut repo, &src).snapshot_id);
    let mut objects = Vec::new();
    for ns in Namespace::ALL {
        for name in store.list(ns).expect("list") {
            objects.push(ObjectName::new(ns, &name).expect("name"));
        }
    }
    let scratch = dir.path().join("scratch");
    Fixture {
        _dir: dir,
        src,
        scratch,
        store,
        key,
        snapshots,
        objects,
    }
}

/// Opens the repository and restores every snapshot. `Ok` only if everything
/// succeeded and matched the source; the final snapshot must equal `src`. A
/// restore that skipped damaged entries is an integrity error, and every file
/// it did write must still match the source.
fn open_and_restore_all(f: &Fixture) -> Result<(), cairn::Error> {
    // A fresh target every time: a failed restore leaves its partial output.
    static N_RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let repo = Repository::open(f.store.clone(), &f.key)?;
    for id in &f.snapshots {
        let run = N_RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let target = f.scratch.join(format!("run{run}"));
        let restored = repo.restore(id, None, &target, &NoProgress);
        if let Ok(report) = &restored
            && !report.is_complete()
        {
            if target.join("src").exists() {
                assert_files_match_source(&f.src, &target.join("src"));
            }
            make_writable_and_remove(&target).expect("cleanup");
            return Err(cairn::Error::Integrity {
                object: format!("{:?}", report.failed),
            });
        }
        if restored.is_err() {
            make_writable_and_remove(&target).expect("cleanup");
        }
        restored?;
        if Some(id) == f.snapshots.last() {
            assert_same_tree(&f.src, &target.join("src"));
        }
        make_writable_and_remove(&target).expect("cleanup");
    }
    Ok(())
}

fn check_flip(f: &Fixture, object: &ObjectName, pos: usize, bit: u8) {
    let size = f.store.size(object).expect("size") as usize;
    let at = pos % size;
    f.store
        .tamper(object, |b| b[at] ^= 1 << bit)
        .expect("tamper");
    let result = open_and_restore_all(f);
    f.store
        .tamper(object, |b| b[at] ^= 1 << bit)
        .expect("untamper");
    let filler = result.is_ok() && {
        // Restores were exact; only a pack's padding may be flipped so,
        // and reading every byte must then find it.
        let repo = Repository::open(f.store.clone(), &f.key).expect("open");
        f.store
            .tamper(object, |b| b[at] ^= 1 << bit)
            .expect("tamper");
        let report = repo
            .check(
                &cairn::CheckOptions {
                    read_data: cairn::ReadData::All,
                },
                &NoProgress,
            )
            .expect("check runs");
        f.store
            .tamper(object, |b| b[at] ^= 1 << bit)
            .expect("untamper");
        object.namespace() == Namespace::Packs && !report.is_ok()
    };
    match result {
        Ok(()) if filler => {}
        Ok(()) => panic!("flip of bit {bit} at {at} in {object} went unnoticed"),
        Err(e) => assert!(
            e.is_integrity(),
            "flip at {at} in {object}: unexpected error {e}"
        ),
    }
}

#[test]
fn the_untampered_fixture_restores() {
    let f = fixture();
    open_and_restore_all(&f).expect("clean repository restores");
    let kinds: std::collections::BTreeSet<_> = f.objects.iter().map(|o| o.namespace()).collect();
    assert_eq!(kinds.len(), 5, "every file kind is present");
}

#[test]
fn first_middle_and_last_byte_of_every_file() {
    let f = fixture();
    let mut run = 0;
    for object in &f.objects {
        let size = f.store.size(object).expect("size") as usize;
        for pos in [0, 1, size / 2, size - 13, size - 1] {
            run += 1;
            check_flip(&f, object, pos, (run % 8) as u8);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]
    #[test]
    fn random_flips_in_every_file_kind(which in any::<prop::sample::Index>(), pos in any::<usize>(), bit in 0u8..8) {
        thread_local!(static FIXTURE: Fixture = fixture());
        FIXTURE.with(|f| {
            let object = which.get(&f.objects);
            check_flip(f, object, pos, bit);
        });
    }
}

#[test]
fn truncated_and_deleted_objects_are_detected() {
    let f = fixture();
    let pack = f
        .objects
        .iter()
        .find(|o| o.namespace() == Namespace::Packs)
        .expect("a pack");
    let original = f.store.get(pack, u64::MAX).expect("get");
    f.store
        .tamper(pack, |b| b.truncate(b.len() / 2))
        .expect("truncate");
    let err = open_and_restore_all(&f).unwrap_err();
    assert!(err.is_integrity(), "{err}");
    f.store.delete(pack).expect("delete");
    let err = open_and_restore_all(&f).unwrap_err();
    assert!(err.is_integrity(), "{err}");
    f.store.put(pack, &original).expect("put back");
    open_and_restore_all(&f).expect("repaired");
    let _ = Path::new("");
}
