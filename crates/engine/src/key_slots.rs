//! A repository's key slots: each wraps the one master secret under a
//! recovery key, so a key is added, removed or rotated by writing or
//! deleting a slot, and no pack, index file or snapshot is rewritten.
//!
//! Rules: a key a caller chose must look drawn at random
//! ([`RecoveryKey::check_chosen`]); a key that already opens the repository
//! is not added twice; the last slot is never removed, nor the slot this
//! repository was opened with (that is [`Repository::rotate_key`]: add the
//! new key's slot, then remove the old one, in that order, so a failure
//! between the two leaves both keys working, never none).

use cairn_crypto::{KeySlot, RecoveryKey};
use cairn_store::Namespace;

use crate::blobs::{delete_object, object};
use crate::error::{Error, Result, from_crypto};
use crate::repo::{Repository, random_name, unlock_slot};

/// One key slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySlotInfo {
    /// Its ID (the object's name under `keys/`).
    pub id: String,
    /// Whether it is the slot this repository was opened with.
    pub in_use: bool,
}

impl Repository {
    /// The key slots, sorted by ID. What unlocks each is not known (only
    /// the recovery key that opened this repository is at hand).
    pub fn key_slots(&self) -> Result<Vec<KeySlotInfo>> {
        let in_use = self.slot_in_use();
        Ok(self
            .store()
            .list(Namespace::Keys)?
            .into_iter()
            .map(|id| KeySlotInfo {
                in_use: id == in_use,
                id,
            })
            .collect())
    }

    /// Adds a slot unlocked by `new_key` (which must look drawn at random
    /// and not open the repository already); returns its ID. Nothing else
    /// is written.
    pub fn add_key(&self, new_key: &RecoveryKey) -> Result<String> {
        new_key
            .check_chosen()
            .map_err(from_crypto("new recovery key"))?;
        for id in self.store().list(Namespace::Keys)? {
            let opens = match unlock_slot(&**self.store(), &id, new_key) {
                Ok(unlocked) => unlocked.is_ok(),
                // Removed meanwhile: it opens nothing.
                Err(Error::Store(cairn_store::Error::NotFound(_))) => false,
                Err(e) => return Err(e),
            };
            if opens {
                return Err(Error::InvalidInput(format!(
                    "this key already opens the repository (key slot {id})"
                )));
            }
        }
        let slot = KeySlot::wrap(new_key, self.master()).map_err(from_crypto("key slot"))?;
        let id = random_name()?;
        self.store()
            .put(&object(Namespace::Keys, &id)?, &slot.encode())?;
        Ok(id)
    }

    /// Removes a key slot by ID (a unique prefix will do). Refuses the last
    /// one, and the one this repository was opened with (see
    /// [`Repository::rotate_key`]).
    pub fn remove_key(&self, id: &str) -> Result<String> {
        let slots = self.store().list(Namespace::Keys)?;
        let id = unique_slot(&slots, id)?;
        if id == self.slot_in_use() {
            return Err(Error::InvalidInput(format!(
                "key slot {id} is the one this key opens: rotate it instead, so a new key \
                 works before the old one stops"
            )));
        }
        if slots.len() < 2 {
            return Err(Error::InvalidInput(
                "the last key slot cannot be removed".into(),
            ));
        }
        delete_object(&**self.store(), Namespace::Keys, &id)?;
        Ok(id)
    }

    /// Replaces the key this repository was opened with by `new_key`:
    /// adds the new slot, then removes the old one. Returns the new slot's
    /// ID. The old key opens nothing afterwards; no pack, index file or
    /// snapshot is rewritten (the master secret, and so every data key,
    /// stays: docs/crypto.md says what that means for a leaked key).
    pub fn rotate_key(&self, new_key: &RecoveryKey) -> Result<String> {
        let old = self.slot_in_use();
        let new = self.add_key(new_key)?;
        // From here the new key works; the old slot goes.
        *self.slot_in_use_lock() = new.clone();
        delete_object(&**self.store(), Namespace::Keys, &old).map_err(|e| {
            Error::RotationIncomplete {
                new_slot: new.clone(),
                old_slot: old.clone(),
                reason: e.to_string(),
            }
        })?;
        Ok(new)
    }
}

/// The one slot ID that `id` names (whole, or a unique prefix).
fn unique_slot(slots: &[String], id: &str) -> Result<String> {
    let id = id.to_ascii_lowercase();
    let mut matches = slots
        .iter()
        .filter(|s| !id.is_empty() && s.starts_with(&id));
    let first = matches
        .next()
        .ok_or_else(|| Error::InvalidInput(format!("no key slot {id}")))?;
    if matches.next().is_some() {
        return Err(Error::InvalidInput(format!(
            "key slot {id} is ambiguous: give more of its ID"
        )));
    }
    Ok(first.clone())
}
