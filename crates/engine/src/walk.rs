//! The backup walk: turns paths into tree nodes, reading only files that
//! changed since the parent snapshot, and decides which blobs are new.

use std::collections::HashSet;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use cairn_crypto::{ChunkId, SealBuffer};
use cairn_pack::BlobKind;

use crate::backup::unchanged_since;
use crate::error::{Error, Result};
use crate::pipeline::{BlobSink, NewBlob};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::snapshot::SnapshotSummary;
use crate::tree::{Node, NodeKind, Tree};

/// How many times a file that changes while being read is read again before it
/// is stored as last read, with a warning.
const MAX_READ_ATTEMPTS: usize = 3;

/// What the walk counted.
pub(crate) struct WalkOutcome {
    pub summary: SnapshotSummary,
    pub n_chunks: u64,
    pub n_files_unchanged: u64,
    pub warnings: Vec<String>,
}

pub(crate) struct Walk<'a, 's> {
    repo: &'a Repository,
    sink: BlobSink<'s>,
    progress: &'a dyn Progress,
    /// Blobs this backup has sent to the pipeline.
    claimed: HashSet<ChunkId>,
    outcome: WalkOutcome,
}

fn node_from_metadata(name: Vec<u8>, meta: &fs::Metadata) -> Node {
    Node {
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
    }
}

impl<'a, 's> Walk<'a, 's> {
    pub fn new(repo: &'a Repository, sink: BlobSink<'s>, progress: &'a dyn Progress) -> Self {
        Self {
            repo,
            sink,
            progress,
            claimed: HashSet::new(),
            outcome: WalkOutcome {
                summary: SnapshotSummary::default(),
                n_chunks: 0,
                n_files_unchanged: 0,
                warnings: Vec::new(),
            },
        }
    }

    pub fn into_parts(self) -> (BlobSink<'s>, WalkOutcome) {
        (self.sink, self.outcome)
    }

    fn warn(&mut self, message: String) {
        self.progress.warning(&message);
        self.outcome.warnings.push(message);
    }

    fn check_cancelled(&self) -> Result<()> {
        if self.progress.is_cancelled() {
            return Err(Error::Cancelled);
        }
        Ok(())
    }

    /// Sends a blob down the pipeline unless the repository or this backup
    /// already has it.
    fn store_blob(&mut self, kind: BlobKind, id: ChunkId, plaintext: &[u8]) -> Result<()> {
        if self.repo.index.contains(&id) || !self.claimed.insert(id) {
            return Ok(());
        }
        self.sink.submit(NewBlob {
            kind,
            id,
            buffer: SealBuffer::from_plaintext(plaintext),
        })
    }

    /// Stores a tree and returns its ID. When it equals the parent's version of
    /// the directory (`parent` = that tree and its ID, if known), the parent's
    /// blob is reused without encoding anything.
    pub fn store_tree(
        &mut self,
        tree: &Tree,
        parent: Option<(&Tree, Option<ChunkId>)>,
    ) -> Result<ChunkId> {
        if let Some((parent_tree, Some(parent_id))) = parent
            && parent_tree == tree
            && self.repo.index.contains(&parent_id)
        {
            return Ok(parent_id);
        }
        let bytes = tree.encode();
        let id = self.repo.keys.chunk_id.id_of(&bytes);
        self.store_blob(BlobKind::Tree, id, &bytes)?;
        Ok(id)
    }

    /// The node for `path`, or `None` if it is skipped (with a warning). Local
    /// I/O errors below the top level become warnings; repository errors always
    /// propagate.
    pub fn node(
        &mut self,
        path: &Path,
        name: Vec<u8>,
        parent: Option<&Node>,
        top_level: bool,
    ) -> Result<Option<Node>> {
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
        let mut node = node_from_metadata(name, &meta);
        let result = if file_type.is_dir() {
            node.kind = NodeKind::Dir;
            self.dir_tree(path, parent).map(|id| {
                node.subtree = Some(*id.as_bytes());
                self.outcome.summary.n_dirs += 1;
            })
        } else if file_type.is_file() {
            self.file(path, &mut node, &meta, parent)
        } else if file_type.is_symlink() {
            match fs::read_link(path) {
                Ok(target) if !target.as_os_str().is_empty() => {
                    node.kind = NodeKind::Symlink;
                    node.link_target = target.as_os_str().as_bytes().to_vec();
                    self.outcome.summary.n_symlinks += 1;
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

    fn dir_tree(&mut self, path: &Path, parent: Option<&Node>) -> Result<ChunkId> {
        let parent_id = parent
            .filter(|p| p.kind == NodeKind::Dir)
            .and_then(Node::subtree_id);
        let parent_tree = match parent_id {
            Some(id) => Some(self.repo.load_tree(&id)?),
            None => None,
        };
        let mut children: Vec<(Vec<u8>, PathBuf)> = Vec::new();
        for entry in fs::read_dir(path).map_err(Error::io(path))? {
            let entry = entry.map_err(Error::io(path))?;
            children.push((entry.file_name().as_bytes().to_vec(), entry.path()));
        }
        children.sort();
        let mut tree = Tree::default();
        for (name, child) in children {
            let parent_child = parent_tree.as_ref().and_then(|t| t.find(&name));
            if let Some(node) = self.node(&child, name, parent_child, false)? {
                tree.nodes.push(node);
            }
        }
        self.store_tree(&tree, parent_tree.as_ref().map(|t| (t, parent_id)))
    }

    /// Fills a file node: from the parent when unchanged, else by reading it.
    fn file(
        &mut self,
        path: &Path,
        node: &mut Node,
        meta: &fs::Metadata,
        parent: Option<&Node>,
    ) -> Result<()> {
        node.size = meta.len();
        if let Some(parent) = parent
            && unchanged_since(parent, node)
            && parent.chunks().all(|id| self.repo.index.contains(&id))
        {
            node.content.clone_from(&parent.content);
            self.outcome.n_files_unchanged += 1;
        } else {
            self.read_file(path, node)?;
        }
        self.outcome.summary.n_files += 1;
        self.outcome.summary.total_bytes += node.size;
        Ok(())
    }

    /// Reads and chunks a file, storing new chunks. If the file changes while
    /// being read (its size, mtime or ctime differ after reading, as seen on the
    /// open descriptor), it is read again; after the last attempt it is kept as
    /// read, with a warning, rather than silently stored as a torn mix.
    fn read_file(&mut self, path: &Path, node: &mut Node) -> Result<()> {
        for attempt in 1..=MAX_READ_ATTEMPTS {
            let file = fs::File::open(path).map_err(Error::io(path))?;
            let before = file.metadata().map_err(Error::io(path))?;
            self.progress.file(path, before.len());
            let mut stream = self.repo.chunkers.for_name(&node.name).stream(&file);
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
                self.store_blob(BlobKind::Data, id, chunk)?;
                self.outcome.n_chunks += 1;
                content.push(*id.as_bytes());
            }
            self.outcome.summary.bytes_read += size;
            let after = file.metadata().map_err(Error::io(path))?;
            let stable = after.len() == size
                && before.len() == size
                && (before.mtime(), before.mtime_nsec()) == (after.mtime(), after.mtime_nsec())
                && (before.ctime(), before.ctime_nsec()) == (after.ctime(), after.ctime_nsec());
            if stable || attempt == MAX_READ_ATTEMPTS {
                if !stable {
                    self.warn(format!(
                        "{} changed while being read {MAX_READ_ATTEMPTS} times; stored as last read",
                        path.display()
                    ));
                }
                // Record the metadata that goes with the bytes read, so the next
                // backup compares against what was actually stored.
                let name = std::mem::take(&mut node.name);
                *node = node_from_metadata(name, &after);
                node.size = size;
                node.content = content;
                return Ok(());
            }
        }
        Ok(())
    }
}
