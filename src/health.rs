//! The health gate: proof that the app answers healthy, from outside, more than once.
//!
//! Passing means `successes` consecutive healthy answers before the deadline (less the
//! soak), then a clean soak: any failure during the soak fails the gate. Every attempt
//! is recorded, and every failure sorted (timeout, refused, TLS, status, body, version)
//! so the summary can say exactly why.

use std::time::Duration;

use tokio::time::Instant;

use serde::{Deserialize, Serialize};

use async_trait::async_trait;

use crate::config::HealthConfig;
use crate::gate::GateKind;
pub use crate::gate::{GateReport, GateResult};
use crate::http::{HttpClient, TransportFailure};
use crate::inputs::human;
use crate::shutdown::Shutdown;

/// One GET as the gate sends it: the status and body, or why no answer came. The HTTP
/// client is the real one; in-process engine tests answer from the provider double.
#[async_trait]
pub trait Probe: Send + Sync {
    async fn get(
        &self,
        url: &url::Url,
        headers: &[(String, String)],
        timeout: Duration,
    ) -> Result<(u16, Vec<u8>), (TransportFailure, String)>;
}

#[async_trait]
impl Probe for HttpClient {
    async fn get(
        &self,
        url: &url::Url,
        headers: &[(String, String)],
        timeout: Duration,
    ) -> Result<(u16, Vec<u8>), (TransportFailure, String)> {
        self.probe(url, headers, timeout).await
    }
}

/// How many attempts a gate keeps for the report: the first and the latest ones.
const KEEP_FIRST: usize = 60;
const KEEP_LAST: usize = 60;
const EXCERPT_CHARS: usize = 120;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Failure {
    Transport {
        failure: TransportFailure,
        detail: String,
    },
    Status {
        status: u16,
        expected: String,
    },
    BodyMismatch {
        missing: String,
    },
    WrongVersion {
        expected: String,
        found: String,
    },
    /// The version of the release that failed still answers after the rollback.
    StillServing {
        version: String,
        found: String,
    },
}

impl Failure {
    /// A short label for tables: "timeout", "status 500", "wrong version".
    pub fn label(&self) -> String {
        match self {
            Failure::Transport { failure, .. } => failure.as_str().to_string(),
            Failure::Status { status, .. } => format!("status {status}"),
            Failure::BodyMismatch { .. } => "body mismatch".into(),
            Failure::WrongVersion { .. } => "wrong version".into(),
            Failure::StillServing { .. } => "failed release still serving".into(),
        }
    }

    pub fn explain(&self) -> String {
        match self {
            Failure::Transport { failure, detail } => failure.plainly(detail),
            Failure::Status { status, expected } => format!("status {status}, expected {expected}"),
            Failure::BodyMismatch { missing } => format!("body does not contain '{missing}'"),
            Failure::WrongVersion { expected, found } => {
                format!("version '{expected}' is not answering; found '{found}' (the old version may still be serving)")
            }
            Failure::StillServing { version, found } => format!(
                "the failed release's version '{version}' still answers ('{found}'): the switch back is not done yet (with Heroku's preboot it can take minutes)"
            ),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attempt {
    pub number: usize,
    /// Since the gate started.
    pub at: Duration,
    pub status: Option<u16>,
    pub latency: Duration,
    pub excerpt: String,
    pub failure: Option<Failure>,
}

/// The log's account of failed attempts: a failure is said when it first happens, a
/// run of the same failure is not said again attempt by attempt, only every 10 s
/// ("still failing the same way"), and once more in one line when it ends.
#[derive(Default)]
struct Repeats {
    /// The failure being repeated, the first attempt that had it, the last one, and
    /// when the log last spoke of it.
    run: Option<(String, usize, usize, Instant)>,
}

impl Repeats {
    const EVERY: Duration = Duration::from_secs(10);

    fn failed(&mut self, label: &str, number: usize, failure: &str, deadline: Instant) {
        match &mut self.run {
            Some((same, _, last, spoke)) if same == failure => {
                *last = number;
                if spoke.elapsed() >= Self::EVERY {
                    *spoke = Instant::now();
                    let left = human(deadline.saturating_duration_since(Instant::now()));
                    tracing::info!("health: {label} attempt {number} still fails the same way ({left} left)");
                }
            }
            _ => {
                self.settle(label);
                tracing::info!("health: {label} attempt {number} failed: {failure}");
                self.run = Some((failure.to_string(), number, number, Instant::now()));
            }
        }
    }

    /// Closes a run of the same failure with one line saying how long it was.
    fn settle(&mut self, label: &str) {
        if let Some((failure, first, last, _)) = self.run.take() {
            if last > first {
                tracing::info!("health: {label} attempts {first}–{last} all failed: {failure}");
            }
        }
    }
}

/// What the gate proves about versions with the version URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionCheck {
    /// Nothing (no version URL, or a probe of what is live).
    Skip,
    /// The configured version answers: the new release serves.
    Named,
    /// The configured version no longer answers: after a rollback, the failed
    /// release has stopped serving (its version did not answer before the deploy).
    Gone,
}

/// What the gate checks on this run.
pub struct Gate<'a> {
    pub config: &'a HealthConfig,
    pub version: VersionCheck,
    pub label: &'a str,
}

#[async_trait]
impl crate::gate::Gate for Gate<'_> {
    fn name(&self) -> String {
        format!("health gate: {}", self.label)
    }

    fn limit(&self) -> Duration {
        self.config.deadline
    }

    async fn check(&self, probe: &dyn Probe, shutdown: &Shutdown, attempted: &(dyn Fn(String) + Sync)) -> GateReport {
        self.run_observed(probe, shutdown, attempted).await
    }
}

impl Gate<'_> {
    pub async fn run(&self, http: &dyn Probe, shutdown: &Shutdown) -> GateReport {
        self.run_observed(http, shutdown, &|_| {}).await
    }

    /// Runs the gate, telling `attempted` after each attempt its number and what it got,
    /// in words, for a live status.
    async fn run_observed(
        &self,
        http: &dyn Probe,
        shutdown: &Shutdown,
        attempted: &(dyn Fn(String) + Sync),
    ) -> GateReport {
        let c = self.config;
        let started = Instant::now();
        let deadline = started + c.deadline;
        // Passing must come early enough for the soak to fit inside the deadline.
        let pass_by = deadline - c.soak;
        let mut report = GateReport::new(GateKind::Health, self.label, crate::http::shown(&c.url));
        let finish = |mut r: GateReport, result: GateResult, reason: Option<String>| {
            r.result = result;
            r.reason = reason;
            r.duration = started.elapsed();
            r
        };

        if !c.grace.is_zero() {
            tracing::info!("health: waiting {} of grace before the first check", human(c.grace));
            if !shutdown.sleep(c.grace).await {
                return finish(report, GateResult::Cancelled, Some("cancelled during the grace period".into()));
            }
        }

        let mut consecutive = 0;
        let mut soak_until: Option<Instant> = None;
        let mut last_failure: Option<Failure> = None;
        let mut said = Repeats::default();
        loop {
            let attempt_start = Instant::now();
            let limit = soak_until.unwrap_or(pass_by);
            let remaining = limit.saturating_duration_since(attempt_start);
            if remaining.is_zero() && soak_until.is_none() {
                said.settle(self.label);
                let why = match &last_failure {
                    Some(f) => format!(
                        "not healthy within {} {} ({} of {} consecutive successes; last failure: {})",
                        c.surface.name("health-deadline"),
                        human(c.deadline),
                        consecutive,
                        c.successes,
                        f.explain()
                    ),
                    None => format!(
                        "only {consecutive} of {} consecutive successes within {} {}",
                        c.successes,
                        c.surface.name("health-deadline"),
                        human(c.deadline)
                    ),
                };
                return finish(report, GateResult::Failed, Some(format!("{why}{}", c.guess_note())));
            }
            let timeout =
                c.timeout.min(deadline.saturating_duration_since(attempt_start)).max(Duration::from_millis(50));
            let probe = shutdown.guard(Duration::ZERO, self.probe(http, timeout));
            let Some(mut attempt) = probe.await else {
                return finish(report, GateResult::Cancelled, Some("cancelled during a health check".into()));
            };
            report.total_attempts += 1;
            attempt.number = report.total_attempts;
            attempt.at = attempt_start - started;
            match &attempt.failure {
                None => {
                    consecutive += 1;
                    said.settle(self.label);
                    tracing::info!(
                        "health: {} ok ({} in {}ms) {consecutive}/{}",
                        self.label,
                        attempt.status.unwrap_or(0),
                        attempt.latency.as_millis(),
                        c.successes
                    );
                }
                Some(f) => {
                    said.failed(self.label, attempt.number, &f.explain(), deadline);
                    consecutive = 0;
                    last_failure = Some(f.clone());
                }
            }
            let got = match &attempt.failure {
                None => format!("{} in {}ms", attempt.status.unwrap_or(0), attempt.latency.as_millis()),
                Some(f) => f.explain(),
            };
            attempted(format!("attempt {}: {got} ({consecutive} of {} in a row)", attempt.number, c.successes));
            let failure = attempt.failure.clone();
            keep(&mut report.attempts, attempt);

            if let (Some(_), Some(f)) = (soak_until, &failure) {
                let why = format!(
                    "failed during the {} soak after passing: {}{}",
                    human(c.soak),
                    f.explain(),
                    c.guess_note()
                );
                return finish(report, GateResult::Failed, Some(why));
            }
            if soak_until.is_none() && consecutive >= c.successes {
                if c.soak.is_zero() {
                    return finish(report, GateResult::Passed, None);
                }
                tracing::info!("health: passed; soaking for {}", human(c.soak));
                soak_until = Some(Instant::now() + c.soak);
            }
            if let Some(until) = soak_until {
                if Instant::now() >= until {
                    return finish(report, GateResult::Passed, None);
                }
            }
            let next = (attempt_start + c.interval).min(soak_until.unwrap_or(deadline));
            let wait = next.saturating_duration_since(Instant::now());
            if !shutdown.sleep(wait).await {
                return finish(report, GateResult::Cancelled, Some("cancelled between health checks".into()));
            }
        }
    }

    /// One attempt: the health URL, and the version URL when it is a different one.
    async fn probe(&self, http: &dyn Probe, timeout: Duration) -> Attempt {
        let c = self.config;
        let sent = Instant::now();
        let result = http.get(&c.url, &c.headers, timeout).await;
        let latency = sent.elapsed();
        let mut attempt =
            Attempt { number: 0, at: Duration::ZERO, status: None, latency, excerpt: String::new(), failure: None };
        let (status, body) = match result {
            Ok(ok) => ok,
            Err((failure, detail)) => {
                attempt.failure = Some(Failure::Transport { failure, detail });
                return attempt;
            }
        };
        let body = String::from_utf8_lossy(&body).into_owned();
        attempt.status = Some(status);
        attempt.excerpt = excerpt(&body);
        attempt.failure = self.judge(status, &body);
        if attempt.failure.is_some() || self.version == VersionCheck::Skip {
            return attempt;
        }
        if let Some((version_url, expected)) = &c.version {
            let version_body = if version_url == &c.url {
                body
            } else {
                match http.get(version_url, &c.headers, timeout).await {
                    Ok((200..=299, b)) => String::from_utf8_lossy(&b).into_owned(),
                    Ok((s, _)) => {
                        attempt.failure =
                            Some(Failure::Status { status: s, expected: format!("2xx from {version_url}") });
                        return attempt;
                    }
                    Err((failure, detail)) => {
                        attempt.failure =
                            Some(Failure::Transport { failure, detail: format!("{version_url}: {detail}") });
                        return attempt;
                    }
                }
            };
            let named = names_version(&version_body, expected);
            attempt.failure = match (self.version, named) {
                (VersionCheck::Named, false) => {
                    Some(Failure::WrongVersion { expected: expected.clone(), found: excerpt(&version_body) })
                }
                (VersionCheck::Gone, true) => {
                    Some(Failure::StillServing { version: expected.clone(), found: excerpt(&version_body) })
                }
                _ => None,
            };
        }
        attempt
    }

    fn judge(&self, status: u16, body: &str) -> Option<Failure> {
        let c = self.config;
        if !c.expect_status.contains(status) {
            return Some(Failure::Status { status, expected: c.expect_status.to_string() });
        }
        match &c.check_string {
            Some(s) if !body.contains(s.as_str()) => Some(Failure::BodyMismatch { missing: s.clone() }),
            _ => None,
        }
    }
}

/// Keeps the first attempts and the latest ones, so a long gate stays small.
fn keep(list: &mut Vec<Attempt>, attempt: Attempt) {
    if list.len() >= KEEP_FIRST + KEEP_LAST {
        list.remove(KEEP_FIRST);
    }
    list.push(attempt);
}

/// The first characters of a body on one line, control characters made visible.
pub fn excerpt(body: &str) -> String {
    let mut out: String =
        body.trim().chars().take(EXCERPT_CHARS).map(|c| if c.is_control() { ' ' } else { c }).collect();
    if body.trim().chars().count() > EXCERPT_CHARS {
        out.push('…');
    }
    out
}

/// Whether `body` names `version` as a whole token: "v1" is not found in "v1.2" or
/// "v10", but is in `{"version":"v1"}`.
pub fn names_version(body: &str, version: &str) -> bool {
    if version.is_empty() {
        return false;
    }
    let token_char = |c: char| c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | '+');
    body.match_indices(version).any(|(i, _)| {
        let before = body[..i].chars().next_back();
        let after = body[i + version.len()..].chars().next();
        // A trailing sentence dot or comma is not part of a version.
        let after_ok = match after {
            None => true,
            Some('.') => body[i + version.len() + 1..].chars().next().is_none_or(|c| !token_char(c)),
            Some(c) => !token_char(c),
        };
        before.is_none_or(|c| !token_char(c)) && after_ok
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_match_only_as_whole_tokens() {
        assert!(names_version("v1", "v1"));
        assert!(names_version("{\"version\":\"abc123\"}", "abc123"));
        assert!(names_version("running 1.2.3.", "1.2.3"));
        assert!(!names_version("v10", "v1"));
        assert!(!names_version("v1.2", "v1"));
        assert!(!names_version("abc1234", "abc123"));
        assert!(!names_version("xabc123", "abc123"));
        assert!(!names_version("anything", ""));
    }

    #[test]
    fn excerpts_are_short_single_lines() {
        assert_eq!(excerpt("  ok\n"), "ok");
        assert_eq!(excerpt("a\nb\r\tc"), "a b  c");
        let long = "x".repeat(500);
        assert_eq!(excerpt(&long).chars().count(), EXCERPT_CHARS + 1);
    }

    #[test]
    fn long_gates_keep_their_first_and_latest_attempts() {
        let mut list = Vec::new();
        for n in 1..=500 {
            keep(
                &mut list,
                Attempt {
                    number: n,
                    at: Duration::ZERO,
                    status: None,
                    latency: Duration::ZERO,
                    excerpt: String::new(),
                    failure: None,
                },
            );
        }
        assert_eq!(list.len(), KEEP_FIRST + KEEP_LAST);
        assert_eq!(list[0].number, 1);
        assert_eq!(list[KEEP_FIRST - 1].number, KEEP_FIRST);
        assert_eq!(list.last().unwrap().number, 500);
    }
}
