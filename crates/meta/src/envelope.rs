//! The envelope of whole metadata files (config, index files, snapshots,
//! session markers, condemnation records):
//!
//! ```text
//! version 1 (formats 1 and 2):
//!   magic (8) ‖ 1 u8 ‖ compression u8 ‖ sealed plaintext (nonce ‖ ct ‖ tag)
//! version 2 (format 3, padded):
//!   magic (8) ‖ 2 u8 ‖ 0 u8 ‖ sealed, uncompressed: len u32 LE ‖ plaintext ‖ zeros
//!   the file's length is cairn_crypto::padded_len of its length without zeros
//! ```
//!
//! The magic says what the file claims to be; the seal kind bound into the
//! associated data makes that claim authenticated, and so is the version
//! (the associated data's ID is 32 bytes of the version's number minus one:
//! zeros in version 1, ones in version 2), so relabelling fails. A padded
//! file shows the server its padded length only.

use cairn_crypto::{Compression, FORMAT_VERSION, SealKey, SealKind};

/// The envelope of padded files (format 3).
const PADDED_VERSION: u8 = 2;

use crate::{Error, corrupt};

/// Largest plaintext of a metadata file (bounds decompression).
pub const MAX_FILE_PLAIN_LEN: usize = 1 << 30;
const HEADER_LEN: usize = 10;

/// Seals `plaintext` as a metadata file of `kind` starting with `magic`:
/// padded (format 3) or compressed when that pays (formats 1 and 2).
pub fn seal_file(
    key: &SealKey,
    kind: SealKind,
    magic: &[u8; 8],
    plaintext: &[u8],
    padded: bool,
) -> Result<Vec<u8>, Error> {
    if padded {
        return seal_padded(key, kind, magic, plaintext);
    }
    let sealed = cairn_crypto::seal(key, kind, &[0; 32], plaintext).map_err(Error::Seal)?;
    let mut out = Vec::with_capacity(HEADER_LEN + sealed.bytes.len());
    out.extend_from_slice(magic);
    out.push(FORMAT_VERSION);
    out.push(sealed.compression as u8);
    out.extend_from_slice(&sealed.bytes);
    Ok(out)
}

fn seal_padded(
    key: &SealKey,
    kind: SealKind,
    magic: &[u8; 8],
    plaintext: &[u8],
) -> Result<Vec<u8>, Error> {
    let len = u32::try_from(plaintext.len())
        .ok()
        .filter(|&n| n as usize <= MAX_FILE_PLAIN_LEN)
        .ok_or_else(|| Error::Invalid("metadata file too large".into()))?;
    let overhead = HEADER_LEN + cairn_crypto::SEAL_OVERHEAD + 4;
    let total = cairn_crypto::padded_len((overhead + plaintext.len()) as u64) as usize;
    let mut body = Vec::with_capacity(total - HEADER_LEN - cairn_crypto::SEAL_OVERHEAD);
    body.extend_from_slice(&len.to_le_bytes());
    body.extend_from_slice(plaintext);
    body.resize(total - HEADER_LEN - cairn_crypto::SEAL_OVERHEAD, 0);
    let sealed = cairn_crypto::seal_uncompressed(key, kind, &version_id(PADDED_VERSION), &body)
        .map_err(Error::Seal)?;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(magic);
    out.push(PADDED_VERSION);
    out.push(Compression::None as u8);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Opens a metadata file of `kind` that must start with `magic`, padded or
/// not. Never panics.
pub fn open_file(
    key: &SealKey,
    kind: SealKind,
    magic: &[u8; 8],
    bytes: &[u8],
) -> Result<Vec<u8>, Error> {
    let (head, sealed) = bytes
        .split_at_checked(HEADER_LEN)
        .ok_or(corrupt("envelope"))?;
    let (file_magic, rest) = head.split_at(8);
    if file_magic != magic {
        return Err(corrupt("envelope"));
    }
    let [version, compression] = rest else {
        return Err(corrupt("envelope"));
    };
    if *version != FORMAT_VERSION && *version != PADDED_VERSION {
        // A newer cairn or a flipped byte: the version is outside the seal, so
        // we cannot tell which, and say both.
        return Err(Error::UnsupportedVersion(*version));
    }
    let compression = Compression::from_u8(*compression).ok_or(corrupt("envelope"))?;
    if *version == PADDED_VERSION && compression != Compression::None {
        return Err(corrupt("envelope"));
    }
    let plain = cairn_crypto::open(
        key,
        kind,
        &version_id(*version),
        compression,
        sealed,
        MAX_FILE_PLAIN_LEN + 4 + MAX_PADDING,
    )
    .map_err(|e| match e {
        cairn_crypto::Error::Integrity => corrupt("envelope"),
        other => Error::Seal(other),
    })?;
    if *version == FORMAT_VERSION {
        return Ok(plain);
    }
    // Padded: the length, the plaintext, then zeros only.
    let (len, rest) = plain.split_at_checked(4).ok_or(corrupt("envelope"))?;
    let len = u32::from_le_bytes(len.try_into().map_err(|_| corrupt("envelope"))?) as usize;
    let (content, zeros) = rest.split_at_checked(len).ok_or(corrupt("envelope"))?;
    if len > MAX_FILE_PLAIN_LEN || zeros.iter().any(|&b| b != 0) {
        return Err(corrupt("envelope"));
    }
    Ok(content.to_vec())
}

/// The ID bound into the associated data: the envelope's version.
fn version_id(version: u8) -> [u8; 32] {
    [version.saturating_sub(1); 32]
}

/// The most padding a file of [`MAX_FILE_PLAIN_LEN`] gets (Padmé: under 2^-5).
const MAX_PADDING: usize = MAX_FILE_PLAIN_LEN / 32;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use cairn_crypto::{MasterSecret, WorkingKeys};

    #[test]
    fn round_trip_and_every_kind_of_damage() {
        let keys = WorkingKeys::derive(&MasterSecret::generate().unwrap());
        let sealed = seal_file(
            &keys.metadata,
            SealKind::Snapshot,
            b"CAIRNSNP",
            b"hello",
            false,
        )
        .unwrap();
        let open = |bytes: &[u8], kind, magic| open_file(&keys.metadata, kind, magic, bytes);
        assert_eq!(
            open(&sealed, SealKind::Snapshot, b"CAIRNSNP").unwrap(),
            b"hello"
        );
        assert!(open(&sealed, SealKind::Index, b"CAIRNSNP").is_err());
        assert!(open(&sealed, SealKind::Snapshot, b"CAIRNIXF").is_err());
        assert!(open(&sealed[..9], SealKind::Snapshot, b"CAIRNSNP").is_err());
        let mut newer = sealed.clone();
        newer[8] = 9;
        assert_eq!(
            open(&newer, SealKind::Snapshot, b"CAIRNSNP"),
            Err(Error::UnsupportedVersion(9))
        );
        for i in 0..sealed.len() {
            let mut flipped = sealed.clone();
            flipped[i] ^= 1;
            assert!(
                open(&flipped, SealKind::Snapshot, b"CAIRNSNP").is_err(),
                "{i}"
            );
        }
    }

    /// A padded file opens to its plaintext, is refused when any byte is
    /// flipped or relabelled as unpadded (and back), and shows the server a
    /// length that is a function of the padded total only.
    #[test]
    fn padded_files_round_trip_and_show_only_their_padded_length() {
        let keys = WorkingKeys::derive(&MasterSecret::generate().unwrap());
        let open = |bytes: &[u8]| open_file(&keys.metadata, SealKind::Index, b"CAIRNIXF", bytes);
        for len in [0usize, 1, 100, 4000, 5000, 70_000] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let sealed =
                seal_file(&keys.metadata, SealKind::Index, b"CAIRNIXF", &plain, true).unwrap();
            assert_eq!(open(&sealed).unwrap(), plain);
            let unpadded = (HEADER_LEN + cairn_crypto::SEAL_OVERHEAD + 4 + len) as u64;
            assert_eq!(
                sealed.len() as u64,
                cairn_crypto::padded_len(unpadded),
                "{len}"
            );
            assert_eq!(sealed[8..10], [PADDED_VERSION, 0]);
            let unpadded_file =
                seal_file(&keys.metadata, SealKind::Index, b"CAIRNIXF", &plain, false).unwrap();
            let mut relabelled = unpadded_file.clone();
            relabelled[8] = PADDED_VERSION;
            assert!(open(&relabelled).is_err());
            let mut relabelled = sealed.clone();
            relabelled[8] = FORMAT_VERSION;
            assert!(open(&relabelled).is_err());
        }
        let small =
            seal_file(&keys.metadata, SealKind::Index, b"CAIRNIXF", &[7; 10], true).unwrap();
        let other = seal_file(
            &keys.metadata,
            SealKind::Index,
            b"CAIRNIXF",
            &[7; 3000],
            true,
        )
        .unwrap();
        assert_eq!(small.len(), other.len());
        for i in (0..small.len()).step_by(97).chain([small.len() - 1]) {
            let mut flipped = small.clone();
            flipped[i] ^= 1;
            assert!(open(&flipped).is_err(), "{i}");
        }
    }
}
