//! Directory trees: one blob per directory, listing its entries sorted by name.
//! Trees are deduplicated like data, so an unchanged directory costs nothing.
//!
//! Decoding validates everything a restore relies on: names are non-empty, not
//! `.` or `..`, contain no `/` or NUL, and are strictly sorted (so unique); each
//! node carries exactly the fields of its kind; modes are permission bits only.
//!
//! Format 2 adds each node's [`Class`] as a column after the version-1
//! encoding (one byte per node), so version-1 trees decode unchanged and
//! every node of them is a message.

use cairn_crypto::BlobId;
use serde::{Deserialize, Serialize};

use crate::{Error, Format, corrupt};

/// What kind of content an item is, for retention: messages are kept whole
/// forever; media may age out or give way under a quota. Anything a source
/// does not call media is a message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    /// Kept whole, always (the message database, anything unclassified).
    #[default]
    Message,
    /// Photos, videos, voice notes, documents: kept while the policy allows.
    Media,
}

impl Class {
    /// The class's name, as the CLI and reports write it.
    pub fn name(self) -> &'static str {
        match self {
            Class::Message => "message",
            Class::Media => "media",
        }
    }
}

/// What a node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    /// A regular file; `content` lists its chunks.
    File,
    /// A directory; `subtree` names its tree blob.
    Dir,
    /// A symbolic link; `link_target` holds the target bytes.
    Symlink,
}

/// One entry of a directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// File name bytes (Unix names need not be UTF-8).
    pub name: Vec<u8>,
    /// Kind of entry.
    pub kind: NodeKind,
    /// Unix mode bits (permissions, setuid/setgid/sticky), without the type.
    pub mode: u32,
    /// Modification time, seconds since the Unix epoch.
    pub mtime_secs: i64,
    /// Modification time, nanoseconds part.
    pub mtime_nanos: u32,
    /// Status-change time, seconds (for change detection against a parent).
    pub ctime_secs: i64,
    /// Status-change time, nanoseconds part.
    pub ctime_nanos: u32,
    /// Inode number at backup time (for change detection against a parent).
    pub inode: u64,
    /// Owner user ID.
    pub uid: u32,
    /// Owner group ID.
    pub gid: u32,
    /// File size in bytes (0 for directories and symlinks).
    pub size: u64,
    /// Symlink target bytes.
    pub link_target: Vec<u8>,
    /// File content: data blob IDs, in order.
    pub content: Vec<BlobId>,
    /// Directory's tree blob ID.
    pub subtree: Option<BlobId>,
    /// The file's class (always [`Class::Message`] for directories and
    /// symlinks, and for every node of a format-1 tree).
    pub class: Class,
}

impl Node {
    /// A node of `kind` named `name` with everything else zero or empty
    /// (mode 0, epoch times, no content): a start for sources and tests.
    pub fn new(name: Vec<u8>, kind: NodeKind) -> Self {
        Self {
            name,
            kind,
            mode: 0,
            mtime_secs: 0,
            mtime_nanos: 0,
            ctime_secs: 0,
            ctime_nanos: 0,
            inode: 0,
            uid: 0,
            gid: 0,
            size: 0,
            link_target: Vec::new(),
            content: Vec::new(),
            subtree: None,
            class: Class::Message,
        }
    }

    /// The name as text, lossily (for display only).
    pub fn name_lossy(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }

    /// Data blob IDs of a file's content.
    pub fn chunks(&self) -> impl Iterator<Item = BlobId> + '_ {
        self.content.iter().copied()
    }

    /// The directory's tree ID.
    pub fn subtree_id(&self) -> Option<BlobId> {
        self.subtree
    }
}

/// A directory's entries, sorted by name bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tree {
    /// The entries.
    pub nodes: Vec<Node>,
}

/// Longest name a tree holds: what Linux creates (`NAME_MAX`).
pub const MAX_NAME_LEN: usize = 255;
/// Longest symlink target a tree holds: what `symlink(2)` takes
/// (`PATH_MAX` less its terminating NUL).
pub const MAX_LINK_TARGET_LEN: usize = 4095;

/// Whether a name is safe to create inside a directory: not empty, `.` or
/// `..`, no `/` or NUL, at most [`MAX_NAME_LEN`] bytes.
pub fn is_valid_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name != b"."
        && name != b".."
        && !name.contains(&b'/')
        && !name.contains(&0)
}

/// Whether a symlink target can be created: not empty, no NUL, at most
/// [`MAX_LINK_TARGET_LEN`] bytes.
pub fn is_valid_link_target(target: &[u8]) -> bool {
    !target.is_empty() && target.len() <= MAX_LINK_TARGET_LEN && !target.contains(&0)
}

// The wire form (docs/format.md, "Tree blob plaintext"). Writing goes through
// borrowing structs so encoding a directory copies nothing; reading decodes
// owned ones and moves their vectors into the API structs.

#[derive(Serialize, Deserialize)]
enum WireKind {
    File,
    Dir,
    Symlink,
}

/// A list of blob IDs, written as `[[u8; 32]]`.
struct WireIds<'a>(&'a [BlobId]);

impl Serialize for WireIds<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(BlobId::as_bytes))
    }
}

#[derive(Serialize)]
struct WireNodeRef<'a> {
    name: &'a [u8],
    kind: WireKind,
    mode: u32,
    mtime_secs: i64,
    mtime_nanos: u32,
    ctime_secs: i64,
    ctime_nanos: u32,
    inode: u64,
    uid: u32,
    gid: u32,
    size: u64,
    link_target: &'a [u8],
    content: WireIds<'a>,
    subtree: Option<&'a [u8; 32]>,
}

#[derive(Serialize)]
struct WireTreeRef<'a> {
    nodes: Vec<WireNodeRef<'a>>,
}

#[derive(Deserialize)]
struct WireNode {
    name: Vec<u8>,
    kind: WireKind,
    mode: u32,
    mtime_secs: i64,
    mtime_nanos: u32,
    ctime_secs: i64,
    ctime_nanos: u32,
    inode: u64,
    uid: u32,
    gid: u32,
    size: u64,
    link_target: Vec<u8>,
    content: Vec<[u8; 32]>,
    subtree: Option<[u8; 32]>,
}

#[derive(Deserialize)]
struct WireTree {
    nodes: Vec<WireNode>,
}

fn wire_class(class: Class) -> u8 {
    match class {
        Class::Message => 0,
        Class::Media => 1,
    }
}

impl Tree {
    /// Sorts nodes by name (the canonical order).
    pub fn sort(&mut self) {
        self.nodes.sort_by(|a, b| a.name.cmp(&b.name));
    }

    /// The canonical encoding of `format`: postcard of the wire form, and
    /// from format 2 the classes column. A format-1 tree cannot hold a
    /// class: every node is written as a message.
    pub fn encode(&self, format: Format) -> Vec<u8> {
        let wire = WireTreeRef {
            nodes: self
                .nodes
                .iter()
                .map(|n| WireNodeRef {
                    name: &n.name,
                    kind: match n.kind {
                        NodeKind::File => WireKind::File,
                        NodeKind::Dir => WireKind::Dir,
                        NodeKind::Symlink => WireKind::Symlink,
                    },
                    mode: n.mode,
                    mtime_secs: n.mtime_secs,
                    mtime_nanos: n.mtime_nanos,
                    ctime_secs: n.ctime_secs,
                    ctime_nanos: n.ctime_nanos,
                    inode: n.inode,
                    uid: n.uid,
                    gid: n.gid,
                    size: n.size,
                    link_target: &n.link_target,
                    content: WireIds(&n.content),
                    subtree: n.subtree.as_ref().map(BlobId::as_bytes),
                })
                .collect(),
        };
        // Serializing plain structs into a Vec cannot fail.
        let mut bytes = postcard::to_stdvec(&wire).unwrap_or_default();
        if format >= Format::V2 {
            let classes: Vec<u8> = self.nodes.iter().map(|n| wire_class(n.class)).collect();
            bytes.extend(postcard::to_stdvec(&classes).unwrap_or_default());
        }
        bytes
    }

    /// Decodes and validates a tree blob's plaintext of `format`. Never
    /// panics.
    pub fn decode(bytes: &[u8], format: Format) -> Result<Self, Error> {
        let (wire, rest): (WireTree, &[u8]) =
            postcard::take_from_bytes(bytes).map_err(|_| corrupt("tree"))?;
        let classes: Vec<u8> = match format {
            // Format 1 ignored trailing bytes, and still does.
            Format::V1 => Vec::new(),
            Format::V2 | Format::V3 => match postcard::take_from_bytes::<Vec<u8>>(rest) {
                Ok((classes, [])) if classes.len() == wire.nodes.len() => classes,
                _ => return Err(corrupt("tree")),
            },
        };
        let mut classes = classes.into_iter();
        let mut nodes: Vec<Node> = Vec::with_capacity(wire.nodes.len());
        for w in wire.nodes {
            let class = match classes.next() {
                None | Some(0) => Class::Message,
                Some(1) if matches!(w.kind, WireKind::File) => Class::Media,
                Some(_) => return Err(corrupt("tree")),
            };
            let kind = match w.kind {
                WireKind::File => NodeKind::File,
                WireKind::Dir => NodeKind::Dir,
                WireKind::Symlink => NodeKind::Symlink,
            };
            let sorted = nodes.last().is_none_or(|p| p.name < w.name);
            let consistent = match kind {
                NodeKind::File => w.subtree.is_none() && w.link_target.is_empty(),
                NodeKind::Dir => {
                    w.subtree.is_some() && w.content.is_empty() && w.link_target.is_empty()
                }
                NodeKind::Symlink => {
                    w.subtree.is_none()
                        && w.content.is_empty()
                        && is_valid_link_target(&w.link_target)
                }
            };
            if !is_valid_name(&w.name)
                || !sorted
                || !consistent
                || w.mode > 0o7777
                || w.mtime_nanos >= 1_000_000_000
                || w.ctime_nanos >= 1_000_000_000
            {
                return Err(corrupt("tree"));
            }
            nodes.push(Node {
                name: w.name,
                kind,
                mode: w.mode,
                mtime_secs: w.mtime_secs,
                mtime_nanos: w.mtime_nanos,
                ctime_secs: w.ctime_secs,
                ctime_nanos: w.ctime_nanos,
                inode: w.inode,
                uid: w.uid,
                gid: w.gid,
                size: w.size,
                link_target: w.link_target,
                // In place: same size and alignment, so no new allocation.
                content: w.content.into_iter().map(BlobId::from_bytes).collect(),
                subtree: w.subtree.map(BlobId::from_bytes),
                class,
            });
        }
        Ok(Tree { nodes })
    }

    /// The node named `name`.
    pub fn find(&self, name: &[u8]) -> Option<&Node> {
        self.nodes
            .binary_search_by(|n| n.name.as_slice().cmp(name))
            .ok()
            .and_then(|i| self.nodes.get(i))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn node(name: &[u8], kind: NodeKind) -> Node {
        Node {
            name: name.to_vec(),
            kind,
            mode: 0o644,
            mtime_secs: 1,
            mtime_nanos: 2,
            ctime_secs: 3,
            ctime_nanos: 4,
            inode: 5,
            uid: 6,
            gid: 7,
            size: 0,
            link_target: if kind == NodeKind::Symlink {
                b"t".to_vec()
            } else {
                vec![]
            },
            content: vec![],
            subtree: if kind == NodeKind::Dir {
                Some(BlobId::from_bytes([1; 32]))
            } else {
                None
            },
            class: Class::Message,
        }
    }

    #[test]
    fn round_trip_and_validation() {
        let mut t = Tree {
            nodes: vec![
                node(b"b", NodeKind::Dir),
                node(b"a", NodeKind::File),
                node(b"c", NodeKind::Symlink),
            ],
        };
        t.sort();
        assert_eq!(Tree::decode(&t.encode(Format::V2), Format::V2).unwrap(), t);
        assert!(t.find(b"b").is_some() && t.find(b"z").is_none());

        let long = [b'n'; 256];
        for bad in [&b".."[..], b".", b"", b"a/b", b"a\0", &long] {
            let t = Tree {
                nodes: vec![node(bad, NodeKind::File)],
            };
            assert!(
                Tree::decode(&t.encode(Format::V2), Format::V2).is_err(),
                "{bad:?}"
            );
        }
        // Regression: docs/format.md promised `mode <= 0o7777`; the decoder
        // did not check it.
        let mut typed_mode = node(b"m", NodeKind::File);
        typed_mode.mode = 0o100644;
        assert!(
            Tree::decode(
                &Tree {
                    nodes: vec![typed_mode]
                }
                .encode(Format::V2),
                Format::V2
            )
            .is_err()
        );
        let dup = Tree {
            nodes: vec![node(b"a", NodeKind::File), node(b"a", NodeKind::Dir)],
        };
        assert!(Tree::decode(&dup.encode(Format::V2), Format::V2).is_err());
        let mut dir_without_subtree = node(b"d", NodeKind::Dir);
        dir_without_subtree.subtree = None;
        assert!(
            Tree::decode(
                &Tree {
                    nodes: vec![dir_without_subtree]
                }
                .encode(Format::V2),
                Format::V2
            )
            .is_err()
        );
    }

    /// The wire form is what docs/format.md draws: a hand-built encoding of
    /// one node decodes, field by field.
    #[test]
    fn wire_layout_matches_the_format_document() {
        let mut bytes = vec![1u8]; // one node
        bytes.extend([1, b'f']); // name
        bytes.push(0); // kind File
        bytes.extend([0xa4, 0x03]); // mode 0o644 = 420, varint
        bytes.extend([2, 3]); // mtime secs 1 (zigzag 2), nanos 3
        bytes.extend([4, 5]); // ctime secs 2 (zigzag 4), nanos 5
        bytes.extend([6, 7, 8, 9]); // inode, uid, gid, size
        bytes.push(0); // empty link target
        bytes.push(1); // one content ID
        bytes.extend([0xab; 32]);
        bytes.push(0); // no subtree
        let tree = Tree::decode(&bytes, Format::V1).unwrap();
        let n = &tree.nodes[0];
        assert_eq!(
            (n.name.as_slice(), n.kind, n.mode),
            (&b"f"[..], NodeKind::File, 0o644)
        );
        assert_eq!(
            (n.mtime_secs, n.mtime_nanos, n.ctime_secs, n.ctime_nanos),
            (1, 3, 2, 5)
        );
        assert_eq!((n.inode, n.uid, n.gid, n.size), (6, 7, 8, 9));
        assert_eq!(n.content, [BlobId::from_bytes([0xab; 32])]);
        assert_eq!(n.class, Class::Message);
        assert_eq!(tree.encode(Format::V1), bytes);
        // Format 2: the same, then the classes column (one node, media).
        bytes.extend([1, 1]);
        let tree = Tree::decode(&bytes, Format::V2).unwrap();
        assert_eq!(tree.nodes[0].class, Class::Media);
        assert_eq!(tree.encode(Format::V2), bytes);
    }

    /// A format-2 tree's classes column has one valid class per node, media
    /// only for files, and nothing after it; format 1 has no column, and a
    /// class cannot be written into one.
    #[test]
    fn the_classes_column_is_validated() {
        let mut t = Tree {
            nodes: vec![node(b"a", NodeKind::File), node(b"b", NodeKind::Dir)],
        };
        t.nodes[0].class = Class::Media;
        let v2 = t.encode(Format::V2);
        assert_eq!(Tree::decode(&v2, Format::V2).unwrap(), t);
        let v1 = t.encode(Format::V1);
        assert_eq!(v2.len(), v1.len() + 3);
        let read_as_v1 = Tree::decode(&v1, Format::V1).unwrap();
        assert_eq!(read_as_v1.nodes[0].class, Class::Message);
        // A format-1 tree read as format 2 lacks the column.
        assert!(Tree::decode(&v1, Format::V2).is_err());
        let mut bad = v1.clone();
        for column in [
            &[2u8, 0, 0][..],
            &[2, 2, 0],
            &[2, 0, 1],
            &[1, 0],
            &[3, 0, 0, 0],
        ] {
            bad.truncate(v1.len());
            bad.extend(column);
            assert!(Tree::decode(&bad, Format::V2).is_err() || column == [2, 0, 0]);
        }
        bad.truncate(v1.len());
        bad.extend([2, 0, 0]);
        assert!(Tree::decode(&bad, Format::V2).is_ok());
        bad.push(0);
        assert!(Tree::decode(&bad, Format::V2).is_err(), "trailing bytes");
    }
}
