//! S3-compatible object storage as a cairn [`Store`], through OpenDAL.
//!
//! A repository at `s3://bucket/prefix` keeps the local layout below the
//! prefix (`config/config`, `packs/<xy>/<name>`, …), so a repository can be
//! copied between a directory and a bucket as it is.
//!
//! The store contract holds on S3 (the conformance suite of `cairn-store`
//! runs against an S3 server in the tests): a put never overwrites (it
//! sends `If-None-Match: *`, which S3 and its compatible servers honour), a
//! read is bounded before it allocates (streamed, and cut off past what the
//! caller allows: one request for a whole object), a delete of a
//! missing object says so (a size query first: S3 itself answers a delete
//! of nothing with success). Nothing is read from the machine's instance
//! metadata or configuration files: credentials are what the caller gives.
//!
//! Requests are bounded in time and retried on temporary failures (four
//! times, with backoff and jitter); permanent ones are errors at once. The store owns a
//! small tokio runtime; OpenDAL's blocking operator runs
//! every request on it. Call it from synchronous code only (OpenDAL's
//! blocking API panics inside an async context).

use std::io;
use std::time::Duration;

mod requests;
#[cfg(feature = "test-server")]
pub mod test_server;

use std::sync::Arc;

use requests::CountingClient;

use cairn_store::{Counts, Error, Namespace, ObjectName, Store, Tally};
use opendal::options::{ListOptions, ReaderOptions, WriteOptions};
use opendal::{EntryMode, ErrorKind};

/// Longest a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a read, size query, listing or delete may take (each attempt).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest one of them may wait for the next bytes.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a put may take (each attempt): a put is one request, sent whole,
/// and a 16 MiB pack over a 1 Mbit/s uplink takes over two minutes.
const PUT_TIMEOUT: Duration = Duration::from_secs(900);
/// Retries of a request that failed for a temporary reason (5xx,
/// throttling, timeouts, dropped connections), with backoff from 0.2 s
/// doubling and jitter: about 3 s of waiting in all before the error stands.
const MAX_RETRIES: usize = 4;
/// Requests worth having in flight at once: enough to hide a round trip
/// of tens of milliseconds behind the others (a backup uploads that many
/// packs at once, a restore reads that many ranges).
const PARALLELISM: usize = 8;

/// Where a repository is, and how to reach it.
#[derive(Clone, Default)]
pub struct S3Config {
    /// The bucket.
    pub bucket: String,
    /// The repository's prefix inside the bucket (no leading or trailing
    /// `/`; empty for the bucket's root).
    pub prefix: String,
    /// The endpoint (`http://127.0.0.1:9000`); `None` for AWS's.
    pub endpoint: Option<String>,
    /// The region (required with a custom endpoint; any name a server
    /// accepts).
    pub region: Option<String>,
    /// Access key ID.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<String>,
    /// Session token (temporary credentials).
    pub session_token: Option<String>,
}

impl std::fmt::Debug for S3Config {
    // Secrets are never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl S3Config {
    /// The bucket and prefix of a location `s3://bucket/prefix`; `None`
    /// when it is not an S3 location.
    pub fn from_location(location: &str) -> Option<Result<Self, String>> {
        let rest = location.strip_prefix("s3://")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = prefix.trim_matches('/');
        let valid_bucket = !bucket.is_empty()
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.".contains(&b));
        if !valid_bucket {
            return Some(Err(format!("{location:?}: not a valid bucket name")));
        }
        if prefix.split('/').any(|part| part == ".." || part == ".") {
            return Some(Err(format!("{location:?}: a prefix cannot hold . or ..")));
        }
        Some(Ok(Self {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
            ..Self::default()
        }))
    }
}

/// A repository in an S3 bucket.
pub struct S3Store {
    /// Reads, size queries, listings and deletes.
    op: opendal::blocking::Operator,
    /// Puts: the same, with a deadline fit for a whole pack.
    put_op: opendal::blocking::Operator,
    /// Described in messages as `s3://bucket/prefix`.
    location: String,
    /// The requests sent so far.
    tally: Arc<Tally>,
    // Dropped last: the operator's requests run on it.
    _runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

/// Why a streamed read failed.
enum ReadError {
    Dal(opendal::Error),
    Io(io::Error),
    TooLong,
}

impl ReadError {
    fn is_not_found(&self) -> bool {
        match self {
            ReadError::Dal(e) => e.kind() == ErrorKind::NotFound,
            ReadError::Io(e) => e.kind() == io::ErrorKind::NotFound,
            ReadError::TooLong => false,
        }
    }

    fn into_store_error(self, name: &str) -> Error {
        match self {
            ReadError::Dal(e) => io_error(name, e),
            ReadError::Io(e) => Error::Io {
                name: name.to_owned(),
                source: e,
            },
            ReadError::TooLong => Error::Io {
                name: name.to_owned(),
                source: io::Error::other("the server sent more bytes than asked for"),
            },
        }
    }
}

/// What OpenDAL said, as a store error about `name`.
fn io_error(name: &str, e: opendal::Error) -> Error {
    Error::Io {
        name: name.to_owned(),
        source: io::Error::other(e.to_string()),
    }
}

impl S3Store {
    /// A store for an existing repository at `config`. Sends no request
    /// (the first operation finds out whether the bucket and credentials
    /// work).
    pub fn new(config: &S3Config) -> Result<Self, Error> {
        let location = if config.prefix.is_empty() {
            format!("s3://{}/", config.bucket)
        } else {
            format!("s3://{}/{}/", config.bucket, config.prefix)
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cairn-s3")
            .enable_all()
            .build()
            .map_err(|e| Error::Io {
                name: location.clone(),
                source: e,
            })?;
        // A client of this store's own: a connect timeout (OpenDAL's shared
        // default has none, so an unreachable endpoint cost each attempt its
        // whole deadline), and no connections shared with other stores'
        // runtimes.
        let client = {
            let _entered = runtime.enter();
            reqwest::Client::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .build()
                .map_err(|e| Error::Io {
                    name: location.clone(),
                    source: io::Error::other(e),
                })?
        };
        let tally = Arc::new(Tally::default());
        let operator = |timeout: Duration, io_timeout: Duration| {
            let mut builder = opendal::services::S3::default()
                .bucket(&config.bucket)
                .root(&format!("/{}", config.prefix))
                .disable_config_load()
                .disable_ec2_metadata();
            if let Some(endpoint) = &config.endpoint {
                builder = builder.endpoint(endpoint);
            }
            if let Some(region) = &config.region {
                builder = builder.region(region);
            }
            if let Some(id) = &config.access_key_id {
                builder = builder.access_key_id(id);
            }
            if let Some(secret) = &config.secret_access_key {
                builder = builder.secret_access_key(secret);
            }
            if let Some(token) = &config.session_token {
                builder = builder.session_token(token);
            }
            // Each attempt is bounded in time; temporary failures are
            // retried with backoff and jitter; permanent ones (wrong
            // credentials, a missing bucket) fail at once. The blocking
            // operator takes the runtime it is created in.
            let _entered = runtime.enter();
            let op = opendal::Operator::new(builder)
                .map_err(|e| io_error(&location, e))?
                .layer(opendal::layers::HttpClientLayer::new(
                    opendal::raw::HttpClient::with(CountingClient {
                        inner: client.clone(),
                        tally: tally.clone(),
                    }),
                ))
                .layer(
                    opendal::layers::TimeoutLayer::new()
                        .with_timeout(timeout)
                        .with_io_timeout(io_timeout),
                )
                .layer(
                    opendal::layers::RetryLayer::new()
                        .with_max_times(MAX_RETRIES)
                        .with_jitter()
                        .with_min_delay(Duration::from_millis(200))
                        .with_max_delay(Duration::from_secs(8)),
                )
                .finish();
            opendal::blocking::Operator::new(op).map_err(|e| io_error(&location, e))
        };
        let op = operator(REQUEST_TIMEOUT, IO_TIMEOUT)?;
        let put_op = operator(PUT_TIMEOUT, PUT_TIMEOUT)?;
        Ok(Self {
            op,
            put_op,
            location,
            tally,
            _runtime: runtime,
        })
    }

    /// A store for a new repository at `config`: refuses a prefix that
    /// holds anything (another tool's repository, another cairn's), and a
    /// server that lets a put overwrite (the format's commit points need
    /// put-if-absent): it puts a probe twice and removes it.
    pub fn create(config: &S3Config) -> Result<Self, Error> {
        let store = Self::new(config)?;
        // The first entry is enough (one request, however full the bucket).
        let mut entries = store
            .op
            .lister_options(
                "/",
                ListOptions {
                    limit: Some(2),
                    ..ListOptions::default()
                },
            )
            .map_err(|e| io_error(&store.location, e))?;
        let mut anything = false;
        for entry in entries.by_ref() {
            let entry = entry.map_err(|e| io_error(&store.location, e))?;
            if entry.path() != "/" {
                anything = true;
                break;
            }
        }
        if anything {
            return Err(Error::Io {
                name: store.location.clone(),
                source: io::Error::other("not empty: a repository must have a prefix of its own"),
            });
        }
        let probe = ObjectName::new(Namespace::Sessions, "put-if-absent-probe")?;
        store.put(&probe, b"1")?;
        let overwrote = !matches!(store.put(&probe, b"2"), Err(Error::AlreadyExists(_)));
        store.delete(&probe)?;
        if overwrote {
            return Err(Error::Io {
                name: store.location.clone(),
                source: io::Error::other(
                    "the server lets a put overwrite an object (it ignores If-None-Match); \
                     cairn needs put-if-absent",
                ),
            });
        }
        Ok(store)
    }

    /// How messages name an object: its full location.
    fn describe(&self, name: &ObjectName) -> String {
        format!("{}{}", self.location, Self::path(name))
    }

    /// A put of `body`, which becomes the request's body as it is.
    fn put_owned(&self, name: &ObjectName, body: Vec<u8>) -> Result<(), Error> {
        let options = WriteOptions {
            if_not_exists: true,
            ..WriteOptions::default()
        };
        let buffer = opendal::Buffer::from(body);
        match self
            .put_op
            .write_options(&Self::path(name), buffer.clone(), options)
        {
            Ok(_) => Ok(()),
            // A refused put may be our own, retried after the first attempt
            // was stored and its answer lost, or a write still in flight:
            // the same bytes there are this put done.
            // (OpenDAL maps 412 and 409, a conflicting write in flight, to
            // ConditionNotMatch.)
            Err(e) if e.kind() == ErrorKind::ConditionNotMatch => {
                let len = buffer.len() as u64;
                match self.get(name, len) {
                    Ok(there) if buffer.to_bytes() == there.as_slice() => Ok(()),
                    Ok(_) | Err(Error::TooLarge { .. }) => Err(Error::AlreadyExists(name.clone())),
                    Err(other) => Err(other),
                }
            }
            Err(e) => Err(self.error(name, e)),
        }
    }

    /// The store error for a ranged read (ending at `end`) that failed.
    fn range_error(&self, name: &ObjectName, end: u64, e: ReadError) -> Error {
        match e {
            ReadError::TooLong => Error::Io {
                name: self.describe(name),
                source: io::Error::other("the server sent more bytes than asked for"),
            },
            e if e.is_not_found() => Error::NotFound(name.clone()),
            // OpenDAL refuses an answer shorter than the range asked for:
            // past the end of the object, if it is shorter than the range.
            e => match self.size(name) {
                Ok(size) if size < end => Error::OutOfRange(name.clone()),
                _ => e.into_store_error(&self.describe(name)),
            },
        }
    }

    /// Reads `range` of an object, streamed and counted: a server that
    /// sends more than `limit` bytes (a hostile one) is cut off one chunk
    /// past it, never buffered whole.
    fn stream(
        &self,
        name: &ObjectName,
        range: impl std::ops::RangeBounds<u64>,
        limit: u64,
    ) -> Result<Vec<u8>, ReadError> {
        let mut out = Vec::with_capacity(usize::try_from(limit).unwrap_or(0).min(1 << 26));
        self.stream_to(name, range, limit, |chunk| out.extend_from_slice(chunk))?;
        Ok(out)
    }

    /// [`Self::stream`] into `buf` (a ranged read into the caller's
    /// buffer: no allocation, no copy beyond the one from the socket's
    /// chunks); returns how many bytes came.
    fn stream_into(
        &self,
        name: &ObjectName,
        range: std::ops::Range<u64>,
        buf: &mut [u8],
    ) -> Result<usize, ReadError> {
        let mut filled = 0;
        self.stream_to(name, range, buf.len() as u64, |chunk| {
            buf[filled..filled + chunk.len()].copy_from_slice(chunk);
            filled += chunk.len();
        })?;
        Ok(filled)
    }

    /// Hands each chunk of `range` to `sink`, after checking that it keeps
    /// the total within `limit`.
    fn stream_to(
        &self,
        name: &ObjectName,
        range: impl std::ops::RangeBounds<u64>,
        limit: u64,
        mut sink: impl FnMut(&[u8]),
    ) -> Result<(), ReadError> {
        let chunks = self
            .op
            .reader_options(&Self::path(name), ReaderOptions::default())
            .and_then(|reader| reader.into_bytes_iterator(range))
            .map_err(ReadError::Dal)?;
        let mut total = 0u64;
        for chunk in chunks {
            let chunk = chunk.map_err(ReadError::Io)?;
            total += chunk.len() as u64;
            if total > limit {
                return Err(ReadError::TooLong);
            }
            sink(&chunk);
        }
        Ok(())
    }

    /// The object's path below the prefix: the local store's layout.
    fn path(name: &ObjectName) -> String {
        let dir = name.namespace().dir();
        match name.namespace() {
            Namespace::Packs => {
                let fan = name.name().get(..2).unwrap_or("__");
                format!("{dir}/{fan}/{}", name.name())
            }
            _ => format!("{dir}/{}", name.name()),
        }
    }

    fn error(&self, name: &ObjectName, e: opendal::Error) -> Error {
        match e.kind() {
            ErrorKind::NotFound => Error::NotFound(name.clone()),
            ErrorKind::ConditionNotMatch => Error::AlreadyExists(name.clone()),
            ErrorKind::RangeNotSatisfied => Error::OutOfRange(name.clone()),
            _ => io_error(&format!("{}{}", self.location, Self::path(name)), e),
        }
    }
}

impl Store for S3Store {
    fn put(&self, name: &ObjectName, bytes: &[u8]) -> Result<(), Error> {
        self.put_owned(name, bytes.to_vec())
    }

    fn put_parts(&self, name: &ObjectName, parts: &[&[u8]]) -> Result<(), Error> {
        // One copy into the request's body (the default would copy twice).
        self.put_owned(name, parts.concat())
    }

    /// One request: the object streamed and cut off past `max_len` (a size
    /// query then says how large it is, for the error).
    fn get(&self, name: &ObjectName, max_len: u64) -> Result<Vec<u8>, Error> {
        match self.stream(name, .., max_len) {
            Ok(bytes) => Ok(bytes),
            Err(ReadError::TooLong) => match self.size(name)? {
                size if size > max_len => Err(Error::TooLarge {
                    name: name.clone(),
                    size,
                    max_len,
                }),
                // It said one size and sent more.
                _ => Err(ReadError::TooLong.into_store_error(&self.describe(name))),
            },
            Err(e) if e.is_not_found() => Err(Error::NotFound(name.clone())),
            Err(e) => Err(e.into_store_error(&self.describe(name))),
        }
    }

    fn get_range(&self, name: &ObjectName, offset: u64, len: u64) -> Result<Vec<u8>, Error> {
        let end = offset
            .checked_add(len)
            .ok_or_else(|| Error::OutOfRange(name.clone()))?;
        if len == 0 {
            // No request can ask for nothing: the object must exist and
            // the offset be within it.
            return if offset <= self.size(name)? {
                Ok(Vec::new())
            } else {
                Err(Error::OutOfRange(name.clone()))
            };
        }
        let bytes = self
            .stream(name, offset..end, len)
            .map_err(|e| self.range_error(name, end, e))?;
        // A short answer: the object ends before the range does.
        if bytes.len() as u64 != len {
            return Err(Error::OutOfRange(name.clone()));
        }
        Ok(bytes)
    }

    fn read_range_into(&self, name: &ObjectName, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        let len = buf.len() as u64;
        let end = offset
            .checked_add(len)
            .ok_or_else(|| Error::OutOfRange(name.clone()))?;
        if len == 0 {
            return self.get_range(name, offset, 0).map(|_| ());
        }
        let filled = self
            .stream_into(name, offset..end, buf)
            .map_err(|e| self.range_error(name, end, e))?;
        if filled as u64 != len {
            return Err(Error::OutOfRange(name.clone()));
        }
        Ok(())
    }

    fn size(&self, name: &ObjectName) -> Result<u64, Error> {
        self.op
            .stat(&Self::path(name))
            .map(|meta| meta.content_length())
            .map_err(|e| self.error(name, e))
    }

    fn list(&self, namespace: Namespace) -> Result<Vec<String>, Error> {
        Ok(self
            .list_sized(namespace)?
            .into_iter()
            .map(|(name, _)| name)
            .collect())
    }

    fn list_sized(&self, namespace: Namespace) -> Result<Vec<(String, u64)>, Error> {
        let dir = format!("{}/", namespace.dir());
        let options = ListOptions {
            recursive: true,
            ..ListOptions::default()
        };
        let entries = match self.op.list_options(&dir, options) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error(&format!("{}{dir}", self.location), e)),
        };
        let mut names: Vec<(String, u64)> = entries
            .into_iter()
            .filter(|entry| entry.metadata().mode() == EntryMode::FILE)
            .filter_map(|entry| {
                let name = entry.path().rsplit('/').next()?.to_owned();
                // Only what is where this name's object would be: not a
                // nested repository's objects, nor anything not cairn's.
                let object = ObjectName::new(namespace, &name).ok()?;
                (Self::path(&object) == entry.path().trim_start_matches('/'))
                    .then(|| (name, entry.metadata().content_length()))
            })
            .collect();
        names.sort();
        names.dedup_by(|a, b| a.0 == b.0);
        Ok(names)
    }

    fn requests(&self) -> Option<Counts> {
        Some(self.tally.counts())
    }

    fn parallelism(&self) -> usize {
        PARALLELISM
    }

    fn delete(&self, name: &ObjectName) -> Result<(), Error> {
        // S3 answers a delete of nothing with success: ask first.
        self.size(name)?;
        self.op
            .delete(&Self::path(name))
            .map_err(|e| self.error(name, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse() {
        let c = S3Config::from_location("s3://bucket-1/some/prefix/")
            .expect("an S3 location")
            .expect("valid");
        assert_eq!(
            (c.bucket.as_str(), c.prefix.as_str()),
            ("bucket-1", "some/prefix")
        );
        let c = S3Config::from_location("s3://b")
            .expect("s3")
            .expect("valid");
        assert_eq!(c.prefix, "");
        assert!(S3Config::from_location("/local/path").is_none());
        for bad in ["s3://", "s3://Upper", "s3://b/../x", "s3://b/a/./c"] {
            assert!(S3Config::from_location(bad).expect("s3").is_err(), "{bad}");
        }
        let secret = S3Config {
            secret_access_key: Some("very-secret".into()),
            ..S3Config::default()
        };
        assert!(!format!("{secret:?}").contains("very-secret"));
    }

    #[test]
    fn the_layout_is_the_local_one() {
        let name = |ns, n| ObjectName::new(ns, n).expect("name");
        assert_eq!(
            S3Store::path(&name(Namespace::Packs, "ab12")),
            "packs/ab/ab12"
        );
        assert_eq!(S3Store::path(&name(Namespace::Packs, "a")), "packs/__/a");
        assert_eq!(
            S3Store::path(&name(Namespace::Config, "config")),
            "config/config"
        );
    }
}
