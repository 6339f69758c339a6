//! The local metadata cache: copies of a repository's index files,
//! snapshot files, tree packs and pack headers, kept on the device so that
//! a daily backup reads from the store only what is new since the last run.
//!
//! Nothing here is trusted: every object the store holds is named by the
//! hash of its bytes, and a cached copy is used only when its bytes still
//! hash to its name (index and snapshot files), or when what is read from it
//! authenticates under the repository's keys (blobs of a cached tree pack,
//! a cached pack header). A copy that fails is deleted and fetched again;
//! the cache can be deleted whole at any time. It holds only what the store
//! holds (sealed bytes) and the sizes of packs, never a plaintext byte.
//!
//! Layout, below the cache root, one directory per repository (named by the
//! repository ID from its sealed config, so two repositories never share
//! one): `index/<name>`, `snapshots/<name>`, `packs/<name>` (tree packs,
//! whole) and `headers/<name>` (a 32-byte tag, the pack's size as 8 bytes
//! little-endian, then its last bytes: sealed header and trailer). The tag
//! is a keyed BLAKE3 (a key derived from the master secret, never stored)
//! of the pack's name, size and those bytes: a pack header authenticates
//! but does not name its pack, and the tag keeps one pack's cached header
//! from passing for another's. Writes go to a temporary
//! file renamed into place, so a reader never sees half a file; the cache
//! is best-effort: a failure to read or write it costs a request, never an
//! operation.

use std::collections::HashSet;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use cairn_crypto::{CacheKey, PackId};
use cairn_pack::{MAX_HEADER_SEALED_LEN, MAX_TAIL_LEN};

/// Largest cached header file: tag, size, sealed header and trailer.
const MAX_TAIL_FILE: u64 = 32 + 8 + MAX_HEADER_SEALED_LEN as u64 + MAX_TAIL_LEN as u64;

/// The file holding the newest snapshot seen (see [`Cache::newest_seen`]).
const NEWEST_SEEN: &str = "newest-seen";

/// Temporary files older than this are leftovers of a crashed writer.
const STALE_TEMPORARY: Duration = Duration::from_secs(3600);

/// What the cache keeps, each in its own directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Index files, whole.
    Index,
    /// Snapshot files, whole.
    Snapshots,
    /// Tree packs, whole.
    TreePacks,
    /// The size and last bytes (header and trailer) of any pack.
    Headers,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::Index, Kind::Snapshots, Kind::TreePacks, Kind::Headers];

    fn dir(self) -> &'static str {
        match self {
            Kind::Index => "index",
            Kind::Snapshots => "snapshots",
            Kind::TreePacks => "packs",
            Kind::Headers => "headers",
        }
    }
}

/// One repository's cache directory.
#[derive(Debug)]
pub(crate) struct Cache {
    dir: PathBuf,
    key: CacheKey,
    /// Readers that want the store's bytes, not copies (`check`,
    /// `repair`): while any runs, nothing is read from the cache.
    bypassing: AtomicUsize,
}

/// While alive, no copy is read from the cache ([`Cache::bypass`]).
pub(crate) struct Uncached(Arc<Cache>);

impl Drop for Uncached {
    fn drop(&mut self) {
        self.0.bypassing.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A cached pack header: the pack's size and its last bytes.
pub(crate) struct CachedTail {
    pub size: u64,
    pub tail: Vec<u8>,
}

impl Cache {
    /// Opens (creating it if needed) the cache of the repository `repo_id`
    /// below `root`, an absolute path. Refused (the repository then works
    /// without a cache, and the error says why) when it cannot be made, or
    /// when the root or a directory below it is not a directory of this
    /// user's that no one else can write (a symlink, another user's
    /// directory, a shared one): what is in it is deleted when the store
    /// no longer lists it, so no one else may choose what it is.
    pub(crate) fn open(root: &Path, repo_id: &[u8; 16], key: CacheKey) -> Result<Self, String> {
        if !root.is_absolute() {
            return Err(format!(
                "cache directory {}: not an absolute path",
                root.display()
            ));
        }
        let id: String = repo_id.iter().map(|b| format!("{b:02x}")).collect();
        let dir = root.join(id);
        for kind in Kind::ALL {
            create_private_dir(&dir.join(kind.dir()))
                .map_err(|e| format!("cache directory {}: {e}", root.display()))?;
        }
        let mut checked = vec![root.to_path_buf(), dir.clone()];
        checked.extend(Kind::ALL.iter().map(|kind| dir.join(kind.dir())));
        for path in checked {
            if !private_to_us(&path) {
                return Err(format!(
                    "cache directory {}: not a directory of this user's that only it can \
                     write",
                    path.display()
                ));
            }
        }
        let cache = Self {
            dir,
            key,
            bypassing: AtomicUsize::new(0),
        };
        cache.remove_stale_temporaries();
        Ok(cache)
    }

    /// Reads no copy until the guard is dropped (writes go on: they are
    /// copies of what was just read from the store).
    pub(crate) fn bypass(self: &Arc<Self>) -> Uncached {
        self.bypassing.fetch_add(1, Ordering::AcqRel);
        Uncached(self.clone())
    }

    /// Whether some reader wants the store's bytes now.
    pub(crate) fn bypassed(&self) -> bool {
        self.bypassing.load(Ordering::Acquire) > 0
    }

    fn path(&self, kind: Kind, name: &str) -> PathBuf {
        self.dir.join(kind.dir()).join(name)
    }

    /// A cached object named by the hash of its bytes (index and snapshot
    /// files, tree packs), if its bytes still hash to its name and it holds
    /// at most `max_len` bytes. A copy that fails is removed.
    pub(crate) fn get(&self, kind: Kind, name: &str, max_len: u64) -> Option<Vec<u8>> {
        debug_assert!(kind != Kind::Headers);
        let path = self.path(kind, name);
        let bytes = read_bounded(&path, max_len)?;
        if PackId::of_bytes(&bytes).to_hex() == name {
            Some(bytes)
        } else {
            let _ = fs::remove_file(&path);
            None
        }
    }

    /// `len` bytes at `offset` of a cached tree pack. Not checked here:
    /// the caller authenticates the blob it reads, and calls
    /// [`Cache::forget`] when that fails.
    pub(crate) fn read_range(&self, name: &str, offset: u64, len: u64) -> Option<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let file = open_regular(&self.path(Kind::TreePacks, name))?;
        let mut buf = vec![0u8; usize::try_from(len).ok()?];
        file.read_exact_at(&mut buf, offset).ok()?;
        Some(buf)
    }

    /// Keeps a copy of an object (best-effort); whether it was kept.
    pub(crate) fn put(&self, kind: Kind, name: &str, parts: &[&[u8]]) -> bool {
        self.write(&self.path(kind, name), parts).is_ok()
    }

    /// A cached pack header, if any, whose tag shows it was cached for
    /// this pack. The caller compares the size with the store's listing
    /// and authenticates the header.
    pub(crate) fn tail(&self, pack: &str) -> Option<CachedTail> {
        let path = self.path(Kind::Headers, pack);
        let bytes = read_bounded(&path, MAX_TAIL_FILE)?;
        let (tag, rest) = bytes.split_first_chunk::<32>()?;
        let (size, tail) = rest.split_first_chunk::<8>()?;
        if *tag != self.key.tag(&[pack.as_bytes(), size, tail]) {
            let _ = fs::remove_file(&path);
            return None;
        }
        Some(CachedTail {
            size: u64::from_le_bytes(*size),
            tail: tail.to_vec(),
        })
    }

    /// Keeps a pack's size and last bytes (best-effort).
    pub(crate) fn put_tail(&self, pack: &str, size: u64, tail: &[u8]) {
        let size = size.to_le_bytes();
        let tag = self.key.tag(&[pack.as_bytes(), &size, tail]);
        let _ = self.write(&self.path(Kind::Headers, pack), &[&tag, &size, tail]);
    }

    /// The newest snapshot this device saw (sequence number and ID), if a
    /// mark is kept whose tag shows this device wrote it for this
    /// repository. Unlike the copies, a state: deleting it only turns the
    /// rollback check off until the next listing.
    pub(crate) fn newest_seen(&self) -> Option<(u64, [u8; 32])> {
        let bytes = read_bounded(&self.dir.join(NEWEST_SEEN), 32 + 8 + 32)?;
        let (tag, rest) = bytes.split_first_chunk::<32>()?;
        let (sequence, id) = rest.split_first_chunk::<8>()?;
        let id: [u8; 32] = id.try_into().ok()?;
        (*tag == self.key.tag(&[NEWEST_SEEN.as_bytes(), sequence, &id]))
            .then(|| (u64::from_le_bytes(*sequence), id))
    }

    /// Keeps (or, with `None`, removes) the newest snapshot this device saw.
    pub(crate) fn set_newest_seen(&self, seen: Option<(u64, [u8; 32])>) -> std::io::Result<()> {
        let path = self.dir.join(NEWEST_SEEN);
        let Some((sequence, id)) = seen else {
            return match fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        };
        let sequence = sequence.to_le_bytes();
        let tag = self.key.tag(&[NEWEST_SEEN.as_bytes(), &sequence, &id]);
        self.write(&path, &[&tag, &sequence, &id])
    }

    /// Removes a copy that failed a check.
    pub(crate) fn forget(&self, kind: Kind, name: &str) {
        let _ = fs::remove_file(self.path(kind, name));
    }

    /// Removes the copies of objects the store no longer lists (`live` is
    /// a whole listing of the kind's namespace).
    pub(crate) fn retain(&self, kind: Kind, live: &HashSet<String>) {
        let Ok(entries) = fs::read_dir(self.dir.join(kind.dir())) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if let Some(name) = name.to_str()
                && !name.starts_with('.')
                && !live.contains(name)
            {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// Writes a file whole under a temporary name, then renames it into
    /// place: readers see the old file, no file, or the new one whole.
    fn write(&self, path: &Path, parts: &[&[u8]]) -> std::io::Result<()> {
        let dir = path.parent().unwrap_or(&self.dir);
        let mut suffix = [0u8; 8];
        cairn_crypto::random_bytes(&mut suffix).map_err(|_| std::io::Error::other("random"))?;
        let temporary = dir.join(format!(".tmp.{}", u64::from_le_bytes(suffix)));
        let result = (|| {
            // A cache deleted meanwhile stays deleted until the next open
            // (which checks what it makes); until then this is a miss.
            let mut file = private_file(&temporary)?;
            for part in parts {
                file.write_all(part)?;
            }
            drop(file);
            fs::rename(&temporary, path)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&temporary);
        }
        result
    }

    /// Removes temporary files a crashed writer left (old enough that no
    /// writer is still on them).
    fn remove_stale_temporaries(&self) {
        let now = SystemTime::now();
        for kind in Kind::ALL {
            let Ok(entries) = fs::read_dir(self.dir.join(kind.dir())) else {
                continue;
            };
            for entry in entries.flatten() {
                let stale = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| now.duration_since(t).ok())
                    .is_some_and(|age| age > STALE_TEMPORARY);
                if stale && entry.file_name().to_string_lossy().starts_with(".tmp.") {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
    }
}

/// Whether `path` is a directory itself (not a symlink), of this user's,
/// that no other user can write.
fn private_to_us(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    fs::symlink_metadata(path).is_ok_and(|m| {
        m.is_dir() && m.uid() == rustix::process::geteuid().as_raw() && m.mode() & 0o022 == 0
    })
}

fn create_private_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

/// A regular file, opened without following a symlink (anything else in
/// the cache is not a copy cairn made).
fn open_regular(path: &Path) -> Option<fs::File> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .ok()?;
    file.metadata().ok()?.is_file().then_some(file)
}

/// A whole file of at most `max_len` bytes (a larger one is removed).
fn read_bounded(path: &Path, max_len: u64) -> Option<Vec<u8>> {
    let file = open_regular(path)?;
    let mut bytes = Vec::new();
    file.take(max_len.saturating_add(1))
        .read_to_end(&mut bytes)
        .ok()?;
    if bytes.len() as u64 > max_len {
        let _ = fs::remove_file(path);
        return None;
    }
    Some(bytes)
}

fn private_file(path: &Path) -> std::io::Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_are_checked_and_bad_ones_removed() {
        let root = tempfile::tempdir().expect("tempdir");
        let cache = Cache::open(root.path(), &[7; 16], key()).expect("cache");
        let bytes = b"sealed index bytes".to_vec();
        let name = PackId::of_bytes(&bytes).to_hex();
        assert!(cache.get(Kind::Index, &name, 1 << 20).is_none());
        cache.put(Kind::Index, &name, &[&bytes[..4], &bytes[4..]]);
        assert_eq!(cache.get(Kind::Index, &name, 1 << 20), Some(bytes.clone()));
        // Over the caller's bound: not read, and removed.
        assert!(cache.get(Kind::Index, &name, 4).is_none());
        assert!(cache.get(Kind::Index, &name, 1 << 20).is_none());
        // Damaged: a miss, and removed.
        cache.put(Kind::Index, &name, &[b"other bytes"]);
        assert!(cache.get(Kind::Index, &name, 1 << 20).is_none());
        assert!(!cache.path(Kind::Index, &name).exists());
        // Retain keeps only what the store lists.
        cache.put(Kind::Index, &name, &[&bytes]);
        cache.retain(Kind::Index, &HashSet::new());
        assert!(cache.get(Kind::Index, &name, 1 << 20).is_none());
    }

    #[test]
    fn the_cache_is_private_and_cleans_up_after_crashed_writers() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().expect("tempdir");
        let cache = Cache::open(root.path(), &[1; 16], key()).expect("cache");
        cache.put_tail("aa", 1234, b"tail");
        let tail = cache.tail("aa").expect("a tail");
        assert_eq!((tail.size, tail.tail.as_slice()), (1234, &b"tail"[..]));
        let file = cache.path(Kind::Headers, "aa");
        let mode = |p: &Path| fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(file.parent().expect("dir")), 0o700);
        // A header copied to another pack's name is not that pack's.
        fs::copy(
            cache.path(Kind::Headers, "aa"),
            cache.path(Kind::Headers, "bb"),
        )
        .expect("copy");
        assert!(cache.tail("bb").is_none());
        // Nor under another key (another repository's cache).
        let other = Cache::open(root.path(), &[1; 16], key()).expect("cache");
        assert!(other.tail("aa").is_none());
        let stale = cache.dir.join("index/.tmp.1");
        fs::write(&stale, b"half").expect("write");
        let old = SystemTime::now() - 2 * STALE_TEMPORARY;
        fs::File::options()
            .write(true)
            .open(&stale)
            .and_then(|f| f.set_modified(old))
            .expect("age it");
        let fresh = cache.dir.join("index/.tmp.2");
        fs::write(&fresh, b"in progress").expect("write");
        let _again = Cache::open(root.path(), &[1; 16], key()).expect("cache");
        assert!(!stale.exists());
        assert!(fresh.exists());
    }

    #[test]
    fn a_cache_deleted_while_open_is_a_miss_and_made_again_at_the_next_open() {
        let root = tempfile::tempdir().expect("tempdir");
        let cache = Cache::open(root.path(), &[2; 16], key()).expect("cache");
        fs::remove_dir_all(root.path()).expect("delete the cache");
        let bytes = b"index".to_vec();
        let name = PackId::of_bytes(&bytes).to_hex();
        assert!(!cache.put(Kind::Index, &name, &[&bytes]));
        assert!(cache.get(Kind::Index, &name, 100).is_none());
        let cache = Cache::open(root.path(), &[2; 16], key()).expect("cache");
        assert!(cache.put(Kind::Index, &name, &[&bytes]));
        assert_eq!(cache.get(Kind::Index, &name, 100), Some(bytes));
        let target = root.path().join("elsewhere");
        fs::write(&target, b"elsewhere").expect("write");
        let link_name = PackId::of_bytes(b"elsewhere").to_hex();
        std::os::unix::fs::symlink(&target, cache.path(Kind::Index, &link_name)).expect("link");
        assert!(cache.get(Kind::Index, &link_name, 100).is_none());
    }

    #[test]
    fn a_cache_someone_else_could_write_or_point_elsewhere_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().expect("tempdir");
        let shared = root.path().join("shared");
        fs::create_dir(&shared).expect("mkdir");
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).expect("chmod");
        assert!(Cache::open(&shared, &[3; 16], key()).is_err());
        // A repository's directory that is a symlink to somewhere else.
        let mine = root.path().join("mine");
        let elsewhere = root.path().join("elsewhere");
        fs::create_dir_all(&elsewhere).expect("mkdir");
        fs::create_dir_all(&mine).expect("mkdir");
        std::os::unix::fs::symlink(&elsewhere, mine.join("03".repeat(16))).expect("link");
        let err = Cache::open(&mine, &[3; 16], key()).expect_err("refused");
        assert!(err.contains("not a directory of this user's"), "{err}");
        assert!(Cache::open(Path::new("relative/cache"), &[3; 16], key()).is_err());
    }

    /// A new repository's cache key.
    fn key() -> CacheKey {
        let master = cairn_crypto::MasterSecret::generate().expect("random");
        cairn_crypto::WorkingKeys::derive(&master).cache
    }
}
