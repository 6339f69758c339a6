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
mod recovery_key;
mod seal;

pub use ids::{ChunkId, PackId, SnapshotId};
pub use key_slot::{KEY_SLOT_LEN, KeySlot};
pub use keys::{ChunkIdKey, MasterSecret, SealKey, WorkingKeys};
pub use recovery_key::{RECOVERY_KEY_ALPHABET, RECOVERY_KEY_LEN, RecoveryKey};
pub use seal::{
    Compression, FORMAT_VERSION, SEAL_OVERHEAD, SealBuffer, SealKind, SealedBlob, open, seal,
    seal_buffer,
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
}

/// Fills `buf` from the operating system's CSPRNG.
pub fn random_bytes(buf: &mut [u8]) -> Result<(), Error> {
    getrandom::fill(buf).map_err(|_| Error::Random)
}
