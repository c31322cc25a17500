//! The Droplets and Load Balancers API over HTTP, in DigitalOcean's ways: Bearer
//! tokens, `ratelimit-*` headers on every answer, `page`/`per_page` paging, errors as
//! `{"id", "message", "request_id"}`, 204 with no body for the LB's droplet changes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::header::HeaderValue;
use hyper::Method;
use serde_json::{json, Value};

use super::{Cloud, Droplet, LbTarget, Protocol, State};
use crate::digitalocean::{
    bad_request, error, fault_message, page, rate_limited, refuse, status_error, uuid, Refused, Spent,
};
use crate::kit::api::{self as pipeline, Emulator, Gate};
use crate::kit::{Faults, Refusal, TokenRule};
use crate::server::{json, text, Request, Response, Server};

/// DigitalOcean's 404 message, the same whatever was missing.
const NOT_FOUND: &str = "The resource you were accessing could not be found.";

struct DropletsApi {
    cloud: Arc<Cloud>,
}

pub async fn serve(cloud: Arc<Cloud>, addr: SocketAddr) -> std::io::Result<Server> {
    let server = pipeline::serve(Arc::new(DropletsApi { cloud: cloud.clone() }), addr).await?;
    *cloud.base.lock().unwrap_or_else(|p| p.into_inner()) = server.url();
    Ok(server)
}

fn not_found() -> Refused {
    refuse(404, "not_found", NOT_FOUND)
}

impl Emulator for DropletsApi {
    type Faults = Faults;

    fn gate(&self) -> &Gate<Faults> {
        &self.cloud.gate
    }

    fn error(&self, status: u16, message: &str) -> Response {
        status_error(status, message)
    }

    fn fault_message(&self, status: u16) -> String {
        fault_message(status)
    }

    fn precheck(&self, _request: &Request) -> Option<Response> {
        self.cloud.bucket.spend().err().map(|wait| rate_limited(Spent::Minute(wait)))
    }

    fn token_rule(&self) -> Option<&TokenRule> {
        Some(&self.cloud.auth)
    }

    fn unauthorized(&self, _refusal: Refusal) -> Response {
        error(401, "unauthorized", "Unable to authenticate you")
    }

    async fn route(&self, request: &Request) -> Response {
        match route(&self.cloud, request) {
            Ok(response) => response,
            Err(r) => error(r.status, r.id, &r.message),
        }
    }

    fn target(&self, path: &str) -> Option<String> {
        let mut parts = path.trim_start_matches('/').split('/');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("v2"), Some("droplets" | "load_balancers"), Some(id)) if !id.is_empty() => Some(id.to_string()),
            _ => None,
        }
    }

    fn decorate(&self, _request: &Request, response: &mut Response) {
        let bucket = &self.cloud.bucket;
        let headers = response.headers_mut();
        headers.insert("ratelimit-limit", HeaderValue::from(bucket.capacity()));
        headers.insert("ratelimit-remaining", HeaderValue::from(bucket.left()));
        headers.insert("ratelimit-reset", HeaderValue::from(bucket.full_at()));
        if let Ok(v) = HeaderValue::from_str(&uuid()) {
            headers.insert("x-request-id", v);
        }
    }
}

fn route(cloud: &Cloud, request: &Request) -> Result<Response, Refused> {
    let parts: Vec<&str> = request.path.trim_start_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let base = cloud.base.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let lb = |id: &str| if id == cloud.lb_id { Ok(()) } else { Err(not_found()) };
    match (request.method.clone(), parts.as_slice()) {
        (Method::GET, ["v2", "droplets"]) => {
            let (tag, name) = (request.param("tag_name"), request.param("name"));
            if tag.is_some() && (name.is_some() || request.param("type").is_some()) {
                return Err(refuse(422, "unprocessable_entity", "tag_name cannot be combined with name or type"));
            }
            let s = cloud.lock();
            let listed: Vec<Value> = s
                .droplets
                .iter()
                .filter(|d| tag.as_ref().is_none_or(|t| d.spec.tags.contains(t)))
                .filter(|d| name.as_ref().is_none_or(|n| &d.spec.name == n))
                .map(|d| droplet_json(cloud, d))
                .collect();
            Ok(json(200, &page(&base, request, "droplets", listed)?))
        }
        (Method::GET, ["v2", "droplets", id]) => {
            let s = cloud.lock();
            let d = s.droplets.iter().find(|d| d.id.to_string() == *id).ok_or_else(not_found)?;
            Ok(json(200, &json!({ "droplet": droplet_json(cloud, d) })))
        }
        (Method::GET, ["v2", "load_balancers"]) => {
            let all = vec![lb_json(cloud, &cloud.lock())];
            Ok(json(200, &page(&base, request, "load_balancers", all)?))
        }
        (Method::GET, ["v2", "load_balancers", id]) => {
            lb(id)?;
            Ok(json(200, &json!({ "load_balancer": lb_json(cloud, &cloud.lock()) })))
        }
        (method @ (Method::POST | Method::DELETE), ["v2", "load_balancers", id, "droplets"]) => {
            lb(id)?;
            change_droplets(cloud, request, method == Method::POST)?;
            let mut empty = text(204, "");
            empty.headers_mut().remove("content-type");
            Ok(empty)
        }
        _ => Err(not_found()),
    }
}

/// Adds or removes the body's `droplet_ids`; the balancer follows at once.
fn change_droplets(cloud: &Cloud, request: &Request, add: bool) -> Result<(), Refused> {
    if let LbTarget::ByTag(tag) = &cloud.lb.by {
        let message = format!(
            "this load balancer targets the tag {tag:?}: droplets cannot be added or removed by id; tag or untag them instead"
        );
        return Err(refuse(422, "unprocessable_entity", message));
    }
    let body: Value =
        serde_json::from_slice(&request.body).map_err(|e| bad_request(format!("the body is not valid JSON: {e}")))?;
    let ids: Vec<u64> = body
        .get("droplet_ids")
        .and_then(Value::as_array)
        .and_then(|ids| ids.iter().map(Value::as_u64).collect())
        .ok_or_else(|| refuse(422, "unprocessable_entity", "droplet_ids must be an array of droplet ids (integers)"))?;
    let mut s = cloud.lock();
    let now = std::time::Instant::now();
    if s.busy_until.is_some_and(|until| now < until) {
        return Err(refuse(403, "forbidden", "Load Balancer can't be updated while it processes previous actions"));
    }
    if let Some(unknown) = ids.iter().find(|id| !s.droplets.iter().any(|d| d.id == **id)) {
        return Err(refuse(422, "unprocessable_entity", format!("droplet {unknown} does not exist")));
    }
    for id in ids {
        let present = s.lb_droplets.contains(&id);
        if add && !present {
            s.lb_droplets.push(id);
        } else if !add {
            s.lb_droplets.retain(|d| *d != id);
        }
    }
    s.busy_until = Some(now + cloud.busy);
    cloud.sync_members(&s);
    Ok(())
}

fn region_json(cloud: &Cloud) -> Value {
    json!({
        "name": region_name(&cloud.region),
        "slug": cloud.region,
        "features": ["backups", "ipv6", "metadata", "install_agent", "storage", "image_transfer"],
        "available": true,
        "sizes": ["s-1vcpu-1gb", "s-1vcpu-2gb", "s-2vcpu-2gb", "s-2vcpu-4gb"],
    })
}

fn region_name(slug: &str) -> String {
    let city = match slug.trim_end_matches(|c: char| c.is_ascii_digit()) {
        "nyc" => "New York",
        "sfo" => "San Francisco",
        "ams" => "Amsterdam",
        "fra" => "Frankfurt",
        "lon" => "London",
        "blr" => "Bangalore",
        "sgp" => "Singapore",
        "tor" => "Toronto",
        "syd" => "Sydney",
        other => other,
    };
    let n = slug.trim_start_matches(|c: char| !c.is_ascii_digit());
    format!("{city} {n}").trim().to_string()
}

pub fn droplet_json(cloud: &Cloud, d: &Droplet) -> Value {
    let ip = d.spec.ip.to_string();
    // Both addresses are the loopback one: the test's host side listens there.
    let v4 = |kind: &str| json!({ "ip_address": ip, "netmask": "255.0.0.0", "gateway": "127.0.0.1", "type": kind });
    json!({
        "id": d.id,
        "name": d.spec.name,
        "memory": 1024,
        "vcpus": 1,
        "disk": 25,
        "disk_info": [{ "type": "local", "size": { "amount": 25, "unit": "gib" } }],
        "locked": false,
        "status": "active",
        "created_at": d.created_at,
        "features": ["droplet_agent", "private_networking"],
        "backup_ids": [],
        "next_backup_window": null,
        "snapshot_ids": [],
        "image": {
            "id": 158_000_000,
            "name": "24.04 (LTS) x64",
            "type": "base",
            "distribution": "Ubuntu",
            "slug": "ubuntu-24-04-x64",
            "public": true,
            "regions": ["nyc3", "ams3", "fra1", "lon1", "sfo1"],
            "created_at": "2024-04-25T15:19:47Z",
            "min_disk_size": 7,
            "size_gigabytes": 2.36,
            "tags": [],
            "status": "available",
            "error_message": "",
        },
        "volume_ids": [],
        "size": {
            "slug": "s-1vcpu-1gb",
            "memory": 1024,
            "vcpus": 1,
            "disk": 25,
            "transfer": 1.0,
            "price_monthly": 6.0,
            "price_hourly": 0.00893,
            "regions": [cloud.region],
            "available": true,
            "description": "Basic",
        },
        "size_slug": "s-1vcpu-1gb",
        "networks": { "v4": [v4("public"), v4("private")], "v6": [] },
        "region": region_json(cloud),
        "tags": d.spec.tags,
        "vpc_uuid": vpc_uuid(),
    })
}

/// The one VPC everything is in.
fn vpc_uuid() -> &'static str {
    "5a4981aa-9653-4bd1-bef5-d6bff52042e4"
}

/// Whole seconds as a JSON integer, as DigitalOcean sends them; a sandbox check that
/// runs faster as a float of seconds (0.3), which the provider under test accepts.
fn seconds(d: Duration) -> Value {
    if d.subsec_nanos() == 0 {
        json!(d.as_secs())
    } else {
        json!(d.as_secs_f64())
    }
}

pub fn lb_json(cloud: &Cloud, s: &State) -> Value {
    let lb = &cloud.lb;
    let check = cloud.balancer.check();
    let mut v = json!({
        "id": cloud.lb_id,
        "name": lb.name,
        "project_id": "8c3f1e4b-2d5a-4f6e-9b7c-1a2b3c4d5e6f",
        "ip": "127.0.0.1",
        "ipv6": "",
        "size_unit": 1,
        "size": "lb-small",
        "algorithm": "round_robin",
        "status": s.status.as_deref().unwrap_or("active"),
        "created_at": cloud.lb_created_at,
        "forwarding_rules": [{
            "entry_protocol": "http",
            "entry_port": lb.entry_port,
            "target_protocol": "http",
            "target_port": lb.target_port,
            "certificate_id": "",
            "tls_passthrough": false,
        }],
        "health_check": {
            "protocol": match check.protocol { Protocol::Http => "http", Protocol::Https => "https", Protocol::Tcp => "tcp" },
            "port": check.port,
            "path": check.path,
            "check_interval_seconds": seconds(check.interval),
            "response_timeout_seconds": seconds(check.timeout),
            "healthy_threshold": check.healthy,
            "unhealthy_threshold": check.unhealthy,
        },
        "sticky_sessions": { "type": "none" },
        "redirect_http_to_https": false,
        "enable_proxy_protocol": false,
        "enable_backend_keepalive": false,
        "http_idle_timeout_seconds": 60,
        "vpc_uuid": vpc_uuid(),
        "disable_lets_encrypt_dns_records": false,
        "firewall": { "deny": [], "allow": [] },
        "network": "EXTERNAL",
        "network_stack": "IPV4",
        "type": "REGIONAL",
        "tls_cipher_policy": "DEFAULT",
        "region": region_json(cloud),
    });
    // One or the other, never both, as DigitalOcean shows an LB's targets.
    let o = v.as_object_mut().expect("an object");
    match &lb.by {
        LbTarget::ById => o.insert("droplet_ids".into(), json!(s.lb_droplets)),
        LbTarget::ByTag(tag) => o.insert("tag".into(), json!(tag)),
    };
    v
}
