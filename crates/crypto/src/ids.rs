//! Identity newtypes: blob, pack and snapshot IDs are never bare arrays; and
//! the kinds of blob, each of which has its own ID domain.

use std::fmt;

/// What a blob holds. Each kind has its own ID key, so a data chunk and a tree
/// with equal bytes get unrelated IDs and can never be confused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum BlobKind {
    /// A chunk of file content.
    Data = 1,
    /// An encoded directory.
    Tree = 2,
}

impl BlobKind {
    /// Every kind, in on-disk order.
    pub const ALL: [BlobKind; 2] = [BlobKind::Data, BlobKind::Tree];

    /// Decodes the on-disk byte.
    pub fn from_u8(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::Data),
            2 => Some(Self::Tree),
            _ => None,
        }
    }

    /// The seal kind bound into this kind's associated data.
    pub fn seal_kind(self) -> crate::SealKind {
        match self {
            Self::Data => crate::SealKind::Data,
            Self::Tree => crate::SealKind::Tree,
        }
    }

    /// A lower-case name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Data => "data",
            Self::Tree => "tree",
        }
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name([u8; 32]);

        impl $name {
            /// Wraps raw ID bytes.
            pub const fn from_bytes(bytes: [u8; 32]) -> Self {
                Self(bytes)
            }

            /// The raw ID bytes.
            pub const fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// Lower-case hex, 64 characters: the form used in file names.
            pub fn to_hex(&self) -> String {
                let mut s = String::with_capacity(64);
                for b in self.0 {
                    s.push(char::from(HEX[usize::from(b >> 4)]));
                    s.push(char::from(HEX[usize::from(b & 15)]));
                }
                s
            }

            /// Parses 64 hex characters; `None` for anything else.
            pub fn from_hex(text: &str) -> Option<Self> {
                let bytes = text.as_bytes();
                if bytes.len() != 64 {
                    return None;
                }
                let mut out = [0u8; 32];
                for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    let hi = hex_value(*pair.first()?)?;
                    let lo = hex_value(*pair.get(1)?)?;
                    *o = (hi << 4) | lo;
                }
                Some(Self(out))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), &self.to_hex()[..16])
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }
    };
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

id_type!(
    /// Keyed BLAKE3 of a blob's plaintext under its kind's ID key (data chunk or
    /// tree). The key is secret, so the server cannot confirm a guess of the
    /// content; an ID means something only together with its [`BlobKind`].
    BlobId
);
id_type!(
    /// BLAKE3 of a pack file's bytes (ciphertext): the pack's file name.
    PackId
);
id_type!(
    /// BLAKE3 of a snapshot file's bytes (ciphertext): the snapshot's file name.
    SnapshotId
);

impl PackId {
    /// The ID of a pack with these bytes.
    pub fn of_bytes(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }

    /// The ID of a pack whose bytes are these parts, in order (equal to
    /// [`PackId::of_bytes`] of their concatenation).
    pub fn of_parts<P: AsRef<[u8]>>(parts: &[P]) -> Self {
        let mut hasher = blake3::Hasher::new();
        for part in parts {
            hasher.update(part.as_ref());
        }
        Self(*hasher.finalize().as_bytes())
    }
}

impl SnapshotId {
    /// The ID of a snapshot file with these bytes.
    pub fn of_bytes(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_id_of_parts_is_of_the_concatenation() {
        let parts = [&b"abc"[..], b"", b"defgh"];
        assert_eq!(PackId::of_parts(&parts), PackId::of_bytes(b"abcdefgh"));
    }

    #[test]
    fn hex_round_trip() {
        let id = BlobId::from_bytes([0xab; 32]);
        assert_eq!(BlobId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(BlobId::from_hex("zz"), None);
        assert_eq!(BlobId::from_hex(&"g".repeat(64)), None);
        assert_eq!(BlobId::from_hex(&"AB".repeat(32)), None);
    }
}
