//! Health probes of an instance's process, and the thresholds that turn a run of
//! probe results into healthy or unhealthy.
//!
//! A probe is one HTTP request or TCP connect with a timeout, reported with the
//! output a platform shows for it. `Thresholds` is the rise/fall rule load balancers
//! apply (healthy after `rise` passes in a row, unhealthy after `fall` failures in a
//! row), so one flaky answer neither adds nor removes a backend unless the platform
//! says so; Fly's checks go by the last result, which is rise = fall = 1.
//!
//! What to probe, how often and where results are kept belong to the emulator.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use tokio::net::TcpStream;

use crate::client;

/// What a probe does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Passes when a TCP connection opens.
    Tcp,
    /// Passes on a 2xx answer.
    Http { method: String, path: String, headers: Vec<(String, String)> },
}

/// One probe's result, with the output a platform shows for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub passing: bool,
    pub output: String,
}

/// Runs `probe` against `addr`, giving up after `timeout`.
pub async fn probe(probe: &Probe, addr: SocketAddr, timeout: Duration) -> Outcome {
    match probe {
        Probe::Tcp => tcp(addr, timeout).await,
        Probe::Http { method, path, headers } => http(addr, method, path, headers, timeout).await,
    }
}

pub async fn tcp(addr: SocketAddr, timeout: Duration) -> Outcome {
    let (passing, output) = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(_)) => (true, format!("TCP connect {addr}: Success")),
        Ok(Err(e)) => (false, format!("TCP connect {addr}: {e}")),
        Err(_) => (false, format!("TCP connect {addr}: timed out after {timeout:?}")),
    };
    Outcome { passing, output }
}

/// An HTTP probe that passes on a 2xx answer, as most platforms' checks do.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    timeout: Duration,
) -> Outcome {
    http_passing(addr, method, path, headers, timeout, false, |status| (200..300).contains(&status)).await
}

/// An HTTP probe that passes when `passes(status)`: load balancers differ on which
/// answers count (DigitalOcean's take any 2xx or 3xx). With `tls`, over TLS taking any
/// certificate, as a balancer's HTTPS check.
pub async fn http_passing(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    timeout: Duration,
    tls: bool,
    passes: impl Fn(u16) -> bool,
) -> Outcome {
    let what = format!("{} {method} {path}", if tls { "HTTPS" } else { "HTTP" });
    let mut request = hyper::Request::builder().method(method).uri(path).header("host", addr.to_string());
    for (name, value) in headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let request = match request.body(Full::new(Bytes::new())) {
        Ok(request) => request,
        Err(e) => {
            let output = format!("{what}: cannot build the request ({e}); fix the check's method, path or headers");
            return Outcome { passing: false, output };
        }
    };
    let sent = match tls {
        true => client::send_tls(addr, request, timeout).await,
        false => client::send(addr, request, timeout).await,
    };
    match sent {
        Ok(reply) => {
            let body: String = reply.text().chars().take(200).collect();
            let passing = passes(reply.status);
            Outcome { passing, output: format!("{what}: {} Output: {body:?}", reply.status) }
        }
        Err(e) => Outcome { passing: false, output: format!("{what}: {}", e.message) },
    }
}

/// Healthy after `rise` passing results in a row, unhealthy after `fall` failing
/// ones in a row; a result that agrees with the current state resets the count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    rise: u32,
    fall: u32,
    healthy: bool,
    /// Results in a row that disagree with `healthy`.
    streak: u32,
}

impl Thresholds {
    /// Starts unhealthy: a new instance earns its traffic. 0 counts as 1.
    pub fn new(rise: u32, fall: u32) -> Thresholds {
        Thresholds { rise: rise.max(1), fall: fall.max(1), healthy: false, streak: 0 }
    }

    /// Starts healthy instead, for a backend already in service.
    pub fn healthy_at_start(self) -> Thresholds {
        Thresholds { healthy: true, streak: 0, ..self }
    }

    /// Takes one probe result; returns whether the instance is healthy now.
    pub fn observe(&mut self, passing: bool) -> bool {
        if passing == self.healthy {
            self.streak = 0;
        } else {
            self.streak += 1;
            if self.streak >= if passing { self.rise } else { self.fall } {
                self.healthy = passing;
                self.streak = 0;
            }
        }
        self.healthy
    }

    pub fn healthy(&self) -> bool {
        self.healthy
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::{self, Request};

    fn run(thresholds: &mut Thresholds, results: &[bool]) -> Vec<bool> {
        results.iter().map(|r| thresholds.observe(*r)).collect()
    }

    #[test]
    fn rise_needs_that_many_passes_in_a_row() {
        let mut t = Thresholds::new(3, 2);
        assert!(!t.healthy());
        assert_eq!(run(&mut t, &[true, true, false, true, true, true]), [false, false, false, false, false, true]);
    }

    #[test]
    fn fall_needs_that_many_failures_in_a_row() {
        let mut t = Thresholds::new(1, 3).healthy_at_start();
        assert_eq!(run(&mut t, &[false, false, true, false, false, false]), [true, true, true, true, true, false]);
        assert_eq!(run(&mut t, &[true]), [true], "rise 1: one pass is enough");
    }

    #[test]
    fn rise_and_fall_of_one_follow_the_last_result() {
        let mut t = Thresholds::new(1, 1);
        assert_eq!(run(&mut t, &[true, false, true, true, false]), [true, false, true, true, false]);
        let mut zero = Thresholds::new(0, 0);
        assert!(zero.observe(true), "0 counts as 1");
    }

    #[tokio::test]
    async fn probes_pass_on_2xx_and_an_open_port_only() {
        let app = server::serve(SocketAddr::from(([127, 0, 0, 1], 0)), |request: Request| async move {
            let status = if request.path == "/health" { 200 } else { 500 };
            server::text(status, "body")
        })
        .await
        .expect("binds");
        let http = |path: &str| Probe::Http { method: "GET".into(), path: path.into(), headers: Vec::new() };
        let timeout = Duration::from_secs(2);
        let ok = probe(&http("/health"), app.addr, timeout).await;
        assert!(ok.passing, "{}", ok.output);
        assert_eq!(ok.output, "HTTP GET /health: 200 Output: \"body\"");
        assert!(!probe(&http("/broken"), app.addr, timeout).await.passing);
        assert!(probe(&Probe::Tcp, app.addr, timeout).await.passing);
        let addr = app.addr;
        app.shutdown().await;
        let closed = probe(&Probe::Tcp, addr, timeout).await;
        assert!(!closed.passing && closed.output.starts_with("TCP connect"), "{}", closed.output);
        assert!(!probe(&http("/health"), addr, timeout).await.passing);
    }
}
