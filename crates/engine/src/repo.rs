//! The repository: opening it with a recovery key, its keys, config and index,
//! and reading blobs, trees and snapshots back.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use cairn_crypto::{
    ChunkId, KeySlot, MasterSecret, PackId, RecoveryKey, SealKind, SnapshotId, WorkingKeys,
};
use cairn_index::Index;
use cairn_pack::BlobKind;
use cairn_store::{Namespace, ObjectName, Store};

use crate::config::{
    Chunkers, ChunkingRules, DEFAULT_PACK_TARGET, MAX_PACK_TARGET, MIN_PACK_TARGET, RepoConfig,
};
use crate::envelope;
use crate::error::{Error, Result, from_crypto};
use crate::snapshot::Snapshot;
use crate::tree::Tree;

pub(crate) const INDEX_MAGIC: &[u8; 8] = b"CAIRNIXF";

/// Options of [`Repository::init`].
#[derive(Clone, Debug)]
pub struct InitOptions {
    /// Chunking profiles and rules, fixed for the life of the repository.
    pub chunking: ChunkingRules,
    /// Pack size target in bytes.
    pub pack_target_size: u32,
}

impl Default for InitOptions {
    fn default() -> Self {
        Self {
            chunking: ChunkingRules::default(),
            pack_target_size: DEFAULT_PACK_TARGET,
        }
    }
}

/// Totals of a repository, from its index and store listing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepoStats {
    /// Snapshots.
    pub n_snapshots: usize,
    /// Pack files.
    pub n_packs: usize,
    /// Index files.
    pub n_index_files: usize,
    /// Distinct data blobs.
    pub n_data_blobs: usize,
    /// Distinct tree blobs.
    pub n_tree_blobs: usize,
    /// Plaintext bytes of all distinct data blobs.
    pub data_plain_bytes: u64,
    /// Bytes of every object in the repository.
    pub repo_bytes: u64,
}

/// An open repository.
pub struct Repository {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) keys: WorkingKeys,
    pub(crate) config: RepoConfig,
    pub(crate) chunkers: Chunkers,
    pub(crate) index: Index,
    /// Packs whose trailer and header were read and matched against the index
    /// in this session (see [`Repository::verify_pack_header`]).
    pub(crate) verified_packs: Mutex<HashSet<PackId>>,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("config", &self.config)
            .field("n_blobs", &self.index.len())
            .finish_non_exhaustive()
    }
}

pub(crate) fn object(namespace: Namespace, name: &str) -> Result<ObjectName> {
    Ok(ObjectName::new(namespace, name)?)
}

pub(crate) fn pack_object(id: &PackId) -> Result<ObjectName> {
    object(Namespace::Packs, &id.to_hex())
}

/// What a failed read of blob `blob` from `pack` means: a missing pack is
/// missing data, a short pack is corrupt, anything else is the store's error.
pub(crate) fn pack_read_error(
    error: cairn_store::Error,
    pack: &ObjectName,
    blob: &ChunkId,
) -> Error {
    match error {
        cairn_store::Error::NotFound(_) => Error::MissingBlob {
            blob: blob.to_hex(),
        },
        cairn_store::Error::OutOfRange(_) => Error::integrity(pack),
        other => other.into(),
    }
}

impl Repository {
    /// Creates a repository in an empty store. Returns it open, with the new
    /// recovery key, which the caller must show to the user once; it is not
    /// stored anywhere.
    pub fn init(store: Arc<dyn Store>, options: &InitOptions) -> Result<(Self, RecoveryKey)> {
        options.chunking.validate()?;
        if !(MIN_PACK_TARGET..=MAX_PACK_TARGET).contains(&options.pack_target_size) {
            return Err(Error::InvalidInput(format!(
                "pack target size must be {MIN_PACK_TARGET} to {MAX_PACK_TARGET} bytes"
            )));
        }
        if !store.list(Namespace::Config)?.is_empty() || !store.list(Namespace::Keys)?.is_empty() {
            return Err(Error::AlreadyInitialized);
        }
        let key = RecoveryKey::generate().map_err(|_| Error::Random)?;
        let master = MasterSecret::generate().map_err(|_| Error::Random)?;
        let slot = KeySlot::wrap(&key, &master).map_err(from_crypto("key slot"))?;
        let mut slot_name = [0u8; 16];
        cairn_crypto::random_bytes(&mut slot_name).map_err(|_| Error::Random)?;
        let slot_name: String = slot_name.iter().map(|b| format!("{b:02x}")).collect();
        let keys = WorkingKeys::derive(&master);
        let mut repo_id = [0u8; 16];
        cairn_crypto::random_bytes(&mut repo_id).map_err(|_| Error::Random)?;
        let config = RepoConfig {
            repo_id,
            chunking: options.chunking.clone(),
            pack_target_size: options.pack_target_size,
        };
        // Validate what we are about to write the same way `open` will.
        let sealed_config = config.seal(&keys.metadata)?;
        RepoConfig::open(&keys.metadata, &sealed_config)?;
        store.put(&object(Namespace::Keys, &slot_name)?, &slot.encode())?;
        store.put(&object(Namespace::Config, "config")?, &sealed_config)?;
        Ok((Self::with_empty_index(store, keys, config)?, key))
    }

    fn with_empty_index(
        store: Arc<dyn Store>,
        keys: WorkingKeys,
        config: RepoConfig,
    ) -> Result<Self> {
        let chunkers = Chunkers::new(&config.chunking, keys.chunker_seed)?;
        Ok(Self {
            store,
            keys,
            config,
            chunkers,
            index: Index::new(),
            verified_packs: Mutex::new(HashSet::new()),
        })
    }

    /// Opens a repository. Fails with [`Error::WrongKey`] when the key unlocks no
    /// key slot, before reading anything else.
    pub fn open(store: Arc<dyn Store>, key: &RecoveryKey) -> Result<Self> {
        let slot_names = store.list(Namespace::Keys)?;
        if slot_names.is_empty() {
            return Err(Error::NotARepository);
        }
        let mut master = None;
        let mut corrupt_slot = None;
        for name in &slot_names {
            let object_name = object(Namespace::Keys, name)?;
            let bytes = store.get(&object_name)?;
            match KeySlot::decode(&bytes).and_then(|slot| slot.unwrap_master(key)) {
                Ok(m) => {
                    master = Some(m);
                    break;
                }
                Err(cairn_crypto::Error::WrongKey) => {}
                Err(_) => corrupt_slot = Some(object_name.to_string()),
            }
        }
        let master = match (master, corrupt_slot) {
            (Some(m), _) => m,
            (None, Some(object)) => return Err(Error::Integrity { object }),
            (None, None) => return Err(Error::WrongKey),
        };
        let keys = WorkingKeys::derive(&master);
        let config_name = object(Namespace::Config, "config")?;
        let config_bytes = match store.get(&config_name) {
            Err(cairn_store::Error::NotFound(_)) => return Err(Error::NotARepository),
            other => other?,
        };
        let config = RepoConfig::open(&keys.metadata, &config_bytes)?;
        let mut repo = Self::with_empty_index(store, keys, config)?;
        repo.load_index()?;
        Ok(repo)
    }

    fn load_index(&mut self) -> Result<()> {
        for name in self.store.list(Namespace::Index)? {
            let object_name = object(Namespace::Index, &name)?;
            let bytes = self.store.get(&object_name)?;
            let shown = object_name.to_string();
            // Files are named by the hash of their bytes.
            if PackId::of_bytes(&bytes).to_hex() != name {
                return Err(Error::Integrity { object: shown });
            }
            let plain = envelope::open_file(
                &self.keys.metadata,
                SealKind::Index,
                INDEX_MAGIC,
                &bytes,
                &shown,
            )?;
            let segment = Index::decode_segment(&plain).map_err(|_| Error::integrity(&shown))?;
            self.index.merge(&segment);
        }
        Ok(())
    }

    /// The repository's fixed parameters.
    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    /// The index of every blob.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// The store the repository lives in.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Reads and opens one blob, checking its kind.
    pub(crate) fn read_blob(&self, id: &ChunkId, kind: BlobKind) -> Result<Vec<u8>> {
        let location = self
            .index
            .get(id)
            .ok_or_else(|| Error::MissingBlob { blob: id.to_hex() })?;
        let pack = pack_object(&location.pack)?;
        if location.entry.kind != kind {
            return Err(Error::integrity(&pack));
        }
        let sealed = self
            .store
            .get_range(
                &pack,
                u64::from(location.entry.offset),
                u64::from(location.entry.sealed_len),
            )
            .map_err(|e| pack_read_error(e, &pack, id))?;
        let key = match kind {
            BlobKind::Data => &self.keys.data,
            BlobKind::Tree => &self.keys.metadata,
        };
        let plain = cairn_pack::open_blob(key, &location.entry, &sealed)
            .map_err(|_| Error::integrity(&pack))?;
        self.verify_pack_header(&location)?;
        Ok(plain)
    }

    /// On first use of a pack in this session, reads its trailer and sealed
    /// header and checks that the header lists the blob exactly as the index
    /// does. Blob reads are ranged, so without this a damaged header or trailer
    /// would go unnoticed until the pack is needed whole; with it, every byte of
    /// a pack a restore touches is authenticated.
    pub(crate) fn verify_pack_header(&self, location: &cairn_index::BlobLocation) -> Result<()> {
        let verified = |set: &HashSet<PackId>| set.contains(&location.pack);
        let lock = || {
            self.verified_packs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
        };
        if verified(&lock()) {
            return Ok(());
        }
        let pack = pack_object(&location.pack)?;
        let corrupt = || Error::integrity(&pack);
        let size = self.store.size(&pack)?;
        let trailer_at = size
            .checked_sub(cairn_pack::TRAILER_LEN as u64)
            .ok_or_else(corrupt)?;
        let tail = self
            .store
            .get_range(&pack, trailer_at, cairn_pack::TRAILER_LEN as u64)?;
        let trailer = cairn_pack::decode_trailer(&tail).map_err(|_| corrupt())?;
        let header_at = trailer_at
            .checked_sub(u64::from(trailer.header_len))
            .ok_or_else(corrupt)?;
        let sealed_header =
            self.store
                .get_range(&pack, header_at, u64::from(trailer.header_len))?;
        let blobs_len = u32::try_from(header_at).map_err(|_| corrupt())?;
        let entries = cairn_pack::open_header(
            &self.keys.metadata,
            trailer.header_compression,
            &sealed_header,
            blobs_len,
        )
        .map_err(|_| corrupt())?;
        if !entries.contains(&location.entry) {
            return Err(corrupt());
        }
        lock().insert(location.pack);
        Ok(())
    }

    /// Reads a data chunk.
    pub(crate) fn read_chunk(&self, id: &ChunkId) -> Result<Vec<u8>> {
        self.read_blob(id, BlobKind::Data)
    }

    /// Reads and decodes a tree.
    pub fn load_tree(&self, id: &ChunkId) -> Result<Tree> {
        let bytes = self.read_blob(id, BlobKind::Tree)?;
        Tree::decode(&bytes).map_err(|_| Error::Integrity {
            object: format!("tree {}", id.to_hex()),
        })
    }

    /// Reads one snapshot.
    pub fn load_snapshot(&self, id: &SnapshotId) -> Result<Snapshot> {
        let name = object(Namespace::Snapshots, &id.to_hex())?;
        let bytes = match self.store.get(&name) {
            Err(cairn_store::Error::NotFound(_)) => {
                return Err(Error::SnapshotNotFound(id.to_hex()));
            }
            other => other?,
        };
        if SnapshotId::of_bytes(&bytes) != *id {
            return Err(Error::integrity(&name));
        }
        Snapshot::open(&self.keys.metadata, &bytes, &name.to_string())
    }

    /// Every snapshot, oldest first.
    pub fn snapshots(&self) -> Result<Vec<(SnapshotId, Snapshot)>> {
        let mut out = Vec::new();
        for name in self.store.list(Namespace::Snapshots)? {
            let id = SnapshotId::from_hex(&name).ok_or_else(|| Error::Integrity {
                object: format!("snapshots/{name}"),
            })?;
            out.push((id, self.load_snapshot(&id)?));
        }
        out.sort_by(|a, b| {
            (a.1.time_secs, a.1.time_nanos, a.0).cmp(&(b.1.time_secs, b.1.time_nanos, b.0))
        });
        Ok(out)
    }

    /// Finds a snapshot by `latest`, full ID or unique ID prefix.
    pub fn find_snapshot(&self, spec: &str) -> Result<(SnapshotId, Snapshot)> {
        if spec == "latest" {
            return self
                .snapshots()?
                .pop()
                .ok_or_else(|| Error::SnapshotNotFound(spec.to_owned()));
        }
        let spec_lower = spec.to_ascii_lowercase();
        let names = self.store.list(Namespace::Snapshots)?;
        let mut matches = names
            .iter()
            .filter(|n| n.starts_with(&spec_lower) && !spec.is_empty());
        let first = matches
            .next()
            .ok_or_else(|| Error::SnapshotNotFound(spec.to_owned()))?;
        if matches.next().is_some() {
            return Err(Error::AmbiguousSnapshot(spec.to_owned()));
        }
        let id =
            SnapshotId::from_hex(first).ok_or_else(|| Error::SnapshotNotFound(spec.to_owned()))?;
        Ok((id, self.load_snapshot(&id)?))
    }

    /// Totals of the repository.
    pub fn stats(&self) -> Result<RepoStats> {
        let mut stats = RepoStats::default();
        for location in self.index.iter() {
            match location.entry.kind {
                BlobKind::Data => {
                    stats.n_data_blobs += 1;
                    stats.data_plain_bytes += u64::from(location.entry.plain_len);
                }
                BlobKind::Tree => stats.n_tree_blobs += 1,
            }
        }
        for ns in Namespace::ALL {
            let names = self.store.list(ns)?;
            match ns {
                Namespace::Packs => stats.n_packs = names.len(),
                Namespace::Index => stats.n_index_files = names.len(),
                Namespace::Snapshots => stats.n_snapshots = names.len(),
                _ => {}
            }
            for name in names {
                stats.repo_bytes += self.store.size(&object(ns, &name)?)?;
            }
        }
        Ok(stats)
    }
}
