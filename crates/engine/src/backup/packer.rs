//! Fills packs with new blobs during a backup, writes each pack when it reaches
//! the target size (through the uploader: several at once on a store with
//! latency), and at the end writes the index file of everything added.

use std::sync::Arc;

use cairn_crypto::{BlobId, SealKey, SealedBlob};
use cairn_index::{BlobLocation, Index};
use cairn_pack::{BlobKind, PackWriter};
use cairn_store::Store;

use crate::backup::buffers::BufferPool;
use crate::backup::upload::{Upload, Uploader};
use crate::blobs::put_index_file;
use crate::cache::Cache;
use crate::error::{Error, Result};
use crate::progress::Progress;

/// Packs written between two index files: a backup that fails (a crash, a
/// link that goes down) leaves its packs named by index files up to the
/// last such checkpoint, and the next backup deduplicates against them
/// instead of uploading them again. At 16 MiB packs that is at most
/// 512 MiB to redo, for one more index file per 512 MiB.
const CHECKPOINT_PACKS: usize = 32;

/// Counters of what the packer wrote.
#[derive(Clone, Debug, Default)]
pub(crate) struct PackerTotals {
    /// The index files written, with the packs each names.
    pub index_files: Vec<(String, Vec<cairn_crypto::PackId>)>,
    pub n_blobs_new: u64,
    pub bytes_new: u64,
    pub bytes_stored: u64,
    pub n_packs: u64,
}

pub(crate) struct Packer<'p> {
    progress: Option<&'p dyn Progress>,
    /// Count what would be written, write nothing (`backup --dry-run`).
    dry_run: bool,
    pool: BufferPool,
    store: Arc<dyn Store>,
    cache: Option<Arc<Cache>>,
    uploader: Uploader,
    metadata_key: SealKey,
    target: usize,
    /// The repository's format: from 3 on, packs and index files are
    /// padded and a pack's header place is sealed (pack version 2).
    format: cairn_meta::Format,
    data: PackWriter,
    tree: PackWriter,
    /// Blobs in packs written by this backup and not yet named by an index file.
    pending: Index,
    /// Blobs of this backup already named by an index file.
    indexed: Index,
    /// Packs written since the last index file.
    packs_unindexed: usize,
    pub totals: PackerTotals,
}

impl<'p> Packer<'p> {
    pub fn new(
        store: Arc<dyn Store>,
        cache: Option<Arc<Cache>>,
        metadata_key: SealKey,
        config: &cairn_meta::RepoConfig,
        progress: Option<&'p dyn Progress>,
        pool: BufferPool,
    ) -> Self {
        let target = config.pack_target_size;
        Self {
            progress,
            dry_run: false,
            uploader: Uploader::new(store.clone(), cache.clone(), pool.clone(), target as usize),
            pool,
            store,
            cache,
            metadata_key,
            target: target as usize,
            format: config.format,
            data: PackWriter::new(BlobKind::Data),
            tree: PackWriter::new(BlobKind::Tree),
            pending: Index::new(),
            indexed: Index::new(),
            packs_unindexed: 0,
            totals: PackerTotals::default(),
        }
    }

    /// Makes this packer count what it would write and write nothing.
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// Adds a sealed blob. The caller has decided it is new (the walk keeps the
    /// set of blobs claimed by this backup).
    pub fn add_sealed(
        &mut self,
        kind: BlobKind,
        id: BlobId,
        sealed: SealedBlob,
        plain_len: usize,
    ) -> Result<()> {
        let writer = match kind {
            BlobKind::Data => &mut self.data,
            BlobKind::Tree => &mut self.tree,
        };
        writer
            .add(id, sealed, plain_len)
            .map_err(|_| Error::InvalidInput("blob too large for a pack".into()))?;
        self.totals.n_blobs_new += 1;
        self.totals.bytes_new += plain_len as u64;
        if let Some(progress) = self.progress {
            progress.new_data(plain_len as u64);
        }
        if writer.len() >= self.target || writer.is_full() {
            self.flush(kind)?;
        }
        Ok(())
    }

    /// Writes the open pack of `kind`, if it holds anything.
    fn flush(&mut self, kind: BlobKind) -> Result<()> {
        let writer = match kind {
            BlobKind::Data => &mut self.data,
            BlobKind::Tree => &mut self.tree,
        };
        let writer = std::mem::replace(writer, PackWriter::new(kind));
        if writer.is_empty() {
            return Ok(());
        }
        let finished = if self.format >= cairn_meta::Format::V3 {
            writer.finish_padded(&self.metadata_key)
        } else {
            writer.finish(&self.metadata_key)
        };
        let pack = finished.map_err(|_| Error::InvalidInput("pack too large".into()))?;
        let pack_len = pack.len() as u64;
        self.totals.bytes_stored += pack_len;
        self.totals.n_packs += 1;
        if let Some(progress) = self.progress {
            progress.stored(pack_len);
        }
        // A dry run writes nothing and names no blob: nothing it counted
        // exists. The sealed blobs' buffers go back to the readers.
        if self.dry_run {
            for part in pack.parts {
                self.pool.give(part);
            }
            return Ok(());
        }
        self.uploader.send(Upload {
            id: pack.id,
            kind,
            parts: pack.parts,
        })?;
        for entry in pack.entries {
            self.pending.insert(BlobLocation {
                pack: pack.id,
                entry,
            });
        }
        self.packs_unindexed += 1;
        // An index file holds at most MAX_SEGMENT_ENTRIES blobs (a bound
        // readers rely on); a pack holds at most as many, so writing when a
        // pack could overflow the pending segment keeps every file in bounds.
        if self.pending.len() + cairn_pack::MAX_PACK_ENTRIES > cairn_index::MAX_SEGMENT_ENTRIES
            || self.packs_unindexed >= CHECKPOINT_PACKS
        {
            self.write_index_file()?;
        }
        Ok(())
    }

    /// Writes one index file naming the pending blobs.
    fn write_index_file(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        // The packs it names are written first.
        self.uploader.wait()?;
        let (name, len) = put_index_file(
            &*self.store,
            self.cache.as_deref(),
            &self.metadata_key,
            self.format,
            &self.pending,
        )?;
        self.totals
            .index_files
            .push((name, self.pending.packs().to_vec()));
        self.totals.bytes_stored += len;
        if let Some(progress) = self.progress {
            progress.stored(len);
        }
        self.indexed.merge(&std::mem::take(&mut self.pending));
        self.packs_unindexed = 0;
        Ok(())
    }

    /// Writes the open packs and then the index file naming their blobs.
    /// Returns the new index entries (to merge into the repository's index).
    pub fn finish(mut self) -> Result<(Index, PackerTotals)> {
        self.flush(BlobKind::Data)?;
        self.flush(BlobKind::Tree)?;
        self.uploader.wait()?;
        self.write_index_file()?;
        Ok((self.indexed, self.totals))
    }
}
