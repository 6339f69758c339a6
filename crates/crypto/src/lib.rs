//! Keys and sealing for cairn: the recovery key, the key hierarchy, keyed chunk
//! IDs, and authenticated encryption of blobs and metadata files.
//!
//! Everything here is built from audited primitives (BLAKE3, AES-256-GCM-SIV, the
//! operating system's CSPRNG); nothing is home-made. The crate knows nothing of
//! storage or files. See `docs/crypto.md` for the hierarchy and threat model.
#![forbid(unsafe_code)]

mod ids;
mod key_slot;
mod keys;
mod padding;
mod recovery_key;
mod seal;

pub use ids::{BlobId, BlobKind, PackId, SnapshotId};
pub use key_slot::{KEY_SLOT_LEN, KeySlot};
pub use keys::{
    BlobIdKeys, CacheKey, ChunkerPrfKeys, ChunkerSeed, MasterSecret, SealKey, WorkingKeys,
};
pub use padding::{MIN_PADDED_LEN, padded_len};
pub use recovery_key::{RECOVERY_KEY_ALPHABET, RECOVERY_KEY_LEN, RecoveryKey};
#[cfg(fuzzing)]
pub use seal::seal_as_is;
pub use seal::{
    Compression, FORMAT_VERSION, Opener, SEAL_OVERHEAD, SealBuffer, SealKind, SealedBlob, Sealer,
    open, seal, seal_buffer, seal_uncompressed,
};

/// Errors of this crate.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// Authentication failed: the bytes are corrupt or were tampered with. Which
    /// check failed is deliberately not said.
    #[error("data is corrupt or has been tampered with")]
    Integrity,
    /// The recovery key does not unlock any key slot of the repository.
    #[error("wrong recovery key")]
    WrongKey,
    /// The recovery key text is malformed (it is never echoed back).
    #[error("malformed recovery key: {problem}")]
    MalformedKey {
        /// What is wrong with it.
        problem: KeyProblem,
    },
    /// The operating system's random number generator failed.
    #[error("system random number generator failed")]
    Random,
}

/// Why a recovery key text was rejected. Never contains the key itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyProblem {
    /// Wrong number of key characters (after removing spaces and dashes).
    #[error("expected 64 characters, found {found}")]
    WrongLength {
        /// How many characters were found.
        found: usize,
    },
    /// A character outside `0-9a-z` (case-insensitive), at this 1-based position
    /// among the key characters.
    #[error("character {position} is not a digit or a letter a-z")]
    BadCharacter {
        /// 1-based position of the offending character.
        position: usize,
    },
    /// A key chosen by a caller, not drawn at random: fewer than
    /// [`MIN_DISTINCT_CHARACTERS`] distinct characters (a random key has
    /// about 30; one with fewer is a pattern someone typed).
    #[error("too simple to be a random key ({distinct} distinct characters)")]
    TooSimple {
        /// How many distinct characters it has.
        distinct: usize,
    },
}

/// Fewest distinct characters a caller-supplied recovery key may have. A
/// key drawn at random has fewer with probability below 2^-140.
pub const MIN_DISTINCT_CHARACTERS: usize = 8;

/// Fills `buf` from the operating system's CSPRNG.
pub fn random_bytes(buf: &mut [u8]) -> Result<(), Error> {
    getrandom::fill(buf).map_err(|_| Error::Random)
}

#[cfg(test)]
mod redaction_tests {
    //! Every type that holds a secret formats without it.
    use super::*;
    use zeroize::Zeroizing;

    /// Ways a secret's bytes could show up in `Debug` output.
    fn renderings(bytes: &[u8]) -> Vec<String> {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let list = format!("{bytes:?}");
        let decimal_prefix = format!("{}, {}, {}", bytes[0], bytes[1], bytes[2]);
        vec![hex, list, decimal_prefix]
    }

    fn assert_hidden(what: &str, formatted: &str, secrets: &[Vec<String>]) {
        for rendering in secrets.iter().flatten() {
            assert!(
                !formatted.contains(rendering.as_str()),
                "{what} shows a secret: {formatted}"
            );
        }
    }

    #[test]
    fn debug_output_holds_no_secret() {
        let master_bytes = [0xa7u8; 32];
        let master = MasterSecret::from_bytes(Zeroizing::new(master_bytes));
        let keys = WorkingKeys::derive(&master);
        let seed = keys.chunker_seed.value();
        let mut secrets = vec![renderings(&master_bytes)];
        for ctx in [
            "cairn 2026-11 v1 data blob id key",
            "cairn 2026-11 v1 tree blob id key",
            "cairn 2026-11 v1 chunker seed",
            "cairn 2026-11 v1 data sealing key",
            "cairn 2026-11 v1 metadata sealing key",
            "cairn 2026-12 v1 toeplitz-aes chunker hash key",
            "cairn 2026-12 v1 toeplitz-aes chunker aes key",
            "cairn 2026-12 v1 local cache binding key",
        ] {
            secrets.push(renderings(&blake3::derive_key(ctx, &master_bytes)));
        }
        let hash_key = keys.chunker_prf.hash_key();
        secrets.push(vec![hash_key.to_string(), format!("{hash_key:x}")]);
        secrets.push(vec![
            seed.to_string(),
            format!("{seed:x}"),
            format!("{seed:X}"),
            (seed as i64).to_string(),
        ]);
        let key = RecoveryKey::generate().expect("key");
        let key_text = String::from_utf8(key.as_bytes().to_vec()).expect("ascii");
        secrets.push(vec![key_text.clone(), key_text[..16].to_owned()]);
        let plaintext = b"private message text: meet at noon".to_vec();
        secrets.push(vec![
            "private message".to_owned(),
            renderings(&plaintext)[1].clone(),
        ]);

        assert_hidden("MasterSecret", &format!("{master:?}"), &secrets);
        assert_hidden("WorkingKeys", &format!("{keys:?}"), &secrets);
        assert_hidden("WorkingKeys (pretty)", &format!("{keys:#?}"), &secrets);
        assert_hidden("ChunkerSeed", &format!("{:?}", keys.chunker_seed), &secrets);
        assert_hidden(
            "ChunkerPrfKeys",
            &format!("{:?}", keys.chunker_prf),
            &secrets,
        );
        assert_hidden("BlobIdKeys", &format!("{:?}", keys.blob_ids), &secrets);
        assert_hidden("SealKey", &format!("{:?}", keys.data), &secrets);
        assert_hidden("RecoveryKey", &format!("{key:?}"), &secrets);
        let buffer = SealBuffer::from_plaintext(&plaintext);
        assert_hidden("SealBuffer", &format!("{buffer:?}"), &secrets);
        let sealed = seal(&keys.data, SealKind::Data, &[1; 32], &plaintext).expect("seal");
        assert_hidden("SealedBlob", &format!("{sealed:?}"), &secrets);
        let slot = KeySlot::wrap(&key, &master).expect("wrap");
        assert_hidden("KeySlot", &format!("{slot:?}"), &secrets);
    }
}
