//! Integration tests of the engine, built into one binary.

mod support;

mod architecture;

mod blob_kinds;
mod cache;

mod crash;
mod damaged_objects;
mod dedup;
mod dry_run;
mod fixture;
mod history;
mod incremental;
mod integrity;
mod keys;
mod leaks;
mod lost_packs;
mod prune;
mod prune_concurrency;
mod repair;
mod restore_safety;
mod rollback;
mod roundtrip;
mod secrecy;
mod sources;
mod tiers;
mod uploads;
