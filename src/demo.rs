//! `safe-deploy demo` and `safe-deploy sandbox`: the Fly.io sandbox (Heroku's is in
//! `heroku`), in this process,
//! with no credentials and no network. Its machines are real processes of the test app
//! (this same binary, as `__sandbox-app`) behind a router like Fly's proxy.

use sandbox::Handle;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sandbox::app::{HealthMode, ReleaseSpec, Releases};
use sandbox::fly::{FlyOptions, FlySandbox};

pub mod digitalocean;
pub mod ecs;
pub mod heroku;
pub mod hosts;

use crate::inputs::RawInputs;
use crate::job::deploy;
use crate::providers::registration::{Running, SandboxArgs};
use crate::providers::registry;
use crate::runner::{Paths, Runner};
use crate::secret::Redactor;
use crate::shutdown::Shutdown;

/// The sandbox accepts only this token, so the demo exercises real auth.
const DEMO_TOKEN: &str = "fm2_sandbox-demo-token";

fn options(app: &str, machines: usize, image: &str, releases: Releases) -> std::io::Result<FlyOptions> {
    Ok(FlyOptions {
        app: app.to_string(),
        machines,
        image: image.to_string(),
        releases,
        app_command: vec![std::env::current_exe()?.into_os_string(), "__sandbox-app".into()],
        token: Some(DEMO_TOKEN.to_string()),
        ..FlyOptions::default()
    })
}

/// `safe-deploy demo [--provider P]`: the whole job on one provider's sandbox, as its
/// registration names it.
pub async fn run_command(sub: &clap::ArgMatches, redactor: Redactor) -> i32 {
    let summary = sub.get_one::<String>("summary-file").map(PathBuf::from);
    let name = sub.get_one::<String>("provider").map_or("fly", String::as_str);
    match registry::find(name).and_then(|r| r.demo) {
        Some(demo) => demo(summary, redactor).await,
        None => no_sandbox(name),
    }
}

/// `safe-deploy sandbox [--provider P]`: serves one provider's sandbox until interrupted.
pub async fn serve_command(sub: &clap::ArgMatches) -> i32 {
    let get = |name: &str| sub.get_one::<String>(name).cloned().unwrap_or_default();
    let specs: Vec<String> = sub.get_many::<String>("release").map(|v| v.cloned().collect()).unwrap_or_default();
    let releases = match parse_releases(&specs) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let args = SandboxArgs {
        app: get("app"),
        machines: sub.get_one::<u16>("machines").copied().unwrap_or(3) as usize,
        image: get("image"),
        releases,
    };
    let name = sub.get_one::<String>("provider").map_or("fly", String::as_str);
    match registry::find(name).and_then(|r| r.sandbox) {
        Some(serve) => serve(args).await,
        None => no_sandbox(name),
    }
}

/// The providers with a demo and a sandbox, for `--provider`'s choices.
pub fn with_sandbox() -> Vec<&'static str> {
    registry::PROVIDERS.iter().filter(|r| r.demo.is_some() && r.sandbox.is_some()).map(|r| r.name).collect()
}

fn no_sandbox(name: &str) -> i32 {
    eprintln!("error: --provider {name}: no sandbox; use one of {}", with_sandbox().join(", "));
    crate::report::exit::BAD_INPUT
}

/// Fly.io's demo, as its `Registration` names it.
pub fn start_demo(summary: Option<PathBuf>, redactor: Redactor) -> Running {
    Box::pin(run(summary, redactor))
}

/// Fly.io's sandbox, as its `Registration` names it.
pub fn start_sandbox(args: SandboxArgs) -> Running {
    Box::pin(async move { serve(&args.app, args.machines, &args.image, args.releases).await })
}

pub async fn run(summary_file: Option<PathBuf>, redactor: Redactor) -> i32 {
    exit_code(demo(summary_file, redactor).await)
}

/// A demo's exit code: its own, or 1 with the reason when it could not run.
pub(crate) fn exit_code(ran: anyhow::Result<i32>) -> i32 {
    ran.unwrap_or_else(|e| {
        eprintln!("demo: {e:#}");
        1
    })
}

/// The runner a demo's deploys share: state in `dir`, the summary in `summary`.
pub(crate) fn demo_runner(dir: &std::path::Path, summary: &std::path::Path, redactor: Redactor) -> Runner {
    let paths = Paths {
        output: None,
        state: Some(dir.join("state")),
        summary: Some(summary.into()),
        temp: Some(dir.into()),
        state_ours: true,
    };
    Runner::new(false, paths, redactor)
}

/// The health gate every demo deploy runs: `/health` must say ok and `/version` name
/// `version`, within `deadline`.
pub(crate) fn gated_inputs(app_url: &str, version: &str, deadline: &str) -> RawInputs {
    RawInputs::of(&[
        ("health-url", &format!("{app_url}/health")),
        ("check-string", "ok"),
        ("version-url", &format!("{app_url}/version")),
        ("expect-version", version),
        ("health-interval", "200ms"),
        ("health-deadline", deadline),
    ])
}

/// The demo's working folder, and where its job summary goes (a fresh file).
pub(crate) fn workspace(name: &str, summary_file: Option<PathBuf>) -> std::io::Result<Workspace> {
    let dir = std::env::temp_dir().join(format!("safe-deploy-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let summary = summary_file.unwrap_or_else(|| dir.join("summary.md"));
    let _ = std::fs::remove_file(&summary);
    Ok(Workspace { dir, summary })
}

/// A demo's folder: the job summary stays; the runs' state and snapshots go with it.
pub(crate) struct Workspace {
    pub dir: PathBuf,
    pub summary: PathBuf,
}

impl Drop for Workspace {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == "state" || (name.starts_with("safe-deploy-snapshot-") && name.ends_with(".json")) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

async fn demo(summary_file: Option<PathBuf>, redactor: Redactor) -> anyhow::Result<i32> {
    let workspace = workspace("demo", summary_file)?;
    let (dir, summary) = (workspace.dir.clone(), workspace.summary.clone());

    let v1 = "registry.fly.io/demo:v1";
    let mut releases = Releases::new();
    releases
        .insert("registry.fly.io/demo:v3".into(), ReleaseSpec { health: HealthMode::WrongBody, ..Default::default() });
    println!("demo: starting the Fly.io sandbox: app demo, three machines on {v1}");
    let fly = FlySandbox::start(options("demo", 3, v1, releases)?).await?;
    println!("demo: Machines API at {}, app at {}", fly.api_url(), fly.app_url());
    let traffic = Traffic::start(format!("{}/", fly.app_url()));

    let runner = demo_runner(&dir, &summary, redactor);
    let inputs = |version: &str| {
        let mut raw = gated_inputs(&fly.app_url(), version, "5s");
        for (name, value) in [
            ("provider", "fly".to_string()),
            ("app", "demo".into()),
            ("token", DEMO_TOKEN.into()),
            ("image", format!("registry.fly.io/demo:{version}")),
            ("api-url", fly.api_url()),
        ] {
            raw.set(name, value);
        }
        raw
    };

    println!("\ndemo: 1) deploy demo:v2, a healthy release, machine by machine");
    let first = deploy(inputs("v2"), runner.clone(), Shutdown::new()).await;
    let after_first = traffic.counts();
    println!("\ndemo: 2) deploy demo:v3, whose /health answers without 'ok'");
    let second = deploy(inputs("v3"), runner, Shutdown::new()).await;

    let (total, failed) = traffic.stop().await;
    let broken_ran = fly.machines_that_ran("registry.fly.io/demo:v3");
    let live: Vec<String> = fly
        .machines()
        .into_iter()
        .filter(|m| m.process_group == "app" && m.state != "destroyed")
        .map(|m| m.image)
        .collect();
    println!("\ndemo: v2 exit code {first} (deployed), v3 exit code {second} (rolled back)");
    println!(
        "demo: traffic through the router: {} failed / {} requests during the v2 deploy",
        after_first.1, after_first.0
    );
    println!("demo: traffic through the router: {failed} failed / {total} requests in all");
    println!(
        "demo: machines that ever ran the broken v3: {broken_ran} of 3 (the first batch, gated alone before the rest)"
    );
    println!("demo: machines now run: {}", live.join(", "));
    println!("demo: job summary written to {}", summary.display());
    fly.stop().await;
    let as_expected =
        first == 0 && second == 1 && live.iter().all(|i| i.ends_with(":v2")) && failed == 0 && broken_ran == 1;
    Ok(if as_expected { 0 } else { 1 })
}

/// A steady client: 20 requests a second, counting failures.
pub(crate) struct Traffic {
    total: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    stop: Shutdown,
    task: tokio::task::JoinHandle<()>,
}

impl Traffic {
    pub(crate) fn start(url: String) -> Traffic {
        let total = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let stop = Shutdown::new();
        let (t, f, s) = (total.clone(), failed.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap_or_default();
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = s.recv() => break,
                }
                t.fetch_add(1, Ordering::Relaxed);
                let ok = matches!(client.get(&url).send().await, Ok(r) if r.status().is_success());
                if !ok {
                    f.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Traffic { total, failed, stop, task }
    }

    pub(crate) fn counts(&self) -> (u64, u64) {
        (self.total.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed))
    }

    pub(crate) async fn stop(self) -> (u64, u64) {
        self.stop.trigger("demo finished");
        let counts = (self.total.clone(), self.failed.clone());
        let _ = self.task.await;
        (counts.0.load(Ordering::Relaxed), counts.1.load(Ordering::Relaxed))
    }
}

/// `safe-deploy sandbox`: the emulators, standalone, until interrupted.
pub async fn serve(app: &str, machines: usize, image: &str, releases: Releases) -> i32 {
    let interrupted = interrupts();
    let started =
        async { FlySandbox::start(FlyOptions { token: None, ..options(app, machines, image, releases)? }).await };
    let fly = match started.await {
        Ok(f) => f,
        Err(e) => return could_not_start(e),
    };
    println!("FLY_API_URL={}", fly.api_url());
    println!("FLY_APP_URL={}", fly.app_url());
    println!("FLY_APP={app}");
    println!("# {machines} machines on {image}; any token is accepted. Ctrl-C stops the sandbox.");
    interrupted.recv().await;
    fly.stop().await;
    0
}

/// `--release` values, or the exit code of a bad one (said on stderr).
pub(crate) fn parse_releases(release_specs: &[String]) -> Result<Releases, i32> {
    let mut releases = Releases::new();
    for spec in release_specs {
        match parse_release(spec) {
            Ok((image, s)) => {
                releases.insert(image, s);
            }
            Err(e) => {
                eprintln!("error: --release: {e}. Write IMAGE=health:wrong-body,version:3.0,boot-delay-ms:500,crash-exit-code:1,release-command-exit-code:2");
                return Err(crate::report::exit::BAD_INPUT);
            }
        }
    }
    Ok(releases)
}

/// Ctrl-C or SIGTERM, listened for from the start of a `sandbox` command: one that
/// comes while the sandbox starts still lets it clean up (its key files, its processes)
/// once started, instead of killing it half-way.
pub(crate) fn interrupts() -> Shutdown {
    let shutdown = Shutdown::new();
    let _ = crate::shutdown::listen_for_signals(shutdown.clone());
    shutdown
}

pub(crate) fn could_not_start(e: std::io::Error) -> i32 {
    eprintln!("sandbox: could not start: {e}");
    1
}

/// `IMAGE=key:value,...` as `safe-deploy sandbox --release` takes it.
fn parse_release(text: &str) -> Result<(String, ReleaseSpec), String> {
    let (image, settings) = text.split_once('=').ok_or_else(|| format!("'{text}' has no '='"))?;
    let mut spec = ReleaseSpec::default();
    for pair in settings.split(',').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once(':').ok_or_else(|| format!("'{pair}' is not key:value"))?;
        let number = |v: &str| v.parse::<i64>().map_err(|_| format!("'{v}' is not a number"));
        match key {
            "health" => {
                spec.health = serde_json::from_value(serde_json::json!(value))
                    .map_err(|_| format!("'{value}' is not ok, wrong-body, error500 or hang"))?
            }
            "version" => spec.version = value.to_string(),
            "boot-delay-ms" => spec.boot_delay_ms = number(value)?.max(0) as u64,
            "crash-exit-code" => {
                spec.crash_on_start = true;
                spec.exit_code = number(value)? as i32;
            }
            "release-command-exit-code" => spec.release_command_exit_code = number(value)? as i32,
            other => return Err(format!("unknown setting '{other}'")),
        }
    }
    Ok((image.to_string(), spec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_are_described_as_image_and_settings() {
        let (image, spec) =
            parse_release("registry.fly.io/web:v3=health:wrong-body,boot-delay-ms:500,crash-exit-code:4").unwrap();
        assert_eq!(image, "registry.fly.io/web:v3");
        assert_eq!(
            (spec.health, spec.boot_delay_ms, spec.crash_on_start, spec.exit_code),
            (HealthMode::WrongBody, 500, true, 4)
        );
        assert!(parse_release("web:v3").is_err());
        assert!(parse_release("web:v3=health:sick").is_err());
        assert!(parse_release("web:v3=colour:blue").is_err());
    }
}
