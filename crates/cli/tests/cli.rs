//! End-to-end tests of the `cairn` binary: every command, and every error as one
//! line with a non-zero exit.

use std::path::Path;
use std::process::{Command, Output};

fn cairn(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cairn"));
    cmd.args(args)
        .env_remove("CAIRN_REPOSITORY")
        .env_remove("CAIRN_KEY_FILE")
        .env_remove("CAIRN_RECOVERY_KEY");
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
