//! Backup sources: where a backup's items come from.
//!
//! A [`Source`] is a tree of items that the backup walks one directory at a
//! time, looking at each item (its [`Item`]: kind, size, times, mode,
//! class, flags) and opening a file only when its content must be read. The
//! filesystem ([`FsSource`], what [`Repository::backup`] uses) is one
//! source; a frontend writes its own from the app's own data (rows of its
//! message database, attachments in its own storage, an in-memory buffer)
//! without writing them to disk first, or hands a flat list of items to
//! [`ItemList`].
//!
//! The engine decides, never the source, what is left out: an item with a
//! [`Flags`] bit (`ephemeral`, `view_once`) is never opened and never
//! stored, and the backup's report counts it; an item whose source gives no
//! class gets one from the repository's media rules.
//!
//! [`Repository::backup`]: crate::Repository::backup

use std::io::{self, Read};
use std::path::PathBuf;

pub use cairn_meta::Class;

use crate::error::Result;
use crate::progress::Progress;
use crate::rules::PathRules;

mod fs;
mod list;
mod readahead;

pub use fs::{FsEntry, FsSource};
pub use list::{ItemList, ListItem};

/// What kind of item a source holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ItemKind {
    /// A file: its content is read through [`Source::open`].
    File,
    /// A directory: its children come from [`Source::list`].
    Dir,
    /// A symbolic link: its target is [`Item::link_target`].
    Symlink,
    /// Anything else (a FIFO, socket or device): never opened, left out
    /// with a warning.
    Other,
}

/// Flags on an item. A flagged item is never opened and never stored; a
/// flagged directory is not listed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Flags(u8);

impl Flags {
    /// No flag.
    pub const NONE: Flags = Flags(0);
    /// A disappearing message, or its attachment.
    pub const EPHEMERAL: Flags = Flags(1);
    /// A view-once message, or its attachment.
    pub const VIEW_ONCE: Flags = Flags(2);

    /// Whether no flag is set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether every flag of `other` is set.
    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// The flags' names, as reports write them (`ephemeral`, `view_once`).
    pub fn names(self) -> Vec<&'static str> {
        [
            (Flags::EPHEMERAL, "ephemeral"),
            (Flags::VIEW_ONCE, "view_once"),
        ]
        .into_iter()
        .filter(|(f, _)| self.contains(*f))
        .map(|(_, name)| name)
        .collect()
    }
}

impl std::ops::BitOr for Flags {
    type Output = Flags;
    fn bitor(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }
}

/// An item's status: what the backup records, and compares with the parent
/// snapshot to reuse an unchanged file without reading it.
///
/// A file is reused when `size`, `mtime`, `ctime` and `inode` all equal the
/// parent's (restic's rule). A source other than the filesystem should put
/// there something that changes whenever the content does (a row's version
/// in `ctime`, its ID in `inode`); a source that cannot promise that sets
/// [`Item::always_read`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Status {
    /// Bytes of content (files).
    pub size: u64,
    /// Unix permission bits (at most `0o7777`).
    pub mode: u32,
    /// Owner user ID.
    pub uid: u32,
    /// Owner group ID.
    pub gid: u32,
    /// Modification time (seconds, nanoseconds): also the item's own time,
    /// by which media age.
    pub mtime: (i64, u32),
    /// Status-change time, or any version stamp of the content.
    pub ctime: (i64, u32),
    /// Device of the item (the filesystem source checks that what it
    /// opens is what it looked at).
    pub device: u64,
    /// Identity of the item (an inode number, a row ID).
    pub inode: u64,
}

/// One item, as a source describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// What it is.
    pub kind: ItemKind,
    /// Its status.
    pub status: Status,
    /// Its class; `None` lets the repository's media rules decide.
    pub class: Option<Class>,
    /// Flags: a flagged item is left out unopened.
    pub flags: Flags,
    /// A symlink's target (empty for other kinds).
    pub link_target: Vec<u8>,
    /// Read the file even when its status equals the parent's (a file
    /// whose status has no change stamp, `ctime` and `inode` both zero, is
    /// always read).
    pub always_read: bool,
}

impl Item {
    /// An item of `kind` with `status`, no class, no flags.
    pub fn new(kind: ItemKind, status: Status) -> Self {
        Self {
            kind,
            status,
            class: None,
            flags: Flags::NONE,
            link_target: Vec::new(),
            always_read: false,
        }
    }
}

/// A top-level item: one entry of the snapshot's root.
pub struct Root<E> {
    /// Its name in the snapshot's root.
    pub name: Vec<u8>,
    /// How messages name it (children are named by joining their names).
    pub display: PathBuf,
    /// The source's handle on it.
    pub entry: E,
}

/// A tree of items to back up. The backup calls it from several threads
/// (`open` from file workers, `readahead` from helpers), hence `Sync`.
///
/// Errors are `io::Error`s: below the top level, one that fails
/// `look`, `list` or `open` is left out with a warning naming it, and the
/// backup goes on (the report counts it as skipped); at the top level the
/// backup fails.
pub trait Source: Sync {
    /// The source's handle on one item (the filesystem's: a directory
    /// descriptor and a name).
    type Entry: Send;
    /// A file's content, read once from start to end.
    type Reader: Read + Send;

    /// What the snapshot records as its paths; with the host it picks the
    /// parent snapshot, so it must be the same for every backup of the same
    /// data.
    fn paths(&self) -> Vec<String>;

    /// The top-level items, with distinct valid names.
    fn roots(&self) -> Result<Vec<Root<Self::Entry>>>;

    /// Describes an item.
    fn look(&self, entry: &Self::Entry) -> io::Result<Item>;

    /// A directory's children (as `look` described it), with names valid
    /// for a tree ([`cairn_meta::is_valid_name`]), sorted and distinct.
    fn list(&self, dir: &Self::Entry, item: &Item) -> io::Result<Vec<(Vec<u8>, Self::Entry)>>;

    /// Opens a file that must still be the one `item` describes. Returns
    /// its reader and, if the source knows it, its status as opened (the
    /// first of the two looks that detect a file changing while read).
    fn open(&self, entry: &Self::Entry, item: &Item) -> io::Result<(Self::Reader, Option<Status>)>;

    /// A reader's status now, after reading it; `None` when the source
    /// cannot tell (then a file is never read again for having changed).
    fn status(&self, _reader: &Self::Reader) -> io::Result<Option<Status>> {
        Ok(None)
    }

    /// Whether the roots are the contents of one backed-up whole (an
    /// [`ItemList`]): then path rules match from the snapshot's root, roots
    /// included, and a root that cannot be read is skipped like any other
    /// entry. The filesystem's roots are paths given one by one: rules
    /// match below each, and one that cannot be read fails the backup.
    fn one_whole(&self) -> bool {
        false
    }

    /// Helper threads the source can use for [`Source::readahead`] (at
    /// most 8 are started).
    fn readahead_threads(&self) -> usize {
        0
    }

    /// Work on a helper thread while the backup walks (the filesystem
    /// warms the kernel's caches); it must not change what the walk sees,
    /// and should skip what `exclude` leaves out. `contents`: every file
    /// will be read (no parent snapshot). With `totals`, one thread reports
    /// the source's totals (files, bytes) through [`Progress::scanned`]
    /// once it knows them. Returns when done, or soon after
    /// [`Source::stop_readahead`].
    fn readahead(
        &self,
        _contents: bool,
        _exclude: Option<&PathRules>,
        _totals: Option<&dyn Progress>,
    ) {
    }

    /// Ends the readahead (the walk is done or failed).
    fn stop_readahead(&self) {}
}
