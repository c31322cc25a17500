//! The provider boundary. A provider says what is live, rolls a target out, waits
//! until the platform reports it up, and puts a snapshot back. It knows nothing of
//! GitHub or the health gate: the engine owns order, deadlines, health and rollback.

use std::time::Instant;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::config::{Config, ProviderKind, Strategy};
use crate::http::{HttpClient, HttpError};
use crate::shutdown::Shutdown;

pub mod fly;
pub mod memory;

/// Everything needed to put the live release back exactly as it was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The release in the provider's own terms (an image reference, `v42`, a deployment id).
    pub release: String,
    /// Provider-specific detail (e.g. each machine's full config).
    pub data: serde_json::Value,
}

/// What to make live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub release: String,
    /// The version this release reports, when known: what the health gate expects.
    pub version: Option<String>,
}

/// A release the provider remembers, newest last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub release: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    /// The deploy cannot go ahead; nothing is changed.
    Blocker,
}

/// Something the provider noticed before changing anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub severity: Severity,
    pub message: String,
}

/// What every provider call gets: the strategy, a deadline and the shutdown handle.
#[derive(Clone)]
pub struct Context {
    pub strategy: Strategy,
    /// The provider must give up (with `ProviderError::Timeout`) by then.
    pub deadline: Instant,
    pub shutdown: Shutdown,
}

/// Provider errors grouped by meaning, not by provider.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("{what} was not found at {provider}; check the app input and that the token can see it")]
    NotFound { provider: &'static str, what: String },
    #[error("{what} is held by someone else ({detail}); re-run when the other deploy finishes")]
    Conflict { what: String, detail: String },
    #[error("{provider} refused the token (401); create a new token and update the secret")]
    Unauthenticated { provider: &'static str },
    #[error("{provider} says the token may not {operation} (403); give the token that permission")]
    PermissionDenied { provider: &'static str, operation: String },
    #[error("{what} took longer than {limit}; raise {input} if the app needs more time")]
    Timeout { what: String, limit: String, input: &'static str },
    #[error("{provider} cannot {operation}")]
    NotSupported { provider: &'static str, operation: String },
    #[error("{0}")]
    Failed(String),
    #[error("stopped by {0}")]
    Cancelled(&'static str),
    #[error(transparent)]
    Http(#[from] HttpError),
}

#[async_trait]
pub trait Provider: Send + Sync {
    fn name(&self) -> &'static str;

    /// Things to know before changing anything; a `Blocker` stops the deploy.
    async fn preflight(&self, target: &Target, ctx: &Context) -> Result<Vec<Finding>, ProviderError>;

    /// What is live now, in enough detail to put it back.
    async fn snapshot(&self, ctx: &Context) -> Result<Snapshot, ProviderError>;

    /// The steps a roll-out of `target` would take, in words, for `plan`.
    fn plan(&self, live: &Snapshot, target: &Target, ctx: &Context) -> Vec<String>;

    /// Everything that must happen before the first change and may still stop the deploy
    /// with nothing changed: leases, a release command.
    async fn prepare(&self, _live: &Snapshot, _target: &Target, _ctx: &Context) -> Result<(), ProviderError> {
        Ok(())
    }

    /// Makes `target` live. May fail part-way: the engine then rolls back.
    async fn roll_out(&self, live: &Snapshot, target: &Target, ctx: &Context) -> Result<(), ProviderError>;

    /// Waits until the platform itself reports `release` up everywhere.
    async fn wait_ready(&self, release: &str, ctx: &Context) -> Result<(), ProviderError>;

    /// Puts `snapshot` back. Running it twice must do no harm.
    async fn roll_back(&self, snapshot: &Snapshot, ctx: &Context) -> Result<(), ProviderError>;

    /// Releases the provider remembers, oldest first.
    async fn history(&self, ctx: &Context) -> Result<Vec<Release>, ProviderError>;

    /// Runs at the end of every run, whatever happened: gives back leases and the like.
    async fn finish(&self) {}

    /// The app's public URL, when the provider knows it.
    fn app_url(&self) -> Option<String> {
        None
    }

    /// How many API requests the provider sent, when it counts them.
    fn api_calls(&self) -> Option<usize> {
        None
    }
}

// Every provider must work behind `dyn Provider`.
const _: Option<&dyn Provider> = None;

/// The provider the config names.
pub fn build(config: &Config, http: &HttpClient) -> anyhow::Result<Box<dyn Provider>> {
    match config.provider {
        ProviderKind::Fly => {
            let base = match &config.api_url {
                Some(u) => u.clone(),
                None => url::Url::parse(fly::client::DEFAULT_API)?,
            };
            let token = config.token.as_ref().map(|t| t.expose()).unwrap_or_default();
            Ok(Box::new(fly::FlyProvider::new(
                http.clone(),
                base,
                &config.app,
                token,
                config.release_command.clone(),
                config.max_unavailable,
            )?))
        }
        ProviderKind::Memory => {
            let path = config
                .memory_state_path()
                .ok_or_else(|| anyhow::anyhow!("bug: the memory provider has no state path"))?;
            Ok(Box::new(memory::MemoryProvider::new(path)))
        }
    }
}
