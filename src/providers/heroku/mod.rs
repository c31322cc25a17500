//! Heroku through the Platform API, on Cedar and Fir.
//!
//! The snapshot is the live release (id and version). A deploy makes a new release:
//! a build of the uploaded source (Cedar and Fir), an image released on the formation
//! (container stack only), or a pipeline promotion. A failed build or release phase
//! leaves the old release live, so nothing needs undoing. A restore is Heroku's own
//! rollback, which makes a new release from the recorded one ("v44, a copy of v42").
//! Heroku has no release health check: the engine's gate is the proof, and with
//! preboot the version proof is what waits until the new code really serves.
//!
//! Layout: `settings` (inputs), `client` (calls and wire types), `source` (the
//! tarball), `rollout` (making the release, the release phase, the dynos).

pub mod client;
pub mod rollout;
pub mod settings;
pub mod source;

use crate::inputs::{self, Group, InputSpec};
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use self::client::{HerokuClient, Release};
use self::rollout::{HerokuRollout, Make};
use self::settings::Settings;
use super::registration::{no_defaults, EnvInput, Registration};
use super::{
    Capabilities, Context, Finding, Plan, PlannedBatch, Provider, ProviderError, ReleaseRef, Rollout, Severity,
    Snapshot, Source, Target,
};
use crate::http::HttpClient;

/// Heroku's own inputs: in `action.yml`, the CLI's flags and docs/inputs.md through `inputs::INPUTS`.
pub const INPUTS: &[InputSpec] = &[
    input("source-dir", ".", "Heroku, source deploys: the folder (in the workspace) packed into the source tarball, honouring .gitignore and .slugignore; e.g. services/api in a monorepo."),
    input("promote-from", "", "Heroku: instead of building, promote the release this app (e.g. the staging app) runs to app through their pipeline, then health-gate app and roll it back if it fails."),
];

const fn input(name: &'static str, default: &'static str, description: &'static str) -> InputSpec {
    inputs::of(&["heroku"], Group::Provider("Heroku"), name, default, description)
}

pub const REGISTRATION: Registration = Registration {
    name: "heroku",
    title: "Heroku",
    // The Heroku CLI reads HEROKU_API_KEY.
    token_env: &["HEROKU_API_KEY"],
    needs_token: true,
    env: &[
        EnvInput { input: "api-url", vars: &["HEROKU_API_URL"], set: "api-url", on_runner: false },
        // The Heroku CLI reads the app's name from HEROKU_APP too.
        EnvInput { input: "app", vars: &["HEROKU_APP"], set: "app", on_runner: false },
    ],
    file_api: false,
    image_optional: true,
    defaults: no_defaults,
    configure: settings::configure,
    inputs: &[INPUTS],
    #[cfg(feature = "sandbox")]
    demo: Some(crate::demo::heroku::start_demo),
    #[cfg(feature = "sandbox")]
    sandbox: Some(crate::demo::heroku::start_sandbox),
};

/// What the snapshot records of a Heroku app.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HerokuRecord {
    pub app: String,
    pub app_id: String,
    pub generation: String,
    pub stack: String,
    /// The live release.
    pub release_id: String,
    pub version: u64,
    /// The version it copies, when it is itself a rollback.
    #[serde(default)]
    pub copy_of: Option<u64>,
    pub web_dynos: u64,
    pub preboot: bool,
}

impl HerokuRecord {
    fn of(snapshot: &Snapshot) -> Result<HerokuRecord, ProviderError> {
        snapshot.record_as("Heroku")
    }

    /// Whether `release` runs what this record's release ran: it is that release, or
    /// a rollback to it (or to what it copies).
    fn same_as(&self, release: &Release) -> bool {
        release.id == self.release_id
            || release.copy_of().is_some_and(|of| of == self.version || Some(of) == self.copy_of)
    }
}

pub struct Core {
    pub client: HerokuClient,
    pub app: String,
    pub settings: Settings,
}

pub struct HerokuProvider {
    core: Arc<Core>,
}

impl HerokuProvider {
    pub fn new(
        http: HttpClient,
        base: url::Url,
        app: &str,
        token: &str,
        settings: Settings,
    ) -> Result<Self, ProviderError> {
        Ok(HerokuProvider {
            core: Arc::new(Core { client: HerokuClient::new(http, base, app, token)?, app: app.to_string(), settings }),
        })
    }
}

/// The release a person named: `v42`, `42`, `v44 (a copy of v42)` or a release id.
fn release_key(name: &str) -> String {
    let first = name.split_whitespace().next().unwrap_or(name);
    match first.strip_prefix('v').unwrap_or(first).parse::<u64>() {
        Ok(v) => v.to_string(),
        Err(_) => first.to_string(),
    }
}

impl Core {
    fn web_dynos(formation: &[client::Formation]) -> u64 {
        formation.iter().filter(|f| f.kind == "web").map(|f| f.quantity).sum()
    }

    /// An earlier release a rollback may go to, or why not.
    async fn returnable(&self, name: &str, ctx: &Context) -> Result<Release, ProviderError> {
        let release = self.client.release(&release_key(name), &ctx.shutdown).await?;
        if release.status == "expired" {
            return Err(ProviderError::Failed(format!(
                "{} has expired (Heroku deletes a release's slug after 30 days and 20 newer releases), so it cannot be rolled back to; name a newer one in to",
                release.label()
            )));
        }
        if !release.can_return_to() {
            return Err(ProviderError::Failed(format!(
                "{} is {} and not eligible for rollback; name a release that succeeded in to",
                release.label(),
                release.status
            )));
        }
        Ok(release)
    }
}

#[async_trait]
impl Provider for HerokuProvider {
    fn name(&self) -> &'static str {
        "heroku"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { history: true, single_instances: false, images: true, directories: true }
    }

    async fn snapshot(&self, ctx: &Context) -> Result<Snapshot, ProviderError> {
        let c = &self.core.client;
        let app = c.app(&ctx.shutdown).await?;
        let release = c.current_release(&ctx.shutdown).await?.ok_or_else(|| {
            ProviderError::Failed(format!(
                "{} has no current release (a new app?); deploy it once with git push heroku or heroku builds:create",
                self.core.app
            ))
        })?;
        let web_dynos = Core::web_dynos(&c.formation(&ctx.shutdown).await?);
        let preboot = c.preboot(&ctx.shutdown).await?;
        let record = HerokuRecord {
            app: app.name.clone(),
            app_id: app.id.clone(),
            generation: app.generation(),
            stack: app.stack(),
            release_id: release.id.clone(),
            version: release.version,
            copy_of: release.copy_of(),
            web_dynos,
            preboot,
        };
        Ok(Snapshot {
            release: ReleaseRef { id: release.id.clone(), label: release.label() },
            record: serde_json::json!(record),
            cause: release.cause(),
        })
    }

    async fn preflight(&self, live: &Snapshot, target: &Target, ctx: &Context) -> Result<Vec<Finding>, ProviderError> {
        let r = HerokuRecord::of(live)?;
        let app = &self.core.app;
        let mut findings = Vec::new();
        let mut say = |severity, message: String| findings.push(Finding { severity, message });
        say(
            Severity::Info,
            format!("{app} is a {} app on the {} stack; {} is live", r.generation, r.stack, live.release.label),
        );
        match &target.source {
            Source::Image(_) if r.generation == "fir" => say(
                Severity::Blocker,
                format!("{app} is a Fir app, and Fir runs no Docker images (Heroku: Docker apps are unsupported on Fir); leave image empty to deploy the source, built by Cloud Native Buildpacks"),
            ),
            Source::Image(_) if r.stack != "container" => say(
                Severity::Blocker,
                format!("{app} is on the {} stack, and only container-stack apps take images; run heroku stack:set container -a {app}, or leave image empty to deploy the source", r.stack),
            ),
            Source::Directory(d) if r.stack == "container" => say(
                Severity::Blocker,
                format!("{app} is on the container stack, so a source build ({}) would not run; push an image to registry.heroku.com/{app}/web and give its ID in image", d.display()),
            ),
            Source::Directory(d) if !d.join("Procfile").is_file() && r.generation != "fir" => say(
                Severity::Warning,
                format!("{} has no Procfile: Heroku's buildpack decides the web command", d.display()),
            ),
            Source::Promotion(from) => {
                let c = &self.core.client;
                let here = c.coupling(app, &ctx.shutdown).await?;
                let there = c.coupling(from, &ctx.shutdown).await?;
                match (here, there) {
                    (None, _) => say(Severity::Blocker, format!("{app} is in no pipeline; add it with heroku pipelines:add -a {app}")),
                    (_, None) => say(Severity::Blocker, format!("{from} is in no pipeline; add it to {app}'s with heroku pipelines:add -a {from}")),
                    (Some((p1, _, _)), Some((p2, _, _))) if p1 != p2 => {
                        say(Severity::Blocker, format!("{from} and {app} are in different pipelines; a promotion goes within one"))
                    }
                    (Some((_, stage, _)), Some((_, from_stage, _))) => {
                        say(Severity::Info, format!("promote {from} ({from_stage}) to {app} ({stage}) through their pipeline"))
                    }
                }
            }
            _ => {}
        }
        // Heroku has no deploy lock: a build or release phase in flight is another
        // deploy's, and two at once end with whichever finishes last.
        let others = self.core.in_flight(ctx).await?;
        if !others.is_empty() {
            say(
                Severity::Blocker,
                format!("{} in flight, started by another deploy: Heroku would make live whichever finishes last; re-run when it is done", others.join(" and ")),
            );
        }
        if r.web_dynos == 0 {
            say(Severity::Blocker, format!("{app} runs no web dynos, so nothing could prove the release healthy; scale it: heroku ps:scale web=2 -a {app}"));
        }
        if !r.preboot {
            say(
                Severity::Warning,
                format!("preboot is off: Heroku stops the old web dynos before the new ones are up, so requests fail during the switch; turn it on with heroku features:enable preboot -a {app}"),
            );
        }
        if r.web_dynos == 1 {
            say(
                Severity::Warning,
                format!("{app} runs one web dyno: a crash or restart drops requests; scale web to 2 with heroku ps:scale web=2 -a {app}"),
            );
        }
        match (r.preboot, &target.version) {
            (true, Some(v)) => say(
                Severity::Info,
                format!("preboot is on: the old dynos serve until the new ones take traffic (minutes, at times); the health gate waits until the app reports {v}"),
            ),
            (true, None) => say(
                Severity::Warning,
                "preboot is on and the health gate has no version to prove: the old dynos serve for minutes after the new ones are up, so the gate may pass on the old code; set expect-version (e.g. ${{ github.sha }}) and a version-url the app answers it on".into(),
            ),
            _ => {}
        }
        Ok(findings)
    }

    fn plan(&self, live: &Snapshot, target: &Target) -> Plan {
        let r = HerokuRecord::of(live).unwrap_or_default();
        let mut prepare = Vec::new();
        let make = match &target.source {
            Source::Directory(d) => {
                prepare.push(format!(
                    "pack {} into a tarball (minus .gitignore and .slugignore) and upload it",
                    d.display()
                ));
                format!(
                    "build it on Heroku ({}); a build that succeeds makes v{}",
                    r.generation,
                    r.version.saturating_add(1)
                )
            }
            Source::Image(i) => format!("release image {i} on the web process (docker-releases)"),
            Source::Promotion(from) => format!("promote {from}'s live release through the pipeline"),
            Source::Release(rel) => format!("roll back to {} (Heroku's own rollback, a new release)", rel.label),
            Source::Rebuild => "build the app's source again".into(),
        };
        let steps = vec![
            make,
            "follow the release phase; a failure leaves the live release as it is".into(),
            format!(
                "wait until the {} web dynos are up on the new release, a crash ending the wait at once",
                r.web_dynos
            ),
        ];
        Plan { prepare, batches: vec![PlannedBatch { label: "all web dynos".into(), steps }] }
    }

    async fn prepare(
        &self,
        live: &Snapshot,
        target: &Target,
        ctx: &Context,
    ) -> Result<Box<dyn Rollout>, ProviderError> {
        let r = HerokuRecord::of(live)?;
        let core = &self.core;
        let make = match &target.source {
            Source::Directory(dir) => {
                let dir = dir.clone();
                let packed = tokio::task::spawn_blocking(move || source::pack(Path::new(&dir)))
                    .await
                    .map_err(|e| ProviderError::Failed(format!("packing the source stopped: {e}")))?
                    .map_err(ProviderError::Failed)?;
                let (tarball, files) = packed;
                ctx.progress.log("upload", &format!("{files} files, {} KiB packed", tarball.len() / 1024));
                let blob = core.client.create_source(&ctx.shutdown).await?;
                core.client.upload(&blob.put_url, tarball, &ctx.shutdown).await?;
                let version = target.version.clone().unwrap_or_else(|| "safe-deploy".into());
                Make::Build { get_url: blob.get_url, version }
            }
            Source::Image(image) => Make::Image(image.clone()),
            Source::Promotion(from) => {
                let c = &core.client;
                let here = c.coupling(&core.app, &ctx.shutdown).await?;
                let there = c.coupling(from, &ctx.shutdown).await?;
                let (Some((pipeline, _, _)), Some((_, _, source_app))) = (here, there) else {
                    return Err(ProviderError::Failed(format!(
                        "{from} and {} must share a pipeline to promote",
                        core.app
                    )));
                };
                Make::Promote { pipeline, source_app, target_app: r.app_id.clone(), from: from.clone() }
            }
            Source::Release(rel) => Make::Return(core.returnable(&rel.label, ctx).await?),
            Source::Rebuild => {
                return Err(ProviderError::NotSupported {
                    provider: "heroku",
                    operation: "rebuild without a source; leave image empty to deploy source-dir".into(),
                })
            }
        };
        Ok(Box::new(HerokuRollout::new(core.clone(), make, r.web_dynos, r.version)))
    }

    async fn restore(&self, snapshot: &Snapshot, ctx: &Context) -> Result<ReleaseRef, ProviderError> {
        let r = HerokuRecord::of(snapshot)?;
        let core = &self.core;
        core.settle_in_flight(ctx).await?;
        let current = core.client.current_release(&ctx.shutdown).await?;
        // Already back (an earlier try, or the platform kept it): no second rollback.
        let live = match current {
            Some(now) if r.same_as(&now) => now,
            _ => {
                let back = core.client.rollback(&r.release_id, &ctx.shutdown).await.map_err(|e| match e {
                    ProviderError::Failed(why) if why.contains("expired") => ProviderError::Failed(format!(
                        "v{} has expired, so Heroku cannot roll back to it: {why}",
                        r.version
                    )),
                    other => other,
                })?;
                ctx.progress.log("rollback", &format!("{} made", back.label()));
                back
            }
        };
        if let Some(why) = core.follow_release(&live, ctx).await? {
            return Err(ProviderError::Failed(format!(
                "the rollback release {} failed its release phase: {why}",
                live.label()
            )));
        }
        core.await_dynos(live.version, r.web_dynos, ctx).await?;
        Ok(ReleaseRef { id: live.id.clone(), label: live.label() })
    }

    /// Another deploy's build or release phase still in flight would make its release
    /// live after this run looked: wait for it, or say it is under way.
    async fn settle(&self, ctx: &Context) -> Result<Option<String>, ProviderError> {
        match self.core.settle_in_flight(ctx).await {
            Ok(()) => Ok(None),
            Err(ProviderError::Timeout { .. }) => {
                let others = self.core.in_flight(ctx).await?;
                Ok((!others.is_empty()).then(|| {
                    format!(
                        "{} is still in flight (another deploy's) and makes its release live when it succeeds",
                        others.join(" and ")
                    )
                }))
            }
            Err(e) => Err(e),
        }
    }

    async fn in_effect(&self, snapshot: &Snapshot, ctx: &Context) -> Result<bool, ProviderError> {
        let r = HerokuRecord::of(snapshot)?;
        self.core.settle_in_flight(ctx).await?;
        let current = self.core.client.current_release(&ctx.shutdown).await?;
        Ok(current.is_some_and(|now| r.same_as(&now)))
    }

    /// Releases a rollback may go to, oldest first: ones that succeeded and still have
    /// their slug, minus the live one, what the live one copies, and any release a
    /// rollback was made to leave (those were bad).
    async fn history(&self, ctx: &Context) -> Result<Vec<ReleaseRef>, ProviderError> {
        let newest_first = self.core.client.releases_newest_first(200, &ctx.shutdown, |_| false).await?;
        let live = newest_first.iter().find(|r| r.current).cloned();
        // A rollback at vN to vM abandoned everything between them.
        let abandoned: Vec<(u64, u64)> =
            newest_first.iter().filter_map(|r| r.copy_of().map(|of| (of, r.version))).collect();
        let left_behind = |v: u64| abandoned.iter().any(|(of, at)| *of < v && v < *at);
        // What a release really runs: a rollback copies another, which may be a copy too.
        let copies: std::collections::HashMap<u64, u64> =
            newest_first.iter().filter_map(|r| r.copy_of().map(|of| (r.version, of))).collect();
        let root = |mut v: u64| {
            for _ in 0..copies.len() {
                match copies.get(&v) {
                    Some(of) => v = *of,
                    None => break,
                }
            }
            v
        };
        let live_root = live.as_ref().map(|r| root(r.version));
        let mut good: Vec<ReleaseRef> = newest_first
            .iter()
            .filter(|r| r.can_return_to() && !r.current && !left_behind(r.version))
            // Not the live code again, under another release number.
            .filter(|r| Some(root(r.version)) != live_root)
            .map(|r| ReleaseRef { id: r.id.clone(), label: r.label() })
            .collect();
        good.reverse();
        Ok(good)
    }

    fn api_calls(&self) -> Option<usize> {
        Some(self.core.client.calls())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_release_is_named_as_people_name_it() {
        assert_eq!(release_key("v42"), "42");
        assert_eq!(release_key("v44 (a copy of v42)"), "44");
        assert_eq!(release_key("01234567-89ab-4cde-8f01-23456789abcd"), "01234567-89ab-4cde-8f01-23456789abcd");
    }
}
