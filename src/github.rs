//! GitHub Deployments as the release ledger.
//!
//! Each run with a `github-token` becomes a deployment of `GITHUB_SHA` whose statuses
//! follow it (in_progress, then success, failure or error), with a payload recording
//! what was deployed and what was live before; a rollback reads those payloads to find
//! the last good release. GitHub failing never stops a deploy: every error here becomes
//! a warning with advice. octocrab does the talking, through its generic requests and
//! our own small types, since it has no typed deployments API.

use std::time::Duration;

use http_body_util::BodyExt;
use octocrab::Octocrab;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::secret::Secret;

/// GitHub cuts descriptions at 140 characters.
const MAX_DESCRIPTION: usize = 140;
/// How many deployments a rollback looks back through.
const HISTORY_PAGES: u32 = 3;

/// What safe-deploy records in each deployment's payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub provider: String,
    pub app: String,
    pub command: String,
    /// The release this run set out to make live (an image, `v42`, a deployment id).
    pub target: String,
    /// The release live before the run.
    pub previous: Option<String>,
    /// The version the release reports, when the run knew it (e.g. the commit SHA).
    pub version: Option<String>,
}

/// One earlier deployment from the ledger, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub id: u64,
    pub sha: String,
    pub record: Record,
    /// Its latest status (`success`, `failure`, ...), if any.
    pub state: Option<String>,
    /// The release its success status says was left live (Heroku's `v43`, where the
    /// target was a source folder), if it says.
    pub live: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Deployment {
    id: u64,
    #[serde(default)]
    sha: String,
    #[serde(default)]
    payload: Value,
}

#[derive(Debug, Deserialize)]
struct Status {
    state: String,
    #[serde(default)]
    description: Option<String>,
}

/// How a deployment's success status names the release it left live; written by the
/// engine, read back here so a rollback goes to what really ran.
pub const LIVE_AND_HEALTHY: &str = " is live and healthy";

/// Where the run is: read from the runner's variables.
#[derive(Debug, Clone, Default)]
pub struct RunContext {
    pub api_url: String,
    pub server_url: String,
    pub repository: String,
    pub sha: String,
    pub run_id: Option<String>,
}

impl RunContext {
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> RunContext {
        let get = |k: &str| env(k).filter(|v| !v.is_empty());
        RunContext {
            api_url: get("GITHUB_API_URL").unwrap_or_else(|| "https://api.github.com".into()),
            server_url: get("GITHUB_SERVER_URL").unwrap_or_else(|| "https://github.com".into()),
            repository: get("GITHUB_REPOSITORY").unwrap_or_default(),
            sha: get("GITHUB_SHA").unwrap_or_default(),
            run_id: get("GITHUB_RUN_ID"),
        }
    }

    /// The workflow run's page, for `log_url`.
    pub fn run_url(&self) -> Option<String> {
        self.run_id.as_ref().map(|id| format!("{}/{}/actions/runs/{id}", self.server_url, self.repository))
    }

    /// The repository's deployments page for an environment.
    pub fn deployments_url(&self, environment: &str) -> String {
        let env: String = url::form_urlencoded::byte_serialize(environment.as_bytes()).collect();
        format!("{}/{}/deployments?environment={env}", self.server_url, self.repository)
    }
}

pub struct Ledger {
    octo: Octocrab,
    pub run: RunContext,
    pub environment: String,
    transient: bool,
    production: Option<bool>,
}

/// The answer to one request: its status and body, whatever the status.
struct Answer {
    status: u16,
    body: String,
    rate_limit_spent: bool,
}

impl Ledger {
    /// A ledger for this run, or the reason there cannot be one.
    pub fn new(
        token: &Secret,
        run: RunContext,
        environment: &str,
        transient: bool,
        production: Option<bool>,
    ) -> Result<Ledger, String> {
        if run.repository.split('/').count() != 2 {
            return Err("GITHUB_REPOSITORY is not set (owner/repo); deployments are recorded only on a runner".into());
        }
        if run.sha.is_empty() {
            return Err("GITHUB_SHA is not set; deployments are recorded only on a runner".into());
        }
        let octo = Octocrab::builder()
            .base_uri(run.api_url.as_str())
            .map_err(|e| format!("GITHUB_API_URL '{}' is not a URL: {e}", run.api_url))?
            .personal_token(token.expose().to_string())
            // octocrab itself sends `X-GitHub-Api-Version: 2022-11-28` and a User-Agent;
            // extra headers are appended, not replaced, so only what it lacks is added.
            .add_header(http::header::ACCEPT, "application/vnd.github+json".to_string())
            .set_connect_timeout(Some(Duration::from_secs(5)))
            .set_read_timeout(Some(Duration::from_secs(10)))
            .build()
            .map_err(|e| format!("could not set up the GitHub client: {e}"))?;
        Ok(Ledger { octo, run, environment: environment.to_string(), transient, production })
    }

    fn repo_path(&self, rest: &str) -> String {
        format!("/repos/{}{rest}", self.run.repository)
    }

    async fn send(&self, method: http::Method, path: &str, body: Option<&Value>) -> Result<Answer, String> {
        let response = match method {
            http::Method::POST => self.octo._post(path, body).await,
            _ => self.octo._get(path).await,
        }
        .map_err(|e| format!("GitHub could not be reached ({e})"))?;
        let status = response.status().as_u16();
        let rate_limit_spent = response
            .headers()
            .get("x-ratelimit-remaining")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() == "0");
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("GitHub's answer could not be read ({e})"))?
            .to_bytes();
        Ok(Answer { status, body: String::from_utf8_lossy(&bytes).into_owned(), rate_limit_spent })
    }

    /// Creates the deployment; returns its id. The engine marks it in progress.
    pub async fn start(&self, record: &Record) -> Result<u64, String> {
        let mut body = json!({
            "ref": self.run.sha,
            "task": "deploy",
            "auto_merge": false,
            "required_contexts": [],
            "environment": self.environment,
            "description": describe(&format!("safe-deploy {} {} to {}", record.command, record.target, record.app)),
            "transient_environment": self.transient,
            "payload": { "safe_deploy": record },
        });
        if let Some(production) = self.production {
            body["production_environment"] = json!(production);
        }
        let answer = self.send(http::Method::POST, &self.repo_path("/deployments"), Some(&body)).await?;
        if answer.status != 201 {
            return Err(explain(&answer, "create the deployment"));
        }
        let deployment: Deployment = serde_json::from_str(&answer.body)
            .map_err(|e| format!("GitHub's deployment answer does not parse ({e})"))?;
        Ok(deployment.id)
    }

    /// Adds a status to deployment `id`.
    pub async fn status(
        &self,
        id: u64,
        state: &str,
        description: &str,
        environment_url: Option<&str>,
    ) -> Result<(), String> {
        let mut body = json!({ "state": state, "description": describe(description) });
        if let Some(url) = self.run.run_url() {
            body["log_url"] = json!(url);
        }
        if let Some(url) = environment_url {
            body["environment_url"] = json!(url);
        }
        let answer =
            self.send(http::Method::POST, &self.repo_path(&format!("/deployments/{id}/statuses")), Some(&body)).await?;
        match answer.status {
            201 => Ok(()),
            _ => Err(explain(&answer, &format!("mark deployment {id} {state}"))),
        }
    }

    /// safe-deploy's earlier deployments of this app in this environment, newest first,
    /// each with its latest status.
    pub async fn history(&self, provider: &str, app: &str) -> Result<Vec<Entry>, String> {
        let env: String = url::form_urlencoded::byte_serialize(self.environment.as_bytes()).collect();
        let mut entries = Vec::new();
        for page in 1..=HISTORY_PAGES {
            let path = self.repo_path(&format!("/deployments?environment={env}&per_page=100&page={page}"));
            let answer = self.send(http::Method::GET, &path, None).await?;
            if answer.status != 200 {
                return Err(explain(&answer, "list earlier deployments"));
            }
            let deployments: Vec<Deployment> = serde_json::from_str(&answer.body)
                .map_err(|e| format!("GitHub's deployment list does not parse ({e})"))?;
            let last_page = deployments.len() < 100;
            for d in deployments {
                let Some(record) = record_of(&d.payload) else { continue };
                if record.provider == provider && record.app == app {
                    entries.push(Entry { id: d.id, sha: d.sha, record, state: None, live: None });
                }
            }
            if last_page {
                break;
            }
        }
        for entry in &mut entries {
            // Newest first: the first is the state now; a success among them says what was live.
            let path = self.repo_path(&format!("/deployments/{}/statuses?per_page=10", entry.id));
            let answer = self.send(http::Method::GET, &path, None).await?;
            if answer.status != 200 {
                return Err(explain(&answer, &format!("read the statuses of deployment {}", entry.id)));
            }
            let statuses: Vec<Status> = serde_json::from_str(&answer.body).unwrap_or_default();
            entry.state = statuses.first().map(|s| s.state.clone());
            entry.live = statuses
                .iter()
                .filter(|s| s.state == "success")
                .find_map(|s| s.description.as_deref()?.strip_suffix(LIVE_AND_HEALTHY).map(str::to_string));
        }
        Ok(entries)
    }
}

/// The safe-deploy record in a payload (an object, or a JSON string as the API allows).
pub fn record_of(payload: &Value) -> Option<Record> {
    let payload = match payload {
        Value::String(s) => serde_json::from_str(s).ok()?,
        other => other.clone(),
    };
    serde_json::from_value(payload.get("safe_deploy")?.clone()).ok()
}

/// A description GitHub accepts: at most 140 characters, cut at a character boundary.
pub fn describe(text: &str) -> String {
    if text.chars().count() <= MAX_DESCRIPTION {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(MAX_DESCRIPTION - 1).collect();
    cut.push('…');
    cut
}

/// What went wrong, and what to do about it.
fn explain(answer: &Answer, what: &str) -> String {
    let message = serde_json::from_str::<Value>(&answer.body)
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| answer.body.chars().take(200).collect());
    match answer.status {
        202 => format!(
            "GitHub merged the default branch into the ref instead of creating a deployment (202: {message}); safe-deploy sends auto_merge: false, so check what GITHUB_SHA points at"
        ),
        401 => "GitHub refused github-token (401); pass ${{ github.token }} or a token that can write deployments".into(),
        403 | 429 if answer.rate_limit_spent || message.to_lowercase().contains("rate limit") => format!(
            "GitHub's API rate limit is used up ({}: {message}); the deployment was not recorded, the deploy went on",
            answer.status
        ),
        403 => format!(
            "github-token may not {what} (403: {message}); give the job `permissions: deployments: write`"
        ),
        404 => format!("GitHub cannot find the repository or the deployment (404); check the token can see {what}"),
        409 => format!(
            "GitHub refused to {what} (409: {message}): a merge conflict or failing required status checks"
        ),
        422 => format!("GitHub found the request to {what} invalid (422: {message})"),
        s => format!("GitHub answered {s} when asked to {what}: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_fit_githubs_140_characters() {
        assert_eq!(describe("short"), "short");
        let long = "é".repeat(300);
        let d = describe(&long);
        assert_eq!(d.chars().count(), 140);
        assert!(d.ends_with('…'));
    }

    #[test]
    fn records_are_read_from_object_and_string_payloads() {
        let record = json!({"provider": "fly", "app": "web", "command": "deploy", "target": "img:1", "previous": null, "version": "abc"});
        let object = json!({ "safe_deploy": record });
        let string = Value::String(object.to_string());
        assert_eq!(record_of(&object).unwrap().target, "img:1");
        assert_eq!(record_of(&string).unwrap().version.as_deref(), Some("abc"));
        assert!(record_of(&json!({"other": 1})).is_none());
    }

    #[test]
    fn errors_say_what_to_do() {
        let answer = |status, body: &str, spent| Answer { status, body: body.into(), rate_limit_spent: spent };
        assert!(explain(
            &answer(403, r#"{"message":"Resource not accessible by integration"}"#, false),
            "create the deployment"
        )
        .contains("deployments: write"));
        assert!(explain(&answer(403, r#"{"message":"API rate limit exceeded"}"#, true), "x").contains("rate limit"));
        assert!(
            explain(&answer(202, r#"{"message":"Auto-merged main into x"}"#, false), "x").contains("auto_merge: false")
        );
        assert!(explain(&answer(409, r#"{"message":"Conflict"}"#, false), "x").contains("required status checks"));
        assert!(explain(&answer(422, r#"{"message":"Validation Failed"}"#, false), "x").contains("Validation Failed"));
    }

    #[test]
    fn the_run_context_links_the_run_and_the_deployments_page() {
        let run = RunContext::from_env(|k| match k {
            "GITHUB_REPOSITORY" => Some("acme/shop".into()),
            "GITHUB_RUN_ID" => Some("42".into()),
            _ => None,
        });
        assert_eq!(run.api_url, "https://api.github.com");
        assert_eq!(run.run_url().unwrap(), "https://github.com/acme/shop/actions/runs/42");
        assert_eq!(run.deployments_url("prod eu"), "https://github.com/acme/shop/deployments?environment=prod+eu");
    }
}
