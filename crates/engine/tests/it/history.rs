//! A small chat history that changes every day, as the model user's does:
//! new media arrive and old media go, the message database is edited in
//! place. The state of day `d` is a pure function of `d`, so a test can
//! rebuild what any snapshot must restore to.

use std::path::Path;
use std::sync::Arc;

use cairn::{BackupOptions, InitOptions, NoProgress, Repository, SnapshotId};
use cairn_store::MemoryStore;

use crate::support::*;

/// Media files present on a day: the last `MEDIA_WINDOW` days' arrivals.
pub const MEDIA_WINDOW: u64 = 4;
const DB_LEN: usize = 192 * 1024;

/// Makes `dir` hold exactly day `d`'s history.
pub fn make_day(dir: &Path, d: u64) {
    let media = dir.join("media");
    std::fs::create_dir_all(&media).expect("mkdir");
    // Two 40 KiB photos a day (each its own chunk), kept MEDIA_WINDOW days.
    let window = d.saturating_sub(MEDIA_WINDOW - 1)..=d;
    let wanted: Vec<(String, u64)> = window
        .flat_map(|n| {
            [
                (format!("a{n}.jpg"), 1000 + n),
                (format!("b{n}.jpg"), 5000 + n),
            ]
        })
        .collect();
    for entry in std::fs::read_dir(&media).expect("readdir") {
        let entry = entry.expect("entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        if !wanted.iter().any(|(w, _)| *w == name) {
            std::fs::remove_file(entry.path()).expect("remove");
        }
    }
    for (name, seed) in wanted {
        let path = media.join(name);
        if !path.exists() {
            write(&path, &Rng(seed).bytes(40 * 1024));
        }
    }
    // The database: a base edited in place, one 4 KiB page per past day.
    let mut db = Rng(7).bytes(DB_LEN);
    for day in 0..=d {
        let page = (day * 37 % (DB_LEN as u64 / 4096)) as usize * 4096;
        db[page..page + 4096].copy_from_slice(&Rng(9000 + day).bytes(4096));
    }
    write(&dir.join("chat.db"), &db);
}

/// Backs up day `d` of the history in `src` (rebuilt first), at a time one
/// day after the last.
pub fn backup_day(repo: &mut Repository, src: &Path, d: u64) -> SnapshotId {
    make_day(src, d);
    let options = BackupOptions {
        host: "phone".into(),
        time: Some(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000 + d * 86_400),
        ),
        ..BackupOptions::default()
    };
    repo.backup(&[src.to_path_buf()], &options, &NoProgress)
        .expect("backup")
        .snapshot_id
}

/// Small packs, so that forgetting frees whole packs and leaves some part
/// used, as a long history does with large ones.
pub fn small_packs() -> InitOptions {
    InitOptions {
        pack_target_size: 128 * 1024,
        ..InitOptions::default()
    }
}

/// A memory repository holding days `0..n_days`, with the snapshot of each.
pub fn repo_with_days(
    scratch: &Path,
    n_days: u64,
) -> (
    Arc<MemoryStore>,
    Repository,
    cairn::RecoveryKey,
    Vec<SnapshotId>,
) {
    let store = Arc::new(MemoryStore::new());
    let (mut repo, key) = Repository::init(store.clone(), &small_packs()).expect("init");
    let src = scratch.join("chat");
    let ids = (0..n_days)
        .map(|d| backup_day(&mut repo, &src, d))
        .collect();
    (store, repo, key, ids)
}

/// Asserts that `snapshot` restores to exactly day `d`'s history.
pub fn assert_restores_day(repo: &Repository, snapshot: &SnapshotId, d: u64, scratch: &Path) {
    let expected = scratch.join(format!("expected-{d}"));
    if !expected.exists() {
        make_day(&expected.join("chat"), d);
    }
    let restored = restore(repo, snapshot, scratch)
        .unwrap_or_else(|e| panic!("day {d} does not restore: {e:?}"));
    assert_files_match_source(&expected, &restored);
    let n_expected = count_files(&expected);
    assert_eq!(count_files(&restored), n_expected, "day {d}: file count");
    make_writable_and_remove(&restored).expect("cleanup");
}

fn count_files(dir: &Path) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).expect("readdir") {
        let entry = entry.expect("entry");
        if entry.file_type().expect("type").is_dir() {
            n += count_files(&entry.path());
        } else {
            n += 1;
        }
    }
    n
}
