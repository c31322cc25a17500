//! One HTTP layer for every request safe-deploy sends.
//!
//! A timeout on every request; retries with exponential backoff and full jitter on
//! connection errors, 408, 429 and 5xx (but 408, 5xx and broken transfers only when the
//! request is idempotent, since the server may have acted on it); `Retry-After`
//! honoured; a `User-Agent` with our version; errors that never carry a secret. A call
//! may say how its platform throttles besides 429 (AWS: a 400 whose error code says
//! so); such an answer is asked again as a 429 is. A call's `Credential` makes its
//! Authorization for each attempt, over the bytes sent.
//! Providers decide what a status means; this layer only decides whether to ask again.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::Method;

use crate::inputs::human;
use crate::secret::Redactor;
use crate::shutdown::Shutdown;

pub const USER_AGENT: &str = concat!("safe-deploy/", env!("CARGO_PKG_VERSION"));

/// When and how often to ask again. Plain data, so tests can shrink it.
#[derive(Debug, Clone)]
pub struct RetryConfig {
    pub max_retries: u32,
    /// The first backoff; each retry doubles it, up to `max_backoff`.
    pub base: Duration,
    pub max_backoff: Duration,
    /// No retry starts once this much time has gone by since the first attempt.
    pub budget: Duration,
    /// The longest `Retry-After` we accept before giving up instead of waiting.
    pub max_retry_after: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_retries: 5,
            base: Duration::from_millis(250),
            max_backoff: Duration::from_secs(10),
            budget: Duration::from_secs(60),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

/// One request to send.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: Method,
    pub url: url::Url,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Option<serde_json::Value>,
    /// A body sent as it is (an upload), instead of JSON.
    pub raw: Option<Vec<u8>>,
    /// Safe to send twice: GET, PUT, DELETE, or a POST the provider treats as such.
    pub idempotent: bool,
    pub timeout: Option<Duration>,
    /// Statuses that are answers here, never retried (Fly's wait: 408 means "not yet").
    pub answers: Vec<u16>,
    /// Who sends it: headers computed for each attempt from what is sent exactly.
    pub credential: Option<Arc<dyn Credential>>,
    /// How the platform says "slow down" besides 429 (AWS: a 400 whose body is a
    /// ThrottlingException): such an answer is asked again as a 429 is.
    pub throttled: Option<Throttled>,
}

/// How a request proves who sends it: a bearer token, or a signature over the exact
/// method, URL, headers and body (AWS SigV4), made again for each attempt.
pub trait Credential: Send + Sync + std::fmt::Debug {
    fn headers(&self, request: &Outgoing) -> Result<Headers, String>;
}

/// Headers to send, in order.
pub type Headers = Vec<(HeaderName, HeaderValue)>;

/// One attempt as it leaves: what a credential signs.
#[derive(Debug)]
pub struct Outgoing<'a> {
    pub method: &'a Method,
    pub url: &'a url::Url,
    pub headers: &'a [(HeaderName, HeaderValue)],
    pub body: &'a [u8],
}

/// `Authorization: <scheme> <token>`, marked sensitive so no log shows it.
#[derive(Debug)]
pub struct Bearer(HeaderValue);

impl Bearer {
    /// `value` is the whole header value ("Bearer abc", "FlyV1 fm2_…").
    pub fn new(value: &str) -> Result<Bearer, String> {
        let mut v = HeaderValue::from_str(value)
            .map_err(|_| "the token has characters an HTTP header cannot carry; check the secret".to_string())?;
        v.set_sensitive(true);
        Ok(Bearer(v))
    }
}

impl Credential for Bearer {
    fn headers(&self, _request: &Outgoing) -> Result<Headers, String> {
        Ok(vec![(reqwest::header::AUTHORIZATION, self.0.clone())])
    }
}

/// Sends one request and reads its whole answer.
async fn exchange(request: reqwest::RequestBuilder) -> Result<Reply, reqwest::Error> {
    let resp = request.send().await?;
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    Ok(Reply { status, headers, body: resp.bytes().await?.to_vec(), retries: 0 })
}

/// Why a request could not be made: its body, or its credential.
enum Unbuilt {
    Body(String),
    Sign(String),
}

/// Whether an answer (status, body) is the platform asking to slow down.
pub type Throttled = fn(u16, &[u8]) -> bool;

impl Call {
    pub fn new(method: Method, url: url::Url) -> Self {
        let idempotent = matches!(method, Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS);
        Call {
            method,
            url,
            headers: Vec::new(),
            body: None,
            raw: None,
            idempotent,
            timeout: None,
            answers: Vec::new(),
            credential: None,
            throttled: None,
        }
    }

    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn credential(mut self, credential: Arc<dyn Credential>) -> Self {
        self.credential = Some(credential);
        self
    }

    pub fn throttled_when(mut self, throttled: Throttled) -> Self {
        self.throttled = Some(throttled);
        self
    }

    pub fn json(mut self, body: serde_json::Value) -> Self {
        self.body = Some(body);
        self
    }

    pub fn raw(mut self, bytes: Vec<u8>) -> Self {
        self.raw = Some(bytes);
        self
    }

    pub fn idempotent(mut self, yes: bool) -> Self {
        self.idempotent = yes;
        self
    }

    /// `METHOD scheme://host/path`, with no query string (it may carry a secret).
    fn describe(&self) -> String {
        let mut u = self.url.clone();
        u.set_query(None);
        u.set_fragment(None);
        let _ = u.set_password(None);
        let _ = u.set_username("");
        format!("{} {}", self.method, u)
    }
}

/// A URL as it may be shown (summary, plan, logs): no credentials, and a query, which
/// How much of a health or analysis answer's body is read.
pub const PROBE_BODY_LIMIT: usize = 1024 * 1024;

/// may carry a secret, shown as `?…`.
pub fn shown(url: &url::Url) -> String {
    let mut u = url.clone();
    let had_query = u.query().is_some();
    u.set_query(None);
    u.set_fragment(None);
    let _ = u.set_password(None);
    let _ = u.set_username("");
    if had_query {
        format!("{u}?…")
    } else {
        u.to_string()
    }
}

/// A response, whatever its status: callers decide what a status means.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub retries: u32,
}

impl Reply {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }
}

/// Why a request got no response at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TransportFailure {
    Timeout,
    ConnectionRefused,
    ConnectionReset,
    Tls,
    Dns,
    Other,
}

impl TransportFailure {
    /// The failure in plain words, with the library's own words only where they add
    /// something: "connection refused (os error 111)" says no more than "refused".
    pub fn plainly(self, detail: &str) -> String {
        match self {
            TransportFailure::ConnectionRefused => {
                "connection refused: nothing listens at that address and port (is the service up, the port right?)"
                    .into()
            }
            // rustls reading a plain-HTTP answer as a TLS record.
            _ if detail.contains("InvalidContentType") || detail.contains("corrupt message") => {
                "TLS error: what answers there does not speak HTTPS (should the URL start with http://?)".into()
            }
            TransportFailure::Dns => format!("the host name does not resolve ({detail})"),
            kind => format!("{} ({detail})", kind.as_str()),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TransportFailure::Timeout => "timeout",
            TransportFailure::ConnectionRefused => "connection refused",
            TransportFailure::ConnectionReset => "connection reset",
            TransportFailure::Tls => "TLS error",
            TransportFailure::Dns => "name not resolved",
            TransportFailure::Other => "transport error",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{call}: {}{}", kind.plainly(detail), retried(*retries, *elapsed))]
    Transport { call: String, kind: TransportFailure, detail: String, retries: u32, elapsed: Duration },
    #[error("{call}: stopped by {cause} before an answer came")]
    Cancelled { call: String, cause: &'static str },
    #[error("bug: could not build request {call}: {detail}")]
    Build { call: String, detail: String },
    #[error("{call}: could not sign the request ({detail}); check the credentials")]
    Sign { call: String, detail: String },
}

fn retried(retries: u32, elapsed: Duration) -> String {
    if retries == 0 {
        String::new()
    } else {
        format!(", after {retries} retries in {}", human(elapsed))
    }
}

/// The one client. Cheap to clone.
#[derive(Clone)]
pub struct HttpClient {
    client: reqwest::Client,
    retry: RetryConfig,
    redactor: Redactor,
    rng_seed: Option<u64>,
    /// The last retry said in the log, and when: the same failure of the same request
    /// is said once, not at every retry of every attempt a caller makes.
    said: std::sync::Arc<std::sync::Mutex<Option<(String, Instant)>>>,
    /// For a balancer's check of a backend over TLS, which takes any certificate (a
    /// droplet's is self-signed more often than not, and balancers do not verify it).
    /// Made on first use; nothing that carries a secret goes through it.
    backend: std::sync::Arc<std::sync::OnceLock<reqwest::Client>>,
}

impl HttpClient {
    pub fn new(redactor: Redactor, retry: RetryConfig, default_timeout: Duration) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .timeout(default_timeout)
            .connect_timeout(default_timeout.min(Duration::from_secs(10)))
            // Redirects could carry an Authorization header to another host.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(HttpClient {
            client,
            retry,
            redactor,
            rng_seed: None,
            said: Default::default(),
            backend: Default::default(),
        })
    }

    /// Makes the backoff jitter repeatable, for tests.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.rng_seed = Some(seed);
        self
    }

    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// Sends `call`, retrying as the module doc says. Returns the last response
    /// whatever its status; errors only when no response came.
    pub async fn send(&self, call: &Call, shutdown: &Shutdown) -> Result<Reply, HttpError> {
        let started = Instant::now();
        let describe = self.redactor.redact(&call.describe());
        let mut rng = match self.rng_seed {
            Some(seed) => fastrand::Rng::with_seed(seed),
            None => fastrand::Rng::new(),
        };
        let mut retries = 0;
        loop {
            if let Some(cause) = shutdown.cause() {
                return Err(HttpError::Cancelled { call: describe, cause });
            }
            let sent = Instant::now();
            let outcome = match self.attempt(call) {
                Ok(request) => exchange(request).await,
                Err(e) => return Err(self.unbuilt(describe, e)),
            };
            debug_line(&describe, &outcome.as_ref().map(|r| r.status).map_err(classify), sent.elapsed());
            let wait = match &outcome {
                // A spent budget (`ratelimit-remaining: 0`, no `Retry-After`) is taken again
                // only at its reset, often minutes away: asking sooner is in vain, so the
                // answer goes back to the caller, which may wait for it.
                Ok(reply) if reply.status == 429 && budget_spent(&reply.headers) => None,
                // A throttle, as a 429: the platform's SDKs ask again whatever the operation,
                // since a throttled request is turned away before it is acted on.
                Ok(reply) if call.throttled.is_some_and(|t| t(reply.status, &reply.body)) => {
                    Some((format!("{} (throttled)", reply.status), retry_after(&reply.headers)))
                }
                Ok(reply) => match self.should_retry_status(call, reply.status) {
                    false => None,
                    true => Some((format!("{}", reply.status), retry_after(&reply.headers))),
                },
                Err(e) => {
                    let kind = classify(e);
                    // A refused connection means the request never left: always safe. A
                    // TLS failure (a certificate, https to a plain port) is not asked again:
                    // it is the same on every try.
                    let never_sent = e.is_connect() && kind != TransportFailure::Timeout;
                    ((never_sent || call.idempotent) && kind != TransportFailure::Tls)
                        .then(|| (kind.as_str().to_string(), None))
                }
            };
            let elapsed = started.elapsed();
            let give_up = |retries: u32| retries >= self.retry.max_retries || elapsed >= self.retry.budget;
            match (outcome, wait) {
                (Ok(mut reply), None) => {
                    reply.retries = retries;
                    return Ok(reply);
                }
                (Err(e), None) => return Err(self.transport_error(describe, &e, retries, elapsed)),
                (outcome, Some((why, after))) => {
                    let backoff = self.backoff(retries, &mut rng);
                    let delay = after.unwrap_or(backoff);
                    let too_long =
                        after.is_some_and(|a| a > self.retry.max_retry_after) || elapsed + delay > self.retry.budget;
                    if give_up(retries) || too_long {
                        return match outcome {
                            Ok(mut reply) => {
                                reply.retries = retries;
                                Ok(reply)
                            }
                            Err(e) => Err(self.transport_error(describe, &e, retries, elapsed)),
                        };
                    }
                    retries += 1;
                    // Said once per failure and server: when an API is down, every call to
                    // it fails the same way.
                    if self.first_time(&format!("{why} from {}", call.url.origin().ascii_serialization())) {
                        tracing::info!(
                            "{describe}: {why}; asking again up to {} times within {}",
                            self.retry.max_retries,
                            human(self.retry.budget)
                        );
                    }
                    tracing::debug!(
                        "retry {retries} of {} after {why} from {describe}, waiting {}",
                        self.retry.max_retries,
                        human(delay)
                    );
                    if !shutdown.sleep(delay).await {
                        return Err(HttpError::Cancelled {
                            call: describe,
                            cause: shutdown.cause().unwrap_or("shutdown"),
                        });
                    }
                }
            }
        }
    }

    /// Whether `line` is news: not what the last retry said, within the last minutes.
    fn first_time(&self, line: &str) -> bool {
        let mut said = self.said.lock().unwrap_or_else(|p| p.into_inner());
        let repeat = said.as_ref().is_some_and(|(last, at)| last == line && at.elapsed() < Duration::from_secs(300));
        *said = Some((line.to_string(), Instant::now()));
        !repeat
    }

    fn should_retry_status(&self, call: &Call, status: u16) -> bool {
        if call.answers.contains(&status) {
            return false;
        }
        match status {
            // The server turned the request away unread: safe whatever the method.
            429 => true,
            408 | 500..=599 => call.idempotent,
            _ => false,
        }
    }

    /// Full jitter: a random wait up to the doubled backoff, so clients spread out.
    fn backoff(&self, retries: u32, rng: &mut fastrand::Rng) -> Duration {
        let ceiling = self.retry.base.saturating_mul(2u32.saturating_pow(retries)).min(self.retry.max_backoff);
        let ms = ceiling.as_millis() as u64;
        Duration::from_millis(rng.u64(ms / 2..=ms.max(1)))
    }

    /// Reads a streamed text answer (a build log) as it comes, handing each complete
    /// line to `on_line`; ends when the server closes it, at `call.timeout`, or when a
    /// signal comes, with what was read by then. One attempt: the caller knows whether
    /// the stream is worth opening again.
    pub async fn stream_lines(
        &self,
        call: &Call,
        shutdown: &Shutdown,
        mut on_line: impl FnMut(&str),
    ) -> Result<(u16, String), HttpError> {
        let started = Instant::now();
        let describe = self.redactor.redact(&call.describe());
        // The same request an attempt of `send` would be: its body, its credential.
        let req = self.attempt(call).map_err(|e| self.unbuilt(describe.clone(), e))?;
        let cancelled =
            |describe: String| HttpError::Cancelled { call: describe, cause: shutdown.cause().unwrap_or("shutdown") };
        let mut resp = tokio::select! {
            sent = req.send() => sent.map_err(|e| self.transport_error(describe.clone(), &e, 0, started.elapsed()))?,
            _ = shutdown.recv() => return Err(cancelled(describe)),
        };
        let status = resp.status().as_u16();
        let (mut text, mut pending) = (String::new(), Vec::<u8>::new());
        let mut take_line = |bytes: &[u8], text: &mut String| {
            let line = String::from_utf8_lossy(bytes);
            let line = line.trim_end_matches(['\n', '\r']);
            on_line(line);
            text.push_str(line);
            text.push('\n');
        };
        loop {
            let chunk = tokio::select! {
                chunk = resp.chunk() => chunk,
                _ = shutdown.recv() => break,
            };
            match chunk {
                Ok(Some(bytes)) => {
                    pending.extend_from_slice(&bytes);
                    while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = pending.drain(..=end).collect();
                        take_line(&line, &mut text);
                    }
                }
                // The end, or the connection broke or timed out: what came is kept.
                Ok(None) | Err(_) => break,
            }
        }
        if !pending.is_empty() {
            take_line(&pending, &mut text);
        }
        Ok((status, text))
    }

    /// One attempt's request: the body as the bytes sent, and the credential's headers
    /// made over exactly those (they replace any of the same name).
    fn attempt(&self, call: &Call) -> Result<reqwest::RequestBuilder, Unbuilt> {
        let mut headers = call.headers.clone();
        let body = match (&call.body, &call.raw) {
            (Some(json), _) => {
                if !headers.iter().any(|(name, _)| name == reqwest::header::CONTENT_TYPE) {
                    headers.push((reqwest::header::CONTENT_TYPE, HeaderValue::from_static("application/json")));
                }
                Some(serde_json::to_vec(json).map_err(|e| Unbuilt::Body(e.to_string()))?)
            }
            (None, Some(bytes)) => Some(bytes.clone()),
            (None, None) => None,
        };
        if let Some(credential) = &call.credential {
            let outgoing = Outgoing {
                method: &call.method,
                url: &call.url,
                headers: &headers,
                body: body.as_deref().unwrap_or_default(),
            };
            let signed = credential.headers(&outgoing).map_err(Unbuilt::Sign)?;
            headers.retain(|(name, _)| signed.iter().all(|(s, _)| s != name));
            headers.extend(signed);
        }
        let mut req = self.client.request(call.method.clone(), call.url.clone());
        for (name, value) in headers {
            req = req.header(name, value);
        }
        if let Some(bytes) = body {
            req = req.body(bytes);
        }
        if let Some(t) = call.timeout {
            req = req.timeout(t);
        }
        Ok(req)
    }

    fn unbuilt(&self, call: String, e: Unbuilt) -> HttpError {
        match e {
            Unbuilt::Body(detail) => HttpError::Build { call, detail },
            Unbuilt::Sign(detail) => HttpError::Sign { call, detail: self.redactor.redact(&detail) },
        }
    }

    fn transport_error(&self, call: String, e: &reqwest::Error, retries: u32, elapsed: Duration) -> HttpError {
        HttpError::Transport {
            call,
            kind: classify(e),
            detail: self.redactor.redact(&error_chain(e)),
            retries,
            elapsed,
        }
    }

    /// One GET with no retry, for the health gate: each probe is its own evidence.
    pub async fn probe(
        &self,
        url: &url::Url,
        headers: &[(String, String)],
        timeout: Duration,
    ) -> Result<(u16, Vec<u8>), (TransportFailure, String)> {
        self.probe_with(&self.client, url, headers, timeout).await
    }

    /// One GET as a load balancer checks a backend: over https, any certificate is
    /// taken, as balancers do. Only for checks of a host's own port through a tunnel.
    pub async fn probe_backend(
        &self,
        url: &url::Url,
        timeout: Duration,
    ) -> Result<(u16, Vec<u8>), (TransportFailure, String)> {
        let client = match self.backend.get() {
            Some(c) => c,
            None => {
                let made = reqwest::Client::builder()
                    .user_agent(USER_AGENT)
                    .redirect(reqwest::redirect::Policy::none())
                    .danger_accept_invalid_certs(true)
                    .build()
                    .map_err(|e| (TransportFailure::Tls, e.to_string()))?;
                self.backend.get_or_init(|| made)
            }
        };
        self.probe_with(client, url, &[], timeout).await
    }

    async fn probe_with(
        &self,
        client: &reqwest::Client,
        url: &url::Url,
        headers: &[(String, String)],
        timeout: Duration,
    ) -> Result<(u16, Vec<u8>), (TransportFailure, String)> {
        let mut req = client.get(url.clone()).timeout(timeout);
        for (name, value) in headers {
            req = req.header(name.as_str(), value.as_str());
        }
        let sent = Instant::now();
        let result = async {
            let mut resp = req.send().await?;
            let status = resp.status().as_u16();
            // Only the start of a body is ever read (a check string, a version, an
            // excerpt): a health URL that answers without end must not fill the memory.
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await? {
                body.extend_from_slice(&chunk);
                if body.len() >= PROBE_BODY_LIMIT {
                    body.truncate(PROBE_BODY_LIMIT);
                    break;
                }
            }
            Ok::<_, reqwest::Error>((status, body))
        }
        .await;
        if tracing::enabled!(tracing::Level::DEBUG) {
            let describe = self.redactor.redact(&Call::new(reqwest::Method::GET, url.clone()).describe());
            debug_line(&describe, &result.as_ref().map(|r| r.0).map_err(classify), sent.elapsed());
        }
        result.map_err(|e| (classify(&e), self.redactor.redact(&error_chain(&e))))
    }
}

/// With step debug on (RUNNER_DEBUG=1): each request's method, URL without query or
/// credentials, status and time, one line, already redacted.
fn debug_line(describe: &str, outcome: &Result<u16, TransportFailure>, took: Duration) {
    match outcome {
        Ok(status) => tracing::debug!("http: {describe} -> {status} in {}ms", took.as_millis()),
        Err(kind) => tracing::debug!("http: {describe} -> {} after {}ms", kind.as_str(), took.as_millis()),
    }
}

/// Sorts a reqwest error into what a person can act on.
pub fn classify(e: &reqwest::Error) -> TransportFailure {
    if e.is_timeout() {
        return TransportFailure::Timeout;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return TransportFailure::ConnectionRefused,
                std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::UnexpectedEof => return TransportFailure::ConnectionReset,
                std::io::ErrorKind::TimedOut => return TransportFailure::Timeout,
                _ => {}
            }
        }
        source = err.source();
    }
    let chain = error_chain(e).to_ascii_lowercase();
    if chain.contains("certificate")
        || chain.contains("tls")
        || chain.contains("handshake")
        || chain.contains("corrupt message")
    {
        TransportFailure::Tls
    } else if chain.contains("dns") || chain.contains("resolve") {
        TransportFailure::Dns
    } else if chain.contains("connection closed") || chain.contains("reset") || chain.contains("incomplete message") {
        TransportFailure::ConnectionReset
    } else {
        TransportFailure::Other
    }
}

/// The error and its causes on one line, without the URL (it may carry a secret).
fn error_chain(e: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        let text = err.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        source = err.source();
    }
    if parts.is_empty() {
        parts.push(e.without_url_string());
    }
    parts.join(": ")
}

trait WithoutUrl {
    fn without_url_string(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    fn without_url_string(&self) -> String {
        let mut copy = String::new();
        if self.is_timeout() {
            copy.push_str("timed out");
        } else if self.is_connect() {
            copy.push_str("could not connect");
        } else if self.is_body() || self.is_decode() {
            copy.push_str("could not read the response body");
        } else {
            copy.push_str("request failed");
        }
        copy
    }
}

/// Whether a 429 says the whole budget is spent, with no sooner time to come back.
fn budget_spent(headers: &HeaderMap) -> bool {
    let remaining = headers.get("ratelimit-remaining").and_then(|v| v.to_str().ok()).map(str::trim);
    remaining == Some("0") && retry_after(headers).is_none() && headers.contains_key("ratelimit-reset")
}

/// `Retry-After` as seconds or an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        let later = SystemTime::now() + Duration::from_secs(30);
        h.insert(RETRY_AFTER, HeaderValue::from_str(&httpdate::fmt_http_date(later)).unwrap());
        let d = retry_after(&h).unwrap();
        assert!(d > Duration::from_secs(25) && d <= Duration::from_secs(30), "{d:?}");
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn a_call_is_described_without_query_or_credentials() {
        let call =
            Call::new(Method::GET, url::Url::parse("https://user:pw@api.example.com/v1/x?token=s3cret").unwrap());
        assert_eq!(call.describe(), "GET https://api.example.com/v1/x");
    }

    #[test]
    fn backoff_doubles_up_to_its_ceiling_with_jitter() {
        let c = HttpClient::new(Redactor::default(), RetryConfig::default(), Duration::from_secs(1)).unwrap();
        let mut rng = fastrand::Rng::with_seed(7);
        for (retries, ceiling) in [(0, 250), (1, 500), (2, 1000), (10, 10_000)] {
            let d = c.backoff(retries, &mut rng).as_millis() as u64;
            assert!(d >= ceiling / 2 && d <= ceiling, "retry {retries}: {d}ms not in {}..={ceiling}", ceiling / 2);
        }
    }

    #[test]
    fn only_idempotent_calls_are_retried_on_5xx_but_429_always_is() {
        let c = HttpClient::new(Redactor::default(), RetryConfig::default(), Duration::from_secs(1)).unwrap();
        let u = url::Url::parse("https://x/").unwrap();
        let post = Call::new(Method::POST, u.clone());
        let get = Call::new(Method::GET, u);
        assert!(c.should_retry_status(&get, 503));
        assert!(!c.should_retry_status(&post, 503));
        assert!(c.should_retry_status(&post, 429));
        assert!(c.should_retry_status(&post.clone().idempotent(true), 408));
        assert!(!c.should_retry_status(&get, 404));
    }
}
