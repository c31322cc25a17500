//! AWS ECS behind an Application Load Balancer, end to end: the shared provider suite,
//! then the real binary against the ECS emulator, whose tasks are real processes of the
//! test app, whose target group health-checks and drains them, whose circuit breaker
//! fails a deployment and rolls the service back by itself, and which checks every
//! request's SigV4 signature.

use sandbox::Handle;
use std::time::Duration;

use async_trait::async_trait;
use safe_deploy::config::{Command, Config};
use safe_deploy::http::{HttpClient, RetryConfig};
use safe_deploy::inputs::RawInputs;
use safe_deploy::providers::conformance::{self as suite, Harness};
use safe_deploy::providers::{Source, Target};
use safe_deploy::secret::Redactor;
use sandbox::app::{HealthMode, ReleaseSpec};
use sandbox::ecs::{EcsOptions, EcsSandbox, Faults, ACCESS_KEY_ID, SECRET_ACCESS_KEY};

use crate::util::{with, Ran, Step, BIN};

/// The sandbox's options for tests: the test app, and AWS's seconds a tenth as long.
pub fn options() -> EcsOptions {
    EcsOptions { app_command: vec![BIN.into(), "__sandbox-app".into()], ..Default::default() }
}

pub async fn start_with(opts: EcsOptions) -> EcsSandbox {
    EcsSandbox::start(opts).await.expect("the ECS sandbox starts")
}

pub async fn start() -> EcsSandbox {
    start_with(options()).await
}

/// The image of tag `tag` in the sandbox's repository.
fn image(h: &EcsSandbox, tag: &str) -> String {
    format!("{}:{tag}", h.repository())
}

/// The inputs of a deploy of `tag` to the sandbox's service, keys given as inputs.
pub fn inputs(h: &EcsSandbox, tag: &str) -> Vec<(String, String)> {
    let app = h.app_url();
    [
        ("provider", "ecs".to_string()),
        ("service", "web".into()),
        ("cluster", "staging".into()),
        ("aws-region", "us-east-1".into()),
        ("aws-access-key-id", ACCESS_KEY_ID.into()),
        ("aws-secret-access-key", SECRET_ACCESS_KEY.into()),
        ("api-url", h.api_url()),
        ("image", image(h, tag)),
        ("health-url", format!("{app}/health")),
        ("check-string", "ok".into()),
        ("version-url", format!("{app}/version")),
        ("expect-version", tag.into()),
        ("health-interval", "100ms".into()),
        ("health-deadline", "6s".into()),
        ("health-timeout", "1s".into()),
        ("deploy-timeout", "60s".into()),
        ("rollback-timeout", "60s".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The tag of what every running task runs, or "mixed: ...".
fn running(h: &EcsSandbox) -> String {
    let mut tags: Vec<String> =
        h.running_images().iter().map(|i| i.rsplit(':').next().unwrap_or_default().to_string()).collect();
    tags.dedup();
    match tags.as_slice() {
        [one] => one.clone(),
        _ => format!("mixed: {}", tags.join(", ")),
    }
}

fn service_tag(h: &EcsSandbox) -> String {
    h.service_image().rsplit(':').next().unwrap_or_default().to_string()
}

/// Everything the run wrote but the masks it asked the runner for.
fn said(ran: &Ran) -> String {
    ran.everything().lines().filter(|l| !l.starts_with("::add-mask::")).collect::<Vec<_>>().join("\n")
}

fn assert_said(ran: &Ran, words: &[&str]) {
    for w in words {
        assert!(ran.stdout.contains(w) || ran.summary.contains(w), "the run should say {w:?}:\n{ran}");
    }
}

// ----- the shared provider suite -----

struct EcsHarness {
    h: EcsSandbox,
    http: HttpClient,
    workspace: tempfile::TempDir,
}

impl EcsHarness {
    async fn start() -> EcsHarness {
        let h = start().await;
        h.add_image(&image(&h, "broken"), ReleaseSpec { health: HealthMode::WrongBody, ..Default::default() });
        for (name, spec) in sandbox::app::analysis_releases() {
            h.add_image(&image(&h, name), spec);
        }
        let http = HttpClient::new(Redactor::default(), RetryConfig::default(), Duration::from_secs(30)).unwrap();
        EcsHarness { h, http, workspace: tempfile::tempdir().unwrap() }
    }
}

#[async_trait]
impl Harness for EcsHarness {
    fn http(&self) -> Option<&HttpClient> {
        Some(&self.http)
    }

    fn config(&self, command: Command, release: &str) -> Config {
        let mut raw = RawInputs::default();
        raw.set("command", command.as_str());
        for (k, v) in inputs(&self.h, release) {
            if command == Command::Deploy || !matches!(k.as_str(), "image" | "expect-version") {
                raw.set(&k, v);
            }
        }
        Config::from_inputs_in(&raw, self.workspace.path()).unwrap()
    }

    fn good(&self) -> [String; 2] {
        ["g2".into(), "g3".into()]
    }

    fn broken(&self) -> String {
        "broken".into()
    }

    fn analysed(&self, name: &str) -> String {
        name.into()
    }

    fn running(&self) -> String {
        running(&self.h)
    }

    /// "web:3 (REPO:g2)" runs g2.
    fn says(&self, label: &str) -> String {
        let inside = label.split_once('(').map_or(label, |(_, rest)| rest.trim_end_matches(')'));
        inside.rsplit(':').next().unwrap_or(inside).to_string()
    }

    fn target(&self, release: &str) -> Target {
        Target { source: Source::Image(image(&self.h, release)), version: Some(release.into()) }
    }

    fn instances_that_ran(&self, release: &str) -> usize {
        self.h.tasks_started(&image(&self.h, release))
    }

    fn first_batch(&self) -> usize {
        0
    }

    fn writes(&self) -> usize {
        self.h.writes().len()
    }

    async fn break_prepare(&self, on: bool) {
        self.h.refuse_registrations(on);
    }

    async fn break_mid_rollout(&self, release: &str) {
        // Healthy as the target group sees it (200 on /health), wrong to the gate.
        self.h.add_image(&image(&self.h, release), ReleaseSpec { health: HealthMode::WrongBody, ..Default::default() });
    }

    fn faults(&self) -> Vec<&'static str> {
        Faults::SUITE.to_vec()
    }

    async fn inject(&self, fault: &str) {
        self.h.set_faults(Faults::named(fault).expect("a fault the kit knows"));
    }

    async fn clear_faults(&self) {
        self.h.set_faults(Faults::default());
    }
}

#[tokio::test]
async fn ecs_rolls_back_what_the_analysis_finds_worse() {
    suite::the_analysis_rolls_back_what_serves_worse(&EcsHarness::start().await).await;
}

#[tokio::test]
async fn ecs_passes_a_good_release_through_the_analysis() {
    suite::the_analysis_passes_a_release_as_good(&EcsHarness::start().await).await;
    suite::a_flapping_baseline_is_the_yardstick(&EcsHarness::start().await).await;
    suite::too_few_answers_stop_the_deploy_before_any_change(&EcsHarness::start().await).await;
}

#[tokio::test]
async fn ecs_passes_the_provider_suite() {
    suite::a_deploy_passes(&EcsHarness::start().await).await;
    suite::a_failure_before_any_change_changes_nothing(&EcsHarness::start().await).await;
    suite::a_failure_mid_roll_out_is_restored(&EcsHarness::start().await).await;
    suite::restore_twice_does_no_harm(&EcsHarness::start().await).await;
}

#[tokio::test]
async fn ecs_is_restored_after_a_signal_at_each_step() {
    suite::a_cancelled_run_is_restored_by_the_post_step(&EcsHarness::start().await).await;
    suite::cancellation_at_each_step(&EcsHarness::start().await).await;
    suite::a_cancelled_run_before_any_change_changes_nothing(&EcsHarness::start().await).await;
}

#[tokio::test]
async fn ecs_ends_every_api_fault_truthfully() {
    suite::every_fault_ends_truthfully(&EcsHarness::start().await).await;
}

// ----- the binary against the emulator -----

#[tokio::test]
async fn a_new_image_is_registered_rolled_out_and_proved_with_every_event_said() {
    let h = start().await;
    let ran = Step::main(&inputs(&h, "v2")).run().await;
    assert_eq!(ran.code, 0, "{ran}");
    assert_eq!(service_tag(&h), "v2");
    assert_eq!(running(&h), "v2", "the old tasks drained and stopped");
    assert!(h.wait_steady(Duration::from_secs(5)).await);
    assert!(ran.output("release").contains("web:2"), "{ran}");
    // ECS's events and the targets' states, as they came.
    assert_said(&ran, &["has started 2 tasks", "registered 1 targets", "deployment completed", "is healthy"]);
    assert_said(&ran, &["circuit breaker is on", "drains old targets for 5 s"]);
    let writes: Vec<String> = h.writes().iter().filter_map(|c| c.target.clone()).collect();
    assert_eq!(writes, ["RegisterTaskDefinition", "UpdateService"]);
    assert!(ran.stdout.contains(&format!("::add-mask::{SECRET_ACCESS_KEY}")), "masked first");
    assert!(!said(&ran).contains(SECRET_ACCESS_KEY), "the secret key is never printed");
}

#[tokio::test]
async fn a_crash_looping_image_is_failed_by_the_circuit_breaker_and_reported_as_a_failure() {
    let h = start().await;
    h.add_image(&image(&h, "crash"), ReleaseSpec { crash_on_start: true, exit_code: 3, ..Default::default() });
    let ran = Step::main(&inputs(&h, "crash")).run().await;
    assert_ne!(ran.code, 0, "never a green check: {ran}");
    assert_said(&ran, &["circuit breaker", "Essential container in task exited (exit code 3)"]);
    assert!(h.wait_steady(Duration::from_secs(10)).await);
    assert_eq!(service_tag(&h), "v1", "ECS rolled the service back");
    assert_eq!(running(&h), "v1");
    assert_eq!(ran.output("status"), "rolled-back", "{ran}");
    assert!(ran.output("release").contains("web:1"), "{ran}");
}

#[tokio::test]
async fn a_task_that_never_passes_the_balancers_check_is_stopped_and_rolled_back() {
    // Seconds three times as long: the target's failing checks last past one poll.
    let h = start_with(EcsOptions { second: Duration::from_millis(300), ..options() }).await;
    h.add_image(&image(&h, "sick"), ReleaseSpec { health: HealthMode::Error500, ..Default::default() });
    let ran = Step::main(&inputs(&h, "sick")).run().await;
    assert_ne!(ran.code, 0, "{ran}");
    assert_said(&ran, &["Task failed ELB health checks", "Target.ResponseCodeMismatch"]);
    assert!(h.wait_steady(Duration::from_secs(10)).await);
    assert_eq!(service_tag(&h), "v1");
}

#[tokio::test]
async fn a_release_the_balancer_takes_but_the_gate_refuses_is_put_back_by_this_run() {
    let h = start().await;
    h.add_image(&image(&h, "v3"), ReleaseSpec { health: HealthMode::WrongBody, ..Default::default() });
    let ran = Step::main(&inputs(&h, "v3")).run().await;
    assert_eq!(ran.code, 1, "{ran}");
    assert_eq!(ran.output("status"), "rolled-back", "{ran}");
    assert!(h.wait_steady(Duration::from_secs(5)).await);
    assert_eq!(service_tag(&h), "v1");
    assert_eq!(running(&h), "v1");
    let writes: Vec<String> = h.writes().iter().filter_map(|c| c.target.clone()).collect();
    assert_eq!(writes, ["RegisterTaskDefinition", "UpdateService", "UpdateService"], "one change, one put back");
}

#[tokio::test]
async fn keys_from_the_environment_sign_as_well_and_a_wrong_secret_is_refused_before_any_change() {
    let h = start().await;
    let mut given = inputs(&h, "v2");
    given.retain(|(k, _)| !k.starts_with("aws-"));
    let ran = Step::main(&given)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
        .env("AWS_REGION", "us-east-1")
        .run()
        .await;
    assert_eq!(ran.code, 0, "{ran}");
    assert_eq!(service_tag(&h), "v2");
    assert!(
        ran.stdout.contains(&format!("::add-mask::{SECRET_ACCESS_KEY}")),
        "a key from the environment is masked too"
    );

    let wrong = "not/the/secret/K7MDENGbPxRfiCYEXAMPLE";
    let ran = Step::main(&with(inputs(&h, "v3"), "aws-secret-access-key", wrong)).run().await;
    assert_ne!(ran.code, 0, "{ran}");
    assert_said(&ran, &["InvalidSignatureException"]);
    assert!(ran.summary.contains("| Changed anything | no |"), "{ran}");
    assert_eq!(service_tag(&h), "v2");
    assert!(!said(&ran).contains(wrong), "a secret is never printed, even a wrong one");
}

#[tokio::test]
async fn a_role_is_assumed_with_the_runners_oidc_token_and_no_long_lived_keys() {
    let h = start().await;
    let mut given = inputs(&h, "v2");
    given.retain(|(k, _)| !k.starts_with("aws-access") && !k.starts_with("aws-secret"));
    given.push(("role-to-assume".into(), sandbox::ecs::ROLE_ARN.into()));
    let ran = Step::main(&given)
        .env("ACTIONS_ID_TOKEN_REQUEST_URL", &h.id_token_url())
        .env("ACTIONS_ID_TOKEN_REQUEST_TOKEN", sandbox::ecs::ID_TOKEN_REQUEST_TOKEN)
        .run()
        .await;
    assert_eq!(ran.code, 0, "{ran}");
    assert_eq!(service_tag(&h), "v2");

    // Without the job's permission there is no token to ask for: bad input, no request.
    let before = h.calls().len();
    let ran = Step::main(&given).run().await;
    assert_eq!(ran.code, 2, "{ran}");
    assert_said(&ran, &["id-token: write"]);
    assert_eq!(h.calls().len(), before, "nothing was asked");
}

#[tokio::test]
async fn throttling_is_waited_out_and_never_counted_as_a_failure() {
    let h = start().await;
    h.set_faults(Faults { rate_limit_burst: 4, ..Default::default() });
    let ran = Step::main(&inputs(&h, "v2")).run().await;
    assert_eq!(ran.code, 0, "{ran}");
    let throttled = h.calls().iter().filter(|c| c.status == 400).count();
    assert_eq!(throttled, 4, "four ThrottlingExceptions, each asked again");
}

#[tokio::test]
async fn bad_input_is_refused_before_any_request() {
    let h = start().await;
    let mut given = inputs(&h, "v2");
    given.retain(|(k, _)| k != "aws-region");
    let ran = Step::main(&given).run().await;
    assert_eq!(ran.code, 2, "{ran}");
    assert_said(&ran, &["aws-region", "AWS_REGION"]);

    let ran = Step::main(&with(inputs(&h, "v2"), "container-name", "api")).run().await;
    assert_ne!(ran.code, 0, "{ran}");
    assert_said(&ran, &["no container named 'api'", "its containers are: web"]);
    assert!(h.writes().is_empty(), "nothing registered, nothing updated");
    assert!(h.calls().iter().all(|c| c.status != 0));
}

#[tokio::test]
async fn a_template_and_environment_variables_make_the_new_revision() {
    let h = start().await;
    let step = Step::main(&with(
        with(inputs(&h, "v2"), "task-definition", "task-definition.json"),
        "environment-variables",
        "LOG_LEVEL=debug\nGIT_SHA=abc123",
    ));
    let template = serde_json::json!({
        "family": "web",
        "networkMode": "awsvpc",
        "requiresCompatibilities": ["FARGATE"],
        "cpu": "256",
        "memory": "512",
        "containerDefinitions": [{"name": "web", "image": "placeholder", "essential": true,
            "portMappings": [{"containerPort": 8080}]}],
    });
    std::fs::write(step.dir.path().join("task-definition.json"), template.to_string()).unwrap();
    let ran = step.run().await;
    assert_eq!(ran.code, 0, "{ran}");
    let register = h.writes().into_iter().find(|c| c.target.as_deref() == Some("RegisterTaskDefinition")).unwrap();
    let sent = register.body.unwrap();
    let container = &sent["containerDefinitions"][0];
    assert_eq!(container["image"], image(&h, "v2"));
    assert_eq!(
        container["environment"],
        serde_json::json!([{"name": "LOG_LEVEL", "value": "debug"}, {"name": "GIT_SHA", "value": "abc123"}])
    );
}

#[tokio::test]
async fn a_blue_green_service_is_reported_and_followed_through_ecss_own_account() {
    let h = start_with(EcsOptions { strategy: "BLUE_GREEN".into(), ..options() }).await;
    let ran = Step::main(&inputs(&h, "v2")).run().await;
    assert_eq!(ran.code, 0, "{ran}");
    assert_said(&ran, &["ECS's BLUE_GREEN strategy (bake time 5 min)", "service deployment", "stage SCALE_UP"]);
    assert_said(&ran, &["SUCCESSFUL"]);
    assert_eq!(service_tag(&h), "v2");
}

#[tokio::test]
async fn a_rollback_by_hand_finds_the_revision_before_the_live_one_and_a_redeploy_names_one() {
    let h = start().await;
    assert_eq!(Step::main(&inputs(&h, "v2")).run().await.code, 0);
    assert_eq!(service_tag(&h), "v2");

    let mut by_hand = with(with(inputs(&h, "v2"), "command", "rollback"), "expect-version", "v1");
    by_hand.retain(|(k, _)| k != "image");
    let ran = Step::main(&by_hand).run().await;
    assert_eq!(ran.code, 0, "{ran}");
    assert_eq!(service_tag(&h), "v1", "the revision before the live one");
    assert!(h.task_definition().ends_with("web:1"), "no new revision for a rollback: {}", h.task_definition());

    let mut again = with(with(with(inputs(&h, "v2"), "command", "redeploy"), "to", "web:2"), "expect-version", "v2");
    again.retain(|(k, _)| k != "image");
    let ran = Step::main(&again).run().await;
    assert_eq!(ran.code, 0, "{ran}");
    assert!(h.task_definition().ends_with("web:2"), "{}", h.task_definition());
    assert_eq!(running(&h), "v2");

    // The live revision again: new tasks, as --force-new-deployment starts them.
    let before = h.tasks_started(&image(&h, "v2"));
    let ran = Step::main(&again).run().await;
    assert_eq!(ran.code, 0, "{ran}");
    assert_eq!(h.tasks_started(&image(&h, "v2")), before + 2, "two new tasks replaced the two running ones");
    let forced = h.writes().iter().filter(|c| c.body.as_ref().is_some_and(|b| b["forceNewDeployment"] == true)).count();
    assert_eq!(forced, 1);
}

#[tokio::test]
async fn tasks_and_revisions_listed_a_page_at_a_time_are_all_found() {
    // One a page: the new tasks' targets, and the revision before the live one, are
    // found only by following nextToken.
    let h = start_with(EcsOptions { list_page: 1, desired: 3, ..options() }).await;
    let ran = Step::main(&inputs(&h, "v2")).run().await;
    assert_eq!(ran.code, 0, "{ran}");
    assert_eq!(running(&h), "v2");
    let pages = h.calls().iter().filter(|c| c.body.as_ref().is_some_and(|b| b.get("nextToken").is_some())).count();
    assert!(pages >= 2, "later pages were asked for: {pages}");
    assert_eq!(Step::main(&inputs(&h, "v3")).run().await.code, 0);

    let mut by_hand = with(with(inputs(&h, "v3"), "command", "rollback"), "expect-version", "v2");
    by_hand.retain(|(k, _)| k != "image");
    let ran = Step::main(&by_hand).run().await;
    assert_eq!(ran.code, 0, "{ran}");
    assert!(h.task_definition().ends_with("web:2"), "the newest before the live web:3: {}", h.task_definition());
}

#[tokio::test]
async fn a_release_named_by_the_ledgers_label_or_by_its_image_is_found_among_the_revisions() {
    let h = start().await;
    assert_eq!(Step::main(&inputs(&h, "v2")).run().await.code, 0);
    assert_eq!(Step::main(&inputs(&h, "v3")).run().await.code, 0);
    let redeploy = |to: &str, version: &str| {
        let mut given =
            with(with(with(inputs(&h, version), "command", "redeploy"), "to", to), "expect-version", version);
        given.retain(|(k, _)| k != "image");
        given
    };
    // As the GitHub ledger keeps a release: its label.
    let label = format!("web:2 ({})", image(&h, "v2"));
    let ran = Step::main(&redeploy(&label, "v2")).run().await;
    assert_eq!(ran.code, 0, "{ran}");
    assert!(h.task_definition().ends_with("web:2"));
    // By its image: the newest revision that runs it.
    let ran = Step::main(&redeploy(&image(&h, "v3"), "v3")).run().await;
    assert_eq!(ran.code, 0, "{ran}");
    assert!(h.task_definition().ends_with("web:3"));
    // An image no revision runs: said, with nothing changed.
    let ran = Step::main(&redeploy(&image(&h, "v9"), "v9")).run().await;
    assert_eq!(ran.code, 1, "{ran}");
    assert_said(&ran, &["none of the 20 newest revisions of task definition web runs", "name a revision"]);
    assert!(h.task_definition().ends_with("web:3"));
}

#[tokio::test]
async fn a_new_deployment_of_the_same_revision_forced_by_someone_else_is_followed_not_called_theirs() {
    let h = start().await;
    h.add_image(&image(&h, "v2"), ReleaseSpec { boot_delay_ms: 1500, ..Default::default() });
    let step = Step::main(&inputs(&h, "v2"));
    let child = step.command().spawn().unwrap();
    crate::util::eventually(Duration::from_secs(20), "the update to web:2", || h.task_definition().ends_with("web:2"))
        .await;
    h.force_new_deployment();
    let ran = step.collect(child).await;
    assert_eq!(ran.code, 0, "{ran}");
    assert_said(&ran, &["following it"]);
    assert_eq!(running(&h), "v2");
}

#[tokio::test]
async fn the_snapshot_names_the_revision_and_never_holds_the_task_definitions_environment() {
    // APP_ENV=staging is in the live definition's environment: values there may be secret,
    // and a snapshot is saved to a file for the post step.
    let harness = EcsHarness::start().await;
    let ctx = safe_deploy::providers::Context {
        deadline: tokio::time::Instant::now() + Duration::from_secs(30),
        budget: "deploy-timeout",
        shutdown: safe_deploy::shutdown::Shutdown::new(),
        progress: Default::default(),
        surface: Default::default(),
    };
    let snapshot = harness.provider().snapshot(&ctx).await.unwrap();
    let saved = serde_json::to_string(&snapshot).unwrap();
    assert!(saved.contains("task-definition/web:1"), "the recorded revision: {saved}");
    assert!(!saved.contains("APP_ENV"), "not the definition's environment: {saved}");
}

#[tokio::test]
async fn a_rollback_by_hand_never_goes_to_a_revision_that_did_not_stay_live() {
    let h = start().await;
    h.add_image(&image(&h, "bad"), ReleaseSpec { health: HealthMode::WrongBody, ..Default::default() });
    assert_eq!(Step::main(&inputs(&h, "v2")).run().await.code, 0);
    // web:3 is registered, fails the gate and is put back: web:2 is live again.
    assert_eq!(Step::main(&inputs(&h, "bad")).run().await.code, 1);
    assert!(h.task_definition().ends_with("web:2"));

    let mut by_hand = with(with(inputs(&h, "v2"), "command", "rollback"), "expect-version", "v1");
    by_hand.retain(|(k, _)| k != "image");
    let ran = Step::main(&by_hand).run().await;
    assert_eq!(ran.code, 0, "{ran}");
    assert!(
        h.task_definition().ends_with("web:1"),
        "the one before the live web:2, not web:3: {}",
        h.task_definition()
    );
}

#[tokio::test]
async fn with_rollback_off_ecss_own_rollback_is_said_as_the_rollback_it_is() {
    let h = start().await;
    h.add_image(&image(&h, "crash"), ReleaseSpec { crash_on_start: true, exit_code: 3, ..Default::default() });
    let ran = Step::main(&with(inputs(&h, "crash"), "rollback", "false")).run().await;
    assert_eq!(ran.code, 1, "the previous release is back: not a failed one left live: {ran}");
    assert_eq!(ran.output("status"), "rolled-back", "{ran}");
    assert_said(&ran, &["rollback is off (rollback: false), but ecs put the previous release back by itself"]);
    assert!(
        ran.summary.lines().any(|l| l.contains("wait until the provider reports it up") && l.contains("failed")),
        "the wait's row says it failed: {ran}"
    );
    assert!(h.wait_steady(Duration::from_secs(10)).await);
    assert_eq!(service_tag(&h), "v1");
}

#[tokio::test]
async fn a_service_named_by_its_arn_deploys_and_an_oidc_url_that_is_not_https_is_refused() {
    let h = start().await;
    let arn = "arn:aws:ecs:us-east-1:123456789012:service/staging/web";
    let ran = Step::main(&with(inputs(&h, "v2"), "service", arn)).run().await;
    assert_eq!(ran.code, 0, "{ran}");
    assert_eq!(service_tag(&h), "v2");

    let mut given = inputs(&h, "v3");
    given.retain(|(k, _)| !k.starts_with("aws-access") && !k.starts_with("aws-secret"));
    given.push(("role-to-assume".into(), sandbox::ecs::ROLE_ARN.into()));
    let before = h.calls().len();
    let ran = Step::main(&given)
        .env("ACTIONS_ID_TOKEN_REQUEST_URL", "ftp://127.0.0.1/oidc/token")
        .env("ACTIONS_ID_TOKEN_REQUEST_TOKEN", sandbox::ecs::ID_TOKEN_REQUEST_TOKEN)
        .run()
        .await;
    assert_eq!(ran.code, 2, "{ran}");
    assert_said(&ran, &["ACTIONS_ID_TOKEN_REQUEST_URL cannot be used", "only https://"]);
    assert_eq!(h.calls().len(), before);
}

#[tokio::test]
async fn a_signal_mid_wait_leaves_the_restore_to_the_post_step_and_a_second_post_step_finds_nothing_to_do() {
    let h = start().await;
    h.add_image(&image(&h, "v2"), ReleaseSpec { boot_delay_ms: 2000, ..Default::default() });
    let given = inputs(&h, "v2");
    let main = Step::main(&given);
    let (ran, _) = main.interrupt_when("TERM", "the update to web:2", || h.task_definition().ends_with("web:2")).await;
    assert_eq!(ran.code, 130, "{ran}");
    let first = Step::post(&given, &ran.state).run().await;
    assert_eq!(first.code, 130, "the post step put web:1 back, ending the cancelled run: {first}");
    assert!(first.stdout.contains("was CANCELLED and rolled back"), "{first}");
    assert!(h.wait_steady(Duration::from_secs(10)).await);
    assert_eq!(service_tag(&h), "v1");
    let second = Step::post(&given, &ran.state).run().await;
    assert_eq!(second.code, 0, "run again, it has nothing to do, and says no rollback failed: {second}");
    assert!(!second.stdout.contains("ROLLBACK FAILED"), "{second}");
    assert_eq!(service_tag(&h), "v1");
}
