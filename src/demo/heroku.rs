//! `safe-deploy demo --provider heroku` and `safe-deploy sandbox --provider heroku`:
//! the Heroku sandbox in this process. The demo deploys the source of a healthy v2,
//! then of a v3 whose health check fails, which Heroku's own rollback puts back.

use sandbox::Handle;
use std::path::{Path, PathBuf};

use sandbox::heroku::{AppOptions, HerokuOptions, HerokuSandbox};

use super::{say_traffic, Seen, Traffic};
use crate::job::deploy_in;
use crate::providers::registration::{Running, SandboxArgs};
use crate::secret::Redactor;
use crate::shutdown::Shutdown;

/// The sandbox accepts only this token, so the demo and a pasted deploy exercise real auth.
const DEMO_TOKEN: &str = "HRKU-sandbox-demo-token";

fn options(app: &str, dynos: usize) -> std::io::Result<HerokuOptions> {
    Ok(HerokuOptions {
        apps: vec![AppOptions { dynos, ..AppOptions::cedar(app) }],
        app_command: vec![std::env::current_exe()?.into_os_string(), "__sandbox-app".into()],
        ..HerokuOptions::default()
    })
}

/// An app's source as a user's repository holds it: a Procfile and its version.
fn write_source(dir: &Path, version: &str, web_flags: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("Procfile"),
        format!("web: sandbox-app {web_flags}\nrelease: echo 'migrations: none pending'\n"),
    )?;
    std::fs::write(dir.join("VERSION"), version)
}

pub async fn run(summary_dir: Option<PathBuf>, redactor: Redactor) -> i32 {
    super::exit_code(demo(summary_dir, redactor).await)
}

async fn demo(summary_dir: Option<PathBuf>, redactor: Redactor) -> anyhow::Result<i32> {
    let workspace = super::workspace("heroku-demo", summary_dir)?;
    let dir = workspace.dir.clone();
    write_source(&dir.join("v2"), "v2", "")?;
    write_source(&dir.join("v3"), "v3", "--health wrong-body")?;

    println!("demo: starting the Heroku sandbox: app demo, two web dynos on v1, preboot on");
    let heroku = HerokuSandbox::start(HerokuOptions { token: Some(DEMO_TOKEN.into()), ..options("demo", 2)? }).await?;
    println!("demo: Platform API at {}, app at {}", heroku.api_url(), heroku.app_url("demo"));
    let traffic = Traffic::judging(format!("{}/", heroku.app_url("demo")), &["v3"]);
    let runner = super::demo_runner(&dir, redactor);
    let inputs = |version: &str| {
        let mut raw = super::gated_inputs(&heroku.app_url("demo"), version, "8s");
        for (name, value) in [
            ("provider", "heroku".to_string()),
            ("app", "demo".into()),
            ("token", DEMO_TOKEN.into()),
            ("source-dir", version.into()),
            ("api-url", heroku.api_url()),
        ] {
            raw.set(name, value);
        }
        raw
    };

    println!("\ndemo: 1) deploy the source of v2, a healthy release (build, release phase, preboot)");
    let first = deploy_in(inputs("v2"), &dir, workspace.run(&runner, "v2"), Shutdown::new()).await;
    let after_first = Seen::of(&traffic);
    println!("\ndemo: 2) deploy the source of v3, whose /health answers without 'ok'");
    let second = deploy_in(inputs("v3"), &dir, workspace.run(&runner, "v3"), Shutdown::new()).await;
    heroku.settled("demo", std::time::Duration::from_secs(15)).await;
    let seen = Seen::stop(traffic).await;
    let live = heroku.current_version("demo");
    let serves = live.and_then(|v| heroku.served_by("demo", v)).unwrap_or_default();
    println!("\ndemo: v2 exit code {first} (deployed), v3 exit code {second} (rolled back)");
    say_traffic(&after_first, "router", "during the v2 deploy");
    say_traffic(&seen, "router", "in all");
    println!("demo: live now: v{} (serving {serves})", live.unwrap_or(0));
    workspace.say_summaries();
    heroku.stop().await;
    let _ = std::fs::remove_dir_all(dir.join("v2"));
    let _ = std::fs::remove_dir_all(dir.join("v3"));
    Ok(if first == 0 && second == 1 && serves == "v2" { 0 } else { 1 })
}

/// `safe-deploy sandbox --provider heroku`: the emulator, standalone, until interrupted.
pub async fn serve(app: &str, dynos: usize) -> i32 {
    let interrupted = super::interrupts();
    let started =
        async { HerokuSandbox::start(HerokuOptions { token: Some(DEMO_TOKEN.into()), ..options(app, dynos)? }).await };
    let heroku = match started.await {
        Ok(h) => h,
        Err(e) => return super::could_not_start(e),
    };
    println!("HEROKU_API_URL={}", heroku.api_url());
    println!("HEROKU_APP_URL={}", heroku.app_url(app));
    println!("HEROKU_APP={app}");
    println!("HEROKU_API_KEY={DEMO_TOKEN}");
    println!("# {dynos} web dynos on v1, preboot on; the sandbox takes only the key above. Ctrl-C stops it.");
    // The pasted deploys send the sources of v2 and v3 from a folder of the sandbox's own.
    let dir = super::private_dir("heroku-sandbox");
    let sources = dir.and_then(|d| {
        write_source(&d.join("v2"), "v2", "")?;
        write_source(&d.join("v3"), "v3", "--health wrong-body")?;
        Ok(d)
    });
    match &sources {
        Ok(dir) => super::Paste {
            env: vec![],
            dir: Some(dir.clone()),
            shell: vec![],
            flags: vec![
                ("provider", "heroku".into()),
                ("app", app.into()),
                ("api-url", heroku.api_url()),
                ("token", DEMO_TOKEN.into()),
            ],
            app_url: heroku.app_url(app),
            rollback_to: None,
            release: ("source-dir", String::new()),
        }
        .print(),
        Err(e) => println!("# (no sources to paste a deploy of: {e})"),
    }
    interrupted.recv().await;
    heroku.stop().await;
    if let Ok(dir) = sources {
        let _ = std::fs::remove_dir_all(dir);
    }
    0
}

/// This provider's demo, as its `Registration` names it.
pub fn start_demo(summary: Option<PathBuf>, redactor: Redactor) -> Running {
    Box::pin(run(summary, redactor))
}

/// This provider's sandbox, as its `Registration` names it.
pub fn start_sandbox(args: SandboxArgs) -> Running {
    Box::pin(async move { serve(&args.app, args.machines).await })
}
