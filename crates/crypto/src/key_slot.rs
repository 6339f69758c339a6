//! Key slots: the master secret wrapped under a key-encryption key derived from
//! the recovery key. A repository may hold several slots (one per recovery key);
//! adding, removing and rotating them only rewrites slots, never data.
//!
//! Layout (166 bytes, little-endian where it matters):
//!
//! ```text
//! 0   8  magic "CAIRNKEY"
//! 8   1  slot format version (1)
//! 9   1  KDF id (1 = BLAKE3 derive_key over salt ‖ key characters)
//! 10  32 salt (random)
//! 42  32 key check = BLAKE3 derive_key(CTX_CHECK, KEK)
//! 74  12 nonce
//! 86  48 AES-256-GCM-SIV(KEK, nonce, master secret, aad = CTX_AAD)
//! 134 32 BLAKE3 hash of bytes 0..134 (detects corruption apart from a wrong key)
//! ```
//!
//! The key check lets `open` tell "wrong recovery key" from "corrupt slot": the
//! checksum says the slot is intact, then the check value says whether the key is
//! the right one. The check reveals no more than the wrapped secret already does
//! (either lets an attacker test a guess of a 330-bit key).

use aes_gcm_siv::{Nonce, aead::Aead, aead::Payload};
use zeroize::Zeroizing;

use crate::{Error, MasterSecret, RecoveryKey, SealKey, random_bytes};

/// Size of an encoded key slot.
pub const KEY_SLOT_LEN: usize = 166;

const MAGIC: &[u8; 8] = b"CAIRNKEY";
const SLOT_VERSION: u8 = 1;
const KDF_BLAKE3: u8 = 1;
const CTX_KEK: &str = "cairn 2026-11 v1 key-encryption key";
const CTX_CHECK: &str = "cairn 2026-11 v1 key check";
const CTX_AAD: &[u8] = b"cairn key slot v1";

/// A decoded (still locked) key slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySlot {
    salt: [u8; 32],
    check: [u8; 32],
    nonce: [u8; 12],
    wrapped: [u8; 48],
}

fn key_encryption_key(key: &RecoveryKey, salt: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    let mut material = Zeroizing::new([0u8; 32 + 64]);
    material[..32].copy_from_slice(salt);
    material[32..].copy_from_slice(key.as_bytes());
    Zeroizing::new(blake3::derive_key(CTX_KEK, material.as_ref()))
}

impl KeySlot {
    /// Wraps `master` under `key` with a fresh salt and nonce.
    pub fn wrap(key: &RecoveryKey, master: &MasterSecret) -> Result<Self, Error> {
        let mut salt = [0u8; 32];
        let mut nonce = [0u8; 12];
        random_bytes(&mut salt)?;
        random_bytes(&mut nonce)?;
        let kek = key_encryption_key(key, &salt);
        let check = blake3::derive_key(CTX_CHECK, kek.as_ref());
        let ciphertext = SealKey::from_bytes(&kek)
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: master.as_bytes(),
                    aad: CTX_AAD,
                },
            )
            .map_err(|_| Error::Integrity)?;
        let wrapped: [u8; 48] = ciphertext.try_into().map_err(|_| Error::Integrity)?;
        Ok(Self {
            salt,
            check,
            nonce,
            wrapped,
        })
    }

    /// Unwraps the master secret. `WrongKey` if the key is not this slot's;
    /// `Integrity` if the slot itself is damaged.
    pub fn unwrap_master(&self, key: &RecoveryKey) -> Result<MasterSecret, Error> {
        let kek = key_encryption_key(key, &self.salt);
        let check = blake3::derive_key(CTX_CHECK, kek.as_ref());
        if !constant_time_eq(&check, &self.check) {
            return Err(Error::WrongKey);
        }
        let plain = Zeroizing::new(
            SealKey::from_bytes(&kek)
                .cipher
                .decrypt(
                    &Nonce::from(self.nonce),
                    Payload {
                        msg: &self.wrapped,
                        aad: CTX_AAD,
                    },
                )
                .map_err(|_| Error::Integrity)?,
        );
        let mut bytes = Zeroizing::new([0u8; 32]);
        if plain.len() != 32 {
            return Err(Error::Integrity);
        }
        bytes.copy_from_slice(&plain);
        Ok(MasterSecret::from_bytes(bytes))
    }

    /// The slot's bytes (see the module docs for the layout).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(KEY_SLOT_LEN);
        out.extend_from_slice(MAGIC);
        out.push(SLOT_VERSION);
        out.push(KDF_BLAKE3);
        out.extend_from_slice(&self.salt);
        out.extend_from_slice(&self.check);
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.wrapped);
        let sum = blake3::hash(&out);
        out.extend_from_slice(sum.as_bytes());
        out
    }

    /// Decodes a slot; any deviation from the layout is an integrity error.
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() != KEY_SLOT_LEN {
            return Err(Error::Integrity);
        }
        let (body, sum) = bytes.split_at(KEY_SLOT_LEN - 32);
        if blake3::hash(body).as_bytes() != sum {
            return Err(Error::Integrity);
        }
        let field = |from: usize, to: usize| body.get(from..to).ok_or(Error::Integrity);
        if field(0, 8)? != MAGIC || field(8, 9)? != [SLOT_VERSION] || field(9, 10)? != [KDF_BLAKE3]
        {
            return Err(Error::Integrity);
        }
        let arr = |from, to| -> Result<Vec<u8>, Error> { Ok(field(from, to)?.to_vec()) };
        Ok(Self {
            salt: arr(10, 42)?.try_into().map_err(|_| Error::Integrity)?,
            check: arr(42, 74)?.try_into().map_err(|_| Error::Integrity)?,
            nonce: arr(74, 86)?.try_into().map_err(|_| Error::Integrity)?,
            wrapped: arr(86, 134)?.try_into().map_err(|_| Error::Integrity)?,
        })
    }
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_unwrap_and_wrong_key() {
        let key = RecoveryKey::generate().unwrap();
        let master = MasterSecret::generate().unwrap();
        let slot = KeySlot::wrap(&key, &master).unwrap();
        let bytes = slot.encode();
        assert_eq!(bytes.len(), KEY_SLOT_LEN);
        let decoded = KeySlot::decode(&bytes).unwrap();
        assert_eq!(decoded, slot);
        let got = decoded.unwrap_master(&key).unwrap();
        assert_eq!(got.as_bytes(), master.as_bytes());
        let other = RecoveryKey::generate().unwrap();
        assert_eq!(decoded.unwrap_master(&other).unwrap_err(), Error::WrongKey);
    }

    #[test]
    fn every_flipped_byte_is_an_integrity_error() {
        let key = RecoveryKey::generate().unwrap();
        let master = MasterSecret::generate().unwrap();
        let bytes = KeySlot::wrap(&key, &master).unwrap().encode();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            let result = KeySlot::decode(&b).and_then(|s| s.unwrap_master(&key));
            assert_eq!(result.unwrap_err(), Error::Integrity, "byte {i}");
        }
        assert!(KeySlot::decode(&bytes[..100]).is_err());
    }
}
