//! `safe-deploy demo --provider digitalocean` and `safe-deploy sandbox --provider
//! digitalocean`: the App Platform sandbox in this process. The demo deploys a healthy
//! v2 by digest, then a v3 whose health check fails after the deployment went ACTIVE,
//! which App Platform's own rollback (validated, unpinned) puts back.

use sandbox::Handle;
use std::path::PathBuf;

use sandbox::app::{HealthMode, ReleaseSpec, Releases};
use sandbox::digitalocean::{AppOptions, DoOptions, DoSandbox};

use super::{say_traffic, Seen, Traffic};
use crate::job::deploy_in;
use crate::providers::registration::{Running, SandboxArgs};
use crate::secret::Redactor;
use crate::shutdown::Shutdown;

/// The sandbox accepts only this token, so the demo and a pasted deploy exercise real auth.
const DEMO_TOKEN: &str = "dop_v1_sandbox_demo_token";
const REGISTRY: &str = "registry.digitalocean.com/demo";

fn options(app: &str, instances: usize, images: Releases) -> std::io::Result<DoOptions> {
    let mut one = AppOptions::image(app);
    for s in &mut one.services {
        s.instances = instances as u32;
    }
    Ok(DoOptions {
        apps: vec![one],
        images,
        app_command: vec![std::env::current_exe()?.into_os_string(), "__sandbox-app".into()],
        ..DoOptions::default()
    })
}

pub async fn run(summary_dir: Option<PathBuf>, redactor: Redactor) -> i32 {
    super::exit_code(demo(summary_dir, redactor).await)
}

async fn demo(summary_dir: Option<PathBuf>, redactor: Redactor) -> anyhow::Result<i32> {
    let workspace = super::workspace("digitalocean-demo", summary_dir)?;
    let dir = workspace.dir.clone();
    let v2 = format!("sha256:{}", "2".repeat(64));
    let mut images = Releases::new();
    images.insert(format!("web@{v2}"), ReleaseSpec { version: "v2".into(), ..Default::default() });
    images.insert("web:v3".into(), ReleaseSpec { health: HealthMode::WrongBody, ..Default::default() });

    println!("demo: starting the App Platform sandbox: app demo, service web with two instances on web:v1");
    let apps = DoSandbox::start(DoOptions { token: Some(DEMO_TOKEN.into()), ..options("demo", 2, images)? }).await?;
    println!("demo: Apps API at {}, app at {}", apps.api_url(), apps.app_url("demo"));
    let traffic = Traffic::judging(format!("{}/", apps.app_url("demo")), &["v3"]);
    let runner = super::demo_runner(&dir, redactor);
    let inputs = |image: String, version: &str| {
        let mut raw = super::gated_inputs(&apps.app_url("demo"), version, "8s");
        for (name, value) in [
            ("provider", "digitalocean".to_string()),
            ("app", "demo".into()),
            ("token", DEMO_TOKEN.into()),
            ("image", image),
            ("api-url", apps.api_url()),
        ] {
            raw.set(name, value);
        }
        raw
    };

    println!("\ndemo: 1) deploy web@sha256:2222… (v2), a healthy release, pinned by digest");
    let first =
        deploy_in(inputs(format!("{REGISTRY}/web@{v2}"), "v2"), &dir, workspace.run(&runner, "v2"), Shutdown::new())
            .await;
    let after_first = Seen::of(&traffic);
    println!("\ndemo: 2) deploy web:v3, which App Platform finds ready but whose /health answers without 'ok'");
    let second =
        deploy_in(inputs(format!("{REGISTRY}/web:v3"), "v3"), &dir, workspace.run(&runner, "v3"), Shutdown::new())
            .await;
    apps.settled("demo", std::time::Duration::from_secs(15)).await;
    let seen = Seen::stop(traffic).await;
    let serves = sandbox::client::call("GET", &format!("{}/version", apps.app_url("demo")), &[], None)
        .await
        .map(|r| r.text())
        .unwrap_or_default();
    println!("\ndemo: v2 exit code {first} (deployed), v3 exit code {second} (rolled back)");
    say_traffic(&after_first, "router", "during the v2 deploy");
    say_traffic(&seen, "router", "in all");
    println!(
        "demo: live now: deployment {} (serving {serves}), pinned: {}",
        apps.active_deployment("demo").unwrap_or_default(),
        apps.pinned_deployment("demo").is_some()
    );
    workspace.say_summaries();
    apps.stop().await;
    Ok(if first == 0 && second == 1 && serves == "v2" { 0 } else { 1 })
}

/// `safe-deploy sandbox --provider digitalocean`: the emulator, standalone, until
/// interrupted. Service web starts on web:v1; `releases` say how other images behave.
pub async fn serve(app: &str, instances: usize, releases: Releases) -> i32 {
    let interrupted = super::interrupts();
    let releases = super::with_broken(releases, "web:v3");
    let started = async {
        DoSandbox::start(DoOptions { token: Some(DEMO_TOKEN.into()), ..options(app, instances, releases)? }).await
    };
    let apps = match started.await {
        Ok(a) => a,
        Err(e) => return super::could_not_start(e),
    };
    println!("DIGITALOCEAN_API_URL={}", apps.api_url());
    println!("DIGITALOCEAN_APP_URL={}", apps.app_url(app));
    println!("DIGITALOCEAN_APP={app}");
    println!("DIGITALOCEAN_APP_ID={}", apps.app_id(app));
    println!("DIGITALOCEAN_ACCESS_TOKEN={DEMO_TOKEN}");
    println!("# service web, {instances} instances on {REGISTRY}/web:v1; the sandbox takes only the token above. Ctrl-C stops it.");
    super::Paste {
        env: vec![],
        dir: None,
        shell: vec![],
        flags: vec![
            ("provider", "digitalocean".into()),
            ("app", app.into()),
            ("api-url", apps.api_url()),
            ("token", DEMO_TOKEN.into()),
        ],
        app_url: apps.app_url(app),
        rollback_to: None,
        release: ("image", format!("{REGISTRY}/web:")),
    }
    .print();
    interrupted.recv().await;
    apps.stop().await;
    0
}

/// This provider's demo, as its `Registration` names it.
pub fn start_demo(summary: Option<PathBuf>, redactor: Redactor) -> Running {
    Box::pin(run(summary, redactor))
}

/// This provider's sandbox, as its `Registration` names it.
pub fn start_sandbox(args: SandboxArgs) -> Running {
    Box::pin(async move { serve(&args.app, args.machines, args.releases).await })
}
