//! The README's first screen, run as a new user would: its two commands, and the sandbox
//! session it shows, line by line against what the sandbox prints. (The pasted commands
//! themselves run in `terminal`, one test per provider.)

const README: &str = include_str!("../README.md");

/// The README's fenced blocks, in order: the language after the fence, and the lines.
fn blocks() -> Vec<(String, Vec<String>)> {
    let mut blocks = Vec::new();
    let mut open: Option<(String, Vec<String>)> = None;
    for line in README.lines() {
        match (line.strip_prefix("```"), open.take()) {
            (Some(lang), None) => open = Some((lang.trim().to_string(), Vec::new())),
            (Some(_), Some(block)) => blocks.push(block),
            (None, Some((lang, mut lines))) => {
                lines.push(line.to_string());
                open = Some((lang, lines));
            }
            (None, None) => {}
        }
    }
    blocks
}

/// Whether `line` reads as `shown`, where each `…` in `shown` stands for any text.
fn reads_as(line: &str, shown: &str) -> bool {
    let parts: Vec<&str> = shown.split('…').collect();
    let mut rest = line;
    for (i, part) in parts.iter().enumerate() {
        let found = match i {
            0 => rest.strip_prefix(part).map(|r| (0, r)),
            _ if i == parts.len() - 1 => rest.ends_with(part).then_some((0, "")),
            _ => rest.find(part).map(|at| (at, &rest[at + part.len()..])),
        };
        match found {
            Some((_, r)) => rest = r,
            None => return false,
        }
    }
    parts.len() > 1 || rest.is_empty()
}

#[test]
fn the_readme_opens_with_the_demo_and_the_test_command() {
    let (lang, first) = blocks().into_iter().next().expect("a first code block");
    assert_eq!(lang, "sh");
    let commands: Vec<&str> = first.iter().map(|l| l.trim()).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    assert_eq!(commands, ["cargo run -- demo", "cargo nextest run --workspace"]);
    // .ci/run runs the tests with the README's command, so the two cannot drift apart.
    let ci = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/run")).unwrap();
    assert!(ci.contains("cargo nextest run --workspace"), ".ci/run calls the README's test command");
}

/// `cargo run -- demo`, as the first screen tells a new user to run it (the binary that
/// cargo would build and run): it ends 0 and says where its summary is.
#[tokio::test]
async fn the_readmes_demo_command_runs_and_says_where_the_summary_is() {
    let step = crate::util::Step::cli(&["demo"]);
    let ran = step.run().await;
    assert_eq!(ran.code, 0, "{ran}");
    // One summary per run, each opening with its own outcome.
    let paths: Vec<&str> = ran.stdout.lines().filter_map(|l| l.strip_prefix("demo: job summary written to ")).collect();
    assert_eq!(paths.len(), 3, "{ran}");
    let first = std::fs::read_to_string(paths[0]).unwrap();
    assert!(first.starts_with("## ✅ Deployed `registry.fly.io/demo:v2` to demo"), "{first}");
    let second = std::fs::read_to_string(paths[1]).unwrap();
    assert!(
        second.starts_with("## ❌ Deploy of `registry.fly.io/demo:v3` to demo FAILED and was rolled back"),
        "{second}"
    );
    assert!(!second.contains("Deployed `registry.fly.io/demo:v2`"), "the v2 run is in its own: {second}");
    // v4 passes its health gate and is rolled back for its latency.
    let third = std::fs::read_to_string(paths[2]).unwrap();
    assert!(
        third.starts_with("## ❌ Deploy of `registry.fly.io/demo:v4` to demo FAILED and was rolled back"),
        "{third}"
    );
    assert!(third.contains("p95 latency is "), "{third}");
    assert!(third.contains("### Analysis: batch 1"), "the canary was analysed alone: {third}");
}

/// The sandbox session the README shows is what the sandbox prints: every line, in order,
/// with `…` for ports and paths.
#[tokio::test]
async fn the_readmes_sandbox_session_is_what_the_sandbox_prints() {
    let shown: Vec<String> = blocks()
        .into_iter()
        .map(|(_, lines)| lines)
        .find(|lines| lines.first().is_some_and(|l| l == "$ cargo run -- sandbox"))
        .expect("the README shows a sandbox session");
    let (printed, (mut sandbox, _step)) = crate::terminal::sandbox_printout(&["sandbox"]).await;
    let shown = &shown[1..];
    assert_eq!(shown.len(), printed.len(), "the README shows every line:\n{shown:#?}\n{printed:#?}");
    // The binary is wherever this build put it; the README shows cargo's usual place.
    let usual = "/cargo/target/debug/safe-deploy";
    for (line, shown) in printed.iter().zip(shown) {
        let line = line.replace(crate::util::BIN, usual);
        assert!(reads_as(&line, shown), "the README shows\n  {shown}\nbut the sandbox printed\n  {line}");
    }
    crate::util::kill(sandbox.id().unwrap(), "INT").await;
    let _ = sandbox.wait().await;
}

/// The commands the first screen gives that no test here can run (they need a Docker
/// engine or the network), named so that a new one is not missed.
#[test]
fn every_command_on_the_first_screen_is_run_by_a_test_or_named_here() {
    let first_screen =
        &README[..README.find("\n## Use it in a workflow").expect("the workflows follow the first screen")];
    let not_run_here =
        ["docker run --rm -e FLY_API_TOKEN", "cargo install --locked --git", "cargo install --locked cargo-nextest"];
    let run_here = ["cargo run -- demo", "cargo nextest run --workspace", "$ cargo run -- sandbox"];
    let mut lang = None;
    for line in first_screen.lines() {
        if let Some(l) = line.strip_prefix("```") {
            lang = if lang.is_some() { None } else { Some(l.to_string()) };
            continue;
        }
        let is_command = matches!(lang.as_deref(), Some("sh")) && !line.trim().is_empty() && !line.starts_with('#');
        if is_command || line.starts_with("$ ") {
            assert!(
                not_run_here.iter().chain(&run_here).any(|c| line.trim().starts_with(c)),
                "a command on the first screen no test runs: {line}"
            );
        }
    }
}

#[test]
fn an_ellipsis_stands_for_any_text() {
    assert!(reads_as("FLY_API_URL=http://127.0.0.1:4000/v1", "FLY_API_URL=http://127.0.0.1:…/v1"));
    assert!(!reads_as("FLY_API_URL=http://127.0.0.1:4000/v2", "FLY_API_URL=http://127.0.0.1:…/v1"));
    assert!(reads_as("/a/b/safe-deploy deploy --x 1 --image w:v2 --y", "/…/safe-deploy deploy … --image w:v2 …"));
    assert!(!reads_as("FLY_APP=web2", "FLY_APP=web"));
}
