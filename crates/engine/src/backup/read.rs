//! Reading one source file: large sequential reads, chunking, keyed hashing,
//! and handing new chunks to the pipeline. Runs on the walk's thread or on a
//! file worker; it shares only the set of claimed blobs with other readers.
//!
//! A file that changes while it is read (size, mtime or ctime differ between
//! the reader's status before and after, where the source can tell) is
//! opened and read again, up to [`MAX_READ_ATTEMPTS`] times, then kept as
//! last read with a warning: never silently stored as a torn mix.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Mutex;

use cairn_chunker::StreamBuffer;
use cairn_crypto::{BlobId, BlobKind, SealBuffer};

use crate::backup::buffers::BufferPool;
use crate::backup::pipeline::NewBlob;
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::source::{Item, Source, Status};

/// Reads before giving up on a file that keeps changing.
pub(crate) const MAX_READ_ATTEMPTS: usize = 3;

/// Blobs sent down the pipeline by this backup, by kind and ID, shared by
/// every reader.
pub(crate) type Claimed = Mutex<HashSet<(BlobKind, BlobId)>>;

/// Whether a blob should be stored: not confirmed in the repository (known
/// to the index, in a pack that exists and lists it), not yet claimed by
/// this backup.
pub(crate) fn claim(
    repo: &Repository,
    claimed: &Claimed,
    kind: BlobKind,
    id: BlobId,
) -> Result<bool> {
    if repo.blobs().confirm(kind, &id)? {
        return Ok(false);
    }
    Ok(claimed
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert((kind, id)))
}

/// What reading a file produced.
pub(crate) struct FileRead {
    /// Chunk IDs in order.
    pub content: Vec<BlobId>,
    /// Bytes read in the attempt kept.
    pub size: u64,
    /// The reader's status after the attempt kept, if the source tells.
    pub status: Option<Status>,
    /// Bytes read over all attempts.
    pub bytes_read: u64,
    /// Chunks read over all attempts.
    pub n_chunks: u64,
    /// Set when the file never stopped changing.
    pub warning: Option<String>,
}

/// One file for a worker: where it is (opened by the worker, and only if it
/// is still `expected`), its path for messages, its name (which picks the
/// chunker), and where the answer goes.
pub(crate) struct FileJob<E> {
    pub entry: E,
    pub path: PathBuf,
    pub expected: Item,
    pub name: Vec<u8>,
    pub reply: crossbeam_channel::Sender<Result<FileRead>>,
}

/// Files up to this size go to every file worker; larger ones only to the
/// general workers, whose read windows (up to three largest chunks, 12 MiB
/// by default) are most of what a worker costs in memory. The extra workers
/// exist for many small files, where a read waits on the disk for each file.
pub(crate) const SMALL_FILE_MAX: u64 = 1024 * 1024;

/// Where the walk sends files to read: small ones and larger ones.
pub(crate) struct FileQueue<E> {
    small: crossbeam_channel::Sender<FileJob<E>>,
    large: crossbeam_channel::Sender<FileJob<E>>,
}

/// What one file worker takes jobs from.
pub(crate) enum JobSource<E> {
    /// Small files only.
    Small(crossbeam_channel::Receiver<FileJob<E>>),
    /// Either queue, whichever has a job.
    Any {
        small: crossbeam_channel::Receiver<FileJob<E>>,
        large: crossbeam_channel::Receiver<FileJob<E>>,
    },
}

/// The receiving end of a file queue.
pub(crate) type JobReceiver<E> = crossbeam_channel::Receiver<FileJob<E>>;

impl<E> FileQueue<E> {
    /// The queues (each `depth` jobs deep) and their receiving ends.
    pub fn new(depth: usize) -> (Self, JobReceiver<E>, JobReceiver<E>) {
        let (small, small_rx) = crossbeam_channel::bounded(depth);
        let (large, large_rx) = crossbeam_channel::bounded(depth);
        (Self { small, large }, small_rx, large_rx)
    }

    /// Queues a file of `size` bytes (as looked at).
    pub fn send(&self, job: FileJob<E>, size: u64) -> Result<()> {
        let queue = if size <= SMALL_FILE_MAX {
            &self.small
        } else {
            &self.large
        };
        queue.send(job).map_err(|_| Error::PipelineStopped)
    }
}

impl<E> JobSource<E> {
    /// Whether this worker reads small files only: its window should stay
    /// small (a file that grew after it was looked at can still make it
    /// large once).
    pub fn small_only(&self) -> bool {
        matches!(self, JobSource::Small(_))
    }

    /// The next job; `None` once the walk closed the queues and they are
    /// empty.
    pub fn next(&self) -> Option<FileJob<E>> {
        match self {
            JobSource::Small(small) => small.recv().ok(),
            JobSource::Any { small, large } => crossbeam_channel::select! {
                // A closed queue means the walk is done: drain the other.
                recv(large) -> job => job.or_else(|_| small.recv()).ok(),
                recv(small) -> job => job.or_else(|_| large.recv()).ok(),
            },
        }
    }
}

/// What [`read_file`] works with besides the file: shared by every file a
/// reader reads.
pub(crate) struct Reading<'r> {
    pub repo: &'r Repository,
    pub claimed: &'r Claimed,
    pub progress: &'r dyn Progress,
    pub pool: &'r BufferPool,
}

/// Opens and reads a file of `source` that must still be `job.expected`,
/// chunking it (its name picks the chunker; its path is for messages); new
/// chunks go to `submit`, with the file's size (small files' chunks are
/// sealed by the reader). `window` is the reader's buffer, kept across files.
pub(crate) fn read_file<S: Source>(
    source: &S,
    job: &FileJob<S::Entry>,
    cx: &Reading<'_>,
    window: &mut StreamBuffer,
    submit: &mut dyn FnMut(NewBlob, u64) -> Result<()>,
) -> Result<FileRead> {
    let (repo, progress, path) = (cx.repo, cx.progress, job.path.as_path());
    let (chunker, compress) = repo.chunkers().for_name(&job.name);
    let mut bytes_read = 0u64;
    let mut n_chunks = 0u64;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (mut file, opened) = source
            .open(&job.entry, &job.expected)
            .map_err(Error::io(path))?;
        let before = match opened {
            Some(status) => Some(status),
            None => source.status(&file).map_err(Error::io(path))?,
        };
        let size_hint = before.map_or(job.expected.status.size, |b| b.size);
        progress.file(path, size_hint);
        // The reader's window is reused across files and sized to this one.
        let mut stream = chunker.stream_with(&mut file, std::mem::take(window), Some(size_hint));
        let mut content = Vec::new();
        let mut size = 0u64;
        let read = loop {
            if progress.is_cancelled() {
                break Err(Error::Cancelled);
            }
            let chunk = match stream.next_chunk() {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break Ok(()),
                Err(cairn_chunker::Error::Io(e)) => break Err(Error::io(path)(e)),
                Err(e) => break Err(e.into()),
            };
            let id = repo.keys().blob_ids.id_of(BlobKind::Data, chunk);
            size += chunk.len() as u64;
            progress.bytes(chunk.len() as u64);
            let new = match claim(repo, cx.claimed, BlobKind::Data, id) {
                Ok(new) => new,
                Err(e) => break Err(e),
            };
            if new {
                let blob = NewBlob {
                    kind: BlobKind::Data,
                    id,
                    buffer: SealBuffer::from_plaintext_in(cx.pool.take(), chunk),
                    compress,
                };
                if let Err(e) = submit(blob, size_hint) {
                    break Err(e);
                }
            }
            n_chunks += 1;
            content.push(id);
        };
        *window = stream.into_buffer();
        read?;
        bytes_read += size;
        let after = source.status(&file).map_err(Error::io(path))?;
        let stable = match (before, after) {
            (Some(before), Some(after)) => {
                after.size == size
                    && before.size == size
                    && before.mtime == after.mtime
                    && before.ctime == after.ctime
            }
            // A source that cannot tell: what was read is the file.
            _ => true,
        };
        if stable || attempt == MAX_READ_ATTEMPTS {
            let warning = (!stable).then(|| {
                format!(
                    "{} changed while being read {MAX_READ_ATTEMPTS} times; stored as last read",
                    path.display()
                )
            });
            return Ok(FileRead {
                content,
                size,
                status: after,
                bytes_read,
                n_chunks,
                warning,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::ItemKind;

    fn job(name: &str) -> FileJob<()> {
        let (reply, _) = crossbeam_channel::bounded(1);
        FileJob {
            entry: (),
            path: PathBuf::from(name),
            expected: Item::new(ItemKind::File, Status::default()),
            name: name.as_bytes().to_vec(),
            reply,
        }
    }

    /// Small files reach every worker, larger ones only the general ones,
    /// and once the walk closes the queues every job queued is still taken
    /// before the workers stop.
    #[test]
    fn file_queues_route_by_size_and_drain_after_close() {
        let (queue, small_rx, large_rx) = FileQueue::new(8);
        for (name, size) in [("a", 10), ("b", SMALL_FILE_MAX), ("c", SMALL_FILE_MAX + 1)] {
            queue.send(job(name), size).expect("send");
        }
        drop(queue);
        let small_only = JobSource::Small(small_rx.clone());
        let first = small_only.next().expect("a small file");
        assert_eq!(first.name, b"a");
        let any = JobSource::Any {
            small: small_rx,
            large: large_rx,
        };
        let mut rest: Vec<Vec<u8>> = std::iter::from_fn(|| any.next()).map(|j| j.name).collect();
        rest.sort();
        assert_eq!(rest, [b"b".to_vec(), b"c".to_vec()]);
        assert!(small_only.next().is_none());
    }
}
