//! A DigitalOcean App Platform emulator with real processes: the Apps API (`api`) on
//! one port, one router per app (`router`, the app's live URL) on ports of their
//! own, and one test-app process per instance. Every deployment goes through
//! App Platform's phases and step tree, starts its own instances, waits for their
//! readiness checks and only then takes the traffic; rollbacks may pin the app
//! (`platform`). Faults, auth, the call log and the control endpoints, the proxying
//! itself and OS processes come from `crate::kit`.
//!
//! Every answer is meant to validate against DigitalOcean's OpenAPI description, as
//! CI checks with Prism in front of the emulator: no `null`s, errors as
//! `{"id", "message"}`, list bodies with `meta.total` and `links.pages`.

mod api;
mod platform;
mod router;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

pub use crate::kit::Faults;

use crate::app::{ReleaseSpec, Releases};
use crate::kit::{Gate, Handle};
use crate::server::Server;
use platform::Platform;

// DigitalOcean's shared conventions, for the Droplets emulator next door.
pub(crate) use api::{error, fault_message, page, rate_limited, status_error};
pub(crate) use platform::{bad_request, now, refuse, uuid, Refused, Spent};

/// How long the first deployments may take to come up in `DoSandbox::start`.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// One service component of an app.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// The component name, e.g. "web".
    pub name: String,
    /// `instance_count` (at least 1).
    pub instances: u32,
    /// An `apps_image_source_spec`, e.g. `{"registry_type":"DOCR","repository":"web","tag":"v1"}`.
    pub image: Value,
    /// A git source instead of `image`, e.g. `{"github":{"repo":"acme/web","branch":"main"}}`.
    pub source: Option<Value>,
    /// An `app_service_spec_health_check`; None = DigitalOcean's defaults (a TCP check,
    /// period 10, timeout 1, success 1, failure 9, no initial delay).
    pub health_check: Option<Value>,
}

/// One app the sandbox starts with, its first deployment ACTIVE.
#[derive(Debug, Clone)]
pub struct AppOptions {
    pub name: String,
    /// A region slug, e.g. "nyc".
    pub region: String,
    pub services: Vec<ServiceOptions>,
}

impl AppOptions {
    /// One service `web` with 2 instances of DOCR image `web:v1` and an HTTP readiness
    /// check on `/health` every second, failing after 3 misses.
    pub fn image(name: &str) -> AppOptions {
        AppOptions {
            name: name.into(),
            region: "nyc".into(),
            services: vec![ServiceOptions {
                name: "web".into(),
                instances: 2,
                image: json!({ "registry_type": "DOCR", "repository": "web", "tag": "v1" }),
                source: None,
                health_check: Some(json!({
                    "http_path": "/health",
                    "initial_delay_seconds": 0,
                    "period_seconds": 1,
                    "timeout_seconds": 1,
                    "success_threshold": 1,
                    "failure_threshold": 3,
                })),
            }],
        }
    }
}

#[derive(Debug, Clone)]
pub struct DoOptions {
    pub apps: Vec<AppOptions>,
    /// When set, API requests must carry it as `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Program and leading args that run the test app (as in `FlyOptions`).
    pub app_command: Vec<OsString>,
    /// Behaviour by image key: `repo:tag`, `repo@digest` or `owner/repo#branch`.
    pub images: Releases,
    /// How long each of PENDING_BUILD, BUILDING and PENDING_DEPLOY lasts.
    pub step_time: Duration,
    /// How long one second of a spec's health check lasts.
    pub second: Duration,
    /// Requests per minute in the token's bucket (DigitalOcean's burst limit: 250).
    pub rate_limit: u32,
    /// Requests per `hour` (DigitalOcean's 5,000): each counts for an hour from when it
    /// was made; once the budget is spent, a 429 without `retry-after`, and
    /// `ratelimit-reset` says when the oldest counted request stops counting.
    pub hourly_limit: u32,
    /// How long an "hour" of the hourly limit lasts (shorter in tests).
    pub hour: Duration,
    pub api_port: u16,
}

impl Default for DoOptions {
    fn default() -> Self {
        let exe = std::env::current_exe().map(OsString::from).unwrap_or_else(|_| OsString::from("safe-deploy"));
        DoOptions {
            apps: vec![AppOptions::image("web")],
            token: None,
            app_command: vec![exe, OsString::from("__sandbox-app")],
            images: Releases::new(),
            step_time: Duration::from_millis(300),
            second: Duration::from_secs(1),
            rate_limit: 250,
            hourly_limit: 5000,
            hour: Duration::from_secs(3600),
            api_port: 0,
        }
    }
}

/// One API request, as the emulator answered it; `target` is the app id in its path.
pub type ApiCall = crate::kit::Call;

/// A failure injected into an app's next deployment, with its reason message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The build step fails (`BuildJobFailed`).
    Build(String),
    /// The first component's wait step fails (`DeployJobFailed`) after its instances start.
    Deploy(String),
}

pub struct DoSandbox {
    platform: Arc<Platform>,
    api: Server,
    routers: Vec<(String, Server)>,
}

impl DoSandbox {
    /// Starts the API, a router per app and each app's first deployment, and returns
    /// once every one is ACTIVE with its instances up.
    pub async fn start(opts: DoOptions) -> std::io::Result<DoSandbox> {
        let platform = Arc::new(Platform::new(&opts));
        let api = api::serve(platform.clone(), SocketAddr::from(([127, 0, 0, 1], opts.api_port))).await?;
        let mut routers = Vec::new();
        let mut ids = Vec::new();
        for app in &opts.apps {
            let id = platform
                .add_app(app)
                .map_err(|r| std::io::Error::other(format!("AppOptions for {}: {}", app.name, r.message)))?;
            let router = router::serve(platform.clone(), &id, SocketAddr::from(([127, 0, 0, 1], 0))).await?;
            platform.set_url(&id, &router.url());
            routers.push((app.name.clone(), router));
            ids.push(id);
        }
        let sandbox = DoSandbox { platform, api, routers };
        for id in &ids {
            sandbox.platform.deploy(id, None, "app created", true).map_err(|r| std::io::Error::other(r.message))?;
        }
        let up = sandbox.platform.wait_until(START_TIMEOUT, |s| ids.iter().all(|id| Platform::is_settled(s, id))).await;
        if up {
            return Ok(sandbox);
        }
        let why: Vec<String> = {
            let s = sandbox.platform.lock();
            s.apps
                .iter()
                .flat_map(|a| a.deployments.iter().map(move |d| (a, d)))
                .map(|(a, d)| format!("{}: {} {:?}", a.name, d.phase, d.logs.get("DEPLOY").and_then(|l| l.last())))
                .collect()
        };
        sandbox.platform.kill_all();
        Err(std::io::Error::other(format!(
            "the DigitalOcean sandbox's first deployments did not become ACTIVE within {START_TIMEOUT:?} ({}); check DoOptions.app_command (it must run the test app)",
            why.join("; ")
        )))
    }

    /// Where `app` answers, through its router; also its `live_url`.
    pub fn app_url(&self, app: &str) -> String {
        self.routers.iter().find(|(name, _)| name == app).map(|(_, s)| s.url()).unwrap_or_default()
    }

    pub fn app_id(&self, app: &str) -> String {
        self.platform.lock().app(app).map(|a| a.id.clone()).unwrap_or_default()
    }

    /// The app as `GET /v2/apps/{id}` shows it (the inner `app` object).
    pub fn app(&self, app: &str) -> Value {
        let s = self.platform.lock();
        s.app(app).map(|a| self.platform.app_json(a)).unwrap_or(Value::Null)
    }

    /// `app`'s deployments, newest first, as the API lists them.
    pub fn deployments(&self, app: &str) -> Vec<Value> {
        let s = self.platform.lock();
        let Some(a) = s.app(app) else { return Vec::new() };
        a.deployments.iter().rev().map(|d| self.platform.deployment_json(d)).collect()
    }

    pub fn active_deployment(&self, app: &str) -> Option<String> {
        self.platform.lock().app(app).and_then(|a| a.active.clone())
    }

    pub fn pinned_deployment(&self, app: &str) -> Option<String> {
        self.platform.lock().app(app).and_then(|a| a.pinned.clone())
    }

    /// The next deployment created for `app` ends in ERROR at that step with that reason.
    pub fn fail_next(&self, app: &str, failure: Failure) {
        if let Some(a) = self.platform.lock().app_mut(app) {
            a.fail_next = Some(failure);
        }
    }

    /// Someone else starts a deployment of the current spec now (pinned or not); the
    /// one in progress becomes SUPERSEDED. Returns the new deployment's id.
    /// The next deployment of `app` (a spec update's, say) is made, but not shown by
    /// the API, in the app or the list, for `how_long`.
    pub fn hide_next_deployment(&self, app: &str, how_long: Duration) {
        if let Some(a) = self.platform.lock().app_mut(app) {
            a.hide_next = Some(how_long);
        }
    }

    /// The app's queued deployment (`pending_deployment`) and the one in progress.
    pub fn under_way(&self, app: &str) -> (Option<String>, Option<String>) {
        let s = self.platform.lock();
        s.app(app).map_or((None, None), |a| (a.pending.clone(), a.in_progress.clone()))
    }

    pub fn supersede(&self, app: &str) -> Option<String> {
        self.platform.deploy(app, None, "manual", true).ok()
    }

    pub fn add_image(&self, key: &str, spec: ReleaseSpec) {
        self.platform.lock().images.insert(key.to_string(), spec);
    }

    /// Waits until nothing is in progress and every instance of the active deployment
    /// is ready and serving.
    pub async fn settled(&self, app: &str, timeout: Duration) -> bool {
        self.platform.wait_until(timeout, |s| Platform::is_settled(s, app)).await
    }

    /// Rate-limit tokens left in the bucket.
    pub fn tokens_left(&self) -> u64 {
        self.platform.tokens_left()
    }

    pub async fn stop(self) {
        // Drop does the work; async for symmetry with the other sandboxes.
    }
}

impl Handle for DoSandbox {
    type Faults = Faults;

    fn gate(&self) -> &Gate<Faults> {
        &self.platform.gate
    }

    /// The API base, e.g. "http://127.0.0.1:PORT".
    fn api_url(&self) -> String {
        self.api.url()
    }
}

impl Drop for DoSandbox {
    fn drop(&mut self) {
        self.api.stop();
        for (_, r) in &self.routers {
            r.stop();
        }
        self.platform.kill_all();
    }
}
