//! GitHub's side of the emulator's HTTP API: the checks GitHub makes before it looks
//! at the token (rate limit, User-Agent, API version), the deployment and status
//! endpoints with pagination, the headers every answer carries, GitHub's error body
//! and messages, and the `/__sandbox/deployments` control endpoint.
//!
//! Injected faults, the token check, the call log and `/__sandbox/calls|faults` are
//! the kit's pipeline (`kit::api`); GitHub's own create faults are served here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hyper::header::HeaderValue;
use hyper::Method;
use serde_json::{json, Value};

use super::faults::{message_for, GitHubFaults};
use super::input::{NewDeployment, NewStatus};
use super::render::{self, Doc, Urls};
use super::state::{DeleteRefusal, Filter, State, RATE_LIMIT};
use super::Shared;
use crate::kit::api::{self as pipeline, Emulator, Gate};
use crate::kit::TokenRule;
use crate::server::{self, Request, Response, Server};

/// The REST API versions GitHub accepts in `X-GitHub-Api-Version`.
const API_VERSIONS: [&str; 2] = ["2022-11-28", "2026-03-10"];
/// GitHub's own defaults and ceiling for `per_page`.
const DEFAULT_PER_PAGE: usize = 30;
const MAX_PER_PAGE: usize = 100;
/// The branch GitHub would merge into the deployed ref (auto-merge faults name it).
const DEFAULT_BRANCH: &str = "main";

pub async fn serve(shared: Arc<Shared>, addr: SocketAddr) -> std::io::Result<Server> {
    pipeline::serve(shared, addr).await
}

impl Emulator for Shared {
    type Faults = GitHubFaults;

    fn gate(&self) -> &Gate<GitHubFaults> {
        &self.gate
    }

    fn error(&self, status: u16, message: &str) -> Response {
        failure(status, message, Doc::Rest)
    }

    fn fault_message(&self, status: u16) -> String {
        message_for(status).to_string()
    }

    fn precheck(&self, request: &Request) -> Option<Response> {
        precheck(self, request, SystemTime::now())
    }

    /// Refusals keep the kit's wording, which is GitHub's.
    fn token_rule(&self) -> Option<&TokenRule> {
        Some(&self.auth)
    }

    async fn route(&self, request: &Request) -> Response {
        route(self, request, SystemTime::now())
    }

    fn control(&self, request: &Request) -> Option<Response> {
        match (request.method.as_str(), request.path.as_str()) {
            ("GET", "/__sandbox/deployments") => Some(reply(200, &json!(self.views()))),
            _ => None,
        }
    }

    fn control_endpoints(&self) -> &'static [&'static str] {
        &["GET /__sandbox/deployments"]
    }

    fn target(&self, path: &str) -> Option<String> {
        deployment_id_in(path)
    }

    fn decorate(&self, request: &Request, response: &mut Response) {
        decorate(response, &self.lock(), request, self.gate.calls.len() + 1);
    }
}

/// The deployment a path is about, for the call log.
fn deployment_id_in(path: &str) -> Option<String> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["repos", _, _, "deployments", id, ..] if !id.is_empty() => Some(id.to_string()),
        _ => None,
    }
}

/// A JSON answer with GitHub's content type.
fn reply(status: u16, body: &Value) -> Response {
    let mut response = server::json(status, body);
    response.headers_mut().insert("content-type", HeaderValue::from_static("application/json; charset=utf-8"));
    response
}

fn failure(status: u16, message: &str, doc: Doc) -> Response {
    reply(status, &render::error(status, message, doc))
}

fn not_found(doc: Doc) -> Response {
    failure(404, "Not Found", doc)
}

/// The headers every API answer carries: rate-limit accounting (unless the answer
/// set its own), the media type and API version GitHub served, a request id that
/// differs per request (`nth` is the request's place in the call log).
fn decorate(response: &mut Response, state: &State, request: &Request, nth: usize) {
    let headers = response.headers_mut();
    if !headers.contains_key("x-ratelimit-limit") {
        insert_rate_headers(headers, state.rate.remaining(), state.rate.reset_unix());
    }
    headers.insert("x-github-media-type", HeaderValue::from_static("github.v3; format=json"));
    let version =
        request.header("x-github-api-version").filter(|v| API_VERSIONS.contains(v)).unwrap_or(API_VERSIONS[0]);
    headers.insert("x-github-api-version-selected", HeaderValue::from_str(version).expect("a known version"));
    let id = format!("5A4D:B0C5:{nth:X}:{:X}:{:X}", state.deployments.len(), state.rate.used);
    headers.insert("x-github-request-id", HeaderValue::from_str(&id).expect("hex and colons"));
}

fn insert_rate_headers(headers: &mut hyper::HeaderMap, remaining: u64, reset: u64) {
    headers.insert("x-ratelimit-limit", HeaderValue::from(RATE_LIMIT));
    headers.insert("x-ratelimit-remaining", HeaderValue::from(remaining));
    headers.insert("x-ratelimit-reset", HeaderValue::from(reset));
    headers.insert("x-ratelimit-used", HeaderValue::from(RATE_LIMIT - remaining));
    headers.insert("x-ratelimit-resource", HeaderValue::from_static("core"));
}

/// GitHub's checks before it looks at the token, in the order it makes them: every
/// request counts against the rate limit, then User-Agent, then the API version.
fn precheck(shared: &Shared, request: &Request, now: SystemTime) -> Option<Response> {
    let rate_limited = shared.gate.with_faults(|f| f.rate_limited);
    let mut state = shared.lock();
    let within_limit = state.spend_rate_limit(now);
    if rate_limited || !within_limit {
        // A fault says "try again in a minute"; a real exhaustion names the window's end.
        let reset =
            if within_limit { render::unix_secs(now + Duration::from_secs(60)) } else { state.rate.reset_unix() };
        let mut response = failure(403, "API rate limit exceeded for installation ID 1.", Doc::RateLimits);
        insert_rate_headers(response.headers_mut(), 0, reset);
        return Some(response);
    }
    if request.header("user-agent").is_none_or(|agent| agent.trim().is_empty()) {
        let message = "Request forbidden by administrative rules. Please make sure your request has a User-Agent \
                       header (https://docs.github.com/en/rest/overview/resources-in-the-rest-api#user-agent-required). \
                       Check https://developer.github.com for other possible causes.";
        return Some(failure(403, message, Doc::UserAgent));
    }
    if let Some(version) = request.header("x-github-api-version").filter(|v| !API_VERSIONS.contains(v)) {
        return Some(failure(400, &format!("API version {version} is not supported."), Doc::Rest));
    }
    None
}

fn route(shared: &Shared, request: &Request, now: SystemTime) -> Response {
    let faults = shared.gate.faults();
    let mut state = shared.lock();
    let urls = Urls { base: shared.base(), owner: &shared.owner, repo: &shared.repo };
    let segments: Vec<&str> = request.path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["repos", owner, repo, "deployments", rest @ ..]
            if owner.eq_ignore_ascii_case(&shared.owner) && repo.eq_ignore_ascii_case(&shared.repo) =>
        {
            deployments(&mut state, &faults, request, &urls, rest, now)
        }
        _ => not_found(Doc::Rest),
    }
}

/// Everything under `/repos/{owner}/{repo}/deployments`.
fn deployments(
    state: &mut State,
    faults: &GitHubFaults,
    request: &Request,
    urls: &Urls,
    rest: &[&str],
    now: SystemTime,
) -> Response {
    let method = &request.method;
    match rest {
        [] if method == Method::GET => list_deployments(state, request, urls),
        [] if method == Method::POST => create_deployment(state, faults, request, urls, now),
        [id, rest @ ..] => {
            let Ok(id) = id.parse::<u64>() else { return not_found(Doc::GetDeployment) };
            match rest {
                [] if method == Method::GET => match state.deployment(id) {
                    Some(d) => reply(200, &render::deployment(d, urls)),
                    None => not_found(Doc::GetDeployment),
                },
                [] if method == Method::DELETE => delete_deployment(state, id),
                ["statuses"] if method == Method::GET => list_statuses(state, request, urls, id),
                ["statuses"] if method == Method::POST => create_status(state, request, urls, id, now),
                ["statuses", status_id] if method == Method::GET => {
                    let found = status_id
                        .parse::<u64>()
                        .ok()
                        .and_then(|sid| state.deployment(id).and_then(|d| d.statuses.iter().find(|s| s.id == sid)));
                    match found {
                        Some(s) => reply(200, &render::status(id, s, urls)),
                        None => not_found(Doc::GetStatus),
                    }
                }
                _ => not_found(Doc::Rest),
            }
        }
        _ => not_found(Doc::Rest),
    }
}

/// The body as JSON, or GitHub's 400 "Problems parsing JSON". An empty body reads as
/// `{}`, so a missing required field is what gets reported.
fn body_json(request: &Request) -> Result<Value, Box<Response>> {
    if request.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(&request.body).map_err(|_| Box::new(failure(400, "Problems parsing JSON", Doc::Rest)))
}

fn create_deployment(
    state: &mut State,
    faults: &GitHubFaults,
    request: &Request,
    urls: &Urls,
    now: SystemTime,
) -> Response {
    let doc = Doc::CreateDeployment;
    let body = match body_json(request) {
        Ok(body) => body,
        Err(response) => return *response,
    };
    let new = match NewDeployment::parse(&body) {
        Ok(new) => new,
        Err(problems) => {
            return reply(422, &render::validation_failed(doc, problems.iter().map(|p| p.to_json()).collect()))
        }
    };
    let GitHubFaults { invalid, conflict, auto_merge, .. } = *faults;
    let r#ref = new.r#ref.clone();
    if invalid {
        let problem = json!({ "resource": "Deployment", "field": "ref", "code": "invalid",
                              "message": format!("No ref found for: {ref}") });
        return reply(422, &render::validation_failed(doc, vec![problem]));
    }
    if conflict {
        return failure(409, &format!("Conflict merging {DEFAULT_BRANCH} into {ref}."), doc);
    }
    if auto_merge {
        // GitHub merged the default branch into the ref instead of deploying.
        return reply(202, &json!({ "message": format!("Auto-merged {DEFAULT_BRANCH} into {ref} on deployment.") }));
    }
    let created = render::deployment(state.create(new, now), urls);
    with_location(reply(201, &created), &created)
}

fn delete_deployment(state: &mut State, id: u64) -> Response {
    match state.delete(id) {
        Ok(()) => {
            let mut response = server::text(204, "");
            response.headers_mut().remove("content-type");
            response
        }
        Err(DeleteRefusal::NotFound) => not_found(Doc::DeleteDeployment),
        Err(DeleteRefusal::Active) => failure(
            422,
            "We cannot delete an active deployment unless it is the only deployment in a given environment.",
            Doc::DeleteDeployment,
        ),
    }
}

fn list_deployments(state: &State, request: &Request, urls: &Urls) -> Response {
    let wanted = |name: &str| param(request, name).filter(|v| !v.is_empty());
    let filter =
        Filter { sha: wanted("sha"), r#ref: wanted("ref"), task: wanted("task"), environment: wanted("environment") };
    let items = state.list(&filter).into_iter().map(|d| render::deployment(d, urls)).collect();
    paginate(request, urls, items)
}

fn create_status(state: &mut State, request: &Request, urls: &Urls, id: u64, now: SystemTime) -> Response {
    let doc = Doc::CreateStatus;
    if state.deployment(id).is_none() {
        return not_found(doc);
    }
    let body = match body_json(request) {
        Ok(body) => body,
        Err(response) => return *response,
    };
    let new = match NewStatus::parse(&body) {
        Ok(new) => new,
        Err(problems) => {
            return reply(422, &render::validation_failed(doc, problems.iter().map(|p| p.to_json()).collect()))
        }
    };
    match state.add_status(id, new, now) {
        Some(status) => {
            let created = render::status(id, &status, urls);
            with_location(reply(201, &created), &created)
        }
        None => not_found(doc),
    }
}

fn list_statuses(state: &State, request: &Request, urls: &Urls, id: u64) -> Response {
    let Some(d) = state.deployment(id) else { return not_found(Doc::ListStatuses) };
    let items = d.statuses.iter().rev().map(|s| render::status(id, s, urls)).collect();
    paginate(request, urls, items)
}

/// GitHub points `Location` at what a POST created.
fn with_location(mut response: Response, created: &Value) -> Response {
    if let Some(value) = created["url"].as_str().and_then(|url| HeaderValue::from_str(url).ok()) {
        response.headers_mut().insert("location", value);
    }
    response
}

/// One page of `items` per `per_page` and `page`, with a `Link` header to the others
/// when there are more, as GitHub paginates. Link URLs keep the request's other
/// parameters and point at this server.
fn paginate(request: &Request, urls: &Urls, items: Vec<Value>) -> Response {
    let number = |name: &str| param(request, name).and_then(|v| v.parse::<usize>().ok()).filter(|n| *n > 0);
    let per_page = number("per_page").unwrap_or(DEFAULT_PER_PAGE).min(MAX_PER_PAGE);
    let page = number("page").unwrap_or(1);
    let last = items.len().div_ceil(per_page).max(1);
    let start = (page - 1).saturating_mul(per_page);
    let shown: Vec<Value> = items.into_iter().skip(start).take(per_page).collect();
    let mut response = reply(200, &Value::Array(shown));
    let kept: Vec<&str> = request
        .query
        .as_deref()
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty() && pair.split('=').next() != Some("page"))
        .collect();
    let url_for = |p: usize| {
        let mut query = kept.join("&");
        if !query.is_empty() {
            query.push('&');
        }
        format!("{}{}?{query}page={p}", urls.base, request.path)
    };
    if let Some(value) = render::link(page, last, url_for).and_then(|link| HeaderValue::from_str(&link).ok()) {
        response.headers_mut().insert("link", value);
    }
    response
}

/// A query parameter, percent-decoded (`+` is a space, as forms encode it).
fn param(request: &Request, name: &str) -> Option<String> {
    let raw = request.param(name)?;
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}
