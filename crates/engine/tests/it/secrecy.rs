//! Nothing readable reaches the repository: no content, no names, no key.

use std::sync::Arc;

use cairn::{InitOptions, Repository};
use cairn_store::LocalStore;

use crate::support::*;

fn encodings(secret: &[u8]) -> Vec<Vec<u8>> {
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let mut out = vec![
        secret.to_vec(),
        hex.clone().into_bytes(),
        hex.to_uppercase().into_bytes(),
        base64(secret).into_bytes(),
    ];
    // Base64 of the secret at each of the three alignments, minus edge chars.
    for shift in 1..3 {
        let mut padded = vec![0u8; shift];
        padded.extend_from_slice(secret);
        let enc = base64(&padded);
        out.push(enc.as_bytes()[4..enc.len() - 4].to_vec());
    }
    let utf16: Vec<u8> = String::from_utf8_lossy(secret)
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    out.push(utf16);
    out
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for group in bytes.chunks(3) {
        let b = [
            group[0],
            *group.get(1).unwrap_or(&0),
            *group.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= group.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.len() <= haystack.len() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn markers_and_key_never_reach_the_repository() {
    let content_marker = b"CAIRN-CONTENT-MARKER-7f3a9c";
    let name_marker = "cairn_name_marker_51e0";
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    // The marker in compressible text, in incompressible noise, and in names.
    let mut text = Vec::new();
    for i in 0..2000 {
        text.extend_from_slice(format!("message {i}: ").as_bytes());
        text.extend_from_slice(content_marker);
        text.push(b'\n');
    }
    write(&src.join(format!("{name_marker}.txt")), &text);
    let mut noise = Rng(11).bytes(300_000);
    noise[150_000..150_000 + content_marker.len()].copy_from_slice(content_marker);
    write(&src.join(name_marker).join("noise.bin"), &noise);
    std::os::unix::fs::symlink(name_marker, src.join("link")).expect("symlink");

    let repo_dir = dir.path().join("repo");
    let store = Arc::new(LocalStore::create(&repo_dir).expect("create"));
    let (mut repo, key) = Repository::init(store, &InitOptions::default()).expect("init");
    let mut opts = options();
    opts.tags = vec!["tagged".into()];
    repo.backup(std::slice::from_ref(&src), &opts, &cairn::NoProgress)
        .expect("backup");

    let key_plain = key.to_plain_string();
    let key_grouped = key.to_grouped_string();
    let mut needles = encodings(content_marker);
    needles.extend(encodings(name_marker.as_bytes()));
    needles.extend(encodings(key_plain.as_bytes()));
    needles.push(key_grouped.as_bytes().to_vec());
    needles.push(key_plain.to_uppercase().into_bytes());

    let mut n_files = 0;
    for entry in walk(&repo_dir) {
        let bytes = std::fs::read(&entry).expect("read");
        n_files += 1;
        for needle in &needles {
            assert!(
                !contains(&bytes, needle),
                "{} contains a secret ({} bytes)",
                entry.display(),
                needle.len()
            );
        }
        let name = entry.to_string_lossy();
        assert!(!name.contains(name_marker) && !name.contains(&key_plain[..16]));
    }
    assert!(n_files >= 5, "expected config, key, packs, index, snapshot");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("readdir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
