//! Maintenance of a repository as a whole. Today: `check`. Forget and prune
//! come here too.

mod check;

pub use check::{CheckOptions, CheckReport, Problem};
