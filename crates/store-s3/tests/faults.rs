//! A misbehaving S3 server, through a loopback proxy in front of the test
//! server: throttling (503 SlowDown), a link that drops mid-transfer, and a
//! server killed in the middle of a backup. Each gives a clear error after
//! bounded retries, or succeeds after them, and leaves the repository as
//! valid as before.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn::{BackupOptions, InitOptions, NoProgress, Repository};
use cairn_store::{Namespace, ObjectName, Store};
use cairn_store_s3::S3Store;
use cairn_store_s3::test_server::{Fault, Proxy, Server, noise};

/// A store for `prefix` on `server`, reached through `proxy`.
fn through(server: &Server, proxy: &Proxy, prefix: &str) -> S3Store {
    let mut config = server.config(prefix);
    config.endpoint = Some(proxy.endpoint().to_owned());
    S3Store::new(&config).expect("store")
}

fn name(ns: Namespace, n: &str) -> ObjectName {
    ObjectName::new(ns, n).expect("name")
}

#[test]
fn throttling_is_retried_and_every_attempt_is_counted() {
    let server = Server::start();
    let proxy = Proxy::start(server.endpoint(), Fault::SlowDown(2));
    let store = through(&server, &proxy, "t");
    let object = name(Namespace::Index, "aa");
    store.put(&object, b"hello").expect("a put after two 503s");
    let counts = store.requests().expect("counted");
    assert_eq!(counts.puts, 3, "{counts:?}");
    assert_eq!(proxy.fault(), Fault::None);
    assert_eq!(store.get(&object, 100).expect("get"), b"hello");
}

#[test]
fn a_server_that_keeps_throttling_is_a_clear_error_in_bounded_time() {
    let server = Server::start();
    let proxy = Proxy::start(server.endpoint(), Fault::SlowDown(u32::MAX));
    let store = through(&server, &proxy, "t");
    let started = Instant::now();
    let err = store
        .put(&name(Namespace::Index, "aa"), b"hello")
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(err, cairn_store::Error::Io { .. }), "{err}");
    let shown = err.to_string();
    assert!(
        shown.contains("503") || shown.contains("SlowDown"),
        "{shown}"
    );
    assert_eq!(
        store.requests().expect("counted").puts,
        5,
        "one try and 4 retries"
    );
    // Nothing reached the server.
    let direct = S3Store::new(&server.config("t")).expect("store");
    assert!(direct.list(Namespace::Index).expect("list").is_empty());
}

#[test]
fn a_read_cut_off_mid_transfer_is_retried_or_an_error_never_short() {
    let server = Server::start();
    let direct = S3Store::new(&server.config("t")).expect("store");
    let object = name(Namespace::Packs, "ab01");
    let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    direct.put(&object, &bytes).expect("put");
    let proxy = Proxy::start(
        server.endpoint(),
        Fault::CutAfter {
            bytes: 1_000_000,
            times: 1,
        },
    );
    let store = through(&server, &proxy, "t");
    match store.get(&object, 10_000_000) {
        Ok(read) => assert!(read == bytes, "a read must be whole or an error"),
        Err(e) => assert!(matches!(e, cairn_store::Error::Io { .. }), "{e}"),
    }
    assert_eq!(proxy.fault(), Fault::None, "the link was cut once");
    // Once the link is back, the same read succeeds whole.
    assert!(store.get(&object, 10_000_000).expect("get") == bytes);
    let range = store.get_range(&object, 1_500_000, 1_000).expect("range");
    assert_eq!(range, bytes[1_500_000..1_501_000]);
    // A restore's read into its own buffer, cut the same way.
    proxy.set(Fault::CutAfter {
        bytes: 500_000,
        times: 1,
    });
    let mut buf = vec![0u8; 2_000_000];
    match store.read_range_into(&object, 700_000, &mut buf) {
        Ok(()) => assert!(buf == bytes[700_000..2_700_000], "whole or an error"),
        Err(e) => assert!(matches!(e, cairn_store::Error::Io { .. }), "{e}"),
    }
    assert_eq!(proxy.fault(), Fault::None, "the link was cut once");
    store
        .read_range_into(&object, 700_000, &mut buf)
        .expect("read once the link is back");
    assert!(buf == bytes[700_000..2_700_000]);
}

/// The acceptance drill: the server dies in the middle of a backup. The
/// backup fails with a clear error, no committed snapshot is lost, and the
/// next backup after the server is back succeeds and reuses what the first
/// had uploaded up to its last checkpoint.
#[test]
fn killing_the_server_mid_backup_loses_nothing_and_the_next_backup_reuses_the_uploads() {
    let server = Server::start();
    let proxy = Proxy::start(server.endpoint(), Fault::None);
    let store: Arc<dyn Store> = Arc::new(through(&server, &proxy, "repo"));
    let (mut repo, key) = Repository::init(
        store.clone(),
        &InitOptions {
            pack_target_size: 256 * 1024,
            ..InitOptions::default()
        },
    )
    .expect("init");
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("chat");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(src.join("notes.txt"), b"day one").expect("write");
    let options = BackupOptions {
        host: "phone".into(),
        ..BackupOptions::default()
    };
    let first = repo
        .backup(std::slice::from_ref(&src), &options, &NoProgress)
        .expect("first backup");

    // 24 MiB of database in 16 KiB chunks: about 96 packs of 256 KiB, with
    // checkpoints after 32 and 64. The server dies after 70 more requests.
    let db_len = 24usize << 20;
    let db = noise(db_len, 0x1234_5678_9abc_def0);
    std::fs::write(src.join("messages.db"), &db).expect("write");
    proxy.set(Fault::DownAfter(70));
    let failed = repo.backup(std::slice::from_ref(&src), &options, &NoProgress);
    let err = failed.expect_err("the server died");
    let shown = err.to_string();
    assert!(!shown.contains('\n'), "one line: {shown}");
    assert!(matches!(err, cairn::Error::Store(_)), "{err:?}");

    // The server is back: a new process finds the first snapshot, and
    // nothing else committed.
    proxy.set(Fault::None);
    drop(repo);
    let mut repo = Repository::open(store.clone(), &key).expect("open");
    let snapshots = repo.snapshots().expect("snapshots");
    assert_eq!(snapshots.len(), 1);
    assert_eq!(snapshots[0].0, first.snapshot_id);
    let second = repo
        .backup(std::slice::from_ref(&src), &options, &NoProgress)
        .expect("the backup after the restart");
    assert!(second.warnings.is_empty(), "{:?}", second.warnings);
    let reused = db_len as u64 - second.summary.bytes_new.min(db_len as u64);
    assert!(
        reused >= 32 * 250 * 1024,
        "only {reused} bytes of the checkpointed uploads reused"
    );
    // Both snapshots restore whole, and the repository checks clean.
    let out = dir.path().join("out");
    repo.restore(&second.snapshot_id, None, &out, &NoProgress)
        .expect("restore");
    assert!(std::fs::read(out.join("chat/messages.db")).expect("restored") == db);
    let report = repo
        .check(
            &cairn::CheckOptions {
                read_data: cairn::ReadData::All,
            },
            &NoProgress,
        )
        .expect("check");
    assert!(report.is_ok(), "{report:?}");
}
