//! One damaged, missing or garbage object costs what depends on it, never the
//! repository: listing, stats, backups and unrelated restores go on, with a
//! warning that names the object (issue 6, item 6).

use cairn::{NoProgress, Repository};
use cairn_store::{MemoryStore, Namespace, ObjectName, Store};

use crate::support::*;

fn names(store: &MemoryStore, ns: Namespace) -> Vec<ObjectName> {
    store
        .list(ns)
        .expect("list")
        .into_iter()
        .map(|n| ObjectName::new(ns, &n).expect("name"))
        .collect()
}

fn flip_middle(store: &MemoryStore, name: &ObjectName) {
    store
        .tamper(name, |b| {
            let at = b.len() / 2;
            b[at] ^= 0x20;
        })
        .expect("tamper");
}

/// Regression: one damaged index file made every command fail; one garbage
/// file in `index/` made the repository unopenable.
#[test]
fn a_damaged_index_file_costs_only_its_own_entries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    write(&src.join("day1.bin"), &Rng(1).bytes(600_000));
    let (store, mut repo, key) = memory_repo();
    backup(&mut repo, &src);
    let first_index = names(&store, Namespace::Index);
    assert_eq!(first_index.len(), 1, "one index file per backup");
    write(&src.join("day2.bin"), &Rng(2).bytes(600_000));
    let second = backup(&mut repo, &src).snapshot_id;
    let damaged = first_index[0].clone();
    flip_middle(&store, &damaged);
    store
        .put(
            &ObjectName::new(Namespace::Index, "garbage").expect("name"),
            b"not an index file",
        )
        .expect("put");

    let mut repo = Repository::open(store.clone(), &key).expect("open despite the damage");
    let warnings = repo.take_warnings();
    assert!(
        warnings.iter().any(|w| w.contains(damaged.name())),
        "{warnings:?}"
    );
    assert!(
        warnings.iter().any(|w| w.contains("index/garbage")),
        "{warnings:?}"
    );
    assert_eq!(repo.snapshots().expect("list").len(), 2);
    repo.stats().expect("stats");
    // The blobs only the damaged file named look absent: a backup stores them
    // again, and its snapshot restores whole.
    let report = repo
        .backup(std::slice::from_ref(&src), &options(), &NoProgress)
        .expect("backup");
    assert!(report.n_blobs_new > 0, "{report:?}");
    let target = restore(&repo, &report.snapshot_id, &dir.path().join("a")).expect("restore");
    assert_same_tree(&src, &target.join("src"));
    // The second snapshot's own blobs were never in doubt.
    let listing = repo.list(&second, None).expect("list");
    assert!(listing.iter().any(|e| e.path == "src/day2.bin"));
}

/// Regression: one damaged snapshot file (even the oldest) broke `snapshots`,
/// `latest` and every plain backup; one garbage file in `snapshots/` made
/// every backup fail.
#[test]
fn a_damaged_snapshot_file_is_skipped_with_a_warning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    write(&src.join("a.txt"), b"first");
    let (store, mut repo, key) = memory_repo();
    let first = backup(&mut repo, &src).snapshot_id;
    write(&src.join("b.txt"), b"second");
    let second = backup(&mut repo, &src).snapshot_id;
    let damaged = ObjectName::new(Namespace::Snapshots, &first.to_hex()).expect("name");
    flip_middle(&store, &damaged);
    store
        .put(
            &ObjectName::new(Namespace::Snapshots, "garbage").expect("name"),
            b"junk",
        )
        .expect("put");
    // Larger than any snapshot may be: refused without being read whole.
    store
        .put(
            &ObjectName::new(Namespace::Snapshots, &"e".repeat(64)).expect("name"),
            &vec![0u8; 5 * 1024 * 1024],
        )
        .expect("put");

    let mut repo = Repository::open(store.clone(), &key).expect("open");
    let listed = repo.snapshots().expect("snapshots");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].0, second);
    let warnings = repo.take_warnings();
    for expected in [damaged.name(), "snapshots/garbage", "more than"] {
        assert!(
            warnings.iter().any(|w| w.contains(expected)),
            "{expected}: {warnings:?}"
        );
    }
    assert_eq!(repo.find_snapshot("latest").expect("latest").0, second);
    let report = repo
        .backup(std::slice::from_ref(&src), &options(), &NoProgress)
        .expect("a plain backup still works");
    assert_eq!(report.parent, Some(second));
    assert!(report.warnings.iter().any(|w| w.contains(damaged.name())));
}

/// A key slot or config larger than the format allows is refused, not read.
#[test]
fn oversized_key_slots_and_configs_are_refused() {
    let (store, _repo, key) = memory_repo();
    let slot = names(&store, Namespace::Keys).remove(0);
    store
        .tamper(&slot, |b| b.resize(50 * 1024 * 1024, 0))
        .expect("tamper");
    let err = Repository::open(store.clone(), &key).unwrap_err();
    assert!(err.is_integrity(), "{err}");
    assert!(err.to_string().contains(slot.name()), "{err}");

    let (store, _repo, key) = memory_repo();
    let config = ObjectName::new(Namespace::Config, "config").expect("name");
    store
        .tamper(&config, |b| b.resize(10 * 1024 * 1024, 0))
        .expect("tamper");
    let err = Repository::open(store.clone(), &key).unwrap_err();
    assert!(err.to_string().contains("more than"), "{err}");
}

/// A damaged tree costs the entries below it: a listing and a restore go on
/// with the rest and say what they left out.
#[test]
fn a_damaged_subtree_costs_only_its_entries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    write(&src.join("keep/a.txt"), b"kept");
    write(&src.join("lost/b.txt"), b"lost with its tree");
    // Tree packs are small: put every tree in its own pack by backing up the
    // subdirectory first, then the parent (whose backup reuses it).
    let (store, mut repo, key) = memory_repo();
    backup(&mut repo, &src.join("lost"));
    let lost_tree_packs = names(&store, Namespace::Packs);
    let report = backup(&mut repo, &src);
    for pack in &lost_tree_packs {
        store.delete(pack).expect("delete");
    }
    let repo = Repository::open(store.clone(), &key).expect("open");
    let listing = repo.list(&report.snapshot_id, None).expect("list");
    assert!(listing.iter().any(|e| e.path == "src/keep/a.txt"));
    assert!(!listing.iter().any(|e| e.path == "src/lost/b.txt"));
    assert!(!listing.is_complete());
    assert_eq!(listing.unlisted.len(), 1, "{:?}", listing.unlisted);
    assert_eq!(listing.unlisted[0].object, "src/lost");
    match restore(&repo, &report.snapshot_id, &dir.path().join("out")) {
        Err(RestoreFailed::Incomplete(failed)) => {
            assert_eq!(failed.len(), 1, "{failed:?}");
            assert!(failed[0].path.ends_with("src/lost"));
            let kept = dir
                .path()
                .join("out")
                .join(format!("restore-{}", &report.snapshot_id.to_hex()[..12]))
                .join("src/keep/a.txt");
            assert_eq!(std::fs::read(kept).expect("kept file"), b"kept");
        }
        other => panic!("{other:?}"),
    }
}

fn check(repo: &Repository, read_data: bool) -> cairn::CheckReport {
    repo.check(
        &cairn::CheckOptions {
            read_data: if read_data {
                cairn::ReadData::All
            } else {
                cairn::ReadData::None
            },
        },
        &NoProgress,
    )
    .expect("check runs")
}

/// `check` reports each kind of damage, naming the object and what needs it;
/// a sound repository checks clean, with and without reading the data.
#[test]
fn check_names_every_damaged_object() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    write(&src.join("media/photo.jpg"), &Rng(3).bytes(700_000));
    write(&src.join("notes.txt"), b"notes");
    let (store, mut repo, key) = memory_repo();
    backup(&mut repo, &src);
    write(&src.join("media/video.mp4"), &Rng(4).bytes(900_000));
    backup(&mut repo, &src);
    for read_data in [false, true] {
        let report = check(&repo, read_data);
        assert!(report.is_ok(), "{:?}", report.problems);
        assert_eq!((report.n_snapshots, report.n_index_files), (2, 2));
        assert!(report.n_packs >= 3);
    }
    assert!(check(&repo, true).n_blobs_read >= 4);

    // A blob's bytes flipped: only reading the data finds it.
    let packs = names(&store, Namespace::Packs);
    let biggest = packs
        .iter()
        .max_by_key(|p| store.size(p).expect("size"))
        .expect("a pack")
        .clone();
    store.tamper(&biggest, |b| b[100] ^= 1).expect("tamper");
    let repo = Repository::open(store.clone(), &key).expect("open");
    assert!(check(&repo, false).is_ok());
    let report = check(&repo, true);
    // The pack, and the one file whose chunk it was.
    assert_eq!(report.problems.len(), 2, "{:?}", report.problems);
    assert!(report.problems[0].object.contains(biggest.name()));
    assert!(report.problems[0].what.contains("1 blobs fail"));
    assert!(report.problems[1].object.ends_with("src/media/video.mp4"));
    store.tamper(&biggest, |b| b[100] ^= 1).expect("untamper");

    // A missing pack: named, and so is every file that needed it.
    let original = store.get(&biggest, u64::MAX).expect("get");
    store.delete(&biggest).expect("delete");
    let repo = Repository::open(store.clone(), &key).expect("open");
    let report = check(&repo, false);
    let text: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
    assert!(
        text.iter()
            .any(|p| p.contains(biggest.name()) && p.contains("missing")),
        "{text:#?}"
    );
    assert!(
        text.iter().any(|p| p.contains("src/media/video.mp4")),
        "{text:#?}"
    );
    store.put(&biggest, &original).expect("put back");

    // A damaged index file, a garbage snapshot, an orphan pack.
    let index = names(&store, Namespace::Index).remove(0);
    flip_middle(&store, &index);
    store
        .put(
            &ObjectName::new(Namespace::Snapshots, "garbage").expect("name"),
            b"junk",
        )
        .expect("put");
    store
        .put(
            &ObjectName::new(Namespace::Packs, &"0".repeat(64)).expect("name"),
            b"orphan",
        )
        .expect("put");
    let repo = Repository::open(store.clone(), &key).expect("open");
    let report = check(&repo, false);
    let text: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
    for expected in [index.name(), "snapshots/garbage"] {
        assert!(
            text.iter().any(|p| p.contains(expected)),
            "{expected}: {text:#?}"
        );
    }
    // The packs only the damaged index file named are now unreferenced.
    assert!(report.n_unreferenced_packs >= 1);
    assert!(report.unreferenced_bytes >= 6);
}

/// Regression: `check` named only the first path that needed a damaged blob,
/// so later snapshots looked sound; and it blamed a file whose blob had a
/// good second copy.
#[test]
fn check_names_every_snapshot_path_and_honours_other_copies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    let photo = Rng(8).bytes(500_000);
    write(&src.join("photo.jpg"), &photo);
    let (store, mut repo, key) = memory_repo();
    backup(&mut repo, &src);
    write(&src.join("forwarded.jpg"), &photo);
    backup(&mut repo, &src);
    let data_pack = names(&store, Namespace::Packs)
        .into_iter()
        .max_by_key(|p| store.size(p).expect("size"))
        .expect("pack");
    store.tamper(&data_pack, |b| b[50] ^= 1).expect("tamper");
    let repo = Repository::open(store.clone(), &key).expect("open");
    let report = check(&repo, true);
    let paths: Vec<&str> = report.problems.iter().map(|p| p.object.as_str()).collect();
    // Both snapshots, and both names of the forwarded photo in the second.
    assert_eq!(
        paths
            .iter()
            .filter(|p| p.ends_with("src/photo.jpg"))
            .count(),
        2,
        "{paths:#?}"
    );
    assert_eq!(
        paths
            .iter()
            .filter(|p| p.ends_with("src/forwarded.jpg"))
            .count(),
        1,
        "{paths:#?}"
    );
    store.tamper(&data_pack, |b| b[50] ^= 1).expect("repair");

    // A second copy in another pack: the files are sound though the first
    // pack's trailer is damaged; only the pack is a problem.
    let original = store.get(&data_pack, u64::MAX).expect("get");
    store.delete(&data_pack).expect("hide");
    let mut repo = Repository::open(store.clone(), &key).expect("open");
    let force = cairn::BackupOptions {
        parent: cairn::Parent::None,
        ..options()
    };
    repo.backup(std::slice::from_ref(&src), &force, &NoProgress)
        .expect("backup stores it again");
    let mut damaged = original;
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    store.put(&data_pack, &damaged).expect("put back, damaged");
    let repo = Repository::open(store.clone(), &key).expect("open");
    let report = check(&repo, false);
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert!(report.problems[0].object.contains(data_pack.name()));
}

/// A lost pack under a big tree: `check` names the first hundred paths per
/// snapshot and counts the rest, so its report stays readable however many
/// snapshots share the damage (and its memory grows with trees, not paths).
#[test]
fn check_bounds_the_paths_it_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    for i in 0..1005 {
        write(
            &src.join(format!("f{i:04}")),
            format!("file {i}").as_bytes(),
        );
    }
    let (store, mut repo, key) = memory_repo();
    backup(&mut repo, &src);
    let data_pack = names(&store, Namespace::Packs)
        .into_iter()
        .max_by_key(|p| store.size(p).expect("size"))
        .expect("pack");
    store.delete(&data_pack).expect("delete");
    let repo = Repository::open(store.clone(), &key).expect("open");
    let report = check(&repo, false);
    let n_paths = report
        .problems
        .iter()
        .filter(|p| p.object.contains("/src/f"))
        .count();
    assert_eq!(n_paths, 100);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.what.starts_with("905 more paths")),
        "{:?}",
        report.problems.last()
    );
}
