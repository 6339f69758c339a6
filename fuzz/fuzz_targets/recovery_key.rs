//! Fuzzes the recovery-key parser: any text gives a key or a typed error.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(key) = cairn_crypto::RecoveryKey::parse(text) {
            // A parsed key round-trips through its displayed form.
            let again =
                cairn_crypto::RecoveryKey::parse(&key.to_grouped_string()).expect("reparse");
            assert!(again == key);
        }
    }
});
