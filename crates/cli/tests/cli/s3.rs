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
    let made = ok(&cairn(&["init"], &env));
    assert!(made.contains(&repo), "{made}");
    let src = dir.path().join("chat");
    std::fs::create_dir_all(src.join("media")).expect("mkdir");
    std::fs::write(src.join("messages.db"), vec![3u8; 100_000]).expect("write");
    std::fs::write(src.join("media/a.jpg"), b"a photo").expect("write");
    ok(&cairn(&["backup", p(&src)], &env));
    ok(&cairn(&["check", "--read-data"], &env));
    let out = dir.path().join("out");
    ok(&cairn(&["restore", "latest", "--target", p(&out)], &env));
    assert_eq!(
        std::fs::read(out.join("chat/messages.db")).expect("restored"),
        vec![3u8; 100_000]
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
