//! A pack that vanished or was damaged is never trusted: a backup stores its
//! blobs again rather than commit a snapshot it cannot restore, and a reader
//! names the pack (issue 6, item 2).

use cairn::{BackupOptions, Error, NoProgress, Parent, Repository};
use cairn_store::{MemoryStore, Namespace, ObjectName, Store};

use crate::support::*;

fn packs_by_size(store: &MemoryStore) -> Vec<ObjectName> {
    let mut packs: Vec<(u64, ObjectName)> = store
        .list(Namespace::Packs)
        .expect("list")
        .into_iter()
        .map(|n| {
            let name = ObjectName::new(Namespace::Packs, &n).expect("name");
            (store.size(&name).expect("size"), name)
        })
        .collect();
    packs.sort();
    packs.into_iter().map(|(_, n)| n).rev().collect()
}

fn source(dir: &std::path::Path) -> std::path::PathBuf {
    let src = dir.join("src");
    write(&src.join("media.bin"), &Rng(5).bytes(3 * 1024 * 1024));
    write(&src.join("notes.txt"), b"a small note");
    src
}

fn force() -> BackupOptions {
    BackupOptions {
        parent: Parent::None,
        ..options()
    }
}

/// Regression: after a data pack was deleted, `backup --force` found its
/// chunks "already stored", uploaded nothing, and committed a snapshot that
/// could not be restored.
#[test]
fn backup_after_a_pack_vanished_stores_its_blobs_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = source(dir.path());
    for parent in [Parent::None, Parent::Latest] {
        let (store, mut repo, key) = memory_repo();
        backup(&mut repo, &src);
        let data_pack = packs_by_size(&store).remove(0);
        store.delete(&data_pack).expect("delete");
        // The same open repository (a long-lived frontend) and a reopened one.
        for reopen in [false, true] {
            if reopen {
                repo = Repository::open(store.clone(), &key).expect("open");
            }
            let options = BackupOptions {
                parent: parent.clone(),
                ..force()
            };
            let report = repo
                .backup(std::slice::from_ref(&src), &options, &NoProgress)
                .expect("backup");
            if !reopen {
                assert!(report.n_blobs_new > 0, "{parent:?}: nothing stored again");
                assert!(
                    report
                        .warnings
                        .iter()
                        .any(|w| w.contains(data_pack.name()) && w.contains("missing")),
                    "{:?}",
                    report.warnings
                );
            }
            let target = restore(
                &repo,
                &report.snapshot_id,
                &dir.path().join(format!("out-{parent:?}-{reopen}")),
            )
            .expect("the new snapshot restores");
            assert_same_tree(&src, &target.join("src"));
        }
    }
}

/// A pack whose trailer or header no longer matches is distrusted the same way.
#[test]
fn backup_after_a_pack_was_damaged_stores_its_blobs_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = source(dir.path());
    let (store, mut repo, key) = memory_repo();
    backup(&mut repo, &src);
    let data_pack = packs_by_size(&store).remove(0);
    store
        .tamper(&data_pack, |bytes| {
            let n = bytes.len();
            bytes[n - 20] ^= 0x55;
        })
        .expect("tamper");
    let mut repo = Repository::open(store.clone(), &key).expect("open");
    let report = repo
        .backup(std::slice::from_ref(&src), &options(), &NoProgress)
        .expect("backup");
    assert!(report.n_blobs_new > 0);
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains(data_pack.name()) && w.contains("damaged")),
        "{:?}",
        report.warnings
    );
    let repo = Repository::open(store.clone(), &key).expect("open");
    let target = restore(&repo, &report.snapshot_id, &dir.path().join("out")).expect("restore");
    assert_same_tree(&src, &target.join("src"));
}

/// Regression: a deleted pack was reported as "blob is not in any index".
#[test]
fn reading_from_a_deleted_pack_names_the_pack() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = source(dir.path());
    let (store, mut repo, key) = memory_repo();
    let first = backup(&mut repo, &src).snapshot_id;
    let data_pack = packs_by_size(&store).remove(0);
    store.delete(&data_pack).expect("delete");
    for repo in [repo, Repository::open(store.clone(), &key).expect("open")] {
        // The restore goes on without the file and names the pack.
        let failed = match restore(&repo, &first, &dir.path().join("out")) {
            Err(RestoreFailed::Incomplete(failed)) => failed,
            other => panic!("{other:?}"),
        };
        // Both files' chunks were in the one data pack.
        let paths: Vec<_> = failed.iter().map(|f| f.path.clone()).collect();
        assert!(paths[0].ends_with("src/media.bin"), "{paths:?}");
        assert!(paths[1].ends_with("src/notes.txt"), "{paths:?}");
        for failure in &failed {
            assert!(
                failure.reason.contains(data_pack.name()) && failure.reason.contains("missing"),
                "{}",
                failure.reason
            );
        }
        let mut reader = repo
            .open_file(&first, "src/media.bin".as_ref())
            .expect("open file");
        let err = std::io::copy(&mut reader, &mut std::io::sink()).unwrap_err();
        let err = err
            .into_inner()
            .and_then(|e| e.downcast::<Error>().ok())
            .expect("an engine error inside");
        assert!(
            matches!(&*err, Error::MissingPack { pack, .. } if data_pack.name() == pack),
            "{err}"
        );
    }
}
