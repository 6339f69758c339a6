//! The newest snapshot this device saw in each repository, kept between
//! runs so that a server that later serves an older history is caught
//! (`cairn::NewestSeen`, docs/crypto.md). One small file per repository
//! under the cache directory (`seen/<repository ID>`: the ID is sealed in
//! the config, so no other repository shares it), private to the user;
//! losing it only loses the check, never data.

use std::io::Write;
use std::ops::{Deref, DerefMut};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use cairn::{NewestSeen, Repository, SnapshotId};

const HEADER: &str = "cairn newest seen v1";

/// Where the mark of the repository `repo_id` lives under `root`.
pub fn file_for(root: &Path, repo_id: &[u8; 16]) -> PathBuf {
    let hex: String = repo_id.iter().map(|b| format!("{b:02x}")).collect();
    root.join("seen").join(hex)
}

/// The mark in `file`, if there is a readable one.
pub fn load(file: &Path) -> Option<NewestSeen> {
    let text = std::fs::read_to_string(file).ok()?;
    let mut lines = text.lines();
    if lines.next()? != HEADER {
        return None;
    }
    let (sequence, id) = lines.next()?.split_once(' ')?;
    Some(NewestSeen {
        sequence: sequence.parse().ok()?,
        snapshot: SnapshotId::from_hex(id)?,
    })
}

/// Writes the mark to `file` (0600, through a temporary file and a rename).
pub fn save(file: &Path, seen: NewestSeen) -> std::io::Result<()> {
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let tmp = file.with_extension("tmp");
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    writeln!(
        out,
        "{HEADER}\n{} {}",
        seen.sequence,
        seen.snapshot.to_hex()
    )?;
    out.sync_all()?;
    std::fs::rename(&tmp, file)
}

/// An open repository that saves the newest snapshot it saw when dropped.
pub struct Tracked {
    repo: Repository,
    file: Option<PathBuf>,
}

impl Tracked {
    pub fn new(repo: Repository, file: Option<PathBuf>) -> Self {
        Self { repo, file }
    }
}

impl Deref for Tracked {
    type Target = Repository;
    fn deref(&self) -> &Repository {
        &self.repo
    }
}

impl DerefMut for Tracked {
    fn deref_mut(&mut self) -> &mut Repository {
        &mut self.repo
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let (Some(file), Some(seen)) = (&self.file, self.repo.newest_seen())
            && load(file) != Some(seen)
            && let Err(e) = save(file, seen)
        {
            eprintln!(
                "cairn: warning: could not remember the newest snapshot in {}: {e}",
                file.display()
            );
        }
    }
}
