//! The engine's stories, told by the real binary against the provider double.

use sandbox::app::{HealthMode, ReleaseSpec};

use crate::util::{run_main, with, Double};

#[tokio::test]
async fn a_healthy_release_is_deployed_and_the_run_says_what_is_live() {
    let double = Double::start("web:v1").await;
    let version_url = format!("{}/version", double.app.url());
    let ran = run_main(&with(with(double.inputs("web:v2"), "expect-version", "v2"), "version-url", &version_url)).await;

    assert_eq!(ran.code, 0, "{ran}");
    assert_eq!(ran.output("status"), "deployed");
    assert_eq!(ran.output("release"), "web:v2");
    assert_eq!(ran.output("previous-release"), "web:v1");
    assert_eq!(ran.output("rolled-back"), "false");
    assert!(ran.summary.lines().next().unwrap().contains("Deployed `web:v2`"), "{ran}");
    assert!(ran.summary.contains("```mermaid\ngantt"));
    assert_eq!(double.state().live(), "web:v2");
    assert_eq!(ran.state["safe_deploy_stage"], "finished");
    assert!(ran.stdout.contains("::group::roll out web:v2"), "one group per phase");
}

#[tokio::test]
async fn a_body_without_the_check_string_rolls_back_to_v1_and_exits_1() {
    let double = Double::start("web:v1").await;
    double.broken("web:v2", HealthMode::WrongBody);
    let ran = run_main(&double.inputs("web:v2")).await;

    assert_eq!(ran.code, 1, "{ran}");
    assert_eq!(ran.output("status"), "rolled-back");
    assert_eq!(ran.output("release"), "web:v1");
    assert_eq!(ran.output("rolled-back"), "true");
    assert_eq!(double.state().live(), "web:v1");
    assert!(double.state().calls.contains(&"roll_back web:v1".to_string()));
    assert!(ran.summary.contains("body mismatch"), "the attempts say why: {ran}");
    assert!(ran.summary.contains("### Rollback"));
    assert!(ran.stdout.contains("::error title=deploy failed::"), "{ran}");
}

#[tokio::test]
async fn the_old_version_still_answering_fails_the_version_check_and_rolls_back() {
    let double = Double::start("web:v1").await;
    // v2's instances report v1: the new version never took the traffic.
    double.release("web:v2", ReleaseSpec { version: "v1".into(), ..Default::default() });
    let inputs = with(
        with(double.inputs("web:v2"), "expect-version", "v2"),
        "version-url",
        &format!("{}/version", double.app.url()),
    );
    let ran = run_main(&inputs).await;

    assert_eq!(ran.code, 1, "{ran}");
    assert_eq!(ran.output("status"), "rolled-back");
    assert!(ran.summary.contains("wrong version"), "{ran}");
    assert_eq!(double.state().live(), "web:v1");
}

#[tokio::test]
async fn a_failed_rollback_exits_3_and_says_so_loudly() {
    let double = Double::start("web:v1").await;
    double.broken("web:v2", HealthMode::Error500);
    double.change(|s| s.faults.fail_roll_back = true);
    let ran = run_main(&double.inputs("web:v2")).await;

    assert_eq!(ran.code, 3, "{ran}");
    assert_eq!(ran.output("status"), "rollback-failed");
    assert_eq!(ran.output("release"), "web:v2", "what runs at the end, read at the end");
    let first = ran.summary.lines().next().unwrap();
    assert!(first.contains("ROLLBACK FAILED") && first.contains("could not be restored"), "{ran}");
    assert!(first.contains("`web:v2` is live"), "{ran}");
    assert!(ran.stdout.contains("::error title=rollback failed::ROLLBACK FAILED: deploy of web:v2"), "{ran}");
}

#[tokio::test]
async fn a_roll_out_that_fails_half_way_is_rolled_back() {
    let double = Double::start("web:v1").await;
    double.change(|s| s.faults.fail_roll_out = true);
    let ran = run_main(&double.inputs("web:v2")).await;

    assert_eq!(ran.code, 1, "{ran}");
    assert_eq!(ran.output("status"), "rolled-back");
    assert_eq!(double.state().live(), "web:v1");
}

#[tokio::test]
async fn instances_that_never_come_up_are_rolled_back() {
    let double = Double::start("web:v1").await;
    double.change(|s| s.faults.fail_wait = true);
    let ran = run_main(&double.inputs("web:v2")).await;

    // The rolled-back release cannot come up either: the double fails every wait.
    assert_eq!(ran.code, 3, "{ran}");
    assert!(ran.summary.contains("never came up"), "{ran}");
}

#[tokio::test]
async fn failing_to_read_the_live_release_changes_nothing_and_exits_1() {
    let double = Double::start("web:v1").await;
    double.change(|s| s.faults.fail_snapshot = true);
    let ran = run_main(&double.inputs("web:v2")).await;

    assert_eq!(ran.code, 1, "{ran}");
    assert_eq!(ran.output("status"), "failed");
    assert!(double.state().writes().is_empty());
    assert!(ran.summary.contains("FAILED before any change"), "{ran}");
}

#[tokio::test]
async fn with_rollback_off_a_failed_release_stays_and_the_summary_says_so() {
    let double = Double::start("web:v1").await;
    double.broken("web:v2", HealthMode::Error500);
    let ran = run_main(&with(double.inputs("web:v2"), "rollback", "false")).await;

    // A release known to be broken is live: exit 3, someone must act.
    assert_eq!(ran.code, 3, "{ran}");
    assert_eq!(ran.output("status"), "failed");
    assert_eq!(ran.output("release"), "web:v2");
    assert_eq!(double.state().live(), "web:v2");
    assert!(ran.summary.contains("was not rolled back"), "{ran}");
}

#[tokio::test]
async fn a_half_done_roll_out_with_rollback_off_exits_3_and_says_what_runs_now() {
    let double = Double::with_instances("web:v1", 3).await;
    double.change(|s| s.faults.fail_roll_out = true);
    let ran = run_main(&with(double.inputs("web:v2"), "rollback", "false")).await;

    assert_eq!(ran.code, 3, "{ran}");
    assert_eq!(ran.output("release"), "mixed: web:v1 (2), web:v2 (1)", "read from the provider at the end");
    assert!(ran.summary.lines().next().unwrap().contains("was not rolled back"), "{ran}");
}

#[tokio::test]
async fn a_plan_sends_no_change_and_lists_the_steps() {
    let double = Double::start("web:v1").await;
    let ran = run_main(&with(double.inputs("web:v2"), "command", "plan")).await;

    assert_eq!(ran.code, 0, "{ran}");
    assert_eq!(ran.output("status"), "planned");
    assert!(double.state().writes().is_empty(), "{:?}", double.state().calls);
    assert!(ran.summary.contains("### Plan"));
    assert!(ran.summary.contains("health gate: GET"), "{ran}");
    assert!(ran.stdout.contains("  plan: health gate: GET"), "the plan is in the runner's log too: {ran}");
    assert_eq!(double.state().live(), "web:v1");
}

#[tokio::test]
async fn dry_run_is_a_plan() {
    let double = Double::start("web:v1").await;
    let ran = run_main(&with(double.inputs("web:v2"), "dry-run", "true")).await;
    assert_eq!(ran.output("status"), "planned");
    assert!(double.state().writes().is_empty());
}

#[tokio::test]
async fn the_rollback_command_puts_the_previous_release_back_health_gated() {
    let double = Double::with_history(&["web:v1", "web:v2"]).await;
    let mut inputs = with(double.inputs(""), "command", "rollback");
    inputs.retain(|(k, _)| k != "image");
    let ran = run_main(&inputs).await;

    assert_eq!(ran.code, 0, "{ran}");
    assert_eq!(ran.output("release"), "web:v1");
    assert_eq!(ran.output("previous-release"), "web:v2");
    assert_eq!(double.state().live(), "web:v1");
    assert!(ran.summary.lines().next().unwrap().contains("back to `web:v1`"), "{ran}");
}

#[tokio::test]
async fn a_soak_failure_after_passing_rolls_back() {
    let double = Double::start("web:v1").await;
    let inputs = with(with(double.inputs("web:v2"), "health-soak", "600ms"), "health-deadline", "3s");
    // v2 passes at first, then breaks while soaking.
    let path = double.state_path.clone();
    let breaker = tokio::spawn(async move {
        crate::util::eventually(std::time::Duration::from_secs(10), "v2 to go live", || {
            sandbox::double::State::load(&path).map(|s| s.live() == "web:v2").unwrap_or(false)
        })
        .await;
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        sandbox::double::State::update(&path, |s| {
            s.releases.insert("web:v2".into(), ReleaseSpec { health: HealthMode::Error500, ..Default::default() });
        })
        .unwrap();
    });
    let ran = run_main(&inputs).await;
    breaker.await.unwrap();

    assert_eq!(ran.code, 1, "{ran}");
    assert!(ran.summary.contains("soak"), "{ran}");
    assert_eq!(double.state().live(), "web:v1");
}

#[tokio::test]
async fn a_roll_out_that_fails_before_any_write_says_nothing_changed_not_rollback_failed() {
    let double = Double::start("web:v1").await;
    double.change(|s| s.faults.fail_before_change = true);
    let ran = run_main(&double.inputs("web:v2")).await;

    assert_eq!(ran.code, 1, "{ran}");
    assert_eq!(ran.output("status"), "failed");
    assert_eq!(ran.output("release"), "web:v1", "what is live is known: {ran}");
    assert!(ran.summary.lines().next().unwrap().contains("FAILED before any change"), "{ran}");
    assert!(ran.summary.contains("| Changed anything | no |"), "{ran}");
    assert!(!double.state().calls.iter().any(|c| c.starts_with("roll_back")), "nothing to roll back");
}

#[tokio::test]
async fn a_broken_release_is_caught_on_the_first_batch_and_the_rest_never_run_it() {
    let double = Double::with_instances("web:v1", 3).await;
    double.broken("web:v2", HealthMode::WrongBody);
    let ran = run_main(&double.inputs("web:v2")).await;

    assert_eq!(ran.code, 1, "{ran}");
    assert_eq!(ran.output("status"), "rolled-back");
    assert_eq!(double.state().live(), "web:v1");
    assert_eq!(double.state().instances_that_ran("web:v2"), 1, "only the first batch ran it: {ran}");
    assert!(ran.summary.contains("health gate: batch 1, instance 0"), "{ran}");

    // Gated only at the end, the broken release reaches every instance first.
    let double = Double::with_instances("web:v1", 3).await;
    double.broken("web:v2", HealthMode::WrongBody);
    let ran = run_main(&with(double.inputs("web:v2"), "batch-gate", "end")).await;
    assert_eq!(ran.code, 1, "{ran}");
    assert_eq!(double.state().instances_that_ran("web:v2"), 3);
}

#[tokio::test]
async fn a_health_check_that_already_fails_against_the_live_release_stops_before_any_change() {
    let double = Double::start("web:v1").await;
    // The live release answers, but never with this text: the gate could never pass.
    let ran = run_main(&with(double.inputs("web:v2"), "check-string", "all systems go")).await;
    assert_eq!(ran.code, 1, "{ran}");
    assert!(ran.summary.lines().next().unwrap().contains("FAILED before any change"), "{ran}");
    assert!(ran.summary.contains("check-string"), "the input to fix is named: {ran}");
    assert!(double.state().writes().is_empty(), "{:?}", double.state().calls);

    // A closed port: the same, naming health-url.
    let closed = format!("http://127.0.0.1:{}/health", closed_port());
    let ran = run_main(&with(double.inputs("web:v2"), "health-url", &closed)).await;
    assert_eq!(ran.code, 1, "{ran}");
    assert!(ran.summary.contains("connection refused") && ran.summary.contains("health-url"), "{ran}");
    assert!(double.state().writes().is_empty());

    // Turned off (for a first deploy, or an app that is down), the deploy goes ahead,
    // and ends as the probe foresaw: the old release fails the same gate after the
    // rollback, a ROLLBACK FAILED that was never about the release.
    let ran =
        run_main(&with(with(double.inputs("web:v2"), "check-string", "all systems go"), "health-probe", "false")).await;
    assert_eq!(ran.code, 3, "{ran}");
    assert_eq!(ran.output("status"), "rollback-failed", "{ran}");
    assert!(double.state().writes().iter().any(|c| c.starts_with("roll_out")), "it rolled out");
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}
