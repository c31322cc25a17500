//! One Heroku roll-out, in one batch (Heroku replaces the dynos itself): make the
//! release (a build of the uploaded source, an image released on the formation, a
//! pipeline promotion, or a rollback to an old release), then follow its release phase
//! and wait until every web dyno is up on it, catching a crash at once.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::client::{Build, Dyno, Release};
use super::Core;
use crate::providers::logs::{excerpt, mask_url_passwords};
use crate::providers::{Applied, Context, ProviderError, ReleaseRef, Rollout, Waited};

/// How often the build, the release and the dynos are read while waited for.
const POLL: Duration = Duration::from_millis(500);

/// How the release gets made.
pub enum Make {
    /// Build the source uploaded to `get_url`, reporting `version`.
    Build { get_url: String, version: String },
    /// Release a container image (an image ID) on the web process.
    Image(String),
    /// Promote what `source_app` (id) runs, through `pipeline`.
    Promote { pipeline: String, source_app: String, target_app: String, from: String },
    /// Roll back to an earlier release (by id), as a redeploy or rollback does.
    Return(Release),
}

pub struct HerokuRollout {
    core: Arc<Core>,
    make: Make,
    /// The web dynos the formation runs: how many must come up.
    web_dynos: u64,
    /// The version live before: the release made must be newer.
    live_version: u64,
    made: Option<Release>,
    changed: bool,
}

impl HerokuRollout {
    pub fn new(core: Arc<Core>, make: Make, web_dynos: u64, live_version: u64) -> HerokuRollout {
        HerokuRollout { core, make, web_dynos, live_version, made: None, changed: false }
    }
}

/// Where the web dynos stand against release `version`.
#[derive(Debug, PartialEq, Eq)]
pub enum DynoVerdict {
    /// `count` of them are up on it.
    Up,
    /// One on it crashed: waiting longer will not help.
    Crashed(String),
    Waiting {
        up: u64,
    },
}

/// A dyno counts only when it says which release it runs and that is `version`; none
/// are needed is never "up" (a formation of 0 proves nothing).
pub fn dynos_on(dynos: &[Dyno], version: u64, count: u64) -> DynoVerdict {
    let on_new: Vec<&Dyno> =
        dynos.iter().filter(|d| d.kind == "web" && d.release.as_ref().is_some_and(|r| r.version == version)).collect();
    if let Some(crashed) = on_new.iter().find(|d| d.state == "crashed") {
        return DynoVerdict::Crashed(crashed.name.clone());
    }
    let up = on_new.iter().filter(|d| d.state == "up").count() as u64;
    if count > 0 && up >= count {
        DynoVerdict::Up
    } else {
        DynoVerdict::Waiting { up }
    }
}

impl Core {
    /// Reads a log stream as it comes, passing each line on as progress (URL passwords
    /// masked); a signal ends it early.
    async fn follow_log(&self, source: &str, url: &str, ctx: &Context) -> String {
        let show = |line: &str| ctx.progress.log(source, &mask_url_passwords(line));
        match self.client.stream(url, ctx.remaining(), &ctx.shutdown, show).await {
            Ok(log) => log,
            Err(e) => {
                ctx.progress.log(source, &format!("(the log could not be read: {e})"));
                String::new()
            }
        }
    }

    /// Follows a release until its release phase ends: `Ok(None)` when it succeeded,
    /// `Ok(Some(log excerpt))` when it failed.
    pub async fn follow_release(&self, release: &Release, ctx: &Context) -> Result<Option<String>, ProviderError> {
        let mut poll = ctx.poll(format!("the release phase of v{}", release.version), POLL);
        let mut log = String::new();
        let mut read_log = false;
        loop {
            let now = self.client.release(&release.id, &ctx.shutdown).await?;
            match now.status.as_str() {
                "succeeded" => {
                    if let (false, Some(url)) = (read_log, &now.output_stream_url) {
                        self.follow_log("release phase", url, ctx).await;
                    }
                    return Ok(None);
                }
                "failed" => {
                    if !read_log {
                        if let Some(url) = &now.output_stream_url {
                            log = self.follow_log("release phase", url, ctx).await;
                        }
                    }
                    let tail = excerpt(&log);
                    return Ok(Some(if tail.is_empty() { "the release phase failed".to_string() } else { format!("the release phase failed: {tail}") }));
                }
                "pending" => {
                    if let (false, Some(url)) = (read_log, &now.output_stream_url) {
                        read_log = true;
                        log = self.follow_log("release phase", url, ctx).await;
                        continue;
                    }
                }
                other => {
                    return Err(ProviderError::Failed(format!(
                        "release v{} has status '{other}', which safe-deploy does not know; check it with heroku releases:info v{} -a {}",
                        now.version, now.version, self.app
                    )))
                }
            }
            poll.next(&now.status).await?;
        }
    }

    /// Waits until `count` web dynos are up on `version`; a crashed one ends it at once.
    pub async fn await_dynos(&self, version: u64, count: u64, ctx: &Context) -> Result<(), ProviderError> {
        let mut poll = ctx.poll(format!("web dynos on v{version}"), POLL);
        let mut seen: Vec<(String, String)> = Vec::new();
        loop {
            let dynos: Vec<Dyno> =
                self.client.dynos(&ctx.shutdown).await?.into_iter().filter(|d| d.kind == "web").collect();
            for d in &dynos {
                let on = d.release.as_ref().map(|r| format!("v{}", r.version));
                let key = (d.name.clone(), format!("{}:{}", d.state, on.clone().unwrap_or_default()));
                if !seen.contains(&key) {
                    ctx.progress.instance(&d.name, &d.state, on.as_deref());
                    seen.push(key);
                }
            }
            let up = match dynos_on(&dynos, version, count) {
                DynoVerdict::Up => return Ok(()),
                DynoVerdict::Crashed(name) => {
                    return Err(ProviderError::Failed(format!(
                        "dyno {name} crashed on v{version} (the router answers H10 App crashed); see heroku logs -a {}",
                        self.app
                    )))
                }
                DynoVerdict::Waiting { up } => up,
            };
            poll.next(&format!("{up} of {count} up")).await?;
        }
    }

    /// Follows a build: `Ok(release id)` once it made a release, `Err` with the build
    /// log's tail when it failed (nothing was released).
    async fn follow_build(&self, build: &Build, ctx: &Context) -> Result<Result<String, String>, ProviderError> {
        let mut poll = ctx.poll("the build", POLL);
        let mut log = String::new();
        if let Some(url) = &build.output_stream_url {
            log = self.follow_log("build", url, ctx).await;
        }
        loop {
            let now = self.client.build(&build.id, &ctx.shutdown).await?;
            match (now.status.as_str(), &now.release) {
                ("succeeded", Some(r)) => return Ok(Ok(r.id.clone())),
                ("failed", _) => {
                    let tail = excerpt(&log);
                    return Ok(Err(if tail.is_empty() { "the build failed".into() } else { format!("the build failed: {tail}") }));
                }
                ("pending" | "succeeded", _) => {}
                (other, _) => {
                    return Err(ProviderError::Failed(format!(
                        "build {} has status '{other}', which safe-deploy does not know; check it with heroku builds:info {} -a {}",
                        now.id, now.id, self.app
                    )))
                }
            }
            poll.next(&now.status).await?;
        }
    }

    /// Cancels a build a signal interrupted, within the runner's grace: true when Heroku
    /// says it ended without a release, so nothing changed.
    async fn cancel_build(&self, id: &str) -> bool {
        // The run's own shutdown has fired: these two calls go out regardless.
        let calm = crate::shutdown::Shutdown::new();
        if self.client.cancel_build(id, &calm).await.is_err() {
            return false;
        }
        matches!(self.client.build(id, &calm).await, Ok(b) if b.status == "failed" && b.release.is_none())
    }

    /// The builds and release phases in flight: "build 1a2b3c4d", "release v43's release
    /// phase". Heroku has no deploy lock; this is what one would hold.
    pub async fn in_flight(&self, ctx: &Context) -> Result<Vec<String>, ProviderError> {
        let builds = self.client.recent_builds(&ctx.shutdown).await?;
        let releases = self.client.releases_newest_first(5, &ctx.shutdown, |_| true).await?;
        let building = builds.iter().filter(|b| b.status == "pending").map(|b| format!("build {}", b.id));
        let releasing =
            releases.iter().filter(|r| r.status == "pending").map(|r| format!("{}'s release phase", r.label()));
        Ok(building.chain(releasing).collect())
    }

    /// Waits until no build or release phase is in flight: one a cancelled run left
    /// behind would otherwise make its release live after a restore looked.
    pub async fn settle_in_flight(&self, ctx: &Context) -> Result<(), ProviderError> {
        let mut poll = ctx.poll("a build or release phase in flight to end", POLL);
        loop {
            let in_flight = self.in_flight(ctx).await?;
            if in_flight.is_empty() {
                return Ok(());
            }
            poll.next(&in_flight.join(", ")).await?;
        }
    }

    /// The release the image update made, as `heroku container:release` finds it: the
    /// newest, once it is newer than the one live before (a list may lag a moment).
    async fn release_after(&self, live_version: u64, ctx: &Context) -> Result<Release, ProviderError> {
        let mut poll = ctx.poll("the release the image update made", POLL);
        loop {
            let newest = self.client.releases_newest_first(1, &ctx.shutdown, |_| true).await?;
            if let Some(r) = newest.into_iter().next().filter(|r| r.version > live_version) {
                return Ok(r);
            }
            poll.next(&format!("none newer than v{live_version} yet")).await?;
        }
    }

    /// Follows a promotion until its target has a release (or failed).
    async fn promoted(
        &self,
        id: &str,
        target_app: &str,
        ctx: &Context,
    ) -> Result<Result<String, String>, ProviderError> {
        let mut poll = ctx.poll("the pipeline promotion", POLL);
        loop {
            let targets = self.client.promotion_targets(id, &ctx.shutdown).await?;
            let Some(t) = targets.iter().find(|t| t.app.id == target_app) else {
                return Err(ProviderError::Failed(format!("promotion {id} does not list {} as a target", self.app)));
            };
            match (t.status.as_str(), &t.release) {
                (_, Some(r)) => return Ok(Ok(r.id.clone())),
                ("failed", None) => {
                    return Ok(Err(t.error_message.clone().unwrap_or_else(|| "the promotion failed".into())))
                }
                _ => {}
            }
            poll.next(&t.status).await?;
        }
    }
}

#[async_trait]
impl Rollout for HerokuRollout {
    fn batches(&self) -> usize {
        1
    }

    fn describe(&self, _batch: usize) -> String {
        let what = match &self.make {
            Make::Build { .. } => "build the uploaded source on Heroku".to_string(),
            Make::Image(i) => format!("release image {i} on the web process"),
            Make::Promote { from, .. } => format!("promote {from}'s release through the pipeline"),
            Make::Return(r) => format!("roll back to {}", r.label()),
        };
        format!("{what}; Heroku replaces the {} web dynos", self.web_dynos)
    }

    async fn apply(&mut self, _batch: usize, _gated: bool, ctx: &Context) -> Result<Applied, ProviderError> {
        // A signal that came before the first write stops here, with nothing changed.
        ctx.check_cancelled()?;
        let core = self.core.clone();
        // Heroku takes two deploys at once and makes live whichever release phase ends
        // last: one already in flight is someone else's, so this one does not start.
        let others = core.in_flight(ctx).await?;
        if !others.is_empty() {
            return Err(ProviderError::Conflict {
                what: format!("{} (Heroku has no deploy lock; a deploy in flight holds it here)", core.app),
                detail: format!("{} in flight, started by another deploy", others.join(" and ")),
            });
        }
        let id = match &self.make {
            Make::Build { get_url, version } => {
                // Sent is changed: a build that succeeds makes a release by itself.
                self.changed = true;
                let build = core.client.create_build(get_url, version, &ctx.shutdown).await?;
                match core.follow_build(&build, ctx).await {
                    Ok(Ok(id)) => id,
                    Ok(Err(why)) => {
                        self.changed = false;
                        return Err(ProviderError::Failed(format!("{why}; nothing was released")));
                    }
                    Err(ProviderError::Cancelled(cause)) => {
                        // Stopped mid-build: cancel it, so what it built never goes live.
                        if core.cancel_build(&build.id).await {
                            ctx.progress.log("build", "cancelled; nothing was released");
                            self.changed = false;
                        }
                        return Err(ProviderError::Cancelled(cause));
                    }
                    Err(e) => return Err(e),
                }
            }
            Make::Image(image) => {
                self.changed = true;
                core.client.release_image(image, &ctx.shutdown).await?;
                core.release_after(self.live_version, ctx).await?.id
            }
            Make::Promote { pipeline, source_app, target_app, .. } => {
                self.changed = true;
                let promotion = core.client.promote(pipeline, source_app, target_app, &ctx.shutdown).await?;
                match core.promoted(&promotion, target_app, ctx).await? {
                    Ok(id) => id,
                    Err(why) => {
                        self.changed = false;
                        return Err(ProviderError::Failed(format!(
                            "the promotion failed: {why}; nothing was released"
                        )));
                    }
                }
            }
            Make::Return(release) => {
                self.changed = true;
                core.client.rollback(&release.id, &ctx.shutdown).await?.id
            }
        };
        let release = core.client.release(&id, &ctx.shutdown).await?;
        ctx.progress.log("release", &format!("{} made ({})", release.label(), release.status));
        let made = ReleaseRef { id: release.id.clone(), label: release.label() };
        self.made = Some(release);
        Ok(Applied { release: made, instances: Vec::new() })
    }

    async fn wait(&mut self, _batch: usize, ctx: &Context) -> Result<Waited, ProviderError> {
        let Some(release) = self.made.clone() else {
            return Err(ProviderError::Failed("bug: waited on a Heroku roll-out that made no release".into()));
        };
        if let Some(why) = self.core.follow_release(&release, ctx).await? {
            // Heroku kept the old release live: nothing to undo.
            self.changed = false;
            return Ok(Waited::Refused { why: format!("{}: {why}", release.label()), left: None });
        }
        self.core.await_dynos(release.version, self.web_dynos, ctx).await?;
        Ok(Waited::Ready)
    }

    fn changed(&self) -> bool {
        self.changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dyno(name: &str, state: &str, version: Option<u64>) -> Dyno {
        let release = version.map(|v| super::super::client::DynoRelease { id: format!("r{v}"), version: v });
        Dyno { name: name.into(), kind: "web".into(), state: state.into(), release }
    }

    #[test]
    fn dynos_count_only_when_they_name_the_new_release() {
        let both_up = [dyno("web.1", "up", Some(5)), dyno("web.2", "up", Some(5))];
        assert_eq!(dynos_on(&both_up, 5, 2), DynoVerdict::Up);
        let no_release = [dyno("web.1", "up", None), dyno("web.2", "up", Some(5))];
        assert_eq!(
            dynos_on(&no_release, 5, 2),
            DynoVerdict::Waiting { up: 1 },
            "a dyno without a release proves nothing"
        );
        let old = [dyno("web.1", "up", Some(4)), dyno("web.2", "up", Some(4))];
        assert_eq!(dynos_on(&old, 5, 2), DynoVerdict::Waiting { up: 0 });
        let crashed = [dyno("web.1", "crashed", Some(5)), dyno("web.2", "starting", Some(5))];
        assert_eq!(dynos_on(&crashed, 5, 2), DynoVerdict::Crashed("web.1".into()));
        assert_eq!(dynos_on(&[], 5, 0), DynoVerdict::Waiting { up: 0 }, "no dynos needed is never up");
        let unknown = [dyno("web.1", "rebooting", Some(5)), dyno("web.2", "up", Some(5))];
        assert_eq!(dynos_on(&unknown, 5, 2), DynoVerdict::Waiting { up: 1 }, "an unknown state is not up");
    }
}
