//! Memory of the backup walk, measured with a counting allocator (its own
//! test binary: the allocator is global).
//!
//! Regression: a daily backup held up to 256 whole directories (their nodes
//! and their parent trees) in memory, because entries reused from the
//! parent did not count towards the walk's limit of entries in flight;
//! memory grew with the history.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::fs;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cairn::{BackupOptions, InitOptions, NoProgress, Parent, Progress, Repository};
use cairn_store::MemoryStore;

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Heap live at the first unchanged file and the most seen at any later one:
/// what the walk itself holds while it goes (the repository's own caches of
/// confirmed packs are loaded before the first file of a directory).
#[derive(Default)]
struct Sampler {
    first: AtomicUsize,
    max: AtomicUsize,
}

impl Progress for Sampler {
    fn unchanged(&self, _bytes: u64) {
        let live = LIVE.load(Ordering::Relaxed);
        let _ = self
            .first
            .compare_exchange(0, live, Ordering::Relaxed, Ordering::Relaxed);
        self.max.fetch_max(live, Ordering::Relaxed);
    }
}

#[test]
fn a_daily_backup_does_not_hold_the_whole_history_in_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    // 100 chats of 300 media each: fewer than MAX_PENDING directories.
    for chat in 0..100 {
        let d = src.join(format!("chat-{chat:03}"));
        fs::create_dir_all(&d).expect("mkdir");
        for m in 0..300 {
            fs::write(d.join(format!("IMG_{m:06}.jpg")), format!("{chat} {m}")).expect("write");
        }
    }
    let (mut repo, _key) =
        Repository::init(Arc::new(MemoryStore::new()), &InitOptions::default()).expect("init");
    let options = |parent| BackupOptions {
        host: "h".into(),
        parent,
        threads: 2,
        ..BackupOptions::default()
    };
    let paths = [src.clone()];
    repo.backup(&paths, &options(Parent::None), &NoProgress)
        .expect("first backup");
    let sampler = Sampler::default();
    let daily = repo
        .backup(&paths, &options(Parent::Latest), &sampler)
        .expect("daily backup");
    assert_eq!(daily.n_files_unchanged, 30_000);
    let grown = sampler.max.load(Ordering::Relaxed) - sampler.first.load(Ordering::Relaxed);
    // One directory of 300 entries and its parent tree is ~150 KiB; the
    // walk may hold a few thousand entries (MAX_HELD) beyond its path.
    assert!(
        grown < 4 << 20,
        "the walk held {} KiB across 30,000 unchanged files",
        grown >> 10
    );
}
