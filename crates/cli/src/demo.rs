//! `cairn demo`: the README's main job. Builds a chat-app-like history (a
//! message database edited in place, photos, videos, voice notes), backs it up
//! day after day with changes in between, prints what each day read versus what
//! it stored, then restores the last snapshot and verifies it byte for byte.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use cairn::{BackupOptions, InitOptions, NoProgress, Repository};
use cairn_store::LocalStore;

use crate::output::out;

/// Deterministic generator (SplitMix64): the demo is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// Incompressible bytes, like encoded media.
    fn media(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(len);
        out
    }

    /// Text-like message records, like a message database page.
    fn messages(&mut self, len: usize) -> Vec<u8> {
        const WORDS: &[&str] = &[
            "hey", "see", "you", "at", "the", "station", "lol", "photo", "tonight", "ok", "thanks",
            "dinner", "running", "late", "call", "me", "when", "free", "love", "it",
        ];
        let mut out = Vec::with_capacity(len + 64);
        while out.len() < len {
            let id = self.next() % 1_000_000;
            out.extend_from_slice(format!("{id:07}|").as_bytes());
            for _ in 0..(3 + self.below(12)) {
                out.extend_from_slice(WORDS[self.below(WORDS.len() as u64) as usize].as_bytes());
                out.push(b' ');
            }
            out.push(b'\n');
        }
        out.truncate(len);
        out
    }
}

const DB_PAGE: usize = 4096;

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1_000_000.0
}

/// Day 0: the history as it stands.
fn create_history(root: &Path, rng: &mut Rng) -> Result<()> {
    write(
        &root.join("db/messages.db"),
        &rng.messages(16 * 1024 * 1024),
    )?;
    for i in 0..120 {
        let len = 150_000 + rng.below(1_500_000) as usize;
        write(
            &root.join(format!("media/photos/IMG_{i:04}.jpg")),
            &rng.media(len),
        )?;
    }
    for i in 0..6 {
        let len = 4_000_000 + rng.below(8_000_000) as usize;
        write(
            &root.join(format!("media/videos/VID_{i:04}.mp4")),
            &rng.media(len),
        )?;
    }
    for i in 0..60 {
        let len = 20_000 + rng.below(200_000) as usize;
        write(
            &root.join(format!("media/voice/PTT_{i:04}.opus")),
            &rng.media(len),
        )?;
    }
    write(
        &root.join("config/settings.json"),
        b"{\"theme\":\"dark\",\"backup\":\"daily\"}\n",
    )?;
    std::os::unix::fs::symlink("../media/photos", root.join("db/photos-link"))
        .context("creating symlink")?;
    write(&root.join("media/.nomedia"), b"")?;
    Ok(())
}

/// One day of chat: scattered database page edits, appended messages, new
/// media, one forwarded photo (same bytes, new name), one deleted voice note.
fn change_history(root: &Path, day: u32, rng: &mut Rng) -> Result<()> {
    let db_path = root.join("db/messages.db");
    let mut db = fs::read(&db_path)?;
    for _ in 0..20 {
        let page = rng.below((db.len() / DB_PAGE) as u64) as usize;
        let fresh = rng.messages(DB_PAGE);
        db[page * DB_PAGE..(page + 1) * DB_PAGE].copy_from_slice(&fresh);
    }
    db.extend_from_slice(&rng.messages(64 * 1024));
    fs::write(&db_path, &db)?;
    for i in 0..4 {
        let len = 200_000 + rng.below(1_500_000) as usize;
        write(
            &root.join(format!("media/photos/IMG_d{day}_{i}.jpg")),
            &rng.media(len),
        )?;
    }
    let voice = 20_000 + rng.below(200_000) as usize;
    write(
        &root.join(format!("media/voice/PTT_d{day}.opus")),
        &rng.media(voice),
    )?;
    let forwarded = root.join(format!("media/photos/IMG_{:04}.jpg", rng.below(120)));
    fs::copy(
        &forwarded,
        root.join(format!("media/photos/FWD_d{day}.jpg")),
    )?;
    let gone = root.join(format!("media/voice/PTT_{:04}.opus", day));
    if gone.exists() {
        fs::remove_file(gone)?;
    }
    Ok(())
}

/// Compares two trees: same names, kinds, bytes, symlink targets, modes and
/// modification times. Returns (files, bytes) compared.
fn verify_same(expected: &Path, actual: &Path) -> Result<(u64, u64)> {
    let e = fs::symlink_metadata(expected)?;
    let a = fs::symlink_metadata(actual)
        .with_context(|| format!("{} missing after restore", actual.display()))?;
    ensure!(
        e.file_type() == a.file_type(),
        "{} has another type",
        actual.display()
    );
    if e.file_type().is_symlink() {
        ensure!(
            fs::read_link(expected)? == fs::read_link(actual)?,
            "{} target differs",
            actual.display()
        );
        return Ok((0, 0));
    }
    ensure!(e.mode() == a.mode(), "{} mode differs", actual.display());
    ensure!(
        (e.mtime(), e.mtime_nsec()) == (a.mtime(), a.mtime_nsec()) || e.is_dir(),
        "{} mtime differs",
        actual.display()
    );
    if e.is_file() {
        ensure!(
            fs::read(expected)? == fs::read(actual)?,
            "{} content differs",
            actual.display()
        );
        return Ok((1, e.len()));
    }
    let mut names: Vec<_> = fs::read_dir(expected)?
        .map(|d| d.map(|d| d.file_name()))
        .collect::<Result<_, _>>()?;
    let n_actual = fs::read_dir(actual)?.count();
    ensure!(
        names.len() == n_actual,
        "{} has other entries",
        actual.display()
    );
    names.sort();
    let (mut files, mut bytes) = (0, 0);
    for name in names {
        let (f, b) = verify_same(&expected.join(&name), &actual.join(&name))?;
        files += f;
        bytes += b;
    }
    Ok((files, bytes))
}

pub fn run(dir: Option<&Path>, days: u32) -> Result<()> {
    let temp;
    let base: PathBuf = match dir {
        Some(d) => {
            if d.exists() && fs::read_dir(d)?.next().is_some() {
                bail!("demo directory {} is not empty", d.display());
            }
            d.to_path_buf()
        }
        None => {
            temp = tempfile::tempdir().context("creating a temporary directory")?;
            temp.path().to_path_buf()
        }
    };
    let history = base.join("history").join("chat");
    let repo_dir = base.join("repo");
    let restore_dir = base.join("restore");
    let mut rng = Rng(0x0c41_12b0);

    out!("cairn demo in {}", base.display());
    create_history(&history, &mut rng)?;
    let store = Arc::new(LocalStore::create(&repo_dir)?);
    let (mut repo, _key) = Repository::init(store.clone(), &InitOptions::default())?;
    out!("repository created; recovery key generated (a real init shows it once)");
    out!();
    out!(
        "{:>5} {:>10} {:>10} {:>10} {:>8} {:>8}",
        "day",
        "read MB",
        "new MB",
        "stored MB",
        "files",
        "seconds"
    );
    let options = BackupOptions {
        host: "demo".into(),
        ..BackupOptions::default()
    };
    let mut last = None;
    for day in 0..=days {
        if day > 0 {
            change_history(&history, day, &mut rng)?;
        }
        let started = Instant::now();
        let report = repo.backup(std::slice::from_ref(&history), &options, &NoProgress)?;
        let s = &report.summary;
        out!(
            "{day:>5} {:>10.1} {:>10.1} {:>10.1} {:>8} {:>8.2}",
            mb(s.bytes_read),
            mb(s.bytes_new),
            mb(s.bytes_stored),
            s.n_files,
            started.elapsed().as_secs_f64()
        );
        last = Some(report.snapshot_id);
    }
    let last = last.context("no snapshot")?;
    let stats = repo.stats()?;
    out!();
    out!(
        "repository: {} snapshots, {} packs, {:.1} MB on disk for {:.1} MB of unique data",
        stats.n_snapshots,
        stats.n_packs,
        mb(stats.repo_bytes),
        mb(stats.data_plain_bytes)
    );
    let started = Instant::now();
    let report = repo.restore(&last, None, &restore_dir, &NoProgress)?;
    out!(
        "restored {} files ({:.1} MB) in {:.2} s",
        report.n_files,
        mb(report.bytes_written),
        started.elapsed().as_secs_f64()
    );
    let (files, bytes) = verify_same(&history, &restore_dir.join("chat"))?;
    out!(
        "verified: {files} files, {:.1} MB, byte-identical with modes and times",
        mb(bytes)
    );
    Ok(())
}
