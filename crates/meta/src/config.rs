//! The repository config: format version and the parameters that must never
//! change for the life of a repository (the chunking rules, above all). Stored
//! as `config/config` in a sealed envelope (see `docs/format.md`).

use cairn_chunker::{Algorithm, ChunkerParams};
use cairn_crypto::{SealKey, SealKind};
use serde::{Deserialize, Serialize};

use crate::{Error, Format, corrupt, envelope};

/// The config of a format-1 repository.
const MAGIC_V1: &[u8; 8] = b"CAIRNCFG";
/// The config of a format-2 repository (class rules and retention added).
/// The magic is outside the seal: what authenticates the format is that
/// each decoder takes exactly its own layout, every byte of it (a format-2
/// plaintext relabelled as format 1 has bytes left over: corrupt).
const MAGIC_V2: &[u8; 8] = b"CAIRNCF2";
/// The config of a format-3 repository (the chunker's cut rule added).
const MAGIC_V3: &[u8; 8] = b"CAIRNCF3";
const MAX_CLASS_RULES: usize = 256;
const MAX_CLASS_RULE_LEN: usize = 256;
/// The smallest quota a config may hold: below it not even a small chat's
/// messages and metadata fit.
pub const MIN_QUOTA: u64 = 1024 * 1024;
/// The longest media age a config may hold (about 100 years).
const MAX_MEDIA_AGE_DAYS: u32 = 36_600;
const MAX_KEEP: u32 = 100_000;
/// Default pack size target: 16 MiB keeps the number of objects of a 100 GB
/// history near 6,000 while a lost pack costs little.
pub const DEFAULT_PACK_TARGET: u32 = 16 * 1024 * 1024;
/// Smallest pack size target a config may hold.
pub const MIN_PACK_TARGET: u32 = 64 * 1024;
/// Largest pack size target a config may hold.
pub const MAX_PACK_TARGET: u32 = 1024 * 1024 * 1024;
/// Largest config file accepted (`validate` keeps a config within it).
pub const MAX_CONFIG_FILE_LEN: u64 = 64 * 1024;
const MAX_SUFFIXES: usize = 64;
const MAX_SUFFIX_LEN: usize = 64;

/// Which chunker each file gets. Two profiles: large chunks for media and
/// everything written once, small chunks for files edited in place (databases),
/// where a scattered 4 KiB page update must not cost a megabyte.
/// See `docs/benchmarks.md` for the measured trade-off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkingRules {
    /// The cut rule of both profiles (FastCDC in formats 1 and 2).
    pub algorithm: Algorithm,
    /// Profile for every file not matched below.
    pub default: ChunkerParams,
    /// Profile for files edited in place.
    pub in_place: ChunkerParams,
    /// Lower-case file-name suffixes that select `in_place`.
    pub in_place_suffixes: Vec<String>,
    /// Whether chunks of the in-place profile may be compressed. Off in new
    /// repositories: where an attacker's text and a secret share a small
    /// chunk (a database page), the compressed length would answer guesses
    /// of the secret, one per backup (a CRIME-style oracle). Formats 1 and
    /// 2 compress them.
    pub compress_in_place: bool,
}

impl Default for ChunkingRules {
    fn default() -> Self {
        Self {
            algorithm: Algorithm::ToeplitzAes,
            default: ChunkerParams::default(),
            in_place: ChunkerParams {
                min_size: 4 * 1024,
                avg_size: 16 * 1024,
                max_size: 64 * 1024,
                normalization: 1,
            },
            in_place_suffixes: [
                ".db",
                ".db-wal",
                ".sqlite",
                ".sqlite3",
                ".sqlite-wal",
                ".realm",
                ".ldb",
                ".mdb",
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
            compress_in_place: false,
        }
    }
}

impl ChunkingRules {
    /// Checks both profiles and the suffix list.
    pub fn validate(&self) -> Result<(), Error> {
        self.default
            .validate()
            .map_err(|e| Error::Invalid(format!("default chunker: {e}")))?;
        self.in_place
            .validate()
            .map_err(|e| Error::Invalid(format!("in-place chunker: {e}")))?;
        let bad_suffix =
            |s: &String| s.is_empty() || s.len() > MAX_SUFFIX_LEN || *s != s.to_lowercase();
        if self.in_place_suffixes.len() > MAX_SUFFIXES
            || self.in_place_suffixes.iter().any(bad_suffix)
        {
            return Err(Error::Invalid(format!(
                "in-place suffixes: at most {MAX_SUFFIXES}, each 1 to {MAX_SUFFIX_LEN} lower-case bytes"
            )));
        }
        Ok(())
    }
}

/// Which items are media, when a source does not say: glob patterns over
/// paths inside the snapshot (the engine's `PathRules` gives their meaning:
/// a pattern without `/` matches a name at any depth, a match on a
/// directory covers everything under it, case is ignored).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassRules {
    /// Patterns whose matches are media.
    pub media: Vec<String>,
}

impl Default for ClassRules {
    /// Common image, video, audio and document extensions, and anything
    /// under a directory named `media` or `attachments`.
    fn default() -> Self {
        let extensions = [
            "jpg", "jpeg", "png", "gif", "webp", "heic", "heif", "avif", "bmp", "tif", "tiff",
            "mp4", "m4v", "mov", "3gp", "mkv", "webm", "avi", "mp3", "m4a", "aac", "ogg", "oga",
            "opus", "wav", "flac", "amr", "pdf", "doc", "docx", "xls", "xlsx", "ppt", "pptx",
            "odt", "ods", "odp", "zip",
        ];
        let mut media: Vec<String> = extensions.iter().map(|e| format!("*.{e}")).collect();
        media.extend(["media".to_owned(), "attachments".to_owned()]);
        Self { media }
    }
}

/// A named retention policy (`docs/format.md`, "Tiers").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    /// Messages forever, media of the last 45 days, 100 MB.
    Free,
    /// Everything, 100 GB.
    Paid,
}

impl Tier {
    /// The tier's name, as the CLI writes it.
    pub fn name(self) -> &'static str {
        match self {
            Tier::Free => "free",
            Tier::Paid => "paid",
        }
    }
}

/// How many snapshots retention keeps, restic's way (0 = that rule keeps
/// none; all zero = every snapshot is kept).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotKeep {
    /// The newest N.
    pub last: u32,
    /// The newest of each of the last N days.
    pub daily: u32,
    /// The newest of each of the last N weeks.
    pub weekly: u32,
    /// The newest of each of the last N months.
    pub monthly: u32,
}

impl SnapshotKeep {
    /// Whether no rule is set (every snapshot is kept).
    pub fn keeps_all(&self) -> bool {
        *self == Self::default()
    }
}

/// What a repository keeps, enforced by every backup under it: stored
/// bytes within `quota_bytes`, media no older than `media_max_age_days`,
/// snapshots by `snapshots`. The values are recorded resolved, so a later
/// change to a tier's defaults never changes an existing repository.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    /// The tier the values came from, if any.
    pub tier: Option<Tier>,
    /// Bound on the repository's stored bytes after each backup.
    pub quota_bytes: Option<u64>,
    /// Media whose own time is older than this many days are left out.
    pub media_max_age_days: Option<u32>,
    /// Which snapshots are kept.
    pub snapshots: SnapshotKeep,
}

impl Retention {
    /// A tier's policy: free keeps messages forever and media of the last
    /// 45 days within 100 MB, and only the latest snapshot (the quota is
    /// spent on content, not on history); paid keeps everything within
    /// 100 GB, with daily snapshots for a week, weekly ones for a month and
    /// monthly ones for half a year.
    pub fn for_tier(tier: Tier) -> Self {
        match tier {
            Tier::Free => Self {
                tier: Some(tier),
                quota_bytes: Some(100_000_000),
                media_max_age_days: Some(45),
                snapshots: SnapshotKeep {
                    last: 1,
                    ..SnapshotKeep::default()
                },
            },
            Tier::Paid => Self {
                tier: Some(tier),
                quota_bytes: Some(100_000_000_000),
                media_max_age_days: None,
                snapshots: SnapshotKeep {
                    last: 1,
                    daily: 7,
                    weekly: 4,
                    monthly: 6,
                },
            },
        }
    }

    /// Whether the policy asks for anything (a quota, an age or a snapshot
    /// rule).
    pub fn is_active(&self) -> bool {
        self.quota_bytes.is_some()
            || self.media_max_age_days.is_some()
            || !self.snapshots.keeps_all()
    }

    fn validate(&self) -> Result<(), Error> {
        if self.quota_bytes.is_some_and(|q| q < MIN_QUOTA) {
            return Err(Error::Invalid(format!(
                "a quota must be at least {} MiB",
                MIN_QUOTA >> 20
            )));
        }
        if self
            .media_max_age_days
            .is_some_and(|d| d == 0 || d > MAX_MEDIA_AGE_DAYS)
        {
            return Err(Error::Invalid(format!(
                "the media age must be 1 to {MAX_MEDIA_AGE_DAYS} days"
            )));
        }
        let k = self.snapshots;
        if [k.last, k.daily, k.weekly, k.monthly]
            .iter()
            .any(|&n| n > MAX_KEEP)
        {
            return Err(Error::Invalid(format!(
                "snapshot rules keep at most {MAX_KEEP} each"
            )));
        }
        Ok(())
    }
}

/// Parameters chosen at `init` and fixed afterwards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoConfig {
    /// The repository's format version.
    pub format: Format,
    /// Random repository identity.
    pub repo_id: [u8; 16],
    /// Chunking profiles and the rule choosing between them.
    pub chunking: ChunkingRules,
    /// Packs are closed once their blobs reach this many bytes.
    pub pack_target_size: u32,
    /// Which items are media (empty in format 1, which has no classes).
    pub classes: ClassRules,
    /// What the repository keeps (none in format 1).
    pub retention: Retention,
}

#[derive(Serialize, Deserialize)]
struct WireParams {
    min: u32,
    avg: u32,
    max: u32,
    normalization: u8,
}

impl From<ChunkerParams> for WireParams {
    fn from(p: ChunkerParams) -> Self {
        Self {
            min: p.min_size,
            avg: p.avg_size,
            max: p.max_size,
            normalization: p.normalization,
        }
    }
}

impl From<WireParams> for ChunkerParams {
    fn from(w: WireParams) -> Self {
        Self {
            min_size: w.min,
            avg_size: w.avg,
            max_size: w.max,
            normalization: w.normalization,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Wire {
    repo_id: [u8; 16],
    default_chunker: WireParams,
    in_place_chunker: WireParams,
    in_place_suffixes: Vec<String>,
    pack_target_size: u32,
}

#[derive(Serialize, Deserialize)]
struct WireKeep {
    last: u32,
    daily: u32,
    weekly: u32,
    monthly: u32,
}

/// Format 3: format 2's fields, then the cut rule.
#[derive(Serialize, Deserialize)]
struct WireV3 {
    v2: WireV2,
    /// 0 FastCDC, 1 toeplitz-aes.
    chunker: u8,
    compress_in_place: bool,
}

/// Format 2: format 1's fields, then the class rules and the retention.
#[derive(Serialize, Deserialize)]
struct WireV2 {
    base: Wire,
    media_rules: Vec<String>,
    /// 0 none, 1 free, 2 paid.
    tier: u8,
    quota_bytes: Option<u64>,
    media_max_age_days: Option<u32>,
    keep: WireKeep,
}

impl RepoConfig {
    /// Checks every parameter against the format's limits.
    pub fn validate(&self) -> Result<(), Error> {
        self.chunking.validate()?;
        if self.format < Format::V3
            && (self.chunking.algorithm != Algorithm::FastCdc || !self.chunking.compress_in_place)
        {
            return Err(Error::Invalid(format!(
                "a format-{} repository chunks with FastCDC and compresses every chunk",
                self.format.number()
            )));
        }
        if self.format == Format::V1
            && (!self.classes.media.is_empty() || self.retention != Retention::default())
        {
            return Err(Error::Invalid(
                "a format-1 repository has no classes or retention".into(),
            ));
        }
        let bad_rule =
            |r: &String| r.is_empty() || r.len() > MAX_CLASS_RULE_LEN || r.contains('\0');
        if self.classes.media.len() > MAX_CLASS_RULES || self.classes.media.iter().any(bad_rule) {
            return Err(Error::Invalid(format!(
                "media rules: at most {MAX_CLASS_RULES}, each 1 to {MAX_CLASS_RULE_LEN} bytes"
            )));
        }
        self.retention.validate()?;
        // Room for the envelope and the seal: a config that would not fit
        // the reader's bound would make a repository that never opens.
        if self.encode().len() as u64 + 64 > MAX_CONFIG_FILE_LEN {
            return Err(Error::Invalid(format!(
                "the config would exceed {} KiB: fewer or shorter media rules",
                MAX_CONFIG_FILE_LEN >> 10
            )));
        }
        if !(MIN_PACK_TARGET..=MAX_PACK_TARGET).contains(&self.pack_target_size) {
            return Err(Error::Invalid(format!(
                "pack target size must be {MIN_PACK_TARGET} to {MAX_PACK_TARGET} bytes"
            )));
        }
        Ok(())
    }

    /// Encodes and seals the config.
    pub fn seal(&self, key: &SealKey) -> Result<Vec<u8>, Error> {
        self.validate()?;
        let magic = match self.format {
            Format::V1 => MAGIC_V1,
            Format::V2 => MAGIC_V2,
            Format::V3 => MAGIC_V3,
        };
        let padded = self.format >= Format::V3;
        envelope::seal_file(key, SealKind::Config, magic, &self.encode(), padded)
    }

    /// A new repository's config: the current format, default chunking
    /// (toeplitz-aes),
    /// class rules and pack size, no retention.
    pub fn new(repo_id: [u8; 16]) -> Self {
        Self {
            format: Format::CURRENT,
            repo_id,
            chunking: ChunkingRules::default(),
            pack_target_size: DEFAULT_PACK_TARGET,
            classes: ClassRules::default(),
            retention: Retention::default(),
        }
    }

    /// The config's plaintext (postcard of its format's wire struct).
    pub fn encode(&self) -> Vec<u8> {
        let base = Wire {
            repo_id: self.repo_id,
            default_chunker: self.chunking.default.into(),
            in_place_chunker: self.chunking.in_place.into(),
            in_place_suffixes: self.chunking.in_place_suffixes.clone(),
            pack_target_size: self.pack_target_size,
        };
        // Serializing plain structs into a Vec cannot fail.
        match self.format {
            Format::V1 => postcard::to_stdvec(&base).unwrap_or_default(),
            Format::V2 => postcard::to_stdvec(&self.wire_v2(base)).unwrap_or_default(),
            Format::V3 => {
                let wire = WireV3 {
                    v2: self.wire_v2(base),
                    chunker: match self.chunking.algorithm {
                        Algorithm::FastCdc => 0,
                        Algorithm::ToeplitzAes => 1,
                    },
                    compress_in_place: self.chunking.compress_in_place,
                };
                postcard::to_stdvec(&wire).unwrap_or_default()
            }
        }
    }

    fn wire_v2(&self, base: Wire) -> WireV2 {
        let r = &self.retention;
        WireV2 {
            base,
            media_rules: self.classes.media.clone(),
            tier: match r.tier {
                None => 0,
                Some(Tier::Free) => 1,
                Some(Tier::Paid) => 2,
            },
            quota_bytes: r.quota_bytes,
            media_max_age_days: r.media_max_age_days,
            keep: WireKeep {
                last: r.snapshots.last,
                daily: r.snapshots.daily,
                weekly: r.snapshots.weekly,
                monthly: r.snapshots.monthly,
            },
        }
    }

    /// Opens and validates a sealed config of either format. Never panics.
    pub fn open(key: &SealKey, bytes: &[u8]) -> Result<Self, Error> {
        let format = match bytes.get(..8) {
            Some(m) if m == MAGIC_V1 => Format::V1,
            Some(m) if m == MAGIC_V2 => Format::V2,
            Some(m) if m == MAGIC_V3 => Format::V3,
            _ => return Err(corrupt("envelope")),
        };
        let magic = match format {
            Format::V1 => MAGIC_V1,
            Format::V2 => MAGIC_V2,
            Format::V3 => MAGIC_V3,
        };
        let plain = envelope::open_file(key, SealKind::Config, magic, bytes)?;
        Self::decode(&plain, format)
    }

    /// Decodes the config's plaintext of `format` and validates every
    /// parameter. Never panics.
    pub fn decode(plain: &[u8], format: Format) -> Result<Self, Error> {
        let (wire, algorithm, compress_in_place) = match format {
            Format::V1 => {
                let wire: Wire = match postcard::take_from_bytes(plain) {
                    Ok((wire, [])) => wire,
                    _ => return Err(corrupt("config")),
                };
                let config = Self {
                    format,
                    classes: ClassRules { media: Vec::new() },
                    retention: Retention::default(),
                    ..Self::from_base(wire, Algorithm::FastCdc, true)
                };
                config.validate().map_err(|_| corrupt("config"))?;
                return Ok(config);
            }
            Format::V2 => match postcard::take_from_bytes::<WireV2>(plain) {
                Ok((wire, [])) => (wire, Algorithm::FastCdc, true),
                _ => return Err(corrupt("config")),
            },
            Format::V3 => match postcard::take_from_bytes::<WireV3>(plain) {
                Ok((wire, [])) => {
                    let algorithm = match wire.chunker {
                        0 => Algorithm::FastCdc,
                        1 => Algorithm::ToeplitzAes,
                        _ => return Err(corrupt("config")),
                    };
                    (wire.v2, algorithm, wire.compress_in_place)
                }
                _ => return Err(corrupt("config")),
            },
        };
        let tier = match wire.tier {
            0 => None,
            1 => Some(Tier::Free),
            2 => Some(Tier::Paid),
            _ => return Err(corrupt("config")),
        };
        let retention = Retention {
            tier,
            quota_bytes: wire.quota_bytes,
            media_max_age_days: wire.media_max_age_days,
            snapshots: SnapshotKeep {
                last: wire.keep.last,
                daily: wire.keep.daily,
                weekly: wire.keep.weekly,
                monthly: wire.keep.monthly,
            },
        };
        let config = Self {
            format,
            classes: ClassRules {
                media: wire.media_rules,
            },
            retention,
            ..Self::from_base(wire.base, algorithm, compress_in_place)
        };
        config.validate().map_err(|_| corrupt("config"))?;
        Ok(config)
    }

    /// A config with format 1's fields from `base`, the rest defaults.
    fn from_base(base: Wire, algorithm: Algorithm, compress_in_place: bool) -> Self {
        Self {
            format: Format::V1,
            repo_id: base.repo_id,
            chunking: ChunkingRules {
                algorithm,
                default: base.default_chunker.into(),
                in_place: base.in_place_chunker.into(),
                in_place_suffixes: base.in_place_suffixes,
                compress_in_place,
            },
            pack_target_size: base.pack_target_size,
            classes: ClassRules::default(),
            retention: Retention::default(),
        }
    }
}
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    /// A new config in an older `format`: FastCDC, and no classes in format 1.
    fn older(format: Format, repo_id: [u8; 16]) -> RepoConfig {
        let mut config = RepoConfig::new(repo_id);
        config.format = format;
        config.chunking.algorithm = Algorithm::FastCdc;
        config.chunking.compress_in_place = true;
        if format == Format::V1 {
            config.classes = ClassRules { media: Vec::new() };
        }
        config
    }

    #[test]
    fn rules_are_validated() {
        let mut rules = ChunkingRules::default();
        rules.in_place_suffixes.push(".DB".into());
        assert!(rules.validate().is_err());
        let mut rules = ChunkingRules::default();
        rules.in_place.max_size = 1;
        assert!(rules.validate().is_err());
        assert!(ChunkingRules::default().validate().is_ok());
    }

    #[test]
    fn a_config_outside_the_limits_is_corrupt() {
        let config = older(Format::V1, [7; 16]);
        let mut wire: Wire = postcard::from_bytes(&config.encode()).unwrap();
        assert_eq!(
            RepoConfig::decode(&config.encode(), Format::V1).unwrap(),
            config
        );
        wire.pack_target_size = 1;
        let bytes = postcard::to_stdvec(&wire).unwrap();
        assert_eq!(
            RepoConfig::decode(&bytes, Format::V1),
            Err(Error::Corrupt { what: "config" })
        );
    }

    /// Format 2 round-trips its class rules and every tier; out-of-range
    /// retention values, an unknown tier and a format-1 config claiming a
    /// policy are refused.
    #[test]
    fn format_2_carries_classes_and_retention() {
        let keys =
            cairn_crypto::WorkingKeys::derive(&cairn_crypto::MasterSecret::generate().unwrap());
        for retention in [
            Retention::default(),
            Retention::for_tier(Tier::Free),
            Retention::for_tier(Tier::Paid),
            Retention {
                quota_bytes: Some(30 << 20),
                ..Retention::for_tier(Tier::Free)
            },
        ] {
            let config = RepoConfig {
                retention,
                ..older(Format::V2, [9; 16])
            };
            let sealed = config.seal(&keys.metadata).unwrap();
            assert_eq!(&sealed[..8], MAGIC_V2);
            assert_eq!(RepoConfig::open(&keys.metadata, &sealed).unwrap(), config);
        }
        let v1 = older(Format::V1, [1; 16]);
        let sealed = v1.seal(&keys.metadata).unwrap();
        assert_eq!(RepoConfig::open(&keys.metadata, &sealed).unwrap(), v1);
        let policy_in_v1 = RepoConfig {
            retention: Retention::for_tier(Tier::Free),
            ..v1.clone()
        };
        assert!(policy_in_v1.seal(&keys.metadata).is_err());
        for bad in [
            Retention {
                quota_bytes: Some(1000),
                ..Retention::default()
            },
            Retention {
                media_max_age_days: Some(0),
                ..Retention::default()
            },
        ] {
            let config = RepoConfig {
                retention: bad,
                ..RepoConfig::new([2; 16])
            };
            assert!(config.seal(&keys.metadata).is_err());
        }
        // Regression: the magic is outside the seal, and the format-1
        // decoder ignored trailing bytes: a hostile store relabelling a
        // format-2 config as format 1 erased its rules and policy.
        let v2 = RepoConfig {
            retention: Retention::for_tier(Tier::Free),
            ..older(Format::V2, [4; 16])
        };
        let mut relabelled = v2.seal(&keys.metadata).unwrap();
        relabelled[..8].copy_from_slice(MAGIC_V1);
        assert!(RepoConfig::open(&keys.metadata, &relabelled).is_err());
        assert!(RepoConfig::decode(&v2.encode(), Format::V1).is_err());
        let mut wire: WireV2 = postcard::from_bytes(&older(Format::V2, [3; 16]).encode()).unwrap();
        wire.tier = 3;
        let bytes = postcard::to_stdvec(&wire).unwrap();
        assert!(RepoConfig::decode(&bytes, Format::V2).is_err());
    }

    /// Format 3 records the cut rule: toeplitz-aes by default, FastCDC when
    /// chosen; an older format cannot claim the PRF rule, an unknown rule is
    /// corrupt, and a format-3 config relabelled as format 2 does not open.
    #[test]
    fn format_3_records_the_cut_rule() {
        let keys =
            cairn_crypto::WorkingKeys::derive(&cairn_crypto::MasterSecret::generate().unwrap());
        let new = RepoConfig::new([5; 16]);
        assert_eq!(new.format, Format::V3);
        assert_eq!(new.chunking.algorithm, Algorithm::ToeplitzAes);
        let mut fastcdc = RepoConfig::new([6; 16]);
        fastcdc.chunking.algorithm = Algorithm::FastCdc;
        for config in [&new, &fastcdc] {
            let sealed = config.seal(&keys.metadata).unwrap();
            assert_eq!(&sealed[..8], MAGIC_V3);
            assert_eq!(&RepoConfig::open(&keys.metadata, &sealed).unwrap(), config);
            let mut relabelled = sealed.clone();
            relabelled[..8].copy_from_slice(MAGIC_V2);
            assert!(RepoConfig::open(&keys.metadata, &relabelled).is_err());
        }
        for format in [Format::V1, Format::V2] {
            let mut config = older(format, [7; 16]);
            config.chunking.algorithm = Algorithm::ToeplitzAes;
            assert!(config.seal(&keys.metadata).is_err());
            let mut config = older(format, [7; 16]);
            config.chunking.compress_in_place = false;
            assert!(config.seal(&keys.metadata).is_err());
        }
        assert!(!new.chunking.compress_in_place);
        let mut compressing = RepoConfig::new([8; 16]);
        compressing.chunking.compress_in_place = true;
        let sealed = compressing.seal(&keys.metadata).unwrap();
        assert_eq!(
            RepoConfig::open(&keys.metadata, &sealed).unwrap(),
            compressing
        );
        let mut wire: WireV3 = postcard::from_bytes(&new.encode()).unwrap();
        wire.chunker = 2;
        let bytes = postcard::to_stdvec(&wire).unwrap();
        assert_eq!(
            RepoConfig::decode(&bytes, Format::V3),
            Err(Error::Corrupt { what: "config" })
        );
    }
}
