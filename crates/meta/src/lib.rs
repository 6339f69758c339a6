//! The metadata codecs of a cairn repository: the config, directory trees,
//! snapshots, and the sealed envelope that wraps whole metadata files.
//!
//! Each codec has an API struct (what the engine and frontends use) and a
//! private wire struct (what postcard writes); the two are converted
//! explicitly, so a field added to the API never changes the format by
//! accident. Decoders take untrusted bytes and never panic (`unwrap` and
//! unchecked indexing are denied here; each decoder has a fuzz target).
//! Byte layouts are drawn in `docs/format.md`.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

mod config;
mod envelope;
mod lifecycle;
mod snapshot;
mod tree;

pub use config::{
    ChunkingRules, ClassRules, DEFAULT_PACK_TARGET, MAX_CONFIG_FILE_LEN, MAX_PACK_TARGET,
    MIN_PACK_TARGET, RepoConfig, Retention, SnapshotKeep, Tier,
};
pub use envelope::{MAX_FILE_PLAIN_LEN, open_file, seal_file};
pub use lifecycle::{
    Condemnation, MAX_CONDEMNED_FILE_LEN, MAX_SESSION_FILE_LEN, SessionKind, SessionMarker,
};
pub use snapshot::{Lineage, MAX_SNAPSHOT_FILE_LEN, Snapshot, SnapshotSummary};
pub use tree::{
    Class, MAX_LINK_TARGET_LEN, MAX_NAME_LEN, Node, NodeKind, Tree, is_valid_link_target,
    is_valid_name,
};

/// A repository's format version, recorded by its config (see
/// `docs/format.md`, "Version log"). Objects whose layout changed between
/// versions are read and written by the version of their repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Format {
    /// 2026-11-26: no classes, no retention policy.
    V1,
    /// 2026-12-03: tree nodes carry a class; the config carries class rules
    /// and a retention policy.
    V2,
    /// 2026-12-03: the config names the chunker's cut rule, toeplitz-aes by
    /// default (FastCDC still selectable).
    V3,
}

impl Format {
    /// The version new repositories get.
    pub const CURRENT: Format = Format::V3;

    /// The version number.
    pub fn number(self) -> u8 {
        match self {
            Format::V1 => 1,
            Format::V2 => 2,
            Format::V3 => 3,
        }
    }
}

/// Errors of the metadata codecs. Which check failed on untrusted bytes is
/// not said: `Corrupt` names only what was being decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The bytes are not a valid encoding (or failed authentication).
    #[error("{what} is corrupt or has been tampered with")]
    Corrupt {
        /// What was being decoded: `config`, `tree`, `snapshot`, `envelope`.
        what: &'static str,
    },
    /// A file's format version is unknown: written by a newer cairn, or corrupt
    /// (the version byte is outside the seal).
    #[error("unsupported format version {0} (written by a newer cairn, or corrupt)")]
    UnsupportedVersion(u8),
    /// Values that must not be written (e.g. invalid chunker parameters, a
    /// snapshot too large for its format limit).
    #[error("{0}")]
    Invalid(String),
    /// Sealing failed (the system random number generator failed).
    #[error("sealing failed: {0}")]
    Seal(cairn_crypto::Error),
}

pub(crate) fn corrupt(what: &'static str) -> Error {
    Error::Corrupt { what }
}
