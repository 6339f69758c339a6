//! Integration tests of the engine, built into one binary.

mod support;

mod architecture;

mod crash;
mod dedup;
mod integrity;
mod keys;
mod roundtrip;
mod secrecy;
