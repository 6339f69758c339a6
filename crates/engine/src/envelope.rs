//! The envelope of whole metadata files (config, index files, snapshots):
//!
//! ```text
//! magic (8) ‖ format version u8 ‖ compression u8 ‖ sealed bytes (nonce ‖ ct ‖ tag)
//! ```
//!
//! The magic says what the file claims to be; the seal kind bound into the
//! associated data makes that claim authenticated.

use cairn_crypto::{Compression, FORMAT_VERSION, SealKey, SealKind};

use crate::error::{Error, Result, from_crypto};

/// Largest plaintext of a metadata file (bounds decompression).
pub(crate) const MAX_FILE_PLAIN_LEN: usize = 1 << 30;

pub(crate) fn seal_file(
    key: &SealKey,
    kind: SealKind,
    magic: &[u8; 8],
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    let sealed =
        cairn_crypto::seal(key, kind, &[0; 32], plaintext).map_err(from_crypto("new file"))?;
    let mut out = Vec::with_capacity(10 + sealed.bytes.len());
    out.extend_from_slice(magic);
    out.push(FORMAT_VERSION);
    out.push(sealed.compression as u8);
    out.extend_from_slice(&sealed.bytes);
    Ok(out)
}

/// Opens a metadata file; `object` names it in errors.
pub fn open_file(
    key: &SealKey,
    kind: SealKind,
    magic: &[u8; 8],
    bytes: &[u8],
    object: &str,
) -> Result<Vec<u8>> {
    let (head, sealed) = bytes
        .split_at_checked(10)
        .ok_or_else(|| Error::integrity(object))?;
    let (file_magic, rest) = head.split_at(8);
    if file_magic != magic {
        return Err(Error::integrity(object));
    }
    let [version, compression] = rest else {
        return Err(Error::integrity(object));
    };
    if *version != FORMAT_VERSION {
        // A newer cairn or a flipped byte: the version is outside the seal, so
        // we cannot tell which, and say both.
        return Err(Error::UnsupportedVersion(*version));
    }
    let compression = Compression::from_u8(*compression).ok_or_else(|| Error::integrity(object))?;
    cairn_crypto::open(key, kind, &[0; 32], compression, sealed, MAX_FILE_PLAIN_LEN)
        .map_err(from_crypto(object))
}
