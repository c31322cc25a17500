//! safe-deploy: deploy an app, prove the new version healthy, and put the previous
//! version back by itself when it is not; then say exactly what is live.
//!
//! Layout:
//! - `inputs`: the action's inputs, defined once (action.yml, flags, docs/inputs.md), and the
//!   toolbox every module parses with (`Problems`, `InputError`, durations, booleans).
//! - `config`: raw inputs become one validated `Config`, or every problem at once.
//! - `job`: one run from inputs to its end: config, ledger, engine, report, post step.
//! - `engine`: the order of a deploy, its deadlines, lock, health gate and rollback.
//! - `gate`: what a gate is (health, analysis, external) and its report.
//! - `health`: the health gate, with every attempt recorded and classified.
//! - `analysis`: the analysis gates: the new release against the live one's baseline
//!   (sampled, with a statistical test), a Prometheus query, a web check.
//! - `providers`: the `Provider` trait, and one module per provider.
//! - `http`: the one HTTP client: timeouts, retries, `Retry-After`, redaction.
//! - `report`: one record of the run; `summary` renders it as Markdown (`markdown`
//!   escapes what the platforms say).
//! - `runner`: workflow commands and file commands of the GitHub runner.
//! - `state`: what main leaves for the post step.
//! - `shutdown`: signals and the cancellation handle.
//! - `progress`: progress events as the runner log shows them; `terminal`: the stdout
//!   sink that a live status on a terminal shares with log lines.
//! - `secret`: the `Secret` newtype and the redactor.
//! - `aws`: AWS Signature Version 4 and the keys (given, or GitHub's OIDC token traded at
//!   STS) for the `ecs` provider (the `aws-sigv4` crate).
//! - `cli`: the binary's roles; `demo`: the sandbox demo (with the `sandbox` feature, on
//!   by default; the action's image leaves it out, with the emulators and the double).

pub mod analysis;
pub mod aws;
pub mod cli;
pub mod config;
#[cfg(feature = "sandbox")]
pub mod demo;
pub mod engine;
#[doc(hidden)]
pub mod fuzz;
pub mod gate;
pub mod github;
pub mod health;
pub mod http;
pub mod inputs;
pub mod interrupt;
pub mod job;
pub mod markdown;
pub mod progress;
pub mod providers;
pub mod report;
pub mod runner;
pub mod secret;
pub mod shutdown;
pub mod state;
pub mod summary;
pub mod terminal;
