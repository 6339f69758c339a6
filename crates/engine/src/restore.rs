//! Restore: recreate a snapshot (or a sub-path of it) in a directory, and look
//! things up inside snapshots.
//!
//! **Invariant:** restore writes only inside its target. The target must be new
//! or empty; every name comes from a validated tree (no `.`, `..`, `/`, NUL, no
//! duplicates), so no path can climb out or pass through a restored symlink.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path};

use cairn_crypto::SnapshotId;
use filetime::FileTime;

use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::repo::Repository;
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
        let mut report = RestoreReport::default();
        let mut restorer = Restorer {
            repo: self,
            progress,
            report: &mut report,
        };
        match resolved {
            Resolved::Root(tree) => {
                for node in &tree.nodes {
                    restorer.node(target, node)?;
                }
            }
            Resolved::Node(node) => restorer.node(target, &node)?,
        }
        Ok(report)
    }
}

struct Restorer<'a> {
    repo: &'a Repository,
    progress: &'a dyn Progress,
    report: &'a mut RestoreReport,
}

impl Restorer<'_> {
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
        let mtime = FileTime::from_unix_time(node.mtime_secs, node.mtime_nanos);
        self.create(&path, node, mtime)
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

    fn create(&mut self, path: &Path, node: &Node, mtime: FileTime) -> Result<()> {
        match node.kind {
            NodeKind::Dir => {
                fs::create_dir(path).map_err(Error::io(path))?;
                let id = node
                    .subtree_id()
                    .ok_or_else(|| Error::integrity("tree blob"))?;
                let tree = self.repo.load_tree(&id)?;
                for child in &tree.nodes {
                    self.node(path, child)?;
                }
                // Owner, permissions and time after the children: a read-only
                // directory must be filled first, and filling it changes its mtime.
                Self::restore_owner(path, node)?;
                fs::set_permissions(path, fs::Permissions::from_mode(node.mode))
                    .map_err(Error::io(path))?;
                filetime::set_file_mtime(path, mtime).map_err(Error::io(path))?;
                self.report.n_dirs += 1;
            }
            NodeKind::File => {
                self.progress.file(path, node.size);
                self.file(path, node)?;
                // Owner before mode: chown clears setuid/setgid bits.
                Self::restore_owner(path, node)?;
                fs::set_permissions(path, fs::Permissions::from_mode(node.mode))
                    .map_err(Error::io(path))?;
                filetime::set_file_mtime(path, mtime).map_err(Error::io(path))?;
                self.report.n_files += 1;
            }
            NodeKind::Symlink => {
                std::os::unix::fs::symlink(OsStr::from_bytes(&node.link_target), path)
                    .map_err(Error::io(path))?;
                Self::restore_owner(path, node)?;
                filetime::set_symlink_file_times(path, mtime, mtime).map_err(Error::io(path))?;
                self.report.n_symlinks += 1;
            }
        }
        Ok(())
    }

    /// Writes a file's chunks; all-zero chunks become holes.
    fn file(&mut self, path: &Path, node: &Node) -> Result<()> {
        let mut file: File = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(Error::io(path))?;
        let mut written = 0u64;
        for id in node.chunks() {
            if self.progress.is_cancelled() {
                return Err(Error::Cancelled);
            }
            let chunk = self.repo.read_chunk(&id)?;
            if chunk.iter().all(|&b| b == 0) {
                file.seek(SeekFrom::Current(chunk.len() as i64))
                    .map_err(Error::io(path))?;
            } else {
                file.write_all(&chunk).map_err(Error::io(path))?;
            }
            written += chunk.len() as u64;
            self.progress.bytes(chunk.len() as u64);
        }
        if written != node.size {
            return Err(Error::integrity("tree blob"));
        }
        // Materialise a trailing hole. No fsync per file: a restore interrupted
        // by a crash is simply run again, and syncing each of thousands of small
        // files would dominate the restore's time.
        file.set_len(written).map_err(Error::io(path))?;
        self.report.bytes_written += written;
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
        );
        let bytes = root.encode();
        let id = repo.keys.chunk_id.id_of(&bytes);
        let blob = NewBlob {
            kind: BlobKind::Tree,
            id,
            plaintext: bytes,
        };
        let sealed = seal_blob(&repo.keys.data, &repo.keys.metadata, blob).expect("seal");
        packer
            .add_sealed(sealed.kind, sealed.id, &sealed.sealed, sealed.plain_len)
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
