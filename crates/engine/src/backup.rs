//! Backup: walk the given paths, chunk files, store new chunks and trees, then
//! commit by writing the snapshot file (the only commit point).

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use cairn_crypto::{ChunkId, SnapshotId};
use cairn_pack::BlobKind;
use cairn_store::Namespace;

use crate::error::{Error, Result};
use crate::packer::Packer;
use crate::progress::Progress;
use crate::repo::{Repository, object};
use crate::snapshot::{Snapshot, SnapshotSummary};
use crate::tree::{Node, NodeKind, Tree};

/// Options of [`Repository::backup`].
#[derive(Clone, Debug, Default)]
pub struct BackupOptions {
    /// Host name recorded in the snapshot.
    pub host: String,
    /// Tags recorded in the snapshot.
    pub tags: Vec<String>,
    /// Snapshot time; `None` means now.
    pub time: Option<SystemTime>,
}

/// What a backup did.
#[derive(Clone, Debug)]
pub struct BackupReport {
    /// The new snapshot.
    pub snapshot_id: SnapshotId,
    /// Its totals (also stored in the snapshot).
    pub summary: SnapshotSummary,
    /// Chunks of file content seen.
    pub n_chunks: u64,
    /// Blobs (chunks and trees) new to the repository.
    pub n_blobs_new: u64,
    /// Pack files written.
    pub n_packs_written: u64,
    /// Entries skipped, with the reason (special files, unreadable entries).
    pub warnings: Vec<String>,
}

struct Walk<'a> {
    repo: &'a Repository,
    packer: Packer,
    progress: &'a dyn Progress,
    summary: SnapshotSummary,
    n_chunks: u64,
    warnings: Vec<String>,
}

impl Repository {
    /// Backs up `paths` into a new snapshot. Each path becomes one entry of the
    /// snapshot's root, named by its last component.
    pub fn backup(
        &mut self,
        paths: &[PathBuf],
        options: &BackupOptions,
        progress: &dyn Progress,
    ) -> Result<BackupReport> {
        let time = options.time.unwrap_or_else(SystemTime::now);
        let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
        let mut names = Vec::with_capacity(paths.len());
        for path in paths {
            // Absolute without resolving a final symlink (a symlink given as a
            // path is backed up as a symlink); `..` and `/`-ending forms have no
            // final name until canonicalized.
            let mut absolute = std::path::absolute(path).map_err(Error::io(path))?;
            if absolute.file_name().is_none() {
                absolute = fs::canonicalize(path).map_err(Error::io(path))?;
            }
            let name = absolute
                .file_name()
                .ok_or_else(|| Error::InvalidInput(format!("cannot back up {}", path.display())))?
                .as_bytes()
                .to_vec();
            if names.iter().any(|(n, _)| *n == name) {
                return Err(Error::InvalidInput(format!(
                    "two paths share the name {:?}",
                    String::from_utf8_lossy(&name)
                )));
            }
            names.push((name, absolute));
        }
        if names.is_empty() {
            return Err(Error::InvalidInput("no paths to back up".into()));
        }
        let absolute_paths = names.iter().map(|(_, p)| p.display().to_string()).collect();

        let packer = Packer::new(
            self.store.clone(),
            self.keys.data.clone(),
            self.keys.metadata.clone(),
            self.config.pack_target_size,
        );
        let mut walk = Walk {
            repo: self,
            packer,
            progress,
            summary: SnapshotSummary::default(),
            n_chunks: 0,
            warnings: Vec::new(),
        };
        let mut root = Tree::default();
        for (name, path) in names {
            // The top-level paths must be readable: failing them is an error, not
            // a warning.
            let node = walk.node(&path, name, true)?;
            root.nodes.extend(node);
        }
        root.sort();
        let root_id = walk.store_tree(&root)?;
        let Walk {
            packer,
            mut summary,
            n_chunks,
            warnings,
            ..
        } = walk;
        let (new_index, totals) = packer.finish()?;
        summary.bytes_new = totals.bytes_new;
        summary.bytes_stored = totals.bytes_stored;

        let mut snapshot = Snapshot {
            time_secs: i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX),
            time_nanos: since_epoch.subsec_nanos(),
            host: options.host.clone(),
            paths: absolute_paths,
            tags: options.tags.clone(),
            root: *root_id.as_bytes(),
            summary,
        };
        // The snapshot's own size counts as stored; its size barely depends on
        // the number, so seal once to measure, then seal the final version.
        let probe = snapshot.seal(&self.keys.metadata)?;
        snapshot.summary.bytes_stored += probe.len() as u64;
        let sealed = snapshot.seal(&self.keys.metadata)?;
        let snapshot_id = SnapshotId::of_bytes(&sealed);
        self.store.put(
            &object(Namespace::Snapshots, &snapshot_id.to_hex())?,
            &sealed,
        )?;
        self.index.merge(&new_index);
        Ok(BackupReport {
            snapshot_id,
            summary: snapshot.summary,
            n_chunks,
            n_blobs_new: totals.n_blobs_new,
            n_packs_written: totals.n_packs,
            warnings,
        })
    }
}

impl Walk<'_> {
    fn warn(&mut self, message: String) {
        self.progress.warning(&message);
        self.warnings.push(message);
    }

    fn check_cancelled(&self) -> Result<()> {
        if self.progress.is_cancelled() {
            return Err(Error::Cancelled);
        }
        Ok(())
    }

    /// Stores a tree blob (if new) and returns its ID.
    fn store_tree(&mut self, tree: &Tree) -> Result<ChunkId> {
        let bytes = tree.encode();
        let id = self.repo.keys.chunk_id.id_of(&bytes);
        if !self.repo.index.contains(&id) {
            self.packer.add(BlobKind::Tree, id, &bytes)?;
        }
        Ok(id)
    }

    /// The node for `path`, or `None` if it is skipped (with a warning).
    /// Local I/O errors below the top level become warnings; repository errors
    /// always propagate.
    fn node(&mut self, path: &Path, name: Vec<u8>, top_level: bool) -> Result<Option<Node>> {
        self.check_cancelled()?;
        let meta = match fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if !top_level => {
                self.warn(format!("skipped {}: {e}", path.display()));
                return Ok(None);
            }
            Err(e) => return Err(Error::io(path)(e)),
        };
        let file_type = meta.file_type();
        let mut node = Node {
            name,
            kind: NodeKind::File,
            mode: meta.mode() & 0o7777,
            mtime_secs: meta.mtime(),
            mtime_nanos: u32::try_from(meta.mtime_nsec()).unwrap_or(0),
            ctime_secs: meta.ctime(),
            ctime_nanos: u32::try_from(meta.ctime_nsec()).unwrap_or(0),
            inode: meta.ino(),
            uid: meta.uid(),
            gid: meta.gid(),
            size: 0,
            link_target: Vec::new(),
            content: Vec::new(),
            subtree: None,
        };
        let result = if file_type.is_dir() {
            node.kind = NodeKind::Dir;
            self.dir_tree(path).map(|id| {
                node.subtree = Some(*id.as_bytes());
                self.summary.n_dirs += 1;
            })
        } else if file_type.is_file() {
            self.file_content(path).map(|(content, size)| {
                node.content = content;
                node.size = size;
                self.summary.n_files += 1;
                self.summary.total_bytes += size;
            })
        } else if file_type.is_symlink() {
            match fs::read_link(path) {
                Ok(target) if !target.as_os_str().is_empty() => {
                    node.kind = NodeKind::Symlink;
                    node.link_target = target.as_os_str().as_bytes().to_vec();
                    self.summary.n_symlinks += 1;
                    Ok(())
                }
                Ok(_) => Err(Error::InvalidInput("empty symlink target".into())),
                Err(e) => Err(Error::io(path)(e)),
            }
        } else {
            self.warn(format!("skipped special file {}", path.display()));
            return Ok(None);
        };
        match result {
            Ok(()) => Ok(Some(node)),
            Err(Error::Io { path: p, source }) if !top_level => {
                self.warn(format!("skipped {}: {source}", p.display()));
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn dir_tree(&mut self, path: &Path) -> Result<ChunkId> {
        let mut children: Vec<(Vec<u8>, PathBuf)> = Vec::new();
        for entry in fs::read_dir(path).map_err(Error::io(path))? {
            let entry = entry.map_err(Error::io(path))?;
            children.push((entry.file_name().as_bytes().to_vec(), entry.path()));
        }
        children.sort();
        let mut tree = Tree::default();
        for (name, child) in children {
            if let Some(node) = self.node(&child, name, false)? {
                tree.nodes.push(node);
            }
        }
        self.store_tree(&tree)
    }

    /// Chunks a file, storing new chunks. Returns its chunk list and the number
    /// of bytes read.
    fn file_content(&mut self, path: &Path) -> Result<(Vec<[u8; 32]>, u64)> {
        let file = fs::File::open(path).map_err(Error::io(path))?;
        let size_hint = file.metadata().map(|m| m.len()).unwrap_or(0);
        self.progress.file(path, size_hint);
        let mut stream = self.repo.chunker.stream(file);
        let mut content = Vec::new();
        let mut size = 0u64;
        loop {
            self.check_cancelled()?;
            let chunk = match stream.next_chunk() {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(cairn_chunker::Error::Io(e)) => return Err(Error::io(path)(e)),
                Err(e) => return Err(e.into()),
            };
            let id = self.repo.keys.chunk_id.id_of(chunk);
            size += chunk.len() as u64;
            self.progress.bytes(chunk.len() as u64);
            if !self.repo.index.contains(&id) {
                self.packer.add(BlobKind::Data, id, chunk)?;
            }
            self.n_chunks += 1;
            content.push(*id.as_bytes());
        }
        self.summary.bytes_read += size;
        Ok((content, size))
    }
}
