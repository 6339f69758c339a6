//! Content-defined chunking: bytes in, cut points out.
//!
//! The chunker is FastCDC v2020 with normalized chunking, its gear table keyed by a
//! 64-bit seed that the caller derives from a secret. It knows nothing of where the
//! seed comes from, nor of files or storage: it only finds boundaries, so the same
//! [`ChunkerParams`] and seed always cut the same bytes the same way.
//!
//! A seeded gear table does **not** hide chunk boundaries from an attacker who sees
//! chunk lengths (Truong et al., ePrint 2025/558); cairn never shows chunk lengths
//! to the server (see `docs/crypto.md`).

use std::io::{self, Read};

use fastcdc::v2020::{FastCDC, Normalization};

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Chunk size parameters outside what FastCDC supports, or out of order.
    #[error("invalid chunker parameters: {reason}")]
    InvalidParams {
        /// What is wrong with them.
        reason: &'static str,
    },
    /// Reading the source failed.
    #[error("reading input: {0}")]
    Io(#[from] io::Error),
}

/// The chunker's parameters. They are recorded in the repository config at init
/// and never change for that repository: a different chunker is a different format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkerParams {
    /// No chunk is smaller than this, except the last chunk of a stream.
    pub min_size: u32,
    /// Target mean chunk size.
    pub avg_size: u32,
    /// No chunk is larger than this.
    pub max_size: u32,
    /// FastCDC normalization level, 0 to 3.
    pub normalization: u8,
}

impl Default for ChunkerParams {
    /// 256 KiB / 1 MiB / 4 MiB, normalization level 1: large enough that the index
    /// of a 100 GB history stays around 100 k entries.
    fn default() -> Self {
        Self {
            min_size: 256 * 1024,
            avg_size: 1024 * 1024,
            max_size: 4 * 1024 * 1024,
            normalization: 1,
        }
    }
}

impl ChunkerParams {
    /// Checks that FastCDC accepts these parameters. Parameters read from a
    /// repository go through this before use, so a bad config is an error, not a
    /// panic inside FastCDC.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |reason| Err(Error::InvalidParams { reason });
        let (min, avg, max) = (
            self.min_size as usize,
            self.avg_size as usize,
            self.max_size as usize,
        );
        if !(fastcdc::v2020::MINIMUM_MIN..=fastcdc::v2020::MINIMUM_MAX).contains(&min) {
            return bad("min_size out of range");
        }
        if !(fastcdc::v2020::AVERAGE_MIN..=fastcdc::v2020::AVERAGE_MAX).contains(&avg) {
            return bad("avg_size out of range");
        }
        if !(fastcdc::v2020::MAXIMUM_MIN..=fastcdc::v2020::MAXIMUM_MAX).contains(&max) {
            return bad("max_size out of range");
        }
        if min % 2 != 0 || avg % 2 != 0 || max % 2 != 0 {
            return bad("sizes must be even");
        }
        if !(min <= avg && avg <= max) {
            return bad("sizes must satisfy min <= avg <= max");
        }
        if self.normalization > 3 {
            return bad("normalization level must be 0 to 3");
        }
        Ok(())
    }

    fn level(&self) -> Normalization {
        match self.normalization {
            0 => Normalization::Level0,
            1 => Normalization::Level1,
            2 => Normalization::Level2,
            _ => Normalization::Level3,
        }
    }
}

/// A configured chunker: parameters plus the secret seed of the gear table.
/// Cheap to clone; usable from any thread. Its `Debug` output omits the seed.
#[derive(Clone)]
pub struct Chunker {
    params: ChunkerParams,
    seed: u64,
}

impl std::fmt::Debug for Chunker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunker")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl Chunker {
    /// Builds a chunker after validating the parameters.
    pub fn new(params: ChunkerParams, seed: u64) -> Result<Self, Error> {
        params.validate()?;
        Ok(Self { params, seed })
    }

    /// The parameters this chunker cuts with.
    pub fn params(&self) -> ChunkerParams {
        self.params
    }

    /// Lengths of the chunks of `data`, treating its end as the end of the stream.
    /// The lengths sum to `data.len()`; empty input gives no chunks.
    pub fn chunk_lengths(&self, data: &[u8]) -> Vec<usize> {
        self.fastcdc(data).map(|c| c.length).collect()
    }

    fn fastcdc<'a>(&self, data: &'a [u8]) -> FastCDC<'a> {
        let p = self.params;
        FastCDC::with_level_and_seed(
            data,
            p.min_size as usize,
            p.avg_size as usize,
            p.max_size as usize,
            p.level(),
            self.seed,
        )
    }

    /// Streams `reader` as chunks, reading in large sequential blocks (never
    /// mapping the source: a file truncated while mapped would kill the process).
    pub fn stream<R: Read>(&self, reader: R) -> ChunkStream<R> {
        self.stream_with(reader, StreamBuffer::default(), None)
    }

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
}

impl StreamBuffer {
    /// Bytes the buffer holds allocated (its window can grow to the full one
    /// and stays that large until dropped).
    pub fn allocated(&self) -> usize {
        self.bytes.len()
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
        StreamBuffer { bytes: self.buf }
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
        let max = self.chunker.params.max_size as usize;
        let filled = self.buf.get(..self.end).unwrap_or_default();
        let mut consumed = 0usize;
        let mut cdc = self.chunker.fastcdc(filled);
        // Without EOF, stop before the tail shorter than one max-size chunk: its
        // cut point depends on bytes not read yet. FastCDC is lazy, so nothing
        // past that point is scanned twice.
        while self.eof || filled.len() - consumed >= max {
            let Some(chunk) = cdc.next() else { break };
            self.pending.push_back(chunk.length);
            consumed += chunk.length;
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn small() -> ChunkerParams {
        ChunkerParams {
            min_size: 256,
            avg_size: 1024,
            max_size: 4096,
            normalization: 1,
        }
    }

    fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn collect_stream(chunker: &Chunker, data: &[u8]) -> Vec<Vec<u8>> {
        let mut s = chunker.stream(data);
        let mut out = Vec::new();
        while let Some(c) = s.next_chunk().unwrap() {
            out.push(c.to_vec());
        }
        out
    }

    #[test]
    fn rejects_bad_params() {
        let mut p = small();
        p.min_size = 8192;
        assert!(Chunker::new(p, 0).is_err());
        let mut p = small();
        p.normalization = 9;
        assert!(Chunker::new(p, 0).is_err());
        let mut p = small();
        p.avg_size = 1023;
        assert!(Chunker::new(p, 0).is_err());
        assert!(Chunker::new(ChunkerParams::default(), 1).is_ok());
    }

    #[test]
    fn seed_changes_boundaries() {
        let data = pseudo_random(200_000, 7);
        let a = Chunker::new(small(), 1).unwrap().chunk_lengths(&data);
        let b = Chunker::new(small(), 2).unwrap().chunk_lengths(&data);
        assert_ne!(a, b);
    }

    #[test]
    fn debug_output_omits_the_seed() {
        let seed = 0x1234_5678_9abc_def1_u64;
        let shown = format!("{:?}", Chunker::new(small(), seed).unwrap());
        for secret in [seed.to_string(), format!("{seed:x}"), format!("{seed:X}")] {
            assert!(!shown.contains(&secret), "{shown}");
        }
    }

    #[test]
    fn empty_input_has_no_chunks() {
        let c = Chunker::new(small(), 3).unwrap();
        assert!(c.chunk_lengths(&[]).is_empty());
        assert!(collect_stream(&c, &[]).is_empty());
    }

    proptest! {
        #[test]
        fn stream_reassembles_and_matches_in_memory(len in 0usize..60_000, seed in any::<u64>(), rseed in any::<u64>()) {
            let data = pseudo_random(len, rseed);
            let c = Chunker::new(small(), seed).unwrap();
            let chunks = collect_stream(&c, &data);
            prop_assert_eq!(chunks.concat(), data.clone());
            let lens: Vec<usize> = chunks.iter().map(Vec::len).collect();
            prop_assert_eq!(lens.clone(), c.chunk_lengths(&data));
            for (i, l) in lens.iter().enumerate() {
                prop_assert!(*l <= 4096);
                if i + 1 < lens.len() { prop_assert!(*l >= 256); }
            }
        }

        /// A size hint, right or wrong, and a buffer reused from a longer
        /// or shorter stream never change where the cuts fall.
        #[test]
        fn hints_and_reused_buffers_cut_the_same(
            len in 0usize..300_000,
            hint in prop_oneof![Just(None), (0u64..400_000).prop_map(Some)],
            before in 0usize..200_000,
            rseed in any::<u64>(),
        ) {
            let c = Chunker::new(small(), 9).unwrap();
            // A buffer left full of another stream's bytes.
            let other = pseudo_random(before, rseed ^ 1);
            let mut used = c.stream_with(&other[..], StreamBuffer::default(), Some(before as u64));
            while used.next_chunk().unwrap().is_some() {}
            let buffer = used.into_buffer();
            let data = pseudo_random(len, rseed);
            let mut s = c.stream_with(&data[..], buffer, hint);
            let mut chunks = Vec::new();
            while let Some(chunk) = s.next_chunk().unwrap() {
                chunks.push(chunk.to_vec());
            }
            prop_assert_eq!(chunks.concat(), data.clone());
            let lens: Vec<usize> = chunks.iter().map(Vec::len).collect();
            prop_assert_eq!(lens, c.chunk_lengths(&data));
        }

        #[test]
        fn arbitrary_bytes_reassemble(data in proptest::collection::vec(any::<u8>(), 0..20_000)) {
            let c = Chunker::new(small(), 42).unwrap();
            prop_assert_eq!(collect_stream(&c, &data).concat(), data);
        }
    }
}
