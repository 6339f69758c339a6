//! The PRF cut rule ("toeplitz-aes"): whether a chunk may end at a position is
//! decided by AES-256 of a keyed hash of the 64 bytes before it.
//!
//! ```text
//! window  = the 64 bytes ending at the candidate position
//! digest  = Σ_t byte_t(x) · x^(8t) · K   mod p,  p = x^64 + x^4 + x^3 + x + 1
//!           (t = 0 for the newest byte; a byte's bits are a polynomial of degree < 8;
//!            K is a secret element of GF(2^64))
//! value   = the first 8 bytes (little-endian) of AES-256_k(digest as 16 LE bytes)
//! cut if    value & mask == 0   (mask: floor(log2(avg)) + level bits before the
//!                                 average size, floor(log2(avg)) - level after it)
//! ```
//!
//! What carries the security is AES. With p fixed and public, the digest is
//! K · (window mod p): a secret bijection applied to a residue anyone can
//! compute, so windows congruent mod p collide whatever K is (a Toeplitz hash
//! is universal only with a secret random p). The rule is therefore AES-256
//! under a secret key applied to a public 64-bit compression of the window,
//! and an observer of cut points learns outputs of a PRF it cannot evaluate:
//! no equation about the key, and no offline prediction of how another file
//! is cut. K costs nothing and adds a layer, not a guarantee. There is no
//! cheaper keyed prefilter in front of AES: any such filter (a seeded gear
//! hash above all; the digest alone would be linear in K) gives the observer
//! equations about its key (`tests/attack.rs` shows both).
//!
//! The digest is linear in the window, so it rolls: one shift, a reduction
//! computed with shifts and XORs, two table lookups indexed by content bytes
//! (the tables hold multiples of K; no memory address depends on a secret)
//! and three XORs per byte. It does not depend on where earlier chunks were
//! cut, so digests are computed in batches, four independent lanes at a time,
//! and AES runs over a whole batch at once (the `aes` crate pipelines it with
//! AES-NI). AES is most of the cost: one block per candidate position.

use aes::Aes256;
use aes::cipher::{Array, BlockCipherEncrypt, KeyInit};
use zeroize::Zeroize;

use crate::ChunkerParams;

/// Bytes hashed for each cut decision.
pub const WINDOW: usize = 64;
/// The low terms of the reduction polynomial: x^64 ≡ x^4 + x^3 + x + 1.
const POLY_LOW: u64 = 0b1_1011;
/// Candidate positions evaluated per batch. Large enough that priming the
/// lanes (64 bytes each) is a small overhead, small enough that the work done
/// past a cut found early in a batch stays small against a chunk.
const BATCH: usize = 4096;
/// Independent rolling hashes per batch: their dependency chains interleave.
const LANES: usize = 4;

/// An AES block.
pub(crate) type Block = Array<u8, aes::cipher::consts::U16>;

/// The PRF chunker's secret: the hash key K and the AES-256 key. Wiped on drop;
/// its `Debug` output is redacted.
#[derive(Clone)]
pub struct PrfKey {
    toeplitz: u64,
    aes: [u8; 32],
}

impl PrfKey {
    /// A key from its two parts. A zero hash key (which would make every
    /// digest zero) is replaced by 1; a derived key is zero with probability
    /// 2^-64.
    pub fn new(toeplitz: u64, aes: &[u8; 32]) -> Self {
        Self {
            toeplitz: toeplitz.max(1),
            aes: *aes,
        }
    }
}

impl Drop for PrfKey {
    fn drop(&mut self) {
        self.toeplitz.zeroize();
        self.aes.zeroize();
    }
}

impl std::fmt::Debug for PrfKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrfKey(<redacted>)")
    }
}

/// Multiplication in GF(2^64) modulo p, bit by bit (only to build tables).
const fn gf_mul(a: u64, b: u64) -> u64 {
    let (mut a, mut b, mut product) = (a, b, 0u64);
    while b != 0 {
        if b & 1 == 1 {
            product ^= a;
        }
        let carry = a >> 63;
        a <<= 1;
        if carry == 1 {
            a ^= POLY_LOW;
        }
        b >>= 1;
    }
    product
}

/// x^(8·WINDOW) mod p: what a byte entering the window has been multiplied by
/// when it leaves.
const fn x_pow_window() -> u64 {
    let mut v = 1u64;
    let mut i = 0;
    while i < 8 * WINDOW {
        let carry = v >> 63;
        v <<= 1;
        if carry == 1 {
            v ^= POLY_LOW;
        }
        i += 1;
    }
    v
}

/// t(x) · x^64 mod p for the 8 bits `t` shifted out of a digest multiplied by
/// x^8: shifts and XORs, not a table (`t` is secret: an index would leak it
/// to a cache-timing observer).
#[inline(always)]
const fn reduce(t: u64) -> u64 {
    t ^ (t << 1) ^ (t << 3) ^ (t << 4)
}

/// The keyed cut rule: secret tables and the AES key schedule.
pub(crate) struct PrfCutter {
    /// `enter[b]` = b(x) · K mod p.
    enter: [u64; 256],
    /// `leave[b]` = b(x) · x^512 · K mod p.
    leave: [u64; 256],
    aes: Aes256,
}

impl Drop for PrfCutter {
    fn drop(&mut self) {
        self.enter.zeroize();
        self.leave.zeroize();
    }
}

impl PrfCutter {
    pub fn new(key: &PrfKey) -> Self {
        let k_leave = gf_mul(x_pow_window(), key.toeplitz);
        let mut enter = [0u64; 256];
        let mut leave = [0u64; 256];
        for (b, (e, l)) in (0u64..).zip(enter.iter_mut().zip(leave.iter_mut())) {
            *e = gf_mul(b, key.toeplitz);
            *l = gf_mul(b, k_leave);
        }
        Self {
            enter,
            leave,
            // From the key's own bytes: no unwiped copy on the stack.
            aes: Aes256::new((&key.aes).into()),
        }
    }

    /// One rolling step: the digest of the window one byte later.
    #[inline(always)]
    fn roll(&self, digest: u64, enters: u8, leaves: u8) -> u64 {
        (digest << 8)
            ^ reduce(digest >> 56)
            ^ self.enter[usize::from(enters)]
            ^ self.leave[usize::from(leaves)]
    }

    /// The digest of `window` (64 bytes, or fewer: as if zeros came first).
    fn digest_of(&self, window: &[u8]) -> u64 {
        window.iter().fold(0, |d, &b| self.roll(d, b, 0))
    }

    /// Writes into `out[i]` the AES input for the window ending at
    /// `end + i` (exclusive), for every `i < out.len()`. Needs
    /// `WINDOW <= end` and `end + out.len() <= data.len()`.
    fn digests(&self, data: &[u8], end: usize, out: &mut [Block]) {
        let one_by_one = |from: usize, slots: &mut [Block]| {
            for (e, slot) in (from..).zip(slots.iter_mut()) {
                let window = e.checked_sub(WINDOW).and_then(|s| data.get(s..e));
                *slot = to_block(window.map_or(0, |w| self.digest_of(w)));
            }
        };
        let lane_len = out.len() / LANES;
        // Lane k covers the ends end + k·lane_len .. end + (k+1)·lane_len:
        // its first digest, and the bytes entering and leaving its window.
        let lane = |k: usize| {
            let e = end + k * lane_len;
            let start = e.checked_sub(WINDOW)?;
            let entering = data.get(e..e + lane_len)?;
            let leaving = data.get(start..start + lane_len)?;
            Some((self.digest_of(data.get(start..e)?), entering, leaving))
        };
        let (Some(l0), Some(l1), Some(l2), Some(l3)) = (lane(0), lane(1), lane(2), lane(3)) else {
            // Outside the contract: slow, but never a panic.
            return one_by_one(end, out);
        };
        let (lanes_out, tail_out) = out.split_at_mut(lane_len * LANES);
        let (o0, rest) = lanes_out.split_at_mut(lane_len);
        let (o1, rest) = rest.split_at_mut(lane_len);
        let (o2, o3) = rest.split_at_mut(lane_len);
        let mut d = [l0.0, l1.0, l2.0, l3.0];
        // Every slice is lane_len long: checked once here, not per byte.
        let n = lane_len;
        let (e0, e1, e2, e3) = (&l0.1[..n], &l1.1[..n], &l2.1[..n], &l3.1[..n]);
        let (x0, x1, x2, x3) = (&l0.2[..n], &l1.2[..n], &l2.2[..n], &l3.2[..n]);
        let (o0, o1, o2, o3) = (&mut o0[..n], &mut o1[..n], &mut o2[..n], &mut o3[..n]);
        for i in 0..n {
            o0[i] = to_block(d[0]);
            o1[i] = to_block(d[1]);
            o2[i] = to_block(d[2]);
            o3[i] = to_block(d[3]);
            d[0] = self.roll(d[0], e0[i], x0[i]);
            d[1] = self.roll(d[1], e1[i], x1[i]);
            d[2] = self.roll(d[2], e2[i], x2[i]);
            d[3] = self.roll(d[3], e3[i], x3[i]);
        }
        one_by_one(end + lane_len * LANES, tail_out);
    }

    /// The length of the chunk that starts at `data[0]`, where `data` runs
    /// at least to the largest chunk's end or to the end of the stream.
    pub fn first_cut(&self, data: &[u8], params: ChunkerParams, scratch: &mut Vec<Block>) -> usize {
        let (min, avg, max) = (
            params.min_size as usize,
            params.avg_size as usize,
            params.max_size as usize,
        );
        if data.len() <= min {
            return data.len();
        }
        let limit = data.len().min(max);
        let (strict, loose) = masks(params);
        if scratch.len() < BATCH {
            scratch.resize(BATCH, Block::default());
        }
        let mut end = min;
        while end < limit {
            let n = (limit - end).min(BATCH);
            let Some(batch) = scratch.get_mut(..n) else {
                break;
            };
            self.digests(data, end, batch);
            self.aes.encrypt_blocks(batch);
            // Lengths below the average need the strict mask, the rest
            // the loose one: two plain searches, no per-position choice.
            let strict_part = avg.saturating_sub(end).min(n);
            let (early, late) = batch.split_at(strict_part);
            let found = early
                .iter()
                .position(|out| low_64(out) & strict == 0)
                .or_else(|| {
                    let at = late.iter().position(|out| low_64(out) & loose == 0)?;
                    Some(strict_part + at)
                });
            if let Some(at) = found {
                return end + at;
            }
            end += n;
        }
        limit
    }
}

/// The AES input holding a digest: its 8 bytes little-endian, then zeros.
#[inline(always)]
fn to_block(digest: u64) -> Block {
    Block::from(u128::from(digest).to_le_bytes())
}

/// The first 8 bytes of an AES output, little-endian.
#[inline(always)]
fn low_64(block: &Block) -> u64 {
    let bytes: [u8; 16] = (*block).into();
    u128::from_le_bytes(bytes) as u64
}

/// The masks before and after the average size (FastCDC's normalization:
/// harder to cut early, easier late, so sizes gather around the average).
fn masks(params: ChunkerParams) -> (u64, u64) {
    let bits = params.avg_size.max(2).ilog2();
    let level = u32::from(params.normalization);
    let mask = |b: u32| (1u64 << b.min(63)) - 1;
    (mask(bits + level), mask(bits.saturating_sub(level)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    /// The digest computed from its definition: Σ byte_t · x^(8t) · K mod p.
    fn digest_by_definition(window: &[u8], k: u64) -> u64 {
        let mut sum = 0u64;
        for (t, &b) in window.iter().rev().enumerate() {
            let mut term = gf_mul(u64::from(b), k);
            for _ in 0..8 * t {
                term = gf_mul(term, 2);
            }
            sum ^= term;
        }
        sum
    }

    #[test]
    fn rolling_digests_match_the_definition() {
        let key = PrfKey::new(0x9e37_79b9_7f4a_7c15, &[3; 32]);
        let cutter = PrfCutter::new(&key);
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect();
        // Batches of every shape: lanes and tail, short and long.
        for (end, n) in [
            (64, 1),
            (64, 3),
            (100, 4),
            (64, 4096),
            (777, 1234),
            (200, 4801),
        ] {
            let mut out = vec![Block::default(); n];
            cutter.digests(&data, end, &mut out);
            for (i, got) in out.iter().enumerate() {
                let e = end + i;
                let want = if e <= data.len() {
                    digest_by_definition(&data[e - WINDOW..e], key.toeplitz)
                } else {
                    // Past the data (never cut there): the window as if
                    // zeros followed.
                    continue;
                };
                assert_eq!(got[..8], want.to_le_bytes(), "end {e}");
                assert_eq!(got[8..], [0; 8]);
            }
        }
    }

    /// The cut as the rule states it, one position at a time: no rolling,
    /// no lanes, no batches.
    fn reference_cut(data: &[u8], params: ChunkerParams, key: &PrfKey) -> usize {
        let (min, avg, max) = (
            params.min_size as usize,
            params.avg_size as usize,
            params.max_size as usize,
        );
        if data.len() <= min {
            return data.len();
        }
        let aes = Aes256::new((&key.aes).into());
        let bits = params.avg_size.ilog2() as i32;
        let level = i32::from(params.normalization);
        let limit = data.len().min(max);
        for len in min..limit {
            // Horner's rule on the definition: D = (…(b_63·x^8 + b_62)·x^8 …)·K.
            let window = &data[len - WINDOW..len];
            let d = window
                .iter()
                .fold(0, |d, &b| gf_mul(d, 1 << 8) ^ u64::from(b));
            let mut block = to_block(gf_mul(d, key.toeplitz));
            aes.encrypt_block(&mut block);
            let mask_bits = if len < avg {
                bits + level
            } else {
                bits - level
            };
            if low_64(&block) & ((1u64 << mask_bits) - 1) == 0 {
                return len;
            }
        }
        limit
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// Chunks far longer than a batch (so several batches, the average
        /// falling inside one, and the last one short), against the
        /// reference, on data with long runs (cuts everywhere or nowhere)
        /// and on noise.
        #[test]
        fn first_cut_agrees_with_the_rule_as_stated(
            seed in proptest::prelude::any::<u64>(),
            len in 0usize..40_000,
            runs in proptest::prelude::any::<bool>(),
            level in 0u8..3,
        ) {
            let params = ChunkerParams {
                min_size: 256,
                avg_size: 8192,
                max_size: 20_000,
                normalization: level,
            };
            let key = PrfKey::new(seed, &[seed as u8; 32]);
            let cutter = PrfCutter::new(&key);
            let mut x = seed | 1;
            let data: Vec<u8> = (0..len)
                .map(|i| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    if runs && (i / 3000) % 2 == 0 { 7 } else { x as u8 }
                })
                .collect();
            let mut scratch = Vec::new();
            let mut at = 0;
            while at < data.len() {
                let got = cutter.first_cut(&data[at..], params, &mut scratch);
                proptest::prop_assert_eq!(got, reference_cut(&data[at..], params, &key), "at {}", at);
                at += got;
            }
        }
    }

    #[test]
    fn x_to_the_64_reduces_by_the_polynomial() {
        assert_eq!(gf_mul(1 << 63, 2), POLY_LOW);
        assert_eq!(reduce(1), POLY_LOW);
        // Multiplying by x one bit at a time agrees with the byte-wise
        // reduction, and x^512 is what 64 byte steps make of 1.
        let mut by_bits = 0x8000_0000_0000_0001u64;
        for _ in 0..8 {
            by_bits = gf_mul(by_bits, 2);
        }
        let t = 0x8000_0000_0000_0001u64 >> 56;
        assert_eq!(by_bits, (0x8000_0000_0000_0001u64 << 8) ^ reduce(t));
        let mut by_bytes = 1u64;
        for _ in 0..WINDOW {
            by_bytes = (by_bytes << 8) ^ reduce(by_bytes >> 56);
        }
        assert_eq!(by_bytes, x_pow_window());
    }

    #[test]
    fn masks_follow_the_average_and_the_level() {
        let p = ChunkerParams {
            min_size: 4096,
            avg_size: 16384,
            max_size: 65536,
            normalization: 1,
        };
        assert_eq!(masks(p), ((1 << 15) - 1, (1 << 13) - 1));
    }
}
