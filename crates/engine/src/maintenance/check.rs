//! `check`: finds every damaged, missing or unreadable object and says what
//! depends on it, without changing anything.
//!
//! It reads every index file and snapshot file, lists the packs, reads every
//! referenced pack's header and compares it with the index, then walks every
//! snapshot's trees and locates every chunk. With `read_data`, it also reads
//! every referenced pack (or a random share of them) whole, checks its name (the hash of its bytes) and
//! authenticates every blob in it. Packs no index names (left by interrupted
//! backups) are counted, not reported as problems: prune removes them.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use cairn_crypto::{BlobId, BlobKind, PackId};
use cairn_index::BlobLocation;
use cairn_meta::{NodeKind, Tree};
use cairn_pack::PackEntry;
use cairn_store::Namespace;

use crate::blobs::{object, pack_object};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::restore::MAX_TREE_DEPTH;
use crate::restore::escape_name;

/// Options of [`Repository::check`].
#[derive(Clone, Debug, Default)]
pub struct CheckOptions {
    /// Which packs to read whole, authenticating every blob in them
    /// (without it, only metadata and pack headers are read).
    pub read_data: ReadData,
}

/// Which packs `check` reads whole.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum ReadData {
    /// None: metadata and pack headers only.
    #[default]
    None,
    /// Every pack (reads the whole repository).
    All,
    /// A random share of the packs (0.0 to 1.0), different at each run, so
    /// that runs over days cover the repository at a fraction of the cost.
    Share(f64),
}

impl ReadData {
    /// Whether to read `pack`, given this run's random `seed`.
    fn includes(self, pack: &PackId, seed: &[u8; 32]) -> bool {
        match self {
            ReadData::None => false,
            ReadData::All => true,
            ReadData::Share(share) => {
                let hash = blake3::keyed_hash(seed, pack.as_bytes());
                let mut first = [0u8; 8];
                first.copy_from_slice(&hash.as_bytes()[..8]);
                (u64::from_le_bytes(first) as f64) < share * u64::MAX as f64
            }
        }
    }
}

/// One thing `check` found wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The object or snapshot path concerned.
    pub object: String,
    /// What is wrong with it.
    pub what: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.object, self.what)
    }
}

/// What `check` found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Snapshot files read.
    pub n_snapshots: usize,
    /// Index files read.
    pub n_index_files: usize,
    /// Packs the index names (and whose headers were checked).
    pub n_packs: usize,
    /// Distinct trees walked.
    pub n_trees: usize,
    /// Packs read whole (with `read_data`).
    pub n_packs_read: usize,
    /// Blobs authenticated by reading them (with `read_data`).
    pub n_blobs_read: u64,
    /// Packs no index file names, and their bytes.
    pub n_unreferenced_packs: usize,
    /// Bytes of those packs.
    pub unreferenced_bytes: u64,
    /// Packs a prune has condemned and not yet deleted (or not finished
    /// deleting: an interrupted prune; the next one finishes).
    pub n_condemned_packs: usize,
    /// Of those, the ones already gone while index files still name them.
    pub n_condemned_packs_deleted: usize,
    /// Everything found wrong. Empty means the repository is sound.
    pub problems: Vec<Problem>,
}

impl CheckReport {
    /// Whether nothing was found wrong.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    fn problem(&mut self, object: impl ToString, what: impl ToString) {
        self.problems.push(Problem {
            object: object.to_string(),
            what: what.to_string(),
        });
    }
}

/// What the check decided about a pack.
pub(super) enum PackVerdict {
    Sound,
    /// Nothing in it can be used (missing, or its header is damaged).
    Bad(String),
    /// Readable, but these blobs fail authentication.
    Damaged {
        what: String,
        blobs: HashSet<(BlobKind, BlobId)>,
    },
}

impl Repository {
    /// Checks the whole repository and reports every problem found; changes
    /// nothing. Errors only for failures of the check itself (the store
    /// failing, cancellation), never for what it finds.
    pub fn check(&self, options: &CheckOptions, progress: &dyn Progress) -> Result<CheckReport> {
        // Judging trees recurses once per directory level.
        crate::deep::on_deep_stack(|| self.check_here(options, progress))
    }

    /// [`Self::check`], on the calling thread.
    fn check_here(&self, options: &CheckOptions, progress: &dyn Progress) -> Result<CheckReport> {
        // The repository is judged, not this device's copies of it.
        let _store_only = self.blobs().uncached();
        let mut report = CheckReport::default();

        // Condemnation records first (a prune deletes its record last, after
        // the packs and index files it names): each must read. The packs
        // they name are being deleted; that some are gone is no problem.
        for unreadable in self.blobs().load_condemned()? {
            report.problem(unreadable.object, unreadable.reason);
        }
        let condemned: HashSet<PackId> = self.blobs().packs_in_records();
        report.n_condemned_packs = condemned.len();

        // Index files: each must read, authenticate and decode.
        let mut by_pack: HashMap<PackId, Vec<PackEntry>> = HashMap::new();
        let mut files_of: HashMap<PackId, Vec<String>> = HashMap::new();
        for name in self.store().list(Namespace::Index)? {
            let object_name = object(Namespace::Index, &name)?;
            match self.blobs().read_index_file(&object_name, &name) {
                Ok(segment) => {
                    report.n_index_files += 1;
                    for pack in segment.packs() {
                        files_of.entry(*pack).or_default().push(name.clone());
                    }
                    for location in segment.iter() {
                        by_pack
                            .entry(location.pack)
                            .or_default()
                            .push(location.entry);
                    }
                }
                // Superseded and deleted by a prune since the listing.
                Err(Error::Store(cairn_store::Error::NotFound(_))) => {}
                Err(e) if e.is_repository_damage() => report.problem(object_name, e),
                Err(e) => return Err(e),
            }
        }

        // Packs: every named pack must exist and its header must list exactly
        // what the index says it holds.
        let present: HashSet<String> = self.store().list(Namespace::Packs)?.into_iter().collect();
        let mut verdicts: HashMap<PackId, PackVerdict> = HashMap::new();
        let mut seed = [0u8; 32];
        cairn_crypto::random_bytes(&mut seed).map_err(|_| Error::Random)?;
        let mut packs: Vec<_> = by_pack.into_iter().collect();
        packs.sort_by_key(|(pack, _)| *pack);
        for (pack, entries) in &packs {
            if progress.is_cancelled() {
                return Err(Error::Cancelled);
            }
            report.n_packs += 1;
            let verdict = self.check_pack(pack, entries, &present, options, &seed, &mut report)?;
            // Gone now (missing from the listing, or vanished since), and
            // condemned or named by an index file that went with it: a
            // prune deleted it, not the server.
            let deleting = matches!(verdict, PackVerdict::Bad(_))
                && self.is_gone(pack)?
                && (condemned.contains(pack) || self.deleted_by_prune(pack, files_of.get(pack))?);
            match &verdict {
                // A prune condemned it and was interrupted after deleting
                // it: the next prune finishes the job. What a snapshot needs
                // from it is reported by the snapshot walk below.
                PackVerdict::Bad(_) if deleting => {
                    report.n_condemned_packs_deleted += 1;
                    self.blobs().forget_deleted_packs(&[*pack]);
                }
                PackVerdict::Bad(what) => {
                    report.problem(pack_object(pack)?, what);
                    // Its blobs' other copies, if any, take over (what is
                    // lost is then what only this pack held).
                    self.blobs()
                        .forget_pack(*pack, !present.contains(&pack.to_hex()));
                }
                PackVerdict::Damaged { what, .. } => report.problem(pack_object(pack)?, what),
                PackVerdict::Sound => {}
            }
            verdicts.insert(*pack, verdict);
        }
        for name in &present {
            if PackId::from_hex(name).is_none_or(|id| !verdicts.contains_key(&id)) {
                report.n_unreferenced_packs += 1;
                match self.store().size(&object(Namespace::Packs, name)?) {
                    Ok(size) => report.unreferenced_bytes += size,
                    // Deleted by a prune since the listing.
                    Err(cairn_store::Error::NotFound(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }

        // Snapshots: each must read, and everything it reaches must be there.
        let listing = self.list_snapshots()?;
        let snapshots = listing.snapshots;
        for u in listing.unreadable {
            report.problem(u.object, u.reason);
        }
        report.n_snapshots = snapshots.len();
        let mut walk = SnapshotWalk {
            repo: self,
            verdicts: &verdicts,
            sound: HashSet::new(),
            damaged: HashMap::new(),
            chunks: HashMap::new(),
            progress,
        };
        let mut budget_in_all = MAX_PATHS_IN_ALL;
        for (id, snapshot) in &snapshots {
            let prefix = format!("snapshot {}", &id.to_hex()[..16]);
            let damage = match walk.tree(&snapshot.root_id(), 0)? {
                Ok(None) => continue,
                Ok(Some(damage)) => damage,
                Err(what) => {
                    report.problem(prefix, what);
                    continue;
                }
            };
            let mut budget = MAX_PATHS_PER_SNAPSHOT.min(budget_in_all);
            let before = budget;
            let mut named = Vec::new();
            walk.name_paths(&damage, &prefix, &mut budget, &mut named);
            budget_in_all -= before - budget;
            let n_named = named.len() as u64;
            for (path, what) in named {
                report.problem(path, what);
            }
            if damage.n_paths > n_named {
                report.problem(
                    prefix,
                    format!(
                        "{} {}paths need missing or damaged data",
                        damage.n_paths - n_named,
                        if n_named > 0 { "more " } else { "" }
                    ),
                );
            }
        }
        report.n_trees = walk.sound.len() + walk.damaged.len();
        Ok(report)
    }

    /// Whether a pack gone since the check began was deleted by a prune
    /// that ran meanwhile: a record read now names it (records are deleted
    /// last), or an index file naming it went too.
    fn deleted_by_prune(&self, pack: &PackId, files: Option<&Vec<String>>) -> Result<bool> {
        self.blobs().load_condemned()?;
        if self.blobs().is_condemned(pack) {
            return Ok(true);
        }
        self.index_file_gone(files)
    }

    fn is_gone(&self, pack: &PackId) -> Result<bool> {
        match self.store().size(&pack_object(pack)?) {
            Ok(_) => Ok(false),
            Err(cairn_store::Error::NotFound(_)) => Ok(true),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether one of the index files naming a missing pack is gone since
    /// the check read it: a prune that ran meanwhile deleted both (and the
    /// record condemning them, which the check had read too early).
    fn index_file_gone(&self, files: Option<&Vec<String>>) -> Result<bool> {
        let Some(files) = files else {
            return Ok(false);
        };
        let now: HashSet<String> = self.store().list(Namespace::Index)?.into_iter().collect();
        Ok(files.iter().any(|f| !now.contains(f)))
    }

    pub(super) fn check_pack(
        &self,
        pack: &PackId,
        entries: &[PackEntry],
        present: &HashSet<String>,
        options: &CheckOptions,
        seed: &[u8; 32],
        report: &mut CheckReport,
    ) -> Result<PackVerdict> {
        if !present.contains(&pack.to_hex()) {
            return Ok(PackVerdict::Bad(format!(
                "missing ({} blobs named by the index)",
                entries.len()
            )));
        }
        let header = match self.blobs().read_header(pack) {
            Ok(Some(header)) => header,
            Ok(None) => return Ok(PackVerdict::Bad("trailer or header is damaged".into())),
            Err(cairn_store::Error::NotFound(_)) => {
                return Ok(PackVerdict::Bad("vanished while checked".into()));
            }
            Err(e) => return Err(e.into()),
        };
        let listed: HashSet<&PackEntry> = header.iter().collect();
        let n_unlisted = entries.iter().filter(|e| !listed.contains(e)).count();
        if n_unlisted > 0 {
            return Ok(PackVerdict::Bad(format!(
                "header does not list {n_unlisted} blobs the index places in it"
            )));
        }
        if options.read_data.includes(pack, seed) {
            report.n_packs_read += 1;
            return self.read_pack_whole(pack, &header, report);
        }
        Ok(PackVerdict::Sound)
    }

    /// Reads a pack whole: its name must be the hash of its bytes and every
    /// blob must authenticate.
    fn read_pack_whole(
        &self,
        pack: &PackId,
        header: &[PackEntry],
        report: &mut CheckReport,
    ) -> Result<PackVerdict> {
        let name = pack_object(pack)?;
        let whole = self
            .store()
            .size(&name)
            .and_then(|size| self.store().get_range(&name, 0, size));
        let bytes = match whole {
            Ok(bytes) => bytes,
            Err(cairn_store::Error::NotFound(_)) => {
                return Ok(PackVerdict::Bad("vanished while checked".into()));
            }
            Err(e) => return Err(e.into()),
        };
        let name_matches = PackId::of_bytes(&bytes) == *pack;
        let mut damaged = HashSet::new();
        for entry in header {
            let range = entry.offset as usize..(entry.offset as usize + entry.sealed_len as usize);
            let location = BlobLocation {
                pack: *pack,
                entry: *entry,
            };
            let opened = bytes
                .get(range)
                .ok_or_else(|| Error::integrity(&name))
                .and_then(|sealed| self.blobs().open(&location, sealed));
            match opened {
                Ok(_) => report.n_blobs_read += 1,
                // Its header, read again on first use, is gone.
                Err(Error::MissingPack { .. }) => {
                    return Ok(PackVerdict::Bad("vanished while checked".into()));
                }
                Err(e) if e.is_repository_damage() => {
                    damaged.insert((entry.kind, entry.id));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(match (name_matches, damaged.is_empty()) {
            (true, true) => PackVerdict::Sound,
            // Bytes outside every blob (the header was checked before).
            (false, true) => PackVerdict::Damaged {
                what: "bytes do not match its name, though every blob authenticates".into(),
                blobs: damaged,
            },
            _ => PackVerdict::Damaged {
                what: format!("{} blobs fail authentication", damaged.len()),
                blobs: damaged,
            },
        })
    }
}

/// Whether `entry` of a pack judged `verdict` can be used.
pub(super) fn is_sound(verdict: &PackVerdict, entry: &PackEntry) -> bool {
    match verdict {
        PackVerdict::Sound => true,
        PackVerdict::Bad(_) => false,
        PackVerdict::Damaged { blobs, .. } => !blobs.contains(&(entry.kind, entry.id)),
    }
}

/// Most paths `check` names per snapshot, and in all; beyond them it counts.
/// A lost pack under a subtree that a year of daily snapshots share would
/// otherwise make millions of lines.
const MAX_PATHS_PER_SNAPSHOT: usize = 100;
const MAX_PATHS_IN_ALL: usize = 10_000;

/// What a tree holds that cannot be had: its own entries that are bad (a
/// file with a chunk that cannot be had, a directory whose tree cannot), the
/// subdirectories with something bad below, and how many bad paths that is
/// in all. Kept once per distinct tree, so memory grows with the number of
/// trees with damage below them, never with paths or snapshots.
struct TreeDamage {
    own: Vec<(String, String)>,
    below: Vec<(String, BlobId)>,
    n_paths: u64,
}

/// Walks snapshots' trees, each distinct tree once.
struct SnapshotWalk<'a> {
    repo: &'a Repository,
    verdicts: &'a HashMap<PackId, PackVerdict>,
    /// Trees with nothing bad below.
    sound: HashSet<BlobId>,
    /// Trees with something bad below.
    damaged: HashMap<BlobId, Rc<TreeDamage>>,
    chunks: HashMap<BlobId, Option<String>>,
    progress: &'a dyn Progress,
}

fn join(name: &str, below: &str) -> String {
    if below.is_empty() {
        name.to_owned()
    } else {
        format!("{name}/{below}")
    }
}

impl SnapshotWalk<'_> {
    /// Whether a blob can be had: located (another copy, if the first one's
    /// pack is bad), in a pack found sound.
    fn available(&self, kind: BlobKind, id: &BlobId) -> std::result::Result<(), String> {
        let location = self
            .repo
            .blobs()
            .locate_fresh(kind, id)
            .map_err(|e| e.to_string())?;
        let unusable = |what: &str| {
            Err(format!(
                "{} blob {} is unusable (pack {}: {what})",
                kind.name(),
                id.to_hex(),
                location.pack.to_hex()
            ))
        };
        match self.verdicts.get(&location.pack) {
            Some(PackVerdict::Sound) => Ok(()),
            Some(PackVerdict::Bad(what)) => unusable(what),
            Some(PackVerdict::Damaged { what, blobs }) if blobs.contains(&(kind, *id)) => {
                unusable(what)
            }
            Some(PackVerdict::Damaged { .. }) => Ok(()),
            // Named by an index file newer than this check's listing (a backup
            // committed meanwhile): not judged here.
            None => Ok(()),
        }
    }

    fn chunk(&mut self, id: &BlobId) -> Option<String> {
        if let Some(known) = self.chunks.get(id) {
            return known.clone();
        }
        let verdict = self.available(BlobKind::Data, id).err();
        self.chunks.insert(*id, verdict.clone());
        verdict
    }

    /// What is bad below tree `id` (`None`: nothing), or why the tree
    /// itself cannot be had (`Err`).
    fn tree(
        &mut self,
        id: &BlobId,
        depth: usize,
    ) -> Result<std::result::Result<Option<Rc<TreeDamage>>, String>> {
        if self.sound.contains(id) {
            return Ok(Ok(None));
        }
        if let Some(damage) = self.damaged.get(id) {
            return Ok(Ok(Some(damage.clone())));
        }
        if self.progress.is_cancelled() {
            return Err(Error::Cancelled);
        }
        if depth > MAX_TREE_DEPTH {
            return Ok(Err(format!(
                "nested deeper than {MAX_TREE_DEPTH} directories"
            )));
        }
        if let Err(what) = self.available(BlobKind::Tree, id) {
            return Ok(Err(what));
        }
        let tree: Tree = match self.repo.load_tree(id) {
            Ok(tree) => tree,
            Err(e) if e.is_repository_damage() => return Ok(Err(e.to_string())),
            Err(e) => return Err(e),
        };
        let mut damage = TreeDamage {
            own: Vec::new(),
            below: Vec::new(),
            n_paths: 0,
        };
        for node in &tree.nodes {
            match node.kind {
                NodeKind::Dir => {
                    let Some(sub) = node.subtree_id() else {
                        continue;
                    };
                    match self.tree(&sub, depth + 1)? {
                        Ok(None) => {}
                        Ok(Some(below)) => {
                            damage.n_paths = damage.n_paths.saturating_add(below.n_paths);
                            damage.below.push((escape_name(&node.name), sub));
                        }
                        Err(what) => {
                            damage.n_paths = damage.n_paths.saturating_add(1);
                            damage.own.push((escape_name(&node.name), what));
                        }
                    }
                }
                NodeKind::File => {
                    // One line per file: its first chunk that cannot be had.
                    if let Some(what) = node.chunks().find_map(|c| self.chunk(&c)) {
                        damage.n_paths = damage.n_paths.saturating_add(1);
                        damage.own.push((escape_name(&node.name), what));
                    }
                }
                NodeKind::Symlink => {}
            }
        }
        if damage.n_paths == 0 {
            self.sound.insert(*id);
            return Ok(Ok(None));
        }
        let damage = Rc::new(damage);
        self.damaged.insert(*id, damage.clone());
        Ok(Ok(Some(damage)))
    }

    /// Names up to `budget` bad paths below `damage`, depth first.
    fn name_paths(
        &self,
        damage: &TreeDamage,
        prefix: &str,
        budget: &mut usize,
        out: &mut Vec<(String, String)>,
    ) {
        for (name, what) in &damage.own {
            if *budget == 0 {
                return;
            }
            *budget -= 1;
            out.push((join(prefix, name), what.clone()));
        }
        for (name, sub) in &damage.below {
            if *budget == 0 {
                return;
            }
            if let Some(below) = self.damaged.get(sub) {
                self.name_paths(below, &join(prefix, name), budget, out);
            }
        }
    }
}
