//! Key recovery from observed cut points, reimplemented twice. The attacker
//! planted a file it knows and learns the exact length of every chunk (more
//! than a cairn server sees: chunk lengths are inside encrypted packs).
//!
//! 1. The attack of Truong et al. (ePrint 2025/558, "Breaking and Fixing
//!    Content-Defined Chunking") on a seeded gear table: the seed, bit by
//!    bit, then a prediction of how another known file is cut. It works
//!    against FastCDC and finds no seed behind toeplitz-aes's cuts.
//! 2. Linear algebra on the Toeplitz layer: without AES the digest is linear
//!    in its key K, every cut gives one equation per mask bit, and a handful
//!    of cuts give K (shown against the layer alone, simulated here). With
//!    AES on top, no K explains the cuts. So neither layer of toeplitz-aes
//!    falls to the attack that breaks it alone.
//!
//! These show that the known attacks fail, not that none exists; what rests
//! on AES-256 being a PRF is said in `src/prf.rs`.

use cairn_chunker::{Chunker, ChunkerParams, PrfKey};
use fastcdc::v2020::{MASKS, get_gear_with_seed};

fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A cut the attacker saw: where the chunk started, and its length.
struct Cut {
    start: usize,
    len: usize,
}

/// The cuts of `data` that the cut condition made (not the size limit, not
/// the end of the stream), from the chunk lengths the attacker observed.
fn decided_cuts(lengths: &[usize], params: ChunkerParams, data_len: usize) -> Vec<Cut> {
    let mut cuts = Vec::new();
    let mut start = 0;
    for &len in lengths {
        let content_cut = len < params.max_size as usize;
        // Chunks near the end are cut with other rules (FastCDC moves its
        // center); the attacker leaves them out.
        if content_cut && start + params.max_size as usize <= data_len {
            cuts.push(Cut { start, len });
        }
        start += len;
    }
    cuts
}

/// FastCDC v2020's gear hash where a chunk of `len` bytes starting at
/// `start` was cut, with the gear table keyed by `seed`: the hash is reset at
/// `min_size` and takes one byte more than the chunk (the crate tests the
/// byte at index `len` before cutting in front of it).
fn gear_hash(data: &[u8], cut: &Cut, min: usize, gear: &[u64], seed: u64) -> u64 {
    let from = (cut.start + min).max((cut.start + cut.len).saturating_sub(63));
    data[from..=cut.start + cut.len]
        .iter()
        .fold(0u64, |h, &b| (h << 1).wrapping_add(gear[b as usize] ^ seed))
}

/// The bit-by-bit seed search: bit k of the gear hash depends only on seed
/// bits 0..=k, so candidates for the low bits are extended one bit at a time
/// and kept while every observed cut has the masked hash bits zero so far.
/// Returns a seed explaining every cut, or `None`.
fn recover_seed(data: &[u8], lengths: &[usize], params: ChunkerParams) -> Option<u64> {
    let gear = get_gear_with_seed(0).0;
    let cuts = decided_cuts(lengths, params, data.len());
    assert!(cuts.len() >= 15, "too few cuts to attack: {}", cuts.len());
    let bits = params.avg_size.ilog2();
    let level = u32::from(params.normalization);
    let strict = MASKS[(bits + level) as usize];
    let loose = MASKS[(bits - level) as usize];
    let min = params.min_size as usize;
    let avg = params.avg_size as usize;
    let mut candidates = vec![0u64];
    for k in 0..64 {
        let low = if k == 63 {
            u64::MAX
        } else {
            (1u64 << (k + 1)) - 1
        };
        let mut next = Vec::new();
        for &c in &candidates {
            for guess in [c, c | (1 << k)] {
                let explains_every_cut = cuts.iter().all(|cut| {
                    let mask = if cut.len < avg { strict } else { loose };
                    gear_hash(data, cut, min, &gear, guess) & mask & low == 0
                });
                if explains_every_cut {
                    next.push(guess);
                }
            }
        }
        // Bits below the lowest mask bit are only tested when it is
        // reached: up to 2^13 candidates at 1 MiB average.
        next.truncate(1 << 16);
        candidates = next;
        if candidates.is_empty() {
            return None;
        }
    }
    candidates.first().copied()
}

fn attack(target: &Chunker) -> (Option<u64>, bool) {
    let params = target.params();
    // The planted file: 24 MiB the attacker knows, about 20 cuts.
    let planted = noise(24 << 20, 0x5eed);
    let seen = target.chunk_lengths(&planted);
    let recovered = recover_seed(&planted, &seen, params);
    // With the seed, the attacker predicts how another known file is cut
    // (the fingerprinting step).
    let other = noise(12 << 20, 0xface);
    let predicted = recovered.is_some_and(|seed| {
        let guess = Chunker::fastcdc(params, seed).expect("params");
        guess.chunk_lengths(&other) == target.chunk_lengths(&other)
    });
    (recovered, predicted)
}

#[test]
fn the_seed_of_fastcdc_falls_to_observed_cuts() {
    let secret = 0x8f1b_c3a5_07d9_e264;
    let target = Chunker::fastcdc(ChunkerParams::default(), secret).expect("params");
    let (recovered, predicted) = attack(&target);
    let recovered = recovered.expect("the search finds a seed");
    // The bits that reach a mask bit (0..=47 at 1 MiB) are the secret's.
    let effective = (1u64 << 48) - 1;
    assert_eq!(recovered & effective, secret & effective);
    assert!(predicted, "the recovered seed predicts another file's cuts");
}

#[test]
fn no_gear_seed_explains_the_cuts_of_toeplitz_aes() {
    let key = PrfKey::new(0x8f1b_c3a5_07d9_e264, &[0x42; 32]);
    let target = Chunker::toeplitz_aes(ChunkerParams::default(), &key).expect("params");
    let (recovered, predicted) = attack(&target);
    assert_eq!(recovered, None, "no gear seed explains a PRF's cuts");
    assert!(!predicted);
}

// The Toeplitz layer: GF(2^64) modulo x^64 + x^4 + x^3 + x + 1, public.

const POLY_LOW: u64 = 0b1_1011;

fn times_x(v: u64) -> u64 {
    (v << 1) ^ if v >> 63 == 1 { POLY_LOW } else { 0 }
}

fn gf_mul(a: u64, b: u64) -> u64 {
    let (mut a, mut product) = (a, 0);
    for i in 0..64 {
        if b >> i & 1 == 1 {
            product ^= a;
        }
        a = times_x(a);
    }
    product
}

/// The window as a polynomial reduced mod p: public, key-free. The digest
/// is K times this.
fn residue(window: &[u8]) -> u64 {
    window
        .iter()
        .fold(0, |r, &b| (0..8).fold(r, |r, _| times_x(r)) ^ u64::from(b))
}

fn masks(params: ChunkerParams) -> (u64, u64) {
    let bits = params.avg_size.ilog2();
    let level = u32::from(params.normalization);
    ((1 << (bits + level)) - 1, (1 << (bits - level)) - 1)
}

/// The toeplitz-aes rule with AES removed: cut where the digest's masked
/// bits are zero. What an implementation that trusted the keyed hash alone
/// would do.
fn linear_rule_lengths(data: &[u8], params: ChunkerParams, k: u64) -> Vec<usize> {
    let (min, avg, max) = (
        params.min_size as usize,
        params.avg_size as usize,
        params.max_size as usize,
    );
    let (strict, loose) = masks(params);
    let leave: Vec<u64> = (0..256u64)
        .map(|b| (0..512).fold(b, |v, _| times_x(v)))
        .collect();
    let mut lengths = Vec::new();
    let mut start = 0;
    while start < data.len() {
        let rest = &data[start..];
        let mut len = rest.len().min(max);
        if rest.len() > min {
            let mut r = residue(&rest[min - 64..min]);
            for at in min..len {
                let mask = if at < avg { strict } else { loose };
                if gf_mul(r, k) & mask == 0 {
                    len = at;
                    break;
                }
                let shifted = (0..8).fold(r, |r, _| times_x(r));
                r = shifted ^ u64::from(rest[at]) ^ leave[usize::from(rest[at - 64])];
            }
        } else {
            len = rest.len();
        }
        lengths.push(len);
        start += len;
    }
    lengths
}

/// Solves for K: every cut at a window with residue r says the masked bits
/// of K·r are zero, one linear equation over GF(2) per bit. Returns K if the
/// equations leave exactly one non-zero solution.
fn recover_hash_key(data: &[u8], lengths: &[usize], params: ChunkerParams) -> Option<u64> {
    let (strict, loose) = masks(params);
    let mut rows = Vec::new();
    for cut in decided_cuts(lengths, params, data.len()) {
        let end = cut.start + cut.len;
        let r = residue(&data[end - 64..end]);
        // Column j of "multiply by r" is x^j · r.
        let mut columns = [0u64; 64];
        let mut c = r;
        for column in &mut columns {
            *column = c;
            c = times_x(c);
        }
        let mask = if cut.len < params.avg_size as usize {
            strict
        } else {
            loose
        };
        for bit in (0..64).filter(|bit| mask >> bit & 1 == 1) {
            let row = (0..64).fold(0u64, |row, j| row | (columns[j] >> bit & 1) << j);
            rows.push(row);
        }
    }
    // Gaussian elimination; the solutions are spanned by the free columns.
    let mut pivots: Vec<(usize, u64)> = Vec::new();
    for mut row in rows {
        for &(col, pivot_row) in &pivots {
            if row >> col & 1 == 1 {
                row ^= pivot_row;
            }
        }
        if row != 0 {
            let col = row.trailing_zeros() as usize;
            for (_, other) in pivots.iter_mut() {
                if *other >> col & 1 == 1 {
                    *other ^= row;
                }
            }
            pivots.push((col, row));
        }
    }
    let free: Vec<usize> = (0..64)
        .filter(|c| pivots.iter().all(|(p, _)| p != c))
        .collect();
    let [only] = free[..] else { return None };
    // Set the free unknown to 1; each pivot unknown then equals its row's
    // coefficient of the free one.
    let k = pivots
        .iter()
        .fold(1u64 << only, |k, &(col, row)| k | (row >> only & 1) << col);
    Some(k)
}

#[test]
fn the_toeplitz_layer_alone_falls_to_linear_algebra() {
    let params = ChunkerParams::default();
    let k = 0x3c6e_f372_fe94_f82b;
    let planted = noise(8 << 20, 0x1dea);
    let seen = linear_rule_lengths(&planted, params, k);
    assert_eq!(recover_hash_key(&planted, &seen, params), Some(k));
    let other = noise(4 << 20, 0xbeef);
    assert_eq!(
        linear_rule_lengths(&other, params, k),
        linear_rule_lengths(
            &other,
            params,
            recover_hash_key(&planted, &seen, params).unwrap_or(0)
        )
    );
}

#[test]
fn with_aes_on_top_no_hash_key_explains_the_cuts() {
    let params = ChunkerParams::default();
    let key = PrfKey::new(0x3c6e_f372_fe94_f82b, &[0x17; 32]);
    let target = Chunker::toeplitz_aes(params, &key).expect("params");
    let planted = noise(24 << 20, 0x1dea);
    let seen = target.chunk_lengths(&planted);
    assert!(decided_cuts(&seen, params, planted.len()).len() >= 5);
    assert_eq!(recover_hash_key(&planted, &seen, params), None);
}
