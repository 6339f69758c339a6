//! Fuzzes the tree decoder: every decoded tree has only safe, sorted names.
#![no_main]
use cairn::decode::Tree;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(tree) = Tree::decode(data) {
        for node in &tree.nodes {
            assert!(cairn::tree_name_is_safe(&node.name));
        }
        assert_eq!(Tree::decode(&tree.encode()).ok(), Some(tree));
    }
});
