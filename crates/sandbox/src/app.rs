//! What one release of the test application answers. A release's version, health
//! answer and failures are set per release, so a test can deploy a broken v3.
//! `run_process` runs a release as a real process, which the Fly emulator starts
//! once per machine.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::server::{text, Request, Response};

mod process;
pub use process::run_process;

/// How `/health` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HealthMode {
    /// 200 "ok".
    #[default]
    Ok,
    /// 200, but a body without "ok" in it.
    WrongBody,
    /// 500 "error".
    Error500,
    /// Never answers (until the client gives up).
    Hang,
    /// Flaps: every third answer is 500, the others 200 "ok".
    Flaky,
    /// Healthy for 2 s after its first health request, then 500 for good: a release
    /// that passes its checks and breaks soon after (what a soak catches).
    Decays,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ReleaseSpec {
    /// What `/version` answers; empty means the image tag.
    pub version: String,
    pub health: HealthMode,
    /// Wait before listening, as a slow boot does.
    pub boot_delay_ms: u64,
    /// Exit right after starting, with `exit_code`.
    pub crash_on_start: bool,
    pub exit_code: i32,
    /// What the release command exits with when this image runs as one.
    pub release_command_exit_code: i32,
    /// Extra time every answer takes (so a test can have requests in flight when a
    /// machine is stopped, and an analysis can see a slow release).
    pub latency_ms: u64,
    /// One answer in a hundred takes this long instead: the tail a p99 sees, while the
    /// health check (three answers in a row) still passes.
    pub latency_p99_ms: u64,
    /// Answers in a thousand that are a 500, spread evenly (50 is a 5 % error rate),
    /// `/health` and `/version` aside: a release that passes its health check and fails
    /// users.
    pub error_per_mille: u32,
}

impl HealthMode {
    /// Every mode, for tests that try them all.
    pub const ALL: [HealthMode; 6] = [
        HealthMode::Ok,
        HealthMode::WrongBody,
        HealthMode::Error500,
        HealthMode::Hang,
        HealthMode::Flaky,
        HealthMode::Decays,
    ];

    /// The mode as the test app's `--health` flag names it.
    pub fn flag(self) -> &'static str {
        match self {
            HealthMode::Ok => "ok",
            HealthMode::WrongBody => "wrong-body",
            HealthMode::Error500 => "error500",
            HealthMode::Hang => "hang",
            HealthMode::Flaky => "flaky",
            HealthMode::Decays => "decays",
        }
    }
}

impl ReleaseSpec {
    /// The test app's flags that make a process behave as this release: every
    /// emulator (machines, dynos, instances, containers) starts its processes with
    /// these, so a release behaves the same on each.
    pub fn app_flags(&self) -> Vec<String> {
        let mut flags =
            vec!["--version".to_string(), self.version.clone(), "--health".into(), self.health.flag().into()];
        if self.boot_delay_ms > 0 {
            flags.extend(["--boot-delay-ms".into(), self.boot_delay_ms.to_string()]);
        }
        if self.latency_ms > 0 {
            flags.extend(["--latency-ms".into(), self.latency_ms.to_string()]);
        }
        if self.latency_p99_ms > 0 {
            flags.extend(["--latency-p99-ms".into(), self.latency_p99_ms.to_string()]);
        }
        if self.error_per_mille > 0 {
            flags.extend(["--error-rate".into(), format!("{}", f64::from(self.error_per_mille) / 1000.0)]);
        }
        if self.crash_on_start {
            flags.extend(["--crash-exit-code".into(), self.exit_code.to_string()]);
        }
        flags
    }
}

/// Whether answer `n` (counting from 0) is one of `per_mille` in a thousand, spread
/// evenly: the n-th answer is picked when the running count of picks steps up there.
pub fn one_in(n: u64, per_mille: u64) -> bool {
    // The pattern repeats every thousand answers, so any count (a random one too) works.
    let n = n % 1000;
    per_mille > 0 && (n + 1) * per_mille / 1000 != n * per_mille / 1000
}

/// A fraction written as people do (`0.05`, `5%`) as answers in a thousand.
pub fn per_mille(text: &str) -> Result<u32, String> {
    let (number, scale) = match text.trim().strip_suffix('%') {
        Some(p) => (p, 10.0),
        None => (text.trim(), 1000.0),
    };
    match number.parse::<f64>() {
        Ok(f) if (0.0..=1000.0).contains(&(f * scale)) => Ok((f * scale).round() as u32),
        _ => Err(format!("'{text}' is not a fraction from 0 to 1 (0.05) or a percentage (5%)")),
    }
}

/// The releases the analysis stories deploy, by their tag; each passes its health
/// check. `calm` and `calm2` answer in 20 ms; `slow` in 60 ms, three times as long;
/// `erring` in 20 ms with one answer in twenty a 500; `flaky` and `flaky2` fail one
/// answer in ten, a live release that flaps, and its equal.
pub fn analysis_releases() -> [(&'static str, ReleaseSpec); 6] {
    let calm = ReleaseSpec { latency_ms: 20, ..Default::default() };
    let flaky = ReleaseSpec { error_per_mille: 100, ..Default::default() };
    [
        ("calm", calm.clone()),
        ("calm2", calm.clone()),
        ("slow", ReleaseSpec { latency_ms: 60, ..Default::default() }),
        ("erring", ReleaseSpec { error_per_mille: 50, ..calm }),
        ("flaky", flaky.clone()),
        ("flaky2", flaky),
    ]
}

/// The releases the sandbox knows, by image reference.
pub type Releases = BTreeMap<String, ReleaseSpec>;

/// A key of [`Releases`] that lets a registry stand-in (the hosts' `docker pull`) serve
/// any image, as a person trying the sandbox expects; without it an image not listed is
/// "manifest unknown", as a registry says.
pub const ANY_IMAGE: &str = "*";

/// The version an image reports when no spec says otherwise: its tag.
pub fn default_version(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, tag)) if !tag.is_empty() => tag.to_string(),
        _ => last.to_string(),
    }
}

/// The spec for `image`, with its version filled in.
pub fn spec_for(releases: &Releases, image: &str) -> ReleaseSpec {
    let mut spec = releases.get(image).cloned().unwrap_or_default();
    if spec.version.is_empty() {
        spec.version = default_version(image);
    }
    spec
}

/// An instance's drain switch: `POST /drain` sets it, `DELETE /drain` clears it, and
/// while it is set `/health` answers 503 so a load balancer takes the instance out,
/// while every other request is still served.
#[derive(Debug, Default)]
pub struct Drain(std::sync::atomic::AtomicBool);

impl Drain {
    pub fn is_draining(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn set(&self, draining: bool) {
        self.0.store(draining, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A server's count of its answers, so a slow tail and errors come at their rate,
/// evenly, not by chance.
#[derive(Debug, Default)]
pub struct Answers {
    all: std::sync::atomic::AtomicU64,
    /// Users' requests only (the health check, `/version` and `/drain` aside): errors are
    /// spread over these, so a client that alternates a user's page with the health
    /// check still sees its share (spread over every answer, they could all fall on the
    /// health check).
    users: std::sync::atomic::AtomicU64,
}

impl Answers {
    /// The latency and the errors `spec` is set to have, for this answer: waits the
    /// latency, then gives the 500 when this answer is one of the errors.
    pub async fn slow_or_failing(&self, spec: &ReleaseSpec, request: &Request) -> Option<Response> {
        use std::sync::atomic::Ordering::Relaxed;
        let n = self.all.fetch_add(1, Relaxed);
        let tail = one_in(n, 10) && spec.latency_p99_ms > 0;
        let latency = if tail { spec.latency_p99_ms } else { spec.latency_ms };
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
        // The health check is spared: a release that answers it and fails its users.
        if matches!(request.path.as_str(), "/health" | "/version" | "/drain") {
            return None;
        }
        let m = self.users.fetch_add(1, Relaxed);
        one_in(m, u64::from(spec.error_per_mille)).then(|| text(500, "sandbox: an error this release makes on purpose"))
    }
}

/// What a server of the test app has answered, by status class, as Prometheus scrapes
/// it from `/metrics`: `sandbox_requests_total{code="5xx"}`.
#[derive(Debug, Default)]
pub struct Metrics([std::sync::atomic::AtomicU64; 5]);

impl Metrics {
    pub fn count(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.0[class].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The text exposition format.
    pub fn render(&self) -> Response {
        let mut out = String::from(
            "# HELP sandbox_requests_total Requests answered, by status class.\n# TYPE sandbox_requests_total counter\n",
        );
        for (i, n) in self.0.iter().enumerate() {
            let n = n.load(std::sync::atomic::Ordering::Relaxed);
            out.push_str(&format!("sandbox_requests_total{{code=\"{}xx\"}} {n}\n", i + 1));
        }
        text(200, out)
    }

    /// Answers `/metrics` from the counts, or counts what `answer` gives.
    pub async fn around(&self, request: &Request, answer: impl std::future::Future<Output = Response>) -> Response {
        if request.path == "/metrics" {
            return self.render();
        }
        let response = answer.await;
        self.count(response.status().as_u16());
        response
    }
}

/// The answer of a release to one request. It has no drain switch (`/drain` is not
/// found); an instance that keeps one answers through `answer_with`.
pub async fn answer(spec: &ReleaseSpec, request: &Request) -> Response {
    answer_with(spec, None, request).await
}

/// The answer of a release to one request, with the instance's drain switch.
pub async fn answer_with(spec: &ReleaseSpec, drain: Option<&Drain>, request: &Request) -> Response {
    match (request.path.as_str(), drain) {
        ("/drain", Some(drain)) => match request.method {
            hyper::Method::POST => {
                drain.set(true);
                text(200, "draining")
            }
            hyper::Method::DELETE => {
                drain.set(false);
                text(200, "serving")
            }
            _ => text(405, "use POST or DELETE"),
        },
        ("/health", Some(drain)) if drain.is_draining() => text(503, "draining"),
        (path, _) => answer_path(spec, path).await,
    }
}

async fn answer_path(spec: &ReleaseSpec, path: &str) -> Response {
    match path {
        "/health" => match spec.health {
            HealthMode::Ok => text(200, "ok"),
            HealthMode::WrongBody => text(200, "degraded: database unreachable"),
            HealthMode::Error500 => text(500, "error"),
            HealthMode::Hang => {
                tokio::time::sleep(Duration::from_secs(300)).await;
                text(504, "hung")
            }
            HealthMode::Decays => {
                static FIRST: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
                match FIRST.get_or_init(std::time::Instant::now).elapsed() < Duration::from_secs(2) {
                    true => text(200, "ok"),
                    false => text(500, "decayed"),
                }
            }
            HealthMode::Flaky => {
                static ANSWERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
                match ANSWERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 3 {
                    2 => text(500, "flapping"),
                    _ => text(200, "ok"),
                }
            }
        },
        "/version" => text(200, spec.version.clone()),
        "/" => text(200, format!("hello from {}\n", spec.version)),
        _ => text(404, "not found"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_reports_its_tag_unless_told_otherwise() {
        assert_eq!(default_version("registry.example.com:5000/web:v2"), "v2");
        assert_eq!(default_version("web"), "web");
        let mut releases = Releases::new();
        releases.insert("web:3".into(), ReleaseSpec { version: "3.0.0".into(), ..Default::default() });
        assert_eq!(spec_for(&releases, "web:3").version, "3.0.0");
        assert_eq!(spec_for(&releases, "web:4").version, "4");
    }

    fn request(method: hyper::Method, path: &str) -> Request {
        Request { method, path: path.into(), query: None, headers: Default::default(), body: Default::default() }
    }

    #[tokio::test]
    async fn a_drained_instance_fails_health_but_serves_everything_else() {
        let (spec, drain) = (spec_for(&Releases::new(), "web:v1"), Drain::default());
        let get = |path| request(hyper::Method::GET, path);
        assert_eq!(answer_with(&spec, Some(&drain), &get("/health")).await.status(), 200);
        assert_eq!(answer_with(&spec, Some(&drain), &request(hyper::Method::POST, "/drain")).await.status(), 200);
        assert_eq!(answer_with(&spec, Some(&drain), &get("/health")).await.status(), 503);
        assert_eq!(answer_with(&spec, Some(&drain), &get("/version")).await.status(), 200);
        assert_eq!(answer_with(&spec, Some(&drain), &get("/")).await.status(), 200);
        assert_eq!(answer_with(&spec, Some(&drain), &request(hyper::Method::DELETE, "/drain")).await.status(), 200);
        assert_eq!(answer_with(&spec, Some(&drain), &get("/health")).await.status(), 200);
        // Without a switch there is nothing to drain, so nothing pretends to.
        assert_eq!(answer(&spec, &request(hyper::Method::POST, "/drain")).await.status(), 404);
    }
}
