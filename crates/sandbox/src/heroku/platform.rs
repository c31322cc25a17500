//! The Heroku platform's state and what happens over time: builds turn uploaded
//! sources into slugs, a new release runs its release phase, then the web dynos are
//! replaced (with preboot: new ones first, traffic switched once they are up; without:
//! old ones stopped first, a gap), a crashed dyno stays crashed, and a rollback or a
//! pipeline promotion is a new release of an old slug.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde_json::{json, Value};

use super::slug::{self, Slug};
use super::{Faults, HerokuOptions};
use crate::app::{spec_for, Releases};
use crate::fly::ids::{random_u64, rfc3339};
use crate::kit::process::{self, signal, Launch, Proc};
use crate::kit::{Bucket, Gate, TokenRule, Watched};

/// How long a dyno may take to bind its port before Heroku gives up on it (R10).
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);

pub fn uuid() -> String {
    let (a, b) = (random_u64(), random_u64());
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        0x8000 | (b >> 48) & 0x3fff,
        b & 0xffff_ffff_ffff
    )
}

fn now() -> String {
    rfc3339(SystemTime::now())
}

/// What a release runs: a built slug or a container image.
#[derive(Debug, Clone)]
pub enum Content {
    Slug(Arc<Slug>),
    Image(String),
}

#[derive(Debug, Clone)]
pub struct Release {
    pub id: String,
    pub version: u64,
    pub status: String,
    pub description: String,
    pub content: Content,
    pub created_at: String,
    pub updated_at: String,
    /// The release phase's output, and whether it is complete.
    pub log: String,
    pub log_done: bool,
    /// The release phase ran (or runs) for it.
    pub has_release_phase: bool,
}

#[derive(Debug)]
pub struct Dyno {
    pub id: String,
    pub name: String,
    pub release_id: String,
    pub release_version: u64,
    pub state: String,
    pub created_at: String,
    pub updated_at: String,
    pub port: Option<u16>,
    pub process: Option<Proc>,
    /// The router sends it traffic (with preboot, only once the switch is made).
    pub serving: bool,
    /// Being stopped on purpose: its exit is not a crash.
    pub stopping: bool,
    pub command: String,
}

#[derive(Debug)]
pub struct App {
    pub id: String,
    pub name: String,
    pub generation: String,
    pub stack: String,
    pub preboot: bool,
    pub quantity: usize,
    pub releases: Vec<Release>,
    /// The release that is live (`current`).
    pub live: Option<String>,
    pub dynos: Vec<Dyno>,
    /// Old dynos still serving during a preboot switch: not listed by the API.
    pub retiring: Vec<Dyno>,
    pub pipeline: Option<(String, String)>,
    pub created_at: String,
    /// Bumped on every release switch, so a stale preboot switch does nothing.
    pub epoch: u64,
}

impl App {
    pub fn release(&self, key: &str) -> Option<&Release> {
        let version = key.trim_start_matches('v').parse::<u64>().ok();
        self.releases.iter().find(|r| r.id == key || Some(r.version) == version)
    }

    fn release_mut(&mut self, id: &str) -> Option<&mut Release> {
        self.releases.iter_mut().find(|r| r.id == id)
    }

    pub fn current(&self) -> Option<&Release> {
        self.live.as_deref().and_then(|id| self.release(id))
    }
}

impl Release {
    /// Whether a rollback may target it: any release whose slug still exists, the
    /// live one included (the Heroku CLI counts on that to pick the one before it).
    pub fn eligible(&self) -> bool {
        self.status == "succeeded"
    }
}

#[derive(Debug)]
pub struct Build {
    pub id: String,
    pub app: String,
    pub status: String,
    pub source_url: String,
    pub source_version: String,
    pub release: Option<String>,
    pub slug: Option<String>,
    pub log: String,
    pub log_done: bool,
    pub created_at: String,
    pub updated_at: String,
    pub stack: String,
    pub generation: String,
}

#[derive(Debug)]
pub struct Promotion {
    pub id: String,
    pub pipeline: String,
    pub source_app: String,
    pub source_release: String,
    pub status: String,
    /// Target app id, status, release id, error.
    pub targets: Vec<(String, String, Option<String>, Option<String>)>,
    pub created_at: String,
}

#[derive(Debug, Default)]
pub struct State {
    pub apps: Vec<App>,
    pub blobs: HashMap<String, Option<Bytes>>,
    pub builds: Vec<Build>,
    pub promotions: Vec<Promotion>,
    pub images: Releases,
}

impl State {
    pub fn app(&self, key: &str) -> Option<&App> {
        self.apps.iter().find(|a| a.id == key || a.name == key)
    }

    pub fn app_mut(&mut self, key: &str) -> Option<&mut App> {
        self.apps.iter_mut().find(|a| a.id == key || a.name == key)
    }
}

/// A refusal, in Heroku's error shape.
#[derive(Debug)]
pub struct Failure {
    pub status: u16,
    pub id: &'static str,
    pub message: String,
}

pub fn fail(status: u16, id: &'static str, message: impl Into<String>) -> Failure {
    Failure { status, id, message: message.into() }
}

pub struct Platform {
    pub gate: Gate<Faults>,
    pub auth: TokenRule,
    state: Watched<State>,
    pub app_command: Vec<OsString>,
    pub work_dir: PathBuf,
    pub preboot_switch: Duration,
    /// The account's request tokens: `rate_limit` of them, topped up at 75 a minute.
    pub bucket: Bucket,
    pub build_time: Duration,
    /// The API's own base URL, for the source and log URLs it hands out.
    pub base: Mutex<String>,
    pub schema: Option<super::schema::Schema>,
    pub violations: Mutex<Vec<String>>,
}

impl Platform {
    pub fn new(opts: &HerokuOptions, schema: Option<super::schema::Schema>) -> Platform {
        let state = State { images: opts.images.clone(), ..Default::default() };
        let work_dir = std::env::temp_dir().join(format!("heroku-sandbox-{}-{:08x}", std::process::id(), random_u64()));
        Platform {
            gate: Gate::default(),
            // Heroku answers 401 to a request with no token, even where any token will do.
            auth: TokenRule { schemes: &["Bearer"], bare: false, token: opts.token.clone(), required: true },
            state: Watched::new(state),
            app_command: opts.app_command.clone(),
            work_dir,
            preboot_switch: opts.preboot_switch,
            bucket: Bucket::new(opts.rate_limit, 75),
            build_time: opts.build_time,
            base: Mutex::new(String::new()),
            schema,
            violations: Mutex::new(Vec::new()),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }

    pub fn base(&self) -> String {
        self.base.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn notify(&self) {
        self.state.notify();
    }

    pub async fn wait_until(&self, timeout: Duration, done: impl FnMut(&State) -> bool) -> bool {
        self.state.wait_until(timeout, done).await
    }

    /// Takes one token from the account's bucket; false when it is empty.
    pub fn spend_token(&self) -> bool {
        self.bucket.spend().is_ok()
    }

    pub fn tokens_left(&self) -> u64 {
        self.bucket.left()
    }

    /// Makes an app with release v1 of `slug` live on `quantity` web dynos.
    pub fn add_app(
        self: &Arc<Self>,
        name: &str,
        generation: &str,
        stack: &str,
        quantity: usize,
        preboot: bool,
        content: Content,
    ) {
        let id = uuid();
        let release = Release {
            id: uuid(),
            version: 1,
            status: "succeeded".into(),
            description: "Initial release".into(),
            content,
            created_at: now(),
            updated_at: now(),
            log: String::new(),
            log_done: true,
            has_release_phase: false,
        };
        let release_id = release.id.clone();
        {
            let mut s = self.lock();
            s.apps.push(App {
                id: id.clone(),
                name: name.to_string(),
                generation: generation.to_string(),
                stack: stack.to_string(),
                preboot,
                quantity,
                releases: vec![release],
                live: Some(release_id.clone()),
                dynos: Vec::new(),
                retiring: Vec::new(),
                pipeline: None,
                created_at: now(),
                epoch: 0,
            });
        }
        self.switch_dynos(&id, &release_id, false);
    }

    /// A slug built from files, for apps the sandbox starts with.
    pub fn slug_of(&self, files: &[(&str, &str)], version: &str) -> Result<Arc<Slug>, String> {
        let id = uuid();
        let tgz = slug::tarball(files);
        slug::build(&id, &tgz, &self.work_dir.join(&id), version).map(Arc::new)
    }

    // ----- builds -----

    pub fn create_build(
        self: &Arc<Self>,
        app: &str,
        url: &str,
        version: &str,
        buildpacks: bool,
    ) -> Result<Value, Failure> {
        let (app_id, stack, generation) = {
            let s = self.lock();
            let a = s.app(app).ok_or_else(|| not_found("app", app))?;
            (a.id.clone(), a.stack.clone(), a.generation.clone())
        };
        if buildpacks && generation == "fir" {
            return Err(fail(
                422,
                "invalid_params",
                "buildpacks cannot be set on a Fir app: Cloud Native Buildpacks come from project.toml",
            ));
        }
        if stack == "container" {
            return Err(fail(
                422,
                "invalid_params",
                "this app uses the container stack: release an image instead of building source",
            ));
        }
        let build = Build {
            id: uuid(),
            app: app_id,
            status: "pending".into(),
            source_url: url.to_string(),
            source_version: version.to_string(),
            release: None,
            slug: None,
            log: String::new(),
            log_done: false,
            created_at: now(),
            updated_at: now(),
            stack,
            generation,
        };
        let id = build.id.clone();
        self.lock().builds.push(build);
        let platform = self.clone();
        let build_id = id.clone();
        tokio::spawn(async move { platform.run_build(&build_id).await });
        Ok(self.build_json(&id).unwrap_or_default())
    }

    /// Stops a pending build: it fails and makes no release. A finished build is left as it is.
    pub fn cancel_build(&self, id: &str) -> Result<(), Failure> {
        let mut s = self.lock();
        let b = s.builds.iter_mut().find(|b| b.id == id).ok_or_else(|| not_found("build", id))?;
        if b.status == "pending" {
            b.status = "failed".into();
            b.log.push_str(" !     Build cancelled\n");
            b.log_done = true;
            b.updated_at = now();
        }
        drop(s);
        self.notify();
        Ok(())
    }

    fn build_log(&self, id: &str, line: &str) {
        if let Some(b) = self.lock().builds.iter_mut().find(|b| b.id == id) {
            b.log.push_str(line);
            b.log.push('\n');
        }
        self.notify();
    }

    async fn run_build(self: Arc<Self>, id: &str) {
        let (url, version, stack, app_id) = {
            let s = self.lock();
            let Some(b) = s.builds.iter().find(|b| b.id == id) else { return };
            (b.source_url.clone(), b.source_version.clone(), b.stack.clone(), b.app.clone())
        };
        self.build_log(id, &format!("-----> Building on the {stack} stack"));
        let step = self.build_time / 3;
        tokio::time::sleep(step).await;
        let tarball = self.fetch_blob(&url).await;
        let slug_id = uuid();
        let built = tarball.and_then(|t| slug::build(&slug_id, &t, &self.work_dir.join(&slug_id), &version));
        match built {
            Ok(slug) => {
                self.build_log(id, "-----> Sandbox app detected");
                self.build_log(
                    id,
                    &format!(
                        "-----> Discovering process types\n       Procfile declares types -> {}",
                        slug.process_types.join(", ")
                    ),
                );
                tokio::time::sleep(step).await;
                self.build_log(id, "-----> Compressing...\n       Done: 4.2M");
                tokio::time::sleep(step).await;
                let cancelled = self.lock().builds.iter().any(|b| b.id == id && b.status != "pending");
                if cancelled {
                    return;
                }
                let description = format!("Deploy {}", version.chars().take(8).collect::<String>());
                let release = self.create_release(&app_id, Content::Slug(Arc::new(slug)), &description);
                let mut s = self.lock();
                let version =
                    release.as_ref().ok().and_then(|r| s.app(&app_id).and_then(|a| a.release(r)).map(|r| r.version));
                if let Some(b) = s.builds.iter_mut().find(|b| b.id == id) {
                    match (&release, version) {
                        (Ok(r), Some(v)) => {
                            b.status = "succeeded".into();
                            b.release = Some(r.clone());
                            b.slug = Some(slug_id);
                            b.log.push_str(&format!("-----> Launching...\n       Released v{v}\n"));
                        }
                        _ => {
                            b.status = "failed".into();
                            b.log.push_str(" !     The release could not be created\n");
                        }
                    }
                    b.log_done = true;
                    b.updated_at = now();
                }
            }
            Err(why) => {
                let mut s = self.lock();
                if let Some(b) = s.builds.iter_mut().find(|b| b.id == id) {
                    b.log.push_str(&format!(" !     {why}\n !     Push rejected, failed to compile app.\n"));
                    b.status = "failed".into();
                    b.log_done = true;
                    b.updated_at = now();
                }
            }
        }
        self.notify();
    }

    async fn fetch_blob(&self, url: &str) -> Result<Vec<u8>, String> {
        // Our own blob URLs are read directly; any other is fetched, as Heroku does.
        let own = format!("{}/blobs/", self.base());
        if let Some(id) = url.strip_prefix(&own) {
            return match self.lock().blobs.get(id) {
                Some(Some(bytes)) => Ok(bytes.to_vec()),
                Some(None) => Err("the source blob was never uploaded (PUT the tarball to put_url first)".into()),
                None => Err(format!("no source blob at {url}")),
            };
        }
        match crate::client::call("GET", url, &[], None).await {
            Ok(reply) if reply.status == 200 => Ok(reply.body.to_vec()),
            Ok(reply) => Err(format!("fetching the source blob answered {}", reply.status)),
            Err(e) => Err(format!("fetching the source blob failed: {}", e.message)),
        }
    }

    // ----- releases -----

    /// A new release of `content`; its release phase runs, then its dynos start.
    pub fn create_release(self: &Arc<Self>, app: &str, content: Content, description: &str) -> Result<String, Failure> {
        let command = match &content {
            Content::Slug(s) => s.release.clone(),
            Content::Image(_) => None,
        };
        let (app_id, id) = {
            let mut s = self.lock();
            let a = s.app_mut(app).ok_or_else(|| not_found("app", app))?;
            let version = a.releases.iter().map(|r| r.version).max().unwrap_or(0) + 1;
            let release = Release {
                id: uuid(),
                version,
                status: if command.is_some() { "pending" } else { "succeeded" }.into(),
                description: description.to_string(),
                content,
                created_at: now(),
                updated_at: now(),
                log: String::new(),
                log_done: command.is_none(),
                has_release_phase: command.is_some(),
            };
            let id = release.id.clone();
            a.releases.push(release);
            (a.id.clone(), id)
        };
        match command {
            Some(cmd) => {
                let platform = self.clone();
                let (app, release) = (app_id.clone(), id.clone());
                tokio::spawn(async move { platform.release_phase(&app, &release, &cmd).await });
            }
            None => self.switch_dynos(&app_id, &id, true),
        }
        self.notify();
        Ok(id)
    }

    /// Runs the release command in the slug's directory; exit 0 makes the release
    /// live, anything else fails it and leaves the old one live.
    async fn release_phase(self: Arc<Self>, app: &str, release: &str, command: &str) {
        let dir = {
            let s = self.lock();
            match s.app(app).and_then(|a| a.release(release)).map(|r| r.content.clone()) {
                Some(Content::Slug(slug)) => slug.dir.clone(),
                _ => return,
            }
        };
        let output = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .current_dir(&dir)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        let (code, text) = match tokio::time::timeout(Duration::from_secs(3600), output).await {
            Ok(Ok(out)) => {
                let mut text = String::from_utf8_lossy(&out.stdout).to_string();
                text.push_str(&String::from_utf8_lossy(&out.stderr));
                (out.status.code().unwrap_or(1), text)
            }
            Ok(Err(e)) => (1, format!("the release command could not start: {e}\n")),
            Err(_) => (1, "the release command ran out of its 1 hour\n".into()),
        };
        let ok = code == 0;
        {
            let mut s = self.lock();
            let Some(a) = s.app_mut(app) else { return };
            if let Some(r) = a.release_mut(release) {
                r.log = text;
                if !ok {
                    r.log.push_str(&format!("release command exited with code {code}\n"));
                }
                r.log_done = true;
                r.status = if ok { "succeeded" } else { "failed" }.into();
                r.updated_at = now();
            }
        }
        if ok {
            self.switch_dynos(app, release, true);
        }
        self.notify();
    }

    /// A rollback: a new release with the slug (or image) of `to`.
    pub fn rollback(self: &Arc<Self>, app: &str, to: &str) -> Result<String, Failure> {
        let (content, version) = {
            let s = self.lock();
            let a = s.app(app).ok_or_else(|| not_found("app", app))?;
            let r = a.release(to).ok_or_else(|| not_found("release", to))?;
            match r.status.as_str() {
                "expired" => {
                    return Err(fail(
                        422,
                        "invalid_params",
                        format!("Cannot rollback to v{}: its artifacts have expired", r.version),
                    ))
                }
                "succeeded" => {}
                other => {
                    return Err(fail(
                        422,
                        "invalid_params",
                        format!("Cannot rollback to v{}: it is {other}", r.version),
                    ))
                }
            }
            (r.content.clone(), r.version)
        };
        self.create_release(app, content, &format!("Rollback to v{version}"))
    }

    /// Marks a release's artifacts deleted, as Heroku does after 30 days and 20 releases.
    pub fn expire(&self, app: &str, version: u64) -> bool {
        let mut s = self.lock();
        let Some(r) = s.app_mut(app).and_then(|a| a.releases.iter_mut().find(|r| r.version == version)) else {
            return false;
        };
        r.status = "expired".into();
        true
    }

    // ----- dynos -----

    /// Replaces the app's web dynos with ones on `release`. With preboot the new dynos
    /// start first and take traffic once all are up (after `preboot_switch`); without
    /// it the old ones stop first.
    pub fn switch_dynos(self: &Arc<Self>, app: &str, release: &str, replace: bool) {
        let (app_id, epoch, preboot) = {
            let mut s = self.lock();
            let Some(a) = s.app_mut(app) else { return };
            a.live = Some(release.to_string());
            a.epoch += 1;
            let preboot = a.preboot && replace && !a.dynos.is_empty();
            let old: Vec<Dyno> = a.dynos.drain(..).collect();
            for mut d in old {
                if preboot && d.serving && d.state == "up" {
                    a.retiring.push(d);
                } else {
                    d.stopping = true;
                    if let Some(p) = &d.process {
                        p.signal(signal::TERM);
                    }
                }
            }
            (a.id.clone(), a.epoch, preboot)
        };
        let quantity = self.lock().app(&app_id).map_or(0, |a| a.quantity);
        for i in 1..=quantity {
            self.start_dyno(&app_id, &format!("web.{i}"), !preboot);
        }
        self.notify();
        if preboot {
            let platform = self.clone();
            tokio::spawn(async move { platform.preboot_switch(&app_id, epoch).await });
        }
    }

    /// Waits for the new dynos to be up (or out of time), lets `preboot_switch` pass
    /// as Heroku's router takes its time, then sends traffic to them and stops the old.
    async fn preboot_switch(self: Arc<Self>, app: &str, epoch: u64) {
        let booted =
            |s: &State| s.app(app).is_none_or(|a| a.epoch != epoch || a.dynos.iter().all(|d| d.state != "starting"));
        self.wait_until(BOOT_TIMEOUT, booted).await;
        tokio::time::sleep(self.preboot_switch).await;
        let mut s = self.lock();
        let Some(a) = s.app_mut(app) else { return };
        if a.epoch != epoch {
            return;
        }
        for d in &mut a.dynos {
            d.serving = true;
        }
        for mut d in a.retiring.drain(..) {
            d.stopping = true;
            if let Some(p) = &d.process {
                p.signal(signal::TERM);
            }
        }
        drop(s);
        self.notify();
    }

    fn start_dyno(self: &Arc<Self>, app: &str, name: &str, serving: bool) {
        let mut s = self.lock();
        let never_start = self.gate.with_faults(|f| f.never_start);
        let images = s.images.clone();
        let Some(a) = s.app_mut(app) else { return };
        let Some(r) = a.current().cloned() else { return };
        let (flags, command) = match &r.content {
            Content::Slug(slug) => {
                let flags =
                    ["--version".to_string(), slug.version.clone()].into_iter().chain(slug.web.clone()).collect();
                (flags, format!("sandbox-app {}", slug.web.join(" ")))
            }
            Content::Image(image) => (spec_for(&images, image).app_flags(), format!("(image {image})")),
        };
        let id = uuid();
        // Fir names dynos by release and instance ("web-1234abcde-123ab"), Cedar "web.1".
        let name = match a.generation.as_str() {
            "fir" => format!("web-{:09x}-{:05x}", random_u64() & 0xf_ffff_ffff, random_u64() & 0xf_ffff),
            _ => name.to_string(),
        };
        let mut dyno = Dyno {
            id: id.clone(),
            name: name.clone(),
            release_id: r.id.clone(),
            release_version: r.version,
            state: "starting".into(),
            created_at: now(),
            updated_at: now(),
            port: None,
            process: None,
            serving,
            stopping: false,
            command,
        };
        let Some((program, lead)) = self.app_command.split_first() else {
            dyno.state = "crashed".into();
            a.dynos.push(dyno);
            return;
        };
        if never_start {
            // A dyno that never binds its port: Heroku would give up at 60 s (R10).
            a.dynos.push(dyno);
            return;
        }
        let mut args: Vec<OsString> = lead.to_vec();
        args.extend(["--port", "0", "--exit-on-stdin-eof"].map(OsString::from));
        args.extend(flags.into_iter().map(OsString::from));
        let launch = Launch { program: program.clone(), args, env: vec![("DYNO".into(), name)] };
        let (on_listen, on_exit) = (self.clone(), self.clone());
        let (app_id, listen_id, exit_id) = (a.id.clone(), id.clone(), id.clone());
        let exit_app = app_id.clone();
        match process::spawn(
            &launch,
            move |port| on_listen.dyno_listening(&app_id, &listen_id, port),
            move |_exit| on_exit.dyno_exited(&exit_app, &exit_id),
        ) {
            Ok(proc) => dyno.process = Some(proc),
            Err(_) => dyno.state = "crashed".into(),
        }
        a.dynos.push(dyno);
    }

    fn dyno_listening(&self, app: &str, id: &str, port: u16) {
        {
            let mut s = self.lock();
            let Some(a) = s.app_mut(app) else { return };
            if let Some(d) = a.dynos.iter_mut().find(|d| d.id == id) {
                d.state = "up".into();
                d.port = Some(port);
                d.updated_at = now();
            }
        }
        self.notify();
    }

    fn dyno_exited(&self, app: &str, id: &str) {
        {
            let mut s = self.lock();
            let Some(a) = s.app_mut(app) else { return };
            a.retiring.retain(|d| d.id != id);
            if let Some(pos) = a.dynos.iter().position(|d| d.id == id) {
                if a.dynos[pos].stopping {
                    a.dynos.remove(pos);
                } else {
                    // Heroku restarts a crashed dyno later; it stays crashed here, which
                    // is what a deploy must notice.
                    let d = &mut a.dynos[pos];
                    d.state = "crashed".into();
                    d.port = None;
                    d.updated_at = now();
                }
            }
        }
        self.notify();
    }

    /// Scales the web process: starts or stops dynos on the live release.
    pub fn scale(self: &Arc<Self>, app: &str, quantity: usize) -> Result<(), Failure> {
        let (app_id, have) = {
            let mut s = self.lock();
            let a = s.app_mut(app).ok_or_else(|| not_found("app", app))?;
            a.quantity = quantity;
            while a.dynos.len() > quantity {
                if let Some(mut d) = a.dynos.pop() {
                    d.stopping = true;
                    if let Some(p) = &d.process {
                        p.signal(signal::TERM);
                    }
                }
            }
            (a.id.clone(), a.dynos.len())
        };
        for i in have + 1..=quantity {
            self.start_dyno(&app_id, &format!("web.{i}"), true);
        }
        self.notify();
        Ok(())
    }

    /// The ports of dynos taking traffic, and whether any web dyno has crashed.
    pub fn backends(&self, app: &str) -> (Vec<(String, u16)>, bool) {
        let s = self.lock();
        let Some(a) = s.app(app) else { return (Vec::new(), false) };
        let serving = a
            .dynos
            .iter()
            .chain(a.retiring.iter())
            .filter(|d| d.serving && d.state == "up")
            .filter_map(|d| d.port.map(|p| (d.id.clone(), p)))
            .collect();
        (serving, a.dynos.iter().any(|d| d.state == "crashed"))
    }

    // ----- pipelines -----

    pub fn promote(self: &Arc<Self>, pipeline: &str, source: &str, targets: &[String]) -> Result<Value, Failure> {
        let (source_id, release, content, version) = {
            let s = self.lock();
            let a = s.app(source).ok_or_else(|| not_found("app", source))?;
            if a.pipeline.as_ref().map(|p| p.0.as_str()) != Some(pipeline) {
                return Err(fail(422, "invalid_params", "the source app is not in this pipeline"));
            }
            let r = a.current().ok_or_else(|| fail(422, "invalid_params", "the source app has no release"))?;
            (a.id.clone(), r.id.clone(), r.content.clone(), r.version)
        };
        let source_name = self.lock().app(&source_id).map(|a| a.name.clone()).unwrap_or_default();
        let mut target_rows = Vec::new();
        for t in targets {
            let id = self.lock().app(t).map(|a| a.id.clone()).ok_or_else(|| not_found("app", t))?;
            target_rows.push((id, "pending".to_string(), None, None));
        }
        let promotion = Promotion {
            id: uuid(),
            pipeline: pipeline.to_string(),
            source_app: source_id,
            source_release: release,
            status: "pending".into(),
            targets: target_rows,
            created_at: now(),
        };
        let id = promotion.id.clone();
        self.lock().promotions.push(promotion);
        let platform = self.clone();
        let promotion_id = id.clone();
        tokio::spawn(async move {
            let targets: Vec<String> = platform
                .lock()
                .promotions
                .iter()
                .find(|p| p.id == promotion_id)
                .map(|p| p.targets.iter().map(|t| t.0.clone()).collect())
                .unwrap_or_default();
            for (i, app) in targets.iter().enumerate() {
                let made = platform.create_release(app, content.clone(), &format!("Promote {source_name} v{version}"));
                let outcome = match made {
                    Ok(release) => {
                        let done = |s: &State| {
                            s.app(app).and_then(|a| a.release(&release)).is_none_or(|r| r.status != "pending")
                        };
                        platform.wait_until(Duration::from_secs(3600), done).await;
                        let status =
                            platform.lock().app(app).and_then(|a| a.release(&release)).map(|r| r.status.clone());
                        match status.as_deref() {
                            Some("succeeded") => ("succeeded", Some(release), None),
                            _ => ("failed", Some(release), Some("the release phase failed".to_string())),
                        }
                    }
                    Err(f) => ("failed", None, Some(f.message)),
                };
                if let Some(p) = platform.lock().promotions.iter_mut().find(|p| p.id == promotion_id) {
                    p.targets[i] = (app.clone(), outcome.0.into(), outcome.1, outcome.2);
                }
            }
            if let Some(p) = platform.lock().promotions.iter_mut().find(|p| p.id == promotion_id) {
                p.status = "completed".into();
            }
            platform.notify();
        });
        Ok(self.promotion_json(&id).unwrap_or_default())
    }

    // ----- JSON, in the schema's shapes -----

    pub fn app_json(&self, a: &App) -> Value {
        let stack = json!({ "id": uuid_of(&a.stack), "name": a.stack });
        json!({
            "acm": false,
            "archived_at": null,
            "buildpack_provided_description": if a.stack == "container" { Value::Null } else { json!("Sandbox") },
            "build_stack": stack,
            "created_at": a.created_at,
            "generation": { "id": uuid_of(&a.generation), "name": a.generation },
            "git_url": format!("https://git.heroku.com/{}.git", a.name),
            "id": a.id,
            "internal_routing": null,
            "maintenance": false,
            "name": a.name,
            "owner": { "email": "sandbox@example.com", "id": ACCOUNT_ID },
            "organization": null,
            "team": null,
            "region": { "id": uuid_of("us"), "name": "us" },
            "released_at": a.current().map(|r| r.updated_at.clone()),
            "repo_size": null,
            "slug_size": null,
            "space": null,
            "stack": stack,
            "updated_at": a.created_at,
            // As Heroku names app URLs since 2023: the name and a 12-hex suffix.
            "web_url": format!("https://{}-{}.herokuapp.com/", a.name, &a.id.replace('-', "")[..12]),
        })
    }

    pub fn release_json(&self, a: &App, r: &Release) -> Value {
        let (slug, artifacts) = match &r.content {
            Content::Slug(s) => (json!({ "id": s.id }), json!([{ "type": "slug", "id": s.id }])),
            Content::Image(i) => (Value::Null, json!([{ "type": "oci-image", "id": uuid_of(i) }])),
        };
        let status = r.status.clone();
        json!({
            "addon_plan_names": [],
            "artifacts": artifacts,
            "app": { "id": a.id, "name": a.name },
            "created_at": r.created_at,
            "description": r.description,
            "id": r.id,
            "updated_at": r.updated_at,
            "slug": slug,
            "status": status,
            "user": { "email": "sandbox@example.com", "id": ACCOUNT_ID },
            "version": r.version,
            "current": a.live.as_deref() == Some(r.id.as_str()),
            "output_stream_url": r.has_release_phase.then(|| format!("{}/streams/releases/{}", self.base(), r.id)),
            "eligible_for_rollback": r.eligible(),
        })
    }

    pub fn dyno_json(&self, a: &App, d: &Dyno) -> Value {
        json!({
            "attach_url": null,
            "command": d.command,
            "created_at": d.created_at,
            "id": d.id,
            "name": d.name,
            "release": { "id": d.release_id, "version": d.release_version },
            "app": { "id": a.id, "name": a.name },
            "size": "Standard-1X",
            "state": d.state,
            "type": "web",
            "updated_at": d.updated_at,
        })
    }

    pub fn formation_json(&self, a: &App) -> Value {
        json!({
            "app": { "id": a.id, "name": a.name },
            "command": a.current().map(|r| match &r.content {
                Content::Slug(s) => format!("sandbox-app {}", s.web.join(" ")),
                Content::Image(_) => String::new(),
            }).unwrap_or_default(),
            "created_at": a.created_at,
            "dyno_size": { "id": uuid_of("Standard-1X"), "name": "Standard-1X" },
            "id": uuid_of(&format!("{}-web", a.id)),
            "quantity": a.quantity,
            "size": "Standard-1X",
            "type": "web",
            "updated_at": a.created_at,
        })
    }

    pub fn build_json(&self, id: &str) -> Option<Value> {
        let s = self.lock();
        let b = s.builds.iter().find(|b| b.id == id)?;
        let a = s.app(&b.app)?;
        Some(json!({
            "app": { "id": a.id },
            "buildpacks": if b.generation == "fir" { Value::Null } else { json!([{ "url": "heroku/sandbox", "name": "heroku/sandbox" }]) },
            "created_at": b.created_at,
            "generation": b.generation,
            "id": b.id,
            "output_stream_url": format!("{}/streams/builds/{}", self.base(), b.id),
            "source_blob": { "checksum": null, "url": b.source_url, "version": b.source_version, "version_description": null },
            "release": b.release.as_ref().map(|r| json!({ "id": r })),
            "slug": b.slug.as_ref().map(|s| json!({ "id": s })),
            "stack": b.stack,
            "status": b.status,
            "updated_at": b.updated_at,
            "user": { "email": "sandbox@example.com", "id": ACCOUNT_ID },
        }))
    }

    pub fn promotion_json(&self, id: &str) -> Option<Value> {
        let s = self.lock();
        let p = s.promotions.iter().find(|p| p.id == id)?;
        Some(json!({
            "created_at": p.created_at,
            "id": p.id,
            "pipeline": { "id": p.pipeline },
            "source": { "app": { "id": p.source_app }, "release": { "id": p.source_release } },
            "status": p.status,
            "updated_at": p.created_at,
        }))
    }

    pub fn promotion_targets_json(&self, id: &str) -> Option<Value> {
        let s = self.lock();
        let p = s.promotions.iter().find(|p| p.id == id)?;
        Some(Value::Array(
            p.targets
                .iter()
                .enumerate()
                .map(|(i, (app, status, release, error))| {
                    json!({
                        "app": { "id": app },
                        "error_message": error,
                        "id": uuid_of(&format!("{}-{i}", p.id)),
                        "pipeline_promotion": { "id": p.id },
                        "release": release.as_ref().map(|r| json!({ "id": r })),
                        "status": status,
                    })
                })
                .collect(),
        ))
    }

    /// Stops every dyno and removes the build directories.
    pub fn kill_all(&self) {
        let s = self.lock();
        for a in &s.apps {
            for d in a.dynos.iter().chain(a.retiring.iter()) {
                if let Some(p) = &d.process {
                    p.signal(signal::KILL);
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.work_dir);
    }
}

pub const ACCOUNT_ID: &str = "5ab1e5a0-0000-4000-8000-000000000001";

/// A stable uuid-shaped id for a name (stacks, regions, sizes).
pub fn uuid_of(name: &str) -> String {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    name.hash(&mut h);
    let a = h.finish();
    (name, 1).hash(&mut h);
    let b = h.finish();
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        0x8000 | (b >> 48) & 0x3fff,
        b & 0xffff_ffff_ffff
    )
}

pub fn not_found(what: &str, key: &str) -> Failure {
    fail(404, "not_found", format!("Couldn't find that {what} ({key})."))
}
