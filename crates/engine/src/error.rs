//! The engine's one error type.

use std::path::PathBuf;

pub use cairn_crypto::KeyProblem;

/// Everything that can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The recovery key does not unlock this repository.
    #[error("wrong recovery key")]
    WrongKey,
    /// The recovery key text is malformed.
    #[error("malformed recovery key: {0}")]
    MalformedKey(KeyProblem),
    /// A repository object failed authentication or decoding. Which check failed
    /// is deliberately not said.
    #[error("repository object {object} is corrupt or has been tampered with")]
    Integrity {
        /// The object's name in the store (never plaintext content).
        object: String,
    },
    /// A snapshot refers to a blob that no readable index file names.
    #[error("repository is missing data: {kind} blob {blob} is in no index file")]
    MissingBlob {
        /// `data` or `tree`.
        kind: &'static str,
        /// Hex ID of the missing blob.
        blob: String,
    },
    /// A blob's pack is not in the store (deleted by the server, lost disk).
    #[error("repository is missing data: pack {pack} is missing (it holds {kind} blob {blob})")]
    MissingPack {
        /// Hex ID of the missing pack.
        pack: String,
        /// `data` or `tree`.
        kind: &'static str,
        /// Hex ID of a blob it held.
        blob: String,
    },
    /// The server serves an older history than this device saw: the newest
    /// snapshot seen is missing or replaced (deleted, withheld, or the
    /// repository put back to an earlier copy).
    #[error(
        "the repository went back in time: this device saw snapshot {seen}, the newest served is {served}{}; refused (withheld or rolled back by the server, unless the repository was restored on purpose)",
        if *unreadable > 0 { format!(" ({unreadable} snapshot files unreadable)") } else { String::new() }
    )]
    Rollback {
        /// The newest snapshot this device saw: `#sequence (ID prefix)`.
        seen: String,
        /// The newest snapshot served, the same way, or `none`.
        served: String,
        /// Snapshot files that could not be read.
        unreadable: usize,
    },
    /// The store holds no repository.
    #[error("no cairn repository here (no config or key slots)")]
    NotARepository,
    /// `init` on a store that already holds a repository.
    #[error("a repository already exists here")]
    AlreadyInitialized,
    /// A file carries a format version this cairn does not know: written by a
    /// newer cairn, or corrupt (the version byte is outside the seal).
    #[error("unsupported format version {0} (written by a newer cairn, or corrupt)")]
    UnsupportedVersion(u8),
    /// Invalid chunker parameters.
    #[error(transparent)]
    Chunker(#[from] cairn_chunker::Error),
    /// The storage backend failed.
    #[error(transparent)]
    Store(#[from] cairn_store::Error),
    /// A local file system operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The local path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The system would not start a thread the work needs.
    #[error("could not start a thread: {0}")]
    Thread(#[source] std::io::Error),
    /// No snapshot matches the given name or prefix.
    #[error("no snapshot matches {0:?}")]
    SnapshotNotFound(String),
    /// More than one snapshot matches the given prefix.
    #[error("snapshot prefix {0:?} is ambiguous")]
    AmbiguousSnapshot(String),
    /// The path does not exist in the snapshot.
    #[error("path {0:?} not found in the snapshot")]
    PathNotFound(String),
    /// The path exists but is not a regular file.
    #[error("{0:?} is not a regular file")]
    NotAFile(String),
    /// Restore target exists and is not an empty directory.
    #[error("restore target {0} exists and is not an empty directory")]
    TargetNotEmpty(PathBuf),
    /// Invalid backup input (e.g. two paths with the same final name).
    #[error("invalid backup input: {0}")]
    InvalidInput(String),
    /// A backup worker thread stopped without saying why (a bug: please report).
    #[error("backup pipeline stopped unexpectedly")]
    PipelineStopped,
    /// A pack upload failed earlier in this backup (its error was reported)
    /// or its thread stopped: nothing more is written.
    #[error("an upload of this backup failed: nothing more is written")]
    UploadStopped,
    /// A key rotation added the new key's slot but could not remove the
    /// old one: both keys open the repository until it is removed.
    #[error(
        "the new key works (key slot {new_slot}), but the old key slot {old_slot} could not \
         be removed ({reason}): remove it with the new key (`cairn key remove {old_slot}`)"
    )]
    RotationIncomplete {
        /// The new key's slot.
        new_slot: String,
        /// The slot still there.
        old_slot: String,
        /// Why it could not be removed.
        reason: String,
    },
    /// A directory nests deeper than cairn walks: a backup leaves it out, a
    /// listing or restore skips it (never written by cairn itself).
    #[error("{path}: nested deeper than {max} directories")]
    TooDeep {
        /// Where, inside the snapshot.
        path: String,
        /// The limit.
        max: usize,
    },
    /// Under the repository's quota, what is not media (messages and the
    /// snapshot's metadata) does not fit even without any media. Nothing
    /// was written; the previous snapshot is intact.
    #[error(
        "the messages alone need about {needed} bytes, more than the repository's quota of {quota} bytes leaves room for; nothing was written"
    )]
    QuotaTooSmall {
        /// Upper bound of what the backup needs without media.
        needed: u64,
        /// The quota.
        quota: u64,
    },
    /// The caller asked to stop.
    #[error("cancelled")]
    Cancelled,
    /// The system random number generator failed.
    #[error("system random number generator failed")]
    Random,
    /// A backup stalled (suspended, stopped) for longer than its session
    /// marker protects it, and a prune has since condemned or deleted a pack
    /// it relied on. Nothing was committed; running it again is safe.
    #[error(
        "the backup was paused longer than its session lasts and a prune has since          removed data it relied on; nothing was committed: run it again"
    )]
    SessionLapsed,
    /// A backup paused past its session's window wrote its snapshot, found
    /// afterwards that a prune may have deleted data it names, and could not
    /// delete the snapshot again.
    #[error(
        "snapshot {0} was written while this backup was paused and may name data a prune \
         deleted; it could not be taken back: forget it and run the backup again"
    )]
    LapsedSnapshotLeft(String),
    /// Another prune's session marker is live.
    #[error("another prune is running (session marker sessions/{0}); try again when it ends")]
    PruneRunning(String),
    /// Prune found something that makes deleting unsafe, and deleted nothing.
    #[error("prune deleted nothing: {0}")]
    PruneUnsafe(String),
}

impl Error {
    pub(crate) fn integrity(object: impl ToString) -> Self {
        Error::Integrity {
            object: object.to_string(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Error::Io { path, source }
    }

    /// Whether this error says repository data is damaged or missing (as
    /// opposed to a local problem, a store failure or a wrong key).
    pub fn is_integrity(&self) -> bool {
        self.is_repository_damage()
    }

    /// Whether this error is about one damaged, missing or oversized object
    /// of the repository: the kind of error that costs what depends on that
    /// object, never the whole repository.
    pub fn is_repository_damage(&self) -> bool {
        matches!(
            self,
            Error::Integrity { .. }
                | Error::MissingBlob { .. }
                | Error::MissingPack { .. }
                | Error::UnsupportedVersion(_)
                | Error::Store(cairn_store::Error::TooLarge { .. })
        )
    }
}

/// Maps a metadata codec error for the object `object`.
pub(crate) fn from_meta(object: impl ToString) -> impl FnOnce(cairn_meta::Error) -> Error {
    move |e| match e {
        cairn_meta::Error::UnsupportedVersion(v) => Error::UnsupportedVersion(v),
        cairn_meta::Error::Invalid(message) => Error::InvalidInput(message),
        cairn_meta::Error::Seal(e) => from_crypto(object)(e),
        _ => Error::integrity(object),
    }
}

/// Maps a crypto error for the object `object`.
pub(crate) fn from_crypto(object: impl ToString) -> impl FnOnce(cairn_crypto::Error) -> Error {
    move |e| match e {
        cairn_crypto::Error::WrongKey => Error::WrongKey,
        cairn_crypto::Error::MalformedKey { problem } => Error::MalformedKey(problem),
        cairn_crypto::Error::Random => Error::Random,
        _ => Error::integrity(object),
    }
}

/// Result alias of the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;
