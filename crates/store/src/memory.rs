//! In-memory store for tests. Stricter than production: it validates ranges
//! exactly and counts operations so tests can assert on them.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Error, Namespace, ObjectName, Store};

/// A store in a `BTreeMap`.
#[derive(Debug, Default)]
pub struct MemoryStore {
    objects: Mutex<BTreeMap<ObjectName, Vec<u8>>>,
    n_puts: AtomicU64,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of successful puts so far.
    pub fn n_puts(&self) -> u64 {
        self.n_puts.load(Ordering::Relaxed)
    }

    /// A new store holding a copy of every object: lets a test start many
    /// runs from one prepared repository.
    pub fn duplicate(&self) -> Self {
        Self {
            objects: Mutex::new(self.lock().clone()),
            n_puts: AtomicU64::new(0),
        }
    }

    /// Replaces an object's bytes in place, bypassing the contract: lets tests
    /// play a malicious or faulty server.
    pub fn tamper(&self, name: &ObjectName, f: impl FnOnce(&mut Vec<u8>)) -> Result<(), Error> {
        let mut objects = self.lock();
        let bytes = objects
            .get_mut(name)
            .ok_or_else(|| Error::NotFound(name.clone()))?;
        f(bytes);
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<ObjectName, Vec<u8>>> {
        // A panic while holding the lock cannot leave a map half-updated: every
        // mutation is a single insert or remove.
        self.objects.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Store for MemoryStore {
    fn put(&self, name: &ObjectName, bytes: &[u8]) -> Result<(), Error> {
        let mut objects = self.lock();
        if objects.contains_key(name) {
            return Err(Error::AlreadyExists(name.clone()));
        }
        objects.insert(name.clone(), bytes.to_vec());
        self.n_puts.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn get(&self, name: &ObjectName, max_len: u64) -> Result<Vec<u8>, Error> {
        let objects = self.lock();
        let bytes = objects
            .get(name)
            .ok_or_else(|| Error::NotFound(name.clone()))?;
        if bytes.len() as u64 > max_len {
            return Err(Error::TooLarge {
                name: name.clone(),
                size: bytes.len() as u64,
                max_len,
            });
        }
        Ok(bytes.clone())
    }

    fn get_range(&self, name: &ObjectName, offset: u64, len: u64) -> Result<Vec<u8>, Error> {
        let objects = self.lock();
        let bytes = objects
            .get(name)
            .ok_or_else(|| Error::NotFound(name.clone()))?;
        let end = offset
            .checked_add(len)
            .ok_or_else(|| Error::OutOfRange(name.clone()))?;
        let start = usize::try_from(offset).map_err(|_| Error::OutOfRange(name.clone()))?;
        let end = usize::try_from(end).map_err(|_| Error::OutOfRange(name.clone()))?;
        bytes
            .get(start..end)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| Error::OutOfRange(name.clone()))
    }

    fn size(&self, name: &ObjectName) -> Result<u64, Error> {
        self.lock()
            .get(name)
            .map(|b| b.len() as u64)
            .ok_or_else(|| Error::NotFound(name.clone()))
    }

    fn list(&self, namespace: Namespace) -> Result<Vec<String>, Error> {
        Ok(self
            .lock()
            .keys()
            .filter(|n| n.namespace() == namespace)
            .map(|n| n.name().to_owned())
            .collect())
    }

    fn list_sized(&self, namespace: Namespace) -> Result<Vec<(String, u64)>, Error> {
        Ok(self
            .lock()
            .iter()
            .filter(|(n, _)| n.namespace() == namespace)
            .map(|(n, bytes)| (n.name().to_owned(), bytes.len() as u64))
            .collect())
    }

    fn delete(&self, name: &ObjectName) -> Result<(), Error> {
        self.lock()
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| Error::NotFound(name.clone()))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn conformance() {
        crate::conformance::run(&super::MemoryStore::new());
    }
}
