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
use cairn_meta::{Condemnation, SessionKind};
use cairn_store::Namespace;

use crate::blobs::{object, put_index_file};
use crate::error::{Error, Result, from_meta};
use crate::maintenance::prune::{MAX_INDEX_FILES, now_secs, split_index};
use crate::maintenance::sessions::{Session, list_sessions};
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
    /// Merges the index files into as few as the format allows when there
    /// are more than 32 (see the module docs). Does nothing while a prune
    /// runs or an index file cannot be read (prune and `check` deal with
    /// those), and says why.
    pub fn compact_index(&self) -> Result<CompactReport> {
        let mut report = CompactReport::default();
        let key = self.keys().metadata.clone();
        if self.blobs().index_files().len() <= MAX_INDEX_FILES {
            report.skipped = Some("few index files: nothing to merge".into());
            return Ok(report);
        }
        // The session first, then the view: what a prune did before the
        // marker is seen below; a prune after it sees the marker and stops.
        let session = Session::begin(self.store().clone(), key.clone(), SessionKind::Prune)?;
        let own = session.name().unwrap_or_default();
        let now = now_secs();
        for found in list_sessions(&**self.store(), &key)? {
            let is_prune = found
                .marker
                .as_ref()
                .is_some_and(|m| m.kind == SessionKind::Prune);
            if found.name != own && is_prune && found.is_live(now) {
                report.skipped = Some(format!("a prune is running (sessions/{})", found.name));
                session.end()?;
                return Ok(report);
            }
        }
        self.blobs().load_new_index_files()?;
        self.blobs().load_condemned()?;
        if let Some(bad) = self.blobs().unreadable_index_files().first() {
            report.skipped = Some(format!("{bad}; run `check`"));
            session.end()?;
            return Ok(report);
        }
        let superseded_before: HashSet<String> = self
            .blobs()
            .condemnations()
            .values()
            .flat_map(|r| r.superseded_index_files.iter().map(PackId::to_hex))
            .collect();
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
            let (name, _) = put_index_file(&**self.store(), &key, &part)?;
            self.blobs()
                .register_index_file(name, part.packs().to_vec());
            report.n_index_files_written += 1;
        }
        let record = Condemnation {
            time_secs: now_secs(),
            packs: Vec::new(),
            superseded_index_files: names.iter().filter_map(|n| PackId::from_hex(n)).collect(),
        };
        let sealed = record
            .seal(&key)
            .map_err(from_meta("condemnation record"))?;
        let record_name = PackId::of_bytes(&sealed).to_hex();
        match self
            .store()
            .put(&object(Namespace::Condemned, &record_name)?, &sealed)
        {
            Ok(()) | Err(cairn_store::Error::AlreadyExists(_)) => {}
            Err(e) => return Err(e.into()),
        }
        for name in &names {
            match self.store().delete(&object(Namespace::Index, name)?) {
                Ok(()) | Err(cairn_store::Error::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        match self
            .store()
            .delete(&object(Namespace::Condemned, &record_name)?)
        {
            Ok(()) | Err(cairn_store::Error::NotFound(_)) => {}
            Err(e) => return Err(Error::from(e)),
        }
        self.blobs().forget_deleted(&names, &[]);
        report.n_index_files_merged = names.len();
        session.end()?;
        Ok(report)
    }
}
