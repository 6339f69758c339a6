//! The data phase of a restore: every needed chunk is fetched once, pack by
//! pack, on several threads, and written with positional writes into files that
//! the plan already created at their final size (so all-zero chunks are simply
//! not written and stay holes).
//!
//! Nearby blobs of one pack are read with one ranged get (gaps up to
//! [`MAX_GAP`]), so a restore of whole packs reads each pack once.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use cairn_crypto::{ChunkId, PackId};
use cairn_index::BlobLocation;
use cairn_pack::BlobKind;

use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::repo::{Repository, pack_object, pack_read_error};

/// Largest gap between two needed blobs that is read through rather than
/// skipped with a second request.
const MAX_GAP: u64 = 1024 * 1024;
/// Largest single ranged read.
const MAX_RANGE: u64 = 32 * 1024 * 1024;
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
    pub files: Vec<PathBuf>,
    pub chunks: HashMap<ChunkId, (BlobLocation, Vec<Destination>)>,
}

impl DataPlan {
    /// Adds one use of a chunk. Returns its plaintext length.
    pub fn add(&mut self, repo: &Repository, id: ChunkId, dest: Destination) -> Result<u64> {
        if let Some((location, dests)) = self.chunks.get_mut(&id) {
            dests.push(dest);
            return Ok(u64::from(location.entry.plain_len));
        }
        let location = repo
            .index()
            .get(&id)
            .ok_or_else(|| Error::MissingBlob { blob: id.to_hex() })?;
        if location.entry.kind != BlobKind::Data {
            return Err(Error::integrity(pack_object(&location.pack)?));
        }
        self.chunks.insert(id, (location, vec![dest]));
        Ok(u64::from(location.entry.plain_len))
    }
}

/// One ranged read: a pack, a byte range, and the blobs in it.
struct Range<'p> {
    pack: PackId,
    start: u64,
    end: u64,
    blobs: Vec<&'p (BlobLocation, Vec<Destination>)>,
}

fn ranges(plan: &DataPlan) -> Vec<Range<'_>> {
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
                Some(r) if start <= r.end + MAX_GAP && end - r.start <= MAX_RANGE => {
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

/// Fetches and writes every chunk of the plan on `n_threads` threads. Returns
/// the number of bytes written (holes included).
pub(crate) fn fetch_and_write(
    repo: &Repository,
    plan: &DataPlan,
    n_threads: usize,
    progress: &dyn Progress,
) -> Result<u64> {
    let work = Mutex::new(ranges(plan));
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    let written = AtomicU64::new(0);
    std::thread::scope(|scope| {
        for _ in 0..n_threads.max(1) {
            scope.spawn(|| {
                let mut files: HashMap<usize, File> = HashMap::new();
                // One read buffer per worker, reused for every range.
                let mut buffer = Vec::new();
                loop {
                    if failed.load(Ordering::Relaxed) {
                        return;
                    }
                    let next = work.lock().unwrap_or_else(|e| e.into_inner()).pop();
                    let Some(range) = next else { return };
                    let result = if progress.is_cancelled() {
                        Err(Error::Cancelled)
                    } else {
                        fetch_range(repo, plan, &range, &mut files, &mut buffer, progress)
                    };
                    match result {
                        Ok(n) => {
                            written.fetch_add(n, Ordering::Relaxed);
                        }
                        Err(e) => {
                            failed.store(true, Ordering::Relaxed);
                            first_error
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .get_or_insert(e);
                            return;
                        }
                    }
                }
            });
        }
    });
    match first_error.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some(e) => Err(e),
        None => Ok(written.into_inner()),
    }
}

fn fetch_range(
    repo: &Repository,
    plan: &DataPlan,
    range: &Range<'_>,
    files: &mut HashMap<usize, File>,
    buffer: &mut Vec<u8>,
    progress: &dyn Progress,
) -> Result<u64> {
    let pack = pack_object(&range.pack)?;
    let len = (range.end - range.start) as usize;
    if buffer.len() < len {
        buffer.resize(len, 0);
    }
    let bytes = buffer.get_mut(..len).ok_or(Error::PipelineStopped)?;
    if let Err(e) = repo.store().read_range_into(&pack, range.start, bytes) {
        let first_blob = range
            .blobs
            .first()
            .map(|b| b.0.entry.id)
            .unwrap_or(ChunkId::from_bytes([0; 32]));
        return Err(pack_read_error(e, &pack, &first_blob));
    }
    let bytes = &*bytes;
    let mut n_written = 0;
    for (location, dests) in &range.blobs {
        repo.verify_pack_header(location)?;
        let from = (u64::from(location.entry.offset) - range.start) as usize;
        let sealed = bytes
            .get(from..from + location.entry.sealed_len as usize)
            .ok_or_else(|| Error::integrity(&pack))?;
        let plain = cairn_pack::open_blob(&repo.keys.data, &location.entry, sealed)
            .map_err(|_| Error::integrity(&pack))?;
        let hole = plain.iter().all(|&b| b == 0);
        for dest in dests {
            if !hole {
                write_at(plan, files, dest, &plain)?;
            }
            n_written += plain.len() as u64;
            progress.bytes(plain.len() as u64);
        }
    }
    Ok(n_written)
}

fn write_at(
    plan: &DataPlan,
    files: &mut HashMap<usize, File>,
    dest: &Destination,
    data: &[u8],
) -> Result<()> {
    let path = plan
        .files
        .get(dest.file_idx)
        .ok_or(Error::PipelineStopped)?;
    if !files.contains_key(&dest.file_idx) {
        if files.len() >= MAX_OPEN_FILES {
            files.clear();
        }
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(Error::io(path))?;
        files.insert(dest.file_idx, file);
    }
    let file = files.get(&dest.file_idx).ok_or(Error::PipelineStopped)?;
    file.write_all_at(data, dest.offset)
        .map_err(Error::io(path))
}
