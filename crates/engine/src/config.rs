//! The repository config: format version and the parameters that must never
//! change for the life of a repository (the chunking rules, above all). Stored
//! as `config/config` in a sealed envelope (see `docs/format.md`).

use cairn_chunker::{Chunker, ChunkerParams};
use cairn_crypto::{SealKey, SealKind};
use serde::{Deserialize, Serialize};

use crate::envelope;
use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"CAIRNCFG";
/// Default pack size target: 16 MiB keeps the number of objects of a 100 GB
/// history near 6,000 while a lost pack costs little.
pub const DEFAULT_PACK_TARGET: u32 = 16 * 1024 * 1024;
/// Smallest pack size target a config may hold.
pub const MIN_PACK_TARGET: u32 = 64 * 1024;
/// Largest pack size target a config may hold.
pub const MAX_PACK_TARGET: u32 = 1024 * 1024 * 1024;
/// Largest config file accepted (the largest valid config is under 8 KiB).
pub(crate) const MAX_CONFIG_FILE_LEN: u64 = 64 * 1024;
const MAX_SUFFIXES: usize = 64;
const MAX_SUFFIX_LEN: usize = 64;

/// Which chunker each file gets. Two profiles: large chunks for media and
/// everything written once, small chunks for files edited in place (databases),
/// where a scattered 4 KiB page update must not cost a megabyte.
/// See `docs/benchmarks.md` for the measured trade-off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkingRules {
    /// Profile for every file not matched below.
    pub default: ChunkerParams,
    /// Profile for files edited in place.
    pub in_place: ChunkerParams,
    /// Lower-case file-name suffixes that select `in_place`.
    pub in_place_suffixes: Vec<String>,
}

impl Default for ChunkingRules {
    fn default() -> Self {
        Self {
            default: ChunkerParams::default(),
            in_place: ChunkerParams {
                min_size: 4 * 1024,
                avg_size: 16 * 1024,
                max_size: 64 * 1024,
                normalization: 1,
            },
            in_place_suffixes: [
                ".db",
                ".db-wal",
                ".sqlite",
                ".sqlite3",
                ".sqlite-wal",
                ".realm",
                ".ldb",
                ".mdb",
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        }
    }
}

impl ChunkingRules {
    /// Checks both profiles and the suffix list.
    pub fn validate(&self) -> Result<()> {
        self.default.validate()?;
        self.in_place.validate()?;
        let bad_suffix =
            |s: &String| s.is_empty() || s.len() > MAX_SUFFIX_LEN || *s != s.to_lowercase();
        if self.in_place_suffixes.len() > MAX_SUFFIXES
            || self.in_place_suffixes.iter().any(bad_suffix)
        {
            return Err(Error::InvalidInput(format!(
                "in-place suffixes: at most {MAX_SUFFIXES}, each 1 to {MAX_SUFFIX_LEN} lower-case bytes"
            )));
        }
        Ok(())
    }
}

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

/// Parameters chosen at `init` and fixed afterwards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoConfig {
    /// Random repository identity.
    pub repo_id: [u8; 16],
    /// Chunking profiles and the rule choosing between them.
    pub chunking: ChunkingRules,
    /// Packs are closed once their blobs reach this many bytes.
    pub pack_target_size: u32,
}

#[derive(Serialize, Deserialize)]
struct WireParams {
    min: u32,
    avg: u32,
    max: u32,
    normalization: u8,
}

impl From<ChunkerParams> for WireParams {
    fn from(p: ChunkerParams) -> Self {
        Self {
            min: p.min_size,
            avg: p.avg_size,
            max: p.max_size,
            normalization: p.normalization,
        }
    }
}

impl From<WireParams> for ChunkerParams {
    fn from(w: WireParams) -> Self {
        Self {
            min_size: w.min,
            avg_size: w.avg,
            max_size: w.max,
            normalization: w.normalization,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Wire {
    repo_id: [u8; 16],
    default_chunker: WireParams,
    in_place_chunker: WireParams,
    in_place_suffixes: Vec<String>,
    pack_target_size: u32,
}

impl RepoConfig {
    /// Encodes and seals the config.
    pub(crate) fn seal(&self, key: &SealKey) -> Result<Vec<u8>> {
        let wire = Wire {
            repo_id: self.repo_id,
            default_chunker: self.chunking.default.into(),
            in_place_chunker: self.chunking.in_place.into(),
            in_place_suffixes: self.chunking.in_place_suffixes.clone(),
            pack_target_size: self.pack_target_size,
        };
        let plain = postcard::to_stdvec(&wire).map_err(|_| Error::integrity("config"))?;
        envelope::seal_file(key, SealKind::Config, MAGIC, &plain)
    }

    /// Opens and validates a sealed config.
    pub fn open(key: &SealKey, bytes: &[u8]) -> Result<Self> {
        let plain = envelope::open_file(key, SealKind::Config, MAGIC, bytes, "config/config")?;
        Self::decode(&plain)
    }

    /// Decodes the config's plaintext and validates every parameter. Never panics.
    pub fn decode(plain: &[u8]) -> Result<Self> {
        let corrupt = || Error::integrity("config/config");
        let wire: Wire = postcard::from_bytes(plain).map_err(|_| corrupt())?;
        let config = Self {
            repo_id: wire.repo_id,
            chunking: ChunkingRules {
                default: wire.default_chunker.into(),
                in_place: wire.in_place_chunker.into(),
                in_place_suffixes: wire.in_place_suffixes,
            },
            pack_target_size: wire.pack_target_size,
        };
        config.chunking.validate().map_err(|_| corrupt())?;
        if !(MIN_PACK_TARGET..=MAX_PACK_TARGET).contains(&config.pack_target_size) {
            return Err(corrupt());
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn rules_are_validated() {
        let mut rules = ChunkingRules::default();
        rules.in_place_suffixes.push(".DB".into());
        assert!(rules.validate().is_err());
        let mut rules = ChunkingRules::default();
        rules.in_place.max_size = 1;
        assert!(rules.validate().is_err());
        assert!(ChunkingRules::default().validate().is_ok());
    }
}
