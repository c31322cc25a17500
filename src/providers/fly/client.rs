//! Calls to the Fly Machines API for one app: auth, Fly's rate limits, and statuses
//! mapped to errors that say what to do. Request bodies are built here; when to send
//! them is the strategies' business.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use reqwest::header::{HeaderName, HeaderValue};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::api::{ErrorBody, LeaseAnswer, Machine, MachineEvent, Volume};
use crate::http::{Bearer, Call, HttpClient, Reply};
use crate::providers::rest::until_parsed;
use crate::providers::ProviderError;
use crate::shutdown::Shutdown;

pub const DEFAULT_API: &str = "https://api.machines.dev/v1";
/// How long one lease request may take (the lease lives 30 s).
const LEASE_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Reads of a garbled answer before it counts as Fly's failure.
const GARBLED_TRIES: u32 = 4;
const NONCE_HEADER: &str = "fly-machine-lease-nonce";

/// The Authorization value fly-go would send: macaroon tokens as `FlyV1`, anything else
/// as `Bearer`; a value already carrying `FlyV1` goes unchanged.
pub fn auth_header(token: &str) -> String {
    let token = token.trim();
    if token.starts_with("FlyV1 ") {
        return token.to_string();
    }
    let bare = token.strip_prefix("Bearer ").unwrap_or(token).trim();
    if ["fm1r_", "fm1a_", "fm2_"].iter().any(|p| bare.starts_with(p)) {
        format!("FlyV1 {bare}")
    } else {
        format!("Bearer {bare}")
    }
}

fn garbled(what: &str, e: &serde_json::Error) -> ProviderError {
    ProviderError::Unavailable(format!(
        "Fly's answer to {what} was not what its API describes ({e}); re-run, or check status.flyio.net"
    ))
}

pub struct FlyClient {
    http: HttpClient,
    base: url::Url,
    app: String,
    auth: Arc<Bearer>,
    limiter: RateLimiter,
    calls: AtomicUsize,
}

impl FlyClient {
    pub fn new(http: HttpClient, base: url::Url, app: &str, token: &str) -> Result<FlyClient, ProviderError> {
        let auth = Arc::new(Bearer::new(&auth_header(token)).map_err(ProviderError::Failed)?);
        Ok(FlyClient {
            http,
            base,
            app: app.to_string(),
            auth,
            limiter: RateLimiter::default(),
            calls: AtomicUsize::new(0),
        })
    }

    /// How many API requests this client sent (retries included).
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }

    fn url(&self, req: &Req<'_>) -> url::Url {
        let mut u = self.base.clone();
        let base_path = u.path().trim_end_matches('/').to_string();
        u.set_path(&format!("{base_path}/apps/{}/{}{}", self.app, req.collection, req.path));
        if !req.query.is_empty() {
            u.query_pairs_mut().extend_pairs(req.query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        u
    }

    /// Sends one request within Fly's limits: an action per machine 1/s, bursts of 3;
    /// reading a machine 5/s, bursts of 10.
    async fn send(&self, req: &Req<'_>, shutdown: &Shutdown) -> Result<Reply, ProviderError> {
        let (rate, burst) = if req.action == "get" { (5.0, 10.0) } else { (1.0, 3.0) };
        let bucket = format!("{}:{}", req.action, req.machine.unwrap_or("app"));
        self.limiter.acquire(&bucket, rate, burst, shutdown).await?;
        let mut call =
            Call::new(req.method.clone(), self.url(req)).idempotent(req.idempotent).credential(self.auth.clone());
        if let Some(n) = req.nonce.and_then(|n| HeaderValue::from_str(n).ok()) {
            call = call.header(HeaderName::from_static(NONCE_HEADER), n);
        }
        if let Some(b) = &req.body {
            call = call.json(b.clone());
        }
        if req.action == "wait" {
            call.answers.push(408);
            call.timeout = Some(Duration::from_secs(75));
        }
        // A lease answer that is slow must be noticed well within the lease's TTL, so
        // the run can still read back whether it was granted.
        if req.action == "lease" {
            call.timeout = Some(LEASE_CALL_TIMEOUT);
        }
        self.calls.fetch_add(1, Ordering::Relaxed);
        let reply = self.http.send(&call, shutdown).await.map_err(ProviderError::from_http)?;
        self.calls.fetch_add(reply.retries as usize, Ordering::Relaxed);
        Ok(reply)
    }

    /// Sends and reads a JSON answer. A garbled answer to a request safe to repeat is
    /// asked again after a pause that doubles, as a 5xx would be.
    async fn json<T: DeserializeOwned>(&self, req: Req<'_>, shutdown: &Shutdown) -> Result<T, ProviderError> {
        let tries = if req.idempotent { GARBLED_TRIES } else { 1 };
        let send = || async {
            let reply = self.send(&req, shutdown).await?;
            match reply.is_success() {
                true => Ok(reply),
                false => Err(self.error(reply.status, &reply.body, &req.what)),
            }
        };
        let reply = until_parsed("Fly", &req.what, tries, shutdown, send, |e| garbled(&req.what, e)).await?;
        reply.json::<T>().map_err(|e| garbled(&req.what, &e))
    }

    /// Sends a request whose answer body does not matter.
    async fn act(&self, req: Req<'_>, shutdown: &Shutdown) -> Result<(), ProviderError> {
        let reply = self.send(&req, shutdown).await?;
        if reply.is_success() {
            Ok(())
        } else {
            Err(self.error(reply.status, &reply.body, &req.what))
        }
    }

    fn error(&self, status: u16, body: &[u8], what: &str) -> ProviderError {
        let text = self.http.redactor().redact(&ErrorBody::text(body));
        match status {
            401 => ProviderError::Unauthenticated { provider: "Fly" },
            403 => ProviderError::PermissionDenied { provider: "Fly", operation: what.to_string() },
            404 => ProviderError::NotFound { provider: "Fly.io", what: format!("{what} ({text})") },
            409 => ProviderError::Conflict { what: what.to_string(), detail: text },
            429 => ProviderError::Unavailable(format!(
                "Fly kept answering 429 (rate limited) to {what} after retries; wait a minute and re-run"
            )),
            408 | 500..=599 => ProviderError::Unavailable(format!("Fly answered {status} to {what}: {text}")),
            _ => ProviderError::Failed(format!("Fly answered {status} to {what}: {text}")),
        }
    }

    pub async fn list(&self, shutdown: &Shutdown) -> Result<Vec<Machine>, ProviderError> {
        let what = format!("listing the machines of {}", self.app);
        self.json(Req::new(Method::GET, "list", None, String::new(), what), shutdown).await
    }

    /// The app's volumes, to find a free one for a new machine.
    pub async fn volumes(&self, shutdown: &Shutdown) -> Result<Vec<Volume>, ProviderError> {
        let what = format!("listing the volumes of {}", self.app);
        let mut req = Req::new(Method::GET, "volumes", None, String::new(), what);
        req.collection = "volumes";
        self.json(req, shutdown).await
    }

    pub async fn get(&self, id: &str, shutdown: &Shutdown) -> Result<Machine, ProviderError> {
        self.json(Req::new(Method::GET, "get", Some(id), format!("/{id}"), format!("reading machine {id}")), shutdown)
            .await
    }

    /// Creates a machine. Not idempotent: a retry could make two, so callers tag the
    /// config and look for the tag before trying again.
    pub async fn create(&self, body: Value, shutdown: &Shutdown) -> Result<Machine, ProviderError> {
        let req = Req::new(Method::POST, "create", None, String::new(), "creating a machine".into()).body(body).once();
        self.json(req, shutdown).await
    }

    /// Replaces a machine's whole config. Sending the same config twice changes
    /// nothing more, so it is retried like an idempotent request. A stopped machine is
    /// started by an update unless `keep_stopped` says otherwise (`skip_launch`).
    pub async fn update(
        &self,
        id: &str,
        config: &Value,
        keep_stopped: bool,
        nonce: Option<&str>,
        shutdown: &Shutdown,
    ) -> Result<Machine, ProviderError> {
        let body =
            if keep_stopped { json!({ "config": config, "skip_launch": true }) } else { json!({ "config": config }) };
        let req = Req::new(Method::POST, "update", Some(id), format!("/{id}"), format!("updating machine {id}"));
        self.json(req.body(body).nonce(nonce), shutdown).await
    }

    pub async fn start(&self, id: &str, nonce: Option<&str>, shutdown: &Shutdown) -> Result<(), ProviderError> {
        let req = Req::new(Method::POST, "start", Some(id), format!("/{id}/start"), format!("starting machine {id}"));
        self.act(req.nonce(nonce), shutdown).await
    }

    pub async fn stop(&self, id: &str, nonce: Option<&str>, shutdown: &Shutdown) -> Result<(), ProviderError> {
        let req = Req::new(Method::POST, "stop", Some(id), format!("/{id}/stop"), format!("stopping machine {id}"));
        self.act(req.body(json!({ "signal": "SIGTERM", "timeout": "30s" })).nonce(nonce), shutdown).await
    }

    pub async fn cordon(
        &self,
        id: &str,
        on: bool,
        nonce: Option<&str>,
        shutdown: &Shutdown,
    ) -> Result<(), ProviderError> {
        let verb = if on { "cordon" } else { "uncordon" };
        let req = Req::new(Method::POST, verb, Some(id), format!("/{id}/{verb}"), format!("{verb}ing machine {id}"));
        self.act(req.nonce(nonce), shutdown).await
    }

    /// Destroys a machine, killing it if it runs (`force`).
    pub async fn destroy(&self, id: &str, nonce: Option<&str>, shutdown: &Shutdown) -> Result<(), ProviderError> {
        let req = Req::new(Method::DELETE, "delete", Some(id), format!("/{id}"), format!("destroying machine {id}"))
            .query("force", "true")
            .nonce(nonce);
        match self.act(req, shutdown).await {
            // Already gone is what we wanted.
            Err(ProviderError::NotFound { .. }) => Ok(()),
            other => other,
        }
    }

    /// Acquires a lease, or refreshes ours when `nonce` is given; returns the nonce.
    pub async fn lease(
        &self,
        id: &str,
        ttl: Duration,
        nonce: Option<&str>,
        description: &str,
        shutdown: &Shutdown,
    ) -> Result<String, ProviderError> {
        let what = format!("the lease on machine {id}");
        let body = json!({ "description": description, "ttl": ttl.as_secs() });
        let req =
            Req::new(Method::POST, "lease", Some(id), format!("/{id}/lease"), what.clone()).body(body).nonce(nonce);
        let answer: LeaseAnswer = self.json(req.once(), shutdown).await?;
        answer
            .nonce()
            .map(str::to_string)
            .or_else(|| nonce.map(str::to_string))
            .ok_or_else(|| ProviderError::Failed(format!("Fly granted {what} without a nonce; re-run")))
    }

    /// The lease a machine holds now, if any: (nonce, description).
    pub async fn current_lease(
        &self,
        id: &str,
        shutdown: &Shutdown,
    ) -> Result<Option<(String, String)>, ProviderError> {
        let what = format!("reading the lease on machine {id}");
        let req = Req::new(Method::GET, "get", Some(id), format!("/{id}/lease"), what);
        match self.json::<LeaseAnswer>(req, shutdown).await {
            Ok(answer) => Ok(answer.nonce().map(|n| (n.to_string(), answer.description().to_string()))),
            Err(ProviderError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn release_lease(&self, id: &str, nonce: &str, shutdown: &Shutdown) -> Result<(), ProviderError> {
        let what = format!("releasing the lease on machine {id}");
        self.act(Req::new(Method::DELETE, "lease", Some(id), format!("/{id}/lease"), what).nonce(Some(nonce)), shutdown)
            .await
    }

    /// Waits up to `timeout` (at most 60 s) for `state`; `false` means not yet (408).
    pub async fn wait(
        &self,
        id: &str,
        state: &str,
        instance_id: Option<&str>,
        timeout: Duration,
        shutdown: &Shutdown,
    ) -> Result<bool, ProviderError> {
        let what = format!("waiting for machine {id} to be {state}");
        let mut req = Req::new(Method::GET, "wait", Some(id), format!("/{id}/wait"), what)
            .query("state", state)
            .query("timeout", &timeout.as_secs().clamp(1, 60).to_string());
        if let Some(i) = instance_id.filter(|i| !i.is_empty()) {
            req = req.query("instance_id", i);
        }
        let reply = self.send(&req, shutdown).await?;
        match reply.status {
            200..=299 => Ok(true),
            408 => Ok(false),
            s => Err(self.error(s, &reply.body, &req.what)),
        }
    }

    pub async fn events(&self, id: &str, shutdown: &Shutdown) -> Result<Vec<MachineEvent>, ProviderError> {
        let what = format!("reading the events of machine {id}");
        self.json(
            Req::new(Method::GET, "events", Some(id), format!("/{id}/events"), what).query("limit", "20"),
            shutdown,
        )
        .await
    }
}

/// One request to the Machines API, described once and sent by `send`.
struct Req<'a> {
    method: Method,
    /// Below `/apps/{app}`: `machines` or `volumes`.
    collection: &'static str,
    /// The rate-limit bucket: Fly counts each action per machine.
    action: &'static str,
    machine: Option<&'a str>,
    /// Below `/apps/{app}/{collection}`.
    path: String,
    query: Vec<(&'static str, String)>,
    body: Option<Value>,
    nonce: Option<&'a str>,
    idempotent: bool,
    /// What the request does, for errors: "updating machine 1234".
    what: String,
}

impl<'a> Req<'a> {
    fn new(method: Method, action: &'static str, machine: Option<&'a str>, path: String, what: String) -> Self {
        Req {
            method,
            collection: "machines",
            action,
            machine,
            path,
            query: Vec::new(),
            body: None,
            nonce: None,
            idempotent: true,
            what,
        }
    }

    fn query(mut self, name: &'static str, value: &str) -> Self {
        self.query.push((name, value.to_string()));
        self
    }

    fn body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }

    fn nonce(mut self, nonce: Option<&'a str>) -> Self {
        self.nonce = nonce;
        self
    }

    /// Not safe to send twice: retried only where the server never saw it.
    fn once(mut self) -> Self {
        self.idempotent = false;
        self
    }
}

/// Token buckets per action and machine, so bursts stay within Fly's published limits.
#[derive(Default)]
struct RateLimiter {
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    async fn acquire(&self, key: &str, rate: f64, burst: f64, shutdown: &Shutdown) -> Result<(), ProviderError> {
        loop {
            let wait = {
                let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                let (tokens, last) = buckets.entry(key.to_string()).or_insert((burst, now));
                *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(burst);
                *last = now;
                if *tokens >= 1.0 {
                    *tokens -= 1.0;
                    return Ok(());
                }
                Duration::from_secs_f64((1.0 - *tokens) / rate)
            };
            if !shutdown.sleep(wait).await {
                return Err(ProviderError::Cancelled(shutdown.cause().unwrap_or("shutdown")));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_get_the_scheme_fly_go_would_give_them() {
        assert_eq!(auth_header("FlyV1 fm2_abc,fm2_def"), "FlyV1 fm2_abc,fm2_def");
        assert_eq!(auth_header("fm2_abc"), "FlyV1 fm2_abc");
        assert_eq!(auth_header("fm1r_abc"), "FlyV1 fm1r_abc");
        assert_eq!(auth_header("fm1a_abc"), "FlyV1 fm1a_abc");
        assert_eq!(auth_header("Bearer fm2_abc"), "FlyV1 fm2_abc");
        assert_eq!(auth_header("oauth-token"), "Bearer oauth-token");
    }

    #[tokio::test]
    async fn the_limiter_allows_a_burst_then_paces_requests() {
        let limiter = RateLimiter::default();
        let shutdown = Shutdown::new();
        let started = Instant::now();
        for _ in 0..4 {
            limiter.acquire("update:m1", 10.0, 3.0, &shutdown).await.unwrap();
        }
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(80) && took < Duration::from_millis(500), "{took:?}");
        let other = Instant::now();
        limiter.acquire("update:m2", 10.0, 3.0, &shutdown).await.unwrap();
        assert!(other.elapsed() < Duration::from_millis(20), "buckets are per machine");
    }
}
