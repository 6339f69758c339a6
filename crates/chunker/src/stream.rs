//! Chunking a reader: large sequential reads into a reusable window, cut
//! exactly as chunking the whole input in memory would.

use std::io::{self, Read};

use crate::prf::Block;
use crate::{Chunker, Error};

impl Chunker {
    /// Like [`Self::stream`], reusing `buffer` (take it back with
    /// [`ChunkStream::into_buffer`]) and, when the reader's length is known
    /// (`size_hint`, e.g. from `fstat`), reading into a window no larger than
    /// that. A backup of many small files then neither allocates nor zeroes a
    /// window per file. The hint only sizes the first read: a source longer
    /// than hinted is still read whole and cut exactly as without a hint.
    pub fn stream_with<R: Read>(
        &self,
        reader: R,
        buffer: StreamBuffer,
        size_hint: Option<u64>,
    ) -> ChunkStream<R> {
        let full = (self.params.max_size as usize * 3).max(MIN_WINDOW);
        let limit = match size_hint {
            // One byte more than the hint, so a source of exactly that length
            // reaches its end without growing the window.
            Some(n) => usize::try_from(n)
                .unwrap_or(usize::MAX)
                .saturating_add(1)
                .clamp(SMALL_WINDOW, full),
            None => full,
        };
        ChunkStream {
            chunker: self.clone(),
            reader,
            buf: buffer.bytes,
            scratch: buffer.scratch,
            limit,
            full,
            start: 0,
            end: 0,
            eof: false,
            pending: std::collections::VecDeque::new(),
        }
    }
}

/// A chunk stream's read buffer, kept between streams so that it is
/// allocated and zeroed once per reader thread rather than once per file.
#[derive(Default)]
pub struct StreamBuffer {
    /// Initialized bytes; only ever grows.
    bytes: Vec<u8>,
    /// The PRF rule's batch of AES blocks (64 KiB once used).
    scratch: Vec<Block>,
}

impl StreamBuffer {
    /// Bytes the buffer holds allocated (its window can grow to the full one
    /// and stays that large until dropped).
    pub fn allocated(&self) -> usize {
        self.bytes.len() + self.scratch.len() * std::mem::size_of::<Block>()
    }
}

impl std::fmt::Debug for StreamBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The contents are a file's plaintext: never shown.
        f.debug_struct("StreamBuffer")
            .field("len", &self.bytes.len())
            .finish()
    }
}

/// Iterator over the chunks of a reader; see [`Chunker::stream`].
///
/// The window holds `3 × max_size` bytes (at least 4 MiB) before cutting, and
/// a cut is made only with at least one max-size chunk of data after its
/// start, or at the end of the stream, so streamed and in-memory chunking give
/// identical boundaries. A stream with a size hint starts with a smaller
/// window and grows it to the full one if the source turns out longer.
pub struct ChunkStream<R> {
    chunker: Chunker,
    reader: R,
    /// Initialized bytes, possibly more than `limit` (a reused buffer);
    /// `start..end` holds unconsumed bytes.
    buf: Vec<u8>,
    /// The PRF rule's batch of AES blocks.
    scratch: Vec<Block>,
    /// The window in use: `buf[..limit]`.
    limit: usize,
    /// The full window.
    full: usize,
    start: usize,
    end: usize,
    eof: bool,
    pending: std::collections::VecDeque<usize>,
}

/// Smallest read window: small-chunk profiles still read in large blocks.
const MIN_WINDOW: usize = 4 * 1024 * 1024;
/// Smallest window of a stream with a size hint.
const SMALL_WINDOW: usize = 64 * 1024;

impl<R: Read> ChunkStream<R> {
    /// Gives the read buffer back for the next stream.
    pub fn into_buffer(self) -> StreamBuffer {
        StreamBuffer {
            bytes: self.buf,
            scratch: self.scratch,
        }
    }

    /// Makes `buf[..limit]` initialized memory.
    fn ensure_window(&mut self) {
        if self.buf.len() < self.limit {
            self.buf.resize(self.limit, 0);
        }
    }

    /// Reads until the window is full or the source ends; a window smaller
    /// than the full one that fills up grows to the full one.
    fn fill(&mut self) -> io::Result<()> {
        // A signal interrupts a read now and then; a reader interrupted
        // without end would spin here forever.
        const MAX_INTERRUPTED: u32 = 1000;
        let mut interrupted = 0u32;
        loop {
            self.ensure_window();
            while !self.eof && self.end < self.limit {
                let Some(free) = self.buf.get_mut(self.end..self.limit) else {
                    break;
                };
                let room = free.len();
                match self.reader.read(free) {
                    Ok(0) => self.eof = true,
                    Ok(n) if n <= room => self.end += n,
                    // A reader that claims more than it was given breaks
                    // `Read`'s contract: its bytes cannot be trusted.
                    Ok(_) => {
                        return Err(io::Error::other(
                            "the reader returned more bytes than asked",
                        ));
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                        interrupted += 1;
                        if interrupted > MAX_INTERRUPTED {
                            return Err(e);
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
            if self.eof || self.limit >= self.full {
                return Ok(());
            }
            self.limit = self.full;
        }
    }

    /// Refills the buffer and computes the next batch of chunk lengths.
    fn refill(&mut self) -> io::Result<()> {
        // Move the unconsumed tail (shorter than one max-size chunk) to the
        // front, then read until the window is full or EOF.
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        self.fill()?;
        let filled = self.buf.get(..self.end).unwrap_or_default();
        let pending = &mut self.pending;
        self.chunker
            .cut(filled, self.eof, &mut self.scratch, |len| {
                pending.push_back(len)
            });
        Ok(())
    }

    /// The next chunk's bytes, or `None` at end of stream.
    pub fn next_chunk(&mut self) -> Result<Option<&[u8]>, Error> {
        if self.pending.is_empty() {
            if self.eof && self.start >= self.end {
                return Ok(None);
            }
            self.refill()?;
        }
        match self.pending.pop_front() {
            None => Ok(None),
            Some(len) => {
                let begin = self.start;
                self.start += len;
                Ok(self.buf.get(begin..begin + len))
            }
        }
    }
}
