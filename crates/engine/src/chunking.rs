//! The chunkers of an open repository: one per profile of the config's
//! chunking rules, with the config's cut rule under its key, and the rule
//! choosing one per file name.

use cairn_chunker::{Algorithm, Chunker, ChunkerParams, PrfKey};
use cairn_crypto::WorkingKeys;
use cairn_meta::ChunkingRules;

use crate::error::Result;

/// The chunkers of an open repository.
#[derive(Clone, Debug)]
pub(crate) struct Chunkers {
    default: Chunker,
    in_place: Chunker,
    in_place_suffixes: Vec<Vec<u8>>,
    compress_in_place: bool,
}

impl Chunkers {
    pub fn new(rules: &ChunkingRules, keys: &WorkingKeys) -> Result<Self> {
        let chunker = |params: ChunkerParams| match rules.algorithm {
            Algorithm::FastCdc => Chunker::fastcdc(params, keys.chunker_seed.value()),
            Algorithm::ToeplitzAes => {
                let prf = &keys.chunker_prf;
                Chunker::toeplitz_aes(params, &PrfKey::new(prf.hash_key(), prf.aes_key()))
            }
        };
        Ok(Self {
            default: chunker(rules.default)?,
            in_place: chunker(rules.in_place)?,
            in_place_suffixes: rules
                .in_place_suffixes
                .iter()
                .map(|s| s.as_bytes().to_vec())
                .collect(),
            compress_in_place: rules.compress_in_place,
        })
    }

    /// The chunker for a file named `name`, and whether its chunks may be
    /// compressed.
    pub fn for_name(&self, name: &[u8]) -> (&Chunker, bool) {
        let lower = name.to_ascii_lowercase();
        if self.in_place_suffixes.iter().any(|s| lower.ends_with(s)) {
            (&self.in_place, self.compress_in_place)
        } else {
            (&self.default, true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn databases_get_small_chunks_and_media_large_ones() {
        let keys = WorkingKeys::derive(&cairn_crypto::MasterSecret::generate().expect("secret"));
        let chunkers = Chunkers::new(&ChunkingRules::default(), &keys).expect("chunkers");
        let small = ChunkingRules::default().in_place;
        for name in [
            &b"msgstore.db"[..],
            b"MSGSTORE.DB",
            b"x.sqlite3",
            b"wal.db-wal",
        ] {
            let (chunker, compress) = chunkers.for_name(name);
            assert_eq!(chunker.params(), small, "{name:?}");
            assert!(!compress, "{name:?}");
        }
        for name in [&b"IMG_0001.jpg"[..], b"db", b"video.mp4", b"notes.dbx"] {
            let (chunker, compress) = chunkers.for_name(name);
            assert_eq!(chunker.params(), ChunkerParams::default(), "{name:?}");
            assert!(compress, "{name:?}");
        }
    }
}
