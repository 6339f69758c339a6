//! A source from a flat list of items: what a frontend hands over when its
//! data is rows and blobs rather than a directory tree. Directories named
//! only by the items' paths are made up (mode `0700`, epoch times).

use std::collections::HashMap;
use std::io::{self, Read};

use cairn_meta::is_valid_name;

use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::rules::PathRules;
use crate::source::{Item, ItemKind, Root, Source, Status};

/// One item of an [`ItemList`]: its path inside the snapshot (`/`-separated
/// names, e.g. `attachments/2026/photo-17.jpg`) and its description.
#[derive(Clone, Debug)]
pub struct ListItem {
    /// Path inside the snapshot.
    pub path: Vec<u8>,
    /// What it is.
    pub item: Item,
}

struct ListNode {
    path: Vec<u8>,
    item: Item,
    /// Children's names and node indices, sorted by name.
    children: Vec<(Vec<u8>, usize)>,
}

/// A [`Source`] over a list of items, whose files are opened by calling
/// `open` with their path.
pub struct ItemList<F> {
    label: String,
    nodes: Vec<ListNode>,
    roots: Vec<(Vec<u8>, usize)>,
    open: F,
}

impl<F, R> ItemList<F>
where
    F: Fn(&[u8]) -> io::Result<R> + Sync,
    R: Read + Send,
{
    /// The source of `items`, recorded in snapshots as `label` (which,
    /// with the host, picks the parent snapshot). Refuses an empty list, a
    /// path with an invalid name (empty, `.`, `..`, NUL), a path given
    /// twice, and an item below one that is not a directory.
    pub fn new(label: impl Into<String>, mut items: Vec<ListItem>, open: F) -> Result<Self> {
        let invalid = |path: &[u8], why: &str| {
            Error::InvalidInput(format!(
                "source item {:?}: {why}",
                String::from_utf8_lossy(path)
            ))
        };
        if items.is_empty() {
            return Err(Error::InvalidInput("the source has no items".into()));
        }
        // Parents sort before their children.
        items.sort_by(|a, b| a.path.cmp(&b.path));
        let mut nodes: Vec<ListNode> = Vec::with_capacity(items.len());
        let mut by_path: HashMap<Vec<u8>, usize> = HashMap::with_capacity(items.len());
        let mut roots: Vec<(Vec<u8>, usize)> = Vec::new();
        for ListItem { path, item } in items {
            let names: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
            if names.iter().any(|n| !is_valid_name(n)) {
                return Err(invalid(&path, "not a valid path of names"));
            }
            if item.kind == ItemKind::Symlink
                && !cairn_meta::is_valid_link_target(&item.link_target)
            {
                return Err(invalid(
                    &path,
                    "a symlink target must be 1 to 4095 bytes without NUL",
                ));
            }
            let mut parent: Option<usize> = None;
            let mut prefix: Vec<u8> = Vec::with_capacity(path.len());
            for (depth, name) in names.iter().enumerate() {
                if depth > 0 {
                    prefix.push(b'/');
                }
                prefix.extend_from_slice(name);
                let last = depth + 1 == names.len();
                if let Some(&existing) = by_path.get(&prefix) {
                    if last {
                        return Err(invalid(&path, "given twice"));
                    }
                    if nodes.get(existing).map(|n| n.item.kind) != Some(ItemKind::Dir) {
                        return Err(invalid(&path, "below an item that is not a directory"));
                    }
                    parent = Some(existing);
                    continue;
                }
                let node_item = if last {
                    item.clone()
                } else {
                    Item::new(
                        ItemKind::Dir,
                        Status {
                            mode: 0o700,
                            ..Status::default()
                        },
                    )
                };
                let idx = nodes.len();
                nodes.push(ListNode {
                    path: prefix.clone(),
                    item: node_item,
                    children: Vec::new(),
                });
                by_path.insert(prefix.clone(), idx);
                let siblings = match parent {
                    Some(p) => match nodes.get_mut(p) {
                        Some(node) => &mut node.children,
                        None => &mut roots,
                    },
                    None => &mut roots,
                };
                siblings.push((name.to_vec(), idx));
                parent = Some(idx);
            }
        }
        // Sorted paths do not give sorted names: `b/a-b` sorts before
        // `b/a/c`, yet the name `a` sorts before `a-b`.
        for node in &mut nodes {
            node.children.sort_by(|a, b| a.0.cmp(&b.0));
        }
        roots.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Self {
            label: label.into(),
            nodes,
            roots,
            open,
        })
    }

    fn node(&self, entry: usize) -> io::Result<&ListNode> {
        self.nodes
            .get(entry)
            .ok_or_else(|| io::Error::other("no such item"))
    }
}

impl<F, R> Source for ItemList<F>
where
    F: Fn(&[u8]) -> io::Result<R> + Sync,
    R: Read + Send,
{
    type Entry = usize;
    type Reader = R;

    fn paths(&self) -> Vec<String> {
        vec![self.label.clone()]
    }

    fn roots(&self) -> Result<Vec<Root<usize>>> {
        Ok(self
            .roots
            .iter()
            .map(|(name, idx)| Root {
                name: name.clone(),
                display: String::from_utf8_lossy(name).into_owned().into(),
                entry: *idx,
            })
            .collect())
    }

    fn look(&self, entry: &usize) -> io::Result<Item> {
        Ok(self.node(*entry)?.item.clone())
    }

    fn list(&self, dir: &usize, _item: &Item) -> io::Result<Vec<(Vec<u8>, usize)>> {
        Ok(self.node(*dir)?.children.clone())
    }

    fn open(&self, entry: &usize, _item: &Item) -> io::Result<(R, Option<Status>)> {
        Ok(((self.open)(&self.node(*entry)?.path)?, None))
    }

    fn one_whole(&self) -> bool {
        true
    }

    fn readahead_threads(&self) -> usize {
        1
    }

    /// Only reports the totals: the list knows them already (what is
    /// flagged or excluded, or under such a directory, not counted).
    fn readahead(
        &self,
        _contents: bool,
        exclude: Option<&PathRules>,
        totals: Option<&dyn Progress>,
    ) {
        let Some(progress) = totals else { return };
        let (mut n, mut bytes) = (0u64, 0u64);
        let mut stack: Vec<usize> = self.roots.iter().map(|(_, idx)| *idx).collect();
        while let Some(idx) = stack.pop() {
            let Some(node) = self.nodes.get(idx) else {
                continue;
            };
            if !node.item.flags.is_empty() || exclude.is_some_and(|r| r.matches(&node.path)) {
                continue;
            }
            match node.item.kind {
                ItemKind::File => {
                    n += 1;
                    bytes = bytes.saturating_add(node.item.status.size);
                }
                ItemKind::Dir => stack.extend(node.children.iter().map(|(_, i)| *i)),
                _ => {}
            }
        }
        progress.scanned(n, bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str) -> ListItem {
        ListItem {
            path: path.as_bytes().to_vec(),
            item: Item::new(ItemKind::File, Status::default()),
        }
    }

    fn opener(_: &[u8]) -> io::Result<&'static [u8]> {
        Ok(b"")
    }

    #[test]
    fn builds_a_sorted_tree_with_made_up_directories() {
        let list = ItemList::new(
            "app",
            vec![file("b/z"), file("a"), file("b/a-b"), file("b/a/c")],
            opener,
        )
        .expect("valid");
        let roots = list.roots().expect("roots");
        let names: Vec<_> = roots.iter().map(|r| r.name.clone()).collect();
        assert_eq!(names, [b"a".to_vec(), b"b".to_vec()]);
        let b = &roots[1];
        let item = list.look(&b.entry).expect("look");
        assert_eq!(item.kind, ItemKind::Dir);
        let children: Vec<_> = list
            .list(&b.entry, &item)
            .expect("list")
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(children, [b"a".to_vec(), b"a-b".to_vec(), b"z".to_vec()]);
        assert_eq!(list.paths(), ["app"]);
    }

    #[test]
    fn refuses_bad_lists() {
        for bad in [
            vec![],
            vec![file("a"), file("a")],
            vec![file("a"), file("a/b")],
            vec![file("a//b")],
            vec![file("../a")],
            vec![file("/a")],
            vec![file("a/")],
            vec![ListItem {
                path: b"l".to_vec(),
                item: Item::new(ItemKind::Symlink, Status::default()),
            }],
        ] {
            assert!(ItemList::new("app", bad, opener).is_err());
        }
    }
}
