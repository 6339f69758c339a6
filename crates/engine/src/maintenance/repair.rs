//! Repair: after `check` found damage, make the repository usable again.
//!
//! `repair_index` rewrites the index from what is really there: entries of
//! missing packs, of packs whose header is damaged or does not list them,
//! and (with `read_data`) of blobs that fail authentication are dropped, so
//! the next backup stores those chunks again when it meets them; packs no
//! index file names and whose header reads are indexed again; unreadable
//! index files go. It runs as compaction does (docs/format.md, "Sharing a
//! repository"): under a prune's session, writing the new index files, then
//! a record superseding the old ones, then deleting them.
//!
//! `repair_snapshots` rewrites every snapshot that reaches data that cannot
//! be had, as restic does: a file with chunks that cannot be had keeps the
//! chunks that can, under its name with `.damaged` appended; a directory
//! whose tree cannot be read becomes an empty directory so named. The new
//! snapshot carries the tag `repaired`; with `forget`, the original goes.

use std::collections::{HashMap, HashSet};

use cairn_crypto::{BlobId, BlobKind, PackId, SnapshotId};
use cairn_index::{BlobLocation, Index};
use cairn_meta::{MAX_NAME_LEN, Node, NodeKind, SessionKind, Snapshot, Tree};
use cairn_store::Namespace;

use crate::blobs::{delete_object, object};
use crate::error::{Error, Result, from_meta};
use crate::maintenance::check::{PackVerdict, is_sound};
use crate::maintenance::prune::split_index;
use crate::maintenance::sessions::Session;
use crate::maintenance::{CheckOptions, CheckReport, ReadData};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::restore::MAX_TREE_DEPTH;

/// What [`Repository::repair_index`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepairIndexReport {
    /// Index files replaced (readable or not).
    pub n_index_files_replaced: usize,
    /// Index files written.
    pub n_index_files_written: usize,
    /// Packs the index named that are gone.
    pub n_packs_missing: usize,
    /// Packs whose header is damaged or does not list what the index said.
    pub n_packs_damaged: usize,
    /// Blobs dropped from the index (in missing or damaged packs, or
    /// failing authentication).
    pub n_blobs_dropped: u64,
    /// Packs no index file named, indexed again from their headers.
    pub n_packs_adopted: usize,
    /// Why nothing was done, when nothing was.
    pub skipped: Option<String>,
}

/// What [`Repository::repair_snapshots`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepairSnapshotsReport {
    /// Snapshots that needed nothing.
    pub n_sound: usize,
    /// Snapshots rewritten: (original, repaired).
    pub rewritten: Vec<(SnapshotId, SnapshotId)>,
    /// Files kept with what of them could be had, renamed `*.damaged`.
    pub n_files_damaged: u64,
    /// Directories whose tree could not be read, emptied and renamed.
    pub n_dirs_damaged: u64,
    /// Originals forgotten (with `forget`).
    pub n_forgotten: usize,
}

impl Repository {
    /// Rewrites the index from what the store holds (see the module docs).
    /// With `read_data`, packs are read whole and blobs that fail
    /// authentication are dropped too. Does nothing while a prune runs.
    pub fn repair_index(
        &mut self,
        read_data: ReadData,
        progress: &dyn Progress,
    ) -> Result<RepairIndexReport> {
        // What the store holds is repaired, not this device's copies of it.
        let _store_only = self.blobs().uncached();
        let mut report = RepairIndexReport::default();
        let session = match self.maintenance_session()? {
            Ok(session) => session,
            Err(why) => {
                report.skipped = Some(why);
                return Ok(report);
            }
        };
        self.blobs().load_condemned()?;
        let superseded_before = self.blobs().index_files_in_records();
        // Every index file, read afresh: what each names, and which fail.
        let mut by_pack: HashMap<PackId, Vec<cairn_pack::PackEntry>> = HashMap::new();
        let mut replaced: Vec<String> = Vec::new();
        for name in self.store().list(Namespace::Index)? {
            if superseded_before.contains(&name) {
                continue;
            }
            replaced.push(name.clone());
            match self
                .blobs()
                .read_index_file(&object(Namespace::Index, &name)?, &name)
            {
                Ok(segment) => {
                    for location in segment.iter() {
                        by_pack
                            .entry(location.pack)
                            .or_default()
                            .push(location.entry);
                    }
                }
                Err(Error::Store(cairn_store::Error::NotFound(_))) => {
                    replaced.pop();
                }
                // Unreadable: it goes, and its packs are adopted below.
                Err(e) if e.is_repository_damage() => {}
                Err(e) => return Err(e),
            }
        }
        let condemned: HashSet<PackId> = self.blobs().packs_in_records();
        let present: HashSet<String> = self.store().list(Namespace::Packs)?.into_iter().collect();
        let options = CheckOptions { read_data };
        let mut seed = [0u8; 32];
        cairn_crypto::random_bytes(&mut seed).map_err(|_| Error::Random)?;
        let mut scratch = CheckReport::default();
        let mut index = Index::new();
        let mut packs: Vec<_> = by_pack.into_iter().collect();
        packs.sort_by_key(|(pack, _)| *pack);
        for (pack, entries) in &packs {
            if progress.is_cancelled() {
                return Err(Error::Cancelled);
            }
            if condemned.contains(pack) {
                // A prune's business: it finishes deleting it.
                continue;
            }
            let verdict =
                self.check_pack(pack, entries, &present, &options, &seed, &mut scratch)?;
            let keep = |e: &cairn_pack::PackEntry| is_sound(&verdict, e);
            match &verdict {
                PackVerdict::Bad(_) if !present.contains(&pack.to_hex()) => {
                    report.n_packs_missing += 1;
                }
                PackVerdict::Bad(_) => report.n_packs_damaged += 1,
                _ => {}
            }
            for entry in entries {
                if keep(entry) {
                    index.insert(BlobLocation {
                        pack: *pack,
                        entry: *entry,
                    });
                } else {
                    report.n_blobs_dropped += 1;
                }
            }
        }
        // Packs no readable index file names: indexed again from their
        // headers (a header that does not read leaves the pack alone).
        let named: HashSet<PackId> = packs.iter().map(|(p, _)| *p).collect();
        for name in &present {
            let Some(pack) = PackId::from_hex(name) else {
                continue;
            };
            if named.contains(&pack) || condemned.contains(&pack) {
                continue;
            }
            let header = match self.blobs().read_header(&pack) {
                Ok(Some(header)) => header,
                Ok(None) | Err(cairn_store::Error::NotFound(_)) => continue,
                Err(e) => return Err(e.into()),
            };
            let verdict =
                self.check_pack(&pack, &header, &present, &options, &seed, &mut scratch)?;
            for entry in &header {
                if is_sound(&verdict, entry) {
                    index.insert(BlobLocation {
                        pack,
                        entry: *entry,
                    });
                } else {
                    report.n_blobs_dropped += 1;
                }
            }
            report.n_packs_adopted += 1;
        }
        for part in split_index(&index) {
            self.put_index_part(&part)?;
            report.n_index_files_written += 1;
        }
        let superseded = replaced
            .iter()
            .filter_map(|n| PackId::from_hex(n))
            .collect();
        let record = self.put_condemnation(Vec::new(), superseded)?;
        for name in &replaced {
            delete_object(&**self.store(), Namespace::Index, name)?;
        }
        // What an interrupted merge or repair left: files its record
        // superseded (what they hold is carried by the files written before
        // the record), then records that condemn no pack (prune's, which
        // do, are prune's to finish).
        let listed: HashSet<String> = self.store().list(Namespace::Index)?.into_iter().collect();
        for name in superseded_before.iter().filter(|n| listed.contains(*n)) {
            delete_object(&**self.store(), Namespace::Index, name)?;
        }
        for (name, record) in self.blobs().condemnations() {
            if record.packs.is_empty() {
                delete_object(&**self.store(), Namespace::Condemned, &name)?;
            }
        }
        delete_object(&**self.store(), Namespace::Condemned, &record)?;
        report.n_index_files_replaced = replaced.len();
        session.end()?;
        // The view is read again: what was dropped is forgotten here too
        // (this process stores it again), what was adopted is known.
        self.reload_view()?;
        Ok(report)
    }

    /// Rewrites every snapshot that reaches data that cannot be had (see
    /// the module docs); with `forget`, the originals go. Run
    /// [`Repository::repair_index`] first, so that what is damaged is
    /// known to be.
    pub fn repair_snapshots(
        &self,
        forget: bool,
        progress: &dyn Progress,
    ) -> Result<RepairSnapshotsReport> {
        let _store_only = self.blobs().uncached();
        // One frame per directory level: on a stack sized for it.
        crate::deep::on_deep_stack(|| self.repair_snapshots_here(forget, progress))
    }

    fn repair_snapshots_here(
        &self,
        forget: bool,
        progress: &dyn Progress,
    ) -> Result<RepairSnapshotsReport> {
        let mut report = RepairSnapshotsReport::default();
        let listing = self.list_snapshots()?;
        let mut rewriter = Rewriter {
            repo: self,
            done: HashMap::new(),
            new_trees: Vec::new(),
            n_files: 0,
            n_dirs: 0,
        };
        let mut repaired: Vec<(SnapshotId, Snapshot)> = Vec::new();
        for (id, snapshot) in &listing.snapshots {
            if progress.is_cancelled() {
                return Err(Error::Cancelled);
            }
            let root = snapshot.root_id();
            let new_root = match rewriter.tree(&root, 0)? {
                Some(new_root) => new_root,
                // The root itself cannot be read: nothing to keep.
                None => rewriter.store_tree(&Tree::default())?,
            };
            if new_root == root {
                report.n_sound += 1;
                continue;
            }
            let mut fixed = snapshot.clone();
            fixed.root = new_root;
            if !fixed.tags.iter().any(|t| t == "repaired") {
                fixed.tags.push("repaired".into());
            }
            repaired.push((*id, fixed));
        }
        report.n_files_damaged = rewriter.n_files;
        report.n_dirs_damaged = rewriter.n_dirs;
        let new_trees = std::mem::take(&mut rewriter.new_trees);
        if repaired.is_empty() {
            return Ok(report);
        }
        // A rewritten snapshot (format 3) takes the next sequence number,
        // its parent the original: to every device it is newer, never a
        // newest one replaced.
        let mut newest =
            crate::lineage::NewestSeen::of(&listing.snapshots).max(self.watch().seen());
        let mut remaining = listing.snapshots.clone();
        // The new trees go in packs and an index file first; then the
        // snapshots (each its own commit point); then the originals. A
        // backup's session marker keeps a prune from taking the new packs
        // before a snapshot names them.
        let session = Session::begin(
            self.store().clone(),
            self.keys().metadata.clone(),
            self.config().format,
            SessionKind::Backup,
        )?;
        crate::backup::store_trees(self, new_trees)?;
        for (original, mut fixed) in repaired {
            if fixed.lineage.is_some() {
                let mut lineage = crate::lineage::NewestSeen::next(newest);
                lineage.parent = Some(original);
                fixed.lineage = Some(lineage);
            }
            let sealed = fixed
                .seal(&self.keys().metadata, self.config().format)
                .map_err(from_meta("snapshot"))?;
            let new_id = SnapshotId::of_bytes(&sealed);
            match self
                .store()
                .put(&object(Namespace::Snapshots, &new_id.to_hex())?, &sealed)
            {
                Ok(()) | Err(cairn_store::Error::AlreadyExists(_)) => {}
                Err(e) => return Err(e.into()),
            }
            if let Some(lineage) = fixed.lineage {
                newest = Some(crate::lineage::NewestSeen {
                    sequence: lineage.sequence,
                    snapshot: new_id,
                });
            }
            remaining.push((new_id, fixed));
            if forget {
                delete_object(&**self.store(), Namespace::Snapshots, &original.to_hex())?;
                remaining.retain(|(id, _)| *id != original);
                report.n_forgotten += 1;
            }
            report.rewritten.push((original, new_id));
        }
        if let Err(e) = session.end() {
            self.note([format!("could not remove the repair's session marker: {e}")]);
        }
        self.watch().reset(&remaining);
        Ok(report)
    }
}

/// Rewrites trees bottom-up, each distinct tree once.
struct Rewriter<'a> {
    repo: &'a Repository,
    /// Tree → its rewritten ID (itself when sound), or `None` when it
    /// cannot be read.
    done: HashMap<BlobId, Option<BlobId>>,
    /// New trees' (ID, plaintext), to be stored.
    new_trees: Vec<(BlobId, Vec<u8>)>,
    n_files: u64,
    n_dirs: u64,
}

impl Rewriter<'_> {
    /// The repaired version of a tree, or `None` when it cannot be read.
    fn tree(&mut self, id: &BlobId, depth: usize) -> Result<Option<BlobId>> {
        if let Some(done) = self.done.get(id) {
            return Ok(*done);
        }
        if depth > MAX_TREE_DEPTH {
            return Ok(None);
        }
        let tree = match self.repo.load_tree(id) {
            Ok(tree) => tree,
            Err(e) if e.is_repository_damage() => {
                self.done.insert(*id, None);
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let mut nodes: Vec<Node> = Vec::with_capacity(tree.nodes.len());
        let mut changed = false;
        for node in &tree.nodes {
            let mut node = node.clone();
            match node.kind {
                NodeKind::Dir => {
                    let Some(sub) = node.subtree_id() else {
                        nodes.push(node);
                        continue;
                    };
                    match deep_tree(self, &sub, depth)? {
                        Some(new) if new == sub => {}
                        Some(new) => {
                            node.subtree = Some(new);
                            changed = true;
                        }
                        None => {
                            node.subtree = Some(self.store_tree(&Tree::default())?);
                            node.name = damaged_name(&node.name);
                            self.n_dirs += 1;
                            changed = true;
                        }
                    }
                }
                NodeKind::File => {
                    let available: Vec<BlobId> = node
                        .chunks()
                        .filter(|c| self.repo.blobs().locate(BlobKind::Data, c).is_ok())
                        .collect();
                    if available.len() != node.content.len() {
                        let kept: u64 = available
                            .iter()
                            .filter_map(|c| self.repo.blobs().locate(BlobKind::Data, c).ok())
                            .map(|l| u64::from(l.entry.plain_len))
                            .sum();
                        node.content = available;
                        node.size = kept;
                        node.name = damaged_name(&node.name);
                        self.n_files += 1;
                        changed = true;
                    }
                }
                NodeKind::Symlink => {}
            }
            nodes.push(node);
        }
        let result = if changed {
            let mut fixed = Tree {
                nodes: unique_names(nodes),
            };
            fixed.sort();
            Some(self.store_tree(&fixed)?)
        } else {
            Some(*id)
        };
        self.done.insert(*id, result);
        Ok(result)
    }

    /// Queues a tree to be stored; returns its ID.
    fn store_tree(&mut self, tree: &Tree) -> Result<BlobId> {
        let bytes = tree.encode(self.repo.config().format);
        let id = self.repo.keys().blob_ids.id_of(BlobKind::Tree, &bytes);
        if self.repo.blobs().locate(BlobKind::Tree, &id).is_err()
            && !self.new_trees.iter().any(|(n, _)| *n == id)
        {
            self.new_trees.push((id, bytes));
        }
        Ok(id)
    }
}

/// Recursion through a helper, so `tree` stays one frame per level.
fn deep_tree(rewriter: &mut Rewriter<'_>, id: &BlobId, depth: usize) -> Result<Option<BlobId>> {
    rewriter.tree(id, depth + 1)
}

/// Renamed entries may collide with others (`a.damaged` beside `a`): a
/// later one gets `-2`, `-3`… before its suffix, so nothing is lost.
fn unique_names(mut nodes: Vec<Node>) -> Vec<Node> {
    let mut taken: HashSet<Vec<u8>> = HashSet::new();
    // Entries that kept their names first: they keep them.
    nodes.sort_by_key(|n| n.name.ends_with(b".damaged"));
    for node in &mut nodes {
        let base = node.name.clone();
        let mut n = 1;
        while !taken.insert(node.name.clone()) {
            n += 1;
            let (stem, suffix) = match base.strip_suffix(b".damaged") {
                Some(stem) => (stem, &b".damaged"[..]),
                None => (&base[..], &b""[..]),
            };
            let tail = [format!("-{n}").as_bytes(), suffix].concat();
            let mut name = stem.to_vec();
            name.truncate(MAX_NAME_LEN - tail.len());
            name.extend_from_slice(&tail);
            node.name = name;
        }
    }
    nodes
}

/// `name` with `.damaged` appended, within the name length limit.
fn damaged_name(name: &[u8]) -> Vec<u8> {
    const SUFFIX: &[u8] = b".damaged";
    let mut out = name.to_vec();
    out.truncate(MAX_NAME_LEN - SUFFIX.len());
    out.extend_from_slice(SUFFIX);
    out
}
