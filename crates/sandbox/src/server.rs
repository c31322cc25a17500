//! A small HTTP/1.1 server on loopback, shared by every emulator in the sandbox.
//! It can be stopped gracefully (in-flight requests finish), can screen each new
//! connection before reading from it, and lets a handler drop a connection without
//! answering, which is how the emulators fake network faults.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Notify};

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

    /// A header's value as text, if present and printable.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)?.to_str().ok()
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

/// A body sent in chunks as they come (a log stream), then ended when the sender is
/// dropped. Handlers return it through `streamed`; the server does the rest.
#[derive(Clone)]
struct Streamed(Arc<std::sync::Mutex<Option<mpsc::Receiver<Bytes>>>>);

/// A 200 `text/plain` answer whose body is what `chunks` sends, chunk by chunk, until
/// the sender is dropped: how a provider's log stream answers.
pub fn streamed(chunks: mpsc::Receiver<Bytes>) -> Response {
    let mut r = text(200, "");
    r.extensions_mut().insert(Streamed(Arc::new(std::sync::Mutex::new(Some(chunks)))));
    r
}

/// The body of a `streamed` answer.
struct Chunks(mpsc::Receiver<Bytes>);

impl hyper::body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|chunk| chunk.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

type Body = http_body_util::Either<Full<Bytes>, Chunks>;

/// The body the connection sends: the handler's, or the chunks of a `streamed` answer.
fn outgoing(response: Response) -> hyper::Response<Body> {
    let stream = response.extensions().get::<Streamed>().and_then(|s| s.0.lock().ok()?.take());
    let (parts, body) = response.into_parts();
    match stream {
        Some(rx) => hyper::Response::from_parts(parts, http_body_util::Either::Right(Chunks(rx))),
        None => hyper::Response::from_parts(parts, http_body_util::Either::Left(body)),
    }
}

/// Marks a response as "close the connection instead of answering".
#[derive(Debug, Clone, Copy)]
struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped on purpose")
    }
}

impl std::error::Error for DropConnection {}

/// A response that makes the server close the connection without writing anything,
/// as a peer that resets does.
pub fn drop_connection() -> Response {
    let mut r = text(500, "");
    r.extensions_mut().insert(DropConnection);
    r
}

/// A running server, until `stop`, `shutdown` or dropping the handle.
pub struct Server {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    /// Closed once the accept loop and every connection have ended.
    drained: mpsc::Receiver<()>,
}

impl Server {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting; open connections finish their request in flight, then close.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Stops, then waits until every request in flight has been answered.
    pub async fn shutdown(mut self) {
        self.stop();
        while self.drained.recv().await.is_some() {}
    }
}

/// Serves `handler` on `addr` (use port 0 for any free port) until stopped.
pub async fn serve<F, Fut>(addr: SocketAddr, handler: F) -> std::io::Result<Server>
where
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    serve_screened(addr, |stream| async move { Some(stream) }, handler).await
}

/// Like `serve`, over TLS with the sandbox's own certificate (`crate::tls`).
pub async fn serve_tls<F, Fut>(addr: SocketAddr, handler: F) -> std::io::Result<Server>
where
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    let tls = crate::tls::acceptor()?;
    listen(addr, |stream| async move { Some(stream) }, Some(tls), handler).await
}

/// Like `serve`, but every accepted connection first goes through `screen`, which
/// may keep it (and drop it) before any byte is read.
pub async fn serve_screened<S, SFut, F, Fut>(addr: SocketAddr, screen: S, handler: F) -> std::io::Result<Server>
where
    S: Fn(TcpStream) -> SFut + Send + Sync + 'static,
    SFut: Future<Output = Option<TcpStream>> + Send + 'static,
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    listen(addr, screen, None, handler).await
}

async fn listen<S, SFut, F, Fut>(
    addr: SocketAddr,
    screen: S,
    tls: Option<tokio_rustls::TlsAcceptor>,
    handler: F,
) -> std::io::Result<Server>
where
    S: Fn(TcpStream) -> SFut + Send + Sync + 'static,
    SFut: Future<Output = Option<TcpStream>> + Send + 'static,
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = watch::channel(false);
    // Every task holds a sender; the receiver sees "closed" once all have ended.
    let (alive, drained) = mpsc::channel::<()>(1);
    let (handler, screen) = (Arc::new(handler), Arc::new(screen));
    let mut accept_stopped = stopped.clone();
    tokio::spawn(async move {
        let take = |stream: TcpStream| {
            let (screen, handler, tls) = (screen.clone(), handler.clone(), tls.clone());
            let connection = serve_connection(stream, screen, tls, handler, stopped.clone(), alive.clone());
            tokio::spawn(connection);
        };
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    if let Ok((stream, _)) = accepted {
                        take(stream);
                    }
                }
                _ = async { accept_stopped.wait_for(|s| *s).await.is_ok() } => break,
            }
        }
        // Connections the kernel completed before the stop are owed an answer, not a reset.
        while let Ok(Ok((stream, _))) = tokio::time::timeout(Duration::ZERO, listener.accept()).await {
            take(stream);
        }
    });
    Ok(Server { addr, stop, drained })
}

/// A connection accepted just before a stop may carry a request not read yet; it
/// gets this long to begin it before the connection is closed.
const FIRST_REQUEST_GRACE: Duration = Duration::from_millis(500);

async fn serve_connection<S, SFut, F, Fut>(
    stream: TcpStream,
    screen: Arc<S>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    handler: Arc<F>,
    stopped: watch::Receiver<bool>,
    _alive: mpsc::Sender<()>,
) where
    S: Fn(TcpStream) -> SFut + Send + Sync + 'static,
    SFut: Future<Output = Option<TcpStream>> + Send + 'static,
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    let Some(stream) = screen(stream).await else { return };
    match tls {
        None => answer(stream, handler, stopped).await,
        Some(tls) => {
            if let Ok(stream) = tls.accept(stream).await {
                answer(stream, handler, stopped).await;
            }
        }
    }
}

/// Answers the requests of one connection, plain or TLS.
async fn answer<IO, F, Fut>(stream: IO, handler: Arc<F>, mut stopped: watch::Receiver<bool>)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    let begun = Arc::new(Notify::new());
    let begun_in_service = begun.clone();
    let service = service_fn(move |req: hyper::Request<Incoming>| {
        let handler = handler.clone();
        begun_in_service.notify_one();
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
            let response = handler(request).await;
            match response.extensions().get::<DropConnection>() {
                Some(marker) => Err(*marker),
                None => Ok::<_, DropConnection>(outgoing(response)),
            }
        }
    });
    let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = async { stopped.wait_for(|s| *s).await.is_ok() } => {}
    }
    // hyper closes a connection with no request begun at once, even if one is on its
    // way; so wait for the first request (or the grace) before shutting down.
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = begun.notified() => {}
        _ = tokio::time::sleep(FIRST_REQUEST_GRACE) => {}
    }
    // Finish the request in flight, then close.
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}
