//! The attack of Truong et al. (ePrint 2025/558, "Breaking and Fixing
//! Content-Defined Chunking") on a seeded gear table, reimplemented: an
//! attacker who planted a file it knows and learns the exact length of every
//! chunk (more than a cairn server ever sees: chunk lengths are inside
//! encrypted, padded packs) recovers the seed bit by bit, then predicts how any
//! other known file is cut. The same attacker against the toeplitz-aes rule
//! finds no seed that explains what it saw, and predicts nothing.

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
fn the_toeplitz_aes_rule_gives_the_attack_nothing() {
    let key = PrfKey::new(0x8f1b_c3a5_07d9_e264, &[0x42; 32]);
    let target = Chunker::toeplitz_aes(ChunkerParams::default(), &key).expect("params");
    let (recovered, predicted) = attack(&target);
    assert_eq!(recovered, None, "no gear seed explains a PRF's cuts");
    assert!(!predicted);
}
