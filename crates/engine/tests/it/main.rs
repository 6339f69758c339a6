//! Integration tests of the engine, built into one binary.

mod support;

mod architecture;

mod blob_kinds;

mod crash;
mod dedup;
mod incremental;
mod integrity;
mod keys;
mod lost_packs;
mod roundtrip;
mod secrecy;
