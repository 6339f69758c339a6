//! Storage backends. A store holds immutable named objects in a few namespaces;
//! it knows nothing of formats or keys.
//!
//! # Contract of [`Store`]
//!
//! 1. `put` is put-if-absent: it never overwrites. If the name exists it returns
//!    [`Error::AlreadyExists`] and leaves the old object untouched.
//! 2. After `put` returns `Ok`, the object is durable (as far as the backend can
//!    promise) and `get`, `get_range`, `size` and `list` see it whole; a reader
//!    never sees a partial object.
//! 3. `get(name, max_len)` returns the whole object, or [`Error::TooLarge`]
//!    without reading it when it holds more than `max_len` bytes: a reader
//!    states what the format allows, so a hostile store cannot make it
//!    allocate more. `get_range(name, offset, len)` returns exactly `len` bytes or
//!    [`Error::OutOfRange`]; it never returns fewer. `read_range_into` is the
//!    same read into the caller's buffer.
//! 4. `list` returns every name of a namespace, sorted; names are
//!    `[0-9a-z._-]{1,128}`, not starting with a dot.
//! 5. `delete` removes an object; deleting a missing one is [`Error::NotFound`].
//! 6. A missing object is [`Error::NotFound`] from every method.
//! 7. `clean_interrupted_writes` removes what puts interrupted by a crash left
//!    behind (never an object, never a put in progress in any process).
//! 8. Objects and directories a backend creates are private to their owner
//!    (0600 and 0700 for the local store, whatever the umask).
#![deny(clippy::unwrap_used)]

mod counting;
mod faulty;
mod local;
mod memory;

pub use counting::{CountingStore, Counts, Tally};
pub use faulty::{Fault, FaultyStore};
pub use local::LocalStore;
pub use memory::MemoryStore;

use std::fmt;

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No object with this name.
    #[error("{0} not found")]
    NotFound(ObjectName),
    /// `put` of a name that exists.
    #[error("{0} already exists")]
    AlreadyExists(ObjectName),
    /// A ranged read past the end of the object.
    #[error("read past the end of {0}")]
    OutOfRange(ObjectName),
    /// The object is larger than the reader allows.
    #[error("{name} holds {size} bytes, more than the {max_len} its format allows")]
    TooLarge {
        /// The object.
        name: ObjectName,
        /// Its size.
        size: u64,
        /// The most the reader accepts.
        max_len: u64,
    },
    /// A name outside the allowed alphabet.
    #[error("invalid object name")]
    InvalidName,
    /// The backend failed.
    #[error("storage I/O error on {name}: {source}")]
    Io {
        /// The object (or namespace) involved.
        name: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An injected fault (tests only).
    #[error("injected fault")]
    Injected,
}

/// Namespaces of a repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Namespace {
    /// The single `config` object.
    Config,
    /// Key slots.
    Keys,
    /// Pack files.
    Packs,
    /// Index files.
    Index,
    /// Snapshot files.
    Snapshots,
    /// Session markers of running backups and prunes.
    Sessions,
    /// Condemnation records of prune (packs and index files to delete).
    Condemned,
}

impl Namespace {
    /// Every namespace.
    pub const ALL: [Namespace; 7] = [
        Namespace::Config,
        Namespace::Keys,
        Namespace::Packs,
        Namespace::Index,
        Namespace::Snapshots,
        Namespace::Sessions,
        Namespace::Condemned,
    ];

    /// The namespaces of the first format: a repository must have them; the
    /// later ones are created when missing (and list as empty until then).
    pub const FIRST: [Namespace; 5] = [
        Namespace::Config,
        Namespace::Keys,
        Namespace::Packs,
        Namespace::Index,
        Namespace::Snapshots,
    ];

    /// Directory name of the namespace.
    pub fn dir(self) -> &'static str {
        match self {
            Namespace::Config => "config",
            Namespace::Keys => "keys",
            Namespace::Packs => "packs",
            Namespace::Index => "index",
            Namespace::Snapshots => "snapshots",
            Namespace::Sessions => "sessions",
            Namespace::Condemned => "condemned",
        }
    }
}

/// A validated object name within a namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectName {
    namespace: Namespace,
    name: String,
}

impl ObjectName {
    /// Validates `name` (see the contract for the alphabet).
    pub fn new(namespace: Namespace, name: &str) -> Result<Self, Error> {
        let valid = !name.is_empty()
            && name.len() <= 128
            && !name.starts_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase() || b"._-".contains(&b));
        if !valid {
            return Err(Error::InvalidName);
        }
        Ok(Self {
            namespace,
            name: name.to_owned(),
        })
    }

    /// The namespace.
    pub fn namespace(&self) -> Namespace {
        self.namespace
    }

    /// The name within the namespace.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for ObjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace.dir(), self.name)
    }
}

/// A backend holding a repository's objects. See the crate docs for the contract.
pub trait Store: Send + Sync {
    /// Stores `bytes` under `name` unless the name exists
    /// ([`Error::AlreadyExists`]). A backend that cannot tell its own
    /// retried write from another's (object storage) may answer `Ok` when
    /// the object there holds exactly `bytes`.
    fn put(&self, name: &ObjectName, bytes: &[u8]) -> Result<(), Error>;
    /// [`Store::put`] of the concatenation of `parts`, which a backend may
    /// write without concatenating them first.
    fn put_parts(&self, name: &ObjectName, parts: &[&[u8]]) -> Result<(), Error> {
        self.put(name, &parts.concat())
    }
    /// The whole object, if it holds at most `max_len` bytes.
    fn get(&self, name: &ObjectName, max_len: u64) -> Result<Vec<u8>, Error>;
    /// Exactly `len` bytes from `offset`.
    fn get_range(&self, name: &ObjectName, offset: u64, len: u64) -> Result<Vec<u8>, Error>;
    /// Fills `buf` exactly from `offset` (a ranged get into the caller's
    /// buffer, so a reader that reuses one buffer allocates nothing).
    fn read_range_into(&self, name: &ObjectName, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        let bytes = self.get_range(name, offset, buf.len() as u64)?;
        if bytes.len() != buf.len() {
            return Err(Error::OutOfRange(name.clone()));
        }
        buf.copy_from_slice(&bytes);
        Ok(())
    }
    /// The object's size in bytes.
    fn size(&self, name: &ObjectName) -> Result<u64, Error>;
    /// Every name in `namespace`, sorted.
    fn list(&self, namespace: Namespace) -> Result<Vec<String>, Error>;
    /// Every name in `namespace` with its size, sorted by name. Backends
    /// whose listings carry sizes (object storage, directories) answer in
    /// one listing; the default asks each object's size (an object deleted
    /// meanwhile is left out).
    fn list_sized(&self, namespace: Namespace) -> Result<Vec<(String, u64)>, Error> {
        let mut sized = Vec::new();
        for name in self.list(namespace)? {
            match self.size(&ObjectName::new(namespace, &name)?) {
                Ok(size) => sized.push((name, size)),
                Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(sized)
    }
    /// Removes the object.
    fn delete(&self, name: &ObjectName) -> Result<(), Error>;
    /// Removes leftovers of puts interrupted by a crash (temporary files);
    /// returns how many. Puts in progress, here or in another process, are
    /// left alone. Backends whose puts leave nothing behind keep the default.
    fn clean_interrupted_writes(&self) -> Result<u64, Error> {
        Ok(0)
    }
    /// The requests this store has sent so far, by kind, for backends that
    /// send requests someone counts (object storage bills each one); `None`
    /// for the others.
    fn requests(&self) -> Option<Counts> {
        None
    }
    /// How many requests are worth having in flight at once: 1 for a local
    /// disk, more for a store behind a link with latency, where a writer
    /// that waits for each put in turn runs at the speed of the round trip.
    fn parallelism(&self) -> usize {
        1
    }
}

impl<S: Store + ?Sized> Store for std::sync::Arc<S> {
    fn put(&self, name: &ObjectName, bytes: &[u8]) -> Result<(), Error> {
        (**self).put(name, bytes)
    }
    fn put_parts(&self, name: &ObjectName, parts: &[&[u8]]) -> Result<(), Error> {
        (**self).put_parts(name, parts)
    }
    fn get(&self, name: &ObjectName, max_len: u64) -> Result<Vec<u8>, Error> {
        (**self).get(name, max_len)
    }
    fn get_range(&self, name: &ObjectName, offset: u64, len: u64) -> Result<Vec<u8>, Error> {
        (**self).get_range(name, offset, len)
    }
    fn read_range_into(&self, name: &ObjectName, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        (**self).read_range_into(name, offset, buf)
    }
    fn size(&self, name: &ObjectName) -> Result<u64, Error> {
        (**self).size(name)
    }
    fn list(&self, namespace: Namespace) -> Result<Vec<String>, Error> {
        (**self).list(namespace)
    }
    fn list_sized(&self, namespace: Namespace) -> Result<Vec<(String, u64)>, Error> {
        (**self).list_sized(namespace)
    }
    fn delete(&self, name: &ObjectName) -> Result<(), Error> {
        (**self).delete(name)
    }
    fn clean_interrupted_writes(&self) -> Result<u64, Error> {
        (**self).clean_interrupted_writes()
    }
    fn requests(&self) -> Option<Counts> {
        (**self).requests()
    }
    fn parallelism(&self) -> usize {
        (**self).parallelism()
    }
}

/// The conformance suite every backend must pass; each backend's tests call
/// it (backends in other crates too: it is public for them, not for use).
#[doc(hidden)]
#[allow(clippy::missing_panics_doc)]
pub mod conformance {
    use super::*;

    fn name(ns: Namespace, s: &str) -> ObjectName {
        ObjectName::new(ns, s).expect("valid test name")
    }

    const ANY: u64 = u64::MAX;

    /// Runs the suite against an empty store; panics on the first breach.
    pub fn run(store: &dyn Store) {
        let a = name(Namespace::Packs, "aa01");
        let b = name(Namespace::Packs, "0b02");
        let other_ns = name(Namespace::Index, "aa01");

        assert!(store.list(Namespace::Packs).expect("list").is_empty());
        assert!(matches!(store.get(&a, ANY), Err(Error::NotFound(_))));
        assert!(matches!(store.size(&a), Err(Error::NotFound(_))));
        assert!(matches!(store.delete(&a), Err(Error::NotFound(_))));
        assert!(matches!(store.get_range(&a, 0, 1), Err(Error::NotFound(_))));

        store
            .put_parts(&a, &[b"hello", b"", b" world"])
            .expect("put a in parts");
        store.put(&b, b"").expect("put empty b");
        // Put never overwrites.
        assert!(matches!(
            store.put(&a, b"other"),
            Err(Error::AlreadyExists(_))
        ));
        assert_eq!(store.get(&a, ANY).expect("get"), b"hello world");
        assert_eq!(store.get(&b, 0).expect("get empty"), b"");
        assert_eq!(store.size(&a).expect("size"), 11);
        // Reads are bounded by what the caller allows.
        assert_eq!(store.get(&a, 11).expect("get at the bound"), b"hello world");
        assert!(matches!(
            store.get(&a, 10),
            Err(Error::TooLarge {
                size: 11,
                max_len: 10,
                ..
            })
        ));
        assert_eq!(store.get_range(&a, 6, 5).expect("range"), b"world");
        assert_eq!(store.get_range(&a, 11, 0).expect("empty range"), b"");
        assert!(matches!(
            store.get_range(&a, 6, 6),
            Err(Error::OutOfRange(_))
        ));
        assert!(matches!(
            store.get_range(&a, u64::MAX, 2),
            Err(Error::OutOfRange(_))
        ));
        // Namespaces are separate.
        assert!(matches!(store.get(&other_ns, ANY), Err(Error::NotFound(_))));
        store.put(&other_ns, b"index").expect("put other namespace");
        assert_eq!(
            store.list(Namespace::Packs).expect("list"),
            vec!["0b02", "aa01"]
        );
        assert_eq!(store.list(Namespace::Index).expect("list"), vec!["aa01"]);
        assert!(store.list(Namespace::Snapshots).expect("list").is_empty());
        // A listing with sizes names the same objects, with their sizes.
        assert_eq!(
            store.list_sized(Namespace::Packs).expect("list with sizes"),
            vec![("0b02".to_owned(), 0), ("aa01".to_owned(), 11)]
        );
        assert!(
            store
                .list_sized(Namespace::Snapshots)
                .expect("list with sizes")
                .is_empty()
        );

        store.delete(&a).expect("delete");
        assert!(matches!(store.get(&a, ANY), Err(Error::NotFound(_))));
        assert_eq!(store.list(Namespace::Packs).expect("list"), vec!["0b02"]);
        // After delete, the name can be used again.
        store.put(&a, b"again").expect("put after delete");
        assert_eq!(store.get(&a, ANY).expect("get"), b"again");

        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let c = name(Namespace::Snapshots, "big");
        store.put(&c, &big).expect("put big");
        assert_eq!(store.get(&c, ANY).expect("get big"), big);
        assert_eq!(
            store.get_range(&c, 1_000_000, 10).expect("range big"),
            &big[1_000_000..1_000_010]
        );
        let config = name(Namespace::Config, "config");
        store.put(&config, b"cfg").expect("put config");
        assert_eq!(store.list(Namespace::Config).expect("list"), vec!["config"]);
        // Nothing was interrupted: nothing to clean, and every object stays.
        store.clean_interrupted_writes().expect("clean");
        assert_eq!(store.get(&c, ANY).expect("get big"), big);
    }

    #[test]
    fn names_are_validated() {
        for bad in [
            "",
            ".hidden",
            "a/b",
            "..",
            "UPPER",
            "sp ace",
            &"x".repeat(129),
        ] {
            assert!(ObjectName::new(Namespace::Packs, bad).is_err(), "{bad:?}");
        }
        assert!(ObjectName::new(Namespace::Packs, "ab-12_3.tmp").is_ok());
    }
}
