//! Snapshot files: what was backed up, when, from where, and the root tree.
//! Writing one is a backup's single commit point. Stored as
//! `snapshots/<blake3 of the file>` in a sealed envelope.

use cairn_crypto::{BlobId, SealKey, SealKind, SnapshotId};
use serde::{Deserialize, Serialize};

use crate::{Error, corrupt, envelope};

const MAGIC: &[u8; 8] = b"CAIRNSNP";
/// Largest snapshot file written or accepted: host, paths and tags must fit.
pub const MAX_SNAPSHOT_FILE_LEN: u64 = 4 * 1024 * 1024;

/// Totals recorded with a snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
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

/// Where a snapshot stands in its repository's history (format 3): sealed
/// inside it, so a server cannot change it, only withhold whole snapshots,
/// which a device that remembers the newest it saw then notices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lineage {
    /// One more than the largest sequence number of the snapshots its
    /// backup saw (1 for the first).
    pub sequence: u64,
    /// The snapshot with that largest sequence number, if any.
    pub parent: Option<SnapshotId>,
}

/// A snapshot's content.
#[derive(Clone, Debug, PartialEq, Eq)]
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
    pub root: BlobId,
    /// Totals.
    pub summary: SnapshotSummary,
    /// Its place in the history (format 3; `None` in formats 1 and 2).
    pub lineage: Option<Lineage>,
}

// The wire form (docs/format.md, "Snapshot plaintext").

#[derive(Serialize, Deserialize)]
struct WireSummary {
    n_files: u64,
    n_dirs: u64,
    n_symlinks: u64,
    total_bytes: u64,
    bytes_read: u64,
    bytes_new: u64,
    bytes_stored: u64,
}

/// Format 3 appends it to the wire form.
#[derive(Serialize, Deserialize)]
struct WireLineage {
    sequence: u64,
    parent: Option<[u8; 32]>,
}

#[derive(Serialize, Deserialize)]
struct Wire {
    time_secs: i64,
    time_nanos: u32,
    host: String,
    paths: Vec<String>,
    tags: Vec<String>,
    root: [u8; 32],
    summary: WireSummary,
}

impl Snapshot {
    /// The root tree's ID.
    pub fn root_id(&self) -> BlobId {
        self.root
    }

    /// The snapshot's plaintext (postcard of the wire form).
    pub fn encode(&self) -> Vec<u8> {
        let s = &self.summary;
        let wire = Wire {
            time_secs: self.time_secs,
            time_nanos: self.time_nanos,
            host: self.host.clone(),
            paths: self.paths.clone(),
            tags: self.tags.clone(),
            root: *self.root.as_bytes(),
            summary: WireSummary {
                n_files: s.n_files,
                n_dirs: s.n_dirs,
                n_symlinks: s.n_symlinks,
                total_bytes: s.total_bytes,
                bytes_read: s.bytes_read,
                bytes_new: s.bytes_new,
                bytes_stored: s.bytes_stored,
            },
        };
        // Serializing plain structs into a Vec cannot fail.
        let mut out = postcard::to_stdvec(&wire).unwrap_or_default();
        if let Some(lineage) = self.lineage {
            let wire = WireLineage {
                sequence: lineage.sequence,
                parent: lineage.parent.map(|id| *id.as_bytes()),
            };
            out.extend(postcard::to_stdvec(&wire).unwrap_or_default());
        }
        out
    }

    /// Encodes and seals the snapshot (padded in format 3); refuses one
    /// larger than readers accept.
    pub fn seal(&self, key: &SealKey, format: crate::Format) -> Result<Vec<u8>, Error> {
        let padded = format >= crate::Format::V3;
        let sealed = envelope::seal_file(key, SealKind::Snapshot, MAGIC, &self.encode(), padded)?;
        if sealed.len() as u64 > MAX_SNAPSHOT_FILE_LEN {
            return Err(Error::Invalid(
                "too many or too long paths and tags for one snapshot".into(),
            ));
        }
        Ok(sealed)
    }

    /// Opens a sealed snapshot file. Never panics.
    pub fn open(key: &SealKey, bytes: &[u8]) -> Result<Self, Error> {
        let plain = envelope::open_file(key, SealKind::Snapshot, MAGIC, bytes)?;
        Self::decode(&plain)
    }

    /// Decodes a snapshot's plaintext. Never panics.
    pub fn decode(plain: &[u8]) -> Result<Self, Error> {
        let (w, rest): (Wire, _) =
            postcard::take_from_bytes(plain).map_err(|_| corrupt("snapshot"))?;
        if w.time_nanos >= 1_000_000_000 {
            return Err(corrupt("snapshot"));
        }
        // Formats 1 and 2 end here; format 3 adds the lineage, and nothing
        // may follow it.
        let lineage = match rest {
            [] => None,
            rest => match postcard::take_from_bytes::<WireLineage>(rest) {
                Ok((l, [])) if l.sequence > 0 => Some(Lineage {
                    sequence: l.sequence,
                    parent: l.parent.map(SnapshotId::from_bytes),
                }),
                _ => return Err(corrupt("snapshot")),
            },
        };
        let s = w.summary;
        Ok(Snapshot {
            time_secs: w.time_secs,
            time_nanos: w.time_nanos,
            host: w.host,
            paths: w.paths,
            tags: w.tags,
            root: BlobId::from_bytes(w.root),
            summary: SnapshotSummary {
                n_files: s.n_files,
                n_dirs: s.n_dirs,
                n_symlinks: s.n_symlinks,
                total_bytes: s.total_bytes,
                bytes_read: s.bytes_read,
                bytes_new: s.bytes_new,
                bytes_stored: s.bytes_stored,
            },
            lineage,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn encode_decode_round_trips(host in ".{0,40}", paths in proptest::collection::vec(".{0,30}", 0..4), n in any::<u64>(), secs in any::<i64>(), sequence in proptest::option::of(1u64..), parent in proptest::option::of(any::<[u8; 32]>())) {
            let snapshot = Snapshot {
                time_secs: secs,
                time_nanos: 7,
                host,
                paths,
                tags: vec!["daily".into()],
                root: BlobId::from_bytes([3; 32]),
                summary: SnapshotSummary { n_files: n, ..SnapshotSummary::default() },
                lineage: sequence.map(|sequence| Lineage { sequence, parent: parent.map(SnapshotId::from_bytes) }),
            };
            prop_assert_eq!(Snapshot::decode(&snapshot.encode()).unwrap(), snapshot.clone());
            // Anything after the lineage, or a zero sequence, is corrupt.
            if snapshot.lineage.is_some() {
                let mut longer = snapshot.encode();
                longer.push(0);
                prop_assert!(Snapshot::decode(&longer).is_err());
            }
        }

        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Snapshot::decode(&bytes);
        }
    }
}
