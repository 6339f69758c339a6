//! Shared helpers: deterministic data, tree generation, tree comparison.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn::{BackupOptions, InitOptions, NoProgress, RecoveryKey, Repository, SnapshotId};
use cairn_store::{MemoryStore, Store};

/// SplitMix64: deterministic, seedable, good enough for test data.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

pub fn options() -> BackupOptions {
    BackupOptions {
        host: "test-host".into(),
        ..BackupOptions::default()
    }
}

/// A fresh repository on an in-memory store.
pub fn memory_repo() -> (Arc<MemoryStore>, Repository, RecoveryKey) {
    let store = Arc::new(MemoryStore::new());
    let (repo, key) = Repository::init(store.clone(), &InitOptions::default()).expect("init");
    (store, repo, key)
}

pub fn backup(repo: &mut Repository, path: &Path) -> cairn::BackupReport {
    repo.backup(&[path.to_path_buf()], &options(), &NoProgress)
        .expect("backup")
}

/// Total bytes of every object in the store.
pub fn store_bytes(store: &dyn Store) -> u64 {
    cairn_store::Namespace::ALL
        .iter()
        .flat_map(|&ns| {
            store
                .list(ns)
                .expect("list")
                .into_iter()
                .map(move |n| (ns, n))
        })
        .map(|(ns, n)| {
            store
                .size(&cairn_store::ObjectName::new(ns, &n).expect("name"))
                .expect("size")
        })
        .sum()
}

pub fn write(path: &Path, bytes: &[u8]) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("mkdir");
    }
    fs::write(path, bytes).expect("write");
}

/// A varied tree: `n_files` small files in nested directories, empty files and
/// directories, symlinks (relative, absolute, dangling), names with unicode and
/// spaces, odd permissions, and a sparse file of `sparse_mib` MiB holding a few
/// random regions.
pub fn generate_tree(root: &Path, n_files: usize, sparse_mib: u64, seed: u64) {
    let mut rng = Rng(seed);
    let dirs = [
        "",
        "a",
        "a/b",
        "a/b/c",
        "a/b/c/d",
        "Фото",
        "voice notes",
        "日本語/深い/ディレクトリ",
        "x y",
    ];
    for i in 0..n_files {
        let dir = dirs[i % dirs.len()];
        let name = match i % 5 {
            0 => format!("file {i}.txt"),
            1 => format!("ñandú-{i}.bin"),
            2 => format!("{i}"),
            3 => format!("émoji 🎉 {i}"),
            _ => format!(".hidden-{i}"),
        };
        let len = match i % 7 {
            0 => 0,
            1 => 1,
            2 => rng.below(100) as usize,
            3 => 4096,
            _ => rng.below(20_000) as usize,
        };
        let data = if i % 2 == 0 {
            rng.bytes(len)
        } else {
            format!("line {i}\n").repeat(len / 8 + 1).into_bytes()
        };
        write(&root.join(dir).join(name), &data);
    }
    fs::create_dir_all(root.join("empty dir")).expect("mkdir");
    fs::create_dir_all(root.join("a/empty")).expect("mkdir");
    std::os::unix::fs::symlink("b/c", root.join("a/link to c")).expect("symlink");
    std::os::unix::fs::symlink("/etc/hostname", root.join("absolute link")).expect("symlink");
    std::os::unix::fs::symlink("does/not/exist", root.join("dangling")).expect("symlink");
    write(&root.join("exec.sh"), b"#!/bin/sh\necho hi\n");
    fs::set_permissions(root.join("exec.sh"), fs::Permissions::from_mode(0o755)).expect("chmod");
    write(&root.join("private"), b"secret-ish");
    // Another owner, where the test runs as root (elsewhere chown fails and the
    // restore leaves files to the restoring user, as the comparison then expects).
    let _ = std::os::unix::fs::lchown(root.join("private"), Some(1234), Some(5678));
    fs::set_permissions(root.join("private"), fs::Permissions::from_mode(0o600)).expect("chmod");
    fs::create_dir_all(root.join("readonly dir")).expect("mkdir");
    write(&root.join("readonly dir/inside"), b"inside");
    fs::set_permissions(root.join("readonly dir"), fs::Permissions::from_mode(0o555))
        .expect("chmod");
    if sparse_mib > 0 {
        let file = fs::File::create(root.join("big sparse.img")).expect("create");
        file.set_len(sparse_mib * 1024 * 1024).expect("set_len");
        use std::os::unix::fs::FileExt;
        for k in 0..4u64 {
            let at = k * (sparse_mib / 4) * 1024 * 1024 + 12_345;
            file.write_all_at(&rng.bytes(3 * 1024 * 1024 + 17), at)
                .expect("write");
        }
    }
    // Distinct, reproducible times.
    let mut k = 0;
    set_times(root, &mut k);
}

fn set_times(path: &Path, k: &mut i64) {
    let meta = fs::symlink_metadata(path).expect("meta");
    if meta.is_dir() {
        let mut children: Vec<PathBuf> = fs::read_dir(path)
            .expect("readdir")
            .map(|e| e.expect("entry").path())
            .collect();
        children.sort();
        for c in children {
            set_times(&c, k);
        }
    }
    *k += 1;
    let t = filetime::FileTime::from_unix_time(
        1_600_000_000 + *k * 3600,
        (*k as u32 * 7919) % 1_000_000_000,
    );
    if meta.file_type().is_symlink() {
        filetime::set_symlink_file_times(path, t, t).expect("times");
    } else {
        filetime::set_file_mtime(path, t).expect("times");
    }
}

/// Asserts that `actual` equals `expected`: names, types, bytes, symlink
/// targets, permissions and modification times (directories included).
pub fn assert_same_tree(expected: &Path, actual: &Path) {
    let e = fs::symlink_metadata(expected).expect("expected meta");
    let a = fs::symlink_metadata(actual)
        .unwrap_or_else(|err| panic!("{} missing: {err}", actual.display()));
    assert_eq!(e.file_type(), a.file_type(), "type of {}", actual.display());
    assert_eq!(
        (e.mtime(), e.mtime_nsec()),
        (a.mtime(), a.mtime_nsec()),
        "mtime of {}",
        actual.display()
    );
    if e.file_type().is_symlink() {
        assert_eq!(
            fs::read_link(expected).expect("link"),
            fs::read_link(actual).expect("link")
        );
        return;
    }
    assert_eq!(e.mode(), a.mode(), "mode of {}", actual.display());
    if e.is_file() {
        assert_eq!(e.len(), a.len(), "size of {}", actual.display());
        assert!(
            fs::read(expected).expect("read") == fs::read(actual).expect("read"),
            "content of {}",
            actual.display()
        );
        return;
    }
    let names = |p: &Path| {
        let mut v: Vec<_> = fs::read_dir(p)
            .expect("readdir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        v.sort();
        v
    };
    let expected_names = names(expected);
    assert_eq!(
        expected_names,
        names(actual),
        "entries of {}",
        actual.display()
    );
    for n in expected_names {
        assert_same_tree(&expected.join(&n), &actual.join(&n));
    }
}

/// Why a test restore did not give the whole snapshot.
#[derive(Debug)]
pub enum RestoreFailed {
    /// The restore stopped.
    Error(cairn::Error),
    /// It finished, but these entries could not be restored.
    Incomplete(Vec<cairn::RestoreFailure>),
}

impl std::fmt::Display for RestoreFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestoreFailed::Error(e) => write!(f, "{e}"),
            RestoreFailed::Incomplete(failed) => {
                for failure in failed {
                    writeln!(f, "{}: {}", failure.path.display(), failure.reason)?;
                }
                Ok(())
            }
        }
    }
}

/// Restores `snapshot` into a fresh directory under `scratch` and returns it;
/// an incomplete restore is a failure.
pub fn restore(
    repo: &Repository,
    snapshot: &SnapshotId,
    scratch: &Path,
) -> Result<PathBuf, RestoreFailed> {
    let target = scratch.join(format!("restore-{}", &snapshot.to_hex()[..12]));
    let _ = make_writable_and_remove(&target);
    let report = repo
        .restore(snapshot, None, &target, &NoProgress)
        .map_err(RestoreFailed::Error)?;
    if !report.is_complete() {
        return Err(RestoreFailed::Incomplete(report.failed));
    }
    Ok(target)
}

/// Asserts that every file under `actual` holds the bytes of the file at the
/// same place under `expected`: what a partial restore wrote is never wrong.
pub fn assert_files_match_source(expected: &Path, actual: &Path) {
    let meta = fs::symlink_metadata(actual).expect("meta");
    if meta.is_dir() {
        let _ = fs::set_permissions(actual, fs::Permissions::from_mode(0o755));
        for entry in fs::read_dir(actual).expect("readdir") {
            let name = entry.expect("entry").file_name();
            assert_files_match_source(&expected.join(&name), &actual.join(&name));
        }
    } else if meta.is_file() {
        assert!(
            fs::read(expected).ok() == Some(fs::read(actual).expect("read")),
            "{} differs from its source",
            actual.display()
        );
    }
}

/// Removes a directory tree even if it contains read-only directories.
pub fn make_writable_and_remove(path: &Path) -> std::io::Result<()> {
    if !path.exists() {
        return Ok(());
    }
    fn walk(p: &Path) {
        if let Ok(meta) = fs::symlink_metadata(p)
            && meta.is_dir()
        {
            let _ = fs::set_permissions(p, fs::Permissions::from_mode(0o755));
            if let Ok(rd) = fs::read_dir(p) {
                for e in rd.flatten() {
                    walk(&e.path());
                }
            }
        }
    }
    walk(path);
    fs::remove_dir_all(path)
}

/// The store's packs, largest first.
pub fn packs_by_size(store: &MemoryStore) -> Vec<cairn_store::ObjectName> {
    let mut packs: Vec<(u64, cairn_store::ObjectName)> = store
        .list(cairn_store::Namespace::Packs)
        .expect("list")
        .into_iter()
        .map(|n| {
            let name =
                cairn_store::ObjectName::new(cairn_store::Namespace::Packs, &n).expect("name");
            (store.size(&name).expect("size"), name)
        })
        .collect();
    packs.sort();
    packs.into_iter().rev().map(|(_, n)| n).collect()
}

/// Asserts that `check --read-data` finds nothing wrong.
pub fn assert_sound(repo: &Repository) {
    let report = repo
        .check(
            &cairn::CheckOptions {
                read_data: cairn::ReadData::All,
            },
            &NoProgress,
        )
        .expect("check");
    assert!(
        report.is_ok(),
        "check found problems: {:?}",
        report.problems
    );
}
