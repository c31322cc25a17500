//! Fly.io through the Machines API.
//!
//! Fly has no rollback endpoint, so the snapshot records every deployed machine's full
//! config, and a restore posts those configs back. Only the app's deployed machines are
//! touched (`fly_platform_version` v2, not release-command or console machines);
//! machines made with `fly machine run` are left alone. Leases keep two deploys apart;
//! a release command runs before any app machine changes. A changed machine can be
//! reached alone through the app's URL with `fly-force-instance-id`, so the engine
//! gates the first batch before the rest is touched.
//!
//! Layout: `settings` (inputs and fly.toml), `fly_toml` (fly.toml as a machine config),
//! `client` (calls), `api` (wire types), `lease`, `release_command`, `rollout`
//! (strategies as batches, readiness, restore).

pub mod api;
pub mod client;
pub mod fly_toml;
pub mod lease;
pub mod release_command;
pub mod rollout;
pub mod settings;

use crate::inputs::{self, Group, InputSpec};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use self::api::Machine;
use self::client::FlyClient;
use self::lease::Leases;
use self::release_command::ReleaseCommand;
use self::rollout::{FlyRollout, Recorded};
use self::settings::{Settings, Strategy};
use super::registration::{EnvInput, Registration};
use super::{
    release_of, Capabilities, Context, Finding, LockFor, LockKind, Plan, Provider, ProviderError, ReleaseRef, Rollout,
    Severity, Snapshot, Target,
};
use crate::http::HttpClient;

/// Fly.io's own inputs: in `action.yml`, the CLI's flags and docs/inputs.md through `inputs::INPUTS`.
pub const INPUTS: &[InputSpec] = &[
    input("strategy", "", "Fly: how machines are replaced: rolling, canary, bluegreen or immediate. Empty: fly.toml's [deploy] strategy, else rolling."),
    input("release-command", "", "Fly: a command run once in a throw-away machine with the new image before any app machine changes (e.g. migrations); non-zero stops the deploy. Empty: fly.toml's [deploy] release_command."),
    input("release-command-timeout", "5m", "Fly: time limit of the release command. Left at the default, fly.toml's [deploy] release_command_timeout applies when it sets one.").duration(),
    input("bluegreen-wait", "10s", "Fly, bluegreen: how long Fly's proxy gets to learn that the greens take traffic before the blues are cordoned, and again before the blues stop, so requests in flight finish (flyctl waits 10s).").duration(),
    input("fly-config", "fly.toml", "Fly: path of fly.toml in the workspace. When present it is the machine config, as with fly deploy (env, services, checks, processes, VM size; the image comes from the image input) and gives app, health check path and [deploy]; without it only the image changes. Inputs override it."),
];

const fn input(name: &'static str, default: &'static str, description: &'static str) -> InputSpec {
    inputs::of(&["fly"], Group::Provider("Fly.io"), name, default, description)
}

pub const REGISTRATION: Registration = Registration {
    name: "fly",
    title: "Fly.io",
    // flyctl reads FLY_ACCESS_TOKEN before FLY_API_TOKEN.
    token_env: &["FLY_ACCESS_TOKEN", "FLY_API_TOKEN"],
    needs_token: true,
    env: &[
        EnvInput { input: "api-url", vars: &["FLY_API_URL"], set: "api-url", on_runner: false },
        // flyctl reads the app's name from FLY_APP too.
        EnvInput { input: "app", vars: &["FLY_APP"], set: "app", on_runner: false },
    ],
    file_api: false,
    image_optional: false,
    defaults: settings::defaults,
    configure: settings::configure,
    inputs: &[INPUTS, super::batches::INPUTS],
    #[cfg(feature = "sandbox")]
    demo: Some(crate::demo::start_demo),
    #[cfg(feature = "sandbox")]
    sandbox: Some(crate::demo::start_sandbox),
};

/// The header Fly's proxy honours to send a request to one machine.
pub const FORCE_INSTANCE: &str = "fly-force-instance-id";

/// What the snapshot records of a Fly app.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FlyRecord {
    pub app: String,
    /// The deployed machines, each with its full config.
    pub machines: Vec<Recorded>,
    /// Machines a deploy leaves alone (made with `fly machine run`): id and group.
    #[serde(default)]
    pub left_alone: Vec<String>,
    /// Deployed machines whose config could not be read (host unreachable).
    #[serde(default)]
    pub unreadable: Vec<String>,
}

impl FlyRecord {
    fn of(snapshot: &Snapshot) -> Result<FlyRecord, ProviderError> {
        snapshot.record_as("Fly")
    }
}

/// What the provider and its roll-outs share.
pub struct Core {
    pub client: Arc<FlyClient>,
    pub app: String,
    pub settings: Settings,
    pub leases: Arc<Leases>,
    /// Tags the machines this run creates.
    pub launch_id: String,
    /// Where fly.toml's `[[files]] local_path` is read from.
    pub workspace: PathBuf,
}

pub struct FlyProvider {
    core: Arc<Core>,
}

impl FlyProvider {
    pub fn new(
        http: HttpClient,
        base: url::Url,
        app: &str,
        token: &str,
        settings: Settings,
    ) -> Result<FlyProvider, ProviderError> {
        let workspace = settings.fly_toml_path.parent().map(PathBuf::from).unwrap_or_default();
        let launch_id = format!("{:016x}", fastrand::u64(..));
        Ok(FlyProvider {
            core: Arc::new(Core {
                client: Arc::new(FlyClient::new(http, base, app, token)?),
                app: app.to_string(),
                settings,
                leases: Arc::new(Leases::new(&launch_id)),
                launch_id,
                workspace,
            }),
        })
    }
}

/// The image a target names: an image, or a release (Fly's releases are images).
fn image_of(target: &Target) -> Result<String, ProviderError> {
    target.source.image_or_release("fly")
}

impl Core {
    /// The app's deployed machines, sorted by id, and the machines a deploy leaves alone.
    pub async fn deployed(&self, ctx: &Context) -> Result<(Vec<Machine>, Vec<Machine>), ProviderError> {
        let (mut deployed, others): (Vec<Machine>, Vec<Machine>) = self
            .client
            .list(&ctx.shutdown)
            .await?
            .into_iter()
            .filter(Machine::is_active)
            .partition(Machine::is_deployed);
        deployed.sort_by(|a, b| a.id.cmp(&b.id));
        Ok((deployed, others))
    }
}

#[async_trait]
impl Provider for FlyProvider {
    fn name(&self) -> &'static str {
        "fly"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            // The Machines API keeps no release history: the ledger or `to` must name one.
            history: false,
            single_instances: true,
            images: true,
            directories: false,
        }
    }

    async fn snapshot(&self, ctx: &Context) -> Result<Snapshot, ProviderError> {
        let (deployed, others) = self.core.deployed(ctx).await?;
        let unreadable: Vec<String> = deployed
            .iter()
            .filter(|m| m.config.is_none() || m.host_status.as_deref().is_some_and(|s| s != "ok"))
            .map(|m| m.id.clone())
            .collect();
        let machines: Vec<Recorded> = deployed.into_iter().filter_map(Recorded::of).collect();
        let mut release = release_of(machines.iter().map(Recorded::image));
        if machines.is_empty() && !others.is_empty() {
            // Not "no instances": machines run, only none a deploy replaces. Say what runs.
            let running: Vec<String> = others.iter().map(|m| format!("{} runs {}", m.id, m.image())).collect();
            release = ReleaseRef::named(&format!("only machines made by hand ({})", running.join(", ")));
        }
        let record = FlyRecord {
            app: self.core.app.clone(),
            machines,
            left_alone: others.iter().map(|m| format!("{} ({})", m.id, m.process_group())).collect(),
            unreadable,
        };
        Ok(Snapshot { release, record: serde_json::json!(record), cause: None })
    }

    async fn preflight(&self, live: &Snapshot, target: &Target, _: &Context) -> Result<Vec<Finding>, ProviderError> {
        let record = FlyRecord::of(live)?;
        let image = image_of(target)?;
        let s = &self.core.settings;
        let mut findings = Vec::new();
        let mut say = |severity, message: String| findings.push(Finding { severity, message });
        let machines = &record.machines;
        match machines.len() {
            0 if record.left_alone.is_empty() => say(
                Severity::Blocker,
                "the app has no deployed machines; create them first (fly deploy once)".into(),
            ),
            0 => say(
                Severity::Blocker,
                format!(
                    "the app has no machines that fly deploy made, only {} (made with fly machine run, which a deploy leaves alone); deploy once with fly deploy",
                    record.left_alone.join(", ")
                ),
            ),
            1 if s.strategy != Strategy::Bluegreen => say(
                Severity::Warning,
                "the app has one machine: it is down while it restarts; add a second (fly scale count 2) for zero downtime".into(),
            ),
            n => say(
                Severity::Info,
                format!("{n} machines: {}", machines.iter().map(|m| m.id.as_str()).collect::<Vec<_>>().join(", ")),
            ),
        }
        if !record.left_alone.is_empty() && !machines.is_empty() {
            say(Severity::Info, format!("left alone (not made by fly deploy): {}", record.left_alone.join(", ")));
        }
        for id in &record.unreadable {
            say(
                Severity::Blocker,
                format!("machine {id} is on an unreachable host, so its full config cannot be recorded for a rollback; retry later"),
            );
        }
        let has_mounts = machines.iter().any(Recorded::has_mounts);
        if s.strategy == Strategy::Canary && has_mounts {
            say(
                Severity::Blocker,
                "canary cannot deploy an app whose machines mount volumes (as flyctl refuses it); use rolling".into(),
            );
        }
        // What counts is the configs the deploy sends: fly.toml's checks when it has one.
        let new_has_checks = |m: &Recorded| match &s.fly_toml {
            Some(t) => t
                .machine_config(m.process_group(), &m.config, &image, &self.core.workspace)
                .is_ok_and(|c| api::config_has_checks(Some(&c))),
            None => m.has_checks(),
        };
        if s.strategy == Strategy::Bluegreen && !machines.iter().any(new_has_checks) {
            say(
                Severity::Blocker,
                "bluegreen needs health checks on the machines (add [[http_service.checks]] to fly.toml)".into(),
            );
        }
        match &s.fly_toml {
            Some(_) => say(
                Severity::Info,
                format!(
                    "{} is the machine config (env, services, checks, processes, VM size), with the image {image}",
                    s.fly_toml_path.display()
                ),
            ),
            None => say(
                Severity::Info,
                "no fly.toml in the workspace: only the image changes; each machine keeps the rest of its config"
                    .into(),
            ),
        }
        if !machines.is_empty() && machines.iter().all(|m| m.image() == image) {
            say(Severity::Info, format!("{image} is already live; the machines will be replaced anyway"));
        }
        if let Some(cmd) = &s.release_command {
            say(Severity::Info, format!("release command `{cmd}` runs before any machine changes"));
        }
        Ok(findings)
    }

    fn plan(&self, live: &Snapshot, target: &Target) -> Plan {
        let machines = FlyRecord::of(live).map(|r| r.machines).unwrap_or_default();
        let image = target.label();
        let mut prepare =
            vec![format!("take a lease on each of the {} machines, refreshed until the end", machines.len())];
        if let Some(cmd) = &self.core.settings.release_command {
            prepare.push(format!(
                "run the release command `{cmd}` in a throw-away machine with {image}; non-zero stops here"
            ));
        }
        Plan { prepare, batches: rollout::plan_batches(&self.core.settings, &machines, &image) }
    }

    async fn prepare(
        &self,
        live: &Snapshot,
        target: &Target,
        ctx: &Context,
    ) -> Result<Box<dyn Rollout>, ProviderError> {
        let image = image_of(target)?;
        let record = FlyRecord::of(live)?;
        if record.machines.is_empty() {
            return Err(ProviderError::Failed(
                "the app has no deployed machines to roll out to; nothing was changed".into(),
            ));
        }
        let core = &self.core;
        // The configs to send are built now, so a fly.toml problem changes nothing.
        let mut rollout = FlyRollout::new(core.clone(), record.machines.clone(), &image, target.version.as_deref())?;
        rollout.find_volumes(ctx).await?;
        if let Some(command) = &core.settings.release_command {
            let template_id = &record.machines[0].id;
            let template = core.client.get(template_id, &ctx.shutdown).await?;
            let run = ReleaseCommand {
                client: &core.client,
                app: &core.app,
                command,
                image: &image,
                template: &template,
                launch_id: &core.launch_id,
                files: core
                    .settings
                    .fly_toml
                    .as_ref()
                    .map(|t| t.files_json(&core.workspace))
                    .transpose()
                    .map_err(ProviderError::Failed)?,
                timeout: core.settings.release_command_timeout,
            };
            run.run(ctx).await?;
        }
        Ok(Box::new(rollout))
    }

    async fn restore(&self, snapshot: &Snapshot, ctx: &Context) -> Result<ReleaseRef, ProviderError> {
        let record = FlyRecord::of(snapshot)?;
        self.core.reconcile(&record.machines, ctx).await?;
        let (now, _) = self.core.deployed(ctx).await?;
        Ok(release_of(now.iter().map(Machine::image)))
    }

    async fn in_effect(&self, snapshot: &Snapshot, ctx: &Context) -> Result<bool, ProviderError> {
        let record = FlyRecord::of(snapshot)?;
        self.core.in_effect(&record.machines, ctx).await
    }

    async fn history(&self, _ctx: &Context) -> Result<Vec<ReleaseRef>, ProviderError> {
        Err(ProviderError::NotSupported {
            provider: "fly",
            operation: "list earlier releases through the Machines API; name the image to go back to (to, --to on the command line)".into(),
        })
    }

    fn lock_kind(&self) -> LockKind {
        LockKind::Lease
    }

    /// A lease on every recorded machine (that still exists, for a restore), refreshed
    /// until `unlock`. A restore waits out a lease a crashed run left: it runs out
    /// within its TTL.
    async fn lock(&self, recorded: &Snapshot, purpose: LockFor, ctx: &Context) -> Result<(), ProviderError> {
        let core = &self.core;
        let record = FlyRecord::of(recorded)?;
        let (ids, patience) = match purpose {
            LockFor::Deploy => (record.machines.iter().map(|m| m.id.clone()).collect(), Duration::ZERO),
            LockFor::Restore => {
                let now = core.client.list(&ctx.shutdown).await?;
                let present = record.machines.iter().filter(|r| now.iter().any(|m| m.id == r.id));
                (present.map(|r| r.id.clone()).collect::<Vec<_>>(), lease::TTL + Duration::from_secs(5))
            }
        };
        core.leases.acquire(&core.client, &ids, patience, &ctx.shutdown).await?;
        core.leases.keep_fresh(core.client.clone());
        Ok(())
    }

    async fn unlock(&self, _ctx: &Context) -> Vec<String> {
        self.core.leases.release_all(&self.core.client).await
    }

    fn api_calls(&self) -> Option<usize> {
        Some(self.core.client.calls())
    }
}
