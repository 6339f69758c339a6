//! Sealing: optional zstd, then AES-256-GCM-SIV with a random 96-bit nonce.
//!
//! Sealed bytes are `nonce (12) ‖ ciphertext ‖ tag (16)`. The associated data binds
//! the format version, the kind of thing sealed, its compression and its ID, so
//! the server cannot swap one blob for another, a tree for a data chunk, or an
//! index for a snapshot. Opening reports one opaque [`Error::Integrity`].

use aes_gcm_siv::aead::AeadInOut;
use aes_gcm_siv::{Nonce, Tag};

use crate::{Error, SealKey, random_bytes};

/// The repository format version bound into every seal.
pub const FORMAT_VERSION: u8 = 1;

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// zstd level for blobs that look compressible: level 3 is zstd's default
/// balance of speed and ratio.
const ZSTD_LEVEL: i32 = 3;
/// Bytes sampled by the compressibility probe.
const PROBE_SAMPLE: usize = 4096;
/// Shannon entropy (bits per byte) above which a sample is deemed incompressible:
/// JPEG, MP4, Opus and ciphertext sit at 7.9+, text and databases far below.
const INCOMPRESSIBLE_BITS_PER_BYTE: f64 = 7.5;

/// What is being sealed; bound into the associated data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
#[non_exhaustive]
pub enum SealKind {
    /// A chunk of file content.
    Data = 1,
    /// A directory tree blob.
    Tree = 2,
    /// The header of a pack file.
    PackHeader = 16,
    /// An index file.
    Index = 17,
    /// A snapshot file.
    Snapshot = 18,
    /// The repository config.
    Config = 19,
    /// A session marker of a running backup or prune.
    Session = 20,
    /// A condemnation record of prune.
    Condemned = 21,
    /// The locator of a padded pack (where its header and padding are).
    PackLocator = 22,
}

/// How a blob's plaintext was compressed before encryption.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Compression {
    /// Stored as is.
    None = 0,
    /// One zstd frame that records its content size.
    Zstd = 1,
}

impl Compression {
    /// Decodes the on-disk byte.
    pub fn from_u8(b: u8) -> Option<Self> {
        match b {
            0 => Some(Self::None),
            1 => Some(Self::Zstd),
            _ => None,
        }
    }
}

/// Output of [`seal`].
#[derive(Clone)]
pub struct SealedBlob {
    /// `nonce ‖ ciphertext ‖ tag`.
    pub bytes: Vec<u8>,
    /// Whether the plaintext was compressed (recorded by the caller, bound in the
    /// associated data).
    pub compression: Compression,
}

impl std::fmt::Debug for SealedBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedBlob")
            .field("len", &self.bytes.len())
            .field("compression", &self.compression)
            .finish()
    }
}

fn associated_data(kind: SealKind, compression: Compression, id: &[u8; 32]) -> [u8; 40] {
    let mut ad = [0u8; 40];
    ad[..5].copy_from_slice(b"cairn");
    ad[5] = FORMAT_VERSION;
    ad[6] = kind as u8;
    ad[7] = compression as u8;
    ad[8..].copy_from_slice(id);
    ad
}

/// Cheap probe: the byte entropy of a few spread-out samples. Costs one pass over
/// at most 4 KiB, so an incompressible chunk pays almost nothing for the question.
fn looks_compressible(data: &[u8]) -> bool {
    if data.len() < 64 {
        return false;
    }
    let mut counts = [0u32; 256];
    let mut n = 0u32;
    if data.len() <= PROBE_SAMPLE {
        for &b in data {
            counts[usize::from(b)] += 1;
        }
        n = data.len() as u32;
    } else {
        let piece = PROBE_SAMPLE / 4;
        let stride = (data.len() - piece) / 3;
        for i in 0..4 {
            let start = i * stride;
            for &b in data.get(start..start + piece).unwrap_or_default() {
                counts[usize::from(b)] += 1;
                n += 1;
            }
        }
    }
    let n = f64::from(n.max(1));
    let entropy: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum();
    entropy < INCOMPRESSIBLE_BITS_PER_BYTE
}

/// A plaintext laid out for sealing without another allocation or copy: room
/// for the nonce in front, room for the tag behind. Build it once from the
/// bytes to seal (that copy is the only one) and hand it to [`seal_buffer`].
/// Its `Debug` output shows the length only: it holds plaintext.
#[derive(Clone)]
pub struct SealBuffer {
    bytes: Vec<u8>,
}

impl std::fmt::Debug for SealBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealBuffer")
            .field("plain_len", &self.plaintext().len())
            .finish_non_exhaustive()
    }
}

impl SealBuffer {
    /// Copies `plaintext` into a new buffer.
    pub fn from_plaintext(plaintext: &[u8]) -> Self {
        Self::from_plaintext_in(Vec::new(), plaintext)
    }

    /// Copies `plaintext` into `storage` (its contents are discarded, its
    /// allocation reused: recycling buffers saves page faults on every chunk).
    pub fn from_plaintext_in(mut storage: Vec<u8>, plaintext: &[u8]) -> Self {
        storage.clear();
        storage.reserve(NONCE_LEN + plaintext.len() + TAG_LEN);
        storage.extend_from_slice(&[0; NONCE_LEN]);
        storage.extend_from_slice(plaintext);
        Self { bytes: storage }
    }

    /// The plaintext.
    pub fn plaintext(&self) -> &[u8] {
        self.bytes.get(NONCE_LEN..).unwrap_or_default()
    }
}

/// Seals `plaintext` as a `kind` named `id`. Compression is used only when the
/// probe says it may pay and the result is at least 1/32 smaller.
pub fn seal(
    key: &SealKey,
    kind: SealKind,
    id: &[u8; 32],
    plaintext: &[u8],
) -> Result<SealedBlob, Error> {
    seal_buffer(key, kind, id, SealBuffer::from_plaintext(plaintext))
}

/// Seals `plaintext` as a `kind` named `id`, never compressed: its sealed
/// length is always `plaintext.len() + SEAL_OVERHEAD` (for records whose
/// length must be fixed, and padded files, whose padding must not shrink).
pub fn seal_uncompressed(
    key: &SealKey,
    kind: SealKind,
    id: &[u8; 32],
    plaintext: &[u8],
) -> Result<Vec<u8>, Error> {
    let mut buffer = SealBuffer::from_plaintext(plaintext);
    encrypt_in_place(key, kind, Compression::None, id, &mut buffer)?;
    Ok(buffer.bytes)
}

/// [`seal`] on a prepared buffer: encrypts in place, no further allocation
/// unless compression pays. Sealing many blobs on one thread goes faster
/// through one [`Sealer`].
pub fn seal_buffer(
    key: &SealKey,
    kind: SealKind,
    id: &[u8; 32],
    buffer: SealBuffer,
) -> Result<SealedBlob, Error> {
    Sealer::new().seal_buffer(key, kind, id, buffer)
}

/// Sealing state kept between blobs on one thread: zstd's compression
/// context (creating one costs more than compressing a small blob) and the
/// buffer it compresses into. Its `Debug` output shows nothing of either.
pub struct Sealer {
    /// `None` if zstd could not be set up: blobs are then stored as they are.
    compressor: Option<zstd::bulk::Compressor<'static>>,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer").finish_non_exhaustive()
    }
}

impl Default for Sealer {
    fn default() -> Self {
        Self::new()
    }
}

impl Sealer {
    /// A sealer with a fresh compression context.
    pub fn new() -> Self {
        Self {
            compressor: zstd::bulk::Compressor::new(ZSTD_LEVEL).ok(),
            scratch: Vec::new(),
        }
    }

    /// Compresses `plaintext` into the scratch buffer; `true` if that pays.
    fn compress(&mut self, plaintext: &[u8]) -> bool {
        let Some(compressor) = self.compressor.as_mut() else {
            return false;
        };
        self.scratch.clear();
        self.scratch
            .reserve(zstd::zstd_safe::compress_bound(plaintext.len()));
        compressor
            .compress_to_buffer(plaintext, &mut self.scratch)
            .is_ok_and(|n| n + plaintext.len() / 32 < plaintext.len())
    }

    /// Seals a prepared buffer as a `kind` named `id`, encrypting in place.
    /// Compression is used only when the probe says it may pay and the result
    /// is at least 1/32 smaller; the compressed bytes then replace the
    /// plaintext in the same buffer.
    pub fn seal_buffer(
        &mut self,
        key: &SealKey,
        kind: SealKind,
        id: &[u8; 32],
        buffer: SealBuffer,
    ) -> Result<SealedBlob, Error> {
        self.seal_buffer_compressing(key, kind, id, buffer, true)
    }

    /// Like [`Self::seal_buffer`], compressing only if `may_compress`. A
    /// blob whose plaintext may hold an attacker's bytes beside a secret
    /// (a database page) is sealed uncompressed: its sealed length then
    /// says nothing about how well the two compress together.
    pub fn seal_buffer_compressing(
        &mut self,
        key: &SealKey,
        kind: SealKind,
        id: &[u8; 32],
        mut buffer: SealBuffer,
        may_compress: bool,
    ) -> Result<SealedBlob, Error> {
        let plaintext = buffer.plaintext();
        let compression =
            if may_compress && looks_compressible(plaintext) && self.compress(plaintext) {
                buffer.bytes.truncate(NONCE_LEN);
                buffer.bytes.extend_from_slice(&self.scratch);
                Compression::Zstd
            } else {
                Compression::None
            };
        encrypt_in_place(key, kind, compression, id, &mut buffer)?;
        Ok(SealedBlob {
            bytes: buffer.bytes,
            compression,
        })
    }
}

/// Encrypts a buffer's body (plaintext or compressed bytes) where it lies:
/// a fresh random nonce in front, the tag behind, `compression` bound in the
/// associated data with the kind and ID.
fn encrypt_in_place(
    key: &SealKey,
    kind: SealKind,
    compression: Compression,
    id: &[u8; 32],
    buffer: &mut SealBuffer,
) -> Result<(), Error> {
    let mut nonce = [0u8; NONCE_LEN];
    random_bytes(&mut nonce)?;
    let ad = associated_data(kind, compression, id);
    let body = buffer.bytes.get_mut(NONCE_LEN..).ok_or(Error::Integrity)?;
    let tag = key
        .cipher
        .encrypt_inout_detached(&Nonce::from(nonce), &ad, body.into())
        .map_err(|_| Error::Integrity)?;
    buffer
        .bytes
        .get_mut(..NONCE_LEN)
        .ok_or(Error::Integrity)?
        .copy_from_slice(&nonce);
    buffer.bytes.extend_from_slice(&tag);
    Ok(())
}

/// Opens sealed bytes. `max_plain_len` bounds what decompression may allocate.
/// Any failure (tampering, wrong kind or ID, bad compression) is `Integrity`.
/// Opening many blobs on one thread goes faster through one [`Opener`].
pub fn open(
    key: &SealKey,
    kind: SealKind,
    id: &[u8; 32],
    compression: Compression,
    sealed: &[u8],
    max_plain_len: usize,
) -> Result<Vec<u8>, Error> {
    let mut copy = sealed.to_vec();
    let body = decrypt_in_place(key, kind, id, compression, &mut copy, max_plain_len)?;
    match compression {
        Compression::None => {
            let len = body.len();
            copy.copy_within(NONCE_LEN..NONCE_LEN + len, 0);
            copy.truncate(len);
            Ok(copy)
        }
        Compression::Zstd => {
            zstd::bulk::decompress(body, max_plain_len).map_err(|_| Error::Integrity)
        }
    }
}

/// Seals `body` exactly as given, recorded as `compression` (a frame it may
/// not be): for fuzzing what an opener does with any frame that passes
/// authentication. Built only under `cargo fuzz` (`--cfg fuzzing`).
#[cfg(fuzzing)]
pub fn seal_as_is(
    key: &SealKey,
    kind: SealKind,
    id: &[u8; 32],
    compression: Compression,
    body: &[u8],
) -> Result<Vec<u8>, Error> {
    let mut buffer = SealBuffer::from_plaintext(body);
    encrypt_in_place(key, kind, compression, id, &mut buffer)?;
    Ok(buffer.bytes)
}

/// Authenticates and decrypts `sealed` where it lies; returns the body
/// (still compressed if it was). On failure the bytes are left garbled.
fn decrypt_in_place<'a>(
    key: &SealKey,
    kind: SealKind,
    id: &[u8; 32],
    compression: Compression,
    sealed: &'a mut [u8],
    max_plain_len: usize,
) -> Result<&'a [u8], Error> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(Error::Integrity);
    }
    let (nonce, rest) = sealed.split_at_mut(NONCE_LEN);
    let (body, tag) = rest.split_at_mut(rest.len() - TAG_LEN);
    let nonce = Nonce::try_from(&*nonce).map_err(|_| Error::Integrity)?;
    let tag = Tag::try_from(&*tag).map_err(|_| Error::Integrity)?;
    if compression == Compression::None && body.len() > max_plain_len {
        return Err(Error::Integrity);
    }
    let ad = associated_data(kind, compression, id);
    key.cipher
        .decrypt_inout_detached(&nonce, &ad, (&mut *body).into(), &tag)
        .map_err(|_| Error::Integrity)?;
    Ok(body)
}

/// Opening state kept between blobs on one thread (a restore worker): zstd's
/// decompression context (creating one costs more than decompressing a small
/// blob) and the buffer it decompresses into. Its `Debug` output shows
/// nothing of either.
pub struct Opener {
    /// Made on the first compressed blob; `None` until then, and if zstd
    /// could not be set up (each blob then gets its own).
    decompressor: Option<zstd::bulk::Decompressor<'static>>,
    out: Vec<u8>,
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opener").finish_non_exhaustive()
    }
}

impl Default for Opener {
    fn default() -> Self {
        Self::new()
    }
}

impl Opener {
    /// An opener; its decompression context is made when first needed.
    pub fn new() -> Self {
        Self {
            decompressor: None,
            out: Vec::new(),
        }
    }

    /// [`open`] without copies: decrypts `sealed` where it lies (garbling it
    /// on failure) and returns the plaintext, which is inside `sealed` when
    /// it was stored as is and inside this opener's buffer when it was
    /// compressed (valid until the next call).
    pub fn open_in_place<'a>(
        &'a mut self,
        key: &SealKey,
        kind: SealKind,
        id: &[u8; 32],
        compression: Compression,
        sealed: &'a mut [u8],
        max_plain_len: usize,
    ) -> Result<&'a [u8], Error> {
        let body = decrypt_in_place(key, kind, id, compression, sealed, max_plain_len)?;
        match compression {
            Compression::None => Ok(body),
            Compression::Zstd => {
                self.out.clear();
                if self.decompressor.is_none() {
                    self.decompressor = zstd::bulk::Decompressor::new().ok();
                }
                match self.decompressor.as_mut() {
                    Some(decompressor) => {
                        // The frame must fit `max_plain_len`: the buffer is
                        // never grown beyond it.
                        self.out.reserve(max_plain_len);
                        decompressor
                            .decompress_to_buffer(body, &mut self.out)
                            .map_err(|_| Error::Integrity)?;
                        if self.out.len() > max_plain_len {
                            return Err(Error::Integrity);
                        }
                    }
                    None => {
                        self.out = zstd::bulk::decompress(body, max_plain_len)
                            .map_err(|_| Error::Integrity)?;
                    }
                }
                Ok(&self.out)
            }
        }
    }
}

/// Bytes added by sealing an uncompressed plaintext.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MasterSecret, WorkingKeys};
    use proptest::prelude::*;

    fn keys() -> WorkingKeys {
        WorkingKeys::derive(&MasterSecret::generate().unwrap())
    }

    #[test]
    fn incompressible_data_is_stored_raw() {
        let k = keys();
        let mut data = vec![0u8; 100_000];
        random_bytes(&mut data).unwrap();
        let s = seal(&k.data, SealKind::Data, &[1; 32], &data).unwrap();
        assert_eq!(s.compression, Compression::None);
        assert_eq!(s.bytes.len(), data.len() + SEAL_OVERHEAD);
    }

    #[test]
    fn text_is_compressed() {
        let k = keys();
        let data = "hello chat history, ".repeat(5000);
        let s = seal(&k.data, SealKind::Data, &[1; 32], data.as_bytes()).unwrap();
        assert_eq!(s.compression, Compression::Zstd);
        assert!(s.bytes.len() < data.len() / 10);
        let back = open(
            &k.data,
            SealKind::Data,
            &[1; 32],
            s.compression,
            &s.bytes,
            data.len(),
        )
        .unwrap();
        assert_eq!(back, data.as_bytes());
        // The declared bound is enforced.
        assert!(
            open(
                &k.data,
                SealKind::Data,
                &[1; 32],
                s.compression,
                &s.bytes,
                10
            )
            .is_err()
        );
    }

    /// One sealer reused across blobs of every shape (compressible, not,
    /// empty, large after small) seals each exactly as a fresh one would.
    #[test]
    fn a_reused_sealer_seals_each_blob_as_a_fresh_one() {
        let k = keys();
        let mut noise = vec![0u8; 300_000];
        random_bytes(&mut noise).unwrap();
        let blobs: Vec<Vec<u8>> = vec![
            "text text text ".repeat(20_000).into_bytes(),
            noise.clone(),
            Vec::new(),
            b"short".to_vec(),
            "more text, different ".repeat(100).into_bytes(),
            noise[..1000].to_vec(),
            "a much larger text again ".repeat(100_000).into_bytes(),
        ];
        let mut sealer = Sealer::new();
        let mut opener = Opener::new();
        for (i, blob) in blobs.iter().enumerate() {
            let id = [i as u8; 32];
            let reused = sealer
                .seal_buffer(
                    &k.data,
                    SealKind::Data,
                    &id,
                    SealBuffer::from_plaintext(blob),
                )
                .unwrap();
            let fresh = seal(&k.data, SealKind::Data, &id, blob).unwrap();
            assert_eq!(reused.compression, fresh.compression, "blob {i}");
            assert_eq!(reused.bytes.len(), fresh.bytes.len(), "blob {i}");
            let back = open(
                &k.data,
                SealKind::Data,
                &id,
                reused.compression,
                &reused.bytes,
                blob.len(),
            )
            .unwrap();
            assert_eq!(&back, blob, "blob {i}");
            let mut in_place = reused.bytes.clone();
            let back = opener
                .open_in_place(
                    &k.data,
                    SealKind::Data,
                    &id,
                    reused.compression,
                    &mut in_place,
                    blob.len(),
                )
                .unwrap();
            assert_eq!(back, &blob[..], "blob {i}");
            // The declared bound holds in place too.
            if !blob.is_empty() {
                let mut in_place = reused.bytes.clone();
                assert_eq!(
                    opener.open_in_place(
                        &k.data,
                        SealKind::Data,
                        &id,
                        reused.compression,
                        &mut in_place,
                        blob.len() - 1
                    ),
                    Err(Error::Integrity),
                    "blob {i}"
                );
            }
        }
    }

    #[test]
    fn binding_of_kind_id_compression_and_key() {
        let k = keys();
        let s = seal(&k.data, SealKind::Data, &[1; 32], b"some plaintext bytes").unwrap();
        let ok = |key: &SealKey, kind, id: &[u8; 32], c| open(key, kind, id, c, &s.bytes, 1 << 20);
        assert!(ok(&k.data, SealKind::Data, &[1; 32], s.compression).is_ok());
        assert_eq!(
            ok(&k.data, SealKind::Tree, &[1; 32], s.compression),
            Err(Error::Integrity)
        );
        assert_eq!(
            ok(&k.data, SealKind::Data, &[2; 32], s.compression),
            Err(Error::Integrity)
        );
        assert_eq!(
            ok(&k.data, SealKind::Data, &[1; 32], Compression::Zstd),
            Err(Error::Integrity)
        );
        assert_eq!(
            ok(&k.metadata, SealKind::Data, &[1; 32], s.compression),
            Err(Error::Integrity)
        );
    }

    proptest! {
        #[test]
        fn open_seal_round_trips(data in proptest::collection::vec(any::<u8>(), 0..5000), rep in 1usize..4) {
            let k = keys();
            let data = data.repeat(rep);
            let s = seal(&k.metadata, SealKind::Tree, &[7; 32], &data).unwrap();
            let back = open(&k.metadata, SealKind::Tree, &[7; 32], s.compression, &s.bytes, data.len()).unwrap();
            prop_assert_eq!(back, data);
        }

        #[test]
        fn any_flip_fails(data in proptest::collection::vec(any::<u8>(), 1..2000), pos in any::<usize>(), bit in 0u8..8) {
            let k = keys();
            let mut s = seal(&k.data, SealKind::Data, &[3; 32], &data).unwrap();
            let i = pos % s.bytes.len();
            s.bytes[i] ^= 1 << bit;
            prop_assert_eq!(open(&k.data, SealKind::Data, &[3; 32], s.compression, &s.bytes, 1 << 20), Err(Error::Integrity));
            let mut opener = Opener::new();
            prop_assert_eq!(opener.open_in_place(&k.data, SealKind::Data, &[3; 32], s.compression, &mut s.bytes, 1 << 20), Err(Error::Integrity));
        }
    }
}
