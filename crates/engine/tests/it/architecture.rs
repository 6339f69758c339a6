//! The dependency arrows of ARCHITECTURE.md, checked from the manifests: leaves
//! first, engine above them, CLI on top. A new arrow must be added here and in
//! ARCHITECTURE.md on purpose.

use std::collections::BTreeSet;
use std::path::Path;

/// The `cairn*` crates a manifest's `[dependencies]` section names.
fn cairn_dependencies(manifest: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(manifest).expect("manifest");
    let mut in_deps = false;
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
            continue;
        }
        if in_deps && line.starts_with("cairn") {
            let name = line.split(['.', ' ', '=']).next().expect("name");
            out.insert(name.to_owned());
        }
    }
    out
}

#[test]
fn dependencies_point_one_way() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let expected: &[(&str, &[&str])] = &[
        ("chunker", &[]),
        ("crypto", &[]),
        ("store", &[]),
        ("store-s3", &["cairn-store"]),
        ("pack", &["cairn-crypto"]),
        ("index", &["cairn-crypto", "cairn-pack"]),
        ("meta", &["cairn-chunker", "cairn-crypto"]),
        (
            "engine",
            &[
                "cairn-chunker",
                "cairn-crypto",
                "cairn-index",
                "cairn-meta",
                "cairn-pack",
                "cairn-store",
            ],
        ),
        ("cli", &["cairn", "cairn-store", "cairn-store-s3"]),
    ];
    for (dir, allowed) in expected {
        let found = cairn_dependencies(&crates.join(dir).join("Cargo.toml"));
        let allowed: BTreeSet<String> = allowed.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(found, allowed, "dependencies of crates/{dir}");
    }
}
