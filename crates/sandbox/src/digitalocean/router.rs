//! An app's live URL: round-robin over the ready instances of the active
//! deployment's first service. The switch to a new deployment happens in one step
//! once all its instances are ready, so the router never sees a half-done deploy.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::header::HeaderValue;
use hyper::HeaderMap;

use super::platform::Platform;
use crate::kit::router::{self, on_loopback, Backend, Backends, RoundRobin};
use crate::server::{text, Request, Response, Server};

struct AppRouter {
    platform: Arc<Platform>,
    app: String,
    next: RoundRobin,
}

pub async fn serve(platform: Arc<Platform>, app: &str, addr: SocketAddr) -> std::io::Result<Server> {
    router::serve(Arc::new(AppRouter { platform, app: app.to_string(), next: RoundRobin::default() }), addr).await
}

impl Backends for AppRouter {
    fn noun(&self) -> &'static str {
        "instance"
    }

    fn pick(&self, _request: &Request, tried: &[String]) -> Option<Backend> {
        self.next.pick(self.platform.backends(&self.app).into_iter().map(on_loopback), tried)
    }

    fn none_available(&self) -> Response {
        text(503, "upstream connect error: no healthy instances of this app\n")
    }

    fn forward(&self, headers: &mut HeaderMap) {
        headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    }

    fn decorate(&self, headers: &mut HeaderMap, instance: &str) {
        // Not a DigitalOcean header: lets a test see which instance answered.
        if let Ok(v) = HeaderValue::from_str(instance) {
            headers.insert("sandbox-do-instance", v);
        }
    }
}
