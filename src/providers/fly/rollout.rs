//! How machines are replaced, as batches the engine drives: rolling (the first
//! machine alone, then `max-unavailable` at a time), immediate (all at once), canary
//! (one cordoned canary per process group first) and bluegreen (a green beside every
//! blue, then the switch). How a machine is known to be up, and how recorded configs
//! are put back.
//!
//! Rollback is a reconciliation: each recorded machine is brought back to its recorded
//! config, in the roll-out's order and batches, and machines this tool created are
//! destroyed. It needs only the snapshot, so the post step in a fresh process can run it,
//! and running it twice changes nothing the second time.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use async_trait::async_trait;
use futures_util::future::join_all;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::api::{config_has_checks, Machine, LAUNCH_TAG, RESTORES_TAG};
use super::lease::TTL;
use super::settings::{Settings, Strategy};
use super::{Core, FORCE_INSTANCE};
use crate::inputs::human;
use crate::providers::{
    batches, outlast, restore, Applied, Context, Instance, PlannedBatch, ProviderError, ReleaseRef, Rollout, Route,
    Waited,
};

/// How many check intervals a critical check is given before the wait fails.
const CRITICAL_INTERVALS: u32 = 3;

/// The longest grace period and interval of a config's checks (Fly's defaults when
/// unset: no grace, 15 s).
fn check_timing(config: Option<&Value>) -> (Duration, Duration) {
    let mut grace = Duration::ZERO;
    let mut interval = Duration::ZERO;
    let Some(c) = config else { return (grace, Duration::from_secs(15)) };
    let top = c.get("checks").and_then(Value::as_object).into_iter().flat_map(|m| m.values());
    let services = c
        .get("services")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.get("checks").and_then(Value::as_array))
        .flatten();
    for check in top.chain(services) {
        let read = |k: &str| check.get(k).and_then(Value::as_str).and_then(|t| crate::inputs::parse_duration(t).ok());
        grace = grace.max(read("grace_period").unwrap_or_default());
        interval = interval.max(read("interval").unwrap_or(Duration::from_secs(15)));
    }
    (grace, if interval.is_zero() { Duration::from_secs(15) } else { interval })
}

/// Metadata key on a canary: the machine it was copied from.
const CANARY_TAG: &str = "safe_deploy_canary_of";

/// One wait call's limit: short enough to notice a machine that died, long enough that
/// a normal boot takes one call.
const WAIT_POLL: Duration = Duration::from_secs(5);
/// How often checks are read once a machine has started (flyctl: every 1–2 s); the
/// first look comes sooner, since a fast app passes its first check within a second.
const CHECK_POLL: Duration = Duration::from_millis(1000);
const FIRST_CHECK_POLL: Duration = Duration::from_millis(300);

/// A machine as it was before the deploy: everything needed to put it back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recorded {
    pub id: String,
    pub name: String,
    pub region: String,
    pub state: String,
    pub cordoned: bool,
    pub config: Value,
}

impl Recorded {
    /// A machine with a full config; `None` when only a partial one could be read.
    /// A config that is not a JSON object cannot be put back, so it counts as unreadable.
    pub fn of(m: Machine) -> Option<Recorded> {
        let config = m.config.filter(Value::is_object)?;
        Some(Recorded { id: m.id, name: m.name, region: m.region, state: m.state, cordoned: m.cordoned, config })
    }

    pub fn image(&self) -> &str {
        self.config.get("image").and_then(Value::as_str).unwrap_or("")
    }

    fn started(&self) -> bool {
        self.state == "started"
    }

    /// Whether an update launches it: flyctl launches machines that were started,
    /// starting or failed, and keeps stopped, suspended and created ones as they were.
    fn launched(&self) -> bool {
        matches!(self.state.as_str(), "started" | "starting" | "failed")
    }

    pub fn has_checks(&self) -> bool {
        config_has_checks(Some(&self.config))
    }

    pub fn has_mounts(&self) -> bool {
        self.config.get("mounts").and_then(Value::as_array).is_some_and(|m| !m.is_empty())
    }

    pub fn process_group(&self) -> &str {
        let metadata = self.config.get("metadata");
        let group = |k: &str| metadata.and_then(|m| m.get(k)).and_then(Value::as_str);
        group("fly_process_group").or_else(|| group("process_group")).unwrap_or("app")
    }

    /// The first mount: its volume name and id.
    fn mount(&self) -> Option<(String, Option<String>)> {
        let m = self.config.get("mounts")?.as_array()?.first()?;
        let name = m.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
        Some((name, m.get("volume").and_then(Value::as_str).map(str::to_string)))
    }
}

/// Whether a config has services: only then does Fly's proxy deliver requests to the
/// machine, so only then can the health gate reach it alone.
fn serves(config: &Value) -> bool {
    config.get("services").and_then(Value::as_array).is_some_and(|s| !s.is_empty())
}

/// Adds metadata entries to a config. A copy never keeps the template's restore tag:
/// it restores nothing.
fn tagged(mut config: Value, tags: &[(&str, &str)]) -> Value {
    let Some(c) = config.as_object_mut() else { return config };
    let metadata = c.entry("metadata").or_insert_with(|| json!({}));
    if !metadata.is_object() {
        *metadata = json!({});
    }
    if let Some(m) = metadata.as_object_mut() {
        m.remove(RESTORES_TAG);
        for (k, v) in tags {
            m.insert((*k).to_string(), json!(v));
        }
    }
    config
}

/// The machine that stands for recorded machine `r` now: itself, or the copy a
/// rollback made of it; a machine on an unreachable host (no config) counts.
fn current<'a>(now: &'a [Machine], r: &Recorded) -> Option<&'a Machine> {
    now.iter()
        .find(|m| (m.id == r.id || m.metadata(RESTORES_TAG) == Some(r.id.as_str())) && m.is_active() && m.is_deployed())
}

/// Whether `now` is `recorded`, apart from the tags this tool adds (a recreated machine
/// carries the id of the machine it restores).
fn same_config(now: Option<&Value>, recorded: &Value) -> bool {
    let strip = |c: &Value| {
        let mut c = c.clone();
        if let Some(m) = c.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove(RESTORES_TAG);
        }
        c
    };
    now.is_some_and(|n| strip(n) == strip(recorded))
}

/// The first error of a batch, once every member has finished.
fn first_error<T>(results: Vec<Result<T, ProviderError>>) -> Result<Vec<T>, ProviderError> {
    results.into_iter().collect()
}

/// Why a machine will not come up by itself, if it will not: it failed, was destroyed,
/// or its process exited after its latest update.
pub fn dead(m: &Machine) -> Option<String> {
    match m.state.as_str() {
        "failed" | "destroyed" | "destroying" => return Some(format!("is {}", m.state)),
        "stopped" => {}
        _ => return None,
    }
    // Newest first: an exit before any later update or launch belongs to this version.
    let mut events: Vec<_> = m.events.iter().collect();
    events.sort_by_key(|e| std::cmp::Reverse(e.timestamp));
    for e in events {
        match e.kind.as_str() {
            "exit" => {
                let requested = e
                    .request
                    .as_ref()
                    .and_then(|r| r.get("exit_event").or_else(|| r.get("MonitorEvent")?.get("exit_event")))
                    .and_then(|x| x.get("requested_stop"))
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                if !requested {
                    let code = e.exit_code().map_or("unknown".to_string(), |c| c.to_string());
                    return Some(format!("exited with code {code} instead of starting"));
                }
            }
            "update" | "launch" => return None,
            _ => {}
        }
    }
    None
}

/// One batch of a Fly roll-out.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// Update these machines (indexes into the recorded list) to the new config.
    Update(Vec<usize>),
    /// Create one cordoned canary per process group with the new config.
    Canary,
    /// Create a cordoned green beside every blue.
    Greens,
    /// Send traffic to the greens; cordon, stop and destroy the blues.
    Switch,
}

fn steps(settings: &Settings, machines: &[Recorded]) -> Vec<Step> {
    // The first batch is what the gate checks alone: a running machine that serves
    // traffic goes first, so the gate can reach it.
    let mut all: Vec<usize> = (0..machines.len()).collect();
    all.sort_by_key(|&i| (!(machines[i].launched() && serves(&machines[i].config)), i));
    let rolling = || {
        let cut = batches::cut(all.len(), settings.max_unavailable);
        cut.into_iter().map(|ix| Step::Update(ix.into_iter().map(|i| all[i]).collect()))
    };
    match settings.strategy {
        Strategy::Rolling => rolling().collect(),
        Strategy::Immediate => vec![Step::Update(all.clone())],
        Strategy::Canary => std::iter::once(Step::Canary).chain(rolling()).collect(),
        Strategy::Bluegreen => vec![Step::Greens, Step::Switch],
    }
}

/// The batches a roll-out would take, in words, for `plan`.
pub fn plan_batches(settings: &Settings, machines: &[Recorded], image: &str) -> Vec<PlannedBatch> {
    let ids = |ix: &[usize]| {
        ix.iter().map(|&i| format!("{} ({})", machines[i].id, machines[i].image())).collect::<Vec<_>>().join(", ")
    };
    steps(settings, machines)
        .iter()
        .map(|step| match step {
            Step::Update(ix) => PlannedBatch {
                label: crate::markdown::counted(ix.len(), "machine"),
                steps: vec![format!("update {} to {image}, wait until started and checks pass", ids(ix))],
            },
            Step::Canary => PlannedBatch {
                label: "canary".into(),
                steps: vec![format!(
                    "create one cordoned canary machine per process group with {image}, wait for its checks; it is destroyed before the next batch"
                )],
            },
            Step::Greens => PlannedBatch {
                label: "greens".into(),
                steps: vec![format!(
                    "create {} green machines with {image} beside the blues, without traffic; wait for their checks",
                    machines.len()
                )],
            },
            Step::Switch => PlannedBatch {
                label: "switch".into(),
                steps: vec![format!("uncordon the greens, then cordon, stop and destroy the blues: {}", ids(&(0..machines.len()).collect::<Vec<_>>()))],
            },
        })
        .collect()
}

/// A machine this roll-out created, and whether it was launched.
#[derive(Debug, Clone)]
struct Created {
    machine: Machine,
    launched: bool,
    /// Canary or green.
    kind: &'static str,
}

/// A Fly roll-out: the recorded machines, the config each gets, and the batches.
pub struct FlyRollout {
    core: Arc<Core>,
    machines: Vec<Recorded>,
    image: String,
    /// The config each recorded machine gets, in the same order.
    configs: Vec<Value>,
    steps: Vec<Step>,
    changed: bool,
    /// The instance each updated machine got, so waiting watches the new one.
    instances: HashMap<String, String>,
    created: Vec<Created>,
    /// A free volume for the green of each recorded machine that mounts one.
    volumes: BTreeMap<usize, String>,
}

impl FlyRollout {
    /// Builds every config to send, so a fly.toml problem is found before any change.
    pub fn new(
        core: Arc<Core>,
        machines: Vec<Recorded>,
        image: &str,
        version: Option<&str>,
    ) -> Result<FlyRollout, ProviderError> {
        let version = version.map(str::to_string).unwrap_or_else(|| tag_of(image));
        let mut configs = Vec::new();
        for m in &machines {
            let base = match &core.settings.fly_toml {
                Some(t) => t
                    .machine_config(m.process_group(), &m.config, image, &core.workspace)
                    .map_err(|e| ProviderError::Failed(format!("{e}; nothing was changed")))?,
                None => {
                    let mut c = m.config.clone();
                    if let Some(o) = c.as_object_mut() {
                        o.insert("image".into(), json!(image));
                    }
                    c
                }
            };
            configs.push(with_release_metadata(base, &version));
        }
        let steps = steps(&core.settings, &machines);
        Ok(FlyRollout {
            core,
            machines,
            image: image.to_string(),
            configs,
            steps,
            changed: false,
            instances: HashMap::new(),
            created: Vec::new(),
            volumes: BTreeMap::new(),
        })
    }

    /// For bluegreen: a free volume of the same name in its region for each green
    /// whose blue mounts one, or an error naming the missing volume. Nothing changes.
    pub async fn find_volumes(&mut self, ctx: &Context) -> Result<(), ProviderError> {
        if !self.steps.contains(&Step::Greens) || !self.machines.iter().any(Recorded::has_mounts) {
            return Ok(());
        }
        let mut free: Vec<_> =
            self.core.client.volumes(&ctx.shutdown).await?.into_iter().filter(|v| v.is_free()).collect();
        for (i, m) in self.machines.iter().enumerate() {
            let Some((name, _)) = m.mount() else { continue };
            match free.iter().position(|v| v.name == name && v.region == m.region) {
                Some(at) => {
                    self.volumes.insert(i, free.remove(at).id);
                }
                None => {
                    return Err(ProviderError::Failed(format!(
                        "machine {}'s green needs a free volume named {name} in {}, and there is none; create one (fly volumes create {name} -r {}) or deploy with strategy rolling; nothing was changed",
                        m.id, m.region, m.region
                    )))
                }
            }
        }
        Ok(())
    }

    fn release(&self) -> ReleaseRef {
        ReleaseRef::named(&self.image)
    }

    /// Machine `id`, reachable alone through the app's URL when its config serves.
    fn route(id: &str, config: Option<&Value>) -> Instance {
        let route = config.is_some_and(serves).then(|| Route::Header(FORCE_INSTANCE.to_string(), id.to_string()));
        Instance { id: id.to_string(), route }
    }

    /// Puts machine `i` on its new config under its lease; returns its new instance.
    async fn update(&self, i: usize, ctx: &Context) -> Result<(String, String), ProviderError> {
        ctx.check_cancelled()?;
        let m = &self.machines[i];
        let nonce = self.core.leases.nonce(&m.id);
        let updated =
            self.core.client.update(&m.id, &self.configs[i], !m.launched(), nonce.as_deref(), &ctx.shutdown).await?;
        ctx.progress.instance(&m.id, "updated", Some(&self.image));
        Ok((m.id.clone(), updated.instance_id))
    }

    /// Creates a machine like recorded machine `i` with its new config, tagged as ours,
    /// taking a lease on it. A create that got no clear answer may have worked, so it
    /// is looked for (by its tags) before the error is believed.
    async fn launch(
        &self,
        i: usize,
        kind: &'static str,
        launched: bool,
        ctx: &Context,
    ) -> Result<Created, ProviderError> {
        let template = &self.machines[i];
        let core = &self.core;
        // Each copy names its template, so a create that got no answer is found again.
        let kind_tag = match kind {
            "canary" => (CANARY_TAG, template.id.clone()),
            _ => ("fly_bluegreen_deployment_tag", format!("{}-{}", core.launch_id, template.id)),
        };
        let mut tags = vec![(LAUNCH_TAG, core.launch_id.as_str()), (kind_tag.0, kind_tag.1.as_str())];
        if kind == "canary" {
            tags.push(("fly_canary", "true"));
        }
        let mut config = tagged(self.configs[i].clone(), &tags);
        if let Some(volume) = self.volumes.get(&i) {
            let mount = config.get_mut("mounts").and_then(|m| m.get_mut(0)).and_then(Value::as_object_mut);
            match mount {
                Some(m) => {
                    m.insert("volume".into(), json!(volume));
                }
                None => {
                    return Err(ProviderError::Failed(format!("bug: machine {}'s mount is not an object", template.id)))
                }
            }
        }
        let body = json!({
            "config": config,
            "region": template.region,
            "skip_service_registration": true,
            "skip_launch": !launched,
            "lease_ttl": TTL.as_secs(),
        });
        let created = match core.client.create(body, &ctx.shutdown).await {
            Ok(m) => m,
            Err(ProviderError::Http(e)) => {
                tracing::info!("creating a machine got no clear answer ({e}); looking for it before trying again");
                let mine = core.client.list(&ctx.shutdown).await?.into_iter().find(|m| {
                    m.metadata(LAUNCH_TAG) == Some(core.launch_id.as_str())
                        && m.metadata(kind_tag.0) == Some(kind_tag.1.as_str())
                        && m.image() == self.image
                });
                match mine {
                    Some(m) => m,
                    None => return Err(ProviderError::Http(e)),
                }
            }
            Err(e) => return Err(e),
        };
        if let Some(nonce) = &created.nonce {
            core.leases.insert(&created.id, nonce.clone());
        }
        ctx.progress.instance(&created.id, &format!("created ({kind})"), Some(&self.image));
        Ok(Created { machine: created, launched, kind })
    }

    /// Destroys the canaries: they took no traffic and are not part of the app.
    async fn drop_canaries(&mut self, ctx: &Context) -> Result<(), ProviderError> {
        let canaries: Vec<Created> = self.created.iter().filter(|c| c.kind == "canary").cloned().collect();
        for c in canaries {
            let nonce = self.core.leases.nonce(&c.machine.id);
            self.core.client.destroy(&c.machine.id, nonce.as_deref(), &ctx.shutdown).await?;
            ctx.progress.instance(&c.machine.id, "destroyed (canary)", None);
            self.created.retain(|x| x.machine.id != c.machine.id);
        }
        Ok(())
    }

    /// Every machine of the roll-out is seen on the new image (each recorded machine, or
    /// for bluegreen each green), none has died, and no other deployed machine runs
    /// something else: a listing that shows otherwise is not ready, whatever each wait said.
    async fn verify_all(&self, ctx: &Context) -> Result<(), ProviderError> {
        let (now, _) = self.core.deployed(ctx).await?;
        let expected: Vec<&str> = if self.steps.contains(&Step::Switch) {
            self.created.iter().map(|c| c.machine.id.as_str()).collect()
        } else {
            self.machines.iter().map(|m| m.id.as_str()).collect()
        };
        if expected.is_empty() {
            return Err(ProviderError::Failed(format!("bug: the roll-out of {} had no machines", self.image)));
        }
        for id in &expected {
            match now.iter().find(|m| m.id == *id) {
                None => {
                    return Err(ProviderError::Failed(format!(
                        "machine {id} of the roll-out is gone from the app's machines; {} is not running everywhere",
                        self.image
                    )))
                }
                Some(m) if m.image() != self.image => {
                    return Err(ProviderError::Failed(format!(
                        "machine {id} runs {} instead of {}",
                        m.image(),
                        self.image
                    )))
                }
                Some(m) => {
                    if let Some(why) = dead(m) {
                        return Err(ProviderError::Failed(format!("machine {id} {why}")));
                    }
                }
            }
        }
        if let Some(m) = now.iter().find(|m| m.image() != self.image) {
            return Err(ProviderError::Failed(format!(
                "machine {} runs {} instead of {}: another deploy may be under way",
                m.id,
                m.image(),
                self.image
            )));
        }
        Ok(())
    }

    /// Waits for recorded machine `i` after its update: up and passing its checks when
    /// it was launched; stopped on the new image when it was kept stopped.
    async fn await_machine(&self, i: usize, ctx: &Context) -> Result<(), ProviderError> {
        let m = &self.machines[i];
        let instance = self.instances.get(&m.id).map(String::as_str);
        if m.launched() {
            return self
                .core
                .await_ready(&m.id, instance, config_has_checks(Some(&self.configs[i])), Some(&self.image), ctx)
                .await;
        }
        let now = self.core.client.get(&m.id, &ctx.shutdown).await?;
        if now.image() != self.image {
            return Err(ProviderError::Failed(format!(
                "machine {} runs {} instead of {}",
                m.id,
                now.image(),
                self.image
            )));
        }
        match dead(&now) {
            Some(why) => Err(ProviderError::Failed(format!("machine {} {why}", m.id))),
            None => Ok(()),
        }
    }
}

/// A config on a new release: flyctl's release number would be stale, so the deploy's
/// version takes its place (`fly status` shows it), and safe-deploy's own key says it.
fn with_release_metadata(config: Value, version: &str) -> Value {
    let mut config = tagged(config, &[("fly_release_version", version), ("safe_deploy_version", version)]);
    if let Some(m) = config["metadata"].as_object_mut() {
        m.remove("fly_release_id");
    }
    config
}

/// "v2" of "registry.fly.io/web:v2"; the reference itself when it has no tag.
fn tag_of(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once('@').map_or(last, |(name, _)| name).split_once(':') {
        Some((_, tag)) if !tag.is_empty() => tag.to_string(),
        _ => image.to_string(),
    }
}

#[async_trait]
impl Rollout for FlyRollout {
    fn batches(&self) -> usize {
        self.steps.len()
    }

    fn describe(&self, batch: usize) -> String {
        match &self.steps[batch] {
            Step::Update(ix) if ix.len() == 1 => format!("machine {}", self.machines[ix[0]].id),
            Step::Update(ix) => format!("{} machines", ix.len()),
            Step::Canary => "canary machines".into(),
            Step::Greens => "green machines beside the blues".into(),
            Step::Switch => "traffic to the greens, blues stopped".into(),
        }
    }

    async fn apply(&mut self, batch: usize, _gated: bool, ctx: &Context) -> Result<Applied, ProviderError> {
        ctx.check_cancelled()?;
        match self.steps[batch].clone() {
            Step::Update(ix) => {
                if self.created.iter().any(|c| c.kind == "canary") {
                    self.changed = true;
                    self.drop_canaries(ctx).await?;
                }
                // A write sent counts as a change, even if its answer never comes.
                self.changed = true;
                let updated = first_error(join_all(ix.iter().map(|&i| self.update(i, ctx))).await);
                let updated = updated?;
                self.instances.extend(updated);
                let instances = ix
                    .iter()
                    .filter(|&&i| self.machines[i].launched())
                    .map(|&i| Self::route(&self.machines[i].id, Some(&self.configs[i])))
                    .collect();
                Ok(Applied { release: self.release(), instances })
            }
            Step::Canary => {
                let mut groups: Vec<(&str, usize)> = Vec::new();
                for (i, m) in self.machines.iter().enumerate() {
                    match groups.iter_mut().find(|(g, _)| *g == m.process_group()) {
                        // The group's template is a started machine where it has one.
                        Some((_, t)) if !self.machines[*t].started() && m.started() => *t = i,
                        Some(_) => {}
                        None => groups.push((m.process_group(), i)),
                    }
                }
                let templates: Vec<usize> = groups.into_iter().map(|(_, i)| i).collect();
                self.changed = true;
                let made = first_error(join_all(templates.iter().map(|&i| self.launch(i, "canary", true, ctx))).await)?;
                let instances = made.iter().map(|c| Self::route(&c.machine.id, c.machine.config.as_ref())).collect();
                self.created.extend(made);
                Ok(Applied { release: self.release(), instances })
            }
            Step::Greens => {
                // A green is launched where its blue runs; each process group gets at
                // least one launched green, so its checks prove the release.
                let mut launched: Vec<bool> = self.machines.iter().map(Recorded::launched).collect();
                let mut seen = Vec::new();
                for (i, m) in self.machines.iter().enumerate() {
                    let group = m.process_group();
                    if !seen.contains(&group)
                        && !self.machines.iter().any(|x| x.process_group() == group && x.launched())
                    {
                        launched[i] = true;
                    }
                    seen.push(group);
                }
                self.changed = true;
                let made = first_error(
                    join_all((0..self.machines.len()).map(|i| self.launch(i, "green", launched[i], ctx))).await,
                )?;
                let instances = made
                    .iter()
                    .filter(|c| c.launched)
                    .map(|c| Self::route(&c.machine.id, c.machine.config.as_ref()))
                    .collect();
                self.created.extend(made);
                Ok(Applied { release: self.release(), instances })
            }
            Step::Switch => {
                self.changed = true;
                let core = self.core.clone();
                let sd = &ctx.shutdown;
                // Every green is uncordoned, stopped ones too: autostart must be able to
                // bring them up, as it could their blues.
                for g in &self.created {
                    core.client.cordon(&g.machine.id, false, core.leases.nonce(&g.machine.id).as_deref(), sd).await?;
                    ctx.progress.instance(&g.machine.id, "taking traffic", Some(&self.image));
                }
                // Let the proxy learn of the greens before the blues leave, then let
                // requests in flight on the blues finish before they stop.
                if !sd.sleep(core.settings.bluegreen_wait).await {
                    return Err(ProviderError::Cancelled(sd.cause().unwrap_or("shutdown")));
                }
                for b in self.machines.iter().filter(|m| m.launched()) {
                    core.client.cordon(&b.id, true, core.leases.nonce(&b.id).as_deref(), sd).await?;
                }
                if !sd.sleep(core.settings.bluegreen_wait).await {
                    return Err(ProviderError::Cancelled(sd.cause().unwrap_or("shutdown")));
                }
                for b in &self.machines {
                    let nonce = core.leases.nonce(&b.id);
                    if b.launched() {
                        core.client.stop(&b.id, nonce.as_deref(), sd).await?;
                    }
                    core.client.destroy(&b.id, nonce.as_deref(), sd).await?;
                    ctx.progress.instance(&b.id, "destroyed (blue)", None);
                }
                Ok(Applied { release: self.release(), instances: Vec::new() })
            }
        }
    }

    async fn wait(&mut self, batch: usize, ctx: &Context) -> Result<Waited, ProviderError> {
        let last = batch + 1 == self.steps.len();
        match self.steps[batch].clone() {
            Step::Update(ix) => {
                first_error(join_all(ix.iter().map(|&i| self.await_machine(i, ctx))).await)?;
            }
            Step::Canary | Step::Greens => {
                let (core, image) = (&self.core, self.image.as_str());
                let waits = self.created.iter().filter(|c| c.launched).map(|c| {
                    let checks = config_has_checks(c.machine.config.as_ref());
                    core.await_ready(&c.machine.id, Some(&c.machine.instance_id), checks, Some(image), ctx)
                });
                first_error(join_all(waits).await)?;
            }
            Step::Switch => {}
        }
        if last {
            self.verify_all(ctx).await?;
        }
        Ok(Waited::Ready)
    }

    fn changed(&self) -> bool {
        self.changed
    }
}

impl Core {
    /// Waits until machine `id` has started (the wait endpoint) and, when it has checks,
    /// until they pass, on `image` when given. Fails at once when the machine dies or
    /// its checks stay critical for several intervals.
    pub(super) async fn await_ready(
        &self,
        id: &str,
        instance_id: Option<&str>,
        checks: bool,
        image: Option<&str>,
        ctx: &Context,
    ) -> Result<(), ProviderError> {
        let sd = &ctx.shutdown;
        // Fly answers the wait when the machine has started (a long poll).
        let mut poll = ctx.poll(format!("machine {id} to start"), Duration::ZERO);
        loop {
            if self.client.wait(id, "started", instance_id, poll.left().min(WAIT_POLL), sd).await? {
                ctx.progress.instance(id, "started", image);
                break;
            }
            let m = self.client.get(id, sd).await?;
            if let Some(why) = dead(&m) {
                return Err(ProviderError::Failed(format!("machine {id} {why}")));
            }
            poll.next(&m.state).await?;
        }
        if !checks {
            return Ok(());
        }
        let mut poll = ctx.poll(format!("machine {id}'s checks to pass"), FIRST_CHECK_POLL);
        let checks_started = Instant::now();
        let mut critical_since: Option<Instant> = None;
        loop {
            let m = self.client.get(id, sd).await?;
            if let Some(why) = dead(&m) {
                return Err(ProviderError::Failed(format!("machine {id} {why}")));
            }
            if let Some(wanted) = image.filter(|w| m.image() != *w) {
                return Err(ProviderError::Failed(format!("machine {id} runs {} instead of {wanted}", m.image())));
            }
            if m.state == "started" && m.checks_passing() {
                ctx.progress.instance(id, "passing its checks", image);
                return Ok(());
            }
            // Checks that stay critical past their grace and a few intervals will not
            // pass: fail now, not at the deploy's deadline.
            let critical: Vec<String> = m
                .real_checks()
                .filter(|c| c.status == "critical")
                .map(|c| format!("{}: {}", c.name, c.output))
                .collect();
            if critical.is_empty() {
                critical_since = None;
            } else {
                let since = *critical_since.get_or_insert_with(Instant::now);
                let (grace, interval) = check_timing(m.config.as_ref());
                let patience = grace.saturating_sub(checks_started.elapsed()) + interval * CRITICAL_INTERVALS;
                if since.elapsed() >= patience {
                    return Err(ProviderError::Failed(format!(
                        "machine {id}'s checks stayed critical for {} ({}): the release does not pass Fly's own checks",
                        human(since.elapsed()),
                        critical.join("; ")
                    )));
                }
            }
            let states: Vec<String> =
                m.real_checks().map(|c| format!("{} {}: {}", c.name, c.status, c.output)).collect();
            poll.next(&if states.is_empty() { "no result yet".into() } else { states.join("; ") }).await?;
            poll.set_every(CHECK_POLL);
        }
    }

    /// Brings every recorded machine back to its recorded config and removes machines
    /// this tool created. Idempotent. Every machine is tried, each on its own.
    pub(super) async fn reconcile(&self, recorded: &[Recorded], ctx: &Context) -> Result<(), ProviderError> {
        let sd = &ctx.shutdown;
        // The engine took the leases on every recorded machine before this restore.
        let now = outlast(ctx, "listing the machines", || self.client.list(sd)).await?;
        // A later try of a machine reads the machines afresh: the last answer may be why it failed.
        // As many at once as a batch, never every machine: one keeps serving meanwhile.
        let at_once = batches::most_at_once(recorded.len(), self.settings.max_unavailable);
        let name = |r: &Recorded| format!("machine {}", r.id);
        restore::every_instance(ctx, "machine", recorded, at_once, name, |r, attempt| {
            let listed = (attempt == 1).then(|| now.clone());
            async move {
                let listed = match listed {
                    Some(listed) => listed,
                    None => self.client.list(sd).await?,
                };
                self.restore(r, &listed, ctx).await
            }
        })
        .await?;
        let now = outlast(ctx, "listing the machines", || self.client.list(sd)).await?;
        for m in now.iter().filter(|m| self.extra(m, recorded)) {
            tracing::info!("destroying machine {} that this deploy created", m.id);
            outlast(ctx, &format!("destroying machine {}", m.id), || async {
                let nonce = self.leases.nonce(&m.id);
                self.client.destroy(&m.id, nonce.as_deref(), sd).await
            })
            .await?;
            ctx.progress.instance(&m.id, "destroyed", None);
        }
        Ok(())
    }

    /// A machine a deploy created (a canary, a green) that restores no recorded machine.
    fn extra(&self, m: &Machine, recorded: &[Recorded]) -> bool {
        let restores_recorded = m.metadata(RESTORES_TAG).is_some_and(|id| recorded.iter().any(|r| r.id == id));
        m.metadata(LAUNCH_TAG).is_some()
            && !recorded.iter().any(|r| r.id == m.id)
            && !restores_recorded
            && m.is_active_app_machine()
    }

    /// Whether every recorded machine (or the machine restoring it) runs its recorded
    /// image, started where it was, and no machine a deploy created is left.
    pub(super) async fn in_effect(&self, recorded: &[Recorded], ctx: &Context) -> Result<bool, ProviderError> {
        let now = self.client.list(&ctx.shutdown).await?;
        let back = recorded.iter().all(|r| {
            now.iter()
                .find(|m| {
                    (m.id == r.id || m.metadata(RESTORES_TAG) == Some(r.id.as_str())) && m.is_active_app_machine()
                })
                .is_some_and(|m| same_config(m.config.as_ref(), &r.config) && (m.state == "started") == r.started())
        });
        Ok(back && !now.iter().any(|m| self.extra(m, recorded)))
    }

    /// One recorded machine back as it was: recreated if it is gone, its config put back
    /// if the image differs, started and uncordoned if it was.
    async fn restore(&self, r: &Recorded, now: &[Machine], ctx: &Context) -> Result<(), ProviderError> {
        let sd = &ctx.shutdown;
        let Some(cur) = current(now, r) else {
            tracing::info!("machine {} is gone; recreating it from its recorded config", r.id);
            let m = self.launch_restored(r, ctx).await?;
            if r.started() {
                self.await_ready(&m.id, Some(&m.instance_id), r.has_checks(), Some(r.image()), ctx).await?;
            }
            return Ok(());
        };
        if cur.config.is_none() {
            // On an unreachable host: it is there, but cannot be changed or recreated
            // (its volume is still attached); only a later restore can put it back.
            return Err(ProviderError::Failed(format!(
                "machine {} is on an unreachable host ({}); it cannot be restored until Fly reaches it again; run safe-deploy post again then",
                cur.id,
                cur.host_status.as_deref().unwrap_or("unknown")
            )));
        }
        let nonce = self.leases.nonce(&cur.id);
        if !same_config(cur.config.as_ref(), &r.config) {
            ctx.progress.instance(&cur.id, "going back", Some(r.image()));
            // A copy keeps saying which machine it restores, so a second restore finds it.
            let config = if cur.id == r.id {
                r.config.clone()
            } else {
                tagged(r.config.clone(), &[(RESTORES_TAG, r.id.as_str())])
            };
            let updated = self.client.update(&cur.id, &config, !r.launched(), nonce.as_deref(), sd).await?;
            if r.launched() {
                self.await_ready(&cur.id, Some(&updated.instance_id), r.has_checks(), Some(r.image()), ctx).await?;
            }
        } else if r.started() && cur.state != "started" {
            self.client.start(&cur.id, nonce.as_deref(), sd).await?;
            self.await_ready(&cur.id, None, r.has_checks(), Some(r.image()), ctx).await?;
        }
        if cur.cordoned && !r.cordoned {
            self.client.cordon(&cur.id, false, nonce.as_deref(), sd).await?;
        }
        Ok(())
    }

    async fn launch_restored(&self, r: &Recorded, ctx: &Context) -> Result<Machine, ProviderError> {
        let body = json!({
            "config": tagged(r.config.clone(), &[(RESTORES_TAG, r.id.as_str())]),
            "region": r.region,
            "skip_service_registration": r.cordoned,
            "skip_launch": !r.launched(),
            "lease_ttl": TTL.as_secs(),
        });
        let m = self.client.create(body, &ctx.shutdown).await?;
        if let Some(n) = &m.nonce {
            self.leases.insert(&m.id, n.clone());
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::fly::api::MachineEvent;

    #[test]
    fn a_machine_that_exited_after_its_update_is_dead_but_one_mid_restart_is_not() {
        let event = |kind: &str, ts: i64, requested: bool| MachineEvent {
            kind: kind.into(),
            timestamp: ts,
            request: Some(json!({"exit_event": {"exit_code": 2, "requested_stop": requested}})),
            ..Default::default()
        };
        let mut m = Machine { state: "stopped".into(), ..Default::default() };
        m.events = vec![event("exit", 3, false), event("update", 2, false), event("exit", 1, true)];
        assert_eq!(dead(&m).as_deref(), Some("exited with code 2 instead of starting"));
        m.events = vec![event("exit", 3, true), event("update", 2, false)];
        assert_eq!(dead(&m), None, "stopped on request: still restarting");
        m.events = vec![event("update", 4, false), event("exit", 3, false)];
        assert_eq!(dead(&m), None, "the exit belongs to the old version");
        m.state = "failed".into();
        assert!(dead(&m).is_some());
    }

    #[test]
    fn a_recreated_machine_has_its_recorded_config_whatever_tag_says_what_it_restores() {
        let recorded = json!({"image": "a", "metadata": {"fly_process_group": "app"}});
        let copy = tagged(recorded.clone(), &[(RESTORES_TAG, "m1")]);
        assert!(same_config(Some(&copy), &recorded));
        assert!(!same_config(Some(&json!({"image": "b", "metadata": {"fly_process_group": "app"}})), &recorded));
        assert!(!same_config(None, &recorded));
    }

    #[test]
    fn tags_are_added_without_losing_metadata() {
        let c = tagged(json!({"image": "a", "metadata": {"fly_process_group": "app"}}), &[(LAUNCH_TAG, "x")]);
        assert_eq!(c["metadata"]["fly_process_group"], "app");
        assert_eq!(c["metadata"][LAUNCH_TAG], "x");
        assert_eq!(tagged(json!({"image": "a"}), &[("k", "v")])["metadata"]["k"], "v");
        let copy = tagged(json!({"metadata": {RESTORES_TAG: "m1", LAUNCH_TAG: "old"}}), &[(LAUNCH_TAG, "new")]);
        assert!(copy["metadata"].get(RESTORES_TAG).is_none(), "a copy restores nothing");
        assert_eq!(copy["metadata"][LAUNCH_TAG], "new");
    }
}
