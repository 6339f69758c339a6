//! cairn: a content-addressed, deduplicating, end-to-end encrypted archive engine.
//!
//! This crate is the API frontends link. It opens a [`Repository`] in any
//! [`Store`](cairn_store::Store) with a [`RecoveryKey`], backs up paths into
//! snapshots, lists and restores them, and streams single files. It does no
//! terminal I/O and reads no environment variables; progress and cancellation go
//! through the caller's [`Progress`].
//!
//! ```no_run
//! use std::sync::Arc;
//! use cairn::{BackupOptions, InitOptions, NoProgress, Repository};
//! use cairn_store::LocalStore;
//!
//! let store = Arc::new(LocalStore::create("/tmp/repo")?);
//! let (mut repo, key) = Repository::init(store, &InitOptions::default())?;
//! println!("recovery key: {}", key.to_grouped_string().as_str());
//! let report = repo.backup(&["/home/me/chat".into()], &BackupOptions::default(), &NoProgress)?;
//! repo.restore(&report.snapshot_id, None, "/tmp/restored".as_ref(), &NoProgress)?;
//! # Ok::<(), cairn::Error>(())
//! ```

mod backup;
mod blobs;
mod cache;
mod chunking;
mod deep;
mod error;
mod key_slots;
mod lineage;
mod maintenance;
mod progress;
mod repo;
mod restore;
mod rules;
pub mod source;

pub use backup::{BackupOptions, BackupReport, LeftOut, LeftOutReason, Parent, RetentionReport};
pub use blobs::Unreadable;
pub use cairn_chunker::{Algorithm as ChunkerAlgorithm, ChunkerParams};
pub use cairn_crypto::{BlobId, BlobKind, RecoveryKey, SnapshotId};
pub use cairn_meta::{
    ChunkingRules, Class, ClassRules, DEFAULT_PACK_TARGET, Format, Lineage, Node, NodeKind,
    RepoConfig, Retention, Snapshot, SnapshotKeep, SnapshotSummary, Tier, Tree,
};
/// Requests sent to a store, by kind (see [`BackupReport::requests`]).
pub use cairn_store::Counts as Requests;
pub use error::{Error, KeyProblem, Result};
pub use key_slots::KeySlotInfo;
pub use lineage::NewestSeen;
pub use maintenance::{
    CheckOptions, CheckReport, ClassUsage, CompactReport, ForgetDecision, ForgetOptions,
    ForgetReport, ForgetWhat, KeepPolicy, Problem, PruneOptions, PruneReport, ReadData,
    RepairIndexReport, RepairSnapshotsReport, Usage, civil_from_days,
};
pub use progress::{NoProgress, Progress};
pub use repo::{InitOptions, OpenOptions, RepoStats, Repository, SnapshotListing};
pub use restore::{
    FileReader, ListEntry, Listing, Resolved, RestoreFailure, RestoreReport, escape_name,
};
pub use rules::PathRules;

/// Parses a recovery key as typed by a person (see [`RecoveryKey::parse`]).
pub fn parse_recovery_key(text: &str) -> Result<RecoveryKey> {
    RecoveryKey::parse(text).map_err(error::from_crypto("recovery key"))
}
