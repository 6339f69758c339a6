//! The local metadata cache: what a daily backup costs in requests with
//! and without it, and that a cache deleted, damaged or absent (a new
//! device) changes nothing but the number of requests.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cairn::{NoProgress, OpenOptions, RecoveryKey, Repository, Requests};
use cairn_store::{CountingStore, MemoryStore, Store};

use crate::support::{Rng, assert_same_tree, assert_sound, options, restore, write};

/// A chat history on disk: a database edited in place each day, and one
/// new attachment a day.
struct History {
    dir: tempfile::TempDir,
    rng: Rng,
    day: u64,
}

impl History {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut rng = Rng(9);
        write(&dir.path().join("db/messages.db"), &rng.bytes(1 << 20));
        for i in 0..4 {
            write(
                &dir.path().join(format!("media/old-{i}.jpg")),
                &rng.bytes(200_000),
            );
        }
        Self { dir, rng, day: 0 }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// The next day's changes.
    fn next_day(&mut self) {
        self.day += 1;
        let db = self.dir.path().join("db/messages.db");
        let mut bytes = fs::read(&db).expect("read");
        let at = self.rng.below(bytes.len() as u64 - 4096) as usize;
        bytes[at..at + 4096].copy_from_slice(&self.rng.bytes(4096));
        fs::write(&db, bytes).expect("write");
        write(
            &self
                .dir
                .path()
                .join(format!("media/day-{:03}.jpg", self.day)),
            &self.rng.bytes(150_000),
        );
    }

    /// Backs the history up as of its day.
    fn backup(&self, repo: &mut Repository) -> cairn::Result<cairn::BackupReport> {
        repo.backup(
            &[self.path()],
            &cairn::BackupOptions {
                time: Some(self.time()),
                ..options()
            },
            &NoProgress,
        )
    }

    /// Asserts that a restore of the latest backup holds the history.
    fn assert_restored(&self, target: &Path) {
        let name = self.dir.path().file_name().expect("a name");
        assert_same_tree(self.dir.path(), &target.join(name));
    }

    fn time(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000 + self.day * 86_400)
    }
}

/// Runs `days` daily backups, each by a new process (a new open), and
/// returns the requests of each day's open and backup.
fn daily_requests(
    store: &Arc<CountingStore<MemoryStore>>,
    key: &RecoveryKey,
    history: &mut History,
    cache: Option<&Path>,
    days: usize,
) -> Vec<Requests> {
    let open = OpenOptions {
        cache_dir: cache.map(Path::to_path_buf),
        ..OpenOptions::default()
    };
    let mut out = Vec::new();
    for _ in 0..days {
        history.next_day();
        store.reset();
        let mut repo = Repository::open_with(store.clone(), key, &open).expect("open");
        let opened = store.counts();
        let report = history.backup(&mut repo).expect("backup");
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        let counted = store.counts();
        assert_eq!(report.requests, Some(counted.since(&opened)));
        out.push(counted);
    }
    out
}

fn new_repository() -> (Arc<CountingStore<MemoryStore>>, RecoveryKey) {
    let store = Arc::new(CountingStore::new(MemoryStore::new()));
    let (_, key) = Repository::init(store.clone(), &cairn::InitOptions::default()).expect("init");
    (store, key)
}

#[test]
fn a_daily_backup_costs_the_same_requests_after_2_and_after_30_days() {
    let (store, key) = new_repository();
    let cache = tempfile::tempdir().expect("cache dir");
    let mut history = History::new();
    let days = daily_requests(&store, &key, &mut history, Some(cache.path()), 30);
    let (day2, day30) = (days[1], days[29]);
    let kinds = |c: &Requests| (c.puts, c.gets, c.sizes, c.lists, c.deletes);
    assert_eq!(
        kinds(&day2),
        kinds(&day30),
        "day 2 {day2:?}, day 30 {day30:?}"
    );
    // What it reads: the key slot and the config, nothing of the history
    // (index, snapshots, trees and pack headers come from the cache).
    assert_eq!(day30.gets, 2, "{day30:?}");
    assert_eq!(day30.sizes, 0, "{day30:?}");
    // It writes a data pack, a tree pack, an index file, the snapshot and
    // a session marker.
    assert_eq!(day30.puts, 5, "{day30:?}");

    // Without the cache the same history costs more each day: every
    // snapshot file, index file and pack header is read again.
    let (bare_store, bare_key) = new_repository();
    let mut bare_history = History::new();
    let bare = daily_requests(&bare_store, &bare_key, &mut bare_history, None, 30);
    assert!(
        bare[29].gets > bare[1].gets + 50,
        "{:?} vs {:?}",
        bare[1],
        bare[29]
    );
    assert_eq!(bare[29].puts, day30.puts);
    eprintln!(
        "requests of a daily backup: cached {day2:?} (day 2), {day30:?} (day 30); \
         uncached {:?} (day 2), {:?} (day 30)",
        bare[1], bare[29]
    );
}

#[test]
fn a_new_device_restores_from_the_key_alone_and_a_bad_cache_costs_only_requests() {
    let (store, key) = new_repository();
    let cache = tempfile::tempdir().expect("cache dir");
    let scratch = tempfile::tempdir().expect("scratch");
    let mut history = History::new();
    daily_requests(&store, &key, &mut history, Some(cache.path()), 3);

    // A new device: an empty cache, the store and the key.
    let new_device = tempfile::tempdir().expect("new device cache");
    let open = |dir: &Path| {
        Repository::open_with(
            store.clone(),
            &key,
            &OpenOptions {
                cache_dir: Some(dir.to_path_buf()),
                ..OpenOptions::default()
            },
        )
        .expect("open")
    };
    let repo = open(new_device.path());
    let (latest, _) = repo.find_snapshot("latest").expect("latest");
    let restored = restore(&repo, &latest, scratch.path()).expect("restore");
    history.assert_restored(&restored);
    assert!(repo.take_warnings().is_empty());
    drop(repo);

    // Every cached file damaged: the repository is not blamed, nothing is
    // distrusted, and the next backup and restore are whole.
    let mut damaged = 0;
    damage_every_file(cache.path(), &mut damaged);
    assert!(damaged > 10, "{damaged} cached files");
    history.next_day();
    let mut repo = open(cache.path());
    let report = history
        .backup(&mut repo)
        .expect("backup over a damaged cache");
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    // Only the day's changes are new (the history holds over 2 MB): the
    // damaged copies cost requests, not uploads.
    assert!(
        (150_000..400_000).contains(&report.summary.bytes_new),
        "{} bytes new",
        report.summary.bytes_new
    );
    let restored = restore(&repo, &report.snapshot_id, scratch.path()).expect("restore");
    history.assert_restored(&restored);
    assert!(repo.take_warnings().is_empty());
    assert_sound(&repo);

    // Deleted whole: the same again.
    fs::remove_dir_all(cache.path()).expect("remove the cache");
    history.next_day();
    let mut repo = open(cache.path());
    let report = history.backup(&mut repo).expect("backup without its cache");
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    let restored = restore(&repo, &report.snapshot_id, scratch.path()).expect("restore");
    history.assert_restored(&restored);
}

/// Flips a byte in every file below `dir` (or empties it, for files of
/// one byte).
fn damage_every_file(dir: &Path, n: &mut usize) {
    for entry in fs::read_dir(dir).expect("readdir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            damage_every_file(&path, n);
            continue;
        }
        let mut bytes = fs::read(&path).expect("read");
        if let Some(last) = bytes.last_mut() {
            *last ^= 0x5a;
        }
        let middle = bytes.len() / 2;
        if let Some(b) = bytes.get_mut(middle) {
            *b ^= 0x21;
        }
        fs::write(&path, bytes).expect("write");
        *n += 1;
    }
}

/// `check` judges the store, not the device's copies: damage the server
/// did to a tree pack and an index file is found even when intact copies
/// are in the cache.
#[test]
fn check_reads_the_store_not_the_cache() {
    let (store, key) = new_repository();
    let cache = tempfile::tempdir().expect("cache dir");
    let mut history = History::new();
    daily_requests(&store, &key, &mut history, Some(cache.path()), 2);
    let open = OpenOptions {
        cache_dir: Some(cache.path().to_path_buf()),
        ..OpenOptions::default()
    };
    let repo = Repository::open_with(store.clone(), &key, &open).expect("open");
    let healthy = repo
        .check(&cairn::CheckOptions::default(), &NoProgress)
        .expect("check");
    assert!(healthy.is_ok(), "{healthy:?}");
    // The smallest pack is a tree pack: flip a byte inside it, size kept.
    let tree_pack = smallest_pack(store.inner());
    store
        .inner()
        .tamper(&tree_pack, |bytes| bytes[10] ^= 1)
        .expect("tamper");
    let repo = Repository::open_with(store.clone(), &key, &open).expect("open");
    let report = repo
        .check(&cairn::CheckOptions::default(), &NoProgress)
        .expect("check");
    assert!(!report.is_ok(), "damage hidden by the cache: {report:?}");
}

fn smallest_pack(store: &MemoryStore) -> cairn_store::ObjectName {
    let listed = store
        .list_sized(cairn_store::Namespace::Packs)
        .expect("list");
    let (name, _) = listed
        .into_iter()
        .min_by_key(|(_, size)| *size)
        .expect("a pack");
    cairn_store::ObjectName::new(cairn_store::Namespace::Packs, &name).expect("name")
}

/// A server whose listings carry no sizes (or wrong ones): every pack is
/// still read right, by asking each one's size.
#[test]
fn listings_without_sizes_cost_requests_not_packs() {
    struct Sizeless(MemoryStore);
    impl cairn_store::Store for Sizeless {
        fn put(&self, n: &cairn_store::ObjectName, b: &[u8]) -> Result<(), cairn_store::Error> {
            self.0.put(n, b)
        }
        fn get(&self, n: &cairn_store::ObjectName, m: u64) -> Result<Vec<u8>, cairn_store::Error> {
            self.0.get(n, m)
        }
        fn get_range(
            &self,
            n: &cairn_store::ObjectName,
            o: u64,
            l: u64,
        ) -> Result<Vec<u8>, cairn_store::Error> {
            self.0.get_range(n, o, l)
        }
        fn size(&self, n: &cairn_store::ObjectName) -> Result<u64, cairn_store::Error> {
            self.0.size(n)
        }
        fn list(&self, ns: cairn_store::Namespace) -> Result<Vec<String>, cairn_store::Error> {
            self.0.list(ns)
        }
        fn list_sized(
            &self,
            ns: cairn_store::Namespace,
        ) -> Result<Vec<(String, u64)>, cairn_store::Error> {
            Ok(self.0.list(ns)?.into_iter().map(|n| (n, 0)).collect())
        }
        fn delete(&self, n: &cairn_store::ObjectName) -> Result<(), cairn_store::Error> {
            self.0.delete(n)
        }
    }
    let store = Arc::new(Sizeless(MemoryStore::new()));
    let (_, key) = Repository::init(store.clone(), &cairn::InitOptions::default()).expect("init");
    let cache = tempfile::tempdir().expect("cache dir");
    let scratch = tempfile::tempdir().expect("scratch");
    let mut history = History::new();
    let open = OpenOptions {
        cache_dir: Some(cache.path().to_path_buf()),
        ..OpenOptions::default()
    };
    for _ in 0..2 {
        history.next_day();
        let mut repo = Repository::open_with(store.clone(), &key, &open).expect("open");
        let report = history.backup(&mut repo).expect("backup");
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        let restored = restore(&repo, &report.snapshot_id, scratch.path()).expect("restore");
        history.assert_restored(&restored);
        assert!(repo.take_warnings().is_empty());
    }
}

/// Pack size on object storage: larger packs cost fewer requests to write,
/// and a restore of one small file on a new device reads its range, a
/// header and the trees, never a whole data pack.
#[test]
fn larger_packs_cost_fewer_puts_and_one_small_file_never_costs_a_pack() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    let mut rng = Rng(77);
    for i in 0..3 {
        write(
            &src.join(format!("media/video-{i}.mp4")),
            &rng.bytes(16 << 20),
        );
    }
    for i in 0..200 {
        write(&src.join(format!("msgs/m-{i}.txt")), &rng.bytes(2_000));
    }
    let mut rows = Vec::new();
    for target_mib in [4u32, 16, 64] {
        let store = Arc::new(CountingStore::new(MemoryStore::new()));
        let (mut repo, key) = Repository::init(
            store.clone(),
            &cairn::InitOptions {
                pack_target_size: target_mib << 20,
                ..cairn::InitOptions::default()
            },
        )
        .expect("init");
        store.reset();
        let report = repo
            .backup(std::slice::from_ref(&src), &options(), &NoProgress)
            .expect("backup");
        let backup = store.counts();
        // A new device restores one message.
        let cache = tempfile::tempdir().expect("cache");
        let repo = Repository::open_with(
            store.clone(),
            &key,
            &OpenOptions {
                cache_dir: Some(cache.path().to_path_buf()),
                ..OpenOptions::default()
            },
        )
        .expect("open");
        let target = dir.path().join(format!("one-{target_mib}"));
        store.reset();
        let restored = repo
            .restore(
                &report.snapshot_id,
                Some(Path::new("src/msgs/m-17.txt")),
                &target,
                &NoProgress,
            )
            .expect("restore one file");
        assert!(restored.is_complete());
        let one = store.counts();
        assert_eq!(
            fs::read(target.join("m-17.txt")).expect("restored"),
            fs::read(src.join("msgs/m-17.txt")).expect("source")
        );
        // Trees and a header, and the file's own range: far less than one
        // data pack of the smallest size.
        assert!(one.bytes_read < 1 << 20, "{target_mib} MiB packs: {one:?}");
        rows.push((target_mib, report.n_packs_written, backup, one));
    }
    for pair in rows.windows(2) {
        assert!(pair[1].2.puts < pair[0].2.puts, "{rows:?}");
    }
    for (mib, packs, backup, one) in &rows {
        eprintln!(
            "pack target {mib} MiB: first backup {packs} packs, {} puts, {} requests; \
             restore of one 2 KB file on a new device: {} requests, {} bytes read",
            backup.puts,
            backup.requests(),
            one.requests(),
            one.bytes_read
        );
    }
}
