//! `safe-deploy demo --provider ecs` and `safe-deploy sandbox --provider ecs`: the ECS
//! emulator in this process (ECS, the load balancer, STS, all signed). The demo deploys
//! a healthy v2, then a v3 the balancer takes but the health gate refuses (put back by
//! this run), then a v4 that crashes on start, which ECS's circuit breaker fails and
//! rolls back by itself: reported as the failure it is.

use sandbox::Handle;
use std::path::PathBuf;
use std::time::Duration;

use sandbox::app::{HealthMode, ReleaseSpec, Releases};
use sandbox::ecs::{EcsOptions, EcsSandbox, ACCESS_KEY_ID, ID_TOKEN_REQUEST_TOKEN, ROLE_ARN, SECRET_ACCESS_KEY};

use super::{say_traffic, Seen, Traffic};
use crate::job::deploy_in;
use crate::providers::registration::{Running, SandboxArgs};
use crate::secret::Redactor;
use crate::shutdown::Shutdown;

fn options(service: &str, desired: usize, images: Releases) -> std::io::Result<EcsOptions> {
    Ok(EcsOptions {
        service: service.to_string(),
        desired: desired as u32,
        images,
        app_command: vec![std::env::current_exe()?.into_os_string(), "__sandbox-app".into()],
        ..EcsOptions::default()
    })
}

pub async fn run(summary_dir: Option<PathBuf>, redactor: Redactor) -> i32 {
    super::exit_code(demo(summary_dir, redactor).await)
}

async fn demo(summary_dir: Option<PathBuf>, redactor: Redactor) -> anyhow::Result<i32> {
    let workspace = super::workspace("ecs-demo", summary_dir)?;
    let dir = workspace.dir.clone();
    let repo = sandbox::ecs::repository(&EcsOptions::default());
    let mut images = Releases::new();
    images.insert(format!("{repo}:v3"), ReleaseSpec { health: HealthMode::WrongBody, ..Default::default() });
    images.insert(format!("{repo}:v4"), ReleaseSpec { crash_on_start: true, exit_code: 1, ..Default::default() });

    println!("demo: starting the ECS sandbox: cluster staging, service web with two Fargate tasks on web:v1 behind a load balancer");
    let ecs = EcsSandbox::start(options("web", 2, images)?).await?;
    println!("demo: AWS APIs at {}, load balancer at {}", ecs.api_url(), ecs.app_url());
    let traffic = Traffic::judging(format!("{}/", ecs.app_url()), &["v3"]);
    let runner = super::demo_runner(&dir, redactor);
    let inputs = |tag: &str| {
        let mut raw = super::gated_inputs(&ecs.app_url(), tag, "8s");
        for (name, value) in [
            ("provider", "ecs".to_string()),
            ("cluster", "staging".into()),
            ("service", "web".into()),
            ("aws-region", "us-east-1".into()),
            ("aws-access-key-id", ACCESS_KEY_ID.into()),
            ("aws-secret-access-key", SECRET_ACCESS_KEY.into()),
            ("image", format!("{repo}:{tag}")),
            ("api-url", ecs.api_url()),
        ] {
            raw.set(name, value);
        }
        raw
    };

    println!("\ndemo: 1) deploy web:v2, a healthy release");
    let first = deploy_in(inputs("v2"), &dir, workspace.run(&runner, "v2"), Shutdown::new()).await;
    let after_first = Seen::of(&traffic);
    println!("\ndemo: 2) deploy web:v3, which the balancer finds healthy but whose /health answers without 'ok'");
    let second = deploy_in(inputs("v3"), &dir, workspace.run(&runner, "v3"), Shutdown::new()).await;
    println!("\ndemo: 3) deploy web:v4, whose tasks crash on start: ECS's circuit breaker fails it and rolls back");
    let third = deploy_in(inputs("v4"), &dir, workspace.run(&runner, "v4"), Shutdown::new()).await;
    ecs.wait_steady(Duration::from_secs(15)).await;
    let seen = Seen::stop(traffic).await;
    let serves = sandbox::client::call("GET", &format!("{}/version", ecs.app_url()), &[], None)
        .await
        .map(|r| r.text())
        .unwrap_or_default();
    println!("\ndemo: v2 exit code {first} (deployed), v3 exit code {second} (rolled back), v4 exit code {third} (rolled back by ECS, reported as a failure)");
    say_traffic(&after_first, "load balancer", "during the v2 deploy");
    say_traffic(&seen, "load balancer", "in all");
    println!("demo: live now: {} (serving {serves})", ecs.task_definition());
    workspace.say_summaries();
    Ok(if first == 0 && second == 1 && third == 1 && serves == "v2" { 0 } else { 1 })
}

/// `safe-deploy sandbox --provider ecs`: the emulator, standalone, until interrupted.
/// Service web starts on REPO:v1; `releases` say how other images behave.
pub async fn serve(service: &str, desired: usize, releases: Releases) -> i32 {
    let interrupted = super::interrupts();
    let broken = format!("{}:v3", sandbox::ecs::repository(&EcsOptions::default()));
    let releases = super::with_broken(releases, &broken);
    let ecs = match async { EcsSandbox::start(options(service, desired, releases)?).await }.await {
        Ok(e) => e,
        Err(e) => return super::could_not_start(e),
    };
    println!("AWS_ACCESS_KEY_ID={ACCESS_KEY_ID}");
    println!("AWS_SECRET_ACCESS_KEY={SECRET_ACCESS_KEY}");
    println!("AWS_REGION={}", ecs.options().region);
    println!("ECS_API_URL={}", ecs.api_url());
    println!("ECS_APP_URL={}", ecs.app_url());
    println!("ECS_CLUSTER={}", ecs.options().cluster);
    println!("ECS_SERVICE={}", ecs.options().service);
    println!("ACTIONS_ID_TOKEN_REQUEST_URL={}", ecs.id_token_url());
    println!("ACTIONS_ID_TOKEN_REQUEST_TOKEN={ID_TOKEN_REQUEST_TOKEN}");
    println!(
        "# service {service}, {} on {}:v1 behind a load balancer; requests must be signed with the keys above \
(or role-to-assume {ROLE_ARN} with the OIDC variables). Give ECS_API_URL to --api-url (the AWS CLI: --endpoint-url). \
Ctrl-C stops the sandbox.",
        crate::markdown::counted(desired, "task"),
        ecs.repository()
    );
    // The keys go in front of each command, as the AWS CLI's users set them.
    let repository = ecs.repository();
    super::Paste {
        env: vec![("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID.into()), ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY.into())],
        dir: None,
        shell: vec![],
        flags: vec![
            ("provider", "ecs".into()),
            ("cluster", ecs.options().cluster.clone()),
            ("service", service.into()),
            ("aws-region", ecs.options().region.clone()),
            ("api-url", ecs.api_url()),
        ],
        app_url: ecs.app_url(),
        rollback_to: None,
        release: ("image", format!("{repository}:")),
    }
    .print();
    interrupted.recv().await;
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
