//! The format fixtures: a repository written by each format version (see
//! `examples/write_fixture.rs`) that every later cairn must still open,
//! list, restore byte for byte, and add to. A format change is a version
//! bump with a new fixture beside the others, never an edit of one.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use cairn::{Class, Format, NoProgress, NodeKind, Repository};
use cairn_store::LocalStore;

use crate::support::*;

#[path = "../fixtures/describe.rs"]
mod describe;
use describe::describe;

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for entry in fs::read_dir(from).expect("dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

#[test]
fn the_version_1_fixture_still_reads_restores_and_grows() {
    reads_restores_and_grows("v1", Format::V1);
}

/// Format 2 adds classes: the fixture's media (by the default rules: under
/// `media/`) are media, the rest messages.
#[test]
fn the_version_2_fixture_still_reads_restores_and_grows() {
    reads_restores_and_grows("v2", Format::V2);
}

/// Format 3 records the cut rule: its fixture chunks with toeplitz-aes, and
/// what it adds deduplicates against what that rule cut.
#[test]
fn the_version_3_fixture_still_reads_restores_and_grows() {
    reads_restores_and_grows("v3", Format::V3);
}

fn reads_restores_and_grows(version: &str, format: Format) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(version);
    let dir = tempfile::tempdir().expect("tempdir");
    // A copy: opening a local store may create `tmp/`, and the test adds to it.
    let root = dir.path().join("repo");
    copy_dir(&fixture.join("repo"), &root);
    let key_text = fs::read_to_string(fixture.join("key.txt")).expect("key");
    let key = cairn::parse_recovery_key(&key_text).expect("key parses");
    let store = Arc::new(LocalStore::open(&root).expect("open store"));
    let mut repo = Repository::open(store, &key).expect("open");
    assert!(repo.take_warnings().is_empty());
    assert_eq!(repo.config().format, format);
    let algorithm = if format >= Format::V3 {
        cairn::ChunkerAlgorithm::ToeplitzAes
    } else {
        cairn::ChunkerAlgorithm::FastCdc
    };
    assert_eq!(repo.config().chunking.algorithm, algorithm);

    let snapshots = repo.snapshots().expect("snapshots");
    let tags: Vec<_> = snapshots.iter().map(|(_, s)| s.tags.clone()).collect();
    assert_eq!(tags, [["day0"], ["day1"]]);
    assert!(snapshots.iter().all(|(_, s)| s.host == "fixture-host"));
    let (first, latest) = (snapshots[0].0, snapshots[1].0);
    // Format 3 snapshots carry their place in the history; older ones none.
    let lineages: Vec<_> = snapshots.iter().map(|(_, s)| s.lineage).collect();
    if format >= Format::V3 {
        let expected = [
            Some(cairn::Lineage {
                sequence: 1,
                parent: None,
            }),
            Some(cairn::Lineage {
                sequence: 2,
                parent: Some(first),
            }),
        ];
        assert_eq!(lineages, expected);
    } else {
        assert_eq!(lineages, [None, None]);
    }

    let restored = restore(&repo, &latest, &dir.path().join("out")).expect("restore latest");
    let expected = fs::read_to_string(fixture.join("latest.txt")).expect("expected");
    assert_eq!(describe(&restored), expected);
    let listing = repo.list(&first, None).expect("list first");
    assert!(listing.iter().any(|e| e.path == "chat/messages.db"));
    assert!(!listing.iter().any(|e| e.path.ends_with("voice.opus")));
    restore(&repo, &first, &dir.path().join("out")).expect("restore first");
    for entry in repo.list(&latest, None).expect("list latest").entries {
        let media = format >= Format::V2
            && entry.node.kind == NodeKind::File
            && entry.path.starts_with("chat/media/");
        let class = if media { Class::Media } else { Class::Message };
        assert_eq!(entry.node.class, class, "{}", entry.path);
    }

    // This version can add to it, deduplicating against what is there.
    let report = repo
        .backup(&[restored.join("chat")], &options(), &NoProgress)
        .expect("backup into the fixture");
    assert_eq!(report.n_skipped, 0);
    // Only the four directories' trees are new (their inodes differ); no
    // file content is stored again.
    assert!(report.summary.bytes_new < 4096, "{report:?}");
    let again = restore(&repo, &report.snapshot_id, &dir.path().join("again")).expect("restore");
    assert_same_tree(&restored.join("chat"), &again.join("chat"));
}
