//! What the benchmark, the fault matrix and the fuzz run share: steady traffic through
//! an app's URL, and the input generators of the property tests.

pub mod strategies;

/// Steady traffic through an app's URL: the sandbox's, shared with the tests.
pub use sandbox::kit::traffic::{Seen, Traffic};
