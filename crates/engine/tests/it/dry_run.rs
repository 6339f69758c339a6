//! `backup` with `dry_run`: says what a backup would store and writes
//! nothing.

use std::sync::Arc;

use cairn::{BackupOptions, NoProgress, Repository};
use cairn_store::{CountingStore, MemoryStore, Namespace, Store};

use crate::history::*;

#[test]
fn a_dry_run_writes_nothing_and_predicts_the_real_backup() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(CountingStore::new(MemoryStore::new()));
    let (mut repo, _key) = Repository::init(store.clone(), &small_packs()).expect("init");
    let src = scratch.path().join("chat");
    for d in 0..3 {
        backup_day(&mut repo, &src, d);
    }
    make_day(&src, 3);
    let listing = |store: &CountingStore<MemoryStore>| -> Vec<Vec<String>> {
        Namespace::ALL
            .iter()
            .map(|ns| store.inner().list(*ns).expect("list"))
            .collect()
    };
    let before = listing(&store);
    store.reset();
    let options = BackupOptions {
        host: "phone".into(),
        dry_run: true,
        ..BackupOptions::default()
    };
    let dry = repo
        .backup(std::slice::from_ref(&src), &options, &NoProgress)
        .expect("dry run");
    assert!(dry.dry_run);
    let counts = store.counts();
    assert_eq!((counts.puts, counts.deletes), (0, 0), "{counts:?}");
    assert_eq!(listing(&store), before);
    assert!(dry.n_blobs_new > 0 && dry.summary.bytes_new > 0);
    // The same backup for real stores what the dry run said.
    let real = repo
        .backup(
            std::slice::from_ref(&src),
            &BackupOptions {
                dry_run: false,
                ..options
            },
            &NoProgress,
        )
        .expect("backup");
    assert_eq!(real.n_blobs_new, dry.n_blobs_new);
    assert_eq!(real.summary.bytes_new, dry.summary.bytes_new);
    assert_eq!(real.n_packs_written, dry.n_packs_written);
    // Stored bytes differ only by the index file a dry run does not write
    // (a small one, padded to 4 KiB in format 3).
    assert!(real.summary.bytes_stored >= dry.summary.bytes_stored);
    assert!(real.summary.bytes_stored - dry.summary.bytes_stored <= 4096);
    assert_eq!(repo.snapshots().expect("list").len(), 4);
}
