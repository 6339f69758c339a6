//! Index compaction without a prune: merges every index file into a few,
//! so that opening a repository after years of daily backups reads a
//! bounded number of files. A backup runs it when there are more than
//! [`MAX_INDEX_FILES`]; it deletes no pack.
//!
//! It is a prune that condemns nothing (docs/format.md, "Sharing a
//! repository"): it takes a prune's session (so it never runs beside a
//! prune, whose superseded files it would copy), writes the merged files,
//! then a condemnation record naming only the files they supersede, then
//! deletes those files and the record. Deleting index files whose entries
//! another file holds is safe beside backups and readers: a reader that
//! listed a file now gone lists again and finds the merged one.

use std::collections::HashSet;

use cairn_crypto::PackId;
use cairn_index::Index;
use cairn_meta::SessionKind;
use cairn_store::Namespace;

use crate::blobs::delete_object;
use crate::error::{Error, Result};
use crate::maintenance::prune::{MAX_INDEX_FILES, split_index};
use crate::maintenance::sessions::{Session, others};
use crate::repo::Repository;

/// What [`Repository::compact_index`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactReport {
    /// Index files merged (and deleted).
    pub n_index_files_merged: usize,
    /// Index files written in their place.
    pub n_index_files_written: usize,
    /// Why nothing was done, when nothing was.
    pub skipped: Option<String>,
}

impl Repository {
    /// A prune's session for a maintenance writer that must not run beside
    /// a prune (compaction, repair); `Err` says which prune is running (its
    /// own marker is gone again).
    pub(super) fn maintenance_session(&self) -> Result<std::result::Result<Session, String>> {
        let key = self.keys().metadata.clone();
        let session = Session::begin(
            self.store().clone(),
            key.clone(),
            self.config().format,
            SessionKind::Prune,
        )?;
        let own = session.name().unwrap_or_default();
        if let Some(prune) = others(&**self.store(), &key, &own)?.prune {
            session.end()?;
            return Ok(Err(format!("a prune is running (sessions/{prune})")));
        }
        Ok(Ok(session))
    }

    /// Merges the index files into as few as the format allows when there
    /// are more than 32 (see the module docs). Does nothing while a prune
    /// runs or an index file cannot be read (prune and `check` deal with
    /// those), and says why.
    pub fn compact_index(&self) -> Result<CompactReport> {
        let mut report = CompactReport::default();
        if self.blobs().index_files().len() <= MAX_INDEX_FILES {
            report.skipped = Some("few index files: nothing to merge".into());
            return Ok(report);
        }
        // The session first, then the view: what a prune did before the
        // marker is seen below; a prune after it sees the marker and stops.
        let session = match self.maintenance_session()? {
            Ok(session) => session,
            Err(why) => {
                report.skipped = Some(why);
                return Ok(report);
            }
        };
        self.blobs().load_new_index_files()?;
        self.blobs().load_condemned()?;
        if let Some(bad) = self.blobs().unreadable_index_files().first() {
            report.skipped = Some(format!("{bad}; run `check`"));
            session.end()?;
            return Ok(report);
        }
        let superseded_before: HashSet<String> = self.blobs().index_files_in_records();
        let listed: HashSet<String> = self.store().list(Namespace::Index)?.into_iter().collect();
        let mut files: Vec<String> = self
            .blobs()
            .index_files()
            .into_keys()
            .filter(|name| !superseded_before.contains(name) && listed.contains(name))
            .collect();
        if files.len() <= MAX_INDEX_FILES {
            report.skipped = Some(format!("{} index files: nothing to merge", files.len()));
            session.end()?;
            return Ok(report);
        }
        files.sort();
        // Entries come from the files themselves (the view may have
        // forgotten some), and only for packs that are still there.
        let present: HashSet<String> = self.store().list(Namespace::Packs)?.into_iter().collect();
        let mut merged = Index::new();
        let mut names = Vec::new();
        for name in files {
            let segment = match self.reread_index_file(&name) {
                Ok(segment) => segment,
                Err(Error::PruneUnsafe(why)) => {
                    report.skipped = Some(why);
                    session.end()?;
                    return Ok(report);
                }
                Err(e) => return Err(e),
            };
            for location in segment.iter() {
                if present.contains(&location.pack.to_hex()) {
                    merged.insert(location);
                }
            }
            names.push(name);
        }
        for part in split_index(&merged) {
            let (name, _) = self.put_index_part(&part)?;
            self.blobs()
                .register_index_file(name, part.packs().to_vec());
            report.n_index_files_written += 1;
        }
        let superseded = names.iter().filter_map(|n| PackId::from_hex(n)).collect();
        let record_name = self.put_condemnation(Vec::new(), superseded)?;
        for name in &names {
            delete_object(&**self.store(), Namespace::Index, name)?;
        }
        delete_object(&**self.store(), Namespace::Condemned, &record_name)?;
        self.blobs().forget_deleted(&names, &[]);
        report.n_index_files_merged = names.len();
        session.end()?;
        Ok(report)
    }
}
