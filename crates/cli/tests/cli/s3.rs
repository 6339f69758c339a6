//! The CLI with a repository at `s3://bucket/prefix`, the endpoint and
//! credentials from the `AWS_*` variables, against a loopback S3 server.

use cairn_store_s3::test_server::{ACCESS_KEY, BUCKET, SECRET_KEY, Server};

use crate::{cairn, ok, one_line_error, p};

#[test]
fn a_repository_in_a_bucket_through_the_cli() {
    let server = Server::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("key.txt");
    let repo = format!("s3://{BUCKET}/phone-1");
    let env = [
        ("CAIRN_REPOSITORY", repo.as_str()),
        ("CAIRN_KEY_FILE", p(&key_file)),
        ("AWS_ENDPOINT_URL", server.endpoint()),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
    ];
    let cache = dir.path().join("cache");
    let env = [
        env[0],
        env[1],
        env[2],
        env[3],
        env[4],
        env[5],
        ("CAIRN_CACHE_DIR", p(&cache)),
    ];
    let made = ok(&cairn(&["init"], &env));
    assert!(made.contains(&repo), "{made}");
    let src = dir.path().join("chat");
    std::fs::create_dir_all(src.join("media")).expect("mkdir");
    std::fs::write(src.join("messages.db"), vec![3u8; 100_000]).expect("write");
    std::fs::write(src.join("media/a.jpg"), b"a photo").expect("write");
    // The summary counts the requests sent, by kind.
    let requests = |args: &[&str]| -> serde_json::Value {
        let out = ok(&cairn(args, &env));
        let summary: serde_json::Value =
            serde_json::from_str(out.lines().last().expect("a summary")).expect("JSON");
        summary["requests"].clone()
    };
    let first = requests(&["backup", "--json", p(&src)]);
    assert!(first["put"].as_u64().expect("puts") >= 4, "{first}");
    assert!(cache.read_dir().expect("a cache").next().is_some());
    std::fs::write(src.join("media/b.jpg"), b"another photo").expect("write");
    let cached = requests(&["backup", "--json", p(&src)]);
    let uncached = requests(&["backup", "--json", "--no-cache", p(&src)]);
    assert!(
        cached["get"].as_u64() < uncached["get"].as_u64(),
        "with a cache {cached}, without {uncached}"
    );
    ok(&cairn(&["check", "--read-data"], &env));
    // A new device: the location and the key, an empty cache.
    let out = dir.path().join("out");
    let mut new_device = env;
    let empty = dir.path().join("empty-cache");
    new_device[6] = ("CAIRN_CACHE_DIR", p(&empty));
    ok(&cairn(
        &["restore", "latest", "--target", p(&out)],
        &new_device,
    ));
    assert_eq!(
        std::fs::read(out.join("chat/messages.db")).expect("restored"),
        vec![3u8; 100_000]
    );
    assert_eq!(
        std::fs::read(out.join("chat/media/b.jpg")).expect("restored"),
        b"another photo"
    );
    // Wrong credentials: one line, non-zero, and the secret never shown.
    let mut wrong = env;
    wrong[5] = ("AWS_SECRET_ACCESS_KEY", "not-the-secret");
    let err = one_line_error(&cairn(&["snapshots"], &wrong));
    assert!(!err.contains("not-the-secret"), "{err}");
    // A prefix that holds anything is no place for a new repository.
    let other_key = dir.path().join("other-key.txt");
    let mut again = env;
    again[1] = ("CAIRN_KEY_FILE", p(&other_key));
    let taken = cairn(&["init"], &again);
    assert!(!other_key.exists(), "a failed init leaves no key file");
    assert!(one_line_error(&taken).contains("not empty"));
    // A scheme typo is an error, never a local directory of that name.
    let typo = [("CAIRN_REPOSITORY", "S3://cairn-test/x"), env[1]];
    assert!(one_line_error(&cairn(&["snapshots"], &typo)).contains("not a location"));
    // A custom endpoint without a region is refused up front.
    let no_region: Vec<_> = env
        .iter()
        .filter(|(k, _)| *k != "AWS_REGION")
        .copied()
        .collect();
    let err = one_line_error(&cairn(&["snapshots"], &no_region));
    assert!(err.contains("region"), "{err}");
}

/// A server that keeps throttling, or that is down: one line, a non-zero
/// exit, in bounded time, and the repository as it was.
#[test]
fn a_throttling_or_dead_server_is_one_line_and_a_failed_exit() {
    use cairn_store_s3::test_server::{Fault, Proxy, noise};
    let server = Server::start();
    let proxy = Proxy::start(server.endpoint(), Fault::None);
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("key.txt");
    let repo = format!("s3://{BUCKET}/phone-2");
    let env = [
        ("CAIRN_REPOSITORY", repo.as_str()),
        ("CAIRN_KEY_FILE", p(&key_file)),
        ("AWS_ENDPOINT_URL", proxy.endpoint()),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
    ];
    ok(&cairn(&["init"], &env));
    let src = dir.path().join("chat");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(src.join("messages.db"), vec![5u8; 50_000]).expect("write");
    ok(&cairn(&["backup", p(&src)], &env));
    std::fs::write(src.join("new.jpg"), b"a new photo").expect("write");
    for fault in [Fault::SlowDown(u32::MAX), Fault::Down] {
        proxy.set(fault);
        let started = std::time::Instant::now();
        let err = one_line_error(&cairn(&["backup", p(&src)], &env));
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "{fault:?}: {:?}",
            started.elapsed()
        );
        assert!(
            err.contains(&repo) || err.contains("s3://"),
            "{fault:?}: {err}"
        );
    }
    // The server dies in the middle of a backup (after the open's
    // requests, among the pack uploads).
    std::fs::write(src.join("video.mp4"), noise(40_000_000, 7)).expect("write");
    proxy.set(Fault::DownAfter(9));
    let err = one_line_error(&cairn(&["backup", p(&src)], &env));
    assert!(err.contains("s3://"), "{err}");
    assert_eq!(proxy.fault(), Fault::Down, "the server died mid-backup");
    proxy.set(Fault::None);
    let listed = ok(&cairn(&["snapshots", "--json"], &env));
    let snapshots: serde_json::Value = serde_json::from_str(&listed).expect("JSON");
    assert_eq!(snapshots.as_array().map(Vec::len), Some(1), "{listed}");
    ok(&cairn(&["backup", p(&src)], &env));
    ok(&cairn(&["check"], &env));
}
