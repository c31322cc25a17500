//! The Machines API over HTTP (machines and volumes): paths, auth, request bodies and
//! faults in; the platform's answers out as JSON shaped like the Fly Machines OpenAPI
//! spec. Also
//! the `/__sandbox/*` control endpoints, which no fault or auth applies to.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::header::HeaderValue;
use hyper::Method;
use serde_json::{json, Map, Value};
use tokio::net::TcpStream;

use super::faults::{Faults, Verdict};
use super::ids;
use super::platform::{Failure, NewConfig, NewMachine, Platform};
use super::process::signal;
use super::ApiCall;
use crate::server::{self, json, Request, Response, Server};

/// The header that proves a caller holds a machine's lease.
const NONCE_HEADER: &str = "fly-machine-lease-nonce";
/// The wait endpoint's ceiling, as Fly's proxy imposes.
const MAX_WAIT: Duration = Duration::from_secs(60);
const DEFAULT_LEASE_TTL: u64 = 30;

pub async fn serve(platform: Arc<Platform>, addr: SocketAddr) -> std::io::Result<Server> {
    let screening = platform.clone();
    server::serve_screened(
        addr,
        move |stream| screen(screening.clone(), stream),
        move |request| {
            let platform = platform.clone();
            async move { handle(&platform, request).await }
        },
    )
    .await
}

fn error(status: u16, message: impl Into<String>) -> Response {
    json(status, &json!({ "error": message.into() }))
}

fn bad(message: impl Into<String>) -> Failure {
    Failure { status: 400, message: message.into() }
}

fn answer(result: Result<Value, Failure>) -> Response {
    match result {
        Ok(value) => json(200, &value),
        Err(failure) => error(failure.status, failure.message),
    }
}

/// Closes a new connection before reading it while resets are pending, except for
/// control requests (peeked at, not read) so a test can always switch faults off.
async fn screen(platform: Arc<Platform>, stream: TcpStream) -> Option<TcpStream> {
    if platform.lock().faults.reset_burst == 0 {
        return Some(stream);
    }
    let line = peek_request_line(&stream).await;
    let mut words = line.split_whitespace();
    let (method, target) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
    if target.starts_with("/__sandbox") || !platform.lock().faults.take_reset() {
        return Some(stream);
    }
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query.to_string())),
        None => (target, None),
    };
    platform.log_call(ApiCall {
        method: method.to_string(),
        path: path.to_string(),
        query,
        status: 0,
        machine_id: machine_id_in(path),
    });
    // A zero linger turns the close into a reset, as a dropped connection looks.
    let _ = stream.set_zero_linger();
    None
}

/// The request line, peeked so the server can still read it; empty if none comes soon.
async fn peek_request_line(stream: &TcpStream) -> String {
    let mut buf = [0u8; 512];
    let peeked = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            match stream.peek(&mut buf).await {
                Ok(0) | Err(_) => return 0,
                Ok(n) if n == buf.len() || buf[..n].contains(&b'\n') => return n,
                Ok(_) => tokio::time::sleep(Duration::from_millis(2)).await,
            }
        }
    })
    .await
    .unwrap_or(0);
    let text = String::from_utf8_lossy(&buf[..peeked]);
    text.lines().next().unwrap_or_default().to_string()
}

fn machine_id_in(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/v1/apps/")?;
    let mut parts = rest.split('/');
    let (_app, machines, id) = (parts.next()?, parts.next()?, parts.next()?);
    (machines == "machines" && !id.is_empty()).then(|| id.to_string())
}

async fn handle(platform: &Arc<Platform>, request: Request) -> Response {
    if request.path.starts_with("/__sandbox/") {
        return control(platform, &request);
    }
    let (verdict, slow_ms) = {
        let mut state = platform.lock();
        (state.faults.next(request.method == Method::GET), state.faults.slow_ms)
    };
    let response = if verdict == Verdict::Reset {
        server::drop_connection()
    } else {
        if slow_ms > 0 {
            tokio::time::sleep(Duration::from_millis(slow_ms)).await;
        }
        match verdict {
            Verdict::Unavailable => {
                error(503, "the Machines API is temporarily unavailable (sandbox fault); retry with backoff")
            }
            Verdict::RateLimited { retry_after_secs } => {
                let mut response = error(429, "rate limited");
                if let Some(secs) = retry_after_secs {
                    response.headers_mut().insert("retry-after", HeaderValue::from(secs));
                }
                response
            }
            Verdict::Malformed => {
                let mut response = server::text(200, r#"{"id":"3d8d9e1a2b4c57","state":"sta"#);
                response.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
                response
            }
            _ if !authorized(platform, &request) => error(401, "unauthorized"),
            _ => route(platform, &request).await,
        }
    };
    let status = if verdict == Verdict::Reset { 0 } else { response.status().as_u16() };
    platform.log_call(ApiCall {
        method: request.method.to_string(),
        path: request.path.clone(),
        query: request.query.clone(),
        status,
        machine_id: machine_id_in(&request.path),
    });
    response
}

/// Whether the request carries the token; `Bearer ` and `FlyV1 ` schemes are both fine.
fn authorized(platform: &Platform, request: &Request) -> bool {
    fn bare(value: &str) -> &str {
        let value = value.trim();
        value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("FlyV1 ")).unwrap_or(value).trim()
    }
    match &platform.token {
        None => true,
        Some(token) => request.header("authorization").is_some_and(|given| bare(given) == bare(token)),
    }
}

fn control(platform: &Platform, request: &Request) -> Response {
    match (&request.method, request.path.as_str()) {
        (&Method::GET, "/__sandbox/machines") => json(200, &json!(platform.views())),
        (&Method::GET, "/__sandbox/volumes") => json(200, &json!(platform.volume_views())),
        (&Method::GET, "/__sandbox/calls") => json(200, &json!(platform.lock().calls)),
        (&Method::GET, "/__sandbox/faults") => json(200, &json!(platform.lock().faults)),
        (&Method::POST, "/__sandbox/faults") => match serde_json::from_slice::<Faults>(&request.body) {
            Ok(faults) => {
                platform.lock().faults = faults.clone();
                json(200, &json!(faults))
            }
            Err(e) => error(400, format!("faults body: {e}; send JSON such as {{\"error_burst\": 2}}")),
        },
        _ => error(
            404,
            "unknown sandbox endpoint; use GET /__sandbox/machines, GET /__sandbox/volumes, GET /__sandbox/calls \
             or GET|POST /__sandbox/faults",
        ),
    }
}

async fn route(platform: &Arc<Platform>, request: &Request) -> Response {
    let Some(rest) = request.path.strip_prefix("/v1/apps/") else {
        return error(404, format!("no endpoint {}; the Machines API lives under /v1/apps/APP/machines", request.path));
    };
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let Some((app, tail)) = segments.split_first() else { return error(404, "app not found") };
    if *app != platform.app {
        return error(404, "app not found");
    }
    match tail {
        [] if request.method == Method::GET => json(
            200,
            &json!({
                "id": platform.app,
                "name": platform.app,
                "status": "deployed",
                "organization": { "name": "Sandbox", "slug": "personal" },
            }),
        ),
        ["machines", rest @ ..] => machines(platform, request, rest).await,
        ["volumes", rest @ ..] => volumes(platform, request, rest),
        _ => error(404, format!("no endpoint {}", request.path)),
    }
}

async fn machines(platform: &Arc<Platform>, request: &Request, rest: &[&str]) -> Response {
    let method = &request.method;
    let nonce = request.header(NONCE_HEADER).map(str::trim).filter(|n| !n.is_empty());
    let flag = |name: &str| request.param(name).is_some_and(|v| v == "true" || v == "1");
    if let [id, ..] = rest {
        if !platform.exists(id) {
            return error(404, "machine not found");
        }
    }
    match (method, rest) {
        (&Method::GET, []) => {
            let states: Option<Vec<String>> =
                request.param("state").map(|s| s.split(',').map(str::to_string).collect());
            let region = request.param("region");
            json(200, &platform.list(flag("include_deleted"), region.as_deref(), states.as_deref(), flag("summary")))
        }
        (&Method::POST, []) => match create_request(request) {
            Ok(new) => answer(platform.create(new).await),
            Err(failure) => answer(Err(failure)),
        },
        (&Method::GET, [id]) => answer(platform.get(id)),
        (&Method::POST, [id]) => match update_request(request) {
            Ok(new) => answer(platform.update(id, new, nonce).await),
            Err(failure) => answer(Err(failure)),
        },
        (&Method::DELETE, [id]) => answer(platform.destroy(id, nonce, flag("force") || flag("kill")).await),
        (&Method::POST, [id, "start"]) => answer(platform.start(id, nonce).await),
        (&Method::POST, [id, "stop"]) => match stop_request(request) {
            Ok((sig, timeout)) => answer(platform.stop(id, nonce, sig, timeout).await),
            Err(failure) => answer(Err(failure)),
        },
        (&Method::POST, [id, "suspend"]) => answer(platform.suspend(id, nonce).await),
        (&Method::POST, [id, "cordon"]) => answer(platform.cordon(id, true, nonce)),
        (&Method::POST, [id, "uncordon"]) => answer(platform.cordon(id, false, nonce)),
        (&Method::GET, [id, "lease"]) => answer(platform.lease(id)),
        (&Method::POST, [id, "lease"]) => match lease_request(request) {
            Ok((ttl, description)) => answer(platform.acquire_lease(id, nonce, ttl, &description)),
            Err(failure) => answer(Err(failure)),
        },
        (&Method::DELETE, [id, "lease"]) => answer(platform.release_lease(id, nonce)),
        (&Method::GET, [id, "wait"]) => wait(platform, request, id).await,
        (&Method::GET, [id, "events"]) => {
            let limit = request.param("limit").and_then(|l| l.parse::<usize>().ok()).filter(|l| *l > 0).unwrap_or(20);
            answer(platform.events(id, limit.min(50)))
        }
        (_, [] | [_] | [_, "start" | "stop" | "suspend" | "cordon" | "uncordon" | "lease" | "wait" | "events"]) => {
            error(405, format!("{method} is not allowed on {}", request.path))
        }
        _ => error(404, format!("no endpoint {}", request.path)),
    }
}

/// `/v1/apps/{app}/volumes[/{id}]`: list, create, get and delete.
fn volumes(platform: &Platform, request: &Request, rest: &[&str]) -> Response {
    match (&request.method, rest) {
        (&Method::GET, []) => json(200, &platform.list_volumes()),
        (&Method::POST, []) => {
            let body = match body_object(request, false) {
                Ok(body) => body,
                Err(failure) => return answer(Err(failure)),
            };
            let Some(name) = text_field(&body, "name") else {
                return error(400, "name is required: the volume's name, which machines' mounts refer to");
            };
            let size_gb = match body.get("size_gb") {
                None | Some(Value::Null) => None,
                Some(size) => match size.as_u64() {
                    Some(size) => Some(size),
                    None => return error(400, format!("size_gb must be a whole number of GB, not {size}")),
                },
            };
            answer(platform.create_volume(&name, text_field(&body, "region").as_deref(), size_gb))
        }
        (&Method::GET, [id]) => answer(platform.get_volume(id)),
        (&Method::DELETE, [id]) => answer(platform.destroy_volume(id)),
        (_, [] | [_]) => error(405, format!("{} is not allowed on {}", request.method, request.path)),
        _ => error(404, format!("no endpoint {}", request.path)),
    }
}

async fn wait(platform: &Platform, request: &Request, id: &str) -> Response {
    let state = request.param("state").unwrap_or_else(|| "started".into());
    if !matches!(state.as_str(), "started" | "stopped" | "suspended" | "destroyed") {
        return error(
            400,
            format!("state {state:?} cannot be waited for; use started, stopped, suspended or destroyed"),
        );
    }
    let timeout = match request.param("timeout") {
        None => MAX_WAIT,
        Some(t) => match ids::parse_duration(&t) {
            Some(t) => t.min(MAX_WAIT),
            None => return error(400, format!("timeout {t:?} is not a number of seconds (at most 60)")),
        },
    };
    let instance_id = request.param("instance_id").filter(|i| !i.is_empty());
    answer(platform.wait(id, &state, instance_id.as_deref(), timeout).await)
}

/// The body as a JSON object; an empty body is an empty object when `optional`.
fn body_object(request: &Request, optional: bool) -> Result<Map<String, Value>, Failure> {
    if optional && request.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(&request.body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(bad("the request body must be a JSON object")),
        Err(e) => Err(bad(format!("invalid JSON body: {e}; send a JSON object"))),
    }
}

fn config_of(body: &Map<String, Value>) -> Result<Value, Failure> {
    match body.get("config") {
        Some(config @ Value::Object(_)) => Ok(config.clone()),
        Some(_) => Err(bad("config must be a JSON object (a full machine config)")),
        None => Err(bad("config is required: send the machine's full config; there is no partial update")),
    }
}

fn text_field(body: &Map<String, Value>, key: &str) -> Option<String> {
    body.get(key).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string)
}

fn bool_field(body: &Map<String, Value>, key: &str) -> bool {
    body.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn create_request(request: &Request) -> Result<NewMachine, Failure> {
    let body = body_object(request, false)?;
    Ok(NewMachine {
        config: config_of(&body)?,
        name: text_field(&body, "name"),
        region: text_field(&body, "region"),
        skip_launch: bool_field(&body, "skip_launch"),
        cordoned: bool_field(&body, "skip_service_registration"),
        lease_ttl: body.get("lease_ttl").and_then(Value::as_u64).filter(|t| *t > 0),
    })
}

fn update_request(request: &Request) -> Result<NewConfig, Failure> {
    let body = body_object(request, false)?;
    let config = config_of(&body)?;
    if !config.get("image").is_some_and(Value::is_string) {
        return Err(bad("config.image is required: the full config includes the image to run"));
    }
    Ok(NewConfig {
        config,
        skip_launch: bool_field(&body, "skip_launch"),
        cordon: bool_field(&body, "skip_service_registration"),
        current_version: text_field(&body, "current_version"),
    })
}

/// The optional stop body `{signal, timeout}`.
fn stop_request(request: &Request) -> Result<(Option<i32>, Option<Duration>), Failure> {
    let body = body_object(request, true)?;
    let sig = match body.get("signal") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) if name.is_empty() => None,
        Some(Value::String(name)) => Some(
            signal::parse(name)
                .ok_or_else(|| bad(format!("signal {name:?} is not supported; use SIGTERM, SIGINT or SIGKILL")))?,
        ),
        Some(other) => return Err(bad(format!("signal must be a name such as \"SIGTERM\", not {other}"))),
    };
    let timeout = match body.get("timeout") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) if t.is_empty() => None,
        Some(Value::String(t)) => Some(
            ids::parse_duration(t).ok_or_else(|| bad(format!("timeout {t:?} is not a duration such as \"30s\"")))?,
        ),
        Some(Value::Number(n)) => n.as_f64().filter(|s| *s >= 0.0).map(Duration::from_secs_f64),
        Some(other) => return Err(bad(format!("timeout must be a duration such as \"30s\", not {other}"))),
    };
    Ok((sig, timeout))
}

/// The lease body `{description, ttl}`; fly-go's `?ttl=` works too.
fn lease_request(request: &Request) -> Result<(u64, String), Failure> {
    let body = body_object(request, true)?;
    let ttl = body
        .get("ttl")
        .and_then(Value::as_u64)
        .or_else(|| request.param("ttl").and_then(|t| t.parse().ok()))
        .filter(|t| *t > 0)
        .unwrap_or(DEFAULT_LEASE_TTL);
    Ok((ttl, text_field(&body, "description").unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_ids_come_from_the_path() {
        assert_eq!(machine_id_in("/v1/apps/web/machines/abc/lease").as_deref(), Some("abc"));
        assert_eq!(machine_id_in("/v1/apps/web/machines"), None);
        assert_eq!(machine_id_in("/__sandbox/machines"), None);
    }
}
