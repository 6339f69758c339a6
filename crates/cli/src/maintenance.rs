//! `cairn forget` and `cairn prune`: argument parsing (sizes, durations,
//! shares) and printing. The decisions are the engine's.

use std::time::Duration;

use anyhow::{Result, bail};
use cairn::{
    ForgetOptions, ForgetReport, ForgetWhat, KeepPolicy, PruneOptions, PruneReport, Repository,
    SnapshotId,
};

use crate::output::{err, out};
use crate::progress::CliProgress;
use crate::{Cli, Done, format_time, mib};

/// Keep rules and what to do with them, as given on the command line.
#[derive(clap::Args, Debug, Clone)]
pub struct ForgetArgs {
    /// Snapshots to forget (IDs or unique prefixes); with none, the keep
    /// rules decide.
    pub snapshots: Vec<String>,
    /// Keep the newest N snapshots.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_last: u32,
    /// Keep the newest snapshot of each of the last N hours.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_hourly: u32,
    /// Keep the newest snapshot of each of the last N days (UTC).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_daily: u32,
    /// Keep the newest snapshot of each of the last N weeks.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_weekly: u32,
    /// Keep the newest snapshot of each of the last N months.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_monthly: u32,
    /// Keep the newest snapshot of each of the last N years.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_yearly: u32,
    /// Keep every snapshot within this duration of the newest (e.g. `7d`,
    /// `2y5m7d3h`; a month is 30 days, a year 365).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub keep_within: Option<Duration>,
    /// Keep every snapshot with this tag (repeatable).
    #[arg(long, value_name = "TAG")]
    pub keep_tag: Vec<String>,
    /// Say what would be forgotten and why; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Prune afterwards.
    #[arg(long)]
    pub prune: bool,
    #[command(flatten)]
    pub prune_args: PruneArgs,
}

/// Options of `prune` (also `forget --prune`).
#[derive(clap::Args, Debug, Clone)]
pub struct PruneArgs {
    /// Repack a pack when more than this share of it is unused (e.g. `5%`).
    #[arg(long, value_name = "PERCENT", default_value = "5%", value_parser = parse_percent)]
    pub max_unused: f64,
    /// Copy at most this many bytes of live data per run (e.g. `500MiB`).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_repack: Option<u64>,
}

impl PruneArgs {
    fn options(&self, dry_run: bool) -> PruneOptions {
        PruneOptions {
            max_unused: self.max_unused,
            max_repack: self.max_repack,
            dry_run,
        }
    }
}

/// `cairn forget`.
pub fn forget(cli: &Cli, repo: &Repository, args: &ForgetArgs) -> Result<Done> {
    let policy = KeepPolicy {
        last: args.keep_last,
        hourly: args.keep_hourly,
        daily: args.keep_daily,
        weekly: args.keep_weekly,
        monthly: args.keep_monthly,
        yearly: args.keep_yearly,
        within: args.keep_within,
        tags: args.keep_tag.clone(),
    };
    let what = match (args.snapshots.is_empty(), policy.is_empty()) {
        (false, true) => {
            let ids: Result<Vec<SnapshotId>> = args
                .snapshots
                .iter()
                .map(|spec| find_for_forget(repo, spec))
                .collect();
            ForgetWhat::Ids(ids?)
        }
        (true, false) => ForgetWhat::Policy(policy),
        (false, false) => bail!("give snapshots or keep rules, not both"),
        (true, true) => bail!(
            "nothing to forget: give snapshot IDs or keep rules (--keep-last, --keep-daily, …)"
        ),
    };
    let report = repo.forget(&ForgetOptions {
        what,
        dry_run: args.dry_run,
    })?;
    crate::print_warnings(repo);
    let pruned = if args.prune {
        Some(run_prune(repo, &args.prune_args.options(args.dry_run))?)
    } else {
        None
    };
    if cli.json {
        let decisions = |keep: bool| -> Vec<serde_json::Value> {
            report
                .decisions
                .iter()
                .filter(|d| d.keep == keep)
                .map(|d| {
                    serde_json::json!({
                        "id": d.id.to_hex(),
                        "time": d.time_secs,
                        "host": d.host,
                        "paths": d.paths,
                        "reasons": d.reasons,
                    })
                })
                .collect()
        };
        let mut summary = serde_json::json!({
            "type": "forget",
            "dry_run": args.dry_run,
            "n_removed": report.n_removed,
            "remove": decisions(false),
            "keep": decisions(true),
        });
        if let Some(p) = &pruned {
            summary["prune"] = prune_json(p);
        }
        out!("{summary}");
        return Ok(Done::Complete);
    }
    print_forget(&report, args.dry_run);
    if let Some(p) = &pruned {
        print_prune(p, args.dry_run);
    }
    Ok(Done::Complete)
}

/// A snapshot named for forgetting: like `find_snapshot`, but a file that
/// cannot be read is found by its full ID (so it can be forgotten).
fn find_for_forget(repo: &Repository, spec: &str) -> Result<SnapshotId> {
    if let Some(id) = SnapshotId::from_hex(spec) {
        return Ok(id);
    }
    Ok(repo.find_snapshot(spec)?.0)
}

fn print_forget(report: &ForgetReport, dry_run: bool) {
    for d in &report.decisions {
        let verb = match (d.keep, dry_run) {
            (true, _) => "keep  ",
            (false, true) => "would remove",
            (false, false) => "remove",
        };
        out!(
            "{verb} {}  {}  {:<12} {}  ({})",
            &d.id.to_hex()[..16],
            format_time(d.time_secs),
            d.host,
            d.paths.join(" "),
            d.reasons.join(", ")
        );
    }
    let n_going = report.removed().count();
    if dry_run {
        out!("{n_going} snapshots would be forgotten (dry run: nothing changed)");
    } else {
        out!("{} snapshots forgotten", report.n_removed);
    }
}

/// `cairn prune`.
pub fn prune(cli: &Cli, repo: &Repository, args: &PruneArgs, dry_run: bool) -> Result<Done> {
    let report = run_prune(repo, &args.options(dry_run))?;
    if cli.json {
        let mut summary = prune_json(&report);
        summary["type"] = "prune".into();
        out!("{summary}");
    } else {
        print_prune(&report, dry_run);
    }
    Ok(Done::Complete)
}

fn run_prune(repo: &Repository, options: &PruneOptions) -> Result<PruneReport> {
    let progress = CliProgress::start(false);
    let report = repo.prune(options, &progress);
    progress.finish();
    crate::print_warnings(repo);
    let report = report?;
    for warning in &report.warnings {
        err!("cairn: warning: {warning}");
    }
    Ok(report)
}

fn prune_json(r: &PruneReport) -> serde_json::Value {
    serde_json::json!({
        "n_snapshots": r.n_snapshots,
        "n_live_blobs": r.n_live_blobs,
        "n_packs_unused": r.n_packs_unused,
        "n_packs_unindexed": r.n_packs_unindexed,
        "n_packs_repacked": r.n_packs_repacked,
        "n_packs_deleted": r.n_packs_deleted,
        "bytes_deleted": r.bytes_deleted,
        "n_blobs_copied": r.n_blobs_copied,
        "bytes_copied": r.bytes_copied,
        "bytes_written": r.bytes_written,
        "n_index_files_superseded": r.n_index_files_superseded,
        "n_index_files_written": r.n_index_files_written,
        "n_packs_spared": r.n_packs_spared,
        "bytes_unused_left": r.bytes_unused_left,
        "deferred": r.deferred,
        "warnings": r.warnings,
    })
}

fn print_prune(r: &PruneReport, dry_run: bool) {
    let would = if dry_run { "would " } else { "" };
    out!(
        "{} snapshots reach {} blobs; {would}delete {} packs ({:.1} MiB: {} unused, {} unindexed, {} repacked), {would}copy {} blobs ({:.1} MiB)",
        r.n_snapshots,
        r.n_live_blobs,
        r.n_packs_deleted,
        mib(r.bytes_deleted),
        r.n_packs_unused,
        r.n_packs_unindexed,
        r.n_packs_repacked,
        r.n_blobs_copied,
        mib(r.bytes_copied),
    );
    if r.bytes_unused_left > 0 {
        out!(
            "{:.1} MiB unused left in packs below the repack threshold",
            mib(r.bytes_unused_left)
        );
    }
    if r.n_packs_spared > 0 {
        out!(
            "{} condemned packs kept: snapshots committed meanwhile need them",
            r.n_packs_spared
        );
    }
    if let Some(why) = &r.deferred {
        err!("cairn: warning: deleting put off: {why}");
    }
}

/// A size such as `512`, `30MiB`, `100GB`, `1.5 GiB`: decimal units (kB, MB,
/// GB, TB) and binary ones (KiB, MiB, GiB, TiB), as written.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (e.g. 30MiB, 100GB)"))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "m" | "mb" => 1000_u64.pow(2),
        "g" | "gb" => 1000_u64.pow(3),
        "t" | "tb" => 1000_u64.pow(4),
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => {
            return Err(format!(
                "unknown size unit in {text:?} (use kB, MB, GB, TB, KiB, MiB, GiB or TiB)"
            ));
        }
    };
    let bytes = value * multiplier as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(bytes.round() as u64)
}

/// A duration such as `7d`, `36h`, `2y5m7d3h`, `2w` (a month is 30 days, a
/// year 365).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let mut total: u64 = 0;
    let mut number = String::new();
    let bad = || format!("{text:?} is not a duration (e.g. 7d, 36h, 1y6m)");
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = number.parse().map_err(|_| bad())?;
        number.clear();
        let unit: u64 = match c {
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            'm' => 30 * 86_400,
            'y' => 365 * 86_400,
            _ => return Err(bad()),
        };
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(bad)?;
    }
    if !number.is_empty() || total == 0 && text.trim().is_empty() {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

/// A share such as `5%`, `5` (percent) or `0.05%`.
pub fn parse_percent(text: &str) -> Result<f64, String> {
    let number = text.trim().trim_end_matches('%');
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a percentage (e.g. 5%)"))?;
    if !(0.0..=100.0).contains(&value) {
        return Err(format!("{text:?} is not between 0% and 100%"));
    }
    Ok(value / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_decimal_and_binary_units_as_written() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("30MiB"), Ok(30 << 20));
        assert_eq!(parse_size("100GB"), Ok(100_000_000_000));
        assert_eq!(parse_size("100 MB"), Ok(100_000_000));
        assert_eq!(parse_size("1.5KiB"), Ok(1536));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("99999999999TiB").is_err());
    }

    #[test]
    fn durations_and_percentages_parse() {
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(
            parse_duration("1y2m3d4h"),
            Ok(Duration::from_secs((365 + 60 + 3) * 86_400 + 4 * 3600))
        );
        assert!(parse_duration("7").is_err());
        assert!(parse_duration("d").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("99999999999999999999y").is_err());
        assert_eq!(parse_percent("5%"), Ok(0.05));
        assert_eq!(parse_percent("10"), Ok(0.1));
        assert!(parse_percent("150%").is_err());
    }
}
