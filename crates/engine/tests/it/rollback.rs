//! Rollback and withholding (issue 10): a server that serves an older
//! history than a device saw is refused, by every listing; a new device,
//! and a user who restored the repository on purpose, go on.

use std::sync::Arc;

use cairn::{
    Error, ForgetOptions, ForgetWhat, NewestSeen, NoProgress, OpenOptions, RecoveryKey, Repository,
    SnapshotId,
};
use cairn_store::{MemoryStore, Namespace, ObjectName, Store};

use crate::support::*;

/// A repository with three daily backups, the device's handle and its key.
fn three_days(
    dir: &std::path::Path,
) -> (Arc<MemoryStore>, Repository, RecoveryKey, Vec<SnapshotId>) {
    let src = dir.join("src");
    let (store, mut repo, key) = memory_repo();
    let mut ids = Vec::new();
    for day in 0..3u64 {
        write(
            &src.join(format!("day{day}.txt")),
            format!("day {day}").as_bytes(),
        );
        ids.push(backup(&mut repo, &src).snapshot_id);
    }
    (store, repo, key, ids)
}

/// The server deletes a snapshot file.
fn delete_snapshot(store: &MemoryStore, id: &SnapshotId) {
    store
        .delete(&ObjectName::new(Namespace::Snapshots, &id.to_hex()).expect("name"))
        .expect("delete");
}

fn open_as_seen(
    store: Arc<MemoryStore>,
    key: &RecoveryKey,
    seen: Option<NewestSeen>,
) -> Repository {
    let options = OpenOptions {
        newest_seen: seen,
        ..OpenOptions::default()
    };
    Repository::open_with(store, key, &options).expect("open")
}

fn is_rollback(result: Result<impl std::fmt::Debug, Error>) -> bool {
    match result {
        Err(e @ Error::Rollback { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("went back in time") && text.contains("#3"),
                "{text}"
            );
            true
        }
        other => panic!("expected a rollback error, got {other:?}"),
    }
}

/// Each snapshot seals one more than the largest sequence number its backup
/// saw, and that snapshot's ID; the device's mark follows.
#[test]
fn snapshots_carry_their_place_in_the_history() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_store, repo, _key, ids) = three_days(dir.path());
    for (i, id) in ids.iter().enumerate() {
        let lineage = repo
            .load_snapshot(id)
            .expect("load")
            .lineage
            .expect("format 3");
        assert_eq!(lineage.sequence, i as u64 + 1);
        assert_eq!(lineage.parent, i.checked_sub(1).map(|p| ids[p]));
    }
    assert_eq!(
        repo.newest_seen(),
        Some(NewestSeen {
            sequence: 3,
            snapshot: ids[2]
        })
    );
}

/// The server deletes the newest snapshot: listing, backing up and
/// restoring `latest` are refused on the device that saw it; a new device,
/// which saw nothing, reads what is there.
#[test]
fn a_deleted_newest_snapshot_is_refused_everywhere() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, repo, key, ids) = three_days(dir.path());
    let seen = repo.newest_seen();
    drop(repo);
    delete_snapshot(&store, &ids[2]);
    let mut device = open_as_seen(store.clone(), &key, seen);
    assert!(is_rollback(device.snapshots()));
    assert!(is_rollback(device.find_snapshot("latest")));
    let src = dir.path().join("src");
    assert!(is_rollback(device.backup(&[src], &options(), &NoProgress)));
    assert_eq!(store.list(Namespace::Snapshots).expect("list").len(), 2);
    let new_device = open_as_seen(store, &key, None);
    assert_eq!(new_device.snapshots().expect("list").len(), 2);
    assert_eq!(new_device.newest_seen().map(|n| n.snapshot), Some(ids[1]));
}

/// The server puts back an older copy of the whole repository.
#[test]
fn an_older_copy_of_the_repository_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    let (store, mut repo, key, _ids) = three_days(dir.path());
    let older = Arc::new(store.duplicate());
    write(&src.join("day3.txt"), b"day 3");
    backup(&mut repo, &src);
    let seen = repo.newest_seen();
    assert_eq!(seen.map(|n| n.sequence), Some(4));
    let device = open_as_seen(older, &key, seen);
    match device.snapshots() {
        Err(e @ Error::Rollback { .. }) => assert!(e.to_string().contains("#4"), "{e}"),
        other => panic!("expected a rollback error, got {other:?}"),
    }
}

/// A user who restored the repository on purpose accepts it: the served
/// history becomes the newest seen, and the next backup continues it.
#[test]
fn accepting_a_rollback_continues_from_what_is_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, repo, key, ids) = three_days(dir.path());
    let seen = repo.newest_seen();
    drop(repo);
    delete_snapshot(&store, &ids[2]);
    let options = OpenOptions {
        newest_seen: seen,
        accept_rollback: true,
        ..OpenOptions::default()
    };
    let mut repo = Repository::open_with(store.clone(), &key, &options).expect("open");
    assert_eq!(repo.snapshots().expect("accepted").len(), 2);
    assert_eq!(repo.newest_seen().map(|n| n.snapshot), Some(ids[1]));
    let next = backup(&mut repo, &dir.path().join("src"));
    let lineage = repo
        .load_snapshot(&next.snapshot_id)
        .expect("load")
        .lineage
        .expect("lineage");
    assert_eq!((lineage.sequence, lineage.parent), (3, Some(ids[1])));
    // From now on the new history is the one to keep.
    let device = open_as_seen(store, &key, repo.newest_seen());
    assert_eq!(device.snapshots().expect("list").len(), 3);
}

/// Forgetting the newest snapshot on this device is not a rollback.
#[test]
fn forgetting_the_newest_here_is_not_a_rollback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, repo, key, ids) = three_days(dir.path());
    repo.forget(&ForgetOptions {
        what: ForgetWhat::Ids(vec![ids[2]]),
        dry_run: false,
    })
    .expect("forget");
    assert_eq!(repo.snapshots().expect("list").len(), 2);
    let device = open_as_seen(store, &key, repo.newest_seen());
    assert_eq!(device.snapshots().expect("list").len(), 2);
}

/// With a state directory the engine keeps the mark itself, across opens;
/// a mark it did not write (no valid tag) is ignored.
#[test]
fn the_state_directory_keeps_the_mark_between_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let options = OpenOptions {
        state_dir: Some(state.clone()),
        ..OpenOptions::default()
    };
    let (store, repo, key, ids) = three_days(dir.path());
    // The first device run that keeps state: it lists, so it marks #3.
    drop(repo);
    let repo = Repository::open_with(store.clone(), &key, &options).expect("open");
    assert_eq!(repo.snapshots().expect("list").len(), 3);
    drop(repo);
    delete_snapshot(&store, &ids[2]);
    let repo = Repository::open_with(store.clone(), &key, &options).expect("open");
    assert!(is_rollback(repo.snapshots()));
    drop(repo);
    // A planted mark is not believed: the check is off, not fooled.
    let mark = std::fs::read_dir(&state)
        .expect("state")
        .map(|e| e.expect("entry").path().join("newest-seen"))
        .find(|p| p.exists())
        .expect("a mark was kept");
    let mut planted = std::fs::read(&mark).expect("read");
    planted[40] ^= 1;
    std::fs::write(&mark, &planted).expect("plant");
    let repo = Repository::open_with(store, &key, &options).expect("open");
    assert_eq!(repo.snapshots().expect("list").len(), 2);
}
