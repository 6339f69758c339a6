//! Restore: recreate a snapshot (or a sub-path of it) in a directory, and look
//! things up inside snapshots.
//!
//! A restore plans, then fetches, then finishes. Planning walks the trees and
//! creates directories (0700), symlinks, and every file of several chunks
//! (0600, at its final size, under a temporary name), recording where each
//! chunk goes. The data phase (`data.rs`) fetches chunks pack by pack on
//! several threads and writes them with positional writes; a file of one
//! chunk (most small files) is created there, by the worker that writes it,
//! so it costs one open rather than two. A file gets its owner, mode, time and
//! real name as soon as its last chunk is written; finishing gives each
//! directory its metadata, children before parents. See `target.rs` for the invariants that keep it inside the target
//! and private until done.
//!
//! **One bad object costs what depends on it.** A subtree, chunk or pack that
//! is missing or damaged costs the entries that need it: they are left out and
//! listed in [`RestoreReport::failed`], and everything else is restored. Local
//! failures (a full disk), store failures and cancellation stop the restore;
//! its incomplete files are removed.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use cairn_crypto::{BlobKind, SnapshotId};
use cairn_meta::{Node, NodeKind, Tree};

use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::repo::Repository;

mod data;
mod resolve;
mod stream;
mod target;

use data::{DataPlan, Destination};
pub(crate) use resolve::MAX_TREE_DEPTH;
pub use resolve::{ListEntry, Listing, Resolved, escape_name};
pub use stream::FileReader;
use target::{DirCache, Target};

/// What a restore did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Regular files written.
    pub n_files: u64,
    /// Directories created.
    pub n_dirs: u64,
    /// Symbolic links created.
    pub n_symlinks: u64,
    /// Bytes of file content restored.
    pub bytes_written: u64,
    /// Entries that could not be restored (their data is missing or damaged),
    /// with the reason. Empty when the restore is complete.
    pub failed: Vec<RestoreFailure>,
}

impl RestoreReport {
    /// Whether every entry was restored.
    pub fn is_complete(&self) -> bool {
        self.failed.is_empty()
    }
}

/// An entry a restore left out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreFailure {
    /// Where it would have been.
    pub path: PathBuf,
    /// Why it is not.
    pub reason: String,
}

/// A file of the plan: where it goes, its metadata (content list dropped),
/// and how many of its chunks are still to be written: the data phase
/// finishes the file (metadata, real name) as soon as that reaches zero.
pub(crate) struct PlannedFile {
    pub dir_idx: usize,
    pub tmp_name: Vec<u8>,
    /// Device and inode of a file the planner created: whoever reopens it
    /// checks it is still that file. `None` for a file of one chunk, which
    /// the data worker writing that chunk creates and finishes on one
    /// descriptor.
    pub identity: Option<(u64, u64)>,
    pub node: Node,
    pub remaining: AtomicUsize,
    /// Whether it exists under its temporary name (to remove if the restore
    /// fails).
    pub created: AtomicBool,
    /// Whether it has its real name.
    pub done: AtomicBool,
}

impl Repository {
    /// Restores a snapshot, or the entry at `sub_path` inside it, into `target`
    /// (created 0700 if missing; must be an empty directory if it exists). The
    /// root's entries, or the one entry named by `sub_path`, appear directly
    /// inside `target`. Entries whose data is missing or damaged are listed in
    /// the report's `failed` (check [`RestoreReport::is_complete`]).
    pub fn restore(
        &self,
        snapshot: &SnapshotId,
        sub_path: Option<&Path>,
        target: &Path,
        progress: &dyn Progress,
    ) -> Result<RestoreReport> {
        // Planning recurses once per directory level.
        crate::deep::on_deep_stack(|| self.restore_here(snapshot, sub_path, target, progress))
    }

    /// [`Self::restore`], on the calling thread.
    fn restore_here(
        &self,
        snapshot: &SnapshotId,
        sub_path: Option<&Path>,
        target: &Path,
        progress: &dyn Progress,
    ) -> Result<RestoreReport> {
        let resolved = self.resolve(snapshot, sub_path)?;
        let target_path = target;
        let target = Target::prepare(target)?;
        let root = target.root().clone();
        let mut planner = Planner {
            repo: self,
            progress,
            target,
            plan: DataPlan::default(),
            dirs: Vec::new(),
            report: RestoreReport::default(),
            token: {
                let mut bytes = [0u8; 8];
                cairn_crypto::random_bytes(&mut bytes).map_err(|_| Error::Random)?;
                u64::from_le_bytes(bytes)
            },
        };
        let planned = match resolved {
            Resolved::Root(tree) => tree
                .nodes
                .iter()
                .try_for_each(|node| planner.node(0, &root, node, &tree, 0)),
            Resolved::Node(node) => {
                let alone = Tree {
                    nodes: vec![node.clone()],
                };
                planner.node(0, &root, &node, &alone, 0)
            }
        };
        let Planner {
            plan,
            dirs,
            mut report,
            target,
            ..
        } = planner;
        let fetched = planned.and_then(|()| {
            // One thread per core, or more when the store hides a round
            // trip behind requests in flight (each thread has one).
            let cores = std::thread::available_parallelism().map_or(1, usize::from);
            let n_threads = cores.max(self.store().parallelism()).min(64);
            data::fetch_and_write(self, &target, &plan, n_threads, progress)
        });
        let failed_files = match fetched {
            Ok(failed) => failed,
            Err(e) => {
                remove_incomplete(&target, &plan.files);
                let _ = target.finish();
                return Err(e);
            }
        };
        finish(&target, &plan.files, &failed_files, &dirs, &mut report).inspect_err(|_| {
            remove_incomplete(&target, &plan.files);
            let _ = target.finish();
        })?;
        target.finish().map_err(Error::io(target_path))?;
        report.n_files = (plan.files.len() - failed_files.len()) as u64;
        report.n_dirs = dirs.len() as u64;
        Ok(report)
    }
}

/// Removes incomplete files, finishes any complete one the data phase did
/// not (none, normally), then gives directories their metadata, children
/// before parents (a read-only directory is closed only once filled).
fn finish(
    target: &Target,
    files: &[PlannedFile],
    failed: &HashMap<usize, String>,
    dirs: &[(usize, Node)],
    report: &mut RestoreReport,
) -> Result<()> {
    let mut cache = DirCache::default();
    for (file_idx, file) in files.iter().enumerate() {
        let shown = || target.display_path(file.dir_idx, &file.node.name);
        let failure = failed.get(&file_idx);
        if failure.is_none() && file.done.load(Ordering::Acquire) {
            continue;
        }
        let dir = target
            .dir(&mut cache, file.dir_idx)
            .map_err(Error::io(shown()))?;
        let created = file.created.load(Ordering::Acquire);
        match (failure, file.identity) {
            (Some(reason), _) => {
                if created {
                    Target::remove_file(&dir, &file.tmp_name).map_err(Error::io(shown()))?;
                }
                report.bytes_written -= file.node.size;
                report.failed.push(RestoreFailure {
                    path: shown(),
                    reason: reason.clone(),
                });
            }
            (None, Some(identity)) => {
                Target::finish_file(&dir, &file.tmp_name, identity, &file.node)
                    .map_err(Error::io(shown()))?;
            }
            // Every chunk of a plan is written or its files are failed; a
            // file of one chunk that is neither was lost by a bug.
            (None, None) => {
                return Err(Error::io(shown())(std::io::Error::other(
                    "its content was never written",
                )));
            }
        }
    }
    for (dir_idx, node) in dirs.iter().rev() {
        target
            .finish_dir(&mut cache, *dir_idx, node)
            .map_err(Error::io(target.display_path(*dir_idx, b"")))?;
    }
    Ok(())
}

/// After a failed restore: removes every file still under its temporary name
/// (best effort: the failure being reported matters more).
fn remove_incomplete(target: &Target, files: &[PlannedFile]) {
    let mut cache = DirCache::default();
    let incomplete =
        |f: &&PlannedFile| f.created.load(Ordering::Acquire) && !f.done.load(Ordering::Acquire);
    for file in files.iter().filter(incomplete) {
        if let Ok(dir) = target.dir(&mut cache, file.dir_idx) {
            let _ = Target::remove_file(&dir, &file.tmp_name);
        }
    }
}

/// Walks the trees: creates directories, symlinks and files of several
/// chunks (empty, at their final size, under temporary names), and collects
/// where every chunk goes.
struct Planner<'a> {
    repo: &'a Repository,
    progress: &'a dyn Progress,
    target: Target,
    plan: DataPlan,
    /// Directories in creation order (parents first), with their metadata.
    dirs: Vec<(usize, Node)>,
    report: RestoreReport,
    /// Random per restore: part of every temporary name.
    token: u64,
}

/// A temporary name for a file: `.cairn-partial-<token>-<index>`, where the
/// token is random per restore, so a sender who planted names in the
/// snapshot cannot predict (or exhaust) it; never one of its directory's
/// names in the snapshot (those are all its directory will hold).
fn temporary_name(token: u64, file_idx: usize, taken: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let mut attempt = 0u32;
    loop {
        let name = format!(".cairn-partial-{token:016x}-{file_idx}-{attempt}").into_bytes();
        if !taken(&name) {
            return name;
        }
        attempt += 1;
    }
}

impl Planner<'_> {
    fn fail(&mut self, dir_idx: usize, name: &[u8], error: &Error) {
        let path = self.target.display_path(dir_idx, name);
        self.report.failed.push(RestoreFailure {
            path,
            reason: error.to_string(),
        });
    }

    /// Plans one entry of directory `dir_idx` (open as `dir`, holding
    /// `siblings`). Repository damage below it is recorded and skipped;
    /// anything else stops.
    fn node(
        &mut self,
        dir_idx: usize,
        dir: &OwnedFd,
        node: &Node,
        siblings: &Tree,
        depth: usize,
    ) -> Result<()> {
        if self.progress.is_cancelled() {
            return Err(Error::Cancelled);
        }
        // Names come from validated trees; checked again here because this is
        // the line that keeps restore inside its target.
        if !cairn_meta::is_valid_name(&node.name) {
            return Err(Error::integrity("tree blob"));
        }
        let shown = || self.target.display_path(dir_idx, &node.name);
        match node.kind {
            NodeKind::Dir => {
                let subtree = node
                    .subtree_id()
                    .ok_or_else(|| Error::integrity("tree blob"))
                    .and_then(|id| self.load_subtree(&id, depth + 1, &shown()));
                let tree = match subtree {
                    Ok(tree) => tree,
                    Err(e) if e.is_repository_damage() || matches!(e, Error::TooDeep { .. }) => {
                        self.fail(dir_idx, &node.name, &e);
                        return Ok(());
                    }
                    Err(e) => return Err(e),
                };
                let path = shown();
                let (idx, fd) = self
                    .target
                    .create_dir(dir_idx, dir, &node.name)
                    .map_err(Error::io(path))?;
                self.dirs.push((idx, metadata_only(node)));
                for child in &tree.nodes {
                    self.node(idx, &fd, child, &tree, depth + 1)?;
                }
            }
            NodeKind::File => {
                let file_idx = self.plan.files.len();
                let mut offset = 0u64;
                let mut destinations = Vec::with_capacity(node.content.len());
                for id in node.chunks() {
                    match self.repo.blobs().locate_fresh(BlobKind::Data, &id) {
                        Ok(location) => {
                            destinations.push((location, offset));
                            offset += u64::from(location.entry.plain_len);
                        }
                        Err(e) if e.is_repository_damage() => {
                            self.fail(dir_idx, &node.name, &e);
                            return Ok(());
                        }
                        Err(e) => return Err(e),
                    }
                }
                if offset != node.size {
                    let e = Error::integrity(format!("tree entry {:?}", node.name_lossy()));
                    self.fail(dir_idx, &node.name, &e);
                    return Ok(());
                }
                self.progress.file(&shown(), node.size);
                let tmp_name = temporary_name(self.token, file_idx, |n| siblings.find(n).is_some());
                let metadata = metadata_only(node);
                // A file of one chunk is created by whoever writes it.
                let (identity, created) = match destinations.len() {
                    1 => (None, false),
                    _ => {
                        let fd = Target::create_file(dir, &tmp_name, node.size)
                            .map_err(Error::io(shown()))?;
                        let ready = Target::identity(&fd).and_then(|identity| {
                            // A file without chunks is complete already.
                            if destinations.is_empty() {
                                Target::complete_file(dir, &fd, &tmp_name, &metadata)?;
                            }
                            Ok(identity)
                        });
                        let identity = ready
                            .inspect_err(|_| {
                                // Not in the plan yet: nobody else would
                                // remove it.
                                let _ = Target::remove_file(dir, &tmp_name);
                            })
                            .map_err(Error::io(shown()))?;
                        (Some(identity), true)
                    }
                };
                let done = destinations.is_empty();
                let remaining = destinations.len();
                for (location, offset) in destinations {
                    self.plan.add(location, Destination { file_idx, offset });
                }
                self.plan.files.push(PlannedFile {
                    dir_idx,
                    tmp_name,
                    identity,
                    node: metadata,
                    remaining: AtomicUsize::new(remaining),
                    created: AtomicBool::new(created),
                    done: AtomicBool::new(done),
                });
                self.report.bytes_written += node.size;
            }
            NodeKind::Symlink => {
                Target::create_symlink(dir, &node.name, node).map_err(Error::io(shown()))?;
                self.report.n_symlinks += 1;
            }
        }
        Ok(())
    }

    fn load_subtree(&self, id: &cairn_crypto::BlobId, depth: usize, path: &Path) -> Result<Tree> {
        if depth > MAX_TREE_DEPTH {
            return Err(Error::TooDeep {
                path: path.display().to_string(),
                max: MAX_TREE_DEPTH,
            });
        }
        self.repo.load_tree(id)
    }
}

fn metadata_only(node: &Node) -> Node {
    Node {
        content: Vec::new(),
        ..node.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use std::fs;

    use cairn_store::MemoryStore;

    use super::*;
    use crate::backup::forge_snapshot;
    use crate::repo::InitOptions;

    fn file_node(name: &[u8]) -> Node {
        Node {
            mode: 0o644,
            ..Node::new(name.to_vec(), NodeKind::File)
        }
    }

    #[test]
    fn restore_never_writes_outside_its_target() {
        let store = Arc::new(MemoryStore::new());
        let (repo, _key) = Repository::init(store, &InitOptions::default()).expect("init");
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("inner").join("target");
        fs::create_dir_all(&target).expect("mkdir");
        for evil in [&b".."[..], b"../escape", b"/etc/passwd", b"a/../../x", b"."] {
            let root = Tree {
                nodes: vec![file_node(evil)],
            };
            let id = forge_snapshot(&repo, &root);
            let err = repo
                .restore(&id, None, &target, &crate::NoProgress)
                .unwrap_err();
            assert!(err.is_integrity(), "{evil:?}: {err}");
            assert!(fs::read_dir(&target).expect("target").next().is_none());
            let outside: Vec<_> = fs::read_dir(dir.path().join("inner"))
                .expect("inner")
                .map(|e| e.expect("entry").file_name())
                .collect();
            assert_eq!(outside, ["target"], "{evil:?}");
        }
        // Duplicate names (a symlink and a directory of the same name) would let
        // a later entry write through an earlier symlink: rejected too.
        let mut link = file_node(b"same");
        link.kind = NodeKind::Symlink;
        link.link_target = b"/tmp".to_vec();
        let dup = Tree {
            nodes: vec![link, file_node(b"same")],
        };
        let id = forge_snapshot(&repo, &dup);
        let err = repo
            .restore(&id, None, &target, &crate::NoProgress)
            .unwrap_err();
        assert!(err.is_integrity(), "{err}");
    }
}
