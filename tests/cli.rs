//! The command line as a person at a terminal meets it (issue 12): a subcommand for
//! every command of the action, boolean flags without a value, grouped and wrapped
//! help with examples, the help for a bare `safe-deploy`, "did you mean", errors that
//! name flags, one rule for durations, and each provider's usual token variable.

use std::sync::{Arc, Mutex};

use safe_deploy::inputs::{Kind, INPUTS};
use sandbox::app::HealthMode;

use crate::util::{on_a_terminal, with, Double, Ran, Step};

/// Inputs as the flags a person types.
fn flags(inputs: &[(String, String)]) -> Vec<String> {
    inputs.iter().flat_map(|(k, v)| [format!("--{k}"), v.clone()]).collect()
}

/// `safe-deploy COMMAND` with these inputs as flags and `extra` after them.
async fn cli(command: &str, inputs: &[(String, String)], extra: &[&str]) -> Ran {
    let mut args = vec![command.to_string()];
    args.extend(flags(inputs));
    args.extend(extra.iter().map(|a| a.to_string()));
    Step::cli(&args.iter().map(String::as_str).collect::<Vec<_>>()).run_in_dir().await
}

fn without(mut inputs: Vec<(String, String)>, name: &str) -> Vec<(String, String)> {
    inputs.retain(|(k, _)| k != name);
    inputs
}

#[tokio::test]
async fn a_wrong_api_port_is_said_once_with_how_long_it_is_tried_then_the_result() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let inputs: Vec<(String, String)> = [
        ("provider", "fly"),
        ("app", "web"),
        ("image", "registry.fly.io/web:v2"),
        ("token", "fm2_not-a-real-token"),
        ("api-url", &format!("http://{closed}/v1")),
        ("health-url", &format!("http://{closed}/health")),
        ("deploy-timeout", "9s"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let ran = cli("deploy", &inputs, &[]).await;
    assert_eq!(ran.code, 1, "nothing was changed: {ran}");
    let all = format!("{}\n{}", ran.stdout, ran.stderr);
    // What failed and for how long it is tried, once from the HTTP layer and once from
    // the run; then the result. Not a line per retry.
    let refused: Vec<&str> =
        all.lines().take_while(|l| !l.starts_with("failed:")).filter(|l| l.contains("connection refused")).collect();
    assert!(refused.len() <= 2, "{} lines before the result:\n{}", refused.len(), refused.join("\n"));
    assert!(refused.iter().any(|l| l.contains("trying again for up to")), "{all}");
    assert!(!all.lines().any(|l| l.starts_with("retry ")), "{all}");
    assert!(all.contains("FAILED before any change"), "{all}");
}

#[tokio::test]
async fn a_state_file_is_made_new_never_written_through_or_removed_when_it_was_there() {
    let double = Double::start("web:v1").await;
    let step = Step::cli_with("deploy", &double.inputs("web:v2"));
    // A person's file, and a link to one: neither is written to nor removed.
    let notes = step.dir.path().join("notes.txt");
    std::fs::write(&notes, "my notes\n").unwrap();
    let link = step.dir.path().join("link.state");
    std::os::unix::fs::symlink(&notes, &link).unwrap();
    for given in [&notes, &link] {
        let mut args = step.args.clone();
        args.extend(["--state-file".to_string(), given.display().to_string()]);
        let ran = Step { args, ..Step::cli_with("deploy", &double.inputs("web:v2")) }.run_in_dir().await;
        assert_eq!(ran.code, 2, "{ran}");
        assert!(
            ran.stderr.contains("is there already") && ran.stderr.contains("safe-deploy post --state-file"),
            "{ran}"
        );
        assert_eq!(std::fs::read_to_string(&notes).unwrap(), "my notes\n");
        assert!(given.exists());
    }
    assert_eq!(double.state().live(), "web:v1", "nothing was deployed");

    // `post` takes only a state file this program wrote, and leaves anything else alone.
    let post =
        Step::cli(&["post", "--provider", "memory", "--app", "web", "--state-file", &notes.display().to_string()]);
    let ran = post.run_in_dir().await;
    assert_eq!(ran.code, 2, "{ran}");
    assert!(ran.stderr.contains("is not a state file safe-deploy wrote"), "{ran}");
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "my notes\n");

    // A new path is made 0600 and removed once the run leaves nothing to resume.
    let fresh = step.dir.path().join("fresh.state");
    let mut args = step.args.clone();
    args.extend(["--state-file".to_string(), fresh.display().to_string()]);
    let ran = Step { args, ..Step::cli_with("deploy", &double.inputs("web:v2")) }.run_in_dir().await;
    assert_eq!(ran.code, 0, "{ran}");
    assert!(!fresh.exists(), "{ran}");
}

/// The files a CLI run left in its temp folder, beside the step's own.
fn leftovers(step: &Step) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(step.dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("safe-deploy"))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_finished_cli_run_leaves_no_state_or_snapshot_and_one_left_to_resume_says_where_it_is() {
    let double = Double::start("web:v1").await;
    let step = Step::cli_with("deploy", &double.inputs("web:v2"));
    let tmp = step.dir.path().display().to_string();
    let step = step.env("TMPDIR", &tmp);
    let ran = step.run_in_dir().await;
    assert_eq!(ran.code, 0, "{ran}");
    assert_eq!(leftovers(&step), Vec::<String>::new(), "nothing left to resume: nothing left behind");

    // A rollback that cannot finish leaves its state for `post`, readable by the user only.
    let double = Double::start("web:v1").await;
    double.broken("web:v2", HealthMode::Error500);
    double.change(|s| s.faults.roll_back_errors = 1_000);
    let inputs = with(double.inputs("web:v2"), "rollback-timeout", "2s");
    let step = Step::cli_with("deploy", &inputs);
    let tmp = step.dir.path().display().to_string();
    let step = step.env("TMPDIR", &tmp);
    let ran = step.run_in_dir().await;
    assert_eq!(ran.code, 3, "{ran}");
    let kept: Vec<String> = leftovers(&step).into_iter().filter(|n| n.ends_with(".state")).collect();
    assert_eq!(kept.len(), 1, "{:?}\n{ran}", leftovers(&step));
    let path = step.dir.path().join(&kept[0]);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(
        ran.stdout.contains(&format!("the run's state is kept in {}", path.display()))
            && ran.stdout.contains("safe-deploy post --state-file"),
        "{ran}"
    );

    // `post` finishes it, and then nothing is left.
    double.change(|s| s.faults.roll_back_errors = 0);
    let mut post = without(without(inputs, "image"), "rollback-timeout");
    post.push(("state-file".into(), path.display().to_string()));
    let finished = cli("post", &post, &[]).await;
    assert_eq!(finished.code, 130, "a stopped run, rolled back: {finished}");
    assert_eq!(double.state().live(), "web:v1");
    assert_eq!(leftovers(&step), Vec::<String>::new(), "{finished}");
}

#[tokio::test]
async fn the_ssh_sandbox_writes_its_private_key_for_its_user_alone_and_takes_it_away_when_stopped() {
    use tokio::io::AsyncBufReadExt;
    let step = Step::cli(&["sandbox", "--provider", "ssh", "--machines", "1"]);
    let tmp = step.dir.path().display().to_string();
    let step = step.env("TMPDIR", &tmp);
    let mut child = step.command().spawn().expect("the sandbox starts");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let key = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(path) = line.strip_prefix("SSH_KEY_FILE=") {
                return std::path::PathBuf::from(path);
            }
        }
        panic!("the sandbox printed no SSH_KEY_FILE");
    })
    .await
    .expect("the sandbox says where its key is");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600, "{}", key.display());
    crate::util::kill(child.id().unwrap(), "INT").await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait()).await;
    assert!(!key.exists(), "the key went with the sandbox");
}

#[tokio::test]
async fn every_command_of_the_action_is_a_subcommand() {
    for command in ["deploy", "rollback", "redeploy", "plan", "post", "demo", "sandbox"] {
        let ran = Step::cli(&[command, "--help"]).run_in_dir().await;
        assert_eq!(ran.code, 0, "{command}: {ran}");
        assert!(ran.stdout.contains(&format!("Usage: safe-deploy {command}")), "{command}: {ran}");
    }
}

#[tokio::test]
async fn redeploy_deploys_the_release_to_names_again() {
    let double = Double::with_history(&["web:v1", "web:v2"]).await;
    let inputs = without(double.inputs("web:v1"), "image");
    let ran = cli("redeploy", &inputs, &["--to", "web:v1"]).await;
    assert_eq!(ran.code, 0, "{ran}");
    assert_eq!(double.state().live(), "web:v1", "{ran}");
    assert!(ran.stdout.contains("redeploy web:v1 on web"), "{ran}");
}

#[tokio::test]
async fn redeploy_without_to_names_the_flag_and_sends_nothing() {
    let double = Double::start("web:v1").await;
    let ran = cli("redeploy", &without(double.inputs("web:v2"), "image"), &[]).await;
    assert_eq!(ran.code, 2, "{ran}");
    assert!(ran.stderr.contains("error: --to: is required by safe-deploy redeploy."), "{ran}");
    assert!(double.state().calls.is_empty(), "no request: {:?}", double.state().calls);
}

#[tokio::test]
async fn dry_run_alone_means_true_and_changes_nothing() {
    let double = Double::start("web:v1").await;
    // The flag takes no value, so the flag after it stays a flag.
    let mut args = vec!["deploy".to_string(), "--dry-run".to_string()];
    args.extend(flags(&double.inputs("web:v2")));
    let ran = Step::cli(&args.iter().map(String::as_str).collect::<Vec<_>>()).run_in_dir().await;
    assert_eq!(ran.code, 0, "{ran}");
    assert_eq!(double.state().live(), "web:v1", "a dry run changes nothing: {ran}");
    assert_eq!(double.state().changes, 0);

    let ran = cli("deploy", &double.inputs("web:v2"), &["--dry-run=false"]).await;
    assert_eq!(ran.code, 0, "{ran}");
    assert_eq!(double.state().live(), "web:v2", "--dry-run=false deploys: {ran}");
}

#[tokio::test]
async fn rollback_false_leaves_a_failed_release_live_and_summary_false_writes_none() {
    let double = Double::start("web:v1").await;
    double.broken("web:v2", HealthMode::Error500);
    let dir = tempfile::tempdir().unwrap();
    let summary = dir.path().join("summary.md");
    let summary_flag = summary.display().to_string();
    let ran = cli(
        "deploy",
        &double.inputs("web:v2"),
        &["--rollback=false", "--summary=false", "--summary-file", &summary_flag],
    )
    .await;
    assert_eq!(ran.code, 3, "a failed release left live: {ran}");
    assert_eq!(double.state().live(), "web:v2", "{ran}");
    assert!(!summary.exists(), "--summary=false writes no summary");

    let healthy = Double::start("web:v1").await;
    let ran = cli("deploy", &healthy.inputs("web:v2"), &["--summary", "--summary-file", &summary_flag]).await;
    assert_eq!(ran.code, 0, "{ran}");
    assert!(std::fs::read_to_string(&summary).unwrap().contains("web:v2"), "--summary alone writes it");
}

#[tokio::test]
async fn every_boolean_input_is_a_flag_with_an_optional_value_after_an_equals_sign() {
    let double = Double::start("web:v1").await;
    let bools: Vec<_> = INPUTS.iter().filter(|i| i.kind == Kind::Bool).collect();
    assert!(bools.len() >= 8, "{bools:?}");
    for spec in bools {
        let flag = format!("--{}", spec.name);
        let ran = cli("plan", &double.inputs("web:v2"), &[&format!("{flag}=maybe")]).await;
        assert_eq!(ran.code, 2, "{flag}=maybe: {ran}");
        assert!(ran.stderr.contains(&format!("'maybe' for '{flag}[=<BOOL>]'")), "{flag}=maybe: {ran}");

        let ran = cli("plan", &double.inputs("web:v2"), &[&flag, "false"]).await;
        assert_eq!(ran.code, 2, "{flag} false: the word after a space is not the flag's: {ran}");
        // ... and the error says how to write it, not clap's "unexpected argument".
        let fix =
            format!("error: {flag} takes its value after an equals sign: write {flag}=false (or --no-{})", spec.name);
        assert!(ran.stderr.contains(&fix), "{flag} false: {ran}");

        for value in ["", "=true", "=false"] {
            let ran = cli("plan", &double.inputs("web:v2"), &[&format!("{flag}{value}")]).await;
            let shared = spec.providers.is_empty();
            // A provider's own bool, set to what is not its default, is refused for the
            // memory provider by name: proof the flag alone reads as true.
            let refused = !shared && matches!(value, "" | "=true") && spec.default != "true";
            if refused {
                assert_eq!(ran.code, 2, "{flag}{value}: {ran}");
                assert!(ran.stderr.contains(&format!("error: {flag}: applies to provider")), "{flag}{value}: {ran}");
            } else {
                assert_eq!(ran.code, 0, "{flag}{value}: {ran}");
            }
        }
    }
    assert_eq!(double.state().changes, 0, "plans change nothing");
}

/// `--no-rollback` is `--rollback=false`: a broken release is left live, as asked, and
/// of the two forms the last one given wins.
#[tokio::test]
async fn a_boolean_is_turned_off_by_its_no_form_too() {
    let double = Double::start("web:v1").await;
    double.broken("web:v2", HealthMode::WrongBody);
    let ran = cli("deploy", &double.inputs("web:v2"), &["--no-rollback"]).await;
    assert_eq!(ran.code, 3, "a failed release left live, as --no-rollback asked: {ran}");
    assert_eq!(double.state().live(), "web:v2");
    assert!(ran.summary.contains("rollback is off (--rollback=false)"), "said in the flags' own words: {ran}");

    let double = Double::start("web:v1").await;
    double.broken("web:v2", HealthMode::WrongBody);
    let ran = cli("deploy", &double.inputs("web:v2"), &["--no-rollback", "--rollback"]).await;
    assert_eq!(ran.code, 1, "the last form wins: rolled back: {ran}");
    assert_eq!(double.state().live(), "web:v1");
}

/// The flags under each heading of a help text, in order.
fn sections(help: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for line in help.lines() {
        if !line.starts_with(' ') && line.ends_with(':') {
            out.push((line.trim_end_matches(':').to_string(), Vec::new()));
        } else if let (Some(section), Some(flag)) = (out.last_mut(), line.trim_start().strip_prefix("--")) {
            if line.starts_with("      --") {
                section.1.push(flag.split(['[', ' ', '=']).next().unwrap().to_string());
            }
        }
    }
    out
}

#[tokio::test]
async fn help_is_wrapped_to_the_terminal_and_its_flags_are_grouped_under_headings() {
    let ran = Step::cli(&["deploy", "--help"]).env("COLUMNS", "60").run_in_dir().await;
    assert_eq!(ran.code, 0, "{ran}");
    for line in ran.stdout.lines() {
        assert!(line.chars().count() <= 60, "wider than the terminal's 60 columns: {line:?}");
    }
    let sections = sections(&ran.stdout);
    let headings: Vec<&str> = sections.iter().map(|(h, _)| h.as_str()).collect();
    for heading in [
        "What to deploy",
        "Health checks",
        "Fly.io",
        "Heroku",
        "DigitalOcean App Platform",
        "DigitalOcean Droplets",
        "Hosts over SSH",
        "AWS ECS",
        "GitHub",
        "Output files",
    ] {
        assert!(headings.contains(&heading), "no heading {heading}: {headings:?}");
    }
    // The providers' headings come in the registry's order, between the shared ones.
    let at = |h: &str| headings.iter().position(|x| *x == h).unwrap();
    assert!(at("Roll-out and rollback") < at("Fly.io") && at("Fly.io") < at("Heroku") && at("Heroku") < at("AWS ECS"));
    assert!(at("AWS ECS") < at("GitHub"), "{headings:?}");
    for spec in INPUTS.iter().filter(|i| i.name != "command") {
        let under: Vec<&str> = sections
            .iter()
            .filter(|(_, flags)| flags.iter().any(|f| f == spec.name))
            .map(|(h, _)| h.as_str())
            .collect();
        assert_eq!(under, [spec.group.heading()], "--{} is shown once, under its group", spec.name);
    }

    let wide = Step::cli(&["deploy", "--help"]).env("COLUMNS", "300").run_in_dir().await;
    let widest = wide.stdout.lines().map(|l| l.chars().count()).max().unwrap();
    assert!((61..=100).contains(&widest), "a wide terminal gets lines of at most 100 columns, not {widest}");
}

#[tokio::test]
async fn help_ends_with_examples_at_the_top_and_for_deploy() {
    for args in [&["--help"][..], &["deploy", "--help"], &["help", "deploy"]] {
        let ran = Step::cli(args).run_in_dir().await;
        assert_eq!(ran.code, 0, "{args:?}: {ran}");
        let examples = ran.stdout.split("\nExamples:\n").nth(1).unwrap_or_else(|| panic!("{args:?}: {ran}"));
        for example in [
            "safe-deploy deploy --provider fly",
            "safe-deploy plan --provider fly",
            "safe-deploy rollback --provider fly",
            "safe-deploy demo",
        ] {
            assert!(examples.contains(example), "{args:?} lacks {example}: {ran}");
        }
    }
    let plan = Step::cli(&["plan", "--help"]).run_in_dir().await;
    assert!(plan.stdout.contains("a bare number of seconds (30)"), "durations are explained: {plan}");
}

#[tokio::test]
async fn no_arguments_on_a_terminal_print_the_help_and_exit_2() {
    let (code, shown) = on_a_terminal(&[], &[]).await;
    assert_eq!(code, 2, "{shown}");
    assert!(shown.contains("Usage: safe-deploy [COMMAND]"), "{shown}");
    assert!(shown.contains("Examples:"), "{shown}");
    assert!(!shown.contains("input provider"), "no input errors: {shown}");
}

#[tokio::test]
async fn no_arguments_on_a_runner_or_with_inputs_set_run_the_action() {
    let (code, shown) = on_a_terminal(&[], &[("GITHUB_ACTIONS", "true")]).await;
    assert_eq!(code, 2, "{shown}");
    assert!(shown.contains("::error title=input provider::is required"), "the action's main step: {shown}");
    assert!(!shown.contains("Usage:"), "{shown}");

    let (code, shown) = on_a_terminal(&[], &[("INPUT_PROVIDER", "memory")]).await;
    assert_eq!(code, 2, "{shown}");
    assert!(shown.contains("error: input app: is required"), "INPUT_* set: the action's main step: {shown}");
    assert!(!shown.contains("Usage:"), "{shown}");

    // Not a terminal (a container without GITHUB_ACTIONS): the main step, as before.
    let ran = Step::cli(&[]).run_in_dir().await;
    assert_eq!(ran.code, 2, "{ran}");
    assert!(ran.stderr.contains("error: input provider: is required"), "{ran}");
}

#[tokio::test]
async fn a_mistyped_subcommand_or_flag_gets_did_you_mean() {
    let ran = Step::cli(&["deplyo"]).run_in_dir().await;
    assert_eq!(ran.code, 2, "{ran}");
    assert!(ran.stderr.contains("unrecognized subcommand 'deplyo'"), "{ran}");
    assert!(ran.stderr.contains("did you mean 'deploy'?"), "{ran}");

    let ran = Step::cli(&["deploy", "--helth-url", "https://app.example.com/health"]).run_in_dir().await;
    assert_eq!(ran.code, 2, "{ran}");
    assert!(ran.stderr.contains("did you mean '--health-url'?"), "{ran}");
    assert!(!ran.stdout.contains("safe-deploy 0"), "nothing ran: {ran}");
}

#[tokio::test]
async fn on_the_command_line_errors_name_the_flag_and_nothing_is_sent() {
    let double = Double::start("web:v1").await;
    let hits = Arc::new(Mutex::new(0));
    let counter = hits.clone();
    let probe = sandbox::server::serve("127.0.0.1:0".parse().unwrap(), move |_| {
        *counter.lock().unwrap() += 1;
        async { sandbox::server::text(200, "ok") }
    })
    .await
    .unwrap();
    let inputs = with(
        with(double.inputs("web:v2"), "health-url", "app.example.com/health"),
        "version-url",
        &format!("{}/version", probe.url()),
    );
    let ran = cli("deploy", &inputs, &["--insecure-ignore-host-key"]).await;
    assert_eq!(ran.code, 2, "{ran}");
    for line in [
        "error: --health-url: 'app.example.com/health' is not a URL",
        "error: --expect-version: is required when --version-url is set.",
        "error: --insecure-ignore-host-key: applies to provider ssh or digitalocean-droplets only, and --provider is memory. Remove it, or set --provider ssh or --provider digitalocean-droplets.",
    ] {
        assert!(ran.stderr.contains(line), "no {line:?}: {ran}");
    }
    assert!(!ran.stderr.contains("input health-url") && !ran.stderr.contains("input 'health-url'"), "{ran}");
    assert_eq!(*hits.lock().unwrap(), 0, "no request reaches any server");
    assert!(double.state().calls.is_empty(), "the provider was not called");

    // The same inputs in a workflow name the action's inputs.
    let mut action = inputs.clone();
    action.push(("insecure-ignore-host-key".into(), "true".into()));
    let ran = crate::util::run_main(&action).await;
    assert_eq!(ran.code, 2, "{ran}");
    assert!(ran.stdout.contains("::error title=input expect-version::is required when version-url is set."), "{ran}");
    assert!(ran.stdout.contains("or set provider: ssh or provider: digitalocean-droplets."), "{ran}");
    assert!(!ran.stdout.contains("--health-url"), "{ran}");
}

#[tokio::test]
async fn every_duration_input_takes_a_bare_number_as_seconds_and_says_so_when_it_is_wrong() {
    let durations: Vec<_> = INPUTS.iter().filter(|i| i.kind == Kind::Duration).collect();
    assert!(durations.len() >= 13, "{durations:?}");
    for spec in durations {
        let flag = format!("--{}", spec.name);
        let provider = spec.providers.first().copied().unwrap_or("memory");
        // No image: every run stops at validation, whatever else its provider needs.
        let base = ["plan", "--provider", provider, "--app", "web", "--health-url", "http://127.0.0.1:9/health"];
        let run = |value: &'static str| {
            let mut args = base.to_vec();
            // The analysis's settings mean nothing without it (and say so).
            if spec.name.starts_with("analysis-") {
                args.push("--analysis");
            }
            args.extend([flag.as_str(), value]);
            let step = Step::cli(&args);
            async move { step.run_in_dir().await }
        };
        let ran = run("17").await;
        assert_eq!(ran.code, 2, "{flag} 17: {ran}");
        assert!(!ran.stderr.contains(&format!("error: {flag}:")), "{flag} 17 is 17 seconds: {ran}");

        let ran = run("7 minutes").await;
        assert_eq!(ran.code, 2, "{ran}");
        let said = format!(
            "error: {flag}: '7 minutes' is not a duration. Use a number with a unit (ms, s, m, h), e.g. 500ms, 10s, 5m or 1h30m, or a bare number of seconds such as 30; at most 24h."
        );
        assert!(ran.stderr.contains(&said), "{flag}: {ran}");
    }

    // And a whole run with one: --health-deadline 5 is five seconds.
    let double = Double::start("web:v1").await;
    let ran = cli("deploy", &with(double.inputs("web:v2"), "health-deadline", "5"), &[]).await;
    assert_eq!(ran.code, 0, "{ran}");
    assert_eq!(double.state().live(), "web:v2");
}

/// A provider API that answers 401 to everything and keeps each Authorization header.
async fn refusing_api() -> (sandbox::server::Server, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let keep = seen.clone();
    let server = sandbox::server::serve("127.0.0.1:0".parse().unwrap(), move |req| {
        let auth = req.header("authorization").unwrap_or_default().to_string();
        keep.lock().unwrap().push(auth);
        async { sandbox::server::json(401, &serde_json::json!({ "id": "unauthorized", "message": "Unauthorized" })) }
    })
    .await
    .unwrap();
    (server, seen)
}

/// `plan` for each provider with its usual token variable, and its own required flags.
fn token_cases() -> Vec<(&'static str, &'static str, Vec<String>)> {
    let key = sandbox::hosts::ssh::new_ed25519_key().unwrap();
    let key = key.to_openssh(russh::keys::ssh_key::LineEnding::LF).unwrap().to_string();
    let droplets = vec![
        "--load-balancer".into(),
        "4de7ac8b-495b-4884-9a69-1050c6793cd6".into(),
        "--ssh-key".into(),
        key,
        "--insecure-ignore-host-key".into(),
        "--image".into(),
        "ghcr.io/acme/web:v2".into(),
    ];
    vec![
        ("fly", "FLY_API_TOKEN", vec!["--image".into(), "registry.fly.io/web:v2".into()]),
        ("heroku", "HEROKU_API_KEY", vec!["--image".into(), format!("sha256:{}", "a".repeat(64))]),
        (
            "digitalocean",
            "DIGITALOCEAN_ACCESS_TOKEN",
            vec!["--image".into(), "registry.digitalocean.com/acme/web:v2".into()],
        ),
        ("digitalocean-droplets", "DIGITALOCEAN_ACCESS_TOKEN", droplets),
    ]
}

async fn plan_with_token(
    provider: &str,
    api: &str,
    own: &[String],
    token_flag: Option<&str>,
    var: (&str, &str),
) -> Ran {
    let mut args: Vec<String> =
        ["plan", "--provider", provider, "--app", "web", "--health-url", "http://127.0.0.1:9/health", "--api-url", api]
            .map(String::from)
            .to_vec();
    args.extend(own.iter().cloned());
    if let Some(t) = token_flag {
        args.extend(["--token".to_string(), t.to_string()]);
    }
    Step::cli(&args.iter().map(String::as_str).collect::<Vec<_>>()).env(var.0, var.1).run_in_dir().await
}

#[tokio::test]
async fn the_providers_usual_token_variable_is_read_when_token_is_empty() {
    for (provider, var, own) in token_cases() {
        let secret = format!("{provider}-from-the-environment-0123456789");
        let (api, seen) = refusing_api().await;
        let ran = plan_with_token(provider, &api.url(), &own, None, (var, &secret)).await;
        assert!(!ran.stderr.contains("--token: is required"), "{provider}: {var} is read: {ran}");
        let seen = seen.lock().unwrap().clone();
        assert!(!seen.is_empty(), "{provider}: a request was sent: {ran}");
        assert!(seen.iter().all(|a| a.contains(&secret)), "{provider}: every request carries {var}: {seen:?}");
        // The run's own scan checked every output for the secret; say it here too.
        assert!(!ran.everything().contains(&secret), "{provider}: the token is never printed: {ran}");
    }
}

#[tokio::test]
async fn the_token_variable_is_not_read_when_token_is_given() {
    for (provider, var, own) in token_cases() {
        let (api, seen) = refusing_api().await;
        let given = format!("{provider}-given-as-a-flag-9876543210");
        let ran = plan_with_token(provider, &api.url(), &own, Some(&given), (var, "never-this-one-0123456789")).await;
        let seen = seen.lock().unwrap().clone();
        assert!(!seen.is_empty(), "{provider}: a request was sent: {ran}");
        assert!(seen.iter().all(|a| a.contains(&given) && !a.contains("never-this-one")), "{provider}: {seen:?}");
    }
    // And without either, the error says where a token comes from.
    let ran = Step::cli(&["plan", "--provider", "heroku", "--app", "web", "--health-url", "http://127.0.0.1:9/health"])
        .run_in_dir()
        .await;
    assert_eq!(ran.code, 2, "{ran}");
    assert!(
        ran.stderr.contains(
            "error: --token: is required with provider heroku. Set HEROKU_API_KEY in the environment, or pass --token."
        ),
        "{ran}"
    );
}

/// Off a runner the summary still goes somewhere: a new file of the run's own (readable by
/// the user only) whose path is the run's last line. `--summary=false` writes none.
#[tokio::test]
async fn off_a_runner_the_summary_goes_to_a_file_whose_path_is_the_last_line() {
    use std::os::unix::fs::PermissionsExt;
    let double = Double::start("web:v1").await;
    let step = Step::cli(
        &crate::util::flags("deploy", &double.inputs("web:v2")).iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let ran = step.run_in_dir().await;
    assert_eq!(ran.code, 0, "{ran}");
    let path = ran.stdout.lines().last().and_then(|l| l.strip_prefix("summary: ")).expect("the summary's path, last");
    let path = std::path::Path::new(path);
    assert!(path.starts_with(step.dir.path()), "in the temp folder: {}", path.display());
    assert_eq!(std::fs::metadata(path).unwrap().permissions().mode() & 0o777, 0o600);
    let summary = std::fs::read_to_string(path).unwrap();
    assert!(summary.starts_with("## ✅ Deployed `web:v2` to web"), "{summary}");
    assert!(summary.contains("| Changed anything | yes: <code>web:v2</code> went out and is live |"), "{summary}");

    let quiet = cli("deploy", &double.inputs("web:v3"), &["--summary=false"]).await;
    assert_eq!(quiet.code, 0, "{quiet}");
    assert!(!quiet.stdout.contains("summary: "), "{quiet}");

    // Bad input is said on the terminal, with its fix; no file is left to repeat it.
    let bad = Step::cli(&["deploy", "--provider", "memory", "--app", "web"]);
    let ran = bad.run_in_dir().await;
    assert_eq!(ran.code, 2, "{ran}");
    assert!(!ran.stdout.contains("summary: "), "{ran}");
    let left = std::fs::read_dir(bad.dir.path()).unwrap().flatten();
    assert_eq!(left.filter(|e| e.file_name().to_string_lossy().starts_with("safe-deploy-summary")).count(), 0);
}
