//! The repository: creating it, opening it with a recovery key, and reading
//! its snapshots, trees and totals. Blobs are read through the blob store
//! (`blobs.rs`), never directly from the store.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use cairn_crypto::{
    BlobId, BlobKind, KEY_SLOT_LEN, KeySlot, MasterSecret, RecoveryKey, SnapshotId, WorkingKeys,
};
use cairn_store::{Namespace, Store};

use cairn_meta::{
    ChunkingRules, ClassRules, DEFAULT_PACK_TARGET, MAX_CONFIG_FILE_LEN, MAX_SNAPSHOT_FILE_LEN,
    RepoConfig, Retention, Snapshot, Tree,
};

use crate::blobs::{BlobStore, Unreadable, object};
use crate::cache::{Cache, Kind};
use crate::chunking::Chunkers;
use crate::error::{Error, Result, from_crypto, from_meta};
use crate::lineage::{NewestSeen, Watch};
use crate::rules::PathRules;

/// Options of [`Repository::init`].
#[derive(Clone, Debug)]
pub struct InitOptions {
    /// Chunking profiles and rules, fixed for the life of the repository.
    pub chunking: ChunkingRules,
    /// Pack size target in bytes.
    pub pack_target_size: u32,
    /// Which items are media when their source does not say (glob
    /// patterns; see [`PathRules`](crate::PathRules)).
    pub classes: ClassRules,
    /// What the repository keeps (see [`Retention::for_tier`]).
    pub retention: Retention,
}

impl Default for InitOptions {
    fn default() -> Self {
        Self {
            chunking: ChunkingRules::default(),
            pack_target_size: DEFAULT_PACK_TARGET,
            classes: ClassRules::default(),
            retention: Retention::default(),
        }
    }
}

/// Options of [`Repository::open_with`].
#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    /// Where to keep the local metadata cache (index files, snapshot
    /// files, tree packs and pack headers, one directory per repository
    /// below it): a daily backup then reads from the store only what is
    /// new. `None` for no cache. The cache is never trusted without
    /// authentication and may be deleted at any time.
    pub cache_dir: Option<std::path::PathBuf>,
    /// The newest snapshot this device saw in this repository, as a
    /// previous [`Repository::newest_seen`] returned it: a listing that
    /// serves an older history is refused ([`Error::Rollback`]). `None` on a
    /// device that has seen nothing. Persist it where you like, or give
    /// `state_dir` and let the engine keep it (the CLI does).
    pub newest_seen: Option<NewestSeen>,
    /// Accept a history older than `newest_seen` (a repository restored
    /// from an older copy on purpose): it becomes the newest seen.
    pub accept_rollback: bool,
    /// Where this device keeps its state for each repository (the newest
    /// snapshot seen, tagged, in a directory per repository ID below it;
    /// the same safety rules as the cache's). May be the cache directory;
    /// deleting it turns the rollback check off until the next listing.
    pub state_dir: Option<std::path::PathBuf>,
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

/// Every readable snapshot, and the snapshot files that could not be read.
#[derive(Clone, Debug, Default)]
pub struct SnapshotListing {
    /// Readable snapshots with their IDs, oldest first.
    pub snapshots: Vec<(SnapshotId, Snapshot)>,
    /// Snapshot files skipped, and why.
    pub unreadable: Vec<Unreadable>,
}

/// An open repository.
pub struct Repository {
    store: Arc<dyn Store>,
    /// The master secret, kept to wrap it for new key slots (wiped on drop).
    master: MasterSecret,
    /// The key slot this repository was unlocked with (or created).
    slot_in_use: Mutex<String>,
    keys: WorkingKeys,
    config: RepoConfig,
    chunkers: Chunkers,
    /// The config's media rules, compiled.
    media: PathRules,
    blobs: BlobStore,
    /// The local metadata cache, if the caller gave one (shared with `blobs`).
    cache: Option<Arc<Cache>>,
    /// The snapshot files of this process's latest listing: only those are
    /// read from the cache (one forgotten since must not live on in it).
    listed_snapshots: Mutex<HashSet<String>>,
    /// Warnings not yet handed to the caller (see [`Repository::take_warnings`]).
    warnings: Mutex<Vec<String>>,
    /// The newest snapshot seen, and whether going back is accepted.
    watch: Watch,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("config", &self.config)
            .field("n_data_blobs", &self.blobs.count(BlobKind::Data))
            .field("n_tree_blobs", &self.blobs.count(BlobKind::Tree))
            .finish_non_exhaustive()
    }
}

/// Reads key slot `name` and unwraps the master secret with `key`: the
/// secret, or why not (`WrongKey`, or a damaged slot: one too large to be
/// a slot is as damaged as a bad checksum). Store errors, a slot gone
/// included, are the outer error.
pub(crate) fn unlock_slot(
    store: &dyn Store,
    name: &str,
    key: &RecoveryKey,
) -> Result<std::result::Result<MasterSecret, cairn_crypto::Error>> {
    match store.get(&object(Namespace::Keys, name)?, KEY_SLOT_LEN as u64) {
        Ok(bytes) => Ok(KeySlot::decode(&bytes).and_then(|slot| slot.unwrap_master(key))),
        Err(cairn_store::Error::TooLarge { .. }) => Ok(Err(cairn_crypto::Error::Integrity)),
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn random_name() -> Result<String> {
    let mut bytes = [0u8; 16];
    cairn_crypto::random_bytes(&mut bytes).map_err(|_| Error::Random)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

impl Repository {
    /// Creates a repository in a store without one, with a new recovery key.
    /// Returns it open, with the key, which the caller must show to the user
    /// once; it is not stored anywhere. A caller that must save the key before
    /// anything is written (the CLI writes its key file first) generates it
    /// with [`RecoveryKey::generate`] and calls [`Repository::init_with_key`].
    pub fn init(store: Arc<dyn Store>, options: &InitOptions) -> Result<(Self, RecoveryKey)> {
        let key = RecoveryKey::generate().map_err(|_| Error::Random)?;
        Ok((Self::init_with_key(store, &key, options)?, key))
    }

    /// Creates a repository unlocked by `key`. The store may hold what an
    /// interrupted `init` left (key slots without a config): the config is
    /// init's commit point, and such slots unlock nothing usable.
    pub fn init_with_key(
        store: Arc<dyn Store>,
        key: &RecoveryKey,
        options: &InitOptions,
    ) -> Result<Self> {
        let config = RepoConfig {
            chunking: options.chunking.clone(),
            pack_target_size: options.pack_target_size,
            classes: options.classes.clone(),
            retention: options.retention,
            ..RepoConfig::new([0; 16])
        };
        config.validate().map_err(from_meta("config"))?;
        PathRules::new(&config.classes.media)?;
        // A key the caller chose must look drawn at random.
        key.check_chosen().map_err(from_crypto("recovery key"))?;
        if !store.list(Namespace::Config)?.is_empty() {
            return Err(Error::AlreadyInitialized);
        }
        // What an interrupted init left in flight goes first.
        store.clean_interrupted_writes()?;
        let master = MasterSecret::generate().map_err(|_| Error::Random)?;
        let slot = KeySlot::wrap(key, &master).map_err(from_crypto("key slot"))?;
        let keys = WorkingKeys::derive(&master);
        let mut config = config;
        cairn_crypto::random_bytes(&mut config.repo_id).map_err(|_| Error::Random)?;
        // Validate what we are about to write the same way `open` will.
        let sealed_config = config.seal(&keys.metadata).map_err(from_meta("config"))?;
        RepoConfig::open(&keys.metadata, &sealed_config).map_err(from_meta("config"))?;
        let slot_name = random_name()?;
        store.put(&object(Namespace::Keys, &slot_name)?, &slot.encode())?;
        // The commit point: a second init racing this one fails here.
        match store.put(&object(Namespace::Config, "config")?, &sealed_config) {
            Err(cairn_store::Error::AlreadyExists(_)) => return Err(Error::AlreadyInitialized),
            other => other?,
        }
        Self::assemble(
            store,
            master,
            slot_name,
            config,
            None,
            Watch::new(None, false, None),
        )
    }

    fn assemble(
        store: Arc<dyn Store>,
        master: MasterSecret,
        slot_in_use: String,
        config: RepoConfig,
        cache: Option<Arc<Cache>>,
        watch: Watch,
    ) -> Result<Self> {
        let keys = WorkingKeys::derive(&master);
        let chunkers = Chunkers::new(&config.chunking, &keys)?;
        // Only a key holder writes the config: a rule that does not compile
        // is damage, not input.
        let media = PathRules::new(&config.classes.media).map_err(|_| Error::Integrity {
            object: "config/config (media rules)".into(),
        })?;
        let blobs = BlobStore::new(
            store.clone(),
            keys.data.clone(),
            keys.metadata.clone(),
            cache.clone(),
        );
        Ok(Self {
            store,
            master,
            slot_in_use: Mutex::new(slot_in_use),
            keys,
            config,
            chunkers,
            media,
            blobs,
            cache,
            listed_snapshots: Mutex::new(HashSet::new()),
            warnings: Mutex::new(Vec::new()),
            watch,
        })
    }

    /// Opens a repository. Fails with [`Error::WrongKey`] when the key unlocks no
    /// key slot, before reading anything else. Index files that cannot be read
    /// are skipped with a warning (see [`Repository::take_warnings`]).
    pub fn open(store: Arc<dyn Store>, key: &RecoveryKey) -> Result<Self> {
        Self::open_with(store, key, &OpenOptions::default())
    }

    /// [`Repository::open`] with options (a local metadata cache).
    pub fn open_with(
        store: Arc<dyn Store>,
        key: &RecoveryKey,
        options: &OpenOptions,
    ) -> Result<Self> {
        let slot_names = store.list(Namespace::Keys)?;
        if slot_names.is_empty() {
            return Err(Error::NotARepository);
        }
        let mut master = None;
        let mut corrupt_slot = None;
        let mut slot_in_use = String::new();
        for name in &slot_names {
            match unlock_slot(&*store, name, key)? {
                Ok(m) => {
                    master = Some(m);
                    slot_in_use.clone_from(name);
                    break;
                }
                Err(cairn_crypto::Error::WrongKey) => {}
                Err(_) => corrupt_slot = Some(object(Namespace::Keys, name)?.to_string()),
            }
        }
        let master = match (master, corrupt_slot) {
            (Some(m), _) => m,
            (None, Some(object)) => return Err(Error::Integrity { object }),
            (None, None) => return Err(Error::WrongKey),
        };
        let keys = WorkingKeys::derive(&master);
        let config_name = object(Namespace::Config, "config")?;
        let config_bytes = match store.get(&config_name, MAX_CONFIG_FILE_LEN) {
            Err(cairn_store::Error::NotFound(_)) => return Err(Error::NotARepository),
            other => other?,
        };
        let config =
            RepoConfig::open(&keys.metadata, &config_bytes).map_err(from_meta(&config_name))?;
        let mut refused = Vec::new();
        let cache = options.cache_dir.as_deref().and_then(|root| {
            Cache::open(root, &config.repo_id, keys.cache.clone())
                .map_err(|why| refused.push(format!("{why}: working without a cache")))
                .ok()
                .map(Arc::new)
        });
        let state = options.state_dir.as_deref().and_then(|root| {
            Cache::open(root, &config.repo_id, keys.cache.clone())
                .map_err(|why| refused.push(format!("{why}: the newest snapshot seen is not kept")))
                .ok()
                .map(Arc::new)
        });
        let watch = Watch::new(options.newest_seen, options.accept_rollback, state);
        let mut repo = Self::assemble(store, master, slot_in_use, config, cache, watch)?;
        repo.note(refused);
        let skipped = repo.blobs.load()?;
        repo.note(skipped.iter().map(ToString::to_string));
        Ok(repo)
    }

    /// Forgets the index view and reads it again from the store (after a
    /// repair rewrote the index: the old view holds what it dropped).
    pub(crate) fn reload_view(&mut self) -> Result<()> {
        self.blobs = BlobStore::new(
            self.store.clone(),
            self.keys.data.clone(),
            self.keys.metadata.clone(),
            self.cache.clone(),
        );
        let skipped = self.blobs.load()?;
        self.note(skipped.iter().map(ToString::to_string));
        Ok(())
    }

    /// Records warnings for the caller.
    pub(crate) fn note(&self, warnings: impl IntoIterator<Item = String>) {
        self.warnings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(warnings);
    }

    /// Warnings gathered since the last call: objects skipped because they
    /// are damaged or missing (index files at open, snapshots while listing,
    /// packs while reading). The operation that met them went on without
    /// them; a frontend should show them.
    pub fn take_warnings(&self) -> Vec<String> {
        let mut out = self.blobs.take_warnings();
        out.extend(std::mem::take(
            &mut *self.warnings.lock().unwrap_or_else(|e| e.into_inner()),
        ));
        out
    }

    /// The repository's fixed parameters.
    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    /// The store the repository lives in.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The master secret (to wrap it for a new key slot).
    pub(crate) fn master(&self) -> &MasterSecret {
        &self.master
    }

    /// The ID of the key slot this repository was opened with.
    pub(crate) fn slot_in_use(&self) -> String {
        self.slot_in_use_lock().clone()
    }

    pub(crate) fn slot_in_use_lock(&self) -> std::sync::MutexGuard<'_, String> {
        self.slot_in_use.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn keys(&self) -> &WorkingKeys {
        &self.keys
    }

    pub(crate) fn chunkers(&self) -> &Chunkers {
        &self.chunkers
    }

    pub(crate) fn media_rules(&self) -> &PathRules {
        &self.media
    }

    pub(crate) fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    /// Reads and decodes a tree.
    pub fn load_tree(&self, id: &BlobId) -> Result<Tree> {
        let bytes = self.blobs.read(BlobKind::Tree, id)?;
        Tree::decode(&bytes, self.config.format).map_err(|_| Error::Integrity {
            object: format!("tree {}", id.to_hex()),
        })
    }

    /// Reads one snapshot.
    pub fn load_snapshot(&self, id: &SnapshotId) -> Result<Snapshot> {
        let name = object(Namespace::Snapshots, &id.to_hex())?;
        let listed = self
            .listed_snapshots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(name.name());
        // Not listed: possibly forgotten since; only the store may say.
        let store_only = (!listed).then(|| self.blobs.uncached());
        let fetched = self
            .blobs
            .fetch(Kind::Snapshots, &name, MAX_SNAPSHOT_FILE_LEN);
        drop(store_only);
        let bytes = match fetched {
            Err(Error::Store(cairn_store::Error::NotFound(_))) => {
                return Err(Error::SnapshotNotFound(id.to_hex()));
            }
            other => other?,
        };
        if SnapshotId::of_bytes(&bytes) != *id {
            return Err(Error::integrity(&name));
        }
        let snapshot = Snapshot::open(&self.keys.metadata, &bytes).map_err(from_meta(&name))?;
        // Committed after this repository was opened (by another process):
        // its index files are newer than ours. A backup writes them before
        // its snapshot, so they are there to read.
        if !self.blobs.knows(BlobKind::Tree, &snapshot.root_id()) {
            let skipped = self.blobs.load_new_index_files()?;
            self.note(skipped.iter().map(ToString::to_string));
        }
        Ok(snapshot)
    }

    /// Every readable snapshot, oldest first, and the snapshot files that
    /// could not be read.
    pub fn list_snapshots(&self) -> Result<SnapshotListing> {
        let listing = self.list_snapshots_unchecked()?;
        self.watch
            .check(&listing.snapshots, listing.unreadable.len())?;
        Ok(listing)
    }

    /// [`Repository::list_snapshots`] without the rollback check.
    fn list_snapshots_unchecked(&self) -> Result<SnapshotListing> {
        let mut out = Vec::new();
        let mut unreadable = Vec::new();
        let listed = self.list_snapshot_files()?;
        for name in listed {
            let loaded = SnapshotId::from_hex(&name)
                .ok_or_else(|| Error::integrity(format!("snapshots/{name}")))
                .and_then(|id| Ok((id, self.load_snapshot(&id)?)));
            match loaded {
                Ok(pair) => out.push(pair),
                // Listed, then forgotten by a concurrent `forget`.
                Err(Error::SnapshotNotFound(_)) => {}
                Err(e) if e.is_repository_damage() => unreadable.push(Unreadable {
                    object: format!("snapshots/{name}"),
                    reason: e.to_string(),
                }),
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| {
            (a.1.time_secs, a.1.time_nanos, a.0).cmp(&(b.1.time_secs, b.1.time_nanos, b.0))
        });
        Ok(SnapshotListing {
            snapshots: out,
            unreadable,
        })
    }

    /// Lists the snapshot files, and keeps in the cache only their copies.
    fn list_snapshot_files(&self) -> Result<Vec<String>> {
        let listed = self.store.list(Namespace::Snapshots)?;
        let names: HashSet<String> = listed.iter().cloned().collect();
        if let Some(cache) = &self.cache {
            cache.retain(Kind::Snapshots, &names);
        }
        *self
            .listed_snapshots
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = names;
        Ok(listed)
    }

    /// The newest snapshot this handle has seen (listed or written), for
    /// the caller to persist and give back through
    /// [`OpenOptions::newest_seen`] next time. `None` until a listing saw a
    /// snapshot of format 3.
    pub fn newest_seen(&self) -> Option<NewestSeen> {
        self.watch.seen()
    }

    pub(crate) fn watch(&self) -> &Watch {
        &self.watch
    }

    /// Seals `part` as an index file of this repository and puts it (the
    /// writers other than a backup's packer: prune, compact, repair).
    pub(crate) fn put_index_part(&self, part: &cairn_index::Index) -> Result<(String, u64)> {
        crate::blobs::put_index_file(
            &*self.store,
            self.blobs.cache(),
            &self.keys.metadata,
            self.config.format,
            part,
        )
    }

    /// Every readable snapshot, oldest first. A snapshot file that cannot be
    /// read is skipped with a warning naming it ([`Repository::take_warnings`]).
    pub fn snapshots(&self) -> Result<Vec<(SnapshotId, Snapshot)>> {
        let listing = self.list_snapshots()?;
        self.note(listing.unreadable.iter().map(ToString::to_string));
        Ok(listing.snapshots)
    }

    /// Finds a snapshot by `latest` (the newest readable one), full ID or
    /// unique ID prefix.
    pub fn find_snapshot(&self, spec: &str) -> Result<(SnapshotId, Snapshot)> {
        if spec == "latest" {
            return self
                .snapshots()?
                .pop()
                .ok_or_else(|| Error::SnapshotNotFound(spec.to_owned()));
        }
        let spec_lower = spec.to_ascii_lowercase();
        let names = self.list_snapshot_files()?;
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
        self.blobs.for_each(|location| match location.entry.kind {
            BlobKind::Data => {
                stats.n_data_blobs += 1;
                stats.data_plain_bytes += u64::from(location.entry.plain_len);
            }
            BlobKind::Tree => stats.n_tree_blobs += 1,
        });
        let (counts, bytes) = self.object_totals()?;
        for (ns, n) in counts {
            match ns {
                Namespace::Packs => stats.n_packs = n,
                Namespace::Index => stats.n_index_files = n,
                Namespace::Snapshots => stats.n_snapshots = n,
                _ => {}
            }
        }
        stats.repo_bytes = bytes;
        Ok(stats)
    }

    /// Bytes of every object in the repository's store (what a quota
    /// bounds).
    pub(crate) fn stored_bytes(&self) -> Result<u64> {
        Ok(self.object_totals()?.1)
    }

    /// How many objects each namespace holds, and the bytes of all: one
    /// listing with sizes per namespace (a few requests on object storage,
    /// however many objects).
    fn object_totals(&self) -> Result<(Vec<(Namespace, usize)>, u64)> {
        let mut counts = Vec::with_capacity(Namespace::ALL.len());
        let mut bytes = 0;
        for ns in Namespace::ALL {
            let listed = self.store.list_sized(ns)?;
            counts.push((ns, listed.len()));
            bytes += listed.iter().map(|(_, size)| size).sum::<u64>();
        }
        Ok((counts, bytes))
    }
}
