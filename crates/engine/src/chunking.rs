//! The chunkers of an open repository: one per profile of the config's
//! chunking rules, keyed by the chunker seed, and the rule choosing one per
//! file name.

use cairn_chunker::Chunker;
use cairn_meta::ChunkingRules;

use crate::error::Result;

/// The chunkers of an open repository, keyed by the chunker seed.
#[derive(Clone, Debug)]
pub(crate) struct Chunkers {
    default: Chunker,
    in_place: Chunker,
    in_place_suffixes: Vec<Vec<u8>>,
}

impl Chunkers {
    pub fn new(rules: &ChunkingRules, seed: u64) -> Result<Self> {
        Ok(Self {
            default: Chunker::new(rules.default, seed)?,
            in_place: Chunker::new(rules.in_place, seed)?,
            in_place_suffixes: rules
                .in_place_suffixes
                .iter()
                .map(|s| s.as_bytes().to_vec())
                .collect(),
        })
    }

    /// The chunker for a file named `name`.
    pub fn for_name(&self, name: &[u8]) -> &Chunker {
        let lower = name.to_ascii_lowercase();
        if self.in_place_suffixes.iter().any(|s| lower.ends_with(s)) {
            &self.in_place
        } else {
            &self.default
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_chunker::ChunkerParams;

    #[test]
    fn databases_get_small_chunks_and_media_large_ones() {
        let chunkers = Chunkers::new(&ChunkingRules::default(), 1).expect("chunkers");
        let small = ChunkingRules::default().in_place;
        for name in [
            &b"msgstore.db"[..],
            b"MSGSTORE.DB",
            b"x.sqlite3",
            b"wal.db-wal",
        ] {
            assert_eq!(chunkers.for_name(name).params(), small, "{name:?}");
        }
        for name in [&b"IMG_0001.jpg"[..], b"db", b"video.mp4", b"notes.dbx"] {
            assert_eq!(
                chunkers.for_name(name).params(),
                ChunkerParams::default(),
                "{name:?}"
            );
        }
    }
}
