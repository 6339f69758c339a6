//! Repair after damage: `repair_index` drops what cannot be had from the
//! index (so backups store it again) and indexes orphaned packs again;
//! `repair_snapshots` rewrites snapshots so their intact files restore and
//! the damaged ones are marked.

use std::fs;
use std::sync::Arc;

use cairn::{CheckOptions, InitOptions, NoProgress, ReadData, Repository};
use cairn_store::{MemoryStore, Namespace, ObjectName, Store};

use crate::support::*;

/// A repository with small packs (so that one lost pack costs one file), a
/// source of several files, and one snapshot of it.
fn damaged_setup(
    dir: &std::path::Path,
) -> (
    Arc<MemoryStore>,
    Repository,
    std::path::PathBuf,
    cairn::RecoveryKey,
) {
    let src = dir.join("src");
    for i in 0..6u64 {
        // Below the smallest chunk: one chunk per file, whatever the key.
        write(&src.join(format!("f{i}.bin")), &Rng(i).bytes(200_000));
    }
    write(&src.join("sub/note.txt"), b"a small note");
    let store = Arc::new(MemoryStore::new());
    let init = InitOptions {
        pack_target_size: 64 * 1024,
        ..InitOptions::default()
    };
    let (mut repo, key) = Repository::init(store.clone(), &init).expect("init");
    backup(&mut repo, &src);
    (store, repo, src, key)
}

fn check(repo: &Repository, read_data: ReadData) -> cairn::CheckReport {
    repo.check(&CheckOptions { read_data }, &NoProgress)
        .expect("check runs")
}

/// The whole sequence after a pack vanished: check names it; repair index
/// drops its blobs; repair snapshots marks the files that needed them and
/// keeps the rest restorable; check passes; the next backup stores the lost
/// chunks again and restores whole.
#[test]
fn a_lost_pack_is_repaired_end_to_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, mut repo, src, _key) = damaged_setup(dir.path());
    let lost = packs_by_size(&store).remove(0);
    store.delete(&lost).expect("delete");
    assert!(!check(&repo, ReadData::None).is_ok());

    let fixed = repo
        .repair_index(ReadData::None, &NoProgress)
        .expect("repair index");
    assert_eq!(fixed.n_packs_missing, 1, "{fixed:?}");
    assert!(
        fixed.n_blobs_dropped > 0 && fixed.skipped.is_none(),
        "{fixed:?}"
    );
    // The index is sound now; the snapshot still needs what is gone.
    let after = check(&repo, ReadData::None);
    assert!(
        after
            .problems
            .iter()
            .all(|p| p.object.starts_with("snapshot")),
        "{:?}",
        after.problems
    );
    assert!(!after.is_ok());

    let rewritten = repo
        .repair_snapshots(true, &NoProgress)
        .expect("repair snapshots");
    assert_eq!(rewritten.rewritten.len(), 1, "{rewritten:?}");
    assert_eq!(rewritten.n_forgotten, 1);
    assert!(rewritten.n_files_damaged >= 1, "{rewritten:?}");
    let sound = check(&repo, ReadData::All);
    assert!(sound.is_ok(), "{:?}", sound.problems);
    let snapshots = repo.snapshots().expect("snapshots");
    assert_eq!(snapshots.len(), 1);
    assert!(snapshots[0].1.tags.iter().any(|t| t == "repaired"));
    let out = restore(&repo, &snapshots[0].0, &dir.path().join("out")).expect("restores");
    let mut n_damaged = 0;
    for relative in files_below(&out.join("src")) {
        let name = relative.to_str().expect("utf-8");
        if let Some(original) = name.strip_suffix(".damaged") {
            n_damaged += 1;
            assert!(src.join(original).exists(), "{name}");
        } else {
            assert_eq!(
                fs::read(out.join("src").join(&relative)).expect("read"),
                fs::read(src.join(&relative)).expect("read"),
                "{name} is intact"
            );
        }
    }
    assert_eq!(n_damaged, rewritten.n_files_damaged);

    // The next backup stores the lost chunks again and restores whole.
    let report = repo
        .backup(std::slice::from_ref(&src), &options(), &NoProgress)
        .expect("backup");
    assert!(report.summary.bytes_new >= 64 * 1024, "{report:?}");
    let again = restore(&repo, &report.snapshot_id, &dir.path().join("again")).expect("restore");
    assert_same_tree(&src, &again.join("src"));
    assert!(check(&repo, ReadData::All).is_ok());
}

/// A blob whose bytes fail authentication is found by reading (`read_data`)
/// and dropped; an unreadable index file is replaced and the packs it named
/// are indexed again from their headers.
#[test]
fn damaged_blobs_and_unreadable_index_files_are_repaired() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _repo, src, key) = damaged_setup(dir.path());
    // Flip a byte in the middle of the largest pack (inside a blob).
    let pack = packs_by_size(&store).remove(0);
    let mut bytes = store.get(&pack, u64::MAX).expect("get");
    let middle = bytes.len() / 3;
    bytes[middle] ^= 0x40;
    store.delete(&pack).expect("delete");
    store.put(&pack, &bytes).expect("put");
    // And replace the index file with garbage.
    let index_name = store.list(Namespace::Index).expect("list").remove(0);
    let index = ObjectName::new(Namespace::Index, &index_name).expect("name");
    store.delete(&index).expect("delete");
    store.put(&index, b"not an index file").expect("put");

    // A new process opens it (the unreadable index file is skipped).
    let mut repo = Repository::open(store.clone(), &key).expect("open");
    assert!(!check(&repo, ReadData::All).is_ok());
    let fixed = repo
        .repair_index(ReadData::All, &NoProgress)
        .expect("repair");
    assert_eq!(fixed.n_index_files_replaced, 1, "{fixed:?}");
    assert!(fixed.n_packs_adopted > 1, "{fixed:?}");
    assert!(fixed.n_blobs_dropped >= 1, "{fixed:?}");
    let rewritten = repo
        .repair_snapshots(false, &NoProgress)
        .expect("repair snapshots");
    assert_eq!(rewritten.rewritten.len(), 1);
    assert_eq!(rewritten.n_forgotten, 0, "originals stay without `forget`");
    let (_, repaired) = rewritten.rewritten[0];
    let out = restore(&repo, &repaired, &dir.path().join("out")).expect("restores");
    let damaged: Vec<_> = fs::read_dir(out.join("src"))
        .expect("dir")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .filter(|n| n.ends_with(".damaged"))
        .collect();
    assert_eq!(
        damaged.len(),
        1,
        "one file needed the damaged blob: {damaged:?}"
    );
    for name in fs::read_dir(&src)
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
    {
        let restored = out.join("src").join(&name);
        if restored.is_file() {
            assert_eq!(
                fs::read(&restored).expect("read"),
                fs::read(src.join(&name)).expect("read")
            );
        }
    }
}

/// Every regular file below `root`, as paths relative to it.
fn files_below(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![std::path::PathBuf::new()];
    while let Some(relative) = stack.pop() {
        for entry in fs::read_dir(root.join(&relative)).expect("dir") {
            let entry = entry.expect("entry");
            let path = relative.join(entry.file_name());
            if entry.file_type().expect("type").is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// A repair failing at any write leaves the repository no worse: the
/// intact files still restore, and the repair run again finishes the job.
#[test]
fn a_repair_failing_at_any_write_loses_nothing_and_can_be_run_again() {
    use cairn_store::{Fault, FaultyStore};
    let dir = tempfile::tempdir().expect("tempdir");
    let (base, repo, src, key) = damaged_setup(dir.path());
    drop(repo);
    let lost = packs_by_size(&base).remove(0);
    base.delete(&lost).expect("delete");
    let mut n_failures = 0;
    for fail_at in 0.. {
        let store = Arc::new(FaultyStore::new(base.duplicate()));
        let mut repo = Repository::open(store.clone(), &key).expect("open");
        store.set_fault(Fault::WritesAfter(fail_at));
        let outcome = repo
            .repair_index(ReadData::None, &NoProgress)
            .and_then(|_| repo.repair_snapshots(true, &NoProgress));
        store.set_fault(Fault::None);
        let done = outcome.is_ok();
        if !done {
            n_failures += 1;
        }
        let mut repo = Repository::open(store.clone(), &key).expect("open after failure");
        repo.repair_index(ReadData::None, &NoProgress)
            .expect("again");
        repo.repair_snapshots(true, &NoProgress).expect("again");
        assert!(store.list(Namespace::Condemned).expect("list").is_empty());
        let checked = check(&repo, ReadData::All);
        assert!(checked.is_ok(), "fail_at {fail_at}: {:?}", checked.problems);
        let snapshots = repo.snapshots().expect("snapshots");
        let out = dir.path().join(format!("out-{fail_at}"));
        let restored = restore(&repo, &snapshots[0].0, &out).expect("restores");
        let intact = files_below(&restored.join("src"))
            .into_iter()
            .filter(|p| !p.to_string_lossy().ends_with(".damaged"))
            .count();
        assert!(intact >= 5, "fail_at {fail_at}: {intact} intact files");
        fs::remove_dir_all(&out).expect("cleanup");
        if done {
            break;
        }
    }
    assert!(n_failures > 3, "the repair writes several objects");
    let _ = src;
}
