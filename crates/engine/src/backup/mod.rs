//! Backup: choose a parent snapshot, walk a source through the sealing
//! pipeline, then commit by writing the snapshot file (the only commit point).

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use cairn_crypto::{BlobId, BlobKind, SnapshotId};
use cairn_meta::{Class, SessionKind, Snapshot, SnapshotSummary, Tree};
use cairn_store::Namespace;

use crate::backup::packer::PackerTotals;
use crate::backup::pipeline::BlobSink;
use crate::backup::read::{Claimed, FileQueue, JobSource, Reading};
use crate::backup::walk::{Walk, file_worker};
use crate::blobs::object;
use crate::cache::Kind;
use crate::deep::DEEP_STACK;
use crate::error::{Error, Result, from_meta};
use crate::lineage::NewestSeen;
use crate::maintenance::Session;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::rules::PathRules;
use crate::source::{Flags, FsSource, Source};

mod buffers;
mod packer;
mod upload;

pub(crate) use buffers::BufferPool;
pub(crate) use packer::Packer;
mod pipeline;
mod policy;
mod read;
mod walk;

pub use policy::RetentionReport;

pub(crate) use read::SMALL_FILE_MAX;

/// Readahead threads a source gets at most.
const MAX_READAHEAD_THREADS: usize = 8;

/// Backup passes at most under a quota (the first, and redos with less
/// media when the plan's bounds were not enough).
const MAX_QUOTA_PASSES: usize = 3;

/// Which earlier snapshot a backup compares files against.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Parent {
    /// The latest snapshot of the same host and the same paths, if any.
    #[default]
    Latest,
    /// None: read every file (`--force`).
    None,
    /// This snapshot.
    Snapshot(SnapshotId),
}

/// Options of [`Repository::backup`].
#[derive(Clone, Debug, Default)]
pub struct BackupOptions {
    /// Host name recorded in the snapshot (and used to pick the parent).
    pub host: String,
    /// Tags recorded in the snapshot.
    pub tags: Vec<String>,
    /// Snapshot time; `None` means now.
    pub time: Option<SystemTime>,
    /// Parent snapshot: files whose size, mtime, ctime and inode are unchanged
    /// since it reuse its chunk lists without being read.
    pub parent: Parent,
    /// Sealing threads; 0 means one per available core. The snapshot is the same
    /// whatever the number.
    pub threads: usize,
    /// Also report the totals of the paths (regular files and bytes) through
    /// [`Progress::scanned`], for an ETA. The metadata readahead, which runs
    /// ahead of the walk anyway, counts them; they come when it has seen the
    /// whole tree, if that is before the backup ends.
    pub scan_totals: bool,
    /// Do everything but write: read, chunk, seal and count what would be
    /// stored (`n_blobs_new`, `summary.bytes_new`, `summary.bytes_stored`)
    /// and what would be left out, and leave the repository untouched. A
    /// frontend on a metered network decides from it.
    pub dry_run: bool,
    /// Items to leave out (glob patterns relative to each top-level item;
    /// see [`PathRules`]): not looked at, not stored, not reported.
    pub exclude: Vec<String>,
}

/// Why an item was left out of a snapshot by rule (not by error).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeftOutReason {
    /// Its source flagged it (`ephemeral`, `view_once`): never opened.
    Flagged(Flags),
    /// Media older than the repository's media age.
    Age,
    /// Media the quota has no room for (the oldest go first).
    Quota,
}

impl std::fmt::Display for LeftOutReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeftOutReason::Flagged(flags) => write!(f, "flagged {}", flags.names().join("+")),
            LeftOutReason::Age => f.write_str("media older than the policy keeps"),
            LeftOutReason::Quota => f.write_str("media beyond the quota (oldest first)"),
        }
    }
}

impl LeftOutReason {
    /// A short name for machine-readable output: `flagged`, `age`, `quota`.
    pub fn kind(&self) -> &'static str {
        match self {
            LeftOutReason::Flagged(_) => "flagged",
            LeftOutReason::Age => "age",
            LeftOutReason::Quota => "quota",
        }
    }
}

/// An item a backup left out by rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeftOut {
    /// The item, as the source names it in messages.
    pub path: String,
    /// Its class.
    pub class: Class,
    /// Its size as the source described it (not read).
    pub size: u64,
    /// Why.
    pub reason: LeftOutReason,
}

/// What a backup did.
#[derive(Clone, Debug)]
pub struct BackupReport {
    /// The new snapshot (in a dry run, the ID it would have had: nothing
    /// was written).
    pub snapshot_id: SnapshotId,
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// The parent snapshot used, if any.
    pub parent: Option<SnapshotId>,
    /// Its totals (also stored in the snapshot).
    pub summary: SnapshotSummary,
    /// Files reused from the parent without reading.
    pub n_files_unchanged: u64,
    /// Entries left out of the snapshot (unreadable, vanished while walked,
    /// special files), each with a warning. Non-zero means the snapshot is
    /// not the whole of what was asked for.
    pub n_skipped: u64,
    /// Chunks of file content read.
    pub n_chunks: u64,
    /// Blobs (chunks and trees) new to the repository.
    pub n_blobs_new: u64,
    /// Pack files written.
    pub n_packs_written: u64,
    /// Items left out by rule (flags, and under a retention policy media
    /// too old or beyond the quota), each with the reason; they are not in
    /// the snapshot and were never opened.
    pub left_out: Vec<LeftOut>,
    /// Under a retention policy (not in a dry run): what the backup forgot
    /// and pruned after its commit, and the repository's size against its
    /// quota.
    pub retention: Option<RetentionReport>,
    /// The requests the backup sent to the store, by kind (retries and
    /// listing pages included), for stores that count them (object
    /// storage); `None` for the others.
    pub requests: Option<crate::Requests>,
    /// Entries skipped or stored with a caveat, with the reason.
    pub warnings: Vec<String>,
}

impl Repository {
    /// Backs up `paths` into a new snapshot. Each path becomes one entry of the
    /// snapshot's root, named by its last component.
    pub fn backup(
        &mut self,
        paths: &[PathBuf],
        options: &BackupOptions,
        progress: &dyn Progress,
    ) -> Result<BackupReport> {
        let exclude = exclude_rules(options)?;
        let source = FsSource::new(paths)?;
        self.backup_source(&source, exclude.as_ref(), options, progress)
    }

    /// Backs up the items of `source` into a new snapshot: each of its
    /// roots becomes one entry of the snapshot's root.
    pub fn backup_from<S: Source>(
        &mut self,
        source: &S,
        options: &BackupOptions,
        progress: &dyn Progress,
    ) -> Result<BackupReport> {
        let exclude = exclude_rules(options)?;
        self.backup_source(source, exclude.as_ref(), options, progress)
    }

    /// A backup, and under a retention policy what follows it: the plan of
    /// which media fit before, retention and the quota's check after (a
    /// pass that overshot the quota is redone with less media; the redo
    /// reads nothing: the pass before is its parent).
    fn backup_source<S: Source>(
        &mut self,
        source: &S,
        exclude: Option<&PathRules>,
        options: &BackupOptions,
        progress: &dyn Progress,
    ) -> Result<BackupReport> {
        let before = self.store().requests();
        let mut report = self.backup_with_policy(source, exclude, options, progress)?;
        report.requests = self
            .store()
            .requests()
            .zip(before)
            .map(|(after, before)| after.since(&before));
        Ok(report)
    }

    fn backup_with_policy<S: Source>(
        &mut self,
        source: &S,
        exclude: Option<&PathRules>,
        options: &BackupOptions,
        progress: &dyn Progress,
    ) -> Result<BackupReport> {
        let time = options.time.unwrap_or_else(SystemTime::now);
        let options = &BackupOptions {
            time: Some(time),
            ..options.clone()
        };
        let retention = self.config().retention;
        if !retention.is_active() {
            return self.backup_pass(source, exclude, None, options, progress);
        }
        let time_secs = time
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        // Pass 1: its plan fails before anything is written when what is
        // not media cannot fit; its errors are the backup's.
        let policy = policy::media_policy(self, source, exclude, time_secs, 0)?;
        let mut report = self.backup_pass(source, exclude, policy.as_ref(), options, progress)?;
        if options.dry_run {
            return Ok(report);
        }
        // Committed: from here on nothing fails the backup; what goes wrong
        // is a warning and the report says where the quota stands.
        let group = (options.host.clone(), source.paths());
        let mut retained = self.retain(&retention, &report.snapshot_id, &group, progress);
        let mut shrink = 0;
        let mut n_passes = 1;
        while retained.deferred.is_none() && n_passes < MAX_QUOTA_PASSES {
            let quota = retained.quota_bytes.unwrap_or(u64::MAX);
            let over = retained.repo_bytes.saturating_sub(quota);
            if over == 0 {
                break;
            }
            // The plan's bounds were not enough: leave out as much more
            // media, and a margin. The pass before is the parent (nothing
            // is read again) and goes once this one is committed; the redo
            // is a nanosecond newer, so every keep rule sees it as newest.
            shrink += over + quota / 100;
            n_passes += 1;
            let redo_options = BackupOptions {
                parent: Parent::Snapshot(report.snapshot_id),
                time: Some(time + std::time::Duration::from_nanos(n_passes as u64 - 1)),
                ..options.clone()
            };
            let redo =
                policy::media_policy(self, source, exclude, time_secs, shrink).and_then(|policy| {
                    self.backup_pass(source, exclude, policy.as_ref(), &redo_options, progress)
                });
            match redo {
                Ok(next) => {
                    let previous = report.snapshot_id;
                    report = next;
                    if let Err(e) = self.forget(&crate::maintenance::ForgetOptions {
                        what: crate::maintenance::ForgetWhat::Ids(vec![previous]),
                        dry_run: false,
                    }) {
                        warn(
                            &mut report,
                            progress,
                            format!("the pass before could not be forgotten: {e}"),
                        );
                    }
                    retained = self.retain(&retention, &report.snapshot_id, &group, progress);
                }
                Err(e) => {
                    warn(
                        &mut report,
                        progress,
                        format!(
                            "quota pass {n_passes} failed ({e}); the snapshot of the pass before stands"
                        ),
                    );
                    break;
                }
            }
        }
        retained.n_passes = n_passes;
        if !retained.within_quota() {
            let why = retained
                .deferred
                .as_ref()
                .map_or(String::new(), |why| format!(" ({why})"));
            warn(
                &mut report,
                progress,
                format!(
                    "the repository holds {} bytes, over its quota of {} bytes{why}",
                    retained.repo_bytes,
                    retained.quota_bytes.unwrap_or_default(),
                ),
            );
        }
        for w in self.take_warnings() {
            warn(&mut report, progress, w);
        }
        report.retention = Some(retained);
        Ok(report)
    }

    /// One backup: the walk, the commit, the report.
    fn backup_pass<S: Source>(
        &mut self,
        source: &S,
        exclude: Option<&PathRules>,
        policy: Option<&policy::MediaPolicy>,
        options: &BackupOptions,
        progress: &dyn Progress,
    ) -> Result<BackupReport> {
        let time = options.time.unwrap_or_else(SystemTime::now);
        let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
        let roots = source.roots()?;
        check_roots(&roots)?;
        let absolute_paths = source.paths();
        // Leftovers of interrupted puts (a crash mid-pack) go first; then a
        // listing (the open's, for the first backup) confirms the packs the
        // index names still exist, and headers are checked afresh.
        // A dry run writes nothing: no cleaning, no marker.
        let session = if options.dry_run {
            None
        } else {
            self.store().clean_interrupted_writes()?;
            // The session marker goes first: from here, a prune either sees
            // it and deletes nothing, or condemned its packs before, and
            // `prepare_backup` reads that (docs/format.md, "Sharing a
            // repository").
            Some(Session::begin(
                self.store().clone(),
                self.keys().metadata.clone(),
                self.config().format,
                SessionKind::Backup,
            )?)
        };
        let skipped = self.blobs().prepare_backup()?;
        // A condemnation record this backup cannot read names packs it
        // cannot avoid. Only a prune already past its look at the sessions
        // (before this backup's marker) could act on it now, and such a
        // prune is running: then wait for it. Otherwise every later prune
        // sees this backup's marker and deletes nothing meanwhile.
        if !skipped.is_empty()
            && let Some(session) = &session
            && let Some(prune) = crate::maintenance::others(
                &**self.store(),
                &self.keys().metadata,
                &session.name().unwrap_or_default(),
            )?
            .prune
        {
            return Err(Error::PruneRunning(prune));
        }
        self.note(skipped.iter().map(ToString::to_string));
        // Format 3: the history this backup continues (every listing also
        // checks that the server did not take the history back).
        let listed =
            if self.config().format >= cairn_meta::Format::V3 || options.parent == Parent::Latest {
                Some(self.snapshots()?)
            } else {
                None
            };
        let lineage = (self.config().format >= cairn_meta::Format::V3).then(|| {
            let served = listed.as_deref().and_then(NewestSeen::of);
            NewestSeen::next(served.max(self.watch().seen()))
        });
        let mut parent =
            self.choose_parent(&options.parent, &options.host, &absolute_paths, listed)?;
        let parent_root = match &parent {
            Some((id, snap)) => match self.load_tree(&snap.root_id()) {
                Ok(tree) => Some(tree),
                // A damaged parent costs the speed-up, never the backup.
                Err(e) if e.is_repository_damage() => {
                    self.note([format!(
                        "parent snapshot {} is unreadable ({e}); reading every file",
                        id.to_hex()
                    )]);
                    parent = None;
                    None
                }
                Err(e) => return Err(e),
            },
            None => None,
        };
        let n_threads = match options.threads {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };

        let repo: &Repository = self;
        let claimed = Claimed::default();
        // Without a parent every file is read: small files' contents are
        // read ahead too (by file workers' side only: see below).
        let read_contents = parent_root.is_none() && n_threads > 1;
        let (root_id, walked, new_index, totals) = std::thread::scope(|scope| {
            let pool = BufferPool::new();
            let packer = Packer::new(
                repo.store().clone(),
                repo.blobs().cache_handle(),
                repo.keys().metadata.clone(),
                repo.config(),
                Some(progress),
                pool.clone(),
            )
            .dry_run(options.dry_run);
            let sink = BlobSink::new(
                scope,
                packer,
                repo.keys().data.clone(),
                repo.keys().metadata.clone(),
                n_threads,
            );
            // File workers read several files at once: one per sealing
            // thread for any file, and as many again for small files only
            // (a small file's read waits on the disk, and a disk serves
            // several requests in flight faster than one; large files keep
            // the readers busy anyway, and their windows cost memory). They
            // exist only when sealing is threaded (they hand blobs to the
            // pipeline's threads). A deep queue lets the walk run ahead
            // rather than hand over one file at a time (a file job is small).
            let (queue, small_rx, large_rx) = FileQueue::<S::Entry>::new(64);
            let senders: Vec<_> = (0..n_threads * 2).map_while(|_| sink.sender()).collect();
            let files = (!senders.is_empty()).then_some(queue);
            for (i, blobs) in senders.into_iter().enumerate() {
                let jobs = if i < n_threads {
                    JobSource::Any {
                        small: small_rx.clone(),
                        large: large_rx.clone(),
                    }
                } else {
                    JobSource::Small(small_rx.clone())
                };
                let (pool, claimed) = (pool.clone(), &claimed);
                scope.spawn(move || {
                    let cx = Reading {
                        repo,
                        claimed,
                        progress,
                        pool: &pool,
                    };
                    file_worker(source, &cx, jobs, blobs);
                });
            }
            drop((small_rx, large_rx));
            // Metadata readahead alongside file workers; it also counts the
            // totals when asked. A one-thread backup gets one thread for the
            // totals, and no readahead otherwise.
            let totals = options.scan_totals.then_some(progress);
            let n_readahead = match (&files, options.scan_totals) {
                (Some(_), _) => source.readahead_threads().min(MAX_READAHEAD_THREADS),
                (None, true) => source.readahead_threads().min(1),
                (None, false) => 0,
            };
            for _ in 0..n_readahead {
                scope.spawn(move || source.readahead(read_contents, exclude, totals));
            }
            // The walk recurses once per directory level when it starts a
            // directory and again when it finishes one: it runs on its own
            // thread with a known stack, whatever the caller's (threads of
            // some platforms get 1 MiB or less).
            let (parent_root, claimed) = (&parent_root, &claimed);
            let walk_thread = std::thread::Builder::new()
                .name("cairn-walk".into())
                .stack_size(DEEP_STACK)
                .spawn_scoped(scope, move || {
                    let mut walk = Walk::new(
                        repo,
                        source,
                        (exclude, policy),
                        sink,
                        progress,
                        claimed,
                        files,
                        pool,
                    );
                    let walked = (|| {
                        let mut root = Tree::default();
                        for top in roots {
                            let parent_node = parent_root.as_ref().and_then(|t| t.find(&top.name));
                            // The top-level items must be readable: failing
                            // them is an error, not a warning.
                            root.nodes.extend(walk.top_level(top, parent_node)?);
                        }
                        root.sort();
                        walk.store_tree(
                            &root,
                            parent_root.as_ref().map(|t| (t, None)),
                            std::path::Path::new("the snapshot's root"),
                        )
                    })();
                    (walk.into_parts(), walked)
                });
            let joined = walk_thread.map(|thread| thread.join());
            source.stop_readahead();
            // Without a walk, the pipeline's senders went with it: its threads
            // end having written nothing (no blob reached them).
            let ((sink, outcome), walked) = match joined {
                Ok(Ok(done)) => done,
                Ok(Err(_)) => return Err(Error::PipelineStopped),
                Err(e) => return Err(Error::Thread(e)),
            };
            match walked {
                Ok(root_id) => {
                    let (new_index, totals) = sink.finish()?;
                    Ok((root_id, outcome, new_index, totals))
                }
                // The pipeline failed first: its error is the real cause.
                Err(Error::PipelineStopped) => match sink.finish() {
                    Err(cause) => Err(cause),
                    Ok(_) => Err(Error::PipelineStopped),
                },
                Err(e) => {
                    sink.abandon();
                    Err(e)
                }
            }
        })?;

        let mut summary = walked.summary;
        summary.bytes_new = totals.bytes_new;
        summary.bytes_stored = totals.bytes_stored;
        let mut snapshot = Snapshot {
            time_secs: i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX),
            time_nanos: since_epoch.subsec_nanos(),
            host: options.host.clone(),
            paths: absolute_paths,
            tags: options.tags.clone(),
            root: root_id,
            summary,
            lineage,
        };
        // The snapshot's own size counts as stored; its size barely depends on
        // the number, so seal once to measure, then seal the final version.
        let probe = snapshot
            .seal(&self.keys().metadata, self.config().format)
            .map_err(from_meta("snapshot"))?;
        snapshot.summary.bytes_stored += probe.len() as u64;
        let sealed = snapshot
            .seal(&self.keys().metadata, self.config().format)
            .map_err(from_meta("snapshot"))?;
        let snapshot_id = SnapshotId::of_bytes(&sealed);
        if let Some(session) = session {
            self.commit(session, &sealed, &snapshot_id, &new_index, &totals)?;
            if let Some(lineage) = lineage {
                self.watch().wrote(NewestSeen {
                    sequence: lineage.sequence,
                    snapshot: snapshot_id,
                });
            }
        }
        // What the repository noticed (skipped index or snapshot files,
        // distrusted packs) comes first, then what the walk skipped.
        let mut warnings = self.take_warnings();
        for w in &warnings {
            progress.warning(w);
        }
        warnings.extend(walked.warnings);
        Ok(BackupReport {
            snapshot_id,
            dry_run: options.dry_run,
            parent: parent.map(|(id, _)| id),
            summary: snapshot.summary,
            n_files_unchanged: walked.n_files_unchanged,
            n_skipped: walked.n_skipped,
            n_chunks: walked.n_chunks,
            n_blobs_new: totals.n_blobs_new,
            n_packs_written: totals.n_packs,
            left_out: walked.left_out,
            retention: None,
            requests: None,
            warnings,
        })
    }

    /// Writes the snapshot (the commit point) and what follows it: the
    /// lapse checks around the put, the end of the session, the view's
    /// update and the index merge.
    fn commit(
        &mut self,
        session: Session,
        sealed: &[u8],
        snapshot_id: &SnapshotId,
        new_index: &cairn_index::Index,
        totals: &PackerTotals,
    ) -> Result<()> {
        // A backup whose marker once went unrenewed past half the staleness
        // window (a suspended laptop or phone) may have been taken for dead
        // by a prune: it renews the marker, then makes sure that nothing it
        // relied on, its own new packs included, is condemned or gone.
        if session.lapsed() {
            session.renew()?;
            self.blobs().revalidate(new_index.packs())?;
            session.revalidated();
        }
        let snapshot_name = object(Namespace::Snapshots, &snapshot_id.to_hex())?;
        self.store().put(&snapshot_name, sealed)?;
        if let Some(cache) = self.blobs().cache() {
            cache.put(Kind::Snapshots, snapshot_name.name(), &[sealed]);
        }
        // The put itself stalled past the window: a prune may have judged
        // this session dead before the snapshot was there to see. Check
        // again; if something it needs is condemned or gone, take the
        // snapshot back (nothing is lost that a new backup does not redo).
        if session.lapsed() {
            let checked = session
                .renew()
                .and_then(|()| self.blobs().revalidate(new_index.packs()));
            match checked {
                Ok(()) => session.revalidated(),
                Err(e) => {
                    let taken_back = self.store().delete(&snapshot_name).or_else(|_| {
                        // Once more: the link that stalled may be back.
                        self.store().delete(&snapshot_name)
                    });
                    return Err(match taken_back {
                        Ok(()) => e,
                        Err(_) => Error::LapsedSnapshotLeft(snapshot_id.to_hex()),
                    });
                }
            }
        }
        // Committed: a marker left behind only delays prunes until it goes
        // stale, so failing to delete it fails nothing.
        if let Err(e) = session.end() {
            self.note([format!(
                "could not remove this backup's session marker: {e}"
            )]);
        }
        self.blobs().merge(new_index);
        for (name, packs) in &totals.index_files {
            self.blobs()
                .register_index_file(name.clone(), packs.clone());
        }
        // Every backup adds an index file: past a bound, merge them, so
        // opening stays cheap after years of daily backups. The snapshot is
        // committed; a failure here costs only the merge (skipped while a
        // prune runs or an index file is unreadable: the next backup tries
        // again).
        if self.blobs().index_files().len() > crate::maintenance::MAX_INDEX_FILES
            && let Err(e) = self.compact_index()
        {
            self.note([format!("index files not merged: {e}")]);
        }
        Ok(())
    }

    /// The parent `choice` names; `listed`, if given, is every readable
    /// snapshot, listed already.
    fn choose_parent(
        &self,
        choice: &Parent,
        host: &str,
        paths: &[String],
        listed: Option<Vec<(SnapshotId, Snapshot)>>,
    ) -> Result<Option<(SnapshotId, Snapshot)>> {
        match choice {
            Parent::None => Ok(None),
            Parent::Snapshot(id) => Ok(Some((*id, self.load_snapshot(id)?))),
            Parent::Latest => {
                let listed = match listed {
                    Some(listed) => listed,
                    None => self.snapshots()?,
                };
                Ok(listed
                    .into_iter()
                    .rev()
                    .find(|(_, s)| s.host == host && s.paths == paths))
            }
        }
    }
}

/// A warning after the walk: to the caller's progress and into the report.
fn warn(report: &mut BackupReport, progress: &dyn Progress, message: String) {
    progress.warning(&message);
    report.warnings.push(message);
}

/// The backup's excludes, compiled; `None` when there are none.
fn exclude_rules(options: &BackupOptions) -> Result<Option<PathRules>> {
    if options.exclude.is_empty() {
        return Ok(None);
    }
    PathRules::new(&options.exclude).map(Some)
}

/// Refuses a source whose top-level names are invalid or clash (the
/// snapshot's root could not hold them), or that has none.
fn check_roots<E>(roots: &[crate::source::Root<E>]) -> Result<()> {
    if roots.is_empty() {
        return Err(Error::InvalidInput("nothing to back up".into()));
    }
    let mut names: Vec<&[u8]> = roots.iter().map(|r| r.name.as_slice()).collect();
    names.sort_unstable();
    for pair in names.windows(2) {
        if let [a, b] = pair
            && a == b
        {
            return Err(Error::InvalidInput(format!(
                "two paths share the name {:?}",
                String::from_utf8_lossy(a)
            )));
        }
    }
    if let Some(bad) = names.iter().find(|n| !cairn_meta::is_valid_name(n)) {
        return Err(Error::InvalidInput(format!(
            "cannot back up an item named {:?}",
            String::from_utf8_lossy(bad)
        )));
    }
    Ok(())
}

/// Stores tree blobs (ID, plaintext) in new packs and an index file, and
/// adds them to the view: for writers other than a backup (repair).
pub(crate) fn store_trees(repo: &Repository, trees: Vec<(BlobId, Vec<u8>)>) -> Result<usize> {
    let n = trees.len();
    let mut packer = Packer::new(
        repo.store().clone(),
        repo.blobs().cache_handle(),
        repo.keys().metadata.clone(),
        repo.config(),
        None,
        BufferPool::new(),
    );
    let mut sealer = cairn_crypto::Sealer::new();
    for (id, bytes) in trees {
        let blob = pipeline::NewBlob {
            kind: BlobKind::Tree,
            id,
            buffer: cairn_crypto::SealBuffer::from_plaintext(&bytes),
            compress: true,
        };
        let sealed =
            pipeline::seal_blob(&mut sealer, &repo.keys().data, &repo.keys().metadata, blob)?;
        packer.add_sealed(sealed.kind, sealed.id, sealed.sealed, sealed.plain_len)?;
    }
    let (index, totals) = packer.finish()?;
    repo.blobs().merge(&index);
    for (name, packs) in &totals.index_files {
        repo.blobs()
            .register_index_file(name.clone(), packs.clone());
    }
    Ok(n)
}

/// Writes a snapshot whose root is `root`, bypassing the backup walk (and so
/// the validation a real backup gets), as a malicious writer could.
#[cfg(test)]
pub(crate) fn forge_snapshot(repo: &Repository, root: &Tree) -> SnapshotId {
    let bytes = root.encode(repo.config().format);
    let id = repo.keys().blob_ids.id_of(BlobKind::Tree, &bytes);
    store_trees(repo, vec![(id, bytes)]).expect("store the root");
    let snapshot = Snapshot {
        time_secs: 0,
        time_nanos: 0,
        host: String::new(),
        paths: Vec::new(),
        tags: Vec::new(),
        root: id,
        summary: SnapshotSummary::default(),
        lineage: None,
    };
    let sealed = snapshot
        .seal(&repo.keys().metadata, repo.config().format)
        .expect("seal");
    let snapshot_id = SnapshotId::of_bytes(&sealed);
    repo.store()
        .put(
            &object(Namespace::Snapshots, &snapshot_id.to_hex()).expect("name"),
            &sealed,
        )
        .expect("put");
    snapshot_id
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use cairn_store::{MemoryStore, Namespace, ObjectName, Store};

    use super::*;
    use crate::maintenance::FORCE_LAPSE;
    use crate::repo::InitOptions;

    /// Deletes the given packs when the backup writes its first pack: after
    /// every reuse was confirmed, as a prune that took a suspended backup
    /// for dead would.
    struct DeleteWhileAsleep {
        store: Arc<MemoryStore>,
        packs: Mutex<Vec<String>>,
    }

    impl Progress for DeleteWhileAsleep {
        fn stored(&self, _bytes: u64) {
            for name in std::mem::take(&mut *self.packs.lock().expect("lock")) {
                let object = ObjectName::new(Namespace::Packs, &name).expect("name");
                self.store.delete(&object).expect("delete");
            }
        }
    }

    fn setup() -> (
        tempfile::TempDir,
        Arc<MemoryStore>,
        Repository,
        BackupOptions,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("old.bin"), vec![7u8; 200_000]).expect("write");
        let store = Arc::new(MemoryStore::new());
        let (mut repo, _) = Repository::init(store.clone(), &InitOptions::default()).expect("init");
        let options = BackupOptions {
            threads: 1,
            parent: Parent::None,
            ..BackupOptions::default()
        };
        repo.backup(&[dir.path().to_path_buf()], &options, &crate::NoProgress)
            .expect("first backup");
        std::fs::write(dir.path().join("new.bin"), vec![9u8; 100_000]).expect("write");
        (dir, store, repo, options)
    }

    #[test]
    fn a_lapsed_backup_whose_reused_pack_went_commits_nothing() {
        let (dir, store, mut repo, options) = setup();
        let progress = DeleteWhileAsleep {
            store: store.clone(),
            packs: Mutex::new(store.list(Namespace::Packs).expect("list")),
        };
        FORCE_LAPSE.with(|f| f.set(true));
        let outcome = repo.backup(&[dir.path().to_path_buf()], &options, &progress);
        assert!(matches!(outcome, Err(Error::SessionLapsed)), "{outcome:?}");
        assert_eq!(store.list(Namespace::Snapshots).expect("list").len(), 1);
        assert!(store.list(Namespace::Sessions).expect("list").is_empty());
    }

    #[test]
    fn a_lapsed_backup_whose_packs_are_all_there_commits() {
        let (dir, store, mut repo, options) = setup();
        FORCE_LAPSE.with(|f| f.set(true));
        repo.backup(&[dir.path().to_path_buf()], &options, &crate::NoProgress)
            .expect("revalidated backup");
        assert_eq!(store.list(Namespace::Snapshots).expect("list").len(), 2);
    }
}
