//! `forget`: removes snapshots, given by ID or chosen by a keep policy
//! (restic's rules: last N, one per hour/day/week/month/year, within a
//! duration of the newest, by tag), per group of host and paths. Only the
//! snapshot files go; the data they alone used stays until `prune`.
//!
//! Calendar buckets are taken in UTC: the engine reads no time zone, so the
//! same repository gives the same decisions on every machine.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use cairn_crypto::SnapshotId;
use cairn_meta::Snapshot;
use cairn_store::Namespace;

use crate::blobs::delete_object;
use crate::error::{Error, Result};
use crate::repo::Repository;

/// Which snapshots of each group (same host, same paths) to keep. A
/// snapshot any rule keeps is kept; zero means "rule not used".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeepPolicy {
    /// The newest N.
    pub last: u32,
    /// The newest of each of the last N hours that have a snapshot.
    pub hourly: u32,
    /// The newest of each of the last N days that have one.
    pub daily: u32,
    /// The newest of each of the last N weeks (Monday to Sunday).
    pub weekly: u32,
    /// The newest of each of the last N months.
    pub monthly: u32,
    /// The newest of each of the last N years.
    pub yearly: u32,
    /// Every snapshot at most this much older than the group's newest.
    pub within: Option<Duration>,
    /// Every snapshot carrying one of these tags.
    pub tags: Vec<String>,
}

impl KeepPolicy {
    /// Whether no rule is set (such a policy would remove everything, and is
    /// refused).
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// What `forget` does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ForgetWhat {
    /// Remove exactly these snapshots.
    Ids(Vec<SnapshotId>),
    /// Keep what the policy keeps in each group; remove the rest.
    Policy(KeepPolicy),
}

/// Options of [`Repository::forget`].
#[derive(Clone, Debug)]
pub struct ForgetOptions {
    /// Which snapshots go.
    pub what: ForgetWhat,
    /// Decide and report, delete nothing.
    pub dry_run: bool,
}

/// The decision about one snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForgetDecision {
    /// The snapshot.
    pub id: SnapshotId,
    /// Its time (seconds since the epoch).
    pub time_secs: i64,
    /// Its host.
    pub host: String,
    /// Its paths.
    pub paths: Vec<String>,
    /// Whether it stays.
    pub keep: bool,
    /// Why: the rules that keep it (`last`, `daily`, `within`, `tag daily`…),
    /// or why it goes.
    pub reasons: Vec<String>,
}

/// What [`Repository::forget`] decided (and did, unless a dry run).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ForgetReport {
    /// Every snapshot considered, oldest first, with its decision.
    pub decisions: Vec<ForgetDecision>,
    /// Snapshot files removed (none in a dry run).
    pub n_removed: usize,
}

impl ForgetReport {
    /// The snapshots that go (or would go, in a dry run).
    pub fn removed(&self) -> impl Iterator<Item = &ForgetDecision> {
        self.decisions.iter().filter(|d| !d.keep)
    }
}

impl Repository {
    /// Removes snapshots as `options` say. Unreadable snapshot files are
    /// never chosen by a policy (they are skipped with a warning); given by
    /// ID, a snapshot must exist.
    pub fn forget(&self, options: &ForgetOptions) -> Result<ForgetReport> {
        let listing = self.list_snapshots()?;
        self.note(listing.unreadable.iter().map(ToString::to_string));
        let snapshots = listing.snapshots;
        let decisions = match &options.what {
            ForgetWhat::Ids(ids) => {
                let mut decisions: Vec<ForgetDecision> = snapshots
                    .iter()
                    .map(|(id, snap)| {
                        let keep = !ids.contains(id);
                        let reason = if keep { "not named" } else { "named" };
                        decision(*id, snap, keep, vec![reason.to_owned()])
                    })
                    .collect();
                for id in ids {
                    if snapshots.iter().any(|(s, _)| s == id) {
                        continue;
                    }
                    // An unreadable snapshot file can be forgotten by its ID
                    // (prune refuses to run while one is there).
                    let object = format!("snapshots/{}", id.to_hex());
                    if !listing.unreadable.iter().any(|u| u.object == object) {
                        return Err(Error::SnapshotNotFound(id.to_hex()));
                    }
                    decisions.push(ForgetDecision {
                        id: *id,
                        time_secs: 0,
                        host: String::new(),
                        paths: Vec::new(),
                        keep: false,
                        reasons: vec!["named (unreadable)".to_owned()],
                    });
                }
                decisions
            }
            ForgetWhat::Policy(policy) => {
                if policy.is_empty() {
                    return Err(Error::InvalidInput(
                        "no keep rule given: it would forget every snapshot \
                         (name snapshots, or give a keep rule)"
                            .into(),
                    ));
                }
                apply_policy(policy, &snapshots)
            }
        };
        let mut report = ForgetReport {
            decisions,
            n_removed: 0,
        };
        if options.dry_run {
            return Ok(report);
        }
        let to_remove: Vec<SnapshotId> = report.removed().map(|d| d.id).collect();
        for id in to_remove {
            // Removed meanwhile by another forget: the same result.
            delete_object(&**self.store(), Namespace::Snapshots, &id.to_hex())?;
            report.n_removed += 1;
        }
        if report.n_removed > 0 {
            let removed: HashSet<SnapshotId> = report.removed().map(|d| d.id).collect();
            let remaining: Vec<(SnapshotId, Snapshot)> = snapshots
                .into_iter()
                .filter(|(id, _)| !removed.contains(id))
                .collect();
            self.watch().reset(&remaining);
        }
        Ok(report)
    }
}

fn decision(id: SnapshotId, snap: &Snapshot, keep: bool, reasons: Vec<String>) -> ForgetDecision {
    ForgetDecision {
        id,
        time_secs: snap.time_secs,
        host: snap.host.clone(),
        paths: snap.paths.clone(),
        keep,
        reasons,
    }
}

/// Decides every snapshot (given oldest first) by `policy`, group by group.
pub(crate) fn apply_policy(
    policy: &KeepPolicy,
    snapshots: &[(SnapshotId, Snapshot)],
) -> Vec<ForgetDecision> {
    let mut groups: BTreeMap<(&str, &[String]), Vec<usize>> = BTreeMap::new();
    for (i, (_, snap)) in snapshots.iter().enumerate() {
        groups
            .entry((snap.host.as_str(), snap.paths.as_slice()))
            .or_default()
            .push(i);
    }
    let mut reasons: Vec<Vec<String>> = vec![Vec::new(); snapshots.len()];
    for members in groups.values() {
        // Newest first.
        let newest_first: Vec<usize> = members.iter().rev().copied().collect();
        let time = |i: usize| snapshots.get(i).map_or(0, |(_, s)| s.time_secs);
        let buckets: [(&str, u32, Bucket); 6] = [
            ("last", policy.last, |t| t),
            ("hourly", policy.hourly, |t| t.div_euclid(3600)),
            ("daily", policy.daily, |t| t.div_euclid(86_400)),
            ("weekly", policy.weekly, week_of),
            ("monthly", policy.monthly, month_of),
            ("yearly", policy.yearly, |t| {
                civil_from_days(t.div_euclid(86_400)).0
            }),
        ];
        for (name, n, bucket) in buckets {
            let mut left = n;
            let mut last_bucket = None;
            for &i in &newest_first {
                if left == 0 {
                    break;
                }
                // `last` counts snapshots, not periods: every one is new.
                let b = if name == "last" {
                    None
                } else {
                    Some(bucket(time(i)))
                };
                if b.is_some() && b == last_bucket {
                    continue;
                }
                last_bucket = b;
                left -= 1;
                if let Some(r) = reasons.get_mut(i) {
                    r.push(name.to_owned());
                }
            }
        }
        if let (Some(within), Some(&newest)) = (policy.within, newest_first.first()) {
            let limit =
                time(newest).saturating_sub(i64::try_from(within.as_secs()).unwrap_or(i64::MAX));
            for &i in &newest_first {
                if time(i) >= limit
                    && let Some(r) = reasons.get_mut(i)
                {
                    r.push("within".to_owned());
                }
            }
        }
        for &i in members {
            let Some((_, snap)) = snapshots.get(i) else {
                continue;
            };
            for tag in snap.tags.iter().filter(|t| policy.tags.contains(t)) {
                if let Some(r) = reasons.get_mut(i) {
                    r.push(format!("tag {tag}"));
                }
            }
        }
    }
    snapshots
        .iter()
        .zip(reasons)
        .map(|((id, snap), why)| {
            let keep = !why.is_empty();
            let why = if keep {
                why
            } else {
                vec!["no rule keeps it".to_owned()]
            };
            decision(*id, snap, keep, why)
        })
        .collect()
}

/// A calendar period's number for a time in seconds since the epoch.
type Bucket = fn(i64) -> i64;

/// Weeks since the epoch, Monday to Sunday (1970-01-01 was a Thursday).
fn week_of(t: i64) -> i64 {
    (t.div_euclid(86_400) + 3).div_euclid(7)
}

/// Months since year 0.
fn month_of(t: i64) -> i64 {
    let (y, m, _) = civil_from_days(t.div_euclid(86_400));
    y * 12 + i64::from(m)
}

/// (year, month 1-12, day 1-31) of a day counted from 1970-01-01, in the
/// proleptic Gregorian calendar (H. Hinnant's `civil_from_days`): the UTC
/// calendar that keep rules use, for frontends that print dates the same way.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_crypto::BlobId;
    use cairn_meta::SnapshotSummary;

    fn snap(n: u8, time_secs: i64, host: &str, tags: &[&str]) -> (SnapshotId, Snapshot) {
        (
            SnapshotId::from_bytes([n; 32]),
            Snapshot {
                time_secs,
                time_nanos: 0,
                host: host.into(),
                paths: vec!["/chat".into()],
                tags: tags.iter().map(|t| (*t).to_owned()).collect(),
                root: BlobId::from_bytes([0; 32]),
                summary: SnapshotSummary::default(),
                lineage: None,
            },
        )
    }

    fn kept(decisions: &[ForgetDecision]) -> Vec<u8> {
        decisions
            .iter()
            .filter(|d| d.keep)
            .map(|d| d.id.as_bytes()[0])
            .collect()
    }

    #[test]
    fn civil_dates_are_right() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(20_784), (2026, 11, 27));
        // 2026-11-23 is a Monday: it starts a week the Sunday before ends.
        assert_eq!(week_of(20_780 * 86_400), week_of(20_786 * 86_400));
        assert_ne!(week_of(20_780 * 86_400), week_of(20_779 * 86_400));
    }

    #[test]
    fn daily_keeps_the_newest_of_each_day_per_group() {
        let day = 86_400;
        // Two a day for four days on host a; one on host b.
        let mut snapshots = Vec::new();
        for d in 0..4u8 {
            snapshots.push(snap(2 * d + 1, i64::from(d) * day + 100, "a", &[]));
            snapshots.push(snap(2 * d + 2, i64::from(d) * day + 200, "a", &[]));
        }
        snapshots.push(snap(50, 10, "b", &[]));
        snapshots.sort_by_key(|(_, s)| s.time_secs);
        let policy = KeepPolicy {
            daily: 2,
            ..KeepPolicy::default()
        };
        let decisions = apply_policy(&policy, &snapshots);
        let mut k = kept(&decisions);
        k.sort_unstable();
        assert_eq!(k, vec![6, 8, 50]);
        let reasons = &decisions
            .iter()
            .find(|d| d.id.as_bytes()[0] == 8)
            .expect("8")
            .reasons;
        assert_eq!(reasons, &vec!["daily".to_owned()]);
    }

    #[test]
    fn last_within_and_tags_add_up() {
        let snapshots: Vec<_> = (1..=10u8)
            .map(|i| {
                snap(
                    i,
                    i64::from(i) * 3600,
                    "h",
                    if i == 2 { &["keep"] } else { &[] },
                )
            })
            .collect();
        let policy = KeepPolicy {
            last: 2,
            within: Some(Duration::from_secs(3 * 3600)),
            tags: vec!["keep".into()],
            ..KeepPolicy::default()
        };
        let mut k = kept(&apply_policy(&policy, &snapshots));
        k.sort_unstable();
        assert_eq!(k, vec![2, 7, 8, 9, 10]);
    }

    #[test]
    fn monthly_and_yearly_use_calendar_periods() {
        let day = 86_400;
        // 2026-01-31, 2026-02-01, 2026-02-28, 2027-01-01 (days since epoch).
        let days = [20_484i64, 20_485, 20_512, 20_819];
        let snapshots: Vec<_> = days
            .iter()
            .enumerate()
            .map(|(i, d)| snap(i as u8 + 1, d * day, "h", &[]))
            .collect();
        let monthly = KeepPolicy {
            monthly: 3,
            ..KeepPolicy::default()
        };
        assert_eq!(kept(&apply_policy(&monthly, &snapshots)), vec![1, 3, 4]);
        let yearly = KeepPolicy {
            yearly: 5,
            ..KeepPolicy::default()
        };
        assert_eq!(kept(&apply_policy(&yearly, &snapshots)), vec![3, 4]);
    }
}
