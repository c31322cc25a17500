//! Calls to DigitalOcean's App Platform API (`/v2/apps`) and its wire types, on the
//! shared REST client. Bodies follow the official OpenAPI description: a body is
//! always sent where one is required (`{"force_build": false}`, never nothing) and
//! never where none is declared (commit, revert, cancel).

use std::time::Duration;

use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::http::{Call, HttpClient};
use crate::providers::rest::{Platform, RestClient};
use crate::providers::ProviderError;
use crate::shutdown::Shutdown;

pub const DEFAULT_API: &str = "https://api.digitalocean.com";

pub static DIGITALOCEAN: Platform = Platform {
    name: "DigitalOcean",
    status_page: "status.digitalocean.com",
    rate_hint: "the token's budget is 250 requests a minute and 5,000 an hour; re-run in a few minutes",
    low_water: 50,
    // 5,000 an hour is about 1.4 a second.
    refill_pause: Duration::from_millis(750),
};

/// Pages of apps or deployments read at most.
const MAX_PAGES: usize = 20;

#[derive(Debug, Clone, Deserialize)]
pub struct App {
    pub id: String,
    #[serde(default)]
    pub spec: Value,
    #[serde(default)]
    pub live_url: Option<String>,
    #[serde(default)]
    pub active_deployment: Option<Deployment>,
    #[serde(default)]
    pub in_progress_deployment: Option<Deployment>,
    #[serde(default)]
    pub pending_deployment: Option<Deployment>,
    /// Present only while the app is pinned to a rollback.
    #[serde(default)]
    pub pinned_deployment: Option<Deployment>,
}

impl App {
    pub fn name(&self) -> String {
        self.spec["name"].as_str().unwrap_or_default().to_string()
    }

    /// A deployment under way: in progress, or queued (pending) and not started yet.
    pub fn under_way(&self) -> Option<&Deployment> {
        self.under_way_all().next()
    }

    /// Every deployment under way: the one in progress, then the one queued behind it.
    pub fn under_way_all(&self) -> impl Iterator<Item = &Deployment> {
        self.in_progress_deployment.iter().chain(&self.pending_deployment).filter(|d| !d.id.is_empty())
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Deployment {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub spec: Value,
    #[serde(default = "unknown")]
    pub phase: String,
    #[serde(default)]
    pub progress: Option<Progress>,
    #[serde(default)]
    pub cause: Option<String>,
    /// The deployment a rollback copies.
    #[serde(default)]
    pub cloned_from: Option<String>,
    /// `{type: MANUAL_ROLLBACK | AUTO_ROLLBACK | MANUAL | ...}` (godo; not in the description).
    #[serde(default)]
    pub cause_details: Option<Value>,
}

fn unknown() -> String {
    "UNKNOWN".into()
}

/// A deployment's progress. Only what is used is read, as the description types it
/// (`integer`, which may be negative): one odd number elsewhere in an answer must not
/// make the whole answer unreadable.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Progress {
    #[serde(default)]
    pub success_steps: i64,
    #[serde(default)]
    pub total_steps: i64,
    #[serde(default)]
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Step {
    #[serde(default)]
    pub name: String,
    #[serde(default = "unknown")]
    pub status: String,
    #[serde(default)]
    pub steps: Vec<Step>,
    #[serde(default)]
    pub reason: Option<Reason>,
    #[serde(default)]
    pub component_name: Option<String>,
    #[serde(default)]
    pub message_base: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Reason {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
}

impl Deployment {
    /// A rollback made it (App Platform's cause says so).
    pub fn is_rollback(&self) -> bool {
        let kind = self.cause_details.as_ref().and_then(|c| c["type"].as_str()).unwrap_or_default();
        matches!(kind, "MANUAL_ROLLBACK" | "AUTO_ROLLBACK")
    }

    /// It finished every step, so it was live at some point (an old one that a later
    /// deployment replaced is SUPERSEDED too, but one superseded mid-way is not done).
    pub fn completed(&self) -> bool {
        match self.phase.as_str() {
            "ACTIVE" => true,
            "SUPERSEDED" => {
                self.progress.as_ref().is_some_and(|p| p.total_steps > 0 && p.success_steps == p.total_steps)
            }
            _ => false,
        }
    }
}

/// What `rollback/validate` says.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Validation {
    #[serde(default)]
    pub valid: bool,
    #[serde(default)]
    pub error: Option<Condition>,
    #[serde(default)]
    pub warnings: Vec<Condition>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Condition {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub components: Vec<String>,
}

impl Condition {
    pub fn describe(&self) -> String {
        match self.components.as_slice() {
            [] => format!("{} ({})", self.message, self.code),
            c => format!("{} ({}; {})", self.message, self.code, c.join(", ")),
        }
    }
}

#[derive(Deserialize)]
struct AppBody {
    app: App,
}

#[derive(Deserialize)]
struct DeploymentBody {
    deployment: Deployment,
}

/// The shape of a DigitalOcean id (a UUID): anything else is a name.
pub fn is_uuid(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12]) && parts.iter().all(|p| p.chars().all(|c| c.is_ascii_hexdigit()))
}

pub struct AppsClient {
    rest: RestClient,
}

impl AppsClient {
    pub fn new(http: HttpClient, base: url::Url, token: &str) -> Result<AppsClient, ProviderError> {
        Ok(AppsClient { rest: RestClient::new(http, base, token, &DIGITALOCEAN)? })
    }

    pub fn calls(&self) -> usize {
        self.rest.calls()
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        call: Call,
        what: &str,
        shutdown: &Shutdown,
    ) -> Result<T, ProviderError> {
        self.rest.json(call, what, shutdown).await
    }

    /// The app by id, or by name as doctl finds it: through the list, matching
    /// `spec.name` (GET by name is not something clients rely on).
    pub async fn find_app(&self, app: &str, shutdown: &Shutdown) -> Result<App, ProviderError> {
        if is_uuid(app) {
            return self.app(app, shutdown).await;
        }
        for page in 1..=MAX_PAGES {
            let call = self.rest.call(Method::GET, &format!("/v2/apps?page={page}&per_page=200"));
            let body: Value = self.json(call, "listing the apps", shutdown).await?;
            let apps = body["apps"].as_array().cloned().unwrap_or_default();
            // By name, or by the short id the output shows (its first 8 characters).
            let short_id = |a: &Value| app.len() >= 8 && a["id"].as_str().is_some_and(|id| id.starts_with(app));
            if let Some(found) = apps.into_iter().find(|a| a["spec"]["name"].as_str() == Some(app) || short_id(a)) {
                return serde_json::from_value(found).map_err(|e| self.rest.garbled("listing the apps", &e));
            }
            if body["links"]["pages"]["next"].as_str().unwrap_or_default().is_empty() {
                break;
            }
        }
        Err(ProviderError::NotFound { provider: "DigitalOcean", what: format!("app {app}") })
    }

    pub async fn app(&self, id: &str, shutdown: &Shutdown) -> Result<App, ProviderError> {
        let call = self.rest.call(Method::GET, &format!("/v2/apps/{id}"));
        let body: AppBody = self.json(call, &format!("reading app {id}"), shutdown).await?;
        Ok(body.app)
    }

    /// Puts the new spec: App Platform starts a deployment of it by itself.
    pub async fn update(&self, id: &str, spec: &Value, shutdown: &Shutdown) -> Result<App, ProviderError> {
        let body = json!({ "spec": spec, "update_all_source_versions": false });
        let call = self.rest.call(Method::PUT, &format!("/v2/apps/{id}")).json(body).idempotent(false);
        let body: AppBody = self.json(call, &format!("updating the spec of app {id}"), shutdown).await?;
        Ok(body.app)
    }

    pub async fn create_deployment(
        &self,
        id: &str,
        force_build: bool,
        shutdown: &Shutdown,
    ) -> Result<Deployment, ProviderError> {
        let call = self
            .rest
            .call(Method::POST, &format!("/v2/apps/{id}/deployments"))
            .json(json!({ "force_build": force_build }))
            .idempotent(false);
        let body: DeploymentBody = self.json(call, &format!("creating a deployment of app {id}"), shutdown).await?;
        Ok(body.deployment)
    }

    pub async fn deployment(&self, app: &str, id: &str, shutdown: &Shutdown) -> Result<Deployment, ProviderError> {
        let call = self.rest.call(Method::GET, &format!("/v2/apps/{app}/deployments/{id}"));
        let body: DeploymentBody = self.json(call, &format!("reading deployment {id}"), shutdown).await?;
        Ok(body.deployment)
    }

    /// Deployments newest first, up to `pages` pages of `per_page`.
    pub async fn deployments(
        &self,
        app: &str,
        per_page: usize,
        pages: usize,
        shutdown: &Shutdown,
    ) -> Result<Vec<Deployment>, ProviderError> {
        let mut all = Vec::new();
        for page in 1..=pages.min(MAX_PAGES) {
            let call =
                self.rest.call(Method::GET, &format!("/v2/apps/{app}/deployments?page={page}&per_page={per_page}"));
            let body: Value = self.json(call, &format!("listing the deployments of app {app}"), shutdown).await?;
            let list: Vec<Deployment> = serde_json::from_value(body["deployments"].clone())
                .map_err(|e| self.rest.garbled("listing the deployments", &e))?;
            all.extend(list);
            if body["links"]["pages"]["next"].as_str().unwrap_or_default().is_empty() {
                break;
            }
        }
        Ok(all)
    }

    pub async fn cancel(&self, app: &str, id: &str, shutdown: &Shutdown) -> Result<Deployment, ProviderError> {
        let mut call = self.rest.call(Method::POST, &format!("/v2/apps/{app}/deployments/{id}/cancel"));
        call.timeout = Some(Duration::from_secs(3));
        let body: DeploymentBody = self.json(call, &format!("cancelling deployment {id}"), shutdown).await?;
        Ok(body.deployment)
    }

    pub async fn validate_rollback(
        &self,
        app: &str,
        deployment: &str,
        skip_pin: bool,
        shutdown: &Shutdown,
    ) -> Result<Validation, ProviderError> {
        let body = json!({ "deployment_id": deployment, "skip_pin": skip_pin });
        // It changes nothing, so asking again after a 5xx is safe.
        let call =
            self.rest.call(Method::POST, &format!("/v2/apps/{app}/rollback/validate")).json(body).idempotent(true);
        self.json(call, &format!("validating a rollback to deployment {deployment}"), shutdown).await
    }

    pub async fn rollback(
        &self,
        app: &str,
        deployment: &str,
        skip_pin: bool,
        shutdown: &Shutdown,
    ) -> Result<Deployment, ProviderError> {
        let body = json!({ "deployment_id": deployment, "skip_pin": skip_pin });
        let call = self.rest.call(Method::POST, &format!("/v2/apps/{app}/rollback")).json(body).idempotent(false);
        let body: DeploymentBody =
            self.json(call, &format!("rolling app {app} back to deployment {deployment}"), shutdown).await?;
        Ok(body.deployment)
    }

    /// Lifts the pin of a rollback, keeping it. No body: the description declares none.
    pub async fn commit_rollback(&self, app: &str, shutdown: &Shutdown) -> Result<(), ProviderError> {
        let call = self.rest.call(Method::POST, &format!("/v2/apps/{app}/rollback/commit")).idempotent(true);
        self.rest.send_ok(call, &format!("committing the rollback of app {app}"), shutdown).await
    }

    /// Undoes a pinned rollback: a new deployment of the spec from before it, unpinned.
    pub async fn revert_rollback(&self, app: &str, shutdown: &Shutdown) -> Result<Deployment, ProviderError> {
        let call = self.rest.call(Method::POST, &format!("/v2/apps/{app}/rollback/revert")).idempotent(false);
        let body: DeploymentBody = self.json(call, &format!("reverting the rollback of app {app}"), shutdown).await?;
        Ok(body.deployment)
    }

    /// The log URLs of one stage (`BUILD`, `DEPLOY`) of a deployment; none when the
    /// stage never ran (App Platform answers 400 then).
    pub async fn log_urls(
        &self,
        app: &str,
        deployment: &str,
        kind: &str,
        shutdown: &Shutdown,
    ) -> Result<Vec<String>, ProviderError> {
        let call = self.rest.call(Method::GET, &format!("/v2/apps/{app}/deployments/{deployment}/logs?type={kind}"));
        let what = format!("reading the {kind} logs of deployment {deployment}");
        let reply = self.rest.send(call, shutdown).await?;
        match reply.status {
            400 => Ok(Vec::new()),
            200..=299 => {
                let v: Value = reply.json().map_err(|e| self.rest.garbled(&what, &e))?;
                Ok(v["historic_urls"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|u| u.as_str().map(str::to_string))
                    .collect())
            }
            s => Err(self.rest.error(s, &reply.body, &what)),
        }
    }

    /// A log file behind a pre-signed URL (no DigitalOcean auth), redacted.
    pub async fn download(&self, url: &str, shutdown: &Shutdown) -> Result<String, ProviderError> {
        let url = url::Url::parse(url).map_err(|e| ProviderError::Failed(format!("a log URL does not parse: {e}")))?;
        let mut call = Call::new(Method::GET, url);
        call.timeout = Some(Duration::from_secs(10));
        self.rest.count(1);
        let reply = self.rest.http().send(&call, shutdown).await.map_err(ProviderError::from_http)?;
        match reply.status {
            200..=299 => Ok(self.rest.http().redactor().redact(&reply.text())),
            s => Err(ProviderError::Unavailable(format!("a log download answered {s}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_deployment_that_finished_every_step_counts_as_once_live() {
        let dep = |phase: &str, done: i64, total: i64| Deployment {
            phase: phase.into(),
            progress: Some(Progress { success_steps: done, total_steps: total, ..Default::default() }),
            ..Default::default()
        };
        assert!(dep("ACTIVE", 6, 6).completed());
        assert!(dep("SUPERSEDED", 6, 6).completed(), "replaced later by a newer one");
        assert!(!dep("SUPERSEDED", 2, 6).completed(), "superseded mid-way, never live");
        assert!(!dep("SUPERSEDED", 0, 0).completed(), "no steps say nothing");
        for phase in ["ERROR", "CANCELED", "DEPLOYING", "UNKNOWN", "SOMETHING_NEW"] {
            assert!(!dep(phase, 6, 6).completed(), "{phase}");
        }
    }

    #[test]
    fn negative_counts_the_description_allows_leave_a_deployment_readable() {
        let d: Deployment = serde_json::from_value(serde_json::json!({
            "id": "d1", "phase": "DEPLOYING",
            "progress": { "success_steps": 2, "total_steps": 6, "error_steps": -1, "pending_steps": -4, "running_steps": -1 }
        }))
        .expect("readable");
        assert_eq!(d.progress.map(|p| (p.success_steps, p.total_steps)), Some((2, 6)));
    }

    #[test]
    fn ids_are_uuids_and_anything_else_is_a_name() {
        assert!(is_uuid("4f6c71e2-1e90-4762-9fee-6cc4a0a9f2cf"));
        assert!(!is_uuid("shop"));
        assert!(!is_uuid("4f6c71e2-1e90-4762-9fee"));
    }
}
