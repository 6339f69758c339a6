//! Looking things up inside snapshots: resolving a path, listing a subtree.

use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use cairn_crypto::SnapshotId;

use crate::error::{Error, Result};
use crate::repo::Repository;
use cairn_meta::{Node, NodeKind, Tree};

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
    /// Path inside the snapshot, `/`-separated (lossy UTF-8).
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
    /// name. A subtree that cannot be read is left out with a warning naming
    /// it ([`Repository::take_warnings`]); the rest is listed.
    pub fn list(&self, snapshot: &SnapshotId, path: Option<&Path>) -> Result<Vec<ListEntry>> {
        let mut out = Vec::new();
        let prefix = path
            .map(|p| p.to_string_lossy().trim_matches('/').to_owned())
            .unwrap_or_default();
        match self.resolve(snapshot, path)? {
            Resolved::Root(tree) => self.list_tree(&tree, &prefix, &mut out, 0)?,
            Resolved::Node(node) => {
                let is_dir = node.kind == NodeKind::Dir;
                let subtree = node.subtree_id();
                out.push(ListEntry {
                    path: prefix.clone(),
                    node,
                });
                if let (true, Some(id)) = (is_dir, subtree) {
                    self.list_tree(&self.load_tree(&id)?, &prefix, &mut out, 1)?;
                }
            }
        }
        Ok(out)
    }

    fn list_tree(
        &self,
        tree: &Tree,
        prefix: &str,
        out: &mut Vec<ListEntry>,
        depth: usize,
    ) -> Result<()> {
        if depth > MAX_TREE_DEPTH {
            return Err(Error::integrity(format!(
                "tree at {prefix:?} (nested deeper than {MAX_TREE_DEPTH})"
            )));
        }
        for node in &tree.nodes {
            let path = if prefix.is_empty() {
                node.name_lossy()
            } else {
                format!("{prefix}/{}", node.name_lossy())
            };
            out.push(ListEntry {
                path: path.clone(),
                node: node.clone(),
            });
            if let Some(id) = node.subtree_id() {
                match self.load_tree(&id) {
                    Ok(subtree) => self.list_tree(&subtree, &path, out, depth + 1)?,
                    Err(e) if e.is_repository_damage() => {
                        self.note([format!("{path}: contents not listed: {e}")]);
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }
}
