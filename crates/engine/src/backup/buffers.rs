//! Recycled blob buffers: a chunk's plaintext is copied into one by a reader,
//! sealed in place by a seal worker, kept by the packer until its pack is
//! written, and then handed back here to be filled again.

use crossbeam_channel::{Receiver, Sender, bounded};

/// Spare blob buffers kept for reuse (few: idle buffers count in peak RSS).
const POOL_DEPTH: usize = 8;

/// Buffers travel from the readers (plaintext copies) through sealing (in
/// place) into a pack, and once the pack is written, back here to be filled
/// again: steady state allocates little per chunk.
#[derive(Clone)]
pub(crate) struct BufferPool {
    spare_tx: Sender<Vec<u8>>,
    spare_rx: Receiver<Vec<u8>>,
}

impl BufferPool {
    pub fn new() -> Self {
        let (spare_tx, spare_rx) = bounded(POOL_DEPTH);
        Self { spare_tx, spare_rx }
    }

    /// A spare buffer, or a new empty one.
    pub fn take(&self) -> Vec<u8> {
        self.spare_rx.try_recv().unwrap_or_default()
    }

    /// Returns a buffer; dropped if the pool is full.
    pub fn give(&self, buffer: Vec<u8>) {
        let _ = self.spare_tx.try_send(buffer);
    }
}
