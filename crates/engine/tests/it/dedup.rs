//! Deduplication: unchanged data, copies and small edits cost (almost) nothing.

use std::fs;

use crate::support::*;

#[test]
fn unchanged_tree_adds_under_one_percent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    generate_tree(&src, 500, 0, 3);
    write(&src.join("media.bin"), &Rng(4).bytes(20 * 1024 * 1024));
    let (store, mut repo, _key) = memory_repo();
    let first = backup(&mut repo, &src);
    let after_first = store_bytes(store.as_ref());
    let second = backup(&mut repo, &src);
    let added = store_bytes(store.as_ref()) - after_first;
    assert!(
        added * 100 < after_first,
        "second backup added {added} of {after_first}"
    );
    assert_eq!(second.n_blobs_new, 0);
    assert_eq!(second.summary.bytes_stored, added);
    assert_ne!(first.snapshot_id, second.snapshot_id);
}

#[test]
fn a_copy_under_another_name_adds_almost_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    let big = Rng(5).bytes(24 * 1024 * 1024);
    write(&src.join("photo.jpg"), &big);
    let (store, mut repo, _key) = memory_repo();
    backup(&mut repo, &src);
    let before = store_bytes(store.as_ref());
    write(&src.join("forwarded/photo copy.jpg"), &big);
    let report = backup(&mut repo, &src);
    let added = store_bytes(store.as_ref()) - before;
    // Only new trees, an index file and the snapshot: a few KiB.
    assert!(added < 16 * 1024, "copy added {added} bytes");
    // The original is unchanged since the parent snapshot: only the copy is read.
    assert_eq!(report.summary.bytes_read, big.len() as u64);
    assert_eq!(report.n_files_unchanged, 1);
    assert!(
        report.summary.bytes_new < 4096,
        "new {}",
        report.summary.bytes_new
    );
}

#[test]
fn a_small_insertion_adds_only_the_chunks_around_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    let mut big = Rng(6).bytes(48 * 1024 * 1024);
    write(&src.join("db.sqlite"), &big);
    let (store, mut repo, _key) = memory_repo();
    let first = backup(&mut repo, &src);
    let before = store_bytes(store.as_ref());
    let middle = big.len() / 2;
    big.splice(middle..middle, b"a few new bytes".iter().copied());
    fs::write(src.join("db.sqlite"), &big).expect("write");
    let report = backup(&mut repo, &src);
    let added = store_bytes(store.as_ref()) - before;
    let max_chunk = repo.config().chunking.default.max_size as u64;
    // The edited chunk and possibly its neighbour, plus metadata.
    assert!(added <= 2 * max_chunk + 64 * 1024, "added {added}");
    assert!(report.n_blobs_new <= 4, "new blobs {}", report.n_blobs_new);
    assert!(added * 8 < first.summary.bytes_stored, "added {added}");
}
