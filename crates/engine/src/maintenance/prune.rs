//! `prune`: gives back the space of blobs no snapshot reaches, safely while
//! backups run (docs/format.md, "Sharing a repository", steps 1-8; the step
//! numbers below are those).
//!
//! Packs whose blobs are all unreachable, and packs no index file names, are
//! condemned; packs whose unreachable share exceeds `max_unused` have their
//! live blobs copied (sealed bytes as they are) into new packs and are
//! condemned too. The index files naming any of them are superseded by new
//! ones. Deleting waits until no other writer's session marker is live, and
//! spares any condemned pack that a snapshot committed meanwhile needs.

use std::collections::{BTreeMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

use cairn_crypto::{BlobId, BlobKind, PackId, SealedBlob};
use cairn_index::Index;
use cairn_meta::{Condemnation, NodeKind, SessionKind};
use cairn_store::Namespace;

use crate::backup::{BufferPool, Packer};
use crate::blobs::{delete_object, object, pack_object};
use crate::error::{Error, Result, from_meta};
use crate::maintenance::sessions::{Session, delete_marker, list_sessions, others};
use crate::progress::Progress;
use crate::repo::Repository;

/// Once there are more index files than this, prune merges them all.
pub(crate) const MAX_INDEX_FILES: usize = 32;

/// Options of [`Repository::prune`].
#[derive(Clone, Debug)]
pub struct PruneOptions {
    /// A pack whose unreachable share of bytes is above this (0.0 to 1.0)
    /// is repacked. Default 0.05.
    pub max_unused: f64,
    /// Most bytes of live blobs copied in one run; `None` for no limit.
    pub max_repack: Option<u64>,
    /// Decide and report; change nothing.
    pub dry_run: bool,
}

impl Default for PruneOptions {
    fn default() -> Self {
        Self {
            max_unused: 0.05,
            max_repack: None,
            dry_run: false,
        }
    }
}

/// What [`Repository::prune`] did (or would do, in a dry run).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PruneReport {
    /// Snapshots whose blobs were kept.
    pub n_snapshots: usize,
    /// Distinct blobs they reach.
    pub n_live_blobs: usize,
    /// Packs deleted because nothing in them is reachable.
    pub n_packs_unused: usize,
    /// Packs no index file named that hold reachable blobs: indexed again.
    pub n_packs_adopted: usize,
    /// Packs deleted that no index file named (left by interrupted writers).
    pub n_packs_unindexed: usize,
    /// Packs whose live blobs were copied before they were deleted.
    pub n_packs_repacked: usize,
    /// Packs deleted in all (including those condemned by earlier prunes).
    pub n_packs_deleted: usize,
    /// Bytes of the packs deleted.
    pub bytes_deleted: u64,
    /// Blobs copied into new packs, and their sealed bytes.
    pub n_blobs_copied: u64,
    /// Sealed bytes copied.
    pub bytes_copied: u64,
    /// New pack and index files written, and their bytes.
    pub bytes_written: u64,
    /// Index files superseded (and deleted, unless deferred).
    pub n_index_files_superseded: usize,
    /// Index files written.
    pub n_index_files_written: usize,
    /// Condemned packs kept because a snapshot committed meanwhile needs them.
    pub n_packs_spared: usize,
    /// Unreachable bytes left in packs kept (below the repack threshold).
    pub bytes_unused_left: u64,
    /// When deleting was put off, why (another writer's session was live):
    /// the next prune deletes what this one condemned.
    pub deferred: Option<String>,
    /// Things noticed on the way, e.g. stale session markers removed.
    pub warnings: Vec<String>,
}

/// One pack as the index describes it.
#[derive(Default)]
struct PackUse {
    entries: Vec<cairn_pack::PackEntry>,
    total: u64,
    live: u64,
}

impl Repository {
    /// Deletes what no snapshot reaches (see the module docs).
    pub fn prune(&self, options: &PruneOptions, progress: &dyn Progress) -> Result<PruneReport> {
        let mut report = PruneReport::default();
        let key = self.keys().metadata.clone();
        // Step 1: announce, and make sure no other prune runs.
        // A dry run changes nothing, not even the sessions.
        let session = if options.dry_run {
            None
        } else {
            Some(Session::begin(
                self.store().clone(),
                key.clone(),
                self.config().format,
                SessionKind::Prune,
            )?)
        };
        let own = session.as_ref().and_then(Session::name).unwrap_or_default();
        let others = others(&**self.store(), &key, &own)?;
        if let Some(prune) = others.prune {
            return Err(Error::PruneRunning(prune));
        }
        // While another writer runs, deleting will wait: do nothing that
        // would be redone (copying, merging every index file), only
        // condemn, so a later prune can delete at once.
        let busy = others.any_live;

        // Step 2: the view, and what the snapshots reach.
        self.blobs().load_new_index_files()?;
        self.refuse_if_index_unreadable()?;
        // An unreadable condemnation record condemns nothing: its packs are
        // judged afresh below, and it is removed at the end.
        let void_records = self.blobs().load_condemned()?;
        for bad in &void_records {
            report
                .warnings
                .push(format!("{bad}; it condemns nothing and is removed"));
        }
        // Packs no index file names: left by interrupted writers, or named
        // only by an index file lost since. Their authenticated headers say
        // what they hold, and join the view before marking: one holding a
        // reachable blob is adopted (indexed again), any other condemned.
        let present: HashSet<String> = self.store().list(Namespace::Packs)?.into_iter().collect();
        let earlier: HashSet<PackId> = self.blobs().packs_in_records();
        let indexed: HashSet<PackId> = self
            .blobs()
            .with_index(|index| index.packs().to_vec())
            .into_iter()
            .chain(self.blobs().index_files().into_values().flatten())
            .collect();
        let mut orphans: BTreeMap<PackId, Vec<cairn_pack::PackEntry>> = BTreeMap::new();
        for id in present.iter().filter_map(|name| PackId::from_hex(name)) {
            if indexed.contains(&id) || earlier.contains(&id) {
                continue;
            }
            let entries = match self.blobs().read_header(&id) {
                Ok(Some(entries)) => entries,
                // What it holds is unknown: it stays, and `check` counts it.
                Ok(None) => {
                    report.warnings.push(format!(
                        "packs/{name} is named by no index file and its header is damaged; left alone",
                        name = id.to_hex()
                    ));
                    continue;
                }
                Err(cairn_store::Error::NotFound(_)) => continue,
                Err(e) => return Err(e.into()),
            };
            let mut found = Index::new();
            for entry in &entries {
                found.insert(cairn_index::BlobLocation {
                    pack: id,
                    entry: *entry,
                });
            }
            self.blobs().merge(&found);
            orphans.insert(id, entries);
        }

        let listing = self.list_snapshots()?;
        if let Some(bad) = listing.unreadable.first() {
            return Err(Error::PruneUnsafe(format!(
                "{} is unreadable ({}); forget it by ID to prune without it",
                bad.object, bad.reason
            )));
        }
        let first_seen: HashSet<_> = listing.snapshots.iter().map(|(id, _)| *id).collect();
        report.n_snapshots = listing.snapshots.len();
        let mut live = Live::default();
        for (id, snapshot) in &listing.snapshots {
            check_cancelled(progress)?;
            live.mark(self, &snapshot.root_id(), &id.to_hex())?;
        }
        report.n_live_blobs = live.blobs.len();
        let missing_before = live.unlocated(self);

        // Step 3: decide, pack by pack.
        let mut packs: BTreeMap<PackId, PackUse> = BTreeMap::new();
        self.blobs().with_index(|index| {
            for location in index.iter_locations() {
                if orphans.contains_key(&location.pack) {
                    continue;
                }
                let pack = packs.entry(location.pack).or_default();
                let len = u64::from(location.entry.sealed_len);
                pack.total += len;
                if live
                    .blobs
                    .contains(&(location.entry.kind, location.entry.id))
                {
                    pack.live += len;
                }
                pack.entries.push(location.entry);
            }
        });
        let mut condemn: Vec<PackId> = Vec::new();
        let mut candidates: Vec<(&PackId, &PackUse)> = Vec::new();
        for (pack, usage) in &packs {
            if earlier.contains(pack) {
                continue;
            }
            if !present.contains(&pack.to_hex()) || usage.live == 0 {
                // Gone already (its entries go with the superseded index
                // files), or nothing in it is reachable.
                condemn.push(*pack);
                report.n_packs_unused += usize::from(present.contains(&pack.to_hex()));
            } else if (usage.total - usage.live) as f64 > options.max_unused * usage.total as f64 {
                candidates.push((pack, usage));
            } else {
                report.bytes_unused_left += usage.total - usage.live;
            }
        }
        let mut adopted = Index::new();
        for (id, entries) in &orphans {
            if entries.iter().any(|e| live.blobs.contains(&(e.kind, e.id))) {
                for entry in entries {
                    adopted.insert(cairn_index::BlobLocation {
                        pack: *id,
                        entry: *entry,
                    });
                }
                report.n_packs_adopted += 1;
            } else {
                condemn.push(*id);
                report.n_packs_unindexed += 1;
            }
        }
        // The emptiest first: the most space back for the least copying.
        candidates.sort_by_key(|(pack, usage)| (usage.live, **pack));
        let mut repack: Vec<(PackId, Vec<cairn_pack::PackEntry>)> = Vec::new();
        let mut budget = options.max_repack.unwrap_or(u64::MAX);
        for (pack, usage) in candidates {
            if busy || usage.live > budget {
                report.bytes_unused_left += usage.total - usage.live;
                continue;
            }
            budget -= usage.live;
            repack.push((*pack, usage.entries.clone()));
        }
        report.n_packs_repacked = repack.len();
        let mut deleting: HashSet<PackId> = condemn
            .iter()
            .copied()
            .chain(repack.iter().map(|(p, _)| *p))
            .chain(earlier.iter().copied())
            .collect();
        // Index files an earlier record supersedes already: its own new
        // files carry what they still hold.
        let superseded_before: HashSet<String> = self.blobs().index_files_in_records();
        let index_files: std::collections::HashMap<String, Vec<PackId>> = self
            .blobs()
            .index_files()
            .into_iter()
            .filter(|(name, _)| !superseded_before.contains(name))
            .collect();
        let merge_all = index_files.len() > MAX_INDEX_FILES && !busy;
        let mut superseded = supersede(&index_files, &deleting, merge_all);
        report.n_index_files_superseded = superseded.len();
        let Some(session) = session else {
            // The dry run's answer: what would go.
            report.n_packs_deleted = deleting.len();
            // The packs' own sizes, as a real run counts them (headers and,
            // in format 3, padding included): one size request per pack
            // that would go, what is removed and not what is kept.
            for pack in &deleting {
                check_cancelled(progress)?;
                match self.store().size(&pack_object(pack)?) {
                    Ok(size) => report.bytes_deleted += size,
                    Err(cairn_store::Error::NotFound(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            // And what would be copied out of the packs repacked.
            for (pack, entries) in &repack {
                report.bytes_copied += packs.get(pack).map_or(0, |u| u.live);
                report.n_blobs_copied += entries
                    .iter()
                    .filter(|e| live.blobs.contains(&(e.kind, e.id)))
                    .count() as u64;
            }
            return Ok(report);
        };
        if deleting.is_empty()
            && superseded.is_empty()
            && adopted.is_empty()
            && void_records.is_empty()
            && self.blobs().condemnations().is_empty()
        {
            session.end()?;
            return Ok(report);
        }

        // Step 4: copy what is live out of the packs being repacked, then
        // write the index files that supersede the old ones.
        let deleting_planned = deleting.clone();
        let kept =
            |pack: &PackId| !deleting_planned.contains(pack) && present.contains(&pack.to_hex());
        let mut packer = Packer::new(
            self.store().clone(),
            self.blobs().cache_handle(),
            key.clone(),
            self.config(),
            None,
            BufferPool::new(),
        );
        let mut copied: HashSet<(BlobKind, BlobId)> = HashSet::new();
        let mut not_repacked: HashSet<PackId> = HashSet::new();
        for (pack, entries) in &repack {
            check_cancelled(progress)?;
            let done = self.copy_live(
                pack,
                entries,
                &live,
                &kept,
                &mut copied,
                &mut packer,
                &mut report,
            )?;
            if !done {
                // Its header is damaged: it stays (and `check` names it),
                // rather than block every later prune.
                report.warnings.push(format!(
                    "packs/{} has a damaged header; not repacked (run `check`)",
                    pack.to_hex()
                ));
                not_repacked.insert(*pack);
            }
        }
        if !not_repacked.is_empty() {
            repack.retain(|(p, _)| !not_repacked.contains(p));
            report.n_packs_repacked = repack.len();
            deleting.retain(|p| !not_repacked.contains(p));
            superseded = supersede(&index_files, &deleting, merge_all);
        }
        let (copies, totals) = packer.finish()?;
        report.bytes_written += totals.bytes_stored;
        for (name, packs) in totals.index_files {
            self.blobs().register_index_file(name, packs);
        }
        report.n_index_files_written += usize::from(!copies.is_empty());
        // What the superseded files hold, read from the files themselves:
        // this process's view may have forgotten entries (a pack it found
        // damaged once), and a superseding file must drop nothing that is
        // not being deleted.
        let mut compacted = adopted;
        for name in &superseded {
            for location in self.reread_index_file(name)?.iter() {
                if !deleting.contains(&location.pack) {
                    compacted.insert(location);
                }
            }
        }
        for part in split_index(&compacted) {
            let (name, len) = self.put_index_part(&part)?;
            self.blobs()
                .register_index_file(name, part.packs().to_vec());
            report.bytes_written += len;
            report.n_index_files_written += 1;
        }
        self.blobs().merge(&copies);
        self.blobs().merge(&compacted);

        // Step 5: the condemnation record.
        let mut new_packs: Vec<PackId> = condemn.clone();
        new_packs.extend(repack.iter().map(|(p, _)| *p));
        new_packs.sort();
        new_packs.dedup();
        let superseded_ids: Vec<PackId> = superseded
            .iter()
            .filter_map(|n| PackId::from_hex(n))
            .collect();
        if !new_packs.is_empty() || !superseded_ids.is_empty() {
            self.put_condemnation(new_packs, superseded_ids)?;
            self.blobs().load_condemned()?;
        }

        // Step 6: delete only if no other writer is running, and if this
        // prune was not itself paused long enough to be taken for dead
        // (another prune or merge may have run meanwhile on a view this one
        // no longer matches).
        if session.lapsed() {
            report.deferred = Some(
                "this prune was paused for hours; the next prune deletes what it condemned".into(),
            );
            session.end()?;
            return Ok(report);
        }
        let now = now_secs();
        let mut stale = Vec::new();
        for found in list_sessions(&**self.store(), &key)? {
            if found.name == own {
                continue;
            }
            if found.is_live(now) {
                report.deferred = Some(format!(
                    "another writer is running (session marker sessions/{}); \
                     the next prune deletes what this one condemned",
                    found.name
                ));
                session.end()?;
                return Ok(report);
            }
            if found.marker.is_none() {
                report.warnings.push(format!(
                    "session marker sessions/{} does not authenticate; removed",
                    found.name
                ));
            }
            stale.push(found.name);
        }

        // Step 7: what snapshots committed since step 2 reach, and which
        // condemned packs they still need.
        self.blobs().load_new_index_files()?;
        self.refuse_if_index_unreadable()?;
        let listing = self.list_snapshots()?;
        if let Some(bad) = listing.unreadable.first() {
            return Err(Error::PruneUnsafe(format!(
                "{} is unreadable ({}); forget it by ID to prune without it",
                bad.object, bad.reason
            )));
        }
        for (id, snapshot) in &listing.snapshots {
            if !first_seen.contains(id) {
                live.mark(self, &snapshot.root_id(), &id.to_hex())?;
            }
        }
        // A reachable blob that no index file places, and that was placed at
        // step 2: something this view cannot see (an index file lost
        // meanwhile). Deleting now could destroy it.
        if let Some((kind, id)) = live.unlocated(self).difference(&missing_before).next() {
            return Err(Error::PruneUnsafe(format!(
                "{} blob {} is needed and no readable index file places it; run `check`",
                kind.name(),
                id.to_hex()
            )));
        }
        if !missing_before.is_empty() {
            report.warnings.push(format!(
                "{} blobs the snapshots need are missing already (run `check`)",
                missing_before.len()
            ));
        }
        let records = self.blobs().condemnations();
        let mut doomed = self.blobs().packs_in_records();
        let spared = self.blobs().with_index(|index| {
            let mut spared = HashSet::new();
            for (kind, id) in &live.blobs {
                let locations = index.locations(*kind, id);
                if let Some(first) = locations.first()
                    && locations.iter().all(|l| doomed.contains(&l.pack))
                {
                    spared.insert(first.pack);
                }
            }
            spared
        });
        if !spared.is_empty() {
            // A spared pack's entries come from its authenticated header
            // (the view may have forgotten some), else from the view.
            let mut keep = Index::new();
            for pack in &spared {
                match self.blobs().read_header(pack) {
                    Ok(Some(entries)) => {
                        for entry in entries {
                            keep.insert(cairn_index::BlobLocation { pack: *pack, entry });
                        }
                    }
                    Ok(None) | Err(cairn_store::Error::NotFound(_)) => {
                        self.blobs().with_index(|index| {
                            for location in index.iter_locations() {
                                if location.pack == *pack {
                                    keep.insert(location);
                                }
                            }
                        });
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            for part in split_index(&keep) {
                let (name, len) = self.put_index_part(&part)?;
                self.blobs()
                    .register_index_file(name, part.packs().to_vec());
                report.bytes_written += len;
                report.n_index_files_written += 1;
            }
            doomed.retain(|p| !spared.contains(p));
            report.n_packs_spared = spared.len();
        }

        // Step 8: delete packs, then superseded index files, then records.
        let mut doomed: Vec<PackId> = doomed.into_iter().collect();
        doomed.sort();
        for pack in &doomed {
            check_cancelled(progress)?;
            let name = pack_object(pack)?;
            let size = match self.store().size(&name) {
                Ok(size) => size,
                Err(cairn_store::Error::NotFound(_)) => continue,
                Err(e) => return Err(e.into()),
            };
            match self.store().delete(&name) {
                Ok(()) => {
                    report.n_packs_deleted += 1;
                    report.bytes_deleted += size;
                }
                Err(cairn_store::Error::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.blobs().forget_deleted_packs(&doomed);
        let mut index_gone = Vec::new();
        for record in records.values() {
            for file in &record.superseded_index_files {
                let name = file.to_hex();
                delete_object(&**self.store(), Namespace::Index, &name)?;
                index_gone.push(name);
            }
        }
        let mut records_gone = Vec::new();
        for name in records.keys() {
            delete_object(&**self.store(), Namespace::Condemned, name)?;
            records_gone.push(name.clone());
        }
        for bad in &void_records {
            if let Some(name) = bad.object.strip_prefix("condemned/") {
                delete_object(&**self.store(), Namespace::Condemned, name)?;
            }
        }
        self.blobs().forget_deleted(&index_gone, &records_gone);
        for name in stale {
            delete_marker(&**self.store(), &name)?;
        }
        session.end()?;
        Ok(report)
    }

    /// Writes a condemnation record (step 5); returns its name.
    pub(super) fn put_condemnation(
        &self,
        packs: Vec<PackId>,
        superseded_index_files: Vec<PackId>,
    ) -> Result<String> {
        let record = Condemnation {
            time_secs: now_secs(),
            packs,
            superseded_index_files,
        };
        let sealed = record
            .seal(&self.keys().metadata, self.config().format)
            .map_err(from_meta("condemnation record"))?;
        let name = PackId::of_bytes(&sealed).to_hex();
        match self
            .store()
            .put(&object(Namespace::Condemned, &name)?, &sealed)
        {
            // Same name, same bytes.
            Ok(()) | Err(cairn_store::Error::AlreadyExists(_)) => Ok(name),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads an index file again from the store, for a file superseding it.
    /// Prunes and merges never run side by side, so a file in the view is
    /// still there; one gone or unreadable stops the prune.
    pub(super) fn reread_index_file(&self, name: &str) -> Result<Index> {
        let object_name = object(Namespace::Index, name)?;
        self.blobs()
            .read_index_file(&object_name, name)
            .map_err(|e| match e {
                e if e.is_repository_damage()
                    || matches!(e, Error::Store(cairn_store::Error::NotFound(_))) =>
                {
                    Error::PruneUnsafe(format!(
                        "{object_name} cannot be read again ({e}); run `check`"
                    ))
                }
                e => e,
            })
    }

    /// Stops prune when an index file could not be read: the packs only it
    /// names would look unindexed and be deleted.
    fn refuse_if_index_unreadable(&self) -> Result<()> {
        match self.blobs().unreadable_index_files().first() {
            Some(bad) => Err(Error::PruneUnsafe(format!(
                "{} is unreadable ({}); run `check`",
                bad.object, bad.reason
            ))),
            None => Ok(()),
        }
    }

    /// Copies the live blobs of `pack` that have no copy in a kept pack into
    /// `packer`, as sealed bytes, reading the pack's needed span once. The
    /// pack's header is checked first, so only bytes it lists are copied.
    #[allow(clippy::too_many_arguments)]
    fn copy_live(
        &self,
        pack: &PackId,
        entries: &[cairn_pack::PackEntry],
        live: &Live,
        kept: &dyn Fn(&PackId) -> bool,
        copied: &mut HashSet<(BlobKind, BlobId)>,
        packer: &mut Packer<'_>,
        report: &mut PruneReport,
    ) -> Result<bool> {
        let wanted: Vec<&cairn_pack::PackEntry> = entries
            .iter()
            .filter(|e| live.blobs.contains(&(e.kind, e.id)))
            .filter(|e| !copied.contains(&(e.kind, e.id)))
            .filter(|e| {
                self.blobs().with_index(|index| {
                    !index
                        .locations(e.kind, &e.id)
                        .iter()
                        .any(|l| l.pack != *pack && kept(&l.pack))
                })
            })
            .collect();
        if wanted.is_empty() {
            return Ok(true);
        }
        // The header must authenticate and list every blob copied: a pack
        // that fails this is not repacked (nor deleted).
        let Some(header) = self.blobs().read_header(pack).map_err(Error::from)? else {
            return Ok(false);
        };
        if wanted.iter().any(|entry| !header.contains(entry)) {
            return Ok(false);
        }
        let start = wanted.iter().map(|e| e.offset).min().unwrap_or(0);
        let end = wanted
            .iter()
            .map(|e| u64::from(e.offset) + u64::from(e.sealed_len))
            .max()
            .unwrap_or(0);
        let span = match self.store().get_range(
            &pack_object(pack)?,
            u64::from(start),
            end - u64::from(start),
        ) {
            Ok(span) => span,
            Err(cairn_store::Error::OutOfRange(_)) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        for entry in wanted {
            let from = (entry.offset - start) as usize;
            let bytes = span
                .get(from..from + entry.sealed_len as usize)
                .ok_or_else(|| Error::integrity(format!("packs/{}", pack.to_hex())))?
                .to_vec();
            report.n_blobs_copied += 1;
            report.bytes_copied += bytes.len() as u64;
            packer.add_sealed(
                entry.kind,
                entry.id,
                SealedBlob {
                    bytes,
                    compression: entry.compression,
                },
                entry.plain_len as usize,
            )?;
            copied.insert((entry.kind, entry.id));
        }
        Ok(true)
    }
}

/// The blobs the snapshots reach, and the trees already walked.
#[derive(Default)]
struct Live {
    blobs: HashSet<(BlobKind, BlobId)>,
}

impl Live {
    /// The reachable blobs the view places nowhere.
    fn unlocated(&self, repo: &Repository) -> HashSet<(BlobKind, BlobId)> {
        repo.blobs().with_index(|index| {
            self.blobs
                .iter()
                .filter(|(kind, id)| !index.contains(*kind, id))
                .copied()
                .collect()
        })
    }

    /// Marks the tree `root` and everything below it. A tree that cannot be
    /// read stops prune: what it reaches is unknown, so nothing may go.
    fn mark(&mut self, repo: &Repository, root: &BlobId, snapshot: &str) -> Result<()> {
        let mut stack = vec![*root];
        while let Some(tree_id) = stack.pop() {
            if !self.blobs.insert((BlobKind::Tree, tree_id)) {
                continue;
            }
            let tree = repo.load_tree(&tree_id).map_err(|e| match e {
                e if e.is_repository_damage() => Error::PruneUnsafe(format!(
                    "snapshot {snapshot} cannot be read whole ({e}); run `check`"
                )),
                e => e,
            })?;
            for node in &tree.nodes {
                match node.kind {
                    NodeKind::File => {
                        for chunk in node.chunks() {
                            self.blobs.insert((BlobKind::Data, chunk));
                        }
                    }
                    NodeKind::Dir => stack.extend(node.subtree_id()),
                    NodeKind::Symlink => {}
                }
            }
        }
        Ok(())
    }
}

/// The index files to supersede: every one naming a pack being deleted, or
/// all of them when merging.
fn supersede(
    index_files: &std::collections::HashMap<String, Vec<PackId>>,
    deleting: &HashSet<PackId>,
    merge_all: bool,
) -> Vec<String> {
    let mut out: Vec<String> = index_files
        .iter()
        .filter(|(_, named)| merge_all || named.iter().any(|p| deleting.contains(p)))
        .map(|(name, _)| name.clone())
        .collect();
    out.sort();
    out
}

/// `index` in parts that each fit one index file: at most
/// `MAX_SEGMENT_ENTRIES` entries, and at most one location per blob (a
/// segment names each blob once, so a second copy goes into another part).
pub(super) fn split_index(index: &Index) -> Vec<Index> {
    let mut parts: Vec<Index> = Vec::new();
    for location in index.iter_locations() {
        let (kind, id) = (location.entry.kind, location.entry.id);
        let fits = parts
            .iter()
            .position(|p| p.len() < cairn_index::MAX_SEGMENT_ENTRIES && !p.contains(kind, &id));
        match fits {
            Some(i) => {
                if let Some(part) = parts.get_mut(i) {
                    part.insert(location);
                }
            }
            None => {
                let mut part = Index::new();
                part.insert(location);
                parts.push(part);
            }
        }
    }
    parts
}

fn check_cancelled(progress: &dyn Progress) -> Result<()> {
    if progress.is_cancelled() {
        return Err(Error::Cancelled);
    }
    Ok(())
}

pub(super) fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
