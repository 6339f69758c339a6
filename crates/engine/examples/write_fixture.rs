//! Writes the format fixture: a small repository with two snapshots of a
//! varied tree, its key, and a description of what the latest snapshot holds.
//! Run once per format version (it writes the current one) and commit the
//! result beside the older ones; every later cairn must
//! still read it (`tests/it/fixture.rs`):
//!
//! ```sh
//! cargo run -p cairn --example write_fixture -- crates/engine/tests/fixtures/v3
//! ```

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use cairn::{BackupOptions, InitOptions, NoProgress, Parent, Repository};
use cairn_store::LocalStore;

// Shared with `tests/it/fixture.rs`, which renders a restore the same way.
#[path = "../tests/fixtures/describe.rs"]
mod describe;
use describe::describe;

fn xorshift_bytes(len: usize, mut x: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn set_mtime(path: &Path, secs: u64) {
    let file = fs::File::options()
        .read(true)
        .open(path)
        .expect("open for times");
    file.set_modified(UNIX_EPOCH + Duration::from_secs(secs))
        .expect("mtime");
}

/// The source tree of the fixture (deterministic except for ctimes, which
/// restores do not carry).
fn write_source(root: &Path, day: u32) {
    fs::create_dir_all(root.join("chat/media/2026-11")).expect("mkdir");
    fs::create_dir_all(root.join("chat/empty")).expect("mkdir");
    fs::write(root.join("chat/messages.db"), {
        let mut db = b"SQLite format 3\0".to_vec();
        for i in 0..2000u32 {
            db.extend_from_slice(format!("message {i} on day {}\n", i % 7 + day).as_bytes());
        }
        db
    })
    .expect("write");
    fs::write(
        root.join("chat/media/2026-11/photo.jpg"),
        xorshift_bytes(300_000, 7),
    )
    .expect("write");
    fs::write(root.join("chat/nul-byte"), [0u8]).expect("write");
    fs::write(root.join("chat/empty-file"), b"").expect("write");
    fs::write(root.join("chat/Grüße 🎉.txt"), "unicode names\n").expect("write");
    let link = root.join("chat/latest-photo");
    if !link.exists() {
        std::os::unix::fs::symlink("media/2026-11/photo.jpg", &link).expect("symlink");
    }
    fs::set_permissions(
        root.join("chat/messages.db"),
        fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");
    if day > 0 {
        fs::write(
            root.join("chat/media/2026-11/voice.opus"),
            xorshift_bytes(50_000, 11),
        )
        .expect("write");
    }
    for (i, path) in [
        "chat/messages.db",
        "chat/media/2026-11/photo.jpg",
        "chat/nul-byte",
        "chat/empty-file",
        "chat/Grüße 🎉.txt",
        "chat/media/2026-11/voice.opus",
        "chat/media/2026-11",
        "chat/media",
        "chat/empty",
        "chat",
    ]
    .iter()
    .enumerate()
    {
        let path = root.join(path);
        if path.exists() {
            set_mtime(
                &path,
                1_795_000_000 + 3600 * i as u64 + 86_400 * u64::from(day),
            );
        }
    }
}

fn main() {
    let out: PathBuf = std::env::args()
        .nth(1)
        .expect("usage: write_fixture <dir>")
        .into();
    assert!(!out.exists(), "{} exists", out.display());
    let work = tempfile::tempdir().expect("tempdir");
    let src = work.path().join("chat-source");
    fs::create_dir_all(&src).expect("mkdir");
    let store = Arc::new(LocalStore::create(out.join("repo")).expect("create"));
    let (mut repo, key) = Repository::init(store, &InitOptions::default()).expect("init");
    fs::write(out.join("key.txt"), key.to_grouped_string().as_bytes()).expect("key");
    for day in 0..2 {
        write_source(&src, day);
        let options = BackupOptions {
            host: "fixture-host".into(),
            tags: vec![format!("day{day}")],
            time: Some(UNIX_EPOCH + Duration::from_secs(1_795_100_000 + 86_400 * u64::from(day))),
            parent: Parent::Latest,
            threads: 1,
            scan_totals: false,
            dry_run: false,
            exclude: Vec::new(),
        };
        repo.backup(&[src.join("chat")], &options, &NoProgress)
            .expect("backup");
    }
    let _ = fs::remove_dir(out.join("repo/tmp"));
    fs::write(out.join("latest.txt"), describe(&src)).expect("describe");
    println!("wrote {}", out.display());
}
