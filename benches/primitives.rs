//! Criterion micro-benchmarks of the primitives a backup runs per byte:
//! chunking, keyed hashing, sealing, pack writing and index lookups.
//! Run with `cargo bench -p cairn-benches` (or `just bench`). Fixed seeds.

use cairn_benches::incompressible;
use cairn_chunker::{Chunker, ChunkerParams, PrfKey};
use cairn_crypto::{BlobId, Compression, MasterSecret, PackId, SealKind, WorkingKeys};
use cairn_index::{BlobLocation, Index};
use cairn_pack::{BlobKind, PackEntry, PackWriter};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

fn keys() -> WorkingKeys {
    WorkingKeys::derive(&MasterSecret::generate().expect("rng"))
}

fn primitives(c: &mut Criterion) {
    let data = incompressible(64 * 1024 * 1024, 42);
    let k = keys();
    let mut group = c.benchmark_group("primitives");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(data.len() as u64));

    // Both cut rules, on both profiles (media: 1 MiB average; databases
    // edited in place: 16 KiB).
    let prf = PrfKey::new(k.chunker_prf.hash_key(), k.chunker_prf.aes_key());
    let in_place = ChunkerParams {
        min_size: 4096,
        avg_size: 16384,
        max_size: 65536,
        normalization: 1,
    };
    for (profile, params) in [
        ("1MiB_avg", ChunkerParams::default()),
        ("16KiB_avg", in_place),
    ] {
        let fastcdc = Chunker::fastcdc(params, k.chunker_seed.value()).expect("chunker");
        group.bench_function(format!("chunk_fastcdc_{profile}"), |b| {
            b.iter(|| black_box(fastcdc.chunk_lengths(black_box(&data))))
        });
        let toeplitz_aes = Chunker::toeplitz_aes(params, &prf).expect("chunker");
        group.bench_function(format!("chunk_toeplitz_aes_{profile}"), |b| {
            b.iter(|| black_box(toeplitz_aes.chunk_lengths(black_box(&data))))
        });
    }
    group.bench_function("keyed_blake3_1MiB_pieces", |b| {
        b.iter(|| {
            for piece in data.chunks(1024 * 1024) {
                black_box(k.blob_ids.id_of(BlobKind::Data, piece));
            }
        })
    });
    group.bench_function("seal_incompressible_1MiB_pieces", |b| {
        b.iter(|| {
            for piece in data.chunks(1024 * 1024) {
                black_box(
                    cairn_crypto::seal(&k.data, SealKind::Data, &[0; 32], piece).expect("seal"),
                );
            }
        })
    });
    let sealed: Vec<_> = data
        .chunks(1024 * 1024)
        .map(|piece| {
            let id = k.blob_ids.id_of(BlobKind::Data, piece);
            (
                id,
                cairn_crypto::seal(&k.data, SealKind::Data, id.as_bytes(), piece).expect("seal"),
                piece.len(),
            )
        })
        .collect();
    group.bench_function("pack_write_16MiB_packs", |b| {
        b.iter(|| {
            let mut writer = PackWriter::new(BlobKind::Data);
            for (id, blob, len) in &sealed {
                writer.add(*id, blob.clone(), *len).expect("add");
                if writer.len() >= 16 * 1024 * 1024 {
                    let full = std::mem::replace(&mut writer, PackWriter::new(BlobKind::Data));
                    black_box(full.finish(&k.metadata).expect("finish"));
                }
            }
            black_box(writer.finish(&k.metadata).expect("finish"))
        })
    });
    group.finish();

    let mut group = c.benchmark_group("index");
    for n in [100_000u32, 1_000_000] {
        let mut index = Index::new();
        let ids: Vec<BlobId> = (0..n)
            .map(|i| k.blob_ids.id_of(BlobKind::Data, &i.to_le_bytes()))
            .collect();
        for (i, id) in ids.iter().enumerate() {
            index.insert(BlobLocation {
                pack: PackId::from_bytes([(i % 251) as u8; 32]),
                entry: PackEntry {
                    id: *id,
                    kind: BlobKind::Data,
                    compression: Compression::None,
                    offset: i as u32,
                    sealed_len: 1000,
                    plain_len: 972,
                },
            });
        }
        group.throughput(Throughput::Elements(10_000));
        group.bench_with_input(BenchmarkId::new("lookup_10k", n), &ids, |b, ids| {
            b.iter(|| {
                for id in ids.iter().step_by((n / 10_000) as usize) {
                    black_box(index.get(BlobKind::Data, id));
                }
            })
        });
    }
    group.finish();
}

/// The bound of the toeplitz-aes chunker: one AES-256 block per candidate
/// position (the `aes` crate, as the chunker calls it, batches of 4,096).
fn aes_bound(c: &mut Criterion) {
    use aes::Aes256;
    use aes::cipher::{Array, BlockCipherEncrypt, KeyInit};
    let cipher = Aes256::new(&Array::from([7u8; 32]));
    let mut blocks: Vec<aes::Block> = (0..4096u32)
        .map(|i| Array::from(u128::from(i).to_le_bytes()))
        .collect();
    let mut group = c.benchmark_group("bounds");
    group.sample_size(10);
    group.throughput(Throughput::Elements(blocks.len() as u64));
    group.bench_function("aes256_blocks_4096", |b| {
        b.iter(|| cipher.encrypt_blocks(black_box(&mut blocks)))
    });
    group.finish();
}

criterion_group!(benches, primitives, aes_bound);
criterion_main!(benches);
