//! Directory trees: one blob per directory, listing its entries sorted by name.
//! Trees are deduplicated like data, so an unchanged directory costs nothing.
//!
//! Decoding validates everything a restore relies on: names are non-empty, not
//! `.` or `..`, contain no `/` or NUL, and are strictly sorted (so unique); each
//! node carries exactly the fields of its kind.

use cairn_crypto::BlobId;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What a node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeKind {
    /// A regular file; `content` lists its chunks.
    File,
    /// A directory; `subtree` names its tree blob.
    Dir,
    /// A symbolic link; `link_target` holds the target bytes.
    Symlink,
}

/// One entry of a directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
    /// File content, in order.
    pub content: Vec<[u8; 32]>,
    /// Directory's tree blob.
    pub subtree: Option<[u8; 32]>,
}

impl Node {
    /// The name as text, lossily (for display only).
    pub fn name_lossy(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }

    /// Chunk IDs of a file's content.
    pub fn chunks(&self) -> impl Iterator<Item = BlobId> + '_ {
        self.content.iter().map(|b| BlobId::from_bytes(*b))
    }

    /// The directory's tree ID.
    pub fn subtree_id(&self) -> Option<BlobId> {
        self.subtree.map(BlobId::from_bytes)
    }
}

/// A directory's entries, sorted by name bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    /// The entries.
    pub nodes: Vec<Node>,
}

/// Whether a name is safe to create inside a directory.
pub fn is_valid_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
}

impl Tree {
    /// Sorts nodes by name (the canonical order).
    pub fn sort(&mut self) {
        self.nodes.sort_by(|a, b| a.name.cmp(&b.name));
    }

    /// The canonical encoding (postcard).
    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain structs into a Vec cannot fail.
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Decodes and validates a tree blob's plaintext. Never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let bad = || Error::integrity("tree blob");
        let tree: Tree = postcard::from_bytes(bytes).map_err(|_| bad())?;
        let mut previous: Option<&[u8]> = None;
        for node in &tree.nodes {
            if !is_valid_name(&node.name) || previous.is_some_and(|p| p >= node.name.as_slice()) {
                return Err(bad());
            }
            previous = Some(&node.name);
            let consistent = match node.kind {
                NodeKind::File => node.subtree.is_none() && node.link_target.is_empty(),
                NodeKind::Dir => {
                    node.subtree.is_some() && node.content.is_empty() && node.link_target.is_empty()
                }
                NodeKind::Symlink => {
                    node.subtree.is_none()
                        && node.content.is_empty()
                        && !node.link_target.is_empty()
                }
            };
            if !consistent
                || node.mode > 0o7777
                || node.mtime_nanos >= 1_000_000_000
                || node.ctime_nanos >= 1_000_000_000
            {
                return Err(bad());
            }
        }
        Ok(tree)
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
                Some([1; 32])
            } else {
                None
            },
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
        assert_eq!(Tree::decode(&t.encode()).unwrap(), t);
        assert!(t.find(b"b").is_some() && t.find(b"z").is_none());

        for bad in [&b".."[..], b".", b"", b"a/b", b"a\0"] {
            let t = Tree {
                nodes: vec![node(bad, NodeKind::File)],
            };
            assert!(Tree::decode(&t.encode()).is_err(), "{bad:?}");
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
                .encode()
            )
            .is_err()
        );
        let dup = Tree {
            nodes: vec![node(b"a", NodeKind::File), node(b"a", NodeKind::Dir)],
        };
        assert!(Tree::decode(&dup.encode()).is_err());
        let mut dir_without_subtree = node(b"d", NodeKind::Dir);
        dir_without_subtree.subtree = None;
        assert!(
            Tree::decode(
                &Tree {
                    nodes: vec![dir_without_subtree]
                }
                .encode()
            )
            .is_err()
        );
    }
}
