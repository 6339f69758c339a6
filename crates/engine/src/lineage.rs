//! Rollback and withholding detection (format 3). Every snapshot seals its
//! sequence number (one more than the largest its backup saw) and the ID of
//! that newest snapshot. A device remembers the newest snapshot it has seen
//! ([`NewestSeen`]: kept by the engine in the caller's state directory, or
//! by the caller wherever it likes);
//! a server that later serves an older history (the newest snapshot deleted,
//! the repository put back to an earlier copy, a snapshot replaced) is
//! refused by every listing: `snapshots`, `backup`, `restore latest`,
//! `forget`, `prune`.
//!
//! A device that has seen nothing (a new phone restoring) has nothing to
//! compare with, and [`OpenOptions::accept_rollback`](crate::OpenOptions)
//! lets a user who restored the repository on purpose go on: the served
//! history becomes the newest seen.
//!
//! The mark is kept, when the caller gives a state directory, in the
//! repository's directory there (tagged, written at once whenever it
//! moves), and is always available to the caller to keep elsewhere.

use std::sync::{Arc, Mutex};

use cairn_crypto::SnapshotId;
use cairn_meta::{Lineage, Snapshot};

use crate::cache::Cache;
use crate::error::{Error, Result};

/// The newest snapshot a device has seen in a repository: what it must
/// never see the history go back from. Ordered by sequence, then ID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct NewestSeen {
    /// Its sequence number.
    pub sequence: u64,
    /// Its ID.
    pub snapshot: SnapshotId,
}

impl NewestSeen {
    /// The newest of `snapshots` that carry a lineage: the largest sequence
    /// number, and among equals (two devices' backups of one history) the
    /// largest ID, so that every device picks the same one.
    pub(crate) fn of(snapshots: &[(SnapshotId, Snapshot)]) -> Option<Self> {
        snapshots
            .iter()
            .filter_map(|(id, s)| {
                Some(NewestSeen {
                    sequence: s.lineage?.sequence,
                    snapshot: *id,
                })
            })
            .max()
    }

    /// The lineage of a snapshot written after `self` (or of the first).
    pub(crate) fn next(newest: Option<Self>) -> Lineage {
        Lineage {
            sequence: newest.map_or(0, |n| n.sequence) + 1,
            parent: newest.map(|n| n.snapshot),
        }
    }

    /// A short form for messages.
    fn describe(&self) -> String {
        let hex = self.snapshot.to_hex();
        format!("#{} ({})", self.sequence, hex.get(..12).unwrap_or(&hex))
    }
}

/// What a repository handle has seen, and whether it accepts going back.
#[derive(Debug)]
pub(crate) struct Watch {
    seen: Mutex<Option<NewestSeen>>,
    accept_rollback: bool,
    /// Where the mark is kept between runs, if anywhere.
    state: Option<Arc<Cache>>,
}

impl Watch {
    /// A watch that starts from the later of `given` and the kept mark.
    pub fn new(
        given: Option<NewestSeen>,
        accept_rollback: bool,
        state: Option<Arc<Cache>>,
    ) -> Self {
        let kept = state
            .as_ref()
            .and_then(|s| s.newest_seen())
            .map(|(sequence, id)| NewestSeen {
                sequence,
                snapshot: SnapshotId::from_bytes(id),
            });
        Self {
            seen: Mutex::new(given.max(kept)),
            accept_rollback,
            state,
        }
    }

    /// Sets the mark and keeps it (best-effort: a mark that cannot be kept
    /// costs the check on the next run, never an operation).
    fn set(&self, seen: &mut Option<NewestSeen>, new: Option<NewestSeen>) {
        if *seen == new {
            return;
        }
        *seen = new;
        if let Some(state) = &self.state {
            let _ = state.set_newest_seen(new.map(|n| (n.sequence, *n.snapshot.as_bytes())));
        }
    }

    pub fn seen(&self) -> Option<NewestSeen> {
        *self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks a listing of every readable snapshot against the newest
    /// seen, then remembers the listing's newest. `n_unreadable` snapshot
    /// files could not be read (one of them may be the missing one).
    pub fn check(&self, snapshots: &[(SnapshotId, Snapshot)], n_unreadable: usize) -> Result<()> {
        let served = NewestSeen::of(snapshots);
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if self.accept_rollback {
            // What is served becomes the history this device saw.
            self.set(&mut seen, served);
            return Ok(());
        }
        if let Some(before) = *seen {
            let still_there = snapshots.iter().any(|(id, _)| *id == before.snapshot);
            let went_back = served.is_none_or(|s| s.sequence < before.sequence);
            if went_back || (!still_there && served.is_some_and(|s| s.sequence == before.sequence))
            {
                return Err(Error::Rollback {
                    seen: before.describe(),
                    served: served.map_or_else(|| "none".to_owned(), |s| s.describe()),
                    unreadable: n_unreadable,
                });
            }
        }
        let later = served.max(*seen);
        self.set(&mut seen, later);
        Ok(())
    }

    /// After this handle itself forgot or rewrote snapshots: `remaining`
    /// is what a checked listing served, less what was deleted, plus what
    /// was written; its newest is the mark (the newest seen may be gone, by
    /// this device's own hand). Computed here, not listed again: a second
    /// listing would be the server's chance to serve less.
    pub fn reset(&self, remaining: &[(SnapshotId, Snapshot)]) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        self.set(&mut seen, NewestSeen::of(remaining));
    }

    /// Remembers a snapshot this handle wrote.
    pub fn wrote(&self, newest: NewestSeen) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let later = Some(newest).max(*seen);
        self.set(&mut seen, later);
    }
}
