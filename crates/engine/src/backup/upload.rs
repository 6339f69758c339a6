//! Writing a backup's packs to the store, several at once when the store
//! says a link's latency is worth hiding ([`Store::parallelism`]): a writer
//! that waits for each put in turn runs at one pack per round trip.
//!
//! Memory stays bounded: a pack is handed over only when an upload thread
//! is free to take it (a rendezvous), and there are at most as many threads
//! as [`UPLOAD_BUDGET`] holds packs, so the bytes in flight stay within it
//! besides the two packs the packer is filling. A pack is always written
//! before the index file naming it: the packer waits for every upload in
//! flight ([`Uploader::wait`]) before it writes one. The first failure is
//! kept and returned by the next call; nothing is uploaded after it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use cairn_crypto::PackId;
use cairn_pack::BlobKind;
use cairn_store::Store;
use crossbeam_channel::{Sender, bounded};

use crate::backup::buffers::BufferPool;
use crate::blobs::pack_object;
use crate::cache::{Cache, Kind};
use crate::error::{Error, Result};

/// Bytes of packs in flight at once: 4 packs of the default 16 MiB (enough
/// to hide a round trip of tens of milliseconds at the speed a backup
/// produces packs), fewer of larger packs, always at least one.
const UPLOAD_BUDGET: usize = 64 * 1024 * 1024;

/// A finished pack on its way to the store.
pub(crate) struct Upload {
    pub id: PackId,
    pub kind: BlobKind,
    /// Its bytes in order: sealed blobs, then header and trailer.
    pub parts: Vec<Vec<u8>>,
}

/// What the upload threads share with the packer.
#[derive(Default)]
struct Shared {
    /// Packs handed over and not yet written (or failed).
    in_flight: Mutex<usize>,
    done: Condvar,
    /// The first failure, until the packer takes it.
    failed: Mutex<Option<Error>>,
    /// Set at the first failure: nothing more goes up.
    stopped: AtomicBool,
}

pub(crate) struct Uploader {
    store: Arc<dyn Store>,
    cache: Option<Arc<Cache>>,
    pool: BufferPool,
    shared: Arc<Shared>,
    /// `None` for uploads on the caller's thread (a local disk).
    queue: Option<Sender<Upload>>,
    workers: Vec<JoinHandle<()>>,
}

impl Uploader {
    /// An uploader for packs of about `pack_target` bytes.
    pub fn new(
        store: Arc<dyn Store>,
        cache: Option<Arc<Cache>>,
        pool: BufferPool,
        pack_target: usize,
    ) -> Self {
        let mut uploader = Self {
            store,
            cache,
            pool,
            shared: Arc::new(Shared::default()),
            queue: None,
            workers: Vec::new(),
        };
        let affordable = UPLOAD_BUDGET / pack_target.max(1);
        let parallelism = uploader.store.parallelism().min(affordable).clamp(1, 32);
        if parallelism > 1 {
            let (queue, packs) = bounded::<Upload>(0);
            for i in 0..parallelism {
                let packs = packs.clone();
                let worker = uploader.worker();
                let spawned = std::thread::Builder::new()
                    .name(format!("cairn-upload-{i}"))
                    .spawn(move || {
                        for pack in packs {
                            worker.upload(pack);
                        }
                    });
                // Without threads, uploads run on the caller's thread.
                match spawned {
                    Ok(handle) => uploader.workers.push(handle),
                    Err(_) => break,
                }
            }
            if !uploader.workers.is_empty() {
                uploader.queue = Some(queue);
            }
        }
        uploader
    }

    fn worker(&self) -> Worker {
        Worker {
            store: self.store.clone(),
            cache: self.cache.clone(),
            pool: self.pool.clone(),
            shared: self.shared.clone(),
        }
    }

    /// Writes a pack: hands it to a free upload thread (waiting for one),
    /// or writes it here. Fails with an earlier upload's error, if any.
    pub fn send(&self, pack: Upload) -> Result<()> {
        self.check()?;
        *lock(&self.shared.in_flight) += 1;
        match &self.queue {
            Some(queue) => {
                if let Err(returned) = queue.send(pack) {
                    // Every thread is gone (none can be while we hold the
                    // sender, but never lose a pack): write it here.
                    self.worker().upload(returned.into_inner());
                }
            }
            None => self.worker().upload(pack),
        }
        self.check()
    }

    /// Waits until every pack handed over is written; fails with the
    /// first upload's error, if any.
    pub fn wait(&self) -> Result<()> {
        let mut in_flight = lock(&self.shared.in_flight);
        while *in_flight > 0 {
            in_flight = self
                .shared
                .done
                .wait(in_flight)
                .unwrap_or_else(|e| e.into_inner());
        }
        drop(in_flight);
        self.check()
    }

    /// The first failure (once), then [`Error::UploadStopped`] for as long
    /// as the uploader lives: nothing may be written after a failed upload.
    fn check(&self) -> Result<()> {
        if let Some(e) = lock(&self.shared.failed).take() {
            return Err(e);
        }
        if self.shared.stopped.load(Ordering::Acquire) {
            return Err(Error::UploadStopped);
        }
        Ok(())
    }
}

impl Drop for Uploader {
    /// A backup that fails returns only when no upload of its is running.
    fn drop(&mut self) {
        self.queue = None;
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

struct Worker {
    store: Arc<dyn Store>,
    cache: Option<Arc<Cache>>,
    pool: BufferPool,
    shared: Arc<Shared>,
}

impl Worker {
    fn upload(&self, pack: Upload) {
        // Counts the pack done however this ends, a panic included (which
        // fails the backup rather than leave `wait` waiting for it).
        let _done = Done(&self.shared);
        // After a failure nothing more goes up (the backup is failing).
        let result = if self.shared.stopped.load(Ordering::Acquire) {
            Ok(())
        } else {
            self.put(&pack)
        };
        if let Err(e) = result {
            // The error first: a `check` that sees the flag finds it.
            lock(&self.shared.failed).get_or_insert(e);
            self.shared.stopped.store(true, Ordering::Release);
        }
        // The sealed blobs' buffers go back to the readers.
        for part in pack.parts {
            self.pool.give(part);
        }
    }

    fn put(&self, pack: &Upload) -> Result<()> {
        let parts: Vec<&[u8]> = pack.parts.iter().map(Vec::as_slice).collect();
        let object = pack_object(&pack.id)?;
        match self.store.put_parts(&object, &parts) {
            Ok(()) => {}
            // The name is the hash of the bytes, so the object there holds
            // these bytes (a put retried after its answer was lost) or is
            // damaged; a backup must not rely on a damaged one.
            Err(cairn_store::Error::AlreadyExists(_)) => {
                let size = parts.iter().map(|p| p.len() as u64).sum();
                let same = match self.store.get(&object, size) {
                    Ok(there) => there == parts.concat(),
                    Err(cairn_store::Error::TooLarge { .. }) => false,
                    Err(e) => return Err(e.into()),
                };
                if !same {
                    return Err(Error::integrity(object));
                }
            }
            Err(e) => return Err(e.into()),
        }
        // What the next backup would otherwise read back: the header of
        // every pack, and tree packs whole.
        if let Some(cache) = &self.cache {
            let name = pack.id.to_hex();
            let size = parts.iter().map(|p| p.len() as u64).sum();
            // The last part is the sealed header and the trailer.
            let tail = parts.last().copied().unwrap_or_default();
            cache.put_tail(&name, size, tail);
            if pack.kind == BlobKind::Tree {
                cache.put(Kind::TreePacks, &name, &parts);
            }
        }
        Ok(())
    }
}

/// Marks one pack done when dropped, and the uploader stopped if that is
/// during a panic.
struct Done<'s>(&'s Shared);

impl Drop for Done<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.stopped.store(true, Ordering::Release);
        }
        let mut in_flight = lock(&self.0.in_flight);
        *in_flight = in_flight.saturating_sub(1);
        self.0.done.notify_all();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
