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

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::error::{Error, Result};

/// Compiled path rules.
#[derive(Clone, Debug)]
pub struct PathRules {
    /// Patterns without `/`, matched against a name.
    names: GlobSet,
    /// Patterns with `/`, matched against a relative path.
    paths: GlobSet,
}

impl PathRules {
    /// Compiles `patterns`; an invalid one is an [`Error::InvalidInput`]
    /// naming it.
    pub fn new(patterns: &[String]) -> Result<Self> {
        let (mut names, mut paths) = (GlobSetBuilder::new(), GlobSetBuilder::new());
        for pattern in patterns {
            // A trailing `/` says nothing more (matches cover what is below);
            // any other `/` anchors the pattern below the backed-up path.
            let trimmed = pattern.trim_end_matches('/');
            let is_path = trimmed.contains('/');
            let glob = GlobBuilder::new(trimmed.strip_prefix('/').unwrap_or(trimmed))
                .case_insensitive(true)
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
        Ok(Self {
            names: built(names)?,
            paths: built(paths)?,
        })
    }

    /// Whether there is no rule at all (nothing ever matches).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty() && self.paths.is_empty()
    }

    /// Whether the item at `relative` (its path below the backed-up path,
    /// `/`-separated, its name last) matches a rule itself. What is under a
    /// matching directory matches too: the walk carries that down.
    pub fn matches(&self, relative: &[u8]) -> bool {
        let name = relative.rsplit(|&b| b == b'/').next().unwrap_or(relative);
        (!self.names.is_empty() && self.names.is_match(Path::new(OsStr::from_bytes(name))))
            || (!self.paths.is_empty()
                && self.paths.is_match(Path::new(OsStr::from_bytes(relative))))
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
        let r = rules(&["*.jpg", "media", "chat/cache/**", "/top.db"]);
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
