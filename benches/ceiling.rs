//! Prints the throughput ceiling the primitives set on this machine: chunking,
//! keyed hashing and sealing of incompressible data, each timed on one core
//! (median of 5 runs over 256 MiB), combined per byte, then scaled by the number
//! of cores. The end-to-end benchmark compares backups against it.
//!
//! `cargo run --release -p cairn-benches --bin ceiling` prints one JSON line.

use std::hint::black_box;
use std::time::Instant;

use cairn_benches::incompressible;
use cairn_chunker::{Chunker, ChunkerParams, PrfKey};
use cairn_crypto::{BlobKind, MasterSecret, SealKind, WorkingKeys};

/// Median MiB/s of `f` over `data`.
fn mib_per_s(data: &[u8], mut f: impl FnMut(&[u8])) -> f64 {
    let mut rates: Vec<f64> = (0..5)
        .map(|_| {
            let started = Instant::now();
            f(data);
            data.len() as f64 / (1024.0 * 1024.0) / started.elapsed().as_secs_f64()
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    rates[2]
}

fn main() {
    let data = incompressible(256 * 1024 * 1024, 7);
    let keys = WorkingKeys::derive(&MasterSecret::generate().expect("system RNG"));
    // The default cut rule of new repositories.
    let prf = &keys.chunker_prf;
    let chunker = Chunker::toeplitz_aes(
        ChunkerParams::default(),
        &PrfKey::new(prf.hash_key(), prf.aes_key()),
    )
    .expect("params");
    let chunk = mib_per_s(&data, |d| {
        black_box(chunker.chunk_lengths(d));
    });
    let hash = mib_per_s(&data, |d| {
        for piece in d.chunks(1024 * 1024) {
            black_box(keys.blob_ids.id_of(BlobKind::Data, piece));
        }
    });
    let seal = mib_per_s(&data, |d| {
        for piece in d.chunks(1024 * 1024) {
            black_box(
                cairn_crypto::seal(&keys.data, SealKind::Data, &[0; 32], piece).expect("seal"),
            );
        }
    });
    let per_core = 1.0 / (1.0 / chunk + 1.0 / hash + 1.0 / seal);
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "{{\"chunk_mib_s\":{chunk:.0},\"hash_mib_s\":{hash:.0},\"seal_mib_s\":{seal:.0},\"per_core_mib_s\":{per_core:.0},\"cores\":{cores},\"ceiling_mib_s\":{:.0}}}",
        per_core * cores as f64
    );
}
