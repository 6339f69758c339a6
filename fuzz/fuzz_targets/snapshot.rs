//! Fuzzes the snapshot decoder and its sealed envelope.
#![no_main]
use std::sync::LazyLock;

use cairn_crypto::{MasterSecret, WorkingKeys};
use cairn_meta::Snapshot;
use libfuzzer_sys::fuzz_target;

static KEYS: LazyLock<WorkingKeys> =
    LazyLock::new(|| WorkingKeys::derive(&MasterSecret::generate().expect("rng")));

fuzz_target!(|data: &[u8]| {
    let _ = Snapshot::decode(data);
    let _ = Snapshot::open(&KEYS.metadata, data);
});
