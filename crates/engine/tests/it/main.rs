//! Integration tests of the engine, built into one binary.

mod support;

mod architecture;

mod crash;
mod dedup;
mod incremental;
mod integrity;
mod keys;
mod roundtrip;
mod secrecy;
