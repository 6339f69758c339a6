//! The data phase of a restore: every needed chunk is fetched once, pack by
//! pack, on several threads, and written with positional writes into files that
//! the plan already created at their final size (so all-zero chunks are simply
//! not written and stay holes).
//!
//! Nearby blobs of one pack are read with one ranged get (gaps up to
//! [`MAX_GAP`]), so a restore of whole packs reads each pack once. A range
//! whose pack turns out missing or damaged falls back to reading its blobs one
//! by one through the blob store (which uses another copy when the index
//! knows one); a chunk no copy provides costs the files that need it.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::OwnedFd;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use cairn_crypto::{BlobId, BlobKind, Opener, PackId};
use cairn_index::BlobLocation;

use crate::blobs::pack_object;
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::restore::PlannedFile;
use crate::restore::target::{DirCache, Target};

/// Largest gap between two needed blobs that is read through rather than
/// skipped with a second request.
const MAX_GAP: u64 = 1024 * 1024;
/// Largest single ranged read.
const MAX_RANGE: u64 = 32 * 1024 * 1024;
/// Bytes of read buffers over all threads: more threads (a store with
/// latency) read smaller ranges, so memory stays the same.
const READ_BUDGET: u64 = 64 * 1024 * 1024;
/// Open files a worker keeps.
const MAX_OPEN_FILES: usize = 64;

/// Where the bytes of one chunk go.
pub(crate) struct Destination {
    pub file_idx: usize,
    pub offset: u64,
}

/// Everything the data phase needs: the files (already created at their final
/// size) and, for each chunk, where it is and where it goes.
#[derive(Default)]
pub(crate) struct DataPlan {
    pub files: Vec<PlannedFile>,
    pub chunks: HashMap<BlobId, (BlobLocation, Vec<Destination>)>,
}

impl DataPlan {
    /// Adds one use of the chunk at `location`.
    pub fn add(&mut self, location: BlobLocation, dest: Destination) {
        self.chunks
            .entry(location.entry.id)
            .or_insert_with(|| (location, Vec::new()))
            .1
            .push(dest);
    }
}

/// One ranged read: a pack, a byte range, and the blobs in it.
struct Range<'p> {
    pack: PackId,
    start: u64,
    end: u64,
    blobs: Vec<&'p (BlobLocation, Vec<Destination>)>,
}

fn ranges(plan: &DataPlan, max_range: u64) -> Vec<Range<'_>> {
    let mut by_pack: BTreeMap<PackId, Vec<&(BlobLocation, Vec<Destination>)>> = BTreeMap::new();
    for item in plan.chunks.values() {
        by_pack.entry(item.0.pack).or_default().push(item);
    }
    let mut out = Vec::new();
    for (pack, mut items) in by_pack {
        items.sort_by_key(|(loc, _)| loc.entry.offset);
        let mut current: Option<Range<'_>> = None;
        for item in items {
            let start = u64::from(item.0.entry.offset);
            let end = start + u64::from(item.0.entry.sealed_len);
            match &mut current {
                Some(r) if start <= r.end + MAX_GAP && end - r.start <= max_range => {
                    r.end = r.end.max(end);
                    r.blobs.push(item);
                }
                _ => {
                    out.extend(current.take());
                    current = Some(Range {
                        pack,
                        start,
                        end,
                        blobs: vec![item],
                    });
                }
            }
        }
        out.extend(current);
    }
    // Largest first: keeps both threads busy to the end.
    out.sort_by_key(|r| std::cmp::Reverse(r.end - r.start));
    out
}

/// What one worker holds open.
struct Worker<'a> {
    repo: &'a Repository,
    target: &'a Target,
    plan: &'a DataPlan,
    progress: &'a dyn Progress,
    files: HashMap<usize, OwnedFd>,
    dirs: DirCache,
    /// One read buffer, reused for every range.
    buffer: Vec<u8>,
    /// Decryption and decompression state, reused for every blob.
    opener: Opener,
    /// Files that cannot be completed, with the reason.
    failed: &'a Mutex<HashMap<usize, String>>,
}

/// Fetches and writes every chunk of the plan on `n_threads` threads. Returns
/// the files that could not be completed (missing or damaged data), with the
/// reason; any other failure stops every thread and is returned.
pub(crate) fn fetch_and_write(
    repo: &Repository,
    target: &Target,
    plan: &DataPlan,
    n_threads: usize,
    progress: &dyn Progress,
) -> Result<HashMap<usize, String>> {
    let n_threads = n_threads.max(1);
    let max_range = (READ_BUDGET / n_threads as u64).clamp(MAX_GAP, MAX_RANGE);
    let work = Mutex::new(ranges(plan, max_range));
    let stop = AtomicBool::new(false);
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    let failed = Mutex::new(HashMap::new());
    std::thread::scope(|scope| {
        for _ in 0..n_threads {
            scope.spawn(|| {
                let mut worker = Worker {
                    repo,
                    target,
                    plan,
                    progress,
                    files: HashMap::new(),
                    dirs: DirCache::default(),
                    buffer: Vec::new(),
                    opener: Opener::new(),
                    failed: &failed,
                };
                loop {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let next = work.lock().unwrap_or_else(|e| e.into_inner()).pop();
                    let Some(range) = next else { return };
                    let result = if progress.is_cancelled() {
                        Err(Error::Cancelled)
                    } else {
                        worker.fetch_range(&range)
                    };
                    if let Err(e) = result {
                        stop.store(true, Ordering::Relaxed);
                        first_error
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .get_or_insert(e);
                        return;
                    }
                }
            });
        }
    });
    match first_error.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some(e) => Err(e),
        None => Ok(failed.into_inner().unwrap_or_else(|e| e.into_inner())),
    }
}

impl Worker<'_> {
    fn fetch_range(&mut self, range: &Range<'_>) -> Result<()> {
        let pack = pack_object(&range.pack)?;
        let len = (range.end - range.start) as usize;
        if self.buffer.len() < len {
            self.buffer.resize(len, 0);
        }
        let mut buffer = std::mem::take(&mut self.buffer);
        let result = self.fetch_range_into(range, &pack, &mut buffer);
        self.buffer = buffer;
        result
    }

    fn fetch_range_into(
        &mut self,
        range: &Range<'_>,
        pack: &cairn_store::ObjectName,
        buffer: &mut [u8],
    ) -> Result<()> {
        let len = (range.end - range.start) as usize;
        let bytes = buffer.get_mut(..len).ok_or(Error::PipelineStopped)?;
        if let Err(e) = self.repo.store().read_range_into(pack, range.start, bytes) {
            let Some((first, _)) = range.blobs.first() else {
                return Err(e.into());
            };
            let e = self.repo.blobs().read_error(e, first);
            if !e.is_repository_damage() {
                return Err(e);
            }
            for (location, dests) in &range.blobs {
                self.fallback(location, dests)?;
            }
            return Ok(());
        }
        let mut opener = std::mem::take(&mut self.opener);
        let mut result = Ok(());
        for (location, dests) in &range.blobs {
            if self.progress.is_cancelled() {
                result = Err(Error::Cancelled);
                break;
            }
            let from = (u64::from(location.entry.offset) - range.start) as usize;
            let Some(sealed) = bytes.get_mut(from..from + location.entry.sealed_len as usize)
            else {
                result = Err(Error::integrity(pack));
                break;
            };
            // Decrypted where it lies in the range buffer: no copy.
            result = match self
                .repo
                .blobs()
                .open_in_place(location, sealed, &mut opener)
            {
                Ok(plain) => self.write(plain, dests),
                Err(e) if e.is_repository_damage() => self.fallback(location, dests),
                Err(e) => Err(e),
            };
            if result.is_err() {
                break;
            }
        }
        self.opener = opener;
        result
    }

    /// Reads one blob through the blob store (another copy, if the index
    /// knows one); if none can be had, its files are marked failed.
    fn fallback(&mut self, location: &BlobLocation, dests: &[Destination]) -> Result<()> {
        match self.repo.blobs().read(BlobKind::Data, &location.entry.id) {
            Ok(plain) => self.write(&plain, dests),
            Err(e) if e.is_repository_damage() => {
                {
                    let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
                    for dest in dests {
                        failed.entry(dest.file_idx).or_insert_with(|| e.to_string());
                    }
                }
                // Their counts still go down, so the files' other chunks
                // do not finish them.
                for dest in dests {
                    self.chunk_done(dest.file_idx)?;
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn write(&mut self, plain: &[u8], dests: &[Destination]) -> Result<()> {
        let hole = plain.iter().all(|&b| b == 0);
        for dest in dests {
            if !hole {
                self.write_at(dest, plain)?;
            }
            self.progress.bytes(plain.len() as u64);
            self.chunk_done(dest.file_idx)?;
        }
        Ok(())
    }

    /// The descriptor of a file for writing: kept open by this worker, or
    /// reopened (a file the planner created, which must still be it), or
    /// created (a file of one chunk, 0600 under its temporary name, with
    /// `size` bytes of hole: its size when nothing will be written).
    fn open_file(&mut self, file_idx: usize, size: u64) -> Result<&OwnedFd> {
        let plan = self.plan;
        let file = plan.files.get(file_idx).ok_or(Error::PipelineStopped)?;
        if !self.files.contains_key(&file_idx) {
            let shown = || self.target.display_path(file.dir_idx, &file.node.name);
            if self.files.len() >= MAX_OPEN_FILES {
                self.files.clear();
            }
            let dir = self
                .target
                .dir(&mut self.dirs, file.dir_idx)
                .map_err(Error::io(shown()))?;
            let fd = match file.identity {
                Some(identity) => Target::open_for_writing(&dir, &file.tmp_name, identity),
                None => Target::create_file(&dir, &file.tmp_name, size)
                    .inspect(|_| file.created.store(true, Ordering::Release)),
            }
            .map_err(Error::io(shown()))?;
            self.files.insert(file_idx, fd);
        }
        self.files.get(&file_idx).ok_or(Error::PipelineStopped)
    }

    /// Counts one chunk of a file as written; after its last one, the file
    /// gets its metadata and real name here, on the descriptor this worker
    /// holds (no reopening, and finishing runs on every worker).
    fn chunk_done(&mut self, file_idx: usize) -> Result<()> {
        let file = self
            .plan
            .files
            .get(file_idx)
            .ok_or(Error::PipelineStopped)?;
        // AcqRel: every worker's writes to this file happen before whoever
        // takes the count to zero sets its time.
        if file.remaining.fetch_sub(1, Ordering::AcqRel) != 1 {
            return Ok(());
        }
        if self
            .failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&file_idx)
        {
            return Ok(());
        }
        let shown = || self.target.display_path(file.dir_idx, &file.node.name);
        let dir = self
            .target
            .dir(&mut self.dirs, file.dir_idx)
            .map_err(Error::io(shown()))?;
        // Only holes were written: it was never opened here.
        self.open_file(file_idx, file.node.size)?;
        let fd = self.files.remove(&file_idx).ok_or(Error::PipelineStopped)?;
        Target::complete_file(&dir, &fd, &file.tmp_name, &file.node).map_err(Error::io(shown()))?;
        file.done.store(true, Ordering::Release);
        Ok(())
    }

    fn write_at(&mut self, dest: &Destination, data: &[u8]) -> Result<()> {
        let handle = self.open_file(dest.file_idx, 0)?;
        write_all_at(handle, data, dest.offset).map_err(|e| {
            let shown = self
                .plan
                .files
                .get(dest.file_idx)
                .map(|file| self.target.display_path(file.dir_idx, &file.node.name));
            Error::io(shown.unwrap_or_default())(e)
        })
    }
}

/// `pwrite` until everything is written.
fn write_all_at(fd: &OwnedFd, mut data: &[u8], mut offset: u64) -> std::io::Result<()> {
    while !data.is_empty() {
        match rustix::io::pwrite(fd, data, offset) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                data = data.get(n..).unwrap_or_default();
                offset += n as u64;
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
