//! One App Platform roll-out, in one batch (the platform replaces the instances
//! itself, moving traffic only once the new ones pass their readiness check): start a
//! deployment (a spec update with the new image, a new build of the app's sources, or
//! a rollback to an earlier deployment), then follow it by phase and by step until it
//! is ACTIVE, or ends in ERROR, CANCELED or SUPERSEDED, each of which ends the wait at
//! the poll that sees it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use super::client::{Deployment, Step};
use super::{label, runs, short, Core};
use crate::providers::logs::excerpt;
use crate::providers::{outlast, Applied, Context, ProviderError, ReleaseRef, Rollout, Waited};

/// How often a deployment is read while waited for: each ending is seen within one.
pub const POLL: Duration = Duration::from_secs(1);

/// How the deployment gets made.
pub enum Make {
    /// Put the spec with the new image in `components`.
    Update { spec: Value, components: Vec<String> },
    /// A new deployment of the current spec; `force_build` rebuilds git sources.
    Deploy { force_build: bool },
    /// Roll back to an earlier deployment (validated in `prepare`).
    Return(Deployment),
}

/// How following a deployment ended.
#[derive(Debug)]
pub enum End {
    Active(Deployment),
    /// The failing step and its reason, with the stage's log excerpt.
    Error(String),
    Canceled,
    Superseded,
}

pub struct DoRollout {
    core: Arc<Core>,
    app_id: String,
    /// The deployment live before: what must still serve when ours does not go live.
    live_id: String,
    make: Make,
    made: Option<Deployment>,
    changed: bool,
}

impl DoRollout {
    pub fn new(core: Arc<Core>, app_id: String, live_id: String, make: Make) -> DoRollout {
        DoRollout { core, app_id, live_id, make, made: None, changed: false }
    }
}

/// Every step of a deployment with its path ("deploy › components › web › wait"),
/// depth first.
pub fn steps(d: &Deployment) -> Vec<(String, &Step)> {
    fn walk<'a>(prefix: &str, steps: &'a [Step], out: &mut Vec<(String, &'a Step)>) {
        for s in steps {
            let path = if prefix.is_empty() { s.name.clone() } else { format!("{prefix} › {}", s.name) };
            out.push((path.clone(), s));
            walk(&path, &s.steps, out);
        }
    }
    let mut out = Vec::new();
    walk("", d.progress.as_ref().map(|p| p.steps.as_slice()).unwrap_or_default(), &mut out);
    out
}

/// The state a component reached when a deploy step of it did ("deploy › components ›
/// web › wait" RUNNING: web waits for its readiness check).
fn component_state(path: &str, status: &str) -> Option<&'static str> {
    let rest = path.strip_prefix("deploy › components › ")?;
    let (_, step) = rest.split_once(" › ")?;
    Some(match (step, status) {
        ("deploy", "RUNNING") => "starting new instances",
        ("wait", "RUNNING") => "waiting for its readiness check",
        ("wait", "SUCCESS") => "ready",
        (_, "ERROR") => "failed",
        _ => return None,
    })
}

fn component_of(path: &str) -> String {
    path.split(" › ").nth(2).unwrap_or("?").to_string()
}

/// The deepest step that failed, with its reason: what a person needs first.
pub fn failing_step(d: &Deployment) -> Option<(String, String)> {
    let all = steps(d);
    let failed = all.iter().filter(|(_, s)| s.status == "ERROR");
    let deepest = failed.clone().rfind(|(_, s)| s.reason.is_some()).or_else(|| failed.clone().next_back())?;
    let (path, step) = deepest;
    let reason = match &step.reason {
        Some(r) if !r.message.is_empty() && !r.code.is_empty() => format!("{} ({})", r.message, r.code),
        Some(r) if !r.message.is_empty() => r.message.clone(),
        Some(r) if !r.code.is_empty() => r.code.clone(),
        _ => "no reason given".into(),
    };
    Some((path.clone(), reason))
}

/// Whether `d` deploys `spec` (or does not say what it deploys).
pub fn deploys(d: &Deployment, spec: &Value) -> bool {
    !d.spec.is_object() || runs(&d.spec) == runs(spec)
}

/// How long a spec App Platform accepted may go without a deployment of it showing.
const SHOW_LIMIT: Duration = Duration::from_secs(120);

impl Core {
    /// The ids of the app's newest deployments: what a spec update about to be sent did
    /// not start.
    pub async fn deployment_ids(&self, app_id: &str, ctx: &Context) -> Result<Vec<String>, ProviderError> {
        let app = self.client.app(app_id, &ctx.shutdown).await?;
        let listed = self.client.deployments(app_id, 20, 1, &ctx.shutdown).await?;
        Ok(listed.into_iter().chain(app.under_way_all().cloned()).map(|d| d.id).collect())
    }

    /// The deployment a spec update started, when its answer named none: a deployment
    /// of `spec` that was not there `before`, looked for in the app and its newest
    /// deployments until it shows, for up to two minutes. App Platform deploys an
    /// accepted spec by itself, gate or no gate.
    pub async fn deployment_of(
        &self,
        app_id: &str,
        spec: &Value,
        before: &[String],
        ctx: &Context,
    ) -> Result<Deployment, ProviderError> {
        let mut poll = ctx
            .poll("the deployment of the new spec to show in App Platform's answers", POLL)
            .within(SHOW_LIMIT, "deploy-timeout");
        loop {
            let new = |d: &Deployment| !before.contains(&d.id) && deploys(d, spec);
            let app = self.client.app(app_id, &ctx.shutdown).await?;
            if let Some(d) = app.under_way_all().find(|d| new(d)) {
                return Ok(d.clone());
            }
            let newest = self.client.deployments(app_id, 5, 1, &ctx.shutdown).await?;
            if let Some(d) = newest.into_iter().find(|d| d.spec.is_object() && new(d)) {
                return Ok(d);
            }
            poll.next("none yet").await.map_err(|e| match e {
                ProviderError::Timeout { .. } => ProviderError::Failed(format!(
                    "App Platform took the spec update but showed no deployment of it within {}, and the app's spec names it: it is put back",
                    crate::inputs::human(poll.elapsed())
                )),
                other => other,
            })?;
        }
    }

    /// Follows deployment `id` until it ends, reporting each phase and step when it is
    /// reached.
    pub async fn follow(&self, app_id: &str, id: &str, ctx: &Context) -> Result<End, ProviderError> {
        let mut poll = ctx.poll(format!("deployment {}", short(id)), POLL);
        let mut phase = String::new();
        let mut seen: Vec<(String, String)> = Vec::new();
        loop {
            // A read: it outlasts a flaky API, and a spent rate budget, within the deadline.
            let d = outlast(ctx, "read the deployment", || self.client.deployment(app_id, id, &ctx.shutdown)).await?;
            if d.phase != phase {
                ctx.progress.log("deployment", &format!("{} is {}", short(id), d.phase));
                phase = d.phase.clone();
            }
            for (path, step) in steps(&d) {
                if step.steps.is_empty() && !seen.iter().any(|(p, s)| p == &path && s == &step.status) {
                    seen.retain(|(p, _)| p != &path);
                    seen.push((path.clone(), step.status.clone()));
                    let what = match (&step.message_base, &step.component_name) {
                        (Some(m), Some(c)) => format!(" ({m} {c})"),
                        _ => String::new(),
                    };
                    if step.status != "PENDING" {
                        ctx.progress.log("deployment", &format!("{path}{what}: {}", step.status));
                    }
                    if let Some(state) = component_state(&path, &step.status) {
                        let component = step.component_name.clone().unwrap_or_else(|| component_of(&path));
                        ctx.progress.instance(&format!("component {component}"), state, Some(&short(id)));
                    }
                }
            }
            match d.phase.as_str() {
                "ACTIVE" => return Ok(End::Active(d)),
                "ERROR" => return Ok(End::Error(self.why_failed(app_id, &d, ctx).await)),
                "CANCELED" => return Ok(End::Canceled),
                "SUPERSEDED" => return Ok(End::Superseded),
                "UNKNOWN" | "PENDING_BUILD" | "BUILDING" | "PENDING_DEPLOY" | "DEPLOYING" => {}
                other => {
                    return Err(ProviderError::Failed(format!(
                        "deployment {id} is in phase '{other}', which safe-deploy does not know; check it with doctl apps get-deployment {app_id} {id}"
                    )))
                }
            }
            let done = d.progress.as_ref().map(|p| (p.success_steps, p.total_steps)).unwrap_or_default();
            poll.next(&format!("{}, {} of {} steps done", d.phase, done.0, done.1)).await?;
        }
    }

    /// The failing step and its reason, and the last lines of that stage's log.
    async fn why_failed(&self, app_id: &str, d: &Deployment, ctx: &Context) -> String {
        let (path, reason) =
            failing_step(d).unwrap_or_else(|| ("no step".into(), "App Platform named no failing step".into()));
        let stage = if path.starts_with("build") { "BUILD" } else { "DEPLOY" };
        let mut log = String::new();
        if let Ok(urls) = self.client.log_urls(app_id, &d.id, stage, &ctx.shutdown).await {
            for url in urls.iter().take(3) {
                match self.client.download(url, &ctx.shutdown).await {
                    Ok(text) => log.push_str(&text),
                    Err(e) => ctx.progress.log("logs", &format!("(the {stage} log could not be read: {e})")),
                }
            }
        }
        for line in log.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev() {
            ctx.progress.log(&stage.to_lowercase(), line);
        }
        let tail = excerpt(&log);
        match tail.is_empty() {
            true => format!("step {path} failed: {reason}"),
            false => format!("step {path} failed: {reason}; {} log: {tail}", stage.to_lowercase()),
        }
    }

    /// Cancels a deployment a signal interrupted, within the runner's grace: true when
    /// App Platform says it ended CANCELED with `live_id` still serving.
    async fn cancel_before_live(&self, app_id: &str, id: &str, live_id: &str) -> bool {
        // The run's own shutdown has fired: these calls go out regardless.
        let calm = crate::shutdown::Shutdown::new();
        if self.client.cancel(app_id, id, &calm).await.is_err() {
            return false;
        }
        let ended = matches!(self.client.deployment(app_id, id, &calm).await, Ok(d) if d.phase == "CANCELED");
        let app = self.client.app(app_id, &calm).await;
        ended && matches!(app, Ok(a) if a.active_deployment.as_ref().is_some_and(|d| d.id == live_id))
    }

    /// Whether the app still runs `live_id`, as it must when a deployment did not go
    /// live: `Ok(None)` when it does, `Ok(Some(other))` when another deployment does.
    async fn other_live(
        &self,
        app_id: &str,
        live_id: &str,
        ctx: &Context,
    ) -> Result<Option<Deployment>, ProviderError> {
        let app = self.client.app(app_id, &ctx.shutdown).await?;
        match app.active_deployment {
            Some(a) if a.id == live_id => Ok(None),
            Some(a) => Ok(Some(a)),
            None => {
                Err(ProviderError::Failed("the app reports no active deployment; check it in the control panel".into()))
            }
        }
    }

    /// The deployment that replaced `ours`: the one in progress, else the active one.
    async fn successor(&self, app_id: &str, ours: &str, ctx: &Context) -> String {
        match self.client.app(app_id, &ctx.shutdown).await {
            Ok(app) => app
                .in_progress_deployment
                .into_iter()
                .chain(app.pending_deployment)
                .chain(app.active_deployment)
                .find(|d| d.id != ours)
                .map(|d| match &d.cause {
                    Some(c) if !c.is_empty() => format!("deployment {} (cause: {c})", label(&d)),
                    _ => format!("deployment {}", label(&d)),
                })
                .unwrap_or_else(|| "another deployment".into()),
            Err(_) => "another deployment".into(),
        }
    }
}

impl DoRollout {
    /// What a spec update leaves behind when its deployment does not go live: the spec
    /// names the new image though nothing serves it.
    fn left(&self) -> Option<String> {
        match &self.make {
            Make::Update { components, .. } => Some(format!(
                "the app's spec now names the new image for {} (App Platform keeps it; see the warning)",
                components.join(", ")
            )),
            _ => None,
        }
    }

    /// A spec update whose deployment did not go live leaves the new spec behind.
    fn note_spec_left(&self, core: &Core) {
        if let Make::Update { .. } = self.make {
            core.note(format!(
                "App Platform keeps the spec of a deployment that did not go live: the app's spec now names the new image, so the app's next deployment (deploy on push of another component, a settings change, the Deploy button) would deploy it without a health gate; the next safe-deploy run replaces it, or roll the spec back to {} in the control panel",
                short(&self.live_id)
            ));
        }
    }

    /// Sends the write that starts the deployment; returns the deployment it started.
    /// An error says whether the write took effect: a spec App Platform accepted is a
    /// change even when no deployment of it is seen yet.
    async fn start(&self, core: &Core, ctx: &Context) -> Result<Deployment, (bool, ProviderError)> {
        let c = &core.client;
        let refused = |e: ProviderError| {
            // A refusal (4xx, a 429 included) changed nothing; a write whose answer never
            // came, or came as a 5xx, may have.
            let maybe =
                matches!(e, ProviderError::Unavailable(_) | ProviderError::Http(_) | ProviderError::Cancelled(_));
            (maybe, e)
        };
        match &self.make {
            Make::Update { spec, .. } => {
                // What exists before the write is not what it starts.
                let before = core.deployment_ids(&self.app_id, ctx).await.map_err(|e| (false, e))?;
                let app = c.update(&self.app_id, spec, &ctx.shutdown).await.map_err(refused)?;
                // The description guarantees `pending_deployment` reflects an update; a
                // deployment counts only when it is new and deploys what was sent.
                if let Some(d) = app.under_way_all().find(|d| !before.contains(&d.id) && deploys(d, spec)) {
                    return Ok(d.clone());
                }
                core.deployment_of(&self.app_id, spec, &before, ctx).await.map_err(|e| (true, e))
            }
            Make::Deploy { force_build } => {
                c.create_deployment(&self.app_id, *force_build, &ctx.shutdown).await.map_err(refused)
            }
            Make::Return(to) => {
                let skip_pin = !core.settings.keep_pin;
                c.rollback(&self.app_id, &to.id, skip_pin, &ctx.shutdown).await.map_err(refused)
            }
        }
    }
}

#[async_trait]
impl Rollout for DoRollout {
    fn batches(&self) -> usize {
        1
    }

    fn describe(&self, _batch: usize) -> String {
        match &self.make {
            Make::Update { components, .. } => format!(
                "update the image of {} in the app spec; App Platform moves traffic once the new instances pass their readiness check",
                components.join(", ")
            ),
            Make::Deploy { force_build: true } => "a new deployment, rebuilding the app's sources".into(),
            Make::Deploy { force_build: false } => "a new deployment of the app's spec".into(),
            Make::Return(d) => format!("roll back to deployment {} (App Platform's own rollback)", label(d)),
        }
    }

    async fn apply(&mut self, _batch: usize, _gated: bool, ctx: &Context) -> Result<Applied, ProviderError> {
        // A signal that came before the first write stops here, with nothing changed.
        ctx.check_cancelled()?;
        let core = self.core.clone();
        // Sent is changed: App Platform deploys an update by itself.
        self.changed = true;
        let made = match self.start(&core, ctx).await {
            Ok(made) => made,
            Err((changed, e)) => {
                self.changed = changed;
                return Err(e);
            }
        };
        // The answer may leave the spec out; the full record says what it deploys.
        let made = match made.spec.is_object() {
            true => made,
            false => core.client.deployment(&self.app_id, &made.id, &ctx.shutdown).await.unwrap_or(made),
        };
        ctx.progress.log("deployment", &format!("{} started", label(&made)));
        let release = ReleaseRef { id: made.id.clone(), label: label(&made) };
        self.made = Some(made);
        Ok(Applied { release, instances: Vec::new() })
    }

    async fn wait(&mut self, _batch: usize, ctx: &Context) -> Result<Waited, ProviderError> {
        let Some(made) = self.made.clone() else {
            return Err(ProviderError::Failed(
                "bug: waited on an App Platform roll-out that started no deployment".into(),
            ));
        };
        let core = self.core.clone();
        let followed = match core.follow(&self.app_id, &made.id, ctx).await {
            Err(ProviderError::Cancelled(cause)) => {
                // Stopped mid-deployment: cancel it, so what it deploys never goes live.
                if core.cancel_before_live(&self.app_id, &made.id, &self.live_id).await {
                    ctx.progress.log("deployment", &format!("{} cancelled; nothing went live", short(&made.id)));
                    self.changed = false;
                    self.note_spec_left(&core);
                }
                return Err(ProviderError::Cancelled(cause));
            }
            other => other?,
        };
        let ours = short(&made.id);
        // Another deployment live where ours or the recorded one should be: someone
        // else's, not to be rolled back over.
        let overtaken = |other: &Deployment, what: String| Waited::Superseded {
            by: format!("deployment {}", label(other)),
            why: format!("{what}, but the app's active deployment is {}", label(other)),
        };
        match followed {
            End::Active(_) => {
                let app = core.client.app(&self.app_id, &ctx.shutdown).await?;
                match app.active_deployment {
                    Some(a) if a.id == made.id => {
                        if let Make::Return(_) = self.make {
                            core.pin_note(&self.app_id, &made);
                        }
                        Ok(Waited::Ready)
                    }
                    Some(other) => Ok(overtaken(&other, format!("deployment {ours} reports ACTIVE"))),
                    None => Err(ProviderError::Failed(format!(
                        "deployment {ours} reports ACTIVE, but the app reports no active deployment; check the app in the control panel"
                    ))),
                }
            }
            End::Error(why) => match core.other_live(&self.app_id, &self.live_id, ctx).await? {
                Some(other) => Ok(overtaken(&other, format!("deployment {ours} ended in ERROR"))),
                None => {
                    self.changed = false;
                    self.note_spec_left(&core);
                    Ok(Waited::Refused { why: format!("deployment {ours} ended in ERROR: {why}"), left: self.left() })
                }
            },
            End::Canceled => match core.other_live(&self.app_id, &self.live_id, ctx).await? {
                Some(other) => Ok(overtaken(&other, format!("deployment {ours} was CANCELED"))),
                None => {
                    self.changed = false;
                    self.note_spec_left(&core);
                    Ok(Waited::Refused {
                        why: format!(
                            "deployment {ours} was CANCELED (in the control panel or through the API) before it went live"
                        ),
                        left: self.left(),
                    })
                }
            },
            End::Superseded => {
                let by = core.successor(&self.app_id, &made.id, ctx).await;
                Ok(Waited::Superseded {
                    why: format!("deployment {ours} was SUPERSEDED by {by} before it went live"),
                    by,
                })
            }
        }
    }

    fn changed(&self) -> bool {
        self.changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(steps: Value) -> Deployment {
        serde_json::from_value(json!({ "id": "d1", "phase": "ERROR", "progress": { "steps": steps } })).unwrap()
    }

    #[test]
    fn a_components_deploy_steps_are_its_states() {
        assert_eq!(component_state("deploy › components › web › deploy", "RUNNING"), Some("starting new instances"));
        assert_eq!(component_state("deploy › components › web › wait", "SUCCESS"), Some("ready"));
        assert_eq!(component_state("deploy › components › web › wait", "ERROR"), Some("failed"));
        assert_eq!(component_state("build › components › web", "RUNNING"), None);
        assert_eq!(component_state("deploy › finalize", "SUCCESS"), None);
        assert_eq!(component_of("deploy › components › api › wait"), "api");
    }

    #[test]
    fn the_deepest_failing_step_and_its_reason_are_named() {
        let d = deployment(json!([
            { "name": "build", "status": "SUCCESS" },
            { "name": "deploy", "status": "ERROR", "steps": [
                { "name": "components", "status": "ERROR", "steps": [
                    { "name": "web", "status": "ERROR", "steps": [
                        { "name": "deploy", "status": "SUCCESS" },
                        { "name": "wait", "status": "ERROR", "reason": { "code": "UnhealthyHealthCheck", "message": "web failed its readiness check" } }
                    ]}
                ]}
            ]}
        ]));
        assert_eq!(
            failing_step(&d),
            Some((
                "deploy › components › web › wait".into(),
                "web failed its readiness check (UnhealthyHealthCheck)".into()
            ))
        );
        let no_reason = deployment(json!([{ "name": "build", "status": "ERROR" }]));
        assert_eq!(failing_step(&no_reason), Some(("build".into(), "no reason given".into())));
        assert_eq!(failing_step(&deployment(json!([]))), None);
    }
}
