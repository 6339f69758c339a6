//! Progress reporting and cancellation: the caller implements [`Progress`].

use std::path::Path;

/// Hooks the engine calls while it works. Every method has a no-op default.
/// Implementations must be cheap: they are called per file and per chunk.
pub trait Progress: Sync {
    /// A file is about to be read (backup) or written (restore).
    fn file(&self, _path: &Path, _size: u64) {}
    /// `bytes` more were read from the source (backup) or written (restore).
    fn bytes(&self, _bytes: u64) {}
    /// Something was skipped or went wrong without stopping the operation.
    fn warning(&self, _message: &str) {}
    /// Polled often; returning `true` stops the operation with
    /// [`Error::Cancelled`](crate::Error::Cancelled). A cancelled backup writes no
    /// snapshot and leaves the repository as it was (plus unreferenced packs).
    fn is_cancelled(&self) -> bool {
        false
    }
}

/// A [`Progress`] that ignores everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}
