//! A backup under the repository's retention (docs/format.md, "Tiers and
//! quotas"): media too old are left out; under a quota a survey of the
//! source (looked at, never opened) plans which media fit, newest first;
//! after the commit the backup forgets what the policy no longer keeps,
//! prunes, and measures the repository against its quota.

use std::collections::HashSet;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use cairn_meta::{Class, Retention};

use cairn_crypto::SnapshotId;

use crate::backup::LeftOutReason;
use crate::backup::walk::{Place, class_of, join, own_relative};
use crate::error::{Error, Result};
use crate::maintenance::{ForgetOptions, ForgetWhat, KeepPolicy, PruneOptions};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::restore::MAX_TREE_DEPTH;
use crate::rules::PathRules;
use crate::source::{Item, ItemKind, Source};

/// Stored bytes of the repository, beyond its snapshot's content and
/// metadata, that a plan keeps free: the config, key slots, the snapshot
/// file, index-file headers, pack trailers.
const FIXED_RESERVE: u64 = 256 * 1024;
/// Upper bound of the stored bytes each chunk adds beyond its plaintext:
/// seal (28), pack header entry (46), index entry (50), and its 32-byte ID
/// in the tree, rounded up.
const PER_CHUNK: u64 = 192;
/// Upper bound of a file's own tree node (name excluded) and a directory's
/// tree beyond its nodes.
const PER_ENTRY: u64 = 256;
/// Prune repacks a pack once more than this share of it is unreachable, so
/// a repository holds at most live / (1 − this): plans leave that room.
const PRUNE_MAX_UNUSED: f64 = 0.05;

/// What the walk needs to know of the retention: which media it leaves out.
pub(crate) struct MediaPolicy {
    /// Media whose own time (mtime, seconds) is before this are too old.
    cutoff: Option<i64>,
    /// Under a quota: the media the plan keeps, by display path. Media not
    /// in it (including media that appeared after the survey) are left out.
    kept: Option<HashSet<Vec<u8>>>,
}

impl MediaPolicy {
    /// Why a media file at `path` is left out, if it is.
    pub fn leaves_out(&self, item: &Item, path: &Path) -> Option<LeftOutReason> {
        if self.cutoff.is_some_and(|c| item.status.mtime.0 < c) {
            // (A time in the future is not old: the age rule keeps it; the
            // quota plan counts it as now.)
            return Some(LeftOutReason::Age);
        }
        match &self.kept {
            Some(kept) if !kept.contains(path.as_os_str().as_bytes()) => Some(LeftOutReason::Quota),
            _ => None,
        }
    }
}

/// What retention did after a backup under a policy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Snapshots forgotten (by the keep rules, or to meet the quota).
    pub n_snapshots_forgotten: usize,
    /// Bytes prune deleted.
    pub bytes_pruned: u64,
    /// The repository's stored bytes afterwards.
    pub repo_bytes: u64,
    /// The quota, if any.
    pub quota_bytes: Option<u64>,
    /// Backup passes it took (a pass that overshot the quota is redone
    /// with less media, reading nothing again).
    pub n_passes: usize,
    /// Why prune did not run or did not finish (another writer is
    /// running); the quota may then not hold until the next backup.
    pub deferred: Option<String>,
}

impl RetentionReport {
    /// Whether the repository is within its quota (or has none).
    pub fn within_quota(&self) -> bool {
        self.quota_bytes.is_none_or(|q| self.repo_bytes <= q)
    }
}

/// A media file the survey found, and what storing it costs at most.
struct Candidate {
    key: Vec<u8>,
    mtime: (i64, u32),
    cost: u64,
}

/// What a survey of the source found.
struct Survey {
    /// Upper bound of the stored bytes of everything but media.
    fixed_cost: u64,
    /// Media that pass the age rule, with their costs.
    media: Vec<Candidate>,
}

/// The media policy of one backup pass: the age cutoff and, under a quota,
/// the plan (`shrink` bytes less room than the quota gives, after a pass
/// that overshot). Fails with [`Error::QuotaTooSmall`] when what is not
/// media cannot fit, before anything is written.
pub(crate) fn media_policy<S: Source>(
    repo: &Repository,
    source: &S,
    exclude: Option<&PathRules>,
    time_secs: i64,
    shrink: u64,
) -> Result<Option<MediaPolicy>> {
    let retention = &repo.config().retention;
    let cutoff = retention
        .media_max_age_days
        .map(|days| time_secs.saturating_sub(i64::from(days) * 86_400));
    let Some(quota) = retention.quota_bytes else {
        return Ok(cutoff.map(|cutoff| MediaPolicy {
            cutoff: Some(cutoff),
            kept: None,
        }));
    };
    let survey = survey(repo, source, exclude, cutoff, time_secs)?;
    let room = ((quota as f64 * (1.0 - PRUNE_MAX_UNUSED)) as u64).saturating_sub(shrink);
    let room = room.saturating_sub(padding_reserve(repo.config(), room));
    let needed = survey.fixed_cost + FIXED_RESERVE;
    if needed > room {
        return Err(Error::QuotaTooSmall {
            needed: needed + shrink,
            quota,
        });
    }
    let mut left = room - needed;
    let mut media = survey.media;
    // Newest first (ties by path, so the choice does not depend on order).
    media.sort_by(|a, b| b.mtime.cmp(&a.mtime).then_with(|| a.key.cmp(&b.key)));
    // Newest first, each that still fits: the oldest give way first, and a
    // medium too large for the room left (a long video) does not leave the
    // room empty; the smaller, older ones after it still fill it. So a
    // medium left out is older than every one kept, or larger than each
    // older one kept.
    let mut kept = HashSet::new();
    for candidate in media {
        if candidate.cost <= left {
            left -= candidate.cost;
            kept.insert(candidate.key);
        }
    }
    Ok(Some(MediaPolicy {
        cutoff,
        kept: Some(kept),
    }))
}

/// Upper bound of what padding adds to `room` bytes of objects (format 3):
/// under 1/32 of every object of 64 KiB or more; under 1/16, so under 4 KiB,
/// of a smaller pack (the last data and tree packs of a backup); and the
/// 4 KiB floor of each small object a backup writes (its tree pack, index
/// file, snapshot and session marker).
fn padding_reserve(config: &cairn_meta::RepoConfig, room: u64) -> u64 {
    if config.format < cairn_meta::Format::V3 {
        return 0;
    }
    room / 32 + 6 * cairn_crypto::MIN_PADDED_LEN
}

/// Upper bound of what a file of `size` bytes named `name` stores.
fn file_cost(repo: &Repository, name: &[u8], size: u64) -> u64 {
    let rules = &repo.config().chunking;
    let lower = name.to_ascii_lowercase();
    let params = if rules
        .in_place_suffixes
        .iter()
        .any(|s| lower.ends_with(s.as_bytes()))
    {
        rules.in_place
    } else {
        rules.default
    };
    let max_chunks = size / u64::from(params.min_size.max(1)) + 1;
    size + max_chunks * PER_CHUNK + PER_ENTRY + name.len() as u64
}

/// Looks at every item of the source as the walk will (excludes, flags,
/// classes, the age rule; nothing opened), and adds up what it may store.
/// Items that cannot be looked at are left to the walk, which reports them.
fn survey<S: Source>(
    repo: &Repository,
    source: &S,
    exclude: Option<&PathRules>,
    cutoff: Option<i64>,
    now: i64,
) -> Result<Survey> {
    struct Pending<E> {
        entry: E,
        display: PathBuf,
        name: Vec<u8>,
        /// The directory's path below the top-level item (`None` for a
        /// top-level item), and whether it is under media.
        dir: Option<Vec<u8>>,
        media: bool,
        depth: usize,
    }
    let mut survey = Survey {
        fixed_cost: 0,
        media: Vec::new(),
    };
    let whole = source.one_whole();
    let mut stack: Vec<Pending<S::Entry>> = source
        .roots()?
        .into_iter()
        .filter(|root| !(whole && exclude.is_some_and(|r| r.matches_in(Some(b""), &root.name))))
        .map(|root| Pending {
            entry: root.entry,
            display: root.display,
            name: root.name,
            dir: whole.then(Vec::new),
            media: false,
            depth: 0,
        })
        .collect();
    while let Some(p) = stack.pop() {
        let place = Place {
            dir: p.dir.as_deref(),
            media: p.media,
        };
        let Ok(item) = source.look(&p.entry) else {
            continue;
        };
        if !item.flags.is_empty() {
            continue;
        }
        let class = class_of(repo, &item, place, &p.name);
        match item.kind {
            ItemKind::File if class == Class::Media => {
                if cutoff.is_some_and(|c| item.status.mtime.0 < c) {
                    continue;
                }
                survey.media.push(Candidate {
                    key: p.display.as_os_str().as_bytes().to_vec(),
                    // A clock ahead must not make a medium the newest
                    // forever: a time in the future counts as now.
                    mtime: item.status.mtime.min((now, 0)),
                    cost: file_cost(repo, &p.name, item.status.size),
                });
            }
            ItemKind::File => {
                survey.fixed_cost += file_cost(repo, &p.name, item.status.size);
            }
            ItemKind::Dir if p.depth < MAX_TREE_DEPTH => {
                survey.fixed_cost += PER_ENTRY + p.name.len() as u64;
                let Ok(children) = source.list(&p.entry, &item) else {
                    continue;
                };
                let relative = own_relative(place, &p.name);
                for (name, entry) in children {
                    if !cairn_meta::is_valid_name(&name)
                        || exclude.is_some_and(|r| r.matches_in(Some(&relative), &name))
                    {
                        continue;
                    }
                    stack.push(Pending {
                        entry,
                        display: join(&p.display, &name),
                        name,
                        dir: Some(relative.clone()),
                        media: class == Class::Media,
                        depth: p.depth + 1,
                    });
                }
            }
            _ => survey.fixed_cost += PER_ENTRY + p.name.len() as u64,
        }
    }
    Ok(survey)
}

impl Repository {
    /// After a committed backup under `retention`: forgets what its keep
    /// rules no longer keep, prunes, and measures the repository; over the
    /// quota, it forgets the other snapshots of the new one's group (same
    /// host and paths: another device's are never touched) and prunes
    /// again. `newest` is never forgotten, whatever the rules and clocks
    /// say. Never fails: what goes wrong is in `deferred` (the repository
    /// is valid either way, and the next backup tries again).
    pub(crate) fn retain(
        &self,
        retention: &Retention,
        newest: &SnapshotId,
        group: &(String, Vec<String>),
        progress: &dyn Progress,
    ) -> RetentionReport {
        let mut report = RetentionReport {
            quota_bytes: retention.quota_bytes,
            ..RetentionReport::default()
        };
        if let Err(e) = self.retain_inner(retention, newest, group, progress, &mut report) {
            report.deferred = Some(format!("retention stopped: {e}"));
            if let Ok(bytes) = self.stored_bytes() {
                report.repo_bytes = bytes;
            }
        }
        report
    }

    fn retain_inner(
        &self,
        retention: &Retention,
        newest: &SnapshotId,
        group: &(String, Vec<String>),
        progress: &dyn Progress,
        report: &mut RetentionReport,
    ) -> Result<()> {
        let keep = retention.snapshots;
        if !keep.keeps_all() {
            let decided = self.forget(&ForgetOptions {
                what: ForgetWhat::Policy(KeepPolicy {
                    last: keep.last,
                    daily: keep.daily,
                    weekly: keep.weekly,
                    monthly: keep.monthly,
                    ..KeepPolicy::default()
                }),
                dry_run: true,
            })?;
            let going: Vec<SnapshotId> = decided
                .removed()
                .map(|d| d.id)
                .filter(|id| id != newest)
                .collect();
            self.forget_ids(going, report)?;
        }
        // Prune costs a look at every snapshot's trees: only when a
        // snapshot went, or the quota is not met.
        report.repo_bytes = self.stored_bytes()?;
        if report.n_snapshots_forgotten > 0 || !report.within_quota() {
            self.prune_into(report, progress)?;
        }
        if !report.within_quota() && report.deferred.is_none() {
            // Older snapshots of this group hold media deleted since:
            // under the quota they give way before the new one's media.
            let older: Vec<SnapshotId> = self
                .snapshots()?
                .into_iter()
                .filter(|(id, s)| id != newest && s.host == group.0 && s.paths == group.1)
                .map(|(id, _)| id)
                .collect();
            if !older.is_empty() {
                self.forget_ids(older, report)?;
                self.prune_into(report, progress)?;
            }
        }
        Ok(())
    }

    fn forget_ids(&self, ids: Vec<SnapshotId>, report: &mut RetentionReport) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let forgotten = self.forget(&ForgetOptions {
            what: ForgetWhat::Ids(ids),
            dry_run: false,
        })?;
        report.n_snapshots_forgotten += forgotten.n_removed;
        Ok(())
    }

    fn prune_into(&self, report: &mut RetentionReport, progress: &dyn Progress) -> Result<()> {
        let pruned = match self.prune(
            &PruneOptions {
                max_unused: PRUNE_MAX_UNUSED,
                ..PruneOptions::default()
            },
            progress,
        ) {
            Ok(pruned) => pruned,
            // Another prune is at work: it gives the space back.
            Err(Error::PruneRunning(who)) => {
                report.deferred = Some(format!("a prune is running (sessions/{who})"));
                report.repo_bytes = self.stored_bytes()?;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        report.bytes_pruned += pruned.bytes_deleted;
        report.deferred = pruned.deferred;
        self.note(pruned.warnings);
        report.repo_bytes = self.stored_bytes()?;
        Ok(())
    }
}
