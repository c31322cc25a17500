//! Prints safe-deploy's figures: release binary size, time from process start to the
//! first request the action sends, wall time of a deploy, and peak memory of a run
//! (against the provider double); then, on the Fly sandbox with three machines, the
//! failed/total requests through the router during a rolling deploy and during an
//! automatic rollback, the deploy's wall time, and Machines API calls per machine;
//! then on the Heroku sandbox with two web dynos, the failed/total requests through
//! the router during a source deploy with preboot on and with it off, side by side,
//! and during an automatic rollback; then hosts over SSH: the DigitalOcean droplets
//! tutorial's procedure against provider `ssh`, on 2 and 4 hosts (`hosts.rs`); and on
//! the ECS sandbox (two tasks behind a load balancer) a deploy, a rollback by
//! safe-deploy and one by ECS's circuit breaker, each with its failed/total requests;
//! and the analysis (`analysis.rs`): failed requests with the health gate alone and with
//! the analysis, side by side, and rollbacks of good releases over 50 deploys.
//! A request failed when it got no answer, an error status, or a broken release's page
//! with status 200 (counted apart too: the wrong page is a failure a status check misses).
//! Everything runs on loopback, bounded in count and time.

use sandbox::Handle;
use std::process::Stdio;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::process::Command;

use bench::{Seen, Traffic};
use sandbox::double::State;

mod analysis;
mod hosts;

const RUNS: usize = 15;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let binary = std::env::args().nth(1).unwrap_or_else(|| "target/release/safe-deploy".into());
    // `bench BINARY hosts`: the hosts-over-SSH section alone.
    // `bench BINARY ecs`: the ECS section alone.
    if std::env::args().nth(2).as_deref() == Some("ecs") {
        let dir = std::env::temp_dir().join(format!("safe-deploy-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        ecs(&binary, &dir).await;
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    // `bench BINARY analysis`: the analysis section alone.
    if std::env::args().nth(2).as_deref() == Some("analysis") {
        let dir = std::env::temp_dir().join(format!("safe-deploy-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        analysis::run(&binary, &dir).await;
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    if std::env::args().nth(2).as_deref() == Some("hosts") {
        let dir = std::env::temp_dir().join(format!("safe-deploy-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        hosts::run(&binary, &dir).await;
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    let size = std::fs::metadata(&binary).map(|m| m.len()).unwrap_or(0);
    println!("release binary: {binary}");
    println!("binary size: {:.2} MiB ({size} bytes)", size as f64 / 1_048_576.0);

    let dir = std::env::temp_dir().join(format!("safe-deploy-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let state_path = dir.join("double.json");

    // The app records when each request arrives; the first one is the action's first.
    let first_hit: Arc<Mutex<Option<Instant>>> = Arc::default();
    let hit = first_hit.clone();
    let path = state_path.clone();
    let app = sandbox::server::serve("127.0.0.1:0".parse().unwrap(), move |req| {
        hit.lock().unwrap().get_or_insert_with(Instant::now);
        let path = path.clone();
        async move {
            let state = State::load(&path).unwrap_or_default();
            sandbox::app::answer(&sandbox::app::spec_for(&state.releases, &state.live()), &req).await
        }
    })
    .await
    .unwrap();

    let mut to_first = Vec::new();
    let mut walls = Vec::new();
    for run in 0..RUNS {
        State::new("web:v1").save(&state_path).unwrap();
        *first_hit.lock().unwrap() = None;
        let started = Instant::now();
        let status = Command::new(&binary)
            .env_clear()
            .env("GITHUB_ACTIONS", "true")
            .env("INPUT_PROVIDER", "memory")
            .env("INPUT_APP", "web")
            .env("INPUT_IMAGE", format!("web:v{}", run + 2))
            .env("INPUT_HEALTH-URL", format!("{}/health", app.url()))
            .env("INPUT_HEALTH-INTERVAL", "20ms")
            .env("INPUT_API-URL", url::Url::from_file_path(&state_path).unwrap().to_string())
            .env("RUNNER_TEMP", &dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .expect("the binary runs");
        walls.push(started.elapsed());
        assert!(status.success(), "run {run} failed: {status}");
        if let Some(first) = *first_hit.lock().unwrap() {
            to_first.push(first - started);
        }
    }

    let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
    to_first.sort();
    walls.sort();
    println!(
        "process start to first request: median {:.1} ms, min {:.1} ms, max {:.1} ms ({} runs; goal < 20 ms)",
        ms(&to_first[to_first.len() / 2]),
        ms(&to_first[0]),
        ms(to_first.last().unwrap()),
        to_first.len()
    );
    println!("deploy wall time (3 health checks 20 ms apart): median {:.1} ms", ms(&walls[walls.len() / 2]));
    println!(
        "peak memory of a run: {:.1} MiB (max RSS over {RUNS} runs; goal < 30 MB)",
        peak_rss_kib() as f64 / 1024.0
    );
    fly(&binary, &dir).await;
    heroku(&binary, &dir).await;
    digitalocean(&binary, &dir).await;
    ecs(&binary, &dir).await;
    hosts::run(&binary, &dir).await;
    analysis::run(&binary, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
}

const FLY_TOKEN: &str = "fm2_bench-token";

/// The Fly sandbox with three machines of `binary`'s test app, taking `FLY_TOKEN`.
async fn fly_sandbox(binary: &str) -> sandbox::fly::FlySandbox {
    sandbox::fly::FlySandbox::start(sandbox::fly::FlyOptions {
        app_command: vec![binary.into(), "__sandbox-app".into()],
        token: Some(FLY_TOKEN.into()),
        ..Default::default()
    })
    .await
    .expect("the Fly sandbox starts")
}

/// A rolling deploy and an automatic rollback on the Fly sandbox under steady traffic.
async fn fly(binary: &str, dir: &std::path::Path) {
    use sandbox::app::{HealthMode, ReleaseSpec};

    let fly = fly_sandbox(binary).await;
    let token = FLY_TOKEN;
    // Two broken releases (health answers without "ok"): one gated after the first batch,
    // one only at the end, as every deploy was before the batch gate.
    for broken in ["registry.fly.io/web:v3", "registry.fly.io/web:v4"] {
        fly.add_release(broken, ReleaseSpec { health: HealthMode::WrongBody, ..Default::default() });
    }
    let machine_ids: Vec<String> = fly.machines().into_iter().map(|m| m.id).collect();

    for (label, image, batch_gate, expected) in [
        ("rolling deploy of v2", "registry.fly.io/web:v2", "first", 0),
        ("automatic rollback of a broken v3, batch-gate first", "registry.fly.io/web:v3", "first", 1),
        ("automatic rollback of a broken v4, batch-gate end", "registry.fly.io/web:v4", "end", 1),
    ] {
        fly.reset_calls();
        let traffic = Traffic::judging(format!("{}/", fly.app_url()), &["v3", "v4"]);
        let started = Instant::now();
        let status = as_the_runner(binary, dir, dir, &fly.app_url(), "5s")
            .env("INPUT_PROVIDER", "fly")
            .env("INPUT_APP", "web")
            .env("INPUT_TOKEN", token)
            .env("INPUT_IMAGE", image)
            .env("INPUT_API-URL", fly.api_url())
            .env("INPUT_BATCH-GATE", batch_gate)
            .status()
            .await
            .expect("the binary runs");
        let wall = started.elapsed();
        let seen = Seen::stop(traffic).await;
        assert_eq!(status.code(), Some(expected), "{label}: unexpected exit");
        let calls = fly.calls();
        let per_machine: Vec<usize> =
            machine_ids.iter().map(|id| calls.iter().filter(|c| c.target.as_deref() == Some(id)).count()).collect();
        let app_level = calls.iter().filter(|c| c.target.is_none()).count();
        println!(
            "fly, 3 machines, {label}: {seen} through the router; wall time {:.1} s; \
             Machines API calls: {} in all, per machine {:?} (+{app_level} app-level list/create)",
            wall.as_secs_f64(),
            calls.len(),
            per_machine
        );
        if expected == 1 {
            println!(
                "fly, 3 machines, {label}: machines that ever ran the broken release: {} of 3",
                fly.machines_that_ran(image)
            );
        }
    }
    fly.stop().await;
}

/// Source deploys on the Heroku sandbox (two web dynos) under steady traffic: with
/// preboot on (goal: no failed request), with it off (the gap preflight warns about),
/// and a broken release rolled back by Heroku's own rollback.
async fn heroku(binary: &str, dir: &std::path::Path) {
    use sandbox::heroku::{AppOptions, HerokuOptions, HerokuSandbox};

    let token = "HRKU-bench-token";
    let heroku = HerokuSandbox::start(HerokuOptions {
        apps: vec![AppOptions::cedar("web"), AppOptions { preboot: false, ..AppOptions::cedar("nopreboot") }],
        app_command: vec![binary.into(), "__sandbox-app".into()],
        token: Some(token.into()),
        ..HerokuOptions::default()
    })
    .await
    .expect("the Heroku sandbox starts");
    let workspace = dir.join("heroku-src");
    // Each release takes a second to boot, as real apps do: the gap without preboot.
    for (version, flags) in [
        ("2.0.0", "--boot-delay-ms 1000"),
        ("3.0.0", "--boot-delay-ms 1000 --health wrong-body"),
        ("4.0.0", "--boot-delay-ms 1000"),
    ] {
        let src = workspace.join(version);
        std::fs::create_dir_all(&src).expect("a source folder");
        std::fs::write(src.join("Procfile"), format!("web: sandbox-app {flags}\n")).expect("a Procfile");
        std::fs::write(src.join("VERSION"), version).expect("a VERSION file");
    }
    for (label, app, version, expected) in [
        ("source deploy, preboot on", "web", "2.0.0", 0),
        ("source deploy, preboot off", "nopreboot", "4.0.0", 0),
        ("automatic rollback of a broken 3.0.0, preboot on", "web", "3.0.0", 1),
    ] {
        heroku.reset_calls();
        let url = heroku.app_url(app);
        let traffic = Traffic::judging(format!("{url}/"), &["3.0.0"]);
        let started = Instant::now();
        let status = as_the_runner(binary, dir, &workspace, &url, "6s")
            .env("INPUT_PROVIDER", "heroku")
            .env("INPUT_APP", app)
            .env("INPUT_TOKEN", token)
            .env("INPUT_SOURCE-DIR", version)
            .env("INPUT_API-URL", heroku.api_url())
            .env("INPUT_VERSION-URL", format!("{url}/version"))
            .env("INPUT_EXPECT-VERSION", version)
            .status()
            .await
            .expect("the binary runs");
        // Until every dyno serves the final release: a rollback's own switch counts too.
        heroku.settled(app, Duration::from_secs(20)).await;
        let wall = started.elapsed();
        let seen = Seen::stop(traffic).await;
        assert_eq!(status.code(), Some(expected), "{label}: unexpected exit");
        println!(
            "heroku, 2 web dynos, {label}: {seen} through the router; wall time {:.1} s; Platform API calls: {}",
            wall.as_secs_f64(),
            heroku.calls().len()
        );
    }
    heroku.stop().await;
}

/// App Platform (service web, two instances whose releases take a second to boot) under
/// steady traffic: a deploy by digest and an automatic rollback (goal: no failed request
/// in either), and a deployment that ends in ERROR, timed from the ERROR to the run's end
/// (goal: one poll interval, 1 s).
async fn digitalocean(binary: &str, dir: &std::path::Path) {
    use sandbox::app::{HealthMode, ReleaseSpec};
    use sandbox::digitalocean::{AppOptions, DoOptions, DoSandbox};

    let token = "dop_v1_bench_token";
    let v2 = format!("sha256:{}", "2".repeat(64));
    let slow = |version: &str| ReleaseSpec { version: version.into(), boot_delay_ms: 1000, ..Default::default() };
    let mut images = sandbox::app::Releases::new();
    images.insert(format!("web@{v2}"), slow("v2"));
    images.insert("web:v3".into(), ReleaseSpec { health: HealthMode::WrongBody, ..slow("v3") });
    images.insert("web:v4".into(), ReleaseSpec { crash_on_start: true, exit_code: 3, ..slow("v4") });
    let apps = DoSandbox::start(DoOptions {
        apps: vec![AppOptions::image("web")],
        images,
        app_command: vec![binary.into(), "__sandbox-app".into()],
        token: Some(token.into()),
        ..DoOptions::default()
    })
    .await
    .expect("the App Platform sandbox starts");
    let url = apps.app_url("web");
    for (label, image, expected) in [
        ("deploy by digest", format!("registry.digitalocean.com/acme/web@{v2}"), 0),
        ("automatic rollback of a broken v3", "registry.digitalocean.com/acme/web:v3".to_string(), 1),
        ("a deployment that ends in ERROR (v4 crashes)", "registry.digitalocean.com/acme/web:v4".to_string(), 1),
    ] {
        apps.reset_calls();
        let traffic = Traffic::judging(format!("{url}/"), &["v3"]);
        let started = Instant::now();
        let mut child = as_the_runner(binary, dir, dir, &url, "6s")
            .env("INPUT_PROVIDER", "digitalocean")
            .env("INPUT_APP", "web")
            .env("INPUT_TOKEN", token)
            .env("INPUT_IMAGE", &image)
            .env("INPUT_API-URL", apps.api_url())
            .spawn()
            .expect("the binary runs");
        // When the newest deployment's phase turns ERROR, as the emulator sees it.
        let mut errored: Option<Instant> = None;
        let status = loop {
            if errored.is_none() && apps.deployments("web").first().is_some_and(|d| d["phase"] == "ERROR") {
                errored = Some(Instant::now());
            }
            match child.try_wait().expect("the run can be waited on") {
                Some(status) => break status,
                None => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        };
        let ended = Instant::now();
        apps.settled("web", Duration::from_secs(20)).await;
        let wall = started.elapsed();
        let seen = Seen::stop(traffic).await;
        assert_eq!(status.code(), Some(expected), "{label}: unexpected exit");
        println!(
            "digitalocean, 2 instances, {label}: {seen} through the router; wall time {:.1} s; Apps API calls: {}",
            wall.as_secs_f64(),
            apps.calls().len()
        );
        if let Some(at) = errored {
            println!(
                "digitalocean, {label}: ERROR to the run's end: {:.2} s (goal: one poll interval, 1 s)",
                (ended - at).as_secs_f64()
            );
        }
    }
    apps.stop().await;
}

/// ECS behind a load balancer, two tasks: requests through the load balancer during a
/// deploy, a rollback this run makes (v3 fails the gate) and one ECS's circuit breaker
/// makes (v4 crashes), with the wall time and the AWS API requests each took (goal: no
/// failed request in any).
async fn ecs(binary: &str, dir: &std::path::Path) {
    use sandbox::app::{HealthMode, ReleaseSpec};
    use sandbox::ecs::{EcsOptions, EcsSandbox, ACCESS_KEY_ID, SECRET_ACCESS_KEY};

    let repo = sandbox::ecs::repository(&EcsOptions::default());
    let mut images = sandbox::app::Releases::new();
    images.insert(format!("{repo}:v3"), ReleaseSpec { health: HealthMode::WrongBody, ..Default::default() });
    images.insert(format!("{repo}:v4"), ReleaseSpec { crash_on_start: true, exit_code: 3, ..Default::default() });
    let ecs = EcsSandbox::start(EcsOptions {
        images,
        app_command: vec![binary.into(), "__sandbox-app".into()],
        ..EcsOptions::default()
    })
    .await
    .expect("the ECS sandbox starts");
    let url = ecs.app_url();
    for (label, tag, expected) in [
        ("deploy", "v2", 0),
        ("rollback by safe-deploy of a v3 that fails the gate", "v3", 1),
        ("rollback by ECS's circuit breaker of a v4 that crashes", "v4", 1),
    ] {
        ecs.reset_calls();
        let traffic = Traffic::judging(format!("{url}/"), &["v3"]);
        let started = Instant::now();
        let status = as_the_runner(binary, dir, dir, &url, "6s")
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
            .env("AWS_REGION", "us-east-1")
            .env("INPUT_PROVIDER", "ecs")
            .env("INPUT_CLUSTER", "staging")
            .env("INPUT_SERVICE", "web")
            .env("INPUT_IMAGE", format!("{repo}:{tag}"))
            .env("INPUT_API-URL", ecs.api_url())
            .status()
            .await
            .expect("the binary runs");
        ecs.wait_steady(Duration::from_secs(20)).await;
        let wall = started.elapsed();
        let seen = Seen::stop(traffic).await;
        assert_eq!(status.code(), Some(expected), "{label}: unexpected exit");
        println!(
            "ecs, 2 tasks, {label}: {seen} through the load balancer; wall time {:.1} s; AWS API calls: {}",
            wall.as_secs_f64(),
            ecs.calls().len()
        );
    }
}

/// The binary as the runner starts the action's main step, quietly: temp files in `temp`,
/// the workspace, and a health gate on `app_url` (`/health` saying ok, every 200 ms,
/// within `deadline`). The provider's inputs go on top.
fn as_the_runner(
    binary: &str,
    temp: &std::path::Path,
    workspace: &std::path::Path,
    app_url: &str,
    deadline: &str,
) -> Command {
    let mut command = Command::new(binary);
    command
        .env_clear()
        .env("GITHUB_ACTIONS", "true")
        .env("RUNNER_TEMP", temp)
        .env("GITHUB_WORKSPACE", workspace)
        .env("INPUT_HEALTH-URL", format!("{app_url}/health"))
        .env("INPUT_CHECK-STRING", "ok")
        .env("INPUT_HEALTH-INTERVAL", "200ms")
        .env("INPUT_HEALTH-DEADLINE", deadline)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// The largest resident set of any finished child process, in KiB.
fn peak_rss_kib() -> i64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage only writes into the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    usage.ru_maxrss
}
