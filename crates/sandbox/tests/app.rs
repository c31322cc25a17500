//! The test app as a process: a release that passes its health check and still serves
//! users worse (a slow tail, a share of errors), as the analysis gate must catch.

use std::time::{Duration, Instant};

use sandbox::client::call;

/// Starts `sandbox-app` with `flags` on a free loopback port; returns it and its URL.
async fn app(flags: &[&str]) -> (tokio::process::Child, String) {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sandbox-app"))
        .args(["--listen", "127.0.0.1", "--port", "0"])
        .args(flags)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the test app starts");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let port = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(port) = line.split("listening on ").nth(1) {
                return port.trim().to_string();
            }
        }
        panic!("the app never said where it listens");
    })
    .await
    .expect("the app listens");
    (child, format!("http://127.0.0.1:{port}"))
}

#[tokio::test]
async fn a_release_with_an_error_rate_fails_that_share_of_requests_evenly_and_still_passes_its_health_check() {
    let (_app, url) = app(&["--version", "v5", "--error-rate", "0.1"]).await;
    let mut statuses = Vec::new();
    for _ in 0..100 {
        statuses.push(call("GET", &format!("{url}/"), &[], None).await.unwrap().status);
    }
    assert_eq!(statuses.iter().filter(|&&s| s == 500).count(), 10, "{statuses:?}");
    // Never two errors in a row.
    assert!(statuses.windows(2).all(|w| w != [500, 500]), "{statuses:?}");
    // The health check is never one of them: the release passes it.
    for _ in 0..30 {
        assert_eq!(call("GET", &format!("{url}/health"), &[], None).await.unwrap().status, 200);
    }
    let versions = versions(&url, 30).await;
    assert!(versions.iter().all(|v| v == "v5"), "/version is never an error: {versions:?}");
}

#[tokio::test]
async fn a_release_with_a_slow_tail_is_slow_once_in_a_hundred_answers() {
    let (_app, url) = app(&["--latency-ms", "5", "--latency-p99-ms", "400"]).await;
    let mut slow = 0;
    for _ in 0..200 {
        let sent = Instant::now();
        assert_eq!(call("GET", &format!("{url}/health"), &[], None).await.unwrap().status, 200);
        slow += usize::from(sent.elapsed() >= Duration::from_millis(400));
    }
    assert_eq!(slow, 2, "one in a hundred answers is the tail");
}

async fn versions(url: &str, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(call("GET", &format!("{url}/version"), &[], None).await.unwrap().text());
    }
    out
}
