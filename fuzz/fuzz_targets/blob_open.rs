//! Fuzzes opening blobs through one reused `Opener`, behind authentication:
//! the input is sealed with a known key (as a server holding the key could
//! not, but a bug in our own writer might), marked compressed or not, with
//! an arbitrary declared length. Checks that no frame, however malformed,
//! panics, yields more than the declared length, or returns bytes left over
//! from an earlier blob.
#![no_main]
use std::sync::{LazyLock, Mutex};

use cairn_crypto::{BlobId, BlobKind, Compression, MasterSecret, Opener, SealKind, WorkingKeys};
use cairn_pack::PackEntry;
use libfuzzer_sys::fuzz_target;

static KEYS: LazyLock<WorkingKeys> =
    LazyLock::new(|| WorkingKeys::derive(&MasterSecret::generate().expect("rng")));
static OPENER: LazyLock<Mutex<Opener>> = LazyLock::new(|| Mutex::new(Opener::new()));

fuzz_target!(|data: &[u8]| {
    let Some((head, body)) = data.split_first_chunk::<4>() else {
        return;
    };
    let declared = u32::from_le_bytes(*head) % (8 << 20);
    let compressed = declared % 2 == 1;
    let id = BlobId::from_bytes([7; 32]);
    let compression = if compressed {
        Compression::Zstd
    } else {
        Compression::None
    };
    let sealed =
        cairn_crypto::seal_as_is(&KEYS.data, SealKind::Data, id.as_bytes(), compression, body);
    let Ok(mut sealed) = sealed else { return };
    let entry = PackEntry {
        id,
        kind: BlobKind::Data,
        compression,
        offset: 0,
        sealed_len: sealed.len() as u32,
        plain_len: declared,
    };
    let mut opener = OPENER.lock().unwrap_or_else(|e| e.into_inner());
    if let Ok(plain) = cairn_pack::open_blob_in_place(&KEYS.data, &entry, &mut sealed, &mut opener)
    {
        assert_eq!(plain.len(), declared as usize);
        if compressed {
            // What a fresh decompressor makes of the frame: nothing of an
            // earlier blob may show through the reused one.
            let fresh = zstd::bulk::decompress(body, declared as usize).expect("fresh decode");
            assert_eq!(plain, &fresh[..]);
        } else {
            assert_eq!(plain, body);
        }
    }
});
