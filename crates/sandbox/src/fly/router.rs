//! The Fly proxy stand-in: the kit's router over the app's machines. Which machines
//! take traffic (app group, started, not cordoned, checks passing, round-robin) is
//! `Platform::routable`, picked round-robin (`kit::router::RoundRobin`); what is here is Fly's side of proxying: the
//! `fly-force-instance-id` pin and the headers Fly's proxy adds. Forwarding, retries
//! on a refused connection and hop-by-hop headers are `kit::router`'s.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::header::{HeaderName, HeaderValue};
use hyper::HeaderMap;

use super::ids;
use super::platform::Platform;
use crate::kit::router::{self, on_loopback, Backend, Backends, Pin, RoundRobin};
use crate::server::{Request, Server};

/// The request header that pins a request to one machine, by machine id.
const FORCE_INSTANCE_HEADER: &str = "fly-force-instance-id";

struct FlyProxy {
    platform: Arc<Platform>,
    next: RoundRobin,
}

pub async fn serve(platform: Arc<Platform>, addr: SocketAddr) -> std::io::Result<Server> {
    router::serve(Arc::new(FlyProxy { platform, next: RoundRobin::default() }), addr).await
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl Backends for FlyProxy {
    fn noun(&self) -> &'static str {
        "machine"
    }

    fn pick(&self, _request: &Request, tried: &[String]) -> Option<Backend> {
        self.next.pick(self.platform.routable().into_iter().map(on_loopback), tried)
    }

    fn pin(&self, request: &Request) -> Option<Pin> {
        // Header names are case-insensitive: hyper keeps them lowercased.
        let id = request.header(FORCE_INSTANCE_HEADER).map(str::trim).filter(|id| !id.is_empty())?;
        Some(Pin { id: id.to_string(), by: FORCE_INSTANCE_HEADER })
    }

    /// A request forced to machine `id` goes there and nowhere else, as Fly's proxy
    /// does for `fly-force-instance-id`: "No fallback if Machine is ultimately
    /// unavailable", and it "will attempt to reach the Machine multiple times if the
    /// Machine is unhealthy" (Fly's dynamic request routing docs), so failing checks
    /// do not keep it away.
    ///
    /// Cordoned machines (and ones created with `skip_service_registration`) take
    /// forced requests too, so a test can try a new machine before it takes traffic.
    /// Fly does not document this either way; what supports it is that since Fly's
    /// cordon rework a cordoned machine keeps its services registered and is only
    /// marked cordoned (flyctl PR #4565), so the proxy still knows where to deliver.
    ///
    /// A machine that does not exist, is not started, has no services or no listening
    /// process gets 503 with a body naming it: Fly's proxy answers an error here too
    /// (PR02 "Machine not found" among its codes), with no documented status.
    fn pinned(&self, id: &str) -> Result<SocketAddr, String> {
        self.platform.forced_backend(id).map(loopback)
    }

    fn forward(&self, headers: &mut HeaderMap) {
        headers.insert("fly-forwarded-proto", HeaderValue::from_static("http"));
    }

    fn decorate(&self, headers: &mut HeaderMap, machine_id: &str) {
        let extra = [
            ("via", "1.1 fly.io".to_string()),
            ("fly-request-id", format!("{}-{}", ids::instance_id(), self.platform.region)),
            // Not a Fly header: lets a test see which machine answered.
            ("sandbox-machine-id", machine_id.to_string()),
        ];
        for (name, value) in extra {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(HeaderName::from_static(name), value);
            }
        }
    }
}
