//! The envelope of whole metadata files (config, index files, snapshots):
//!
//! ```text
//! magic (8) ‖ format version u8 ‖ compression u8 ‖ sealed bytes (nonce ‖ ct ‖ tag)
//! ```
//!
//! The magic says what the file claims to be; the seal kind bound into the
//! associated data makes that claim authenticated.

use cairn_crypto::{Compression, FORMAT_VERSION, SealKey, SealKind};

use crate::{Error, corrupt};

/// Largest plaintext of a metadata file (bounds decompression).
pub const MAX_FILE_PLAIN_LEN: usize = 1 << 30;
const HEADER_LEN: usize = 10;

/// Seals `plaintext` as a metadata file of `kind` starting with `magic`.
pub fn seal_file(
    key: &SealKey,
    kind: SealKind,
    magic: &[u8; 8],
    plaintext: &[u8],
) -> Result<Vec<u8>, Error> {
    let sealed = cairn_crypto::seal(key, kind, &[0; 32], plaintext).map_err(Error::Seal)?;
    let mut out = Vec::with_capacity(HEADER_LEN + sealed.bytes.len());
    out.extend_from_slice(magic);
    out.push(FORMAT_VERSION);
    out.push(sealed.compression as u8);
    out.extend_from_slice(&sealed.bytes);
    Ok(out)
}

/// Opens a metadata file of `kind` that must start with `magic`. Never panics.
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
    if *version != FORMAT_VERSION {
        // A newer cairn or a flipped byte: the version is outside the seal, so
        // we cannot tell which, and say both.
        return Err(Error::UnsupportedVersion(*version));
    }
    let compression = Compression::from_u8(*compression).ok_or(corrupt("envelope"))?;
    cairn_crypto::open(key, kind, &[0; 32], compression, sealed, MAX_FILE_PLAIN_LEN).map_err(|e| {
        match e {
            cairn_crypto::Error::Integrity => corrupt("envelope"),
            other => Error::Seal(other),
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use cairn_crypto::{MasterSecret, WorkingKeys};

    #[test]
    fn round_trip_and_every_kind_of_damage() {
        let keys = WorkingKeys::derive(&MasterSecret::generate().unwrap());
        let sealed = seal_file(&keys.metadata, SealKind::Snapshot, b"CAIRNSNP", b"hello").unwrap();
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
}
