//! The Fly proxy stand-in: one port for the app, forwarding each request to a
//! routable machine (app group, started, not cordoned, checks passing), round-robin,
//! and trying another machine when one cannot be reached, as Fly's proxy does. A
//! request with `fly-force-instance-id` goes to that machine only, or fails.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderName, HeaderValue};

use super::ids;
use super::platform::Platform;
use crate::client::{self, ClientError, Reply, Stage};
use crate::server::{self, text, Request, Response, Server};

/// Machines tried per request before giving up.
const ATTEMPTS: usize = 3;
/// How long a machine may take to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// The request header that pins a request to one machine, by machine id.
const FORCE_INSTANCE_HEADER: &str = "fly-force-instance-id";
/// The pause between tries of a forced machine that refused the connection.
const FORCED_RETRY_DELAY: Duration = Duration::from_millis(100);

/// Headers that belong to one connection, not to the request.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

pub async fn serve(platform: Arc<Platform>, addr: SocketAddr) -> std::io::Result<Server> {
    server::serve(addr, move |request| {
        let platform = platform.clone();
        async move { forward(&platform, request).await }
    })
    .await
}

async fn forward(platform: &Platform, request: Request) -> Response {
    // Header names are case-insensitive: hyper keeps them lowercased.
    let forced = request.header(FORCE_INSTANCE_HEADER).map(str::trim).filter(|id| !id.is_empty());
    if let Some(id) = forced {
        return forward_forced(platform, &request, id).await;
    }
    let mut tried = Vec::new();
    let mut last_error = String::new();
    while tried.len() < ATTEMPTS {
        let Some((id, port)) = platform.pick_backend(&tried) else { break };
        tried.push(id.clone());
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        match client::send(addr, upstream(&request), ANSWER_TIMEOUT).await {
            Ok(reply) => return downstream(reply, &id, &platform.region),
            Err(e) => match failed(&e, &id) {
                Some(response) => return response,
                // No connection, so the machine never saw the request: another may take it.
                None => last_error = format!("machine {id}: {}", e.message),
            },
        }
    }
    if tried.is_empty() {
        text(503, "no healthy machines\n")
    } else {
        text(502, format!("could not reach any machine (tried {}); last: {last_error}\n", tried.join(", ")))
    }
}

/// Sends a request to machine `id` and no other, as Fly's proxy does for
/// `fly-force-instance-id`: "No fallback if Machine is ultimately unavailable", and it
/// "will attempt to reach the Machine multiple times if the Machine is unhealthy"
/// (Fly's dynamic request routing docs), so failing checks do not keep it away.
///
/// Cordoned machines (and ones created with `skip_service_registration`) take forced
/// requests too, so a test can try a new machine before it takes traffic. Fly does
/// not document this either way; what supports it is that since Fly's cordon rework
/// a cordoned machine keeps its services registered and is only marked cordoned
/// (flyctl PR #4565), so the proxy still knows where to deliver.
///
/// A machine that does not exist, is not started, has no services or no listening
/// process gets 503 with a body naming it: Fly's proxy answers an error here too
/// (PR02 "Machine not found" among its codes), with no documented status.
async fn forward_forced(platform: &Platform, request: &Request, id: &str) -> Response {
    let mut last_error = String::new();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(FORCED_RETRY_DELAY).await;
        }
        let port = match platform.forced_backend(id) {
            Ok(port) => port,
            Err(why) => return text(503, format!("{FORCE_INSTANCE_HEADER}: {why}; no other machine was tried\n")),
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        match client::send(addr, upstream(request), ANSWER_TIMEOUT).await {
            Ok(reply) => return downstream(reply, id, &platform.region),
            Err(e) => match failed(&e, id) {
                Some(response) => return response,
                None => last_error = e.message,
            },
        }
    }
    text(
        503,
        format!(
            "{FORCE_INSTANCE_HEADER}: could not reach machine {id} in {ATTEMPTS} tries (last: {last_error}); \
             no other machine was tried\n"
        ),
    )
}

/// The answer for a request machine `id` failed, or None when it never connected,
/// so the machine never saw the request and it may be tried again.
fn failed(e: &ClientError, id: &str) -> Option<Response> {
    match e.stage {
        Stage::Connect => None,
        Stage::Timeout => Some(text(504, format!("machine {id} did not answer within {ANSWER_TIMEOUT:?}\n"))),
        _ => Some(text(502, format!("machine {id} closed the connection without a full answer: {}\n", e.message))),
    }
}

fn upstream(request: &Request) -> hyper::Request<Full<Bytes>> {
    let uri = match &request.query {
        Some(q) => format!("{}?{q}", request.path),
        None => request.path.clone(),
    };
    let mut upstream = hyper::Request::new(Full::new(request.body.clone()));
    *upstream.method_mut() = request.method.clone();
    *upstream.uri_mut() = uri.parse().unwrap_or_else(|_| hyper::Uri::from_static("/"));
    let headers = upstream.headers_mut();
    for (name, value) in &request.headers {
        // The body is re-sent whole, so hyper sets its length.
        if !HOP_BY_HOP.contains(&name.as_str()) && name != "content-length" {
            headers.append(name.clone(), value.clone());
        }
    }
    headers.insert("fly-forwarded-proto", HeaderValue::from_static("http"));
    headers.insert("x-forwarded-for", HeaderValue::from_static("127.0.0.1"));
    upstream
}

fn downstream(reply: Reply, machine_id: &str, region: &str) -> Response {
    let mut response = hyper::Response::new(Full::new(reply.body));
    *response.status_mut() = hyper::StatusCode::from_u16(reply.status).unwrap_or(hyper::StatusCode::BAD_GATEWAY);
    let headers = response.headers_mut();
    for (name, value) in &reply.headers {
        if !HOP_BY_HOP.contains(&name.as_str()) && name != "content-length" {
            headers.append(name.clone(), value.clone());
        }
    }
    let extra = [
        ("via", "1.1 fly.io".to_string()),
        ("fly-request-id", format!("{}-{region}", ids::instance_id())),
        // Not a Fly header: lets a test see which machine answered.
        ("sandbox-machine-id", machine_id.to_string()),
    ];
    for (name, value) in extra {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    response
}
