//! `cairn key`: list, add (a second device's key), rotate and remove key
//! slots; the packs never change, and a removed key is refused.

use std::collections::BTreeMap;
use std::path::Path;

use crate::{cairn, ok, one_line_error, p};

/// Every file under `repo/packs`, `repo/index` and `repo/snapshots`, with
/// its bytes.
fn data_files(repo: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for dir in ["packs", "index", "snapshots"] {
        let mut stack = vec![repo.join(dir)];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).expect("readdir") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let bytes = std::fs::read(&path).expect("read");
                    out.insert(path.display().to_string(), bytes);
                }
            }
        }
    }
    out
}

fn slots(env: &[(&str, &str)]) -> Vec<serde_json::Value> {
    let listed = ok(&cairn(&["key", "list", "--json"], env));
    serde_json::from_str::<serde_json::Value>(&listed)
        .expect("JSON")
        .as_array()
        .expect("a list")
        .clone()
}

#[test]
fn keys_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("repo");
    let first = dir.path().join("first.key");
    let src = dir.path().join("chat");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(src.join("messages.db"), vec![9u8; 200_000]).expect("write");
    ok(&cairn(
        &["init", "--repo", p(&repo), "--key-file", p(&first)],
        &[],
    ));
    let first_env = [
        ("CAIRN_REPOSITORY", p(&repo)),
        ("CAIRN_KEY_FILE", p(&first)),
    ];
    ok(&cairn(&["backup", p(&src)], &first_env));
    let before = data_files(&repo);
    assert_eq!(slots(&first_env).len(), 1);

    // A second device's key, made by the command.
    let second = dir.path().join("second.key");
    let out = ok(&cairn(
        &["key", "add", "--new-key-file", p(&second)],
        &first_env,
    ));
    assert!(out.contains("new recovery key written"), "{out}");
    let second_env = [
        ("CAIRN_REPOSITORY", p(&repo)),
        ("CAIRN_KEY_FILE", p(&second)),
    ];
    ok(&cairn(&["snapshots"], &second_env));
    let listed = slots(&second_env);
    assert_eq!(listed.len(), 2);
    let second_id = listed
        .iter()
        .find(|s| s["in_use"] == true)
        .and_then(|s| s["id"].as_str())
        .expect("the second key's slot")
        .to_owned();

    // A key someone typed is refused, in one line, without the key.
    let typed = dir.path().join("typed.key");
    std::fs::write(&typed, "abab".repeat(16)).expect("write");
    let err = one_line_error(&cairn(
        &["key", "add", "--new-key-file", p(&typed)],
        &first_env,
    ));
    assert!(err.contains("too simple") && !err.contains("abab"), "{err}");

    // Rotate the first device's key: the old one is refused, the new one
    // opens, and no pack, index file or snapshot changed.
    let third = dir.path().join("third.key");
    ok(&cairn(
        &["key", "rotate", "--new-key-file", p(&third)],
        &first_env,
    ));
    let err = one_line_error(&cairn(&["snapshots"], &first_env));
    assert!(err.contains("wrong recovery key"), "{err}");
    let third_env = [
        ("CAIRN_REPOSITORY", p(&repo)),
        ("CAIRN_KEY_FILE", p(&third)),
    ];
    ok(&cairn(&["snapshots"], &third_env));
    assert!(
        data_files(&repo) == before,
        "rotation rewrote repository files"
    );

    // Remove the second device's key by a prefix of its ID; the slot in
    // use and the last slot are refused.
    let out = ok(&cairn(&["key", "remove", &second_id[..8]], &third_env));
    assert!(out.contains(&second_id), "{out}");
    let err = one_line_error(&cairn(&["snapshots"], &second_env));
    assert!(err.contains("wrong recovery key"), "{err}");
    let last = slots(&third_env);
    assert_eq!(last.len(), 1);
    let last_id = last[0]["id"].as_str().expect("id").to_owned();
    let err = one_line_error(&cairn(&["key", "remove", &last_id], &third_env));
    assert!(err.contains("rotate"), "{err}");
    let out = dir.path().join("out");
    ok(&cairn(
        &["restore", "latest", "--target", p(&out)],
        &third_env,
    ));
    assert_eq!(
        std::fs::read(out.join("chat/messages.db")).expect("restored"),
        vec![9u8; 200_000]
    );
}
