//! Restore: recreate a snapshot (or a sub-path of it) in a directory, and look
//! things up inside snapshots.
//!
//! **Invariant:** restore writes only inside its target. The target must be new
//! or empty; every name comes from a validated tree (no `.`, `..`, `/`, NUL, no
//! duplicates), so no path can climb out or pass through a restored symlink.

use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use cairn_crypto::SnapshotId;
use filetime::FileTime;

use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::restore_data::{DataPlan, Destination};
use crate::tree::{Node, NodeKind, Tree};

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
}

/// A snapshot path resolved to what it names.
#[derive(Clone, Debug)]
pub enum Resolved {
    /// The snapshot's root (its top-level entries).
    Root(Tree),
    /// One entry.
    Node(Node),
}

/// One line of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListEntry {
    /// Path inside the snapshot, `/`-separated (lossy UTF-8).
    pub path: String,
    /// The entry.
    pub node: Node,
}

impl Repository {
    /// Resolves a `/`-separated path inside a snapshot; `None` or empty is the root.
    pub fn resolve(&self, snapshot: &SnapshotId, path: Option<&Path>) -> Result<Resolved> {
        let snap = self.load_snapshot(snapshot)?;
        let mut current = Resolved::Root(self.load_tree(&snap.root_id())?);
        let shown = || path.map(|p| p.display().to_string()).unwrap_or_default();
        for component in path.into_iter().flat_map(Path::components) {
            let name = match component {
                Component::Normal(n) => n.as_bytes(),
                Component::RootDir | Component::CurDir => continue,
                _ => return Err(Error::PathNotFound(shown())),
            };
            let tree = match current {
                Resolved::Root(tree) => tree,
                Resolved::Node(node) => match node.subtree_id() {
                    Some(id) if node.kind == NodeKind::Dir => self.load_tree(&id)?,
                    _ => return Err(Error::PathNotFound(shown())),
                },
            };
            let node = tree
                .find(name)
                .ok_or_else(|| Error::PathNotFound(shown()))?;
            current = Resolved::Node(node.clone());
        }
        Ok(current)
    }

    /// Lists everything under `path` in a snapshot, depth first, sorted by name.
    pub fn list(&self, snapshot: &SnapshotId, path: Option<&Path>) -> Result<Vec<ListEntry>> {
        let mut out = Vec::new();
        let prefix = path
            .map(|p| p.to_string_lossy().trim_matches('/').to_owned())
            .unwrap_or_default();
        match self.resolve(snapshot, path)? {
            Resolved::Root(tree) => self.list_tree(&tree, &prefix, &mut out)?,
            Resolved::Node(node) => {
                let is_dir = node.kind == NodeKind::Dir;
                let subtree = node.subtree_id();
                out.push(ListEntry {
                    path: prefix.clone(),
                    node,
                });
                if let (true, Some(id)) = (is_dir, subtree) {
                    self.list_tree(&self.load_tree(&id)?, &prefix, &mut out)?;
                }
            }
        }
        Ok(out)
    }

    fn list_tree(&self, tree: &Tree, prefix: &str, out: &mut Vec<ListEntry>) -> Result<()> {
        for node in &tree.nodes {
            let path = if prefix.is_empty() {
                node.name_lossy()
            } else {
                format!("{prefix}/{}", node.name_lossy())
            };
            out.push(ListEntry {
                path: path.clone(),
                node: node.clone(),
            });
            if let Some(id) = node.subtree_id() {
                self.list_tree(&self.load_tree(&id)?, &path, out)?;
            }
        }
        Ok(())
    }

    /// Restores a snapshot, or the entry at `sub_path` inside it, into `target`
    /// (created if missing; must be empty if it exists). The root's entries, or
    /// the one entry named by `sub_path`, appear directly inside `target`.
    pub fn restore(
        &self,
        snapshot: &SnapshotId,
        sub_path: Option<&Path>,
        target: &Path,
        progress: &dyn Progress,
    ) -> Result<RestoreReport> {
        let resolved = self.resolve(snapshot, sub_path)?;
        match fs::symlink_metadata(target) {
            Ok(meta) => {
                let empty = meta.is_dir()
                    && fs::read_dir(target)
                        .map_err(Error::io(target))?
                        .next()
                        .is_none();
                if !empty {
                    return Err(Error::TargetNotEmpty(target.to_path_buf()));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir_all(target).map_err(Error::io(target))?;
            }
            Err(e) => return Err(Error::io(target)(e)),
        }
        let mut planner = Planner {
            repo: self,
            progress,
            plan: DataPlan::default(),
            file_nodes: Vec::new(),
            dirs: Vec::new(),
            report: RestoreReport::default(),
        };
        match resolved {
            Resolved::Root(tree) => {
                for node in &tree.nodes {
                    planner.node(target, node)?;
                }
            }
            Resolved::Node(node) => planner.node(target, &node)?,
        }
        let Planner {
            plan,
            file_nodes,
            dirs,
            mut report,
            ..
        } = planner;
        let n_threads = std::thread::available_parallelism().map_or(1, usize::from);
        crate::restore_data::fetch_and_write(self, &plan, n_threads, progress)?;
        // Metadata last: writing content changes mtimes, and a read-only
        // directory must be filled before it is closed. Directories are in
        // post-order, children before parents.
        for (path, node) in plan.files.iter().zip(&file_nodes) {
            set_metadata(path, node)?;
        }
        for (path, node) in &dirs {
            set_metadata(path, node)?;
        }
        report.n_dirs = dirs.len() as u64;
        Ok(report)
    }
}

/// Owner (where permitted), permissions, then modification time. Owner before
/// mode: chown clears setuid and setgid bits.
fn set_metadata(path: &Path, node: &Node) -> Result<()> {
    restore_owner(path, node)?;
    fs::set_permissions(path, fs::Permissions::from_mode(node.mode)).map_err(Error::io(path))?;
    let mtime = FileTime::from_unix_time(node.mtime_secs, node.mtime_nanos);
    filetime::set_file_mtime(path, mtime).map_err(Error::io(path))
}

/// Restores ownership where the process may (as root); elsewhere the files
/// stay owned by the restoring user, as with restic and borg.
fn restore_owner(path: &Path, node: &Node) -> Result<()> {
    match std::os::unix::fs::lchown(path, Some(node.uid), Some(node.gid)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Ok(()),
        Err(e) => Err(Error::io(path)(e)),
    }
}

/// Walks the trees: creates directories, symlinks and files (at their final
/// size, empty), and collects where every chunk goes.
struct Planner<'a> {
    repo: &'a Repository,
    progress: &'a dyn Progress,
    plan: DataPlan,
    /// Metadata of `plan.files`, same order (content lists dropped).
    file_nodes: Vec<Node>,
    /// Directories in post-order, with their metadata.
    dirs: Vec<(PathBuf, Node)>,
    report: RestoreReport,
}

impl Planner<'_> {
    fn node(&mut self, dir: &Path, node: &Node) -> Result<()> {
        if self.progress.is_cancelled() {
            return Err(Error::Cancelled);
        }
        // Names come from validated trees; checked again here because this is
        // the line that keeps restore inside its target.
        if !crate::tree::is_valid_name(&node.name) {
            return Err(Error::integrity("tree blob"));
        }
        let path = dir.join(OsStr::from_bytes(&node.name));
        let metadata_only = || Node {
            content: Vec::new(),
            ..node.clone()
        };
        match node.kind {
            NodeKind::Dir => {
                fs::create_dir(&path).map_err(Error::io(&path))?;
                let id = node
                    .subtree_id()
                    .ok_or_else(|| Error::integrity("tree blob"))?;
                let tree = self.repo.load_tree(&id)?;
                for child in &tree.nodes {
                    self.node(&path, child)?;
                }
                self.dirs.push((path, metadata_only()));
            }
            NodeKind::File => {
                self.progress.file(&path, node.size);
                let file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(Error::io(&path))?;
                let file_idx = self.plan.files.len();
                let mut offset = 0u64;
                for id in node.chunks() {
                    offset += self
                        .plan
                        .add(self.repo, id, Destination { file_idx, offset })?;
                }
                if offset != node.size {
                    return Err(Error::integrity("tree blob"));
                }
                // Final size now: chunks land with positional writes, and
                // chunks never written (all zeros) stay holes.
                file.set_len(node.size).map_err(Error::io(&path))?;
                self.plan.files.push(path);
                self.file_nodes.push(metadata_only());
                self.report.n_files += 1;
                self.report.bytes_written += node.size;
            }
            NodeKind::Symlink => {
                std::os::unix::fs::symlink(OsStr::from_bytes(&node.link_target), &path)
                    .map_err(Error::io(&path))?;
                restore_owner(&path, node)?;
                let mtime = FileTime::from_unix_time(node.mtime_secs, node.mtime_nanos);
                filetime::set_symlink_file_times(&path, mtime, mtime).map_err(Error::io(&path))?;
                self.report.n_symlinks += 1;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use cairn_pack::BlobKind;
    use cairn_store::{MemoryStore, Namespace};

    use super::*;
    use crate::packer::Packer;
    use crate::pipeline::{NewBlob, seal_blob};
    use crate::repo::{InitOptions, object};
    use crate::snapshot::{Snapshot, SnapshotSummary};

    fn file_node(name: &[u8]) -> Node {
        Node {
            name: name.to_vec(),
            kind: NodeKind::File,
            mode: 0o644,
            mtime_secs: 0,
            mtime_nanos: 0,
            ctime_secs: 0,
            ctime_nanos: 0,
            inode: 0,
            uid: 0,
            gid: 0,
            size: 0,
            link_target: Vec::new(),
            content: Vec::new(),
            subtree: None,
        }
    }

    /// Writes a snapshot whose root is `root`, bypassing the backup walk (and so
    /// the validation a real backup gets), as a malicious writer could.
    fn forge_snapshot(repo: &mut Repository, root: &Tree) -> SnapshotId {
        let mut packer = Packer::new(
            repo.store.clone(),
            repo.keys.metadata.clone(),
            repo.config.pack_target_size,
            None,
            crate::pipeline::BufferPool::new(),
        );
        let bytes = root.encode();
        let id = repo.keys.chunk_id.id_of(&bytes);
        let blob = NewBlob {
            kind: BlobKind::Tree,
            id,
            buffer: cairn_crypto::SealBuffer::from_plaintext(&bytes),
        };
        let sealed = seal_blob(&repo.keys.data, &repo.keys.metadata, blob).expect("seal");
        packer
            .add_sealed(sealed.kind, sealed.id, sealed.sealed, sealed.plain_len)
            .expect("add tree");
        let (index, _) = packer.finish().expect("finish");
        repo.index.merge(&index);
        let snapshot = Snapshot {
            time_secs: 0,
            time_nanos: 0,
            host: String::new(),
            paths: Vec::new(),
            tags: Vec::new(),
            root: *id.as_bytes(),
            summary: SnapshotSummary::default(),
        };
        let sealed = snapshot.seal(&repo.keys.metadata).expect("seal");
        let snapshot_id = SnapshotId::of_bytes(&sealed);
        repo.store
            .put(
                &object(Namespace::Snapshots, &snapshot_id.to_hex()).expect("name"),
                &sealed,
            )
            .expect("put");
        snapshot_id
    }

    #[test]
    fn restore_never_writes_outside_its_target() {
        let store = Arc::new(MemoryStore::new());
        let (mut repo, _key) = Repository::init(store, &InitOptions::default()).expect("init");
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("inner").join("target");
        fs::create_dir_all(&target).expect("mkdir");
        for evil in [&b".."[..], b"../escape", b"/etc/passwd", b"a/../../x", b"."] {
            let root = Tree {
                nodes: vec![file_node(evil)],
            };
            let id = forge_snapshot(&mut repo, &root);
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
        let id = forge_snapshot(&mut repo, &dup);
        let err = repo
            .restore(&id, None, &target, &crate::NoProgress)
            .unwrap_err();
        assert!(err.is_integrity(), "{err}");
    }
}
