//! Calls to the Heroku Platform API for one app: the version-3 Accept header, Bearer
//! auth, `Range` paging, the rate limit (`RateLimit-Remaining` read on every answer;
//! a 429 waits and retries in the HTTP layer), and statuses mapped to errors that say
//! what to do. What to call when is the provider's business.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::http::{Call, HttpClient, Reply};
use crate::providers::ProviderError;
use crate::shutdown::Shutdown;

pub const DEFAULT_API: &str = "https://api.heroku.com";
pub const VERSION_3: &str = "application/vnd.heroku+json; version=3";
/// The variant under which a formation update takes `docker_image` (what `heroku
/// container:release` sends); the public schema does not describe it.
pub const DOCKER_RELEASES: &str = "application/vnd.heroku+json; version=3.docker-releases";
/// Below this many tokens left, requests are spaced out while the bucket refills.
const LOW_WATER: u64 = 25;
/// Heroku refills about 75 tokens a minute.
const REFILL_PAUSE: Duration = Duration::from_millis(800);
/// Reads of a garbled answer before it counts as the platform's failure.
const GARBLED_TRIES: u32 = 4;
const GARBLED_BACKOFF: Duration = Duration::from_millis(250);
/// Pages of releases read before giving up on finding the current one.
const MAX_PAGES: usize = 20;

#[derive(Debug, Clone, Deserialize)]
pub struct App {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub generation: Option<Value>,
    #[serde(default)]
    pub stack: Option<Named>,
    #[serde(default)]
    pub web_url: Option<String>,
}

impl App {
    /// `cedar` or `fir`: an object `{name}` in the schema, a string in older answers.
    pub fn generation(&self) -> String {
        match &self.generation {
            Some(Value::String(s)) => s.clone(),
            Some(v) => v["name"].as_str().unwrap_or("cedar").to_string(),
            None => "cedar".into(),
        }
    }

    pub fn stack(&self) -> String {
        self.stack.as_ref().map(|s| s.name.clone()).unwrap_or_default()
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Named {
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct IdOnly {
    pub id: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Release {
    pub id: String,
    pub version: u64,
    pub status: String,
    #[serde(default)]
    pub current: bool,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub eligible_for_rollback: Option<bool>,
    #[serde(default)]
    pub output_stream_url: Option<String>,
    #[serde(default)]
    pub slug: Option<IdOnly>,
}

impl Release {
    /// The version this release copies, for a rollback ("Rollback to v42").
    pub fn copy_of(&self) -> Option<u64> {
        self.description.strip_prefix("Rollback to v")?.trim().parse().ok()
    }

    /// How a person names it: `v43`, or `v44 (a copy of v42)` for a rollback.
    pub fn label(&self) -> String {
        match self.copy_of() {
            Some(of) => format!("v{} (a copy of v{of})", self.version),
            None => format!("v{}", self.version),
        }
    }

    /// Whether a rollback may go to it: its slug still exists and Heroku allows it.
    pub fn can_return_to(&self) -> bool {
        self.status == "succeeded" && self.eligible_for_rollback != Some(false)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Formation {
    #[serde(rename = "type")]
    pub kind: String,
    pub quantity: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DynoRelease {
    pub id: String,
    pub version: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Dyno {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub state: String,
    pub release: Option<DynoRelease>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Build {
    pub id: String,
    pub status: String,
    #[serde(default)]
    pub output_stream_url: Option<String>,
    #[serde(default)]
    pub release: Option<IdOnly>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SourceBlob {
    pub get_url: String,
    pub put_url: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PromotionTarget {
    pub app: IdOnly,
    pub status: String,
    #[serde(default)]
    pub error_message: Option<String>,
    #[serde(default)]
    pub release: Option<IdOnly>,
}

fn garbled(what: &str, e: &serde_json::Error) -> ProviderError {
    ProviderError::Unavailable(format!(
        "Heroku's answer to {what} was not what the Platform API describes ({e}); re-run, or check status.heroku.com"
    ))
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    id: String,
    #[serde(default)]
    message: String,
}

pub struct HerokuClient {
    http: HttpClient,
    base: url::Url,
    pub app: String,
    auth: HeaderValue,
    calls: AtomicUsize,
    remaining: AtomicU64,
}

impl HerokuClient {
    pub fn new(http: HttpClient, base: url::Url, app: &str, token: &str) -> Result<HerokuClient, ProviderError> {
        let bare = token.trim().strip_prefix("Bearer ").unwrap_or(token.trim());
        let mut auth = HeaderValue::from_str(&format!("Bearer {bare}")).map_err(|_| {
            ProviderError::Failed("the token has characters an HTTP header cannot carry; check the secret".into())
        })?;
        auth.set_sensitive(true);
        Ok(HerokuClient {
            http,
            base,
            app: app.to_string(),
            auth,
            calls: AtomicUsize::new(0),
            remaining: AtomicU64::new(u64::MAX),
        })
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }

    /// Rate-limit tokens Heroku said were left at the last answer.
    pub fn remaining(&self) -> Option<u64> {
        Some(self.remaining.load(Ordering::Relaxed)).filter(|r| *r != u64::MAX)
    }

    fn url(&self, path: &str) -> url::Url {
        let mut u = self.base.clone();
        let base_path = u.path().trim_end_matches('/').to_string();
        u.set_path(&format!("{base_path}{path}"));
        u
    }

    fn app_path(&self, rest: &str) -> String {
        format!("/apps/{}{rest}", self.app)
    }

    async fn send(&self, mut call: Call, shutdown: &Shutdown) -> Result<Reply, ProviderError> {
        if self.remaining().is_some_and(|r| r < LOW_WATER) {
            tracing::info!(
                "Heroku's rate limit is nearly used up; pausing {} between requests",
                crate::config::human(REFILL_PAUSE)
            );
            if !shutdown.sleep(REFILL_PAUSE).await {
                return Err(ProviderError::Cancelled(shutdown.cause().unwrap_or("shutdown")));
            }
        }
        call = call.header(AUTHORIZATION, self.auth.clone());
        self.calls.fetch_add(1, Ordering::Relaxed);
        let reply = self.http.send(&call, shutdown).await.map_err(ProviderError::from_http)?;
        self.calls.fetch_add(reply.retries as usize, Ordering::Relaxed);
        if let Some(left) = reply.headers.get("ratelimit-remaining").and_then(|v| v.to_str().ok()?.trim().parse().ok())
        {
            self.remaining.store(left, Ordering::Relaxed);
        }
        Ok(reply)
    }

    fn call(&self, method: Method, path: &str, accept: &'static str) -> Call {
        Call::new(method, self.url(path)).header(ACCEPT, HeaderValue::from_static(accept))
    }

    /// Sends and reads a JSON answer. A garbled answer to a read is asked again after a
    /// pause that doubles, as a 5xx would be; a write is never sent twice for it.
    async fn json<T: DeserializeOwned>(&self, call: Call, what: &str, shutdown: &Shutdown) -> Result<T, ProviderError> {
        let reply = self.read(call, what, shutdown).await?;
        reply.json::<T>().map_err(|e| garbled(what, &e))
    }

    /// Sends `call` until its answer is a success that parses as JSON (reads only), or
    /// fails for good.
    async fn read(&self, call: Call, what: &str, shutdown: &Shutdown) -> Result<Reply, ProviderError> {
        let tries = if call.method == Method::GET { GARBLED_TRIES } else { 1 };
        let mut attempt = 0;
        loop {
            let reply = self.send(call.clone(), shutdown).await?;
            if !reply.is_success() {
                return Err(self.error(reply.status, &reply.body, what));
            }
            attempt += 1;
            match serde_json::from_slice::<serde::de::IgnoredAny>(&reply.body) {
                Ok(_) => return Ok(reply),
                Err(e) if attempt >= tries => return Err(garbled(what, &e)),
                Err(e) => {
                    tracing::info!("Heroku answered {what} with JSON that does not parse ({e}); asking again");
                    let pause = GARBLED_BACKOFF * 2u32.pow(attempt - 1) + Duration::from_millis(fastrand::u64(0..100));
                    if !shutdown.sleep(pause).await {
                        return Err(ProviderError::Cancelled(shutdown.cause().unwrap_or("shutdown")));
                    }
                }
            }
        }
    }

    fn error(&self, status: u16, body: &[u8], what: &str) -> ProviderError {
        let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
        let text = self.http.redactor().redact(&match &parsed {
            Some(e) if !e.message.is_empty() => format!("{} ({})", e.message, e.id),
            _ => String::from_utf8_lossy(body).chars().take(200).collect(),
        });
        match status {
            401 => ProviderError::Unauthenticated { provider: "Heroku" },
            403 => ProviderError::PermissionDenied { provider: "Heroku", operation: what.to_string() },
            404 => ProviderError::NotFound { provider: "Heroku", what: format!("{what}: {text}") },
            409 => ProviderError::Conflict { what: what.to_string(), detail: text },
            429 => ProviderError::Unavailable(format!(
                "Heroku kept answering 429 (rate limit) to {what} after retries; the account's API budget refills at about 75 requests a minute, re-run in a few minutes"
            )),
            408 | 500..=599 => ProviderError::Unavailable(format!("Heroku answered {status} to {what}: {text}")),
            _ => ProviderError::Failed(format!("Heroku answered {status} to {what}: {text}")),
        }
    }

    pub async fn app(&self, shutdown: &Shutdown) -> Result<App, ProviderError> {
        let what = format!("reading app {}", self.app);
        self.json(self.call(Method::GET, &self.app_path(""), VERSION_3), &what, shutdown).await
    }

    /// Releases newest first, page by page (`Range` and `Next-Range`), until `enough`
    /// says so or `MAX_PAGES` were read.
    pub async fn releases_newest_first(
        &self,
        page_size: usize,
        shutdown: &Shutdown,
        mut enough: impl FnMut(&[Release]) -> bool,
    ) -> Result<Vec<Release>, ProviderError> {
        let mut all = Vec::new();
        let mut range = format!("version ..; max={page_size}, order=desc");
        for _ in 0..MAX_PAGES {
            let call = self.call(Method::GET, &self.app_path("/releases"), VERSION_3).header(
                HeaderName::from_static("range"),
                HeaderValue::from_str(&range).map_err(|_| ProviderError::Failed("bug: a bad Range header".into()))?,
            );
            let what = format!("listing the releases of {}", self.app);
            let reply = self.read(call, &what, shutdown).await?;
            let page: Vec<Release> = reply.json().map_err(|e| garbled(&what, &e))?;
            all.extend(page);
            let next = reply.headers.get("next-range").and_then(|v| v.to_str().ok()).map(str::to_string);
            match next {
                Some(n) if reply.status == 206 && !enough(&all) => range = n,
                _ => break,
            }
        }
        Ok(all)
    }

    /// The live release (`current`).
    pub async fn current_release(&self, shutdown: &Shutdown) -> Result<Option<Release>, ProviderError> {
        let all = self.releases_newest_first(25, shutdown, |seen| seen.iter().any(|r| r.current)).await?;
        Ok(all.into_iter().find(|r| r.current))
    }

    /// One release, by id or version.
    pub async fn release(&self, key: &str, shutdown: &Shutdown) -> Result<Release, ProviderError> {
        let what = format!("reading release {key} of {}", self.app);
        self.json(self.call(Method::GET, &self.app_path(&format!("/releases/{key}")), VERSION_3), &what, shutdown).await
    }

    pub async fn formation(&self, shutdown: &Shutdown) -> Result<Vec<Formation>, ProviderError> {
        let what = format!("reading the formation of {}", self.app);
        self.json(self.call(Method::GET, &self.app_path("/formation"), VERSION_3), &what, shutdown).await
    }

    /// Whether preboot is on; an app without the feature listed has it off.
    pub async fn preboot(&self, shutdown: &Shutdown) -> Result<bool, ProviderError> {
        let what = format!("reading the preboot feature of {}", self.app);
        match self
            .json::<Value>(self.call(Method::GET, &self.app_path("/features/preboot"), VERSION_3), &what, shutdown)
            .await
        {
            Ok(v) => Ok(v["enabled"].as_bool().unwrap_or(false)),
            Err(ProviderError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub async fn dynos(&self, shutdown: &Shutdown) -> Result<Vec<Dyno>, ProviderError> {
        let what = format!("listing the dynos of {}", self.app);
        self.json(self.call(Method::GET, &self.app_path("/dynos"), VERSION_3), &what, shutdown).await
    }

    /// A pair of URLs to upload source to and build it from.
    pub async fn create_source(&self, shutdown: &Shutdown) -> Result<SourceBlob, ProviderError> {
        #[derive(Deserialize)]
        struct Answer {
            source_blob: SourceBlob,
        }
        let call = self.call(Method::POST, "/sources", VERSION_3).idempotent(true);
        let answer: Answer = self.json(call, "creating a source upload URL", shutdown).await?;
        Ok(answer.source_blob)
    }

    /// PUTs the tarball to the pre-signed URL, which takes no Heroku auth.
    pub async fn upload(&self, put_url: &str, tarball: Vec<u8>, shutdown: &Shutdown) -> Result<(), ProviderError> {
        let url = url::Url::parse(put_url)
            .map_err(|e| ProviderError::Failed(format!("Heroku's upload URL does not parse: {e}")))?;
        let mut call = Call::new(Method::PUT, url).raw(tarball);
        call.headers.push((CONTENT_TYPE, HeaderValue::from_static("")));
        call.timeout = Some(Duration::from_secs(300));
        self.calls.fetch_add(1, Ordering::Relaxed);
        let reply = self.http.send(&call, shutdown).await.map_err(ProviderError::from_http)?;
        match reply.status {
            200..=299 => Ok(()),
            500..=599 => {
                Err(ProviderError::Unavailable(format!("the source upload answered {}; re-run", reply.status)))
            }
            s => Err(ProviderError::Failed(format!(
                "the source upload answered {s}: {}",
                reply.text().chars().take(200).collect::<String>()
            ))),
        }
    }

    /// Starts a build of the uploaded source. Not repeated: a second would make a
    /// second release.
    pub async fn create_build(
        &self,
        get_url: &str,
        version: &str,
        shutdown: &Shutdown,
    ) -> Result<Build, ProviderError> {
        // No `buildpacks`: the app's own setting applies on Cedar, project.toml on Fir.
        let body = json!({ "source_blob": { "url": get_url, "version": version } });
        let call = self.call(Method::POST, &self.app_path("/builds"), VERSION_3).json(body).idempotent(false);
        self.json(call, &format!("starting a build of {}", self.app), shutdown).await
    }

    /// The newest builds, newest first.
    pub async fn recent_builds(&self, shutdown: &Shutdown) -> Result<Vec<Build>, ProviderError> {
        let call = self
            .call(Method::GET, &self.app_path("/builds"), VERSION_3)
            .header(HeaderName::from_static("range"), HeaderValue::from_static("created_at ..; max=5, order=desc"));
        self.json(call, &format!("listing the builds of {}", self.app), shutdown).await
    }

    pub async fn build(&self, id: &str, shutdown: &Shutdown) -> Result<Build, ProviderError> {
        let what = format!("reading build {id}");
        self.json(self.call(Method::GET, &self.app_path(&format!("/builds/{id}")), VERSION_3), &what, shutdown).await
    }

    /// A build's or release phase's output, read as it comes until the stream closes
    /// (when the build or the release command is done), each line (redacted) handed to
    /// `on_line`. No Heroku auth: the URL is pre-signed.
    pub async fn stream(
        &self,
        url: &str,
        limit: Duration,
        shutdown: &Shutdown,
        mut on_line: impl FnMut(&str),
    ) -> Result<String, ProviderError> {
        let url = url::Url::parse(url).map_err(|e| ProviderError::Failed(format!("a log URL does not parse: {e}")))?;
        let mut call = Call::new(Method::GET, url);
        call.timeout = Some(limit.max(Duration::from_secs(1)));
        let redactor = self.http.redactor().clone();
        let (status, text) = self
            .http
            .stream_lines(&call, shutdown, |line| on_line(&redactor.redact(line)))
            .await
            .map_err(ProviderError::from_http)?;
        match status {
            200..=299 => Ok(redactor.redact(&text)),
            s => Err(ProviderError::Unavailable(format!("the log stream answered {s}"))),
        }
    }

    /// Cancels a build still running: nothing it would release is released.
    pub async fn cancel_build(&self, id: &str, shutdown: &Shutdown) -> Result<Build, ProviderError> {
        let mut call = self.call(Method::DELETE, &self.app_path(&format!("/builds/{id}")), VERSION_3);
        call.timeout = Some(Duration::from_secs(2));
        self.json(call, &format!("cancelling build {id}"), shutdown).await
    }

    /// Releases a container image on the web process, as `heroku container:release`.
    pub async fn release_image(&self, image: &str, shutdown: &Shutdown) -> Result<(), ProviderError> {
        let body = json!({ "updates": [{ "type": "web", "docker_image": image }] });
        let call = self.call(Method::PATCH, &self.app_path("/formation"), DOCKER_RELEASES).json(body).idempotent(false);
        let _: Value = self.json(call, &format!("releasing image {image} to {}", self.app), shutdown).await?;
        Ok(())
    }

    /// Heroku's own rollback: a new release with the slug and config of `release_id`.
    pub async fn rollback(&self, release_id: &str, shutdown: &Shutdown) -> Result<Release, ProviderError> {
        let body = json!({ "release": release_id });
        let call = self.call(Method::POST, &self.app_path("/releases"), VERSION_3).json(body).idempotent(false);
        self.json(call, &format!("rolling {} back", self.app), shutdown).await
    }

    /// The pipeline `app` is coupled to, and its stage; None when it is in none.
    pub async fn coupling(
        &self,
        app: &str,
        shutdown: &Shutdown,
    ) -> Result<Option<(String, String, String)>, ProviderError> {
        let what = format!("reading the pipeline coupling of {app}");
        let call = self.call(Method::GET, &format!("/apps/{app}/pipeline-couplings"), VERSION_3);
        match self.json::<Value>(call, &what, shutdown).await {
            Ok(v) => Ok(Some((
                v["pipeline"]["id"].as_str().unwrap_or_default().to_string(),
                v["stage"].as_str().unwrap_or_default().to_string(),
                v["app"]["id"].as_str().unwrap_or_default().to_string(),
            ))),
            Err(ProviderError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn promote(
        &self,
        pipeline: &str,
        source_app: &str,
        target_app: &str,
        shutdown: &Shutdown,
    ) -> Result<String, ProviderError> {
        let body = json!({
            "pipeline": { "id": pipeline },
            "source": { "app": { "id": source_app } },
            "targets": [{ "app": { "id": target_app } }],
        });
        let call = self.call(Method::POST, "/pipeline-promotions", VERSION_3).json(body).idempotent(false);
        let v: Value = self.json(call, "starting a pipeline promotion", shutdown).await?;
        v["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| ProviderError::Unavailable("Heroku's promotion answer has no id".into()))
    }

    pub async fn promotion_targets(
        &self,
        id: &str,
        shutdown: &Shutdown,
    ) -> Result<Vec<PromotionTarget>, ProviderError> {
        let call = self.call(Method::GET, &format!("/pipeline-promotions/{id}/promotion-targets"), VERSION_3);
        self.json(call, &format!("reading promotion {id}"), shutdown).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(version: u64, status: &str, description: &str, eligible: Option<bool>) -> Release {
        Release {
            id: format!("id-{version}"),
            version,
            status: status.into(),
            current: false,
            description: description.into(),
            eligible_for_rollback: eligible,
            output_stream_url: None,
            slug: None,
        }
    }

    #[test]
    fn only_a_release_that_succeeded_and_is_eligible_can_be_returned_to() {
        assert!(release(3, "succeeded", "Deploy abc", Some(true)).can_return_to());
        assert!(release(3, "succeeded", "Deploy abc", None).can_return_to(), "older answers lack the field");
        assert!(!release(3, "succeeded", "Deploy abc", Some(false)).can_return_to());
        for status in ["expired", "failed", "pending", "something-new"] {
            assert!(!release(3, status, "Deploy abc", Some(true)).can_return_to(), "{status}");
        }
    }

    #[test]
    fn a_rollback_release_says_what_it_copies() {
        assert_eq!(release(44, "succeeded", "Rollback to v42", None).label(), "v44 (a copy of v42)");
        assert_eq!(release(43, "succeeded", "Deploy 1a2b3c4d", None).label(), "v43");
        assert_eq!(release(45, "succeeded", "Rollback to vX", None).copy_of(), None);
    }

    #[test]
    fn the_generation_is_read_from_either_shape() {
        let app =
            |g: Value| App { id: "a".into(), name: "shop".into(), generation: Some(g), stack: None, web_url: None };
        assert_eq!(app(json!({ "id": "x", "name": "fir" })).generation(), "fir");
        assert_eq!(app(json!("cedar")).generation(), "cedar");
    }
}
