//! Calls to the Heroku Platform API for one app: the version-3 Accept header and
//! `Range` paging, on the shared REST client (auth, rate limit, errors). What to call
//! when is the provider's business.

use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::http::{Call, HttpClient};
use crate::providers::rest::{Platform, RestClient};
use crate::providers::ProviderError;
use crate::shutdown::Shutdown;

pub const DEFAULT_API: &str = "https://api.heroku.com";
pub const VERSION_3: &str = "application/vnd.heroku+json; version=3";
/// The variant under which a formation update takes `docker_image` (what `heroku
/// container:release` sends); the public schema does not describe it.
pub const DOCKER_RELEASES: &str = "application/vnd.heroku+json; version=3.docker-releases";
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
    /// What made it, as Heroku describes it: "Deploy 1a2b3c4", "Rollback to v2". (Not
    /// who: an email address has no place in a public job log.)
    pub fn cause(&self) -> Option<String> {
        Some(self.description.trim().to_string()).filter(|d| !d.is_empty())
    }

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

pub static HEROKU: Platform = Platform {
    name: "Heroku",
    status_page: "status.heroku.com",
    rate_hint: "the account's API budget refills at about 75 requests a minute, re-run in a few minutes",
    low_water: 25,
    // Heroku refills about 75 tokens a minute.
    refill_pause: Duration::from_millis(800),
};

pub struct HerokuClient {
    rest: RestClient,
    pub app: String,
}

impl HerokuClient {
    pub fn new(http: HttpClient, base: url::Url, app: &str, token: &str) -> Result<HerokuClient, ProviderError> {
        Ok(HerokuClient { rest: RestClient::new(http, base, token, &HEROKU)?, app: app.to_string() })
    }

    pub fn calls(&self) -> usize {
        self.rest.calls()
    }

    fn app_path(&self, rest: &str) -> String {
        format!("/apps/{}{rest}", self.app)
    }

    fn call(&self, method: Method, path: &str, accept: &'static str) -> Call {
        self.rest.call(method, path).header(ACCEPT, HeaderValue::from_static(accept))
    }

    async fn json<T: DeserializeOwned>(&self, call: Call, what: &str, shutdown: &Shutdown) -> Result<T, ProviderError> {
        self.rest.json(call, what, shutdown).await
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
            let reply = self.rest.read(call, &what, shutdown).await?;
            let page: Vec<Release> = reply.json().map_err(|e| self.rest.garbled(&what, &e))?;
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
        self.rest.count(1);
        let reply = self.rest.http().send(&call, shutdown).await.map_err(ProviderError::from_http)?;
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

    /// The newest builds, newest first. The schema lets a builds list be cut by `id` or
    /// `started_at` only.
    pub async fn recent_builds(&self, shutdown: &Shutdown) -> Result<Vec<Build>, ProviderError> {
        let call = self
            .call(Method::GET, &self.app_path("/builds"), VERSION_3)
            .header(HeaderName::from_static("range"), HeaderValue::from_static("started_at ..; max=5, order=desc"));
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
        let redactor = self.rest.http().redactor().clone();
        let (status, text) = self
            .rest
            .http()
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
