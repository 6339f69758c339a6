//! Snapshot files: what was backed up, when, from where, and the root tree.
//! Writing one is a backup's single commit point. Stored as
//! `snapshots/<blake3 of the file>` in a sealed envelope.

use cairn_crypto::{BlobId, SealKey, SealKind};
use serde::{Deserialize, Serialize};

use crate::envelope;
use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"CAIRNSNP";
/// Largest snapshot file written or accepted: host, paths and tags must fit.
pub(crate) const MAX_SNAPSHOT_FILE_LEN: u64 = 4 * 1024 * 1024;

/// Totals recorded with a snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotSummary {
    /// Regular files in the snapshot.
    pub n_files: u64,
    /// Directories in the snapshot.
    pub n_dirs: u64,
    /// Symbolic links in the snapshot.
    pub n_symlinks: u64,
    /// Total size of the files.
    pub total_bytes: u64,
    /// Bytes read from the source during this backup.
    pub bytes_read: u64,
    /// Plaintext bytes of blobs new to the repository.
    pub bytes_new: u64,
    /// Bytes this backup added to the repository (packs, index, snapshot).
    pub bytes_stored: u64,
}

/// A snapshot's content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Seconds since the Unix epoch when the backup started.
    pub time_secs: i64,
    /// Nanoseconds part of the time.
    pub time_nanos: u32,
    /// Host name given by the caller.
    pub host: String,
    /// The paths backed up, as given.
    pub paths: Vec<String>,
    /// Free-form tags.
    pub tags: Vec<String>,
    /// The root tree: one node per backed-up path.
    pub root: [u8; 32],
    /// Totals.
    pub summary: SnapshotSummary,
}

impl Snapshot {
    /// The root tree's ID.
    pub fn root_id(&self) -> BlobId {
        BlobId::from_bytes(self.root)
    }

    pub(crate) fn seal(&self, key: &SealKey) -> Result<Vec<u8>> {
        let plain = postcard::to_stdvec(self).map_err(|_| Error::integrity("snapshot"))?;
        let sealed = envelope::seal_file(key, SealKind::Snapshot, MAGIC, &plain)?;
        if sealed.len() as u64 > MAX_SNAPSHOT_FILE_LEN {
            return Err(Error::InvalidInput(
                "too many or too long paths and tags for one snapshot".into(),
            ));
        }
        Ok(sealed)
    }

    /// Opens a sealed snapshot file; `object` names it in errors.
    pub fn open(key: &SealKey, bytes: &[u8], object: &str) -> Result<Self> {
        let plain = envelope::open_file(key, SealKind::Snapshot, MAGIC, bytes, object)?;
        Self::decode(&plain).map_err(|_| Error::integrity(object))
    }

    /// Decodes a snapshot's plaintext. Never panics.
    pub fn decode(plain: &[u8]) -> Result<Self> {
        let snapshot: Snapshot =
            postcard::from_bytes(plain).map_err(|_| Error::integrity("snapshot"))?;
        if snapshot.time_nanos >= 1_000_000_000 {
            return Err(Error::integrity("snapshot"));
        }
        Ok(snapshot)
    }
}
