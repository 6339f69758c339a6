//! Where the CLI gets the recovery key: `--key-file` / `CAIRN_KEY_FILE`, or the
//! `CAIRN_RECOVERY_KEY` variable. Never a command-line argument holding the key
//! (it would show in `ps` and shell history). And `cairn key`, which adds,
//! rotates and removes keys (new ones come from, or go to, key files).

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result, bail};
use cairn::RecoveryKey;
use zeroize::Zeroizing;

use crate::output::out;
use crate::{Cli, Done, KeyWhat, open_repo, print_warnings};

/// Most bytes read from a key file: a key with any spacing fits many times
/// over, and `--key-file /dev/zero` must not exhaust memory.
const MAX_KEY_FILE_LEN: u64 = 4096;

fn read_key_file(path: &Path) -> Result<String> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("reading key file {}", path.display()))?;
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(MAX_KEY_FILE_LEN + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading key file {}", path.display()))?;
    if bytes.len() as u64 > MAX_KEY_FILE_LEN {
        bail!(
            "key file {} is larger than {MAX_KEY_FILE_LEN} bytes: not a key file",
            path.display()
        );
    }
    match std::str::from_utf8(&bytes) {
        Ok(text) => Ok(text.to_owned()),
        Err(_) => bail!("key file {} is not text", path.display()),
    }
}

/// Loads the key for opening a repository.
pub fn load(key_file: Option<&Path>) -> Result<RecoveryKey> {
    let text = match key_file {
        Some(path) => Zeroizing::new(read_key_file(path)?),
        None => match std::env::var("CAIRN_RECOVERY_KEY") {
            Ok(text) => Zeroizing::new(text),
            Err(_) => bail!(
                "no recovery key given (use --key-file, CAIRN_KEY_FILE or CAIRN_RECOVERY_KEY)"
            ),
        },
    };
    Ok(cairn::parse_recovery_key(&text)?)
}

/// Writes a new key file readable by the owner only (0600 whatever the
/// umask); refuses to overwrite. A file that could not be written whole is
/// removed again: a truncated key file must never look like a key.
pub fn write_new(path: &Path, key: &RecoveryKey) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating key file {}", path.display()))?;
    let written = file
        .set_permissions(std::fs::Permissions::from_mode(0o600))
        .and_then(|()| file.write_all(key.to_grouped_string().as_bytes()))
        .and_then(|()| file.write_all(b"\n"))
        .and_then(|()| file.sync_all());
    if let Err(e) = written {
        drop(file);
        let _ = std::fs::remove_file(path);
        return Err(e).with_context(|| format!("writing key file {}", path.display()));
    }
    Ok(())
}

/// The key from `path`, or a new one written there; says which.
fn new_key(path: &std::path::Path) -> Result<(RecoveryKey, bool)> {
    if path.exists() {
        let key = load(Some(path))?;
        return Ok((key, false));
    }
    let key = RecoveryKey::generate().context("generating a recovery key")?;
    write_new(path, &key)?;
    Ok((key, true))
}

/// `cairn key …`.
pub fn command(cli: &Cli, what: &KeyWhat) -> Result<Done> {
    let repo = open_repo(cli)?;
    print_warnings(&repo);
    match what {
        KeyWhat::List => {
            let slots = repo.key_slots()?;
            if cli.json {
                let list: Vec<serde_json::Value> = slots
                    .iter()
                    .map(|s| serde_json::json!({"id": s.id, "in_use": s.in_use}))
                    .collect();
                out!("{}", serde_json::Value::Array(list));
            } else {
                for s in &slots {
                    out!("{}{}", s.id, if s.in_use { "  (this key)" } else { "" });
                }
            }
        }
        KeyWhat::Add { new_key_file } | KeyWhat::Rotate { new_key_file } => {
            let rotate = matches!(what, KeyWhat::Rotate { .. });
            let (key, made) = new_key(new_key_file)?;
            let added = if rotate {
                repo.rotate_key(&key)
            } else {
                repo.add_key(&key)
            };
            let id = match added {
                Ok(id) => id,
                Err(e) => {
                    // A key made for this call is of no use now.
                    if made {
                        let _ = std::fs::remove_file(new_key_file);
                    }
                    return Err(e.into());
                }
            };
            if cli.json {
                out!(
                    "{}",
                    serde_json::json!({"slot": id, "rotated": rotate, "new_key_written": made})
                );
            } else {
                if made {
                    out!("new recovery key written to {}", new_key_file.display());
                }
                out!(
                    "key slot {id} added{}",
                    if rotate {
                        "; the old key no longer opens the repository"
                    } else {
                        ""
                    }
                );
            }
        }
        KeyWhat::Remove { id } => {
            let removed = repo.remove_key(id)?;
            if cli.json {
                out!("{}", serde_json::json!({"removed": removed}));
            } else {
                out!("key slot {removed} removed");
            }
        }
    }
    Ok(Done::Complete)
}
