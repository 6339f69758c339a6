//! What the sizes the server sees say about content an attacker chose
//! (issue 10): a sender's text beside a secret in a database page.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use cairn::{InitOptions, Repository};
use cairn_store::{MemoryStore, Store};

use crate::support::*;

/// Backs up one database page holding a secret beside an attacker's guess
/// of it, and returns the size of the pack that holds it (the largest: the
/// others hold the tree). Other objects vary from run to run (times and
/// inode numbers in compressed trees), not with the guess.
fn stored_with_guess(guess: &str, compress_in_place: bool) -> u64 {
    // The same path every time: names are in (compressed) trees.
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    // A message table's page: ordinary text, the user's secret, and the
    // message an attacker sent (its text lands in the same page).
    // Below the smallest chunk (4 KiB), so one chunk whatever the key.
    // Messages of random letters: compressible a little, so the page
    // stays the largest object compressed or not.
    let mut page = String::new();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..80 {
        let words: String = (0..36)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from(b'a' + (x % 26) as u8)
            })
            .collect();
        page.push_str(&format!("message {i:02}: {words} "));
    }
    page.push_str("recovery code=q8zk3xw7m2vt; ");
    page.push_str(&format!("attacker says recovery code={guess}; "));
    assert!(page.len() < 4096);
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
    let (mut repo, _) = Repository::init(store.clone(), &options).expect("init");
    backup(&mut repo, &src);
    let data_pack = packs_by_size(&store).remove(0);
    store.size(&data_pack).expect("size")
}

/// Compressed, the right guess shrinks the page (zstd finds the repeat) and
/// the server sees it: a guess per backup. By default a database's chunks
/// are sealed as they are, and a right and a wrong guess of the same length
/// store exactly as many bytes.
#[test]
fn a_guess_beside_a_secret_in_a_database_moves_no_size() {
    let right = "q8zk3xw7m2vt";
    let wrong = "p4rn9ja0c6ye";
    assert_eq!(
        stored_with_guess(right, false),
        stored_with_guess(wrong, false),
        "uncompressed: the sizes do not depend on the guess"
    );
    let (hit, miss) = (
        stored_with_guess(right, true),
        stored_with_guess(wrong, true),
    );
    assert!(
        hit + 8 <= miss,
        "compressed, the oracle answers: {hit} vs {miss}"
    );
}
