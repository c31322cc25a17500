//! Bad input: every problem at once, each naming its input; exit 2; no request sent.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::util::{run_main, Double};

#[tokio::test]
async fn bad_input_exits_2_listing_every_problem_and_sends_nothing() {
    let double = Double::start("web:v1").await;
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let probe = sandbox::server::serve("127.0.0.1:0".parse().unwrap(), move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { sandbox::server::text(200, "ok") }
    })
    .await
    .unwrap();

    let inputs: Vec<(String, String)> = [
        ("provider", "memory"),
        ("image", "web:v2"),
        ("health-url", "app.example.com/health"),
        ("version-url", &format!("{}/version", probe.url())),
        ("health-interval", "-5s"),
        ("health-timeout", "1e99"),
        ("expect-status", "2oo"),
        ("rollback", "yes"),
        ("api-url", &double.api_url()),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let ran = run_main(&inputs).await;

    assert_eq!(ran.code, 2, "{ran}");
    for input in
        ["app", "health-url", "expect-version", "health-interval", "health-timeout", "expect-status", "rollback"]
    {
        assert!(ran.stdout.contains(&format!("::error title=input {input}::")), "no error for {input}: {ran}");
        assert!(ran.summary.contains(&format!("input '{input}'")), "summary misses {input}");
    }
    assert_eq!(ran.output("status"), "failed");
    assert_eq!(hits.load(Ordering::SeqCst), 0, "no request reaches any server");
    assert!(double.state().calls.is_empty(), "the provider was not called");
    assert!(!ran.stdout.contains("panicked") && !ran.stderr.contains("panicked"));
}

#[tokio::test]
async fn no_inputs_at_all_name_the_required_ones() {
    let ran = run_main(&[]).await;
    assert_eq!(ran.code, 2, "{ran}");
    for input in ["provider", "app", "image", "health-url"] {
        assert!(ran.stdout.contains(&format!("::error title=input {input}::")), "{ran}");
    }
}

#[tokio::test]
async fn on_a_terminal_errors_are_plain_text() {
    let out = tokio::process::Command::new(crate::util::BIN)
        .args(["deploy", "--provider", "nope", "--app", "web"])
        .env_clear()
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("error: --provider: 'nope' is not a provider"),
        "a subcommand's errors name its flags: {stderr}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("::error"));
}

#[tokio::test]
async fn any_bytes_in_any_input_never_panic() {
    let double = Double::start("web:v1").await;
    for value in ["\u{1F680}", "\u{202e}x", "%0A::error::x", "a\u{7f}b", "99999999999999999999s", "-1"] {
        for spec in safe_deploy::inputs::INPUTS.iter() {
            let mut inputs = double.inputs("web:v2");
            inputs.retain(|(k, _)| k != spec.name);
            inputs.push((spec.name.to_string(), value.to_string()));
            inputs.push(("command".into(), "plan".into()));
            let ran = run_main(&inputs).await;
            assert!((0..=2).contains(&ran.code), "{} = {value:?}: {ran}", spec.name);
            assert!(!ran.stderr.contains("panicked"), "{} = {value:?}: {ran}", spec.name);
        }
    }
}

#[tokio::test]
async fn a_control_character_in_an_input_is_shown_in_the_log_not_obeyed() {
    let double = crate::util::Double::start("web:v1").await;
    let ran = crate::util::run_main(&crate::util::with(double.inputs("web:v2"), "app", "we\u{1b}[31mb")).await;
    assert_eq!(ran.code, 2, "{ran}");
    assert!(!ran.stdout.contains('\u{1b}'), "no raw ESC reaches the log: {ran}");
    assert!(ran.stdout.contains("::error title=input app::'we\\u{1b}[31mb'"), "shown as an escape: {ran}");
}

#[tokio::test]
async fn a_github_token_with_a_control_character_is_bad_input_not_a_panic() {
    let double = crate::util::Double::start("web:v1").await;
    let ran =
        crate::util::run_main(&crate::util::with(double.inputs("web:v2"), "github-token", "ghs_abc\u{7}def")).await;
    assert_eq!(ran.code, 2, "{ran}");
    assert!(ran.stdout.contains("::error title=input github-token::"), "{ran}");
    assert!(!ran.summary.is_empty(), "a summary, even for bad input");
    assert!(double.state().calls.is_empty(), "no request was sent");
}

#[tokio::test]
async fn a_fly_config_that_is_a_device_or_a_fifo_is_refused_at_once() {
    for path in ["/dev/zero", "/dev/stdin"] {
        let started = std::time::Instant::now();
        let inputs: Vec<(String, String)> = [
            ("provider", "fly"),
            ("app", "web"),
            ("token", "fm2_token-for-the-test"),
            ("image", "registry.fly.io/web:v2"),
            ("health-url", "http://127.0.0.1:9/health"),
            ("fly-config", path),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let ran = crate::util::run_main(&inputs).await;
        assert_eq!(ran.code, 2, "{path}: {ran}");
        assert!(ran.stdout.contains("not a regular file"), "{path}: {ran}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "{path}: no read without limit");
    }
}
