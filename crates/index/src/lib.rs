//! The index: (blob kind, blob ID) → (pack, offset, lengths). An in-memory map
//! built from index segments, and the segment codec.
//!
//! A segment is the plaintext of one index file (the engine seals it). Layout,
//! all little-endian:
//!
//! ```text
//! magic "CAIRNIDX" ‖ version u8 (1) ‖ n_packs u32 ‖ n_packs × pack id (32)
//! ‖ n_entries u32 ‖ n_entries × entry (50 bytes), strictly ascending by
//!   (kind, blob id)
//! entry = blob id (32) ‖ pack_idx u32 ‖ kind u8 ‖ compression u8 ‖ offset u32
//!         ‖ sealed_len u32 ‖ plain_len u32
//! ```
//!
//! **Invariant: a blob is known by its kind and its ID together.** Each kind has
//! its own ID domain; a lookup of the wrong kind finds nothing.
//!
//! **First location wins.** When two segments name the same blob (two devices
//! stored it, or a backup stored it again after its pack was lost), the first
//! location loaded is used and later ones are kept as alternates; when the
//! first one's pack is forgotten ([`Index::forget_packs`]), an alternate takes
//! over.
//!
//! The crate knows nothing of files or of how segments are sealed.
#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use std::collections::{HashMap, HashSet};

use cairn_crypto::{BlobId, BlobKind, Compression, PackId};
use cairn_pack::PackEntry;

const MAGIC: &[u8; 8] = b"CAIRNIDX";
const SEGMENT_VERSION: u8 = 1;
const ENTRY_LEN: usize = 50;
const HEADER_LEN: usize = 8 + 1 + 4;
/// Most entries one segment may hold: bounds an index file's size (≈ 52 MiB
/// of plaintext) and so what a hostile store can make a reader allocate.
pub const MAX_SEGMENT_ENTRIES: usize = 1 << 20;
/// Most packs one segment may name.
pub const MAX_SEGMENT_PACKS: usize = MAX_SEGMENT_ENTRIES;
/// Largest plaintext of a valid segment.
pub const MAX_SEGMENT_LEN: usize =
    HEADER_LEN + 4 + MAX_SEGMENT_PACKS * 32 + MAX_SEGMENT_ENTRIES * ENTRY_LEN;

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
    /// Its description inside that pack (kind and ID included).
    pub entry: PackEntry,
}

/// The in-memory index: every blob of the repository, by kind and ID.
#[derive(Debug, Default, Clone)]
pub struct Index {
    packs: Vec<PackId>,
    pack_idx: HashMap<PackId, u32>,
    data: HashMap<BlobId, Slot>,
    trees: HashMap<BlobId, Slot>,
    /// Further locations of blobs already known (rare: see the crate docs).
    alternates: HashMap<(BlobKind, BlobId), Vec<Slot>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    pack_idx: u32,
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

    fn map(&self, kind: BlobKind) -> &HashMap<BlobId, Slot> {
        match kind {
            BlobKind::Data => &self.data,
            BlobKind::Tree => &self.trees,
        }
    }

    fn map_mut(&mut self, kind: BlobKind) -> &mut HashMap<BlobId, Slot> {
        match kind {
            BlobKind::Data => &mut self.data,
            BlobKind::Tree => &mut self.trees,
        }
    }

    /// Number of blobs (of both kinds).
    pub fn len(&self) -> usize {
        self.data.len() + self.trees.len()
    }

    /// Number of blobs of one kind.
    pub fn len_of(&self, kind: BlobKind) -> usize {
        self.map(kind).len()
    }

    /// Whether the index holds no blob.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a blob of `kind` named `id` is known.
    pub fn contains(&self, kind: BlobKind, id: &BlobId) -> bool {
        self.map(kind).contains_key(id)
    }

    /// Where the blob of `kind` named `id` lives, if known.
    pub fn get(&self, kind: BlobKind, id: &BlobId) -> Option<BlobLocation> {
        let slot = self.map(kind).get(id)?;
        self.location(kind, *id, slot)
    }

    fn location(&self, kind: BlobKind, id: BlobId, slot: &Slot) -> Option<BlobLocation> {
        let pack = *self.packs.get(slot.pack_idx as usize)?;
        Some(BlobLocation {
            pack,
            entry: PackEntry {
                id,
                kind,
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

    fn slot(pack_idx: u32, e: &PackEntry) -> Slot {
        Slot {
            pack_idx,
            compression: e.compression,
            offset: e.offset,
            sealed_len: e.sealed_len,
            plain_len: e.plain_len,
        }
    }

    /// Records a blob. If it is already known, the first location is kept and
    /// this one becomes an alternate: both copies hold the same plaintext.
    pub fn insert(&mut self, location: BlobLocation) {
        let pack_idx = self.intern(location.pack);
        let e = location.entry;
        let slot = Self::slot(pack_idx, &e);
        match self.map_mut(e.kind).entry(e.id) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(slot);
            }
            std::collections::hash_map::Entry::Occupied(o) => {
                if *o.get() != slot {
                    let alternates = self.alternates.entry((e.kind, e.id)).or_default();
                    if !alternates.contains(&slot) {
                        alternates.push(slot);
                    }
                }
            }
        }
    }

    /// Adds every blob of `other`.
    pub fn merge(&mut self, other: &Index) {
        for location in other.iter() {
            self.insert(location);
        }
    }

    /// Forgets every location inside `packs` (lost or damaged packs): a blob
    /// with an alternate elsewhere moves there, any other is forgotten, so the
    /// next backup that meets its content stores it again. Returns the
    /// locations of the blobs forgotten.
    pub fn forget_packs(&mut self, packs: &HashSet<PackId>) -> Vec<BlobLocation> {
        let gone: HashSet<u32> = packs
            .iter()
            .filter_map(|p| self.pack_idx.get(p).copied())
            .collect();
        if gone.is_empty() {
            return Vec::new();
        }
        for slots in self.alternates.values_mut() {
            slots.retain(|s| !gone.contains(&s.pack_idx));
        }
        let mut forgotten = Vec::new();
        for kind in BlobKind::ALL {
            let mut promoted = Vec::new();
            let alternates = &mut self.alternates;
            let map = match kind {
                BlobKind::Data => &mut self.data,
                BlobKind::Tree => &mut self.trees,
            };
            map.retain(|id, slot| {
                if !gone.contains(&slot.pack_idx) {
                    return true;
                }
                match alternates.get_mut(&(kind, *id)).and_then(Vec::pop) {
                    Some(alternate) => promoted.push((*id, alternate)),
                    None => forgotten.push((kind, *id, *slot)),
                }
                false
            });
            map.extend(promoted);
        }
        self.alternates.retain(|_, slots| !slots.is_empty());
        forgotten
            .into_iter()
            .filter_map(|(kind, id, slot)| self.location(kind, id, &slot))
            .collect()
    }

    /// Forgets one location (a blob whose bytes there fail authentication):
    /// an alternate copy takes over if there is one. Returns whether the
    /// blob is still known (at another location).
    pub fn forget_location(&mut self, location: &BlobLocation) -> bool {
        let Some(&pack_idx) = self.pack_idx.get(&location.pack) else {
            return self.contains(location.entry.kind, &location.entry.id);
        };
        let e = location.entry;
        let slot = Self::slot(pack_idx, &e);
        let key = (e.kind, e.id);
        if let Some(alternates) = self.alternates.get_mut(&key) {
            alternates.retain(|s| *s != slot);
        }
        let alternate = self.alternates.get_mut(&key).and_then(Vec::pop);
        if self.alternates.get(&key).is_some_and(Vec::is_empty) {
            self.alternates.remove(&key);
        }
        let map = self.map_mut(e.kind);
        if map.get(&e.id) == Some(&slot) {
            match alternate {
                Some(alternate) => {
                    map.insert(e.id, alternate);
                }
                None => {
                    map.remove(&e.id);
                }
            }
        } else if let Some(alternate) = alternate {
            // The forgotten slot was itself an alternate: keep the other one.
            self.alternates.entry(key).or_default().push(alternate);
        }
        self.contains(e.kind, &e.id)
    }

    /// All blobs, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = BlobLocation> + '_ {
        BlobKind::ALL.into_iter().flat_map(move |kind| {
            self.map(kind)
                .iter()
                .filter_map(move |(id, slot)| self.location(kind, *id, slot))
        })
    }

    /// Every location of every blob: the ones [`Index::get`] returns and the
    /// alternates, in no particular order.
    pub fn iter_locations(&self) -> impl Iterator<Item = BlobLocation> + '_ {
        self.iter()
            .chain(self.alternates.iter().flat_map(move |((kind, id), slots)| {
                slots
                    .iter()
                    .filter_map(move |slot| self.location(*kind, *id, slot))
            }))
    }

    /// Every known location of one blob, the one in use first.
    pub fn locations(&self, kind: BlobKind, id: &BlobId) -> Vec<BlobLocation> {
        let Some(first) = self.get(kind, id) else {
            return Vec::new();
        };
        let mut out = vec![first];
        if let Some(slots) = self.alternates.get(&(kind, *id)) {
            out.extend(slots.iter().filter_map(|s| self.location(kind, *id, s)));
        }
        out
    }

    /// Puts every location inside `packs` behind the blob's other locations
    /// (packs a prune is about to delete): a blob with a copy elsewhere is
    /// read from there; one without keeps its location in `packs`.
    pub fn demote_packs(&mut self, packs: &HashSet<PackId>) {
        let demoted: HashSet<u32> = packs
            .iter()
            .filter_map(|p| self.pack_idx.get(p).copied())
            .collect();
        if demoted.is_empty() {
            return;
        }
        for ((kind, id), slots) in &mut self.alternates {
            let Some(better) = slots.iter().position(|s| !demoted.contains(&s.pack_idx)) else {
                continue;
            };
            let map = match kind {
                BlobKind::Data => &mut self.data,
                BlobKind::Tree => &mut self.trees,
            };
            if let Some(first) = map.get_mut(id)
                && demoted.contains(&first.pack_idx)
                && let Some(slot) = slots.get_mut(better)
            {
                std::mem::swap(first, slot);
            }
        }
    }

    /// Every pack a location was ever recorded in (forgotten ones included).
    pub fn packs(&self) -> &[PackId] {
        &self.packs
    }

    /// Encodes this index as a segment: entries sorted by (kind, ID), so equal
    /// indexes encode to equal bytes; only packs that hold an entry are named.
    /// Alternates are not encoded. Fails with [`Error::Corrupt`] past
    /// [`MAX_SEGMENT_ENTRIES`]: writers split larger indexes.
    pub fn encode_segment(&self) -> Result<Vec<u8>, Error> {
        if self.len() > MAX_SEGMENT_ENTRIES {
            return Err(Error::Corrupt);
        }
        let mut entries: Vec<(BlobKind, &BlobId, &Slot)> = BlobKind::ALL
            .into_iter()
            .flat_map(|kind| self.map(kind).iter().map(move |(id, s)| (kind, id, s)))
            .collect();
        entries.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        // Renumber the packs actually used, in order of first use.
        let mut renumbered: HashMap<u32, u32> = HashMap::new();
        let mut used_packs: Vec<PackId> = Vec::new();
        for (_, _, slot) in &entries {
            if let std::collections::hash_map::Entry::Vacant(v) = renumbered.entry(slot.pack_idx) {
                v.insert(used_packs.len() as u32);
                used_packs.push(
                    *self
                        .packs
                        .get(slot.pack_idx as usize)
                        .ok_or(Error::Corrupt)?,
                );
            }
        }
        let mut out =
            Vec::with_capacity(HEADER_LEN + 4 + used_packs.len() * 32 + entries.len() * ENTRY_LEN);
        out.extend_from_slice(MAGIC);
        out.push(SEGMENT_VERSION);
        out.extend_from_slice(&(used_packs.len() as u32).to_le_bytes());
        for p in &used_packs {
            out.extend_from_slice(p.as_bytes());
        }
        out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        for (kind, id, s) in entries {
            let pack_idx = renumbered.get(&s.pack_idx).ok_or(Error::Corrupt)?;
            out.extend_from_slice(id.as_bytes());
            out.extend_from_slice(&pack_idx.to_le_bytes());
            out.push(kind as u8);
            out.push(s.compression as u8);
            out.extend_from_slice(&s.offset.to_le_bytes());
            out.extend_from_slice(&s.sealed_len.to_le_bytes());
            out.extend_from_slice(&s.plain_len.to_le_bytes());
        }
        Ok(out)
    }

    /// Decodes a segment. Rejects anything off-format (unsorted or duplicate
    /// entries, pack indices out of range, more than the format's limits,
    /// trailing bytes). Never panics.
    pub fn decode_segment(bytes: &[u8]) -> Result<Self, Error> {
        let mut r = Reader { bytes, at: 0 };
        if r.take(8)? != MAGIC || r.take(1)? != [SEGMENT_VERSION] {
            return Err(Error::Corrupt);
        }
        let n_packs = r.u32()? as usize;
        if n_packs > MAX_SEGMENT_PACKS
            || n_packs.checked_mul(32).ok_or(Error::Corrupt)? > r.remaining()
        {
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
        if n_entries > MAX_SEGMENT_ENTRIES
            || n_entries.checked_mul(ENTRY_LEN).ok_or(Error::Corrupt)? != r.remaining()
        {
            return Err(Error::Corrupt);
        }
        let mut previous: Option<(BlobKind, BlobId)> = None;
        for _ in 0..n_entries {
            let id = BlobId::from_bytes(r.array()?);
            let pack_idx = r.u32()?;
            if pack_idx as usize >= n_packs {
                return Err(Error::Corrupt);
            }
            let kind = BlobKind::from_u8(r.u8()?).ok_or(Error::Corrupt)?;
            if previous.is_some_and(|p| p >= (kind, id)) {
                return Err(Error::Corrupt);
            }
            previous = Some((kind, id));
            let compression = Compression::from_u8(r.u8()?).ok_or(Error::Corrupt)?;
            let slot = Slot {
                pack_idx,
                compression,
                offset: r.u32()?,
                sealed_len: r.u32()?,
                plain_len: r.u32()?,
            };
            index.map_mut(kind).insert(id, slot);
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

    fn kind_of(k: u8) -> BlobKind {
        if k.is_multiple_of(2) {
            BlobKind::Data
        } else {
            BlobKind::Tree
        }
    }

    #[test]
    fn demoted_packs_are_used_last_and_every_location_is_listed() {
        let mut index = Index::new();
        // Blob 1 first in pack 9 (to be deleted), then in pack 8; blob 2 only in 9.
        index.insert(location(1, BlobKind::Data, 9, 0));
        index.insert(location(1, BlobKind::Data, 8, 100));
        index.insert(location(2, BlobKind::Data, 9, 50));
        index.insert(location(3, BlobKind::Tree, 8, 0));
        assert_eq!(index.iter_locations().count(), 4);
        index.demote_packs(&HashSet::from([PackId::from_bytes([9; 32])]));
        let one = BlobId::from_bytes([1; 32]);
        assert_eq!(
            index.get(BlobKind::Data, &one),
            Some(location(1, BlobKind::Data, 8, 100))
        );
        assert_eq!(
            index.locations(BlobKind::Data, &one),
            vec![
                location(1, BlobKind::Data, 8, 100),
                location(1, BlobKind::Data, 9, 0)
            ]
        );
        // Without another copy the demoted location stays in use.
        assert_eq!(
            index.get(BlobKind::Data, &BlobId::from_bytes([2; 32])),
            Some(location(2, BlobKind::Data, 9, 50))
        );
        assert_eq!(index.iter_locations().count(), 4);
    }

    fn location(id: u8, kind: BlobKind, pack: u8, offset: u32) -> BlobLocation {
        BlobLocation {
            pack: PackId::from_bytes([pack; 32]),
            entry: PackEntry {
                id: BlobId::from_bytes([id; 32]),
                kind,
                compression: if id.is_multiple_of(3) {
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
        fn behaves_like_a_btreemap(ops in proptest::collection::vec((any::<u8>(), any::<u8>(), 0u8..6, any::<u32>()), 0..300), probes in proptest::collection::vec((any::<u8>(), any::<u8>()), 0..50)) {
            let mut index = Index::new();
            let mut model = BTreeMap::new();
            for (id, kind, pack, offset) in ops {
                let loc = location(id, kind_of(kind), pack, offset);
                index.insert(loc);
                model.entry((loc.entry.kind, loc.entry.id)).or_insert(loc);
            }
            prop_assert_eq!(index.len(), model.len());
            for (p, kind) in probes {
                let key = (kind_of(kind), BlobId::from_bytes([p; 32]));
                prop_assert_eq!(index.get(key.0, &key.1), model.get(&key).copied());
                prop_assert_eq!(index.contains(key.0, &key.1), model.contains_key(&key));
            }
            let decoded = Index::decode_segment(&index.encode_segment().unwrap()).unwrap();
            prop_assert_eq!(decoded.len(), model.len());
            for ((kind, id), loc) in &model {
                prop_assert_eq!(decoded.get(*kind, id), Some(*loc));
            }
        }

        /// A tree and a data blob with the same ID bytes are two blobs.
        #[test]
        fn kinds_with_equal_ids_coexist(id in any::<u8>(), pack_a in 0u8..4, pack_b in 0u8..4) {
            let mut index = Index::new();
            let data = location(id, BlobKind::Data, pack_a, 0);
            let tree = location(id, BlobKind::Tree, pack_b, 100);
            index.insert(data);
            index.insert(tree);
            prop_assert_eq!(index.len(), 2);
            prop_assert_eq!(index.get(BlobKind::Data, &data.entry.id), Some(data));
            prop_assert_eq!(index.get(BlobKind::Tree, &tree.entry.id), Some(tree));
            let decoded = Index::decode_segment(&index.encode_segment().unwrap()).unwrap();
            prop_assert_eq!(decoded.get(BlobKind::Data, &data.entry.id), Some(data));
            prop_assert_eq!(decoded.get(BlobKind::Tree, &tree.entry.id), Some(tree));
        }

        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Index::decode_segment(&bytes);
        }
    }

    #[test]
    fn forgetting_a_pack_promotes_alternates() {
        let mut index = Index::new();
        let first = location(1, BlobKind::Data, 1, 0);
        let second = location(1, BlobKind::Data, 2, 500);
        let only_in_lost = location(2, BlobKind::Tree, 1, 40);
        index.insert(first);
        index.insert(only_in_lost);
        index.insert(second);
        assert_eq!(index.get(BlobKind::Data, &first.entry.id), Some(first));
        let lost: HashSet<PackId> = [first.pack].into();
        assert_eq!(index.forget_packs(&lost), vec![only_in_lost]);
        assert_eq!(index.get(BlobKind::Data, &first.entry.id), Some(second));
        assert_eq!(index.get(BlobKind::Tree, &only_in_lost.entry.id), None);
        // The lost pack is named by no segment written afterwards.
        let decoded = Index::decode_segment(&index.encode_segment().unwrap()).unwrap();
        assert_eq!(decoded.len(), 1);
        assert!(!decoded.packs().contains(&first.pack));
    }

    #[test]
    fn forgetting_a_location_promotes_an_alternate() {
        let mut index = Index::new();
        let first = location(1, BlobKind::Data, 1, 0);
        let second = location(1, BlobKind::Data, 2, 500);
        index.insert(first);
        index.insert(second);
        assert!(index.forget_location(&first));
        assert_eq!(index.get(BlobKind::Data, &first.entry.id), Some(second));
        assert!(!index.forget_location(&second));
        assert_eq!(index.get(BlobKind::Data, &first.entry.id), None);
        // Forgetting an alternate keeps the first location.
        let mut index = Index::new();
        index.insert(first);
        index.insert(second);
        assert!(index.forget_location(&second));
        assert_eq!(index.get(BlobKind::Data, &first.entry.id), Some(first));
        assert!(!index.forget_location(&first));
    }

    #[test]
    fn rejects_unsorted_and_truncated() {
        let mut index = Index::new();
        index.insert(location(1, BlobKind::Data, 1, 0));
        index.insert(location(2, BlobKind::Data, 1, 40));
        let bytes = index.encode_segment().unwrap();
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

    #[test]
    fn rejects_counts_beyond_the_format() {
        let mut bytes = MAGIC.to_vec();
        bytes.push(SEGMENT_VERSION);
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&((MAX_SEGMENT_ENTRIES + 1) as u32).to_le_bytes());
        bytes.resize(bytes.len() + (MAX_SEGMENT_ENTRIES + 1) * ENTRY_LEN, 0);
        assert_eq!(Index::decode_segment(&bytes).unwrap_err(), Error::Corrupt);
    }
}
