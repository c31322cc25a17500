//! Containers on hosts behind a load balancer, over SSH: what the `ssh` and
//! `digitalocean-droplets` providers share. Only where the hosts and the balancer's
//! health check come from differs (`Inventory`): inputs for `ssh`, the DigitalOcean
//! API for droplets.
//!
//! Per host, one at a time (or `max-parallel`): drain it (the balancer's API, or the
//! app's drain switch on the host itself), stop the old container gracefully, start
//! the new one with the same name, ports and env file, wait until it answers healthy
//! on the host, gate it there, let the balancer have it back and wait until the
//! balancer must count it healthy. Every wait comes from the balancer's own check
//! (interval × threshold), never a fixed sleep. A failure on host k puts hosts k..1
//! back, in that order, on the image each ran before.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::config::human;
use crate::http::{Call, HttpClient};
use crate::providers::{
    outlast, Artifact, Capabilities, Context, Finding, Plan, PlannedBatch, Provider, ProviderError, ReleaseRef,
    Rollout, Severity, Snapshot, Target,
};
use crate::shutdown::Shutdown;

pub mod remote;
mod rollout;
pub mod settings;
pub mod ssh;

use remote::{Container, Running, Runtime};
use ssh::{Forward, Login, Session};

/// The balancer's health check, as the balancer runs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// `None`: a TCP check (a connection is enough).
    pub path: Option<String>,
    pub port: u16,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy: u32,
    pub unhealthy: u32,
}

impl Check {
    /// After this long failing, the balancer must have taken a host out: `unhealthy`
    /// failed checks, one interval apart, the last one given its full timeout.
    pub fn out_after(&self) -> Duration {
        self.interval * self.unhealthy + self.timeout
    }

    /// After this long passing, the balancer must count a host healthy: `healthy`
    /// passed checks, one interval apart, plus a little for the last answer.
    pub fn in_after(&self) -> Duration {
        self.interval * self.healthy + (self.interval / 10).min(Duration::from_secs(1))
    }

    pub fn describe(&self) -> String {
        let what = match &self.path {
            Some(p) => format!("HTTP GET {p} on port {}", self.port),
            None => format!("TCP on port {}", self.port),
        };
        format!(
            "{what} every {}, timeout {}, healthy after {}, unhealthy after {}",
            human(self.interval),
            human(self.timeout),
            self.healthy,
            self.unhealthy
        )
    }
}

/// One host: where safe-deploy logs in, and where the balancer reaches it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    /// How it is named in messages: a droplet's name, else its address.
    pub name: String,
    /// The address safe-deploy connects to over SSH.
    pub ssh: String,
    /// The address the balancer sends traffic to; the app is checked there, from the
    /// host itself.
    pub reach: String,
    /// Its droplet id, where the balancer lists droplets.
    pub droplet: Option<u64>,
}

/// The hosts and their balancer, as the inventory finds them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Layout {
    pub hosts: Vec<Host>,
    pub check: Check,
    /// The balancer takes hosts out through its API (a DigitalOcean balancer that
    /// lists droplet ids); else the app's drain switch does it.
    pub drain_by_api: bool,
    /// The balancer, for messages.
    pub balancer: String,
    /// Where the balancer sends traffic on each host: the published port when the
    /// ports input is empty.
    pub app_port: u16,
}

/// Where the hosts and the balancer's settings come from.
#[async_trait]
pub trait Inventory: Send + Sync + std::fmt::Debug {
    fn provider(&self) -> &'static str;

    async fn layout(&self, ctx: &Context) -> Result<Layout, ProviderError>;

    /// Takes a host out of the balancer (only asked where `drain_by_api`).
    async fn take_out(&self, _host: &Host, _ctx: &Context) -> Result<(), ProviderError> {
        Ok(())
    }

    /// Puts a host back in the balancer; doing it twice does no harm.
    async fn put_back(&self, _host: &Host, _ctx: &Context) -> Result<(), ProviderError> {
        Ok(())
    }

    fn api_calls(&self) -> Option<usize> {
        None
    }
}

/// What both host providers read from their inputs besides the inventory.
#[derive(Debug, Clone)]
pub struct Options {
    pub login: Login,
    pub runtime: Runtime,
    pub container: Container,
    /// The app's drain switch (a path on the app), where the balancer has no API.
    pub drain_path: Option<String>,
    pub max_parallel: usize,
    /// Who holds the lock, in its holder file: the run or the person.
    pub holder: String,
}

/// What the snapshot records per host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recorded {
    pub host: Host,
    /// What ran there; `None`: no container of that name.
    pub running: Option<Running>,
}

/// The snapshot's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub layout: Layout,
    pub hosts: Vec<Recorded>,
    /// This run's lock token, so the post step holds the same lock.
    pub token: String,
}

impl Record {
    fn of(snapshot: &Snapshot) -> Result<Record, ProviderError> {
        serde_json::from_value(snapshot.record.clone())
            .map_err(|e| ProviderError::Failed(format!("the recorded hosts cannot be read back: {e}")))
    }
}

/// The shared part of both providers; a roll-out holds it too.
pub struct Core {
    pub inventory: Box<dyn Inventory>,
    pub options: Options,
    http: HttpClient,
    sessions: tokio::sync::Mutex<HashMap<String, Arc<Connected>>>,
    /// Hosts whose lock this run holds, with its token (and the check, for the
    /// connection's forwarded port).
    locked: Mutex<Vec<(Host, Check, String)>>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("inventory", &self.inventory)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// A logged-in host and its forwarded port to the app.
pub struct Connected {
    pub session: Session,
    pub app: Forward,
}

impl std::fmt::Debug for Connected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connected").field("host", &self.session.host()).finish_non_exhaustive()
    }
}

/// A host provider: `Core` behind the `Provider` trait.
#[derive(Debug)]
pub struct HostsProvider {
    core: Arc<Core>,
}

impl HostsProvider {
    pub fn new(inventory: Box<dyn Inventory>, options: Options, http: HttpClient) -> HostsProvider {
        HostsProvider {
            core: Arc::new(Core {
                inventory,
                options,
                http,
                sessions: Default::default(),
                locked: Mutex::new(Vec::new()),
            }),
        }
    }
}

impl Core {
    fn name(&self) -> &'static str {
        self.inventory.provider()
    }

    /// The connection to `host`, opened (or opened again, after it dropped) on demand.
    pub async fn connect(&self, host: &Host, check: &Check) -> Result<Arc<Connected>, ProviderError> {
        let mut sessions = self.sessions.lock().await;
        if let Some(c) = sessions.get(&host.ssh) {
            if !c.session.is_closed() {
                return Ok(c.clone());
            }
        }
        let session = Session::open(&host.ssh, &self.options.login).await?;
        let app = session.forward(&host.reach, check.port).await?;
        let connected = Arc::new(Connected { session, app });
        sessions.insert(host.ssh.clone(), connected.clone());
        Ok(connected)
    }

    /// Runs `command` on `host`; a non-zero status is an error saying `what` failed.
    pub async fn run(&self, host: &Host, check: &Check, what: &str, command: &str) -> Result<String, ProviderError> {
        let c = self.connect(host, check).await?;
        tracing::debug!("{}: {command}", host.name);
        let out = c.session.run(command).await?;
        if !out.ok() {
            return Err(ProviderError::Failed(format!(
                "{what} on {} failed (exit {}): {}",
                host.name,
                out.status,
                out.said()
            )));
        }
        Ok(out.stdout)
    }

    /// What the app's container runs on `host`; `None` when there is none.
    pub async fn running(&self, host: &Host, check: &Check) -> Result<Option<Running>, ProviderError> {
        let c = self.connect(host, check).await?;
        let out = c.session.run(&self.options.runtime.inspect(&self.options.container)).await?;
        if !out.ok() {
            let said = out.said();
            if said.contains("No such") || said.contains("no such") {
                return Ok(None);
            }
            return Err(ProviderError::Failed(format!(
                "reading the container {} on {} failed (exit {}): {said}",
                self.options.container.name, host.name, out.status
            )));
        }
        Running::parse(&out.stdout).map(Some).ok_or_else(|| {
            ProviderError::Failed(format!(
                "{} inspect on {} printed nothing safe-deploy can read",
                self.options.runtime.binary, host.name
            ))
        })
    }

    /// One check of the app on the host, as the balancer makes it: `Ok(true)` when it
    /// passes (HTTP 200 to 399, or a TCP answer).
    pub async fn healthy(&self, host: &Host, check: &Check) -> Result<bool, ProviderError> {
        let c = self.connect(host, check).await?;
        let mut url = c.app.url.clone();
        url.set_path(check.path.as_deref().unwrap_or("/"));
        match self.http.probe(&url, &[], check.timeout).await {
            Ok((status, _)) => Ok(check.path.is_none() || (200..400).contains(&status)),
            Err(_) => Ok(false),
        }
    }

    /// Sends `method` to the app's drain switch on the host; the status it answered.
    pub async fn drain_switch(
        &self,
        host: &Host,
        check: &Check,
        path: &str,
        method: reqwest::Method,
        shutdown: &Shutdown,
    ) -> Result<u16, ProviderError> {
        let c = self.connect(host, check).await?;
        let mut url = c.app.url.clone();
        url.set_path(path);
        let call = Call::new(method, url).idempotent(true);
        let reply = self.http.send(&call, shutdown).await.map_err(ProviderError::from_http)?;
        Ok(reply.status)
    }

    /// Takes the deploy lock on every host, in order; gives back what it took when one
    /// is held by someone else.
    async fn lock_all(&self, layout: &Layout, token: &str, ctx: &Context) -> Result<(), ProviderError> {
        let command = remote::lock(&self.options.container, token, &self.options.holder);
        for host in &layout.hosts {
            let out = outlast(ctx, "take the deploy lock", || {
                self.run(host, &layout.check, "taking the deploy lock", &command)
            })
            .await?;
            let mut lines = out.lines();
            match lines.next().unwrap_or_default().trim() {
                "taken" | "ours" => {
                    let mut locked = self.locked.lock().unwrap();
                    if !locked.iter().any(|(h, _, _)| h.ssh == host.ssh) {
                        locked.push((host.clone(), layout.check.clone(), token.to_string()));
                    }
                }
                _ => {
                    let holder = lines.collect::<Vec<_>>().join(" ");
                    let holder = if holder.trim().is_empty() { "no holder written".to_string() } else { holder };
                    self.unlock_all().await;
                    return Err(ProviderError::Conflict {
                        what: format!("the deploy lock on {}", host.name),
                        detail: format!(
                            "{}; if that deploy is gone, release the lock with: ssh {}@{} rm -rf {}",
                            holder.trim(),
                            self.options.login.user,
                            host.ssh,
                            remote::lock_dir(&self.options.container)
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// Gives back every lock this run holds; what could not be given back, for the summary.
    async fn unlock_all(&self) -> Vec<String> {
        let held: Vec<(Host, Check, String)> = std::mem::take(&mut *self.locked.lock().unwrap());
        let mut left = Vec::new();
        for (host, check, token) in held {
            let command = remote::unlock(&self.options.container, &token);
            let mut done = false;
            for _ in 0..3 {
                if self.run(&host, &check, "releasing the deploy lock", &command).await.is_ok() {
                    done = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            if !done {
                left.push(format!(
                    "the deploy lock on {} could not be released; release it with: ssh {}@{} rm -rf {}",
                    host.name,
                    self.options.login.user,
                    host.ssh,
                    remote::lock_dir(&self.options.container)
                ));
            }
        }
        left
    }

    /// Waits until the app on `host` passes its check on the host itself; fails early
    /// when the container stopped running.
    pub async fn until_healthy(&self, host: &Host, check: &Check, ctx: &Context) -> Result<(), ProviderError> {
        let started = Instant::now();
        let what = format!("{} answers healthy on the host", host.name);
        let mut asked_container = Instant::now();
        loop {
            ctx.check_cancelled()?;
            if self.healthy(host, check).await.unwrap_or(false) {
                ctx.progress.instance(&host.name, "healthy on the host", None);
                return Ok(());
            }
            if asked_container.elapsed() >= Duration::from_secs(2) {
                asked_container = Instant::now();
                if let Ok(Some(r)) = self.running(host, check).await {
                    if !r.running {
                        let logs = self.logs(host, check).await;
                        return Err(ProviderError::Failed(format!(
                            "the new container on {} exited before it answered healthy{logs}",
                            host.name
                        )));
                    }
                }
            }
            if Instant::now() >= ctx.deadline {
                return Err(ProviderError::timeout(what, started.elapsed(), "deploy-timeout"));
            }
            ctx.progress.waiting(&what, started, Some(ctx.deadline));
            let pause = (check.interval / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
            if !ctx.shutdown.sleep(pause).await {
                return Err(ctx.check_cancelled().err().unwrap_or(ProviderError::Cancelled("a signal")));
            }
        }
    }

    async fn logs(&self, host: &Host, check: &Check) -> String {
        match self.connect(host, check).await {
            Ok(c) => match c.session.run(&self.options.runtime.logs(&self.options.container)).await {
                Ok(out) if !out.stdout.trim().is_empty() => {
                    format!("; its last lines: {}", crate::providers::logs::excerpt(out.stdout.trim()))
                }
                _ => String::new(),
            },
            Err(_) => String::new(),
        }
    }

    /// Waits `time` while the balancer counts checks, saying what it waits for.
    pub async fn wait_for_balancer(&self, what: &str, time: Duration, ctx: &Context) -> Result<(), ProviderError> {
        ctx.progress.log(self.name(), &format!("{what}: {}", human(time)));
        let started = Instant::now();
        ctx.progress.waiting(what, started, Some(started + time));
        if !ctx.shutdown.sleep(time).await {
            return Err(ctx.check_cancelled().err().unwrap_or(ProviderError::Cancelled("a signal")));
        }
        Ok(())
    }

    /// Takes `host` out of the balancer: by API, or with the app's drain switch, then
    /// waits until the balancer must have noticed. `changed` turns true once a drain
    /// was sent. Nothing to do for a host with no running container.
    pub async fn drain(
        &self,
        host: &Host,
        layout: &Layout,
        ctx: &Context,
        changed: &(dyn Fn() + Sync),
    ) -> Result<(), ProviderError> {
        let check = &layout.check;
        if layout.drain_by_api {
            changed();
            outlast(ctx, "take the host out of the balancer", || self.inventory.take_out(host, ctx)).await?;
            ctx.progress.instance(&host.name, "out of the balancer", None);
            return Ok(());
        }
        let Some(path) = self.options.drain_path.clone() else {
            return Ok(());
        };
        let status = outlast(ctx, "drain the app", || {
            self.drain_switch(host, check, &path, reqwest::Method::POST, &ctx.shutdown)
        })
        .await?;
        if !(200..300).contains(&status) {
            return Err(ProviderError::Failed(format!(
                "the app on {} answered {status} to POST {path}, so it has no drain switch there and the balancer would keep sending it requests while it stops; give the app one (POST makes its health check fail, DELETE undoes it) and set drain-path, or set drain-path to empty to stop without draining",
                host.name
            )));
        }
        changed();
        ctx.progress.instance(&host.name, "draining", None);
        self.wait_for_balancer(
            &format!("until the balancer must have taken {} out", host.name),
            check.out_after(),
            ctx,
        )
        .await?;
        if check.path.is_some() && self.healthy(host, check).await? {
            return Err(ProviderError::Failed(format!(
                "the app on {} still answers its health check (GET {} on port {}) after POST {path}, so the balancer still sends it requests; its drain switch must make the health check fail",
                host.name,
                check.path.as_deref().unwrap_or("/"),
                check.port
            )));
        }
        Ok(())
    }

    /// Lets the balancer have `host` again and waits until it must count it healthy.
    pub async fn admit(&self, host: &Host, layout: &Layout, ctx: &Context) -> Result<(), ProviderError> {
        if layout.drain_by_api {
            outlast(ctx, "put the host back in the balancer", || self.inventory.put_back(host, ctx)).await?;
        }
        self.wait_for_balancer(
            &format!("until the balancer must count {} healthy", host.name),
            layout.check.in_after(),
            ctx,
        )
        .await?;
        if !self.healthy(host, &layout.check).await? {
            return Err(ProviderError::Failed(format!(
                "the app on {} stopped answering its health check while the balancer took it back",
                host.name
            )));
        }
        ctx.progress.instance(&host.name, "serving behind the balancer", None);
        Ok(())
    }

    /// Replaces the container on `host` with `image`: stop the old one gracefully, then
    /// start the new one with the same name, ports and env file.
    pub async fn replace(&self, host: &Host, layout: &Layout, image: &str, ctx: &Context) -> Result<(), ProviderError> {
        let (rt, check) = (&self.options.runtime, &layout.check);
        let mut c = self.options.container.clone();
        if c.ports.is_empty() {
            c.ports = vec![(layout.app_port, layout.app_port)];
        }
        let c = &c;
        ctx.progress.instance(&host.name, "stopping", None);
        if self.running(host, check).await?.is_some() {
            self.run(host, check, "stopping the old container", &rt.stop(c)).await?;
            self.run(host, check, "removing the old container", &rt.remove(c)).await?;
        }
        self.run(host, check, &format!("starting {image}"), &rt.run(c, image)).await?;
        ctx.progress.instance(&host.name, "started", Some(image));
        Ok(())
    }

    /// Puts `recorded` back on its host with the same care as a deploy; does nothing
    /// where it runs already (so it can run twice).
    async fn restore_host(&self, recorded: &Recorded, layout: &Layout, ctx: &Context) -> Result<bool, ProviderError> {
        let host = &recorded.host;
        let check = &layout.check;
        let now = self.running(host, check).await?;
        let same = match (&now, &recorded.running) {
            (Some(n), Some(r)) => n.image_id == r.image_id && n.running,
            (None, None) => true,
            _ => false,
        };
        if same {
            // It may still be out of the balancer, or drained.
            if layout.drain_by_api {
                outlast(ctx, "put the host back in the balancer", || self.inventory.put_back(host, ctx)).await?;
            } else if let Some(path) = &self.options.drain_path {
                let _ = self.drain_switch(host, check, path, reqwest::Method::DELETE, &ctx.shutdown).await;
            }
            return Ok(false);
        }
        ctx.progress.log(self.name(), &format!("putting {} back on {}", host.name, recorded.label()));
        if now.as_ref().is_some_and(|n| n.running) {
            self.drain(host, layout, ctx, &|| {}).await?;
        }
        match &recorded.running {
            Some(r) => {
                let image = self.restorable(host, check, r).await?;
                self.replace(host, layout, &image, ctx).await?;
                self.until_healthy(host, check, ctx).await?;
                self.admit(host, layout, ctx).await?;
            }
            None => {
                let rt = &self.options.runtime;
                self.run(host, check, "stopping the new container", &rt.stop(&self.options.container)).await?;
                self.run(host, check, "removing the new container", &rt.remove(&self.options.container)).await?;
                if layout.drain_by_api {
                    outlast(ctx, "put the host back in the balancer", || self.inventory.put_back(host, ctx)).await?;
                }
            }
        }
        Ok(true)
    }

    /// How to start the recorded image again: by the reference it ran as while that
    /// still names the same image (a readable name), else by its image id (a tag that
    /// was pulled again since).
    async fn restorable(&self, host: &Host, check: &Check, r: &Running) -> Result<String, ProviderError> {
        let id = self.run(host, check, "reading an image", &self.options.runtime.image_id(&r.image)).await;
        Ok(match id {
            Ok(id) if id.trim() == r.image_id => r.image.clone(),
            _ => r.image_id.clone(),
        })
    }
}

impl Recorded {
    fn label(&self) -> String {
        match &self.running {
            Some(r) => r.image.clone(),
            None => "no container".into(),
        }
    }
}

/// What runs, summed up over hosts: one image, or which image on how many.
fn release_of(hosts: &[Recorded]) -> (ReleaseRef, Artifact) {
    let mut images: Vec<(String, usize)> = Vec::new();
    for h in hosts {
        let label = match &h.running {
            Some(r) if r.running => r.image.clone(),
            Some(r) => format!("{} (stopped)", r.image),
            None => "no container".into(),
        };
        match images.iter_mut().find(|(i, _)| *i == label) {
            Some((_, n)) => *n += 1,
            None => images.push((label, 1)),
        }
    }
    match images.as_slice() {
        [] => (ReleaseRef::named("no hosts"), Artifact::Nothing),
        [(image, _)] => {
            let digest = hosts.first().and_then(|h| h.running.as_ref()).map(|r| r.image_id.clone());
            (ReleaseRef::named(image), Artifact::Image { reference: image.clone(), digest })
        }
        many => {
            let label = many.iter().map(|(i, n)| format!("{i} on {n}")).collect::<Vec<_>>().join(", ");
            (ReleaseRef::named(&format!("mixed: {label}")), Artifact::Mixed { images: many.to_vec() })
        }
    }
}

#[async_trait]
impl Provider for HostsProvider {
    fn name(&self) -> &'static str {
        self.core.name()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { history: false, single_instances: true, strategies: &[], images: true, directories: false }
    }

    async fn snapshot(&self, ctx: &Context) -> Result<Snapshot, ProviderError> {
        let core = &self.core;
        let layout = core.inventory.layout(ctx).await?;
        let mut hosts = Vec::new();
        for host in &layout.hosts {
            let running = core.running(host, &layout.check).await?;
            hosts.push(Recorded { host: host.clone(), running });
        }
        let (release, artifact) = release_of(&hosts);
        let token = format!("{:016x}", fastrand::u64(..));
        let record = Record { layout, hosts, token };
        Ok(Snapshot { release, artifact, record: serde_json::to_value(&record).expect("a record serializes") })
    }

    async fn preflight(&self, live: &Snapshot, target: &Target, ctx: &Context) -> Result<Vec<Finding>, ProviderError> {
        let core = &self.core;
        let record = Record::of(live)?;
        let layout = &record.layout;
        let n = layout.hosts.len();
        let mut findings = vec![Finding {
            severity: Severity::Info,
            message: format!(
                "{} hosts behind {}; its check: {}. Each host waits {} to be taken out and {} to be taken back",
                n,
                layout.balancer,
                layout.check.describe(),
                human(if layout.drain_by_api { Duration::ZERO } else { layout.check.out_after() }),
                human(layout.check.in_after())
            ),
        }];
        let mut add = |severity, message: String| findings.push(Finding { severity, message });
        if n == 0 {
            add(Severity::Blocker, format!("{} found no hosts to deploy to", layout.balancer));
        }
        if n == 1 {
            add(
                Severity::Warning,
                format!(
                    "only one host ({}): while it changes, the balancer has no other host to send requests to",
                    layout.hosts[0].name
                ),
            );
        }
        if !layout.drain_by_api && core.options.drain_path.is_none() {
            add(Severity::Warning, "drain-path is empty: each host is stopped without being drained first, so the balancer sends it requests that fail until it notices (up to unhealthy threshold × interval)".into());
        }
        if !layout.drain_by_api && layout.check.path.is_none() {
            add(Severity::Warning, "the balancer checks TCP only: a drain switch cannot make that check fail, so hosts are stopped while the balancer may still send them requests; use an HTTP check".into());
        }
        for r in &record.hosts {
            if r.running.is_none() {
                add(
                    Severity::Warning,
                    format!(
                        "{} runs no container named {}: it gets one, and a rollback there removes it",
                        r.host.name, core.options.container.name
                    ),
                );
            }
        }
        if let Ok(image) = target.source.image_or_release(core.name()) {
            if !image.contains("@sha256:") && !image.starts_with("sha256:") {
                add(Severity::Info, format!("{image} is a tag: each host pulls what it names now; the recorded image ids keep a rollback exact"));
            }
        }
        for host in &layout.hosts {
            let present = core.connect(host, &layout.check).await?.session.run(&core.options.runtime.present()).await?;
            if !present.ok() {
                add(
                    Severity::Blocker,
                    format!(
                        "{} has no {} on its PATH; install it there, or set runtime",
                        host.name, core.options.runtime.binary
                    ),
                );
            }
        }
        let _ = ctx;
        Ok(findings)
    }

    fn plan(&self, live: &Snapshot, target: &Target) -> Plan {
        let core = &self.core;
        let Ok(record) = Record::of(live) else { return Plan::default() };
        let layout = &record.layout;
        let image = target.label();
        let drain = if layout.drain_by_api {
            format!("take it out of {} by API", layout.balancer)
        } else if let Some(p) = &core.options.drain_path {
            format!(
                "POST {p} on the host, wait {} until the balancer must have taken it out",
                human(layout.check.out_after())
            )
        } else {
            "no drain (drain-path is empty)".to_string()
        };
        let batches = rollout::groups(layout.hosts.len(), core.options.max_parallel)
            .into_iter()
            .map(|group| {
                let names: Vec<&str> = group.iter().map(|&i| layout.hosts[i].name.as_str()).collect();
                PlannedBatch {
                    label: names.join(", "),
                    steps: vec![
                        drain.clone(),
                        format!(
                            "stop {} (up to {} for requests in flight)",
                            core.options.container.name,
                            human(core.options.container.stop_timeout)
                        ),
                        format!("start {image}"),
                        "wait until it answers healthy on the host".into(),
                        format!(
                            "let the balancer have it back and wait {} until it must count it healthy",
                            human(layout.check.in_after())
                        ),
                    ],
                }
            })
            .collect();
        Plan {
            prepare: vec![
                format!("take the deploy lock on {} hosts", layout.hosts.len()),
                format!("pull {image} on every host"),
            ],
            batches,
        }
    }

    async fn prepare(
        &self,
        live: &Snapshot,
        target: &Target,
        ctx: &Context,
    ) -> Result<Box<dyn Rollout>, ProviderError> {
        let core = &self.core;
        let record = Record::of(live)?;
        let image = target.source.image_or_release(core.name())?;
        core.lock_all(&record.layout, &record.token, ctx).await?;
        let check = record.layout.check.clone();
        let pulls = record.layout.hosts.iter().map(|host| {
            let (what, command, check) = (format!("pulling {image}"), core.options.runtime.pull(&image), check.clone());
            let image = image.clone();
            async move {
                outlast(ctx, "pull the image", || core.run(host, &check, &what, &command)).await?;
                ctx.progress.log(core.name(), &format!("{} pulled {image}", host.name));
                Ok::<_, ProviderError>(())
            }
        });
        for pulled in futures_util::future::join_all(pulls).await {
            pulled?;
        }
        Ok(Box::new(rollout::HostsRollout::new(core.clone(), record, image)))
    }

    async fn restore(&self, snapshot: &Snapshot, ctx: &Context) -> Result<ReleaseRef, ProviderError> {
        let core = &self.core;
        let record = Record::of(snapshot)?;
        core.lock_all(&record.layout, &record.token, ctx).await?;
        // The last host changed first, back to the first: a roll-out stops at the
        // failing host, so the hosts after it were never touched.
        for recorded in record.hosts.iter().rev() {
            outlast(ctx, &format!("put {} back", recorded.host.name), || {
                core.restore_host(recorded, &record.layout, ctx)
            })
            .await?;
        }
        Ok(snapshot.release.clone())
    }

    async fn in_effect(&self, snapshot: &Snapshot, ctx: &Context) -> Result<bool, ProviderError> {
        let core = &self.core;
        let record = Record::of(snapshot)?;
        for r in &record.hosts {
            let now = outlast(ctx, "read a host", || core.running(&r.host, &record.layout.check)).await?;
            let same = match (&now, &r.running) {
                (Some(n), Some(r)) => n.image_id == r.image_id && n.running,
                (None, None) => true,
                _ => false,
            };
            if !same {
                return Ok(false);
            }
        }
        Ok(true)
    }

    async fn history(&self, _ctx: &Context) -> Result<Vec<ReleaseRef>, ProviderError> {
        Ok(Vec::new())
    }

    async fn finish(&self) -> Vec<String> {
        let left = self.core.unlock_all().await;
        let sessions: Vec<Arc<Connected>> = self.core.sessions.lock().await.drain().map(|(_, c)| c).collect();
        for c in sessions {
            c.session.close().await;
        }
        left
    }

    fn api_calls(&self) -> Option<usize> {
        self.core.inventory.api_calls()
    }
}
