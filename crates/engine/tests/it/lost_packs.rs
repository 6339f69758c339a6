//! A pack that vanished or was damaged is never trusted: a backup stores its
//! blobs again rather than commit a snapshot it cannot restore, and a reader
//! names the pack (issue 6, item 2).

use cairn::{BackupOptions, Error, NoProgress, Parent, Repository};
use cairn_store::Store;

use crate::support::*;

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

/// Regression: a blob whose bytes fail authentication (header intact) was
/// never distrusted: later backups kept referring to it, and a good copy in
/// another pack was ignored.
#[test]
fn a_damaged_blob_is_stored_again_and_its_other_copy_is_used() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = source(dir.path());
    let (store, mut repo, key) = memory_repo();
    let first = backup(&mut repo, &src).snapshot_id;
    let data_pack = packs_by_size(&store).remove(0);
    let flip = |store: &cairn_store::MemoryStore| {
        store
            .tamper(&data_pack, |b| b[100] ^= 0xff)
            .expect("tamper")
    };
    flip(&store);
    // Same process: the restore finds it, the next backup stores it again.
    let mut repo = Repository::open(store.clone(), &key).expect("open");
    assert!(matches!(
        restore(&repo, &first, &dir.path().join("a")),
        Err(RestoreFailed::Incomplete(_))
    ));
    let report = repo
        .backup(std::slice::from_ref(&src), &force(), &NoProgress)
        .expect("backup");
    assert!(report.n_blobs_new > 0, "{report:?}");
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("fails authentication")),
        "{:?}",
        report.warnings
    );
    let target = restore(&repo, &report.snapshot_id, &dir.path().join("b")).expect("restore");
    assert_same_tree(&src, &target.join("src"));

    // Now two copies exist. Whichever one is damaged, a fresh process
    // restores from the other.
    let repo = Repository::open(store.clone(), &key).expect("open");
    let target =
        restore(&repo, &first, &dir.path().join("c")).expect("the damaged copy is bypassed");
    assert_same_tree(&src, &target.join("src"));
    flip(&store); // repair the first copy
    let second_pack = packs_by_size(&store)
        .into_iter()
        .find(|p| *p != data_pack)
        .expect("the second data pack");
    store
        .tamper(&second_pack, |b| b[100] ^= 0xff)
        .expect("tamper");
    let repo = Repository::open(store.clone(), &key).expect("open");
    for (i, id) in [first, report.snapshot_id].iter().enumerate() {
        let target = restore(&repo, id, &dir.path().join(format!("d{i}"))).expect("restore");
        assert_same_tree(&src, &target.join("src"));
    }
}

/// Regression: in a long-lived process, a pack verified by one backup and
/// damaged afterwards was trusted by every later backup.
#[test]
fn a_long_lived_process_verifies_packs_again_for_each_backup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = source(dir.path());
    let (store, mut repo, key) = memory_repo();
    backup(&mut repo, &src);
    backup(&mut repo, &src); // verifies the packs it relies on
    let data_pack = packs_by_size(&store).remove(0);
    store
        .tamper(&data_pack, |b| b.truncate(100))
        .expect("truncate");
    let report = repo
        .backup(std::slice::from_ref(&src), &options(), &NoProgress)
        .expect("backup");
    assert!(report.n_blobs_new > 0, "{report:?}");
    let repo = Repository::open(store.clone(), &key).expect("open");
    let target = restore(&repo, &report.snapshot_id, &dir.path().join("out")).expect("restore");
    assert_same_tree(&src, &target.join("src"));
}

/// Regression: a snapshot committed by another process after this one
/// opened the repository named blobs this process's index did not know:
/// `cat latest`, `restore latest` and `check` reported missing data.
#[test]
fn a_snapshot_newer_than_the_index_reads_its_new_index_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = source(dir.path());
    let (store, mut writer, key) = memory_repo();
    backup(&mut writer, &src);
    let reader = Repository::open(store.clone(), &key).expect("open");
    write(&src.join("later.txt"), b"written after the reader opened");
    backup(&mut writer, &src);
    let (latest, _) = reader.find_snapshot("latest").expect("latest");
    let target = restore(&reader, &latest, &dir.path().join("out")).expect("restore");
    assert_same_tree(&src, &target.join("src"));
    let report = reader
        .check(&cairn::CheckOptions::default(), &NoProgress)
        .expect("check");
    assert!(report.is_ok(), "{:?}", report.problems);
}
