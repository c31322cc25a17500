//! The sandbox: stand-ins for the providers, with real state and real HTTP, so that
//! tests, benchmarks and `safe-deploy demo` exercise the action without credentials
//! or network.
//!
//! Layout:
//! - `server`: a tiny HTTP/1.1 server on loopback that the emulators share.
//! - `client`: a tiny HTTP/1.1 client for the router, the checks and tests.
//! - `kit`: what every emulator shares, so each one holds only its provider's own
//!   rules: the API pipeline (control endpoints, faults, auth, call log), the fault
//!   set, token checks, OS processes, health probes, a forwarding router and a load
//!   balancer with active health checks.
//! - `app`: what a release of the test application answers (version, health, faults),
//!   and the test application as a real process.
//! - `double`: the provider double's state file, and an app that serves whatever
//!   release that file says is live.
//! - `fly`: a Fly.io emulator (Machines API, proxy, one process per machine), on the kit.
//! - `heroku`: a Heroku emulator (Platform API, one router per app, one process per
//!   web dyno, builds from uploaded tarballs, a real release phase), on the kit.
//! - `digitalocean`: a DigitalOcean App Platform emulator (Apps API, one router per
//!   app, one process per instance, deployments through their phases and step tree,
//!   readiness checks, rollbacks that pin), on the kit.
//! - `droplets`: DigitalOcean Droplets behind a Load Balancer (the Droplets and Load
//!   Balancers API, one real balancer with active health checks over the droplets'
//!   loopback addresses, by id or by tag), on the kit; the apps on the droplets are
//!   someone else's (an SSH host side).
//! - `hosts`: Linux hosts behind a load balancer for a deploy over SSH: one loopback
//!   address, SSH server (russh) and `docker` stand-in (the test app as detached
//!   processes, state in files) per host, and the fleet rig with its keys.
//! - `ecs`: AWS ECS on Fargate behind an Application Load Balancer (ECS's JSON API,
//!   ELBv2's and STS's query APIs with SigV4 checked, GitHub's OIDC token endpoint;
//!   tasks as processes, a target group that health-checks and drains them, the
//!   circuit breaker), on the kit.
//! - `github`: a GitHub REST emulator for deployments and deployment statuses, on the kit.
//!
//! Dependencies point one way: emulators use the kit, the kit uses `server` and
//! `client`, and nothing in the kit names a provider.

pub mod app;
pub mod client;
pub mod digitalocean;
pub mod double;
pub mod droplets;
pub mod ecs;
pub mod fly;
pub mod github;
pub mod heroku;
pub mod hosts;
pub mod kit;
pub mod server;
pub mod tls;

/// Every emulator's handle is one: `use sandbox::Handle` for `set_faults`, `calls`, `api_url`.
pub use kit::Handle;
