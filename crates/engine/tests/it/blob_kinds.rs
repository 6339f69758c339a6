//! Regressions of the shared ID space: a tree blob and a data blob with equal
//! bytes must never be mistaken for each other (issue 6, item 1).

use std::fs;

use cairn::{NoProgress, Parent};

use crate::support::*;

/// An empty directory's tree encodes to one zero byte, like a one-byte file
/// holding NUL. Both stored in one backup, in either order of discovery.
#[test]
fn one_byte_nul_file_beside_an_empty_directory_restores() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (i, file_name) in ["a-file", "z-file"].iter().enumerate() {
        let src = dir.path().join(format!("src{i}"));
        fs::create_dir_all(src.join("empty")).expect("mkdir");
        write(&src.join(file_name), &[0u8]);
        let (_store, mut repo, _key) = memory_repo();
        let report = backup(&mut repo, &src);
        let target = restore(&repo, &report.snapshot_id, &dir.path().join("out"))
            .expect("restore with an empty directory and a NUL byte file");
        assert_same_tree(&src, &target.join(format!("src{i}")));
    }
}

/// Once such a file was stored, no later snapshot with an empty directory
/// could be listed or restored.
#[test]
fn nul_file_stored_first_does_not_break_later_empty_directories() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    write(&src.join("attachment.bin"), &[0u8]);
    let (_store, mut repo, _key) = memory_repo();
    backup(&mut repo, &src);
    fs::create_dir_all(src.join("later/empty")).expect("mkdir");
    let report = backup(&mut repo, &src);
    repo.list(&report.snapshot_id, None).expect("list");
    let target = restore(&repo, &report.snapshot_id, &dir.path().join("out")).expect("restore");
    assert_same_tree(&src, &target.join("src"));
    // And the other way round: the tree first, then the data.
    let src2 = dir.path().join("src2");
    fs::create_dir_all(src2.join("empty")).expect("mkdir");
    let (_store, mut repo, _key) = memory_repo();
    backup(&mut repo, &src2);
    write(&src2.join("nul"), &[0u8]);
    let report = repo
        .backup(
            std::slice::from_ref(&src2),
            &cairn::BackupOptions {
                parent: Parent::None,
                ..options()
            },
            &NoProgress,
        )
        .expect("backup");
    let target = restore(&repo, &report.snapshot_id, &dir.path().join("out2")).expect("restore");
    assert_same_tree(&src2, &target.join("src2"));
}

/// Tree and data blobs with equal bytes coexist, whatever the bytes: each
/// file's content equals the encoding of some directory.
#[test]
fn files_holding_tree_encodings_coexist_with_those_trees() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("d0")).expect("mkdir");
    // Postcard of a tree with one node, as small variations: whatever they
    // encode to, a file may hold the same bytes as a tree blob.
    let mut rng = Rng(77);
    for i in 0..40 {
        let len = (rng.below(6) + 1) as usize;
        let mut bytes = vec![0u8; len];
        bytes[0] = (i % 3) as u8;
        write(&src.join(format!("f{i}")), &bytes);
        fs::create_dir_all(src.join(format!("dir{i}/sub"))).expect("mkdir");
    }
    let (_store, mut repo, _key) = memory_repo();
    let report = backup(&mut repo, &src);
    let target = restore(&repo, &report.snapshot_id, &dir.path().join("out")).expect("restore");
    assert_same_tree(&src, &target.join("src"));
}
