//! End-to-end tests of the `cairn` binary: every command, and every error as one
//! line with a non-zero exit.

use std::path::Path;
use std::process::{Command, Output};

mod keys;
mod lifecycle;
mod s3;

fn cairn(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cairn"));
    cmd.args(args)
        .env_remove("CAIRN_REPOSITORY")
        .env_remove("CAIRN_KEY_FILE")
        .env_remove("CAIRN_RECOVERY_KEY")
        // Never the machine's own cache (a test may name its own).
        .env(
            "CAIRN_CACHE_DIR",
            concat!(env!("CARGO_TARGET_TMPDIR"), "/cli-tests-cache"),
        );
    // The machine's own cloud settings never reach a test.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(name);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run cairn")
}

fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).expect("utf-8")
}

fn one_line_error(output: &Output) -> String {
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr.clone()).expect("utf-8");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
    assert!(stderr.starts_with("cairn: error: "), "{stderr}");
    stderr
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

#[test]
fn full_cycle_through_the_cli() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("repo");
    let key_file = dir.path().join("key.txt");
    let src = dir.path().join("chat");
    std::fs::create_dir_all(src.join("media")).expect("mkdir");
    std::fs::write(src.join("media/photo.jpg"), vec![7u8; 100_000]).expect("write");
    std::fs::write(src.join("messages.db"), b"hello from the message database").expect("write");

    let out = ok(&cairn(
        &["init", "--repo", p(&repo), "--key-file", p(&key_file)],
        &[],
    ));
    assert!(out.contains("created repository"));
    let key_text = std::fs::read_to_string(&key_file).expect("key file");
    assert!(
        !out.contains(key_text.trim()),
        "a key written to a file is not printed"
    );
    assert_eq!(key_text.trim().split(' ').count(), 16);

    let env = [
        ("CAIRN_REPOSITORY", p(&repo)),
        ("CAIRN_KEY_FILE", p(&key_file)),
    ];
    let out = ok(&cairn(&["backup", p(&src), "--tag", "daily"], &env));
    assert!(
        out.contains("snapshot ") && out.contains("2 files"),
        "{out}"
    );
    let out = ok(&cairn(&["snapshots"], &env));
    assert_eq!(out.lines().count(), 1);
    let snapshot_prefix = out.split_whitespace().next().expect("id").to_owned();

    let out = ok(&cairn(&["ls", "latest"], &env));
    assert!(out.contains("chat/media/photo.jpg"), "{out}");
    let out = ok(&cairn(&["cat", &snapshot_prefix, "chat/messages.db"], &env));
    assert_eq!(out, "hello from the message database");

    let target = dir.path().join("restored");
    let out = ok(&cairn(&["restore", "latest", "--target", p(&target)], &env));
    assert!(out.contains("restored 2 files"), "{out}");
    assert_eq!(
        std::fs::read(target.join("chat/media/photo.jpg")).expect("read"),
        vec![7u8; 100_000]
    );
    let out = ok(&cairn(&["stats"], &env));
    assert!(out.contains("snapshots:        1"), "{out}");

    // The key may also come from CAIRN_RECOVERY_KEY, in any case, with dashes.
    let typed = key_text.trim().to_uppercase().replace(' ', "-");
    let out = ok(&cairn(
        &["snapshots"],
        &[
            ("CAIRN_REPOSITORY", p(&repo)),
            ("CAIRN_RECOVERY_KEY", &typed),
        ],
    ));
    assert!(out.starts_with(&snapshot_prefix));
}

#[test]
fn errors_are_one_line_and_name_the_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("repo");
    let key_file = dir.path().join("key.txt");
    ok(&cairn(
        &["init", "--repo", p(&repo), "--key-file", p(&key_file)],
        &[],
    ));

    let wrong = "0".repeat(64);
    let err = one_line_error(&cairn(
        &["snapshots", "--repo", p(&repo)],
        &[("CAIRN_RECOVERY_KEY", &wrong)],
    ));
    assert!(err.contains("wrong recovery key"), "{err}");

    let err = one_line_error(&cairn(
        &["snapshots", "--repo", p(&repo)],
        &[("CAIRN_RECOVERY_KEY", "abc")],
    ));
    assert!(err.contains("expected 64 characters, found 3"), "{err}");

    let err = one_line_error(&cairn(&["snapshots", "--repo", p(&repo)], &[]));
    assert!(err.contains("no recovery key"), "{err}");

    let err = one_line_error(&cairn(&["snapshots"], &[("CAIRN_KEY_FILE", p(&key_file))]));
    assert!(err.contains("no repository"), "{err}");

    let env = [
        ("CAIRN_REPOSITORY", p(&repo)),
        ("CAIRN_KEY_FILE", p(&key_file)),
    ];
    let err = one_line_error(&cairn(&["ls", "deadbeef"], &env));
    assert!(err.contains("no snapshot matches"), "{err}");
    let err = one_line_error(&cairn(&["backup", "/definitely/not/here"], &env));
    assert!(err.contains("/definitely/not/here"), "{err}");
    let err = one_line_error(&cairn(
        &["init", "--repo", p(&repo), "--key-file", p(&key_file)],
        &[],
    ));
    assert!(err.contains("already exists"), "{err}");
    let err = one_line_error(&cairn(
        &[
            "snapshots",
            "--repo",
            p(dir.path()),
            "--key-file",
            p(&key_file),
        ],
        &[],
    ));
    assert!(err.contains("not a cairn repository"), "{err}");
}

#[test]
fn init_without_key_file_prints_the_key_once_grouped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("repo");
    let out = ok(&cairn(&["init", "--repo", p(&repo)], &[]));
    let key_line = out
        .lines()
        .map(str::trim)
        .find(|l| l.split(' ').count() == 16)
        .expect("grouped key line");
    assert!(key_line.split(' ').all(|g| g.len() == 4));
    let out = ok(&cairn(
        &["snapshots", "--repo", p(&repo)],
        &[("CAIRN_RECOVERY_KEY", key_line)],
    ));
    assert!(out.is_empty());
}

#[test]
fn json_output_parses_and_matches_the_stored_totals() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("repo");
    let key_file = dir.path().join("key.txt");
    let src = dir.path().join("data");
    std::fs::create_dir_all(&src).expect("mkdir");
    for i in 0..20u8 {
        std::fs::write(src.join(format!("f{i}")), vec![i; 50_000 + usize::from(i)]).expect("write");
    }
    ok(&cairn(
        &["init", "--repo", p(&repo), "--key-file", p(&key_file)],
        &[],
    ));
    let env = [
        ("CAIRN_REPOSITORY", p(&repo)),
        ("CAIRN_KEY_FILE", p(&key_file)),
    ];

    // stdout is a pipe here: progress lines, then the summary, each one JSON value.
    let out = ok(&cairn(&["backup", "--json", p(&src)], &env));
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is JSON"))
        .collect();
    let summary = lines.last().expect("a summary");
    assert_eq!(summary["type"], "summary");
    assert!(
        lines[..lines.len() - 1]
            .iter()
            .all(|l| l["type"] == "progress")
    );
    assert_eq!(summary["n_files"], 20);
    let total: u64 = (0..20u64).map(|i| 50_000 + i).sum();
    assert_eq!(summary["total_bytes"], total);
    assert_eq!(summary["bytes_read"], total);

    // The same totals are what the snapshot records.
    let listed: serde_json::Value =
        serde_json::from_str(&ok(&cairn(&["snapshots", "--json"], &env))).expect("json");
    let snap = &listed[0];
    assert_eq!(snap["id"], summary["snapshot_id"]);
    for field in [
        "n_files",
        "n_dirs",
        "total_bytes",
        "bytes_read",
        "bytes_new",
        "bytes_stored",
    ] {
        assert_eq!(snap[field], summary[field], "{field}");
    }

    // A second run reads nothing and says so.
    let out = ok(&cairn(&["backup", "--json", p(&src)], &env));
    let summary: serde_json::Value =
        serde_json::from_str(out.lines().last().expect("summary")).expect("json");
    assert_eq!(summary["bytes_read"], 0);
    assert_eq!(summary["n_files_unchanged"], 20);
    assert_eq!(summary["parent_id"], snap["id"]);

    let target = dir.path().join("out");
    let out = ok(&cairn(
        &["restore", "latest", "--json", "--target", p(&target)],
        &env,
    ));
    let summary: serde_json::Value =
        serde_json::from_str(out.lines().last().expect("summary")).expect("json");
    assert_eq!(summary["n_files"], 20);
    assert_eq!(summary["bytes_written"], total);
}

fn init_repo(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let repo = dir.join("repo");
    let key_file = dir.join("key.txt");
    ok(&cairn(
        &["init", "--repo", p(&repo), "--key-file", p(&key_file)],
        &[],
    ));
    (repo, key_file)
}

/// Regression: `ls --json` and `stats --json` printed plain text.
#[test]
fn ls_and_stats_speak_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (repo, key_file) = init_repo(dir.path());
    let src = dir.path().join("chat");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(src.join("a.txt"), b"hello").expect("write");
    std::os::unix::fs::symlink("a.txt", src.join("link")).expect("symlink");
    let env = [
        ("CAIRN_REPOSITORY", p(&repo)),
        ("CAIRN_KEY_FILE", p(&key_file)),
    ];
    ok(&cairn(&["backup", p(&src)], &env));
    let out = ok(&cairn(&["ls", "--json", "latest"], &env));
    let entries: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is JSON"))
        .collect();
    assert_eq!(entries.len(), 3, "{out}");
    assert_eq!(entries[1]["path"], "chat/a.txt");
    assert_eq!(entries[1]["size"], 5);
    assert_eq!(entries[2]["type"], "symlink");
    assert_eq!(entries[2]["link_target"], "a.txt");
    let stats: serde_json::Value =
        serde_json::from_str(&ok(&cairn(&["stats", "--json"], &env))).expect("json");
    assert_eq!(stats["n_snapshots"], 1);
    assert!(stats["repo_bytes"].as_u64().expect("number") > 0);
    assert_eq!(stats["classes"]["message"]["n_files"], 1);
    assert_eq!(stats["classes"]["message"]["bytes"], 5);
    assert_eq!(stats["classes"]["media"]["n_files"], 0);
    assert_eq!(stats["reclaimable_bytes"], 0);
    assert!(stats["quota_bytes"].is_null());
    let text = ok(&cairn(&["stats"], &env));
    assert!(
        text.contains("prune reclaims:") && text.contains("messages"),
        "{text}"
    );
}

/// `init --media` replaces the default media rules; `backup --exclude`
/// leaves out what it matches; `ls --json` shows each file's class.
#[test]
fn media_rules_and_excludes_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("repo");
    let key_file = dir.path().join("key.txt");
    let bad = cairn(
        &[
            "init",
            "--repo",
            p(&repo),
            "--key-file",
            p(&key_file),
            "--media",
            "[",
        ],
        &[],
    );
    assert!(one_line_error(&bad).contains("pattern"));
    assert!(
        !key_file.exists() && !repo.exists(),
        "nothing made for a bad rule"
    );
    ok(&cairn(
        &[
            "init",
            "--repo",
            p(&repo),
            "--key-file",
            p(&key_file),
            "--media",
            "*.txt",
            "--media",
            "clips",
        ],
        &[],
    ));
    let src = dir.path().join("chat");
    for (path, bytes) in [
        ("a.txt", &b"hello"[..]),
        ("b.jpg", b"not media here"),
        ("clips/c.bin", b"media by its directory"),
        ("cache/x", b"left out"),
        ("sub/cache/y", b"left out too"),
        ("sub/z.tmp", b"left out by path"),
        ("z.tmp", b"kept: the path rule is anchored"),
    ] {
        let path = src.join(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, bytes).expect("write");
    }
    let env = [
        ("CAIRN_REPOSITORY", p(&repo)),
        ("CAIRN_KEY_FILE", p(&key_file)),
    ];
    ok(&cairn(
        &[
            "backup",
            "--exclude",
            "cache",
            "--exclude",
            "sub/*.tmp",
            p(&src),
        ],
        &env,
    ));
    let out = ok(&cairn(&["ls", "--json", "latest"], &env));
    let files: Vec<(String, String)> = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json"))
        .filter(|e| e["type"] == "file")
        .map(|e| {
            (
                e["path"].as_str().expect("path").to_owned(),
                e["class"].as_str().expect("class").to_owned(),
            )
        })
        .collect();
    let expected = [
        ("chat/a.txt", "media"),
        ("chat/b.jpg", "message"),
        ("chat/clips/c.bin", "media"),
        ("chat/z.tmp", "message"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect();
    assert_eq!(files, expected);
}

/// `init --tier free --quota` records the policy, `policy` shows it, and a
/// backup enforces it: media beyond the age are left out and reported,
/// retention runs and says where the repository stands.
#[test]
fn a_tier_from_init_to_backup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("repo");
    let key_file = dir.path().join("key.txt");
    let bad = cairn(
        &[
            "init",
            "--repo",
            p(&repo),
            "--key-file",
            p(&key_file),
            "--tier",
            "free",
            "--media-max-age",
            "0",
        ],
        &[],
    );
    assert!(one_line_error(&bad).contains("media age"));
    assert!(!key_file.exists() && !repo.exists());
    ok(&cairn(
        &[
            "init",
            "--repo",
            p(&repo),
            "--key-file",
            p(&key_file),
            "--tier",
            "free",
            "--quota",
            "30MiB",
        ],
        &[],
    ));
    let env = [
        ("CAIRN_REPOSITORY", p(&repo)),
        ("CAIRN_KEY_FILE", p(&key_file)),
    ];
    let policy: serde_json::Value =
        serde_json::from_str(&ok(&cairn(&["policy", "--json"], &env))).expect("json");
    assert_eq!(policy["tier"], "free");
    assert_eq!(policy["quota_bytes"], 30 << 20);
    assert_eq!(policy["media_max_age_days"], 45);
    assert_eq!(policy["keep"]["last"], 1);
    assert!(ok(&cairn(&["policy"], &env)).contains("the last 45 days"));

    let src = dir.path().join("chat");
    std::fs::create_dir_all(src.join("media")).expect("mkdir");
    std::fs::write(src.join("messages.db"), b"all the messages").expect("write");
    std::fs::write(src.join("media/new.jpg"), b"new photo").expect("write");
    let old = src.join("media/old.jpg");
    std::fs::write(&old, b"old photo").expect("write");
    let long_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(90 * 86_400);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .expect("open")
        .set_modified(long_ago)
        .expect("mtime");
    let text = ok(&cairn(&["backup", p(&src)], &env));
    assert!(text.contains("left out 1 item"), "{text}");
    assert!(text.contains("retention:"), "{text}");
    let report: serde_json::Value = serde_json::from_str(
        ok(&cairn(&["backup", "--json", p(&src)], &env))
            .lines()
            .last()
            .expect("summary"),
    )
    .expect("json");
    assert_eq!(report["left_out"][0]["reason"], "age");
    assert!(
        report["left_out"][0]["path"]
            .as_str()
            .expect("path")
            .ends_with("old.jpg")
    );
    assert_eq!(report["retention"]["within_quota"], true);
    assert_eq!(report["retention"]["n_snapshots_forgotten"], 1);
    let listed = ok(&cairn(&["ls", "latest"], &env));
    assert!(
        listed.contains("new.jpg") && !listed.contains("old.jpg"),
        "{listed}"
    );
    assert_eq!(
        ok(&cairn(&["snapshots", "--json"], &env)).lines().count(),
        1
    );
}

/// `check` finds a lost pack; `repair` and `repair snapshots --forget`
/// make the repository sound again, and the intact files restore.
#[test]
fn repair_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (repo, key_file) = init_repo(dir.path());
    let src = dir.path().join("chat");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(src.join("kept.txt"), b"kept").expect("write");
    let env = [
        ("CAIRN_REPOSITORY", p(&repo)),
        ("CAIRN_KEY_FILE", p(&key_file)),
    ];
    ok(&cairn(&["backup", p(&src)], &env));
    // A second file in packs of its own, then lost.
    let before: std::collections::HashSet<_> = walk_files(&repo.join("packs"));
    let big: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(src.join("lost.bin"), &big).expect("write");
    ok(&cairn(&["backup", p(&src)], &env));
    for pack in walk_files(&repo.join("packs")).difference(&before) {
        if std::fs::metadata(pack).expect("meta").len() > 100_000 {
            std::fs::remove_file(pack).expect("rm");
        }
    }
    assert_eq!(cairn(&["check"], &env).status.code(), Some(1));
    let text = ok(&cairn(&["repair"], &env));
    assert!(
        text.contains("1 missing") || text.contains("missing"),
        "{text}"
    );
    let text = ok(&cairn(&["repair", "snapshots", "--forget"], &env));
    assert!(text.contains("repaired as"), "{text}");
    ok(&cairn(&["check", "--read-data"], &env));
    let out = dir.path().join("out");
    ok(&cairn(&["restore", "latest", "--target", p(&out)], &env));
    assert_eq!(
        std::fs::read(out.join("chat/kept.txt")).expect("kept"),
        b"kept"
    );
    assert!(out.join("chat/lost.bin.damaged").exists());
}

fn walk_files(dir: &Path) -> std::collections::HashSet<std::path::PathBuf> {
    let mut out = std::collections::HashSet::new();
    for entry in std::fs::read_dir(dir).expect("dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(walk_files(&path));
        } else {
            out.insert(path);
        }
    }
    out
}

/// Regression: OS errors were printed twice ("(os error 2): …(os error 2)").
#[test]
fn os_errors_are_printed_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = one_line_error(&cairn(
        &["snapshots", "--repo", p(dir.path())],
        &[("CAIRN_KEY_FILE", "/definitely/not/a/key")],
    ));
    assert_eq!(err.matches("os error").count(), 1, "{err}");
}

/// Regression: a key file starting with a UTF-8 byte-order mark was refused.
#[test]
fn a_key_file_with_a_byte_order_mark_opens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (repo, key_file) = init_repo(dir.path());
    let text = std::fs::read_to_string(&key_file).expect("read");
    let bom_file = dir.path().join("bom.txt");
    std::fs::write(&bom_file, format!("\u{feff}{}", text.replace('\n', "\r\n"))).expect("write");
    ok(&cairn(
        &["snapshots", "--repo", p(&repo), "--key-file", p(&bom_file)],
        &[],
    ));
}

/// Regression: init wrote the repository before the key file, so a key file
/// that could not be written lost the key and a second init was refused.
#[test]
fn a_failed_init_loses_no_key_and_can_be_retried() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("repo");
    // The key file cannot be created: nothing may be written.
    let err = one_line_error(&cairn(
        &[
            "init",
            "--repo",
            p(&repo),
            "--key-file",
            p(&dir.path().join("no/such/dir/key")),
        ],
        &[],
    ));
    assert!(err.contains("key file"), "{err}");
    assert!(!repo.exists(), "nothing written before the key is safe");
    // The repository cannot be created: the key file is removed again.
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"x").expect("write");
    let key_file = dir.path().join("key.txt");
    one_line_error(&cairn(
        &[
            "init",
            "--repo",
            p(&blocker.join("repo")),
            "--key-file",
            p(&key_file),
        ],
        &[],
    ));
    assert!(!key_file.exists(), "a key for no repository is not kept");
    // What an init killed after its key slot leaves is no obstacle.
    ok(&cairn(
        &["init", "--repo", p(&repo), "--key-file", p(&key_file)],
        &[],
    ));
    std::fs::remove_file(repo.join("config/config")).expect("simulate a crash before config");
    std::fs::remove_file(&key_file).expect("remove key");
    ok(&cairn(
        &["init", "--repo", p(&repo), "--key-file", p(&key_file)],
        &[],
    ));
    ok(&cairn(
        &["snapshots", "--repo", p(&repo), "--key-file", p(&key_file)],
        &[],
    ));
}

/// Regression: under umask 000 repository objects were 0666 and directories
/// 0777, so any local user could plant or delete objects; under umask 0277
/// init failed, leaving a directory its owner could not write.
#[test]
fn repository_files_are_private_under_any_umask() {
    use std::os::unix::fs::MetadataExt;
    for umask in ["000", "0277"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = dir.path().join("repo");
        let key_file = dir.path().join("key.txt");
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).expect("mkdir");
        std::fs::write(src.join("f"), vec![1u8; 10_000]).expect("write");
        let script = format!(
            "umask {umask} && {bin} init --repo {repo} --key-file {key} && {bin} backup --repo {repo} --key-file {key} {src}",
            bin = env!("CARGO_BIN_EXE_cairn"),
            repo = p(&repo),
            key = p(&key_file),
            src = p(&src),
        );
        let status = Command::new("sh")
            .args(["-c", &script])
            .env_remove("CAIRN_REPOSITORY")
            .output()
            .expect("sh");
        assert!(status.status.success(), "umask {umask}: {status:?}");
        let mut stack = vec![repo.clone()];
        let mut n_checked = 0;
        while let Some(path) = stack.pop() {
            let meta = std::fs::symlink_metadata(&path).expect("meta");
            let expected = if meta.is_dir() { 0o700 } else { 0o600 };
            assert_eq!(
                meta.mode() & 0o777,
                expected,
                "umask {umask}: {}",
                path.display()
            );
            n_checked += 1;
            if meta.is_dir() {
                stack.extend(
                    std::fs::read_dir(&path)
                        .expect("dir")
                        .map(|e| e.expect("e").path()),
                );
            }
        }
        assert!(n_checked > 10);
        let meta = std::fs::metadata(&key_file).expect("key");
        assert_eq!(meta.mode() & 0o777, 0o600, "umask {umask}");
    }
}

/// A restore that had to leave files out exits 3 and names them; a backup
/// that skipped an unreadable entry exits 3 too.
#[test]
fn partial_results_exit_with_status_three() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (repo, key_file) = init_repo(dir.path());
    let src = dir.path().join("chat");
    std::fs::create_dir_all(&src).expect("mkdir");
    // Incompressible, so the data pack is the largest.
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    let photo: Vec<u8> = (0..300_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(src.join("photo.jpg"), photo).expect("write");
    let env = [
        ("CAIRN_REPOSITORY", p(&repo)),
        ("CAIRN_KEY_FILE", p(&key_file)),
    ];
    ok(&cairn(&["backup", p(&src)], &env));
    let out = ok(&cairn(&["check", "--read-data"], &env));
    assert!(out.contains("checked 1 snapshots"), "{out}");
    // Lose every pack holding data (tree packs are smaller).
    let mut packs: Vec<(u64, std::path::PathBuf)> = Vec::new();
    for sub in std::fs::read_dir(repo.join("packs")).expect("packs") {
        for pack in std::fs::read_dir(sub.expect("sub").path()).expect("sub") {
            let path = pack.expect("pack").path();
            packs.push((std::fs::metadata(&path).expect("meta").len(), path));
        }
    }
    packs.sort();
    std::fs::remove_file(&packs.last().expect("a pack").1).expect("delete");
    let target = dir.path().join("out");
    let out = cairn(&["restore", "latest", "--target", p(&target)], &env);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("photo.jpg") && stderr.contains("missing"),
        "{stderr}"
    );
    assert!(!target.join("chat/photo.jpg").exists());
    // `check` names the pack and the file, and fails.
    let out = cairn(&["check"], &env);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("missing") && stdout.contains("chat/photo.jpg"),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("check found"), "{stderr}");
    // A reader that stops early does not turn the failure into success.
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("check")
        .envs(env)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    drop(child.stdout.take());
    assert_eq!(child.wait().expect("wait").code(), Some(1));

    // A FIFO inside the tree is left out (never opened: it would block).
    let fifo = src.join("pipe");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    let out = cairn(&["backup", "--force", p(&src)], &env);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("pipe"), "{stderr}");
}

/// Regression: a file name holding a newline forged a line of `ls`, escape
/// sequences reached the terminal, and names differing only in bytes that
/// are not UTF-8 printed the same.
#[test]
fn ls_prints_every_name_unambiguously() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let (repo, key_file) = init_repo(dir.path());
    let src = dir.path().join("chat");
    std::fs::create_dir_all(&src).expect("mkdir");
    for name in [
        &b"evil\n-0644      9999999 2026-11-27 18:30:04  fake-entry"[..],
        b"\x1b[31mred",
        b"bad\xffname",
        b"bad\xfename",
    ] {
        std::fs::write(src.join(std::ffi::OsStr::from_bytes(name)), b"x").expect("write");
    }
    let env = [
        ("CAIRN_REPOSITORY", p(&repo)),
        ("CAIRN_KEY_FILE", p(&key_file)),
    ];
    ok(&cairn(&["backup", p(&src)], &env));
    let out = ok(&cairn(&["ls", "latest"], &env));
    assert_eq!(out.lines().count(), 5, "{out}");
    assert!(!out.contains('\x1b'));
    assert!(out.contains("chat/evil\\x0a-0644"), "{out}");
    assert!(out.contains("chat/bad\\xffname") && out.contains("chat/bad\\xfename"));
    let out = ok(&cairn(&["ls", "--json", "latest"], &env));
    let paths: std::collections::BTreeSet<String> = out
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            v["path"].as_str().expect("path").to_owned()
        })
        .collect();
    assert_eq!(paths.len(), 5, "distinct names stay distinct: {paths:?}");
}

/// Regression: `cairn ls | head -1` ended with "error: Broken pipe".
#[test]
fn a_reader_that_stops_early_is_not_an_error() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().expect("tempdir");
    let (repo, key_file) = init_repo(dir.path());
    let src = dir.path().join("many");
    std::fs::create_dir_all(&src).expect("mkdir");
    // Far more output than a pipe holds.
    for i in 0..3000 {
        std::fs::write(src.join(format!("file-with-a-long-name-{i:06}")), b"").expect("write");
    }
    let env = [
        ("CAIRN_REPOSITORY", p(&repo)),
        ("CAIRN_KEY_FILE", p(&key_file)),
    ];
    ok(&cairn(&["backup", p(&src)], &env));
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["ls", "latest"])
        .envs(env)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("read");
    // The pipe closes here: the rest of the listing has nowhere to go.
    let out = child.wait_with_output().expect("wait");
    assert!(first.contains("many"));
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Regression: names reached the terminal raw in warnings (escape sequences,
/// forged lines), and a closed standard error made a backup panic (exit 101)
/// without saving its snapshot.
#[test]
fn warnings_are_safe_to_print_and_stderr_may_close() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let (repo, key_file) = init_repo(dir.path());
    let src = dir.path().join("fif");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(src.join("kept"), b"kept").expect("write");
    let evil = std::ffi::OsStr::from_bytes(b"p\x1b[2J\nsnapshot deadbeef saved");
    let made = Command::new("mkfifo")
        .arg(src.join(evil))
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let env = [
        ("CAIRN_REPOSITORY", p(&repo)),
        ("CAIRN_KEY_FILE", p(&key_file)),
    ];
    let out = cairn(&["backup", p(&src)], &env);
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains('\x1b'), "{stderr:?}");
    assert!(
        !stderr.lines().any(|l| l.starts_with("snapshot deadbeef")),
        "{stderr:?}"
    );

    for i in 0..300 {
        let name = src.join(format!("fifo-{i:03}"));
        assert!(
            Command::new("mkfifo")
                .arg(&name)
                .status()
                .expect("mkfifo")
                .success()
        );
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["backup", p(&src)])
        .envs(env)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut first = String::new();
    BufReader::new(child.stderr.take().expect("stderr"))
        .read_line(&mut first)
        .expect("read");
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(3), "{first}");
    let out = ok(&cairn(&["snapshots"], &env));
    assert_eq!(out.lines().count(), 2, "the second snapshot was saved");
}

/// Regression: a standard output that could not be written (`> /dev/full`)
/// made `init` report success though nobody saw the only copy of the key,
/// and other commands exit 0 with nothing printed.
#[test]
fn output_that_cannot_be_written_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("repo");
    let full = || std::fs::File::create("/dev/full").expect("/dev/full");
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["init", "--repo", p(&repo)])
        .stdout(full())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("recovery key"));
    assert!(
        !repo.join("config/config").exists(),
        "the repository was taken back"
    );

    let (repo, key_file) = init_repo(dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["stats", "--repo", p(&repo), "--key-file", p(&key_file)])
        .stdout(full())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}

/// Regression: a file whose size could not be set (`ftruncate` refused: a
/// file-size limit here, a full disk without holes on an SD card) was left
/// under its temporary name after the restore failed. Both kinds of file: a
/// one-chunk hole (created by a data worker) and one of several chunks
/// (created by the planner).
#[test]
fn a_restore_that_cannot_size_a_file_leaves_nothing_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (repo, key_file) = init_repo(dir.path());
    let mut noise = vec![0u8; 9 << 20];
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    for byte in &mut noise {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *byte = x as u8;
    }
    for (case, content) in [("hole", vec![0u8; 200_000]), ("chunks", noise)] {
        let src = dir.path().join(case);
        std::fs::create_dir_all(&src).expect("mkdir");
        std::fs::write(src.join("file"), &content).expect("write");
        ok(&cairn(
            &[
                "backup",
                "--repo",
                p(&repo),
                "--key-file",
                p(&key_file),
                p(&src),
            ],
            &[],
        ));
        let target = dir.path().join(format!("out-{case}"));
        // Files may not grow past 100 blocks of 512 bytes; SIGXFSZ ignored,
        // so the refusal is an error (EFBIG), not a signal.
        let script = format!(
            "trap '' XFSZ; ulimit -f 100 && exec {bin} restore latest --repo {repo} --key-file {key} --target {target}",
            bin = env!("CARGO_BIN_EXE_cairn"),
            repo = p(&repo),
            key = p(&key_file),
            target = p(&target),
        );
        let out = Command::new("sh")
            .args(["-c", &script])
            .env_remove("CAIRN_REPOSITORY")
            .output()
            .expect("sh");
        assert!(!out.status.success(), "{case}: the restore cannot succeed");
        let mut stack = vec![target.clone()];
        while let Some(path) = stack.pop() {
            for entry in std::fs::read_dir(&path).expect("readdir") {
                let entry = entry.expect("entry");
                let name = entry.file_name().to_string_lossy().into_owned();
                assert!(!name.starts_with(".cairn-partial"), "{case}: {name} left");
                if entry.file_type().expect("type").is_dir() {
                    stack.push(entry.path());
                }
            }
        }
    }
}

/// `init --chunker` picks the cut rule for good: toeplitz-aes by default,
/// FastCDC when asked; either backs up and restores, and `policy` names it.
#[test]
fn the_chunker_is_chosen_at_init() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    // Large enough for several chunks of the database profile.
    let content: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(src.join("chat.db"), &content).expect("write");
    for (args, name) in [
        (&[][..], "toeplitz-aes"),
        (
            &["--chunker", "fastcdc", "--compress-in-place"][..],
            "fastcdc",
        ),
    ] {
        let repo = dir.path().join(format!("repo-{name}"));
        let key_file = dir.path().join(format!("key-{name}"));
        let mut init = vec!["init", "--repo", p(&repo), "--key-file", p(&key_file)];
        init.extend_from_slice(args);
        ok(&cairn(&init, &[]));
        let env = [
            ("CAIRN_REPOSITORY", p(&repo)),
            ("CAIRN_KEY_FILE", p(&key_file)),
        ];
        let policy: serde_json::Value =
            serde_json::from_str(&ok(&cairn(&["policy", "--json"], &env))).expect("json");
        assert_eq!(policy["chunker"], name);
        assert_eq!(policy["compress_in_place"], !args.is_empty());
        assert_eq!(policy["format"], 3);
        ok(&cairn(&["backup", p(&src)], &env));
        let target = dir.path().join(format!("out-{name}"));
        ok(&cairn(&["restore", "latest", "--target", p(&target)], &env));
        let restored = std::fs::read(target.join("src/chat.db")).expect("restored");
        assert!(restored == content, "{name}: restored bytes differ");
    }
    let bad = cairn(
        &[
            "init",
            "--repo",
            p(&dir.path().join("r")),
            "--chunker",
            "gear",
        ],
        &[],
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("'gear'"));
}

/// The device remembers the newest snapshot it saw: when the newest
/// snapshot file disappears, `snapshots` and `restore latest` fail with one
/// line that says what happened, until `--accept-rollback`.
#[test]
fn a_rolled_back_repository_is_refused_until_accepted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (repo, key_file) = init_repo(dir.path());
    let env = [
        ("CAIRN_REPOSITORY", p(&repo)),
        ("CAIRN_KEY_FILE", p(&key_file)),
    ];
    let src = dir.path().join("chat");
    std::fs::create_dir_all(&src).expect("mkdir");
    for day in 0..2 {
        std::fs::write(src.join(format!("day{day}.txt")), format!("day {day}")).expect("write");
        ok(&cairn(&["backup", p(&src)], &env));
    }
    let newest = ok(&cairn(&["snapshots", "--json"], &env));
    let listed: serde_json::Value = serde_json::from_str(&newest).expect("json");
    let ids: Vec<String> = listed
        .as_array()
        .expect("array")
        .iter()
        .map(|s| s["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(ids.len(), 2);
    std::fs::remove_file(repo.join("snapshots").join(&ids[1])).expect("delete the newest");
    for args in [
        &["snapshots"][..],
        &["restore", "latest", "--target", "/nonexistent/x"],
    ] {
        let line = one_line_error(&cairn(args, &env));
        assert!(line.contains("went back in time"), "{line}");
    }
    let accepted = ok(&cairn(&["--accept-rollback", "snapshots"], &env));
    assert!(accepted.contains(&ids[0][..8]), "{accepted}");
    ok(&cairn(&["snapshots"], &env));
}
