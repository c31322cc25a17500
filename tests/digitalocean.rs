//! DigitalOcean App Platform end to end: the shared provider suite, then the real
//! binary against the Apps emulator, whose deployments move through their phases and
//! steps, whose instances are real processes of the test app, and whose router moves
//! traffic to a new deployment only once its instances pass their readiness check.

use sandbox::Handle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use safe_deploy::config::{Command, Config};
use safe_deploy::http::{HttpClient, RetryConfig};
use safe_deploy::inputs::RawInputs;
use safe_deploy::providers::conformance::{self as suite, Harness};
use safe_deploy::providers::{Source, Target};
use safe_deploy::secret::Redactor;
use sandbox::app::{HealthMode, ReleaseSpec};
use sandbox::digitalocean::{AppOptions, DoOptions, DoSandbox, Failure, Faults, ServiceOptions};
use serde_json::{json, Value};

use crate::util::{platform_inputs, with, Ran, Step, BIN};

pub const TOKEN: &str = "dop_v1_sandbox0123456789abcdef0123456789abcdef0123456789abcdef01234567";
const REGISTRY: &str = "registry.digitalocean.com/acme";

/// A digest made from a short name, so each test image has its own.
pub fn digest(name: &str) -> String {
    let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect::<String>();
    format!("sha256:{:0<64}", hex.chars().take(64).collect::<String>())
}

/// The sandbox's options for tests: the test app, the test token, and health-check
/// seconds and phases short enough for tests.
pub fn options(apps: Vec<AppOptions>) -> DoOptions {
    DoOptions {
        apps,
        token: Some(TOKEN.into()),
        app_command: vec![BIN.into(), "__sandbox-app".into()],
        second: Duration::from_millis(100),
        step_time: Duration::from_millis(150),
        ..Default::default()
    }
}

pub async fn apps(list: Vec<AppOptions>) -> DoSandbox {
    apps_with(options(list)).await
}

pub async fn apps_with(opts: DoOptions) -> DoSandbox {
    DoSandbox::start(opts).await.expect("the App Platform sandbox starts")
}

fn base_inputs(h: &DoSandbox, app: &str) -> Vec<(String, String)> {
    platform_inputs("digitalocean", app, TOKEN, &h.api_url(), &h.app_url(app))
}

/// Inputs that deploy `image` (a registry path) and expect `version` from it.
fn deploy(h: &DoSandbox, app: &str, image: &str, version: &str) -> Vec<(String, String)> {
    with(with(base_inputs(h, app), "image", image), "expect-version", version)
}

fn writes(h: &DoSandbox) -> Vec<String> {
    h.calls()
        .iter()
        .filter(|c| c.is_write() && !c.path.ends_with("/rollback/validate"))
        .map(|c| format!("{} {}", c.method, c.path))
        .collect()
}

/// What the app's active deployment runs, from the emulator: the web image's tag or
/// digest key (`web:v1`).
fn active_image(h: &DoSandbox, app: &str) -> String {
    let active = h.active_deployment(app).unwrap_or_default();
    let d = h.deployments(app).into_iter().find(|d| d["id"] == active.as_str()).unwrap_or_default();
    image_key(&d["spec"]["services"][0]["image"])
}

fn image_key(image: &Value) -> String {
    let repo = image["repository"].as_str().unwrap_or_default();
    match (image["digest"].as_str(), image["tag"].as_str()) {
        (Some(d), _) => format!("{repo}@{d}"),
        (_, Some(t)) => format!("{repo}:{t}"),
        _ => format!("{repo}:latest"),
    }
}

async fn served(h: &DoSandbox, app: &str) -> String {
    sandbox::client::call("GET", &format!("{}/version", h.app_url(app)), &[], None).await.unwrap().text()
}

fn assert_summary_says(ran: &Ran, words: &[&str]) {
    for w in words {
        assert!(ran.summary.contains(w), "the summary should say {w:?}:\n{ran}");
    }
}

// ----- the shared provider suite -----

struct DoHarness {
    h: DoSandbox,
    http: HttpClient,
    workspace: tempfile::TempDir,
}

impl DoHarness {
    async fn start() -> DoHarness {
        let h = apps(vec![AppOptions::image("web")]).await;
        h.add_image("web:broken", ReleaseSpec { health: HealthMode::WrongBody, ..Default::default() });
        for (name, spec) in sandbox::app::analysis_releases() {
            h.add_image(&format!("web:{name}"), spec);
        }
        let http = HttpClient::new(Redactor::default(), RetryConfig::default(), Duration::from_secs(30)).unwrap();
        DoHarness { h, http, workspace: tempfile::tempdir().unwrap() }
    }
}

#[async_trait]
impl Harness for DoHarness {
    fn http(&self) -> Option<&HttpClient> {
        Some(&self.http)
    }

    fn config(&self, command: Command, release: &str) -> Config {
        let mut raw = RawInputs::default();
        raw.set("command", command.as_str());
        for (k, v) in base_inputs(&self.h, "web") {
            raw.set(&k, v);
        }
        if command == Command::Deploy {
            raw.set("image", format!("{REGISTRY}/web:{release}"));
            raw.set("expect-version", release);
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
        active_image(&self.h, "web").trim_start_matches("web:").to_string()
    }

    /// "4f6c71e2 (web: web:g2)" and "… (a rollback to …)" run g2.
    fn says(&self, label: &str) -> String {
        let after = label.split("web: web:").nth(1).unwrap_or(label);
        after.split([')', ',']).next().unwrap_or(after).to_string()
    }

    fn target(&self, release: &str) -> Target {
        Target { source: Source::Image(format!("{REGISTRY}/web:{release}")), version: Some(release.into()) }
    }

    fn instances_that_ran(&self, _release: &str) -> usize {
        0
    }

    fn first_batch(&self) -> usize {
        0
    }

    fn writes(&self) -> usize {
        writes(&self.h).len()
    }

    async fn break_prepare(&self, on: bool) {
        // A build that fails leaves the old deployment serving: nothing changed.
        if on {
            self.h.fail_next("web", Failure::Build("Dockerfile: no such file".into()));
        }
    }

    async fn break_mid_rollout(&self, release: &str) {
        // Up as App Platform sees it (its readiness check takes any 2xx), but failing
        // the gate's check string: a rollback.
        self.h
            .add_image(&format!("web:{release}"), ReleaseSpec { health: HealthMode::WrongBody, ..Default::default() });
    }

    fn faults(&self) -> Vec<&'static str> {
        [Faults::SUITE.as_slice(), &["late write"]].concat()
    }

    async fn inject(&self, fault: &str) {
        // "late write": the next write takes effect but is answered after the client gave up.
        self.h.set_faults(Faults::named(fault).expect("a fault the kit knows"));
    }

    async fn clear_faults(&self) {
        self.h.set_faults(Faults::default());
    }
}

#[tokio::test]
async fn app_platform_rolls_back_what_the_analysis_finds_worse() {
    suite::the_analysis_rolls_back_what_serves_worse(&DoHarness::start().await).await;
}

#[tokio::test]
async fn app_platform_passes_a_good_release_through_the_analysis() {
    suite::the_analysis_passes_a_release_as_good(&DoHarness::start().await).await;
    suite::a_flapping_baseline_is_the_yardstick(&DoHarness::start().await).await;
    suite::too_few_answers_stop_the_deploy_before_any_change(&DoHarness::start().await).await;
}

#[tokio::test]
async fn app_platform_passes_the_provider_suite() {
    suite::a_deploy_passes(&DoHarness::start().await).await;
    suite::a_failure_before_any_change_changes_nothing(&DoHarness::start().await).await;
    suite::a_failure_mid_roll_out_is_restored(&DoHarness::start().await).await;
    suite::restore_twice_does_no_harm(&DoHarness::start().await).await;
}

#[tokio::test]
async fn app_platform_is_restored_after_a_signal_at_each_step() {
    suite::a_cancelled_run_is_restored_by_the_post_step(&DoHarness::start().await).await;
    suite::cancellation_at_each_step(&DoHarness::start().await).await;
    suite::a_cancelled_run_before_any_change_changes_nothing(&DoHarness::start().await).await;
}

#[tokio::test]
async fn app_platform_every_fault_has_a_test_of_its_own() {
    // Each fault is its own test below (they run side by side); one added to the
    // harness without a test here fails this one.
    let mut listed = DoHarness::start().await.faults();
    listed.sort();
    let mut tested =
        vec!["5xx burst", "429 burst", "reset burst", "slow answers", "malformed burst", "standing 503", "late write"];
    tested.sort();
    assert_eq!(listed, tested);
}

#[tokio::test]
async fn app_platform_a_5xx_burst_ends_truthfully() {
    suite::a_fault_ends_truthfully(&DoHarness::start().await, "5xx burst").await;
}

#[tokio::test]
async fn app_platform_a_429_burst_ends_truthfully() {
    suite::a_fault_ends_truthfully(&DoHarness::start().await, "429 burst").await;
}

#[tokio::test]
async fn app_platform_a_reset_burst_ends_truthfully() {
    suite::a_fault_ends_truthfully(&DoHarness::start().await, "reset burst").await;
}

#[tokio::test]
async fn app_platform_slow_answers_end_truthfully() {
    suite::a_fault_ends_truthfully(&DoHarness::start().await, "slow answers").await;
}

#[tokio::test]
async fn app_platform_a_malformed_burst_ends_truthfully() {
    suite::a_fault_ends_truthfully(&DoHarness::start().await, "malformed burst").await;
}

#[tokio::test]
async fn app_platform_a_standing_503_ends_truthfully() {
    suite::a_fault_ends_truthfully(&DoHarness::start().await, "standing 503").await;
}

#[tokio::test]
async fn app_platform_a_late_write_ends_truthfully() {
    suite::a_fault_ends_truthfully(&DoHarness::start().await, "late write").await;
}

// ----- the binary -----

#[tokio::test]
async fn a_healthy_deploy_puts_the_image_by_digest_and_proves_the_new_version() {
    // Phases slower than a poll, so each is seen.
    let h = apps_with(DoOptions { step_time: Duration::from_millis(1300), ..options(vec![AppOptions::image("shop")]) })
        .await;
    let d = digest("v2");
    h.add_image(&format!("web@{d}"), ReleaseSpec { version: "v2".into(), ..Default::default() });
    let before = h.active_deployment("shop").unwrap();
    let ran = Step::main(&deploy(&h, "shop", &format!("{REGISTRY}/web@{d}"), "v2")).run().await;
    assert_eq!((ran.code, ran.output("status")), (0, "deployed"), "{ran}");
    let now = h.active_deployment("shop").unwrap();
    assert_ne!(now, before);
    assert!(ran.output("release").starts_with(&now[..8]), "the release is the new deployment: {ran}");
    assert_eq!(served(&h, "shop").await, "v2");
    let put = h.calls().into_iter().find(|c| c.method == "PUT").expect("a spec update");
    let image = &put.body.as_ref().unwrap()["spec"]["services"][0]["image"];
    assert_eq!((image["digest"].as_str(), image.get("tag")), (Some(d.as_str()), None), "pinned by digest: {image}");
    assert!(
        ran.stdout.contains("is BUILDING") && ran.stdout.contains("is PENDING_DEPLOY"),
        "each phase is shown: {ran}"
    );
    assert!(ran.stdout.contains("Waiting for service web"), "each step is shown: {ran}");
    assert_eq!(h.pinned_deployment("shop"), None);
}

#[tokio::test]
async fn a_deployment_that_ends_in_error_serves_nothing_new_says_the_spec_changed_and_names_the_failing_step() {
    let h = apps(vec![AppOptions::image("shop")]).await;
    h.add_image("web:v2", ReleaseSpec { crash_on_start: true, exit_code: 3, ..Default::default() });
    let before = h.active_deployment("shop").unwrap();
    let started = Instant::now();
    let ran = Step::main(&deploy(&h, "shop", &format!("{REGISTRY}/web:v2"), "v2")).run().await;
    assert_eq!((ran.code, ran.output("status")), (1, "failed"), "{ran}");
    assert_eq!(h.active_deployment("shop").unwrap(), before, "the old deployment still serves");
    assert!(ran.output("release").starts_with(&before[..8]), "{ran}");
    assert_summary_says(&ran, &["ERROR", "deploy › components › web › wait"]);
    // Nothing serves differently, but not "nothing changed": the spec names the new image.
    let headline = ran.summary.lines().next().unwrap_or_default();
    assert!(
        headline.contains("nothing serves differently") && headline.contains("spec now names the new image"),
        "{ran}"
    );
    assert!(!ran.summary.contains("before any change"), "{ran}");
    assert!(ran.summary.contains("exited with code 3"), "the reason names the exit code: {ran}");
    assert!(
        ran.summary.contains("keeps the spec of a deployment that did not go live"),
        "the spec left behind is said: {ran}"
    );
    assert!(!writes(&h).iter().any(|w| w.contains("/rollback")), "no rollback: {:?}", writes(&h));
    assert_eq!(served(&h, "shop").await, "v1");
    assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_build_that_fails_is_reported_with_its_reason() {
    let h = apps(vec![AppOptions::image("shop")]).await;
    h.fail_next("shop", Failure::Build("unauthorized: pull access denied for web".into()));
    let ran = Step::main(&deploy(&h, "shop", &format!("{REGISTRY}/web:v2"), "v2")).run().await;
    assert_eq!((ran.code, ran.output("status")), (1, "failed"), "{ran}");
    assert_summary_says(&ran, &["step build", "pull access denied"]);
    assert_eq!(served(&h, "shop").await, "v1");
}

#[tokio::test]
async fn a_missing_check_string_after_active_rolls_back_and_leaves_the_app_unpinned() {
    let h = apps(vec![AppOptions::image("shop")]).await;
    h.add_image("web:v2", ReleaseSpec { health: HealthMode::WrongBody, ..Default::default() });
    let before = h.active_deployment("shop").unwrap();
    let ran = Step::main(&deploy(&h, "shop", &format!("{REGISTRY}/web:v2"), "v2")).run().await;
    assert_eq!((ran.code, ran.output("status")), (1, "rolled-back"), "{ran}");
    assert!(ran.output("release").contains(&format!("a rollback to {}", &before[..8])), "{ran}");
    assert_eq!(active_image(&h, "shop"), "web:v1");
    assert_eq!(served(&h, "shop").await, "v1");
    assert_eq!(h.pinned_deployment("shop"), None, "skip_pin: the next deploy is not blocked");
    assert!(ran.summary.contains("image_source_missing_digest"), "the validation's warning is in the summary: {ran}");
    let calls = h.calls();
    let validate = calls.iter().position(|c| c.path.ends_with("/rollback/validate")).expect("validated first");
    let rollback = calls.iter().position(|c| c.path.ends_with("/rollback")).expect("a rollback");
    assert!(validate < rollback);
    let body = calls[rollback].body.clone().unwrap();
    assert_eq!((body["deployment_id"].as_str(), body["skip_pin"].as_bool()), (Some(before.as_str()), Some(true)));
    // The next deploy is not blocked.
    h.add_image("web:v3", ReleaseSpec::default());
    let next = Step::main(&deploy(&h, "shop", &format!("{REGISTRY}/web:v3"), "v3")).run().await;
    assert_eq!(next.code, 0, "{next}");
}

#[tokio::test]
async fn keep_pin_leaves_the_rollback_pinned_and_says_how_to_lift_it() {
    let h = apps(vec![AppOptions::image("shop")]).await;
    h.add_image("web:v2", ReleaseSpec { health: HealthMode::WrongBody, ..Default::default() });
    let inputs = with(deploy(&h, "shop", &format!("{REGISTRY}/web:v2"), "v2"), "keep-pin", "true");
    let ran = Step::main(&inputs).run().await;
    assert_eq!((ran.code, ran.output("status")), (1, "rolled-back"), "{ran}");
    assert!(h.pinned_deployment("shop").is_some());
    assert_summary_says(&ran, &["pinned", "rollback/commit", "rollback/revert"]);
    // Pinned, the next deploy stops before any change and names why.
    h.reset_calls();
    let next = Step::main(&deploy(&h, "shop", &format!("{REGISTRY}/web:v3"), "v3")).run().await;
    assert_eq!((next.code, next.output("status")), (1, "failed"), "{next}");
    assert!(next.summary.contains("is pinned to rollback deployment"), "{next}");
    assert_eq!(writes(&h), Vec::<String>::new());
}

#[tokio::test]
async fn a_deployment_superseded_by_someone_elses_is_reported_within_one_poll() {
    let h = apps_with(DoOptions { step_time: Duration::from_millis(1500), ..options(vec![AppOptions::image("shop")]) })
        .await;
    let before = h.active_deployment("shop").unwrap();
    let step = Step::main(&deploy(&h, "shop", &format!("{REGISTRY}/web:v2"), "v2"));
    let child = step.command().spawn().unwrap();
    crate::util::eventually(Duration::from_secs(20), "the spec update", || h.calls().iter().any(|c| c.method == "PUT"))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let theirs = h.supersede("shop").expect("someone else's deployment starts");
    let superseded_at = Instant::now();
    let ran = step.collect(child).await;
    let took = superseded_at.elapsed();
    // Theirs deploys the spec this run put, so the new image goes live without a gate:
    // someone must look (exit 3), and the summary says what runs.
    assert_eq!((ran.code, ran.output("status")), (3, "failed"), "{ran}");
    assert_summary_says(&ran, &["SUPERSEDED", &theirs[..8], "did not roll back"]);
    assert!(took < Duration::from_millis(2500), "seen within one poll (1 s): {took:?}");
    assert!(!writes(&h).iter().any(|w| w.contains("/rollback")), "never rolled back over theirs: {:?}", writes(&h));
    assert!(h.settled("shop", Duration::from_secs(20)).await);
    assert_eq!(h.active_deployment("shop").as_deref(), Some(theirs.as_str()));
    // What ran when the run ended: the old deployment, or theirs once it went live.
    let said = ran.output("release");
    assert!(said.starts_with(&before[..8]) || said.starts_with(&theirs[..8]), "{ran}");
}

/// The main step deploying v2 of shop, once its deployment is live and its gate (an
/// 8 s soak) still open.
async fn deploying_v2_into_a_long_gate(h: &DoSandbox) -> (Step, tokio::process::Child) {
    let before = h.active_deployment("shop").unwrap();
    let inputs = with(
        with(deploy(h, "shop", &format!("{REGISTRY}/web:v2"), "v2"), "health-soak", "8s"),
        "health-deadline",
        "20s",
    );
    let step = Step::main(&inputs);
    let child = step.command().spawn().unwrap();
    crate::util::eventually(Duration::from_secs(20), "this run's deployment to go live", || {
        h.active_deployment("shop").is_some_and(|a| a != before)
    })
    .await;
    (step, child)
}

#[tokio::test]
async fn another_deployment_that_takes_over_during_the_health_gate_is_not_this_runs_success() {
    let h = apps_with(DoOptions { step_time: Duration::from_millis(200), ..options(vec![AppOptions::image("shop")]) })
        .await;
    // A soak keeps the gate open while someone else's deployment goes live.
    let (step, child) = deploying_v2_into_a_long_gate(&h).await;
    let ours = h.active_deployment("shop").unwrap();
    let theirs = h.supersede("shop").expect("someone else's deployment starts");
    let ran = step.collect(child).await;
    assert_eq!(h.active_deployment("shop").as_deref(), Some(theirs.as_str()), "theirs went live during the gate");
    // Not a success of this run: theirs is live, named with its cause, and not rolled back over.
    assert_eq!((ran.code, ran.output("status")), (3, "failed"), "{ran}");
    assert!(ran.output("release").starts_with(&theirs[..8]), "{ran}");
    assert_summary_says(&ran, &["REPLACED", &theirs[..8], "manual", &ours[..8]]);
    assert!(!writes(&h).iter().any(|w| w.contains("/rollback")), "never rolled back over theirs: {:?}", writes(&h));
}

#[tokio::test]
async fn a_spec_update_whose_deployment_shows_late_is_waited_for_and_gated() {
    let h = apps(vec![AppOptions::image("shop")]).await;
    // App Platform takes the spec, but neither its answer nor the list shows the
    // deployment for a while: that is no "nothing changed".
    h.hide_next_deployment("shop", Duration::from_secs(3));
    let ran = Step::main(&deploy(&h, "shop", &format!("{REGISTRY}/web:v2"), "v2")).run().await;
    assert_eq!((ran.code, ran.output("status")), (0, "deployed"), "{ran}");
    assert_eq!(active_image(&h, "shop"), "web:v2");
    assert!(ran.stdout.contains("the deployment of the new spec to show"), "the wait is said: {ran}");
}

#[tokio::test]
async fn a_spec_update_whose_deployment_never_shows_is_put_back_not_called_nothing_changed() {
    let h = apps(vec![AppOptions::image("shop")]).await;
    let before = h.active_deployment("shop").unwrap();
    h.hide_next_deployment("shop", Duration::from_secs(600));
    let inputs = with(deploy(&h, "shop", &format!("{REGISTRY}/web:v2"), "v2"), "deploy-timeout", "4s");
    let ran = Step::main(&inputs).run().await;
    // The spec was changed: the run puts the recorded one back, which App Platform
    // deploys (the same release, anew), and says it rolled back.
    assert_eq!((ran.code, ran.output("status"), ran.output("rolled-back")), (1, "rolled-back", "true"), "{ran}");
    assert!(!ran.summary.contains("before any change"), "{ran}");
    assert!(h.settled("shop", Duration::from_secs(20)).await);
    let spec_image = h.app("shop")["spec"]["services"][0]["image"]["tag"].clone();
    assert_eq!(spec_image, "v1", "the app's spec names the recorded image again");
    assert_eq!(active_image(&h, "shop"), "web:v1");
    assert_ne!(h.active_deployment("shop").unwrap(), before, "a deployment of the recorded spec");
    let hidden = h.deployments("shop").into_iter().find(|d| image_key(&d["spec"]["services"][0]["image"]) == "web:v2");
    assert_eq!(hidden.map(|d| d["phase"].clone()), Some("SUPERSEDED".into()), "the unseen one never went live");
}

#[tokio::test]
async fn a_deployment_queued_by_someone_else_is_named_as_queued_and_stops_the_deploy_before_any_change() {
    let h =
        apps_with(DoOptions { step_time: Duration::from_secs(4), ..options(vec![AppOptions::image("shop")]) }).await;
    let theirs = h.supersede("shop").expect("someone else's deployment is queued");
    assert_eq!(h.under_way("shop").0.as_deref(), Some(theirs.as_str()), "queued, not started");
    let ran = Step::main(&deploy(&h, "shop", &format!("{REGISTRY}/web:v2"), "v2")).run().await;
    assert_eq!((ran.code, ran.output("status")), (1, "failed"), "{ran}");
    assert_summary_says(&ran, &["before any change", &theirs[..8], "is queued to start (pending)"]);
    assert!(writes(&h).is_empty(), "nothing sent: {:?}", writes(&h));
}

#[tokio::test]
async fn a_spent_request_budget_is_waited_out_until_the_reset_it_gives_not_given_up_on() {
    // An "hour" of 8 s with 60 requests in it, all spent by others sharing the token:
    // the deploy must wait for the reset DigitalOcean's headers give, within its
    // deadline, and say so.
    let opts = DoOptions { hourly_limit: 60, hour: Duration::from_secs(8), ..options(vec![AppOptions::image("shop")]) };
    let h = apps_with(DoOptions { rate_limit: 1000, ..opts }).await;
    let auth = [("authorization", format!("Bearer {TOKEN}"))];
    let auth: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();
    for _ in 0..60 {
        sandbox::client::call("GET", &format!("{}/v2/apps", h.api_url()), &auth, None).await.unwrap();
    }
    assert_eq!(h.tokens_left(), 0, "the budget is spent");
    let ran = Step::main(&deploy(&h, "shop", &format!("{REGISTRY}/web:v2"), "v2")).run().await;
    assert_eq!((ran.code, ran.output("status")), (0, "deployed"), "{ran}");
    assert_eq!(active_image(&h, "shop"), "web:v2");
    assert!(ran.stdout.contains("request budget for this token is spent"), "{ran}");
    assert!(ran.stdout.contains("until it is taken again"), "the wait is said: {ran}");
    assert!(!ran.stdout.contains("re-run in a few minutes"), "{ran}");
}

/// Puts `app`'s spec with the web image at `tag`, as someone with doctl would.
async fn put_image(h: &DoSandbox, app: &str, tag: &str) {
    let mut spec = h.app(app)["spec"].clone();
    spec["services"][0]["image"] = serde_json::json!({ "registry_type": "DOCR", "repository": "web", "tag": tag });
    let url = format!("{}/v2/apps/{}", h.api_url(), h.app_id(app));
    let auth = format!("Bearer {TOKEN}");
    let body = serde_json::json!({ "spec": spec });
    let put = sandbox::client::call("PUT", &url, &[("authorization", auth.as_str())], Some(&body)).await.unwrap();
    assert_eq!(put.status, 200, "{}", put.text());
}

#[tokio::test]
async fn another_deployment_that_fails_this_runs_gate_is_not_rolled_back_over() {
    let h = apps_with(DoOptions { step_time: Duration::from_millis(200), ..options(vec![AppOptions::image("shop")]) })
        .await;
    h.add_image("web:v9", ReleaseSpec { version: "v9".into(), ..Default::default() });
    let (step, child) = deploying_v2_into_a_long_gate(&h).await;
    // Someone deploys v9 during the soak: the gate sees v9, not v2, and fails.
    put_image(&h, "shop", "v9").await;
    let ran = step.collect(child).await;
    let theirs = h.active_deployment("shop").unwrap();
    assert_eq!(active_image(&h, "shop"), "web:v9", "theirs is live");
    assert_eq!((ran.code, ran.output("status")), (3, "failed"), "{ran}");
    assert!(ran.output("release").starts_with(&theirs[..8]), "{ran}");
    assert_summary_says(&ran, &["REPLACED", &theirs[..8], "during the health gate"]);
    assert!(!writes(&h).iter().any(|w| w.contains("/rollback")), "never rolled back over theirs: {:?}", writes(&h));
}

#[tokio::test]
async fn a_late_deployment_is_never_confused_with_an_old_one_of_the_same_image() {
    let h = apps(vec![AppOptions::image("shop")]).await;
    // v3 once failed (its deployment ended in ERROR); v4 went live after it.
    h.add_image("web:v3", ReleaseSpec { crash_on_start: true, exit_code: 3, ..Default::default() });
    let failed = Step::main(&deploy(&h, "shop", &format!("{REGISTRY}/web:v3"), "v3")).run().await;
    assert_eq!(failed.code, 1, "{failed}");
    let ok = Step::main(&deploy(&h, "shop", &format!("{REGISTRY}/web:v4"), "v4")).run().await;
    assert_eq!(ok.code, 0, "{ok}");
    // v3, fixed, again: its new deployment shows late, and the old ERROR one of v3 is
    // among the newest: it must not be taken for this run's.
    h.add_image("web:v3", ReleaseSpec::default());
    h.hide_next_deployment("shop", Duration::from_secs(3));
    let ran = Step::main(&deploy(&h, "shop", &format!("{REGISTRY}/web:v3"), "v3")).run().await;
    assert_eq!((ran.code, ran.output("status")), (0, "deployed"), "{ran}");
    assert_eq!(active_image(&h, "shop"), "web:v3");
}

#[tokio::test]
async fn a_spec_file_of_another_app_is_refused_when_the_app_is_given_by_id() {
    let h = apps(vec![AppOptions::image("shop")]).await;
    let inputs = with(deploy(&h, "shop", &format!("{REGISTRY}/web:v2"), "v2"), "app", &h.app_id("shop"));
    let step = Step::main(&inputs);
    std::fs::create_dir_all(step.dir.path().join(".do")).unwrap();
    std::fs::write(step.dir.path().join(".do/app.yaml"), "name: blog\nservices:\n- name: web\n").unwrap();
    let ran = step.run().await;
    assert_eq!((ran.code, ran.output("status")), (1, "failed"), "{ran}");
    assert_summary_says(&ran, &["before any change", "describes app blog", "is app shop"]);
    assert!(writes(&h).is_empty(), "{:?}", writes(&h));
}

#[tokio::test]
async fn a_deployment_someone_cancels_leaves_the_old_one_serving_and_says_so() {
    let h = apps_with(DoOptions { step_time: Duration::from_millis(1500), ..options(vec![AppOptions::image("shop")]) })
        .await;
    let before = h.active_deployment("shop").unwrap();
    let step = Step::main(&deploy(&h, "shop", &format!("{REGISTRY}/web:v2"), "v2"));
    let child = step.command().spawn().unwrap();
    crate::util::eventually(Duration::from_secs(20), "the spec update", || h.calls().iter().any(|c| c.method == "PUT"))
        .await;
    let ours = h.deployments("shop")[0]["id"].as_str().unwrap().to_string();
    let headers = [("authorization", format!("Bearer {TOKEN}"))];
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let path = format!("{}/v2/apps/{}/deployments/{ours}/cancel", h.api_url(), h.app_id("shop"));
    let cancelled = sandbox::client::call("POST", &path, &headers, None).await.unwrap();
    assert_eq!(cancelled.status, 200, "{}", cancelled.text());
    let ran = step.collect(child).await;
    assert_eq!((ran.code, ran.output("status")), (1, "failed"), "{ran}");
    assert_summary_says(
        &ran,
        &["CANCELED", "nothing serves differently", "keeps the spec of a deployment that did not go live"],
    );
    assert_eq!(h.active_deployment("shop").unwrap(), before);
    assert_eq!(served(&h, "shop").await, "v1");
}

#[tokio::test]
async fn a_pinned_rollback_that_fails_its_gate_is_reverted() {
    let h = apps(vec![AppOptions::image("shop")]).await;
    // v2 went live once (ACTIVE), then failed its gate and was rolled back.
    h.add_image("web:v2", ReleaseSpec { health: HealthMode::WrongBody, ..Default::default() });
    let ran = Step::main(&deploy(&h, "shop", &format!("{REGISTRY}/web:v2"), "v2")).run().await;
    assert_eq!(ran.output("status"), "rolled-back", "{ran}");
    let v2 = h
        .deployments("shop")
        .into_iter()
        .find(|d| d["spec"]["services"][0]["image"]["tag"] == "v2")
        .and_then(|d| d["id"].as_str().map(str::to_string))
        .unwrap();
    // A person rolls back to it, keeping the pin: its gate fails, and the pinned rollback
    // is reverted, which brings back v1 and lifts the pin.
    let inputs = with(with(with(base_inputs(&h, "shop"), "command", "rollback"), "to", &v2[..8]), "keep-pin", "true");
    let ran = Step::main(&with(inputs, "version-url", "")).run().await;
    assert_eq!((ran.code, ran.output("status")), (1, "rolled-back"), "{ran}");
    assert!(h.calls().iter().any(|c| c.path.ends_with("/rollback/revert")), "reverted: {:?}", writes(&h));
    assert_eq!(h.pinned_deployment("shop"), None);
    assert_eq!(active_image(&h, "shop"), "web:v1");
    assert_eq!(served(&h, "shop").await, "v1");
}

#[tokio::test]
async fn rollback_goes_to_the_newest_deployment_the_ledger_recorded_healthy_or_to_a_named_one() {
    use crate::github::{github, sha, step};
    let gh = github().await;
    let h = apps(vec![AppOptions::image("shop")]).await;
    let first = h.active_deployment("shop").unwrap();
    h.add_image("web:v4", ReleaseSpec { health: HealthMode::WrongBody, ..Default::default() });
    for (n, version, code) in [(1, "v2", 0), (2, "v3", 0), (3, "v4", 1)] {
        let ran = step(&gh, &deploy(&h, "shop", &format!("{REGISTRY}/web:{version}"), version), &sha(n)).run().await;
        assert_eq!(ran.code, code, "{version}: {ran}");
    }
    assert_eq!(active_image(&h, "shop"), "web:v3");
    let rollback = with(with(base_inputs(&h, "shop"), "command", "rollback"), "version-url", "");
    let ran = step(&gh, &rollback, &sha(4)).run().await;
    assert_eq!(ran.code, 0, "{ran}");
    assert_eq!(active_image(&h, "shop"), "web:v2", "v2 was the last healthy one before v3: {ran}");
    assert_eq!(h.pinned_deployment("shop"), None);

    // A short deployment id looks like a commit SHA; with no such commit in the ledger it
    // is taken as the deployment's.
    let named = with(rollback, "to", &first[..8]);
    let ran = step(&gh, &named, &sha(5)).run().await;
    assert_eq!(ran.code, 0, "{ran}");
    assert_eq!(active_image(&h, "shop"), "web:v1", "to names a deployment by its short id: {ran}");
}

#[tokio::test]
async fn the_token_comes_from_digitalocean_access_token_and_the_app_from_its_spec_file() {
    let h = apps(vec![AppOptions::image("shop")]).await;
    h.add_image("web:v2", ReleaseSpec::default());
    let inputs = with(with(deploy(&h, "shop", &format!("{REGISTRY}/web:v2"), "v2"), "token", ""), "app", "");
    let step = Step::main(&inputs).env("DIGITALOCEAN_ACCESS_TOKEN", TOKEN);
    std::fs::create_dir_all(step.dir.path().join(".do")).unwrap();
    std::fs::write(
        step.dir.path().join(".do/app.yaml"),
        "name: shop\nservices:\n- name: web\n  image:\n    registry_type: DOCR\n    repository: web\n    tag: v1\n",
    )
    .unwrap();
    let ran = step.run().await;
    assert_eq!(ran.code, 0, "{ran}");
    assert_eq!(active_image(&h, "shop"), "web:v2");
    assert!(ran.stdout.contains(&format!("::add-mask::{TOKEN}")), "a token from the environment is masked too");
    let said = ran.everything().lines().filter(|l| !l.starts_with("::add-mask::")).collect::<Vec<_>>().join("\n");
    assert!(!said.contains(TOKEN), "the token is never printed");
}

#[tokio::test]
async fn without_an_image_a_git_app_is_built_again() {
    let git = AppOptions {
        name: "docs".into(),
        region: "ams".into(),
        services: vec![ServiceOptions {
            name: "web".into(),
            instances: 2,
            image: Value::Null,
            source: Some(json!({ "github": { "repo": "acme/docs", "branch": "main", "deploy_on_push": false } })),
            health_check: Some(json!({ "http_path": "/health", "period_seconds": 1, "failure_threshold": 3 })),
        }],
    };
    let h = apps(vec![git]).await;
    h.add_image("acme/docs#main", ReleaseSpec { version: "c0ffee".into(), ..Default::default() });
    let inputs = with(base_inputs(&h, "docs"), "expect-version", "c0ffee");
    let ran = Step::main(&inputs).run().await;
    assert_eq!(ran.code, 0, "{ran}");
    let create =
        h.calls().into_iter().find(|c| c.method == "POST" && c.path.ends_with("/deployments")).expect("a deployment");
    assert_eq!(create.body.unwrap()["force_build"], true);
    assert_eq!(served(&h, "docs").await, "c0ffee");
}

#[tokio::test]
async fn a_plan_names_the_readiness_check_and_warns_of_one_instance_without_a_change() {
    let one = AppOptions {
        services: vec![ServiceOptions {
            instances: 1,
            health_check: None,
            ..AppOptions::image("shop").services[0].clone()
        }],
        ..AppOptions::image("shop")
    };
    let h = apps(vec![one]).await;
    // The app named by the short id the output shows, not its name.
    let inputs = with(deploy(&h, "shop", &format!("{REGISTRY}/web:v2"), "v2"), "command", "plan");
    let inputs = with(inputs, "app", &h.app_id("shop")[..8]);
    let ran = Step::main(&inputs).run().await;
    assert_eq!(ran.code, 0, "{ran}");
    assert_summary_says(&ran, &["runs one instance", "no http_path", "every 10s", "9 failures", "has no digest"]);
    assert_eq!(writes(&h), Vec::<String>::new(), "a plan changes nothing");
}
