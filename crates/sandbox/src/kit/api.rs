//! The request pipeline every emulator's API goes through, so that faults, auth and
//! the call log behave the same whichever provider a test drives:
//!
//! 1. `/__sandbox/*` control requests first: exempt from faults, auth and the log,
//!    so a test (or a driver in another process) can always switch faults off;
//! 2. reset screening: while resets are pending a new connection is closed before it
//!    is read (its request line only peeked at, so control requests get through);
//! 3. the fault verdict (`faults`), then the `slow_ms` delay;
//! 4. the emulator's own answer: its pre-auth checks, the token check, its routes;
//! 5. the emulator's headers, then the call goes in the log.
//!
//! An emulator plugs in through `Emulator`: its error body shape, its token rule, its
//! routes and control endpoints, how to name a call's target. This module knows no
//! provider's paths or bodies; the emulators know nothing of how faults are served.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hyper::header::HeaderValue;
use hyper::Method;
use serde_json::json;
use tokio::net::TcpStream;

use super::auth::{Refusal, TokenRule};
use super::calls::{Call, CallLog};
use super::faults::{FaultSet, Verdict};
use crate::server::{self, Request, Response, Server};

/// What a malformed-burst GET gets: JSON cut off mid-string.
const MALFORMED_BODY: &str = r#"{"id":"sandbox-0001","state":"sta"#;
/// How long the screening waits for a request line before letting the connection in.
const PEEK_TIMEOUT: Duration = Duration::from_secs(1);

/// The kit's share of an emulator's state: the fault set and the call log. Kept apart
/// from the emulator's own lock so serving a fault never waits on a slow operation.
#[derive(Debug, Default)]
pub struct Gate<F> {
    faults: Mutex<F>,
    pub calls: CallLog,
}

impl<F: FaultSet> Gate<F> {
    fn lock(&self) -> MutexGuard<'_, F> {
        self.faults.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn faults(&self) -> F {
        self.lock().clone()
    }

    pub fn set_faults(&self, faults: F) {
        *self.lock() = faults;
    }

    /// Reads or changes the faults in place; keep `f` short, the lock is held.
    pub fn with_faults<R>(&self, f: impl FnOnce(&mut F) -> R) -> R {
        f(&mut self.lock())
    }
}

/// An emulator's API, as the pipeline sees it. Every method but `gate`, `error` and
/// `route` has a default that suits an emulator without that feature.
pub trait Emulator: Send + Sync + 'static {
    type Faults: FaultSet;

    fn gate(&self) -> &Gate<Self::Faults>;

    /// An error answer in this provider's body shape, e.g. Fly's `{"error": ...}`.
    fn error(&self, status: u16, message: &str) -> Response;

    /// The message of an injected failure with `status` (a burst's 503 or 429, or a
    /// standing status), in the provider's words when clients branch on them.
    fn fault_message(&self, status: u16) -> String {
        let reason = hyper::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason());
        format!("{} (sandbox fault)", reason.unwrap_or("Error"))
    }

    /// Checks the provider makes before it looks at the token (GitHub: rate limit,
    /// User-Agent, API version); an answer ends the request.
    fn precheck(&self, _request: &Request) -> Option<Response> {
        None
    }

    /// How tokens are checked; open by default.
    fn token_rule(&self) -> Option<&TokenRule> {
        None
    }

    /// Whether `request` is an API call that needs the token; false for what a
    /// provider hands out pre-signed (upload URLs, log streams).
    fn needs_token(&self, _request: &Request) -> bool {
        true
    }

    /// The 401 for a refused token.
    fn unauthorized(&self, refusal: Refusal) -> Response {
        self.error(401, refusal.message())
    }

    /// Whether `request` only reads: a GET, or a read an API sends as a POST (AWS's
    /// Describe* calls). Reads get malformed bursts; writes get late answers.
    fn is_read(&self, request: &Request) -> bool {
        request.method == Method::GET
    }

    /// The answer to `request` when a fault takes it: by default `error`. An API with
    /// more than one error shape (AWS's JSON and XML protocols) picks by the request.
    fn fault(&self, _request: &Request, status: u16, message: &str) -> Response {
        self.error(status, message)
    }

    /// The provider's routes, once faults, checks and auth have let the request by.
    fn route(&self, request: &Request) -> impl Future<Output = Response> + Send;

    /// Control endpoints of this emulator besides the kit's `calls` and `faults`;
    /// None when the path is not one.
    fn control(&self, _request: &Request) -> Option<Response> {
        None
    }

    /// Those endpoints as "METHOD /__sandbox/...", for the unknown-endpoint message.
    fn control_endpoints(&self) -> &'static [&'static str] {
        &[]
    }

    /// The resource a call is about, read from its path.
    fn target(&self, _path: &str) -> Option<String> {
        None
    }

    /// Headers every API answer carries, faulted ones included (not resets).
    fn decorate(&self, _request: &Request, _response: &mut Response) {}
}

/// Serves `emulator`'s API on `addr` (port 0 for any free port) until stopped.
pub async fn serve<E: Emulator>(emulator: Arc<E>, addr: SocketAddr) -> std::io::Result<Server> {
    let screening = emulator.clone();
    server::serve_screened(
        addr,
        move |stream| {
            let emulator = screening.clone();
            async move { screen(&*emulator, stream).await }
        },
        move |request| {
            let emulator = emulator.clone();
            async move { handle(&*emulator, request).await }
        },
    )
    .await
}

/// Closes a new connection before reading it while resets are pending, except for
/// control requests (peeked at, not read) so a test can always switch faults off.
async fn screen<E: Emulator>(emulator: &E, stream: TcpStream) -> Option<TcpStream> {
    let gate = emulator.gate();
    if gate.with_faults(|f| f.api().reset_burst) == 0 {
        return Some(stream);
    }
    let line = peek_request_line(&stream).await;
    let mut words = line.split_whitespace();
    let (method, target) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
    if target.starts_with("/__sandbox") || !gate.with_faults(|f| f.api_mut().take_reset()) {
        return Some(stream);
    }
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query.to_string())),
        None => (target, None),
    };
    gate.calls.push(Call {
        method: method.to_string(),
        path: path.to_string(),
        query,
        status: 0,
        target: emulator.target(path),
        body: None,
    });
    // A zero linger turns the close into a reset, as a dropped connection looks.
    let _ = stream.set_zero_linger();
    None
}

/// The request line, peeked so the server can still read it; empty if none comes soon.
async fn peek_request_line(stream: &TcpStream) -> String {
    let mut buf = [0u8; 512];
    let peeked = tokio::time::timeout(PEEK_TIMEOUT, async {
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

async fn handle<E: Emulator>(emulator: &E, request: Request) -> Response {
    if request.path.starts_with("/__sandbox/") {
        return control(emulator, &request);
    }
    let gate = emulator.gate();
    let is_get = emulator.is_read(&request);
    let (verdict, slow_ms, late_ms) = gate.with_faults(|f| {
        let verdict = f.verdict(is_get);
        let api = f.api_mut();
        let late = !is_get && verdict == Verdict::Pass && api.late_writes > 0;
        if late {
            api.late_writes -= 1;
        }
        (verdict, api.slow_ms, if late { api.late_ms } else { 0 })
    });
    let target = emulator.target(&request.path);
    let call = |status| Call {
        method: request.method.to_string(),
        path: request.path.clone(),
        query: request.query.clone(),
        status,
        target: target.clone(),
        body: serde_json::from_slice(&request.body).ok(),
    };
    if verdict == Verdict::Reset {
        // A kept-alive connection was not screened: its next request is the one reset.
        gate.calls.push(call(0));
        return server::drop_connection();
    }
    if slow_ms > 0 {
        tokio::time::sleep(Duration::from_millis(slow_ms)).await;
    }
    let mut response = match verdict {
        Verdict::Unavailable => emulator.fault(&request, 503, &emulator.fault_message(503)),
        Verdict::RateLimited { retry_after_secs } => {
            let mut response = emulator.fault(&request, 429, &emulator.fault_message(429));
            if let Some(secs) = retry_after_secs {
                response.headers_mut().insert("retry-after", HeaderValue::from(secs));
            }
            response
        }
        Verdict::Status(status) => emulator.fault(&request, status, &emulator.fault_message(status)),
        Verdict::Malformed => {
            let mut response = server::text(200, MALFORMED_BODY);
            response.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
            response
        }
        Verdict::Pass | Verdict::Reset => own_answer(emulator, &request).await,
    };
    emulator.decorate(&request, &mut response);
    gate.calls.push(call(response.status().as_u16()));
    if late_ms > 0 {
        // Done, but the answer comes too late: the client may give up first.
        tokio::time::sleep(Duration::from_millis(late_ms)).await;
    }
    response
}

/// The emulator's answer to a request no fault took: its checks, the token, its routes.
async fn own_answer<E: Emulator>(emulator: &E, request: &Request) -> Response {
    if let Some(answer) = emulator.precheck(request) {
        return answer;
    }
    if let Some(rule) = emulator.token_rule().filter(|_| emulator.needs_token(request)) {
        if let Err(refusal) = rule.check(request.header("authorization")) {
            return emulator.unauthorized(refusal);
        }
    }
    emulator.route(request).await
}

/// `GET /__sandbox/calls`, `GET|POST /__sandbox/faults` (the emulator's fault set as
/// JSON, fields optional), then the emulator's own control endpoints.
fn control<E: Emulator>(emulator: &E, request: &Request) -> Response {
    let gate = emulator.gate();
    match (request.method.as_str(), request.path.as_str()) {
        ("GET", "/__sandbox/calls") => server::json(200, &json!(gate.calls.all())),
        ("GET", "/__sandbox/faults") => server::json(200, &json!(gate.faults())),
        // PUT too: a driver that thinks of the fault set as one resource replaces it.
        ("POST" | "PUT", "/__sandbox/faults") => match serde_json::from_slice::<E::Faults>(&request.body) {
            Ok(faults) => {
                gate.set_faults(faults.clone());
                server::json(200, &json!(faults))
            }
            Err(e) => emulator.error(
                400,
                &format!(
                    "faults body: {e}; send the fault set as JSON, e.g. {{\"error_burst\": 2}} or {{\"status\": 502}}"
                ),
            ),
        },
        _ => emulator.control(request).unwrap_or_else(|| {
            let mut known: Vec<&str> = emulator.control_endpoints().to_vec();
            known.push("GET /__sandbox/calls");
            let listed = known.join(", ");
            emulator.error(404, &format!("unknown sandbox endpoint; use {listed} or GET|POST /__sandbox/faults"))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{call, Reply, Stage};
    use crate::kit::Faults;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    /// An emulator with a shape of its own: errors are `{"oops": ...}`, one route.
    struct Toy {
        gate: Gate<Faults>,
        rule: Option<TokenRule>,
        routed: AtomicUsize,
    }

    impl Emulator for Toy {
        type Faults = Faults;

        fn gate(&self) -> &Gate<Faults> {
            &self.gate
        }

        fn error(&self, status: u16, message: &str) -> Response {
            server::json(status, &json!({ "oops": message }))
        }

        fn precheck(&self, request: &Request) -> Option<Response> {
            request.header("x-block").map(|_| self.error(418, "blocked before auth"))
        }

        fn token_rule(&self) -> Option<&TokenRule> {
            self.rule.as_ref()
        }

        async fn route(&self, request: &Request) -> Response {
            self.routed.fetch_add(1, Ordering::SeqCst);
            let status = if request.method == Method::GET { 200 } else { 201 };
            server::json(status, &json!({ "path": request.path }))
        }

        fn control(&self, request: &Request) -> Option<Response> {
            (request.path == "/__sandbox/toys").then(|| server::json(200, &json!(["toy"])))
        }

        fn control_endpoints(&self) -> &'static [&'static str] {
            &["GET /__sandbox/toys"]
        }

        fn target(&self, path: &str) -> Option<String> {
            path.strip_prefix("/toys/").map(str::to_string)
        }

        fn decorate(&self, _request: &Request, response: &mut Response) {
            response.headers_mut().insert("x-toy", HeaderValue::from_static("1"));
        }
    }

    async fn toy(rule: Option<TokenRule>) -> (Arc<Toy>, Server) {
        let toy = Arc::new(Toy { gate: Gate::default(), rule, routed: AtomicUsize::new(0) });
        let server = serve(toy.clone(), SocketAddr::from(([127, 0, 0, 1], 0))).await.expect("binds");
        (toy, server)
    }

    async fn send(server: &Server, method: &str, path: &str) -> Reply {
        call(method, &format!("{}{path}", server.url()), &[], None).await.expect("answers")
    }

    #[tokio::test]
    async fn control_requests_are_never_faulted_reset_or_logged() {
        let (toy, server) = toy(Some(TokenRule { token: Some("t".into()), ..TokenRule::open() })).await;
        let faults = Faults { reset_burst: 2, error_burst: 2, status: Some(500), ..Default::default() };
        toy.gate.set_faults(faults);
        assert_eq!(send(&server, "GET", "/__sandbox/toys").await.json(), json!(["toy"]));
        assert_eq!(send(&server, "GET", "/__sandbox/calls").await.json(), json!([]));
        let read = send(&server, "GET", "/__sandbox/faults").await.json();
        assert_eq!((read["reset_burst"].as_u64(), read["status"].as_u64()), (Some(2), Some(500)), "nothing spent");
        let unknown = send(&server, "GET", "/__sandbox/nope").await;
        assert_eq!(unknown.status, 404);
        assert!(unknown.json()["oops"].as_str().is_some_and(|m| m.contains("GET /__sandbox/toys")));
        let url = format!("{}/__sandbox/faults", server.url());
        let cleared = call("POST", &url, &[], Some(&json!({}))).await.expect("answers");
        assert_eq!(cleared.status, 200);
        assert_eq!(toy.gate.faults(), Faults::default());
        let bad = call("POST", &url, &[], Some(&json!({"error_burst": "many"}))).await.expect("answers");
        assert_eq!(bad.status, 400);
        assert!(bad.json()["oops"].is_string(), "in the emulator's shape: {}", bad.text());
        assert!(toy.gate.calls.is_empty());
        assert_eq!(toy.routed.load(Ordering::SeqCst), 0);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn a_standing_status_answers_in_the_emulators_error_shape() {
        let (toy, server) = toy(None).await;
        toy.gate.set_faults(Faults { status: Some(502), ..Default::default() });
        for method in ["GET", "POST", "GET"] {
            let reply = send(&server, method, "/toys/a").await;
            assert_eq!(reply.status, 502);
            assert!(reply.json()["oops"].is_string(), "{}", reply.text());
            assert_eq!(reply.header("x-toy"), Some("1"), "faulted answers are decorated too");
        }
        assert_eq!(toy.routed.load(Ordering::SeqCst), 0, "a faulted request never reaches the routes");
        let calls = toy.gate.calls.all();
        assert_eq!(calls.iter().map(|c| c.status).collect::<Vec<_>>(), [502, 502, 502]);
        assert_eq!(calls[0].target.as_deref(), Some("a"));
        toy.gate.set_faults(Faults::default());
        assert_eq!(send(&server, "GET", "/toys/a").await.status, 200);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn bursts_answer_once_each_then_the_routes_do() {
        let (toy, server) = toy(None).await;
        let faults = Faults { error_burst: 1, rate_limit_burst: 1, retry_after_secs: Some(7), ..Default::default() };
        toy.gate.set_faults(faults);
        let unavailable = send(&server, "GET", "/toys/a").await;
        assert_eq!(unavailable.status, 503);
        assert!(unavailable.json()["oops"].is_string());
        let limited = send(&server, "POST", "/toys/a").await;
        assert_eq!((limited.status, limited.header("retry-after")), (429, Some("7")));
        assert_eq!(send(&server, "POST", "/toys/a").await.status, 201);
        assert_eq!(toy.routed.load(Ordering::SeqCst), 1);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn malformed_answers_hit_gets_only() {
        let (toy, server) = toy(None).await;
        toy.gate.set_faults(Faults { malformed_burst: 1, ..Default::default() });
        assert_eq!(send(&server, "POST", "/toys/a").await.status, 201, "writes are answered for real");
        let broken = send(&server, "GET", "/toys/a").await;
        assert_eq!((broken.status, broken.header("content-type")), (200, Some("application/json")));
        assert!(serde_json::from_slice::<serde_json::Value>(&broken.body).is_err(), "{}", broken.text());
        assert_eq!(send(&server, "GET", "/toys/a").await.json(), json!({ "path": "/toys/a" }));
        server.shutdown().await;
    }

    #[tokio::test]
    async fn faults_come_before_checks_and_checks_before_the_token() {
        let rule = TokenRule { schemes: &["Bearer"], token: Some("t".into()), ..TokenRule::open() };
        let (toy, server) = toy(Some(rule)).await;
        toy.gate.set_faults(Faults { error_burst: 1, ..Default::default() });
        assert_eq!(send(&server, "GET", "/toys/a").await.status, 503, "no token, but the fault answers first");
        let blocked = call("GET", &format!("{}/toys/a", server.url()), &[("x-block", "1")], None).await;
        assert_eq!(blocked.map(|r| r.status).ok(), Some(418), "the emulator's checks come before the token");
        let refused = send(&server, "GET", "/toys/a").await;
        assert_eq!((refused.status, refused.json()["oops"].as_str()), (401, Some("Requires authentication")));
        let ok = call("GET", &format!("{}/toys/a", server.url()), &[("authorization", "Bearer t")], None).await;
        assert_eq!(ok.map(|r| r.status).ok(), Some(200));
        assert_eq!(toy.gate.calls.all().iter().map(|c| c.status).collect::<Vec<_>>(), [503, 418, 401, 200]);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn a_reset_closes_the_connection_and_is_logged_as_status_0() {
        let (toy, server) = toy(None).await;
        toy.gate.set_faults(Faults { reset_burst: 1, ..Default::default() });
        let url = format!("{}/toys/a", server.url());
        let body = json!({ "lost": true });
        let reset = call("POST", &url, &[], Some(&body)).await.expect_err("no answer");
        assert_eq!(reset.stage, Stage::BeforeResponse, "{reset}");
        assert_eq!(send(&server, "POST", "/toys/a").await.status, 201);
        let calls = toy.gate.calls.all();
        assert_eq!(calls.iter().map(|c| c.status).collect::<Vec<_>>(), [0, 201]);
        assert_eq!((calls[0].target.as_deref(), &calls[0].body), (Some("a"), &None), "screened, not read");
        assert_eq!(toy.routed.load(Ordering::SeqCst), 1);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn slow_answers_wait_and_bodies_are_recorded() {
        let (toy, server) = toy(None).await;
        toy.gate.set_faults(Faults { slow_ms: 200, ..Default::default() });
        let begun = Instant::now();
        let url = format!("{}/toys/b", server.url());
        let reply = call("POST", &url, &[], Some(&json!({ "n": 1 }))).await.expect("answers");
        assert_eq!(reply.status, 201);
        assert!(begun.elapsed() >= Duration::from_millis(200), "{:?}", begun.elapsed());
        let recorded = toy.gate.calls.all();
        assert_eq!(recorded[0].body, Some(json!({ "n": 1 })));
        assert!(recorded[0].is_write());
        server.shutdown().await;
    }
}
