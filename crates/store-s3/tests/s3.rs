//! The store contract on S3: the conformance suite of `cairn-store`, and a
//! repository's whole life (init, backup, restore, prune), against an S3
//! server running in this process on loopback (s3s-fs: S3 over a
//! directory). Nothing but loopback is reached.

use std::path::Path;
use std::sync::Arc;

use cairn::{BackupOptions, InitOptions, NoProgress, Repository};
use cairn_store::Store;
use cairn_store_s3::S3Store;
use cairn_store_s3::test_server::Server;

#[test]
fn the_store_contract_holds_on_s3() {
    let server = Server::start();
    for prefix in ["", "backups/phone-1"] {
        let store = S3Store::new(&server.config(prefix)).expect("store");
        cairn_store::conformance::run(&store);
    }
}

/// Wrong credentials: a clear error, not a hang or a panic. (s3s-fs makes
/// a missing bucket on the first put, so a missing bucket is tested against
/// another server.)
#[test]
fn wrong_credentials_are_an_error() {
    let server = Server::start();
    let name =
        cairn_store::ObjectName::new(cairn_store::Namespace::Config, "config").expect("name");
    let mut wrong = server.config("x");
    wrong.secret_access_key = Some("not-the-secret".into());
    let store = S3Store::new(&wrong).expect("store");
    let err = store.put(&name, b"x").unwrap_err();
    assert!(matches!(err, cairn_store::Error::Io { .. }), "{err}");
    assert!(!err.to_string().contains("not-the-secret"), "{err}");
    assert!(store.list(cairn_store::Namespace::Packs).is_err());
    assert!(store.get(&name, 100).is_err());
}

fn write_tree(root: &Path) {
    std::fs::create_dir_all(root.join("media")).expect("mkdir");
    std::fs::write(root.join("messages.db"), vec![7u8; 300_000]).expect("write");
    let noise: Vec<u8> = (0..2_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    std::fs::write(root.join("media/clip.mp4"), noise).expect("write");
}

/// A repository lives on S3 as it does in a directory: init, two backups,
/// a restore from a new handle opened with the key alone, forget and prune.
#[test]
fn a_repository_lives_on_s3() {
    let server = Server::start();
    let store: Arc<dyn Store> = Arc::new(S3Store::new(&server.config("repo")).expect("store"));
    let (mut repo, key) = Repository::init(store.clone(), &InitOptions::default()).expect("init");
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("chat");
    write_tree(&src);
    let options = BackupOptions {
        host: "phone".into(),
        ..BackupOptions::default()
    };
    let first = repo
        .backup(std::slice::from_ref(&src), &options, &NoProgress)
        .expect("backup");
    std::fs::write(src.join("messages.db"), vec![8u8; 300_000]).expect("edit");
    let second = repo
        .backup(std::slice::from_ref(&src), &options, &NoProgress)
        .expect("backup");
    assert!(second.summary.bytes_new < 400_000, "{second:?}");

    // A new device: the location and the key.
    let fresh: Arc<dyn Store> = Arc::new(S3Store::new(&server.config("repo")).expect("store"));
    let repo = Repository::open(fresh, &key).expect("open");
    let out = dir.path().join("out");
    repo.restore(&second.snapshot_id, None, &out, &NoProgress)
        .expect("restore");
    for file in ["messages.db", "media/clip.mp4"] {
        assert_eq!(
            std::fs::read(out.join("chat").join(file)).expect("restored"),
            std::fs::read(src.join(file)).expect("source"),
            "{file}"
        );
    }
    repo.forget(&cairn::ForgetOptions {
        what: cairn::ForgetWhat::Ids(vec![first.snapshot_id]),
        dry_run: false,
    })
    .expect("forget");
    repo.prune(&cairn::PruneOptions::default(), &NoProgress)
        .expect("prune");
    let checked = repo
        .check(
            &cairn::CheckOptions {
                read_data: cairn::ReadData::All,
            },
            &NoProgress,
        )
        .expect("check");
    assert!(checked.is_ok(), "{checked:?}");
}

/// A put retried after its first attempt was stored (its answer lost) must
/// not fail as "already exists": the same bytes there are this put done;
/// other bytes are another writer's, and refused.
#[test]
fn a_put_of_the_same_bytes_again_succeeds_and_other_bytes_are_refused() {
    let server = Server::start();
    let store = S3Store::new(&server.config("again")).expect("store");
    let name = cairn_store::ObjectName::new(cairn_store::Namespace::Packs, "ab01").expect("name");
    store.put(&name, b"pack bytes").expect("put");
    store
        .put(&name, b"pack bytes")
        .expect("the same bytes again");
    assert!(matches!(
        store.put(&name, b"other bytes"),
        Err(cairn_store::Error::AlreadyExists(_))
    ));
    assert!(matches!(
        store.put(&name, b"pack bytes and more"),
        Err(cairn_store::Error::AlreadyExists(_))
    ));
}

/// A new repository needs a prefix of its own; a nested repository's
/// objects never show in its parent's listing.
#[test]
fn a_new_repository_needs_an_empty_prefix_and_listings_are_exact() {
    let server = Server::start();
    let nested = S3Store::create(&server.config("keys/x")).expect("an empty prefix");
    let key = cairn_store::ObjectName::new(cairn_store::Namespace::Keys, "y").expect("name");
    nested
        .put(&key, b"a key slot of another repository")
        .expect("put");
    let parent = S3Store::new(&server.config("")).expect("store");
    assert!(
        parent
            .list(cairn_store::Namespace::Keys)
            .expect("list")
            .is_empty()
    );
    assert!(
        S3Store::create(&server.config("")).is_err(),
        "the bucket holds something"
    );
    assert!(S3Store::create(&server.config("keys")).is_err());
    assert!(S3Store::create(&server.config("elsewhere")).is_ok());
}

/// An endpoint that is down: every kind of request is an error after its
/// retries, and never `NotFound` (which would make a backup distrust packs
/// and a reader think a snapshot gone).
#[test]
fn an_endpoint_that_is_down_is_an_error_not_a_missing_object() {
    let server = Server::start();
    let config = server.config("down");
    drop(server);
    let store = S3Store::new(&config).expect("store");
    let name = cairn_store::ObjectName::new(cairn_store::Namespace::Packs, "ab01").expect("name");
    for result in [
        store.size(&name).map(|_| ()),
        store.get(&name, 10).map(|_| ()),
        store.put(&name, b"x"),
        store.list(cairn_store::Namespace::Packs).map(|_| ()),
    ] {
        let err = result.expect_err("the server is gone");
        assert!(matches!(err, cairn_store::Error::Io { .. }), "{err}");
    }
}
