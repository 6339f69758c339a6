//! The repository config: format version and the parameters that must never
//! change for the life of a repository (the chunker's, above all). Stored as
//! `config/config` in a sealed envelope (see `docs/format.md`).

use cairn_chunker::ChunkerParams;
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

/// Parameters chosen at `init` and fixed afterwards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoConfig {
    /// Random repository identity.
    pub repo_id: [u8; 16],
    /// Chunking parameters.
    pub chunker: ChunkerParams,
    /// Packs are closed once their blobs reach this many bytes.
    pub pack_target_size: u32,
}

#[derive(Serialize, Deserialize)]
struct Wire {
    repo_id: [u8; 16],
    chunker_min: u32,
    chunker_avg: u32,
    chunker_max: u32,
    chunker_normalization: u8,
    pack_target_size: u32,
}

impl RepoConfig {
    /// Encodes and seals the config.
    pub(crate) fn seal(&self, key: &SealKey) -> Result<Vec<u8>> {
        let wire = Wire {
            repo_id: self.repo_id,
            chunker_min: self.chunker.min_size,
            chunker_avg: self.chunker.avg_size,
            chunker_max: self.chunker.max_size,
            chunker_normalization: self.chunker.normalization,
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
        let wire: Wire =
            postcard::from_bytes(plain).map_err(|_| Error::integrity("config/config"))?;
        let config = Self {
            repo_id: wire.repo_id,
            chunker: ChunkerParams {
                min_size: wire.chunker_min,
                avg_size: wire.chunker_avg,
                max_size: wire.chunker_max,
                normalization: wire.chunker_normalization,
            },
            pack_target_size: wire.pack_target_size,
        };
        config
            .chunker
            .validate()
            .map_err(|_| Error::integrity("config/config"))?;
        if !(MIN_PACK_TARGET..=MAX_PACK_TARGET).contains(&config.pack_target_size) {
            return Err(Error::integrity("config/config"));
        }
        Ok(config)
    }
}
