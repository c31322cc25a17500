//! What a person sees: on a terminal a live status and the outcome once, in colour,
//! without Markdown or emoji; on a runner or through a pipe, plain lines where a run of
//! identical failures is one line and the outcome is said once.

use sandbox::app::HealthMode;

use crate::util::{run_main, Double};

/// The CLI at a terminal with these inputs as flags: what the terminal showed.
async fn on_a_terminal(command: &str, inputs: &[(String, String)], env: &[(&str, &str)]) -> String {
    let args = crate::util::flags(command, inputs);
    let env: Vec<(&str, &str)> = [("TERM", "xterm-256color")].into_iter().chain(env.iter().copied()).collect();
    crate::util::on_a_terminal(&args.iter().map(String::as_str).collect::<Vec<_>>(), &env).await.1
}

#[tokio::test]
async fn on_a_terminal_the_outcome_is_said_once_in_colour_without_markdown_or_emoji() {
    let double = Double::start("web:v1").await;
    let seen = on_a_terminal("deploy", &double.inputs("web:v2"), &[]).await;

    assert_eq!(seen.matches("Deployed web:v2 to web: live and healthy.").count(), 1, "{seen}");
    assert!(seen.contains("\x1b[32m\x1b[1mDeployed web:v2"), "the outcome in green: {seen:?}");
    assert!(!seen.contains('`') && !seen.contains('✅'), "no Markdown or emoji on a terminal: {seen}");
    assert!(!seen.contains("notice:"), "no annotation repeating the outcome: {seen}");
    // The live status redraws its lines in place.
    assert!(seen.contains("\x1b[2K"), "a live status was drawn: {seen:?}");
    assert_eq!(double.state().live(), "web:v2");
}

#[tokio::test]
async fn no_color_turns_colour_off_but_not_the_words() {
    let double = Double::start("web:v1").await;
    double.broken("web:v2", HealthMode::WrongBody);
    let seen = on_a_terminal("deploy", &double.inputs("web:v2"), &[("NO_COLOR", "1")]).await;

    assert_eq!(seen.matches("FAILED and was rolled back: web:v1 is live.").count(), 1, "{seen}");
    assert!(!seen.contains("\x1b[31m"), "no colour with NO_COLOR: {seen:?}");
    assert_eq!(seen.matches("why: health gate").count(), 1, "the reason once: {seen}");
}

#[tokio::test]
async fn on_a_runner_a_run_of_identical_failures_is_one_line_and_the_outcome_is_said_once() {
    let double = Double::start("web:v1").await;
    double.broken("web:v2", HealthMode::WrongBody);
    let ran = run_main(&double.inputs("web:v2")).await;
    assert_eq!(ran.output("status"), "rolled-back", "{ran}");

    let failed_lines =
        ran.stdout.lines().filter(|l| l.contains("failed: body does not contain") && !l.contains("all failed")).count();
    assert_eq!(failed_lines, 1, "the first failure is said, its repeats are not:\n{}", ran.stdout);
    assert!(ran.stdout.lines().any(|l| l.contains("attempts 1–") && l.contains("all failed")), "{}", ran.stdout);
    assert_eq!(ran.stdout.matches("FAILED and was rolled back").count(), 1, "{}", ran.stdout);
    assert!(!ran.stdout.contains('\x1b'), "no escape codes on a runner");
    assert!(!ran.stdout.contains('`'), "no Markdown in the log: {}", ran.stdout);
}

#[tokio::test]
async fn runner_debug_adds_a_line_per_request_with_its_status_and_time() {
    let double = Double::start("web:v1").await;
    let inputs = double.inputs("web:v2");
    let quiet = run_main(&inputs).await;
    assert!(!quiet.stdout.contains("http: GET"), "no request lines without step debug");

    let ran = crate::util::Step::main(&inputs).env("RUNNER_DEBUG", "1").run().await;
    assert_eq!(ran.code, 0, "{ran}");
    let health = format!("http: GET {}/health -> 200 in ", double.app.url());
    let lines = ran.stdout.lines().filter(|l| l.starts_with(&health) && l.ends_with("ms")).count();
    assert!(lines >= 3, "one line per health request, with status and time:\n{}", ran.stdout);
    assert!(!ran.stdout.contains("idle connection"), "our lines, not the HTTP library's chatter:\n{}", ran.stdout);

    // A secret in the URL never reaches a debug line (and every run is scanned for it).
    let secret = "s3cr3t-token-value-123";
    let leaky = format!("{}/health?key={secret}", double.app.url());
    let inputs = crate::util::with(crate::util::with(inputs, "health-url", &leaky), "token", secret);
    let ran = crate::util::Step::main(&inputs).env("RUNNER_DEBUG", "1").run().await;
    assert!(ran.stdout.contains(&health), "{ran}");
    let printed: Vec<&str> = ran.stdout.lines().filter(|l| !l.starts_with("::add-mask::")).collect();
    assert!(!printed.join("\n").contains(secret) && !ran.summary.contains(secret), "{ran}");
}
