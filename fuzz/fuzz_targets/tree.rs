//! Fuzzes the tree decoder of both formats: every decoded tree has only safe,
//! sorted names, permission-only modes and media only on files, and what it
//! re-encodes to decodes to the same tree.
#![no_main]
use cairn_meta::{Class, Format, NodeKind, Tree, is_valid_name};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for format in [Format::V1, Format::V2] {
        if let Ok(tree) = Tree::decode(data, format) {
            for node in &tree.nodes {
                assert!(is_valid_name(&node.name));
                assert!(node.mode <= 0o7777);
                assert!(node.class == Class::Message || node.kind == NodeKind::File);
                assert!(format == Format::V2 || node.class == Class::Message);
            }
            assert_eq!(Tree::decode(&tree.encode(format), format).ok(), Some(tree));
        }
    }
});
