//! Progress reporting and cancellation: the caller implements [`Progress`].
//!
//! During a backup the engine reports files as it starts them, bytes read,
//! bytes skipped because the parent snapshot had them, bytes written to the
//! repository, and (when [`BackupOptions::scan_totals`] asks for it) the totals
//! of a concurrent scan, from which a caller can show an ETA. During a restore
//! it reports files created and bytes written.
//!
//! [`BackupOptions::scan_totals`]: crate::BackupOptions::scan_totals

use std::path::Path;

/// Hooks the engine calls while it works, possibly from several threads. Every
/// method has a no-op default. Implementations must be cheap: they are called
/// per file and per chunk.
pub trait Progress: Sync {
    /// A file is about to be read (backup) or created (restore).
    fn file(&self, _path: &Path, _size: u64) {}
    /// `bytes` more were read from the source (backup) or written (restore).
    fn bytes(&self, _bytes: u64) {}
    /// `bytes` of a file unchanged since the parent were accounted without
    /// reading.
    fn unchanged(&self, _bytes: u64) {}
    /// A blob of `bytes` plaintext bytes, new to the repository, was packed.
    fn new_data(&self, _bytes: u64) {}
    /// `bytes` more were written to the repository (a pack or index file).
    fn stored(&self, _bytes: u64) {}
    /// The concurrent scan finished: the backup covers `n_files` files
    /// holding `n_bytes` bytes.
    fn scanned(&self, _n_files: u64, _n_bytes: u64) {}
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
