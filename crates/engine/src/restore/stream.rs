//! Streaming read of one file from a snapshot, chunk by chunk, each chunk
//! verified as it is opened.

use std::io::{self, Read};
use std::path::Path;

use cairn_crypto::{BlobId, BlobKind, SnapshotId};
use cairn_meta::NodeKind;

use crate::error::{Error, Result};
use crate::repo::Repository;
use crate::restore::Resolved;

/// A [`Read`] over one file of a snapshot. Integrity failures surface as
/// `io::Error`s whose inner error is the engine's [`Error`].
pub struct FileReader<'a> {
    repo: &'a Repository,
    chunks: Vec<BlobId>,
    next_idx: usize,
    buf: Vec<u8>,
    pos: usize,
    size: u64,
}

impl FileReader<'_> {
    /// The file's size.
    pub fn size(&self) -> u64 {
        self.size
    }
}

impl Repository {
    /// Opens the file at `path` inside a snapshot for streaming.
    pub fn open_file(&self, snapshot: &SnapshotId, path: &Path) -> Result<FileReader<'_>> {
        let shown = path.display().to_string();
        match self.resolve(snapshot, Some(path))? {
            Resolved::Node(node) if node.kind == NodeKind::File => Ok(FileReader {
                repo: self,
                chunks: node.chunks().collect(),
                next_idx: 0,
                buf: Vec::new(),
                pos: 0,
                size: node.size,
            }),
            _ => Err(Error::NotAFile(shown)),
        }
    }
}

impl Read for FileReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.buf.len() {
            let Some(id) = self.chunks.get(self.next_idx) else {
                return Ok(0);
            };
            self.buf = self
                .repo
                .blobs()
                .read(BlobKind::Data, id)
                .map_err(io::Error::other)?;
            self.pos = 0;
            self.next_idx += 1;
        }
        let available = self.buf.get(self.pos..).unwrap_or_default();
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.pos += n;
        Ok(n)
    }
}
