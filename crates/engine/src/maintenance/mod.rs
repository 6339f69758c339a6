//! Maintenance of a repository as a whole: `check`, `forget`, `prune`, and
//! the session markers that let prune run beside backups.

mod check;
mod compact;
mod forget;
mod prune;
mod repair;
mod sessions;
mod usage;

pub use check::{CheckOptions, CheckReport, Problem, ReadData};
pub use compact::CompactReport;
pub use forget::{
    ForgetDecision, ForgetOptions, ForgetReport, ForgetWhat, KeepPolicy, civil_from_days,
};
pub(crate) use prune::MAX_INDEX_FILES;
pub use prune::{PruneOptions, PruneReport};
pub use repair::{RepairIndexReport, RepairSnapshotsReport};
#[cfg(test)]
pub(crate) use sessions::FORCE_LAPSE;
pub(crate) use sessions::{Session, others};
pub use usage::{ClassUsage, Usage};
