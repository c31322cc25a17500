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

/// What `safe-deploy ARGS` (a sandbox) printed up to its third command: its lines, and
/// the sandbox, still serving (its step holds the temp folder its files are in).
pub async fn sandbox_printout(args: &[&str]) -> (Vec<String>, (tokio::process::Child, crate::util::Step)) {
    use tokio::io::AsyncBufReadExt;
    let step = crate::util::Step::cli(args);
    let mut child = step.command().kill_on_drop(true).spawn().expect("the sandbox starts");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let printed = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        let mut printed = Vec::new();
        let mut third = false;
        while let Ok(Some(line)) = lines.next_line().await {
            let command = third && !line.starts_with('#');
            third |= line.starts_with("# 3)");
            printed.push(line);
            if command {
                break;
            }
        }
        printed
    })
    .await
    .expect("the sandbox prints its three commands");
    // The rest of its output is drained, so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (printed, (child, step))
}

/// Pastes the commands a sandbox printed, in order, each on a terminal of its own with
/// nothing set but PATH and TERM: v2 deploys (0), v3 is put back by itself (1), and the
/// rollback puts v1 back (0), which is then what the app serves.
async fn paste_the_sandbox_commands(provider: &str) {
    let (printed, (mut sandbox, _step)) =
        sandbox_printout(&["sandbox", "--provider", provider, "--machines", "2"]).await;
    let commands: Vec<&String> =
        printed.iter().skip_while(|l| !l.starts_with("# 1)")).filter(|l| !l.starts_with('#')).collect();
    assert_eq!(commands.len(), 3, "three commands: {printed:#?}");
    let app = printed
        .iter()
        .find_map(|l| l.split_once("APP_URL=").filter(|(k, _)| !k.contains(' ')).map(|(_, v)| v.to_string()))
        .expect("the app's URL");
    let dir = tempfile::tempdir().unwrap();
    for (command, expected) in commands.iter().zip([0, 1, 0]) {
        let run = tokio::process::Command::new("script")
            .args(["--quiet", "--return", "--command", command.as_str(), "/dev/null"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("TERM", "xterm-256color")
            .env("TMPDIR", dir.path())
            .current_dir(dir.path())
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(std::time::Duration::from_secs(90), run)
            .await
            .expect("a pasted command finishes within 90 s")
            .expect("util-linux's script runs a command on a pseudo-terminal");
        let seen = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(expected), "{command}\n{seen}");
        assert!(!seen.contains("error:"), "{seen}");
    }
    let serves = sandbox::client::call("GET", &format!("{app}/version"), &[], None).await.unwrap().text();
    assert_eq!(serves, "v1", "the rollback put v1 back");
    crate::util::kill(sandbox.id().unwrap(), "INT").await;
    let stopped = tokio::time::timeout(std::time::Duration::from_secs(30), sandbox.wait()).await;
    assert_eq!(stopped.expect("Ctrl-C stops the sandbox").unwrap().code(), Some(0));
}

#[tokio::test]
async fn the_fly_sandbox_commands_work_when_pasted() {
    paste_the_sandbox_commands("fly").await;
}

#[tokio::test]
async fn the_heroku_sandbox_commands_work_when_pasted() {
    paste_the_sandbox_commands("heroku").await;
}

#[tokio::test]
async fn the_app_platform_sandbox_commands_work_when_pasted() {
    paste_the_sandbox_commands("digitalocean").await;
}

#[tokio::test]
async fn the_droplets_sandbox_commands_work_when_pasted() {
    paste_the_sandbox_commands("digitalocean-droplets").await;
}

#[tokio::test]
async fn the_ssh_sandbox_commands_work_when_pasted() {
    paste_the_sandbox_commands("ssh").await;
}

#[tokio::test]
async fn the_ecs_sandbox_commands_work_when_pasted() {
    paste_the_sandbox_commands("ecs").await;
}

/// A person who exports what the sandbox printed need not repeat it as flags: the API URL,
/// the app and the token come from FLY_API_URL, FLY_APP and FLY_API_TOKEN, and the run
/// says where the URL came from.
#[tokio::test]
async fn the_variables_a_sandbox_prints_are_read_when_their_flags_are_not_given() {
    let (printed, (mut sandbox, _step)) = sandbox_printout(&["sandbox", "--machines", "2"]).await;
    let vars: Vec<(String, String)> = printed
        .iter()
        .filter_map(|l| l.split_once('=').filter(|(k, _)| !k.contains([' ', '#'])))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let var = |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap();
    let app = var("FLY_APP_URL");
    let mut run = crate::util::Step::cli(&[
        "deploy",
        "--provider",
        "fly",
        "--image",
        "registry.fly.io/web:v2",
        "--health-url",
        &format!("{app}/health"),
        "--health-interval",
        "500ms",
    ]);
    for (k, v) in &vars {
        run = run.env(k, v);
    }
    let ran = run.run().await;
    assert_eq!(ran.code, 0, "{ran}");
    assert!(ran.stdout.contains(&format!("--api-url from FLY_API_URL: {}", var("FLY_API_URL"))), "{ran}");
    assert!(ran.stdout.contains("--app from FLY_APP: web"), "{ran}");
    assert!(ran.stdout.contains("--token from FLY_API_TOKEN\n"), "said, not shown: {ran}");
    assert!(!ran.stdout.contains(&var("FLY_API_TOKEN")), "the token is never printed: {ran}");
    let serves = sandbox::client::call("GET", &format!("{app}/version"), &[], None).await.unwrap().text();
    assert_eq!(serves, "v2");
    crate::util::kill(sandbox.id().unwrap(), "INT").await;
    let _ = sandbox.wait().await;
}

/// During a health gate the live status says which attempt it is on, what it got and how
/// many passed in a row, beside the time left.
#[tokio::test]
async fn the_live_status_of_a_health_gate_says_the_attempt_and_what_it_got() {
    let double = Double::start("web:v1").await;
    double.broken("web:v2", HealthMode::WrongBody);
    let seen = on_a_terminal("deploy", &double.inputs("web:v2"), &[]).await;

    assert!(seen.contains("body does not contain 'ok' (0 of "), "the last answer in the live status: {seen:?}");
    assert!(seen.contains(" in a row);"), "{seen:?}");
    assert!(seen.contains("attempt 2: "), "the attempt's number: {seen:?}");
    assert!(seen.contains(" left"), "the time left: {seen:?}");
}
