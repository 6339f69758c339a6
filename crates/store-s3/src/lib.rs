//! S3-compatible object storage as a cairn [`Store`], through OpenDAL.
//!
//! A repository at `s3://bucket/prefix` keeps the local layout below the
//! prefix (`config/config`, `packs/<xy>/<name>`, …), so a repository can be
//! copied between a directory and a bucket as it is.
//!
//! The store contract holds on S3 (the conformance suite of `cairn-store`
//! runs against an S3 server in the tests): a put never overwrites (it
//! sends `If-None-Match: *`, which S3 and its compatible servers honour), a
//! read is bounded before it allocates (a size query first), a delete of a
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

#[cfg(feature = "test-server")]
pub mod test_server;

use cairn_store::{Error, Namespace, ObjectName, Store};
use opendal::options::{ListOptions, ReadOptions, WriteOptions};
use opendal::{EntryMode, ErrorKind};

/// Longest one request may take, whole (a 64 MiB pack at 2 MB/s takes 32 s).
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);
/// Longest a request may wait for the next bytes.
const IO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Retries of a request that failed for a temporary reason: with backoff
/// from 0.2 s doubling to 8 s, about 15 s in all before the error stands.
const MAX_RETRIES: usize = 4;

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
    op: opendal::blocking::Operator,
    /// Described in messages as `s3://bucket/prefix`.
    location: String,
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

/// What OpenDAL said, as a store error about `name`.
fn io_error(name: &str, e: opendal::Error) -> Error {
    Error::Io {
        name: name.to_owned(),
        source: io::Error::other(e.to_string()),
    }
}

impl S3Store {
    /// A store for `config`. Sends no request (the first operation finds
    /// out whether the bucket and credentials work).
    pub fn new(config: &S3Config) -> Result<Self, Error> {
        let location = format!("s3://{}/{}", config.bucket, config.prefix);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cairn-s3")
            .enable_all()
            .build()
            .map_err(|e| Error::Io {
                name: location.clone(),
                source: e,
            })?;
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
        let op = {
            // The blocking operator takes the runtime it is created in.
            let _entered = runtime.enter();
            // Each attempt is bounded in time; temporary failures (5xx,
            // throttling, timeouts, dropped connections) are retried with
            // exponential backoff and jitter, a few times; permanent ones
            // (wrong credentials, a missing bucket) fail at once.
            let op = opendal::Operator::new(builder)
                .map_err(|e| io_error(&location, e))?
                .layer(
                    opendal::layers::TimeoutLayer::new()
                        .with_timeout(REQUEST_TIMEOUT)
                        .with_io_timeout(IO_TIMEOUT),
                )
                .layer(
                    opendal::layers::RetryLayer::new()
                        .with_max_times(MAX_RETRIES)
                        .with_jitter()
                        .with_min_delay(std::time::Duration::from_millis(200))
                        .with_max_delay(std::time::Duration::from_secs(8)),
                )
                .finish();
            opendal::blocking::Operator::new(op).map_err(|e| io_error(&location, e))?
        };
        Ok(Self {
            op,
            location,
            _runtime: runtime,
        })
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
        let options = WriteOptions {
            if_not_exists: true,
            ..WriteOptions::default()
        };
        self.op
            .write_options(&Self::path(name), bytes.to_vec(), options)
            .map(|_| ())
            .map_err(|e| self.error(name, e))
    }

    fn get(&self, name: &ObjectName, max_len: u64) -> Result<Vec<u8>, Error> {
        let size = self.size(name)?;
        if size > max_len {
            return Err(Error::TooLarge {
                name: name.clone(),
                size,
                max_len,
            });
        }
        if size == 0 {
            return Ok(Vec::new());
        }
        self.get_range(name, 0, size)
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
        let options = ReadOptions {
            range: (offset..end).into(),
            ..ReadOptions::default()
        };
        let bytes = match self.op.read_options(&Self::path(name), options) {
            Ok(bytes) => bytes.to_vec(),
            // OpenDAL refuses an answer shorter than the range asked for:
            // past the end of the object, if it is shorter than the range.
            Err(e) if e.kind() != ErrorKind::NotFound => {
                return Err(match self.size(name) {
                    Ok(size) if size < end => Error::OutOfRange(name.clone()),
                    _ => self.error(name, e),
                });
            }
            Err(e) => return Err(self.error(name, e)),
        };
        // A short answer: the object ends before the range does.
        if bytes.len() as u64 != len {
            return Err(Error::OutOfRange(name.clone()));
        }
        Ok(bytes)
    }

    fn size(&self, name: &ObjectName) -> Result<u64, Error> {
        self.op
            .stat(&Self::path(name))
            .map(|meta| meta.content_length())
            .map_err(|e| self.error(name, e))
    }

    fn list(&self, namespace: Namespace) -> Result<Vec<String>, Error> {
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
        let mut names: Vec<String> = entries
            .into_iter()
            .filter(|entry| entry.metadata().mode() == EntryMode::FILE)
            .filter_map(|entry| {
                let name = entry.path().rsplit('/').next()?.to_owned();
                // What is not a valid object name is not cairn's.
                ObjectName::new(namespace, &name).ok()?;
                Some(name)
            })
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
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
