//! A Heroku emulator with real processes: the Platform API (`api`) on one port, one
//! router per app (`router`) on ports of their own, and one test-app process per web
//! dyno. A build unpacks the uploaded tarball (`slug`), a release runs its Procfile
//! `release:` command for real, and dynos are replaced with or without preboot as
//! Heroku does (`platform`). Faults, auth, the call log and the control endpoints,
//! the proxying itself and OS processes come from `crate::kit`.

mod api;
mod platform;
mod router;
pub mod schema;
pub mod slug;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

pub use crate::kit::Faults;
pub use api::{ACCEPT, DOCKER_RELEASES};

use crate::app::{ReleaseSpec, Releases};
use crate::kit::{Gate, Handle};
use crate::server::Server;
use platform::{Content, Platform};

const START_TIMEOUT: Duration = Duration::from_secs(30);

/// One app the sandbox starts with, on release v1.
#[derive(Debug, Clone)]
pub struct AppOptions {
    pub name: String,
    /// `cedar` or `fir`.
    pub generation: String,
    /// `heroku-24`, `container` or `cnb`.
    pub stack: String,
    pub dynos: usize,
    pub preboot: bool,
    /// What v1's `/version` answers.
    pub version: String,
    /// A container app's v1 image (the stack must be `container`).
    pub image: Option<String>,
    /// The pipeline (name) and stage the app is coupled to.
    pub pipeline: Option<(String, String)>,
    /// Flags of v1's Procfile `web:` line (the test app's), e.g. `--health wrong-body`.
    pub web: String,
}

impl AppOptions {
    pub fn cedar(name: &str) -> AppOptions {
        AppOptions {
            name: name.into(),
            generation: "cedar".into(),
            stack: "heroku-24".into(),
            dynos: 2,
            preboot: true,
            version: "v1".into(),
            image: None,
            pipeline: None,
            web: String::new(),
        }
    }

    pub fn fir(name: &str) -> AppOptions {
        AppOptions { generation: "fir".into(), stack: "cnb".into(), ..AppOptions::cedar(name) }
    }

    pub fn container(name: &str, image: &str) -> AppOptions {
        AppOptions { stack: "container".into(), image: Some(image.into()), ..AppOptions::cedar(name) }
    }
}

#[derive(Debug, Clone)]
pub struct HerokuOptions {
    pub apps: Vec<AppOptions>,
    /// When set, API requests must carry it as `Bearer`.
    pub token: Option<String>,
    /// Program and leading args that run the test app (as in `FlyOptions`).
    pub app_command: Vec<OsString>,
    /// Behaviour of container images by their id, as released with `docker_image`.
    pub images: Releases,
    /// With preboot: how long after the new dynos are up the router switches to them.
    pub preboot_switch: Duration,
    /// The account's rate-limit bucket (Heroku: 4500).
    pub rate_limit: u32,
    /// How long a build takes.
    pub build_time: Duration,
    pub api_port: u16,
    /// Heroku's official JSON Hyper-Schema: when set, every request body the API gets
    /// and every JSON answer it gives is checked against it (`schema_violations`).
    pub schema: Option<std::path::PathBuf>,
}

impl Default for HerokuOptions {
    fn default() -> Self {
        let exe = std::env::current_exe().map(OsString::from).unwrap_or_else(|_| OsString::from("safe-deploy"));
        HerokuOptions {
            apps: vec![AppOptions::cedar("web")],
            token: None,
            app_command: vec![exe, OsString::from("__sandbox-app")],
            images: Releases::new(),
            preboot_switch: Duration::from_millis(500),
            rate_limit: 4500,
            build_time: Duration::from_millis(300),
            api_port: 0,
            schema: None,
        }
    }
}

/// One API request, as the emulator answered it; `target` is the app in its path.
pub type ApiCall = crate::kit::Call;

pub struct HerokuSandbox {
    platform: Arc<Platform>,
    api: Server,
    routers: Vec<(String, Server)>,
}

impl HerokuSandbox {
    /// Starts the API, each app's router and dynos on v1, and returns once every dyno is up.
    pub async fn start(opts: HerokuOptions) -> std::io::Result<HerokuSandbox> {
        let schema = match &opts.schema {
            Some(path) => Some(schema::Schema::load(path).map_err(std::io::Error::other)?),
            None => None,
        };
        let platform = Arc::new(Platform::new(&opts, schema));
        let api = api::serve(platform.clone(), SocketAddr::from(([127, 0, 0, 1], opts.api_port))).await?;
        let mut routers = Vec::new();
        for app in &opts.apps {
            let content = match &app.image {
                Some(image) => Content::Image(image.clone()),
                None => {
                    let procfile = format!("web: sandbox-app {}\n", app.web);
                    let files = [("Procfile", procfile.as_str()), ("VERSION", app.version.as_str())];
                    Content::Slug(platform.slug_of(&files, &app.version).map_err(std::io::Error::other)?)
                }
            };
            platform.add_app(&app.name, &app.generation, &app.stack, app.dynos, app.preboot, content);
            if let Some((pipeline, stage)) = &app.pipeline {
                if let Some(a) = platform.lock().app_mut(&app.name) {
                    a.pipeline = Some((platform::uuid_of(&format!("pipeline-{pipeline}")), stage.clone()));
                }
            }
            let router = router::serve(platform.clone(), &app.name, SocketAddr::from(([127, 0, 0, 1], 0))).await?;
            routers.push((app.name.clone(), router));
        }
        let sandbox = HerokuSandbox { platform, api, routers };
        let up = sandbox
            .platform
            .wait_until(START_TIMEOUT, |s| s.apps.iter().all(|a| a.dynos.iter().all(|d| d.state != "starting")))
            .await;
        let crashed = sandbox.platform.lock().apps.iter().any(|a| a.dynos.iter().any(|d| d.state != "up"));
        if up && !crashed {
            return Ok(sandbox);
        }
        sandbox.platform.kill_all();
        Err(std::io::Error::other(format!(
            "the Heroku sandbox's dynos did not come up within {START_TIMEOUT:?}; check HerokuOptions.app_command (it must run the test app)"
        )))
    }

    /// Where `app` answers, through its router.
    pub fn app_url(&self, app: &str) -> String {
        self.routers.iter().find(|(name, _)| name == app).map(|(_, s)| s.url()).unwrap_or_default()
    }

    /// `app`'s releases, oldest first, as the API shows them.
    pub fn releases(&self, app: &str) -> Vec<Value> {
        let s = self.platform.lock();
        s.app(app).map(|a| a.releases.iter().map(|r| self.platform.release_json(a, r)).collect()).unwrap_or_default()
    }

    /// The live release's version.
    pub fn current_version(&self, app: &str) -> Option<u64> {
        self.platform.lock().app(app).and_then(|a| a.current().map(|r| r.version))
    }

    /// What release `version` of `app` answers on `/version`.
    pub fn served_by(&self, app: &str, version: u64) -> Option<String> {
        let s = self.platform.lock();
        let r = s.app(app)?.releases.iter().find(|r| r.version == version)?.clone();
        Some(match &r.content {
            Content::Slug(slug) => slug.version.clone(),
            Content::Image(image) => crate::app::spec_for(&s.images, image).version,
        })
    }

    /// `app`'s web dynos, as the API shows them.
    pub fn dynos(&self, app: &str) -> Vec<Value> {
        let s = self.platform.lock();
        s.app(app).map(|a| a.dynos.iter().map(|d| self.platform.dyno_json(a, d)).collect()).unwrap_or_default()
    }

    /// The pipeline id the API uses for a pipeline name given in `AppOptions`.
    pub fn pipeline_id(&self, name: &str) -> String {
        platform::uuid_of(&format!("pipeline-{name}"))
    }

    /// Marks release `version` expired (artifacts deleted), as Heroku does after 30 days.
    pub fn expire(&self, app: &str, version: u64) -> bool {
        self.platform.expire(app, version)
    }

    pub fn set_preboot(&self, app: &str, on: bool) {
        if let Some(a) = self.platform.lock().app_mut(app) {
            a.preboot = on;
        }
    }

    pub fn add_image(&self, image: &str, spec: ReleaseSpec) {
        self.platform.lock().images.insert(image.to_string(), spec);
    }

    /// Waits until every web dyno of `app` is up on the live release and takes traffic.
    pub async fn settled(&self, app: &str, timeout: Duration) -> bool {
        self.platform
            .wait_until(timeout, |s| {
                s.app(app).is_some_and(|a| {
                    a.retiring.is_empty()
                        && a.dynos.len() == a.quantity
                        && a.dynos
                            .iter()
                            .all(|d| d.state == "up" && d.serving && Some(&d.release_id) == a.live.as_ref())
                })
            })
            .await
    }

    /// Where a request or an answer broke Heroku's schema (with `HerokuOptions.schema`).
    pub fn schema_violations(&self) -> Vec<String> {
        self.platform.violations.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Rate-limit tokens left.
    pub fn tokens_left(&self) -> u64 {
        self.platform.tokens_left()
    }

    pub async fn stop(self) {
        self.api.stop();
        for (_, r) in &self.routers {
            r.stop();
        }
        self.platform.kill_all();
    }
}

impl Handle for HerokuSandbox {
    type Faults = Faults;

    fn gate(&self) -> &Gate<Faults> {
        &self.platform.gate
    }

    /// The API base, e.g. "http://127.0.0.1:PORT".
    fn api_url(&self) -> String {
        self.api.url()
    }
}

impl Drop for HerokuSandbox {
    fn drop(&mut self) {
        self.api.stop();
        for (_, r) in &self.routers {
            r.stop();
        }
        self.platform.kill_all();
    }
}
