//! Benchmarks live in `primitives.rs`; this library is empty so the package builds.
