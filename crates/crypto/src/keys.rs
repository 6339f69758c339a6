//! The key hierarchy below the master secret: every working key is derived from
//! it with its own fixed, versioned BLAKE3 context, so rotating the recovery key
//! only re-wraps the master secret.

use std::fmt;

use aes_gcm_siv::{Aes256GcmSiv, KeyInit};
use zeroize::Zeroizing;

use crate::{ChunkId, Error, random_bytes};

// Context strings are part of the format: changing one is a format change.
const CTX_CHUNK_ID: &str = "cairn 2026-11 v1 chunk-id key";
const CTX_CHUNKER: &str = "cairn 2026-11 v1 chunker seed";
const CTX_DATA: &str = "cairn 2026-11 v1 data sealing key";
const CTX_METADATA: &str = "cairn 2026-11 v1 metadata sealing key";

/// The repository's random 32-byte master secret, from which all working keys
/// derive. Stored only wrapped in key slots. Wiped on drop.
#[derive(Clone)]
pub struct MasterSecret(Zeroizing<[u8; 32]>);

impl MasterSecret {
    /// A fresh secret from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, Error> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        random_bytes(bytes.as_mut())?;
        Ok(Self(bytes))
    }

    pub(crate) fn from_bytes(bytes: Zeroizing<[u8; 32]>) -> Self {
        Self(bytes)
    }

    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for MasterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterSecret(<redacted>)")
    }
}

/// Key of the keyed BLAKE3 that names chunks and trees.
#[derive(Clone)]
pub struct ChunkIdKey(Zeroizing<[u8; 32]>);

impl ChunkIdKey {
    /// The ID of a blob with this plaintext. Callable from any thread.
    pub fn id_of(&self, plaintext: &[u8]) -> ChunkId {
        ChunkId::from_bytes(*blake3::keyed_hash(&self.0, plaintext).as_bytes())
    }
}

/// An AES-256-GCM-SIV key with its expanded cipher state. Callable from any
/// thread (sealing takes `&self`).
#[derive(Clone)]
pub struct SealKey {
    pub(crate) cipher: Aes256GcmSiv,
}

impl SealKey {
    pub(crate) fn from_bytes(bytes: &[u8; 32]) -> Self {
        Self {
            cipher: Aes256GcmSiv::new(bytes.into()),
        }
    }
}

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealKey(<redacted>)")
    }
}

/// The working keys of an open repository.
#[derive(Clone, Debug)]
pub struct WorkingKeys {
    /// Names chunks and trees.
    pub chunk_id: ChunkIdKey,
    /// Seeds the chunker's gear table.
    pub chunker_seed: u64,
    /// Seals data blobs.
    pub data: SealKey,
    /// Seals tree blobs, pack headers, index files, snapshots and the config.
    pub metadata: SealKey,
}

impl fmt::Debug for ChunkIdKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChunkIdKey(<redacted>)")
    }
}

impl WorkingKeys {
    /// Derives every working key from the master secret.
    pub fn derive(master: &MasterSecret) -> Self {
        let derive = |ctx: &str| Zeroizing::new(blake3::derive_key(ctx, master.as_bytes()));
        let seed_bytes = derive(CTX_CHUNKER);
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&seed_bytes[..8]);
        Self {
            chunk_id: ChunkIdKey(derive(CTX_CHUNK_ID)),
            chunker_seed: u64::from_le_bytes(seed),
            data: SealKey::from_bytes(&derive(CTX_DATA)),
            metadata: SealKey::from_bytes(&derive(CTX_METADATA)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_keyed_and_deterministic() {
        let a = WorkingKeys::derive(&MasterSecret::generate().unwrap());
        let b = WorkingKeys::derive(&MasterSecret::generate().unwrap());
        assert_eq!(a.chunk_id.id_of(b"x"), a.chunk_id.id_of(b"x"));
        assert_ne!(a.chunk_id.id_of(b"x"), b.chunk_id.id_of(b"x"));
        assert_ne!(a.chunk_id.id_of(b"x"), a.chunk_id.id_of(b"y"));
        assert_ne!(
            a.chunk_id.id_of(b"x").as_bytes(),
            blake3::hash(b"x").as_bytes()
        );
    }
}
