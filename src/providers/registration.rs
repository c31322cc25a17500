//! How a provider plugs in: what the registry lists of it, what it parses of its own
//! inputs, and what it is built from. Providers depend on this; the registry, which
//! lists every provider, is the only module that depends on them all.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use crate::http::HttpClient;
use crate::inputs::{InputError, InputSpec, Problems, RawInputs};
use crate::providers::{Provider, Source};

/// How a provider plugs in: its name, its token, and its two configuration steps.
#[derive(Debug)]
pub struct Registration {
    pub name: &'static str,
    /// Shown to people: "Fly.io".
    pub title: &'static str,
    /// Environment variables its own CLI reads the token from, read when `token` is empty.
    pub token_env: &'static [&'static str],
    pub needs_token: bool,
    /// Its own inputs read from environment variables when left empty, as its own CLI
    /// reads them (ECS: AWS_ACCESS_KEY_ID...); a secret input read so is masked too.
    pub env: &'static [EnvInput],
    /// Its `api-url` is a file, not an HTTP base (the provider double).
    pub file_api: bool,
    /// A deploy without `image` deploys something else (Heroku: the source).
    pub image_optional: bool,
    /// Fills shared inputs the caller left empty from the provider's own files
    /// (fly.toml's app and health check path). `Ok(None)`: nothing to fill.
    pub defaults: fn(&RawInputs, &Path) -> Result<Option<RawInputs>, InputError>,
    /// Parses and checks the provider's own inputs into `problems`; `None` when any is wrong.
    pub configure: fn(&RawInputs, &Path, &mut Problems) -> Option<Arc<dyn ProviderSettings>>,
    /// Its own inputs (with their help heading), in `action.yml`, the CLI's flags and
    /// docs/inputs.md: lists, since some are shared with providers of its kind (the hosts').
    pub inputs: &'static [&'static [InputSpec]],
    /// `safe-deploy demo --provider NAME`, where it has one.
    #[cfg(feature = "sandbox")]
    pub demo: Option<Demo>,
    /// `safe-deploy sandbox --provider NAME`, where it has one.
    #[cfg(feature = "sandbox")]
    pub sandbox: Option<Serve>,
}

/// A demo or a sandbox, run to its exit code on the CLI's runtime.
pub type Running = std::pin::Pin<Box<dyn std::future::Future<Output = i32>>>;

/// A provider's demo: the summary file it writes (or its own), and the redactor.
#[cfg(feature = "sandbox")]
pub type Demo = fn(Option<std::path::PathBuf>, crate::secret::Redactor) -> Running;

/// A provider's sandbox, served until interrupted.
#[cfg(feature = "sandbox")]
pub type Serve = fn(SandboxArgs) -> Running;

/// What `safe-deploy sandbox` was asked for, its `--release` settings read already.
#[cfg(feature = "sandbox")]
#[derive(Debug, Clone)]
pub struct SandboxArgs {
    pub app: String,
    /// Machines, dynos, instances, hosts or tasks.
    pub machines: usize,
    /// Fly: the release the machines start on.
    pub image: String,
    /// How releases behave, by image.
    pub releases: sandbox::app::Releases,
}

/// An input filled from the first of `vars` that is set, when the input is empty and so
/// is every other input of its `set`: keys go together, so a key id given as an input is
/// never paired with a secret (or a session token) left in the environment by an earlier
/// step.
#[derive(Debug)]
pub struct EnvInput {
    pub input: &'static str,
    pub vars: &'static [&'static str],
    pub set: &'static str,
    /// Read in the action's steps too, not only by the CLI. An address (an API URL) is
    /// read by the CLI alone: on a runner any earlier step can set a variable through
    /// GITHUB_ENV, and one naming where the token goes would send it there.
    pub on_runner: bool,
}

/// The settings a provider parsed from its own inputs, and how it builds itself.
pub trait ProviderSettings: fmt::Debug + Send + Sync {
    fn build(&self, account: &Account, http: &HttpClient) -> anyhow::Result<Box<dyn Provider>>;

    /// What a deploy without `image` deploys (Heroku: the source directory, or a
    /// pipeline promotion); `None` when `image` is required.
    fn default_source(&self) -> Option<Source> {
        None
    }
}

/// What every provider is built with, whoever it is: the app, the token and the API base.
#[derive(Debug, Clone, Copy)]
pub struct Account<'a> {
    pub app: &'a str,
    /// The token as sent, or empty.
    pub token: &'a str,
    /// `api-url`, when given.
    pub api_url: Option<&'a url::Url>,
}

impl Account<'_> {
    /// The provider's API base: `api-url`, else `default`.
    pub fn api_base(&self, default: &str) -> anyhow::Result<url::Url> {
        Ok(match self.api_url {
            Some(u) => u.clone(),
            None => url::Url::parse(default)?,
        })
    }
}

/// For a provider with nothing of its own to fill in.
pub fn no_defaults(_: &RawInputs, _: &Path) -> Result<Option<RawInputs>, InputError> {
    Ok(None)
}
