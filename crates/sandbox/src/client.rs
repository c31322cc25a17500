//! A minimal HTTP/1.1 client over loopback: one request per connection, bodies
//! buffered. The router, the health checks and the tests use it, so the sandbox
//! needs no HTTP client crate of its own.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A response with its body read.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; `Null` when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)?.to_str().ok()
    }
}

/// How far a request got before it failed. Until a response head arrives the server
/// has not answered, so a proxy may try the request elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Connect,
    /// Connected, but the connection closed or broke before a response head.
    BeforeResponse,
    /// The response head arrived, the body did not.
    Body,
    Timeout,
}

#[derive(Debug, Clone)]
pub struct ClientError {
    pub stage: Stage,
    pub message: String,
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.stage, self.message)
    }
}

impl std::error::Error for ClientError {}

fn fail(stage: Stage, message: impl std::fmt::Display) -> ClientError {
    ClientError { stage, message: message.to_string() }
}

/// Sends `request` to `addr` on a fresh connection, giving up after `timeout`.
pub async fn send(
    addr: SocketAddr,
    request: hyper::Request<Full<Bytes>>,
    timeout: Duration,
) -> Result<Reply, ClientError> {
    match tokio::time::timeout(timeout, exchange(addr, request)).await {
        Ok(result) => result,
        Err(_) => Err(fail(Stage::Timeout, format!("no answer from {addr} within {timeout:?}"))),
    }
}

/// `send` over TLS, taking any certificate, as a load balancer checks a backend.
pub async fn send_tls(
    addr: SocketAddr,
    request: hyper::Request<Full<Bytes>>,
    timeout: Duration,
) -> Result<Reply, ClientError> {
    let exchange = async {
        let stream = TcpStream::connect(addr).await.map_err(|e| fail(Stage::Connect, e))?;
        let tls = crate::tls::connector().map_err(|e| fail(Stage::Connect, e))?;
        let stream = tls.connect(crate::tls::server_name(), stream).await.map_err(|e| fail(Stage::Connect, e))?;
        over(stream, request).await
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(fail(Stage::Timeout, format!("no answer from {addr} within {timeout:?}"))),
    }
}

async fn exchange(addr: SocketAddr, request: hyper::Request<Full<Bytes>>) -> Result<Reply, ClientError> {
    let stream = TcpStream::connect(addr).await.map_err(|e| fail(Stage::Connect, e))?;
    over(stream, request).await
}

async fn over<IO>(stream: IO, request: hyper::Request<Full<Bytes>>) -> Result<Reply, ClientError>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = http1::handshake(TokioIo::new(stream)).await.map_err(|e| fail(Stage::Connect, e))?;
    tokio::spawn(conn);
    let response = sender.send_request(request).await.map_err(|e| fail(Stage::BeforeResponse, e))?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map_err(|e| fail(Stage::Body, e))?.to_bytes();
    Ok(Reply { status: parts.status.as_u16(), headers: parts.headers, body })
}

/// Sends `method url` with optional headers and body; `url` must be
/// `http://HOST:PORT/path?query` with a literal IP address, as the sandbox's are.
pub async fn call(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&serde_json::Value>,
) -> Result<Reply, ClientError> {
    let rest = url.strip_prefix("http://").ok_or_else(|| fail(Stage::Connect, format!("{url}: only http:// URLs")))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr: SocketAddr = host
        .parse()
        .map_err(|_| fail(Stage::Connect, format!("{url}: the host must be IP:PORT, e.g. 127.0.0.1:8080")))?;
    let mut builder = hyper::Request::builder().method(method).uri(path).header("host", host);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let bytes = match body {
        Some(value) => {
            builder = builder.header("content-type", "application/json");
            Bytes::from(value.to_string())
        }
        None => Bytes::new(),
    };
    let request = builder.body(Full::new(bytes)).map_err(|e| fail(Stage::Connect, e))?;
    send(addr, request, Duration::from_secs(90)).await
}
