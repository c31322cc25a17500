//! A forwarding proxy in front of an emulator's instances (Fly's proxy, Heroku's
//! router, a load balancer): one port for the app, each request sent to a backend
//! the emulator picks, and another backend tried only when one could not be
//! connected to, since only then is it certain the request was not seen. A request
//! pinned to one backend goes there or nowhere.
//!
//! The emulator decides which backends are healthy and in what order, what pins a
//! request, and what headers mark a forwarded request and its answer (`Backends`).
//! This module knows HTTP forwarding only: no provider's headers or rules.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::HeaderValue;
use hyper::HeaderMap;

use crate::client::{self, ClientError, Reply, Stage};
use crate::server::{self, text, Request, Response, Server};

/// Backends tried per request (or tries of a pinned one) before giving up.
pub const ATTEMPTS: usize = 3;
/// The pause between tries of a pinned backend that refused the connection: it may
/// be a moment from listening.
const PINNED_RETRY_DELAY: Duration = Duration::from_millis(100);

/// Headers that belong to one connection, not to the request (RFC 9110 §7.6.1).
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

/// Where a request can go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub id: String,
    pub addr: SocketAddr,
}

/// Round-robin over the backends that can take a request: each pick moves on by one,
/// skipping those a request already tried.
#[derive(Debug, Default)]
pub struct RoundRobin(AtomicUsize);

impl RoundRobin {
    /// The next of `open` not in `tried`; None when none is left.
    pub fn pick(&self, open: impl IntoIterator<Item = Backend>, tried: &[String]) -> Option<Backend> {
        let open: Vec<Backend> = open.into_iter().filter(|b| !tried.contains(&b.id)).collect();
        match open.len() {
            0 => None,
            n => open.into_iter().nth(self.0.fetch_add(1, Ordering::Relaxed) % n),
        }
    }
}

/// A backend listening on a port of 127.0.0.1.
pub fn on_loopback((id, port): (String, u16)) -> Backend {
    Backend { id, addr: SocketAddr::from(([127, 0, 0, 1], port)) }
}

/// A request pinned to one backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    pub id: String,
    /// What pinned it, for messages: e.g. the header's name.
    pub by: &'static str,
}

/// An emulator's instances as the router sees them.
pub trait Backends: Send + Sync + 'static {
    /// What a backend is called in messages: "machine", "dyno"...
    fn noun(&self) -> &'static str {
        "backend"
    }

    /// The next backend for `request`, skipping those in `tried`; None when no other
    /// is healthy. Called once per attempt, so a rotation advances per try.
    fn pick(&self, request: &Request, tried: &[String]) -> Option<Backend>;

    /// The backend `request` is pinned to, if it is.
    fn pin(&self, _request: &Request) -> Option<Pin> {
        None
    }

    /// Where pinned backend `id` listens, or why it cannot take the request. Asked
    /// again before each try.
    fn pinned(&self, id: &str) -> Result<SocketAddr, String> {
        Err(format!("{} {id} cannot be pinned to", self.noun()))
    }

    /// Headers the platform adds to a request it forwards, besides `x-forwarded-for`.
    fn forward(&self, _headers: &mut HeaderMap) {}

    /// Headers the platform adds to an answer from `backend`.
    fn decorate(&self, _headers: &mut HeaderMap, _backend: &str) {}

    /// The answer when no backend can take a request at all: the platform's own page
    /// (Heroku's H10 "App crashed", say).
    fn none_available(&self) -> Response {
        text(503, format!("no healthy {}s\n", self.noun()))
    }

    /// How long a backend may take to answer.
    fn answer_timeout(&self) -> Duration {
        Duration::from_secs(60)
    }
}

/// Serves the router for `backends` on `addr` (port 0 for any free port).
pub async fn serve<B: Backends>(backends: Arc<B>, addr: SocketAddr) -> std::io::Result<Server> {
    server::serve(addr, move |request| {
        let backends = backends.clone();
        async move { forward(&*backends, request).await }
    })
    .await
}

/// Sends `request` to a backend and returns the answer as the platform delivers it.
pub async fn forward<B: Backends>(backends: &B, request: Request) -> Response {
    if let Some(pin) = backends.pin(&request) {
        return forward_pinned(backends, &request, &pin).await;
    }
    let noun = backends.noun();
    let mut tried = Vec::new();
    let mut last_error = String::new();
    while tried.len() < ATTEMPTS {
        let Some(backend) = backends.pick(&request, &tried) else { break };
        tried.push(backend.id.clone());
        match client::send(backend.addr, upstream(backends, &request), backends.answer_timeout()).await {
            Ok(reply) => return downstream(backends, reply, &backend.id),
            Err(e) => match failed(backends, &e, &backend.id) {
                Some(response) => return response,
                None => last_error = format!("{noun} {}: {}", backend.id, e.message),
            },
        }
    }
    if tried.is_empty() {
        backends.none_available()
    } else {
        text(502, format!("could not reach any {noun} (tried {}); last: {last_error}\n", tried.join(", ")))
    }
}

/// Sends a request to the pinned backend and no other, retrying only a refused
/// connection; the backend is looked up again before each try.
async fn forward_pinned<B: Backends>(backends: &B, request: &Request, pin: &Pin) -> Response {
    let (noun, id, by) = (backends.noun(), pin.id.as_str(), pin.by);
    let mut last_error = String::new();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(PINNED_RETRY_DELAY).await;
        }
        let addr = match backends.pinned(id) {
            Ok(addr) => addr,
            Err(why) => return text(503, format!("{by}: {why}; no other {noun} was tried\n")),
        };
        match client::send(addr, upstream(backends, request), backends.answer_timeout()).await {
            Ok(reply) => return downstream(backends, reply, id),
            Err(e) => match failed(backends, &e, id) {
                Some(response) => return response,
                None => last_error = e.message,
            },
        }
    }
    text(
        503,
        format!(
            "{by}: could not reach {noun} {id} in {ATTEMPTS} tries (last: {last_error}); no other {noun} was tried\n"
        ),
    )
}

/// The answer for a request backend `id` failed, or None when it never connected,
/// so the backend never saw the request and it may be tried again.
fn failed<B: Backends>(backends: &B, e: &ClientError, id: &str) -> Option<Response> {
    let noun = backends.noun();
    match e.stage {
        Stage::Connect => None,
        Stage::Timeout => {
            Some(text(504, format!("{noun} {id} did not answer within {:?}\n", backends.answer_timeout())))
        }
        _ => Some(text(502, format!("{noun} {id} closed the connection without a full answer: {}\n", e.message))),
    }
}

fn upstream<B: Backends>(backends: &B, request: &Request) -> hyper::Request<Full<Bytes>> {
    let uri = match &request.query {
        Some(q) => format!("{}?{q}", request.path),
        None => request.path.clone(),
    };
    let mut upstream = hyper::Request::new(Full::new(request.body.clone()));
    *upstream.method_mut() = request.method.clone();
    *upstream.uri_mut() = uri.parse().unwrap_or_else(|_| hyper::Uri::from_static("/"));
    copy_end_to_end(&request.headers, upstream.headers_mut());
    let headers = upstream.headers_mut();
    headers.insert("x-forwarded-for", HeaderValue::from_static("127.0.0.1"));
    backends.forward(headers);
    upstream
}

fn downstream<B: Backends>(backends: &B, reply: Reply, id: &str) -> Response {
    let mut response = hyper::Response::new(Full::new(reply.body));
    *response.status_mut() = hyper::StatusCode::from_u16(reply.status).unwrap_or(hyper::StatusCode::BAD_GATEWAY);
    copy_end_to_end(&reply.headers, response.headers_mut());
    backends.decorate(response.headers_mut(), id);
    response
}

/// Copies every header but hop-by-hop ones and the length: the body is re-sent
/// whole, so hyper sets the length itself.
fn copy_end_to_end(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        if !HOP_BY_HOP.contains(&name.as_str()) && name != "content-length" {
            to.append(name.clone(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use serde_json::json;

    /// Backends by id, picked in `order`; a backend that is down has an address nothing listens on.
    struct Pool {
        order: Vec<(String, SocketAddr)>,
        picks: AtomicUsize,
        timeout: Duration,
    }

    impl Backends for Pool {
        fn noun(&self) -> &'static str {
            "box"
        }

        fn pick(&self, _request: &Request, tried: &[String]) -> Option<Backend> {
            self.picks.fetch_add(1, Ordering::SeqCst);
            let (id, addr) = self.order.iter().find(|(id, _)| !tried.contains(id))?;
            Some(Backend { id: id.clone(), addr: *addr })
        }

        fn pin(&self, request: &Request) -> Option<Pin> {
            request.header("x-pin").map(|id| Pin { id: id.to_string(), by: "x-pin" })
        }

        fn pinned(&self, id: &str) -> Result<SocketAddr, String> {
            self.order.iter().find(|(b, _)| b == id).map(|(_, addr)| *addr).ok_or_else(|| format!("box {id} is gone"))
        }

        fn forward(&self, headers: &mut HeaderMap) {
            headers.insert("x-platform", HeaderValue::from_static("toy"));
        }

        fn decorate(&self, headers: &mut HeaderMap, backend: &str) {
            headers.insert("x-backend", HeaderValue::from_str(backend).expect("an id"));
        }

        fn answer_timeout(&self) -> Duration {
            self.timeout
        }
    }

    /// A backend that echoes the headers it got; `delay` before answering.
    async fn echo(delay: Duration, seen: Arc<Mutex<Vec<HeaderMap>>>) -> Server {
        server::serve(SocketAddr::from(([127, 0, 0, 1], 0)), move |request: Request| {
            let seen = seen.clone();
            async move {
                seen.lock().expect("not poisoned").push(request.headers.clone());
                tokio::time::sleep(delay).await;
                let mut answer = server::json(200, &json!({ "path": request.path }));
                answer.headers_mut().insert("keep-alive", HeaderValue::from_static("timeout=5"));
                answer
            }
        })
        .await
        .expect("binds")
    }

    /// An address nothing listens on.
    async fn refusing() -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
        listener.local_addr().expect("has an address")
    }

    fn pool(order: Vec<(&str, SocketAddr)>, timeout: Duration) -> Pool {
        let order = order.into_iter().map(|(id, addr)| (id.to_string(), addr)).collect();
        Pool { order, picks: AtomicUsize::new(0), timeout }
    }

    fn get(headers: &[(&'static str, &'static str)]) -> Request {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, HeaderValue::from_static(value));
        }
        Request { method: hyper::Method::GET, path: "/x".into(), query: None, headers: map, body: Bytes::new() }
    }

    #[tokio::test]
    async fn a_refused_connection_moves_on_to_the_next_backend() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let up = echo(Duration::ZERO, seen.clone()).await;
        let pool = pool(vec![("down", refusing().await), ("up", up.addr)], Duration::from_secs(5));
        let request = get(&[("connection", "x-secret"), ("proxy-authorization", "Basic Zm9v"), ("x-keep", "1")]);
        let response = forward(&pool, request).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers().get("x-backend").map(HeaderValue::as_bytes), Some(&b"up"[..]));
        assert!(response.headers().get("keep-alive").is_none(), "hop-by-hop headers stay on their hop");
        let got = seen.lock().expect("not poisoned")[0].clone();
        assert_eq!(got.get("x-keep").map(HeaderValue::as_bytes), Some(&b"1"[..]));
        assert_eq!(got.get("x-platform").map(HeaderValue::as_bytes), Some(&b"toy"[..]));
        assert_eq!(got.get("x-forwarded-for").map(HeaderValue::as_bytes), Some(&b"127.0.0.1"[..]));
        assert!(got.get("proxy-authorization").is_none() && got.get("connection").is_none());
        up.shutdown().await;
    }

    #[tokio::test]
    async fn a_backend_that_took_the_request_is_not_retried() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let slow = echo(Duration::from_secs(2), seen.clone()).await;
        let fast = echo(Duration::ZERO, seen.clone()).await;
        let pool = pool(vec![("slow", slow.addr), ("fast", fast.addr)], Duration::from_millis(200));
        let response = forward(&pool, get(&[])).await;
        assert_eq!(response.status(), 504);
        assert_eq!(pool.picks.load(Ordering::SeqCst), 1, "it may have acted on the request: no second try");
        slow.stop();
        fast.shutdown().await;
    }

    #[tokio::test]
    async fn without_backends_the_answer_says_so() {
        let none = pool(vec![], Duration::from_secs(1));
        let response = forward(&none, get(&[])).await;
        assert_eq!(response.status(), 503);
        let all_down = pool(vec![("a", refusing().await), ("b", refusing().await)], Duration::from_secs(1));
        assert_eq!(forward(&all_down, get(&[])).await.status(), 502);
        assert_eq!(all_down.picks.load(Ordering::SeqCst), 3, "both tried, then nothing left");
    }

    #[tokio::test]
    async fn a_pinned_request_goes_there_or_nowhere() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let up = echo(Duration::ZERO, seen.clone()).await;
        let pool = pool(vec![("up", up.addr), ("down", refusing().await)], Duration::from_secs(5));
        let pinned = forward(&pool, get(&[("x-pin", "up")])).await;
        assert_eq!(pinned.headers().get("x-backend").map(HeaderValue::as_bytes), Some(&b"up"[..]));
        let down = forward(&pool, get(&[("x-pin", "down")])).await;
        assert_eq!(down.status(), 503);
        let gone = forward(&pool, get(&[("x-pin", "gone")])).await;
        assert_eq!(gone.status(), 503);
        assert_eq!(pool.picks.load(Ordering::SeqCst), 0, "no other backend was picked");
        assert_eq!(seen.lock().expect("not poisoned").len(), 1);
        up.shutdown().await;
    }

    #[test]
    fn round_robin_moves_on_by_one_and_skips_what_a_request_tried() {
        let rr = RoundRobin::default();
        let all = || ["a", "b", "c"].map(|id| on_loopback((id.to_string(), 1)));
        let picks: Vec<String> = (0..4).filter_map(|_| rr.pick(all(), &[])).map(|b| b.id).collect();
        assert_eq!(picks, ["a", "b", "c", "a"]);
        let tried = ["a".to_string(), "c".to_string()];
        assert_eq!(rr.pick(all(), &tried).map(|b| b.id).as_deref(), Some("b"));
        assert_eq!(rr.pick(all(), &["a", "b", "c"].map(String::from)), None);
    }
}
