//! The one HTTP layer: retries where they are safe, Retry-After honoured, errors that
//! carry no secret.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use safe_deploy::http::{Call, HttpClient, HttpError, RetryConfig};
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
