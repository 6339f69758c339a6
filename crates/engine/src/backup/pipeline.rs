//! The sealing pipeline of a backup: the walk hands over new blobs, seal workers
//! compress and encrypt them on every core, and one packer thread fills packs
//! and writes them.
//!
//! ```text
//! walk and file workers (read, chunk, hash, decide what is new)
//!   ── bounded channel of plaintext blobs ──► N seal workers ─┐
//!   ── small files' blobs, sealed by the reader itself ───────┤
//!                                                              ▼
//!        bounded channel of sealed blobs ──► packer thread (packs, store puts, index file)
//! ```
//!
//! A small file's blobs skip the seal workers: handing a few KiB to another
//! thread costs more than sealing them where they were read, and with one
//! file worker per core every core is busy anyway. A large file's chunks go
//! to the seal workers, so one big file alone still uses every core.
//!
//! The walk alone decides which blobs are new and what every tree holds, so the
//! snapshot is the same whatever the number of threads; only the order of blobs
//! inside packs varies. Bounded channels keep memory flat: at most
//! `2 × QUEUE_DEPTH` blobs (≤ 4 MiB each by default) are in flight.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{Scope, ScopedJoinHandle};

use cairn_crypto::{BlobId, SealBuffer, SealKey, SealedBlob, Sealer};
use cairn_index::Index;
use cairn_pack::BlobKind;
use crossbeam_channel::{Receiver, Sender, bounded};

use crate::backup::packer::{Packer, PackerTotals};
use crate::error::{Error, Result, from_crypto};

/// Blobs queued between stages, per channel.
const QUEUE_DEPTH: usize = 8;
/// Files up to this size are sealed by the thread that read them.
pub(crate) const SEAL_ON_READER_MAX: u64 = 4 * 1024 * 1024;
/// A blob the walk decided to store.
#[derive(Debug)]
pub(crate) struct NewBlob {
    pub kind: BlobKind,
    pub id: BlobId,
    /// The plaintext, laid out for sealing in place.
    pub buffer: SealBuffer,
    /// Whether it may be compressed (not a chunk of a file edited in
    /// place, unless the config says so: see `ChunkingRules`).
    pub compress: bool,
}

pub(crate) struct Sealed {
    pub kind: BlobKind,
    pub id: BlobId,
    pub sealed: SealedBlob,
    pub plain_len: usize,
}

pub(crate) fn seal_blob(
    sealer: &mut Sealer,
    data_key: &SealKey,
    metadata_key: &SealKey,
    blob: NewBlob,
) -> Result<Sealed> {
    let (key, seal_kind) = match blob.kind {
        BlobKind::Data => (data_key, cairn_crypto::SealKind::Data),
        BlobKind::Tree => (metadata_key, cairn_crypto::SealKind::Tree),
    };
    let plain_len = blob.buffer.plaintext().len();
    let sealed = sealer
        .seal_buffer_compressing(
            key,
            seal_kind,
            blob.id.as_bytes(),
            blob.buffer,
            blob.compress,
        )
        .map_err(from_crypto("new blob"))?;
    Ok(Sealed {
        kind: blob.kind,
        id: blob.id,
        sealed,
        plain_len,
    })
}

/// What a file worker hands new blobs over with: to the seal workers, or
/// sealed here and straight to the packer (see the module comment).
pub(crate) struct BlobSender {
    blobs: Sender<NewBlob>,
    sealed: Sender<Result<Sealed>>,
    sealer: Sealer,
    data_key: SealKey,
    metadata_key: SealKey,
}

impl BlobSender {
    /// Hands over a blob of a file of `file_size` bytes. An error means the
    /// pipeline stopped.
    pub fn send(&mut self, blob: NewBlob, file_size: u64) -> Result<()> {
        if file_size > SEAL_ON_READER_MAX {
            return self.blobs.send(blob).map_err(|_| Error::PipelineStopped);
        }
        let sealed = seal_blob(&mut self.sealer, &self.data_key, &self.metadata_key, blob);
        let failed = sealed.is_err();
        self.sealed
            .send(sealed)
            .map_err(|_| Error::PipelineStopped)?;
        // A failed seal reached the packer, which stops with that error.
        if failed {
            return Err(Error::PipelineStopped);
        }
        Ok(())
    }
}

/// The one-thread sink: seals on the caller's thread.
pub(crate) struct InlineSink<'p> {
    packer: Packer<'p>,
    sealer: Sealer,
    data_key: SealKey,
    metadata_key: SealKey,
}

/// Where the walk sends new blobs: sealed inline (one thread) or through the
/// threaded pipeline.
pub(crate) enum BlobSink<'scope> {
    /// Seal and pack on the calling thread.
    Inline(Box<InlineSink<'scope>>),
    /// Seal on worker threads, pack on a packer thread.
    Threaded {
        blobs: Sender<NewBlob>,
        sealed: Sender<Result<Sealed>>,
        /// Data and metadata sealing keys, for readers that seal.
        keys: Box<(SealKey, SealKey)>,
        workers: Vec<ScopedJoinHandle<'scope, Result<()>>>,
        packer: ScopedJoinHandle<'scope, Result<(Index, PackerTotals)>>,
        abandoned: Arc<AtomicBool>,
    },
}

impl<'scope> BlobSink<'scope> {
    /// Builds a sink with `n_threads` seal workers (inline when 1).
    pub fn new<'env>(
        scope: &'scope Scope<'scope, 'env>,
        packer: Packer<'scope>,
        data_key: SealKey,
        metadata_key: SealKey,
        n_threads: usize,
    ) -> Self {
        if n_threads <= 1 {
            return BlobSink::Inline(Box::new(InlineSink {
                packer,
                sealer: Sealer::new(),
                data_key,
                metadata_key,
            }));
        }
        let (blob_tx, blob_rx) = bounded::<NewBlob>(QUEUE_DEPTH);
        let (sealed_tx, sealed_rx) = bounded::<Result<Sealed>>(QUEUE_DEPTH);
        let workers = (0..n_threads)
            .map(|_| {
                let blob_rx: Receiver<NewBlob> = blob_rx.clone();
                let sealed_tx = sealed_tx.clone();
                let (data_key, metadata_key) = (data_key.clone(), metadata_key.clone());
                scope.spawn(move || {
                    let mut sealer = Sealer::new();
                    for blob in blob_rx {
                        let result = seal_blob(&mut sealer, &data_key, &metadata_key, blob);
                        let failed = result.is_err();
                        // The packer hung up: it failed and holds the error.
                        if sealed_tx.send(result).is_err() || failed {
                            break;
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        let abandoned = Arc::new(AtomicBool::new(false));
        let packer_abandoned = abandoned.clone();
        let packer = scope.spawn(move || {
            let mut packer = packer;
            for sealed in sealed_rx {
                let s = sealed?;
                packer.add_sealed(s.kind, s.id, s.sealed, s.plain_len)?;
            }
            // An abandoned backup writes no index file: its packs stay
            // unreferenced, as after a crash.
            if packer_abandoned.load(Ordering::Acquire) {
                return Err(Error::Cancelled);
            }
            packer.finish()
        });
        BlobSink::Threaded {
            blobs: blob_tx,
            sealed: sealed_tx,
            keys: Box::new((data_key, metadata_key)),
            workers,
            packer,
            abandoned,
        }
    }

    /// A sender for other threads (file workers) to hand blobs over with;
    /// `None` when sealing inline.
    pub fn sender(&self) -> Option<BlobSender> {
        match self {
            BlobSink::Inline(_) => None,
            BlobSink::Threaded {
                blobs,
                sealed,
                keys,
                ..
            } => Some(BlobSender {
                blobs: blobs.clone(),
                sealed: sealed.clone(),
                sealer: Sealer::new(),
                data_key: keys.0.clone(),
                metadata_key: keys.1.clone(),
            }),
        }
    }

    /// Queues a new blob. An error means the pipeline stopped; [`Self::finish`]
    /// then returns the cause.
    pub fn submit(&mut self, blob: NewBlob) -> Result<()> {
        match self {
            BlobSink::Inline(inline) => {
                let s = seal_blob(
                    &mut inline.sealer,
                    &inline.data_key,
                    &inline.metadata_key,
                    blob,
                )?;
                inline
                    .packer
                    .add_sealed(s.kind, s.id, s.sealed, s.plain_len)
            }
            BlobSink::Threaded { blobs, .. } => {
                blobs.send(blob).map_err(|_| Error::PipelineStopped)
            }
        }
    }

    /// Drains the pipeline, writes the last packs and the index file.
    pub fn finish(self) -> Result<(Index, PackerTotals)> {
        match self {
            BlobSink::Inline(inline) => inline.packer.finish(),
            BlobSink::Threaded {
                blobs,
                sealed,
                workers,
                packer,
                ..
            } => {
                drop((blobs, sealed));
                let mut first_error = None;
                for w in workers {
                    if let Err(e) = w.join().unwrap_or(Err(Error::PipelineStopped)) {
                        first_error.get_or_insert(e);
                    }
                }
                let packed = packer.join().unwrap_or(Err(Error::PipelineStopped));
                match (packed, first_error) {
                    (Err(e), _) | (Ok(_), Some(e)) => Err(e),
                    (Ok(done), None) => Ok(done),
                }
            }
        }
    }

    /// Stops the pipeline after an error elsewhere, discarding queued blobs and
    /// writing nothing more than what is already written.
    pub fn abandon(self) {
        if let BlobSink::Threaded {
            blobs,
            sealed,
            workers,
            packer,
            abandoned,
            ..
        } = self
        {
            abandoned.store(true, Ordering::Release);
            drop((blobs, sealed));
            for w in workers {
                let _ = w.join();
            }
            let _ = packer.join();
        }
    }
}
