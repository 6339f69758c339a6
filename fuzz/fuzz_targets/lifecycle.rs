//! Fuzzes the session marker and condemnation record decoders and their
//! sealed envelopes (files any writer, or a hostile server, can plant).
#![no_main]
use std::sync::LazyLock;

use cairn_crypto::{MasterSecret, WorkingKeys};
use cairn_meta::{Condemnation, SessionMarker};
use libfuzzer_sys::fuzz_target;

static KEYS: LazyLock<WorkingKeys> =
    LazyLock::new(|| WorkingKeys::derive(&MasterSecret::generate().expect("rng")));

fuzz_target!(|data: &[u8]| {
    let _ = SessionMarker::decode(data);
    let _ = SessionMarker::open(&KEYS.metadata, data);
    let _ = Condemnation::decode(data);
    let _ = Condemnation::open(&KEYS.metadata, data);
});
