//! The backup walk: turns a source's items into tree nodes, reading only
//! files that changed since the parent snapshot, and decides which blobs are
//! new and what is left out.
//!
//! The walk visits entries in a fixed order (the source's; the filesystem's
//! goes through directory descriptors, see `source/fs.rs`). Files to read go to file workers (several files are
//! read at once: a VM disk or an SSD serves parallel streams much faster than
//! one), and a directory's tree is built once all its files are back, in name
//! order, so the snapshot does not depend on timing. The walk does not wait
//! for one directory before it walks the next: up to [`MAX_PENDING`] files
//! and directories are in flight, and the oldest are finished first (which
//! ones depends only on counts, never on timing). Waiting per directory left
//! the workers idle between small directories.
//!
//! FIFOs, sockets and devices are left out with a warning and counted as
//! skipped (cairn backs up content; a chat app's data holds none of them);
//! given as a top-level path, one is an error rather than an empty snapshot.
//! A top-level symlink is stored as the link, not followed (as restic does).
//!
//! What is left out, and where it is decided: an item matching the backup's
//! excludes is not even looked at (nor anything under it); a flagged item
//! (`ephemeral`, `view_once`) is looked at, never opened or listed, and
//! reported. A file's class is its source's, else media when it or a
//! directory above it matches the repository's media rules.

use std::path::Path;

use cairn_chunker::StreamBuffer;
use cairn_crypto::{BlobId, BlobKind, SealBuffer};
use cairn_meta::{Node, NodeKind, SnapshotSummary, Tree};
use crossbeam_channel::{Receiver, bounded};

use crate::backup::buffers::BufferPool;
use crate::backup::pipeline::{BlobSender, BlobSink, NewBlob};
use crate::backup::policy::MediaPolicy;
use crate::backup::read::{
    Claimed, FileJob, FileQueue, FileRead, JobSource, Reading, SMALL_FILE_MAX, claim, read_file,
};
use crate::backup::{LeftOut, LeftOutReason};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::restore::MAX_TREE_DEPTH;
use crate::rules::PathRules;
use crate::source::{Class, Item, ItemKind, Source, Status};

/// What the walk counted.
#[derive(Default)]
pub(crate) struct WalkOutcome {
    pub summary: SnapshotSummary,
    pub n_chunks: u64,
    pub n_files_unchanged: u64,
    /// Entries left out of the snapshot (unreadable, vanished, special).
    pub n_skipped: u64,
    /// Items left out by rule (flags), not by error.
    pub left_out: Vec<LeftOut>,
    pub warnings: Vec<String>,
}

pub(crate) struct Walk<'a, 's, S: Source> {
    repo: &'a Repository,
    source: &'a S,
    /// What the backup leaves out (its excludes), if anything.
    exclude: Option<&'a PathRules>,
    /// The repository's retention, as it bears on media, if any.
    policy: Option<&'a MediaPolicy>,
    sink: BlobSink<'s>,
    progress: &'a dyn Progress,
    /// Blobs this backup has sent to the pipeline (shared with file workers).
    claimed: &'a Claimed,
    /// File workers' queues; `None` reads files on the walk's thread.
    files: Option<FileQueue<S::Entry>>,
    /// Recycled blob buffers.
    pool: BufferPool,
    /// The read window when files are read on the walk's thread.
    window: StreamBuffer,
    /// Directories open above the current entry.
    depth: usize,
    /// Entries started and not yet finished (see [`MAX_PENDING`]).
    pending: usize,
    /// Entries held by started directories (see [`MAX_HELD`]).
    held: usize,
    /// The directories being walked, outermost first.
    levels: Vec<Level>,
    outcome: WalkOutcome,
}

/// Entries the walk has started but not finished, at most: files handed to
/// a worker and directories walked whose trees are not stored yet. Enough to
/// keep every worker busy across many small directories (the walk does not
/// wait for one directory's files before it walks the next), few enough to
/// bound memory and the directory descriptors that queued files hold open.
const MAX_PENDING: usize = 256;
/// Entries (nodes, and the parent snapshot's nodes kept to compare with)
/// held by directories started and not finished, at most, beyond those of
/// the directories on the walk's current path: a daily backup, which reuses
/// most entries at once, must not hold the whole history.
const MAX_HELD: usize = 4096;

/// A child entry: ready, waiting for a file worker, a directory walked whose
/// tree is not stored yet, or skipped.
enum Child {
    Ready(Node),
    Reading(Node, Receiver<Result<FileRead>>),
    Dir(Node, Box<PendingDir>),
    Skipped,
}

/// A directory walked: its entries started, its tree to be built and stored
/// once they are finished.
struct PendingDir {
    path: std::path::PathBuf,
    parent_tree: Option<Tree>,
    parent_id: Option<BlobId>,
    children: Vec<Child>,
}

/// An item's class: its source's, else media when it or a directory above
/// it matches the repository's media rules, else message. The walk and the
/// quota plan decide it here, the same way.
pub(super) fn class_of(repo: &Repository, item: &Item, place: Place<'_>, name: &[u8]) -> Class {
    if repo.config().format == cairn_meta::Format::V1 {
        // A format-1 tree has no classes: every node is a message.
        return Class::Message;
    }
    match item.class {
        Some(class) => class,
        None if place.media || repo.media_rules().matches_in(place.dir, name) => Class::Media,
        None => Class::Message,
    }
}

/// Where an entry is, for the rules: the path of the directory it is in,
/// below the top-level item (`None` for a top-level item itself, which
/// only name patterns match; empty directly below one), and whether a
/// directory above it is media.
#[derive(Clone, Copy)]
pub(super) struct Place<'p> {
    pub dir: Option<&'p [u8]>,
    pub media: bool,
}

/// The path below the top-level item of the entry `name` at `place`, as
/// its own children's `dir` (empty for a top-level item).
pub(super) fn own_relative(place: Place<'_>, name: &[u8]) -> Vec<u8> {
    match place.dir {
        None => Vec::new(),
        Some([]) => name.to_vec(),
        Some(dir) => [dir, b"/", name].concat(),
    }
}

/// The entries of a directory being walked, how many of them from the start
/// are finished already, and how many from the start are not directories
/// waiting to be finished.
struct Level {
    children: Vec<Child>,
    finished: usize,
    no_dirs_before: usize,
}

fn node_from_status(name: Vec<u8>, status: &Status) -> Node {
    Node {
        mode: status.mode & 0o7777,
        mtime_secs: status.mtime.0,
        mtime_nanos: status.mtime.1.min(999_999_999),
        ctime_secs: status.ctime.0,
        ctime_nanos: status.ctime.1.min(999_999_999),
        inode: status.inode,
        uid: status.uid,
        gid: status.gid,
        ..Node::new(name, NodeKind::File)
    }
}

/// `dir/name` for messages.
pub(super) fn join(dir: &Path, name: &[u8]) -> std::path::PathBuf {
    use std::os::unix::ffi::OsStrExt;
    dir.join(std::ffi::OsStr::from_bytes(name))
}

/// A directory's tree blob, if it fits the format's limit on a blob; a larger
/// directory (hundreds of thousands of entries) is a local error naming it,
/// so the walk leaves it out with a warning instead of failing the backup.
fn encode_tree(tree: &Tree, format: cairn_meta::Format, path: &Path) -> Result<Vec<u8>> {
    let bytes = tree.encode(format);
    if bytes.len() > cairn_pack::MAX_BLOB_PLAIN_LEN as usize {
        return Err(Error::io(path)(std::io::Error::other(format!(
            "directory too large to store: {} entries, a {} MiB tree (the limit is {} MiB)",
            tree.nodes.len(),
            bytes.len() >> 20,
            cairn_pack::MAX_BLOB_PLAIN_LEN >> 20
        ))));
    }
    Ok(bytes)
}

/// Whether a file may reuse its parent's chunk list without being read: same
/// size, modification time, status-change time and inode (restic's rule; ctime
/// catches writes that restore the mtime).
fn unchanged_since(parent: &Node, current: &Node) -> bool {
    parent.kind == NodeKind::File
        && current.kind == NodeKind::File
        && parent.size == current.size
        && (parent.mtime_secs, parent.mtime_nanos) == (current.mtime_secs, current.mtime_nanos)
        && (parent.ctime_secs, parent.ctime_nanos) == (current.ctime_secs, current.ctime_nanos)
        && parent.inode == current.inode
}

/// Runs file jobs until the queue closes: the body of a file worker.
pub(crate) fn file_worker<S: Source>(
    source: &S,
    cx: &Reading<'_>,
    jobs: JobSource<S::Entry>,
    mut blobs: BlobSender,
) {
    let mut window = StreamBuffer::default();
    while let Some(job) = jobs.next() {
        let mut submit = |blob, file_size| blobs.send(blob, file_size);
        let result = read_file(source, &job, cx, &mut window, &mut submit);
        // The walk hung up: it failed and is unwinding.
        if job.reply.send(result).is_err() {
            return;
        }
        // A small-file worker that met a large file (it grew after it was
        // looked at) gives the large window back rather than keep it.
        if jobs.small_only() && window.allocated() > 2 * SMALL_FILE_MAX as usize {
            window = StreamBuffer::default();
        }
    }
}

impl<'a, 's, S: Source> Walk<'a, 's, S> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        repo: &'a Repository,
        source: &'a S,
        (exclude, policy): (Option<&'a PathRules>, Option<&'a MediaPolicy>),
        sink: BlobSink<'s>,
        progress: &'a dyn Progress,
        claimed: &'a Claimed,
        files: Option<FileQueue<S::Entry>>,
        pool: BufferPool,
    ) -> Self {
        Self {
            pool,
            window: StreamBuffer::default(),
            repo,
            source,
            exclude,
            policy,
            sink,
            progress,
            claimed,
            files,
            depth: 0,
            pending: 0,
            held: 0,
            levels: Vec::new(),
            outcome: WalkOutcome::default(),
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

    /// Stores a tree and returns its ID. When it equals the parent's version of
    /// the directory (`parent` = that tree and its ID, if known), the parent's
    /// blob is reused without encoding anything.
    pub fn store_tree(
        &mut self,
        tree: &Tree,
        parent: Option<(&Tree, Option<BlobId>)>,
        path: &Path,
    ) -> Result<BlobId> {
        if let Some((parent_tree, Some(parent_id))) = parent
            && parent_tree == tree
            && self.repo.blobs().confirm(BlobKind::Tree, &parent_id)?
        {
            return Ok(parent_id);
        }
        let bytes = encode_tree(tree, self.repo.config().format, path)?;
        let id = self.repo.keys().blob_ids.id_of(BlobKind::Tree, &bytes);
        if claim(self.repo, self.claimed, BlobKind::Tree, id)? {
            self.sink.submit(NewBlob {
                kind: BlobKind::Tree,
                id,
                buffer: SealBuffer::from_plaintext(&bytes),
                compress: true,
            })?;
        }
        Ok(id)
    }

    /// The node for a top-level item (waiting for it if it is a file).
    pub fn top_level(
        &mut self,
        root: crate::source::Root<S::Entry>,
        parent: Option<&Node>,
    ) -> Result<Option<Node>> {
        // The roots of one whole (a frontend's list) are entries like any
        // other: rules match them, and one that fails is skipped.
        let whole = self.source.one_whole();
        let place = Place {
            dir: whole.then_some(&b""[..]),
            media: false,
        };
        if whole
            && self
                .exclude
                .is_some_and(|rules| rules.matches_in(place.dir, &root.name))
        {
            return Ok(None);
        }
        let child = self.child(root.entry, &root.display, place, root.name, parent, !whole)?;
        self.finish_child(child, !whole)
    }

    /// Turns a child into its final node: waits for a file worker, or
    /// finishes a directory's entries and stores its tree. Local I/O errors
    /// below the top level become warnings.
    fn finish_child(&mut self, child: Child, top_level: bool) -> Result<Option<Node>> {
        let (mut node, reply) = match child {
            Child::Ready(node) => return Ok(Some(node)),
            Child::Skipped => return Ok(None),
            Child::Reading(node, reply) => (node, reply),
            Child::Dir(mut node, dir) => {
                self.pending -= 1;
                return match self.finish_dir(*dir) {
                    Ok(id) => {
                        node.subtree = Some(id);
                        self.outcome.summary.n_dirs += 1;
                        Ok(Some(node))
                    }
                    Err(e) => self.skip_unreadable(e, top_level).map(|()| None),
                };
            }
        };
        self.pending -= 1;
        match reply.recv().map_err(|_| Error::PipelineStopped)? {
            Ok(read) => {
                self.apply_read(&mut node, read);
                Ok(Some(node))
            }
            Err(e) => self.skip_unreadable(e, top_level).map(|()| None),
        }
    }

    /// Counts a file of the snapshot, read or reused.
    fn count_file(&mut self, size: u64) {
        self.outcome.summary.n_files += 1;
        self.outcome.summary.total_bytes += size;
    }

    /// The rule for local errors: below the top level, an entry that cannot be
    /// read is skipped with a warning (`Ok`); at the top level, and for
    /// anything but a local I/O error, the backup fails.
    fn skip_unreadable(&mut self, error: Error, top_level: bool) -> Result<()> {
        match error {
            Error::Io { path, source } if !top_level => {
                self.outcome.n_skipped += 1;
                self.warn(format!("skipped {}: {source}", path.display()));
                Ok(())
            }
            other => Err(other),
        }
    }

    /// Records a file's content and the status that goes with the bytes read,
    /// so the next backup compares against what was actually stored.
    fn apply_read(&mut self, node: &mut Node, read: FileRead) {
        if let Some(status) = &read.status {
            let name = std::mem::take(&mut node.name);
            let class = node.class;
            *node = node_from_status(name, status);
            node.class = class;
        }
        node.size = read.size;
        node.content = read.content;
        self.outcome.summary.bytes_read += read.bytes_read;
        self.outcome.n_chunks += read.n_chunks;
        self.count_file(read.size);
        if let Some(w) = read.warning {
            self.warn(w);
        }
    }

    /// Starts on one entry: directories are walked now, unchanged files reuse
    /// the parent's chunks, other files are read (by a worker when there are
    /// workers), flagged items are left out unopened. Local I/O errors below
    /// the top level become warnings; repository errors always propagate.
    /// `path` is for messages only; `place` is the entry's own.
    fn child(
        &mut self,
        entry: S::Entry,
        path: &Path,
        place: Place<'_>,
        name: Vec<u8>,
        parent: Option<&Node>,
        top_level: bool,
    ) -> Result<Child> {
        self.check_cancelled()?;
        let item = match self.source.look(&entry) {
            Ok(item) => item,
            Err(e) => {
                self.skip_unreadable(Error::io(path)(e), top_level)?;
                return Ok(Child::Skipped);
            }
        };
        let class = class_of(self.repo, &item, place, &name);
        if !item.flags.is_empty() {
            self.outcome.left_out.push(LeftOut {
                path: path.display().to_string(),
                class,
                size: item.status.size,
                reason: LeftOutReason::Flagged(item.flags),
            });
            return Ok(Child::Skipped);
        }
        let mut node = node_from_status(name, &item.status);
        let result = match item.kind {
            // Listing and restore walk no deeper: what they could not reach
            // is not stored.
            ItemKind::Dir if self.depth >= MAX_TREE_DEPTH => {
                Err(Error::io(path)(std::io::Error::other(format!(
                    "nested deeper than {MAX_TREE_DEPTH} directories; left out"
                ))))
            }
            ItemKind::Dir => {
                node.kind = NodeKind::Dir;
                let relative = own_relative(place, &node.name);
                let inside = Place {
                    dir: Some(&relative),
                    media: class == Class::Media,
                };
                self.depth += 1;
                let walked = self
                    .source
                    .list(&entry, &item)
                    .map_err(Error::io(path))
                    .and_then(|children| self.start_dir(children, path, inside, parent));
                self.depth -= 1;
                match walked {
                    Ok(dir) => {
                        self.pending += 1;
                        return Ok(Child::Dir(node, Box::new(dir)));
                    }
                    Err(e) => Err(e),
                }
            }
            ItemKind::File => {
                node.size = item.status.size;
                node.class = class;
                if class == Class::Media
                    && let Some(policy) = self.policy
                    && let Some(reason) = policy.leaves_out(&item, path)
                {
                    self.outcome.left_out.push(LeftOut {
                        path: path.display().to_string(),
                        class,
                        size: item.status.size,
                        reason,
                    });
                    return Ok(Child::Skipped);
                }
                let stamped = item.status.ctime != (0, 0) || item.status.inode != 0;
                if let Some(parent) = parent
                    && !item.always_read
                    && stamped
                    && unchanged_since(parent, &node)
                    && self.all_confirmed(parent)?
                {
                    node.content.clone_from(&parent.content);
                    self.progress.unchanged(node.size);
                    self.outcome.n_files_unchanged += 1;
                    self.count_file(node.size);
                    return Ok(Child::Ready(node));
                }
                return self.start_read(entry, path, item, node);
            }
            ItemKind::Symlink if !cairn_meta::is_valid_link_target(&item.link_target) => {
                Err(Error::io(path)(std::io::Error::other(
                    "a symlink target must be 1 to 4095 bytes without NUL",
                )))
            }
            ItemKind::Symlink => {
                node.kind = NodeKind::Symlink;
                node.link_target = item.link_target;
                self.outcome.summary.n_symlinks += 1;
                Ok(())
            }
            ItemKind::Other if top_level => {
                return Err(Error::InvalidInput(format!(
                    "{} is not a regular file, directory or symbolic link",
                    path.display()
                )));
            }
            ItemKind::Other => {
                self.outcome.n_skipped += 1;
                self.warn(format!(
                    "skipped {}: not a regular file, directory or symbolic link",
                    path.display()
                ));
                return Ok(Child::Skipped);
            }
        };
        match result {
            Ok(()) => Ok(Child::Ready(node)),
            Err(e) => self.skip_unreadable(e, top_level).map(|()| Child::Skipped),
        }
    }

    /// Whether every chunk of `node` is confirmed in the repository, so the
    /// file may reuse them without being read.
    fn all_confirmed(&self, node: &Node) -> Result<bool> {
        for id in node.chunks() {
            if !self.repo.blobs().confirm(BlobKind::Data, &id)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Reads a file: hands it to a worker, or reads it here without workers.
    /// The file is opened by whoever reads it, and must still be `expected`.
    fn start_read(
        &mut self,
        entry: S::Entry,
        path: &Path,
        expected: Item,
        node: Node,
    ) -> Result<Child> {
        let (reply, answer) = bounded(1);
        let size = expected.status.size;
        let job = FileJob {
            entry,
            path: path.to_path_buf(),
            expected,
            name: node.name.clone(),
            reply,
        };
        self.pending += 1;
        match &self.files {
            Some(files) => files.send(job, size)?,
            None => {
                let sink = &mut self.sink;
                let mut submit = |blob, _| sink.submit(blob);
                let cx = Reading {
                    repo: self.repo,
                    claimed: self.claimed,
                    progress: self.progress,
                    pool: &self.pool,
                };
                let read = read_file(self.source, &job, &cx, &mut self.window, &mut submit);
                job.reply.send(read).map_err(|_| Error::PipelineStopped)?;
            }
        }
        Ok(Child::Reading(node, answer))
    }

    /// Walks a directory's children (`path` for messages, `inside` their
    /// place):
    /// starts every entry (files to workers, subdirectories walked in turn)
    /// without waiting for them; [`Self::finish_dir`] later builds and
    /// stores its tree. What the excludes match is not even looked at.
    fn start_dir(
        &mut self,
        mut names: Vec<(Vec<u8>, S::Entry)>,
        path: &Path,
        inside: Place<'_>,
        parent: Option<&Node>,
    ) -> Result<PendingDir> {
        let parent_id = parent
            .filter(|p| p.kind == NodeKind::Dir)
            .and_then(Node::subtree_id);
        let parent_tree = match parent_id {
            Some(id) => match self.repo.load_tree(&id) {
                Ok(tree) => Some(tree),
                // A damaged parent tree costs the speed-up, never the backup.
                Err(e) if e.is_repository_damage() => {
                    self.warn(format!(
                        "{}: parent snapshot's tree is unreadable ({e}); reading every file",
                        path.display()
                    ));
                    None
                }
                Err(e) => return Err(e),
            },
            None => None,
        };
        // A tree must hold valid, sorted, distinct names, or no restore
        // could read it: a source that breaks that costs its bad entries
        // (checked in one pass; the filesystem's are always fine).
        let fine = names.iter().all(|(n, _)| cairn_meta::is_valid_name(n))
            && names.windows(2).all(|w| matches!(w, [a, b] if a.0 < b.0));
        if !fine {
            names.sort_by(|a, b| a.0.cmp(&b.0));
            let mut valid: Vec<(Vec<u8>, S::Entry)> = Vec::with_capacity(names.len());
            for (name, entry) in names {
                if !cairn_meta::is_valid_name(&name)
                    || valid.last().is_some_and(|(n, _)| *n == name)
                {
                    self.outcome.n_skipped += 1;
                    self.warn(format!(
                        "skipped {:?} in {}: not a valid name, or given twice",
                        String::from_utf8_lossy(&name),
                        path.display()
                    ));
                    continue;
                }
                valid.push((name, entry));
            }
            names = valid;
        }
        let n_parent = parent_tree.as_ref().map_or(0, |t| t.nodes.len());
        self.held += n_parent;
        self.levels.push(Level {
            children: Vec::with_capacity(names.len()),
            finished: 0,
            no_dirs_before: 0,
        });
        for (name, entry) in names {
            if self
                .exclude
                .is_some_and(|rules| rules.matches_in(inside.dir, &name))
            {
                continue;
            }
            let parent_child = parent_tree.as_ref().and_then(|t| t.find(&name));
            let child_path = join(path, &name);
            let started = self
                .child(entry, &child_path, inside, name, parent_child, false)
                .and_then(|child| {
                    if let Some(level) = self.levels.last_mut() {
                        level.children.push(child);
                        self.held += 1;
                    }
                    self.limit_pending()
                });
            if let Err(e) = started {
                // The walk fails: what this directory held goes with it.
                if let Some(level) = self.levels.pop() {
                    self.held = self.held.saturating_sub(level.children.len() + n_parent);
                }
                return Err(e);
            }
        }
        let children = self
            .levels
            .pop()
            .map(|level| level.children)
            .unwrap_or_default();
        Ok(PendingDir {
            path: path.to_path_buf(),
            parent_tree,
            parent_id,
            children,
        })
    }

    /// Finishes a walked directory's entries, in name order, and stores its
    /// tree.
    fn finish_dir(&mut self, dir: PendingDir) -> Result<BlobId> {
        let n_held = dir.children.len() + dir.parent_tree.as_ref().map_or(0, |t| t.nodes.len());
        let mut tree = Tree::default();
        for child in dir.children {
            tree.nodes.extend(self.finish_child(child, false)?);
        }
        self.held = self.held.saturating_sub(n_held);
        let parent = dir.parent_tree.as_ref().map(|t| (t, dir.parent_id));
        self.store_tree(&tree, parent, &dir.path)
    }

    /// Keeps at most [`MAX_PENDING`] entries started and [`MAX_HELD`]
    /// entries held: finishes the oldest ones (the first unfinished entries
    /// of the outermost directories being walked; a directory's entries are
    /// all started before it is finished, so these are). Which entries are
    /// finished depends only on counts, so the snapshot does not depend on
    /// timing.
    fn limit_pending(&mut self) -> Result<()> {
        loop {
            // Too much held: finish the oldest walked directory (a file in
            // flight holds one entry however long it takes; finishing files
            // would only make the walk wait).
            let oldest = if self.pending > MAX_PENDING {
                self.oldest_unfinished()
            } else if self.held > MAX_HELD {
                self.oldest_pending_dir()
            } else {
                return Ok(());
            };
            let Some((level_idx, child_idx)) = oldest else {
                return Ok(());
            };
            let Some(slot) = self
                .levels
                .get_mut(level_idx)
                .and_then(|level| level.children.get_mut(child_idx))
            else {
                return Ok(());
            };
            let child = std::mem::replace(slot, Child::Skipped);
            let finished = match self.finish_child(child, false)? {
                Some(node) => Child::Ready(node),
                None => Child::Skipped,
            };
            if let Some(slot) = self
                .levels
                .get_mut(level_idx)
                .and_then(|level| level.children.get_mut(child_idx))
            {
                *slot = finished;
            }
        }
    }

    /// Where the oldest walked, unfinished directory is: (level, index).
    fn oldest_pending_dir(&mut self) -> Option<(usize, usize)> {
        for (level_idx, level) in self.levels.iter_mut().enumerate() {
            while let Some(child) = level.children.get(level.no_dirs_before) {
                if matches!(child, Child::Dir(..)) {
                    return Some((level_idx, level.no_dirs_before));
                }
                level.no_dirs_before += 1;
            }
        }
        None
    }

    /// Where the oldest started, unfinished entry is: (level, index).
    fn oldest_unfinished(&mut self) -> Option<(usize, usize)> {
        for (level_idx, level) in self.levels.iter_mut().enumerate() {
            while let Some(child) = level.children.get(level.finished) {
                if matches!(child, Child::Reading(..) | Child::Dir(..)) {
                    return Some((level_idx, level.finished));
                }
                level.finished += 1;
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: one directory whose tree exceeded the blob limit (about
    /// 230,000 entries with long names) failed every backup as "blob too large
    /// for a pack"; now it is a local error naming the directory, which the
    /// walk turns into a skip with a warning.
    #[test]
    fn a_directory_too_large_for_one_tree_is_a_local_error_naming_it() {
        let node = |i: usize| {
            Node::new(
                format!("{}{i:08}", "n".repeat(240)).into_bytes(),
                NodeKind::File,
            )
        };
        let small = Tree {
            nodes: (0..10).map(node).collect(),
        };
        assert!(encode_tree(&small, cairn_meta::Format::V2, Path::new("/x")).is_ok());
        let huge = Tree {
            nodes: (0..260_000).map(node).collect(),
        };
        let err = encode_tree(&huge, cairn_meta::Format::V2, Path::new("/data/cache")).unwrap_err();
        assert!(matches!(&err, Error::Io { path, .. } if path == Path::new("/data/cache")));
        assert!(err.to_string().contains("too large"), "{err}");
    }
}
