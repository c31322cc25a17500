//! The Machines API over HTTP (machines and volumes): paths, request bodies and
//! lease nonces in; the platform's answers out as JSON shaped like the Fly Machines
//! OpenAPI spec, errors as `{"error": ...}`. Plus the Fly control endpoints
//! `/__sandbox/machines` and `/__sandbox/volumes`.
//!
//! Faults, the token check, the call log and `/__sandbox/calls|faults` are the kit's
//! pipeline (`kit::api`); this module only says how Fly words and shapes them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::Method;
use serde_json::{json, Map, Value};

use super::ids;
use super::platform::{Failure, NewConfig, NewMachine, Platform};
use super::Faults;
use crate::kit::api::{self as pipeline, Emulator, Gate};
use crate::kit::process::signal;
use crate::kit::{Refusal, TokenRule};
use crate::server::{json, Request, Response, Server};

/// The header that proves a caller holds a machine's lease.
const NONCE_HEADER: &str = "fly-machine-lease-nonce";
/// The wait endpoint's ceiling, as Fly's proxy imposes.
const MAX_WAIT: Duration = Duration::from_secs(60);
const DEFAULT_LEASE_TTL: u64 = 30;

/// The Machines API as the kit's pipeline sees it.
struct MachinesApi {
    platform: Arc<Platform>,
}

pub async fn serve(platform: Arc<Platform>, addr: SocketAddr) -> std::io::Result<Server> {
    pipeline::serve(Arc::new(MachinesApi { platform }), addr).await
}

impl Emulator for MachinesApi {
    type Faults = Faults;

    fn gate(&self) -> &Gate<Faults> {
        &self.platform.gate
    }

    fn error(&self, status: u16, message: &str) -> Response {
        error(status, message)
    }

    fn fault_message(&self, status: u16) -> String {
        match status {
            503 => "the Machines API is temporarily unavailable (sandbox fault); retry with backoff".into(),
            429 => "rate limited".into(),
            _ => format!("the Machines API failed with {status} (sandbox fault)"),
        }
    }

    fn token_rule(&self) -> Option<&TokenRule> {
        Some(&self.platform.auth)
    }

    /// Fly says no more than this, whatever was wrong with the token.
    fn unauthorized(&self, _refusal: Refusal) -> Response {
        error(401, "unauthorized")
    }

    async fn route(&self, request: &Request) -> Response {
        route(&self.platform, request).await
    }

    fn control(&self, request: &Request) -> Option<Response> {
        match (&request.method, request.path.as_str()) {
            (&Method::GET, "/__sandbox/machines") => Some(json(200, &json!(self.platform.views()))),
            (&Method::GET, "/__sandbox/volumes") => Some(json(200, &json!(self.platform.volume_views()))),
            _ => None,
        }
    }

    fn control_endpoints(&self) -> &'static [&'static str] {
        &["GET /__sandbox/machines", "GET /__sandbox/volumes"]
    }

    fn target(&self, path: &str) -> Option<String> {
        machine_id_in(path)
    }
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

/// The machine a Machines API path is about, for the call log.
fn machine_id_in(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/v1/apps/")?;
    let mut parts = rest.split('/');
    let (_app, machines, id) = (parts.next()?, parts.next()?, parts.next()?);
    (machines == "machines" && !id.is_empty()).then(|| id.to_string())
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
