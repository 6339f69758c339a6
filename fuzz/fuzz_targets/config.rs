//! Fuzzes the config: the plaintext decoder and the sealed envelope.
#![no_main]
use std::sync::LazyLock;

use cairn_crypto::{MasterSecret, WorkingKeys};
use cairn_meta::{Format, RepoConfig};
use libfuzzer_sys::fuzz_target;

static KEYS: LazyLock<WorkingKeys> =
    LazyLock::new(|| WorkingKeys::derive(&MasterSecret::generate().expect("rng")));

fuzz_target!(|data: &[u8]| {
    let _ = RepoConfig::decode(data, Format::V1);
    let _ = RepoConfig::decode(data, Format::V2);
    let _ = RepoConfig::open(&KEYS.metadata, data);
});
