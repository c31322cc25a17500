//! The one HTTP layer: retries where they are safe, Retry-After honoured, errors that
//! carry no secret.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderName, HeaderValue};
use reqwest::Method;
use safe_deploy::http::{Call, Credential, Headers, HttpClient, HttpError, Outgoing, RetryConfig};
use safe_deploy::secret::Redactor;
use safe_deploy::shutdown::Shutdown;
use sandbox::server::{serve, text, Response, Server};

/// A server that answers with queued responses, then 200, and counts requests.
async fn queued(responses: Vec<(u16, Option<&'static str>)>) -> (Server, Arc<Mutex<usize>>) {
    let queue = Arc::new(Mutex::new(responses.into_iter().collect::<VecDeque<_>>()));
    let count = Arc::new(Mutex::new(0));
    let c = count.clone();
    let server = serve("127.0.0.1:0".parse().unwrap(), move |_| {
        *c.lock().unwrap() += 1;
        let next = queue.lock().unwrap().pop_front();
        async move {
            let (status, retry_after) = next.unwrap_or((200, None));
            let mut r: Response = text(status, format!("answer {status}"));
            if let Some(after) = retry_after {
                r.headers_mut().insert("retry-after", after.parse().unwrap());
            }
            r
        }
    })
    .await
    .unwrap();
    (server, count)
}

fn client() -> HttpClient {
    let retry =
        RetryConfig { base: Duration::from_millis(10), max_backoff: Duration::from_millis(50), ..Default::default() };
    HttpClient::new(Redactor::default(), retry, Duration::from_secs(2)).unwrap().with_seed(1)
}

fn url(server: &Server, path: &str) -> url::Url {
    url::Url::parse(&format!("{}{path}", server.url())).unwrap()
}

#[tokio::test]
async fn a_get_is_retried_through_5xx_until_it_succeeds() {
    let (server, count) = queued(vec![(503, None), (502, None)]).await;
    let reply = client().send(&Call::new(Method::GET, url(&server, "/x")), &Shutdown::new()).await.unwrap();
    assert_eq!((reply.status, reply.retries), (200, 2));
    assert_eq!(*count.lock().unwrap(), 3);
}

#[tokio::test]
async fn a_post_is_not_retried_on_5xx_since_the_server_may_have_acted() {
    let (server, count) = queued(vec![(500, None)]).await;
    let reply = client().send(&Call::new(Method::POST, url(&server, "/x")), &Shutdown::new()).await.unwrap();
    assert_eq!(reply.status, 500);
    assert_eq!(*count.lock().unwrap(), 1);
}

#[tokio::test]
async fn a_429_is_retried_after_the_time_retry_after_asks_for() {
    let (server, count) = queued(vec![(429, Some("1"))]).await;
    let started = Instant::now();
    let reply = client().send(&Call::new(Method::POST, url(&server, "/x")), &Shutdown::new()).await.unwrap();
    assert_eq!(reply.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(950), "waited {:?}", started.elapsed());
    assert_eq!(*count.lock().unwrap(), 2);
}

#[tokio::test]
async fn a_429_without_retry_after_backs_off_and_retries() {
    let (server, count) = queued(vec![(429, None), (429, None)]).await;
    let reply = client().send(&Call::new(Method::GET, url(&server, "/x")), &Shutdown::new()).await.unwrap();
    assert_eq!((reply.status, *count.lock().unwrap()), (200, 3));
}

#[tokio::test]
async fn retries_stop_after_the_limit_and_the_last_answer_is_returned() {
    let (server, count) = queued(vec![(503, None); 10]).await;
    let reply = client().send(&Call::new(Method::GET, url(&server, "/x")), &Shutdown::new()).await.unwrap();
    assert_eq!(reply.status, 503);
    assert_eq!(reply.retries, 5);
    assert_eq!(*count.lock().unwrap(), 6);
}

#[tokio::test]
async fn a_refused_connection_is_retried_and_the_error_carries_no_secret() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let redactor = Redactor::default();
    redactor.add("s3cr3t-token");
    let retry = RetryConfig {
        base: Duration::from_millis(5),
        max_backoff: Duration::from_millis(10),
        max_retries: 2,
        ..Default::default()
    };
    let client = HttpClient::new(redactor, retry, Duration::from_secs(1)).unwrap();
    let u = url::Url::parse(&format!("http://127.0.0.1:{port}/v1/apps?token=s3cr3t-token")).unwrap();
    let err = client.send(&Call::new(Method::GET, u), &Shutdown::new()).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("connection refused"), "{text}");
    assert!(text.contains("after 2 retries"), "{text}");
    assert!(!text.contains("s3cr3t"), "{text}");
    assert!(text.contains("nothing listens at that address and port"), "said plainly: {text}");
    assert!(!text.contains("os error"), "not the library's words: {text}");
}

/// https:// to a port that speaks plain HTTP: rustls reads the answer as a corrupt TLS
/// record; the error says what that means instead.
#[tokio::test]
async fn https_to_a_plain_http_port_is_said_in_plain_words() {
    let (server, _) = queued(vec![(200, None)]).await;
    let plain = url(&server, "/health");
    let mut https = plain.clone();
    https.set_scheme("https").unwrap();
    let retry = RetryConfig { base: Duration::from_millis(5), max_retries: 3, ..Default::default() };
    let client = HttpClient::new(Redactor::default(), retry, Duration::from_secs(2)).unwrap();
    let err = client.send(&Call::new(Method::GET, https), &Shutdown::new()).await.unwrap_err();
    let text = err.to_string();
    assert!(!text.contains("retries"), "the same on every try, so tried once: {text}");
    assert!(text.contains("does not speak HTTPS (should the URL start with http://?)"), "{text}");
    assert!(!text.contains("InvalidContentType"), "{text}");
}

#[tokio::test]
async fn a_shutdown_stops_the_backoff_at_once() {
    let (server, _) = queued(vec![(503, Some("30"))]).await;
    let shutdown = Shutdown::new();
    let s = shutdown.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.trigger("SIGINT");
    });
    let started = Instant::now();
    let err = client().send(&Call::new(Method::GET, url(&server, "/x")), &shutdown).await.unwrap_err();
    assert!(matches!(err, HttpError::Cancelled { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn every_request_says_who_sent_it() {
    let seen = Arc::new(Mutex::new(String::new()));
    let s = seen.clone();
    let server = serve("127.0.0.1:0".parse().unwrap(), move |req| {
        *s.lock().unwrap() = req.headers.get("user-agent").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        async { text(200, "ok") }
    })
    .await
    .unwrap();
    client().send(&Call::new(Method::GET, url(&server, "/")), &Shutdown::new()).await.unwrap();
    assert_eq!(*seen.lock().unwrap(), format!("safe-deploy/{}", env!("CARGO_PKG_VERSION")));
}

#[tokio::test]
async fn a_throttle_the_platform_says_in_its_body_is_asked_again_even_for_a_post() {
    let (server, count) = queued(vec![(400, None), (400, None)]).await;
    // The queued server's 400s say "answer 400": here, that is the platform's throttle.
    let throttle: fn(u16, &[u8]) -> bool = |status, body| status == 400 && body.starts_with(b"answer 400");
    let call = Call::new(Method::POST, url(&server, "/x")).throttled_when(throttle);
    let reply = client().send(&call, &Shutdown::new()).await.unwrap();
    assert_eq!((reply.status, reply.retries), (200, 2), "throttles are retried");
    assert_eq!(*count.lock().unwrap(), 3);

    let (server, count) = queued(vec![(400, None)]).await;
    let call = Call::new(Method::POST, url(&server, "/x")).throttled_when(|_, body| body.starts_with(b"Rate"));
    let reply = client().send(&call, &Shutdown::new()).await.unwrap();
    assert_eq!(reply.status, 400, "a 400 that is not a throttle is the answer");
    assert_eq!(*count.lock().unwrap(), 1);
}

/// A credential that signs the body's length and counts its signatures.
#[derive(Debug, Default)]
struct Counting(Mutex<u32>);

impl Credential for Counting {
    fn headers(&self, request: &Outgoing) -> Result<Headers, String> {
        let mut n = self.0.lock().unwrap();
        *n += 1;
        let value = format!("sig len={} try={n}", request.body.len());
        Ok(vec![(HeaderName::from_static("x-sig"), HeaderValue::from_str(&value).unwrap())])
    }
}

#[tokio::test]
async fn a_credential_signs_each_attempt_over_the_bytes_sent() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let server = serve("127.0.0.1:0".parse().unwrap(), move |request| {
        let status = if s.lock().unwrap().is_empty() { 503 } else { 200 };
        s.lock().unwrap().push((request.header("x-sig").unwrap_or("").to_string(), request.body.len()));
        async move { text(status, "ok") }
    })
    .await
    .unwrap();
    let call = Call::new(Method::PUT, url(&server, "/x"))
        .json(serde_json::json!({"image": "web:v2"}))
        .credential(Arc::new(Counting::default()));
    let reply = client().send(&call, &Shutdown::new()).await.unwrap();
    assert_eq!(reply.status, 200);
    let seen = seen.lock().unwrap().clone();
    let len = seen[0].1;
    assert_eq!(seen, vec![(format!("sig len={len} try=1"), len), (format!("sig len={len} try=2"), len)]);
}

#[tokio::test]
async fn a_credential_that_cannot_sign_sends_nothing() {
    #[derive(Debug)]
    struct Broken;
    impl Credential for Broken {
        fn headers(&self, _: &Outgoing) -> Result<Headers, String> {
            Err("no region".into())
        }
    }
    let (server, count) = queued(vec![]).await;
    let call = Call::new(Method::GET, url(&server, "/x")).credential(Arc::new(Broken));
    let err = client().send(&call, &Shutdown::new()).await.unwrap_err();
    assert!(matches!(&err, HttpError::Sign { detail, .. } if detail == "no region"), "{err}");
    assert_eq!(*count.lock().unwrap(), 0, "no request left");
}
