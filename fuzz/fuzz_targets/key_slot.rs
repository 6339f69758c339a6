//! Fuzzes the key-slot decoder and unwrapping with a fixed key.
#![no_main]
use std::sync::LazyLock;

use cairn_crypto::{KeySlot, RecoveryKey};
use libfuzzer_sys::fuzz_target;

static KEY: LazyLock<RecoveryKey> =
    LazyLock::new(|| RecoveryKey::parse(&"k".repeat(64)).expect("key"));

fuzz_target!(|data: &[u8]| {
    if let Ok(slot) = KeySlot::decode(data) {
        let _ = slot.unwrap_master(&KEY);
        assert_eq!(KeySlot::decode(&slot.encode()).ok(), Some(slot));
    }
});
