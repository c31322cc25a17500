//! The job summary of every kind of run, as a person reads it on GitHub: short, the
//! release named once in the first line, the reason said once, long attempt lists
//! folded. With SAFE_DEPLOY_SUMMARY_SAMPLES=DIR each summary is also written to DIR,
//! where `.ci/summary-browser` renders it in a real browser.

use std::time::Duration;

use sandbox::app::HealthMode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::util::{run_main, with, Double, Ran, Step};

/// Keeps the summary for the browser check, when asked to.
fn sample(kind: &str, ran: &Ran) {
    assert!(ran.summary.len() < 1024 * 1024, "{kind}: over GitHub's 1 MiB limit");
    if let Some(dir) = std::env::var_os("SAFE_DEPLOY_SUMMARY_SAMPLES") {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(std::path::Path::new(&dir).join(format!("{kind}.md")), &ran.summary).unwrap();
    }
}

/// The first line, and how often `text` appears in it.
fn first_line_count(ran: &Ran, text: &str) -> usize {
    ran.summary.lines().next().unwrap_or_default().matches(text).count()
}

/// Every table starts with a header row that says something.
fn assert_no_empty_header_row(ran: &Ran) {
    for line in ran.summary.lines() {
        let cells: Vec<&str> = line.trim().trim_matches('|').split('|').map(str::trim).collect();
        assert!(!(line.starts_with('|') && cells.iter().all(|c| c.is_empty())), "an empty table row: {line}\n{ran}");
    }
}

#[tokio::test]
async fn a_deploy_names_its_release_once_in_the_first_line() {
    let double = Double::start("web:v1").await;
    // A query string may carry a secret nobody declared: it is never shown.
    let url = format!("{}/health?key=QUERYSECRET", double.app.url());
    let ran = run_main(&with(double.inputs("web:v2"), "health-url", &url)).await;
    assert_eq!(ran.code, 0, "{ran}");
    assert_eq!(first_line_count(&ran, "web:v2"), 1, "{ran}");
    assert!(!ran.everything().contains("QUERYSECRET"), "{ran}");
    assert!(ran.summary.contains("/health?…"), "{ran}");
    assert_no_empty_header_row(&ran);
    sample("deployed", &ran);
}

#[tokio::test]
async fn a_rollback_says_its_reason_once_and_folds_sixty_identical_attempts() {
    let double = Double::start("web:v1").await;
    double.broken("web:v2", HealthMode::WrongBody);
    let inputs = with(with(double.inputs("web:v2"), "health-interval", "20ms"), "health-deadline", "3s");
    let ran = run_main(&inputs).await;
    assert_eq!(ran.output("status"), "rolled-back", "{ran}");
    assert_no_empty_header_row(&ran);

    // The failure is explained in full once; elsewhere it is referred to.
    let why = ran.summary.lines().find(|l| l.starts_with("**Why:**")).expect("a Why line");
    let reason = why.trim_start_matches("**Why:**").trim();
    assert_eq!(ran.summary.matches(reason).count(), 1, "the reason '{reason}' is said once:\n{ran}");

    // Dozens of identical failures read as one folded line, not dozens of rows.
    assert!(ran.summary.contains("<details>"), "{ran}");
    let rows = ran.summary.lines().filter(|l| l.starts_with("| ") && l.contains("body mismatch")).count();
    assert!(rows <= 8, "{rows} attempt rows:\n{ran}");
    assert!(ran.summary.contains(": same failure"), "{ran}");
    sample("rolled-back", &ran);
}

#[tokio::test]
async fn a_run_that_changed_nothing_says_so_and_what_is_live() {
    let double = Double::start("web:v1").await;
    double.change(|s| s.faults.fail_before_change = true);
    let ran = run_main(&double.inputs("web:v2")).await;
    assert_eq!(ran.output("status"), "failed", "{ran}");
    let first = ran.summary.lines().next().unwrap();
    assert!(first.contains("before any change") && first.contains("web:v1"), "{first}");
    assert_no_empty_header_row(&ran);
    sample("nothing-changed", &ran);
}

#[tokio::test]
async fn a_failed_rollback_opens_with_the_alert_github_renders() {
    let double = Double::start("web:v1").await;
    double.broken("web:v2", HealthMode::Error500);
    double.change(|s| s.faults.fail_roll_back = true);
    let ran = run_main(&double.inputs("web:v2")).await;
    assert_eq!(ran.output("status"), "rollback-failed", "{ran}");
    let lines: Vec<&str> = ran.summary.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.get(1).copied(), Some("> [!CAUTION]"), "the alert comes right after the headline:\n{ran}");
    sample("rollback-failed", &ran);
}

#[tokio::test]
async fn a_cancelled_run_says_the_post_step_finishes() {
    let double = Double::start("web:v1").await;
    double.change(|s| s.faults.roll_out_delay_ms = 30_000);
    let (ran, _) = Step::main(&double.inputs("web:v2"))
        .interrupt_when("INT", "the roll-out to begin", || {
            double.state().calls.iter().any(|c| c.starts_with("roll_out"))
        })
        .await;
    assert_eq!(ran.output("status"), "cancelled", "{ran}");
    assert!(ran.summary.lines().next().unwrap().contains("CANCELLED"), "{ran}");
    sample("cancelled", &ran);
}

#[tokio::test]
async fn a_plan_lists_its_steps_and_changes_nothing() {
    let double = Double::start("web:v1").await;
    let ran = run_main(&with(double.inputs("web:v2"), "command", "plan")).await;
    assert_eq!(ran.output("status"), "planned", "{ran}");
    assert_eq!(first_line_count(&ran, "web:v2"), 1, "{ran}");
    sample("planned", &ran);
}

#[tokio::test]
async fn a_hostile_health_body_is_shown_as_text() {
    let double = Double::start("web:v1").await;
    let hostile = serve_forever(
        "<img src=x onerror=alert(1)> | <script>alert(2)</script> `code` **bold** [link](javascript:alert(3)) ```mermaid",
    )
    .await;
    let inputs = with(with(double.inputs("web:v2"), "health-url", &hostile), "health-probe", "false");
    let ran = run_main(&with(inputs, "health-deadline", "500ms")).await;
    assert_ne!(ran.code, 0, "{ran}");
    assert!(!ran.summary.contains("<img") && !ran.summary.contains("<script"), "{ran}");
    assert!(ran.summary.contains("&lt;img src=x onerror=alert(1)&gt;"), "the body is shown, escaped:\n{ran}");
    assert!(
        ran.summary.contains("&#42;&#42;bold&#42;&#42; &#91;link&#93;(javascript"),
        "Markdown in a body stays text:\n{ran}"
    );
    sample("hostile-body", &ran);
}

/// An HTTP server on loopback that answers every request 200 with `body`.
async fn serve_forever(body: &'static str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/health", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = tokio::time::timeout(Duration::from_secs(2), socket.read(&mut buf)).await;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    });
    url
}

/// A summary "file" that is a pipe no one reads would block the run for ever at its
/// end: it is warned about and skipped, and the run ends with its outputs and exit code.
#[tokio::test]
async fn a_summary_path_that_is_a_pipe_is_warned_about_never_waited_on() {
    let double = Double::start("web:v1").await;
    let pipe = tempfile::tempdir().unwrap();
    let fifo = pipe.path().join("summary");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let step = Step::main(&double.inputs("web:v2")).env("GITHUB_STEP_SUMMARY", &fifo.display().to_string());
    let ran = tokio::time::timeout(Duration::from_secs(30), step.run()).await.expect("the run ends");
    assert_eq!(ran.code, 0, "{ran}");
    assert_eq!(ran.output("status"), "deployed");
    assert!(ran.stdout.contains("summary not written") && ran.stdout.contains("not a regular file"), "{ran}");
}
