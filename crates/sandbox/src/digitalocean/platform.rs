//! App Platform's state and what happens over time: every deployment runs as a task
//! through PENDING_BUILD, BUILDING, PENDING_DEPLOY and DEPLOYING, starts its own
//! instances, waits for their readiness checks, and only then takes the traffic from
//! the deployment before it, which keeps serving if anything goes wrong. A new
//! deployment is queued first (`pending_deployment`, not started), then starts
//! (`in_progress_deployment`) and supersedes the one in progress then; a newer one
//! queued takes the place of one still queued. A rollback is a new deployment of an
//! old spec that may pin the app.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{json, Value};

use super::{AppOptions, DoOptions, Failure as Injected, Faults};
use crate::app::{spec_for, ReleaseSpec, Releases};
use crate::fly::ids::{random_u64, rfc3339, unix_secs};
use crate::kit::checks;
use crate::kit::process::{self, signal, Exit, Launch, Proc};
use crate::kit::{Bucket, Gate, TokenRule, Watched};

/// How long the old instances keep their listener after the switch, so a request the
/// router picked one for just before it still reaches it.
const DRAIN: Duration = Duration::from_millis(250);
/// How long a stopped instance may take to finish its requests before it is killed.
const GRACE: Duration = Duration::from_secs(10);

pub const PENDING: &str = "PENDING";
pub const RUNNING: &str = "RUNNING";
pub const SUCCESS: &str = "SUCCESS";
pub const ERROR: &str = "ERROR";

/// Which budget a refused request ran out of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spent {
    /// The per-minute burst bucket: back in this many seconds.
    Minute(u64),
    /// The hourly budget: `ratelimit-reset` says when.
    Hour,
}

/// The regions `app_spec.region` allows, with the labels DigitalOcean shows.
const REGIONS: [(&str, &str, &str, &str); 10] = [
    ("atl", "Atlanta", "north_america", "atl1"),
    ("nyc", "New York", "north_america", "nyc1"),
    ("sfo", "San Francisco", "north_america", "sfo3"),
    ("tor", "Toronto", "north_america", "tor1"),
    ("ams", "Amsterdam", "europe", "ams3"),
    ("fra", "Frankfurt", "europe", "fra1"),
    ("lon", "London", "europe", "lon1"),
    ("blr", "Bangalore", "asia", "blr1"),
    ("sgp", "Singapore", "asia", "sgp1"),
    ("syd", "Sydney", "australia", "syd1"),
];

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

pub fn now() -> String {
    rfc3339(SystemTime::now())
}

fn terminal(phase: &str) -> bool {
    matches!(phase, "ACTIVE" | "SUPERSEDED" | "ERROR" | "CANCELED")
}

/// A refusal, in DigitalOcean's error shape.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub id: &'static str,
    pub message: String,
}

pub fn refuse(status: u16, id: &'static str, message: impl Into<String>) -> Refused {
    Refused { status, id, message: message.into() }
}

pub fn bad_request(message: impl Into<String>) -> Refused {
    refuse(400, "bad_request", message)
}

pub fn not_found(what: &str, id: &str) -> Refused {
    refuse(404, "not_found", format!("The {what} {id} could not be found."))
}

/// A service's readiness check, in sandbox seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// None: a TCP connect.
    pub http_path: Option<String>,
    pub initial_delay: u32,
    pub period: u32,
    pub timeout: u32,
    pub success: u32,
    pub failure: u32,
}

impl Check {
    fn of(spec: Option<&Value>) -> Check {
        let num = |key: &str, default: u32| {
            spec.and_then(|s| s.get(key)).and_then(Value::as_u64).map_or(default, |n| n as u32)
        };
        Check {
            http_path: spec.and_then(|s| s.get("http_path")).and_then(Value::as_str).map(str::to_string),
            initial_delay: num("initial_delay_seconds", 0),
            period: num("period_seconds", 10).max(1),
            timeout: num("timeout_seconds", 1).max(1),
            success: num("success_threshold", 1).max(1),
            failure: num("failure_threshold", 9).max(1),
        }
    }
}

/// One service of a spec, as a deployment runs it.
#[derive(Debug, Clone)]
pub struct Component {
    pub name: String,
    /// The key into the images: `repo:tag`, `repo@digest` or `owner/repo#branch`.
    pub key: String,
    pub git: bool,
    /// Image components without a digest: a rollback to them is not exact.
    pub tag_only: bool,
    pub instances: u32,
    pub check: Check,
}

/// The services of `spec`, or why the spec cannot be deployed.
pub fn components_of(spec: &Value) -> Result<Vec<Component>, String> {
    let services = spec.get("services").and_then(Value::as_array).filter(|s| !s.is_empty());
    let Some(services) = services else {
        return Err("spec.services: an app needs at least one service component".into());
    };
    let mut out = Vec::new();
    for (i, s) in services.iter().enumerate() {
        let at = format!("spec.services[{i}]");
        let name = s.get("name").and_then(Value::as_str).filter(|n| !n.is_empty());
        let name = name.ok_or_else(|| format!("{at}.name is required"))?.to_string();
        let instances = match s.get("instance_count") {
            None => 1,
            Some(n) => {
                n.as_u64().filter(|n| *n >= 1).ok_or_else(|| format!("{at}.instance_count must be 1 or more"))?
            }
        };
        let (key, git, tag_only) = if let Some(image) = s.get("image") {
            let repo = image.get("repository").and_then(Value::as_str).filter(|r| !r.is_empty());
            let repo = repo.ok_or_else(|| format!("{at}.image.repository is required"))?;
            let tag = image.get("tag").and_then(Value::as_str).filter(|t| !t.is_empty());
            let digest = image.get("digest").and_then(Value::as_str).filter(|d| !d.is_empty());
            // The description: "Must be left empty for the DOCR registry type".
            let docr = image.get("registry_type").and_then(Value::as_str) == Some("DOCR");
            if docr && image.get("registry").and_then(Value::as_str).is_some_and(|r| !r.is_empty()) {
                return Err(format!("{at}.image.registry must be left empty for the DOCR registry type"));
            }
            match (tag, digest) {
                (Some(_), Some(_)) => return Err(format!("{at}.image: tag and digest cannot both be set")),
                (_, Some(digest)) => (format!("{repo}@{digest}"), false, false),
                (tag, None) => (format!("{repo}:{}", tag.unwrap_or("latest")), false, true),
            }
        } else if let Some(git) = ["github", "gitlab", "bitbucket"].iter().find_map(|k| s.get(*k)) {
            let repo = git.get("repo").and_then(Value::as_str).filter(|r| !r.is_empty());
            let repo = repo.ok_or_else(|| format!("{at}: the git source needs a repo"))?;
            let branch = git.get("branch").and_then(Value::as_str).unwrap_or("main");
            (format!("{repo}#{branch}"), true, false)
        } else {
            return Err(format!("{at}: a source is required (image or github)"));
        };
        out.push(Component {
            name,
            key,
            git,
            tag_only,
            instances: instances as u32,
            check: Check::of(s.get("health_check")),
        });
    }
    Ok(out)
}

/// Where `v` holds a null, if anywhere: the description declares no spec field nullable.
fn null_in(v: &Value, at: &str) -> Option<String> {
    match v {
        Value::Null => Some(at.to_string()),
        Value::Object(m) => m.iter().find_map(|(k, v)| null_in(v, &format!("{at}.{k}"))),
        Value::Array(a) => a.iter().enumerate().find_map(|(i, v)| null_in(v, &format!("{at}[{i}]"))),
        _ => None,
    }
}

/// Checks a spec sent for app `name`.
pub fn check_spec(spec: Option<&Value>, name: &str) -> Result<(), Refused> {
    let spec = spec.filter(|s| s.is_object()).ok_or_else(|| bad_request("spec is required"))?;
    if let Some(path) = null_in(spec, "spec") {
        return Err(bad_request(format!("{path}: null is not a value the app spec takes; leave the field out")));
    }
    match spec.get("name").and_then(Value::as_str) {
        Some(n) if n == name && valid_name(n) => {}
        Some(n) if n == name => return Err(bad_request(format!("spec.name: {n:?} {NAME_RULE}"))),
        Some(n) => {
            return Err(bad_request(format!(
                "spec.name: the app is named {name:?}, not {n:?}; an app cannot be renamed"
            )))
        }
        None => return Err(bad_request("spec.name is required")),
    }
    if let Some(region) = spec.get("region") {
        let known = region.as_str().is_some_and(|r| REGIONS.iter().any(|(slug, ..)| *slug == r));
        if !known {
            return Err(bad_request(format!("spec.region: {region} is not a region slug such as \"nyc\"")));
        }
    }
    for (i, c) in components_of(spec).map_err(bad_request)?.iter().enumerate() {
        if !valid_name(&c.name) {
            return Err(bad_request(format!("spec.services[{i}].name: {:?} {NAME_RULE}", c.name)));
        }
    }
    Ok(())
}

const NAME_RULE: &str = "must be 2 to 32 lowercase letters, digits and dashes, starting with a letter";

/// App and component names: `^[a-z][a-z0-9-]{0,30}[a-z0-9]$`.
fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    (2..=32).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[b.len() - 1] != b'-'
}

/// One step of a deployment's progress, with its children.
#[derive(Debug, Clone)]
pub struct Step {
    pub name: String,
    pub status: &'static str,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    pub reason: Option<(String, String)>,
    pub component_name: Option<String>,
    pub message_base: Option<String>,
    pub steps: Vec<Step>,
}

impl Step {
    fn new(name: &str, steps: Vec<Step>) -> Step {
        Step {
            name: name.into(),
            status: PENDING,
            started_at: None,
            ended_at: None,
            reason: None,
            component_name: None,
            message_base: None,
            steps,
        }
    }

    fn of(name: &str, component: &str, base: &str, steps: Vec<Step>) -> Step {
        Step { component_name: Some(component.into()), message_base: Some(base.into()), ..Step::new(name, steps) }
    }

    /// The tree App Platform shows for `components`.
    fn tree(components: &[Component]) -> Step {
        let build = components.iter().map(|c| Step::of(&c.name, &c.name, "Building service", vec![])).collect();
        let deploy = components
            .iter()
            .map(|c| {
                let children = vec![
                    Step::of("deploy", &c.name, "Deploying service", vec![]),
                    Step::of("wait", &c.name, "Waiting for service", vec![]),
                ];
                Step { component_name: Some(c.name.clone()), ..Step::new(&c.name, children) }
            })
            .collect();
        Step::new(
            "",
            vec![
                Step::new("build", vec![Step::new("initialize", vec![]), Step::new("components", build)]),
                Step::new(
                    "deploy",
                    vec![
                        Step::new("initialize", vec![]),
                        Step::new("components", deploy),
                        Step::new("finalize", vec![]),
                    ],
                ),
            ],
        )
    }

    fn find(&mut self, path: &[&str]) -> Option<&mut Step> {
        match path.split_first() {
            None => Some(self),
            Some((first, rest)) => self.steps.iter_mut().find(|s| s.name == *first)?.find(rest),
        }
    }

    fn set(&mut self, status: &'static str) {
        if self.status == status {
            return;
        }
        self.status = status;
        if self.started_at.is_none() && status != PENDING {
            self.started_at = Some(now());
        }
        if matches!(status, SUCCESS | ERROR) {
            self.ended_at = Some(now());
        }
    }

    /// Leaf counts: pending, running, success, error, total.
    fn count(&self, counts: &mut [u32; 5]) {
        if self.steps.is_empty() {
            let slot = match self.status {
                PENDING => 0,
                RUNNING => 1,
                SUCCESS => 2,
                _ => 3,
            };
            counts[slot] += 1;
            counts[4] += 1;
        }
        for s in &self.steps {
            s.count(counts);
        }
    }

    fn to_json(&self) -> Value {
        let mut v = json!({ "name": self.name, "status": self.status });
        let o = v.as_object_mut().expect("an object");
        if let Some(t) = &self.started_at {
            o.insert("started_at".into(), json!(t));
        }
        if let Some(t) = &self.ended_at {
            o.insert("ended_at".into(), json!(t));
        }
        if let Some((code, message)) = &self.reason {
            o.insert("reason".into(), json!({ "code": code, "message": message }));
        }
        if let Some(c) = &self.component_name {
            o.insert("component_name".into(), json!(c));
        }
        if let Some(m) = &self.message_base {
            o.insert("message_base".into(), json!(m));
        }
        if !self.steps.is_empty() {
            o.insert("steps".into(), Value::Array(self.steps.iter().map(Step::to_json).collect()));
        }
        v
    }
}

/// One running copy of a component of a deployment.
#[derive(Debug)]
pub struct Instance {
    pub id: String,
    pub component: String,
    pub port: Option<u16>,
    pub process: Option<Proc>,
    pub exit: Option<Exit>,
    /// Passed its readiness check.
    pub ready: bool,
    /// Being stopped on purpose.
    pub stopping: bool,
}

impl Instance {
    fn serving(&self) -> bool {
        self.port.is_some() && self.exit.is_none() && !self.stopping
    }
}

#[derive(Debug)]
pub struct Deployment {
    pub id: String,
    pub spec: Value,
    pub components: Vec<Component>,
    pub cause: String,
    pub cause_type: &'static str,
    pub cloned_from: Option<String>,
    pub phase: &'static str,
    pub phase_at: String,
    pub created_at: String,
    pub updated_at: String,
    pub progress: Step,
    pub instances: Vec<Instance>,
    /// What each component runs, fixed when it is built.
    pub releases: BTreeMap<String, ReleaseSpec>,
    pub failure: Option<Injected>,
    /// Log lines by type (BUILD, DEPLOY, RUN); a type is present once its stage ran.
    pub logs: BTreeMap<&'static str, Vec<String>>,
    /// It became ACTIVE at some point: a rollback may target it.
    pub was_active: bool,
    pub task: Option<tokio::task::AbortHandle>,
    /// Until then the API does not show it (in the app or the list): a deployment that
    /// App Platform made but does not list yet.
    pub hidden_until: Option<Instant>,
}

impl Deployment {
    pub fn shown(&self) -> bool {
        self.hidden_until.is_none_or(|t| Instant::now() >= t)
    }

    fn set_phase(&mut self, phase: &'static str) {
        self.phase = phase;
        self.phase_at = now();
        self.updated_at = self.phase_at.clone();
    }

    fn step(&mut self, path: &[&str], status: &'static str) {
        if let Some(s) = self.progress.find(path) {
            s.set(status);
        }
        self.updated_at = now();
    }

    fn fail_step(&mut self, path: &[&str], code: &str, message: &str) {
        if let Some(s) = self.progress.find(path) {
            s.set(ERROR);
            s.reason = Some((code.into(), message.into()));
        }
    }

    fn log(&mut self, kind: &'static str, line: String) {
        self.logs.entry(kind).or_default().push(line);
    }

    /// Stops its instances; returns their processes to be signalled outside the lock.
    fn stop_instances(&mut self) -> Vec<Proc> {
        self.instances
            .iter_mut()
            .filter(|i| !i.stopping && i.exit.is_none())
            .filter_map(|i| {
                i.stopping = true;
                i.process.clone()
            })
            .collect()
    }

    fn abort(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

#[derive(Debug)]
pub struct App {
    pub id: String,
    pub name: String,
    pub spec: Value,
    pub created_at: String,
    pub updated_at: String,
    /// Oldest first.
    pub deployments: Vec<Deployment>,
    pub active: Option<String>,
    pub in_progress: Option<String>,
    /// Queued and not started: what `pending_deployment` shows.
    pub pending: Option<String>,
    pub pinned: Option<String>,
    /// The spec before a pinned rollback, for a revert.
    pub before_rollback: Option<Value>,
    pub fail_next: Option<Injected>,
    /// The next deployment is not shown by the API for this long.
    pub hide_next: Option<Duration>,
    /// The router's URL: the app's live URL.
    pub url: String,
}

impl App {
    pub fn deployment(&self, id: &str) -> Option<&Deployment> {
        self.deployments.iter().find(|d| d.id == id)
    }

    fn deployment_mut(&mut self, id: &str) -> Option<&mut Deployment> {
        self.deployments.iter_mut().find(|d| d.id == id)
    }

    /// Supersedes the deployment in progress, if any.
    fn supersede_in_progress(&mut self) -> Vec<Proc> {
        let taken = self.in_progress.take();
        self.supersede(taken)
    }

    /// A queued deployment a newer one takes the place of never starts.
    fn supersede_pending(&mut self) -> Vec<Proc> {
        let taken = self.pending.take();
        self.supersede(taken)
    }

    fn supersede(&mut self, id: Option<String>) -> Vec<Proc> {
        let Some(d) = id.and_then(|id| self.deployment_mut(&id)) else { return Vec::new() };
        if terminal(d.phase) {
            return Vec::new();
        }
        d.abort();
        d.set_phase("SUPERSEDED");
        d.log("DEPLOY", "deployment superseded by a newer one".into());
        d.stop_instances()
    }
}

#[derive(Debug, Default)]
pub struct State {
    pub apps: Vec<App>,
    pub images: Releases,
    /// When each request of the last hour was made, oldest first.
    pub this_hour: std::collections::VecDeque<Instant>,
}

impl State {
    pub fn app(&self, key: &str) -> Option<&App> {
        self.apps.iter().find(|a| a.id == key || a.name == key)
    }

    pub fn app_mut(&mut self, key: &str) -> Option<&mut App> {
        self.apps.iter_mut().find(|a| a.id == key || a.name == key)
    }
}

pub struct Platform {
    pub gate: Gate<Faults>,
    pub auth: TokenRule,
    state: Watched<State>,
    app_command: Vec<OsString>,
    step_time: Duration,
    second: Duration,
    /// The per-minute burst bucket.
    pub bucket: Bucket,
    pub hourly_limit: u32,
    pub hour: Duration,
    /// The API's own base URL, for page links and log URLs.
    pub base: Mutex<String>,
}

impl Platform {
    pub fn new(opts: &DoOptions) -> Platform {
        let state = State { images: opts.images.clone(), ..Default::default() };
        Platform {
            gate: Gate::default(),
            auth: TokenRule { schemes: &["Bearer"], bare: false, token: opts.token.clone(), required: false },
            state: Watched::new(state),
            app_command: opts.app_command.clone(),
            step_time: opts.step_time,
            second: opts.second,
            bucket: Bucket::new(opts.rate_limit, opts.rate_limit),
            hourly_limit: opts.hourly_limit.max(1),
            hour: opts.hour,
            base: Mutex::new(String::new()),
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

    // ----- rate limit -----

    /// Forgets the requests that stopped counting against the hourly budget.
    fn expire(&self, s: &mut State) {
        let now = Instant::now();
        while s.this_hour.front().is_some_and(|t| now.duration_since(*t) >= self.hour) {
            s.this_hour.pop_front();
        }
    }

    /// Counts one request against both budgets; the refusal says which ran out.
    pub fn spend_token(&self) -> Result<(), Spent> {
        let mut s = self.lock();
        self.expire(&mut s);
        if s.this_hour.len() >= self.hourly_limit as usize {
            return Err(Spent::Hour);
        }
        self.bucket.spend().map_err(Spent::Minute)?;
        s.this_hour.push_back(Instant::now());
        Ok(())
    }

    /// Requests left in the hourly budget, as `ratelimit-remaining` says.
    pub fn tokens_left(&self) -> u64 {
        let mut s = self.lock();
        self.expire(&mut s);
        (self.hourly_limit as u64).saturating_sub(s.this_hour.len() as u64)
    }

    /// The unix time at which the oldest counted request stops counting (now, when
    /// none counts): DigitalOcean's `ratelimit-reset`.
    pub fn bucket_reset(&self) -> u64 {
        let mut s = self.lock();
        self.expire(&mut s);
        let until = s.this_hour.front().map_or(Duration::ZERO, |t| self.hour.saturating_sub(t.elapsed()));
        unix_secs(SystemTime::now() + until) + u64::from(!until.is_zero() && until.subsec_nanos() > 0)
    }

    // ----- apps and deployments -----

    /// Adds an app with `opts`'s spec; returns its id, or why the spec is not one
    /// DigitalOcean would take.
    pub fn add_app(&self, opts: &AppOptions) -> Result<String, Refused> {
        let services: Vec<Value> = opts
            .services
            .iter()
            .map(|s| {
                let mut v = json!({ "name": s.name, "instance_count": s.instances.max(1), "http_port": 8080 });
                let o = v.as_object_mut().expect("an object");
                match s.source.as_ref().and_then(Value::as_object) {
                    Some(source) => o.extend(source.clone()),
                    None => {
                        o.insert("image".into(), s.image.clone());
                    }
                }
                if let Some(check) = &s.health_check {
                    o.insert("health_check".into(), check.clone());
                }
                v
            })
            .collect();
        let spec = json!({ "name": opts.name, "region": opts.region, "services": services });
        check_spec(Some(&spec), &opts.name)?;
        let id = uuid();
        self.lock().apps.push(App {
            id: id.clone(),
            name: opts.name.clone(),
            spec,
            created_at: now(),
            updated_at: now(),
            deployments: Vec::new(),
            active: None,
            in_progress: None,
            pending: None,
            pinned: None,
            before_rollback: None,
            fail_next: None,
            hide_next: None,
            url: String::new(),
        });
        Ok(id)
    }

    /// Where `app`'s router listens: its live URL.
    pub fn set_url(&self, app: &str, url: &str) {
        if let Some(a) = self.lock().app_mut(app) {
            a.url = url.to_string();
        }
    }

    /// A new deployment of `spec` for `a`, superseding the one in progress. Returns
    /// its id and the processes to stop; `launch` starts it once the lock is let go.
    fn new_deployment(
        &self,
        a: &mut App,
        spec: Value,
        cause: &str,
        cause_type: &'static str,
        cloned_from: Option<String>,
    ) -> Result<(String, Vec<Proc>), Refused> {
        let components = components_of(&spec).map_err(bad_request)?;
        // Queued: it takes the place of one still queued; the one in progress runs on
        // until this one starts.
        let stop = a.supersede_pending();
        let id = uuid();
        let created = now();
        a.deployments.push(Deployment {
            id: id.clone(),
            spec,
            progress: Step::tree(&components),
            components,
            cause: cause.into(),
            cause_type,
            cloned_from,
            phase: "PENDING_BUILD",
            phase_at: created.clone(),
            created_at: created.clone(),
            updated_at: created.clone(),
            instances: Vec::new(),
            releases: BTreeMap::new(),
            failure: a.fail_next.take(),
            logs: BTreeMap::new(),
            was_active: false,
            task: None,
            hidden_until: a.hide_next.take().map(|d| Instant::now() + d),
        });
        a.pending = Some(id.clone());
        a.updated_at = created;
        Ok((id, stop))
    }

    fn launch(self: &Arc<Self>, app: &str, id: &str, stop: Vec<Proc>) {
        terminate(stop, Duration::ZERO);
        let platform = self.clone();
        let (app_id, dep_id) = (app.to_string(), id.to_string());
        let task = tokio::spawn(async move { platform.run(&app_id, &dep_id).await });
        if let Some(d) = self.lock().app_mut(app).and_then(|a| a.deployment_mut(id)) {
            if terminal(d.phase) {
                task.abort();
            } else {
                d.task = Some(task.abort_handle());
            }
        }
        self.notify();
    }

    /// Starts a deployment of `app`'s current spec; refused while the app is pinned
    /// unless `ignore_pin`.
    pub fn deploy(
        self: &Arc<Self>,
        app: &str,
        spec: Option<Value>,
        cause: &str,
        ignore_pin: bool,
    ) -> Result<String, Refused> {
        let (app_id, id, stop) = {
            let mut s = self.lock();
            let a = s.app_mut(app).ok_or_else(|| not_found("app", app))?;
            if !ignore_pin {
                pin_conflict(a)?;
            }
            let spec = spec.unwrap_or_else(|| a.spec.clone());
            let (id, stop) = self.new_deployment(a, spec.clone(), cause, "MANUAL", None)?;
            a.spec = spec;
            (a.id.clone(), id, stop)
        };
        self.launch(&app_id, &id, stop);
        Ok(id)
    }

    pub fn cancel(&self, app: &str, id: &str) -> Result<Value, Refused> {
        let stop = {
            let mut s = self.lock();
            let a = s.app_mut(app).ok_or_else(|| not_found("app", app))?;
            let d = a.deployment_mut(id).ok_or_else(|| not_found("deployment", id))?;
            if terminal(d.phase) {
                return Err(bad_request(format!(
                    "deployment {id} is {} already; only a deployment in progress can be canceled",
                    d.phase
                )));
            }
            d.abort();
            d.set_phase("CANCELED");
            d.log("DEPLOY", "deployment canceled".into());
            let stop = d.stop_instances();
            if a.in_progress.as_deref() == Some(id) {
                a.in_progress = None;
            }
            if a.pending.as_deref() == Some(id) {
                a.pending = None;
            }
            stop
        };
        terminate(stop, Duration::ZERO);
        self.notify();
        let s = self.lock();
        let a = s.app(app).ok_or_else(|| not_found("app", app))?;
        Ok(self.deployment_json(a.deployment(id).ok_or_else(|| not_found("deployment", id))?))
    }

    /// Whether `app` may roll back to `target`: Ok(warnings) or Err((code, message)).
    pub fn validate_rollback(
        &self,
        app: &str,
        target: &str,
    ) -> Result<Result<Vec<Value>, (&'static str, String)>, Refused> {
        let s = self.lock();
        let a = s.app(app).ok_or_else(|| not_found("app", app))?;
        let d = a.deployment(target).ok_or_else(|| not_found("deployment", target))?;
        if let Some(pinned) = &a.pinned {
            return Ok(Err((
                "app_pinned",
                format!("app is pinned to rollback deployment {pinned}; commit or revert it first"),
            )));
        }
        if a.active.as_deref() == Some(target) {
            return Ok(Err(("incompatible_phase", "the deployment is the app's active deployment".into())));
        }
        if !terminal(d.phase) {
            return Ok(Err((
                "incompatible_phase",
                format!("deployment phase {:?} is unsuitable for rollback", d.phase),
            )));
        }
        if !d.was_active {
            let result = if d.phase == "CANCELED" { "canceled" } else { "failed" };
            return Ok(Err((
                "incompatible_result",
                format!("deployment result \"{result}\" is unsuitable for rollback"),
            )));
        }
        let missing: Vec<&str> = d.components.iter().filter(|c| c.tag_only).map(|c| c.name.as_str()).collect();
        Ok(Ok(if missing.is_empty() {
            Vec::new()
        } else {
            vec![json!({
                "code": "image_source_missing_digest",
                "components": missing,
                "message": "one or more components are missing an image digest and are not guaranteed rollback to the old version.",
            })]
        }))
    }

    pub fn rollback(self: &Arc<Self>, app: &str, target: &str, skip_pin: bool) -> Result<String, Refused> {
        if let Err((code, message)) = self.validate_rollback(app, target)? {
            return Err(bad_request(format!("{code}: {message}")));
        }
        let (app_id, id, stop) = {
            let mut s = self.lock();
            let a = s.app_mut(app).ok_or_else(|| not_found("app", app))?;
            pin_conflict(a)?;
            let spec = a.deployment(target).ok_or_else(|| not_found("deployment", target))?.spec.clone();
            let (id, stop) =
                self.new_deployment(a, spec.clone(), "rollback", "MANUAL_ROLLBACK", Some(target.into()))?;
            let before = std::mem::replace(&mut a.spec, spec);
            if !skip_pin {
                a.pinned = Some(id.clone());
                a.before_rollback = Some(before);
            }
            (a.id.clone(), id, stop)
        };
        self.launch(&app_id, &id, stop);
        Ok(id)
    }

    pub fn commit_rollback(&self, app: &str) -> Result<(), Refused> {
        let mut s = self.lock();
        let a = s.app_mut(app).ok_or_else(|| not_found("app", app))?;
        if a.pinned.take().is_none() {
            return Err(refuse(409, "conflict", "the app is not pinned to a rollback: nothing to commit"));
        }
        a.before_rollback = None;
        a.updated_at = now();
        drop(s);
        self.notify();
        Ok(())
    }

    pub fn revert_rollback(self: &Arc<Self>, app: &str) -> Result<String, Refused> {
        let (app_id, id, stop) = {
            let mut s = self.lock();
            let a = s.app_mut(app).ok_or_else(|| not_found("app", app))?;
            if a.pinned.is_none() {
                return Err(refuse(409, "conflict", "the app is not pinned to a rollback: nothing to revert"));
            }
            let spec = a.before_rollback.clone().unwrap_or_else(|| a.spec.clone());
            let (id, stop) = self.new_deployment(a, spec.clone(), "revert rollback", "MANUAL", None)?;
            a.spec = spec;
            a.pinned = None;
            a.before_rollback = None;
            (a.id.clone(), id, stop)
        };
        self.launch(&app_id, &id, stop);
        Ok(id)
    }

    // ----- a deployment's life -----

    /// Runs `f` on the deployment while it is still in progress; None once it is not.
    fn with_dep<R>(&self, app: &str, id: &str, f: impl FnOnce(&mut Deployment) -> R) -> Option<R> {
        let r = {
            let mut s = self.lock();
            let d = s.app_mut(app)?.deployment_mut(id).filter(|d| !terminal(d.phase))?;
            f(d)
        };
        self.notify();
        Some(r)
    }

    /// Starts a queued deployment: the one in progress, if any, is superseded now.
    fn start_queued(&self, app: &str, id: &str) -> bool {
        let stop = {
            let mut s = self.lock();
            let Some(a) = s.app_mut(app) else { return false };
            if a.pending.as_deref() != Some(id) || a.deployment(id).is_none_or(|d| terminal(d.phase)) {
                return false;
            }
            a.pending = None;
            let stop = a.supersede_in_progress();
            a.in_progress = Some(id.to_string());
            stop
        };
        terminate(stop, Duration::ZERO);
        self.notify();
        true
    }

    async fn run(self: Arc<Self>, app: &str, id: &str) {
        let step = self.step_time;
        // Queued for half a step (and while the API does not show it), then started.
        tokio::time::sleep(step / 2).await;
        let hidden = self.lock().app(app).and_then(|a| a.deployment(id)).and_then(|d| d.hidden_until);
        if let Some(until) = hidden {
            tokio::time::sleep_until(until.into()).await;
        }
        if !self.start_queued(app, id) {
            return;
        }
        tokio::time::sleep(step / 2).await;
        let images = self.lock().images.clone();
        let Some(components) = self.with_dep(app, id, |d| {
            d.set_phase("BUILDING");
            d.step(&["build"], RUNNING);
            d.step(&["build", "initialize"], SUCCESS);
            d.step(&["build", "components"], RUNNING);
            for c in d.components.clone() {
                d.step(&["build", "components", &c.name], RUNNING);
                let what = if c.git { "cloning" } else { "resolving image" };
                d.log("BUILD", format!("{} | {what} {}", c.name, c.key));
                // A git component's behaviour is what its branch builds now.
                d.releases.insert(c.name.clone(), spec_for(&images, &c.key));
            }
            d.components.clone()
        }) else {
            return;
        };
        tokio::time::sleep(step).await;
        let built = self.with_dep(app, id, |d| {
            if let Some(Injected::Build(message)) = d.failure.clone() {
                let first = components.first().map(|c| c.name.clone()).unwrap_or_default();
                d.fail_step(&["build", "components", &first], "BuildJobFailed", &message);
                d.step(&["build", "components"], ERROR);
                d.fail_step(&["build"], "BuildJobFailed", &message);
                d.log("BUILD", format!("{first} | build failed: {message}"));
                d.set_phase("ERROR");
                return false;
            }
            for c in &components {
                d.step(&["build", "components", &c.name], SUCCESS);
                d.log("BUILD", format!("{} | build complete", c.name));
            }
            d.step(&["build", "components"], SUCCESS);
            d.step(&["build"], SUCCESS);
            d.set_phase("PENDING_DEPLOY");
            true
        });
        if built != Some(true) {
            self.settle_failed(app, id);
            return;
        }
        tokio::time::sleep(step).await;
        let never_start = self.gate.with_faults(|f| f.never_start);
        let Some(injected) = self.with_dep(app, id, |d| {
            d.set_phase("DEPLOYING");
            d.step(&["deploy"], RUNNING);
            d.step(&["deploy", "initialize"], SUCCESS);
            d.step(&["deploy", "components"], RUNNING);
            for c in &components {
                d.step(&["deploy", "components", &c.name], RUNNING);
                d.step(&["deploy", "components", &c.name, "deploy"], RUNNING);
                let release = d.releases.get(&c.name).cloned().unwrap_or_default();
                d.log("DEPLOY", format!("{} | deploying {} instance(s) of {}", c.name, c.instances, c.key));
                for _ in 0..c.instances {
                    let instance = self.start_instance(app, id, &c.name, &release, never_start);
                    d.log("DEPLOY", format!("{} | starting ({})", instance.id, release.version));
                    d.instances.push(instance);
                }
                d.step(&["deploy", "components", &c.name, "deploy"], SUCCESS);
                d.step(&["deploy", "components", &c.name, "wait"], RUNNING);
            }
            match d.failure.clone() {
                Some(Injected::Deploy(message)) => Some(message),
                _ => None,
            }
        }) else {
            return;
        };
        if let Some(message) = injected {
            tokio::time::sleep(self.second).await;
            let first = components.first().map(|c| c.name.clone()).unwrap_or_default();
            self.fail_deploy(app, id, &first, "DeployJobFailed", &message);
            return;
        }
        let mut probes = tokio::task::JoinSet::new();
        let instances: Vec<(String, String)> = {
            let s = self.lock();
            let d = s.app(app).and_then(|a| a.deployment(id));
            d.map(|d| d.instances.iter().map(|i| (i.id.clone(), i.component.clone())).collect()).unwrap_or_default()
        };
        for (instance, component) in instances {
            let check = components.iter().find(|c| c.name == component).map(|c| c.check.clone());
            let check = check.unwrap_or_else(|| Check::of(None));
            let (platform, app, id) = (self.clone(), app.to_string(), id.to_string());
            probes.spawn(async move {
                let result = platform.readiness(&app, &id, &instance, &check).await;
                (component, result)
            });
        }
        while let Some(joined) = probes.join_next().await {
            let Ok((component, result)) = joined else { continue };
            if let Err((code, message)) = result {
                self.fail_deploy(app, id, &component, code, &message);
                return;
            }
        }
        self.switch(app, id, &components);
    }

    /// Waits for an instance's readiness check to pass `success` times in a row, or
    /// to fail `failure` times in a row, or for the instance to exit.
    async fn readiness(
        &self,
        app: &str,
        id: &str,
        instance: &str,
        check: &Check,
    ) -> Result<(), (&'static str, String)> {
        let second = self.second;
        tokio::time::sleep(second * check.initial_delay).await;
        let (period, timeout) = (second * check.period, second * check.timeout);
        let what = match &check.http_path {
            Some(path) => format!("GET {path}"),
            None => "TCP connect".to_string(),
        };
        let (mut passes, mut fails) = (0, 0);
        let find = |s: &State| -> Option<(Option<u16>, Option<Exit>, bool)> {
            let d = s.app(app)?.deployment(id)?;
            let i = d.instances.iter().find(|i| i.id == instance)?;
            Some((i.port, i.exit, terminal(d.phase)))
        };
        loop {
            let started = tokio::time::Instant::now();
            self.wait_until(timeout, |s| {
                find(s).is_none_or(|(port, exit, over)| port.is_some() || exit.is_some() || over)
            })
            .await;
            let Some((port, exit, over)) = find(&self.lock()) else {
                return Err(("DeployJobFailed", format!("instance {instance} is gone")));
            };
            if over {
                return Err(("DeployJobFailed", "the deployment ended".into()));
            }
            let component = instance.rsplit_once('-').map_or(instance, |(c, _)| c);
            if let Some(exit) = exit {
                let code = exit.exit_code();
                self.dep_log(app, id, "DEPLOY", format!("{instance} | exited with code {code}"));
                return Err((
                    "ContainerExited",
                    format!(
                        "component {component}: instance {instance} exited with code {code} before it became ready"
                    ),
                ));
            }
            let (passing, output) = match port {
                None => (false, "not listening yet".to_string()),
                Some(port) => probe(check.http_path.as_deref(), port, timeout).await,
            };
            if passing {
                passes += 1;
                fails = 0;
                if passes >= check.success {
                    self.dep_log(app, id, "DEPLOY", format!("{instance} | health check passed: {what} {output}"));
                    self.mark_ready(app, id, instance);
                    return Ok(());
                }
            } else {
                fails += 1;
                passes = 0;
                self.dep_log(app, id, "DEPLOY", format!("{instance} | health check failed: {what} {output}"));
                if fails >= check.failure {
                    return Err((
                        "UnhealthyHealthCheck",
                        format!(
                            "component {component}: instance {instance} failed its readiness check {fails} times in a row ({what} {output})"
                        ),
                    ));
                }
            }
            tokio::time::sleep_until(started + period).await;
        }
    }

    fn dep_log(&self, app: &str, id: &str, kind: &'static str, line: String) {
        if let Some(d) = self.lock().app_mut(app).and_then(|a| a.deployment_mut(id)) {
            d.log(kind, line);
        }
    }

    fn mark_ready(&self, app: &str, id: &str, instance: &str) {
        if let Some(d) = self.lock().app_mut(app).and_then(|a| a.deployment_mut(id)) {
            if let Some(i) = d.instances.iter_mut().find(|i| i.id == instance) {
                i.ready = true;
            }
        }
        self.notify();
    }

    /// The component's wait step fails: the new instances stop, the old deployment
    /// keeps serving.
    fn fail_deploy(&self, app: &str, id: &str, component: &str, code: &str, message: &str) {
        let stop = self.with_dep(app, id, |d| {
            d.fail_step(&["deploy", "components", component, "wait"], code, message);
            d.step(&["deploy", "components", component], ERROR);
            d.step(&["deploy", "components"], ERROR);
            d.step(&["deploy"], ERROR);
            d.log("DEPLOY", format!("deployment failed: {code}: {message}"));
            d.set_phase("ERROR");
            d.stop_instances()
        });
        terminate(stop.unwrap_or_default(), Duration::ZERO);
        self.settle_failed(app, id);
    }

    /// A failed deployment is no longer in progress.
    fn settle_failed(&self, app: &str, id: &str) {
        if let Some(a) = self.lock().app_mut(app) {
            if a.in_progress.as_deref() == Some(id) {
                a.in_progress = None;
            }
        }
        self.notify();
    }

    /// Every instance is ready: traffic moves to them, then the old ones stop.
    fn switch(&self, app: &str, id: &str, components: &[Component]) {
        let stop = {
            let mut s = self.lock();
            let Some(a) = s.app_mut(app) else { return };
            let Some(d) = a.deployment_mut(id).filter(|d| !terminal(d.phase)) else { return };
            if let Some(i) = d.instances.iter().find(|i| i.exit.is_some()) {
                let (code, component, instance) =
                    (i.exit.map_or(0, |e| e.exit_code()), i.component.clone(), i.id.clone());
                drop(s);
                let message = format!("component {component}: instance {instance} exited with code {code}");
                self.fail_deploy(app, id, &component, "ContainerExited", &message);
                return;
            }
            for c in components {
                d.step(&["deploy", "components", &c.name, "wait"], SUCCESS);
                d.step(&["deploy", "components", &c.name], SUCCESS);
                d.log("DEPLOY", format!("{} | {}/{} instance(s) ready", c.name, c.instances, c.instances));
            }
            d.step(&["deploy", "components"], SUCCESS);
            d.step(&["deploy", "finalize"], RUNNING);
            d.log("DEPLOY", format!("switched traffic to deployment {id}"));
            d.step(&["deploy", "finalize"], SUCCESS);
            d.step(&["deploy"], SUCCESS);
            d.set_phase("ACTIVE");
            d.was_active = true;
            d.task = None;
            let old = a.active.replace(id.to_string());
            if a.in_progress.as_deref() == Some(id) {
                a.in_progress = None;
            }
            match old.and_then(|old| a.deployment_mut(&old)) {
                Some(old) => {
                    old.set_phase("SUPERSEDED");
                    old.log("DEPLOY", format!("superseded by deployment {id}; stopping its instances"));
                    old.stop_instances()
                }
                None => Vec::new(),
            }
        };
        self.notify();
        terminate(stop, DRAIN);
    }

    /// Starts one instance of `component` running `release` (called under the lock,
    /// so the process's own news cannot overtake it).
    fn start_instance(
        self: &Arc<Self>,
        app: &str,
        dep: &str,
        component: &str,
        release: &ReleaseSpec,
        never_start: bool,
    ) -> Instance {
        let id = format!("{component}-{:06x}", random_u64() & 0xff_ffff);
        let mut instance = Instance {
            id: id.clone(),
            component: component.into(),
            port: None,
            process: None,
            exit: None,
            ready: false,
            stopping: false,
        };
        if never_start {
            return instance;
        }
        let Some((program, lead)) = self.app_command.split_first() else {
            instance.exit = Some(Exit { code: Some(127), signal: None });
            return instance;
        };
        let mut args: Vec<OsString> = lead.to_vec();
        let flags = ["--port".to_string(), "0".into()].into_iter().chain(release.app_flags());
        let flags = flags.chain(["--exit-on-stdin-eof".to_string()]);
        args.extend(flags.into_iter().map(OsString::from));
        let env = vec![("PORT".to_string(), "0".to_string()), ("HOSTNAME".into(), id.clone())];
        let launch = Launch { program: program.clone(), args, env };
        let (on_listen, on_exit) = (self.clone(), self.clone());
        let (app1, dep1, id1) = (app.to_string(), dep.to_string(), id.clone());
        let (app2, dep2, id2) = (app.to_string(), dep.to_string(), id.clone());
        match process::spawn(
            &launch,
            move |port| on_listen.instance_event(&app1, &dep1, &id1, Some(port), None),
            move |exit| on_exit.instance_event(&app2, &dep2, &id2, None, Some(exit)),
        ) {
            Ok(proc) => instance.process = Some(proc),
            Err(_) => instance.exit = Some(Exit { code: Some(127), signal: None }),
        }
        instance
    }

    fn instance_event(&self, app: &str, dep: &str, id: &str, port: Option<u16>, exit: Option<Exit>) {
        {
            let mut s = self.lock();
            let Some(d) = s.app_mut(app).and_then(|a| a.deployment_mut(dep)) else { return };
            let Some(i) = d.instances.iter_mut().find(|i| i.id == id) else { return };
            let line = match (port, exit) {
                (Some(port), _) => {
                    i.port = Some(port);
                    format!("{id} | listening on port {port}")
                }
                (_, Some(exit)) => {
                    i.exit = Some(exit);
                    i.port = None;
                    match i.stopping {
                        true => format!("{id} | stopped (exit code {})", exit.exit_code()),
                        false => format!("{id} | exited with code {}", exit.exit_code()),
                    }
                }
                _ => return,
            };
            d.log("RUN", line);
        }
        self.notify();
    }

    /// The instances the router sends `app`'s traffic to: the active deployment's
    /// first service's, once ready.
    pub fn backends(&self, app: &str) -> Vec<(String, u16)> {
        let s = self.lock();
        let Some(a) = s.app(app) else { return Vec::new() };
        let Some(d) = a.active.as_deref().and_then(|id| a.deployment(id)) else { return Vec::new() };
        let first = d.components.first().map(|c| c.name.as_str()).unwrap_or_default();
        d.instances
            .iter()
            .filter(|i| i.component == first && i.ready && i.serving())
            .filter_map(|i| i.port.map(|p| (i.id.clone(), p)))
            .collect()
    }

    /// Nothing in progress, and every instance of the active deployment ready and serving.
    pub fn is_settled(s: &State, app: &str) -> bool {
        s.app(app).is_some_and(|a| {
            a.in_progress.is_none()
                && a.pending.is_none()
                && a.active.as_deref().and_then(|id| a.deployment(id)).is_some_and(|d| {
                    let want: u32 = d.components.iter().map(|c| c.instances).sum();
                    d.instances.len() as u32 == want && d.instances.iter().all(|i| i.ready && i.serving())
                })
        })
    }

    pub fn kill_all(&self) {
        let mut s = self.lock();
        for a in &mut s.apps {
            for d in &mut a.deployments {
                d.abort();
                for i in &d.instances {
                    if let Some(p) = &i.process {
                        p.signal(signal::KILL);
                    }
                }
            }
        }
    }

    // ----- JSON, in the OpenAPI description's shapes -----

    pub fn deployment_json(&self, d: &Deployment) -> Value {
        let mut counts = [0u32; 5];
        d.progress.count(&mut counts);
        let services: Vec<Value> = d
            .components
            .iter()
            .map(|c| match c.git {
                true => json!({ "name": c.name, "source_commit_hash": commit_of(&d.id, &c.name) }),
                false => json!({ "name": c.name }),
            })
            .collect();
        let mut v = json!({
            "id": d.id,
            "spec": d.spec,
            "services": services,
            "cause": d.cause,
            "cause_details": { "type": d.cause_type },
            "phase": d.phase,
            "phase_last_updated_at": d.phase_at,
            "created_at": d.created_at,
            "updated_at": d.updated_at,
            "tier_slug": "basic",
            "progress": {
                "pending_steps": counts[0],
                "running_steps": counts[1],
                "success_steps": counts[2],
                "error_steps": counts[3],
                "total_steps": counts[4],
                "steps": d.progress.steps.iter().map(Step::to_json).collect::<Vec<_>>(),
            },
        });
        if let Some(from) = &d.cloned_from {
            v["cloned_from"] = json!(from);
        }
        v
    }

    pub fn app_json(&self, a: &App) -> Value {
        let region = a.spec.get("region").and_then(Value::as_str).unwrap_or("nyc");
        let (slug, label, continent, dc) = REGIONS.iter().find(|r| r.0 == region).copied().unwrap_or(REGIONS[1]);
        let domain = a.url.trim_start_matches("http://").to_string();
        let mut v = json!({
            "id": a.id,
            "owner_uuid": "5ab1e5a0-0000-4000-8000-000000000002",
            "spec": a.spec,
            "default_ingress": a.url,
            "live_url": a.url,
            "live_url_base": a.url,
            "live_domain": domain,
            "region": {
                "slug": slug, "label": label, "flag": slug, "continent": continent,
                "data_centers": [dc], "default": slug == "nyc", "disabled": false,
            },
            "tier_slug": "basic",
            "created_at": a.created_at,
            "updated_at": a.updated_at,
        });
        if let Some(last) = a.deployments.last() {
            v["last_deployment_created_at"] = json!(last.created_at);
        }
        let dep = |id: &Option<String>| {
            id.as_deref().and_then(|id| a.deployment(id)).filter(|d| d.shown()).map(|d| self.deployment_json(d))
        };
        if let Some(d) = dep(&a.active) {
            v["active_deployment"] = d;
        }
        if let Some(d) = dep(&a.in_progress) {
            v["in_progress_deployment"] = d;
        }
        if let Some(d) = dep(&a.pending) {
            v["pending_deployment"] = d;
        }
        if let Some(d) = dep(&a.pinned) {
            v["pinned_deployment"] = d;
        }
        v
    }

    pub fn health_json(&self, a: &App) -> Value {
        let d = a.active.as_deref().and_then(|id| a.deployment(id));
        let wanted = d.map_or_else(|| components_of(&a.spec).unwrap_or_default(), |d| d.components.clone());
        let components: Vec<Value> = wanted
            .iter()
            .map(|c| {
                let ready = d.map_or(0, |d| {
                    d.instances.iter().filter(|i| i.component == c.name && i.ready && i.serving()).count()
                });
                let state = match d {
                    None => "UNKNOWN",
                    Some(_) if ready as u32 >= c.instances => "HEALTHY",
                    Some(_) => "UNHEALTHY",
                };
                json!({
                    "name": c.name, "state": state,
                    "replicas_desired": c.instances, "replicas_ready": ready,
                    "cpu_usage_percent": 0.0, "memory_usage_percent": 0.0,
                })
            })
            .collect();
        json!({ "app_health": { "components": components } })
    }
}

/// A 409 while the app is pinned to a rollback.
fn pin_conflict(a: &App) -> Result<(), Refused> {
    match &a.pinned {
        Some(pinned) => Err(refuse(
            409,
            "conflict",
            format!(
                "app is pinned to a rollback deployment ({pinned}); commit or revert the rollback before deploying"
            ),
        )),
        None => Ok(()),
    }
}

/// A stable 40-hex commit for a git component's build.
fn commit_of(deployment: &str, component: &str) -> String {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let part = |salt: u8| {
        let mut h = DefaultHasher::new();
        (deployment, component, salt).hash(&mut h);
        h.finish()
    };
    format!("{:016x}{:016x}{:08x}", part(1), part(2), part(3) as u32)
}

/// One readiness probe: a GET that passes on 2xx or 3xx, or a TCP connect.
async fn probe(path: Option<&str>, port: u16, timeout: Duration) -> (bool, String) {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let Some(path) = path else {
        let outcome = checks::tcp(addr, timeout).await;
        return (outcome.passing, if outcome.passing { "succeeded".into() } else { outcome.output });
    };
    let request = hyper::Request::builder().method("GET").uri(path).header("host", addr.to_string());
    let Ok(request) = request.body(Full::new(Bytes::new())) else {
        return (false, format!("cannot request {path}"));
    };
    match crate::client::send(addr, request, timeout).await {
        Ok(reply) => ((200..400).contains(&reply.status), format!("answered {}", reply.status)),
        Err(e) => (false, format!("failed: {}", e.message)),
    }
}

/// Stops processes gracefully after `delay`: SIGTERM, then SIGKILL after the grace.
fn terminate(procs: Vec<Proc>, delay: Duration) {
    if procs.is_empty() {
        return;
    }
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        for p in procs {
            tokio::spawn(async move { p.terminate(signal::TERM, GRACE).await });
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_keys_follow_digest_tag_or_branch() {
        let spec = json!({ "services": [
            { "name": "a", "image": { "repository": "web", "digest": "sha256:1" } },
            { "name": "b", "image": { "repository": "web" } },
            { "name": "c", "github": { "repo": "acme/web", "branch": "dev" }, "instance_count": 3 },
        ] });
        let c = components_of(&spec).expect("a valid spec");
        let keys: Vec<&str> = c.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(keys, ["web@sha256:1", "web:latest", "acme/web#dev"]);
        assert_eq!(c.iter().map(|c| c.tag_only).collect::<Vec<_>>(), [false, true, false]);
        assert_eq!((c[2].instances, c[0].check.clone()), (3, Check::of(None)));
        assert_eq!(Check::of(None).failure, 9, "DigitalOcean's default");
        let both = json!({ "services": [{ "name": "a", "image": { "repository": "web", "tag": "v1", "digest": "sha256:1" } }] });
        assert!(components_of(&both).unwrap_err().contains("tag and digest"));
        let docr = json!({ "services": [{ "name": "a", "image": { "registry_type": "DOCR", "registry": "acme", "repository": "web", "tag": "v1" } }] });
        assert!(components_of(&docr).unwrap_err().contains("left empty for the DOCR"));
        let nulls = json!({ "name": "shop", "services": [{ "name": "web", "image": { "repository": "web", "tag": "v1" } }], "jobs": null });
        assert!(null_in(&nulls, "spec").is_some_and(|p| p == "spec.jobs"));
        assert!(components_of(&json!({ "services": [] })).is_err());
        let zero = json!({ "services": [{ "name": "a", "image": { "repository": "web" }, "instance_count": 0 }] });
        assert!(components_of(&zero).is_err());
    }

    #[test]
    fn specs_are_checked_as_digitalocean_would() {
        let spec = |name: &str, region: &str| json!({ "name": name, "region": region, "services": [{ "name": "web", "image": { "repository": "web" } }] });
        assert!(check_spec(Some(&spec("shop", "nyc")), "shop").is_ok());
        assert!(check_spec(Some(&spec("shop", "nyc1")), "shop").unwrap_err().message.contains("region"));
        assert!(check_spec(Some(&spec("Shop", "nyc")), "Shop").unwrap_err().message.contains("lowercase"));
        assert!(check_spec(Some(&spec("shop", "nyc")), "blog").unwrap_err().message.contains("spec.name"));
        assert!(check_spec(None, "shop").unwrap_err().message.contains("spec is required"));
        assert!(valid_name("a1") && !valid_name("a") && !valid_name("web-") && !valid_name("1web"));
    }

    #[test]
    fn the_step_tree_counts_leaves() {
        let spec = json!({ "services": [{ "name": "web", "image": { "repository": "web" } }] });
        let mut tree = Step::tree(&components_of(&spec).unwrap());
        let mut counts = [0; 5];
        tree.count(&mut counts);
        assert_eq!(counts, [6, 0, 0, 0, 6]);
        tree.find(&["deploy", "components", "web", "wait"]).unwrap().set(RUNNING);
        let mut counts = [0; 5];
        tree.count(&mut counts);
        assert_eq!(counts, [5, 1, 0, 0, 6]);
        let json = tree.find(&["deploy", "components", "web", "wait"]).unwrap().to_json();
        assert!(json.get("started_at").is_some() && json.get("ended_at").is_none(), "{json}");
    }
}
