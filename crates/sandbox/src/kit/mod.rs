//! The emulator kit: what every provider emulator in the sandbox shares, so a new one
//! (Heroku dynos behind a router, App Platform, droplets behind a load balancer, ECS)
//! writes only what is its provider's own.
//!
//! - `api`: the request pipeline every emulator's API goes through (`Emulator`,
//!   `serve`), with the generic `/__sandbox/calls` and `/__sandbox/faults` endpoints;
//!   `Gate` holds an emulator's fault set and call log.
//! - `faults`: the one fault set (bursts and standing conditions) and its verdicts.
//! - `calls`: the call record and log.
//! - `auth`: token checks on the `Authorization` header.
//! - `process`: instances' OS processes.
//! - `checks`: HTTP and TCP probes, and rise/fall `Thresholds`.
//! - `router`: a forwarding proxy over an emulator's `Backends`.
//! - `balancer`: a load balancer with active health checks, on the router.
//! - `haproxy`: the real HAProxy with the same kind of checks, where it is installed.
//! - `bucket`: a rate limit's token bucket.
//! - `handle`: what a test holds of a running emulator (api_url, faults, calls).
//! - `watched`: an emulator's state behind one lock, waited on without polling.
//!
//! The kit knows no provider: no paths, bodies, headers or ids of one. Each emulator
//! brings those through the traits here.

pub mod api;
pub mod auth;
pub mod balancer;
pub mod bucket;
pub mod calls;
pub mod checks;
pub mod faults;
pub mod handle;
pub mod haproxy;
pub mod process;
pub mod prometheus;
pub mod router;
pub mod traffic;
pub mod watched;

pub use api::{Emulator, Gate};
pub use auth::{Refusal, TokenRule};
pub use bucket::Bucket;
pub use calls::{Call, CallLog};
pub use faults::{FaultSet, Faults, Verdict};
pub use handle::Handle;
pub use watched::Watched;
