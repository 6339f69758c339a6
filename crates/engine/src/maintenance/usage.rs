//! What a repository holds, by class: what `cairn stats` shows a user who
//! wonders where the quota went, and a frontend deciding what to offer.
//!
//! Stored bytes are sealed bytes of distinct data blobs reachable from any
//! snapshot, each counted once, for the class of the first file met that
//! needs it (snapshots oldest first, entries in tree order): a chunk a
//! message and a medium share is counted once. Files and their bytes are
//! those of the latest snapshot. What prune could reclaim comes from a
//! prune dry run (it writes nothing).

use std::collections::{HashMap, HashSet};

use cairn_crypto::{BlobId, BlobKind};
use cairn_meta::{Class, NodeKind};

use crate::error::{Error, Result};
use crate::maintenance::PruneOptions;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::restore::MAX_TREE_DEPTH;

/// One class's share of a repository.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassUsage {
    /// Files of this class in the latest snapshot.
    pub n_files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Sealed bytes of the distinct chunks this class's files need, over
    /// every snapshot.
    pub stored_bytes: u64,
}

/// What a repository holds, by class, against its quota.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Messages (and everything not media).
    pub message: ClassUsage,
    /// Media.
    pub media: ClassUsage,
    /// Sealed bytes of the distinct trees of every snapshot.
    pub tree_stored_bytes: u64,
    /// Bytes of every object in the repository.
    pub repo_bytes: u64,
    /// The quota, if the repository has one.
    pub quota_bytes: Option<u64>,
    /// Bytes a prune with the default options would give back: the size of
    /// the packs it deletes less an estimate of the packs it writes (its
    /// copies, with headers and, in format 3, padding; index files, a few
    /// KiB, are not counted); `None` when prune would refuse (a
    /// damaged index or snapshot file: `check` names it).
    pub reclaimable_bytes: Option<u64>,
    /// Snapshots or trees that could not be read (not counted), each with
    /// the reason.
    pub unreadable: Vec<String>,
}

/// Bytes of a pack header entry, and of what every pack adds besides its
/// entries (header version and count, its seal, locator and trailer).
const PACK_ENTRY_LEN: u64 = cairn_pack::ENTRY_LEN as u64;
const PACK_FIXED_LEN: u64 =
    5 + cairn_crypto::SEAL_OVERHEAD as u64 + cairn_pack::MAX_TAIL_LEN as u64;

impl Repository {
    /// What the packs holding a prune's copies would take: its blob bytes
    /// in packs of the target size, each with its header and, in format 3,
    /// padded.
    fn packed_len(&self, dry: &crate::PruneReport) -> u64 {
        if dry.bytes_copied == 0 {
            return 0;
        }
        let target = u64::from(self.config().pack_target_size).max(1);
        let n_packs = dry.bytes_copied.div_ceil(target).max(1);
        let per_pack = dry.bytes_copied / n_packs
            + dry.n_blobs_copied.div_ceil(n_packs) * PACK_ENTRY_LEN
            + PACK_FIXED_LEN;
        let per_pack = if self.config().format >= cairn_meta::Format::V3 {
            cairn_crypto::padded_len(per_pack)
        } else {
            per_pack
        };
        n_packs * per_pack
    }
}

impl Usage {
    /// One class's usage.
    pub fn class(&self, class: Class) -> &ClassUsage {
        match class {
            Class::Message => &self.message,
            Class::Media => &self.media,
        }
    }

    fn class_mut(&mut self, class: Class) -> &mut ClassUsage {
        match class {
            Class::Message => &mut self.message,
            Class::Media => &mut self.media,
        }
    }
}

impl Repository {
    /// What the repository holds, by class, and what prune could reclaim.
    /// Damaged snapshots and trees are left out with a note in
    /// [`Usage::unreadable`].
    pub fn usage(&self, progress: &dyn Progress) -> Result<Usage> {
        let mut usage = Usage {
            quota_bytes: self.config().retention.quota_bytes,
            ..Usage::default()
        };
        let listing = self.list_snapshots()?;
        usage
            .unreadable
            .extend(listing.unreadable.iter().map(ToString::to_string));
        // Stored bytes: every distinct tree once, every chunk once.
        let mut seen_trees: HashSet<BlobId> = HashSet::new();
        let mut seen_chunks: HashSet<BlobId> = HashSet::new();
        for (id, snapshot) in &listing.snapshots {
            let mut stack = vec![(snapshot.root_id(), 0usize)];
            while let Some((tree_id, depth)) = stack.pop() {
                if depth > MAX_TREE_DEPTH || !seen_trees.insert(tree_id) {
                    continue;
                }
                let tree = match self.load_tree(&tree_id) {
                    Ok(tree) => tree,
                    Err(e) if e.is_repository_damage() => {
                        usage.unreadable.push(format!(
                            "snapshot {}: tree {}: {e}",
                            id.to_hex(),
                            tree_id.to_hex()
                        ));
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                usage.tree_stored_bytes += self.stored_len(BlobKind::Tree, &tree_id);
                for node in &tree.nodes {
                    match node.kind {
                        NodeKind::Dir => {
                            stack.extend(node.subtree_id().map(|id| (id, depth + 1)));
                        }
                        NodeKind::File => {
                            let share = usage.class_mut(node.class);
                            for chunk in node.chunks() {
                                if seen_chunks.insert(chunk) {
                                    share.stored_bytes += self.stored_len(BlobKind::Data, &chunk);
                                }
                            }
                        }
                        NodeKind::Symlink => {}
                    }
                }
            }
        }
        // Files of the latest snapshot: each distinct tree's counts once,
        // multiplied by where it occurs (a tree reached many times, however
        // hostile, costs one read).
        if let Some((_, latest)) = listing.snapshots.last() {
            let mut memo = HashMap::new();
            let counts =
                crate::deep::on_deep_stack(|| self.tree_counts(&latest.root_id(), 0, &mut memo))?;
            for (class, (n, bytes)) in [Class::Message, Class::Media].into_iter().zip(counts) {
                let share = usage.class_mut(class);
                share.n_files = n;
                share.bytes = bytes;
            }
        }
        usage.repo_bytes = self.stored_bytes()?;
        let dry = self.prune(
            &PruneOptions {
                dry_run: true,
                ..PruneOptions::default()
            },
            progress,
        );
        usage.reclaimable_bytes = match dry {
            // A dry run writes nothing; what it would copy is what a
            // real run writes, in packs with headers and (format 3)
            // padding, less index files.
            Ok(dry) => Some(dry.bytes_deleted.saturating_sub(self.packed_len(&dry))),
            Err(e)
                if e.is_repository_damage()
                    || matches!(e, Error::PruneRunning(_) | Error::PruneUnsafe(_)) =>
            {
                usage
                    .unreadable
                    .push(format!("what prune reclaims is unknown: {e}"));
                None
            }
            Err(e) => return Err(e),
        };
        Ok(usage)
    }

    /// Files and bytes (messages, media) below a tree, memoized by tree;
    /// what cannot be read counts nothing (the stored pass notes it).
    fn tree_counts(
        &self,
        id: &BlobId,
        depth: usize,
        memo: &mut HashMap<BlobId, [(u64, u64); 2]>,
    ) -> Result<[(u64, u64); 2]> {
        if let Some(counts) = memo.get(id) {
            return Ok(*counts);
        }
        let mut counts = [(0u64, 0u64); 2];
        if depth <= MAX_TREE_DEPTH {
            match self.load_tree(id) {
                Ok(tree) => {
                    for node in &tree.nodes {
                        match node.kind {
                            NodeKind::File => {
                                let slot = &mut counts[usize::from(node.class == Class::Media)];
                                slot.0 += 1;
                                slot.1 = slot.1.saturating_add(node.size);
                            }
                            NodeKind::Dir => {
                                if let Some(sub) = node.subtree_id() {
                                    let below = self.tree_counts(&sub, depth + 1, memo)?;
                                    for (slot, add) in counts.iter_mut().zip(below) {
                                        slot.0 = slot.0.saturating_add(add.0);
                                        slot.1 = slot.1.saturating_add(add.1);
                                    }
                                }
                            }
                            NodeKind::Symlink => {}
                        }
                    }
                }
                Err(e) if e.is_repository_damage() => {}
                Err(e) => return Err(e),
            }
        }
        memo.insert(*id, counts);
        Ok(counts)
    }

    /// A blob's sealed length, 0 when the index does not know it.
    fn stored_len(&self, kind: BlobKind, id: &BlobId) -> u64 {
        self.blobs()
            .locate(kind, id)
            .map_or(0, |l| u64::from(l.entry.sealed_len))
    }
}
