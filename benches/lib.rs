//! Shared helpers of the benchmarks (`primitives.rs`, `ceiling.rs`).

/// `len` incompressible bytes from a seeded xorshift generator: stands in for
/// encoded media, and is the same on every run.
pub fn incompressible(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}
