//! The index: chunk ID → (pack, offset, lengths). An in-memory map built from
//! index segments, and the segment codec.
//!
//! A segment is the plaintext of one index file (the engine seals it). Layout,
//! all little-endian:
//!
//! ```text
//! magic "CAIRNIDX" ‖ version u8 (1) ‖ n_packs u32 ‖ n_packs × pack id (32)
//! ‖ n_entries u32 ‖ n_entries × entry (50 bytes), sorted by chunk id, unique
//! entry = chunk id (32) ‖ pack_idx u32 ‖ kind u8 ‖ compression u8 ‖ offset u32
//!         ‖ sealed_len u32 ‖ plain_len u32
//! ```
//!
//! The crate knows nothing of files or of how segments are sealed.
#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use std::collections::HashMap;

use cairn_crypto::{ChunkId, Compression, PackId};
use cairn_pack::{BlobKind, PackEntry};

const MAGIC: &[u8; 8] = b"CAIRNIDX";
const SEGMENT_VERSION: u8 = 1;
const ENTRY_LEN: usize = 50;

/// Errors of this crate.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A segment's bytes do not follow the format.
    #[error("index segment is corrupt")]
    Corrupt,
}

/// Where a blob lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobLocation {
    /// The pack holding it.
    pub pack: PackId,
    /// Its description inside that pack.
    pub entry: PackEntry,
}

/// The in-memory index: every blob of the repository.
#[derive(Debug, Default, Clone)]
pub struct Index {
    packs: Vec<PackId>,
    pack_idx: HashMap<PackId, u32>,
    blobs: HashMap<ChunkId, Slot>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    pack_idx: u32,
    kind: BlobKind,
    compression: Compression,
    offset: u32,
    sealed_len: u32,
    plain_len: u32,
}

impl Index {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of blobs.
    pub fn len(&self) -> usize {
        self.blobs.len()
    }

    /// Whether the index holds no blob.
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    /// Whether `id` is known.
    pub fn contains(&self, id: &ChunkId) -> bool {
        self.blobs.contains_key(id)
    }

    /// Where `id` lives, if known.
    pub fn get(&self, id: &ChunkId) -> Option<BlobLocation> {
        let slot = self.blobs.get(id)?;
        let pack = *self.packs.get(slot.pack_idx as usize)?;
        Some(BlobLocation {
            pack,
            entry: PackEntry {
                id: *id,
                kind: slot.kind,
                compression: slot.compression,
                offset: slot.offset,
                sealed_len: slot.sealed_len,
                plain_len: slot.plain_len,
            },
        })
    }

    fn intern(&mut self, pack: PackId) -> u32 {
        if let Some(&i) = self.pack_idx.get(&pack) {
            return i;
        }
        let i = self.packs.len() as u32;
        self.packs.push(pack);
        self.pack_idx.insert(pack, i);
        i
    }

    /// Records a blob. If the ID is already known, the first location is kept:
    /// both copies hold the same plaintext.
    pub fn insert(&mut self, location: BlobLocation) {
        let pack_idx = self.intern(location.pack);
        let e = location.entry;
        self.blobs.entry(e.id).or_insert(Slot {
            pack_idx,
            kind: e.kind,
            compression: e.compression,
            offset: e.offset,
            sealed_len: e.sealed_len,
            plain_len: e.plain_len,
        });
    }

    /// Adds every blob of a segment.
    pub fn merge(&mut self, other: &Index) {
        for location in other.iter() {
            self.insert(location);
        }
    }

    /// All blobs, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = BlobLocation> + '_ {
        self.blobs.keys().filter_map(|id| self.get(id))
    }

    /// Distinct packs referenced.
    pub fn packs(&self) -> &[PackId] {
        &self.packs
    }

    /// Encodes this index as a segment (entries sorted by ID, so equal indexes
    /// encode to equal bytes).
    pub fn encode_segment(&self) -> Vec<u8> {
        let mut ids: Vec<&ChunkId> = self.blobs.keys().collect();
        ids.sort_unstable();
        let mut out = Vec::with_capacity(17 + self.packs.len() * 32 + ids.len() * ENTRY_LEN);
        out.extend_from_slice(MAGIC);
        out.push(SEGMENT_VERSION);
        out.extend_from_slice(&(self.packs.len() as u32).to_le_bytes());
        for p in &self.packs {
            out.extend_from_slice(p.as_bytes());
        }
        out.extend_from_slice(&(ids.len() as u32).to_le_bytes());
        for id in ids {
            if let Some(s) = self.blobs.get(id) {
                out.extend_from_slice(id.as_bytes());
                out.extend_from_slice(&s.pack_idx.to_le_bytes());
                out.push(s.kind as u8);
                out.push(s.compression as u8);
                out.extend_from_slice(&s.offset.to_le_bytes());
                out.extend_from_slice(&s.sealed_len.to_le_bytes());
                out.extend_from_slice(&s.plain_len.to_le_bytes());
            }
        }
        out
    }

    /// Decodes a segment. Rejects anything off-format (unsorted or duplicate
    /// IDs, pack indices out of range, trailing bytes). Never panics.
    pub fn decode_segment(bytes: &[u8]) -> Result<Self, Error> {
        let mut r = Reader { bytes, at: 0 };
        if r.take(8)? != MAGIC || r.take(1)? != [SEGMENT_VERSION] {
            return Err(Error::Corrupt);
        }
        let n_packs = r.u32()? as usize;
        if n_packs.checked_mul(32).ok_or(Error::Corrupt)? > r.remaining() {
            return Err(Error::Corrupt);
        }
        let mut index = Index::new();
        for _ in 0..n_packs {
            let id = PackId::from_bytes(r.array()?);
            if index.pack_idx.contains_key(&id) {
                return Err(Error::Corrupt);
            }
            index.intern(id);
        }
        let n_entries = r.u32()? as usize;
        if n_entries.checked_mul(ENTRY_LEN).ok_or(Error::Corrupt)? != r.remaining() {
            return Err(Error::Corrupt);
        }
        index.blobs.reserve(n_entries);
        let mut previous: Option<ChunkId> = None;
        for _ in 0..n_entries {
            let id = ChunkId::from_bytes(r.array()?);
            if previous.is_some_and(|p| p >= id) {
                return Err(Error::Corrupt);
            }
            previous = Some(id);
            let pack_idx = r.u32()?;
            if pack_idx as usize >= n_packs {
                return Err(Error::Corrupt);
            }
            let kind = BlobKind::from_u8(r.u8()?).ok_or(Error::Corrupt)?;
            let compression = Compression::from_u8(r.u8()?).ok_or(Error::Corrupt)?;
            let slot = Slot {
                pack_idx,
                kind,
                compression,
                offset: r.u32()?,
                sealed_len: r.u32()?,
                plain_len: r.u32()?,
            };
            index.blobs.insert(id, slot);
        }
        Ok(index)
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.at)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        let end = self.at.checked_add(n).ok_or(Error::Corrupt)?;
        let out = self.bytes.get(self.at..end).ok_or(Error::Corrupt)?;
        self.at = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        self.take(N)?.try_into().map_err(|_| Error::Corrupt)
    }

    fn u8(&mut self) -> Result<u8, Error> {
        Ok(u8::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, Error> {
        Ok(u32::from_le_bytes(self.array()?))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn location(id: u8, pack: u8, offset: u32) -> BlobLocation {
        BlobLocation {
            pack: PackId::from_bytes([pack; 32]),
            entry: PackEntry {
                id: ChunkId::from_bytes([id; 32]),
                kind: if id % 2 == 0 {
                    BlobKind::Data
                } else {
                    BlobKind::Tree
                },
                compression: if id % 3 == 0 {
                    Compression::Zstd
                } else {
                    Compression::None
                },
                offset,
                sealed_len: 28 + u32::from(id),
                plain_len: u32::from(id),
            },
        }
    }

    proptest! {
        #[test]
        fn behaves_like_a_btreemap(ops in proptest::collection::vec((any::<u8>(), 0u8..6, any::<u32>()), 0..300), probes in proptest::collection::vec(any::<u8>(), 0..50)) {
            let mut index = Index::new();
            let mut model = BTreeMap::new();
            for (id, pack, offset) in ops {
                let loc = location(id, pack, offset);
                index.insert(loc);
                model.entry(loc.entry.id).or_insert(loc);
            }
            prop_assert_eq!(index.len(), model.len());
            for p in probes {
                let id = ChunkId::from_bytes([p; 32]);
                prop_assert_eq!(index.get(&id), model.get(&id).copied());
            }
            let decoded = Index::decode_segment(&index.encode_segment()).unwrap();
            prop_assert_eq!(decoded.len(), model.len());
            for (id, loc) in &model {
                prop_assert_eq!(decoded.get(id), Some(*loc));
            }
        }

        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Index::decode_segment(&bytes);
        }
    }

    #[test]
    fn rejects_unsorted_and_truncated() {
        let mut index = Index::new();
        index.insert(location(1, 1, 0));
        index.insert(location(2, 1, 40));
        let bytes = index.encode_segment();
        assert!(Index::decode_segment(&bytes).is_ok());
        assert_eq!(
            Index::decode_segment(&bytes[..bytes.len() - 1]).unwrap_err(),
            Error::Corrupt
        );
        // Swap the two entries: no longer sorted.
        let entries_at = bytes.len() - 2 * ENTRY_LEN;
        let mut swapped = bytes[..entries_at].to_vec();
        swapped.extend_from_slice(&bytes[entries_at + ENTRY_LEN..]);
        swapped.extend_from_slice(&bytes[entries_at..entries_at + ENTRY_LEN]);
        assert_eq!(Index::decode_segment(&swapped).unwrap_err(), Error::Corrupt);
    }
}
