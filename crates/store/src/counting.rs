//! A store wrapper that counts requests by kind and bytes moved: what an
//! operation costs on object storage, where every request is billed.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Error, Namespace, ObjectName, Store};

/// Requests and bytes counted by a [`CountingStore`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Puts (whole or from parts).
    pub puts: u64,
    /// Whole and ranged gets.
    pub gets: u64,
    /// Size queries.
    pub sizes: u64,
    /// Listings.
    pub lists: u64,
    /// Deletes.
    pub deletes: u64,
    /// Bytes returned by gets.
    pub bytes_read: u64,
    /// Bytes sent by puts.
    pub bytes_written: u64,
}

impl Counts {
    /// Every request, of every kind.
    pub fn requests(&self) -> u64 {
        self.puts + self.gets + self.sizes + self.lists + self.deletes
    }

    /// What was counted since `earlier` (counts taken before these).
    #[must_use]
    pub fn since(&self, earlier: &Counts) -> Counts {
        Counts {
            puts: self.puts.saturating_sub(earlier.puts),
            gets: self.gets.saturating_sub(earlier.gets),
            sizes: self.sizes.saturating_sub(earlier.sizes),
            lists: self.lists.saturating_sub(earlier.lists),
            deletes: self.deletes.saturating_sub(earlier.deletes),
            bytes_read: self.bytes_read.saturating_sub(earlier.bytes_read),
            bytes_written: self.bytes_written.saturating_sub(earlier.bytes_written),
        }
    }
}

/// Counters of requests by kind and bytes moved, updated from any thread:
/// what [`CountingStore`] keeps, and what a backend that counts its own
/// requests (object storage, at the HTTP level) keeps too.
#[derive(Debug, Default)]
pub struct Tally {
    /// Puts.
    pub puts: AtomicU64,
    /// Gets, whole and ranged.
    pub gets: AtomicU64,
    /// Size queries.
    pub sizes: AtomicU64,
    /// Listings (or pages of one).
    pub lists: AtomicU64,
    /// Deletes.
    pub deletes: AtomicU64,
    /// Bytes received.
    pub bytes_read: AtomicU64,
    /// Bytes sent.
    pub bytes_written: AtomicU64,
}

impl Tally {
    /// The counts so far.
    pub fn counts(&self) -> Counts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Counts {
            puts: get(&self.puts),
            gets: get(&self.gets),
            sizes: get(&self.sizes),
            lists: get(&self.lists),
            deletes: get(&self.deletes),
            bytes_read: get(&self.bytes_read),
            bytes_written: get(&self.bytes_written),
        }
    }

    /// Sets every count back to zero.
    pub fn reset(&self) {
        for c in [
            &self.puts,
            &self.gets,
            &self.sizes,
            &self.lists,
            &self.deletes,
            &self.bytes_read,
            &self.bytes_written,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }
}

/// Wraps a store and counts what goes through it.
#[derive(Debug, Default)]
pub struct CountingStore<S> {
    inner: S,
    tally: Tally,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl<S: Store> CountingStore<S> {
    /// Wraps `inner`, all counts zero.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            tally: Tally::default(),
        }
    }

    /// The counts so far.
    pub fn counts(&self) -> Counts {
        self.tally.counts()
    }

    /// Sets every count back to zero.
    pub fn reset(&self) {
        self.tally.reset();
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }
}

impl<S: Store> Store for CountingStore<S> {
    fn put(&self, name: &ObjectName, bytes: &[u8]) -> Result<(), Error> {
        add(&self.tally.puts, 1);
        add(&self.tally.bytes_written, bytes.len() as u64);
        self.inner.put(name, bytes)
    }
    fn put_parts(&self, name: &ObjectName, parts: &[&[u8]]) -> Result<(), Error> {
        add(&self.tally.puts, 1);
        add(
            &self.tally.bytes_written,
            parts.iter().map(|p| p.len() as u64).sum(),
        );
        self.inner.put_parts(name, parts)
    }
    fn get(&self, name: &ObjectName, max_len: u64) -> Result<Vec<u8>, Error> {
        add(&self.tally.gets, 1);
        let bytes = self.inner.get(name, max_len)?;
        add(&self.tally.bytes_read, bytes.len() as u64);
        Ok(bytes)
    }
    fn get_range(&self, name: &ObjectName, offset: u64, len: u64) -> Result<Vec<u8>, Error> {
        add(&self.tally.gets, 1);
        let bytes = self.inner.get_range(name, offset, len)?;
        add(&self.tally.bytes_read, bytes.len() as u64);
        Ok(bytes)
    }
    fn read_range_into(&self, name: &ObjectName, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        add(&self.tally.gets, 1);
        self.inner.read_range_into(name, offset, buf)?;
        add(&self.tally.bytes_read, buf.len() as u64);
        Ok(())
    }
    fn size(&self, name: &ObjectName) -> Result<u64, Error> {
        add(&self.tally.sizes, 1);
        self.inner.size(name)
    }
    fn list(&self, namespace: Namespace) -> Result<Vec<String>, Error> {
        add(&self.tally.lists, 1);
        self.inner.list(namespace)
    }
    fn list_sized(&self, namespace: Namespace) -> Result<Vec<(String, u64)>, Error> {
        add(&self.tally.lists, 1);
        self.inner.list_sized(namespace)
    }
    fn delete(&self, name: &ObjectName) -> Result<(), Error> {
        add(&self.tally.deletes, 1);
        self.inner.delete(name)
    }
    fn clean_interrupted_writes(&self) -> Result<u64, Error> {
        self.inner.clean_interrupted_writes()
    }
    fn requests(&self) -> Option<Counts> {
        Some(self.counts())
    }
    fn parallelism(&self) -> usize {
        self.inner.parallelism()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;

    #[test]
    fn conformance_and_counts() {
        let s = CountingStore::new(MemoryStore::new());
        crate::conformance::run(&s);
        assert!(s.counts().requests() > 10);
        s.reset();
        let n = ObjectName::new(Namespace::Packs, "abc").expect("name");
        s.put(&n, b"12345").expect("put");
        s.get_range(&n, 1, 2).expect("range");
        s.list(Namespace::Packs).expect("list");
        s.delete(&n).expect("delete");
        let c = s.counts();
        assert_eq!(
            (
                c.puts,
                c.gets,
                c.lists,
                c.deletes,
                c.bytes_written,
                c.bytes_read
            ),
            (1, 1, 1, 1, 5, 2)
        );
    }
}
