//! Containers on hosts behind a load balancer, over SSH: what the `ssh` and
//! `digitalocean-droplets` providers share. Only where the hosts and the balancer's
//! health check come from differs (`Inventory`): inputs for `ssh`, the DigitalOcean
//! API for droplets.
//!
//! Before the first change, on every host: the lock, the image pulled, the env file
//! readable, the ports free of other containers, and the balancer's check passing on
//! the live release. Per host, one at a time (or `max-unavailable`): drain it (the
//! balancer's API, or the app's drain switch on the host itself), stop the old
//! container gracefully and keep it aside under another name, start the new one with
//! the same name, ports and env file, wait until it answers healthy on the host, gate
//! it there, let the balancer have it back and wait until the balancer must count it
//! healthy. Where only a drain switch keeps traffic away, a gated host's new container
//! starts on the host's loopback and is gated there, then started on the balancer's
//! port. Every wait comes from the balancer's own check (interval × threshold), never
//! a fixed sleep. A failure on host k puts hosts k..1 back, in that order, each as it
//! was: its own kept container started again, with its own env, ports and options.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::http::{Call, HttpClient};
use crate::inputs::human;
use crate::providers::batches::BatchSize;
use crate::providers::{
    batches, outlast, restore, Capabilities, Context, Ending, Finding, LockFor, LockKind, Plan, PlannedBatch, Provider,
    ProviderError, ReleaseRef, Rollout, Severity, Snapshot, Target,
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
    /// The HTTP check goes over TLS (the balancer's `https` or `http2` check), taking
    /// any certificate as a balancer does.
    #[serde(default)]
    pub tls: bool,
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

    /// `out_after` as its sum, for a person watching the wait: "2 failed checks 1s
    /// apart + a 1s timeout = 3s".
    pub fn out_arithmetic(&self) -> String {
        format!(
            "{} failed checks {} apart + a {} timeout = {}",
            self.unhealthy,
            human(self.interval),
            human(self.timeout),
            human(self.out_after())
        )
    }

    /// `in_after` as its sum: "2 passed checks 1s apart, and a moment = 2.1s".
    pub fn in_arithmetic(&self) -> String {
        format!(
            "{} passed checks {} apart, and a moment = {}",
            self.healthy,
            human(self.interval),
            human(self.in_after())
        )
    }

    pub fn describe(&self) -> String {
        let what = match &self.path {
            Some(p) if self.tls => format!("HTTPS GET {p} on port {}", self.port),
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

    /// The droplet ids the balancer lists now (only asked where `drain_by_api`).
    async fn members(&self, _ctx: &Context) -> Result<Vec<u64>, ProviderError> {
        Ok(Vec::new())
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
    /// How many hosts change at once after the first (`max-unavailable`).
    pub max_unavailable: BatchSize,
    /// The input that set it: `max-unavailable`, or its old name `max-parallel`.
    pub batch_input: &'static str,
    /// How long a new container gets to pass its check on the host.
    pub boot_timeout: Duration,
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
        snapshot.record_as("hosts")
    }

    /// The name the old container is kept under while this run changes its host.
    pub fn kept(&self, container: &Container) -> String {
        format!("{}-before-{}", container.name, self.token.get(..8).unwrap_or(&self.token))
    }
}

/// Where a new container listens before the balancer may have it: each of its host
/// ports, published on the host's loopback at a port docker picked.
pub type Staged = HashMap<u16, u16>;

/// The shared part of both providers; a roll-out holds it too.
pub struct Core {
    pub inventory: Box<dyn Inventory>,
    pub options: Options,
    http: HttpClient,
    sessions: tokio::sync::Mutex<HashMap<String, Arc<Connected>>>,
    /// Hosts whose lock this run holds, with its token.
    locked: Mutex<Vec<(Host, String)>>,
    /// Old containers this run kept aside, by host: gone once put back, or once the new
    /// release is proved.
    kept: Mutex<Vec<(Host, String)>>,
    /// Hosts whose live release already failed the balancer's check before the run: a
    /// failing check there is not this run's doing, and is not held against a restore.
    sick: Mutex<Vec<String>>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("inventory", &self.inventory)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// A logged-in host and the local ports forwarded to its app (the check's port, the
/// traffic port), opened as they are first asked for.
pub struct Connected {
    pub session: Session,
    reach: String,
    forwards: tokio::sync::Mutex<HashMap<(String, u16), Forward>>,
}

impl Connected {
    /// A local URL that reaches `port` at the address the balancer uses, from the host.
    pub async fn url(&self, port: u16) -> Result<url::Url, ProviderError> {
        self.url_at(&self.reach.clone(), port).await
    }

    /// A local URL that reaches `addr:port` from the host (its loopback, say).
    pub async fn url_at(&self, addr: &str, port: u16) -> Result<url::Url, ProviderError> {
        let mut forwards = self.forwards.lock().await;
        if let Some(f) = forwards.get(&(addr.to_string(), port)) {
            return Ok(f.url.clone());
        }
        let forward = self.session.forward(addr, port).await?;
        let url = forward.url.clone();
        forwards.insert((addr.to_string(), port), forward);
        Ok(url)
    }
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
                kept: Mutex::new(Vec::new()),
                sick: Mutex::new(Vec::new()),
            }),
        }
    }
}

impl Core {
    fn name(&self) -> &'static str {
        self.inventory.provider()
    }

    /// The connection to `host`, opened (or opened again, after it dropped) on demand.
    pub async fn connect(&self, host: &Host) -> Result<Arc<Connected>, ProviderError> {
        let mut sessions = self.sessions.lock().await;
        if let Some(c) = sessions.get(&host.ssh) {
            if !c.session.is_closed() {
                return Ok(c.clone());
            }
        }
        let session = Session::open(&host.ssh, &self.options.login).await?;
        let connected = Arc::new(Connected { session, reach: host.reach.clone(), forwards: Default::default() });
        sessions.insert(host.ssh.clone(), connected.clone());
        Ok(connected)
    }

    /// Runs `command` on `host`; a non-zero status is an error saying `what` failed.
    pub async fn run(&self, host: &Host, ctx: &Context, what: &str, command: &str) -> Result<String, ProviderError> {
        let c = self.connect(host).await?;
        tracing::debug!("{}: {command}", host.name);
        let out = c.session.run(command, limit(ctx)).await?;
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
    pub async fn running(&self, host: &Host, ctx: &Context) -> Result<Option<Running>, ProviderError> {
        self.running_named(host, &self.options.container.name, ctx).await
    }

    /// What the container named `name` runs on `host`; `None` when there is none.
    async fn running_named(&self, host: &Host, name: &str, ctx: &Context) -> Result<Option<Running>, ProviderError> {
        let c = self.connect(host).await?;
        let out = c.session.run(&self.options.runtime.inspect(name), limit(ctx)).await?;
        if !out.ok() {
            let said = out.said();
            if said.contains("No such") || said.contains("no such") {
                return Ok(None);
            }
            return Err(ProviderError::Failed(format!(
                "reading the container {name} on {} failed (exit {}): {said}",
                host.name, out.status
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
        Ok(self.check_once(host, check, None).await?.is_ok())
    }

    /// One check as the balancer makes it: `Ok(Err(why))` when it fails, e.g.
    /// "answered 500" or "no answer (connection refused)". With `staged`, made where a
    /// staged container listens on the host's loopback.
    async fn check_once(
        &self,
        host: &Host,
        check: &Check,
        staged: Option<&Staged>,
    ) -> Result<Result<(), String>, ProviderError> {
        let Some(mut url) = self.url_for(host, check.port, staged).await? else {
            return Ok(Err(format!("no port of the new container is the check's port {}", check.port)));
        };
        url.set_path(check.path.as_deref().unwrap_or("/"));
        if check.tls && check.path.is_some() {
            let _ = url.set_scheme("https");
        }
        Ok(match self.http.probe_backend(&url, check.timeout).await {
            Ok((status, _)) if check.path.is_none() || (200..400).contains(&status) => Ok(()),
            Ok((status, _)) => Err(format!("answered {status}")),
            Err((_, why)) => Err(format!("no answer ({why})")),
        })
    }

    /// A local URL reaching host port `port` as the app serves it: on the balancer's
    /// address, or where a staged container listens on the host's loopback (`None` when
    /// it publishes no such port).
    pub async fn url_for(
        &self,
        host: &Host,
        port: u16,
        staged: Option<&Staged>,
    ) -> Result<Option<url::Url>, ProviderError> {
        let c = self.connect(host).await?;
        Ok(match staged {
            Some(ports) => match ports.get(&port) {
                Some(at) => Some(c.url_at("127.0.0.1", *at).await?),
                None => None,
            },
            None => Some(c.url(port).await?),
        })
    }

    /// Sends `method` to the app's drain switch on the host; the status it answered.
    pub async fn drain_switch(
        &self,
        host: &Host,
        port: u16,
        path: &str,
        method: reqwest::Method,
        shutdown: &Shutdown,
    ) -> Result<u16, ProviderError> {
        let c = self.connect(host).await?;
        let mut url = c.url(port).await?;
        url.set_path(path);
        let call = Call::new(method, url).idempotent(true);
        let reply = self.http.send(&call, shutdown).await.map_err(ProviderError::from_http)?;
        Ok(reply.status)
    }

    /// Takes the deploy lock on every host, in order; gives back what it took when one
    /// is held by someone else.
    async fn lock_all(
        &self,
        layout: &Layout,
        token: &str,
        purpose: LockFor,
        ctx: &Context,
    ) -> Result<(), ProviderError> {
        let command = remote::lock(&self.options.container, token, &self.options.holder);
        if purpose == LockFor::Restore {
            // The run being put back holds these locks under the recorded token: each is
            // given back at the end, even on a host this step cannot reach now (a lock
            // is removed only by its own token, so no one else's goes with it).
            let mut locked = self.locked.lock().unwrap_or_else(PoisonError::into_inner);
            for host in &layout.hosts {
                if !locked.iter().any(|(h, _)| h.ssh == host.ssh) {
                    locked.push((host.clone(), token.to_string()));
                }
            }
        }
        for host in &layout.hosts {
            let taken =
                outlast(ctx, "take the deploy lock", || self.run(host, ctx, "taking the deploy lock", &command));
            let out = match taken.await {
                Ok(out) => out,
                // A host out of reach does not keep the others from being put back; the
                // restore meets it again and says what is wrong there.
                Err(e) if purpose == LockFor::Restore && !matches!(e, ProviderError::Cancelled(_)) => {
                    ctx.progress
                        .log("take the deploy lock", &format!("{}: {e}; putting the other hosts back", host.name));
                    continue;
                }
                Err(e) => return Err(e),
            };
            // Whatever a login script printed comes first; the lock's answer is the
            // first line that is one of its words.
            let mut lines = out.lines().skip_while(|l| !matches!(l.trim(), "taken" | "ours" | "held"));
            match lines.next().unwrap_or_default().trim() {
                "taken" | "ours" => {
                    let mut locked = self.locked.lock().unwrap_or_else(PoisonError::into_inner);
                    if !locked.iter().any(|(h, _)| h.ssh == host.ssh) {
                        locked.push((host.clone(), token.to_string()));
                    }
                }
                _ => {
                    let holder = lines.collect::<Vec<_>>().join(" ");
                    let holder = if holder.trim().is_empty() { "no holder written".to_string() } else { holder };
                    self.unlock_all(ctx).await;
                    return Err(ProviderError::Conflict {
                        what: format!("the deploy lock on {}", host.name),
                        detail: format!("{}; if that deploy is gone, {}", holder.trim(), self.release_hint(host)),
                    });
                }
            }
        }
        Ok(())
    }

    /// The command that releases the lock on `host` by hand.
    fn release_hint(&self, host: &Host) -> String {
        let port = match self.options.login.port {
            22 => String::new(),
            p => format!("-p {p} "),
        };
        format!(
            "release the lock with: ssh {port}{}@{} rm -rf {}",
            self.options.login.user,
            host.ssh,
            remote::lock_dir(&self.options.container)
        )
    }

    /// Gives back every lock this run holds; what could not be given back, for the summary.
    async fn unlock_all(&self, ctx: &Context) -> Vec<String> {
        let held: Vec<(Host, String)> =
            std::mem::take(&mut *self.locked.lock().unwrap_or_else(PoisonError::into_inner));
        // Side by side: a host that does not answer must not use up the others' time.
        let each = held.iter().map(|(host, token)| async move {
            let command = remote::unlock(&self.options.container, token);
            let released =
                outlast(ctx, "release the deploy lock", || self.run(host, ctx, "releasing the deploy lock", &command));
            match released.await {
                Ok(_) => None,
                Err(_) => {
                    Some(format!("the deploy lock on {} could not be released; {}", host.name, self.release_hint(host)))
                }
            }
        });
        futures_util::future::join_all(each).await.into_iter().flatten().collect()
    }

    /// Waits until the app on `host` passes its check on the host itself (where it is
    /// staged, when it is); fails early when the container stopped running.
    pub async fn until_healthy(
        &self,
        host: &Host,
        check: &Check,
        staged: Option<&Staged>,
        ctx: &Context,
    ) -> Result<(), ProviderError> {
        // A release that answers but fails its check is given boot-timeout, not the
        // whole deploy-timeout: kamal-proxy gives a new container 30 s.
        let every = (check.interval / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let mut poll = ctx
            .poll(format!("{} to pass its check on the host", host.name), every)
            .within(self.options.boot_timeout, "boot-timeout");
        let mut asked_container = Instant::now();
        loop {
            let last = match self.check_once(host, check, staged).await {
                Ok(Ok(())) => {
                    ctx.progress.instance(&host.name, "healthy on the host", None);
                    return Ok(());
                }
                Ok(Err(why)) => why,
                Err(e) => e.to_string(),
            };
            if asked_container.elapsed() >= Duration::from_secs(2) {
                asked_container = Instant::now();
                if let Ok(Some(r)) = self.running(host, ctx).await {
                    if !r.running {
                        let logs = self.logs(host, ctx).await;
                        return Err(ProviderError::Failed(format!(
                            "the new container on {} exited before it answered healthy{logs}",
                            host.name
                        )));
                    }
                }
            }
            poll.next("").await.map_err(|e| match e {
                ProviderError::Timeout { .. } => ProviderError::Failed(format!(
                    "the new container on {} did not pass the balancer's check on the host within {} (its last check {last}); raise {} if the app needs longer to start",
                    host.name,
                    human(poll.elapsed()),
                    ctx.surface.name(poll.input())
                )),
                other => other,
            })?;
        }
    }

    async fn logs(&self, host: &Host, ctx: &Context) -> String {
        match self.connect(host).await {
            Ok(c) => match c.session.run(&self.options.runtime.logs(&self.options.container), limit(ctx)).await {
                Ok(out) if !out.stdout.trim().is_empty() => {
                    format!("; its last lines: {}", crate::providers::logs::excerpt(out.stdout.trim()))
                }
                _ => String::new(),
            },
            Err(_) => String::new(),
        }
    }

    /// Waits `time` while the balancer counts checks, saying what it waits for. A wait
    /// longer than the run has left fails at once, rather than at the deadline.
    pub async fn wait_for_balancer(&self, what: &str, time: Duration, ctx: &Context) -> Result<(), ProviderError> {
        if time > ctx.remaining() {
            return Err(ProviderError::timeout(format!("waiting for {what} ({})", human(time)), time, ctx.budget));
        }
        let started = Instant::now();
        ctx.progress.waiting(what, started, Some(started + time));
        if !ctx.shutdown.sleep(time).await {
            return Err(ctx.check_cancelled().err().unwrap_or(ProviderError::Cancelled("a signal")));
        }
        Ok(())
    }

    /// Takes `host` out of the balancer: by API, or with the app's drain switch, then
    /// waits until the balancer must have noticed. `changed` is called before anything
    /// is sent (a drain whose answer never came may have happened); an app that answers
    /// the switch with a refusal changed nothing.
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
        let sent = outlast(ctx, "drain the app", || {
            self.drain_switch(host, layout.app_port, &path, reqwest::Method::POST, &ctx.shutdown)
        })
        .await;
        let status = match sent {
            Ok(status) => status,
            Err(e) => {
                changed();
                return Err(e);
            }
        };
        if !(200..300).contains(&status) {
            return Err(ProviderError::Failed(format!(
                "the app on {} answered {status} to POST {path}, so it has no drain switch there and the balancer would keep sending it requests while it stops; give the app one (POST makes its health check fail, DELETE undoes it), or set drain-path: none to stop hosts without draining",
                host.name
            )));
        }
        changed();
        ctx.progress.instance(&host.name, "draining", None);
        let what = format!("the balancer to take {} out ({})", host.name, check.out_arithmetic());
        self.wait_for_balancer(&what, check.out_after(), ctx).await?;
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

    /// Takes a host out before it is put back: a broken release may not answer its
    /// drain switch at all, so where it does not, the wait alone does it (the balancer
    /// takes out a host that fails its check by itself).
    async fn drain_for_restore(&self, host: &Host, layout: &Layout, ctx: &Context) -> Result<(), ProviderError> {
        let check = &layout.check;
        if layout.drain_by_api {
            return self.drain(host, layout, ctx, &|| {}).await;
        }
        let failing = !self.healthy(host, check).await.unwrap_or(false);
        let drained = match (&self.options.drain_path, failing) {
            (Some(path), false) => matches!(
                self.drain_switch(host, layout.app_port, path, reqwest::Method::POST, &ctx.shutdown).await,
                Ok(200..=299)
            ),
            _ => false,
        };
        if failing || drained {
            ctx.progress.instance(&host.name, "draining", None);
            let what = format!("the balancer to take {} out ({})", host.name, check.out_arithmetic());
            self.wait_for_balancer(&what, check.out_after(), ctx).await?;
        }
        Ok(())
    }

    /// Lets the balancer have `host` again and waits until it must count it healthy.
    pub async fn admit(&self, host: &Host, layout: &Layout, ctx: &Context) -> Result<(), ProviderError> {
        if layout.drain_by_api {
            outlast(ctx, "put the host back in the balancer", || self.inventory.put_back(host, ctx)).await?;
        }
        let what = format!("the balancer to count {} healthy ({})", host.name, layout.check.in_arithmetic());
        self.wait_for_balancer(&what, layout.check.in_after(), ctx).await?;
        if !self.healthy(host, &layout.check).await? {
            return Err(ProviderError::Failed(format!(
                "the app on {} stopped answering its health check while the balancer took it back",
                host.name
            )));
        }
        ctx.progress.instance(&host.name, "serving behind the balancer", None);
        Ok(())
    }

    /// The container as this run starts it: its name, env file, and ports (the
    /// balancer's port when the ports input is empty).
    fn container(&self, layout: &Layout) -> Container {
        let mut c = self.options.container.clone();
        if c.ports.is_empty() {
            c.ports = vec![(layout.app_port, layout.app_port)];
        }
        c
    }

    /// Stops the old container gracefully and keeps it aside as `keep`, stopped: it
    /// starts again as it was made (its own env, ports and options) if the host is put
    /// back. A host with no container keeps nothing.
    pub async fn retire(&self, host: &Host, keep: &str, ctx: &Context) -> Result<(), ProviderError> {
        let rt = &self.options.runtime;
        let c = &self.options.container;
        ctx.progress.instance(&host.name, "stopping", None);
        let Some(old) = self.running(host, ctx).await? else { return Ok(()) };
        if old.running {
            self.run(host, ctx, "stopping the old container", &rt.stop(c)).await?;
        }
        self.run(host, ctx, "keeping the old container aside", &rt.rename(&c.name, keep)).await?;
        {
            let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
            if !kept.iter().any(|(h, k)| h.ssh == host.ssh && k == keep) {
                kept.push((host.clone(), keep.to_string()));
            }
        }
        // The daemon starts an `always` container again when it restarts: one kept aside
        // must stay stopped (its policy comes back with it).
        if restarts_by_itself(&old.restart) {
            self.run(host, ctx, "keeping the old container stopped", &rt.restart_policy(keep, "no")).await?;
        }
        Ok(())
    }

    /// Starts `image` under the container's name: on the balancer's port, or staged on
    /// the host's loopback (then returns where each port is).
    pub async fn launch(
        &self,
        host: &Host,
        layout: &Layout,
        image: &str,
        staged: bool,
        ctx: &Context,
    ) -> Result<Option<Staged>, ProviderError> {
        let rt = &self.options.runtime;
        let c = self.container(layout);
        let command = if staged { rt.run_on_loopback(&c, image) } else { rt.run(&c, image) };
        self.run(host, ctx, &format!("starting {image}"), &command).await?;
        if !staged {
            ctx.progress.instance(&host.name, "started", Some(image));
            return Ok(None);
        }
        let out = self.run(host, ctx, "reading where the new container listens", &rt.ports(&c)).await?;
        let at = remote::published(&out);
        let ports: Staged = c
            .ports
            .iter()
            .filter_map(|(host_port, container)| {
                at.iter().find(|(p, ip, _)| p == container && ip.starts_with("127.")).map(|(_, _, l)| (*host_port, *l))
            })
            .collect();
        if ports.len() != c.ports.len() {
            return Err(ProviderError::Failed(format!(
                "{} started {image} on its loopback, but {} says it is not published there ({}); check the runtime",
                host.name,
                rt.binary,
                out.trim()
            )));
        }
        ctx.progress.instance(&host.name, "started on its loopback, out of the balancer's reach", Some(image));
        Ok(Some(ports))
    }

    /// Starts `image` again on the balancer's port, in place of the staged container
    /// that passed its gate on the host's loopback.
    pub async fn unstage(&self, host: &Host, layout: &Layout, image: &str, ctx: &Context) -> Result<(), ProviderError> {
        let rt = &self.options.runtime;
        // It served nothing but the gate: no requests in flight to wait for.
        self.run(host, ctx, "removing the staged container", &rt.remove(&self.options.container)).await?;
        self.launch(host, layout, image, false, ctx).await?;
        self.until_healthy(host, &layout.check, None, ctx).await
    }

    /// Puts the kept container back under its name (the new one, if any, goes), with
    /// its own restart policy, and starts it when it was running: exactly as recorded.
    async fn bring_back(
        &self,
        host: &Host,
        keep: &str,
        recorded: &Running,
        new_one: bool,
        ctx: &Context,
    ) -> Result<(), ProviderError> {
        let rt = &self.options.runtime;
        let c = &self.options.container;
        if new_one {
            self.run(host, ctx, "removing the new container", &rt.remove(c)).await?;
        }
        self.run(host, ctx, "putting the old container back", &rt.rename(keep, &c.name)).await?;
        self.kept.lock().unwrap_or_else(|p| p.into_inner()).retain(|(h, k)| !(h.ssh == host.ssh && k == keep));
        self.start_recorded(host, recorded, ctx).await
    }

    /// The recorded container, under its name: its restart policy as recorded, and
    /// started when it was running.
    async fn start_recorded(&self, host: &Host, recorded: &Running, ctx: &Context) -> Result<(), ProviderError> {
        let rt = &self.options.runtime;
        let name = &self.options.container.name;
        if restarts_by_itself(&recorded.restart) {
            let policy = rt.restart_policy(name, &recorded.restart);
            self.run(host, ctx, "giving the old container its restart policy back", &policy).await?;
        }
        if recorded.running {
            self.run(host, ctx, "starting the old container", &rt.start(name)).await?;
        }
        Ok(())
    }

    /// Whether the container on `host` is published only on its loopback (staged):
    /// then the balancer never had it, and it needs no draining.
    async fn staged_now(&self, host: &Host, ctx: &Context) -> bool {
        let rt = &self.options.runtime;
        match self.run(host, ctx, "reading where the container listens", &rt.ports(&self.options.container)).await {
            Ok(out) => {
                let at = remote::published(&out);
                !at.is_empty() && at.iter().all(|(_, ip, _)| ip.starts_with("127."))
            }
            Err(_) => false,
        }
    }

    /// Puts `recorded` back on its host with the same care as a deploy; does nothing
    /// where it runs already and the balancer has it (so it can run twice). Whether it
    /// changed anything.
    async fn restore_host(
        &self,
        recorded: &Recorded,
        keep: &str,
        layout: &Layout,
        ctx: &Context,
    ) -> Result<bool, ProviderError> {
        let host = &recorded.host;
        let check = &layout.check;
        let now = self.running(host, ctx).await?;
        if same(&now, &recorded.running) {
            return match &recorded.running {
                Some(r) if r.running => self.readmit(host, layout, ctx).await,
                _ => Ok(false),
            };
        }
        let Some(r) = &recorded.running else {
            // It had no container: the new one goes.
            let rt = &self.options.runtime;
            ctx.progress.log(self.name(), &format!("removing the new container from {}", host.name));
            if now.is_some() {
                self.run(host, ctx, "stopping the new container", &rt.stop(&self.options.container)).await?;
                self.run(host, ctx, "removing the new container", &rt.remove(&self.options.container)).await?;
            }
            if layout.drain_by_api {
                outlast(ctx, "put the host back in the balancer", || self.inventory.put_back(host, ctx)).await?;
            }
            return Ok(true);
        };
        ctx.progress.log(self.name(), &format!("putting {} back on {}", host.name, recorded.label()));
        match &now {
            // The recorded container itself, stopped (the run stopped it, and stopped
            // there): it only needs starting, never removing.
            Some(n) if n.same_container(r) => self.start_recorded(host, r, ctx).await?,
            _ => {
                let serving = now.as_ref().is_some_and(|n| n.running) && !self.staged_now(host, ctx).await;
                if serving {
                    self.drain_for_restore(host, layout, ctx).await?;
                }
                if self.running_named(host, keep, ctx).await?.is_some() {
                    // Its own container, kept aside: back exactly as it was made.
                    self.bring_back(host, keep, r, now.is_some(), ctx).await?;
                } else {
                    // The kept container is gone (removed by hand): the recorded image,
                    // with this run's settings, is the nearest thing.
                    ctx.progress.log(
                        self.name(),
                        &format!(
                            "{}: the old container kept as {keep} is gone; starting {} with this run's settings",
                            host.name, r.image
                        ),
                    );
                    let image = self.restorable(host, r, ctx).await?;
                    if now.is_some() {
                        let rt = &self.options.runtime;
                        self.run(host, ctx, "removing the new container", &rt.remove(&self.options.container)).await?;
                    }
                    self.launch(host, layout, &image, false, ctx).await?;
                }
            }
        }
        if r.running {
            self.until_healthy(host, check, None, ctx).await?;
            self.admit(host, layout, ctx).await?;
        }
        Ok(true)
    }

    /// A host that runs what was recorded but may still be out of the balancer (taken
    /// out by API) or drained: let the balancer have it again. Nothing is sent to a host
    /// the balancer lists and that passes its check.
    async fn readmit(&self, host: &Host, layout: &Layout, ctx: &Context) -> Result<bool, ProviderError> {
        if layout.drain_by_api {
            let members = outlast(ctx, "read the balancer", || self.inventory.members(ctx)).await?;
            if host.droplet.is_some_and(|id| !members.contains(&id)) {
                self.admit(host, layout, ctx).await?;
                return Ok(true);
            }
            return Ok(false);
        }
        if layout.check.path.is_none() || self.healthy(host, &layout.check).await? {
            return Ok(false);
        }
        // Failing its check while it runs the recorded image: drained, most likely.
        if let Some(path) = &self.options.drain_path {
            let _ = self.drain_switch(host, layout.app_port, path, reqwest::Method::DELETE, &ctx.shutdown).await;
        }
        // A host whose live release failed the check before the run is not judged by it now.
        if self.sick.lock().unwrap_or_else(|p| p.into_inner()).contains(&host.ssh) {
            return Ok(false);
        }
        self.admit(host, layout, ctx).await?;
        Ok(true)
    }

    /// How to start the recorded image again: by the reference it ran as while that
    /// still names the same image (a readable name), else by its image id (a tag that
    /// was pulled again since).
    async fn restorable(&self, host: &Host, r: &Running, ctx: &Context) -> Result<String, ProviderError> {
        let id = self.run(host, ctx, "reading an image", &self.options.runtime.image_id(&r.image)).await;
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

/// Whether what runs now is what was recorded: the same image, running or stopped as it
/// was.
fn same(now: &Option<Running>, recorded: &Option<Running>) -> bool {
    match (now, recorded) {
        (Some(n), Some(r)) => n.image_id == r.image_id && n.running == r.running,
        (None, None) => true,
        _ => false,
    }
}

/// Whether the daemon starts a container with this restart policy by itself (on its own
/// restart, or the host's).
fn restarts_by_itself(policy: &str) -> bool {
    matches!(policy, "always") || policy.starts_with("on-failure")
}

/// How long one remote command may take: what is left of the run's time, but at least
/// a few seconds, so a read at the end still gets its answer.
fn limit(ctx: &Context) -> Duration {
    ctx.remaining().max(Duration::from_secs(5))
}

/// What runs, summed up over hosts: one image, or which image on how many. Images are
/// told apart by id, so a tag that names different images on different hosts shows.
fn release_of(hosts: &[Recorded]) -> ReleaseRef {
    let mut images: Vec<(String, String, usize)> = Vec::new();
    for h in hosts {
        let (label, id) = match &h.running {
            Some(r) if r.running => (r.image.clone(), r.image_id.clone()),
            Some(r) => (format!("{} (stopped)", r.image), r.image_id.clone()),
            None => ("no container".into(), String::new()),
        };
        match images.iter_mut().find(|(l, i, _)| *l == label && *i == id) {
            Some((_, _, n)) => *n += 1,
            None => images.push((label, id, 1)),
        }
    }
    let named = |label: &str, id: &str| match images.iter().filter(|(l, _, _)| l == label).count() {
        1 => label.to_string(),
        _ => format!("{label} ({})", id.trim_start_matches("sha256:").get(..12).unwrap_or(id)),
    };
    match images.as_slice() {
        [] => ReleaseRef::named("no hosts"),
        [(image, _, _)] => ReleaseRef::named(image),
        many => {
            let label = many.iter().map(|(l, i, n)| format!("{} on {n}", named(l, i))).collect::<Vec<_>>().join(", ");
            ReleaseRef::named(&format!("mixed: {label}"))
        }
    }
}

#[async_trait]
impl Provider for HostsProvider {
    fn name(&self) -> &'static str {
        self.core.name()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { history: false, single_instances: true, images: true, directories: false }
    }

    async fn snapshot(&self, ctx: &Context) -> Result<Snapshot, ProviderError> {
        let core = &self.core;
        let layout = core.inventory.layout(ctx).await?;
        let mut hosts = Vec::new();
        for host in &layout.hosts {
            let running = core.running(host, ctx).await?;
            hosts.push(Recorded { host: host.clone(), running });
        }
        let release = release_of(&hosts);
        let token = format!("{:016x}", fastrand::u64(..));
        let record = Record { layout, hosts, token };
        Ok(Snapshot { release, record: serde_json::to_value(&record).expect("a record serializes"), cause: None })
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
        if core.options.batch_input == "max-parallel" {
            add(
                Severity::Warning,
                "max-parallel is the old name of max-unavailable: rename it (it is read the same way for now)".into(),
            );
        }
        if core.options.max_unavailable.of(n) >= n && n > 1 {
            add(
                Severity::Info,
                format!(
                    "{} is capped at {}: the balancer always keeps one host serving",
                    core.options.batch_input,
                    n - 1
                ),
            );
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
            add(Severity::Warning, "drain-path is none: each host is stopped without being drained first, so the balancer sends it requests that fail until it notices (up to unhealthy threshold × interval)".into());
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
        // Everything a new container needs, on every host, before the first change.
        let rt = &core.options.runtime;
        let container = core.container(layout);
        let mut live = Vec::new();
        for r in &record.hosts {
            let host = &r.host;
            let session = &core.connect(host).await?.session;
            if !session.run(&rt.present(), limit(ctx)).await?.ok() {
                add(
                    Severity::Blocker,
                    format!("{} has no {} on its PATH; install it there, or set runtime", host.name, rt.binary),
                );
                continue;
            }
            if let Some(file) = &container.env_file {
                if !session.run(&rt.readable(file), limit(ctx)).await?.ok() {
                    add(
                        Severity::Blocker,
                        format!(
                            "{}: the env file {file} is not there, or {} cannot read it; the new container could not start. Put it on every host (relative paths are from {}'s home), or fix env-file",
                            host.name, core.options.login.user, core.options.login.user
                        ),
                    );
                }
            }
            let listed = session.run(&rt.listening(), limit(ctx)).await?;
            if !listed.ok() {
                add(
                    Severity::Warning,
                    format!("{}: which ports other containers hold could not be read ({}); a taken port would stop the new container there", host.name, listed.said()),
                );
            }
            let held = remote::ports_held(&listed.stdout, &container.name);
            for (port, _) in &container.ports {
                let by: Vec<&str> = held.iter().filter(|(p, _)| p == port).map(|(_, n)| n.as_str()).collect();
                if !by.is_empty() {
                    add(
                        Severity::Blocker,
                        format!(
                            "{}: port {port} is published by another running container ({}), so the new container could not take it; stop that one, or change ports",
                            host.name,
                            by.join(", ")
                        ),
                    );
                }
            }
            if r.running.as_ref().is_some_and(|c| c.running) {
                live.push((host, core.check_once(host, &layout.check, None).await?));
            }
        }
        // The balancer's check must pass on what is live now. Failing on every host, the
        // check is wrong, and would fail every new release too: stop. Failing on some, those
        // hosts are sick already: deploy (a fix may be what they need), and do not take
        // their failing check for this run's doing.
        let failing: Vec<String> = live
            .iter()
            .filter_map(|(h, result)| result.as_ref().err().map(|why| format!("{} ({why})", h.name)))
            .collect();
        if !failing.is_empty() {
            let severity = if failing.len() == live.len() { Severity::Blocker } else { Severity::Warning };
            let what = match severity {
                Severity::Blocker => {
                    "fix the check (lb-check-path, or the balancer's health check) or the hosts, then re-run"
                }
                _ => "they are deployed to all the same, and their failing check is not held against a rollback",
            };
            add(
                severity,
                format!(
                    "the balancer's check ({}) already fails on what runs live on {}; {what}",
                    layout.check.describe(),
                    failing.join(", ")
                ),
            );
            let mut sick = core.sick.lock().unwrap_or_else(|p| p.into_inner());
            sick.extend(live.iter().filter(|(_, result)| result.is_err()).map(|(h, _)| h.ssh.clone()));
        }
        // What the waits alone take, batch after batch, against what the run has.
        let batches = batches::cut(n, core.options.max_unavailable).len() as u32;
        let out = if layout.drain_by_api { Duration::ZERO } else { layout.check.out_after() };
        let needs = (out + layout.check.in_after() + core.options.container.stop_timeout.min(Duration::from_secs(10)))
            * batches;
        if needs > ctx.remaining() {
            findings.push(Finding {
                severity: Severity::Warning,
                message: format!(
                    "the balancer's check alone makes this roll-out take about {} ({batches} batches), more than deploy-timeout leaves ({}); raise deploy-timeout (and rollback-timeout, which a rollback of every host needs as much), or max-unavailable",
                    human(needs),
                    human(ctx.remaining())
                ),
            });
        }
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
            "no drain (drain-path is none)".to_string()
        };
        let batches = batches::cut(layout.hosts.len(), core.options.max_unavailable)
            .into_iter()
            .map(|group| {
                let names: Vec<&str> = group.iter().map(|&i| layout.hosts[i].name.as_str()).collect();
                PlannedBatch {
                    label: names.join(", "),
                    steps: vec![
                        drain.clone(),
                        format!(
                            "stop {} (up to {} for requests in flight) and keep it aside, stopped, for a rollback",
                            core.options.container.name,
                            human(core.options.container.stop_timeout)
                        ),
                        match layout.drain_by_api {
                            true => format!("start {image}"),
                            false => format!("start {image} (a batch gated alone starts on the host's loopback, is gated there, then starts on the balancer's port)"),
                        },
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
        // Another deploy may have finished between the snapshot and the lock: then the
        // record is not what runs, and a rollback to it would undo that deploy.
        for r in &record.hosts {
            let now = outlast(ctx, "read a host", || core.running(&r.host, ctx)).await?;
            if !same(&now, &r.running) {
                return Err(ProviderError::Conflict {
                    what: format!("{}'s container", r.host.name),
                    detail: "it changed after this run recorded it (another deploy finished in between)".into(),
                });
            }
        }
        let pulls = record.layout.hosts.iter().map(|host| {
            let (what, command) = (format!("pulling {image}"), core.options.runtime.pull(&image));
            let image = image.clone();
            async move {
                outlast(ctx, "pull the image", || core.run(host, ctx, &what, &command)).await?;
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
        // The last host changed first, back to the first: a roll-out stops at the
        // failing host, so the hosts after it were never touched. A host that cannot be
        // put back does not stop the others; the error names each one left.
        let (keep, layout) = (&record.kept(&core.options.container), &record.layout);
        let last_first: Vec<&Recorded> = record.hosts.iter().rev().collect();
        let name = |r: &&Recorded| r.host.name.clone();
        restore::every_instance(ctx, "host", &last_first, 1, name, |recorded, _| async move {
            core.restore_host(recorded, keep, layout, ctx).await.map(|_| ())
        })
        .await?;
        Ok(snapshot.release.clone())
    }

    /// The recorded images run on every host, and the balancer has every host: listed
    /// (by API) or passing its check (a drain switch may have been left on).
    async fn in_effect(&self, snapshot: &Snapshot, ctx: &Context) -> Result<bool, ProviderError> {
        let core = &self.core;
        let record = Record::of(snapshot)?;
        let layout = &record.layout;
        let members = match layout.drain_by_api {
            true => Some(outlast(ctx, "read the balancer", || core.inventory.members(ctx)).await?),
            false => None,
        };
        for r in &record.hosts {
            let now = outlast(ctx, "read a host", || core.running(&r.host, ctx)).await?;
            if !same(&now, &r.running) {
                return Ok(false);
            }
            let listed = match &members {
                Some(ids) => r.host.droplet.is_none_or(|id| ids.contains(&id)),
                None => {
                    r.running.is_none() || layout.check.path.is_none() || core.healthy(&r.host, &layout.check).await?
                }
            };
            if !listed {
                return Ok(false);
            }
        }
        Ok(true)
    }

    async fn history(&self, _ctx: &Context) -> Result<Vec<ReleaseRef>, ProviderError> {
        Ok(Vec::new())
    }

    /// Every host runs the image the run started, by its reference: a tag each host
    /// pulled as a different image is still the release this run made.
    fn still_runs(&self, now: &Snapshot, made: &ReleaseRef) -> bool {
        Record::of(now)
            .is_ok_and(|r| r.hosts.iter().all(|h| h.running.as_ref().is_some_and(|c| c.running && c.image == made.id)))
    }

    fn lock_kind(&self) -> LockKind {
        LockKind::Durable
    }

    /// The lock directory on every host, in order, under the record's token: the post
    /// step of the run that took it takes it again.
    async fn lock(&self, recorded: &Snapshot, purpose: LockFor, ctx: &Context) -> Result<(), ProviderError> {
        let record = Record::of(recorded)?;
        self.core.lock_all(&record.layout, &record.token, purpose, ctx).await
    }

    async fn unlock(&self, ctx: &Context) -> Vec<String> {
        self.core.unlock_all(ctx).await
    }

    async fn finish(&self, ending: Ending, ctx: &Context) -> Vec<String> {
        let core = &self.core;
        let kept: Vec<(Host, String)> = core.kept.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut notes = Vec::new();
        // A run that leaves its hosts to the post step keeps the old containers it kept
        // aside, for the post step to start again.
        match ending {
            // The new release is proved: what a rollback would have started again goes.
            Ending::Deployed => {
                for (host, keep) in kept {
                    let rt = &core.options.runtime;
                    if core.run(&host, ctx, "removing the old container", &rt.remove_named(&keep)).await.is_err() {
                        notes.push(format!(
                            "the old container kept as {keep} on {} could not be removed; remove it with {} rm {keep}",
                            host.name, rt.binary
                        ));
                    }
                }
            }
            // Left in place (rollback: false, or a host not put back): say how to go back.
            Ending::Over => {
                for (host, keep) in kept {
                    let (name, rt) = (&core.options.container.name, &core.options.runtime.binary);
                    notes.push(format!(
                        "the old container is kept, stopped, as {keep} on {}: {rt} rm -f {name} && {rt} rename {keep} {name} && {rt} start {name} puts it back",
                        host.name
                    ));
                }
            }
            Ending::Unfinished => {}
        }
        let sessions: Vec<Arc<Connected>> = self.core.sessions.lock().await.drain().map(|(_, c)| c).collect();
        for c in sessions {
            c.session.close().await;
        }
        notes
    }

    fn api_calls(&self) -> Option<usize> {
        self.core.inventory.api_calls()
    }
}
