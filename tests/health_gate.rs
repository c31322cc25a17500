//! The health gate against real HTTP servers on loopback.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use safe_deploy::config::{HealthConfig, StatusSet};
use safe_deploy::health::{Failure, Gate, GateResult, VersionCheck};
use safe_deploy::http::{HttpClient, RetryConfig, TransportFailure};
use safe_deploy::secret::Redactor;
use safe_deploy::shutdown::Shutdown;
use sandbox::server::{serve, text, Server};

fn config(url: &str) -> HealthConfig {
    HealthConfig {
        url: url::Url::parse(url).unwrap(),
        expect_status: StatusSet::parse("2xx").unwrap(),
        check_string: None,
        version: None,
        successes: 3,
        interval: Duration::from_millis(20),
        timeout: Duration::from_millis(300),
        deadline: Duration::from_secs(2),
        grace: Duration::ZERO,
        soak: Duration::ZERO,
        headers: vec![],
        probe_first: true,
        surface: safe_deploy::inputs::Surface::Action,
        guessed: false,
    }
}

fn http() -> HttpClient {
    HttpClient::new(Redactor::default(), RetryConfig::default(), Duration::from_secs(5)).unwrap()
}

/// A server whose n-th answer (from 0) is `answer(n)`.
async fn scripted(answer: impl Fn(usize) -> (u16, &'static str) + Send + Sync + 'static) -> Server {
    let n = Arc::new(AtomicUsize::new(0));
    serve("127.0.0.1:0".parse().unwrap(), move |_| {
        let (status, body) = answer(n.fetch_add(1, Ordering::SeqCst));
        async move { text(status, body) }
    })
    .await
    .unwrap()
}

async fn run(c: &HealthConfig) -> safe_deploy::health::GateReport {
    Gate { config: c, version: VersionCheck::Named, label: "new release" }.run(&http(), &Shutdown::new()).await
}

#[tokio::test]
async fn a_failure_resets_the_count_of_consecutive_successes() {
    // ok, ok, 500, ok, ok, ok: passing takes six attempts, not three.
    let server = scripted(|n| if n == 2 { (500, "oops") } else { (200, "ok") }).await;
    let report = run(&config(&format!("{}/health", server.url()))).await;
    assert_eq!(report.result, GateResult::Passed);
    assert_eq!(report.total_attempts, 6);
    assert!(matches!(report.attempts[2].failure, Some(Failure::Status { status: 500, .. })));
}

#[tokio::test]
async fn a_server_that_never_answers_fails_by_the_deadline_with_timeouts() {
    let server = serve("127.0.0.1:0".parse().unwrap(), |_| async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        text(200, "late")
    })
    .await
    .unwrap();
    let started = Instant::now();
    let report = run(&config(&format!("{}/health", server.url()))).await;
    assert_eq!(report.result, GateResult::Failed);
    assert!(started.elapsed() < Duration::from_millis(2600), "the deadline holds: {:?}", started.elapsed());
    assert!(matches!(report.attempts[0].failure, Some(Failure::Transport { failure: TransportFailure::Timeout, .. })));
    assert!(report.reason.unwrap().contains("health-deadline"));
}

#[tokio::test]
async fn a_closed_port_is_reported_as_connection_refused() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut c = config(&format!("http://127.0.0.1:{port}/health"));
    c.deadline = Duration::from_millis(300);
    let report = run(&c).await;
    assert_eq!(report.result, GateResult::Failed);
    assert!(
        matches!(
            report.attempts[0].failure,
            Some(Failure::Transport { failure: TransportFailure::ConnectionRefused, .. })
        ),
        "{:?}",
        report.attempts[0].failure
    );
}

#[tokio::test]
async fn the_check_string_and_status_set_are_both_required() {
    let server = scripted(|_| (204, "all good")).await;
    let mut c = config(&format!("{}/health", server.url()));
    c.check_string = Some("ok".into());
    c.deadline = Duration::from_millis(300);
    let report = run(&c).await;
    assert_eq!(report.result, GateResult::Failed);
    assert!(matches!(report.attempts[0].failure, Some(Failure::BodyMismatch { .. })));

    c.check_string = Some("good".into());
    c.expect_status = StatusSet::parse("200").unwrap();
    let report = run(&c).await;
    assert!(matches!(report.attempts[0].failure, Some(Failure::Status { status: 204, .. })));
}

#[tokio::test]
async fn grace_delays_the_first_check() {
    let server = scripted(|_| (200, "ok")).await;
    let mut c = config(&format!("{}/health", server.url()));
    c.grace = Duration::from_millis(300);
    let report = run(&c).await;
    assert_eq!(report.result, GateResult::Passed);
    assert!(report.attempts[0].at >= Duration::from_millis(300));
}

#[tokio::test]
async fn extra_headers_are_sent_with_every_check() {
    let server = serve("127.0.0.1:0".parse().unwrap(), |req| {
        let host = req.headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("").to_string();
        async move {
            if host == "app.example.com" {
                text(200, "ok")
            } else {
                text(421, "wrong host")
            }
        }
    })
    .await
    .unwrap();
    let mut c = config(&format!("{}/health", server.url()));
    c.headers = vec![("Host".into(), "app.example.com".into())];
    assert_eq!(run(&c).await.result, GateResult::Passed);
}

#[tokio::test]
async fn a_shutdown_ends_the_gate_as_cancelled() {
    let server = scripted(|_| (500, "no")).await;
    let c = config(&format!("{}/health", server.url()));
    let shutdown = Shutdown::new();
    let s = shutdown.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.trigger("SIGINT");
    });
    let report = Gate { config: &c, version: VersionCheck::Skip, label: "x" }.run(&http(), &shutdown).await;
    assert_eq!(report.result, GateResult::Cancelled);
}

#[tokio::test]
async fn only_the_first_mebibyte_of_an_answer_is_read() {
    // A check string past the first MiB is not seen: the gate reads the start of a body
    // (a check string, a version, an excerpt), never an endless one whole.
    let body: &'static str = Box::leak(format!("{}ok", "x".repeat(2 * 1024 * 1024)).into_boxed_str());
    let server = scripted(move |_| (200, body)).await;
    let mut c = config(&format!("{}/health", server.url()));
    c.check_string = Some("ok".into());
    let report = run(&c).await;
    assert_eq!(report.result, GateResult::Failed, "{report:?}");
    assert!(report.reason.unwrap_or_default().contains("body does not contain 'ok'"));
}
