//! The blob store: the repository's index together with the packs it names,
//! and the one path by which every reader (trees, file streams, restores)
//! gets a blob's plaintext.
//!
//! **Invariant: the index is never trusted over the store.** The index is
//! loaded after one listing of the packs; locations in packs that are not
//! there are forgotten (an alternate copy elsewhere takes over). The first
//! time a session uses a pack, its trailer and sealed header are read and
//! must list the blob exactly as the index does. A pack found missing or
//! damaged is distrusted for the rest of the session: readers get an error
//! that names it, and a backup stores the blobs it held again when it meets
//! their content ([`BlobStore::confirm`]), so it never commits a snapshot
//! that refers to a blob it has not confirmed.
//!
//! **The local cache** (`cache.rs`) spares requests, never checks: index
//! files come from it only when their bytes hash to their names, a pack's
//! header only when the store's latest listing shows the pack at the size
//! cached and the header authenticates, a tree blob only when it
//! authenticates; a copy that fails is dropped and the store asked.
//!
//! **Invariant: one bad index file costs only its own entries.** An index
//! file that cannot be read or authenticated is skipped with a warning that
//! names it; its blobs look absent (a backup stores them again, a restore
//! that needs them reports them missing).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use cairn_crypto::{BlobId, BlobKind, Opener, PackId, SealKey, SealKind};
use cairn_index::{BlobLocation, Index};
use cairn_meta::{Condemnation, MAX_CONDEMNED_FILE_LEN};
use cairn_pack::{MAX_HEADER_SEALED_LEN, PackEntry};
use cairn_store::{Namespace, ObjectName, Store};

use crate::cache::{Cache, Kind, Uncached};
use crate::error::{Error, Result, from_meta};

const INDEX_MAGIC: &[u8; 8] = b"CAIRNIXF";
/// Largest index file accepted: a sealed segment of the most entries the
/// format allows (compression only ever makes it smaller).
const MAX_INDEX_FILE_LEN: u64 =
    cairn_crypto::padded_len((cairn_index::MAX_SEGMENT_LEN + 256) as u64);
/// Bytes read from a pack's end to get its header: one request covers the
/// header of a pack of a few hundred blobs; a larger header costs a second.
const TAIL_GUESS: u64 = 16 * 1024;
/// Largest tree pack fetched whole to be cached (larger ones are read by
/// ranges, uncached).
const MAX_CACHED_TREE_PACK: u64 = 64 * 1024 * 1024;

/// What a session learned about a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PackState {
    /// Its header was read and matched the index.
    Verified,
    /// It is not in the store.
    Missing,
    /// Its trailer or header is damaged, or does not list what the index says.
    Damaged,
}

/// Why a blob's only known location was forgotten.
#[derive(Clone, Copy, Debug)]
enum Lost {
    /// Its pack is missing or its pack's header is damaged.
    InPack(PackId),
    /// Its own bytes in this pack failed authentication.
    Damaged(PackId),
}

/// What a pack's last bytes gave.
enum Tail {
    /// The authenticated header's entries, and how many of the last bytes
    /// hold the header and trailer.
    Entries(Vec<PackEntry>, usize),
    /// The header is longer: this many bytes from the end hold it.
    Short(u64),
    /// A trailer or header that does not decode or authenticate.
    Damaged,
}

/// A repository object that could not be used, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unreadable {
    /// The object's name in the store, e.g. `index/3fa9…`.
    pub object: String,
    /// Why it was skipped.
    pub reason: String,
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "skipped {}: {}", self.object, self.reason)
    }
}

/// Seals `index` as an index file (padded in format 3) and puts it; returns
/// its name and size. Every index file is written here (backups and prune).
pub(crate) fn put_index_file(
    store: &dyn Store,
    cache: Option<&Cache>,
    metadata_key: &SealKey,
    format: cairn_meta::Format,
    index: &Index,
) -> Result<(String, u64)> {
    let segment = index
        .encode_segment()
        .map_err(|_| Error::InvalidInput("index segment too large".into()))?;
    let padded = format >= cairn_meta::Format::V3;
    let sealed =
        cairn_meta::seal_file(metadata_key, SealKind::Index, INDEX_MAGIC, &segment, padded)
            .map_err(from_meta("index file"))?;
    let name = PackId::of_bytes(&sealed).to_hex();
    match store.put(&object(Namespace::Index, &name)?, &sealed) {
        // Same name, same bytes.
        Ok(()) | Err(cairn_store::Error::AlreadyExists(_)) => {}
        Err(e) => return Err(e.into()),
    }
    if let Some(cache) = cache {
        cache.put(Kind::Index, &name, &[&sealed]);
    }
    Ok((name, sealed.len() as u64))
}

/// Deletes an object; one already gone counts as deleted (a concurrent
/// forget or prune did it, or an earlier run that was interrupted).
pub(crate) fn delete_object(store: &dyn Store, namespace: Namespace, name: &str) -> Result<()> {
    match store.delete(&object(namespace, name)?) {
        Ok(()) | Err(cairn_store::Error::NotFound(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn object(namespace: Namespace, name: &str) -> Result<ObjectName> {
    Ok(ObjectName::new(namespace, name)?)
}

pub(crate) fn pack_object(id: &PackId) -> Result<ObjectName> {
    object(Namespace::Packs, &id.to_hex())
}

/// The index, the packs' states, and the keys to open blobs.
pub(crate) struct BlobStore {
    store: Arc<dyn Store>,
    data_key: SealKey,
    metadata_key: SealKey,
    index: RwLock<Index>,
    packs: Mutex<HashMap<PackId, PackState>>,
    /// Blobs whose only known location was lost: in a missing or damaged
    /// pack, or bytes that failed authentication. Lets an error name the
    /// pack rather than say "in no index".
    lost: Mutex<HashMap<(BlobKind, BlobId), Lost>>,
    /// Warnings not yet handed to a caller (distrusted packs).
    warnings: Mutex<Vec<String>>,
    /// Index files already read (loaded or skipped), by name.
    seen_index_files: Mutex<HashSet<String>>,
    /// The packs each loaded index file names, by file name: what prune
    /// needs to decide which files to supersede.
    index_file_packs: Mutex<HashMap<String, Vec<PackId>>>,
    /// Condemnation records read, by name.
    condemned: Mutex<HashMap<String, Condemnation>>,
    /// Packs some condemnation record names: about to be deleted by a prune.
    /// Locations in them are used last, and never deduplicated against.
    condemned_packs: Mutex<HashSet<PackId>>,
    /// Index files skipped because they could not be read: the packs only
    /// they name look unindexed, so prune must not run while there are any.
    unreadable_index_files: Mutex<Vec<Unreadable>>,
    /// Packs (or blobs) whose loss made a reader look for index files
    /// written since: once each.
    reloaded_for: Mutex<HashSet<String>>,
    /// Whether opening listed the packs and no backup has used that listing.
    packs_listed_at_open: Mutex<bool>,
    /// The packs of the latest listing, with their sizes.
    listed_packs: Mutex<HashMap<PackId, u64>>,
    /// The local metadata cache, if the caller gave one.
    cache: Option<Arc<Cache>>,
    /// Tree packs this session could not cache (too large, damaged, a cache
    /// that cannot be written): read by ranges, never fetched whole again.
    uncacheable: Mutex<HashSet<PackId>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section is a single insert or lookup: a panic elsewhere
    // cannot leave the data half-updated.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl BlobStore {
    /// An empty blob store (a new repository).
    pub fn new(
        store: Arc<dyn Store>,
        data_key: SealKey,
        metadata_key: SealKey,
        cache: Option<Arc<Cache>>,
    ) -> Self {
        Self {
            store,
            data_key,
            metadata_key,
            index: RwLock::new(Index::new()),
            packs: Mutex::new(HashMap::new()),
            lost: Mutex::new(HashMap::new()),
            warnings: Mutex::new(Vec::new()),
            seen_index_files: Mutex::new(HashSet::new()),
            index_file_packs: Mutex::new(HashMap::new()),
            condemned: Mutex::new(HashMap::new()),
            condemned_packs: Mutex::new(HashSet::new()),
            reloaded_for: Mutex::new(HashSet::new()),
            unreadable_index_files: Mutex::new(Vec::new()),
            packs_listed_at_open: Mutex::new(false),
            listed_packs: Mutex::new(HashMap::new()),
            cache,
            uncacheable: Mutex::new(HashSet::new()),
        }
    }

    /// Reads only the store's bytes until the guard is dropped: what
    /// `check` and `repair` judge is the repository, not this device's
    /// copies of it. (Copies are still written: they are what was read.)
    pub fn uncached(&self) -> Option<Uncached> {
        self.cache.as_ref().map(Cache::bypass)
    }

    /// The cache to read copies from: none while a reader wants the store.
    fn cache_reads(&self) -> Option<&Cache> {
        self.cache.as_deref().filter(|cache| !cache.bypassed())
    }

    /// The local metadata cache, if any.
    pub fn cache(&self) -> Option<&Cache> {
        self.cache.as_deref()
    }

    /// The local metadata cache, if any, to share with a writer.
    pub fn cache_handle(&self) -> Option<Arc<Cache>> {
        self.cache.clone()
    }

    fn read_index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_index(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Loads every index file, then forgets locations in packs the store does
    /// not have. Index files are listed before packs: a pack is always written
    /// before the index file naming it, so a concurrent backup's new packs are
    /// never mistaken for lost ones. Returns the index files skipped.
    pub fn load(&mut self) -> Result<Vec<Unreadable>> {
        let mut skipped = self.load_new_index_files()?;
        skipped.extend(self.load_condemned()?);
        if self.list_packs()? > 0 {
            // Packs an index file names are gone: a prune may have moved
            // their blobs, and superseded that file with one a cached copy
            // of it kept us from looking for. Read what was written since.
            skipped.extend(self.load_new_index_files()?);
        }
        *self
            .packs_listed_at_open
            .get_mut()
            .unwrap_or_else(|e| e.into_inner()) = true;
        Ok(skipped)
    }

    /// Reads the index files not read yet (another process may have written
    /// some since): a snapshot committed after this repository was opened
    /// names blobs only those files know. Returns the files skipped.
    pub fn load_new_index_files(&self) -> Result<Vec<Unreadable>> {
        let mut skipped = Vec::new();
        // A listed file that is gone when read was superseded by a prune
        // meanwhile, and the file superseding it was written before it went
        // but after the listing: list again until a listing reads whole.
        let mut vanished = true;
        while vanished {
            vanished = false;
            let listed = self.store.list(Namespace::Index)?;
            if let Some(cache) = &self.cache {
                cache.retain(Kind::Index, &listed.iter().cloned().collect());
            }
            for name in listed {
                if lock(&self.seen_index_files).contains(&name) {
                    continue;
                }
                let object_name = object(Namespace::Index, &name)?;
                match self.read_index_file(&object_name, &name) {
                    Ok(segment) => {
                        let mut index = self.write_index();
                        index.merge(&segment);
                        // Packs found missing or damaged stay distrusted:
                        // their locations must not come back.
                        let distrusted: HashSet<PackId> = lock(&self.packs)
                            .iter()
                            .filter(|(_, state)| **state != PackState::Verified)
                            .map(|(pack, _)| *pack)
                            .collect();
                        if segment.packs().iter().any(|p| distrusted.contains(p)) {
                            index.forget_packs(&distrusted);
                        }
                        drop(index);
                        let packs = segment.packs().to_vec();
                        lock(&self.index_file_packs).insert(name.clone(), packs);
                    }
                    Err(Error::Store(cairn_store::Error::NotFound(_))) => vanished = true,
                    Err(e) if e.is_repository_damage() => {
                        let bad = Unreadable {
                            object: object_name.to_string(),
                            reason: e.to_string(),
                        };
                        lock(&self.unreadable_index_files).push(bad.clone());
                        skipped.push(bad);
                    }
                    Err(e) => return Err(e),
                }
                lock(&self.seen_index_files).insert(name);
            }
        }
        Ok(skipped)
    }

    /// Reads the condemnation records not read yet, and demotes the packs
    /// they name (docs/format.md, "Sharing a repository"). A record that
    /// cannot be read is skipped with a warning: its packs are then used as
    /// any other (the prune that wrote it deletes nothing while a backup's
    /// session marker is live). Returns the records skipped.
    pub fn load_condemned(&self) -> Result<Vec<Unreadable>> {
        let mut skipped = Vec::new();
        let mut new_packs = HashSet::new();
        for name in self.store.list(Namespace::Condemned)? {
            if lock(&self.condemned).contains_key(&name) {
                continue;
            }
            let object_name = object(Namespace::Condemned, &name)?;
            match self.read_condemned(&object_name, &name) {
                Ok(record) => {
                    new_packs.extend(record.packs.iter().copied());
                    lock(&self.condemned).insert(name, record);
                }
                // Finished and removed by its prune since the listing.
                Err(Error::Store(cairn_store::Error::NotFound(_))) => {}
                Err(e) if e.is_repository_damage() => skipped.push(Unreadable {
                    object: object_name.to_string(),
                    reason: e.to_string(),
                }),
                Err(e) => return Err(e),
            }
        }
        if !new_packs.is_empty() {
            let mut all = lock(&self.condemned_packs);
            all.extend(new_packs);
            self.write_index().demote_packs(&all);
        }
        Ok(skipped)
    }

    /// Reads and authenticates one condemnation record.
    pub fn read_condemned(&self, object_name: &ObjectName, name: &str) -> Result<Condemnation> {
        let bytes = self.store.get(object_name, MAX_CONDEMNED_FILE_LEN)?;
        let shown = object_name.to_string();
        if PackId::of_bytes(&bytes).to_hex() != name {
            return Err(Error::integrity(&shown));
        }
        Condemnation::open(&self.metadata_key, &bytes).map_err(from_meta(&shown))
    }

    /// Index files this view skipped because they could not be read.
    pub fn unreadable_index_files(&self) -> Vec<Unreadable> {
        lock(&self.unreadable_index_files).clone()
    }

    /// The condemnation records read, by name.
    pub fn condemnations(&self) -> HashMap<String, Condemnation> {
        lock(&self.condemned).clone()
    }

    /// Every pack the condemnation records read name (gone ones included).
    pub fn packs_in_records(&self) -> HashSet<PackId> {
        lock(&self.condemned)
            .values()
            .flat_map(|r| r.packs.iter().copied())
            .collect()
    }

    /// Every index file the condemnation records read supersede, by name:
    /// the files superseding them already carry what they still hold.
    pub fn index_files_in_records(&self) -> HashSet<String> {
        lock(&self.condemned)
            .values()
            .flat_map(|r| r.superseded_index_files.iter().map(PackId::to_hex))
            .collect()
    }

    /// Whether some condemnation record names this pack.
    pub fn is_condemned(&self, pack: &PackId) -> bool {
        lock(&self.condemned_packs).contains(pack)
    }

    /// The loaded index files and the packs each names.
    pub fn index_files(&self) -> HashMap<String, Vec<PackId>> {
        lock(&self.index_file_packs).clone()
    }

    /// Runs `f` on the whole index (read-locked meanwhile).
    pub fn with_index<R>(&self, f: impl FnOnce(&Index) -> R) -> R {
        f(&self.read_index())
    }

    /// The packs this session has verified (since the last backup began).
    pub fn verified_packs(&self) -> Vec<PackId> {
        lock(&self.packs)
            .iter()
            .filter(|(_, state)| **state == PackState::Verified)
            .map(|(pack, _)| *pack)
            .collect()
    }

    /// Registers an index file this process wrote (its blobs are merged
    /// separately).
    pub fn register_index_file(&self, name: String, packs: Vec<PackId>) {
        lock(&self.seen_index_files).insert(name.clone());
        lock(&self.index_file_packs).insert(name, packs);
    }

    /// Forgets the locations in packs a prune of this process deleted
    /// (without the warnings a lost pack gets: nothing live was in them).
    pub fn forget_deleted_packs(&self, packs: &[PackId]) {
        let gone: HashSet<PackId> = packs.iter().copied().collect();
        self.write_index().forget_packs(&gone);
        lock(&self.condemned_packs).retain(|p| !gone.contains(p));
    }

    /// Forgets index files and condemnation records deleted by a prune of
    /// this process.
    pub fn forget_deleted(&self, index_files: &[String], records: &[String]) {
        let mut packs = lock(&self.index_file_packs);
        for name in index_files {
            packs.remove(name);
        }
        drop(packs);
        let mut condemned = lock(&self.condemned);
        for name in records {
            condemned.remove(name);
        }
    }

    /// Whether the index knows a blob of `kind` named `id`.
    pub fn knows(&self, kind: BlobKind, id: &BlobId) -> bool {
        self.read_index().contains(kind, id)
    }

    /// Called before a backup deduplicates against anything: packs verified
    /// earlier are verified again on first use (a long-lived process must not
    /// trust a header it read yesterday), and the packs are listed again
    /// (one listing) so a pack lost since is noticed at once, except by the
    /// first backup after opening, whose open has just listed them. Either
    /// way a pack that vanishes later is caught by its header check.
    ///
    /// The caller has written its session marker: condemnation records are
    /// read again after it, so the backup never deduplicates against a
    /// pack that a prune which could miss its marker is deleting.
    pub fn prepare_backup(&self) -> Result<Vec<Unreadable>> {
        lock(&self.packs).retain(|_, state| *state != PackState::Verified);
        let skipped = self.load_condemned()?;
        let just_listed = std::mem::take(&mut *lock(&self.packs_listed_at_open));
        let mut skipped = skipped;
        if !just_listed {
            // Index files written since (another process's, or this one's
            // checkpoints of a backup that failed: a retry reuses its
            // uploads), listed before the packs they name.
            skipped.extend(self.load_new_index_files()?);
            self.list_packs()?;
        }
        Ok(skipped)
    }

    /// Re-validates, before a commit, a backup whose session marker may
    /// have lapsed (the process was suspended): reads condemnation records
    /// and lists the packs again (the caller has renewed its marker). Fails
    /// if a pack the backup relied on (`own_packs`, which it wrote, or one
    /// it deduplicated against) is condemned or gone.
    pub fn revalidate(&self, own_packs: &[PackId]) -> Result<()> {
        self.load_condemned()?;
        let present: HashSet<String> = self.store.list(Namespace::Packs)?.into_iter().collect();
        let condemned = lock(&self.condemned_packs).clone();
        for pack in self.verified_packs().iter().chain(own_packs) {
            if condemned.contains(pack) || !present.contains(&pack.to_hex()) {
                return Err(Error::SessionLapsed);
            }
        }
        Ok(())
    }

    /// Lists the packs (one listing) and distrusts every pack the index names
    /// that is not there; returns how many.
    fn list_packs(&self) -> Result<usize> {
        let listed = self.store.list_sized(Namespace::Packs)?;
        if let Some(cache) = &self.cache {
            let live: HashSet<String> = listed.iter().map(|(name, _)| name.clone()).collect();
            cache.retain(Kind::Headers, &live);
            cache.retain(Kind::TreePacks, &live);
        }
        *lock(&self.listed_packs) = listed
            .iter()
            .filter_map(|(name, size)| Some((PackId::from_hex(name)?, *size)))
            .collect();
        let present: HashSet<String> = listed.into_iter().map(|(name, _)| name).collect();
        // The packs the index ever named (one entry per pack, not per blob:
        // this runs before every backup); a pack already distrusted costs
        // nothing more.
        let missing: Vec<PackId> = self
            .read_index()
            .packs()
            .iter()
            .filter(|p| !present.contains(&p.to_hex()))
            .copied()
            .collect();
        let n_missing = missing.len();
        for pack in missing {
            self.distrust(pack, PackState::Missing);
        }
        Ok(n_missing)
    }

    /// Reads, authenticates and decodes one index file.
    pub fn read_index_file(&self, object_name: &ObjectName, name: &str) -> Result<Index> {
        let bytes = self.fetch(Kind::Index, object_name, MAX_INDEX_FILE_LEN)?;
        let shown = object_name.to_string();
        // Files are named by the hash of their bytes.
        if PackId::of_bytes(&bytes).to_hex() != name {
            return Err(Error::integrity(&shown));
        }
        let plain = cairn_meta::open_file(&self.metadata_key, SealKind::Index, INDEX_MAGIC, &bytes)
            .map_err(from_meta(&shown))?;
        Index::decode_segment(&plain).map_err(|_| Error::integrity(&shown))
    }

    /// A whole object named by the hash of its bytes: the cached copy when
    /// it is intact, else the store's (kept in the cache for next time).
    pub fn fetch(&self, kind: Kind, object_name: &ObjectName, max_len: u64) -> Result<Vec<u8>> {
        let name = object_name.name();
        if let Some(cache) = self.cache_reads()
            && let Some(bytes) = cache.get(kind, name, max_len)
        {
            return Ok(bytes);
        }
        let bytes = self.store.get(object_name, max_len)?;
        if let Some(cache) = &self.cache
            && PackId::of_bytes(&bytes).to_hex() == name
        {
            cache.put(kind, name, &[&bytes]);
        }
        Ok(bytes)
    }

    /// Adds the blobs a backup stored.
    pub fn merge(&self, new: &Index) {
        self.write_index().merge(new);
    }

    /// Number of blobs of `kind` known.
    pub fn count(&self, kind: BlobKind) -> usize {
        self.read_index().len_of(kind)
    }

    /// Calls `f` on every known blob.
    pub fn for_each(&self, mut f: impl FnMut(&BlobLocation)) {
        for location in self.read_index().iter() {
            f(&location);
        }
    }

    /// Marks a pack missing or damaged, forgets its locations (alternates take
    /// over) and queues a warning, once per pack, if it cost anything.
    fn distrust(&self, pack: PackId, state: PackState) {
        if lock(&self.packs).insert(pack, state) == Some(state) {
            return;
        }
        let forgotten = self.write_index().forget_packs(&HashSet::from([pack]));
        let n_forgotten = forgotten.len();
        lock(&self.lost).extend(
            forgotten
                .into_iter()
                .map(|l| ((l.entry.kind, l.entry.id), Lost::InPack(l.pack))),
        );
        // A pack whose every blob has another copy costs nothing: `check`
        // reports it, but every command warning about it would be noise.
        if n_forgotten == 0 {
            return;
        }
        let what = match state {
            PackState::Missing => "is missing",
            _ => "is damaged",
        };
        lock(&self.warnings).push(format!(
            "pack {} {what}: {n_forgotten} blobs only it held are unavailable \
             (a backup stores them again when it meets their content)",
            pack.to_hex()
        ));
    }

    /// Distrusts a pack that `check` found missing or damaged.
    pub fn forget_pack(&self, pack: PackId, missing: bool) {
        let state = if missing {
            PackState::Missing
        } else {
            PackState::Damaged
        };
        self.distrust(pack, state);
    }

    /// Forgets one blob's location whose bytes failed authentication (an
    /// alternate copy takes over) and queues a warning.
    fn distrust_blob(&self, location: &BlobLocation) {
        let still_known = self.write_index().forget_location(location);
        let (kind, id) = (location.entry.kind, location.entry.id);
        if !still_known {
            lock(&self.lost).insert((kind, id), Lost::Damaged(location.pack));
        }
        lock(&self.warnings).push(format!(
            "{} blob {} in pack {} fails authentication{}",
            kind.name(),
            id.to_hex(),
            location.pack.to_hex(),
            if still_known {
                "; another copy is used"
            } else {
                " (a backup in this session stores it again when it meets its content)"
            }
        ));
    }

    /// Warnings queued since the last call.
    pub fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *lock(&self.warnings))
    }

    /// [`Self::locate`], reading the index files written since this view
    /// was loaded when the blob is unknown (once per blob): a prune may have
    /// moved it. For planners that locate before they read.
    pub fn locate_fresh(&self, kind: BlobKind, id: &BlobId) -> Result<BlobLocation> {
        match self.locate(kind, id) {
            Err(e) if self.reload_for(&e)? => self.locate(kind, id),
            other => other,
        }
    }

    /// Where a blob lives, or why it cannot be had.
    pub fn locate(&self, kind: BlobKind, id: &BlobId) -> Result<BlobLocation> {
        if let Some(location) = self.read_index().get(kind, id) {
            return Ok(location);
        }
        let lost = lock(&self.lost).get(&(kind, *id)).copied();
        match lost {
            Some(Lost::InPack(pack)) => Err(self.unavailable_pack_error(&pack, kind, id)),
            Some(Lost::Damaged(pack)) => Err(Error::integrity(format!("packs/{}", pack.to_hex()))),
            None => Err(Error::MissingBlob {
                kind: kind.name(),
                blob: id.to_hex(),
            }),
        }
    }

    fn unavailable_pack_error(&self, pack: &PackId, kind: BlobKind, id: &BlobId) -> Error {
        let state = lock(&self.packs).get(pack).copied();
        match state {
            Some(PackState::Damaged) => Error::integrity(format!("packs/{}", pack.to_hex())),
            _ => Error::MissingPack {
                pack: pack.to_hex(),
                kind: kind.name(),
                blob: id.to_hex(),
            },
        }
    }

    /// Whether a backup may refer to this blob without storing it: the index
    /// knows it and its pack is confirmed (present, header matching). A pack
    /// that fails the check is distrusted (its blobs are then stored again);
    /// only a store failure other than a missing or damaged pack is an error.
    pub fn confirm(&self, kind: BlobKind, id: &BlobId) -> Result<bool> {
        loop {
            let Some(location) = self.read_index().get(kind, id) else {
                return Ok(false);
            };
            // Condemned locations come last: this is the blob's only copy,
            // and a prune is deleting it.
            if self.is_condemned(&location.pack) {
                return Ok(false);
            }
            match self.verify_pack(&location) {
                Ok(()) => return Ok(true),
                // Distrusted: an alternate copy may have taken over.
                Err(e) if e.is_repository_damage() => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads and opens one blob: the read path of trees, file streams and
    /// restores' fallbacks. A blob whose known copies are gone may have been
    /// moved by a prune since this view was loaded: the index files and
    /// condemnation records written since are read (once per lost pack) and
    /// the read is tried again.
    pub fn read(&self, kind: BlobKind, id: &BlobId) -> Result<Vec<u8>> {
        match self.read_known(kind, id) {
            Err(e) if self.reload_for(&e)? => self.read_known(kind, id),
            other => other,
        }
    }

    /// After `error` from a lookup or read: if it says a blob or its pack is
    /// gone, and this view was not refreshed for that blob or pack yet,
    /// reads the index files and condemnation records written since (a
    /// prune may have moved the blob) and says to try again.
    fn reload_for(&self, error: &Error) -> Result<bool> {
        let key = match error {
            Error::MissingPack { pack, .. } => pack,
            Error::MissingBlob { blob, .. } => blob,
            _ => return Ok(false),
        };
        if !lock(&self.reloaded_for).insert(key.clone()) {
            return Ok(false);
        }
        let mut skipped = self.load_new_index_files()?;
        skipped.extend(self.load_condemned()?);
        lock(&self.warnings).extend(skipped.iter().map(ToString::to_string));
        Ok(true)
    }

    fn read_known(&self, kind: BlobKind, id: &BlobId) -> Result<Vec<u8>> {
        let mut tried: Vec<BlobLocation> = Vec::new();
        loop {
            let location = self.locate(kind, id)?;
            // Each failed location is forgotten before the next try; one
            // offered again means it was not (a bug): stop, never spin.
            if tried.contains(&location) {
                return Err(self.unavailable_pack_error(&location.pack, kind, id));
            }
            tried.push(location);
            if kind == BlobKind::Tree
                && let Some(plain) = self.read_cached_tree(&location)?
            {
                return Ok(plain);
            }
            let pack = pack_object(&location.pack)?;
            let mut sealed = match self.store.get_range(
                &pack,
                u64::from(location.entry.offset),
                u64::from(location.entry.sealed_len),
            ) {
                Ok(sealed) => sealed,
                Err(e) => match self.read_error(e, &location) {
                    // The pack was distrusted: try another copy, if any.
                    e if e.is_repository_damage() => continue,
                    e => return Err(e),
                },
            };
            match self.open_in_place(&location, &mut sealed, &mut Opener::new()) {
                Ok(plain) => return Ok(plain.to_vec()),
                // The location was forgotten (its pack or its bytes): try
                // another copy, if the index knows one.
                Err(e)
                    if e.is_repository_damage()
                        && self.read_index().get(kind, id) != Some(location) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// A tree blob from the cached copy of its pack, fetching the pack whole
    /// into the cache first when it is not there (a tree pack is read whole
    /// sooner or later: the next backup walks every tree of its parent).
    /// `None` when there is no cache, or when the copy cannot serve it: the
    /// caller then reads the store by range, as without a cache.
    fn read_cached_tree(&self, location: &BlobLocation) -> Result<Option<Vec<u8>>> {
        let Some(cache) = self.cache_reads() else {
            return Ok(None);
        };
        // A pack that fails its check is the ranged read's to report.
        if self.verify_pack(location).is_err() {
            return Ok(None);
        }
        let pack = location.pack;
        let name = pack.to_hex();
        let (offset, len) = (
            u64::from(location.entry.offset),
            u64::from(location.entry.sealed_len),
        );
        let mut sealed = match cache.read_range(&name, offset, len) {
            Some(sealed) => sealed,
            None if lock(&self.uncacheable).contains(&pack) => return Ok(None),
            None => {
                let fetched = self.fetch_tree_pack(&pack);
                let kept = fetched
                    .as_ref()
                    .is_some_and(|bytes| cache.put(Kind::TreePacks, &name, &[bytes]));
                if !kept {
                    lock(&self.uncacheable).insert(pack);
                }
                // Served from the bytes fetched, cached or not.
                let range = usize::try_from(offset)
                    .ok()
                    .zip(usize::try_from(offset + len).ok());
                match (fetched, range) {
                    (Some(bytes), Some((from, to))) if to <= bytes.len() => {
                        bytes[from..to].to_vec()
                    }
                    _ => return Ok(None),
                }
            }
        };
        match cairn_pack::open_blob_in_place(
            &self.metadata_key,
            &location.entry,
            &mut sealed,
            &mut Opener::new(),
        ) {
            Ok(plain) => Ok(Some(plain.to_vec())),
            // The copy is damaged, not (as far as this says) the store's
            // pack: drop the copy, and let the ranged read judge the pack.
            Err(_) => {
                cache.forget(Kind::TreePacks, &name);
                lock(&self.uncacheable).insert(pack);
                Ok(None)
            }
        }
    }

    /// A tree pack, whole, if it is listed, at most [`MAX_CACHED_TREE_PACK`]
    /// bytes, and its bytes hash to its name; `None` otherwise, and on any
    /// store error (the ranged read that follows reports what is wrong).
    fn fetch_tree_pack(&self, pack: &PackId) -> Option<Vec<u8>> {
        let size = lock(&self.listed_packs).get(pack).copied()?;
        if size > MAX_CACHED_TREE_PACK {
            return None;
        }
        let bytes = self.store.get(&pack_object(pack).ok()?, size).ok()?;
        (PackId::of_bytes(&bytes) == *pack).then_some(bytes)
    }

    /// Opens a blob whose sealed bytes the caller fetched from `location`
    /// (restores fetch many at once): checks the pack's header on first use,
    /// then authenticates and decrypts. Every blob any reader gets passes
    /// here; one that fails authentication is forgotten at that location, so
    /// another copy takes over and a backup stores it again.
    pub fn open(&self, location: &BlobLocation, sealed: &[u8]) -> Result<Vec<u8>> {
        let mut copy = sealed.to_vec();
        self.open_in_place(location, &mut copy, &mut Opener::new())
            .map(<[u8]>::to_vec)
    }

    /// [`Self::open`] without copies, for readers that open many blobs (a
    /// restore worker): decrypts `sealed` where it lies, through `opener`.
    /// The same checks and the same distrust on failure.
    pub fn open_in_place<'a>(
        &self,
        location: &BlobLocation,
        sealed: &'a mut [u8],
        opener: &'a mut Opener,
    ) -> Result<&'a [u8]> {
        self.verify_pack(location)?;
        let key = match location.entry.kind {
            BlobKind::Data => &self.data_key,
            BlobKind::Tree => &self.metadata_key,
        };
        match cairn_pack::open_blob_in_place(key, &location.entry, sealed, opener) {
            Ok(plain) => Ok(plain),
            Err(_) => {
                self.distrust_blob(location);
                Err(Error::integrity(format!(
                    "packs/{}",
                    location.pack.to_hex()
                )))
            }
        }
    }

    /// The error for a read of `location` that the store refused.
    pub fn read_error(&self, error: cairn_store::Error, location: &BlobLocation) -> Error {
        let (kind, id) = (location.entry.kind, location.entry.id);
        match error {
            cairn_store::Error::NotFound(_) => {
                self.distrust(location.pack, PackState::Missing);
                self.unavailable_pack_error(&location.pack, kind, &id)
            }
            cairn_store::Error::OutOfRange(name) => {
                self.distrust(location.pack, PackState::Damaged);
                Error::integrity(name)
            }
            other => other.into(),
        }
    }

    /// On first use of a pack in this session, reads its trailer and sealed
    /// header and checks that the header lists the blob exactly as the index
    /// does. Blob reads are ranged, so without this a damaged header or
    /// trailer would go unnoticed until the pack is needed whole; with it,
    /// every byte of a pack a restore touches is authenticated.
    fn verify_pack(&self, location: &BlobLocation) -> Result<()> {
        let state = lock(&self.packs).get(&location.pack).copied();
        match state {
            Some(PackState::Verified) => return Ok(()),
            Some(_) => {
                return Err(self.unavailable_pack_error(
                    &location.pack,
                    location.entry.kind,
                    &location.entry.id,
                ));
            }
            None => {}
        }
        match self.check_header(location) {
            Ok(true) => {
                lock(&self.packs).insert(location.pack, PackState::Verified);
                Ok(())
            }
            Ok(false) => {
                self.distrust(location.pack, PackState::Damaged);
                Err(Error::integrity(pack_object(&location.pack)?))
            }
            Err(cairn_store::Error::NotFound(_)) => {
                self.distrust(location.pack, PackState::Missing);
                Err(self.unavailable_pack_error(
                    &location.pack,
                    location.entry.kind,
                    &location.entry.id,
                ))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Whether the pack's header authenticates and lists the blob as the
    /// index does. Store errors other than a short pack pass through.
    fn check_header(&self, location: &BlobLocation) -> Result<bool, cairn_store::Error> {
        let lists = |entries: Option<Vec<PackEntry>>| {
            entries.is_some_and(|entries| entries.contains(&location.entry))
        };
        if lists(self.read_header(&location.pack)?) {
            return Ok(true);
        }
        // A pack is distrusted on the store's word only, never a copy's.
        if self.cache_reads().is_some() {
            let _store_only = self.uncached();
            return Ok(lists(self.read_header(&location.pack)?));
        }
        Ok(false)
    }

    /// Reads and authenticates a pack's trailer and header: its entries, or
    /// `None` when they are damaged. Store errors other than a short pack
    /// pass through. The cached copy serves when the store's latest listing
    /// shows the pack at the size cached; else the pack's last bytes are
    /// read (one request, two for a large header) and cached.
    pub fn read_header(
        &self,
        pack_id: &PackId,
    ) -> Result<Option<Vec<PackEntry>>, cairn_store::Error> {
        let pack = pack_object(pack_id).map_err(|_| cairn_store::Error::InvalidName)?;
        let hex = pack.name();
        let listed = lock(&self.listed_packs).get(pack_id).copied();
        if let (Some(cache), Some(size)) = (self.cache_reads(), listed)
            && let Some(cached) = cache.tail(hex)
            && cached.size == size
        {
            if let Tail::Entries(entries, _) = self.entries_from_tail(size, &cached.tail) {
                return Ok(Some(entries));
            }
            cache.forget(Kind::Headers, hex);
        }
        if let Some(size) = listed {
            match self.read_tail(&pack, size) {
                Ok(Some(entries)) => return Ok(Some(entries)),
                // The listing's size may be wrong (a server whose listings
                // carry none, or stale): ask the object itself.
                Ok(None) | Err(cairn_store::Error::OutOfRange(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let size = self.store.size(&pack)?;
        self.read_tail(&pack, size)
    }

    /// Reads and authenticates the header of `pack`, of `size` bytes, from
    /// its last bytes, and caches it.
    fn read_tail(
        &self,
        pack: &ObjectName,
        size: u64,
    ) -> Result<Option<Vec<PackEntry>>, cairn_store::Error> {
        let hex = pack.name();
        let guess = size.min(TAIL_GUESS);
        let mut tail = match self.store.get_range(pack, size - guess, guess) {
            Err(cairn_store::Error::OutOfRange(_)) => return Ok(None),
            other => other?,
        };
        let mut read = self.entries_from_tail(size, &tail);
        if let Tail::Short(needed) = read {
            // The header is longer than the guess: read it whole, in a
            // request rounded up to a padded length, so that its size tells
            // an observer of reads little of the header's (nothing more
            // than the pack's own padded length does of its blobs).
            let needed = cairn_crypto::padded_len(needed).min(size);
            tail = match self.store.get_range(pack, size - needed, needed) {
                Err(cairn_store::Error::OutOfRange(_)) => return Ok(None),
                other => other?,
            };
            read = self.entries_from_tail(size, &tail);
        }
        match read {
            Tail::Entries(entries, len) => {
                if let Some(cache) = &self.cache {
                    let from = tail.len().saturating_sub(len);
                    cache.put_tail(hex, size, tail.get(from..).unwrap_or_default());
                }
                Ok(Some(entries))
            }
            Tail::Damaged | Tail::Short(_) => Ok(None),
        }
    }

    /// A pack's entries from its last bytes (`tail`) and size.
    fn entries_from_tail(&self, size: u64, tail: &[u8]) -> Tail {
        // A version-1 trailer is not authenticated: its header length is
        // bounded (by `decode_trailer`) before anything is allocated for
        // it. A version-2 locator is.
        let Ok(trailer) = cairn_pack::decode_trailer(&self.metadata_key, tail) else {
            return Tail::Damaged;
        };
        debug_assert!(trailer.header_len <= MAX_HEADER_SEALED_LEN);
        let needed = trailer.header_and_tail();
        let Some(blobs_len) = trailer.blobs_len(size) else {
            return Tail::Damaged;
        };
        let Some(header_at) = (tail.len() as u64).checked_sub(needed) else {
            return Tail::Short(needed);
        };
        let header_at = header_at as usize;
        let header = tail.get(header_at..header_at + trailer.header_len as usize);
        match header.map(|h| cairn_pack::open_header(&self.metadata_key, &trailer, h, blobs_len)) {
            Some(Ok(entries)) => Tail::Entries(entries, needed as usize),
            _ => Tail::Damaged,
        }
    }
}
