//! Path rules: which items are media (the config's class rules) and which
//! are left out (a backup's excludes), written as glob patterns.
//!
//! A pattern without `/` matches an item's name at any depth (`*.jpg`,
//! `media`); a pattern with `/` matches its path below the backed-up path it
//! is under (`chat/cache/**`, or `/top.db` for a name at the top only; a
//! trailing `/` is ignored).
//! A match on a directory covers everything under it, so `media` makes a
//! whole directory media and `cache` leaves a whole directory out. Case is
//! ignored (`IMG_1.JPG` is media). Syntax is `globset`'s: `*`, `?`, `[..]`,
//! `{a,b}`, and `**` across directories.

use std::borrow::Cow;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::error::{Error, Result};

/// Compiled path rules.
#[derive(Clone, Debug)]
pub struct PathRules {
    /// Name patterns `*.ext` with an extension of at most 8 bytes, packed
    /// lower case into integers (sorted): a lookup on the extension instead
    /// of a glob per name, as the default media rules are nearly all of
    /// this form and every file is matched.
    extensions: Vec<u64>,
    /// Name patterns without any glob syntax (lower case).
    literals: Vec<Vec<u8>>,
    /// Other patterns without `/`, matched against a name.
    names: GlobSet,
    /// Patterns with `/`, matched against a relative path.
    paths: GlobSet,
}

impl PathRules {
    /// Compiles `patterns`; an invalid one is an [`Error::InvalidInput`]
    /// naming it.
    pub fn new(patterns: &[String]) -> Result<Self> {
        let (mut names, mut paths) = (GlobSetBuilder::new(), GlobSetBuilder::new());
        let (mut extensions, mut literals) = (Vec::new(), Vec::new());
        let plain =
            |s: &str| !s.is_empty() && !s.contains(['*', '?', '[', ']', '{', '}', '\\', '/']);
        for pattern in patterns {
            let lower = pattern.to_ascii_lowercase();
            // Only a one-part extension: a name is looked up by what follows
            // its last dot (`*.tar.gz` goes through the glob).
            if let Some(ext) = lower.strip_prefix("*.")
                && plain(ext)
                && !ext.contains('.')
                && let Some(packed) = pack_extension(ext.as_bytes())
            {
                extensions.push(packed);
                continue;
            }
            if plain(&lower) {
                literals.push(lower.into_bytes());
                continue;
            }
            // A trailing `/` says nothing more (matches cover what is below);
            // any other `/` anchors the pattern below the backed-up path.
            let trimmed = pattern.trim_end_matches('/');
            let is_path = trimmed.contains('/');
            // Case is ignored by lower-casing both sides: a case-insensitive
            // glob would become a regex, and every name would pay for it.
            let lower = trimmed.to_ascii_lowercase();
            let glob = GlobBuilder::new(lower.strip_prefix('/').unwrap_or(&lower))
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| Error::InvalidInput(format!("pattern {pattern:?}: {}", e.kind())))?;
            if is_path {
                paths.add(glob);
            } else {
                names.add(glob);
            }
        }
        let built = |set: GlobSetBuilder| {
            set.build()
                .map_err(|e| Error::InvalidInput(format!("patterns: {e}")))
        };
        extensions.sort();
        extensions.dedup();
        literals.sort();
        literals.dedup();
        Ok(Self {
            extensions,
            literals,
            names: built(names)?,
            paths: built(paths)?,
        })
    }

    /// Whether there is no rule at all (nothing ever matches).
    pub fn is_empty(&self) -> bool {
        self.extensions.is_empty()
            && self.literals.is_empty()
            && self.names.is_empty()
            && self.paths.is_empty()
    }

    /// Whether the item at `relative` (its path below the backed-up path,
    /// `/`-separated, its name last) matches a rule itself. What is under a
    /// matching directory matches too: the walk carries that down.
    pub fn matches(&self, relative: &[u8]) -> bool {
        match relative.iter().rposition(|&b| b == b'/') {
            Some(cut) => self.matches_in(
                relative.get(..cut),
                relative.get(cut + 1..).unwrap_or_default(),
            ),
            None => self.matches_in(Some(b""), relative),
        }
    }

    /// [`Self::matches`] for the item `name` in the directory at `dir`
    /// (its path below the backed-up path; `Some(b"")` directly below it),
    /// or for a backed-up item itself (`None`: only name patterns apply).
    /// Builds a path only when a path pattern exists.
    pub(crate) fn matches_in(&self, dir: Option<&[u8]>, name: &[u8]) -> bool {
        fn as_path(bytes: &[u8]) -> &Path {
            Path::new(OsStr::from_bytes(bytes))
        }
        if !self.extensions.is_empty()
            && let Some(dot) = name.iter().rposition(|&b| b == b'.')
            && let Some(packed) = pack_extension(name.get(dot + 1..).unwrap_or_default())
            && self.extensions.binary_search(&packed).is_ok()
        {
            return true;
        }
        if self.literals.iter().any(|l| l.eq_ignore_ascii_case(name)) {
            return true;
        }
        let name = lower(name);
        if !self.names.is_empty() && self.names.is_match(as_path(&name)) {
            return true;
        }
        match dir {
            Some(dir) if !self.paths.is_empty() => {
                let mut path = Vec::with_capacity(dir.len() + 1 + name.len());
                if !dir.is_empty() {
                    path.extend_from_slice(dir);
                    path.push(b'/');
                }
                path.extend_from_slice(&name);
                path.make_ascii_lowercase();
                self.paths.is_match(as_path(&path))
            }
            _ => false,
        }
    }
}

/// An extension of 1 to 8 bytes, lower-cased, as one integer (0 bytes pad
/// it: a NUL is never in a name).
fn pack_extension(ext: &[u8]) -> Option<u64> {
    if ext.is_empty() || ext.len() > 8 {
        return None;
    }
    let mut bytes = [0u8; 8];
    for (slot, b) in bytes.iter_mut().zip(ext) {
        *slot = b.to_ascii_lowercase();
    }
    Some(u64::from_be_bytes(bytes))
}

/// `bytes` with ASCII upper case lowered, copied only when there is some.
fn lower(bytes: &[u8]) -> Cow<'_, [u8]> {
    if bytes.iter().any(u8::is_ascii_uppercase) {
        Cow::Owned(bytes.to_ascii_lowercase())
    } else {
        Cow::Borrowed(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(patterns: &[&str]) -> PathRules {
        PathRules::new(&patterns.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>())
            .expect("valid patterns")
    }

    #[test]
    fn names_match_at_any_depth_and_paths_from_the_top() {
        let r = rules(&[
            "*.jpg",
            "media",
            "chat/cache/**",
            "/top.db",
            "x?.png",
            "*.tar.*",
        ]);
        assert!(r.matches(b"a.jpg"));
        assert!(r.matches(b"x/y/IMG_1.JPG"), "case is ignored");
        assert!(!r.matches(b"x/y/a.jpg.part"));
        assert!(r.matches(b"deep/media"));
        assert!(!r.matches(b"deep/media.txt"));
        assert!(r.matches(b"chat/cache/a/b"));
        assert!(
            !r.matches(b"old/chat/cache/a"),
            "a path pattern is anchored"
        );
        assert!(r.matches(b"top.db"));
        assert!(!r.matches(b"x/top.db"));
        assert!(!r.matches(b"jpg"));
        assert!(
            !r.matches(b".jpg.x") && r.matches(b".jpg"),
            "a dot file is its extension"
        );
        assert!(r.matches(b"d/XA.PNG") && !r.matches(b"d/xab.png"));
        assert!(r.matches(b"a.tar.gz") && !r.matches(b"a.tar"));
        // Extensions longer than the packed form go through the glob.
        // Regression: `*.tar.gz` went to the extension lookup, where a name
        // is looked up by `gz`: it never matched.
        let two = rules(&["*.tar.gz", "*.key.pem"]);
        assert!(two.matches(b"x/a.tar.gz") && two.matches(b"server.KEY.pem"));
        assert!(!two.matches(b"a.gz") && !two.matches(b"a.pem"));
        let long = rules(&["*.extension9", "*.jpg"]);
        assert!(long.matches(b"a.EXTENSION9") && !long.matches(b"a.extension"));
        assert!(long.matches(b"x.Jpg") && !long.matches(b"x.jpgx"));
        assert!(rules(&[]).is_empty() && !rules(&[]).matches(b"a.jpg"));
    }

    #[test]
    fn a_star_does_not_cross_directories_in_a_path_pattern() {
        let r = rules(&["a/*.tmp"]);
        assert!(r.matches(b"a/x.tmp"));
        assert!(!r.matches(b"a/b/x.tmp"));
    }

    #[test]
    fn an_invalid_pattern_is_named() {
        let err = PathRules::new(&["[".to_owned()]).unwrap_err();
        assert!(err.to_string().contains("\"[\""), "{err}");
    }
}
