//! Pack files: many sealed blobs, then their encrypted header, then a
//! trailer. A pack is written once, named by the BLAKE3 hash of its bytes, and
//! never modified. Chunk lengths are visible only inside the encrypted header.
//!
//! ```text
//! version 1 (formats 1 and 2):
//! [sealed blob 0] … [sealed blob n-1] [sealed header] [trailer: 12 bytes]
//! trailer = header_len u32 LE ‖ version u8 (1) ‖ header compression u8 ‖ magic "CAIRNP"
//!
//! version 2 (format 3: padded, nothing in plaintext but the version):
//! [sealed blob 0] … [sealed blob n-1] [padding: random bytes] [sealed header]
//!   [sealed locator: 38 bytes] [trailer: 12 bytes]
//! trailer = 0u32 ‖ version u8 (2) ‖ 0u8 ‖ magic "CAIRNP"
//! locator (plaintext, sealed as SealKind::PackLocator with a zero ID, uncompressed) =
//!   version u8 (2) ‖ header_len u32 LE ‖ header compression u8 ‖ pad_len u32 LE
//! the pack's length is cairn_crypto::padded_len of its length without padding
//!
//! header (plaintext, before sealing as SealKind::PackHeader with a zero ID) =
//!   version u8 (as the trailer's) ‖ n_entries u32 LE ‖ n_entries × entry (46 bytes)
//! entry = chunk id (32) ‖ kind u8 ‖ compression u8 ‖ offset u32 ‖ sealed_len u32
//!         ‖ plain_len u32   (all LE; offsets ascending, blobs contiguous from 0)
//! ```
//!
//! A version-1 trailer shows the header's length, hence the number of blobs,
//! and the pack's length then gives their bytes. A version-2 pack shows its
//! padded length only: the blob count, the blobs' bytes and the header's
//! place are sealed.
//!
//! This crate knows how to lay out and parse packs given a sealing key; it knows
//! nothing of where keys come from nor of storage backends.
#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

pub use cairn_crypto::BlobKind;
use cairn_crypto::{BlobId, Compression, Opener, PackId, SealKey, SealKind, SealedBlob};

/// Length of the trailer at the end of every pack.
pub const TRAILER_LEN: usize = 12;
/// Length of a version-2 pack's sealed locator, just before its trailer.
pub const LOCATOR_LEN: usize = LOCATOR_PLAIN_LEN + cairn_crypto::SEAL_OVERHEAD;
/// The most bytes after a pack's header: locator and trailer.
pub const MAX_TAIL_LEN: usize = LOCATOR_LEN + TRAILER_LEN;
const LOCATOR_PLAIN_LEN: usize = 10;
const TRAILER_MAGIC: &[u8; 6] = b"CAIRNP";
/// Unpadded packs with a plaintext header length (formats 1 and 2).
const PACK_V1: u8 = 1;
/// Padded packs with a sealed locator (format 3).
const PACK_V2: u8 = 2;
/// Bytes of one blob's entry in a pack header.
pub const ENTRY_LEN: usize = 46;
/// Largest plaintext blob a pack may declare (bounds decompression).
pub const MAX_BLOB_PLAIN_LEN: u32 = 64 * 1024 * 1024;
/// Most blobs one pack may hold; writers close a pack when it has this many.
pub const MAX_PACK_ENTRIES: usize = 1 << 18;
/// Largest header plaintext accepted (bounds decompression and allocation).
const MAX_HEADER_PLAIN_LEN: usize = 5 + ENTRY_LEN * MAX_PACK_ENTRIES;
/// Largest sealed header a trailer may announce: checked before anything is
/// read or allocated, since the trailer itself is not authenticated.
pub const MAX_HEADER_SEALED_LEN: u32 = (MAX_HEADER_PLAIN_LEN + cairn_crypto::SEAL_OVERHEAD) as u32;

/// Errors of this crate.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The pack (or a blob in it) is corrupt or has been tampered with.
    #[error("pack data is corrupt or has been tampered with")]
    Integrity,
    /// The pack would exceed the format's 4 GiB limit.
    #[error("pack too large")]
    TooLarge,
    /// Sealing failed (the system RNG failed).
    #[error("sealing failed: {0}")]
    Seal(cairn_crypto::Error),
}

impl From<cairn_crypto::Error> for Error {
    fn from(e: cairn_crypto::Error) -> Self {
        match e {
            cairn_crypto::Error::Integrity => Error::Integrity,
            other => Error::Seal(other),
        }
    }
}

/// One blob's entry in a pack header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PackEntry {
    /// The blob's ID.
    pub id: BlobId,
    /// Data or tree.
    pub kind: BlobKind,
    /// Compression of the plaintext.
    pub compression: Compression,
    /// Byte offset of the sealed blob in the pack.
    pub offset: u32,
    /// Length of the sealed blob.
    pub sealed_len: u32,
    /// Length of the plaintext.
    pub plain_len: u32,
}

/// Accumulates sealed blobs of one kind into a pack. Blobs are kept as they
/// were sealed, not copied into one buffer: the pack is written as parts.
#[derive(Debug)]
pub struct PackWriter {
    kind: BlobKind,
    parts: Vec<Vec<u8>>,
    len: usize,
    entries: Vec<PackEntry>,
}

/// A finished pack, ready to store under `id`: its bytes are `parts`, in order.
#[derive(Debug)]
pub struct FinishedPack {
    /// BLAKE3 of the pack's bytes: its name.
    pub id: PackId,
    /// The pack file's bytes, in pieces (sealed blobs, then header and trailer).
    pub parts: Vec<Vec<u8>>,
    /// The blobs it holds.
    pub entries: Vec<PackEntry>,
}

impl FinishedPack {
    /// Size of the pack file.
    pub fn len(&self) -> usize {
        self.parts.iter().map(Vec::len).sum()
    }

    /// Whether the pack file is empty (never: it has at least a trailer).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The pack file's bytes in one buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.parts.concat()
    }
}

impl PackWriter {
    /// An empty pack for blobs of `kind`.
    pub fn new(kind: BlobKind) -> Self {
        Self {
            kind,
            parts: Vec::new(),
            len: 0,
            entries: Vec::new(),
        }
    }

    /// The kind of blobs this pack holds.
    pub fn kind(&self) -> BlobKind {
        self.kind
    }

    /// Bytes of blobs added so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no blob was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the pack holds [`MAX_PACK_ENTRIES`] blobs and must be finished.
    pub fn is_full(&self) -> bool {
        self.entries.len() >= MAX_PACK_ENTRIES
    }

    /// Appends a sealed blob (taking its buffer, not copying it).
    pub fn add(&mut self, id: BlobId, sealed: SealedBlob, plain_len: usize) -> Result<(), Error> {
        if self.is_full() {
            return Err(Error::TooLarge);
        }
        let offset = u32::try_from(self.len).map_err(|_| Error::TooLarge)?;
        let sealed_len = u32::try_from(sealed.bytes.len()).map_err(|_| Error::TooLarge)?;
        let plain_len = u32::try_from(plain_len)
            .ok()
            .filter(|&n| n <= MAX_BLOB_PLAIN_LEN)
            .ok_or(Error::TooLarge)?;
        offset.checked_add(sealed_len).ok_or(Error::TooLarge)?;
        self.len += sealed.bytes.len();
        self.entries.push(PackEntry {
            id,
            kind: self.kind,
            compression: sealed.compression,
            offset,
            sealed_len,
            plain_len,
        });
        self.parts.push(sealed.bytes);
        Ok(())
    }

    /// Seals the header with `key`, adds it and the trailer, and names the
    /// pack: version 1, unpadded (formats 1 and 2).
    pub fn finish(self, key: &SealKey) -> Result<FinishedPack, Error> {
        let header = encode_header(&self.entries, PACK_V1);
        let sealed = cairn_crypto::seal(key, SealKind::PackHeader, &[0; 32], &header)?;
        let header_len = u32::try_from(sealed.bytes.len()).map_err(|_| Error::TooLarge)?;
        let mut tail = sealed.bytes;
        tail.extend_from_slice(&header_len.to_le_bytes());
        tail.push(PACK_V1);
        tail.push(sealed.compression as u8);
        tail.extend_from_slice(TRAILER_MAGIC);
        u32::try_from(self.len + tail.len()).map_err(|_| Error::TooLarge)?;
        let mut parts = self.parts;
        parts.push(tail);
        Ok(FinishedPack {
            id: PackId::of_parts(&parts),
            parts,
            entries: self.entries,
        })
    }

    /// Like [`Self::finish`], as version 2 (format 3): random padding up to
    /// the padded length after the blobs, and the header's length, its
    /// compression and the padding's length sealed in the locator. What the
    /// server sees is the padded length alone.
    pub fn finish_padded(self, key: &SealKey) -> Result<FinishedPack, Error> {
        // Uncompressed: entries are mostly random IDs, and a header whose
        // length depended on its content would say more than its count.
        let header = encode_header(&self.entries, PACK_V2);
        let sealed = cairn_crypto::seal_uncompressed(key, SealKind::PackHeader, &[0; 32], &header)?;
        let header_len = u32::try_from(sealed.len()).map_err(|_| Error::TooLarge)?;
        let unpadded = (self.len + sealed.len() + MAX_TAIL_LEN) as u64;
        let total = cairn_crypto::padded_len(unpadded);
        let pad_len = u32::try_from(total - unpadded).map_err(|_| Error::TooLarge)?;
        u32::try_from(total).map_err(|_| Error::TooLarge)?;
        // Random, so that where the blobs end cannot be told from the bytes.
        let mut padding = vec![0u8; pad_len as usize];
        cairn_crypto::random_bytes(&mut padding)?;
        let mut locator = [0u8; LOCATOR_PLAIN_LEN];
        locator[0] = PACK_V2;
        locator[1..5].copy_from_slice(&header_len.to_le_bytes());
        locator[5] = Compression::None as u8;
        locator[6..10].copy_from_slice(&pad_len.to_le_bytes());
        let mut tail = sealed;
        tail.extend_from_slice(&cairn_crypto::seal_uncompressed(
            key,
            SealKind::PackLocator,
            &[0; 32],
            &locator,
        )?);
        tail.extend_from_slice(&[0; 4]);
        tail.push(PACK_V2);
        tail.push(0);
        tail.extend_from_slice(TRAILER_MAGIC);
        let mut parts = self.parts;
        parts.push(padding);
        parts.push(tail);
        Ok(FinishedPack {
            id: PackId::of_parts(&parts),
            parts,
            entries: self.entries,
        })
    }
}

/// Parsed trailer (and, in version 2, locator): where the sealed header is
/// and how it is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trailer {
    /// The pack's version (1 or 2).
    pub version: u8,
    /// Length of the sealed header.
    pub header_len: u32,
    /// Compression of the header plaintext.
    pub header_compression: Compression,
    /// Bytes after the header: the trailer, and the locator in version 2.
    pub tail_len: u32,
    /// Padding between the blobs and the header (0 in version 1).
    pub pad_len: u32,
}

impl Trailer {
    /// Bytes from the header's start to the pack's end.
    pub fn header_and_tail(&self) -> u64 {
        u64::from(self.header_len) + u64::from(self.tail_len)
    }

    /// Where the blobs end in a pack of `size` bytes, or `None` if the pack
    /// is too short for what the trailer says.
    pub fn blobs_len(&self, size: u64) -> Option<u32> {
        let blobs = size
            .checked_sub(self.header_and_tail())?
            .checked_sub(u64::from(self.pad_len))?;
        u32::try_from(blobs).ok()
    }
}

/// Decodes the end of a pack: `tail` holds its last bytes, at least
/// [`TRAILER_LEN`] (version 1) or [`MAX_TAIL_LEN`] (version 2; fewer is
/// `Integrity`). A version-2 locator is authenticated under `key`; a
/// version-1 trailer is not, and its header length is bounded before
/// anything is read for it. Never panics.
pub fn decode_trailer(key: &SealKey, tail: &[u8]) -> Result<Trailer, Error> {
    let trailer_at = tail
        .len()
        .checked_sub(TRAILER_LEN)
        .ok_or(Error::Integrity)?;
    let trailer: &[u8; TRAILER_LEN] = tail
        .get(trailer_at..)
        .and_then(|t| t.try_into().ok())
        .ok_or(Error::Integrity)?;
    let [a, b, c, d, version, compression, magic @ ..] = *trailer;
    if &magic != TRAILER_MAGIC {
        return Err(Error::Integrity);
    }
    let in_range =
        |len: u32| (cairn_crypto::SEAL_OVERHEAD as u32..=MAX_HEADER_SEALED_LEN).contains(&len);
    match version {
        PACK_V1 => {
            let header_len = u32::from_le_bytes([a, b, c, d]);
            let header_compression = Compression::from_u8(compression).ok_or(Error::Integrity)?;
            if !in_range(header_len) {
                return Err(Error::Integrity);
            }
            Ok(Trailer {
                version,
                header_len,
                header_compression,
                tail_len: TRAILER_LEN as u32,
                pad_len: 0,
            })
        }
        PACK_V2 => {
            if [a, b, c, d, compression] != [0; 5] {
                return Err(Error::Integrity);
            }
            let locator_at = trailer_at
                .checked_sub(LOCATOR_LEN)
                .ok_or(Error::Integrity)?;
            let sealed = tail.get(locator_at..trailer_at).ok_or(Error::Integrity)?;
            let plain = cairn_crypto::open(
                key,
                SealKind::PackLocator,
                &[0; 32],
                Compression::None,
                sealed,
                LOCATOR_PLAIN_LEN,
            )?;
            let plain: &[u8; LOCATOR_PLAIN_LEN] =
                plain.as_slice().try_into().map_err(|_| Error::Integrity)?;
            let [v, h0, h1, h2, h3, compression, p0, p1, p2, p3] = *plain;
            let header_len = u32::from_le_bytes([h0, h1, h2, h3]);
            let header_compression = Compression::from_u8(compression).ok_or(Error::Integrity)?;
            if v != PACK_V2 || !in_range(header_len) {
                return Err(Error::Integrity);
            }
            Ok(Trailer {
                version,
                header_len,
                header_compression,
                tail_len: MAX_TAIL_LEN as u32,
                pad_len: u32::from_le_bytes([p0, p1, p2, p3]),
            })
        }
        _ => Err(Error::Integrity),
    }
}

fn encode_header(entries: &[PackEntry], version: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + entries.len() * ENTRY_LEN);
    out.push(version);
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        out.extend_from_slice(e.id.as_bytes());
        out.push(e.kind as u8);
        out.push(e.compression as u8);
        out.extend_from_slice(&e.offset.to_le_bytes());
        out.extend_from_slice(&e.sealed_len.to_le_bytes());
        out.extend_from_slice(&e.plain_len.to_le_bytes());
    }
    out
}

fn u32_at(bytes: &[u8], at: usize) -> Result<u32, Error> {
    let b = bytes.get(at..at + 4).ok_or(Error::Integrity)?;
    Ok(u32::from_le_bytes(
        b.try_into().map_err(|_| Error::Integrity)?,
    ))
}

/// Decodes a header's plaintext of a pack of `version` and checks that its
/// blobs tile `0..blobs_len` exactly, in order, each no smaller than a seal's
/// overhead, all of one kind. Never panics.
pub fn decode_header(plain: &[u8], version: u8, blobs_len: u32) -> Result<Vec<PackEntry>, Error> {
    let (&header_version, rest) = plain.split_first().ok_or(Error::Integrity)?;
    if header_version != version {
        return Err(Error::Integrity);
    }
    let n_entries = u32_at(rest, 0)? as usize;
    let body = rest.get(4..).ok_or(Error::Integrity)?;
    if n_entries > MAX_PACK_ENTRIES
        || body.len() != n_entries.checked_mul(ENTRY_LEN).ok_or(Error::Integrity)?
    {
        return Err(Error::Integrity);
    }
    let mut entries = Vec::with_capacity(n_entries);
    let mut expected_offset = 0u32;
    for raw in body.chunks_exact(ENTRY_LEN) {
        let id: [u8; 32] = raw
            .get(..32)
            .and_then(|b| b.try_into().ok())
            .ok_or(Error::Integrity)?;
        let kind =
            BlobKind::from_u8(*raw.get(32).ok_or(Error::Integrity)?).ok_or(Error::Integrity)?;
        let compression =
            Compression::from_u8(*raw.get(33).ok_or(Error::Integrity)?).ok_or(Error::Integrity)?;
        let offset = u32_at(raw, 34)?;
        let sealed_len = u32_at(raw, 38)?;
        let plain_len = u32_at(raw, 42)?;
        if offset != expected_offset
            || entries
                .first()
                .is_some_and(|first: &PackEntry| first.kind != kind)
            || (sealed_len as usize) < cairn_crypto::SEAL_OVERHEAD
            || plain_len > MAX_BLOB_PLAIN_LEN
        {
            return Err(Error::Integrity);
        }
        expected_offset = offset.checked_add(sealed_len).ok_or(Error::Integrity)?;
        entries.push(PackEntry {
            id: BlobId::from_bytes(id),
            kind,
            compression,
            offset,
            sealed_len,
            plain_len,
        });
    }
    if expected_offset != blobs_len {
        return Err(Error::Integrity);
    }
    Ok(entries)
}

/// Reads the entries of a whole pack (used to rebuild or check the index).
/// Also verifies that the bytes hash to `expected_id`.
pub fn read_pack_entries(
    key: &SealKey,
    expected_id: &PackId,
    bytes: &[u8],
) -> Result<Vec<PackEntry>, Error> {
    if PackId::of_bytes(bytes) != *expected_id {
        return Err(Error::Integrity);
    }
    let trailer = decode_trailer(key, bytes)?;
    let size = bytes.len() as u64;
    let blobs_len = trailer.blobs_len(size).ok_or(Error::Integrity)?;
    let header_at =
        usize::try_from(size - trailer.header_and_tail()).map_err(|_| Error::Integrity)?;
    let sealed_header = bytes
        .get(header_at..header_at + trailer.header_len as usize)
        .ok_or(Error::Integrity)?;
    open_header(key, &trailer, sealed_header, blobs_len)
}

/// Opens and decodes the sealed header of the pack `trailer` describes,
/// whose blobs occupy `0..blobs_len`.
pub fn open_header(
    key: &SealKey,
    trailer: &Trailer,
    sealed_header: &[u8],
    blobs_len: u32,
) -> Result<Vec<PackEntry>, Error> {
    let plain = cairn_crypto::open(
        key,
        SealKind::PackHeader,
        &[0; 32],
        trailer.header_compression,
        sealed_header,
        MAX_HEADER_PLAIN_LEN,
    )?;
    decode_header(&plain, trailer.version, blobs_len)
}

/// Opens one sealed blob described by `entry` (its bytes fetched by the caller
/// from `entry.offset`). Verifies kind, ID and content; any failure is `Integrity`.
pub fn open_blob(key: &SealKey, entry: &PackEntry, sealed: &[u8]) -> Result<Vec<u8>, Error> {
    let mut copy = sealed.to_vec();
    open_blob_in_place(key, entry, &mut copy, &mut Opener::new()).map(<[u8]>::to_vec)
}

/// [`open_blob`] without copies, through a reused [`Opener`]: decrypts
/// `sealed` where it lies (garbled on failure). The plaintext is valid until
/// the opener's next use.
pub fn open_blob_in_place<'a>(
    key: &SealKey,
    entry: &PackEntry,
    sealed: &'a mut [u8],
    opener: &'a mut Opener,
) -> Result<&'a [u8], Error> {
    if sealed.len() != entry.sealed_len as usize {
        return Err(Error::Integrity);
    }
    let plain = opener.open_in_place(
        key,
        entry.kind.seal_kind(),
        entry.id.as_bytes(),
        entry.compression,
        sealed,
        entry.plain_len as usize,
    )?;
    if plain.len() != entry.plain_len as usize {
        return Err(Error::Integrity);
    }
    Ok(plain)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use cairn_crypto::{MasterSecret, WorkingKeys};
    use proptest::prelude::*;

    fn keys() -> WorkingKeys {
        WorkingKeys::derive(&MasterSecret::generate().unwrap())
    }

    fn writer(k: &WorkingKeys, blobs: &[Vec<u8>]) -> PackWriter {
        let mut w = PackWriter::new(BlobKind::Data);
        for b in blobs {
            let id = k.blob_ids.id_of(BlobKind::Data, b);
            let sealed = cairn_crypto::seal(&k.data, SealKind::Data, id.as_bytes(), b).unwrap();
            w.add(id, sealed, b.len()).unwrap();
        }
        w
    }

    fn build(k: &WorkingKeys, blobs: &[Vec<u8>]) -> FinishedPack {
        writer(k, blobs).finish(&k.metadata).unwrap()
    }

    fn build_padded(k: &WorkingKeys, blobs: &[Vec<u8>]) -> FinishedPack {
        writer(k, blobs).finish_padded(&k.metadata).unwrap()
    }

    type Build = fn(&WorkingKeys, &[Vec<u8>]) -> FinishedPack;

    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    /// Both versions.
    fn builds() -> [Build; 2] {
        [build, build_padded]
    }

    proptest! {
        #[test]
        fn encode_decode_round_trips(blobs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..3000), 0..12), padded in any::<bool>()) {
            let k = keys();
            let pack = builds()[usize::from(padded)](&k, &blobs);
            let bytes = pack.to_bytes();
            prop_assert_eq!(bytes.len(), pack.len());
            let entries = read_pack_entries(&k.metadata, &pack.id, &bytes).unwrap();
            prop_assert_eq!(&entries, &pack.entries);
            let mut opener = Opener::new();
            let mut in_place = bytes.clone();
            for (e, b) in entries.iter().zip(&blobs) {
                let range = e.offset as usize..(e.offset + e.sealed_len) as usize;
                prop_assert_eq!(&open_blob(&k.data, e, &bytes[range.clone()]).unwrap(), b);
                prop_assert_eq!(open_blob_in_place(&k.data, e, &mut in_place[range], &mut opener).unwrap(), &b[..]);
                prop_assert_eq!(e.id, k.blob_ids.id_of(BlobKind::Data, b));
            }
        }

        #[test]
        fn flipped_byte_is_detected(pos in any::<usize>(), padded in any::<bool>()) {
            let k = keys();
            let pack = builds()[usize::from(padded)](&k, &[b"first blob".to_vec(), noise(5000, 3)]);
            let mut bytes = pack.to_bytes();
            // A padded pack's padding is only covered by the pack's name.
            let blobs_end = pack.entries.last().map_or(0, |e| (e.offset + e.sealed_len) as usize);
            let pad = usize::from(padded) * (pack.len() - blobs_end - (pack.parts.last().unwrap().len()));
            let i = pos % bytes.len();
            let in_padding = (blobs_end..blobs_end + pad).contains(&i);
            bytes[i] ^= 0x40;
            prop_assert_eq!(read_pack_entries(&k.metadata, &pack.id, &bytes), Err(Error::Integrity));
            if in_padding {
                return Ok(());
            }
            // Even if the caller skips the pack hash, the header and blobs are sealed.
            let fake_id = PackId::of_bytes(&bytes);
            match read_pack_entries(&k.metadata, &fake_id, &bytes) {
                Err(Error::Integrity) => {}
                Ok(entries) => {
                    let mut any_failed = false;
                    for e in &entries {
                        let range = e.offset as usize..(e.offset + e.sealed_len) as usize;
                        any_failed |= open_blob(&k.data, e, &bytes[range]).is_err();
                    }
                    prop_assert!(any_failed);
                }
                Err(e) => prop_assert!(false, "unexpected {e:?}"),
            }
        }

        #[test]
        fn header_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400), blobs_len in any::<u32>(), version in 0u8..4) {
            let k = keys();
            let _ = decode_header(&bytes, version, blobs_len);
            let _ = decode_trailer(&k.metadata, &bytes);
        }

        /// What a padded pack shows the server: its length, a function of
        /// the padded total only (not of how many blobs, nor of their exact
        /// bytes), and no plaintext field but the version.
        #[test]
        fn a_padded_pack_shows_only_its_padded_length(
            sizes in proptest::collection::vec(0usize..40_000, 0..8),
            split in any::<proptest::sample::Index>(),
        ) {
            let k = keys();
            // Incompressible, so that sizes reach past the 4 KiB floor.
            let blobs: Vec<Vec<u8>> = sizes.iter().map(|&n| noise(n, n as u64)).collect();
            let pack = build_padded(&k, &blobs);
            let sealed: usize = pack.entries.iter().map(|e| e.sealed_len as usize).sum();
            prop_assert_eq!(sealed, sizes.iter().sum::<usize>() + 28 * sizes.len());
            let header = 5 + ENTRY_LEN * blobs.len() + cairn_crypto::SEAL_OVERHEAD;
            let unpadded = (sealed + header + MAX_TAIL_LEN) as u64;
            prop_assert_eq!(pack.len() as u64, cairn_crypto::padded_len(unpadded));
            let bytes = pack.to_bytes();
            prop_assert_eq!(&bytes[bytes.len() - TRAILER_LEN..], &[0, 0, 0, 0, PACK_V2, 0, b'C', b'A', b'I', b'R', b'N', b'P'][..]);
            // The same bytes split into one more blob (a cut moved) pad to
            // the same length unless the total crosses a bucket.
            if let Some(at) = (!blobs.is_empty()).then(|| split.index(blobs.len())) {
                let mut more = blobs.clone();
                let half = more[at].len() / 2;
                let tail = more[at].split_off(half);
                more.insert(at + 1, tail);
                let other = build_padded(&k, &more);
                let other_unpadded = unpadded + (ENTRY_LEN + cairn_crypto::SEAL_OVERHEAD) as u64;
                prop_assert_eq!(other.len() as u64, cairn_crypto::padded_len(other_unpadded));
                if cairn_crypto::padded_len(unpadded) == cairn_crypto::padded_len(other_unpadded) {
                    prop_assert_eq!(other.len(), pack.len());
                }
            }
        }
    }

    /// Regression: the trailer's header length was believed before
    /// authentication, so a 12-byte lie could ask for a 4 GiB allocation.
    #[test]
    fn trailer_header_length_is_bounded_before_use() {
        let k = keys();
        let pack = build(&k, &[b"blob".to_vec()]);
        let bytes = pack.to_bytes();
        let mut tail: Vec<u8> = bytes[bytes.len() - TRAILER_LEN..].to_vec();
        assert!(decode_trailer(&k.metadata, &tail).is_ok());
        for lie in [u32::MAX, MAX_HEADER_SEALED_LEN + 1, 0, 27] {
            tail[..4].copy_from_slice(&lie.to_le_bytes());
            assert_eq!(
                decode_trailer(&k.metadata, &tail),
                Err(Error::Integrity),
                "{lie}"
            );
        }
    }

    /// A padded pack's locator is sealed: changed, moved to another pack,
    /// or read with another key, it is refused; a version-2 trailer with
    /// a plaintext field set, or too short a tail, is refused.
    #[test]
    fn a_padded_packs_locator_is_authenticated() {
        let k = keys();
        let a_pack = build_padded(&k, &[vec![1u8; 9000]]);
        let a_blobs = a_pack.entries.iter().map(|e| e.sealed_len).sum::<u32>();
        let a = a_pack.to_bytes();
        let b = build_padded(&k, &[vec![2u8; 100], vec![3u8; 200]]).to_bytes();
        let tail = |bytes: &[u8]| bytes[bytes.len() - MAX_TAIL_LEN..].to_vec();
        let t = decode_trailer(&k.metadata, &tail(&a)).unwrap();
        assert_eq!((t.version, t.tail_len as usize), (PACK_V2, MAX_TAIL_LEN));
        assert_eq!(t.blobs_len(a.len() as u64), Some(a_blobs));
        assert!(decode_trailer(&keys().metadata, &tail(&a)).is_err());
        assert!(decode_trailer(&k.metadata, &a[a.len() - MAX_TAIL_LEN - 7..]).is_ok());
        assert!(decode_trailer(&k.metadata, &tail(&a)[1..]).is_err());
        let mut flipped = tail(&a);
        flipped[5] ^= 1;
        assert!(decode_trailer(&k.metadata, &flipped).is_err());
        let mut plain_field = tail(&a);
        plain_field[LOCATOR_LEN] = 1;
        assert!(decode_trailer(&k.metadata, &plain_field).is_err());
        // B's locator on A: its header is not where it says.
        let mut swapped = a.clone();
        let n = swapped.len();
        swapped[n - MAX_TAIL_LEN..].copy_from_slice(&tail(&b));
        assert!(read_pack_entries(&k.metadata, &PackId::of_bytes(&swapped), &swapped).is_err());
    }

    #[test]
    fn a_header_mixing_kinds_is_corrupt() {
        let entry = |kind, offset| PackEntry {
            id: BlobId::from_bytes([offset as u8; 32]),
            kind,
            compression: Compression::None,
            offset,
            sealed_len: 30,
            plain_len: 2,
        };
        let header = encode_header(
            &[entry(BlobKind::Data, 0), entry(BlobKind::Tree, 30)],
            PACK_V1,
        );
        assert_eq!(decode_header(&header, PACK_V1, 60), Err(Error::Integrity));
        let header = encode_header(
            &[entry(BlobKind::Tree, 0), entry(BlobKind::Tree, 30)],
            PACK_V1,
        );
        assert!(decode_header(&header, PACK_V1, 60).is_ok());
        assert!(decode_header(&header, PACK_V2, 60).is_err());
    }

    #[test]
    fn empty_pack_round_trips() {
        let k = keys();
        for build in builds() {
            let pack = build(&k, &[]);
            assert!(
                read_pack_entries(&k.metadata, &pack.id, &pack.to_bytes())
                    .unwrap()
                    .is_empty()
            );
            assert_eq!(
                read_pack_entries(&k.metadata, &pack.id, &pack.to_bytes()[1..]),
                Err(Error::Integrity)
            );
        }
    }
}
