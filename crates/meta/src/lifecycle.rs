//! The two files by which writers share a repository safely (docs/format.md,
//! "Sharing a repository"): session markers, which say that a backup or a
//! prune is running, and condemnation records, which say which packs and
//! index files a prune is about to delete.

use cairn_crypto::{PackId, SealKey, SealKind};
use serde::{Deserialize, Serialize};

use crate::{Error, corrupt, envelope};

const SESSION_MAGIC: &[u8; 8] = b"CAIRNSES";
const CONDEMNED_MAGIC: &[u8; 8] = b"CAIRNCDM";
/// Largest session marker file accepted.
pub const MAX_SESSION_FILE_LEN: u64 = 4 * 1024;
/// Largest condemnation record accepted: room for a million packs and index
/// files (a record is written by one prune).
pub const MAX_CONDEMNED_FILE_LEN: u64 = 64 * 1024 * 1024;

/// What a session is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionKind {
    /// A backup: adds packs, index files and a snapshot.
    Backup,
    /// A prune: condemns and deletes packs and index files.
    Prune,
}

/// A running writer's announcement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionMarker {
    /// What the writer does.
    pub kind: SessionKind,
    /// When the session started (seconds since the epoch, writer's clock).
    pub started_secs: i64,
    /// When this marker was written (writer's clock).
    pub refreshed_secs: i64,
    /// Where `pid` means something: a hash of the writer's boot ID, PID
    /// namespace and user (zeros if unknown).
    pub pid_space: [u8; 16],
    /// The writer's process ID.
    pub pid: u32,
    /// The writer's start time in clock ticks since boot (0 if unknown).
    pub pid_start: u64,
}

#[derive(Serialize, Deserialize)]
struct SessionWire {
    kind: u8,
    started_secs: i64,
    refreshed_secs: i64,
    pid_space: [u8; 16],
    pid: u32,
    pid_start: u64,
}

impl SessionMarker {
    /// The marker's plaintext (postcard of the wire form).
    pub fn encode(&self) -> Vec<u8> {
        let wire = SessionWire {
            kind: match self.kind {
                SessionKind::Backup => 1,
                SessionKind::Prune => 2,
            },
            started_secs: self.started_secs,
            refreshed_secs: self.refreshed_secs,
            pid_space: self.pid_space,
            pid: self.pid,
            pid_start: self.pid_start,
        };
        // Serializing plain structs into a Vec cannot fail.
        postcard::to_stdvec(&wire).unwrap_or_default()
    }

    /// Decodes a marker's plaintext. Never panics.
    pub fn decode(plain: &[u8]) -> Result<Self, Error> {
        let (w, rest): (SessionWire, _) =
            postcard::take_from_bytes(plain).map_err(|_| corrupt("session marker"))?;
        let kind = match w.kind {
            1 => SessionKind::Backup,
            2 => SessionKind::Prune,
            _ => return Err(corrupt("session marker")),
        };
        if !rest.is_empty() {
            return Err(corrupt("session marker"));
        }
        Ok(Self {
            kind,
            started_secs: w.started_secs,
            refreshed_secs: w.refreshed_secs,
            pid_space: w.pid_space,
            pid: w.pid,
            pid_start: w.pid_start,
        })
    }

    /// Encodes and seals the marker.
    /// Seals the marker, padded in format 3 (its varints, the process ID
    /// and start time above all, would show the platform and uptime).
    pub fn seal(&self, key: &SealKey, format: crate::Format) -> Result<Vec<u8>, Error> {
        let padded = format >= crate::Format::V3;
        envelope::seal_file(
            key,
            SealKind::Session,
            SESSION_MAGIC,
            &self.encode(),
            padded,
        )
    }

    /// Opens a sealed marker. Never panics.
    pub fn open(key: &SealKey, bytes: &[u8]) -> Result<Self, Error> {
        Self::decode(&envelope::open_file(
            key,
            SealKind::Session,
            SESSION_MAGIC,
            bytes,
        )?)
    }
}

/// What one prune is deleting: packs (condemned, or repacked elsewhere) and
/// the index files its new index files supersede.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Condemnation {
    /// When the record was written (seconds since the epoch, prune's clock).
    pub time_secs: i64,
    /// Packs to delete.
    pub packs: Vec<PackId>,
    /// Index files to delete, by name (the BLAKE3 of their bytes).
    pub superseded_index_files: Vec<PackId>,
}

#[derive(Serialize, Deserialize)]
struct CondemnedWire {
    time_secs: i64,
    packs: Vec<[u8; 32]>,
    superseded_index_files: Vec<[u8; 32]>,
}

impl Condemnation {
    /// The record's plaintext (postcard of the wire form).
    pub fn encode(&self) -> Vec<u8> {
        let wire = CondemnedWire {
            time_secs: self.time_secs,
            packs: self.packs.iter().map(|p| *p.as_bytes()).collect(),
            superseded_index_files: self
                .superseded_index_files
                .iter()
                .map(|p| *p.as_bytes())
                .collect(),
        };
        // Serializing plain structs into a Vec cannot fail.
        postcard::to_stdvec(&wire).unwrap_or_default()
    }

    /// Decodes a record's plaintext. Never panics.
    pub fn decode(plain: &[u8]) -> Result<Self, Error> {
        let (w, rest): (CondemnedWire, _) =
            postcard::take_from_bytes(plain).map_err(|_| corrupt("condemnation record"))?;
        if !rest.is_empty() {
            return Err(corrupt("condemnation record"));
        }
        Ok(Self {
            time_secs: w.time_secs,
            packs: w.packs.into_iter().map(PackId::from_bytes).collect(),
            superseded_index_files: w
                .superseded_index_files
                .into_iter()
                .map(PackId::from_bytes)
                .collect(),
        })
    }

    /// Encodes and seals the record; refuses one larger than readers accept.
    pub fn seal(&self, key: &SealKey, format: crate::Format) -> Result<Vec<u8>, Error> {
        let padded = format >= crate::Format::V3;
        let sealed = envelope::seal_file(
            key,
            SealKind::Condemned,
            CONDEMNED_MAGIC,
            &self.encode(),
            padded,
        )?;
        if sealed.len() as u64 > MAX_CONDEMNED_FILE_LEN {
            return Err(Error::Invalid(
                "too many packs for one condemnation record".into(),
            ));
        }
        Ok(sealed)
    }

    /// Opens a sealed record. Never panics.
    pub fn open(key: &SealKey, bytes: &[u8]) -> Result<Self, Error> {
        Self::decode(&envelope::open_file(
            key,
            SealKind::Condemned,
            CONDEMNED_MAGIC,
            bytes,
        )?)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn session_round_trips(kind in any::<bool>(), secs in any::<i64>(), pid in any::<u32>(), boot in any::<[u8; 16]>()) {
            let marker = SessionMarker {
                kind: if kind { SessionKind::Backup } else { SessionKind::Prune },
                started_secs: secs,
                refreshed_secs: secs / 2,
                pid_space: boot,
                pid,
                pid_start: u64::from(pid) * 3,
            };
            prop_assert_eq!(SessionMarker::decode(&marker.encode()).unwrap(), marker);
        }

        #[test]
        fn condemnation_round_trips(packs in proptest::collection::vec(any::<[u8; 32]>(), 0..20), secs in any::<i64>()) {
            let record = Condemnation {
                time_secs: secs,
                packs: packs.iter().copied().map(PackId::from_bytes).collect(),
                superseded_index_files: packs.iter().rev().copied().map(PackId::from_bytes).collect(),
            };
            prop_assert_eq!(Condemnation::decode(&record.encode()).unwrap(), record);
        }

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = SessionMarker::decode(&bytes);
            let _ = Condemnation::decode(&bytes);
        }
    }

    #[test]
    fn trailing_bytes_and_unknown_kinds_are_corrupt() {
        let marker = SessionMarker {
            kind: SessionKind::Prune,
            started_secs: 1,
            refreshed_secs: 2,
            pid_space: [7; 16],
            pid: 9,
            pid_start: 10,
        };
        let mut bytes = marker.encode();
        bytes.push(0);
        assert!(SessionMarker::decode(&bytes).is_err());
        let mut bytes = marker.encode();
        bytes[0] = 3;
        assert!(SessionMarker::decode(&bytes).is_err());
    }
}
