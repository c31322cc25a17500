//! The analysis, through the binary as the runner runs it: a release that passes every
//! health check but serves worse is rolled back and the summary shows why; settings
//! that cannot work are refused before any request; a real Prometheus, scraping the
//! test app, gates a deploy; a web check reads a JSON answer.

use std::time::Duration;

use sandbox::app::{analysis_releases, ReleaseSpec};
use sandbox::kit::prometheus::{prometheus_path, Prometheus};
use sandbox::server::{json, serve};

use crate::util::{run_main, with, Double, Ran};

/// The percentage a cell starts with: "5.0 % (15 of 300)" is 5.0.
fn percent(cell: &str) -> f64 {
    cell.split(' ').next().and_then(|n| n.parse().ok()).unwrap_or(f64::NAN)
}

/// Keeps the summary for the browser check, when asked to.
fn sample(kind: &str, ran: &Ran) {
    if let Some(dir) = std::env::var_os("SAFE_DEPLOY_SUMMARY_SAMPLES") {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(std::path::Path::new(&dir).join(format!("{kind}.md")), &ran.summary).unwrap();
    }
}

/// A double on `calm` (20 ms) that knows every analysis release.
async fn calm_double() -> Double {
    let double = Double::start("web:calm").await;
    for (name, spec) in analysis_releases() {
        double.release(&format!("web:{name}"), spec);
    }
    double
}

/// A deploy of `image` with the built-in analysis on: 5 s a side at 100 a second, the
/// health check and the home page in turn.
fn analysed(double: &Double, image: &str) -> Vec<(String, String)> {
    let mut inputs = double.inputs(image);
    for (k, v) in [
        ("analysis", "true"),
        ("analysis-window", "5s"),
        ("analysis-rate", "100"),
        ("analysis-min-samples", "300"),
        ("analysis-urls", &format!("{}/", double.app.url())),
    ] {
        inputs = with(inputs, k, v);
    }
    inputs
}

#[tokio::test]
async fn a_release_that_fails_one_request_in_twenty_is_rolled_back_and_the_summary_shows_why() {
    let double = calm_double().await;
    let ran = run_main(&analysed(&double, "web:erring")).await;
    assert_eq!(ran.code, 1, "{ran}");
    assert_eq!(ran.output("status"), "rolled-back", "{ran}");
    assert_eq!(double.state().live(), "web:calm");
    // Why, in the numbers that decided.
    let why = ran.summary.lines().find(|l| l.starts_with("**Why:**")).expect("a Why line");
    assert!(why.contains("analysis: new release against the baseline: the error rate is "), "{why}");
    assert!(
        why.contains("against the live release's 0.0 % (at most 1.0 % allowed by analysis-max-error-increase"),
        "{why}"
    );
    assert!(why.contains("Fisher's exact test p "), "{why}");
    // Both series side by side, and the chart.
    assert!(ran.summary.contains("### Analysis: new release — FAILED"), "{ran}");
    assert!(
        ran.summary.contains("| Measure | Live release (baseline) | New release | Allowed | p | Verdict |"),
        "{ran}"
    );
    let row = ran.summary.lines().find(|l| l.starts_with("| error rate |")).expect("an error rate row");
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    assert!(cells[2].starts_with("0.0 % (0 of "), "{row}");
    assert!(percent(cells[3]) > 1.5 && cells[6] == "**worse**", "{row}");
    assert!(ran.summary.contains("xychart-beta"), "{ran}");
    // The health gate passed: the analysis alone saw it.
    assert!(ran.summary.contains("### Health checks: new release — passed"), "{ran}");
    // Sampled at the rate asked, the health URL and the home page in turn.
    assert!(ran.stdout.contains("analysis: baseline ") && ran.stdout.contains(" answers, 0 errors (0.0 %)"), "{ran}");
    sample("analysis-rolled-back", &ran);
}

#[tokio::test]
async fn a_release_three_times_as_slow_is_rolled_back_for_its_latency() {
    let double = calm_double().await;
    let ran = run_main(&analysed(&double, "web:slow")).await;
    assert_eq!(ran.output("status"), "rolled-back", "{ran}");
    let why = ran.summary.lines().find(|l| l.starts_with("**Why:**")).expect("a Why line");
    assert!(why.contains("p95 latency is "), "{why}");
    assert!(why.contains("against the live release's 2"), "the calm release answers in 20-odd ms: {why}");
    assert!(why.contains("Mann-Whitney U test"), "{why}");
    assert_eq!(double.state().live(), "web:calm");
}

#[tokio::test]
async fn a_release_as_good_as_the_live_one_passes_and_its_numbers_are_shown() {
    let double = calm_double().await;
    let ran = run_main(&analysed(&double, "web:calm2")).await;
    assert_eq!(ran.code, 0, "{ran}");
    assert_eq!(double.state().live(), "web:calm2");
    assert!(ran.summary.contains("### Analysis: new release — passed"), "{ran}");
    assert!(!ran.summary.contains("**worse**"), "{ran}");
    sample("analysis-passed", &ran);
}

#[tokio::test]
async fn a_live_release_that_already_fails_is_the_yardstick() {
    // The live release fails one request in five of its pages; the new one just as
    // often: not worse, so it goes out.
    let double = Double::start("web:flaky").await;
    let flaky = ReleaseSpec { error_per_mille: 200, ..Default::default() };
    double.release("web:flaky", flaky.clone());
    double.release("web:flaky2", flaky);
    let inputs = with(analysed(&double, "web:flaky2"), "health-deadline", "10s");
    let ran = run_main(&inputs).await;
    assert_eq!(ran.code, 0, "{ran}");
    let row = ran.summary.lines().find(|l| l.starts_with("| error rate |")).expect("an error rate row");
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    // One request in five fails on the home page, none on the health check: about 10 %.
    assert!((5.0..15.0).contains(&percent(cells[2])) && (5.0..15.0).contains(&percent(cells[3])), "{row}");
    assert_eq!(cells[6], "ok", "{row}");
}

#[tokio::test]
async fn settings_that_cannot_give_a_verdict_are_refused_before_any_request() {
    let double = calm_double().await;
    let too_few = with(with(analysed(&double, "web:calm2"), "analysis-window", "2s"), "analysis-rate", "5");
    let ran = run_main(&too_few).await;
    assert_eq!(ran.code, 2, "{ran}");
    assert!(
        ran.stdout.contains("::error title=input analysis-min-samples::300 answers cannot come from analysis-window 2s at analysis-rate 5 a second (at most 10)"),
        "{ran}"
    );
    let no_baseline = with(analysed(&double, "web:calm2"), "health-probe", "false");
    let ran = run_main(&no_baseline).await;
    assert_eq!(ran.code, 2, "{ran}");
    assert!(
        ran.stdout.contains(
            "::error title=input analysis::needs the live release's baseline, which health-probe: false skips"
        ),
        "{ran}"
    );
    let half = with(double.inputs("web:calm2"), "analysis-query", "up");
    let ran = run_main(&half).await;
    assert_eq!(ran.code, 2, "{ran}");
    assert!(
        ran.stdout.contains("::error title=input analysis-prometheus-url::is required when analysis-query is set"),
        "{ran}"
    );
    // A setting of the built-in analysis without it is a forgotten `analysis: true`.
    let forgotten = with(double.inputs("web:calm2"), "analysis-rate", "50");
    let ran = run_main(&forgotten).await;
    assert_eq!(ran.code, 2, "{ran}");
    assert!(
        ran.stdout.contains("::error title=input analysis-rate::has no effect unless analysis: true is set"),
        "{ran}"
    );
    // Nothing was asked of the platform.
    assert!(double.state().calls.is_empty(), "{:?}", double.state().calls);
}

/// The error ratio of the last few seconds, as a team would ask Prometheus.
const ERROR_RATIO: &str = "sum(rate(sandbox_requests_total{code=\"5xx\"}[3s])) / sum(rate(sandbox_requests_total[3s]))";

/// A deploy gated by Prometheus: the built-in analysis on only to send the traffic, with
/// its error limit so loose that it passes whatever the release does.
fn prometheus_gated(double: &Double, image: &str, prometheus: &Prometheus, query: &str) -> Vec<(String, String)> {
    let mut inputs = analysed(double, image);
    for (k, v) in [
        ("analysis-max-error-increase", "50%"),
        ("analysis-prometheus-url", &prometheus.url()),
        ("analysis-query", query),
        ("analysis-max", "0.01"),
    ] {
        inputs = with(inputs, k, v);
    }
    inputs
}

#[tokio::test]
async fn a_real_prometheus_query_over_its_limit_rolls_back_and_no_data_is_not_a_pass() {
    let present = [("prometheus", prometheus_path().is_some())];
    if !sandbox::hosts::openssh::real_rig_present("prometheus gate", &present) {
        return;
    }
    let double = calm_double().await;
    let prometheus =
        Prometheus::start(&[double.app.addr], Duration::from_millis(500)).await.expect("prometheus starts");

    // One request in twenty fails: the query gives about 0.05, over 0.01.
    let ran = run_main(&prometheus_gated(&double, "web:erring", &prometheus, ERROR_RATIO)).await;
    assert_eq!(ran.output("status"), "rolled-back", "{ran}\n{}", prometheus.log());
    let why = ran.summary.lines().find(|l| l.starts_with("**Why:**")).expect("a Why line");
    assert!(why.contains("analysis: Prometheus query on the new release: the query gives 0.0"), "{why}");
    assert!(why.contains("(over analysis-max 0.01)"), "{why}");
    assert_eq!(double.state().live(), "web:calm");

    // A release without errors: the query gives 0, and it goes out.
    let ran = run_main(&prometheus_gated(&double, "web:calm2", &prometheus, ERROR_RATIO)).await;
    assert_eq!(ran.code, 0, "{ran}");
    assert!(ran.summary.contains("### Analysis: new release — passed"), "{ran}");
    assert_eq!(double.state().live(), "web:calm2");

    // A query that finds no series proves nothing: rolled back, and said so.
    let ran = run_main(&prometheus_gated(&double, "web:calm", &prometheus, "sandbox_no_such_metric")).await;
    assert_eq!(ran.output("status"), "rolled-back", "{ran}");
    assert!(ran.summary.contains("no data is not a pass"), "{ran}");
    sample("analysis-prometheus", &ran);
}

#[tokio::test]
async fn a_web_check_reads_one_value_by_its_json_path() {
    let stats = serve("127.0.0.1:0".parse().unwrap(), |request| async move {
        let rate = if request.path == "/good" { 0.995 } else { 0.93 };
        json(200, &serde_json::json!({ "data": { "successRate": rate } }))
    })
    .await
    .unwrap();
    let double = calm_double().await;
    let web = |path: &str| {
        let mut inputs = with(double.inputs("web:calm2"), "analysis-window", "1s");
        for (k, v) in [
            ("analysis-web-url", format!("{}{path}", stats.url())),
            ("analysis-web-json-path", "$.data.successRate".into()),
            ("analysis-web-success", "result >= 0.99".into()),
        ] {
            inputs = with(inputs, k, &v);
        }
        inputs
    };
    let ran = run_main(&web("/bad")).await;
    assert_eq!(ran.output("status"), "rolled-back", "{ran}");
    assert!(ran.stdout.contains("found 0.93, which does not meet 'result >= 0.99'"), "{ran}");
    let ran = run_main(&web("/good")).await;
    assert_eq!(ran.code, 0, "{ran}");
    assert_eq!(double.state().live(), "web:calm2");
}
