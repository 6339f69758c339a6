//! Session markers: how backups and prunes announce that they are running,
//! so that prune deletes nothing a running backup may rely on, without a
//! lock that can go stale (docs/format.md, "Sharing a repository").
//!
//! A marker is `sessions/<random>`, sealed. Its writer replaces it (new
//! name, old one deleted) at least every [`REFRESH_EVERY`]; a marker not
//! refreshed for [`STALE_AFTER`] is stale, and so is one written on this
//! machine, in this boot, by a process that no longer runs.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cairn_crypto::SealKey;
use cairn_meta::{MAX_SESSION_FILE_LEN, SessionKind, SessionMarker};
use cairn_store::{Namespace, Store};

use crate::blobs::object;
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

/// The kernel's random boot ID, or zeros where there is none.
fn boot_id() -> [u8; 16] {
    let mut out = [0u8; 16];
    if let Ok(text) = std::fs::read_to_string("/proc/sys/kernel/random/boot_id") {
        let hex: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
        for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
            let pair = std::str::from_utf8(pair).unwrap_or("00");
            *byte = u8::from_str_radix(pair, 16).unwrap_or(0);
        }
    }
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
        let age = now_secs.saturating_sub(marker.refreshed_secs);
        if age > STALE_AFTER.as_secs() as i64 {
            return false;
        }
        let this_boot = boot_id();
        if marker.boot_id != [0; 16] && marker.boot_id == this_boot {
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
    match store.delete(&object(Namespace::Sessions, name)?) {
        Ok(()) | Err(cairn_store::Error::NotFound(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

struct Current {
    name: String,
    written: Instant,
    written_wall: SystemTime,
}

/// This process's running session: its marker exists from [`Session::begin`]
/// until [`Session::end`] or drop.
pub(crate) struct Session {
    store: Arc<dyn Store>,
    key: SealKey,
    kind: SessionKind,
    started_secs: i64,
    current: Mutex<Option<Current>>,
}

impl Session {
    /// Writes a marker announcing a session of `kind`.
    pub fn begin(store: Arc<dyn Store>, key: SealKey, kind: SessionKind) -> Result<Self> {
        let session = Self {
            store,
            key,
            kind,
            started_secs: now_secs(),
            current: Mutex::new(None),
        };
        session.write_new()?;
        Ok(session)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Current>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current marker's name.
    pub fn name(&self) -> Option<String> {
        self.lock().as_ref().map(|c| c.name.clone())
    }

    /// Writes a fresh marker, then deletes the previous one: there is always
    /// at least one.
    fn write_new(&self) -> Result<()> {
        let marker = SessionMarker {
            kind: self.kind,
            started_secs: self.started_secs,
            refreshed_secs: now_secs(),
            boot_id: boot_id(),
            pid: std::process::id(),
            pid_start: process_start(std::process::id()).unwrap_or(0),
        };
        let sealed = marker
            .seal(&self.key)
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
        let previous = self.lock().replace(Current {
            name,
            written: Instant::now(),
            written_wall: SystemTime::now(),
        });
        if let Some(previous) = previous {
            self.forget(&previous.name)?;
        }
        Ok(())
    }

    fn forget(&self, name: &str) -> Result<()> {
        if let Some(l) = live().as_mut() {
            l.remove(name);
        }
        delete_marker(&*self.store, name)
    }

    /// Time since the marker was last written, by both clocks (a suspended
    /// machine's monotonic clock may not count the suspension).
    fn age(&self) -> Duration {
        self.lock().as_ref().map_or(Duration::MAX, |c| {
            let wall = SystemTime::now()
                .duration_since(c.written_wall)
                .unwrap_or_default();
            c.written.elapsed().max(wall)
        })
    }

    /// Writes a new marker if the current one is due for it.
    pub fn refresh_if_due(&self) -> Result<()> {
        if self.age() >= REFRESH_EVERY {
            self.write_new()?;
        }
        Ok(())
    }

    /// Whether the marker may have been taken for stale by a prune: its
    /// last write is more than half the staleness window old. The caller
    /// must then write a fresh one and re-validate what it relied on.
    pub fn may_have_lapsed(&self) -> bool {
        self.age() > STALE_AFTER / 2
    }

    /// Writes a fresh marker now.
    pub fn renew(&self) -> Result<()> {
        self.write_new()
    }

    /// Ends the session: deletes the marker.
    pub fn end(self) -> Result<()> {
        let current = self.lock().take();
        match current {
            Some(current) => self.forget(&current.name),
            None => Ok(()),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // A session that failed: its marker goes, best effort (a marker left
        // behind is recognised as this process's and ended; on another
        // machine it goes stale).
        if let Some(current) = self.lock().take() {
            let _ = self.forget(&current.name);
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
        let session = Session::begin(store.clone(), key(), SessionKind::Backup).expect("begin");
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
        session.lock().take();
        if let Some(l) = live().as_mut() {
            l.remove(&name);
        }
        drop(session);
        let left = list_sessions(&*store, &key()).expect("list");
        assert_eq!(left.len(), 1);
        assert!(!left[0].is_live(now_secs()));
        let ended = Session::begin(store.clone(), key(), SessionKind::Prune).expect("begin");
        ended.end().expect("end");
        assert_eq!(list_sessions(&*store, &key()).expect("list").len(), 1);
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
                boot_id: boot_id(),
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
            m.boot_id = [1; 16];
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
