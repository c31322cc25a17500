//! Calls to the Fly Machines API for one app: auth, Fly's rate limits, and statuses
//! mapped to errors that say what to do. Request bodies are built here; when to send
//! them is the strategies' business.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderName, HeaderValue, AUTHORIZATION};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::api::{ErrorBody, LeaseAnswer, Machine, MachineEvent};
use crate::http::{Call, HttpClient, HttpError, Reply};
use crate::providers::ProviderError;
use crate::shutdown::Shutdown;

pub const DEFAULT_API: &str = "https://api.machines.dev/v1";
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

pub struct FlyClient {
    http: HttpClient,
    base: url::Url,
    app: String,
    auth: HeaderValue,
    limiter: RateLimiter,
    calls: AtomicUsize,
}

impl FlyClient {
    pub fn new(http: HttpClient, base: url::Url, app: &str, token: &str) -> Result<FlyClient, ProviderError> {
        let mut auth = HeaderValue::from_str(&auth_header(token)).map_err(|_| {
            ProviderError::Failed("the token has characters an HTTP header cannot carry; check the secret".into())
        })?;
        auth.set_sensitive(true);
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

    fn url(&self, path: &str, query: &[(&str, String)]) -> url::Url {
        let mut u = self.base.clone();
        let base_path = u.path().trim_end_matches('/').to_string();
        u.set_path(&format!("{base_path}/apps/{}/machines{path}", self.app));
        if !query.is_empty() {
            u.query_pairs_mut().extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        u
    }

    /// Sends one request within Fly's limits: `action` per `machine` (1/s, bursts of 3;
    /// reading a machine 5/s, bursts of 10).
    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        method: Method,
        action: &'static str,
        machine: Option<&str>,
        path: &str,
        query: &[(&str, String)],
        body: Option<Value>,
        nonce: Option<&str>,
        idempotent: bool,
        shutdown: &Shutdown,
    ) -> Result<Reply, ProviderError> {
        let (rate, burst) = if action == "get" { (5.0, 10.0) } else { (1.0, 3.0) };
        self.limiter.acquire(&format!("{action}:{}", machine.unwrap_or("app")), rate, burst, shutdown).await?;
        let mut call =
            Call::new(method, self.url(path, query)).idempotent(idempotent).header(AUTHORIZATION, self.auth.clone());
        if let Some(n) = nonce.and_then(|n| HeaderValue::from_str(n).ok()) {
            call = call.header(HeaderName::from_static(NONCE_HEADER), n);
        }
        if let Some(b) = body {
            call = call.json(b);
        }
        if action == "wait" {
            call.answers.push(408);
            call.timeout = Some(Duration::from_secs(75));
        }
        self.calls.fetch_add(1, Ordering::Relaxed);
        let reply = self.http.send(&call, shutdown).await.map_err(|e| match e {
            HttpError::Cancelled { cause, .. } => ProviderError::Cancelled(cause),
            other => ProviderError::Http(other),
        })?;
        self.calls.fetch_add(reply.retries as usize, Ordering::Relaxed);
        Ok(reply)
    }

    /// Sends and reads a JSON answer; a garbled answer to a read is asked again.
    #[allow(clippy::too_many_arguments)]
    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        action: &'static str,
        machine: Option<&str>,
        path: &str,
        query: &[(&str, String)],
        body: Option<Value>,
        nonce: Option<&str>,
        idempotent: bool,
        what: &str,
        shutdown: &Shutdown,
    ) -> Result<T, ProviderError> {
        let tries = if idempotent { 3 } else { 1 };
        let mut last = String::new();
        for _ in 0..tries {
            let reply = self
                .send(method.clone(), action, machine, path, query, body.clone(), nonce, idempotent, shutdown)
                .await?;
            if !reply.is_success() {
                return Err(self.error(reply.status, &reply.body, what));
            }
            match reply.json::<T>() {
                Ok(v) => return Ok(v),
                Err(e) => {
                    tracing::info!("Fly answered {what} with JSON that does not parse ({e}); asking again");
                    last = e.to_string();
                }
            }
        }
        Err(ProviderError::Failed(format!(
            "Fly's answer to {what} was not valid JSON ({last}); re-run, or check status.flyio.net"
        )))
    }

    /// Sends a request whose answer body does not matter.
    #[allow(clippy::too_many_arguments)]
    async fn act(
        &self,
        method: Method,
        action: &'static str,
        id: &str,
        path: &str,
        query: &[(&str, String)],
        body: Option<Value>,
        nonce: Option<&str>,
        what: &str,
        shutdown: &Shutdown,
    ) -> Result<(), ProviderError> {
        let reply = self.send(method, action, Some(id), path, query, body, nonce, true, shutdown).await?;
        if reply.is_success() {
            Ok(())
        } else {
            Err(self.error(reply.status, &reply.body, what))
        }
    }

    fn error(&self, status: u16, body: &[u8], what: &str) -> ProviderError {
        let text = self.http.redactor().redact(&ErrorBody::text(body));
        match status {
            401 => ProviderError::Unauthenticated { provider: "Fly" },
            403 => ProviderError::PermissionDenied { provider: "Fly", operation: what.to_string() },
            404 => ProviderError::NotFound { provider: "Fly", what: format!("{what} ({text})") },
            409 => ProviderError::Conflict { what: what.to_string(), detail: text },
            429 => ProviderError::Failed(format!(
                "Fly kept answering 429 (rate limited) to {what} after retries; wait a minute and re-run"
            )),
            _ => ProviderError::Failed(format!("Fly answered {status} to {what}: {text}")),
        }
    }

    pub async fn list(&self, shutdown: &Shutdown) -> Result<Vec<Machine>, ProviderError> {
        self.json(
            Method::GET,
            "list",
            None,
            "",
            &[],
            None,
            None,
            true,
            &format!("listing the machines of {}", self.app),
            shutdown,
        )
        .await
    }

    pub async fn get(&self, id: &str, shutdown: &Shutdown) -> Result<Machine, ProviderError> {
        self.json(
            Method::GET,
            "get",
            Some(id),
            &format!("/{id}"),
            &[],
            None,
            None,
            true,
            &format!("reading machine {id}"),
            shutdown,
        )
        .await
    }

    /// Creates a machine. Not idempotent: a retry could make two, so callers tag the
    /// config and look for the tag before trying again.
    pub async fn create(&self, body: Value, shutdown: &Shutdown) -> Result<Machine, ProviderError> {
        self.json(Method::POST, "create", None, "", &[], Some(body), None, false, "creating a machine", shutdown).await
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
        let what = format!("updating machine {id}");
        let body =
            if keep_stopped { json!({ "config": config, "skip_launch": true }) } else { json!({ "config": config }) };
        self.json(Method::POST, "update", Some(id), &format!("/{id}"), &[], Some(body), nonce, true, &what, shutdown)
            .await
    }

    pub async fn start(&self, id: &str, nonce: Option<&str>, shutdown: &Shutdown) -> Result<(), ProviderError> {
        self.act(
            Method::POST,
            "start",
            id,
            &format!("/{id}/start"),
            &[],
            None,
            nonce,
            &format!("starting machine {id}"),
            shutdown,
        )
        .await
    }

    pub async fn stop(&self, id: &str, nonce: Option<&str>, shutdown: &Shutdown) -> Result<(), ProviderError> {
        let body = json!({ "signal": "SIGTERM", "timeout": "30s" });
        self.act(
            Method::POST,
            "stop",
            id,
            &format!("/{id}/stop"),
            &[],
            Some(body),
            nonce,
            &format!("stopping machine {id}"),
            shutdown,
        )
        .await
    }

    pub async fn cordon(
        &self,
        id: &str,
        on: bool,
        nonce: Option<&str>,
        shutdown: &Shutdown,
    ) -> Result<(), ProviderError> {
        let (verb, action) = if on { ("cordon", "cordon") } else { ("uncordon", "uncordon") };
        self.act(
            Method::POST,
            action,
            id,
            &format!("/{id}/{verb}"),
            &[],
            None,
            nonce,
            &format!("{verb}ing machine {id}"),
            shutdown,
        )
        .await
    }

    /// Destroys a machine, killing it if it runs (`force`, and `kill` as fly-go sends it).
    pub async fn destroy(&self, id: &str, nonce: Option<&str>, shutdown: &Shutdown) -> Result<(), ProviderError> {
        let query = [("force", "true".to_string())];
        match self
            .act(
                Method::DELETE,
                "delete",
                id,
                &format!("/{id}"),
                &query,
                None,
                nonce,
                &format!("destroying machine {id}"),
                shutdown,
            )
            .await
        {
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
        shutdown: &Shutdown,
    ) -> Result<String, ProviderError> {
        let body = json!({ "description": "safe-deploy", "ttl": ttl.as_secs() });
        let what = format!("the lease on machine {id}");
        let answer: LeaseAnswer = self
            .json(
                Method::POST,
                "lease",
                Some(id),
                &format!("/{id}/lease"),
                &[],
                Some(body),
                nonce,
                false,
                &what,
                shutdown,
            )
            .await?;
        answer
            .nonce()
            .map(str::to_string)
            .or_else(|| nonce.map(str::to_string))
            .ok_or_else(|| ProviderError::Failed(format!("Fly granted {what} without a nonce; re-run")))
    }

    pub async fn release_lease(&self, id: &str, nonce: &str, shutdown: &Shutdown) -> Result<(), ProviderError> {
        let what = format!("releasing the lease on machine {id}");
        self.act(Method::DELETE, "lease", id, &format!("/{id}/lease"), &[], None, Some(nonce), &what, shutdown).await
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
        let mut query = vec![("state", state.to_string()), ("timeout", timeout.as_secs().clamp(1, 60).to_string())];
        if let Some(i) = instance_id.filter(|i| !i.is_empty()) {
            query.push(("instance_id", i.to_string()));
        }
        let reply = self
            .send(Method::GET, "wait", Some(id), &format!("/{id}/wait"), &query, None, None, true, shutdown)
            .await?;
        match reply.status {
            200..=299 => Ok(true),
            408 => Ok(false),
            s => Err(self.error(s, &reply.body, &format!("waiting for machine {id} to be {state}"))),
        }
    }

    pub async fn events(&self, id: &str, shutdown: &Shutdown) -> Result<Vec<MachineEvent>, ProviderError> {
        let query = [("limit", "20".to_string())];
        let what = format!("reading the events of machine {id}");
        self.json(Method::GET, "events", Some(id), &format!("/{id}/events"), &query, None, None, true, &what, shutdown)
            .await
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
