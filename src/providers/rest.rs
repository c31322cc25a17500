//! What the JSON platform APIs (Heroku's Platform API, DigitalOcean's) share: Bearer
//! auth, the rate-limit header read on every answer (and requests spaced out when the
//! budget runs low; a 429 waits and retries in the HTTP layer), a garbled read asked
//! again, and statuses mapped to errors that say what to do. Each provider's client
//! builds its calls and wire types on top.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use std::sync::Arc;

use crate::http::{Bearer, Call, Credential, HttpClient, Reply};
use crate::providers::ProviderError;
use crate::shutdown::Shutdown;

/// Reads of a garbled answer before it counts as the platform's failure.
const GARBLED_TRIES: u32 = 4;
const GARBLED_BACKOFF: Duration = Duration::from_millis(250);

/// Sends with `send` until its answer's body parses as JSON, `tries` times at most (1
/// for a request that must not be sent twice), asking again after a pause that
/// doubles, as a 5xx would be. What the last garbled answer becomes is `garbled`'s.
/// Every JSON API client (Heroku, DigitalOcean, Fly) reads through this.
pub async fn until_parsed<F, Fut>(
    platform: &str,
    what: &str,
    tries: u32,
    shutdown: &Shutdown,
    send: F,
    garbled: impl Fn(&serde_json::Error) -> ProviderError,
) -> Result<Reply, ProviderError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Reply, ProviderError>>,
{
    let json = |body: &[u8]| serde_json::from_slice::<serde::de::IgnoredAny>(body).map(|_| ());
    until_readable(platform, what, tries, shutdown, send, json, garbled).await
}

/// `until_parsed` for any format: `readable` says whether a body reads (JSON, or ELBv2's
/// and STS's XML) and why not.
pub async fn until_readable<F, Fut, E>(
    platform: &str,
    what: &str,
    tries: u32,
    shutdown: &Shutdown,
    send: F,
    readable: impl Fn(&[u8]) -> Result<(), E>,
    garbled: impl Fn(&E) -> ProviderError,
) -> Result<Reply, ProviderError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Reply, ProviderError>>,
    E: std::fmt::Display,
{
    let mut attempt = 0;
    loop {
        let reply = send().await?;
        attempt += 1;
        match readable(&reply.body) {
            Ok(()) => return Ok(reply),
            Err(e) if attempt >= tries.max(1) => return Err(garbled(&e)),
            Err(e) => {
                tracing::info!("{platform} answered {what} with a body that does not read ({e}); asking again");
                let pause = GARBLED_BACKOFF * 2u32.pow(attempt - 1) + Duration::from_millis(fastrand::u64(0..100));
                if !shutdown.sleep(pause).await {
                    return Err(ProviderError::Cancelled(shutdown.cause().unwrap_or("shutdown")));
                }
            }
        }
    }
}

/// How one platform's API is named and budgeted.
#[derive(Debug)]
pub struct Platform {
    /// "Heroku", "DigitalOcean".
    pub name: &'static str,
    /// Where people look when the platform misbehaves.
    pub status_page: &'static str,
    /// Said when 429s outlast the retries: how the budget refills.
    pub rate_hint: &'static str,
    /// Below this many requests left, requests are spaced out by `refill_pause`.
    pub low_water: u64,
    pub refill_pause: Duration,
}

/// Both platforms answer errors as `{"id": "not_found", "message": "..."}`.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    id: String,
    #[serde(default)]
    message: String,
}

pub struct RestClient {
    http: HttpClient,
    base: url::Url,
    /// Who sends every request: the platform's bearer token.
    credential: Arc<dyn Credential>,
    platform: &'static Platform,
    calls: AtomicUsize,
    remaining: AtomicU64,
    /// `ratelimit-reset` at the last answer: when the platform takes a request again
    /// once the budget is spent (unix seconds; 0 when not said).
    reset: AtomicU64,
    /// Whether requests are being spaced out (said once).
    pacing: std::sync::atomic::AtomicBool,
}

impl RestClient {
    pub fn new(
        http: HttpClient,
        base: url::Url,
        token: &str,
        platform: &'static Platform,
    ) -> Result<RestClient, ProviderError> {
        let bare = token.trim().strip_prefix("Bearer ").unwrap_or(token.trim());
        let bearer = Bearer::new(&format!("Bearer {bare}")).map_err(ProviderError::Failed)?;
        Ok(RestClient {
            http,
            base,
            credential: Arc::new(bearer),
            platform,
            calls: AtomicUsize::new(0),
            remaining: AtomicU64::new(u64::MAX),
            reset: AtomicU64::new(0),
            pacing: Default::default(),
        })
    }

    pub fn http(&self) -> &HttpClient {
        &self.http
    }

    /// Requests sent so far, retries included.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }

    /// Counts a request sent outside `send` (an upload, a log download).
    pub fn count(&self, n: usize) {
        self.calls.fetch_add(n, Ordering::Relaxed);
    }

    /// When the platform takes requests again (`ratelimit-reset`), if that is a time
    /// within the next day: a value past it is not one the platform meant (and would
    /// overflow the clock or the date format).
    fn reset_at(&self) -> Option<std::time::SystemTime> {
        let reset = self.reset.load(Ordering::Relaxed);
        let at = std::time::UNIX_EPOCH.checked_add(Duration::from_secs(reset))?;
        (reset > 0 && at < std::time::SystemTime::now() + Duration::from_secs(86_400)).then_some(at)
    }

    /// Requests the platform said were left at the last answer.
    pub fn remaining(&self) -> Option<u64> {
        Some(self.remaining.load(Ordering::Relaxed)).filter(|r| *r != u64::MAX)
    }

    /// `path` under the API base (which may itself have a path).
    pub fn url(&self, path: &str) -> url::Url {
        let mut u = self.base.clone();
        let base_path = u.path().trim_end_matches('/').to_string();
        match path.split_once('?') {
            Some((p, q)) => {
                u.set_path(&format!("{base_path}{p}"));
                u.set_query(Some(q));
            }
            None => u.set_path(&format!("{base_path}{path}")),
        }
        u
    }

    pub fn call(&self, method: Method, path: &str) -> Call {
        Call::new(method, self.url(path))
    }

    /// Sends `call` with the token, spacing requests out while the budget is low.
    pub async fn send(&self, mut call: Call, shutdown: &Shutdown) -> Result<Reply, ProviderError> {
        let p = self.platform;
        if self.remaining().is_some_and(|r| r < p.low_water) {
            // Said once; each pause after it is the same story.
            if !self.pacing.swap(true, Ordering::Relaxed) {
                tracing::info!(
                    "{}'s rate limit is nearly used up ({} requests left); pausing {} between requests",
                    p.name,
                    self.remaining().unwrap_or(0),
                    crate::inputs::human(p.refill_pause)
                );
            }
            if !shutdown.sleep(p.refill_pause).await {
                return Err(ProviderError::Cancelled(shutdown.cause().unwrap_or("shutdown")));
            }
        }
        call = call.credential(self.credential.clone());
        self.calls.fetch_add(1, Ordering::Relaxed);
        let reply = self.http.send(&call, shutdown).await.map_err(ProviderError::from_http)?;
        self.calls.fetch_add(reply.retries as usize, Ordering::Relaxed);
        let header = |name: &str| reply.headers.get(name).and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
        if let Some(left) = header("ratelimit-remaining") {
            self.remaining.store(left, Ordering::Relaxed);
        }
        self.reset.store(header("ratelimit-reset").unwrap_or(0), Ordering::Relaxed);
        Ok(reply)
    }

    /// Sends and reads a JSON answer. A garbled answer to a read is asked again after a
    /// pause that doubles, as a 5xx would be; a write is never sent twice for it.
    pub async fn json<T: DeserializeOwned>(
        &self,
        call: Call,
        what: &str,
        shutdown: &Shutdown,
    ) -> Result<T, ProviderError> {
        let reply = self.read(call, what, shutdown).await?;
        reply.json::<T>().map_err(|e| self.garbled(what, &e))
    }

    /// Sends `call` until its answer is a success that parses as JSON (reads only), or
    /// fails for good.
    pub async fn read(&self, call: Call, what: &str, shutdown: &Shutdown) -> Result<Reply, ProviderError> {
        let tries = if call.method == Method::GET { GARBLED_TRIES } else { 1 };
        let send = || async {
            let reply = self.send(call.clone(), shutdown).await?;
            match reply.is_success() {
                true => Ok(reply),
                false => Err(self.error(reply.status, &reply.body, what)),
            }
        };
        until_parsed(self.platform.name, what, tries, shutdown, send, |e| self.garbled(what, e)).await
    }

    /// Sends a write whose answer has no body worth reading; any success will do.
    pub async fn send_ok(&self, call: Call, what: &str, shutdown: &Shutdown) -> Result<(), ProviderError> {
        let reply = self.send(call, shutdown).await?;
        match reply.is_success() {
            true => Ok(()),
            false => Err(self.error(reply.status, &reply.body, what)),
        }
    }

    pub fn garbled(&self, what: &str, e: &serde_json::Error) -> ProviderError {
        let p = self.platform;
        ProviderError::Unavailable(format!(
            "{}'s answer to {what} was not what its API describes ({e}); re-run, or check {}",
            p.name, p.status_page
        ))
    }

    pub fn error(&self, status: u16, body: &[u8], what: &str) -> ProviderError {
        let p = self.platform;
        let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
        let text = self.http.redactor().redact(&match &parsed {
            Some(e) if !e.message.is_empty() => format!("{} ({})", e.message, e.id),
            _ => String::from_utf8_lossy(body).chars().take(200).collect(),
        });
        match status {
            401 => ProviderError::Unauthenticated { provider: p.name },
            403 => ProviderError::PermissionDenied { provider: p.name, operation: what.to_string() },
            404 => ProviderError::NotFound { provider: p.name, what: format!("{what}: {text}") },
            409 => ProviderError::Conflict { what: what.to_string(), detail: text },
            429 => match (self.remaining(), self.reset_at()) {
                // The budget is spent: when the platform says it takes a request again,
                // that is when to ask (a caller that may wait does).
                (Some(0), Some(at)) => ProviderError::RateLimited {
                    message: format!(
                        "{}'s request budget for this token is spent ({what} answered 429); it takes requests again at {} (ratelimit-reset)",
                        p.name,
                        httpdate::fmt_http_date(at)
                    ),
                    until: Some(at),
                },
                _ => ProviderError::RateLimited {
                    message: format!(
                        "{} kept answering 429 (rate limit) to {what} after retries; {}",
                        p.name, p.rate_hint
                    ),
                    until: None,
                },
            },
            408 | 500..=599 => ProviderError::Unavailable(format!("{} answered {status} to {what}: {text}", p.name)),
            _ => ProviderError::Failed(format!("{} answered {status} to {what}: {text}", p.name)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> RestClient {
        let http = HttpClient::new(
            crate::secret::Redactor::default(),
            crate::http::RetryConfig::default(),
            Duration::from_secs(1),
        )
        .unwrap();
        let base = url::Url::parse("http://127.0.0.1:9/").unwrap();
        RestClient::new(http, base, "t", &crate::providers::digitalocean::client::DIGITALOCEAN).unwrap()
    }

    #[test]
    fn a_spent_budget_with_an_absurd_reset_time_is_rate_limited_without_a_time() {
        let c = client();
        c.remaining.store(0, Ordering::Relaxed);
        // Past what the clock and the date format can hold: not a panic, just no time.
        for absurd in [u64::MAX, 253_402_300_800] {
            c.reset.store(absurd, Ordering::Relaxed);
            assert_eq!(c.reset_at(), None);
            assert!(matches!(c.error(429, b"slow down", "list apps"), ProviderError::RateLimited { .. }));
        }
        let soon = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 60;
        c.reset.store(soon, Ordering::Relaxed);
        match c.error(429, b"slow down", "list apps") {
            ProviderError::RateLimited { until, message } => {
                assert!(until.is_some(), "{message}");
                assert!(message.contains("(ratelimit-reset)"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }
}
