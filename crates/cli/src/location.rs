//! Where a repository is: a local directory, or `s3://bucket/prefix` with
//! the endpoint, region and credentials from the standard `AWS_*`
//! variables (`AWS_ENDPOINT_URL`, `AWS_REGION` or `AWS_DEFAULT_REGION`,
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`).
//! Nothing is read from the machine's instance metadata.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use cairn_store::{LocalStore, Namespace, ObjectName, Store};
use cairn_store_s3::{S3Config, S3Store};

/// A repository's location.
pub enum Location {
    Local(PathBuf),
    S3(S3Config),
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The platform's cache directory for cairn: `$XDG_CACHE_HOME/cairn`
/// (when absolute), else `~/Library/Caches/cairn` on macOS and
/// `~/.cache/cairn` elsewhere. `None` without a home directory.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(xdg) = env("XDG_CACHE_HOME").map(PathBuf::from)
        && xdg.is_absolute()
    {
        return Some(xdg.join("cairn"));
    }
    let home = PathBuf::from(env("HOME")?);
    if cfg!(target_os = "macos") {
        Some(home.join("Library/Caches/cairn"))
    } else {
        Some(home.join(".cache/cairn"))
    }
}

impl Location {
    /// The location `--repo` names.
    pub fn of(repo: &Path) -> Result<Self> {
        let text = repo.to_string_lossy();
        match S3Config::from_location(&text) {
            // `S3://…`, `s3:/…`, `gs://…`: a typo or a backend cairn lacks,
            // never a local directory of that name.
            None if text.to_ascii_lowercase().starts_with("s3:") || text.contains("://") => {
                anyhow::bail!(
                    "{text}: not a location cairn knows (a directory, or s3://bucket/prefix)"
                )
            }
            None => Ok(Location::Local(repo.to_path_buf())),
            Some(Err(e)) => anyhow::bail!("{e}"),
            Some(Ok(mut config)) => {
                config.endpoint = env("AWS_ENDPOINT_URL");
                config.region = env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION"));
                config.access_key_id = env("AWS_ACCESS_KEY_ID");
                config.secret_access_key = env("AWS_SECRET_ACCESS_KEY");
                config.session_token = env("AWS_SESSION_TOKEN");
                if config.endpoint.is_some() && config.region.is_none() {
                    anyhow::bail!("{text}: a custom endpoint needs a region (set AWS_REGION)");
                }
                Ok(Location::S3(config))
            }
        }
    }

    /// How messages name it.
    pub fn describe(&self) -> String {
        match self {
            Location::Local(path) => path.display().to_string(),
            Location::S3(c) if c.prefix.is_empty() => format!("s3://{}", c.bucket),
            Location::S3(c) => format!("s3://{}/{}", c.bucket, c.prefix),
        }
    }

    /// The store of an existing repository.
    pub fn open(&self) -> Result<Arc<dyn Store>> {
        Ok(match self {
            Location::Local(path) => Arc::new(
                LocalStore::open(path).with_context(|| format!("opening {}", path.display()))?,
            ),
            Location::S3(config) => Arc::new(S3Store::new(config)?),
        })
    }

    /// The store for a new repository: a directory is made, or a prefix
    /// checked empty (and the server checked to refuse overwrites).
    pub fn create(&self) -> Result<Arc<dyn Store>> {
        Ok(match self {
            Location::Local(path) => Arc::new(
                LocalStore::create(path).with_context(|| format!("creating {}", path.display()))?,
            ),
            Location::S3(config) => Arc::new(S3Store::create(config)?),
        })
    }

    /// Whether there is something at a local location already.
    pub fn exists(&self) -> bool {
        match self {
            Location::Local(path) => path.exists(),
            Location::S3(_) => false,
        }
    }

    /// Takes back a repository just made (it holds a config and a key slot
    /// only): its directory goes (made again empty if it `existed`), or its
    /// objects.
    pub fn take_back(&self, store: &dyn Store, existed: bool) {
        match self {
            Location::Local(path) => {
                let _ = std::fs::remove_dir_all(path);
                if existed {
                    let _ = std::fs::create_dir(path);
                }
            }
            Location::S3(_) => {
                for ns in [Namespace::Config, Namespace::Keys] {
                    for name in store.list(ns).unwrap_or_default() {
                        if let Ok(object) = ObjectName::new(ns, &name) {
                            let _ = store.delete(&object);
                        }
                    }
                }
            }
        }
    }
}
