//! Fuzzes pack parsing: trailer, header plaintext, and a whole sealed pack.
#![no_main]
use std::sync::LazyLock;

use cairn_crypto::{MasterSecret, PackId, WorkingKeys};
use libfuzzer_sys::fuzz_target;

static KEYS: LazyLock<WorkingKeys> =
    LazyLock::new(|| WorkingKeys::derive(&MasterSecret::generate().expect("rng")));

fuzz_target!(|data: &[u8]| {
    let _ = cairn_pack::decode_trailer(&KEYS.metadata, data);
    if let Some((&[version, a, b, c, d], header)) = data.split_first_chunk::<5>() {
        let _ = cairn_pack::decode_header(header, version, u32::from_le_bytes([a, b, c, d]));
    }
    let _ = cairn_pack::read_pack_entries(&KEYS.metadata, &PackId::of_bytes(data), data);
});
