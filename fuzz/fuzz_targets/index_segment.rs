//! Fuzzes the index segment decoder; what decodes re-encodes identically.
#![no_main]
use cairn_index::Index;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(index) = Index::decode_segment(data) {
        let bytes = index
            .encode_segment()
            .expect("a decoded segment is within limits");
        let again = Index::decode_segment(&bytes).expect("re-decode");
        assert_eq!(again.len(), index.len());
    }
});
