//! A store wrapper that fails on command: lets tests simulate a crash or a
//! flaky backend at a chosen operation.

use std::sync::Mutex;

use crate::{Error, Namespace, ObjectName, Store};

/// When the wrapper starts failing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Never fail.
    None,
    /// Let this many puts succeed, then fail every later put.
    PutsAfter(u64),
    /// Fail every put into this namespace.
    PutsTo(Namespace),
    /// Fail every read (get, get_range, size, list).
    Reads,
    /// Let this many writes (puts and deletes together) succeed, then fail
    /// every later one: a crash of a process that adds and deletes (prune).
    WritesAfter(u64),
}

/// Wraps a store and injects [`Error::Injected`] as [`Fault`] says.
#[derive(Debug)]
pub struct FaultyStore<S> {
    inner: S,
    state: Mutex<(Fault, u64)>,
}

impl<S: Store> FaultyStore<S> {
    /// Wraps `inner` with no fault armed.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            state: Mutex::new((Fault::None, 0)),
        }
    }

    /// Arms a fault (and resets the put counter).
    pub fn set_fault(&self, fault: Fault) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = (fault, 0);
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn check_put(&self, name: &ObjectName) -> Result<(), Error> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (fault, n_puts) = &mut *state;
        let fail = match fault {
            Fault::PutsAfter(n) | Fault::WritesAfter(n) => *n_puts >= *n,
            Fault::PutsTo(ns) => name.namespace() == *ns,
            Fault::None | Fault::Reads => false,
        };
        if fail {
            return Err(Error::Injected);
        }
        *n_puts += 1;
        Ok(())
    }

    fn check_delete(&self) -> Result<(), Error> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (fault, n_writes) = &mut *state;
        if let Fault::WritesAfter(n) = fault {
            if *n_writes >= *n {
                return Err(Error::Injected);
            }
            *n_writes += 1;
        }
        Ok(())
    }

    /// Writes (puts and deletes) counted since the fault was armed; with
    /// [`Fault::WritesAfter`] armed high, the number a run performs.
    pub fn n_writes(&self) -> u64 {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).1
    }

    fn check_read(&self) -> Result<(), Error> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.0 == Fault::Reads {
            return Err(Error::Injected);
        }
        Ok(())
    }
}

impl<S: Store> Store for FaultyStore<S> {
    fn put(&self, name: &ObjectName, bytes: &[u8]) -> Result<(), Error> {
        self.check_put(name)?;
        self.inner.put(name, bytes)
    }
    fn put_parts(&self, name: &ObjectName, parts: &[&[u8]]) -> Result<(), Error> {
        self.check_put(name)?;
        self.inner.put_parts(name, parts)
    }
    fn get(&self, name: &ObjectName, max_len: u64) -> Result<Vec<u8>, Error> {
        self.check_read()?;
        self.inner.get(name, max_len)
    }
    fn get_range(&self, name: &ObjectName, offset: u64, len: u64) -> Result<Vec<u8>, Error> {
        self.check_read()?;
        self.inner.get_range(name, offset, len)
    }
    fn read_range_into(&self, name: &ObjectName, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        self.check_read()?;
        self.inner.read_range_into(name, offset, buf)
    }
    fn size(&self, name: &ObjectName) -> Result<u64, Error> {
        self.check_read()?;
        self.inner.size(name)
    }
    fn list(&self, namespace: Namespace) -> Result<Vec<String>, Error> {
        self.check_read()?;
        self.inner.list(namespace)
    }
    fn list_sized(&self, namespace: Namespace) -> Result<Vec<(String, u64)>, Error> {
        self.check_read()?;
        self.inner.list_sized(namespace)
    }
    fn requests(&self) -> Option<crate::Counts> {
        self.inner.requests()
    }
    fn parallelism(&self) -> usize {
        self.inner.parallelism()
    }
    fn delete(&self, name: &ObjectName) -> Result<(), Error> {
        self.check_delete()?;
        self.inner.delete(name)
    }
    fn clean_interrupted_writes(&self) -> Result<u64, Error> {
        self.inner.clean_interrupted_writes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;

    #[test]
    fn conformance_when_unarmed() {
        crate::conformance::run(&FaultyStore::new(MemoryStore::new()));
    }

    #[test]
    fn faults_fire_as_armed() {
        let s = FaultyStore::new(MemoryStore::new());
        let n = |x: &str| ObjectName::new(Namespace::Packs, x).expect("name");
        s.set_fault(Fault::PutsAfter(1));
        s.put(&n("a"), b"1").expect("first put");
        assert!(matches!(s.put(&n("b"), b"2"), Err(Error::Injected)));
        s.set_fault(Fault::PutsTo(Namespace::Snapshots));
        s.put(&n("c"), b"3").expect("pack put");
        let snap = ObjectName::new(Namespace::Snapshots, "s").expect("name");
        assert!(matches!(s.put(&snap, b"4"), Err(Error::Injected)));
        s.set_fault(Fault::WritesAfter(1));
        s.delete(&n("c")).expect("first write");
        assert!(matches!(s.delete(&n("a")), Err(Error::Injected)));
        assert!(matches!(s.put(&n("d"), b"5"), Err(Error::Injected)));
        assert_eq!(s.n_writes(), 1);
        s.set_fault(Fault::Reads);
        assert!(matches!(s.get(&n("a"), 8), Err(Error::Injected)));
        s.set_fault(Fault::None);
        assert_eq!(s.get(&n("a"), 8).expect("get"), b"1");
        assert!(matches!(s.get(&n("b"), 8), Err(Error::NotFound(_))));
    }
}
