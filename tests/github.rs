//! GitHub Deployments as the ledger: the real binary against the provider double and
//! the sandbox's GitHub REST emulator.

use sandbox::Handle;
use std::time::Duration;

use sandbox::app::HealthMode;
use sandbox::github::{GitHubFaults, GitHubOptions, GitHubSandbox};

use crate::util::{with, Double, Step};

const GH_TOKEN: &str = "ghs_ledgerTestToken123456";

pub async fn github() -> GitHubSandbox {
    GitHubSandbox::start(GitHubOptions { token: Some(GH_TOKEN.into()), ..GitHubOptions::default() })
        .await
        .expect("the GitHub emulator starts")
}

pub fn sha(n: u8) -> String {
    format!("{:x}", n).repeat(40).chars().take(40).collect()
}

/// A main step with a github-token, as a workflow run of commit `commit` would be.
pub fn step(gh: &GitHubSandbox, inputs: &[(String, String)], commit: &str) -> Step {
    Step::main(&with(inputs.to_vec(), "github-token", GH_TOKEN))
        .env("GITHUB_API_URL", &gh.api_url())
        .env("GITHUB_SERVER_URL", "https://github.com")
        .env("GITHUB_REPOSITORY", "acme/shop")
        .env("GITHUB_SHA", commit)
        .env("GITHUB_RUN_ID", "77")
}

fn states(gh: &GitHubSandbox, index: usize) -> Vec<String> {
    gh.deployments()[index].statuses.iter().map(|s| s.state.clone()).collect()
}

#[tokio::test]
async fn a_successful_deploy_is_recorded_in_progress_then_success() {
    let gh = github().await;
    let double = Double::start("web:v1").await;
    let ran = step(&gh, &double.inputs("web:v2"), &sha(1)).run().await;

    assert_eq!(ran.code, 0, "{ran}");
    let deployments = gh.deployments();
    assert_eq!(deployments.len(), 1);
    let d = &deployments[0];
    assert_eq!((d.sha.as_str(), d.environment.as_str()), (sha(1).as_str(), "production"));
    assert_eq!(d.auto_merge, Some(false), "the default branch must never be merged in");
    assert_eq!(d.required_contexts, Some(vec![]), "status checks must not block the deploy");
    assert_eq!(d.payload["safe_deploy"]["target"], "web:v2");
    assert_eq!(d.payload["safe_deploy"]["previous"], "web:v1");
    assert_eq!(states(&gh, 0), ["in_progress", "success"]);
    assert_eq!(d.statuses[0].log_url.as_deref(), Some("https://github.com/acme/shop/actions/runs/77"));
    assert_eq!(d.statuses[1].environment_url.as_deref(), Some(ran.output("url")));
    assert!(d.statuses.iter().all(|s| s.description.as_deref().is_some_and(|t| t.chars().count() <= 140)));
    assert!(ran.summary.contains("### GitHub deployment") && ran.summary.contains("**success**"), "{ran}");
    assert_eq!(ran.state["safe_deploy_deployment"], d.id.to_string(), "saved for the post step at once");
}

#[tokio::test]
async fn a_rolled_back_deploy_is_recorded_as_failure_and_a_failed_rollback_as_error() {
    let gh = github().await;
    let double = Double::start("web:v1").await;
    double.broken("web:v2", HealthMode::Error500);
    let ran = step(&gh, &double.inputs("web:v2"), &sha(2)).run().await;
    assert_eq!(ran.code, 1, "{ran}");
    assert_eq!(states(&gh, 0), ["in_progress", "failure"]);

    double.change(|s| s.faults.fail_roll_back = true);
    let ran = step(&gh, &double.inputs("web:v2"), &sha(3)).run().await;
    assert_eq!(ran.code, 3, "{ran}");
    assert_eq!(states(&gh, 0), ["in_progress", "error"], "the newest deployment");
}

#[tokio::test]
async fn a_cancelled_deploy_is_left_to_the_post_step_which_records_the_rollback() {
    let gh = github().await;
    let double = Double::start("web:v1").await;
    double.change(|s| s.faults.roll_out_delay_ms = 30_000);
    let inputs = double.inputs("web:v2");
    let (ran, took) = step(&gh, &inputs, &sha(4))
        .interrupt_when("INT", "the roll-out to begin", || {
            double.state().calls.iter().any(|c| c.starts_with("roll_out"))
        })
        .await;
    assert_eq!(ran.code, 130, "{ran}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(states(&gh, 0), ["in_progress"], "main leaves the deployment to the post step");

    double.change(|s| s.faults.roll_out_delay_ms = 0);
    let mut post = Step::post(&with(inputs.clone(), "github-token", GH_TOKEN), &ran.state);
    post = post
        .env("GITHUB_API_URL", &gh.api_url())
        .env("GITHUB_REPOSITORY", "acme/shop")
        .env("GITHUB_SHA", &sha(4))
        .env("GITHUB_RUN_ID", "77");
    let finished = post.run().await;
    assert_eq!(finished.code, 130, "{finished}");
    assert_eq!(states(&gh, 0), ["in_progress", "failure"]);
    assert_eq!(double.state().live(), "web:v1");
}

#[tokio::test]
async fn rollback_finds_the_last_good_release_in_the_ledger_and_redeploy_finds_a_commit() {
    let gh = github().await;
    let double = Double::start("web:v1").await;
    double.broken("web:v4", HealthMode::WrongBody);
    for (n, image, code) in [(1, "web:v2", 0), (2, "web:v3", 0), (3, "web:v4", 1)] {
        let ran = step(&gh, &double.inputs(image), &sha(n)).run().await;
        assert_eq!(ran.code, code, "{image}: {ran}");
    }
    assert_eq!(double.state().live(), "web:v3", "v4 failed and was rolled back");

    let mut rollback = with(double.inputs(""), "command", "rollback");
    rollback.retain(|(k, _)| k != "image");
    let ran = step(&gh, &rollback, &sha(4)).run().await;
    assert_eq!(ran.code, 0, "{ran}");
    assert_eq!(ran.output("release"), "web:v2", "v4 failed and v3 is live, so the last good one before it is v2");
    assert_eq!(double.state().live(), "web:v2");
    assert_eq!(gh.deployments()[0].payload["safe_deploy"]["command"], "rollback");
    assert_eq!(states(&gh, 0), ["in_progress", "success"]);

    let redeploy = with(with(double.inputs(""), "command", "redeploy"), "to", &sha(2)[..7]);
    let ran = step(&gh, &redeploy, &sha(5)).run().await;
    assert_eq!(ran.code, 0, "{ran}");
    assert_eq!(double.state().live(), "web:v3", "commit {} was deployed as web:v3", &sha(2)[..7]);
}

#[tokio::test]
async fn a_plan_writes_nothing_anywhere() {
    let gh = github().await;
    let double = Double::start("web:v1").await;
    let ran = step(&gh, &with(double.inputs("web:v2"), "command", "plan"), &sha(6)).run().await;
    assert_eq!(ran.code, 0, "{ran}");
    assert!(gh.writes().is_empty(), "{:?}", gh.writes());
    assert!(double.state().writes().is_empty());
}

#[tokio::test]
async fn github_failing_never_fails_the_deploy_but_says_so() {
    let cases = [
        (GitHubFaults { status: Some(500), ..Default::default() }, "500"),
        (GitHubFaults { status: Some(403), ..Default::default() }, "deployments: write"),
        (GitHubFaults { rate_limited: true, ..Default::default() }, "rate limit"),
        (GitHubFaults { auto_merge: true, ..Default::default() }, "auto_merge: false"),
        (GitHubFaults { conflict: true, ..Default::default() }, "409"),
        (GitHubFaults { invalid: true, ..Default::default() }, "422"),
    ];
    for (fault, advice) in cases {
        let gh = github().await;
        gh.set_faults(fault.clone());
        let double = Double::start("web:v1").await;
        let ran = step(&gh, &double.inputs("web:v2"), &sha(7)).run().await;
        assert_eq!(ran.code, 0, "{fault:?}: {ran}");
        assert_eq!(ran.output("status"), "deployed");
        assert_eq!(double.state().live(), "web:v2");
        assert!(ran.stdout.contains("::warning title=GitHub deployment::"), "{fault:?}: {ran}");
        assert!(
            ran.summary.contains("GitHub deployment: ") && ran.summary.contains(advice),
            "{fault:?} should say {advice}: {ran}"
        );
        gh.stop().await;
    }
}

#[tokio::test]
async fn the_github_token_never_appears_in_any_output() {
    let gh = github().await;
    gh.set_faults(GitHubFaults { status: Some(403), ..Default::default() });
    let double = Double::start("web:v1").await;
    let ran = step(&gh, &double.inputs("web:v2"), &sha(8)).run().await;
    let after_masks: String =
        ran.everything().lines().filter(|l| !l.starts_with("::add-mask::")).collect::<Vec<_>>().join("\n");
    assert!(!after_masks.contains(GH_TOKEN), "{ran}");
}
