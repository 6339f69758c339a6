//! Recovery keys: format, parsing errors, and the wrong-key error at open.

use cairn::{Error, InitOptions, KeyProblem, RecoveryKey, Repository};
use cairn_store::{MemoryStore, Namespace, ObjectName, Store};
use std::sync::Arc;

use crate::support::*;

#[test]
fn init_generates_a_64_character_key_that_opens_the_repository() {
    let (store, _repo, key) = memory_repo();
    let plain = key.to_plain_string();
    assert_eq!(plain.len(), 64);
    assert!(
        plain
            .bytes()
            .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
    );
    let grouped = key.to_grouped_string();
    assert_eq!(grouped.split(' ').count(), 16);
    let typed = cairn::parse_recovery_key(&grouped.to_uppercase()).expect("parse");
    Repository::open(store, &typed).expect("open with the typed key");
}

#[test]
fn a_wrong_key_says_so() {
    let (store, _repo, _key) = memory_repo();
    let other = RecoveryKey::generate().expect("key");
    let err = Repository::open(store, &other).unwrap_err();
    assert!(matches!(err, Error::WrongKey), "{err}");
    assert_eq!(err.to_string(), "wrong recovery key");
    assert!(!err.is_integrity());
}

#[test]
fn malformed_keys_are_rejected_with_the_problem_named() {
    let short = cairn::parse_recovery_key(&"a".repeat(63)).unwrap_err();
    assert!(matches!(
        short,
        Error::MalformedKey(KeyProblem::WrongLength { found: 63 })
    ));
    assert!(
        short
            .to_string()
            .contains("expected 64 characters, found 63")
    );
    let long = cairn::parse_recovery_key(&"a".repeat(65)).unwrap_err();
    assert!(matches!(
        long,
        Error::MalformedKey(KeyProblem::WrongLength { found: 65 })
    ));
    let mut bad = "b".repeat(64);
    bad.replace_range(20..21, "_");
    let err = cairn::parse_recovery_key(&bad).unwrap_err();
    assert!(matches!(
        err,
        Error::MalformedKey(KeyProblem::BadCharacter { position: 21 })
    ));
    assert!(!err.to_string().contains("bbbb"), "the key is not echoed");
}

#[test]
fn init_refuses_an_existing_repository_and_open_an_empty_store() {
    let (store, _repo, _key) = memory_repo();
    assert!(matches!(
        Repository::init(store, &InitOptions::default()),
        Err(Error::AlreadyInitialized)
    ));
    let empty = Arc::new(MemoryStore::new());
    let key = RecoveryKey::generate().expect("key");
    assert!(matches!(
        Repository::open(empty, &key),
        Err(Error::NotARepository)
    ));
}

#[test]
fn init_validates_its_options() {
    let store = Arc::new(MemoryStore::new());
    let tiny_packs = InitOptions {
        pack_target_size: 1000,
        ..InitOptions::default()
    };
    assert!(matches!(
        Repository::init(store.clone(), &tiny_packs),
        Err(Error::InvalidInput(_))
    ));
    let mut bad_chunker = InitOptions::default();
    bad_chunker.chunking.default.min_size = bad_chunker.chunking.default.max_size + 2;
    let err = Repository::init(store.clone(), &bad_chunker).unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");
    assert!(err.to_string().contains("chunker"), "{err}");
    // Nothing was written by the refused inits.
    assert!(store.list(Namespace::Keys).expect("list").is_empty());
}

#[test]
fn a_second_key_slot_also_opens() {
    // Several key slots are part of the format; a slot written for another key
    // (as key rotation will) must not stop the first key from working.
    let (store, _repo, key) = memory_repo();
    let other_store = Arc::new(MemoryStore::new());
    let (_other_repo, other_key) =
        Repository::init(other_store.clone(), &InitOptions::default()).expect("init");
    let slot_name = other_store.list(Namespace::Keys).expect("list")[0].clone();
    let slot = other_store
        .get(
            &ObjectName::new(Namespace::Keys, &slot_name).expect("name"),
            1024,
        )
        .expect("get");
    store
        .put(
            &ObjectName::new(Namespace::Keys, &format!("0{slot_name}")).expect("name"),
            &slot,
        )
        .expect("put");
    Repository::open(store.clone(), &key).expect("first key still opens");
    // The foreign slot unlocks its master secret, whose config check then fails.
    let err = Repository::open(store, &other_key).unwrap_err();
    assert!(err.is_integrity(), "{err}");
}

/// Every object's bytes, by name, except key slots.
fn everything_but_slots(store: &MemoryStore) -> Vec<(ObjectName, Vec<u8>)> {
    cairn_store::Namespace::ALL
        .iter()
        .filter(|&&ns| ns != Namespace::Keys)
        .flat_map(|&ns| {
            store
                .list(ns)
                .expect("list")
                .into_iter()
                .map(move |n| ObjectName::new(ns, &n).expect("name"))
        })
        .map(|name| {
            let bytes = store.get(&name, u64::MAX).expect("get");
            (name, bytes)
        })
        .collect()
}

#[test]
fn keys_are_added_removed_and_rotated_without_rewriting_anything_else() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    generate_tree(&src, 20, 0, 3);
    let (store, mut repo, old_key) = memory_repo();
    let first = backup(&mut repo, &src);
    let before = everything_but_slots(&store);
    let slots = repo.key_slots().expect("slots");
    assert_eq!(slots.len(), 1);
    assert!(slots[0].in_use);

    // A second device's key: both open the repository.
    let second = RecoveryKey::generate().expect("key");
    let second_id = repo.add_key(&second).expect("add");
    assert_eq!(repo.key_slots().expect("slots").len(), 2);
    Repository::open(store.clone(), &second).expect("the new key opens it");
    Repository::open(store.clone(), &old_key).expect("the old key still does");
    // The same key again is refused; so is a key someone typed.
    let again = repo.add_key(&second).unwrap_err();
    assert!(again.to_string().contains("already opens"), "{again}");
    let typed = cairn::parse_recovery_key(&"k".repeat(64)).expect("well-formed");
    let weak = repo.add_key(&typed).unwrap_err();
    assert!(
        matches!(weak, Error::MalformedKey(KeyProblem::TooSimple { .. })),
        "{weak}"
    );

    // Removing: never the slot in use (that is rotate), by unique prefix.
    let in_use = repo
        .key_slots()
        .expect("slots")
        .into_iter()
        .find(|s| s.in_use)
        .expect("one");
    let refused = repo.remove_key(&in_use.id).unwrap_err();
    assert!(refused.to_string().contains("rotate"), "{refused}");
    repo.remove_key(&second_id[..10])
        .expect("remove the second device's key");
    assert!(matches!(
        Repository::open(store.clone(), &second).unwrap_err(),
        Error::WrongKey
    ));

    // Rotation: the new key opens, the old one is refused, and no pack,
    // index file or snapshot changed by a byte.
    let new_key = RecoveryKey::generate().expect("key");
    repo.rotate_key(&new_key).expect("rotate");
    assert!(matches!(
        Repository::open(store.clone(), &old_key).unwrap_err(),
        Error::WrongKey
    ));
    let reopened = Repository::open(store.clone(), &new_key).expect("the new key opens it");
    assert_eq!(everything_but_slots(&store), before);
    let slots = reopened.key_slots().expect("slots");
    assert_eq!(slots.len(), 1);
    assert!(slots[0].in_use);
    // The last slot is never removed, and what was there restores.
    assert!(reopened.remove_key(&slots[0].id).is_err());
    let scratch = tempfile::tempdir().expect("scratch");
    let restored = restore(&reopened, &first.snapshot_id, scratch.path()).expect("restore");
    assert_same_tree(&src, &restored.join("src"));
}

#[test]
fn a_repository_made_with_a_key_the_caller_chose() {
    let store = Arc::new(MemoryStore::new());
    let weak = cairn::parse_recovery_key(&"0".repeat(64)).expect("well-formed");
    let err = Repository::init_with_key(store.clone(), &weak, &InitOptions::default()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::MalformedKey(KeyProblem::TooSimple { distinct: 1 })
        ),
        "{err}"
    );
    assert!(
        store.list(Namespace::Keys).expect("list").is_empty(),
        "nothing written"
    );
    let chosen = cairn::parse_recovery_key(
        "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqr",
    )
    .expect("well-formed");
    Repository::init_with_key(store.clone(), &chosen, &InitOptions::default()).expect("init");
    Repository::open(store, &chosen).expect("open");
}

/// A rotation interrupted between its two writes leaves both keys
/// working, says so, and is finished by removing the old slot.
#[test]
fn a_rotation_cut_short_leaves_both_keys_working() {
    use cairn_store::{Fault, FaultyStore};
    let store = Arc::new(FaultyStore::new(MemoryStore::new()));
    let (repo, old_key) = Repository::init(store.clone(), &InitOptions::default()).expect("init");
    let new_key = RecoveryKey::generate().expect("key");
    // The new slot's put passes; the old slot's delete fails.
    store.set_fault(Fault::WritesAfter(1));
    let err = repo.rotate_key(&new_key).unwrap_err();
    let Error::RotationIncomplete { old_slot, .. } = &err else {
        panic!("{err}");
    };
    assert!(err.to_string().contains("cairn key remove"), "{err}");
    store.set_fault(Fault::None);
    Repository::open(store.clone(), &old_key).expect("the old key still opens it");
    let reopened = Repository::open(store.clone(), &new_key).expect("the new key opens it");
    reopened.remove_key(old_slot).expect("finish the rotation");
    assert!(matches!(
        Repository::open(store.clone(), &old_key).unwrap_err(),
        Error::WrongKey
    ));
}
