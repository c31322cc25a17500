//! One Heroku roll-out, in one batch (Heroku replaces the dynos itself): make the
//! release (a build of the uploaded source, an image released on the formation, a
//! pipeline promotion, or a rollback to an old release), then follow its release phase
//! and wait until every web dyno is up on it, catching a crash at once.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::client::{Dyno, Release};
use super::Core;
use crate::providers::{Applied, Context, ProviderError, ReleaseRef, Rollout, Waited};

/// How often the build, the release and the dynos are read while waited for.
const POLL: Duration = Duration::from_millis(500);
/// Lines of a build or release log kept for the summary.
const EXCERPT_LINES: usize = 12;

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
    made: Option<Release>,
    changed: bool,
}

impl HerokuRollout {
    pub fn new(core: Arc<Core>, make: Make, web_dynos: u64) -> HerokuRollout {
        HerokuRollout { core, make, web_dynos, made: None, changed: false }
    }
}

/// The last lines of a log, for a one-paragraph failure.
pub fn excerpt(log: &str) -> String {
    let lines: Vec<&str> = log.lines().map(str::trim_end).filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(EXCERPT_LINES);
    lines[start..].join(" / ")
}

impl Core {
    async fn pause(&self, ctx: &Context) -> Result<(), ProviderError> {
        if !ctx.shutdown.sleep(POLL).await {
            return Err(ProviderError::Cancelled(ctx.shutdown.cause().unwrap_or("shutdown")));
        }
        Ok(())
    }

    fn out_of_time(&self, ctx: &Context, what: &str, started: Instant) -> Result<(), ProviderError> {
        if Instant::now() >= ctx.deadline {
            return Err(ProviderError::timeout(what, started.elapsed(), "deploy-timeout"));
        }
        Ok(())
    }

    /// Reads a log stream to its end and passes each line on as progress.
    async fn follow_log(&self, source: &str, url: &str, ctx: &Context) -> String {
        match self.client.stream(url, ctx.remaining(), &ctx.shutdown).await {
            Ok(log) => {
                for line in log.lines() {
                    ctx.progress.log(source, line);
                }
                log
            }
            Err(e) => {
                ctx.progress.log(source, &format!("(the log could not be read: {e})"));
                String::new()
            }
        }
    }

    /// Follows a release until its release phase ends: `Ok(None)` when it succeeded,
    /// `Ok(Some(log excerpt))` when it failed.
    pub async fn follow_release(&self, release: &Release, ctx: &Context) -> Result<Option<String>, ProviderError> {
        let started = Instant::now();
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
            ctx.progress.waiting(&format!("release phase of v{}", release.version), started, Some(ctx.deadline));
            self.out_of_time(ctx, &format!("the release phase of v{}", release.version), started)?;
            self.pause(ctx).await?;
        }
    }

    /// Waits until `count` web dynos are up on `version`; a crashed one ends it at once.
    pub async fn await_dynos(&self, version: u64, count: u64, ctx: &Context) -> Result<(), ProviderError> {
        let started = Instant::now();
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
            let on_new: Vec<&Dyno> =
                dynos.iter().filter(|d| d.release.as_ref().is_some_and(|r| r.version == version)).collect();
            if let Some(crashed) = on_new.iter().find(|d| d.state == "crashed") {
                return Err(ProviderError::Failed(format!(
                    "dyno {} crashed on v{version} (the router answers H10 App crashed); see heroku logs -a {}",
                    crashed.name, self.app
                )));
            }
            let up = on_new.iter().filter(|d| d.state == "up").count() as u64;
            if count > 0 && up >= count {
                return Ok(());
            }
            ctx.progress.waiting(&format!("{up} of {count} web dynos up on v{version}"), started, Some(ctx.deadline));
            self.out_of_time(ctx, &format!("web dynos on v{version} ({up} of {count} up)"), started)?;
            self.pause(ctx).await?;
        }
    }

    /// Builds the uploaded source: `Ok(release id)` once the build made a release,
    /// `Err` with the build log's tail when it failed (nothing was released).
    async fn build(
        &self,
        get_url: &str,
        version: &str,
        ctx: &Context,
    ) -> Result<Result<String, String>, ProviderError> {
        let started = Instant::now();
        let build = self.client.create_build(get_url, version, &ctx.shutdown).await?;
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
            ctx.progress.waiting("build", started, Some(ctx.deadline));
            self.out_of_time(ctx, "the build", started)?;
            self.pause(ctx).await?;
        }
    }

    /// Waits until no build or release phase is in flight: one a cancelled run left
    /// behind would otherwise make its release live after a restore looked.
    pub async fn settle_in_flight(&self, ctx: &Context) -> Result<(), ProviderError> {
        let started = Instant::now();
        loop {
            let builds = self.client.recent_builds(&ctx.shutdown).await?;
            let releases = self.client.releases_newest_first(5, &ctx.shutdown, |_| true).await?;
            let building = builds.iter().any(|b| b.status == "pending");
            let releasing = releases.iter().any(|r| r.status == "pending");
            if !building && !releasing {
                return Ok(());
            }
            ctx.progress.waiting("a build or release phase still in flight", started, Some(ctx.deadline));
            self.out_of_time(ctx, "a build or release phase in flight", started)?;
            self.pause(ctx).await?;
        }
    }

    /// The newest release, as `heroku container:release` finds the one it made.
    async fn newest_release(&self, ctx: &Context) -> Result<Release, ProviderError> {
        let newest = self.client.releases_newest_first(1, &ctx.shutdown, |_| true).await?;
        newest
            .into_iter()
            .next()
            .ok_or_else(|| ProviderError::Failed("Heroku lists no release after the image was released".into()))
    }

    /// Follows a promotion until its target has a release (or failed).
    async fn promoted(
        &self,
        id: &str,
        target_app: &str,
        ctx: &Context,
    ) -> Result<Result<String, String>, ProviderError> {
        let started = Instant::now();
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
            ctx.progress.waiting("pipeline promotion", started, Some(ctx.deadline));
            self.out_of_time(ctx, "the pipeline promotion", started)?;
            self.pause(ctx).await?;
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

    async fn apply(&mut self, _batch: usize, ctx: &Context) -> Result<Applied, ProviderError> {
        // A signal that came before the first write stops here, with nothing changed.
        ctx.check_cancelled()?;
        let core = self.core.clone();
        let id = match &self.make {
            Make::Build { get_url, version } => {
                // Sent is changed: a build that succeeds makes a release by itself.
                self.changed = true;
                match core.build(get_url, version, ctx).await? {
                    Ok(id) => id,
                    Err(why) => {
                        self.changed = false;
                        return Err(ProviderError::Failed(format!("{why}; nothing was released")));
                    }
                }
            }
            Make::Image(image) => {
                self.changed = true;
                core.client.release_image(image, &ctx.shutdown).await?;
                core.newest_release(ctx).await?.id
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
            return Ok(Waited::Refused(format!("{}: {why}", release.label())));
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

    #[test]
    fn an_excerpt_keeps_the_last_lines_on_one_line() {
        let log = (1..=20).map(|i| format!("line {i}")).collect::<Vec<_>>().join("\n");
        let e = excerpt(&log);
        assert!(e.starts_with("line 9 / ") && e.ends_with("line 20"), "{e}");
        assert_eq!(excerpt("\n\n"), "");
    }
}
