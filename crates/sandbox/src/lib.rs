//! The sandbox: stand-ins for the providers, with real state and real HTTP, so that
//! tests, benchmarks and `safe-deploy demo` exercise the action without credentials
//! or network.
//!
//! Layout:
//! - `server`: a tiny HTTP/1.1 server on loopback that the emulators share.
//! - `app`: what a release of the test application answers (version, health, faults).
//! - `double`: the provider double's state file, and an app that serves whatever
//!   release that file says is live.

pub mod app;
pub mod double;
pub mod server;
