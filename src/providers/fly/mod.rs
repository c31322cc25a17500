//! Fly.io through the Machines API.
//!
//! Fly has no rollback endpoint, so the snapshot records every active app machine's
//! full config, and a rollback posts those configs back. Leases keep two deploys apart;
//! a release command runs before any app machine changes.

pub mod api;
pub mod client;
pub mod fly_toml;
pub mod lease;
pub mod release_command;
pub mod rollout;

use std::sync::Arc;

use async_trait::async_trait;

use self::api::Machine;
use self::client::FlyClient;
use self::lease::Leases;
use self::release_command::ReleaseCommand;
use self::rollout::{no_machines, Recorded};
use super::{Context, Finding, Provider, ProviderError, Release, Severity, Snapshot, Target};
use crate::config::{MaxUnavailable, Strategy};
use crate::http::HttpClient;

pub struct FlyProvider {
    client: Arc<FlyClient>,
    app: String,
    release_command: Option<String>,
    max_unavailable: MaxUnavailable,
    leases: Arc<Leases>,
    /// Tags the machines this run creates.
    launch_id: String,
}

impl FlyProvider {
    pub fn new(
        http: HttpClient,
        base: url::Url,
        app: &str,
        token: &str,
        release_command: Option<String>,
        max_unavailable: MaxUnavailable,
    ) -> Result<FlyProvider, ProviderError> {
        Ok(FlyProvider {
            client: Arc::new(FlyClient::new(http, base, app, token)?),
            app: app.to_string(),
            release_command,
            max_unavailable,
            leases: Arc::default(),
            launch_id: format!("{:016x}", fastrand::u64(..)),
        })
    }

    /// API requests sent so far, for the report.
    pub fn api_calls(&self) -> usize {
        self.client.calls()
    }

    fn recorded(snapshot: &Snapshot) -> Result<Vec<Recorded>, ProviderError> {
        serde_json::from_value(snapshot.data.get("machines").cloned().unwrap_or_default())
            .map_err(|e| ProviderError::Failed(format!("bug: the recorded Fly snapshot does not parse: {e}")))
    }

    async fn app_machines(&self, ctx: &Context) -> Result<Vec<Machine>, ProviderError> {
        let mut machines: Vec<Machine> =
            self.client.list(&ctx.shutdown).await?.into_iter().filter(Machine::is_active_app_machine).collect();
        machines.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(machines)
    }
}

/// "registry/app:v1", or "mixed: a (2), b (1)" when machines disagree.
fn release_name(machines: &[Recorded]) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for m in machines {
        match counts.iter_mut().find(|(i, _)| i == m.image()) {
            Some((_, n)) => *n += 1,
            None => counts.push((m.image().to_string(), 1)),
        }
    }
    match counts.as_slice() {
        [] => "no machines".into(),
        [(image, _)] => image.clone(),
        many => format!("mixed: {}", many.iter().map(|(i, n)| format!("{i} ({n})")).collect::<Vec<_>>().join(", ")),
    }
}

#[async_trait]
impl Provider for FlyProvider {
    fn name(&self) -> &'static str {
        "fly"
    }

    async fn preflight(&self, target: &Target, ctx: &Context) -> Result<Vec<Finding>, ProviderError> {
        let machines = self.app_machines(ctx).await?;
        let mut findings = Vec::new();
        let mut say = |severity, message: String| findings.push(Finding { severity, message });
        match machines.len() {
            0 => say(Severity::Blocker, "the app has no machines; create them first (fly deploy once, or fly machine run)".into()),
            1 if ctx.strategy != Strategy::Bluegreen => say(
                Severity::Warning,
                "the app has one machine: it is down while it restarts; add a second (fly scale count 2) for zero downtime".into(),
            ),
            n => say(Severity::Info, format!("{n} machines: {}", machines.iter().map(|m| m.id.as_str()).collect::<Vec<_>>().join(", "))),
        }
        for m in &machines {
            if m.host_status.as_deref().is_some_and(|s| s != "ok") || m.config.is_none() {
                say(
                    Severity::Blocker,
                    format!("machine {} is on an unreachable host, so its full config cannot be recorded for a rollback; retry later", m.id),
                );
            }
        }
        if ctx.strategy == Strategy::Bluegreen && !machines.iter().any(Machine::has_checks) {
            say(
                Severity::Blocker,
                "bluegreen needs health checks on the machines (add [[http_service.checks]] to fly.toml)".into(),
            );
        }
        if machines.iter().all(|m| m.image() == target.release) && !machines.is_empty() {
            say(Severity::Info, format!("{} is already live; the machines will be replaced anyway", target.release));
        }
        if let Some(cmd) = &self.release_command {
            say(Severity::Info, format!("release command `{cmd}` runs before any machine changes"));
        }
        Ok(findings)
    }

    async fn snapshot(&self, ctx: &Context) -> Result<Snapshot, ProviderError> {
        let recorded: Vec<Recorded> = self
            .app_machines(ctx)
            .await?
            .into_iter()
            .filter_map(|m| {
                let config = m.config.clone()?;
                Some(Recorded {
                    id: m.id,
                    name: m.name,
                    region: m.region,
                    state: m.state,
                    cordoned: m.cordoned,
                    config,
                })
            })
            .collect();
        Ok(Snapshot {
            release: release_name(&recorded),
            data: serde_json::json!({ "app": self.app, "machines": recorded }),
        })
    }

    fn plan(&self, live: &Snapshot, target: &Target, ctx: &Context) -> Vec<String> {
        let machines = Self::recorded(live).unwrap_or_default();
        let mut steps =
            vec![format!("take a lease on each of the {} machines, refreshed until the end", machines.len())];
        if let Some(cmd) = &self.release_command {
            steps.push(format!(
                "run the release command `{cmd}` in a throw-away machine with {}; non-zero stops here",
                target.release
            ));
        }
        steps.extend(self.describe(&machines, &target.release, ctx.strategy));
        steps
    }

    async fn prepare(&self, live: &Snapshot, target: &Target, ctx: &Context) -> Result<(), ProviderError> {
        let machines = Self::recorded(live)?;
        let ids: Vec<String> = machines.iter().map(|m| m.id.clone()).collect();
        self.leases.acquire(&self.client, &ids, std::time::Duration::ZERO, &ctx.shutdown).await?;
        self.leases.keep_fresh(self.client.clone());
        if let Some(command) = &self.release_command {
            let template_id = machines.first().ok_or_else(no_machines)?.id.clone();
            let template = self.client.get(&template_id, &ctx.shutdown).await?;
            let run = ReleaseCommand {
                client: &self.client,
                app: &self.app,
                command,
                image: &target.release,
                template: &template,
                launch_id: &self.launch_id,
            };
            run.run(ctx).await?;
        }
        Ok(())
    }

    async fn roll_out(&self, live: &Snapshot, target: &Target, ctx: &Context) -> Result<(), ProviderError> {
        let machines = Self::recorded(live)?;
        if machines.is_empty() {
            return Err(no_machines());
        }
        match ctx.strategy {
            Strategy::Rolling => self.rolling(&machines, &target.release, ctx).await,
            Strategy::Immediate => self.immediate(&machines, &target.release, ctx).await,
            Strategy::Canary => self.canary(&machines, &target.release, ctx).await,
            Strategy::Bluegreen => self.bluegreen(&machines, &target.release, ctx).await,
        }
    }

    async fn wait_ready(&self, release: &str, ctx: &Context) -> Result<(), ProviderError> {
        let machines = self.app_machines(ctx).await?;
        let mixed = release.starts_with("mixed: ");
        if let Some(m) = machines.iter().find(|m| !mixed && m.image() != release) {
            return Err(ProviderError::Failed(format!("machine {} runs {} instead of {release}", m.id, m.image())));
        }
        for m in &machines {
            // A stopped machine is fine only if it did not die on the new release.
            if let Some(why) = rollout::dead(m) {
                return Err(ProviderError::Failed(format!("machine {} {why}", m.id)));
            }
            if m.state == "stopped" {
                continue;
            }
            if m.state != "started" || (m.has_checks() && !m.checks_passing()) {
                self.await_ready(&m.id, Some(&m.instance_id), m.has_checks(), ctx).await?;
            }
        }
        Ok(())
    }

    async fn roll_back(&self, snapshot: &Snapshot, ctx: &Context) -> Result<(), ProviderError> {
        self.reconcile(&Self::recorded(snapshot)?, ctx).await
    }

    async fn history(&self, _ctx: &Context) -> Result<Vec<Release>, ProviderError> {
        Err(ProviderError::NotSupported {
            provider: "fly",
            operation: "list earlier releases through the Machines API; name the image to roll back to (e.g. registry.fly.io/APP:deployment-...) in the to input, or pass github-token so the ledger knows"
                .into(),
        })
    }

    async fn finish(&self) {
        self.leases.release_all(&self.client).await;
    }

    fn app_url(&self) -> Option<String> {
        Some(format!("https://{}.fly.dev", self.app))
    }

    fn api_calls(&self) -> Option<usize> {
        Some(self.client.calls())
    }
}
