//! Heroku's router for one app: round-robin over the web dynos that take traffic (up,
//! and with preboot only once the switch is made). With none, the answer is Heroku's
//! error page: 503 with `H10 App crashed` when web dynos crashed, `H14 No web
//! processes running` otherwise (the gap a deploy without preboot leaves).

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::header::HeaderValue;
use hyper::HeaderMap;

use super::platform::Platform;
use crate::kit::router::{self, on_loopback, Backend, Backends, RoundRobin};
use crate::server::{text, Request, Response, Server};

struct HerokuRouter {
    platform: Arc<Platform>,
    app: String,
    next: RoundRobin,
}

pub async fn serve(platform: Arc<Platform>, app: &str, addr: SocketAddr) -> std::io::Result<Server> {
    router::serve(Arc::new(HerokuRouter { platform, app: app.to_string(), next: RoundRobin::default() }), addr).await
}

impl Backends for HerokuRouter {
    fn noun(&self) -> &'static str {
        "dyno"
    }

    fn pick(&self, _request: &Request, tried: &[String]) -> Option<Backend> {
        let (serving, _) = self.platform.backends(&self.app);
        self.next.pick(serving.into_iter().map(on_loopback), tried)
    }

    fn none_available(&self) -> Response {
        let (_, crashed) = self.platform.backends(&self.app);
        let (code, desc) = if crashed { ("H10", "App crashed") } else { ("H14", "No web processes running") };
        let mut response = text(503, format!("Application error ({code} {desc})\n"));
        // Not a Heroku header (Heroku logs the code): lets a test see which error it was.
        if let Ok(v) = HeaderValue::from_str(code) {
            response.headers_mut().insert("sandbox-heroku-error", v);
        }
        response
    }

    fn forward(&self, headers: &mut HeaderMap) {
        headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
        headers.insert(
            "x-request-start",
            HeaderValue::from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0),
            ),
        );
    }

    fn decorate(&self, headers: &mut HeaderMap, dyno: &str) {
        headers.insert("via", HeaderValue::from_static("1.1 vegur"));
        if let Ok(v) = HeaderValue::from_str(dyno) {
            headers.insert("sandbox-dyno-id", v);
        }
    }
}
