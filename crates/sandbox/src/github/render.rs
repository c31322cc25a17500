//! The JSON GitHub answers with: deployments, deployment statuses, the user that
//! created them, error bodies and `Link` headers, shaped after the `deployment`,
//! `deployment-status`, `simple-user`, `basic-error` and `validation-error` schemas of
//! GitHub's OpenAPI description (Prism checks them in `.ci/conformance-github`).
//! Also the identifiers and times those objects carry.

use serde_json::{json, Value};

use super::state::{Deployment, Status};

/// Where the answers' URLs point: the emulator's base URL and the repository.
pub struct Urls<'a> {
    pub base: &'a str,
    pub owner: &'a str,
    pub repo: &'a str,
}

impl Urls<'_> {
    pub fn repository(&self) -> String {
        format!("{}/repos/{}/{}", self.base, self.owner, self.repo)
    }

    pub fn deployment(&self, id: u64) -> String {
        format!("{}/deployments/{id}", self.repository())
    }
}

pub fn deployment(d: &Deployment, urls: &Urls) -> Value {
    let url = urls.deployment(d.id);
    json!({
        "url": url,
        "id": d.id,
        "node_id": node_id("Deployment", d.id),
        "sha": d.sha,
        "ref": d.r#ref,
        "task": d.task,
        "payload": d.payload,
        "original_environment": d.original_environment,
        "environment": d.environment,
        "description": d.description,
        "creator": creator(urls.base),
        "created_at": rfc3339(d.created_at),
        "updated_at": rfc3339(d.updated_at),
        "statuses_url": format!("{url}/statuses"),
        "repository_url": urls.repository(),
        "transient_environment": d.transient_environment,
        "production_environment": d.production_environment,
        // A GITHUB_TOKEN's deployments name the Actions app here; null is what a
        // personal token gets, and the schema allows it.
        "performed_via_github_app": null,
    })
}

pub fn status(deployment_id: u64, s: &Status, urls: &Urls) -> Value {
    let deployment_url = urls.deployment(deployment_id);
    // GitHub keeps one URL for both fields: `log_url` superseded `target_url` and
    // setting either shows up in both. Unset URLs are "", not null, as GitHub sends.
    let log = s.log_url.clone().or_else(|| s.target_url.clone()).unwrap_or_default();
    json!({
        "url": format!("{deployment_url}/statuses/{}", s.id),
        "id": s.id,
        "node_id": node_id("DeploymentStatus", s.id),
        "state": s.state,
        "creator": creator(urls.base),
        "description": s.description.clone().unwrap_or_default(),
        "environment": s.environment,
        "target_url": log,
        "created_at": rfc3339(s.created_at),
        "updated_at": rfc3339(s.created_at),
        "deployment_url": deployment_url,
        "repository_url": urls.repository(),
        "environment_url": s.environment_url.clone().unwrap_or_default(),
        "log_url": log,
        "performed_via_github_app": null,
    })
}

/// The bot a workflow's GITHUB_TOKEN acts as; its API URLs point at the emulator.
fn creator(base: &str) -> Value {
    let user = format!("{base}/users/github-actions%5Bbot%5D");
    json!({
        "login": "github-actions[bot]",
        "id": 41898282,
        "node_id": "MDM6Qm90NDE4OTgyODI=",
        "avatar_url": "https://avatars.githubusercontent.com/in/15368?v=4",
        "gravatar_id": "",
        "url": user,
        "html_url": "https://github.com/apps/github-actions",
        "followers_url": format!("{user}/followers"),
        "following_url": format!("{user}/following{{/other_user}}"),
        "gists_url": format!("{user}/gists{{/gist_id}}"),
        "starred_url": format!("{user}/starred{{/owner}}{{/repo}}"),
        "subscriptions_url": format!("{user}/subscriptions"),
        "organizations_url": format!("{user}/orgs"),
        "repos_url": format!("{user}/repos"),
        "events_url": format!("{user}/events{{/privacy}}"),
        "received_events_url": format!("{user}/received_events"),
        "type": "Bot",
        "user_view_type": "public",
        "site_admin": false,
    })
}

/// Where GitHub's error bodies send the reader for each operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Doc {
    Rest,
    CreateDeployment,
    GetDeployment,
    DeleteDeployment,
    ListStatuses,
    CreateStatus,
    GetStatus,
    RateLimits,
    UserAgent,
}

impl Doc {
    pub fn url(self) -> &'static str {
        match self {
            Doc::Rest => "https://docs.github.com/rest",
            Doc::CreateDeployment => "https://docs.github.com/rest/deployments/deployments#create-a-deployment",
            Doc::GetDeployment => "https://docs.github.com/rest/deployments/deployments#get-a-deployment",
            Doc::DeleteDeployment => "https://docs.github.com/rest/deployments/deployments#delete-a-deployment",
            Doc::ListStatuses => "https://docs.github.com/rest/deployments/statuses#list-deployment-statuses",
            Doc::CreateStatus => "https://docs.github.com/rest/deployments/statuses#create-a-deployment-status",
            Doc::GetStatus => "https://docs.github.com/rest/deployments/statuses#get-a-deployment-status",
            Doc::RateLimits => {
                "https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api#about-secondary-rate-limits"
            }
            Doc::UserAgent => "https://docs.github.com/rest/using-the-rest-api/getting-started-with-the-rest-api#user-agent",
        }
    }
}

/// `{"message", "documentation_url", "status"}`: GitHub's error body (`basic-error`);
/// `status` is the code as a string, as GitHub has sent it since 2024.
pub fn error(status: u16, message: &str, doc: Doc) -> Value {
    json!({ "message": message, "documentation_url": doc.url(), "status": status.to_string() })
}

/// A 422 body in the `validation-error` shape: one entry per offending field, with
/// the codes GitHub documents (`missing_field`, `invalid`, `custom`, ...).
pub fn validation_failed(doc: Doc, errors: Vec<Value>) -> Value {
    let mut body = error(422, "Validation Failed", doc);
    body["errors"] = Value::Array(errors);
    body
}

/// A `Link` header as GitHub writes it: prev, next, last, first, each only when it
/// exists; `url_for(page)` gives the absolute URL of a page. None on a single page.
pub fn link(page: usize, last: usize, url_for: impl Fn(usize) -> String) -> Option<String> {
    let mut parts = Vec::new();
    if page > 1 {
        parts.push(format!("<{}>; rel=\"prev\"", url_for(page.min(last + 1) - 1)));
    }
    if page < last {
        parts.push(format!("<{}>; rel=\"next\"", url_for(page + 1)));
        parts.push(format!("<{}>; rel=\"last\"", url_for(last)));
    }
    if page > 1 {
        parts.push(format!("<{}>; rel=\"first\"", url_for(1)));
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// GitHub's legacy global node id: base64 of "<len(type)>:<type><id>", e.g.
/// "MDEwOkRlcGxveW1lbnQx" for deployment 1. Clients pass it to GraphQL as is.
pub fn node_id(kind: &str, id: u64) -> String {
    base64(format!("{:03}:{kind}{id}", kind.len()).as_bytes())
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The commit a ref names: the ref itself when it is a full SHA, else a made-up but
/// stable 40-hex SHA, so the same branch always deploys "the same commit".
pub fn sha_of(r#ref: &str) -> String {
    if r#ref.len() == 40 && r#ref.bytes().all(|b| b.is_ascii_hexdigit()) {
        return r#ref.to_ascii_lowercase();
    }
    // FNV-1a from three starting points: no hashing crate, and stable across runs
    // (std's hasher is randomly keyed).
    let fnv = |seed: u64| r#ref.bytes().fold(seed, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3));
    let hex =
        format!("{:016x}{:016x}{:016x}", fnv(0xcbf2_9ce4_8422_2325), fnv(0x84222325cbf29ce4), fnv(0x1f2e3d4c5b6a7988));
    hex[..40].to_string()
}

// One calendar for the whole sandbox: the Fly emulator's.
pub(crate) use crate::fly::ids::{rfc3339, unix_secs};

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn node_ids_match_githubs() {
        // Both from GitHub's own examples.
        assert_eq!(node_id("Deployment", 1), "MDEwOkRlcGxveW1lbnQx");
        assert_eq!(node_id("DeploymentStatus", 1), "MDE2OkRlcGxveW1lbnRTdGF0dXMx");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"a"), "YQ==");
    }

    #[test]
    fn shas_are_the_ref_or_stable_fakes() {
        let real = "a84d88e7554fc1fa21bcbc4efae3c782a70d2b9d";
        assert_eq!(sha_of(real), real);
        let fake = sha_of("main");
        assert_eq!(fake.len(), 40);
        assert!(fake.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(fake, sha_of("main"));
        assert_ne!(fake, sha_of("topic"));
    }

    #[test]
    fn links_name_the_neighbouring_pages() {
        let url = |p: usize| format!("u?page={p}");
        assert_eq!(link(1, 1, url), None);
        assert_eq!(link(1, 3, url).as_deref(), Some(r#"<u?page=2>; rel="next", <u?page=3>; rel="last""#));
        assert_eq!(
            link(2, 3, url).as_deref(),
            Some(r#"<u?page=1>; rel="prev", <u?page=3>; rel="next", <u?page=3>; rel="last", <u?page=1>; rel="first""#)
        );
        assert_eq!(link(3, 3, url).as_deref(), Some(r#"<u?page=2>; rel="prev", <u?page=1>; rel="first""#));
    }
}
