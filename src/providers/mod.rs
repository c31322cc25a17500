//! The provider boundary. A provider records what is live, plans a roll-out, does
//! everything that may still fail with nothing changed (`prepare`), then hands the
//! engine a roll-out in batches; it puts a snapshot back and says what is live
//! afterwards. It knows nothing of GitHub or the health gate: the engine owns order,
//! deadlines, the gates between batches and the rollback.
//!
//! Adding a provider: a folder here with the same shape as `fly/` or `ecs/`, whose
//! `REGISTRATION` carries its inputs, demo and sandbox; one line in
//! `registry::PROVIDERS`; and its section in the README. `conformance` is the suite
//! every provider runs.
//!
//! What every provider would otherwise write for itself lives here once: `wait` (a poll
//! with the run's deadline, heartbeat and cancellation; `outlast` for a flaky API),
//! `restore` (every instance back, each on its own), `batches` (how a roll-out is cut),
//! `registration` (how a provider plugs in), `rest` (the JSON APIs' client), and the
//! lock step (`Provider::lock`/`unlock`), which the engine takes and gives back.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::http::HttpError;
use crate::shutdown::Shutdown;
pub use wait::{outlast, Poll};

pub mod batches;
#[cfg(feature = "sandbox")]
pub mod conformance;
pub mod digitalocean;
pub mod droplets;
pub mod ecs;
pub mod fly;
pub mod heroku;
pub mod hosts;
pub mod logs;
#[cfg(feature = "sandbox")]
pub mod memory;
pub mod registration;
pub mod registry;
pub mod rest;
pub mod restore;
pub mod ssh;
pub mod wait;

/// A release as a provider names it: `id` is what is compared, `label` what is shown
/// (for Fly both are the image; for Heroku `id` is a uuid and `label` is `v43`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseRef {
    pub id: String,
    pub label: String,
}

impl ReleaseRef {
    /// A release whose id is also its label (an image reference).
    pub fn named(name: &str) -> ReleaseRef {
        ReleaseRef { id: name.to_string(), label: name.to_string() }
    }
}

/// Everything needed to put the live release back exactly as it was. `record` is the
/// provider's own record (e.g. every Fly machine's full config); the provider that
/// wrote it parses it, once per use, into its own types.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub release: ReleaseRef,
    pub record: serde_json::Value,
    /// Who or what made the release, where the platform says (an App Platform
    /// deployment's cause, a Heroku release's description and author): how a release
    /// someone else put live is named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
}

impl Snapshot {
    /// The provider's own record, read back into the provider's own type.
    pub fn record_as<T: serde::de::DeserializeOwned>(&self, provider: &str) -> Result<T, ProviderError> {
        serde_json::from_value(self.record.clone()).map_err(|e| {
            ProviderError::Failed(format!(
                "the recorded {provider} snapshot cannot be read back ({e}); it was written by another version of safe-deploy, or edited"
            ))
        })
    }
}

/// Where a release comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "kebab-case")]
pub enum Source {
    /// A container image reference.
    Image(String),
    /// A source directory to upload and build (Heroku, App Platform).
    Directory(PathBuf),
    /// A release the provider already knows (rollback, redeploy).
    Release(ReleaseRef),
    /// What another app runs, promoted through a pipeline (Heroku): the app's name.
    Promotion(String),
    /// The app's own source, as its spec names it (an App Platform git branch), built
    /// and deployed again.
    Rebuild,
}

/// What to make live, and the version it must report: what the health gate expects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub source: Source,
    pub version: Option<String>,
}

impl Target {
    /// How the target is shown: the image, the directory, or the release's label.
    pub fn label(&self) -> String {
        match &self.source {
            Source::Image(i) => i.clone(),
            Source::Directory(d) => format!("source in {}", d.display()),
            Source::Release(r) => r.label.clone(),
            Source::Promotion(app) => format!("what {app} runs, promoted"),
            Source::Rebuild => "a new build of the app's own source".into(),
        }
    }
}

impl Source {
    /// The image (or recorded release) of a provider that deploys only images.
    pub fn image_or_release(&self, provider: &'static str) -> Result<String, ProviderError> {
        let refuse = |operation: String| Err(ProviderError::NotSupported { provider, operation });
        match self {
            Source::Image(i) => Ok(i.clone()),
            Source::Release(r) => Ok(r.id.clone()),
            Source::Directory(d) => refuse(format!(
                "build a source directory ({}); build and push an image, then give it in image",
                d.display()
            )),
            Source::Promotion(app) => {
                refuse(format!("promote what {app} runs through a pipeline; give its image in image"))
            }
            Source::Rebuild => refuse("rebuild an app from its own source; give an image in image".into()),
        }
    }
}

/// What a roll-out would do, step by step and batch by batch. Pure: made from the
/// snapshot and the target, with no request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// What `prepare` does before the first change.
    pub prepare: Vec<String>,
    pub batches: Vec<PlannedBatch>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedBatch {
    pub label: String,
    pub steps: Vec<String>,
}

/// What a provider can and cannot do, declared once instead of answered at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// It remembers earlier releases (`history`), so a rollback can find one by itself.
    pub history: bool,
    /// A changed instance can be reached alone, so a batch can be gated before the next.
    pub single_instances: bool,
    /// Where its releases come from.
    pub images: bool,
    pub directories: bool,
}

/// Something the provider noticed before changing anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub severity: Severity,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    /// The deploy cannot go ahead; nothing is changed.
    Blocker,
}

/// One changed instance, and how to reach only it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    /// How a request reaches this instance alone; `None` where the platform cannot.
    pub route: Option<Route>,
}

/// How the health gate reaches one instance alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A request header that sends a request through the app's URL to this instance
    /// (Fly: `fly-force-instance-id`).
    Header(String, String),
    /// An origin (`http://127.0.0.1:PORT`) that reaches only this instance, e.g. a
    /// tunnel to a host the balancer does not send traffic to yet: the health URL's
    /// path and query are asked there.
    Origin(url::Url),
}

/// What applying one batch made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The release the batch made live (for a platform: the new release it created).
    pub release: ReleaseRef,
    /// The instances it changed, where the provider can name them.
    pub instances: Vec<Instance>,
}

/// How waiting on a batch ended, when the platform answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waited {
    /// Every instance of the batch is up on the new release.
    Ready,
    /// The platform kept the old release (a failed release phase, a build error):
    /// nothing serves differently, so there is nothing to roll back. `left` is what the
    /// run's change left at the platform all the same, where it did (App Platform keeps
    /// the spec that names the new image): nothing serves differently, but not nothing
    /// changed.
    Refused { why: String, left: Option<String> },
    /// The platform rolled back by itself (an ECS circuit breaker): the old release
    /// runs again.
    RolledBack(String),
    /// Someone else's change replaced ours before it went live (an App Platform
    /// deployment superseded by another): neither ours nor the recorded release is
    /// what will run, and rolling back over someone else's deploy would be wrong.
    Superseded { by: String, why: String },
}

/// A roll-out in progress: made by `prepare`, driven batch by batch by the engine.
/// It knows exactly what it changed.
#[async_trait]
pub trait Rollout: Send + Sync {
    /// How many batches: 1 where the platform manages the roll-out itself.
    fn batches(&self) -> usize;

    /// One line for batch `i`, e.g. "machine 1234 (1 of 3)".
    fn describe(&self, batch: usize) -> String;

    /// Changes batch `batch`. `gated`: the engine gates the batch's instances alone
    /// before `admit`, so where the platform would send them traffic on its own, they
    /// start where it does not (a host's loopback). On error, `changed()` says whether
    /// anything changed.
    async fn apply(&mut self, batch: usize, gated: bool, ctx: &Context) -> Result<Applied, ProviderError>;

    /// Waits until the platform reports batch `batch` up, refused, or rolled back.
    async fn wait(&mut self, batch: usize, ctx: &Context) -> Result<Waited, ProviderError>;

    /// Whether anything at the provider may have changed so far: a write that was
    /// sent counts, even if its answer never came.
    fn changed(&self) -> bool;

    /// What `admit` does for batch `batch`, in a line; `None` (the default) when the
    /// platform sends traffic by itself, and `admit` is not called.
    fn admission(&self, _batch: usize) -> Option<String> {
        None
    }

    /// Lets traffic reach batch `batch` again, once its wait (and its gate, where it
    /// has one) passed: a host put back behind its balancer.
    async fn admit(&mut self, _batch: usize, _ctx: &Context) -> Result<(), ProviderError> {
        Ok(())
    }
}

#[async_trait]
pub trait Provider: Send + Sync {
    fn name(&self) -> &'static str;

    fn capabilities(&self) -> Capabilities;

    /// What is live now, in enough detail to put it back.
    async fn snapshot(&self, ctx: &Context) -> Result<Snapshot, ProviderError>;

    /// Things to know before changing anything; a `Blocker` stops the deploy.
    async fn preflight(&self, live: &Snapshot, target: &Target, ctx: &Context) -> Result<Vec<Finding>, ProviderError>;

    /// The steps and batches a roll-out of `target` would take. No request.
    fn plan(&self, live: &Snapshot, target: &Target) -> Plan;

    /// Everything that can still fail with nothing changed (leases, an upload, a
    /// build, a release command), then the roll-out handle. An error here means
    /// nothing changed.
    async fn prepare(&self, live: &Snapshot, target: &Target, ctx: &Context)
        -> Result<Box<dyn Rollout>, ProviderError>;

    /// Puts `snapshot` back; returns what is live afterwards. Running it twice must do
    /// no harm.
    async fn restore(&self, snapshot: &Snapshot, ctx: &Context) -> Result<ReleaseRef, ProviderError>;

    /// Whether `snapshot` is what runs now (asked by the post step before restoring).
    async fn in_effect(&self, snapshot: &Snapshot, ctx: &Context) -> Result<bool, ProviderError>;

    /// Whether `now`, a fresh snapshot, still runs `made`, the release this run made
    /// live: by default, the same name (or id).
    fn still_runs(&self, now: &Snapshot, made: &ReleaseRef) -> bool {
        now.release.id == made.id || same_release(&now.release.label, &made.label)
    }

    /// Releases the provider remembers, oldest first. Called only when
    /// `capabilities().history` says it has them.
    async fn history(&self, ctx: &Context) -> Result<Vec<ReleaseRef>, ProviderError>;

    /// Before the run's last look at what is live: waits, within `ctx`, until nothing
    /// someone else started is still on its way to going live (a build or release phase
    /// in flight), so that look is what stays. Returns what is still under way when it
    /// stops waiting, said as "X is under way and replaces ... when it goes live".
    async fn settle(&self, _ctx: &Context) -> Result<Option<String>, ProviderError> {
        Ok(None)
    }

    /// The deploy lock it has, if any: what keeps a second run off the app while this
    /// one changes it. The engine takes it before the first change and before a restore,
    /// and gives it back when the run ends.
    fn lock_kind(&self) -> LockKind {
        LockKind::None
    }

    /// Takes the deploy lock on what `recorded` names, or takes again one this run (the
    /// same record) holds; one held by someone else is `Conflict`, with nothing changed.
    async fn lock(&self, _recorded: &Snapshot, _purpose: LockFor, _ctx: &Context) -> Result<(), ProviderError> {
        Ok(())
    }

    /// Gives back every lock this process holds; what could not be given back, for the
    /// summary. Doing it when nothing is held does nothing.
    async fn unlock(&self, _ctx: &Context) -> Vec<String> {
        Vec::new()
    }

    /// Runs at the end of every run, whatever happened, after the lock is given back,
    /// told how the run ended: clears what a rollback would have needed once none can be.
    /// Returns what it could not clean up, or what it leaves, for the summary.
    async fn finish(&self, _ending: Ending, _ctx: &Context) -> Vec<String> {
        Vec::new()
    }

    /// How many API requests the provider sent, when it counts them.
    fn api_calls(&self) -> Option<usize> {
        None
    }
}

// Every provider must work behind `dyn Provider`, and every roll-out behind `dyn Rollout`.
const _: Option<&dyn Provider> = None;
const _: Option<&dyn Rollout> = None;

/// What a provider's deploy lock is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    /// It has none (a platform that orders deploys itself).
    None,
    /// It lasts while this process renews it (Fly's machine leases, which run out on
    /// their own): given back at the end of every run.
    Lease,
    /// It stays until given back (a lock directory on each host): a run that leaves its
    /// change to the post step leaves it held, and the post step takes it again.
    Durable,
}

/// Why the lock is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockFor {
    /// Before a deploy's first change: someone else's lock stops the deploy at once.
    Deploy,
    /// Before a restore: a lock a crashed run left may be waited for while it runs out.
    Restore,
}

/// How a run ended, as `Provider::finish` is told it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The new release is live and proved: nothing is left to put back.
    Deployed,
    /// The run is over and nothing is left for a post step (nothing changed, the
    /// recorded release is back, or a failure was left as `rollback: false` says).
    Over,
    /// A post step (or `safe-deploy post`) has the recorded release to put back.
    Unfinished,
}

/// What every provider call gets: a deadline, the shutdown handle and where progress goes.
#[derive(Clone)]
pub struct Context {
    /// The provider must give up (with `ProviderError::Timeout`) by then.
    pub deadline: Instant,
    /// The input that sets the deadline, named when a wait runs out of it:
    /// `deploy-timeout`, or `rollback-timeout` for a restore.
    pub budget: &'static str,
    pub shutdown: Shutdown,
    pub progress: Progress,
    /// How the person gave the inputs: a provider's advice names `--deploy-timeout` off
    /// a runner, `deploy-timeout` in a workflow.
    pub surface: crate::inputs::Surface,
}

impl Context {
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// `Err(Cancelled)` once a signal came.
    pub fn check_cancelled(&self) -> Result<(), ProviderError> {
        match self.shutdown.cause() {
            Some(cause) => Err(ProviderError::Cancelled(cause)),
            None => Ok(()),
        }
    }
}

/// Progress a provider reports while it works.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    StepStarted {
        step: String,
    },
    StepEnded {
        step: String,
        ok: bool,
    },
    /// An instance reached a state (reported when reached, not when asked for).
    Instance {
        id: String,
        state: String,
        release: Option<String>,
    },
    /// A line of a build, release or command log.
    Log {
        source: String,
        line: String,
    },
    /// A wait in progress: what is awaited, for how long so far, how long is left.
    Waiting {
        what: String,
        elapsed: Duration,
        remaining: Option<Duration>,
    },
    /// A health gate's latest attempt, for the live status: its number and what it got
    /// ("attempt 7: body does not contain 'ok' (0 of 3 in a row)"). The log has its own
    /// health lines, so only a terminal shows this.
    Attempt {
        text: String,
        /// Until the gate's deadline.
        left: Duration,
    },
}

/// Where progress events go: the runner log now, a terminal renderer later.
pub trait Observer: Send + Sync {
    fn event(&self, event: Event);
}

/// Drops every event (tests, and the post step's quiet checks).
pub struct Silent;

impl Observer for Silent {
    fn event(&self, _: Event) {}
}

/// A cheap handle on the run's observer.
#[derive(Clone)]
pub struct Progress(Arc<dyn Observer>);

impl Default for Progress {
    fn default() -> Self {
        Progress(Arc::new(Silent))
    }
}

impl Progress {
    pub fn new(observer: Arc<dyn Observer>) -> Self {
        Progress(observer)
    }

    pub fn emit(&self, event: Event) {
        self.0.event(event);
    }

    pub fn instance(&self, id: &str, state: &str, release: Option<&str>) {
        self.emit(Event::Instance { id: id.into(), state: state.into(), release: release.map(str::to_string) });
    }

    pub fn log(&self, source: &str, line: &str) {
        self.emit(Event::Log { source: source.into(), line: line.into() });
    }

    pub fn waiting(&self, what: &str, started: Instant, deadline: Option<Instant>) {
        self.emit(Event::Waiting {
            what: what.into(),
            elapsed: started.elapsed(),
            remaining: deadline.map(|d| d.saturating_duration_since(Instant::now())),
        });
    }
}

/// A wait that ran out of the time `input` gives it, and what to do.
fn ran_out(what: &str, limit: &str, input: &str) -> String {
    format!("{what} took longer than {limit}; raise {input} if the app needs more time")
}

/// Provider errors grouped by meaning, not by provider.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("{what}: {provider} answered not found (404); check the app's name and that the token can see it")]
    NotFound { provider: &'static str, what: String },
    #[error("{what} is held by someone else ({detail}); re-run when the other deploy finishes")]
    Conflict { what: String, detail: String },
    #[error("{provider} refused the token (401); create a new token, and update the secret or variable that holds it")]
    Unauthenticated { provider: &'static str },
    #[error("{provider} says the token may not {operation} (403); give the token that permission")]
    PermissionDenied { provider: &'static str, operation: String },
    #[error("{}", ran_out(what, limit, input))]
    Timeout { what: String, limit: String, input: &'static str },
    #[error("{provider} cannot {operation}")]
    NotSupported { provider: &'static str, operation: String },
    /// The platform did not answer usefully (5xx, 429, a garbled body) even after the
    /// HTTP layer's retries; asking again later may work.
    #[error("{0}")]
    Unavailable(String),
    /// The token's request budget is spent; `until` is when the platform says a request
    /// is taken again (DigitalOcean's `ratelimit-reset`), where it says.
    #[error("{message}")]
    RateLimited { message: String, until: Option<std::time::SystemTime> },
    #[error("{0}")]
    Failed(String),
    #[error("stopped by {0}")]
    Cancelled(&'static str),
    #[error(transparent)]
    Http(#[from] HttpError),
}

impl ProviderError {
    /// An HTTP failure as the provider reports it: a signal stays a cancellation.
    pub fn from_http(e: HttpError) -> ProviderError {
        match e {
            HttpError::Cancelled { cause, .. } => ProviderError::Cancelled(cause),
            other => ProviderError::Http(other),
        }
    }

    /// Worth asking again after a pause: the platform or the network had a bad moment.
    /// A refusal (401, 403, 404, 409), a timeout of our own deadline or a failure the
    /// platform reported is not.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ProviderError::Unavailable(_)
                | ProviderError::RateLimited { .. }
                | ProviderError::Http(HttpError::Transport { .. })
        ) && !matches!(self, ProviderError::Http(HttpError::Transport { kind: crate::http::TransportFailure::Tls, .. }))
    }

    /// A wait that ran out of `input`'s time.
    pub fn timeout(what: impl Into<String>, limit: Duration, input: &'static str) -> ProviderError {
        ProviderError::Timeout { what: what.into(), limit: crate::inputs::human(limit), input }
    }

    /// The error as the person who gave the inputs names them: `raise --deploy-timeout`
    /// off a runner.
    pub fn said(&self, surface: crate::inputs::Surface) -> String {
        match self {
            ProviderError::Timeout { what, limit, input } => ran_out(what, limit, &surface.name(input)),
            other => other.to_string(),
        }
    }
}

/// Whether two names are the same release: equal, or the same first word (`v42` and
/// `v42 (a copy of v40)` name one Heroku release).
pub fn same_release(a: &str, b: &str) -> bool {
    a == b || a.split_whitespace().next().is_some_and(|w| b.split_whitespace().next() == Some(w))
}

/// "a (2), b (1)": how many instances run each release, by name, so the same mix is
/// always said the same way.
pub fn tally<'a>(releases: impl IntoIterator<Item = &'a str>) -> Vec<(String, usize)> {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for r in releases {
        match counts.iter_mut().find(|(name, _)| name == r) {
            Some((_, n)) => *n += 1,
            None => counts.push((r.to_string(), 1)),
        }
    }
    counts.sort();
    counts
}

/// The release a set of instances runs: the one release, "mixed: a (2), b (1)", or
/// "no instances".
pub fn release_of<'a>(images: impl IntoIterator<Item = &'a str>) -> ReleaseRef {
    let counts = tally(images);
    match counts.as_slice() {
        [] => ReleaseRef::named("no instances"),
        [(image, _)] => ReleaseRef::named(image),
        many => ReleaseRef::named(&format!(
            "mixed: {}",
            many.iter().map(|(i, n)| format!("{i} ({n})")).collect::<Vec<_>>().join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_release_is_one_image_or_says_it_is_mixed() {
        assert_eq!(release_of(["a", "a"]).label, "a");
        assert_eq!(release_of(["a", "b", "a"]).label, "mixed: a (2), b (1)");
        assert_eq!(release_of(["b", "a", "a"]).label, "mixed: a (2), b (1)", "the same mix, said the same way");
        assert_eq!(release_of([]).label, "no instances");
    }
}
