//! The Platform API over HTTP: the version-3 Accept header, Bearer tokens, the rate
//! limit's bucket and `RateLimit-Remaining`, `Range` paging of release lists, errors
//! as `{"id": ..., "message": ...}`; plus the source blob URLs and the log streams the
//! API hands out, which (like S3 and Heroku's log streams) take no API token.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::header::HeaderValue;
use hyper::Method;
use serde_json::{json, Value};

use super::platform::{fail, not_found, uuid, Content, Failure, Platform, State};
use super::Faults;
use crate::kit::api::{self as pipeline, Emulator, Gate};
use crate::kit::{Refusal, TokenRule};
use crate::server::{json, text, Request, Response, Server};

pub const ACCEPT: &str = "application/vnd.heroku+json; version=3";
/// The Accept variant under which a formation update takes `docker_image`.
pub const DOCKER_RELEASES: &str = "application/vnd.heroku+json; version=3.docker-releases";
/// How long a log stream stays open waiting for its build or release phase.
const STREAM_LIMIT: Duration = Duration::from_secs(600);

struct PlatformApi {
    platform: Arc<Platform>,
}

pub async fn serve(platform: Arc<Platform>, addr: SocketAddr) -> std::io::Result<Server> {
    let server = pipeline::serve(Arc::new(PlatformApi { platform: platform.clone() }), addr).await?;
    *platform.base.lock().unwrap_or_else(|p| p.into_inner()) = server.url();
    Ok(server)
}

fn error(status: u16, id: &str, message: &str) -> Response {
    json(status, &json!({ "id": id, "message": message }))
}

fn failure(f: Failure) -> Response {
    error(f.status, f.id, &f.message)
}

/// Blob and stream URLs: not API calls, so no Accept header, token or rate limit.
fn is_side_channel(path: &str) -> bool {
    path.starts_with("/blobs/") || path.starts_with("/streams/")
}

impl Emulator for PlatformApi {
    type Faults = Faults;

    fn gate(&self) -> &Gate<Faults> {
        &self.platform.gate
    }

    fn error(&self, status: u16, message: &str) -> Response {
        let id = match status {
            401 => "unauthorized",
            403 => "forbidden",
            404 => "not_found",
            429 => "rate_limit",
            503 => "unavailable",
            _ => "internal_server_error",
        };
        error(status, id, message)
    }

    fn fault_message(&self, status: u16) -> String {
        match status {
            429 => {
                "Your account reached the API rate limit. Please wait a few minutes before making new requests".into()
            }
            503 => "API is temporarily unavailable (sandbox fault)".into(),
            _ => format!("Internal server error (sandbox fault, status {status})"),
        }
    }

    fn precheck(&self, request: &Request) -> Option<Response> {
        if is_side_channel(&request.path) {
            return None;
        }
        let accept = request.header("accept").unwrap_or_default();
        if !accept.contains("application/vnd.heroku+json; version=3") {
            return Some(error(
                400,
                "bad_request",
                "Please specify a version along with Heroku's API MIME type. For example, `Accept: application/vnd.heroku+json; version=3`.",
            ));
        }
        if request.path == "/account/rate-limits" {
            return None;
        }
        match self.platform.spend_token() {
            true => None,
            false => Some(error(429, "rate_limit", &self.fault_message(429))),
        }
    }

    fn token_rule(&self) -> Option<&TokenRule> {
        Some(&self.platform.auth)
    }

    fn needs_token(&self, request: &Request) -> bool {
        !is_side_channel(&request.path)
    }

    fn unauthorized(&self, _refusal: Refusal) -> Response {
        error(401, "unauthorized", "Invalid credentials provided.")
    }

    async fn route(&self, request: &Request) -> Response {
        if is_side_channel(&request.path) {
            return side_channel(&self.platform, request).await;
        }
        let response = match route(&self.platform, request) {
            Ok(response) => response,
            Err(f) => failure(f),
        };
        match &self.platform.schema {
            Some(schema) => conform(&self.platform, schema, request, response).await,
            None => response,
        }
    }

    fn control(&self, request: &Request) -> Option<Response> {
        let s = self.platform.lock();
        match (&request.method, request.path.as_str()) {
            (&Method::GET, "/__sandbox/apps") => Some(json(
                200,
                &Value::Array(
                    s.apps
                        .iter()
                        .map(|a| {
                            json!({
                                "app": self.platform.app_json(a),
                                "releases": a.releases.iter().map(|r| self.platform.release_json(a, r)).collect::<Vec<_>>(),
                                "dynos": a.dynos.iter().map(|d| self.platform.dyno_json(a, d)).collect::<Vec<_>>(),
                                "preboot": a.preboot,
                            })
                        })
                        .collect(),
                ),
            )),
            _ => None,
        }
    }

    fn control_endpoints(&self) -> &'static [&'static str] {
        &["GET /__sandbox/apps"]
    }

    fn target(&self, path: &str) -> Option<String> {
        let mut parts = path.trim_start_matches('/').split('/');
        match (parts.next(), parts.next()) {
            (Some("apps"), Some(app)) => Some(app.to_string()),
            _ => None,
        }
    }

    fn decorate(&self, request: &Request, response: &mut Response) {
        if is_side_channel(&request.path) {
            return;
        }
        let left = self.platform.tokens_left();
        response.headers_mut().insert("ratelimit-remaining", HeaderValue::from(left));
        response
            .headers_mut()
            .insert("request-id", HeaderValue::from_str(&uuid()).unwrap_or(HeaderValue::from_static("0")));
    }
}

/// Checks the request body and a 2xx JSON answer against Heroku's schema and records
/// what breaks it. The docker-releases formation body is the documented exception:
/// the public schema does not describe `docker_image`.
async fn conform(p: &Platform, schema: &super::schema::Schema, request: &Request, response: Response) -> Response {
    use http_body_util::BodyExt;
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let (method, path) = (request.method.as_str(), request.path.as_str());
    let docker = request.header("accept").is_some_and(|a| a.contains("docker-releases"));
    let mut problems = Vec::new();
    if !docker && request.method != Method::GET {
        let sent: Option<Value> = serde_json::from_slice(&request.body).ok();
        problems.extend(schema.check_request(method, path, sent.as_ref()));
    }
    if parts.status.is_success() {
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(answer) => problems.extend(schema.check_response(method, path, &answer)),
            Err(e) => problems.push(format!("{method} {path}: the answer is not JSON ({e})")),
        }
    }
    if !problems.is_empty() {
        p.violations.lock().unwrap_or_else(|e| e.into_inner()).extend(problems);
    }
    hyper::Response::from_parts(parts, http_body_util::Full::new(bytes))
}

/// PUT/GET of a source blob, and the build and release-phase log streams, which
/// answer once the log is complete.
async fn side_channel(platform: &Arc<Platform>, request: &Request) -> Response {
    let parts: Vec<&str> = request.path.trim_start_matches('/').split('/').collect();
    match (&request.method, parts.as_slice()) {
        (&Method::PUT, ["blobs", id]) => {
            let mut s = platform.lock();
            match s.blobs.get_mut(*id) {
                Some(slot) => {
                    *slot = Some(request.body.clone());
                    text(200, "")
                }
                None => text(403, "<Error><Code>AccessDenied</Code><Message>no such upload URL</Message></Error>"),
            }
        }
        (&Method::GET, ["blobs", id]) => match platform.lock().blobs.get(*id) {
            Some(Some(bytes)) => {
                let mut r = text(200, "");
                *r.body_mut() = http_body_util::Full::new(Bytes::clone(bytes));
                r
            }
            _ => text(404, "<Error><Code>NoSuchKey</Code></Error>"),
        },
        (&Method::GET, ["streams", kind @ ("builds" | "releases"), id]) => {
            let (kind, id) = (kind.to_string(), id.to_string());
            if stream(&platform.lock(), &kind, &id).is_none() {
                return text(404, "no such stream");
            }
            // Like Heroku's: what the log has now, then each new piece as it comes, and
            // the end once the build or the release phase is over.
            let (tx, rx) = tokio::sync::mpsc::channel(16);
            let platform = platform.clone();
            tokio::spawn(async move {
                let mut sent = 0;
                let started = std::time::Instant::now();
                loop {
                    let Some((log, done)) = stream(&platform.lock(), &kind, &id) else { return };
                    if log.len() > sent {
                        if tx.send(Bytes::from(log[sent..].to_string())).await.is_err() {
                            return;
                        }
                        sent = log.len();
                    }
                    if done || started.elapsed() > STREAM_LIMIT {
                        return;
                    }
                    let grew = |s: &State| stream(s, &kind, &id).is_none_or(|(log, done)| done || log.len() > sent);
                    platform.wait_until(Duration::from_secs(1), grew).await;
                }
            });
            let mut r = crate::server::streamed(rx);
            r.headers_mut().insert("content-type", HeaderValue::from_static("text/plain; charset=utf-8"));
            r
        }
        _ => text(404, "not found"),
    }
}

fn stream(s: &State, kind: &str, id: &str) -> Option<(String, bool)> {
    match kind {
        "builds" => s.builds.iter().find(|b| b.id == id).map(|b| (b.log.clone(), b.log_done)),
        _ => s.apps.iter().flat_map(|a| a.releases.iter()).find(|r| r.id == id).map(|r| (r.log.clone(), r.log_done)),
    }
}

fn body(request: &Request) -> Result<Value, Failure> {
    if request.body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(&request.body).map_err(|e| fail(400, "bad_request", format!("Invalid JSON: {e}")))
}

fn route(p: &Arc<Platform>, request: &Request) -> Result<Response, Failure> {
    let parts: Vec<&str> = request.path.trim_start_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let ok = |v: Value| Ok(json(200, &v));
    let created = |v: Value| Ok(json(201, &v));
    let method = request.method.clone();
    match (method, parts.as_slice()) {
        (Method::GET, ["account"]) => ok(json!({
            "allow_tracking": false, "beta": false, "created_at": "2020-01-01T00:00:00Z",
            "email": "sandbox@example.com", "federated": false, "id": super::platform::ACCOUNT_ID,
            "identity_provider": null, "last_login": "2026-01-01T00:00:00Z", "name": "Sandbox",
            "sms_number": null, "suspended_at": null, "delinquent_at": null,
            "two_factor_authentication": false, "updated_at": "2026-01-01T00:00:00Z", "verified": true,
            "country_of_residence": null, "default_organization": null, "default_team": null,
        })),
        (Method::GET, ["account", "rate-limits"]) => ok(json!({ "remaining": p.tokens_left() })),
        (Method::GET, ["apps"]) => {
            let s = p.lock();
            ok(Value::Array(s.apps.iter().map(|a| p.app_json(a)).collect()))
        }
        (Method::GET, ["apps", app]) => {
            let s = p.lock();
            let a = s.app(app).ok_or_else(|| not_found("app", app))?;
            ok(p.app_json(a))
        }
        (Method::POST, ["sources"]) | (Method::POST, ["apps", _, "sources"]) => {
            if let ["apps", app, _] = parts.as_slice() {
                p.lock().app(app).ok_or_else(|| not_found("app", app))?;
            }
            let id = uuid();
            p.lock().blobs.insert(id.clone(), None);
            let url = format!("{}/blobs/{id}", p.base());
            created(json!({ "source_blob": { "get_url": url, "put_url": url } }))
        }
        (Method::POST, ["apps", app, "builds"]) => {
            let b = body(request)?;
            let url = b["source_blob"]["url"]
                .as_str()
                .ok_or_else(|| fail(422, "invalid_params", "source_blob.url is required"))?;
            let version = b["source_blob"]["version"].as_str().unwrap_or_default();
            let buildpacks = b.get("buildpacks").is_some_and(|v| !v.is_null());
            created(p.create_build(app, url, version, buildpacks)?)
        }
        (Method::GET, ["apps", app, "builds"]) => {
            let ids: Vec<String> = {
                let s = p.lock();
                let a = s.app(app).ok_or_else(|| not_found("app", app))?;
                s.builds.iter().filter(|b| b.app == a.id).map(|b| b.id.clone()).collect()
            };
            let all: Vec<Value> = ids.iter().filter_map(|id| p.build_json(id)).collect();
            ranged(all, request.header("range"), BUILD_RANGES)
        }
        (Method::DELETE, ["apps", app, "builds", id]) => {
            p.lock().app(app).ok_or_else(|| not_found("app", app))?;
            p.cancel_build(id)?;
            ok(p.build_json(id).unwrap_or_default())
        }
        (Method::GET, ["apps", app, "builds", id]) => {
            let found = {
                let s = p.lock();
                s.app(app).is_some() && s.builds.iter().any(|b| b.id == *id)
            };
            if !found {
                return Err(not_found("build", id));
            }
            ok(p.build_json(id).unwrap_or_default())
        }
        (Method::GET, ["apps", app, "releases"]) => {
            let s = p.lock();
            let a = s.app(app).ok_or_else(|| not_found("app", app))?;
            let all: Vec<Value> = a.releases.iter().map(|r| p.release_json(a, r)).collect();
            ranged(all, request.header("range"), RELEASE_RANGES)
        }
        (Method::GET, ["apps", app, "releases", key]) => {
            let s = p.lock();
            let a = s.app(app).ok_or_else(|| not_found("app", app))?;
            let r = a.release(key).ok_or_else(|| not_found("release", key))?;
            ok(p.release_json(a, r))
        }
        (Method::POST, ["apps", app, "releases"]) => {
            let b = body(request)?;
            let Some(to) = b["release"].as_str() else {
                return Err(fail(
                    422,
                    "invalid_params",
                    "release is required to roll back (creating releases from slugs is not emulated)",
                ));
            };
            let id = p.rollback(app, to)?;
            let s = p.lock();
            let a = s.app(app).ok_or_else(|| not_found("app", app))?;
            created(p.release_json(a, a.release(&id).ok_or_else(|| not_found("release", &id))?))
        }
        (Method::GET, ["apps", app, "releases", key, "config-vars"]) => {
            let s = p.lock();
            let a = s.app(app).ok_or_else(|| not_found("app", app))?;
            a.release(key).ok_or_else(|| not_found("release", key))?;
            ok(json!({}))
        }
        // What `heroku apps:info` asks for besides the app: none of either here.
        (Method::GET, ["apps", app, "addons" | "collaborators"]) => {
            p.lock().app(app).ok_or_else(|| not_found("app", app))?;
            ok(json!([]))
        }
        (Method::GET, ["apps", app, "dynos"]) => {
            let s = p.lock();
            let a = s.app(app).ok_or_else(|| not_found("app", app))?;
            ok(Value::Array(a.dynos.iter().map(|d| p.dyno_json(a, d)).collect()))
        }
        (Method::GET, ["apps", app, "formation"]) => {
            let s = p.lock();
            let a = s.app(app).ok_or_else(|| not_found("app", app))?;
            ok(json!([p.formation_json(a)]))
        }
        (Method::PATCH, ["apps", app, "formation"]) => {
            let b = body(request)?;
            let updates = b["updates"].as_array().cloned().unwrap_or_default();
            let docker = request.header("accept").is_some_and(|a| a.contains("version=3.docker-releases"));
            for u in &updates {
                if u["type"].as_str() != Some("web") {
                    return Err(fail(422, "invalid_params", "only the web process type exists in the sandbox"));
                }
                if let Some(image) = u["docker_image"].as_str() {
                    if !docker {
                        return Err(fail(
                            422,
                            "invalid_params",
                            "docker_image needs Accept: application/vnd.heroku+json; version=3.docker-releases",
                        ));
                    }
                    let stack = p.lock().app(app).map(|a| a.stack.clone()).ok_or_else(|| not_found("app", app))?;
                    if stack != "container" {
                        return Err(fail(422, "invalid_params", format!("docker images can only be released to apps on the container stack; this app's stack is {stack}")));
                    }
                    let short: String = image.trim_start_matches("sha256:").chars().take(12).collect();
                    p.create_release(app, Content::Image(image.to_string()), &format!("Deployed web ({short})"))?;
                }
                if let Some(q) = u["quantity"].as_u64() {
                    p.scale(app, q as usize)?;
                }
            }
            let s = p.lock();
            let a = s.app(app).ok_or_else(|| not_found("app", app))?;
            ok(json!([p.formation_json(a)]))
        }
        (Method::GET, ["apps", app, "features"]) => {
            let s = p.lock();
            let a = s.app(app).ok_or_else(|| not_found("app", app))?;
            ok(json!([preboot_json(a.preboot)]))
        }
        (Method::GET, ["apps", app, "features", "preboot"]) => {
            let s = p.lock();
            let a = s.app(app).ok_or_else(|| not_found("app", app))?;
            ok(preboot_json(a.preboot))
        }
        (Method::PATCH, ["apps", app, "features", "preboot"]) => {
            let enabled = body(request)?["enabled"]
                .as_bool()
                .ok_or_else(|| fail(422, "invalid_params", "enabled is required"))?;
            let mut s = p.lock();
            let a = s.app_mut(app).ok_or_else(|| not_found("app", app))?;
            a.preboot = enabled;
            ok(preboot_json(enabled))
        }
        (Method::GET, ["apps", app, "pipeline-couplings"]) => {
            let s = p.lock();
            let a = s.app(app).ok_or_else(|| not_found("app", app))?;
            let (pipeline, stage) = a.pipeline.clone().ok_or_else(|| not_found("pipeline coupling", app))?;
            ok(json!({
                "app": { "id": a.id },
                "created_at": a.created_at,
                "id": super::platform::uuid_of(&format!("{}-coupling", a.id)),
                "pipeline": { "id": pipeline },
                "stage": stage,
                "updated_at": a.created_at,
            }))
        }
        (Method::POST, ["pipeline-promotions"]) => {
            let b = body(request)?;
            let pipeline =
                b["pipeline"]["id"].as_str().ok_or_else(|| fail(422, "invalid_params", "pipeline.id is required"))?;
            let source = b["source"]["app"]["id"]
                .as_str()
                .ok_or_else(|| fail(422, "invalid_params", "source.app.id is required"))?;
            let targets: Vec<String> = b["targets"]
                .as_array()
                .map(|t| t.iter().filter_map(|t| t["app"]["id"].as_str().map(str::to_string)).collect())
                .unwrap_or_default();
            if targets.is_empty() {
                return Err(fail(422, "invalid_params", "targets must name at least one app"));
            }
            created(p.promote(pipeline, source, &targets)?)
        }
        (Method::GET, ["pipeline-promotions", id]) => {
            ok(p.promotion_json(id).ok_or_else(|| not_found("promotion", id))?)
        }
        (Method::GET, ["pipeline-promotions", id, "promotion-targets"]) => {
            ok(p.promotion_targets_json(id).ok_or_else(|| not_found("promotion", id))?)
        }
        _ => Err(not_found("resource", &request.path)),
    }
}

fn preboot_json(enabled: bool) -> Value {
    json!({
        "created_at": "2020-01-01T00:00:00Z",
        "description": "Provide seamless web dyno deploys",
        "doc_url": "http://devcenter.heroku.com/articles/preboot",
        "enabled": enabled,
        "id": super::platform::uuid_of("preboot"),
        "name": "preboot",
        "state": "general",
        "updated_at": "2020-01-01T00:00:00Z",
        "display_name": "Preboot",
        "feedback_email": "preboot@example.com",
    })
}

/// The fields a builds list may be cut by: the schema's `ranges` for that link.
/// `started_at` is when the build started, which the object shows as `created_at`.
const BUILD_RANGES: &[&str] = &["id", "started_at"];
/// The releases link has no `ranges` in the schema; Heroku's own CLI pages it by
/// `version`, and every list takes `id`.
const RELEASE_RANGES: &[&str] = &["id", "version"];

/// A list cut as a `Range` header asks: `version ..; max=10, order=desc`, `id ..`,
/// `version ]5..`; 206 with `Next-Range` when more remain, as Heroku answers. A field
/// the list cannot be cut by is refused with the fields it can.
fn ranged(items: Vec<Value>, range: Option<&str>, fields: &[&str]) -> Result<Response, Failure> {
    let asked = range.and_then(|r| r.split([' ', ';']).next()).unwrap_or("id");
    if !fields.contains(&asked) {
        return Err(fail(
            416,
            "requested_range_not_satisfiable",
            format!("Range by '{asked}' is not supported here; Accept-Ranges: {}", fields.join(", ")),
        ));
    }
    let (items, next) = page(items, range);
    let mut response = json(if next.is_some() { 206 } else { 200 }, &Value::Array(items));
    if let Some(v) = next.and_then(|n| HeaderValue::from_str(&n).ok()) {
        response.headers_mut().insert("next-range", v);
    }
    if let Ok(v) = HeaderValue::from_str(&fields.join(", ")) {
        response.headers_mut().insert("accept-ranges", v);
    }
    Ok(response)
}

/// One page of `items` and the `Next-Range` for the rest, if any.
fn page(mut items: Vec<Value>, range: Option<&str>) -> (Vec<Value>, Option<String>) {
    let range = range.unwrap_or("id ..");
    let (spec, options) = range.split_once(';').unwrap_or((range, ""));
    let mut words = spec.split_whitespace();
    let asked = words.next().unwrap_or("id").to_string();
    // What the object calls the field a range is asked by.
    let field = match asked.as_str() {
        "started_at" => "created_at".to_string(),
        _ => asked.clone(),
    };
    let bounds = words.next().unwrap_or("..");
    let mut max = 200usize;
    let mut desc = false;
    for option in options.split(',') {
        match option.trim().split_once('=') {
            Some(("max", n)) => max = n.trim().parse().unwrap_or(200).clamp(1, 1000),
            Some(("order", o)) => desc = o.trim() == "desc",
            _ => {}
        }
    }
    let key = |v: &Value| v[&field].as_u64().map(|n| format!("{n:020}")).unwrap_or_else(|| v[&field].to_string());
    items.sort_by_key(key);
    if desc {
        items.reverse();
    }
    // A start bound: inclusive, or exclusive with `]`, in the order asked for.
    let (start, exclusive) = match bounds.split_once("..").map(|(s, _)| s) {
        Some(s) if s.starts_with(']') => (Some(s[1..].to_string()), true),
        Some(s) if !s.is_empty() => (Some(s.to_string()), false),
        _ => (None, false),
    };
    if let Some(start) = start {
        let start_key = start.parse::<u64>().map(|n| format!("{n:020}")).unwrap_or(start);
        items.retain(|v| {
            let k = key(v);
            match (desc, exclusive) {
                (false, false) => k >= start_key,
                (false, true) => k > start_key,
                (true, false) => k <= start_key,
                (true, true) => k < start_key,
            }
        });
    }
    let more = items.len() > max;
    items.truncate(max);
    let next = more.then(|| {
        let last = items.last().map(|v| match &v[&field] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        });
        format!("{asked} ]{}..; max={max}{}", last.unwrap_or_default(), if desc { ", order=desc" } else { "" })
    });
    (items, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versions(items: &[Value]) -> Vec<u64> {
        items.iter().map(|v| v["version"].as_u64().unwrap()).collect()
    }

    #[test]
    fn release_lists_page_with_range_and_next_range() {
        let items: Vec<Value> = (1..=5).map(|v| json!({ "version": v, "id": format!("r{v}") })).collect();
        let (first, next) = page(items.clone(), Some("version ..; max=2, order=desc"));
        assert_eq!(versions(&first), vec![5, 4]);
        let next = next.expect("more remain");
        assert_eq!(next, "version ]4..; max=2, order=desc");
        let (second, _) = page(items.clone(), Some(&next));
        assert_eq!(versions(&second), vec![3, 2]);
        let (all, none) = page(items, None);
        assert_eq!((versions(&all), none), (vec![1, 2, 3, 4, 5], None));
    }

    #[test]
    fn a_list_is_cut_only_by_the_fields_it_takes() {
        let builds: Vec<Value> = ["a", "b", "c"]
            .iter()
            .enumerate()
            .map(|(i, id)| json!({ "id": id, "created_at": format!("t{i}") }))
            .collect();
        let newest = ranged(builds.clone(), Some("started_at ..; max=2, order=desc"), BUILD_RANGES).ok().unwrap();
        assert_eq!(newest.status(), 206);
        assert_eq!(newest.headers()["accept-ranges"], "id, started_at");
        assert_eq!(newest.headers()["next-range"], "started_at ]t1..; max=2, order=desc");
        for bad in ["created_at ..; max=5, order=desc", "bogus", "version .."] {
            let refused = ranged(builds.clone(), Some(bad), BUILD_RANGES).expect_err(bad);
            assert_eq!((refused.status, refused.id), (416, "requested_range_not_satisfiable"), "{bad}");
        }
        assert!(ranged(builds, None, BUILD_RANGES).is_ok(), "no Range: the whole list, by id");
    }
}
