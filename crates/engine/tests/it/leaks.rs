//! What the sizes the server sees say about content an attacker chose
//! (issue 10): a sender's text beside a secret in a database page.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use cairn::{ChunkerParams, InitOptions, Repository};
use cairn_store::{MemoryStore, Store};

use crate::support::*;

fn letters(n: usize, mut x: u64) -> String {
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect()
}

/// Backs up one database page holding a secret beside an attacker's guess
/// of it, and returns the size of the pack that holds it (the largest: the
/// other holds the tree).
fn stored_with_guess(guess: &str, compress_in_place: bool) -> u64 {
    // The same path every time: names are in (compressed) trees.
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    // A page of the message table: the user's secret (a long one, so that
    // what compression saves outgrows the padding's rounding), then the
    // message an attacker sent.
    let page = format!(
        "note to self: {}; message from a contact: {guess}",
        letters(12_000, 7)
    );
    let file = src.join("chat.db");
    write(&file, page.as_bytes());
    std::fs::File::options()
        .write(true)
        .open(&file)
        .expect("open")
        .set_modified(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        .expect("mtime");
    let store = Arc::new(MemoryStore::new());
    let mut options = InitOptions::default();
    options.chunking.compress_in_place = compress_in_place;
    // Pages of one chunk whatever the key: a larger in-place profile.
    options.chunking.in_place = ChunkerParams {
        min_size: 64 * 1024,
        avg_size: 128 * 1024,
        max_size: 256 * 1024,
        normalization: 1,
    };
    let (mut repo, _) = Repository::init(store.clone(), &options).expect("init");
    backup(&mut repo, &src);
    let data_pack = packs_by_size(&store).remove(0);
    store.size(&data_pack).expect("size")
}

/// Compressed, the right guess shrinks the page (zstd finds the repeat) and
/// the server sees it, padding or not: a guess per backup. By default a
/// database's chunks are sealed as they are, and a right and a wrong guess
/// of the same length store exactly as many bytes.
#[test]
fn a_guess_beside_a_secret_in_a_database_moves_no_size() {
    let right = letters(12_000, 7);
    let wrong = letters(12_000, 8);
    assert_eq!(
        stored_with_guess(&right, false),
        stored_with_guess(&wrong, false),
        "uncompressed: the sizes do not depend on the guess"
    );
    let (hit, miss) = (
        stored_with_guess(&right, true),
        stored_with_guess(&wrong, true),
    );
    assert!(
        hit < miss,
        "compressed, the oracle answers: {hit} vs {miss}"
    );
}

/// The sizes of every object a repository holds, sorted.
fn object_sizes(store: &MemoryStore) -> Vec<(cairn_store::Namespace, u64)> {
    let mut sizes = Vec::new();
    for ns in cairn_store::Namespace::ALL {
        for name in store.list(ns).expect("list") {
            let object = cairn_store::ObjectName::new(ns, &name).expect("name");
            sizes.push((ns, store.size(&object).expect("size")));
        }
    }
    sizes.sort();
    sizes
}

/// Two repositories that each back up one file, of 1,000,000 and of
/// 1,000,123 bytes, show the server the same objects and sizes, whichever
/// way each one's key cut its file (one chunk or two: the blob count is
/// sealed, the packs, index files and snapshots padded).
#[test]
fn a_file_123_bytes_longer_leaves_the_same_object_sizes() {
    // Until both cuts were seen (each is likely: a cut before 1 MB falls
    // with probability ≈ 0.3 per key).
    let mut blob_counts = std::collections::BTreeSet::new();
    for round in 0..60u64 {
        let sizes: Vec<_> = [1_000_000usize, 1_000_123]
            .iter()
            .map(|&len| {
                let dir = tempfile::tempdir().expect("tempdir");
                let src = dir.path().join("src");
                write(
                    &src.join("photo.jpg"),
                    &Rng(round * 2 + len as u64).bytes(len),
                );
                let (store, mut repo, _) = memory_repo();
                let report = backup(&mut repo, &src);
                blob_counts.insert(report.n_blobs_new);
                object_sizes(&store)
            })
            .collect();
        assert_eq!(sizes[0], sizes[1], "round {round}");
        if round >= 3 && blob_counts.len() >= 2 {
            break;
        }
    }
    // Two trees (the snapshot's root, `src`) and one data chunk, or more.
    assert_eq!(blob_counts.first(), Some(&3));
    assert!(blob_counts.len() >= 2, "{blob_counts:?}");
}
