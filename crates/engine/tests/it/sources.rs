//! Backup sources other than paths, item classes and flags, and excludes:
//! a frontend's own items go in without touching the disk, flagged items are
//! never opened nor stored, classes come from the source or the media rules.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::sync::Mutex;

use cairn::source::{Flags, Item, ItemKind, ItemList, ListItem, Source, Status};
use cairn::{Class, InitOptions, LeftOutReason, NoProgress, NodeKind, Repository};
use cairn_store::MemoryStore;

use crate::support::*;

fn item(path: &str, size: usize, mtime: i64) -> ListItem {
    ListItem {
        path: path.as_bytes().to_vec(),
        item: Item::new(
            ItemKind::File,
            Status {
                size: size as u64,
                mode: 0o600,
                mtime: (mtime, 0),
                ctime: (mtime, 0),
                inode: path.len() as u64,
                ..Status::default()
            },
        ),
    }
}

/// An app's data in memory: path → bytes, and which paths were opened.
struct AppData {
    files: BTreeMap<String, Vec<u8>>,
    opened: Mutex<Vec<String>>,
}

impl AppData {
    fn new(files: &[(&str, Vec<u8>)]) -> Self {
        Self {
            files: files
                .iter()
                .map(|(p, b)| ((*p).to_owned(), b.clone()))
                .collect(),
            opened: Mutex::new(Vec::new()),
        }
    }

    fn open(&self, path: &[u8]) -> io::Result<io::Cursor<Vec<u8>>> {
        let path = String::from_utf8_lossy(path).into_owned();
        self.opened.lock().expect("lock").push(path.clone());
        self.files
            .get(&path)
            .cloned()
            .map(io::Cursor::new)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    fn items(&self, flagged: &[(&str, Flags)]) -> Vec<ListItem> {
        self.files
            .iter()
            .map(|(path, bytes)| {
                let mut it = item(path, bytes.len(), 1_700_000_000);
                if let Some((_, flags)) = flagged.iter().find(|(p, _)| p == path) {
                    it.item.flags = *flags;
                }
                it
            })
            .collect()
    }
}

/// Every file of a snapshot: path → (class, bytes).
fn contents(repo: &Repository, id: &cairn::SnapshotId) -> BTreeMap<String, (Class, Vec<u8>)> {
    let mut out = BTreeMap::new();
    for entry in repo.list(id, None).expect("list").entries {
        if entry.node.kind == NodeKind::File {
            let mut bytes = Vec::new();
            let mut reader = repo
                .open_file(id, std::path::Path::new(&entry.path))
                .expect("open file");
            io::copy(&mut reader, &mut bytes).expect("read");
            out.insert(entry.path.clone(), (entry.node.class, bytes));
        }
    }
    out
}

/// A frontend's items go in from memory: flagged ones (and everything
/// under a flagged directory) are never opened and never stored, and the
/// report lists them; classes come from the source where it gives one and
/// from the media rules otherwise; the rest restores byte for byte.
#[test]
fn a_frontend_source_stores_its_items_and_never_opens_flagged_ones() {
    let mut rng = Rng(5);
    let app = AppData::new(&[
        ("db/messages.sqlite", rng.bytes(300_000)),
        ("attachments/a1.bin", rng.bytes(50_000)),
        ("attachments/a2-ephemeral.jpg", rng.bytes(40_000)),
        ("attachments/a3-once.jpg", rng.bytes(30_000)),
        ("stickers/s1.webp", rng.bytes(2_000)),
        ("notes/voice.raw", rng.bytes(9_000)),
        ("secret/x", rng.bytes(1_000)),
        ("secret/y", rng.bytes(1_000)),
    ]);
    let all_items = || {
        let mut items = app.items(&[
            ("attachments/a2-ephemeral.jpg", Flags::EPHEMERAL),
            ("attachments/a3-once.jpg", Flags::VIEW_ONCE),
        ]);
        // The source says what the rules would not: a voice note is media.
        let voice = items
            .iter_mut()
            .find(|i| i.path == b"notes/voice.raw")
            .expect("voice");
        voice.item.class = Some(Class::Media);
        // A flagged directory: nothing under it is listed or opened.
        let mut secret = item("secret", 0, 0);
        secret.item.kind = ItemKind::Dir;
        secret.item.flags = Flags::EPHEMERAL | Flags::VIEW_ONCE;
        items.push(secret);
        items
    };
    let items = all_items();

    let (_store, mut repo, _key) = memory_repo();
    let source = ItemList::new("app:chat", items, |p: &[u8]| app.open(p)).expect("items");
    let report = repo
        .backup_from(&source, &options(), &NoProgress)
        .expect("backup");
    let opened = app.opened.lock().expect("lock").clone();
    assert!(
        !opened
            .iter()
            .any(|p| p.contains("ephemeral") || p.contains("once") || p.starts_with("secret")),
        "opened a flagged item: {opened:?}"
    );
    let mut left: Vec<(String, LeftOutReason)> = report
        .left_out
        .iter()
        .map(|l| (l.path.clone(), l.reason))
        .collect();
    left.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        left,
        [
            (
                "attachments/a2-ephemeral.jpg".to_owned(),
                LeftOutReason::Flagged(Flags::EPHEMERAL)
            ),
            (
                "attachments/a3-once.jpg".to_owned(),
                LeftOutReason::Flagged(Flags::VIEW_ONCE)
            ),
            (
                "secret".to_owned(),
                LeftOutReason::Flagged(Flags::EPHEMERAL | Flags::VIEW_ONCE)
            ),
        ]
    );
    assert_eq!(report.n_skipped, 0);

    let stored = contents(&repo, &report.snapshot_id);
    let expected: BTreeMap<String, (Class, Vec<u8>)> = [
        ("db/messages.sqlite", Class::Message),
        ("attachments/a1.bin", Class::Media),
        ("stickers/s1.webp", Class::Media),
        ("notes/voice.raw", Class::Media),
    ]
    .into_iter()
    .map(|(p, class)| (p.to_owned(), (class, app.files[p].clone())))
    .collect();
    assert_eq!(stored, expected);
    let listed: Vec<String> = repo
        .list(&report.snapshot_id, None)
        .expect("list")
        .entries
        .into_iter()
        .map(|e| e.path)
        .collect();
    assert!(
        !listed.iter().any(|p| p.starts_with("secret")),
        "{listed:?}"
    );

    // The next backup of unchanged items opens nothing and stores nothing
    // new but the root; one changed item is read again.
    app.opened.lock().expect("lock").clear();
    let mut items = all_items();
    let db = items
        .iter_mut()
        .find(|i| i.path == b"db/messages.sqlite")
        .expect("db");
    db.item.status.ctime.0 += 1;
    let source = ItemList::new("app:chat", items, |p: &[u8]| app.open(p)).expect("items");
    let again = repo
        .backup_from(&source, &options(), &NoProgress)
        .expect("backup");
    assert_eq!(again.parent, Some(report.snapshot_id));
    assert_eq!(
        *app.opened.lock().expect("lock"),
        ["db/messages.sqlite"],
        "only the changed item is read"
    );
}

/// A source whose listing breaks the tree rules (an invalid name, a name
/// twice, unsorted) costs only the bad entries: the snapshot restores.
#[test]
fn a_source_listing_bad_names_costs_only_them() {
    struct Bad;
    impl Source for Bad {
        type Entry = u8;
        type Reader = &'static [u8];
        fn paths(&self) -> Vec<String> {
            vec!["bad".into()]
        }
        fn roots(&self) -> cairn::Result<Vec<cairn::source::Root<u8>>> {
            Ok(vec![cairn::source::Root {
                name: b"top".to_vec(),
                display: "top".into(),
                entry: 0,
            }])
        }
        fn look(&self, entry: &u8) -> io::Result<Item> {
            let kind = if *entry == 0 {
                ItemKind::Dir
            } else {
                ItemKind::File
            };
            Ok(Item::new(
                kind,
                Status {
                    size: 3,
                    ..Status::default()
                },
            ))
        }
        fn list(&self, _: &u8, _: &Item) -> io::Result<Vec<(Vec<u8>, u8)>> {
            Ok(vec![
                (b"z".to_vec(), 1),
                (b"..".to_vec(), 2),
                (b"a/b".to_vec(), 3),
                (b"a".to_vec(), 4),
                (b"a".to_vec(), 5),
                (Vec::new(), 6),
                // Longer than any file system takes: no restore could
                // create it.
                (vec![b'n'; 300], 7),
            ])
        }
        fn open(&self, _: &u8, _: &Item) -> io::Result<(&'static [u8], Option<Status>)> {
            Ok((b"abc", None))
        }
    }
    let (_store, mut repo, _key) = memory_repo();
    let report = repo
        .backup_from(&Bad, &options(), &NoProgress)
        .expect("backup");
    assert_eq!(report.n_skipped, 5, "{:?}", report.warnings);
    let stored = contents(&repo, &report.snapshot_id);
    let paths: Vec<&String> = stored.keys().collect();
    assert_eq!(paths, ["top/a", "top/z"]);
}

/// The filesystem source: the default media rules make common media
/// extensions and everything under `media/` or `attachments/` media; a
/// repository made with its own rules uses those; excludes leave out what
/// they match (by name at any depth, or by path below each backed-up path),
/// and the readahead skips it too.
#[test]
fn files_get_classes_from_the_media_rules_and_excludes_leave_things_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("chat");
    for (path, len) in [
        ("messages.db", 10_000),
        ("IMG_0001.JPG", 3_000),
        ("media/2026/clip.bin", 4_000),
        ("Attachments/doc.txt", 500),
        ("notes.txt", 100),
        ("cache/tmp1", 100),
        ("deep/cache/tmp2", 100),
        ("logs/a.tmp", 100),
        ("logs/sub/b.tmp", 100),
    ] {
        write(&src.join(path), &Rng(len as u64).bytes(len));
    }
    let classes_of = |repo: &Repository, id| -> BTreeMap<String, Class> {
        contents(repo, id)
            .into_iter()
            .map(|(p, (class, _))| (p, class))
            .collect()
    };

    let (_store, mut repo, _key) = memory_repo();
    let mut opts = options();
    opts.exclude = vec!["cache".into(), "logs/*.tmp".into()];
    let report = repo
        .backup(std::slice::from_ref(&src), &opts, &NoProgress)
        .expect("backup");
    let expected: BTreeMap<String, Class> = [
        ("chat/Attachments/doc.txt", Class::Media),
        ("chat/IMG_0001.JPG", Class::Media),
        ("chat/logs/sub/b.tmp", Class::Message),
        ("chat/media/2026/clip.bin", Class::Media),
        ("chat/messages.db", Class::Message),
        ("chat/notes.txt", Class::Message),
    ]
    .into_iter()
    .map(|(p, c)| (p.to_owned(), c))
    .collect();
    assert_eq!(classes_of(&repo, &report.snapshot_id), expected);
    assert!(report.left_out.is_empty(), "excludes are not reported");

    // Rules of the repository's own replace the defaults.
    let store = std::sync::Arc::new(MemoryStore::new());
    let init = InitOptions {
        classes: cairn::ClassRules {
            media: vec!["*.txt".into()],
        },
        ..InitOptions::default()
    };
    let (mut own, _) = Repository::init(store, &init).expect("init");
    let report = own
        .backup(std::slice::from_ref(&src), &options(), &NoProgress)
        .expect("backup");
    let classes = classes_of(&own, &report.snapshot_id);
    assert_eq!(classes["chat/notes.txt"], Class::Media);
    assert_eq!(classes["chat/Attachments/doc.txt"], Class::Media);
    assert_eq!(classes["chat/IMG_0001.JPG"], Class::Message);
    assert_eq!(classes["chat/media/2026/clip.bin"], Class::Message);
    assert_eq!(classes.len(), 9);

    // A bad pattern is an error before anything is written.
    let mut bad = options();
    bad.exclude = vec!["[".into()];
    let err = repo
        .backup(std::slice::from_ref(&src), &bad, &NoProgress)
        .unwrap_err();
    assert!(err.to_string().contains("pattern"), "{err}");
    let store = std::sync::Arc::new(MemoryStore::new());
    let init = InitOptions {
        classes: cairn::ClassRules {
            media: vec!["{".into()],
        },
        ..InitOptions::default()
    };
    assert!(Repository::init(store.clone(), &init).is_err());
    let listed = cairn_store::Store::list(&*store, cairn_store::Namespace::Config).expect("list");
    assert!(listed.is_empty());
    fs::remove_dir_all(&src).expect("cleanup");
}

/// A frontend's list is one whole: excludes and path rules match from the
/// snapshot's root, top-level items included, and a top-level item that
/// cannot be read is skipped like any other.
#[test]
fn a_list_is_one_whole_for_rules_and_errors() {
    let mut rng = Rng(9);
    let app = AppData::new(&[
        ("debug.log", rng.bytes(100)),
        ("cache/tmp/x", rng.bytes(100)),
        ("cache/keep", rng.bytes(100)),
        ("db/m.db", rng.bytes(1000)),
        ("photo.jpg", rng.bytes(1000)),
        ("vanished.txt", rng.bytes(10)),
    ]);
    let items = app.items(&[]);
    let (_store, mut repo, _key) = memory_repo();
    let source = ItemList::new("app", items, |p: &[u8]| {
        if p == b"vanished.txt" {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        app.open(p)
    })
    .expect("items");
    let mut opts = options();
    opts.exclude = vec!["*.log".into(), "cache/tmp".into()];
    let report = repo
        .backup_from(&source, &opts, &NoProgress)
        .expect("backup");
    assert_eq!(report.n_skipped, 1, "{:?}", report.warnings);
    let stored = contents(&repo, &report.snapshot_id);
    let held: Vec<(&str, Class)> = stored.iter().map(|(p, (c, _))| (p.as_str(), *c)).collect();
    assert_eq!(
        held,
        [
            ("cache/keep", Class::Message),
            ("db/m.db", Class::Message),
            ("photo.jpg", Class::Media),
        ]
    );
    // A symlink target no file system takes is refused up front.
    let mut link = item("l", 0, 0);
    link.item.kind = ItemKind::Symlink;
    link.item.link_target = b"a\0b".to_vec();
    assert!(ItemList::new("app", vec![link], |p: &[u8]| app.open(p)).is_err());
}
