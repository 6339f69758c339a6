//! The repository config: format version and the parameters that must never
//! change for the life of a repository (the chunking rules, above all). Stored
//! as `config/config` in a sealed envelope (see `docs/format.md`).

use cairn_chunker::ChunkerParams;
use cairn_crypto::{SealKey, SealKind};
use serde::{Deserialize, Serialize};

use crate::{Error, corrupt, envelope};

const MAGIC: &[u8; 8] = b"CAIRNCFG";
/// Default pack size target: 16 MiB keeps the number of objects of a 100 GB
/// history near 6,000 while a lost pack costs little.
pub const DEFAULT_PACK_TARGET: u32 = 16 * 1024 * 1024;
/// Smallest pack size target a config may hold.
pub const MIN_PACK_TARGET: u32 = 64 * 1024;
/// Largest pack size target a config may hold.
pub const MAX_PACK_TARGET: u32 = 1024 * 1024 * 1024;
/// Largest config file accepted (the largest valid config is under 8 KiB).
pub const MAX_CONFIG_FILE_LEN: u64 = 64 * 1024;
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
    pub fn validate(&self) -> Result<(), Error> {
        self.default
            .validate()
            .map_err(|e| Error::Invalid(format!("default chunker: {e}")))?;
        self.in_place
            .validate()
            .map_err(|e| Error::Invalid(format!("in-place chunker: {e}")))?;
        let bad_suffix =
            |s: &String| s.is_empty() || s.len() > MAX_SUFFIX_LEN || *s != s.to_lowercase();
        if self.in_place_suffixes.len() > MAX_SUFFIXES
            || self.in_place_suffixes.iter().any(bad_suffix)
        {
            return Err(Error::Invalid(format!(
                "in-place suffixes: at most {MAX_SUFFIXES}, each 1 to {MAX_SUFFIX_LEN} lower-case bytes"
            )));
        }
        Ok(())
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
    /// Checks every parameter against the format's limits.
    pub fn validate(&self) -> Result<(), Error> {
        self.chunking.validate()?;
        if !(MIN_PACK_TARGET..=MAX_PACK_TARGET).contains(&self.pack_target_size) {
            return Err(Error::Invalid(format!(
                "pack target size must be {MIN_PACK_TARGET} to {MAX_PACK_TARGET} bytes"
            )));
        }
        Ok(())
    }

    /// Encodes and seals the config.
    pub fn seal(&self, key: &SealKey) -> Result<Vec<u8>, Error> {
        self.validate()?;
        envelope::seal_file(key, SealKind::Config, MAGIC, &self.encode())
    }

    /// The config's plaintext (postcard of the wire struct).
    pub fn encode(&self) -> Vec<u8> {
        let wire = Wire {
            repo_id: self.repo_id,
            default_chunker: self.chunking.default.into(),
            in_place_chunker: self.chunking.in_place.into(),
            in_place_suffixes: self.chunking.in_place_suffixes.clone(),
            pack_target_size: self.pack_target_size,
        };
        // Serializing plain structs into a Vec cannot fail.
        postcard::to_stdvec(&wire).unwrap_or_default()
    }

    /// Opens and validates a sealed config. Never panics.
    pub fn open(key: &SealKey, bytes: &[u8]) -> Result<Self, Error> {
        let plain = envelope::open_file(key, SealKind::Config, MAGIC, bytes)?;
        Self::decode(&plain)
    }

    /// Decodes the config's plaintext and validates every parameter. Never panics.
    pub fn decode(plain: &[u8]) -> Result<Self, Error> {
        let wire: Wire = postcard::from_bytes(plain).map_err(|_| corrupt("config"))?;
        let config = Self {
            repo_id: wire.repo_id,
            chunking: ChunkingRules {
                default: wire.default_chunker.into(),
                in_place: wire.in_place_chunker.into(),
                in_place_suffixes: wire.in_place_suffixes,
            },
            pack_target_size: wire.pack_target_size,
        };
        config.validate().map_err(|_| corrupt("config"))?;
        Ok(config)
    }
}
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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

    #[test]
    fn a_config_outside_the_limits_is_corrupt() {
        let config = RepoConfig {
            repo_id: [7; 16],
            chunking: ChunkingRules::default(),
            pack_target_size: DEFAULT_PACK_TARGET,
        };
        let mut wire: Wire = postcard::from_bytes(&config.encode()).unwrap();
        assert_eq!(RepoConfig::decode(&config.encode()).unwrap(), config);
        wire.pack_target_size = 1;
        let bytes = postcard::to_stdvec(&wire).unwrap();
        assert_eq!(
            RepoConfig::decode(&bytes),
            Err(Error::Corrupt { what: "config" })
        );
    }
}
