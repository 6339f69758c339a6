//! The `cairn` command-line tool: glue between clap and the engine. Every error
//! becomes one line on stderr and exit status 1; a backup that skipped entries
//! or a restore that left some out exits with status 3 (as restic does), after
//! saying what was left out; warnings go to stderr as `cairn: warning: …`.

mod demo;
mod keys;
mod location;
mod maintenance;
mod output;
mod progress;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use cairn::{BackupOptions, InitOptions, NodeKind, OpenOptions, Parent, RecoveryKey, Repository};
use clap::{Parser, Subcommand};
use location::Location;
use output::{err, out};
use progress::CliProgress;

/// cairn: deduplicating, end-to-end encrypted backups.
#[derive(Parser, Debug)]
#[command(name = "cairn", version, about)]
struct Cli {
    /// Repository directory.
    #[arg(long, short = 'r', env = "CAIRN_REPOSITORY", global = true)]
    repo: Option<PathBuf>,
    /// File holding the recovery key (for `init`: where to write a new one).
    /// The key itself may also come from the CAIRN_RECOVERY_KEY variable; it is
    /// never accepted as a command-line argument.
    #[arg(long, env = "CAIRN_KEY_FILE", global = true)]
    key_file: Option<PathBuf>,
    /// Where to cache a remote repository's metadata (index, snapshots,
    /// trees), so that a daily backup reads only what is new. Default: the
    /// platform's cache directory (`$XDG_CACHE_HOME/cairn`,
    /// `~/.cache/cairn`, `~/Library/Caches/cairn`). Safe to delete at any time.
    #[arg(long, env = "CAIRN_CACHE_DIR", global = true)]
    cache_dir: Option<PathBuf>,
    /// Use no local cache (every run reads its metadata from the repository).
    #[arg(long, global = true)]
    no_cache: bool,
    /// Accept a repository whose history went back (its newest snapshots
    /// gone, or an older copy put back) and take what it serves as the
    /// newest seen: only if the repository was restored on purpose.
    #[arg(long, global = true)]
    accept_rollback: bool,
    /// Machine-readable output: one JSON summary on stdout (and, when stdout
    /// is a pipe, JSON progress lines before it).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

/// What `key` does.
#[derive(Subcommand, Debug)]
enum KeyWhat {
    /// The key slots, and which one the key given opens.
    List,
    /// Add a key: the one in FILE, or, if FILE does not exist, a new one
    /// written there (0600).
    Add {
        #[arg(long, value_name = "FILE")]
        new_key_file: PathBuf,
    },
    /// Remove a key slot by ID (a unique prefix will do); never the last
    /// one, nor the one in use (rotate that).
    Remove { id: String },
    /// Replace the key in use by the one in FILE (or a new one written
    /// there): the new key opens the repository, the old one no longer.
    Rotate {
        #[arg(long, value_name = "FILE")]
        new_key_file: PathBuf,
    },
}

/// What `repair` repairs.
#[derive(Subcommand, Debug)]
enum RepairWhat {
    /// The index (the default).
    Index {
        /// Read every pack whole and drop blobs that fail authentication.
        #[arg(long)]
        read_data: bool,
    },
    /// Rewrite snapshots that reach missing or damaged data: intact files
    /// stay, damaged files keep what can be had under `NAME.damaged`.
    Snapshots {
        /// Remove the original snapshots once repaired.
        #[arg(long)]
        forget: bool,
    },
}

/// The cut rules `init --chunker` offers.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum ChunkerArg {
    /// AES-256 of a keyed hash of the last 64 bytes: an observer of chunk
    /// lengths cannot recover its key or predict how a file is cut (the
    /// default).
    ToeplitzAes,
    /// FastCDC with a seeded gear table: about 4x faster to cut, but its key
    /// falls to an observer of about 20 chunk lengths.
    Fastcdc,
}

/// The tiers `init --tier` offers.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum TierArg {
    Free,
    Paid,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a repository and a new recovery key.
    Init {
        /// Which files are media (glob, repeatable; replaces the defaults:
        /// common image, video, audio and document extensions, and anything
        /// under a directory named `media` or `attachments`). A pattern
        /// without `/` matches a name at any depth; a match on a directory
        /// covers everything under it.
        #[arg(long, value_name = "GLOB")]
        media: Vec<String>,
        /// Retention: `free` keeps every message and media of the last 45
        /// days within 100 MB, and the latest snapshot; `paid` keeps
        /// everything within 100 GB, with daily, weekly and monthly
        /// snapshots. Every backup then enforces it (default: no tier).
        #[arg(long, value_enum)]
        tier: Option<TierArg>,
        /// The repository's quota (e.g. 30MiB, 100GB), overriding the
        /// tier's: backups leave out the oldest media to stay within it.
        #[arg(long, value_name = "SIZE", value_parser = maintenance::parse_size)]
        quota: Option<u64>,
        /// Leave out media older than this many days, overriding the tier's.
        #[arg(long, value_name = "DAYS")]
        media_max_age: Option<u32>,
        /// The chunker's cut rule, fixed for the life of the repository.
        #[arg(long, value_enum, default_value = "toeplitz-aes")]
        chunker: ChunkerArg,
        /// Compress the chunks of databases (files edited in place) too.
        /// Off by default: an attacker whose message lands in the same
        /// database page as a secret could learn, from the compressed
        /// size, whether a guess of the secret was right.
        #[arg(long)]
        compress_in_place: bool,
    },
    /// Show the repository's retention policy and media rules.
    Policy,
    /// The repository's recovery keys (key slots): list, add a key (for a
    /// second device), remove one, or rotate the one in use. No pack is
    /// rewritten.
    Key {
        #[command(subcommand)]
        what: KeyWhat,
    },
    /// After `check` found damage: drop what cannot be had from the index
    /// (the next backup stores it again) and index orphaned packs again;
    /// `repair snapshots` then rewrites the snapshots that need it.
    Repair {
        #[command(subcommand)]
        what: Option<RepairWhat>,
        /// Read every pack whole and drop blobs that fail authentication.
        #[arg(long)]
        read_data: bool,
    },
    /// Back up paths into a new snapshot.
    Backup {
        /// Files or directories to back up.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Tag to record (repeatable).
        #[arg(long)]
        tag: Vec<String>,
        /// Host name to record (default: this machine's).
        #[arg(long)]
        host: Option<String>,
        /// Read every file, ignoring the parent snapshot.
        #[arg(long, conflicts_with = "parent")]
        force: bool,
        /// Compare against this snapshot instead of the latest one of the same
        /// host and paths.
        #[arg(long)]
        parent: Option<String>,
        /// Sealing threads (default: one per core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Say what the backup would store (new bytes, packs, left-out
        /// entries) and write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Leave out what matches (glob relative to each path, repeatable;
        /// a pattern without `/` matches a name at any depth, a match on a
        /// directory leaves out everything under it).
        #[arg(long, value_name = "GLOB")]
        exclude: Vec<String>,
    },
    /// List snapshots.
    Snapshots,
    /// List the contents of a snapshot.
    Ls {
        /// Snapshot ID, unique prefix, or `latest`.
        #[arg(default_value = "latest")]
        snapshot: String,
        /// Path inside the snapshot.
        path: Option<PathBuf>,
    },
    /// Restore a snapshot (or a path inside it) into a new or empty directory.
    Restore {
        /// Snapshot ID, unique prefix, or `latest`.
        snapshot: String,
        /// Target directory.
        #[arg(long, short = 't')]
        target: PathBuf,
        /// Restore only this path inside the snapshot.
        #[arg(long)]
        path: Option<PathBuf>,
    },
    /// Write one file of a snapshot to standard output.
    Cat {
        /// Snapshot ID, unique prefix, or `latest`.
        snapshot: String,
        /// Path of the file inside the snapshot.
        path: PathBuf,
    },
    /// Show repository totals.
    Stats,
    /// Check the repository: every index file, snapshot and pack header, and
    /// everything each snapshot needs. Exits 1 if anything is wrong.
    Check {
        /// Also read every pack whole and authenticate every blob.
        #[arg(long, conflicts_with = "read_data_subset")]
        read_data: bool,
        /// Read a random share of the packs whole (e.g. `10%`), a different
        /// share each run.
        #[arg(long, value_name = "PERCENT", value_parser = maintenance::parse_percent)]
        read_data_subset: Option<f64>,
    },
    /// Remove snapshots, named or chosen by keep rules (per host and paths).
    /// Their data stays until `prune` (or `--prune`).
    Forget(maintenance::ForgetArgs),
    /// Delete what no snapshot needs and repack partly used packs. Safe
    /// while backups run: what they may rely on is deleted only later.
    Prune {
        #[command(flatten)]
        args: maintenance::PruneArgs,
        /// Say what would be deleted; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Run a self-contained demonstration: daily backups of a generated chat
    /// history, then a verified restore.
    Demo {
        /// Work directory (default: a temporary one, removed afterwards).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Number of daily backups after the first.
        #[arg(long, default_value_t = 4)]
        days: u32,
    },
}

/// How a command that did not fail ended.
enum Done {
    /// Everything asked for was done.
    Complete,
    /// The command finished, but left something out (and said what).
    Partial,
}

/// Exit status of a command that finished but left something out.
const EXIT_PARTIAL: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse();
    progress::stop_on_interrupt();
    let result = run(cli);
    if let (Ok(_), Some(message)) = (&result, output::write_error()) {
        err!("cairn: error: writing to standard output failed: {message}");
        return ExitCode::FAILURE;
    }
    match result {
        Ok(Done::Complete) => ExitCode::SUCCESS,
        Ok(Done::Partial) => ExitCode::from(EXIT_PARTIAL),
        // The reader of our output went away (`cairn ls | head`): not an error.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            err!("cairn: error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes joined with ": ", each cause shown once: many
/// errors already include their source's text (an OS error would otherwise
/// read "…(os error 2): …(os error 2)").
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace('\n', " ")
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Prints what the repository skipped (damaged or missing objects).
fn print_warnings(repo: &Repository) {
    for warning in repo.take_warnings() {
        err!("cairn: warning: {warning}");
    }
}

fn repo_path(cli: &Cli) -> Result<PathBuf> {
    cli.repo
        .clone()
        .context("no repository given (use --repo or CAIRN_REPOSITORY)")
}

fn open_repo(cli: &Cli) -> Result<Repository> {
    let location = Location::of(&repo_path(cli)?)?;
    let key = keys::load(cli.key_file.as_deref())?;
    let cache_root = cli.cache_dir.clone().or_else(location::default_cache_dir);
    // A local repository is read as fast as a cache would be (restic's
    // choice too): only a remote one gets a cache. Every repository keeps
    // the newest snapshot seen there (a local path can be a server's share
    // too).
    let cache_dir = match (&location, cli.no_cache) {
        (Location::S3(_), false) => cache_root.clone(),
        _ => None,
    };
    let options = OpenOptions {
        cache_dir,
        newest_seen: None,
        accept_rollback: cli.accept_rollback,
        state_dir: cache_root,
    };
    Ok(Repository::open_with(location.open()?, &key, &options)?)
}

/// "1 entry", "2 entries".
fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn run(cli: Cli) -> Result<Done> {
    match &cli.command {
        Command::Init {
            media,
            tier,
            quota,
            media_max_age,
            chunker,
            compress_in_place,
        } => {
            let mut options = InitOptions::default();
            options.chunking.algorithm = match chunker {
                ChunkerArg::ToeplitzAes => cairn::ChunkerAlgorithm::ToeplitzAes,
                ChunkerArg::Fastcdc => cairn::ChunkerAlgorithm::FastCdc,
            };
            options.chunking.compress_in_place = *compress_in_place;
            if !media.is_empty() {
                options.classes.media = media.clone();
            }
            if let Some(tier) = tier {
                options.retention = cairn::Retention::for_tier(match tier {
                    TierArg::Free => cairn::Tier::Free,
                    TierArg::Paid => cairn::Tier::Paid,
                });
            }
            if quota.is_some() {
                options.retention.quota_bytes = *quota;
            }
            if media_max_age.is_some() {
                options.retention.media_max_age_days = *media_max_age;
            }
            init(&cli, &options)
        }
        Command::Policy => policy(&cli),
        Command::Key { what } => keys::command(&cli, what),
        Command::Repair { what, read_data } => repair(&cli, what.as_ref(), *read_data),
        Command::Backup {
            paths,
            tag,
            host,
            force,
            parent,
            threads,
            dry_run,
            exclude,
        } => {
            let mut repo = open_repo(&cli)?;
            let parent = match (force, parent) {
                (true, _) => Parent::None,
                (false, Some(spec)) => Parent::Snapshot(repo.find_snapshot(spec)?.0),
                (false, None) => Parent::Latest,
            };
            let options = BackupOptions {
                host: host.clone().unwrap_or_else(hostname),
                tags: tag.clone(),
                time: None,
                parent,
                threads: *threads,
                scan_totals: CliProgress::wants_totals(cli.json),
                dry_run: *dry_run,
                exclude: exclude.clone(),
            };
            backup(&cli, &mut repo, paths, &options)
        }
        Command::Snapshots => snapshots(&cli),
        Command::Ls { snapshot, path } => ls(&cli, snapshot, path.as_deref()),
        Command::Restore {
            snapshot,
            target,
            path,
        } => restore(&cli, snapshot, target, path.as_deref()),
        Command::Cat { snapshot, path } => {
            let repo = open_repo(&cli)?;
            let (id, _) = repo.find_snapshot(snapshot)?;
            let mut reader = repo.open_file(&id, path)?;
            let mut out = std::io::stdout().lock();
            let copied = std::io::copy(&mut reader, &mut out);
            print_warnings(&repo);
            match copied {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                Err(e) => match e.into_inner() {
                    Some(inner) => return Err(anyhow::anyhow!(inner)),
                    None => anyhow::bail!("writing to standard output failed"),
                },
            }
            Ok(Done::Complete)
        }
        Command::Stats => stats(&cli),
        Command::Check {
            read_data,
            read_data_subset,
        } => {
            let read_data = match (read_data, read_data_subset) {
                (true, _) => cairn::ReadData::All,
                (false, Some(share)) => cairn::ReadData::Share(*share),
                (false, None) => cairn::ReadData::None,
            };
            check(&cli, read_data)
        }
        Command::Forget(args) => maintenance::forget(&cli, &open_repo(&cli)?, args),
        Command::Prune { args, dry_run } => {
            maintenance::prune(&cli, &open_repo(&cli)?, args, *dry_run)
        }
        Command::Demo { dir, days } => {
            demo::run(dir.as_deref(), *days)?;
            Ok(Done::Complete)
        }
    }
}

/// Creates a repository. The key file (when asked for) is written before the
/// repository and removed again if creating the repository fails, so a key
/// is never lost and never outlives a failed init.
fn init(cli: &Cli, options: &InitOptions) -> Result<Done> {
    let location = Location::of(&repo_path(cli)?)?;
    // Bad options are refused before a key or a directory is made.
    cairn::PathRules::new(&options.classes.media)?;
    cairn::RepoConfig {
        classes: options.classes.clone(),
        retention: options.retention,
        ..cairn::RepoConfig::new([0; 16])
    }
    .validate()
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(key_file) = &cli.key_file
        && key_file.exists()
    {
        anyhow::bail!(
            "key file {} already exists; not overwriting it (if an interrupted init \
             left it, `cairn snapshots` with it says whether it opens a repository)",
            key_file.display()
        );
    }
    let key = RecoveryKey::generate().context("generating a recovery key")?;
    if let Some(key_file) = &cli.key_file {
        keys::write_new(key_file, &key)?;
    }
    let existed = location.exists();
    let created = location.create().and_then(|store| {
        Repository::init_with_key(store.clone(), &key, options)
            .map(|_| store)
            .map_err(anyhow::Error::from)
    });
    let store = match created {
        Ok(store) => store,
        Err(e) => {
            if let Some(key_file) = &cli.key_file {
                let _ = std::fs::remove_file(key_file);
            }
            return Err(e);
        }
    };
    out!("created repository {}", location.describe());
    match &cli.key_file {
        Some(key_file) => out!("recovery key written to {}", key_file.display()),
        None => {
            let shown = output::try_line(format_args!(
                "recovery key (shown once; keep it safe, it is not stored anywhere):\n\n    {}\n",
                key.to_grouped_string().as_str()
            ));
            // A key nobody saw opens a repository nobody can use: take it
            // back (it holds nothing yet) rather than report success.
            if let Err(e) = shown {
                location.take_back(&*store, existed);
                anyhow::bail!(
                    "could not show the new recovery key ({e}); the repository was removed again"
                );
            }
        }
    }
    Ok(Done::Complete)
}

fn backup(
    cli: &Cli,
    repo: &mut Repository,
    paths: &[PathBuf],
    options: &BackupOptions,
) -> Result<Done> {
    let progress = CliProgress::start(cli.json);
    let report = repo.backup(paths, options, &progress);
    progress.finish();
    let report = report?;
    // What this run sent, opening included (the report's own count starts
    // at the backup).
    let requests = repo.store().requests();
    let over_quota = report.retention.as_ref().is_some_and(|r| !r.within_quota());
    let done = if report.n_skipped > 0 || over_quota {
        Done::Partial
    } else {
        Done::Complete
    };
    let s = &report.summary;
    if cli.json {
        let mut summary = summary_json(s);
        summary.extend([
            ("type".into(), "summary".into()),
            (
                "snapshot_id".into(),
                (!report.dry_run)
                    .then(|| report.snapshot_id.to_hex())
                    .into(),
            ),
            ("dry_run".into(), report.dry_run.into()),
            ("parent_id".into(), report.parent.map(|p| p.to_hex()).into()),
            ("n_files_unchanged".into(), report.n_files_unchanged.into()),
            ("n_skipped".into(), report.n_skipped.into()),
            ("n_chunks".into(), report.n_chunks.into()),
            ("n_blobs_new".into(), report.n_blobs_new.into()),
            ("n_packs_written".into(), report.n_packs_written.into()),
            ("left_out".into(), left_out_json(&report.left_out)),
            (
                "retention".into(),
                report
                    .retention
                    .as_ref()
                    .map(|r| {
                        serde_json::json!({
                            "n_snapshots_forgotten": r.n_snapshots_forgotten,
                            "bytes_pruned": r.bytes_pruned,
                            "repo_bytes": r.repo_bytes,
                            "quota_bytes": r.quota_bytes,
                            "n_passes": r.n_passes,
                            "within_quota": r.within_quota(),
                            "deferred": r.deferred,
                        })
                    })
                    .into(),
            ),
            (
                "requests".into(),
                requests
                    .map(|r| {
                        serde_json::json!({
                            "put": r.puts,
                            "get": r.gets,
                            "head": r.sizes,
                            "list": r.lists,
                            "delete": r.deletes,
                            "total": r.requests(),
                            "bytes_sent": r.bytes_written,
                            "bytes_received": r.bytes_read,
                        })
                    })
                    .into(),
            ),
            ("warnings".into(), report.warnings.clone().into()),
        ]);
        out!("{}", serde_json::Value::Object(summary));
        return Ok(done);
    }
    if report.dry_run {
        out!(
            "dry run, nothing written: {} files ({} unchanged), {} dirs, read {:.1} MiB; would add {} blobs, {:.1} MiB new, {:.1} MiB stored in {} packs",
            s.n_files,
            report.n_files_unchanged,
            s.n_dirs,
            mib(s.bytes_read),
            report.n_blobs_new,
            mib(s.bytes_new),
            mib(s.bytes_stored),
            report.n_packs_written,
        );
        print_left_out(&report.left_out);
        if report.n_skipped > 0 {
            err!(
                "cairn: warning: {} would be left out (see the warnings above)",
                count(report.n_skipped as usize, "entry", "entries")
            );
        }
        return Ok(done);
    }
    out!(
        "snapshot {} saved: {} files ({} unchanged), {} dirs, read {:.1} MiB, new {:.1} MiB, stored {:.1} MiB",
        &report.snapshot_id.to_hex()[..16],
        s.n_files,
        report.n_files_unchanged,
        s.n_dirs,
        mib(s.bytes_read),
        mib(s.bytes_new),
        mib(s.bytes_stored),
    );
    print_left_out(&report.left_out);
    if let Some(r) = &requests {
        out!(
            "requests: {} ({} put, {} get, {} head, {} list, {} delete)",
            r.requests(),
            r.puts,
            r.gets,
            r.sizes,
            r.lists,
            r.deletes
        );
    }
    if let Some(r) = &report.retention {
        out!(
            "retention: forgot {}, pruned {:.1} MiB; repository {:.1} MiB{}",
            count(r.n_snapshots_forgotten, "snapshot", "snapshots"),
            mib(r.bytes_pruned),
            mib(r.repo_bytes),
            r.quota_bytes
                .map_or(String::new(), |q| format!(" of a {:.1} MiB quota", mib(q)))
        );
        if !r.within_quota() {
            err!(
                "cairn: warning: the repository is over its quota{}",
                r.deferred
                    .as_ref()
                    .map_or(String::new(), |why| format!(" (prune deferred: {why})"))
            );
        }
    }
    if report.n_skipped > 0 {
        err!(
            "cairn: warning: {} could not be backed up (see the warnings above); the snapshot is incomplete",
            count(report.n_skipped as usize, "entry", "entries")
        );
    }
    Ok(done)
}

/// `repair [index]` and `repair snapshots`.
fn repair(cli: &Cli, what: Option<&RepairWhat>, read_data: bool) -> Result<Done> {
    let mut repo = open_repo(cli)?;
    let done = match what {
        None | Some(RepairWhat::Index { .. }) => {
            let read_data =
                read_data || matches!(what, Some(RepairWhat::Index { read_data: true }));
            let mode = if read_data {
                cairn::ReadData::All
            } else {
                cairn::ReadData::None
            };
            let r = repo.repair_index(mode, &cairn::NoProgress)?;
            print_warnings(&repo);
            if let Some(why) = &r.skipped {
                anyhow::bail!("index not repaired: {why}");
            }
            if cli.json {
                out!(
                    "{}",
                    serde_json::json!({
                        "n_index_files_replaced": r.n_index_files_replaced,
                        "n_index_files_written": r.n_index_files_written,
                        "n_packs_missing": r.n_packs_missing,
                        "n_packs_damaged": r.n_packs_damaged,
                        "n_blobs_dropped": r.n_blobs_dropped,
                        "n_packs_adopted": r.n_packs_adopted,
                    })
                );
            } else {
                out!(
                    "index repaired: {} replaced by {}; {} missing, {} damaged, {} adopted; {} dropped",
                    count(r.n_index_files_replaced, "index file", "index files"),
                    r.n_index_files_written,
                    count(r.n_packs_missing, "pack", "packs"),
                    r.n_packs_damaged,
                    r.n_packs_adopted,
                    count(r.n_blobs_dropped as usize, "blob", "blobs"),
                );
                if r.n_blobs_dropped > 0 {
                    out!("run `cairn repair snapshots` for the snapshots that needed them");
                }
            }
            Done::Complete
        }
        Some(RepairWhat::Snapshots { forget }) => {
            let r = repo.repair_snapshots(*forget, &cairn::NoProgress)?;
            print_warnings(&repo);
            if cli.json {
                let rewritten: Vec<_> = r
                    .rewritten
                    .iter()
                    .map(|(old, new)| serde_json::json!({"original": old.to_hex(), "repaired": new.to_hex()}))
                    .collect();
                out!(
                    "{}",
                    serde_json::json!({
                        "n_sound": r.n_sound,
                        "rewritten": rewritten,
                        "n_files_damaged": r.n_files_damaged,
                        "n_dirs_damaged": r.n_dirs_damaged,
                        "n_forgotten": r.n_forgotten,
                    })
                );
            } else {
                for (old, new) in &r.rewritten {
                    out!(
                        "snapshot {} repaired as {}",
                        &old.to_hex()[..16],
                        &new.to_hex()[..16]
                    );
                }
                out!(
                    "{} sound; {} and {} marked damaged{}",
                    count(r.n_sound, "snapshot", "snapshots"),
                    count(r.n_files_damaged as usize, "file", "files"),
                    count(r.n_dirs_damaged as usize, "directory", "directories"),
                    if *forget { "; originals forgotten" } else { "" }
                );
            }
            Done::Complete
        }
    };
    Ok(done)
}

/// The repository's policy: tier, quota, media age, snapshot rules and
/// media rules.
fn policy(cli: &Cli) -> Result<Done> {
    let repo = open_repo(cli)?;
    print_warnings(&repo);
    let config = repo.config();
    let r = &config.retention;
    let k = r.snapshots;
    if cli.json {
        out!(
            "{}",
            serde_json::json!({
                "format": config.format.number(),
                "chunker": config.chunking.algorithm.name(),
                "compress_in_place": config.chunking.compress_in_place,
                "tier": r.tier.map(|t| t.name()),
                "quota_bytes": r.quota_bytes,
                "media_max_age_days": r.media_max_age_days,
                "keep": {"last": k.last, "daily": k.daily, "weekly": k.weekly, "monthly": k.monthly,
                         "keeps_all": k.keeps_all()},
                "media_rules": config.classes.media,
            })
        );
        return Ok(Done::Complete);
    }
    out!("format:        {}", config.format.number());
    out!("chunker:       {}", config.chunking.algorithm.name());
    out!(
        "databases:     {}",
        if config.chunking.compress_in_place {
            "compressed"
        } else {
            "stored uncompressed (no compression oracle)"
        }
    );
    out!("tier:          {}", r.tier.map_or("none", |t| t.name()));
    out!(
        "quota:         {}",
        r.quota_bytes.map_or("none".to_owned(), |q| format!(
            "{q} bytes ({:.1} MiB)",
            mib(q)
        ))
    );
    out!(
        "media kept:    {}",
        r.media_max_age_days
            .map_or("any age".to_owned(), |d| format!("the last {d} days"))
    );
    out!(
        "snapshots:     {}",
        if k.keeps_all() {
            "all".to_owned()
        } else {
            format!(
                "last {}, daily {}, weekly {}, monthly {}",
                k.last, k.daily, k.weekly, k.monthly
            )
        }
    );
    out!(
        "media rules:   {}",
        if config.classes.media.is_empty() {
            "none (format 1: no classes)".to_owned()
        } else {
            config.classes.media.join(" ")
        }
    );
    Ok(Done::Complete)
}

/// What a backup left out by rule, one line per reason (the items
/// themselves are in `--json`).
fn print_left_out(left_out: &[cairn::LeftOut]) {
    let mut by_reason: std::collections::BTreeMap<String, (usize, u64)> = Default::default();
    for item in left_out {
        let entry = by_reason.entry(item.reason.to_string()).or_default();
        entry.0 += 1;
        entry.1 += item.size;
    }
    for (reason, (n, bytes)) in by_reason {
        out!(
            "left out {} ({:.1} MiB): {reason}",
            count(n, "item", "items"),
            mib(bytes)
        );
    }
}

/// What a backup left out by rule, as JSON: one object per item.
fn left_out_json(left_out: &[cairn::LeftOut]) -> serde_json::Value {
    left_out
        .iter()
        .map(|item| {
            serde_json::json!({
                "path": item.path,
                "class": item.class.name(),
                "size": item.size,
                "reason": item.reason.kind(),
                "flags": match item.reason {
                    cairn::LeftOutReason::Flagged(flags) => flags.names(),
                    _ => Vec::new(),
                },
            })
        })
        .collect()
}

fn snapshots(cli: &Cli) -> Result<Done> {
    let repo = open_repo(cli)?;
    let listing = repo.list_snapshots()?;
    print_warnings(&repo);
    for u in &listing.unreadable {
        err!("cairn: warning: {u}");
    }
    // The list is incomplete when a snapshot file could not be read.
    let done = if listing.unreadable.is_empty() {
        Done::Complete
    } else {
        Done::Partial
    };
    let snapshots = listing.snapshots;
    if cli.json {
        let list: Vec<_> = snapshots
            .iter()
            .map(|(id, snap)| {
                let mut entry = summary_json(&snap.summary);
                entry.extend([
                    ("id".into(), id.to_hex().into()),
                    ("time".into(), snap.time_secs.into()),
                    ("host".into(), snap.host.clone().into()),
                    ("paths".into(), snap.paths.clone().into()),
                    ("tags".into(), snap.tags.clone().into()),
                ]);
                serde_json::Value::Object(entry)
            })
            .collect();
        out!("{}", serde_json::Value::Array(list));
        return Ok(done);
    }
    for (id, snap) in snapshots {
        out!(
            "{}  {}  {:<12} {:>8} files {:>10.1} MiB  {}",
            &id.to_hex()[..16],
            format_time(snap.time_secs),
            snap.host,
            snap.summary.n_files,
            mib(snap.summary.total_bytes),
            snap.paths.join(" ")
        );
    }
    Ok(done)
}

fn ls(cli: &Cli, snapshot: &str, path: Option<&std::path::Path>) -> Result<Done> {
    let repo = open_repo(cli)?;
    let (id, _) = repo.find_snapshot(snapshot)?;
    let listing = repo.list(&id, path)?;
    print_warnings(&repo);
    for gap in &listing.unlisted {
        err!(
            "cairn: warning: contents of {} not listed: {}",
            gap.object,
            gap.reason
        );
    }
    let mut out = std::io::stdout().lock();
    for entry in listing.iter() {
        let n = &entry.node;
        let kind = match n.kind {
            NodeKind::Dir => 'd',
            NodeKind::File => '-',
            NodeKind::Symlink => 'l',
        };
        if cli.json {
            let line = serde_json::json!({
                "path": entry.path,
                "type": match n.kind {
                    NodeKind::Dir => "dir",
                    NodeKind::File => "file",
                    NodeKind::Symlink => "symlink",
                },
                "mode": n.mode,
                "size": n.size,
                "class": n.class.name(),
                "mtime": n.mtime_secs,
                "uid": n.uid,
                "gid": n.gid,
                "link_target": (n.kind == NodeKind::Symlink)
                    .then(|| String::from_utf8_lossy(&n.link_target).into_owned()),
            });
            writeln!(out, "{line}")?;
            continue;
        }
        let mut line = format!(
            "{kind}{:04o} {:>12} {}  {}",
            n.mode,
            n.size,
            format_time(n.mtime_secs),
            entry.path
        );
        if n.kind == NodeKind::Symlink {
            line.push_str(" -> ");
            line.push_str(&String::from_utf8_lossy(&n.link_target));
        }
        writeln!(out, "{line}")?;
    }
    Ok(if listing.is_complete() {
        Done::Complete
    } else {
        Done::Partial
    })
}

fn restore(
    cli: &Cli,
    snapshot: &str,
    target: &std::path::Path,
    path: Option<&std::path::Path>,
) -> Result<Done> {
    let repo = open_repo(cli)?;
    let (id, _) = repo.find_snapshot(snapshot)?;
    let progress = CliProgress::start(cli.json);
    let report = repo.restore(&id, path, target, &progress);
    progress.finish();
    print_warnings(&repo);
    let report = report?;
    let done = if report.is_complete() {
        Done::Complete
    } else {
        Done::Partial
    };
    if cli.json {
        let failed: Vec<_> = report
            .failed
            .iter()
            .map(|f| serde_json::json!({"path": f.path.display().to_string(), "reason": f.reason}))
            .collect();
        let summary = serde_json::json!({
            "type": "summary",
            "snapshot_id": id.to_hex(),
            "n_files": report.n_files,
            "n_dirs": report.n_dirs,
            "n_symlinks": report.n_symlinks,
            "bytes_written": report.bytes_written,
            "complete": report.is_complete(),
            "failed": failed,
        });
        out!("{summary}");
        return Ok(done);
    }
    out!(
        "restored {} files, {} dirs, {} symlinks, {:.1} MiB into {}",
        report.n_files,
        report.n_dirs,
        report.n_symlinks,
        mib(report.bytes_written),
        target.display()
    );
    for failure in &report.failed {
        err!(
            "cairn: not restored: {}: {}",
            failure.path.display(),
            failure.reason
        );
    }
    if !report.is_complete() {
        err!(
            "cairn: warning: restore incomplete: {} could not be restored",
            count(report.failed.len(), "entry", "entries")
        );
    }
    Ok(done)
}

fn check(cli: &Cli, read_data: cairn::ReadData) -> Result<Done> {
    let repo = open_repo(cli)?;
    // What opening skipped is reported by the check itself.
    repo.take_warnings();
    let progress = CliProgress::start(false);
    let report = repo.check(&cairn::CheckOptions { read_data }, &progress);
    progress.finish();
    let report = report?;
    if cli.json {
        let problems: Vec<_> = report
            .problems
            .iter()
            .map(|p| serde_json::json!({"object": p.object, "problem": p.what}))
            .collect();
        let summary = serde_json::json!({
            "ok": report.is_ok(),
            "n_snapshots": report.n_snapshots,
            "n_index_files": report.n_index_files,
            "n_packs": report.n_packs,
            "n_trees": report.n_trees,
            "n_packs_read": report.n_packs_read,
            "n_blobs_read": report.n_blobs_read,
            "n_unreferenced_packs": report.n_unreferenced_packs,
            "unreferenced_bytes": report.unreferenced_bytes,
            "n_condemned_packs": report.n_condemned_packs,
            "problems": problems,
        });
        out!("{summary}");
    } else {
        out!(
            "checked {} snapshots, {} index files, {} packs, {} trees{}",
            report.n_snapshots,
            report.n_index_files,
            report.n_packs,
            report.n_trees,
            if read_data == cairn::ReadData::None {
                String::new()
            } else {
                format!(
                    ", {} packs read whole ({} blobs)",
                    report.n_packs_read, report.n_blobs_read
                )
            }
        );
        if report.n_condemned_packs > 0 {
            out!(
                "{} packs are condemned by a prune and will be deleted by the next one",
                report.n_condemned_packs
            );
        }
        if report.n_unreferenced_packs > 0 {
            out!(
                "{} packs ({:.1} MiB) are named by no index file (left by interrupted backups)",
                report.n_unreferenced_packs,
                mib(report.unreferenced_bytes)
            );
        }
        for problem in &report.problems {
            out!("problem: {problem}");
        }
    }
    if !report.is_ok() {
        anyhow::bail!("check found {} problems", report.problems.len());
    }
    Ok(Done::Complete)
}

fn stats(cli: &Cli) -> Result<Done> {
    let repo = open_repo(cli)?;
    let s = repo.stats()?;
    let usage = repo.usage(&cairn::NoProgress)?;
    print_warnings(&repo);
    for problem in &usage.unreadable {
        err!("cairn: warning: not counted: {problem}");
    }
    let done = if usage.unreadable.is_empty() {
        Done::Complete
    } else {
        Done::Partial
    };
    let class_json = |c: &cairn::ClassUsage| {
        serde_json::json!({
            "n_files": c.n_files,
            "bytes": c.bytes,
            "stored_bytes": c.stored_bytes,
        })
    };
    if cli.json {
        let stats = serde_json::json!({
            "n_snapshots": s.n_snapshots,
            "n_packs": s.n_packs,
            "n_index_files": s.n_index_files,
            "n_data_blobs": s.n_data_blobs,
            "n_tree_blobs": s.n_tree_blobs,
            "data_plain_bytes": s.data_plain_bytes,
            "repo_bytes": s.repo_bytes,
            "classes": {
                "message": class_json(&usage.message),
                "media": class_json(&usage.media),
            },
            "tree_stored_bytes": usage.tree_stored_bytes,
            "quota_bytes": usage.quota_bytes,
            "reclaimable_bytes": usage.reclaimable_bytes,
        });
        out!("{stats}");
        return Ok(done);
    }
    out!("snapshots:        {}", s.n_snapshots);
    out!("packs:            {}", s.n_packs);
    out!("index files:      {}", s.n_index_files);
    out!("data blobs:       {}", s.n_data_blobs);
    out!("tree blobs:       {}", s.n_tree_blobs);
    out!("unique data:      {:.1} MiB", mib(s.data_plain_bytes));
    out!("repository size:  {:.1} MiB", mib(s.repo_bytes));
    for (name, c) in [("messages", &usage.message), ("media", &usage.media)] {
        out!(
            "{name:<9}         {} ({:.1} MiB) in the latest snapshot, {:.1} MiB stored",
            count(c.n_files as usize, "file", "files"),
            mib(c.bytes),
            mib(c.stored_bytes)
        );
    }
    out!(
        "trees:            {:.1} MiB stored",
        mib(usage.tree_stored_bytes)
    );
    if let Some(quota) = usage.quota_bytes {
        out!(
            "quota:            {:.1} of {:.1} MiB used ({:.0}%)",
            mib(usage.repo_bytes),
            mib(quota),
            usage.repo_bytes as f64 * 100.0 / quota.max(1) as f64
        );
    }
    match usage.reclaimable_bytes {
        Some(bytes) => out!("prune reclaims:   {:.1} MiB", mib(bytes)),
        None => out!("prune reclaims:   unknown (prune would refuse: see the warnings)"),
    }
    Ok(done)
}

/// A snapshot's totals as JSON fields: the same names in `backup --json` and
/// `snapshots --json`, so scripts can compare them.
fn summary_json(s: &cairn::SnapshotSummary) -> serde_json::Map<String, serde_json::Value> {
    let fields = [
        ("n_files", s.n_files),
        ("n_dirs", s.n_dirs),
        ("n_symlinks", s.n_symlinks),
        ("total_bytes", s.total_bytes),
        ("bytes_read", s.bytes_read),
        ("bytes_new", s.bytes_new),
        ("bytes_stored", s.bytes_stored),
    ];
    fields
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value.into()))
        .collect()
}

/// This machine's host name, from the kernel.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// UTC time as `YYYY-MM-DD HH:MM:SS` (the engine's calendar: no time zone
/// database, the same days its keep rules count).
fn format_time(secs: i64) -> String {
    let (y, m, d) = cairn::civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::format_time;

    #[test]
    fn formats_utc_times() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00");
        assert_eq!(format_time(1_795_651_200), "2026-11-26 00:00:00");
        assert_eq!(format_time(951_782_400 + 3661), "2000-02-29 01:01:01");
    }
}
