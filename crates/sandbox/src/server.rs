//! A small HTTP/1.1 server on loopback, shared by every emulator in the sandbox.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub type Response = hyper::Response<Full<Bytes>>;

/// A request with its body read, so handlers can be plain async functions.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: hyper::Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Request {
    /// The value of a query parameter, if present.
    pub fn param(&self, name: &str) -> Option<String> {
        self.query.as_deref()?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then(|| v.to_string())
        })
    }
}

pub fn text(status: u16, body: impl Into<String>) -> Response {
    let mut r = hyper::Response::new(Full::new(Bytes::from(body.into())));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert("content-type", hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

pub fn json(status: u16, value: &serde_json::Value) -> Response {
    let mut r = text(status, value.to_string());
    r.headers_mut().insert("content-type", hyper::header::HeaderValue::from_static("application/json"));
    r
}

/// A running server; dropping the handle does not stop it, `stop` does.
pub struct Server {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
}

impl Server {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

/// Serves `handler` on `addr` (use port 0 for any free port) until stopped.
pub async fn serve<F, Fut>(addr: SocketAddr, handler: F) -> std::io::Result<Server>
where
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let (stop, mut stopped) = watch::channel(false);
    let handler = Arc::new(handler);
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(_) => continue,
                },
                _ = stopped.changed() => return,
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<Incoming>| {
                    let handler = handler.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        let request = Request {
                            method: parts.method,
                            path: parts.uri.path().to_string(),
                            query: parts.uri.query().map(str::to_string),
                            headers: parts.headers,
                            body,
                        };
                        Ok::<_, Infallible>(handler(request).await)
                    }
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    Ok(Server { addr, stop })
}
