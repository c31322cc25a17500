//! The Apps API over HTTP: Bearer tokens, a per-minute bucket with DigitalOcean's
//! `ratelimit-*` headers on every answer and `retry-after` on its 429, `page` and
//! `per_page` paging with `links.pages` and `meta.total`, errors as
//! `{"id", "message", "request_id"}`; plus the deployment logs' historic URLs, which
//! (like DigitalOcean's presigned ones) need no token.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::header::HeaderValue;
use hyper::Method;
use serde_json::{json, Value};

use super::platform::{bad_request, check_spec, not_found, uuid, Platform, Refused, Spent};
use super::Faults;
use crate::kit::api::{self as pipeline, Emulator, Gate};
use crate::kit::{Refusal, TokenRule};
use crate::server::{json, text, Request, Response, Server};

const LOGS: &str = "/__sandbox/logs/";

struct AppsApi {
    platform: Arc<Platform>,
}

pub async fn serve(platform: Arc<Platform>, addr: SocketAddr) -> std::io::Result<Server> {
    let server = pipeline::serve(Arc::new(AppsApi { platform: platform.clone() }), addr).await?;
    *platform.base.lock().unwrap_or_else(|p| p.into_inner()) = server.url();
    Ok(server)
}

/// DigitalOcean's error body, for every API of the cloud (Apps, Droplets, Load Balancers).
pub(crate) fn error(status: u16, id: &str, message: &str) -> Response {
    json(status, &json!({ "id": id, "message": message, "request_id": uuid() }))
}

/// The error body for `status`, with the id DigitalOcean gives it.
pub(crate) fn status_error(status: u16, message: &str) -> Response {
    let id = match status {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        409 => "conflict",
        422 => "unprocessable_entity",
        429 => "too_many_requests",
        503 => "service_unavailable",
        _ => "server_error",
    };
    error(status, id, message)
}

/// What an injected fault's answer says.
pub(crate) fn fault_message(status: u16) -> String {
    match status {
        429 => "API Rate limit exceeded.".into(),
        503 => "The service is temporarily unavailable (sandbox fault).".into(),
        _ => format!("Server was unable to give you a response (sandbox fault, status {status})."),
    }
}

/// A 429 once a budget is spent: the burst bucket's says when to come back in
/// `retry-after`; the hourly one's does not (its `ratelimit-reset` does).
pub(crate) fn rate_limited(spent: Spent) -> Response {
    let mut r = error(429, "too_many_requests", "API Rate limit exceeded.");
    if let Spent::Minute(wait) = spent {
        r.headers_mut().insert("retry-after", HeaderValue::from(wait));
    }
    r
}

fn refused(r: Refused) -> Response {
    error(r.status, r.id, &r.message)
}

impl Emulator for AppsApi {
    type Faults = Faults;

    fn gate(&self) -> &Gate<Faults> {
        &self.platform.gate
    }

    fn error(&self, status: u16, message: &str) -> Response {
        status_error(status, message)
    }

    fn fault_message(&self, status: u16) -> String {
        fault_message(status)
    }

    fn precheck(&self, _request: &Request) -> Option<Response> {
        self.platform.spend_token().err().map(rate_limited)
    }

    fn token_rule(&self) -> Option<&TokenRule> {
        Some(&self.platform.auth)
    }

    fn unauthorized(&self, _refusal: Refusal) -> Response {
        error(401, "unauthorized", "Unable to authenticate you")
    }

    async fn route(&self, request: &Request) -> Response {
        match route(&self.platform, request) {
            Ok(response) => response,
            Err(r) => refused(r),
        }
    }

    /// The historic log URLs: plain text, no token, like a presigned URL.
    fn control(&self, request: &Request) -> Option<Response> {
        let rest = request.path.strip_prefix(LOGS)?;
        let (id, kind) = rest.split_once('/')?;
        let s = self.platform.lock();
        let d = s.apps.iter().find_map(|a| a.deployment(id));
        Some(match d.and_then(|d| d.logs.get(kind)) {
            Some(lines) => text(200, lines.iter().map(|l| format!("{l}\n")).collect::<String>()),
            None => text(404, "no such log\n"),
        })
    }

    fn control_endpoints(&self) -> &'static [&'static str] {
        &["GET /__sandbox/logs/{deployment_id}/{BUILD|DEPLOY|RUN}"]
    }

    fn target(&self, path: &str) -> Option<String> {
        let mut parts = path.trim_start_matches('/').split('/');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("v2"), Some("apps"), Some(app)) if !app.is_empty() => Some(app.to_string()),
            _ => None,
        }
    }

    fn decorate(&self, _request: &Request, response: &mut Response) {
        let p = &self.platform;
        let headers = response.headers_mut();
        headers.insert("ratelimit-limit", HeaderValue::from(p.hourly_limit));
        headers.insert("ratelimit-remaining", HeaderValue::from(p.tokens_left()));
        headers.insert("ratelimit-reset", HeaderValue::from(p.bucket_reset()));
        if let Ok(v) = HeaderValue::from_str(&uuid()) {
            headers.insert("x-request-id", v);
        }
    }
}

/// A JSON body; an empty one reads as `{}`.
fn body(request: &Request) -> Result<Value, Refused> {
    if request.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(&request.body).map_err(|e| bad_request(format!("the body is not valid JSON: {e}")))
}

/// One page of `items` with its `links` and `meta`, under `key`; links start with `base`.
/// Shared with the Droplets emulator: DigitalOcean pages every list alike.
pub(crate) fn page(base: &str, request: &Request, key: &str, items: Vec<Value>) -> Result<Value, Refused> {
    let number = |name: &str, default: usize| -> Result<usize, Refused> {
        match request.param(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| bad_request(format!("{name}: {v:?} is not a positive integer"))),
        }
    };
    let page = number("page", 1)?;
    let per_page = number("per_page", 20)?.min(200);
    let total = items.len();
    let last = total.div_ceil(per_page).max(1);
    // Filters (a droplet list's `tag_name`) stay on every link, as DigitalOcean keeps them.
    let kept: String = request
        .query
        .as_deref()
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty() && !matches!(pair.split('=').next(), Some("page" | "per_page")))
        .map(|pair| format!("&{pair}"))
        .collect();
    let url = |n: usize| format!("{base}{}?page={n}&per_page={per_page}{kept}", request.path);
    let mut pages = serde_json::Map::new();
    if page > 1 {
        pages.insert("first".into(), json!(url(1)));
        pages.insert("prev".into(), json!(url((page - 1).min(last))));
    }
    if page < last {
        pages.insert("next".into(), json!(url(page + 1)));
        pages.insert("last".into(), json!(url(last)));
    }
    let shown: Vec<Value> = items.into_iter().skip((page - 1) * per_page).take(per_page).collect();
    Ok(json!({ key: shown, "links": { "pages": pages }, "meta": { "total": total } }))
}

fn route(p: &Arc<Platform>, request: &Request) -> Result<Response, Refused> {
    let parts: Vec<&str> = request.path.trim_start_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let ok = |v: Value| Ok(json(200, &v));
    let method = request.method.clone();
    let deployment = |app: &str, id: &str| -> Result<Value, Refused> {
        let s = p.lock();
        let a = s.app(app).ok_or_else(|| not_found("app", app))?;
        Ok(p.deployment_json(a.deployment(id).ok_or_else(|| not_found("deployment", id))?))
    };
    // The API takes app ids only (the emulator's own handle also takes names).
    if let ["v2", "apps", app, ..] = parts.as_slice() {
        if !p.lock().apps.iter().any(|a| a.id == *app) {
            return Err(not_found("app", app));
        }
    }
    match (method, parts.as_slice()) {
        (Method::GET, ["v2", "apps"]) => {
            let apps: Vec<Value> = p.lock().apps.iter().map(|a| p.app_json(a)).collect();
            ok(page(&p.base(), request, "apps", apps)?)
        }
        (Method::GET, ["v2", "apps", app]) => {
            let s = p.lock();
            let a = s.app(app).ok_or_else(|| not_found("app", app))?;
            ok(json!({ "app": p.app_json(a) }))
        }
        (Method::PUT, ["v2", "apps", app]) => {
            let b = body(request)?;
            let name = {
                let s = p.lock();
                s.app(app).ok_or_else(|| not_found("app", app))?.name.clone()
            };
            check_spec(b.get("spec"), &name)?;
            p.deploy(app, b.get("spec").cloned(), "app spec updated", false)?;
            let s = p.lock();
            ok(json!({ "app": p.app_json(s.app(app).ok_or_else(|| not_found("app", app))?) }))
        }
        (Method::GET, ["v2", "apps", app, "deployments"]) => {
            let all: Vec<Value> = {
                let s = p.lock();
                let a = s.app(app).ok_or_else(|| not_found("app", app))?;
                a.deployments.iter().rev().filter(|d| d.shown()).map(|d| p.deployment_json(d)).collect()
            };
            ok(page(&p.base(), request, "deployments", all)?)
        }
        (Method::POST, ["v2", "apps", app, "deployments"]) => {
            let b = body(request)?;
            if b.get("force_build").is_some_and(|f| !f.is_boolean()) {
                return Err(bad_request("force_build must be a boolean"));
            }
            let id = p.deploy(app, None, "manual", false)?;
            ok(json!({ "deployment": deployment(app, &id)? }))
        }
        (Method::GET, ["v2", "apps", app, "deployments", id]) => ok(json!({ "deployment": deployment(app, id)? })),
        (Method::POST, ["v2", "apps", app, "deployments", id, "cancel"]) => {
            ok(json!({ "deployment": p.cancel(app, id)? }))
        }
        (Method::GET, ["v2", "apps", app, "deployments", id, "logs"]) => logs(p, request, app, id),
        (Method::POST, ["v2", "apps", app, "rollback", "validate"]) => {
            let target = rollback_target(request)?.0;
            ok(match p.validate_rollback(app, &target)? {
                Ok(warnings) if warnings.is_empty() => json!({ "valid": true }),
                Ok(warnings) => json!({ "valid": true, "warnings": warnings }),
                Err((code, message)) => json!({ "valid": false, "error": { "code": code, "message": message } }),
            })
        }
        (Method::POST, ["v2", "apps", app, "rollback"]) => {
            let (target, skip_pin) = rollback_target(request)?;
            let id = p.rollback(app, &target, skip_pin)?;
            ok(json!({ "deployment": deployment(app, &id)? }))
        }
        (Method::POST, ["v2", "apps", app, "rollback", "commit"]) => {
            p.commit_rollback(app)?;
            // 200 with nothing in it: the description declares no content.
            let mut empty = text(200, "");
            empty.headers_mut().remove("content-type");
            Ok(empty)
        }
        (Method::POST, ["v2", "apps", app, "rollback", "revert"]) => {
            let id = p.revert_rollback(app)?;
            ok(json!({ "deployment": deployment(app, &id)? }))
        }
        (Method::GET, ["v2", "apps", app, "health"]) => {
            let s = p.lock();
            ok(p.health_json(s.app(app).ok_or_else(|| not_found("app", app))?))
        }
        _ => Err(not_found("resource", &format!("{} {}", request.method, request.path))),
    }
}

/// `deployment_id` and `skip_pin` from a rollback body.
fn rollback_target(request: &Request) -> Result<(String, bool), Refused> {
    let b = body(request)?;
    let target = b.get("deployment_id").and_then(Value::as_str).filter(|t| !t.is_empty());
    let target = target.ok_or_else(|| bad_request("deployment_id is required"))?;
    Ok((target.to_string(), b.get("skip_pin").and_then(Value::as_bool).unwrap_or(false)))
}

fn logs(p: &Platform, request: &Request, app: &str, id: &str) -> Result<Response, Refused> {
    let kind = request.param("type").unwrap_or_default().to_ascii_uppercase();
    if kind.is_empty() {
        return Err(bad_request("type is required: BUILD, DEPLOY or RUN"));
    }
    let s = p.lock();
    let a = s.app(app).ok_or_else(|| not_found("app", app))?;
    let d = a.deployment(id).ok_or_else(|| not_found("deployment", id))?;
    if !matches!(kind.as_str(), "BUILD" | "DEPLOY" | "RUN") || !d.logs.contains_key(kind.as_str()) {
        return Err(bad_request(format!("deployment {id} has no {kind} logs")));
    }
    Ok(json(200, &json!({ "historic_urls": [format!("{}{LOGS}{id}/{kind}", p.base())] })))
}
