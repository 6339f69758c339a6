//! `forget` and `prune` through the binary, including prunes running in
//! other processes while backups run.

use std::path::Path;

use super::{cairn, init_repo, ok, one_line_error, p};

fn write_day(src: &Path, day: u32) {
    std::fs::create_dir_all(src).expect("mkdir");
    // A new 96 KiB photo a day, kept three days.
    let mut bytes = vec![0u8; 96 * 1024];
    let mut x = u64::from(day) + 1;
    for b in &mut bytes {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(src.join(format!("photo{day}.jpg")), bytes).expect("write");
    if day >= 3 {
        let _ = std::fs::remove_file(src.join(format!("photo{}.jpg", day - 3)));
    }
    std::fs::write(src.join("messages.db"), format!("day {day}")).expect("write");
}

#[test]
fn forget_with_keep_rules_then_prune_gives_space_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (repo, key_file) = init_repo(dir.path());
    let env = [
        ("CAIRN_REPOSITORY", p(&repo)),
        ("CAIRN_KEY_FILE", p(&key_file)),
    ];
    let src = dir.path().join("chat");
    for day in 0..6 {
        write_day(&src, day);
        ok(&cairn(&["backup", p(&src)], &env));
    }
    let before: serde_json::Value =
        serde_json::from_str(&ok(&cairn(&["stats", "--json"], &env))).expect("json");

    let dry = ok(&cairn(
        &["forget", "--keep-last", "2", "--dry-run", "--prune"],
        &env,
    ));
    assert!(dry.contains("4 snapshots would be forgotten"), "{dry}");
    assert_eq!(ok(&cairn(&["snapshots"], &env)).lines().count(), 6);

    let out = ok(&cairn(
        &["forget", "--keep-last", "2", "--prune", "--json"],
        &env,
    ));
    let report: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(report["n_removed"], 4);
    assert_eq!(report["keep"].as_array().expect("keep").len(), 2);
    assert_eq!(report["keep"][0]["reasons"][0], "last");
    assert!(
        report["prune"]["n_packs_deleted"].as_u64().expect("n") > 0,
        "{out}"
    );
    assert!(report["prune"]["deferred"].is_null());

    let after: serde_json::Value =
        serde_json::from_str(&ok(&cairn(&["stats", "--json"], &env))).expect("json");
    assert!(after["repo_bytes"].as_u64() < before["repo_bytes"].as_u64());
    ok(&cairn(&["check", "--read-data"], &env));
    let target = dir.path().join("restored");
    ok(&cairn(&["restore", "latest", "--target", p(&target)], &env));
    for day in 3..6 {
        let name = format!("photo{day}.jpg");
        assert_eq!(
            std::fs::read(target.join("chat").join(&name)).expect("restored"),
            std::fs::read(src.join(&name)).expect("source")
        );
    }
    let again = ok(&cairn(&["prune"], &env));
    assert!(again.contains("delete 0 packs"), "{again}");
}

#[test]
fn forget_and_prune_refuse_what_makes_no_sense_in_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (repo, key_file) = init_repo(dir.path());
    let env = [
        ("CAIRN_REPOSITORY", p(&repo)),
        ("CAIRN_KEY_FILE", p(&key_file)),
    ];
    let e = one_line_error(&cairn(&["forget"], &env));
    assert!(e.contains("nothing to forget"), "{e}");
    let e = one_line_error(&cairn(&["forget", "abc", "--keep-last", "1"], &env));
    assert!(e.contains("not both"), "{e}");
    let e = one_line_error(&cairn(&["forget", "0123"], &env));
    assert!(e.contains("no snapshot matches"), "{e}");
    let bad = cairn(&["prune", "--max-repack", "12 parsecs"], &env);
    assert!(!bad.status.success());
    let bad = cairn(&["forget", "--keep-within", "soon"], &env);
    assert!(!bad.status.success());
}

/// Backups in one process, forget and prune in another, at the same time:
/// every backup succeeds and everything left restores.
#[test]
fn prunes_in_another_process_never_break_running_backups() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (repo, key_file) = init_repo(dir.path());
    let src = dir.path().join("chat");
    let (repo_s, key_s) = (p(&repo).to_owned(), p(&key_file).to_owned());
    let backups = {
        let (repo_s, key_s, src) = (repo_s.clone(), key_s.clone(), src.clone());
        std::thread::spawn(move || {
            let env = [
                ("CAIRN_REPOSITORY", repo_s.as_str()),
                ("CAIRN_KEY_FILE", key_s.as_str()),
            ];
            for day in 0..16 {
                write_day(&src, day);
                ok(&cairn(&["backup", p(&src)], &env));
            }
        })
    };
    let env = [
        ("CAIRN_REPOSITORY", repo_s.as_str()),
        ("CAIRN_KEY_FILE", key_s.as_str()),
    ];
    let (mut n_prunes, mut n_deleting, mut n_deferred) = (0, 0, 0);
    while !backups.is_finished() {
        let out = ok(&cairn(
            &[
                "forget",
                "--keep-last",
                "2",
                "--prune",
                "--max-unused",
                "0%",
                "--json",
            ],
            &env,
        ));
        let report: serde_json::Value = serde_json::from_str(&out).expect("json");
        n_prunes += 1;
        n_deleting += usize::from(report["prune"]["n_packs_deleted"].as_u64() > Some(0));
        n_deferred += usize::from(!report["prune"]["deferred"].is_null());
    }
    backups.join().expect("backups succeeded");
    // Which prunes deleted and which put it off depends on timing (the
    // deterministic interleavings are the engine's tests); here each one
    // succeeded beside running backups, and they did work.
    assert!(
        n_prunes > 0 && n_deleting + n_deferred > 0,
        "{n_prunes} prunes, {n_deleting} deleted, {n_deferred} deferred"
    );
    ok(&cairn(&["forget", "--keep-last", "2", "--prune"], &env));
    ok(&cairn(&["check", "--read-data"], &env));
    let target = dir.path().join("restored");
    ok(&cairn(&["restore", "latest", "--target", p(&target)], &env));
    for name in ["photo13.jpg", "photo14.jpg", "photo15.jpg", "messages.db"] {
        assert_eq!(
            std::fs::read(target.join("chat").join(name)).expect("restored"),
            std::fs::read(src.join(name)).expect("source"),
            "{name}"
        );
    }
}

#[test]
fn backup_dry_run_says_what_it_would_store_and_stores_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (repo, key_file) = init_repo(dir.path());
    let env = [
        ("CAIRN_REPOSITORY", p(&repo)),
        ("CAIRN_KEY_FILE", p(&key_file)),
    ];
    let src = dir.path().join("chat");
    write_day(&src, 0);
    let out = ok(&cairn(&["backup", p(&src), "--dry-run", "--json"], &env));
    // Progress lines first (stdout is a pipe), the summary last.
    let summary = out.lines().last().expect("summary");
    let report: serde_json::Value = serde_json::from_str(summary).expect("json");
    assert_eq!(report["dry_run"], true);
    assert!(report["snapshot_id"].is_null());
    assert!(report["bytes_new"].as_u64() > Some(90_000), "{out}");
    assert_eq!(ok(&cairn(&["snapshots"], &env)).lines().count(), 0);
    let text = ok(&cairn(&["backup", p(&src), "--dry-run"], &env));
    assert!(text.starts_with("dry run, nothing written"), "{text}");
    let real = ok(&cairn(&["backup", p(&src), "--json"], &env));
    let real: serde_json::Value =
        serde_json::from_str(real.lines().last().expect("summary")).expect("json");
    assert_eq!(real["bytes_new"], report["bytes_new"]);
}
