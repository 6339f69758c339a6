//! The key hierarchy below the master secret: every working key is derived from
//! it with its own fixed, versioned BLAKE3 context, so rotating the recovery key
//! only re-wraps the master secret.

use std::fmt;

use aes_gcm_siv::{Aes256GcmSiv, KeyInit};
use zeroize::Zeroizing;

use crate::{BlobId, BlobKind, Error, random_bytes};

// Context strings are part of the format: changing one is a format change.
const CTX_DATA_ID: &str = "cairn 2026-11 v1 data blob id key";
const CTX_TREE_ID: &str = "cairn 2026-11 v1 tree blob id key";
const CTX_CHUNKER: &str = "cairn 2026-11 v1 chunker seed";
const CTX_CHUNKER_HASH: &str = "cairn 2026-12 v1 toeplitz-aes chunker hash key";
const CTX_CHUNKER_AES: &str = "cairn 2026-12 v1 toeplitz-aes chunker aes key";
const CTX_DATA: &str = "cairn 2026-11 v1 data sealing key";
const CTX_METADATA: &str = "cairn 2026-11 v1 metadata sealing key";
const CTX_CACHE: &str = "cairn 2026-12 v1 local cache binding key";

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

/// Keys of the keyed BLAKE3 that names blobs: one per [`BlobKind`], so every
/// kind has its own ID domain (an empty directory's tree and a one-byte file
/// holding NUL once shared an ID; they never can again).
#[derive(Clone)]
pub struct BlobIdKeys {
    data: Zeroizing<[u8; 32]>,
    tree: Zeroizing<[u8; 32]>,
}

impl BlobIdKeys {
    /// The ID of a blob of `kind` with this plaintext. Callable from any thread.
    pub fn id_of(&self, kind: BlobKind, plaintext: &[u8]) -> BlobId {
        let key = match kind {
            BlobKind::Data => &self.data,
            BlobKind::Tree => &self.tree,
        };
        BlobId::from_bytes(*blake3::keyed_hash(key, plaintext).as_bytes())
    }
}

/// The key of the tags that bind a device's cached copies to what they
/// are copies of (a pack header to its pack's name and size): someone who
/// can write the cache cannot pass one pack's header off as another's.
/// Never stored anywhere.
#[derive(Clone)]
pub struct CacheKey(Zeroizing<[u8; 32]>);

impl CacheKey {
    /// The tag of `parts` (each length-prefixed, so no two lists of parts
    /// share a tag).
    pub fn tag(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new_keyed(&self.0);
        for part in parts {
            hasher.update(&(part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        *hasher.finalize().as_bytes()
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CacheKey(<redacted>)")
    }
}

/// The secret that keys the content-defined chunker. Its `Debug` output is
/// redacted: cut points derived from it are what an attacker wants to learn.
#[derive(Clone, Copy)]
pub struct ChunkerSeed(u64);

impl ChunkerSeed {
    /// The seed's value, for the chunker only.
    pub fn value(self) -> u64 {
        self.0
    }
}

impl fmt::Debug for ChunkerSeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChunkerSeed(<redacted>)")
    }
}

/// The keys of the toeplitz-aes chunker: the 64-bit key of its universal hash
/// and its 256-bit AES key, each derived with its own context. Wiped on drop;
/// `Debug` is redacted.
#[derive(Clone)]
pub struct ChunkerPrfKeys {
    hash: Zeroizing<[u8; 32]>,
    aes: Zeroizing<[u8; 32]>,
}

impl ChunkerPrfKeys {
    /// The universal hash's key (the first 8 bytes of its derived key).
    pub fn hash_key(&self) -> u64 {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&self.hash[..8]);
        u64::from_le_bytes(bytes)
    }

    /// The AES-256 key.
    pub fn aes_key(&self) -> &[u8; 32] {
        &self.aes
    }
}

impl fmt::Debug for ChunkerPrfKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChunkerPrfKeys(<redacted>)")
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
    /// Names data chunks and trees, each kind in its own domain.
    pub blob_ids: BlobIdKeys,
    /// Seeds the FastCDC chunker's gear table (formats 1 and 2, or chosen).
    pub chunker_seed: ChunkerSeed,
    /// Keys the toeplitz-aes chunker (format 3's default).
    pub chunker_prf: ChunkerPrfKeys,
    /// Seals data blobs.
    pub data: SealKey,
    /// Seals tree blobs, pack headers, index files, snapshots and the config.
    pub metadata: SealKey,
    /// Tags the local cache's copies (never used for repository bytes).
    pub cache: CacheKey,
}

impl fmt::Debug for BlobIdKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BlobIdKeys(<redacted>)")
    }
}

impl WorkingKeys {
    /// Derives every working key from the master secret.
    pub fn derive(master: &MasterSecret) -> Self {
        let derive = |ctx: &str| Zeroizing::new(blake3::derive_key(ctx, master.as_bytes()));
        let seed_bytes = derive(CTX_CHUNKER);
        let mut seed = Zeroizing::new([0u8; 8]);
        seed.copy_from_slice(&seed_bytes[..8]);
        Self {
            blob_ids: BlobIdKeys {
                data: derive(CTX_DATA_ID),
                tree: derive(CTX_TREE_ID),
            },
            chunker_seed: ChunkerSeed(u64::from_le_bytes(*seed)),
            chunker_prf: ChunkerPrfKeys {
                hash: derive(CTX_CHUNKER_HASH),
                aes: derive(CTX_CHUNKER_AES),
            },
            data: SealKey::from_bytes(&derive(CTX_DATA)),
            metadata: SealKey::from_bytes(&derive(CTX_METADATA)),
            cache: CacheKey(derive(CTX_CACHE)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: an empty directory's tree blob (one zero byte) and a
    /// one-byte file holding NUL had the same ID.
    #[test]
    fn cache_tags_bind_every_part_and_its_bounds() {
        let k = WorkingKeys::derive(&MasterSecret::generate().unwrap());
        let tag = k.cache.tag(&[b"pack-a", b"header"]);
        assert_eq!(tag, k.cache.tag(&[b"pack-a", b"header"]));
        assert_ne!(tag, k.cache.tag(&[b"pack-b", b"header"]));
        assert_ne!(tag, k.cache.tag(&[b"pack-ah", b"eader"]));
        let other = WorkingKeys::derive(&MasterSecret::generate().unwrap());
        assert_ne!(tag, other.cache.tag(&[b"pack-a", b"header"]));
    }

    #[test]
    fn each_blob_kind_has_its_own_id_domain() {
        let k = WorkingKeys::derive(&MasterSecret::generate().unwrap());
        for bytes in [&b"\0"[..], b"", b"same bytes"] {
            assert_ne!(
                k.blob_ids.id_of(BlobKind::Data, bytes),
                k.blob_ids.id_of(BlobKind::Tree, bytes)
            );
        }
    }

    #[test]
    fn ids_are_keyed_and_deterministic() {
        let a = WorkingKeys::derive(&MasterSecret::generate().unwrap());
        let b = WorkingKeys::derive(&MasterSecret::generate().unwrap());
        let id = |k: &WorkingKeys, kind, x: &[u8]| k.blob_ids.id_of(kind, x);
        assert_eq!(id(&a, BlobKind::Data, b"x"), id(&a, BlobKind::Data, b"x"));
        assert_ne!(id(&a, BlobKind::Data, b"x"), id(&b, BlobKind::Data, b"x"));
        assert_ne!(id(&a, BlobKind::Data, b"x"), id(&a, BlobKind::Data, b"y"));
        assert_ne!(
            id(&a, BlobKind::Data, b"x").as_bytes(),
            blake3::hash(b"x").as_bytes()
        );
    }
}
