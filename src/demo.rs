//! `safe-deploy demo` and `safe-deploy sandbox`: the Fly.io sandbox (Heroku's is in
//! `heroku`), in this process,
//! with no credentials and no network. Its machines are real processes of the test app
//! (this same binary, as `__sandbox-app`) behind a router like Fly's proxy.

use sandbox::Handle;
use std::path::PathBuf;

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

/// The sandbox accepts only this token, so the demo and a pasted deploy exercise real auth.
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
    let summary = sub.get_one::<String>("summary-dir").map(PathBuf::from);
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

pub async fn run(summary_dir: Option<PathBuf>, redactor: Redactor) -> i32 {
    exit_code(demo(summary_dir, redactor).await)
}

/// A demo's exit code: its own, or 1 with the reason when it could not run.
pub(crate) fn exit_code(ran: anyhow::Result<i32>) -> i32 {
    ran.unwrap_or_else(|e| {
        eprintln!("demo: {e:#}");
        1
    })
}

/// The runner a demo's deploys share: state in `dir`; each run's summary is set by
/// [`Workspace::run`].
pub(crate) fn demo_runner(dir: &std::path::Path, redactor: Redactor) -> Runner {
    let paths = Paths { state: Some(dir.join("state")), temp: Some(dir.into()), state_ours: true, ..Paths::default() };
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

/// The demo's working folder, and the folder its job summaries go to.
pub(crate) fn workspace(name: &str, summary_dir: Option<PathBuf>) -> std::io::Result<Workspace> {
    let dir = private_dir(name)?;
    let summaries = summary_dir.unwrap_or_else(|| dir.clone());
    std::fs::create_dir_all(&summaries)?;
    Ok(Workspace { dir, summaries, written: Default::default() })
}

/// A demo's folder: the job summaries stay; the runs' state and snapshots go with it.
pub(crate) struct Workspace {
    pub dir: PathBuf,
    summaries: PathBuf,
    written: std::sync::Mutex<Vec<PathBuf>>,
}

impl Workspace {
    /// The runner of the demo's next run, with a summary file of its own (a fresh one), so
    /// that each run's summary opens with its own outcome.
    pub(crate) fn run(&self, runner: &Runner, name: &str) -> Runner {
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        let path = self.summaries.join(format!("summary-{}-{name}.md", written.len() + 1));
        // Made new: an old summary there is replaced, a link is never followed.
        let _ = std::fs::remove_file(&path);
        let _ = crate::secret::new_private_file(&path);
        written.push(path.clone());
        let mut runner = runner.clone();
        runner.paths.summary = Some(path);
        runner
    }

    /// Says where each run's summary is, in the order the runs went.
    pub(crate) fn say_summaries(&self) {
        for path in self.written.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            println!("demo: job summary written to {}", path.display());
        }
    }
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

async fn demo(summary_dir: Option<PathBuf>, redactor: Redactor) -> anyhow::Result<i32> {
    let workspace = workspace("demo", summary_dir)?;
    let dir = workspace.dir.clone();

    let v1 = "registry.fly.io/demo:v1";
    let mut releases = Releases::new();
    releases
        .insert("registry.fly.io/demo:v3".into(), ReleaseSpec { health: HealthMode::WrongBody, ..Default::default() });
    // Healthy to every check, and 60 ms slower than v2 for users: the analysis's to catch.
    releases.insert("registry.fly.io/demo:v4".into(), ReleaseSpec { latency_ms: 60, ..Default::default() });
    println!("demo: starting the Fly.io sandbox: app demo, three machines on {v1}");
    let fly = FlySandbox::start(options("demo", 3, v1, releases)?).await?;
    println!("demo: Machines API at {}, app at {}", fly.api_url(), fly.app_url());
    let traffic = Traffic::judging(format!("{}/", fly.app_url()), &["v3"]);

    let runner = demo_runner(&dir, redactor);
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
    let first = deploy(inputs("v2"), workspace.run(&runner, "v2"), Shutdown::new()).await;
    let after_first = Seen::of(&traffic);
    println!("\ndemo: 2) deploy demo:v3, whose /health answers without 'ok'");
    let second = deploy(inputs("v3"), workspace.run(&runner, "v3"), Shutdown::new()).await;
    println!("\ndemo: 3) deploy demo:v4, healthy to every check but 60 ms slower, with the analysis on");
    let mut analysed = inputs("v4");
    let home = format!("{}/", fly.app_url());
    for (name, value) in [
        ("analysis", "true"),
        ("analysis-window", "5s"),
        ("analysis-rate", "40"),
        ("analysis-min-samples", "150"),
        ("analysis-urls", home.as_str()),
    ] {
        analysed.set(name, value);
    }
    let third = deploy(analysed, workspace.run(&runner, "v4"), Shutdown::new()).await;

    let seen = Seen::stop(traffic).await;
    let broken_ran = fly.machines_that_ran("registry.fly.io/demo:v3");
    let live: Vec<String> = fly
        .machines()
        .into_iter()
        .filter(|m| m.process_group == "app" && m.state != "destroyed")
        .map(|m| m.image)
        .collect();
    println!(
        "\ndemo: v2 exit code {first} (deployed), v3 exit code {second} (rolled back by its health gate), v4 exit code {third} (rolled back by the analysis)"
    );
    say_traffic(&after_first, "router", "during the v2 deploy");
    say_traffic(&seen, "router", "in all");
    println!(
        "demo: machines that ever ran the broken v3: {broken_ran} of 3 (the first batch, gated alone before the rest)"
    );
    println!("demo: machines now run: {}", live.join(", "));
    workspace.say_summaries();
    fly.stop().await;
    let as_expected = first == 0
        && second == 1
        && third == 1
        && live.iter().all(|i| i.ends_with(":v2"))
        && seen.errors == 0
        && broken_ran == 1;
    Ok(if as_expected { 0 } else { 1 })
}

pub(crate) use sandbox::kit::traffic::{Seen, Traffic};

/// "demo: traffic through the router: 0 failed / 400 requests in all": what users saw,
/// a broken release's page (status 200) counted as failed.
pub(crate) fn say_traffic(seen: &Seen, through: &str, when: &str) {
    println!("demo: traffic through the {through}: {} {when}", seen);
}

/// `safe-deploy sandbox`: the emulators, standalone, until interrupted.
pub async fn serve(app: &str, machines: usize, image: &str, releases: Releases) -> i32 {
    let interrupted = interrupts();
    let releases = with_broken(releases, &format!("{}:v3", repository(image)));
    let started = async { FlySandbox::start(options(app, machines, image, releases)?).await };
    let fly = match started.await {
        Ok(f) => f,
        Err(e) => return could_not_start(e),
    };
    println!("FLY_API_URL={}", fly.api_url());
    println!("FLY_APP_URL={}", fly.app_url());
    println!("FLY_APP={app}");
    println!("FLY_API_TOKEN={DEMO_TOKEN}");
    println!("# {machines} machines on {image}; the sandbox takes only the token above. Ctrl-C stops it.");
    let repository = repository(image).to_string();
    Paste {
        env: vec![],
        dir: None,
        shell: vec![],
        flags: vec![
            ("provider", "fly".into()),
            ("app", app.into()),
            ("api-url", fly.api_url()),
            ("token", DEMO_TOKEN.into()),
        ],
        app_url: fly.app_url(),
        rollback_to: Some(image.to_string()),
        release: ("image", format!("{repository}:")),
    }
    .print();
    interrupted.recv().await;
    fly.stop().await;
    0
}

/// What a sandbox prints for a person to paste into another terminal, in order: a
/// healthy v2, a v3 whose health check fails (rolled back by itself), and a rollback to
/// the release before the live one. Each command is whole (every flag, the token, the
/// timings the sandbox's balancer keeps), so nothing has to be guessed or exported.
pub(crate) struct Paste {
    /// Variables set before the command (ECS's keys), as `NAME=VALUE` in front of it.
    pub env: Vec<(&'static str, String)>,
    /// A folder the command runs in (Heroku's sources are found from there).
    pub dir: Option<PathBuf>,
    /// The flags every command takes: provider, app, api-url, token...
    pub flags: Vec<(&'static str, String)>,
    /// Flags whose values are shell words already (`"$(cat KEY_FILE)"`), not quoted again.
    pub shell: Vec<(&'static str, String)>,
    /// The release a rollback names, where the platform keeps no history to find it in
    /// (Fly.io, hosts; on a runner the GitHub ledger knows it).
    pub rollback_to: Option<String>,
    /// Where the gate checks `/health` and `/version`.
    pub app_url: String,
    /// The flag that names a version's release and what comes before the version in
    /// its value: `("image", "web:")` for `--image web:v2`, `("source-dir", "")`.
    pub release: (&'static str, String),
}

impl Paste {
    /// The three commands, each after a line that says what it does and how it ends.
    pub(crate) fn print(&self) {
        println!("# Paste into another terminal, one at a time:");
        println!("# 1) deploy v2, a healthy release (exit 0):");
        println!("{}", self.deploy("v2"));
        println!("# 2) deploy v3, whose health check fails: put back by itself (exit 1):");
        println!("{}", self.deploy("v3"));
        match &self.rollback_to {
            None => {
                println!("# 3) roll back to the release before the live one (exit 0):");
                println!("{}", self.command("rollback", &[]));
            }
            Some(to) => {
                println!("# 3) roll back to the first release, which --to names (exit 0):");
                println!("{}", self.command("rollback", &[("to", to.clone())]));
            }
        }
    }

    fn deploy(&self, version: &str) -> String {
        let mut extra = vec![(self.release.0, format!("{}{version}", self.release.1))];
        extra.push(("version-url", format!("{}/version", self.app_url)));
        extra.push(("expect-version", version.into()));
        self.command("deploy", &extra)
    }

    fn command(&self, sub: &str, extra: &[(&'static str, String)]) -> String {
        let quote = shell_word;
        let exe = std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "safe-deploy".into());
        let mut words: Vec<String> = self.env.iter().map(|(k, v)| format!("{k}={}", quote(v))).collect();
        words.push(quote(&exe));
        words.push(sub.into());
        // The sandbox's releases start in moments: a short gate, so a broken one is put
        // back in seconds rather than after the default five minutes.
        let gate = [
            ("health-url", format!("{}/health", self.app_url)),
            ("check-string", "ok".into()),
            ("health-interval", "500ms".into()),
            ("health-deadline", "20s".into()),
        ];
        for (flag, value) in self.flags.iter().chain(extra).chain(&gate) {
            words.push(format!("--{flag}"));
            words.push(quote(value));
        }
        for (flag, value) in &self.shell {
            words.push(format!("--{flag}"));
            words.push(value.clone());
        }
        match &self.dir {
            Some(dir) => format!("(cd {} && {})", quote(&dir.display().to_string()), words.join(" ")),
            None => words.join(" "),
        }
    }
}

/// `value` as one word of a shell command: quoted when it needs to be.
pub(crate) fn shell_word(value: &str) -> String {
    shlex::try_quote(value).map(|q| q.into_owned()).unwrap_or_else(|_| format!("'{value}'"))
}

/// The releases a sandbox serves: those `--release` says, and, unless it says otherwise,
/// `broken` (the pasted v3) answering its health check wrong.
pub(crate) fn with_broken(mut releases: Releases, broken: &str) -> Releases {
    releases.entry(broken.to_string()).or_insert(ReleaseSpec { health: HealthMode::WrongBody, ..Default::default() });
    releases
}

/// A folder of a sandbox's own under the temp folder, made new (the temp folder is
/// everyone's) and for this user only.
pub(crate) fn private_dir(name: &str) -> std::io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("safe-deploy-{name}-{}-{:08x}", std::process::id(), fastrand::u32(..)));
    let mut folder = std::fs::DirBuilder::new();
    std::os::unix::fs::DirBuilderExt::mode(&mut folder, 0o700);
    folder.create(&dir)?;
    Ok(dir)
}

/// An image reference without its tag or digest: `registry.fly.io/web:v1` is
/// `registry.fly.io/web`.
pub(crate) fn repository(image: &str) -> &str {
    let name = image.split('@').next().unwrap_or(image);
    match name.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => name,
    }
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
                eprintln!("error: --release: {e}. Write IMAGE=health:wrong-body,version:3.0,boot-delay-ms:500,crash-exit-code:1,release-command-exit-code:2,latency-ms:200,latency-p99-ms:2000,error-rate:0.05");
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
    let _ = crate::shutdown::listen_for_signals(shutdown.clone(), "stopping the sandbox");
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
            "latency-ms" => spec.latency_ms = number(value)?.max(0) as u64,
            "latency-p99-ms" => spec.latency_p99_ms = number(value)?.max(0) as u64,
            "error-rate" => spec.error_per_mille = sandbox::app::per_mille(value)?,
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
        // A release that passes its health check and serves users worse.
        let (_, slow) = parse_release("web:v4=latency-ms:30,latency-p99-ms:900,error-rate:5%").unwrap();
        assert_eq!(
            (slow.latency_ms, slow.latency_p99_ms, slow.error_per_mille, slow.health),
            (30, 900, 50, HealthMode::Ok)
        );
        assert!(parse_release("web:v4=error-rate:2").is_err());
    }
}
