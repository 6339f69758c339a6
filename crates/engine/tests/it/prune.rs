//! forget and prune: space comes back, nothing a remaining snapshot needs
//! goes, and a prune that fails at any write leaves a sound repository.

use std::sync::Arc;

use cairn::{
    CheckOptions, ForgetOptions, ForgetWhat, KeepPolicy, NoProgress, PruneOptions, ReadData,
    Repository, SnapshotId,
};
use cairn_store::{Fault, FaultyStore, MemoryStore, Namespace, Store};

use crate::history::*;
use crate::support::*;

fn forget_ids(repo: &Repository, ids: &[SnapshotId]) {
    let report = repo
        .forget(&ForgetOptions {
            what: ForgetWhat::Ids(ids.to_vec()),
            dry_run: false,
        })
        .expect("forget");
    assert_eq!(report.n_removed, ids.len());
}

#[test]
fn forgetting_half_of_twenty_days_and_pruning_leaves_what_a_fresh_repository_holds() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let (store, repo, _key, ids) = repo_with_days(scratch.path(), 20);
    let before = store_bytes(&*store);
    // Every other day goes.
    let gone: Vec<SnapshotId> = ids.iter().step_by(2).copied().collect();
    forget_ids(&repo, &gone);
    let report = repo
        .prune(&PruneOptions::default(), &NoProgress)
        .expect("prune");
    assert!(report.deferred.is_none(), "{report:?}");
    assert!(report.n_packs_deleted > 0, "{report:?}");
    let after = store_bytes(&*store);

    // A fresh repository holding only the remaining days, with the same
    // keys (its config and key slot copied), so that it cuts and names
    // chunks exactly as this one: what differs is what prune left.
    let fresh_store = Arc::new(MemoryStore::new());
    for ns in [Namespace::Config, Namespace::Keys] {
        for name in store.list(ns).expect("list") {
            let object = cairn_store::ObjectName::new(ns, &name).expect("name");
            let bytes = store.get(&object, 1 << 20).expect("get");
            fresh_store.put(&object, &bytes).expect("put");
        }
    }
    let mut fresh = Repository::open(fresh_store.clone(), &_key).expect("open fresh");
    let src = scratch.path().join("fresh-src");
    for d in (1..20).step_by(2) {
        backup_day(&mut fresh, &src, d);
    }
    let fresh_bytes = store_bytes(&*fresh_store);
    assert!(
        after as f64 <= fresh_bytes as f64 * 1.02,
        "after prune {after} bytes, fresh {fresh_bytes}, before {before}: {report:?}"
    );
    eprintln!("after {after} fresh {fresh_bytes} before {before}");
    assert!(after < before);

    // Sound, and every remaining day restores exactly.
    let reopened = Repository::open(store.clone(), &_key).expect("open");
    assert_sound(&reopened);
    for (d, id) in ids.iter().enumerate().skip(1).step_by(2) {
        assert_restores_day(&reopened, id, d as u64, scratch.path());
    }
    // Nothing is left for a second prune, and no lifecycle file remains.
    let again = reopened
        .prune(&PruneOptions::default(), &NoProgress)
        .expect("prune again");
    assert_eq!(again.n_packs_deleted, 0, "{again:?}");
    assert_eq!(again.n_blobs_copied, 0, "{again:?}");
    assert!(store.list(Namespace::Condemned).expect("list").is_empty());
    assert!(store.list(Namespace::Sessions).expect("list").is_empty());
}

#[test]
fn a_dry_run_changes_nothing_and_says_what_would_go() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let (store, repo, _key, ids) = repo_with_days(scratch.path(), 6);
    let report = repo
        .forget(&ForgetOptions {
            what: ForgetWhat::Policy(KeepPolicy {
                last: 2,
                ..KeepPolicy::default()
            }),
            dry_run: true,
        })
        .expect("forget");
    let going: Vec<SnapshotId> = report.removed().map(|d| d.id).collect();
    assert_eq!(going, ids[..4].to_vec());
    assert_eq!(report.n_removed, 0);
    assert_eq!(repo.snapshots().expect("list").len(), 6);
    forget_ids(&repo, &going);
    let before = store_bytes(&*store);
    let dry = repo
        .prune(
            &PruneOptions {
                dry_run: true,
                ..PruneOptions::default()
            },
            &NoProgress,
        )
        .expect("dry prune");
    assert!(dry.n_packs_deleted > 0);
    assert_eq!(store_bytes(&*store), before);
    assert!(store.list(Namespace::Sessions).expect("list").is_empty());
}

#[test]
fn an_empty_policy_is_refused_and_unknown_ids_are_errors() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let (_store, repo, _key, _ids) = repo_with_days(scratch.path(), 2);
    let empty = repo.forget(&ForgetOptions {
        what: ForgetWhat::Policy(KeepPolicy::default()),
        dry_run: false,
    });
    assert!(
        matches!(empty, Err(cairn::Error::InvalidInput(_))),
        "{empty:?}"
    );
    let unknown = repo.forget(&ForgetOptions {
        what: ForgetWhat::Ids(vec![SnapshotId::from_bytes([9; 32])]),
        dry_run: false,
    });
    assert!(matches!(unknown, Err(cairn::Error::SnapshotNotFound(_))));
    assert_eq!(repo.snapshots().expect("list").len(), 2);
}

#[test]
fn max_repack_bounds_the_bytes_copied_per_run() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let (_store, repo, _key, ids) = repo_with_days(scratch.path(), 10);
    forget_ids(&repo, &ids[..8]);
    let bounded = repo
        .prune(
            &PruneOptions {
                max_repack: Some(50 * 1024),
                ..PruneOptions::default()
            },
            &NoProgress,
        )
        .expect("prune");
    assert!(bounded.bytes_copied <= 50 * 1024, "{bounded:?}");
    let rest = repo
        .prune(&PruneOptions::default(), &NoProgress)
        .expect("prune");
    assert_sound(&repo);
    for (d, id) in ids.iter().enumerate().skip(8) {
        assert_restores_day(&repo, id, d as u64, scratch.path());
    }
    assert!(bounded.bytes_unused_left >= rest.bytes_unused_left);
}

/// The repository every fault run starts from: 8 days, the first 5 forgotten.
fn prepared() -> (
    tempfile::TempDir,
    MemoryStore,
    cairn::RecoveryKey,
    Vec<SnapshotId>,
) {
    let scratch = tempfile::tempdir().expect("tempdir");
    let (store, repo, key, ids) = repo_with_days(scratch.path(), 8);
    forget_ids(&repo, &ids[..5]);
    drop(repo);
    (scratch, store.duplicate(), key, ids)
}

#[test]
fn a_prune_failing_at_any_write_leaves_every_remaining_snapshot_restorable() {
    let (scratch, base, key, ids) = prepared();
    let mut n_failure_points = 0;
    for fail_at in 0.. {
        let store = Arc::new(FaultyStore::new(base.duplicate()));
        let repo = Repository::open(store.clone(), &key).expect("open");
        store.set_fault(Fault::WritesAfter(fail_at));
        let outcome = repo.prune(&PruneOptions::default(), &NoProgress);
        store.set_fault(Fault::None);
        drop(repo);
        // What the crash left: every remaining snapshot restores, and the
        // repository is sound; the next prune finishes the job.
        let repo = Repository::open(store.clone(), &key).expect("open after failure");
        for (d, id) in ids.iter().enumerate().skip(5) {
            assert_restores_day(&repo, id, d as u64, scratch.path());
        }
        assert_sound(&repo);
        if outcome.is_ok() {
            assert!(fail_at > 5, "a prune needs several writes");
            break;
        }
        assert!(
            matches!(
                outcome,
                Err(cairn::Error::Store(cairn_store::Error::Injected))
            ),
            "{outcome:?}"
        );
        n_failure_points += 1;
        let finish = repo
            .prune(&PruneOptions::default(), &NoProgress)
            .expect("finish");
        assert!(finish.deferred.is_none(), "{finish:?}");
        assert_sound(&repo);
        for (d, id) in ids.iter().enumerate().skip(5) {
            assert_restores_day(&repo, id, d as u64, scratch.path());
        }
        assert!(store.list(Namespace::Condemned).expect("list").is_empty());
        let left = repo
            .prune(&PruneOptions::default(), &NoProgress)
            .expect("third");
        assert_eq!(left.n_packs_deleted, 0, "fail_at {fail_at}: {left:?}");
    }
    assert!(n_failure_points > 5);
}

#[test]
fn damaged_lifecycle_files_never_make_prune_delete_what_is_needed() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let (store, repo, key, ids) = repo_with_days(scratch.path(), 6);
    forget_ids(&repo, &ids[..3]);
    // A junk session marker and a junk condemnation record, as a hostile
    // server could plant: they must not block prune nor steer it.
    let junk = |ns, name: &str| {
        store
            .put(
                &cairn_store::ObjectName::new(ns, name).expect("name"),
                b"junk",
            )
            .expect("plant");
    };
    junk(Namespace::Sessions, "0123456789abcdef0123456789abcdef");
    junk(Namespace::Condemned, &"ab".repeat(32));
    // A damaged index file: prune refuses and deletes nothing.
    let index_files = store.list(Namespace::Index).expect("list");
    let victim = cairn_store::ObjectName::new(Namespace::Index, &index_files[0]).expect("name");
    let original = store.get(&victim, 1 << 30).expect("get");
    store.tamper(&victim, |b| b[20] ^= 1).expect("tamper");
    let repo = Repository::open(store.clone(), &key).expect("open");
    let before = store.list(Namespace::Packs).expect("list");
    let refused = repo.prune(&PruneOptions::default(), &NoProgress);
    assert!(
        matches!(refused, Err(cairn::Error::PruneUnsafe(_))),
        "{refused:?}"
    );
    assert_eq!(store.list(Namespace::Packs).expect("list"), before);
    assert!(store.list(Namespace::Sessions).expect("list").len() == 1);
    // Repaired, it runs, warns about the junk and removes it.
    store
        .tamper(&victim, |b| *b = original.clone())
        .expect("restore");
    let repo = Repository::open(store.clone(), &key).expect("open");
    let report = repo
        .prune(&PruneOptions::default(), &NoProgress)
        .expect("prune");
    assert!(
        report.deferred.is_none(),
        "a junk marker protects nothing: {report:?}"
    );
    assert!(report.n_packs_deleted > 0);
    assert_eq!(report.warnings.len(), 2, "{:?}", report.warnings);
    assert!(store.list(Namespace::Sessions).expect("list").is_empty());
    assert!(store.list(Namespace::Condemned).expect("list").is_empty());
    assert_sound(&repo);
    for (d, id) in ids.iter().enumerate().skip(3) {
        assert_restores_day(&repo, id, d as u64, scratch.path());
    }
}

#[test]
fn an_unreadable_snapshot_stops_prune_until_it_is_forgotten_by_id() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let (store, repo, key, ids) = repo_with_days(scratch.path(), 4);
    let victim =
        cairn_store::ObjectName::new(Namespace::Snapshots, &ids[0].to_hex()).expect("name");
    store.tamper(&victim, |b| b[30] ^= 1).expect("tamper");
    drop(repo);
    let repo = Repository::open(store.clone(), &key).expect("open");
    let refused = repo.prune(&PruneOptions::default(), &NoProgress);
    assert!(
        matches!(refused, Err(cairn::Error::PruneUnsafe(_))),
        "{refused:?}"
    );
    forget_ids(&repo, &ids[..1]);
    repo.prune(&PruneOptions::default(), &NoProgress)
        .expect("prune");
    assert_sound(&repo);
    for (d, id) in ids.iter().enumerate().skip(1) {
        assert_restores_day(&repo, id, d as u64, scratch.path());
    }
}

#[test]
fn packs_whose_index_files_were_lost_are_adopted_not_deleted() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let (store, repo, key, ids) = repo_with_days(scratch.path(), 5);
    forget_ids(&repo, &ids[..2]);
    drop(repo);
    // The server loses every index file: every pack is named by nothing,
    // though the remaining snapshots need most of them.
    for name in store.list(Namespace::Index).expect("list") {
        store
            .delete(&cairn_store::ObjectName::new(Namespace::Index, &name).expect("name"))
            .expect("lose it");
    }
    let repo = Repository::open(store.clone(), &key).expect("open");
    let report = repo
        .prune(&PruneOptions::default(), &NoProgress)
        .expect("prune");
    assert!(report.n_packs_adopted > 0, "{report:?}");
    assert!(
        report.n_packs_unindexed > 0,
        "forgotten days' packs go: {report:?}"
    );
    let repo = Repository::open(store.clone(), &key).expect("open");
    assert_sound(&repo);
    for (d, id) in ids.iter().enumerate().skip(2) {
        assert_restores_day(&repo, id, d as u64, scratch.path());
    }
}

/// Prune's store traffic for the same removal in a repository of `n_days`.
fn prune_cost(
    scratch: &std::path::Path,
    n_days: u64,
) -> (cairn_store::Counts, cairn::PruneReport, u64) {
    let store = Arc::new(cairn_store::CountingStore::new(MemoryStore::new()));
    let (mut repo, key) = Repository::init(store.clone(), &small_packs()).expect("init");
    let src = scratch.join(format!("days-{n_days}")).join("chat");
    let ids: Vec<SnapshotId> = (0..n_days)
        .map(|d| backup_day(&mut repo, &src, d))
        .collect();
    forget_ids(&repo, &ids[..2]);
    let repo = Repository::open(store.clone(), &key).expect("open");
    let repo_bytes = store_bytes(store.inner());
    store.reset();
    let report = repo
        .prune(&PruneOptions::default(), &NoProgress)
        .expect("prune");
    (store.counts(), report, repo_bytes)
}

#[test]
fn what_prune_moves_grows_with_what_is_removed_not_with_the_repository() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let (small, small_report, _) = prune_cost(scratch.path(), 6);
    let (large, large_report, large_bytes) = prune_cost(scratch.path(), 24);
    // Prune reads every snapshot and index file, each at least 4 KiB once
    // padded (format 3): in this small repository that is a sizeable
    // share, and still far from reading it all.
    assert!(
        large.bytes_read + large.bytes_written < large_bytes / 3,
        "{large:?} of {large_bytes} bytes"
    );
    // The same two days go from a repository four times as large: the
    // data deleted, copied and written is the same within packing noise
    // (each repository has its own keys, so its own chunks and packs; a
    // repacked pack more or less is 128 KiB), far below the 4× growth.
    let pack = f64::from(small_packs().pack_target_size);
    let close = |a: u64, b: u64| (a as f64) <= (b as f64) * 1.5 + 3.0 * pack;
    assert!(
        close(large_report.bytes_deleted, small_report.bytes_deleted),
        "{small_report:?} {large_report:?}"
    );
    assert!(
        close(large.bytes_written, small.bytes_written),
        "written: {small:?} {large:?}"
    );
    assert!(
        close(large.bytes_read, small.bytes_read),
        "read: {small:?} {large:?}"
    );
    assert!(close(large.deletes, small.deletes), "{small:?} {large:?}");
    eprintln!("prune cost, 6 days: {small:?}\nprune cost, 24 days: {large:?}");
}

#[test]
fn read_data_subset_reads_a_share_of_the_packs_and_finds_damage_in_it() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let (store, repo, _key, _ids) = repo_with_days(scratch.path(), 8);
    let check = |read_data| {
        repo.check(&CheckOptions { read_data }, &NoProgress)
            .expect("check")
    };
    let all = check(ReadData::All);
    assert_eq!(all.n_packs_read, all.n_packs);
    let none = check(ReadData::None);
    assert_eq!(none.n_packs_read, 0);
    let mut read = 0;
    for _ in 0..20 {
        read += check(ReadData::Share(0.25)).n_packs_read;
    }
    // About a quarter each time, a different quarter each run.
    let mean = read as f64 / 20.0;
    let expected = all.n_packs as f64 * 0.25;
    assert!(
        (mean - expected).abs() < expected * 0.5 + 1.0,
        "{mean} packs read on average, {} packs",
        all.n_packs
    );
    // Damage in a blob's bytes is found by some run of a full share.
    let pack = store.list(Namespace::Packs).expect("list")[0].clone();
    let object = cairn_store::ObjectName::new(Namespace::Packs, &pack).expect("name");
    store.tamper(&object, |b| b[40] ^= 1).expect("tamper");
    assert!(!check(ReadData::Share(1.0)).is_ok());
}

#[test]
fn index_files_stay_few_after_many_daily_backups() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let (store, repo, key, ids) = repo_with_days(scratch.path(), 45);
    drop(repo);
    let n_index_files = store.list(Namespace::Index).expect("list").len();
    assert!(
        n_index_files <= 34,
        "{n_index_files} index files after 45 backups"
    );
    assert!(store.list(Namespace::Condemned).expect("list").is_empty());
    let repo = Repository::open(store.clone(), &key).expect("open");
    assert!(repo.take_warnings().is_empty());
    assert_sound(&repo);
    for d in [0, 20, 33, 44] {
        assert_restores_day(&repo, &ids[d], d as u64, scratch.path());
    }
    // Prune after merges works as before.
    forget_ids(&repo, &ids[..40]);
    repo.prune(&PruneOptions::default(), &NoProgress)
        .expect("prune");
    let repo = Repository::open(store.clone(), &key).expect("open");
    assert_sound(&repo);
    assert_restores_day(&repo, &ids[44], 44, scratch.path());
}

#[test]
fn a_backup_that_merges_index_files_may_fail_at_any_write() {
    let scratch = tempfile::tempdir().expect("tempdir");
    // 32 index files: the next backup's is one too many.
    let (store, repo, key, ids) = repo_with_days(scratch.path(), 32);
    drop(repo);
    assert_eq!(store.list(Namespace::Index).expect("list").len(), 32);
    let base = store.duplicate();
    let src = scratch.path().join("again").join("chat");
    let mut n_failures = 0;
    for fail_at in 0.. {
        let store = Arc::new(FaultyStore::new(base.duplicate()));
        let mut repo = Repository::open(store.clone(), &key).expect("open");
        store.set_fault(Fault::WritesAfter(fail_at));
        make_day(&src, 33);
        let outcome = repo.backup(
            std::slice::from_ref(&src),
            &cairn::BackupOptions {
                host: "phone".into(),
                ..cairn::BackupOptions::default()
            },
            &NoProgress,
        );
        store.set_fault(Fault::None);
        let repo = Repository::open(store.clone(), &key).expect("open");
        assert_sound(&repo);
        for d in [0, 31] {
            assert_restores_day(&repo, &ids[d], d as u64, scratch.path());
        }
        match outcome {
            // The merge failed after the commit: a warning, not a failure.
            Ok(report) if !report.warnings.is_empty() => n_failures += 1,
            Ok(_) if store.n_writes() >= fail_at => n_failures += 1,
            Ok(_) => {
                assert!(store.list(Namespace::Index).expect("list").len() < 5);
                break;
            }
            Err(_) => n_failures += 1,
        }
    }
    assert!(n_failures > 5);
}

/// Regression (second review): a superseding index file was built from the
/// process's view, which forgets the entries of a pack it once found
/// damaged: a flaky read made prune drop every entry of live packs.
#[test]
fn a_pack_distrusted_once_keeps_its_entries_through_prune() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let (store, repo, key, ids) = repo_with_days(scratch.path(), 8);
    forget_ids(&repo, &ids[..4]);
    drop(repo);
    let repo = Repository::open(store.clone(), &key).expect("open");
    // Every data pack's trailer reads wrong once (the tree packs are the
    // small ones): this process distrusts them all.
    let packs: Vec<String> = store
        .list(Namespace::Packs)
        .expect("list")
        .into_iter()
        .filter(|name| {
            let object = cairn_store::ObjectName::new(Namespace::Packs, name).expect("name");
            store.size(&object).expect("size") > 16 * 1024
        })
        .collect();
    let trailer_damage = |b: &mut Vec<u8>| {
        let n = b.len();
        b[n - 1] ^= 0xff;
    };
    for name in &packs {
        let object = cairn_store::ObjectName::new(Namespace::Packs, name).expect("name");
        store.tamper(&object, trailer_damage).expect("tamper");
    }
    let damaged = repo
        .check(&CheckOptions::default(), &NoProgress)
        .expect("check");
    assert!(!damaged.is_ok());
    for name in &packs {
        let object = cairn_store::ObjectName::new(Namespace::Packs, name).expect("name");
        store.tamper(&object, trailer_damage).expect("repair");
    }
    // The same process prunes: nothing it forgot may be lost.
    repo.prune(
        &PruneOptions {
            max_unused: 0.0,
            ..PruneOptions::default()
        },
        &NoProgress,
    )
    .expect("prune");
    let repo = Repository::open(store.clone(), &key).expect("open");
    assert_sound(&repo);
    for (d, id) in ids.iter().enumerate().skip(4) {
        assert_restores_day(&repo, id, d as u64, scratch.path());
    }
}

/// Regression (second review): a repack candidate with a damaged header
/// stopped every prune.
#[test]
fn a_repack_candidate_with_a_damaged_header_is_left_alone() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let (store, repo, key, ids) = repo_with_days(scratch.path(), 8);
    forget_ids(&repo, &ids[..4]);
    drop(repo);
    let plan = Repository::open(store.clone(), &key)
        .expect("open")
        .prune(
            &PruneOptions {
                max_unused: 0.0,
                dry_run: true,
                ..PruneOptions::default()
            },
            &NoProgress,
        )
        .expect("plan");
    assert!(plan.n_packs_repacked > 0, "{plan:?}");
    // Damage the data packs' trailers (tree packs are the small ones, and
    // marking needs them): whatever is repacked has no readable header.
    let damage = |b: &mut Vec<u8>| {
        let n = b.len();
        b[n - 1] ^= 0xff;
    };
    let mut damaged = Vec::new();
    for name in store.list(Namespace::Packs).expect("list") {
        let object = cairn_store::ObjectName::new(Namespace::Packs, &name).expect("name");
        if store.size(&object).expect("size") > 16 * 1024 {
            store.tamper(&object, damage).expect("tamper");
            damaged.push(object);
        }
    }
    let repo = Repository::open(store.clone(), &key).expect("open");
    let report = repo
        .prune(
            &PruneOptions {
                max_unused: 0.0,
                ..PruneOptions::default()
            },
            &NoProgress,
        )
        .expect("prune completes");
    assert!(
        report.warnings.iter().any(|w| w.contains("damaged header")),
        "{report:?}"
    );
    // Repaired, what is left holds every remaining day.
    for object in &damaged {
        if store.size(object).is_ok() {
            store.tamper(object, damage).expect("repair");
        }
    }
    let repo = Repository::open(store.clone(), &key).expect("open");
    assert_sound(&repo);
    for (d, id) in ids.iter().enumerate().skip(4) {
        assert_restores_day(&repo, id, d as u64, scratch.path());
    }
}

#[test]
fn a_dry_run_prune_makes_no_write_at_all() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(cairn_store::CountingStore::new(MemoryStore::new()));
    let (mut repo, _key) = Repository::init(store.clone(), &small_packs()).expect("init");
    let src = scratch.path().join("chat");
    let ids: Vec<SnapshotId> = (0..5).map(|d| backup_day(&mut repo, &src, d)).collect();
    forget_ids(&repo, &ids[..3]);
    store.reset();
    let plan = repo
        .prune(
            &PruneOptions {
                dry_run: true,
                max_unused: 0.0,
                ..PruneOptions::default()
            },
            &NoProgress,
        )
        .expect("dry run");
    assert!(plan.n_packs_deleted > 0, "{plan:?}");
    let counts = store.counts();
    assert_eq!((counts.puts, counts.deletes), (0, 0), "{counts:?}");
}
