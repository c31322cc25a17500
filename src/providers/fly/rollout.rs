//! How machines are replaced (rolling, canary, bluegreen, immediate), how a machine is
//! known to be up, and how recorded configs are put back.
//!
//! Rollback is a reconciliation: each recorded machine is brought back to its recorded
//! config, in the roll-out's order and batches, and machines this tool created are
//! destroyed. It needs only the snapshot, so the post step in a fresh process can run it,
//! and running it twice changes nothing the second time.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::api::{config_has_checks, Machine, LAUNCH_TAG, RESTORES_TAG};
use super::lease::TTL;
use super::FlyProvider;
use crate::config::{human, Strategy};
use crate::providers::{Context, ProviderError};

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
    pub fn image(&self) -> &str {
        self.config.get("image").and_then(Value::as_str).unwrap_or("")
    }

    fn started(&self) -> bool {
        self.state == "started"
    }

    /// The recorded config with another image: nothing else changes.
    fn with_image(&self, image: &str) -> Value {
        let mut c = self.config.clone();
        c["image"] = json!(image);
        c
    }
}

/// Adds metadata entries to a config. A copy never keeps the template's restore tag:
/// it restores nothing.
fn tagged(mut config: Value, tags: &[(&str, &str)]) -> Value {
    if !config.get("metadata").is_some_and(Value::is_object) {
        config["metadata"] = json!({});
    }
    if let Some(m) = config["metadata"].as_object_mut() {
        m.remove(RESTORES_TAG);
    }
    for (k, v) in tags {
        config["metadata"][*k] = json!(v);
    }
    config
}

/// The first machine goes alone; the rest in batches of `batch`.
pub fn batches<T: Clone>(items: &[T], batch: usize) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    if let Some((first, rest)) = items.split_first() {
        out.push(vec![first.clone()]);
        out.extend(rest.chunks(batch.max(1)).map(<[T]>::to_vec));
    }
    out
}

/// The first error of a batch, once every member has finished.
fn first_error(results: Vec<Result<(), ProviderError>>) -> Result<(), ProviderError> {
    results.into_iter().find(Result::is_err).unwrap_or(Ok(()))
}

fn cancelled(ctx: &Context) -> Result<(), ProviderError> {
    match ctx.shutdown.cause() {
        Some(cause) => Err(ProviderError::Cancelled(cause)),
        None => Ok(()),
    }
}

/// Why a machine will not come up by itself, if it will not: it failed, was destroyed,
/// or its process exited after its latest update.
pub(super) fn dead(m: &Machine) -> Option<String> {
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

impl FlyProvider {
    /// Waits until machine `id` has started (the wait endpoint) and, when it has checks,
    /// until they pass. Fails at once when the machine dies instead.
    pub(super) async fn await_ready(
        &self,
        id: &str,
        instance_id: Option<&str>,
        checks: bool,
        ctx: &Context,
    ) -> Result<(), ProviderError> {
        let sd = &ctx.shutdown;
        let timeout = |what: String| ProviderError::Timeout {
            what,
            limit: human(ctx.deadline.saturating_duration_since(Instant::now())),
            input: "deploy-timeout",
        };
        loop {
            let remaining = ctx.deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(timeout(format!("waiting for machine {id} to start")));
            }
            if self.client.wait(id, "started", instance_id, remaining.min(WAIT_POLL), sd).await? {
                break;
            }
            let m = self.client.get(id, sd).await?;
            if let Some(why) = dead(&m) {
                return Err(ProviderError::Failed(format!("machine {id} {why}")));
            }
        }
        if !checks {
            return Ok(());
        }
        let mut poll = FIRST_CHECK_POLL;
        loop {
            let m = self.client.get(id, sd).await?;
            if let Some(why) = dead(&m) {
                return Err(ProviderError::Failed(format!("machine {id} {why}")));
            }
            if m.state == "started" && m.checks_passing() {
                return Ok(());
            }
            if Instant::now() + poll > ctx.deadline {
                let states: Vec<String> =
                    m.real_checks().map(|c| format!("{} {}: {}", c.name, c.status, c.output)).collect();
                return Err(ProviderError::Timeout {
                    what: format!(
                        "machine {id}'s checks to pass (last: {})",
                        if states.is_empty() { "no result yet".into() } else { states.join("; ") }
                    ),
                    limit: "the rest of deploy-timeout".into(),
                    input: "deploy-timeout",
                });
            }
            let jitter = Duration::from_millis(fastrand::u64(0..250));
            if !sd.sleep(poll + jitter).await {
                return Err(ProviderError::Cancelled(sd.cause().unwrap_or("shutdown")));
            }
            poll = CHECK_POLL;
        }
    }

    /// Puts `image` on one recorded machine under its lease, and waits for it unless
    /// `wait` is off (immediate) or the machine was not running.
    async fn replace(&self, m: &Recorded, image: &str, wait: bool, ctx: &Context) -> Result<(), ProviderError> {
        cancelled(ctx)?;
        let nonce = self.leases.nonce(&m.id);
        let updated =
            self.client.update(&m.id, &m.with_image(image), !m.started(), nonce.as_deref(), &ctx.shutdown).await?;
        tracing::info!("machine {} now runs {image}", m.id);
        if wait && m.started() {
            self.await_ready(&m.id, Some(&updated.instance_id), config_has_checks(Some(&m.config)), ctx).await?;
        }
        Ok(())
    }

    pub(super) async fn rolling(&self, machines: &[Recorded], image: &str, ctx: &Context) -> Result<(), ProviderError> {
        for batch in batches(machines, self.max_unavailable.batch(machines.len())) {
            cancelled(ctx)?;
            first_error(join_all(batch.iter().map(|m| self.replace(m, image, true, ctx))).await)?;
        }
        Ok(())
    }

    /// All at once, no waiting: `wait_ready` then checks the whole app.
    pub(super) async fn immediate(
        &self,
        machines: &[Recorded],
        image: &str,
        ctx: &Context,
    ) -> Result<(), ProviderError> {
        first_error(join_all(machines.iter().map(|m| self.replace(m, image, false, ctx))).await)
    }

    /// Creates a machine like `template` with `image`, tagged as ours, taking a lease on it.
    async fn launch(
        &self,
        template: &Recorded,
        image: &str,
        cordoned: bool,
        extra: &[(&str, &str)],
        ctx: &Context,
    ) -> Result<Machine, ProviderError> {
        let mut tags = vec![(LAUNCH_TAG, self.launch_id.as_str())];
        tags.extend_from_slice(extra);
        let body = json!({
            "config": tagged(template.with_image(image), &tags),
            "region": template.region,
            "skip_service_registration": cordoned,
            "lease_ttl": TTL.as_secs(),
        });
        let created = match self.client.create(body, &ctx.shutdown).await {
            Ok(m) => m,
            // A create that got no clear answer may have worked: look before trying again.
            Err(ProviderError::Http(e)) => {
                tracing::info!("creating a machine got no clear answer ({e}); looking for it before trying again");
                let mine = self.client.list(&ctx.shutdown).await?.into_iter().find(|m| {
                    m.metadata(LAUNCH_TAG) == Some(self.launch_id.as_str())
                        && extra.iter().all(|(k, v)| m.metadata(k) == Some(*v))
                        && m.image() == image
                });
                match mine {
                    Some(m) => m,
                    None => return Err(ProviderError::Http(e)),
                }
            }
            Err(e) => return Err(e),
        };
        if let Some(nonce) = &created.nonce {
            self.leases.insert(&created.id, nonce.clone());
        }
        Ok(created)
    }

    /// One extra machine with the new image must come up and pass its checks before any
    /// existing machine changes. It takes no traffic (created cordoned), so a broken
    /// release never reaches users through it; it is destroyed afterwards.
    pub(super) async fn canary(&self, machines: &[Recorded], image: &str, ctx: &Context) -> Result<(), ProviderError> {
        let template = machines.iter().find(|m| m.started()).or(machines.first()).ok_or_else(no_machines)?;
        let canary = self.launch(template, image, true, &[("fly_canary", "true")], ctx).await?;
        tracing::info!("canary machine {} runs {image}", canary.id);
        let checked = self.await_ready(&canary.id, Some(&canary.instance_id), true, ctx).await;
        let destroyed = self.client.destroy(&canary.id, self.leases.nonce(&canary.id).as_deref(), &ctx.shutdown).await;
        checked.map_err(|e| ProviderError::Failed(format!("the canary failed, so no app machine was changed: {e}")))?;
        destroyed?;
        self.rolling(machines, image, ctx).await
    }

    /// Green machines come up beside the blue ones without traffic, pass their checks,
    /// then take the traffic; the blues are cordoned, stopped and destroyed. Until the
    /// blues are destroyed, a rollback only destroys greens.
    pub(super) async fn bluegreen(
        &self,
        machines: &[Recorded],
        image: &str,
        ctx: &Context,
    ) -> Result<(), ProviderError> {
        let blues: Vec<&Recorded> = machines.iter().filter(|m| m.started()).collect();
        let mut greens = Vec::new();
        for blue in &blues {
            cancelled(ctx)?;
            greens
                .push(self.launch(blue, image, true, &[("fly_bluegreen_deployment_tag", &self.launch_id)], ctx).await?);
        }
        first_error(join_all(greens.iter().map(|g| self.await_ready(&g.id, Some(&g.instance_id), true, ctx))).await)?;
        cancelled(ctx)?;
        let sd = &ctx.shutdown;
        for g in &greens {
            self.client.cordon(&g.id, false, self.leases.nonce(&g.id).as_deref(), sd).await?;
        }
        for b in &blues {
            self.client.cordon(&b.id, true, self.leases.nonce(&b.id).as_deref(), sd).await?;
        }
        for b in &blues {
            let nonce = self.leases.nonce(&b.id);
            self.client.stop(&b.id, nonce.as_deref(), sd).await?;
            self.client.destroy(&b.id, nonce.as_deref(), sd).await?;
        }
        // Stopped machines serve no traffic: they take the new image in place, stopped.
        for m in machines.iter().filter(|m| !m.started()) {
            self.replace(m, image, false, ctx).await?;
        }
        Ok(())
    }

    /// Brings every recorded machine back to its recorded config and removes machines
    /// this tool created. Idempotent.
    pub(super) async fn reconcile(&self, recorded: &[Recorded], ctx: &Context) -> Result<(), ProviderError> {
        let sd = &ctx.shutdown;
        let now = self.client.list(sd).await?;
        let present: Vec<String> =
            recorded.iter().filter(|r| now.iter().any(|m| m.id == r.id)).map(|r| r.id.clone()).collect();
        // A crashed run's leases expire within their TTL: wait that long for them.
        self.leases.acquire(&self.client, &present, TTL + Duration::from_secs(5), sd).await?;
        // The post step's rollback takes its own leases; they must outlive slow boots too.
        self.leases.keep_fresh(self.client.clone());
        for batch in batches(recorded, self.max_unavailable.batch(recorded.len())) {
            first_error(join_all(batch.iter().map(|r| self.restore(r, &now, ctx))).await)?;
        }
        let restores_recorded =
            |m: &Machine| m.metadata(RESTORES_TAG).is_some_and(|id| recorded.iter().any(|r| r.id == id));
        for m in now.iter().filter(|m| m.metadata(LAUNCH_TAG).is_some()) {
            let ours_extra =
                !recorded.iter().any(|r| r.id == m.id) && !restores_recorded(m) && m.is_active_app_machine();
            if ours_extra {
                tracing::info!("destroying machine {} that this deploy created", m.id);
                self.client.destroy(&m.id, self.leases.nonce(&m.id).as_deref(), sd).await?;
            }
        }
        Ok(())
    }

    /// One recorded machine back as it was: recreated if it is gone, its config put back
    /// if the image differs, started and uncordoned if it was.
    async fn restore(&self, r: &Recorded, now: &[Machine], ctx: &Context) -> Result<(), ProviderError> {
        let sd = &ctx.shutdown;
        let current = now.iter().find(|m| m.id == r.id || m.metadata(RESTORES_TAG) == Some(r.id.as_str()));
        let Some(cur) = current.filter(|m| m.is_active_app_machine()) else {
            tracing::info!("machine {} is gone; recreating it from its recorded config", r.id);
            let m = self.launch_restored(r, ctx).await?;
            if r.started() {
                self.await_ready(&m.id, Some(&m.instance_id), config_has_checks(Some(&r.config)), ctx).await?;
            }
            return Ok(());
        };
        let nonce = self.leases.nonce(&cur.id);
        if cur.image() != r.image() {
            tracing::info!("machine {} goes back to {}", cur.id, r.image());
            let updated = self.client.update(&cur.id, &r.config, !r.started(), nonce.as_deref(), sd).await?;
            if r.started() {
                self.await_ready(&cur.id, Some(&updated.instance_id), config_has_checks(Some(&r.config)), ctx).await?;
            }
        } else if r.started() && cur.state != "started" {
            self.client.start(&cur.id, nonce.as_deref(), sd).await?;
            self.await_ready(&cur.id, None, config_has_checks(Some(&r.config)), ctx).await?;
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
            "lease_ttl": TTL.as_secs(),
        });
        let m = self.client.create(body, &ctx.shutdown).await?;
        if let Some(n) = &m.nonce {
            self.leases.insert(&m.id, n.clone());
        }
        Ok(m)
    }

    /// The steps of a roll-out, in words, for `plan`.
    pub(super) fn describe(&self, machines: &[Recorded], image: &str, strategy: Strategy) -> Vec<String> {
        let ids =
            |ms: &[Recorded]| ms.iter().map(|m| format!("{} ({})", m.id, m.image())).collect::<Vec<_>>().join(", ");
        match strategy {
            Strategy::Rolling => batches(machines, self.max_unavailable.batch(machines.len()))
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    format!("rolling batch {}: update {} to {image}, wait until started and checks pass", i + 1, ids(b))
                })
                .collect(),
            Strategy::Immediate => {
                vec![format!("immediate: update {} to {image} all at once, then wait for all", ids(machines))]
            }
            Strategy::Canary => {
                let mut steps =
                    vec![format!("canary: create one cordoned machine with {image}, wait for its checks, destroy it")];
                steps.extend(self.describe(machines, image, Strategy::Rolling));
                steps
            }
            Strategy::Bluegreen => vec![
                format!(
                    "bluegreen: create {} green machines with {image} without traffic, wait for their checks",
                    machines.iter().filter(|m| m.started()).count()
                ),
                "uncordon the greens, cordon the blues, stop and destroy the blues".into(),
                format!("blues: {}", ids(machines)),
            ],
        }
    }
}

pub(super) fn no_machines() -> ProviderError {
    ProviderError::Failed(
        "the app has no machines to deploy to; create them first (fly deploy once, or fly machine run)".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::fly::api::MachineEvent;

    #[test]
    fn the_first_machine_goes_alone_then_batches() {
        assert_eq!(batches(&[1, 2, 3, 4, 5], 2), vec![vec![1], vec![2, 3], vec![4, 5]]);
        assert_eq!(batches(&[1], 3), vec![vec![1]]);
        assert!(batches::<u8>(&[], 3).is_empty());
    }

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
