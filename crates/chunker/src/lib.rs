//! Content-defined chunking: bytes in, cut points out.
//!
//! Two cut rules, both keyed by a secret the caller derives:
//!
//! - **toeplitz-aes** (the default of new repositories, `prf.rs`): a chunk may
//!   end where AES-256 of a keyed hash of the 64 bytes before the position has
//!   its masked bits zero. Cut points are outputs of a PRF, so an observer of
//!   chunk lengths learns no equation about the key and cannot predict offline
//!   how a known file is cut (Truong et al., ePrint 2025/558). Every decision
//!   depends only on the 64 bytes before it: whoever plants files and sees
//!   their chunk lengths still learns how those files are cut.
//! - **FastCDC v2020** with a seeded gear table (the `fastcdc` crate), the rule
//!   of format 1 and 2 repositories and still selectable. A seeded gear table
//!   does **not** hide its seed from an observer of chunk lengths: the bit-by-bit
//!   search of the paper above recovers it from about 20 cuts
//!   (`tests/attack.rs` does it). With this rule, hiding chunk lengths from the
//!   server (see `docs/crypto.md`) is the only defence.
//!
//! Both cut with FastCDC's normalization (a harder condition before the
//! average size, an easier one after) between a minimum and a maximum size.
//! The chunker knows nothing of where its key comes from, nor of files or
//! storage: the same parameters and key always cut the same bytes the same way.

use std::io::Read;
use std::sync::Arc;

use fastcdc::v2020::{FastCDC, Normalization};

mod prf;
mod stream;

pub use prf::PrfKey;
pub use stream::{ChunkStream, StreamBuffer};

use prf::PrfCutter;

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Chunk size parameters outside what the chunker supports, or out of order.
    #[error("invalid chunker parameters: {reason}")]
    InvalidParams {
        /// What is wrong with them.
        reason: &'static str,
    },
    /// Reading the source failed.
    #[error("reading input: {0}")]
    Io(#[from] std::io::Error),
}

/// Which cut rule a repository uses. Recorded in its config: changing it
/// would change every chunk, so it never changes for a repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// FastCDC v2020 with a seeded gear table (formats 1 and 2).
    FastCdc,
    /// AES-256 of a keyed Toeplitz hash of the last 64 bytes (format 3's default).
    ToeplitzAes,
}

impl Algorithm {
    /// The name users see and type.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::FastCdc => "fastcdc",
            Algorithm::ToeplitzAes => "toeplitz-aes",
        }
    }
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
    /// Checks that both cut rules accept these parameters (FastCDC's ranges,
    /// which also give the PRF rule its 64-byte window). Parameters read from
    /// a repository go through this before use, so a bad config is an error,
    /// not a panic.
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
        // The PRF rule's window must fit before the first candidate cut.
        const _: () = assert!(fastcdc::v2020::MINIMUM_MIN >= prf::WINDOW);
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

/// The keyed cut rule of a chunker.
#[derive(Clone)]
enum CutRule {
    FastCdc { seed: u64 },
    ToeplitzAes(Arc<PrfCutter>),
}

/// A configured chunker: parameters plus a keyed cut rule. Cheap to clone;
/// usable from any thread. Its `Debug` output omits the key.
#[derive(Clone)]
pub struct Chunker {
    params: ChunkerParams,
    rule: CutRule,
}

impl std::fmt::Debug for Chunker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunker")
            .field("algorithm", &self.algorithm())
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl Chunker {
    /// A FastCDC chunker whose gear table is keyed by `seed`, after
    /// validating the parameters.
    pub fn fastcdc(params: ChunkerParams, seed: u64) -> Result<Self, Error> {
        params.validate()?;
        Ok(Self {
            params,
            rule: CutRule::FastCdc { seed },
        })
    }

    /// A toeplitz-aes chunker under `key`, after validating the parameters.
    pub fn toeplitz_aes(params: ChunkerParams, key: &PrfKey) -> Result<Self, Error> {
        params.validate()?;
        Ok(Self {
            params,
            rule: CutRule::ToeplitzAes(Arc::new(PrfCutter::new(key))),
        })
    }

    /// The parameters this chunker cuts with.
    pub fn params(&self) -> ChunkerParams {
        self.params
    }

    /// The cut rule this chunker uses.
    pub fn algorithm(&self) -> Algorithm {
        match self.rule {
            CutRule::FastCdc { .. } => Algorithm::FastCdc,
            CutRule::ToeplitzAes(_) => Algorithm::ToeplitzAes,
        }
    }

    /// Lengths of the chunks of `data`, treating its end as the end of the stream.
    /// The lengths sum to `data.len()`; empty input gives no chunks.
    pub fn chunk_lengths(&self, data: &[u8]) -> Vec<usize> {
        let mut lengths = Vec::new();
        self.cut(data, true, &mut Vec::new(), |len| lengths.push(len));
        lengths
    }

    /// Cuts `data` from its start, handing each chunk length to `push`, and
    /// returns the bytes cut. Without `at_end`, stops before the tail shorter
    /// than one largest chunk: where that tail is cut depends on bytes not
    /// seen yet.
    fn cut(
        &self,
        data: &[u8],
        at_end: bool,
        scratch: &mut Vec<prf::Block>,
        mut push: impl FnMut(usize),
    ) -> usize {
        let max = self.params.max_size as usize;
        let mut consumed = 0usize;
        match &self.rule {
            CutRule::FastCdc { seed } => {
                let p = self.params;
                // FastCDC is lazy: nothing past the last cut taken is scanned.
                let mut cdc = FastCDC::with_level_and_seed(
                    data,
                    p.min_size as usize,
                    p.avg_size as usize,
                    p.max_size as usize,
                    p.level(),
                    *seed,
                );
                while at_end || data.len() - consumed >= max {
                    let Some(chunk) = cdc.next() else { break };
                    push(chunk.length);
                    consumed += chunk.length;
                }
            }
            CutRule::ToeplitzAes(cutter) => {
                while consumed < data.len() && (at_end || data.len() - consumed >= max) {
                    let rest = data.get(consumed..).unwrap_or_default();
                    let len = cutter.first_cut(rest, self.params, scratch);
                    push(len);
                    consumed += len;
                }
            }
        }
        consumed
    }

    /// Streams `reader` as chunks, reading in large sequential blocks (never
    /// mapping the source: a file truncated while mapped would kill the process).
    pub fn stream<R: Read>(&self, reader: R) -> ChunkStream<R> {
        self.stream_with(reader, StreamBuffer::default(), None)
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

    /// A chunker of each algorithm, keyed by `seed`.
    fn both(params: ChunkerParams, seed: u64) -> [Chunker; 2] {
        let mut aes = [0u8; 32];
        aes[..8].copy_from_slice(&seed.to_le_bytes());
        [
            Chunker::fastcdc(params, seed).unwrap(),
            Chunker::toeplitz_aes(params, &PrfKey::new(seed, &aes)).unwrap(),
        ]
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
        let key = PrfKey::new(1, &[1; 32]);
        let mut p = small();
        p.min_size = 8192;
        assert!(Chunker::fastcdc(p, 0).is_err());
        assert!(Chunker::toeplitz_aes(p, &key).is_err());
        let mut p = small();
        p.normalization = 9;
        assert!(Chunker::fastcdc(p, 0).is_err());
        let mut p = small();
        p.avg_size = 1023;
        assert!(Chunker::fastcdc(p, 0).is_err());
        let mut p = small();
        p.min_size = 32;
        assert!(Chunker::toeplitz_aes(p, &key).is_err());
        assert!(Chunker::fastcdc(ChunkerParams::default(), 1).is_ok());
        assert!(Chunker::toeplitz_aes(ChunkerParams::default(), &key).is_ok());
    }

    #[test]
    fn the_key_changes_boundaries() {
        let data = pseudo_random(200_000, 7);
        for (a, b) in both(small(), 1).iter().zip(&both(small(), 2)) {
            assert_ne!(a.chunk_lengths(&data), b.chunk_lengths(&data));
        }
    }

    /// Both rules gather chunk sizes around the average on random data, and
    /// cut the same bytes the same way wherever they sit in the stream (a
    /// decision depends only on the chunk's own bytes): after a prefix is
    /// inserted, the cuts fall back into step.
    #[test]
    fn sizes_gather_around_the_average_and_cuts_resynchronize() {
        let data = pseudo_random(2_000_000, 11);
        for chunker in both(small(), 5) {
            let lengths = chunker.chunk_lengths(&data);
            let mean = data.len() / lengths.len();
            assert!((700..1800).contains(&mean), "{chunker:?}: mean {mean}");
            let mut shifted = pseudo_random(5000, 12);
            shifted.extend_from_slice(&data);
            let ends = |lens: &[usize], offset: usize| {
                let mut at = 0;
                lens.iter()
                    .map(|l| {
                        at += l;
                        at.saturating_sub(offset)
                    })
                    .collect::<std::collections::BTreeSet<_>>()
            };
            let original = ends(&lengths, 0);
            let moved = ends(&chunker.chunk_lengths(&shifted), 5000);
            let shared = original.intersection(&moved).count();
            assert!(
                shared + 10 >= original.len(),
                "{chunker:?}: {shared} of {}",
                original.len()
            );
        }
    }

    #[test]
    fn debug_output_omits_the_seed() {
        let seed = 0x1234_5678_9abc_def1_u64;
        let key = PrfKey::new(seed, &[0xab; 32]);
        for chunker in both(small(), seed) {
            let shown = format!("{chunker:?} {key:?}");
            for secret in [seed.to_string(), format!("{seed:x}"), format!("{seed:X}")] {
                assert!(!shown.contains(&secret), "{shown}");
            }
            assert!(
                !shown.contains("171") && !shown.contains("ab, ab"),
                "{shown}"
            );
        }
    }

    #[test]
    fn empty_input_has_no_chunks() {
        for c in both(small(), 3) {
            assert!(c.chunk_lengths(&[]).is_empty());
            assert!(collect_stream(&c, &[]).is_empty());
        }
    }

    proptest! {
        #[test]
        fn stream_reassembles_and_matches_in_memory(len in 0usize..60_000, seed in any::<u64>(), rseed in any::<u64>()) {
            let data = pseudo_random(len, rseed);
            for c in both(small(), seed) {
            let chunks = collect_stream(&c, &data);
            prop_assert_eq!(chunks.concat(), data.clone());
            let lens: Vec<usize> = chunks.iter().map(Vec::len).collect();
            prop_assert_eq!(lens.clone(), c.chunk_lengths(&data));
            for (i, l) in lens.iter().enumerate() {
                prop_assert!(*l <= 4096);
                if i + 1 < lens.len() { prop_assert!(*l >= 256); }
            }
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
            for c in both(small(), 9) {
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
        }

        #[test]
        fn arbitrary_bytes_reassemble(data in proptest::collection::vec(any::<u8>(), 0..20_000)) {
            for c in both(small(), 42) {
                prop_assert_eq!(collect_stream(&c, &data).concat(), data.clone());
            }
        }
    }
}
