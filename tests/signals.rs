//! Cancellation: the binary is PID 1 in the container and must handle SIGINT itself,
//! stop making changes, save its state and exit fast; the post step then finishes.

use std::time::Duration;

use crate::util::{Double, Step};

#[tokio::test]
async fn sigint_mid_roll_out_exits_130_quickly_then_the_post_step_restores_v1() {
    let double = Double::start("web:v1").await;
    double.change(|s| s.faults.roll_out_delay_ms = 30_000);
    let inputs = double.inputs("web:v2");
    let (ran, took) = Step::main(&inputs)
        .interrupt_when("INT", "the roll-out to begin", || {
            double.state().calls.iter().any(|c| c.starts_with("roll_out"))
        })
        .await;

    assert_eq!(ran.code, 130, "{ran}");
    assert!(took < Duration::from_secs(5), "exited {took:?} after SIGINT");
    assert_eq!(ran.output("status"), "cancelled");
    assert_eq!(ran.state["safe_deploy_stage"], "changing", "the post step must know");
    assert!(ran.state["safe_deploy_snapshot"].contains("web:v1"));
    assert!(ran.summary.contains("CANCELLED"), "{ran}");
    assert_eq!(double.state().live(), "web:v2", "main itself made no further change");

    double.change(|s| s.faults.roll_out_delay_ms = 0);
    let post = Step::post(&inputs, &ran.state).run().await;
    assert_eq!(post.code, 130, "rolled back: the deploy did not happen, as the run was cancelled\n{post}");
    assert_eq!(post.output("status"), "rolled-back");
    assert_eq!(double.state().live(), "web:v1");
    assert!(post.summary.contains("### Rollback"), "{post}");

    // A second post run (or one after an orphaned main) does no harm: nothing is rolled
    // out or back again, the restored release is only checked.
    let rollbacks = |d: &Double| d.state().calls.iter().filter(|c| c.starts_with("roll_back")).count();
    let before = rollbacks(&double);
    let again = Step::post(&inputs, &ran.state).run().await;
    assert_eq!(again.output("status"), "rolled-back", "{again}");
    assert_eq!(rollbacks(&double), before);
    assert_eq!(double.state().live(), "web:v1");
}

#[tokio::test]
async fn the_post_step_after_a_finished_deploy_does_nothing() {
    let double = Double::start("web:v1").await;
    let inputs = double.inputs("web:v2");
    let ran = Step::main(&inputs).run().await;
    assert_eq!(ran.code, 0, "{ran}");
    let calls = double.state().calls.len();

    let post = Step::post(&inputs, &ran.state).run().await;
    assert_eq!(post.code, 0, "{post}");
    assert!(post.stdout.contains("nothing to do"), "{post}");
    assert_eq!(double.state().calls.len(), calls, "no provider call at all");
    assert_eq!(double.state().live(), "web:v2");
}

#[tokio::test]
async fn sigterm_during_the_health_gate_also_stops_within_five_seconds() {
    let double = Double::start("web:v1").await;
    double.broken("web:v2", sandbox::app::HealthMode::Hang);
    let inputs = crate::util::with(
        crate::util::with(double.inputs("web:v2"), "health-deadline", "60s"),
        "health-timeout",
        "30s",
    );
    // The double logs its readiness wait just before the health gate starts.
    let (ran, took) = Step::main(&inputs)
        .interrupt_when("TERM", "the health gate to begin", || {
            double.state().calls.iter().any(|c| c.starts_with("wait_ready web:v2"))
        })
        .await;
    assert_eq!(ran.code, 130, "{ran}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(ran.state["safe_deploy_stage"], "changing");
}

#[tokio::test]
async fn a_post_step_that_lost_the_recorded_release_says_the_state_is_unknown() {
    let double = Double::start("web:v2").await;
    let saved: std::collections::BTreeMap<String, String> =
        [("safe_deploy_stage".to_string(), "changing".to_string())].into_iter().collect();
    let post = Step::post(&double.inputs("web:v2"), &saved).run().await;

    assert_eq!(post.code, 3, "{post}");
    assert_eq!(post.output("status"), "rollback-failed");
    assert!(post.summary.contains("roll back by hand"), "{post}");
    assert!(double.state().writes().is_empty(), "nothing was guessed at");
}

#[tokio::test]
async fn ctrl_c_at_a_terminal_puts_the_recorded_release_back_there_and_then() {
    let double = Double::start("web:v1").await;
    double.change(|s| s.faults.roll_out_delay_ms = 30_000);
    let (ran, _) = Step::cli_with("deploy", &double.inputs("web:v2"))
        .interrupt_when("INT", "the roll-out to begin", || {
            double.state().calls.iter().any(|c| c.starts_with("roll_out"))
        })
        .await;

    // A person has no post step: the CLI restores, says so, and ends as the post step
    // would: cancelled (130), and the headline says so and what is live.
    assert!(ran.stdout.contains("Interrupted: putting the recorded release back now"), "{ran}");
    assert!(ran.stdout.contains("Ctrl-C (SIGINT): stopping; no further change is started"), "{ran}");
    assert_eq!(ran.code, 130, "cancelled, and rolled back: {ran}");
    assert!(ran.stdout.contains("Deploy of web:v2 to web was CANCELLED and rolled back: web:v1 is live."), "{ran}");
    assert_eq!(double.state().live(), "web:v1");
    assert!(double.state().calls.iter().any(|c| c.starts_with("roll_back web:v1")), "{:?}", double.state().calls);
    assert!(ran.summary.contains("### Rollback"), "{ran}");
    let first = ran.summary.lines().next().unwrap_or_default();
    assert!(
        first.contains("was CANCELLED and rolled back: `web:v1` is live"),
        "the summary opens with the end, not the cancel mid-way: {ran}"
    );
    assert_eq!(ran.summary.matches("CANCELLED").count(), 1, "{ran}");
}

#[tokio::test]
async fn a_second_ctrl_c_stops_at_once_and_prints_the_command_that_finishes_the_restore() {
    let double = Double::start("web:v1").await;
    double.change(|s| s.faults.roll_out_delay_ms = 30_000);
    // Characters shell quoting changes: the secret must still not show.
    let secret = r"a-token\that'must$not^print";
    let inputs =
        crate::util::with(crate::util::with(double.inputs("web:v2"), "health-deadline", "30s"), "token", secret);
    let step = Step::cli_with("deploy", &inputs);
    let child = step.command().spawn().unwrap();
    let pid = child.id().unwrap();
    crate::util::eventually(Duration::from_secs(30), "the roll-out to begin", || {
        double.state().calls.iter().any(|c| c.starts_with("roll_out"))
    })
    .await;
    // The restored release will not pass its gate: the restore takes its 30 s deadline.
    double.broken("web:v1", sandbox::app::HealthMode::Error500);
    crate::util::kill(pid, "INT").await;
    crate::util::eventually(Duration::from_secs(30), "the restore to begin", || {
        double.state().calls.iter().any(|c| c.starts_with("roll_back"))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = std::time::Instant::now();
    crate::util::kill(pid, "INT").await;
    let ran = step.collect(child).await;

    assert_eq!(ran.code, 130, "{ran}");
    assert!(second.elapsed() < Duration::from_secs(3), "{:?}", second.elapsed());
    // The summary still holds the stopped run's report: the restore never replaced it.
    assert!(ran.summary.starts_with("## ⏹️ Deploy of `web:v2` to web was CANCELLED mid-way"), "{ran}");
    let command = ran.stdout.lines().find(|l| l.trim_start().starts_with("safe-deploy post "));
    let command = command.unwrap_or_else(|| panic!("no finishing command printed:\n{ran}"));
    assert!(command.contains("--state-file") && command.contains("--image web:v2"), "{command}");
    assert!(
        command.contains("--token '***'") || command.contains("--token ***"),
        "the secret is not printed: {command}"
    );
    assert!(!ran.stdout.contains(secret), "{ran}");

    // The printed command finishes the restore, with the secret given again; it needs
    // no --image, since the state file records what to put back.
    double.release("web:v1", Default::default());
    let mut words = shlex::split(command.trim()).expect("a shell command");
    assert_eq!(words.remove(0), "safe-deploy");
    let image = words.iter().position(|w| w == "--image").unwrap();
    words.drain(image..image + 2);
    let words: Vec<String> = words.into_iter().map(|w| if w == "***" { secret.to_string() } else { w }).collect();
    let finish = Step::cli(&words.iter().map(String::as_str).collect::<Vec<_>>()).run().await;
    assert_eq!(finish.code, 130, "the stopped run, rolled back: {finish}");
    assert_eq!(double.state().live(), "web:v1");
}

#[tokio::test]
async fn ctrl_c_at_a_terminal_before_any_change_has_nothing_to_put_back() {
    let double = Double::start("web:v1").await;
    // The live release's health check hangs: the run sits in its probe, before any change.
    double.broken("web:v1", sandbox::app::HealthMode::Hang);
    let inputs = crate::util::with(double.inputs("web:v2"), "health-timeout", "30s");
    let (ran, took) = Step::cli_with("deploy", &inputs)
        .interrupt_when("INT", "the live release to be recorded", || !double.state().calls.is_empty())
        .await;

    assert_eq!(ran.code, 130, "cancelled, and nothing to restore: {ran}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(!ran.stdout.contains("putting the recorded release back"), "{ran}");
    assert!(double.state().writes().is_empty(), "{:?}", double.state().calls);
    assert!(ran.summary.lines().next().unwrap_or_default().contains("CANCELLED before any change"), "{ran}");
}
