//! Where the CLI gets the recovery key: `--key-file` / `CAIRN_KEY_FILE`, or the
//! `CAIRN_RECOVERY_KEY` variable. Never a command-line argument holding the key
//! (it would show in `ps` and shell history).

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, Result, bail};
use cairn::RecoveryKey;
use zeroize::Zeroizing;

/// Loads the key for opening a repository.
pub fn load(key_file: Option<&Path>) -> Result<RecoveryKey> {
    let text = match key_file {
        Some(path) => Zeroizing::new(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading key file {}", path.display()))?,
        ),
        None => match std::env::var("CAIRN_RECOVERY_KEY") {
            Ok(text) => Zeroizing::new(text),
            Err(_) => bail!(
                "no recovery key given (use --key-file, CAIRN_KEY_FILE or CAIRN_RECOVERY_KEY)"
            ),
        },
    };
    Ok(cairn::parse_recovery_key(&text)?)
}

/// Writes a new key file readable by the owner only; refuses to overwrite.
pub fn write_new(path: &Path, key: &RecoveryKey) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating key file {}", path.display()))?;
    file.write_all(key.to_grouped_string().as_bytes())
        .and_then(|()| file.write_all(b"\n"))
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing key file {}", path.display()))?;
    Ok(())
}
