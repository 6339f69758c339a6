//! Fuzzes the tree decoder: every decoded tree has only safe, sorted names and
//! permission-only modes, and what it re-encodes to decodes to the same tree.
#![no_main]
use cairn_meta::{Tree, is_valid_name};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(tree) = Tree::decode(data) {
        for node in &tree.nodes {
            assert!(is_valid_name(&node.name));
            assert!(node.mode <= 0o7777);
        }
        assert_eq!(Tree::decode(&tree.encode()).ok(), Some(tree));
    }
});
