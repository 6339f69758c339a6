//! Session markers: how backups and prunes announce that they are running,
//! so that prune deletes nothing a running backup may rely on, without a
//! lock that can go stale (docs/format.md, "Sharing a repository").
//!
//! A marker is `sessions/<random>`, sealed. Its writer replaces it (new
//! name, old one deleted) at least every [`REFRESH_EVERY`]; a marker not
//! refreshed for [`STALE_AFTER`] is stale, and so is one written on this
//! machine, in this boot, by a process that no longer runs.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cairn_crypto::SealKey;
use cairn_meta::{MAX_SESSION_FILE_LEN, SessionKind, SessionMarker};
use cairn_store::{Namespace, Store};

use crate::blobs::{delete_object, object};
use crate::error::{Error, Result, from_meta};

/// How often a running session writes a new marker.
pub(crate) const REFRESH_EVERY: Duration = Duration::from_secs(15 * 60);
/// A marker older than this is a dead writer's, whatever its machine.
pub(crate) const STALE_AFTER: Duration = Duration::from_secs(6 * 3600);

/// Markers this process wrote and has not ended: a marker with this
/// process's boot and PID that is not here belongs to an ended session.
static LIVE: Mutex<Option<HashSet<String>>> = Mutex::new(None);

fn live() -> std::sync::MutexGuard<'static, Option<HashSet<String>>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The space in which this process's ID means something: a hash of the
/// kernel's random boot ID, the PID namespace and the effective user. Two
/// processes with equal spaces see each other in /proc (containers share
/// the boot ID but not the PID namespace; `hidepid` hides other users).
/// Zeros where there is no boot ID.
fn pid_space() -> [u8; 16] {
    let Ok(boot) = std::fs::read_to_string("/proc/sys/kernel/random/boot_id") else {
        return [0; 16];
    };
    let namespace = std::fs::read_link("/proc/self/ns/pid")
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let user = rustix::process::geteuid().as_raw();
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"cairn pid space v1\0");
    hasher.update(boot.trim().as_bytes());
    hasher.update(b"\0");
    hasher.update(namespace.as_bytes());
    hasher.update(b"\0");
    hasher.update(&user.to_le_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
    out
}

/// A process's start time in clock ticks since boot (field 22 of
/// `/proc/<pid>/stat`), or `None` when it does not run (or there is no /proc).
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields
    // are counted from the last ')'.
    let after_name = stat.get(stat.rfind(')')? + 1..)?;
    after_name.split_whitespace().nth(19)?.parse().ok()
}

fn random_marker_name() -> Result<String> {
    let mut bytes = [0u8; 16];
    cairn_crypto::random_bytes(&mut bytes).map_err(|_| Error::Random)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A marker found in the store.
#[derive(Clone, Debug)]
pub(crate) struct FoundSession {
    /// Its name under `sessions/`.
    pub name: String,
    /// Its content, if it could be read.
    pub marker: Option<SessionMarker>,
}

impl FoundSession {
    /// Whether the marker's writer may still be running. A marker that does
    /// not authenticate was not written by a holder of the repository's key
    /// (or was damaged): it protects nothing and is not live (the caller
    /// warns about it).
    pub fn is_live(&self, now_secs: i64) -> bool {
        let Some(marker) = &self.marker else {
            return false;
        };
        let window = STALE_AFTER.as_secs() as i64;
        let age = now_secs.saturating_sub(marker.refreshed_secs);
        // Dated far in the future: a writer whose clock is wrong. Taken as
        // stale, or one crashed writer could block prune for years.
        let future = marker.refreshed_secs.saturating_sub(now_secs);
        if age > window || future > window / 2 {
            return false;
        }
        if marker.pid_space != [0; 16] && marker.pid_space == pid_space() {
            if marker.pid == std::process::id() {
                return live().as_ref().is_some_and(|l| l.contains(&self.name));
            }
            return process_start(marker.pid) == Some(marker.pid_start);
        }
        true
    }
}

/// Every marker in the store. A marker deleted between the listing and its
/// read has ended and is left out.
pub(crate) fn list_sessions(store: &dyn Store, key: &SealKey) -> Result<Vec<FoundSession>> {
    let mut out = Vec::new();
    for name in store.list(Namespace::Sessions)? {
        let object_name = object(Namespace::Sessions, &name)?;
        let marker = match store.get(&object_name, MAX_SESSION_FILE_LEN) {
            Ok(bytes) => SessionMarker::open(key, &bytes).ok(),
            Err(cairn_store::Error::NotFound(_)) => continue,
            Err(cairn_store::Error::TooLarge { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        out.push(FoundSession { name, marker });
    }
    Ok(out)
}

/// Deletes a marker, treating one already gone as deleted.
pub(crate) fn delete_marker(store: &dyn Store, name: &str) -> Result<()> {
    delete_object(store, Namespace::Sessions, name)
}

/// What other writers' markers say, seen from the session named `own`.
pub(crate) struct Others {
    /// The first live prune's marker, if any (prunes and merges exclude
    /// each other).
    pub prune: Option<String>,
    /// Whether any other writer is live (prune then defers deleting).
    pub any_live: bool,
}

/// Reads the markers other than `own` and says who else is running.
pub(crate) fn others(store: &dyn Store, key: &SealKey, own: &str) -> Result<Others> {
    let now = now_secs();
    let mut out = Others {
        prune: None,
        any_live: false,
    };
    for found in list_sessions(store, key)? {
        if found.name == own || !found.is_live(now) {
            continue;
        }
        out.any_live = true;
        let is_prune = found
            .marker
            .as_ref()
            .is_some_and(|m| m.kind == SessionKind::Prune);
        if is_prune && out.prune.is_none() {
            out.prune = Some(found.name);
        }
    }
    Ok(out)
}

struct Current {
    name: String,
    /// When the marker was dated (taken before it was written, so a put
    /// that stalls makes it look older, never younger).
    written: Instant,
    written_wall: SystemTime,
}

/// What a session and its refresher thread share.
struct Shared {
    store: Arc<dyn Store>,
    key: SealKey,
    /// The repository's format: markers are padded from 3 on.
    format: cairn_meta::Format,
    kind: SessionKind,
    started_secs: i64,
    current: Mutex<Option<Current>>,
    /// Sticky: the marker once went unrenewed for more than half the
    /// staleness window (the process was suspended or stalled), or a
    /// renewal failed. A prune may have taken the session for dead.
    lapsed: AtomicBool,
}

/// This process's running session: its marker exists from [`Session::begin`]
/// until [`Session::end`] or drop, and a thread renews it every
/// [`REFRESH_EVERY`] meanwhile.
pub(crate) struct Session {
    shared: Arc<Shared>,
    stop: Option<crossbeam_channel::Sender<()>>,
    refresher: Option<std::thread::JoinHandle<()>>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Current>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Time since the marker was last dated, by both clocks (a suspended
    /// machine's monotonic clock may not count the suspension).
    fn age(&self) -> Duration {
        self.lock()
            .as_ref()
            .map_or(Duration::MAX, |c| since(c.written, c.written_wall))
    }

    /// Writes a fresh marker, then deletes the previous one: there is always
    /// at least one. Notes a lapse if the previous one had gone unrenewed
    /// for more than half the staleness window.
    fn write_new(&self) -> Result<()> {
        let (written, written_wall) = (Instant::now(), SystemTime::now());
        let previous_date = self.lock().as_ref().map(|c| (c.written, c.written_wall));
        // Without our own start time, a reader in our space could not tell
        // us from a dead process: then we are judged by time only.
        let pid_start = process_start(std::process::id());
        let marker = SessionMarker {
            kind: self.kind,
            started_secs: self.started_secs,
            refreshed_secs: now_secs(),
            pid_space: if pid_start.is_some() {
                pid_space()
            } else {
                [0; 16]
            },
            pid: std::process::id(),
            pid_start: pid_start.unwrap_or(0),
        };
        let sealed = marker
            .seal(&self.key, self.format)
            .map_err(from_meta("session marker"))?;
        let name = random_marker_name()?;
        live().get_or_insert_with(HashSet::new).insert(name.clone());
        if let Err(e) = self
            .store
            .put(&object(Namespace::Sessions, &name)?, &sealed)
        {
            if let Some(l) = live().as_mut() {
                l.remove(&name);
            }
            return Err(e.into());
        }
        // The gap the store saw: from the previous marker's date until this
        // one exists (a put that stalls lengthens it). Noted before the new
        // marker is in place, so no caller sees a fresh marker and no lapse.
        if let Some((then, then_wall)) = previous_date
            && since(then, then_wall) > STALE_AFTER / 2
        {
            self.lapsed.store(true, Ordering::SeqCst);
        }
        let previous = self.lock().replace(Current {
            name,
            written,
            written_wall,
        });
        if let Some(previous) = previous {
            if let Some(l) = live().as_mut() {
                l.remove(&previous.name);
            }
            match self
                .store
                .delete(&object(Namespace::Sessions, &previous.name)?)
            {
                Ok(()) => {}
                // Someone removed it: a prune took this session for dead.
                Err(cairn_store::Error::NotFound(_)) => self.lapsed.store(true, Ordering::SeqCst),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn forget(&self, name: &str) -> Result<()> {
        if let Some(l) = live().as_mut() {
            l.remove(name);
        }
        delete_marker(&*self.store, name)
    }

    /// Moves the current marker's date into the past (tests of lapses).
    #[cfg(test)]
    fn backdate(&self, by: Duration) {
        if let Some(c) = self.lock().as_mut() {
            c.written = c.written.checked_sub(by).unwrap_or(c.written);
            c.written_wall -= by;
        }
    }

    fn refresh_if_due(&self) {
        if self.age() >= REFRESH_EVERY && self.write_new().is_err() {
            // Not renewed: the marker ages. Whoever relies on it checks
            // `lapsed` before committing.
            self.lapsed.store(true, Ordering::SeqCst);
        }
    }
}

/// The longer of the two clocks' measures of the time since a moment.
fn since(then: Instant, then_wall: SystemTime) -> Duration {
    since_until(then, then_wall, Instant::now(), SystemTime::now())
}

fn since_until(
    then: Instant,
    then_wall: SystemTime,
    now: Instant,
    now_wall: SystemTime,
) -> Duration {
    let wall = now_wall.duration_since(then_wall).unwrap_or_default();
    now.saturating_duration_since(then).max(wall)
}

#[cfg(test)]
thread_local! {
    /// Makes the next [`Session::lapsed`] on this thread say yes, as after a
    /// suspension longer than half the staleness window.
    pub(crate) static FORCE_LAPSE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// How often the refresher looks at the marker's age.
const REFRESH_TICK: Duration = Duration::from_secs(30);

impl Session {
    /// Writes a marker announcing a session of `kind`, and starts renewing it.
    pub fn begin(
        store: Arc<dyn Store>,
        key: SealKey,
        format: cairn_meta::Format,
        kind: SessionKind,
    ) -> Result<Self> {
        let shared = Arc::new(Shared {
            store,
            key,
            format,
            kind,
            started_secs: now_secs(),
            current: Mutex::new(None),
            lapsed: AtomicBool::new(false),
        });
        shared.write_new()?;
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let refresher = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("cairn-session".into())
                .spawn(move || {
                    while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                        stopped.recv_timeout(REFRESH_TICK)
                    {
                        shared.refresh_if_due();
                    }
                })
                .map_err(Error::Thread)?
        };
        Ok(Self {
            shared,
            stop: Some(stop),
            refresher: Some(refresher),
        })
    }

    /// The current marker's name.
    pub fn name(&self) -> Option<String> {
        self.shared.lock().as_ref().map(|c| c.name.clone())
    }

    /// Whether a prune may have taken this session for dead: a marker went
    /// unrenewed for more than half the staleness window at some point
    /// (sticky until [`Session::revalidated`]), or has now. The caller must
    /// renew it and re-validate what it relied on before it commits.
    pub fn lapsed(&self) -> bool {
        #[cfg(test)]
        if FORCE_LAPSE.with(|f| f.replace(false)) {
            return true;
        }
        self.shared.lapsed.load(Ordering::SeqCst) || self.shared.age() > STALE_AFTER / 2
    }

    /// Writes a fresh marker now.
    pub fn renew(&self) -> Result<()> {
        self.shared.write_new()
    }

    /// Clears a lapse once the caller has renewed the marker and checked
    /// that nothing it relies on was condemned or deleted meanwhile.
    pub fn revalidated(&self) {
        self.shared.lapsed.store(false, Ordering::SeqCst);
    }

    fn stop_refresher(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.refresher.take() {
            let _ = thread.join();
        }
    }

    /// Ends the session: stops renewing and deletes the marker.
    pub fn end(mut self) -> Result<()> {
        self.stop_refresher();
        let current = self.shared.lock().take();
        match current {
            Some(current) => self.shared.forget(&current.name),
            None => Ok(()),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.stop_refresher();
        // A session that failed: its marker goes, best effort (a marker left
        // behind is recognised as this process's and ended; on another
        // machine it goes stale).
        let current = self.shared.lock().take();
        if let Some(current) = current {
            let _ = self.shared.forget(&current.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_store::MemoryStore;

    fn key() -> SealKey {
        static KEY: std::sync::OnceLock<SealKey> = std::sync::OnceLock::new();
        KEY.get_or_init(|| {
            let master = cairn_crypto::MasterSecret::generate().expect("random");
            cairn_crypto::WorkingKeys::derive(&master).metadata
        })
        .clone()
    }

    #[test]
    fn a_session_is_live_until_it_ends_and_a_dropped_one_is_not() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let session = Session::begin(
            store.clone(),
            key(),
            cairn_meta::Format::CURRENT,
            SessionKind::Backup,
        )
        .expect("begin");
        let found = list_sessions(&*store, &key()).expect("list");
        assert_eq!(found.len(), 1);
        assert!(found[0].is_live(now_secs()));
        assert!(!found[0].is_live(now_secs() + STALE_AFTER.as_secs() as i64 + 1));
        session.renew().expect("renew");
        let renewed = list_sessions(&*store, &key()).expect("list");
        assert_eq!(
            renewed.len(),
            1,
            "the old marker goes when a new one is written"
        );
        assert_ne!(renewed[0].name, found[0].name);
        // The marker outlives its session (a failed delete): this process
        // knows the session ended.
        let name = session.name().expect("name");
        session.shared.lock().take();
        if let Some(l) = live().as_mut() {
            l.remove(&name);
        }
        drop(session);
        let left = list_sessions(&*store, &key()).expect("list");
        assert_eq!(left.len(), 1);
        assert!(!left[0].is_live(now_secs()));
        let ended = Session::begin(
            store.clone(),
            key(),
            cairn_meta::Format::CURRENT,
            SessionKind::Prune,
        )
        .expect("begin");
        ended.end().expect("end");
        assert_eq!(list_sessions(&*store, &key()).expect("list").len(), 1);
    }

    #[test]
    fn a_long_gap_between_renewals_is_a_lapse_until_revalidated() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let session = Session::begin(
            store.clone(),
            key(),
            cairn_meta::Format::CURRENT,
            SessionKind::Backup,
        )
        .expect("begin");
        assert!(!session.lapsed());
        // Suspended for a while, then renewed (by the refresher, say): the
        // gap is remembered although the marker is fresh again.
        session
            .shared
            .backdate(STALE_AFTER / 2 + Duration::from_secs(1));
        assert!(session.lapsed());
        session.renew().expect("renew");
        assert!(session.shared.age() < Duration::from_secs(60));
        assert!(session.lapsed(), "a lapse is sticky");
        session.revalidated();
        assert!(!session.lapsed());
        // A short gap is no lapse.
        session.shared.backdate(REFRESH_EVERY);
        session.renew().expect("renew");
        assert!(!session.lapsed());
        session.end().expect("end");
    }

    #[test]
    fn markers_dated_far_ahead_or_long_ago_are_stale() {
        let at = |refreshed_secs: i64| FoundSession {
            name: "z".into(),
            marker: Some(SessionMarker {
                kind: SessionKind::Backup,
                started_secs: refreshed_secs,
                refreshed_secs,
                pid_space: [9; 16],
                pid: 1,
                pid_start: 1,
            }),
        };
        let now = now_secs();
        let window = STALE_AFTER.as_secs() as i64;
        assert!(at(now).is_live(now));
        assert!(at(now - window + 60).is_live(now));
        assert!(!at(now - window - 60).is_live(now));
        assert!(
            at(now + window / 2 - 60).is_live(now),
            "clocks may disagree"
        );
        assert!(
            !at(now + window / 2 + 60).is_live(now),
            "a year ahead blocks nothing"
        );
        assert_ne!(pid_space(), [0; 16]);
        assert_eq!(pid_space(), pid_space());
    }

    #[test]
    fn another_process_on_this_boot_is_live_only_while_it_runs() {
        let me = std::process::id();
        let start = process_start(me).expect("this process has a start time");
        let marker = |pid, pid_start| FoundSession {
            name: "x".into(),
            marker: Some(SessionMarker {
                kind: SessionKind::Backup,
                started_secs: now_secs(),
                refreshed_secs: now_secs(),
                pid_space: pid_space(),
                pid,
                pid_start,
            }),
        };
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn");
        let pid = child.id();
        let child_start = process_start(pid).expect("child start");
        assert!(marker(pid, child_start).is_live(now_secs()));
        // Same PID, another start time: the PID was reused.
        assert!(!marker(pid, child_start + 1).is_live(now_secs()));
        child.kill().expect("kill");
        child.wait().expect("wait");
        assert!(!marker(pid, child_start).is_live(now_secs()));
        // Another machine (or boot): judged by time only.
        let mut other = marker(me, start);
        if let Some(m) = other.marker.as_mut() {
            m.pid_space = [1; 16];
        }
        assert!(other.is_live(now_secs()));
        // Unreadable markers protect nothing.
        assert!(
            !FoundSession {
                name: "y".into(),
                marker: None
            }
            .is_live(now_secs())
        );
    }
}
