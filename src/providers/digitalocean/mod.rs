//! DigitalOcean App Platform through its API (`/v2/apps`).
//!
//! The snapshot is the app's active deployment. A deploy is a new deployment: the spec
//! with a new image in the chosen components (pinned by digest where the image names
//! one), or a new build of the app's own sources. App Platform moves traffic only once
//! the new instances pass their readiness check, so a deployment that ends in ERROR
//! leaves the old one serving: nothing to undo. A restore is App Platform's own
//! rollback to the recorded deployment, validated first, and unpinned unless
//! `keep-pin` says otherwise. DigitalOcean's own action and doctl never roll back.
//!
//! Layout: `settings` (inputs, `.do/app.yaml`), `spec` (the app spec's components and
//! image sources), `client` (calls and wire types), `rollout` (following a deployment).

pub mod client;
pub mod rollout;
pub mod settings;
pub mod spec;

use crate::inputs::{self, Group, InputSpec};
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use self::client::{AppsClient, Deployment};
use self::rollout::{deploys, DoRollout, End, Make};
use self::settings::Settings;
use self::spec::{ImageRef, Readiness};
use super::registration::{EnvInput, Registration};
use super::{
    Capabilities, Context, Ending, Finding, Plan, PlannedBatch, Provider, ProviderError, ReleaseRef, Rollout, Severity,
    Snapshot, Source, Target,
};
use crate::http::HttpClient;

/// Deployments read (one page) when looking one up by a short id or for the history.
const LOOKBACK: usize = 100;

/// App Platform's own inputs: in `action.yml`, the CLI's flags and docs/inputs.md through `inputs::INPUTS`.
pub const INPUTS: &[InputSpec] = &[
    input("components", "", "DigitalOcean App Platform: the components (services, workers, jobs) whose image changes, separated by commas, e.g. web,worker. Empty: those .do/app.yaml runs from the image's repository, else those the live spec does, else the only image component."),
    input("app-spec", ".do/app.yaml", "DigitalOcean App Platform: the app spec file in the workspace, read when present for the app name and the image components; the live spec at DigitalOcean is what gets deployed, with the new image."),
    input("keep-pin", "false", "DigitalOcean App Platform: true leaves the app pinned to a rollback (no new deployment, deploy on push included, until it is committed or reverted); false commits it at once so the next deploy is not blocked.").boolean(),
];

const fn input(name: &'static str, default: &'static str, description: &'static str) -> InputSpec {
    inputs::of(&["digitalocean"], Group::Provider("DigitalOcean App Platform"), name, default, description)
}

pub const REGISTRATION: Registration = Registration {
    name: "digitalocean",
    title: "DigitalOcean App Platform",
    // doctl reads DIGITALOCEAN_ACCESS_TOKEN.
    token_env: &["DIGITALOCEAN_ACCESS_TOKEN"],
    needs_token: true,
    env: &[
        EnvInput { input: "api-url", vars: &["DIGITALOCEAN_API_URL"], set: "api-url", on_runner: false },
        EnvInput { input: "app", vars: &["DIGITALOCEAN_APP"], set: "app", on_runner: false },
    ],
    file_api: false,
    image_optional: true,
    defaults: settings::defaults,
    configure: settings::configure,
    inputs: &[INPUTS],
    #[cfg(feature = "sandbox")]
    demo: Some(crate::demo::digitalocean::start_demo),
    #[cfg(feature = "sandbox")]
    sandbox: Some(crate::demo::digitalocean::start_sandbox),
};

/// The first 8 characters of an id: how deployments are named to people.
pub fn short(id: &str) -> String {
    id.chars().take(8).collect()
}

/// What each component of a spec runs: "web: web@sha256:..., api: acme/api#main".
pub fn runs(spec: &Value) -> String {
    let parts: Vec<String> = spec::components(spec)
        .iter()
        .map(|c| match (&c.image, c.built) {
            (Some(i), _) => format!("{}: {}", c.name, spec::image_label(i)),
            (None, true) => format!("{}: built from its repository", c.name),
            (None, false) => c.name.clone(),
        })
        .collect();
    parts.join(", ")
}

/// A deployment as people see it: its short id first (what `to` and the ledger
/// match), then what it runs.
pub fn label(d: &Deployment) -> String {
    let mut out = match runs(&d.spec) {
        r if r.is_empty() => short(&d.id),
        r => format!("{} ({r})", short(&d.id)),
    };
    if let Some(of) = d.cloned_from.as_deref().filter(|of| !of.is_empty()) {
        out.push_str(&format!(" (a rollback to {})", short(of)));
    }
    out
}

/// What the snapshot records of an App Platform app.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DoRecord {
    pub app_id: String,
    pub app_name: String,
    /// The active deployment: what a restore rolls back to.
    pub deployment_id: String,
    /// The deployment it copies, when it is itself a rollback.
    #[serde(default)]
    pub cloned_from: Option<String>,
    /// The spec it deploys.
    pub spec: Value,
    #[serde(default)]
    pub pinned: Option<String>,
    /// A deployment already under way (someone else's, or a run that was stopped).
    #[serde(default)]
    pub in_progress: Option<String>,
    /// A deployment queued behind it (`pending_deployment`, not started yet).
    #[serde(default)]
    pub queued: Option<String>,
    /// What the app's own spec ran when recorded (it may differ from the active
    /// deployment's): a restore puts the spec back only when this run changed it.
    #[serde(default)]
    pub app_spec_runs: Option<String>,
    #[serde(default)]
    pub live_url: Option<String>,
}

impl DoRecord {
    fn of(snapshot: &Snapshot) -> Result<DoRecord, ProviderError> {
        snapshot.record_as("App Platform")
    }

    /// Whether `d` runs what the recorded deployment ran: it is that deployment, or a
    /// rollback to it (or to what it copies). (A plain deployment of the same spec is
    /// not: a tag may name another image by now.)
    fn same_as(&self, d: &Deployment) -> bool {
        d.id == self.deployment_id
            || d.cloned_from
                .as_deref()
                .is_some_and(|of| of == self.deployment_id || Some(of) == self.cloned_from.as_deref())
            // Where a rollback does not say what it copies: one that runs the same sources.
            || (d.cloned_from.is_none() && d.is_rollback() && d.spec.is_object() && runs(&d.spec) == runs(&self.spec))
    }

    /// Whether the app's spec runs what it ran when recorded: not changed since, by this
    /// run or anyone.
    fn spec_as_recorded(&self, app: &client::App) -> bool {
        runs(&app.spec) == *self.app_spec_runs.as_ref().unwrap_or(&runs(&self.spec))
    }
}

pub struct Core {
    pub client: AppsClient,
    /// The app as the input names it: a name or an id.
    pub app: String,
    pub settings: Settings,
    app_id: OnceLock<String>,
    /// Said at the end of the run (validation warnings, a pin left on purpose).
    notes: Mutex<Vec<String>>,
}

impl Core {
    pub fn note(&self, line: String) {
        let mut notes = self.notes.lock().unwrap_or_else(|p| p.into_inner());
        if !notes.contains(&line) {
            notes.push(line);
        }
    }

    /// The app's id, found once (by listing, when the input is a name).
    async fn app_id(&self, ctx: &Context) -> Result<String, ProviderError> {
        if let Some(id) = self.app_id.get() {
            return Ok(id.clone());
        }
        let app = self.client.find_app(&self.app, &ctx.shutdown).await?;
        Ok(self.app_id.get_or_init(|| app.id).clone())
    }

    /// A deployment by its id or the short id a label starts with.
    async fn find_deployment(&self, app_id: &str, name: &str, ctx: &Context) -> Result<Deployment, ProviderError> {
        let key = name.split_whitespace().next().unwrap_or(name).to_ascii_lowercase();
        if client::is_uuid(&key) {
            return self.client.deployment(app_id, &key, &ctx.shutdown).await;
        }
        if key.len() < 8 {
            return Err(ProviderError::Failed(format!(
                "'{name}' is too short to name a deployment; give at least its first 8 characters (doctl apps list-deployments {app_id})"
            )));
        }
        let list = self.client.deployments(app_id, LOOKBACK, 1, &ctx.shutdown).await?;
        let mut hits = list.into_iter().filter(|d| d.id.starts_with(&key));
        match (hits.next(), hits.next()) {
            (Some(d), None) => Ok(d),
            (Some(_), Some(_)) => {
                Err(ProviderError::Failed(format!("'{key}' names more than one deployment; give the whole id in to")))
            }
            (None, _) => Err(ProviderError::NotFound {
                provider: "DigitalOcean",
                what: format!("deployment {key} among the app's last {LOOKBACK}"),
            }),
        }
    }

    /// An earlier deployment a rollback may go to, or why not: App Platform's own
    /// validation, whose warnings go to the summary.
    async fn returnable(&self, app_id: &str, name: &str, ctx: &Context) -> Result<Deployment, ProviderError> {
        let d = self.find_deployment(app_id, name, ctx).await?;
        if !d.completed() {
            return Err(ProviderError::Failed(format!(
                "deployment {} never went live (it is {}), so it cannot be rolled back to; name one that did in to",
                label(&d),
                d.phase
            )));
        }
        self.validate(app_id, &d, ctx).await?;
        Ok(d)
    }

    /// Asks App Platform whether a rollback to `d` can go ahead.
    async fn validate(&self, app_id: &str, d: &Deployment, ctx: &Context) -> Result<(), ProviderError> {
        let skip_pin = !self.settings.keep_pin;
        let v = self.client.validate_rollback(app_id, &d.id, skip_pin, &ctx.shutdown).await?;
        for w in &v.warnings {
            self.note(format!("App Platform, on rolling back to {}: {}", short(&d.id), w.describe()));
        }
        if v.valid {
            return Ok(());
        }
        let why = v.error.map(|e| e.describe()).unwrap_or_else(|| "it gave no reason".into());
        Err(ProviderError::Failed(format!("App Platform refuses a rollback to deployment {}: {why}", label(d))))
    }

    /// Follows a rollback deployment until it is live; says how it ended otherwise.
    async fn finish_rollback(
        &self,
        r: &DoRecord,
        back: &Deployment,
        ctx: &Context,
    ) -> Result<ReleaseRef, ProviderError> {
        let c = &self.client;
        match self.follow(&r.app_id, &back.id, ctx).await? {
            End::Active(d) => {
                let now = c.app(&r.app_id, &ctx.shutdown).await?;
                if now.active_deployment.as_ref().map(|a| a.id.as_str()) != Some(d.id.as_str()) {
                    return Err(ProviderError::Failed(format!(
                        "rollback deployment {} reports ACTIVE, but the app's active deployment is another; check the app in the control panel",
                        short(&d.id)
                    )));
                }
                self.pin_note(&r.app_id, &d);
                if !self.settings.keep_pin && now.pinned_deployment.is_some() {
                    // Asked not to pin, but pinned: commit, so the next deploy is not blocked.
                    if let Err(e) = c.commit_rollback(&r.app_id, &ctx.shutdown).await {
                        self.note(format!(
                            "App Platform left the app pinned to {} although the rollback asked not to, and committing it failed ({e}); commit it (POST /v2/apps/{}/rollback/commit) so the next deploy is not blocked",
                            short(&d.id),
                            r.app_id
                        ));
                    }
                }
                let d = Deployment { spec: if d.spec.is_object() { d.spec } else { r.spec.clone() }, ..d };
                Ok(ReleaseRef { id: d.id.clone(), label: label(&d) })
            }
            End::Error(why) => {
                Err(ProviderError::Failed(format!("the rollback deployment {} failed: {why}", short(&back.id))))
            }
            End::Canceled => Err(ProviderError::Failed(format!(
                "the rollback deployment {} was CANCELED before it went live",
                short(&back.id)
            ))),
            End::Superseded => Err(ProviderError::Failed(format!(
                "the rollback deployment {} was SUPERSEDED by another deployment before it went live; check what the app runs in the control panel",
                short(&back.id)
            ))),
        }
    }

    /// After a rollback that kept its pin: say how to lift it.
    pub fn pin_note(&self, app_id: &str, d: &Deployment) {
        if self.settings.keep_pin {
            self.note(format!(
                "the app is pinned to rollback deployment {} (keep-pin is on): App Platform takes no new deployment, deploy on push included, until the rollback is committed (Commit in the control panel, or POST /v2/apps/{app_id}/rollback/commit) or reverted (POST /v2/apps/{app_id}/rollback/revert)",
                short(&d.id)
            ));
        }
    }
}

/// The deployments of `newest_first` a rollback may go to, oldest first.
fn rollback_targets(newest_first: &[Deployment], active: &str) -> Vec<ReleaseRef> {
    let at = |id: &str| newest_first.iter().position(|d| d.id == id);
    // A rollback at position r to position d abandoned everything between them.
    let abandoned: Vec<(usize, usize)> =
        newest_first.iter().enumerate().filter_map(|(r, d)| Some((r, at(d.cloned_from.as_deref()?)?))).collect();
    let left_behind = |i: usize| abandoned.iter().any(|(r, d)| *r < i && i < *d);
    // What a deployment really runs: a rollback copies another, which may be a copy too.
    let root = |id: &str| {
        let mut id = id.to_string();
        for _ in 0..newest_first.len() {
            match newest_first.iter().find(|d| d.id == id).and_then(|d| d.cloned_from.clone()) {
                Some(of) => id = of,
                None => break,
            }
        }
        id
    };
    let live_root = root(active);
    let mut good: Vec<ReleaseRef> = newest_first
        .iter()
        .enumerate()
        .filter(|(i, d)| d.completed() && d.id != active && !left_behind(*i) && root(&d.id) != live_root)
        .map(|(_, d)| ReleaseRef { id: d.id.clone(), label: label(d) })
        .collect();
    good.reverse();
    good
}

pub struct DoProvider {
    core: Arc<Core>,
}

impl DoProvider {
    pub fn new(
        http: HttpClient,
        base: url::Url,
        app: &str,
        token: &str,
        settings: Settings,
    ) -> Result<Self, ProviderError> {
        let core = Core {
            client: AppsClient::new(http, base, token)?,
            app: app.to_string(),
            settings,
            app_id: OnceLock::new(),
            notes: Mutex::new(Vec::new()),
        };
        Ok(DoProvider { core: Arc::new(core) })
    }
}

#[async_trait]
impl Provider for DoProvider {
    fn name(&self) -> &'static str {
        "digitalocean"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { history: true, single_instances: false, images: true, directories: false }
    }

    async fn snapshot(&self, ctx: &Context) -> Result<Snapshot, ProviderError> {
        let id = self.core.app_id(ctx).await?;
        let app = self.core.client.app(&id, &ctx.shutdown).await?;
        let Some(active) = app.active_deployment.clone() else {
            return Err(ProviderError::Failed(format!(
                "{} has no active deployment (a new app, or every deployment failed); deploy it once from the control panel or with doctl apps create-deployment {id}",
                self.core.app
            )));
        };
        // The app object may carry the deployment without its spec.
        let active = match active.spec.is_object() {
            true => active,
            false => self.core.client.deployment(&id, &active.id, &ctx.shutdown).await?,
        };
        let record = DoRecord {
            app_id: id,
            app_name: app.name(),
            deployment_id: active.id.clone(),
            cloned_from: active.cloned_from.clone(),
            spec: active.spec.clone(),
            pinned: app.pinned_deployment.as_ref().map(|d| d.id.clone()),
            in_progress: app.in_progress_deployment.as_ref().map(|d| d.id.clone()).filter(|id| !id.is_empty()),
            queued: app.pending_deployment.as_ref().map(|d| d.id.clone()).filter(|id| !id.is_empty()),
            app_spec_runs: Some(runs(&app.spec)),
            live_url: app.live_url.clone(),
        };
        Ok(Snapshot {
            release: ReleaseRef { id: active.id.clone(), label: label(&active) },
            record: serde_json::json!(record),
            cause: active.cause.clone().filter(|c| !c.is_empty()),
        })
    }

    async fn preflight(&self, live: &Snapshot, target: &Target, ctx: &Context) -> Result<Vec<Finding>, ProviderError> {
        let r = DoRecord::of(live)?;
        let app = &r.app_name;
        let mut findings = Vec::new();
        let mut say = |severity, message: String| findings.push(Finding { severity, message });
        let at = r.live_url.as_deref().map(|u| format!(" at {u}")).unwrap_or_default();
        // The app input may be an id: only now is the app's name known to check the spec
        // file against.
        if let Some(named) = self.core.settings.spec_name.as_deref().filter(|n| *n != app.as_str()) {
            say(
                Severity::Blocker,
                format!("the app spec file describes app {named}, but {} is app {app}; point app-spec at {app}'s spec, or set app to the app the file describes", short(&r.app_id)),
            );
        }
        say(Severity::Info, format!("{app} ({}) runs deployment {}{at}", short(&r.app_id), live.release.label));
        if let Some(pin) = &r.pinned {
            say(
                Severity::Blocker,
                format!("{app} is pinned to rollback deployment {}: App Platform takes no new deployment until that rollback is committed or reverted; commit it (Commit in the control panel, or POST /v2/apps/{}/rollback/commit) or revert it, then re-run", short(pin), r.app_id),
            );
        }
        // The post step's restore supersedes a stopped run's own deployment; a new deploy
        // must not supersede someone else's, started or queued.
        for (busy, how) in [(&r.in_progress, "is in progress"), (&r.queued, "is queued to start (pending)")] {
            let Some(busy) = busy else { continue };
            let d = self.core.client.deployment(&r.app_id, busy, &ctx.shutdown).await?;
            say(
                Severity::Blocker,
                format!("deployment {} of {app} {how} ({}, cause: {}): a new one would supersede it; wait for it to finish, or cancel it (doctl apps list-deployments {}), then re-run", label(&d), d.phase, d.cause.as_deref().unwrap_or("unknown"), r.app_id),
            );
        }
        let components = spec::components(&r.spec);
        match &target.source {
            Source::Image(text) => match ImageRef::parse(text) {
                Err(problem) => say(Severity::Blocker, format!("image: {problem}")),
                Ok(image) => match spec::choose(&r.spec, &image, &self.core.settings.components) {
                    Err(why) => say(Severity::Blocker, why),
                    Ok(names) => {
                        say(Severity::Info, format!("the new image goes to {}", names.join(", ")));
                        if image.digest.is_none() {
                            say(
                                Severity::Warning,
                                format!("{text} has no digest (a tag, or latest when none is given): App Platform pulls whatever the tag points to when it deploys, so a rollback to this deployment later cannot be exact; deploy by digest (REPO@sha256:...)"),
                            );
                        }
                    }
                },
            },
            Source::Rebuild => {
                let built: Vec<&str> = components.iter().filter(|c| c.built).map(|c| c.name.as_str()).collect();
                match built.as_slice() {
                    [] => say(
                        Severity::Blocker,
                        format!(
                            "{app} runs only images, so a new build would change nothing; give the new image in image"
                        ),
                    ),
                    names => say(
                        Severity::Info,
                        format!(
                            "a new deployment builds {} again from the latest commit of their branch (force_build)",
                            names.join(", ")
                        ),
                    ),
                }
            }
            Source::Release(rel) => {
                say(Severity::Info, format!("App Platform's own rollback to deployment {}", rel.label))
            }
            other => say(
                Severity::Blocker,
                format!(
                    "App Platform cannot deploy {}; give an image",
                    Target { source: other.clone(), version: None }.label()
                ),
            ),
        }
        for c in components.iter().filter(|c| c.kind == "services") {
            let check = Readiness::of(c.health_check.as_ref());
            say(Severity::Info, format!("service {} readiness check: {}", c.name, check.describe()));
            if check.http_path.is_none() {
                say(
                    Severity::Warning,
                    format!("service {} has no http_path in its health_check, so App Platform sends it traffic as soon as its port accepts connections, ready or not; set health_check.http_path in the app spec", c.name),
                );
            }
            if c.instances == 1 && !c.autoscaled {
                say(
                    Severity::Warning,
                    format!("service {} runs one instance: while it is replaced, and whenever it restarts or crashes, nothing else serves; set instance_count to 2 or more", c.name),
                );
            }
        }
        let tagged: Vec<String> = components
            .iter()
            .filter_map(|c| c.image.as_ref().filter(|i| i.get("digest").is_none()).map(|_| c.name.clone()))
            .collect();
        if !tagged.is_empty() && target.source != Source::Rebuild {
            say(
                Severity::Warning,
                format!("the live deployment runs {} by tag, not digest: a rollback pulls the tag again, which may have moved since", tagged.join(", ")),
            );
        }
        Ok(findings)
    }

    fn plan(&self, live: &Snapshot, target: &Target) -> Plan {
        let r = DoRecord::of(live).unwrap_or_default();
        let mut prepare = vec!["read the app's spec".to_string()];
        let make = match &target.source {
            Source::Image(i) => {
                let names = ImageRef::parse(i)
                    .ok()
                    .and_then(|image| spec::choose(&r.spec, &image, &self.core.settings.components).ok())
                    .map(|n| n.join(", "))
                    .unwrap_or_else(|| "the chosen components".into());
                format!("put the app spec with image {i} in {names}; App Platform starts a deployment")
            }
            Source::Rebuild => "create a deployment that builds the app's sources again".into(),
            Source::Release(rel) => {
                prepare.push(format!("validate a rollback to {} with App Platform", rel.label));
                format!("roll back to {} (App Platform's own rollback)", rel.label)
            }
            other => format!("deploy {}", Target { source: other.clone(), version: None }.label()),
        };
        let steps = vec![
            make,
            "follow the deployment by phase and step (build, deploy); ERROR, CANCELED or SUPERSEDED ends the wait at the poll that sees it, and an ERROR leaves the old deployment serving".into(),
            "App Platform moves traffic once the new instances pass their readiness check".into(),
        ];
        Plan { prepare, batches: vec![PlannedBatch { label: "all components".into(), steps }] }
    }

    async fn prepare(
        &self,
        live: &Snapshot,
        target: &Target,
        ctx: &Context,
    ) -> Result<Box<dyn Rollout>, ProviderError> {
        let r = DoRecord::of(live)?;
        let core = &self.core;
        let make = match &target.source {
            Source::Image(text) => {
                let image = ImageRef::parse(text).map_err(ProviderError::Failed)?;
                // The spec as it is now, so nothing changed since the snapshot is lost.
                let app = core.client.app(&r.app_id, &ctx.shutdown).await?;
                let components =
                    spec::choose(&app.spec, &image, &core.settings.components).map_err(ProviderError::Failed)?;
                let new_spec = spec::with_image(&app.spec, &image, &components);
                match new_spec == app.spec {
                    // The same image again (a tag pushed anew): the spec would not change,
                    // so a new deployment is what looks the tag up again.
                    true => Make::Deploy { force_build: false },
                    false => Make::Update { spec: new_spec, components },
                }
            }
            Source::Rebuild => {
                let built = spec::components(&r.spec).iter().any(|c| c.built);
                Make::Deploy { force_build: built }
            }
            Source::Release(rel) => {
                let d = core.returnable(&r.app_id, &rel.label, ctx).await?;
                if d.id == r.deployment_id {
                    return Err(ProviderError::Failed(format!(
                        "deployment {} is what runs now; name an earlier one in to",
                        label(&d)
                    )));
                }
                Make::Return(d)
            }
            other => {
                return Err(ProviderError::NotSupported {
                    provider: "digitalocean",
                    operation: format!(
                        "deploy {}; give an image",
                        Target { source: other.clone(), version: None }.label()
                    ),
                })
            }
        };
        Ok(Box::new(DoRollout::new(core.clone(), r.app_id.clone(), r.deployment_id.clone(), make)))
    }

    async fn restore(&self, snapshot: &Snapshot, ctx: &Context) -> Result<ReleaseRef, ProviderError> {
        let r = DoRecord::of(snapshot)?;
        let core = &self.core;
        let c = &core.client;
        // At most: cancel a deployment still under way, then roll back.
        for _ in 0..3 {
            let app = c.app(&r.app_id, &ctx.shutdown).await?;
            let active_is_recorded = app.active_deployment.as_ref().is_some_and(|a| r.same_as(a));
            let spec_is_recorded = r.spec_as_recorded(&app);
            let under_way = app.under_way_all().find(|d| r.same_as(d)).or(app.under_way());
            let back = match (under_way, &app.active_deployment) {
                // Already back (an earlier try, or nothing went live): no second rollback.
                (None, Some(a)) if active_is_recorded && spec_is_recorded => {
                    return Ok(ReleaseRef { id: a.id.clone(), label: label(a) })
                }
                // Nothing went live, but the spec this run put stays, and App Platform would
                // deploy it with the next deployment: the recorded spec goes back (App
                // Platform deploys it: the same release, anew).
                (None, Some(_)) if active_is_recorded => {
                    ctx.progress.log("rollback", "putting the recorded spec back (the app's spec names the new image)");
                    let before = core.deployment_ids(&r.app_id, ctx).await?;
                    let now = c.update(&r.app_id, &r.spec, &ctx.shutdown).await?;
                    let named = now.under_way_all().find(|d| !before.contains(&d.id) && deploys(d, &r.spec)).cloned();
                    match named {
                        Some(d) => d,
                        None => core.deployment_of(&r.app_id, &r.spec, &before, ctx).await?,
                    }
                }
                // An earlier try's rollback still under way: follow it.
                (Some(d), _) if r.same_as(d) => d.clone(),
                // A stopped run's deployment, not live yet: cancel it, so the recorded
                // one keeps serving (a rollback to the active deployment is refused).
                (Some(d), _) if active_is_recorded => {
                    ctx.progress
                        .log("rollback", &format!("cancelling deployment {} before it goes live", short(&d.id)));
                    if let Err(e) = c.cancel(&r.app_id, &d.id, &ctx.shutdown).await {
                        ctx.progress.log("rollback", &format!("cancelling {} answered: {e}", short(&d.id)));
                    }
                    core.follow(&r.app_id, &d.id, ctx).await?;
                    continue;
                }
                // This run's own rollback, kept pinned (keep-pin): revert it, which
                // deploys the spec from before it, the recorded one, and unpins.
                _ if r.pinned.is_none() && app.pinned_deployment.as_ref().is_some_and(|p| !r.same_as(p)) => {
                    let d = c.revert_rollback(&r.app_id, &ctx.shutdown).await?;
                    ctx.progress.log("rollback", &format!("the pinned rollback reverted: deployment {}", short(&d.id)));
                    d
                }
                _ => {
                    if let Some(pin) = app.pinned_deployment.as_ref().filter(|p| !r.same_as(p)) {
                        return Err(ProviderError::Failed(format!(
                            "the app is pinned to rollback deployment {}, so App Platform takes no rollback to {}; commit or revert that rollback first",
                            label(pin),
                            short(&r.deployment_id)
                        )));
                    }
                    let recorded =
                        Deployment { id: r.deployment_id.clone(), spec: r.spec.clone(), ..Default::default() };
                    core.validate(&r.app_id, &recorded, ctx).await?;
                    let d = c.rollback(&r.app_id, &r.deployment_id, !core.settings.keep_pin, &ctx.shutdown).await?;
                    ctx.progress.log(
                        "rollback",
                        &format!("deployment {} started, back to {}", short(&d.id), short(&r.deployment_id)),
                    );
                    d
                }
            };
            return core.finish_rollback(&r, &back, ctx).await;
        }
        Err(ProviderError::Failed(format!(
            "a deployment of {} kept starting while it was being put back to {}; check the app's activity in the control panel",
            r.app_name,
            short(&r.deployment_id)
        )))
    }

    /// A deployment under way at the end (someone else's: this run's ended) replaces
    /// what is live once it goes live, minutes from now: said, not waited for.
    async fn settle(&self, ctx: &Context) -> Result<Option<String>, ProviderError> {
        let id = self.core.app_id(ctx).await?;
        let app = self.core.client.app(&id, &ctx.shutdown).await?;
        Ok(app.under_way().map(|d| {
            let cause = d.cause.as_deref().filter(|c| !c.is_empty()).map(|c| format!(" ({c})")).unwrap_or_default();
            format!(
                "deployment {}{cause} is under way (another deploy's) and replaces what is live when it goes live",
                short(&d.id)
            )
        }))
    }

    async fn in_effect(&self, snapshot: &Snapshot, ctx: &Context) -> Result<bool, ProviderError> {
        let r = DoRecord::of(snapshot)?;
        let app = self.core.client.app(&r.app_id, &ctx.shutdown).await?;
        Ok(app.under_way().is_none()
            && app.active_deployment.as_ref().is_some_and(|a| r.same_as(a))
            && r.spec_as_recorded(&app))
    }

    /// Deployments a rollback may go to, oldest first: those that went live, minus the
    /// active one, anything that runs the active one's code under another id, and any
    /// deployment a rollback was made to leave (those were bad).
    async fn history(&self, ctx: &Context) -> Result<Vec<ReleaseRef>, ProviderError> {
        let id = self.core.app_id(ctx).await?;
        let app = self.core.client.app(&id, &ctx.shutdown).await?;
        let active = app.active_deployment.map(|a| a.id).unwrap_or_default();
        let newest_first = self.core.client.deployments(&id, LOOKBACK, 1, &ctx.shutdown).await?;
        Ok(rollback_targets(&newest_first, &active))
    }

    async fn finish(&self, _ending: Ending, _ctx: &Context) -> Vec<String> {
        std::mem::take(&mut *self.core.notes.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn api_calls(&self) -> Option<usize> {
        Some(self.core.client.calls())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_deployment_is_named_by_its_short_id_then_what_it_runs() {
        let d: Deployment = serde_json::from_value(json!({
            "id": "4f6c71e2-1e90-4762-9fee-6cc4a0a9f2cf",
            "spec": { "name": "shop", "services": [
                { "name": "web", "image": { "registry_type": "DOCR", "repository": "web", "tag": "v2" } },
                { "name": "api", "github": { "repo": "acme/api", "branch": "main" } }
            ] }
        }))
        .unwrap();
        assert_eq!(label(&d), "4f6c71e2 (web: web:v2, api: built from its repository)");
    }

    #[test]
    fn history_leaves_out_what_runs_now_and_what_a_rollback_left() {
        let d = |id: &str, phase: &str, of: Option<&str>| Deployment {
            id: id.into(),
            phase: phase.into(),
            cloned_from: of.map(str::to_string),
            progress: Some(client::Progress { success_steps: 6, total_steps: 6, ..Default::default() }),
            ..Default::default()
        };
        // v1, v2 (good), v3 (went live, bad), a rollback to v2, then v4 failed.
        let newest_first = [
            d("v4", "ERROR", None),
            d("r2", "ACTIVE", Some("v2")),
            d("v3", "SUPERSEDED", None),
            d("v2", "SUPERSEDED", None),
            d("v1", "SUPERSEDED", None),
        ];
        let ids: Vec<String> = rollback_targets(&newest_first, "r2").into_iter().map(|r| r.id).collect();
        assert_eq!(ids, ["v1"], "v2 runs now (as r2), v3 was rolled away from, v4 failed");
    }

    #[test]
    fn a_rollback_copy_runs_what_the_recorded_deployment_ran() {
        let r = DoRecord { deployment_id: "aaaa".into(), cloned_from: Some("0000".into()), ..Default::default() };
        let d = |id: &str, of: Option<&str>| Deployment {
            id: id.into(),
            cloned_from: of.map(str::to_string),
            ..Default::default()
        };
        assert!(r.same_as(&d("aaaa", None)));
        assert!(r.same_as(&d("bbbb", Some("aaaa"))), "a rollback to it");
        assert!(r.same_as(&d("cccc", Some("0000"))), "a rollback to what it copies");
        assert!(!r.same_as(&d("dddd", Some("eeee"))));
        assert!(!r.same_as(&d("ffff", None)));
        let spec =
            json!({ "name": "shop", "services": [{ "name": "web", "image": { "repository": "web", "tag": "v1" } }] });
        let r = DoRecord { deployment_id: "aaaa".into(), spec: spec.clone(), ..Default::default() };
        let rollback = |spec: Value| Deployment {
            id: "gggg".into(),
            spec,
            cause_details: Some(json!({ "type": "MANUAL_ROLLBACK" })),
            ..Default::default()
        };
        assert!(r.same_as(&rollback(spec.clone())), "a rollback that runs the same sources, copy unnamed");
        let other =
            json!({ "name": "shop", "services": [{ "name": "web", "image": { "repository": "web", "tag": "v2" } }] });
        assert!(!r.same_as(&rollback(other)));
    }
}
