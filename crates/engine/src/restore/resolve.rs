//! Looking things up inside snapshots: resolving a path, listing a subtree.

use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use cairn_crypto::SnapshotId;
use cairn_meta::{Node, NodeKind, Tree};

use crate::blobs::Unreadable;
use crate::error::{Error, Result};
use crate::repo::Repository;

/// Deepest directory nesting walked (listing, restore, backup): deeper trees
/// are refused rather than risk the thread's stack. Real trees stay far below.
pub(crate) const MAX_TREE_DEPTH: usize = 512;

/// A snapshot path resolved to what it names.
#[derive(Clone, Debug)]
pub enum Resolved {
    /// The snapshot's root (its top-level entries).
    Root(Tree),
    /// One entry.
    Node(Node),
}

/// One line of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListEntry {
    /// Path inside the snapshot, `/`-separated, each name as
    /// [`escape_name`] shows it.
    pub path: String,
    /// The entry.
    pub node: Node,
}

impl Repository {
    /// Resolves a `/`-separated path inside a snapshot; `None` or empty is the root.
    pub fn resolve(&self, snapshot: &SnapshotId, path: Option<&Path>) -> Result<Resolved> {
        let snap = self.load_snapshot(snapshot)?;
        let mut current = Resolved::Root(self.load_tree(&snap.root_id())?);
        let shown = || path.map(|p| p.display().to_string()).unwrap_or_default();
        for component in path.into_iter().flat_map(Path::components) {
            let name = match component {
                Component::Normal(n) => n.as_bytes(),
                Component::RootDir | Component::CurDir => continue,
                _ => return Err(Error::PathNotFound(shown())),
            };
            let tree = match current {
                Resolved::Root(tree) => tree,
                Resolved::Node(node) => match node.subtree_id() {
                    Some(id) if node.kind == NodeKind::Dir => self.load_tree(&id)?,
                    _ => return Err(Error::PathNotFound(shown())),
                },
            };
            let node = tree
                .find(name)
                .ok_or_else(|| Error::PathNotFound(shown()))?;
            current = Resolved::Node(node.clone());
        }
        Ok(current)
    }

    /// Lists everything under `path` in a snapshot, depth first, sorted by
    /// name. A subtree that cannot be read (or nests too deep) is left out
    /// and named in [`Listing::unlisted`]; the rest is listed.
    pub fn list(&self, snapshot: &SnapshotId, path: Option<&Path>) -> Result<Listing> {
        // Listing recurses once per directory level.
        crate::deep::on_deep_stack(|| self.list_here(snapshot, path))
    }

    /// [`Self::list`], on the calling thread.
    fn list_here(&self, snapshot: &SnapshotId, path: Option<&Path>) -> Result<Listing> {
        let mut listing = Listing::default();
        let prefix = path
            .map(|p| {
                let text = p.as_os_str().as_bytes();
                escape_name(text).trim_matches('/').to_owned()
            })
            .unwrap_or_default();
        match self.resolve(snapshot, path)? {
            Resolved::Root(tree) => self.list_tree(&tree, &prefix, &mut listing, 0)?,
            Resolved::Node(node) => {
                let subtree = node.subtree_id().filter(|_| node.kind == NodeKind::Dir);
                listing.entries.push(ListEntry {
                    path: prefix.clone(),
                    node,
                });
                if let Some(id) = subtree {
                    self.list_subtree(&id, &prefix, &mut listing, 1)?;
                }
            }
        }
        Ok(listing)
    }

    fn list_tree(
        &self,
        tree: &Tree,
        prefix: &str,
        listing: &mut Listing,
        depth: usize,
    ) -> Result<()> {
        for node in &tree.nodes {
            let name = escape_name(&node.name);
            let path = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            listing.entries.push(ListEntry {
                path: path.clone(),
                node: node.clone(),
            });
            if let Some(id) = node.subtree_id() {
                self.list_subtree(&id, &path, listing, depth + 1)?;
            }
        }
        Ok(())
    }

    fn list_subtree(
        &self,
        id: &cairn_crypto::BlobId,
        path: &str,
        listing: &mut Listing,
        depth: usize,
    ) -> Result<()> {
        if depth > MAX_TREE_DEPTH {
            listing.unlisted.push(Unreadable {
                object: path.to_owned(),
                reason: format!("nested deeper than {MAX_TREE_DEPTH} directories"),
            });
            return Ok(());
        }
        match self.load_tree(id) {
            Ok(subtree) => self.list_tree(&subtree, path, listing, depth),
            Err(e) if e.is_repository_damage() => {
                listing.unlisted.push(Unreadable {
                    object: path.to_owned(),
                    reason: e.to_string(),
                });
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// A listing of a snapshot: the entries, and the directories whose contents
/// could not be listed.
#[derive(Clone, Debug, Default)]
pub struct Listing {
    /// The entries, depth first, sorted by name.
    pub entries: Vec<ListEntry>,
    /// Directories (by path) whose contents are missing, and why.
    pub unlisted: Vec<Unreadable>,
}

impl Listing {
    /// Whether every directory's contents are listed.
    pub fn is_complete(&self) -> bool {
        self.unlisted.is_empty()
    }
}

impl std::ops::Deref for Listing {
    type Target = [ListEntry];

    fn deref(&self) -> &[ListEntry] {
        &self.entries
    }
}

/// A name as text that is safe to print and unambiguous: valid UTF-8 stays as
/// it is, except control characters, which become `\xNN` like bytes that are
/// not UTF-8; a backslash is doubled. Distinct names give distinct text, and
/// no name can start a new line of a listing.
pub fn escape_name(name: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(name.len());
    for chunk in name.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                c if c.is_control() => {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        let _ = write!(out, "\\x{b:02x}");
                    }
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::escape_name;

    #[test]
    fn names_print_safely_and_stay_distinct() {
        assert_eq!(escape_name(b"plain name.txt"), "plain name.txt");
        assert_eq!(escape_name("Grüße 🎉".as_bytes()), "Grüße 🎉");
        assert_eq!(escape_name(b"evil\n-0644 fake"), "evil\\x0a-0644 fake");
        assert_eq!(escape_name(b"\x1b[31mred"), "\\x1b[31mred");
        assert_ne!(escape_name(b"bad\xffname"), escape_name(b"bad\xfename"));
        assert_eq!(escape_name(b"bad\xffname"), "bad\\xffname");
        // A literal backslash cannot imitate an escape.
        assert_ne!(escape_name(b"a\\x0a"), escape_name(b"a\n"));
    }
}
