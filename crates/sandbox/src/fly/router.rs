//! The Fly proxy stand-in: one port for the app, forwarding each request to a
//! routable machine (app group, started, not cordoned, checks passing), round-robin,
//! and trying another machine when one cannot be reached, as Fly's proxy does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderName, HeaderValue};

use super::ids;
use super::platform::Platform;
use crate::client::{self, Reply, Stage};
use crate::server::{self, text, Request, Response, Server};

/// Machines tried per request before giving up.
const ATTEMPTS: usize = 3;
/// How long a machine may take to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

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
    let mut tried = Vec::new();
    let mut last_error = String::new();
    while tried.len() < ATTEMPTS {
        let Some((id, port)) = platform.pick_backend(&tried) else { break };
        tried.push(id.clone());
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        match client::send(addr, upstream(&request), ANSWER_TIMEOUT).await {
            Ok(reply) => return downstream(reply, &id, &platform.region),
            // No connection, so the machine never saw the request: another may take it.
            Err(e) if e.stage == Stage::Connect => {
                last_error = format!("machine {id}: {}", e.message);
            }
            Err(e) if e.stage == Stage::Timeout => {
                return text(504, format!("machine {id} did not answer within {ANSWER_TIMEOUT:?}\n"));
            }
            Err(e) => {
                return text(502, format!("machine {id} closed the connection without a full answer: {}\n", e.message))
            }
        }
    }
    if tried.is_empty() {
        text(503, "no healthy machines\n")
    } else {
        text(502, format!("could not reach any machine (tried {}); last: {last_error}\n", tried.join(", ")))
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
