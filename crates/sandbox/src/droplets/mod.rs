//! A DigitalOcean Droplets and Load Balancers emulator: the read side of
//! `/v2/droplets`, `/v2/load_balancers` and the LB's `droplets` endpoints (`api`),
//! in front of one load balancer that really balances (`kit::balancer`) over the
//! droplets it targets, by id or by tag. The droplets are not started here: each is a
//! loopback address (127.0.0.x) where someone else (the SSH host side of a test)
//! runs the app on `target_port`.
//!
//! Every answer is meant to validate against DigitalOcean's OpenAPI description, as
//! CI checks with Prism: errors as `{"id", "message", "request_id"}`, lists with
//! `meta.total` and `links.pages`, no `null` but where the description allows one.

mod api;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

pub use crate::kit::balancer::{Check, Protocol};
pub use crate::kit::Faults;

use crate::kit::balancer::{Balancer, BalancerOptions, Member};
use crate::kit::{Bucket, Gate, Handle, TokenRule};
use crate::server::Server;

/// The first droplet id; the others follow. DigitalOcean's ids are plain integers.
const FIRST_DROPLET_ID: u64 = 3_164_444;

/// A droplet the sandbox knows, at a loopback address of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropletSpec {
    pub name: String,
    /// Both its public and its private address, e.g. 127.0.0.2.
    pub ip: Ipv4Addr,
    pub tags: Vec<String>,
}

impl DropletSpec {
    /// One droplet per host of a fleet: `web-1`, `web-2`..., each tagged `tag`.
    pub fn for_hosts(hosts: &[crate::hosts::HostInfo], tag: &str) -> Vec<DropletSpec> {
        hosts
            .iter()
            .enumerate()
            .map(|(i, h)| DropletSpec { name: format!("web-{}", i + 1), ip: h.addr, tags: vec![tag.to_string()] })
            .collect()
    }
}

/// What the load balancer targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LbTarget {
    /// Droplets by id: every droplet in the options to begin with, then as
    /// `POST|DELETE /v2/load_balancers/{id}/droplets` change them.
    ById,
    /// Every droplet carrying this tag; the droplet endpoints answer 422.
    ByTag(String),
}

#[derive(Debug, Clone)]
pub struct LbSpec {
    pub name: String,
    pub by: LbTarget,
    pub check: Check,
    /// The droplets' port traffic goes to.
    pub target_port: u16,
    /// The port the forwarding rule names (80); the balancer itself listens on a free
    /// port, see `DropletsSandbox::app_url`.
    pub entry_port: u16,
}

#[derive(Debug, Clone)]
pub struct DropletsOptions {
    /// Requests must carry `Authorization: Bearer <token>`; empty lets any through.
    pub token: String,
    /// 0 for any free port.
    pub api_port: u16,
    pub droplets: Vec<DropletSpec>,
    pub balancer: LbSpec,
    /// Requests per minute in the token's bucket (DigitalOcean's burst limit: 250).
    pub rate_limit: u32,
    /// A region slug from the description's list, e.g. "nyc3".
    pub region: String,
    /// How long the balancer takes to apply a change of its droplets; another change
    /// meanwhile is refused with DigitalOcean's 403 ("can't be updated while it
    /// processes previous actions"). Zero: changes apply at once.
    pub busy: std::time::Duration,
}

impl Default for LbSpec {
    /// DigitalOcean's defaults: an HTTP check of `/` on port 80 every 10 s, 5 s to
    /// answer, healthy after 3 passes, unhealthy after 5 failures; every droplet by id.
    fn default() -> LbSpec {
        LbSpec {
            name: "lb".into(),
            by: LbTarget::ById,
            check: Check {
                protocol: Protocol::Http,
                path: "/".into(),
                port: 80,
                interval: Duration::from_secs(10),
                timeout: Duration::from_secs(5),
                healthy: 3,
                unhealthy: 5,
                matcher: None,
            },
            target_port: 80,
            entry_port: 80,
        }
    }
}

impl Default for DropletsOptions {
    fn default() -> DropletsOptions {
        DropletsOptions {
            token: String::new(),
            api_port: 0,
            droplets: Vec::new(),
            balancer: LbSpec::default(),
            rate_limit: 250,
            region: "nyc3".into(),
            busy: std::time::Duration::ZERO,
        }
    }
}

/// One API request, as the emulator answered it; `target` is the droplet or LB id.
pub type ApiCall = crate::kit::Call;

#[derive(Debug, Clone)]
struct Droplet {
    id: u64,
    spec: DropletSpec,
    created_at: String,
}

struct State {
    droplets: Vec<Droplet>,
    /// The LB's own droplet list; unused while it targets a tag.
    lb_droplets: Vec<u64>,
    /// Until when the balancer is still applying the last change.
    busy_until: Option<std::time::Instant>,
    /// The balancer's status when not `active` (`errored`, `new`).
    status: Option<String>,
}

/// What the API and the handle share.
struct Cloud {
    gate: Gate<Faults>,
    auth: TokenRule,
    region: String,
    lb: LbSpec,
    lb_id: String,
    lb_created_at: String,
    state: Mutex<State>,
    balancer: Balancer,
    bucket: Bucket,
    busy: std::time::Duration,
    /// The API's own base URL, for page links.
    base: Mutex<String>,
}

impl Cloud {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The droplets the LB targets now, by id.
    fn targeted(&self, s: &State) -> Vec<u64> {
        match &self.lb.by {
            LbTarget::ById => s.lb_droplets.clone(),
            LbTarget::ByTag(tag) => s.droplets.iter().filter(|d| d.spec.tags.contains(tag)).map(|d| d.id).collect(),
        }
    }

    /// Hands the balancer the targeted droplets; called after every change to them.
    fn sync_members(&self, s: &State) {
        let members = self
            .targeted(s)
            .into_iter()
            .filter_map(|id| s.droplets.iter().find(|d| d.id == id))
            .map(|d| Member { id: d.id.to_string(), ip: d.spec.ip, port: None })
            .collect();
        self.balancer.set_members(members);
    }
}

pub struct DropletsSandbox {
    cloud: Arc<Cloud>,
    api: Server,
}

impl DropletsSandbox {
    /// Starts the API and the load balancer, whose members at start count as healthy.
    pub async fn start(opts: DropletsOptions) -> std::io::Result<DropletsSandbox> {
        let created_at = crate::digitalocean::now();
        let droplets: Vec<Droplet> = opts
            .droplets
            .iter()
            .enumerate()
            .map(|(i, spec)| Droplet {
                id: FIRST_DROPLET_ID + i as u64,
                spec: spec.clone(),
                created_at: created_at.clone(),
            })
            .collect();
        let state =
            State { lb_droplets: droplets.iter().map(|d| d.id).collect(), droplets, busy_until: None, status: None };
        let members = match &opts.balancer.by {
            LbTarget::ById => state.droplets.iter().collect::<Vec<_>>(),
            LbTarget::ByTag(tag) => state.droplets.iter().filter(|d| d.spec.tags.contains(tag)).collect(),
        };
        let members = members.into_iter().map(|d| Member { id: d.id.to_string(), ip: d.spec.ip, port: None }).collect();
        let balancer = Balancer::start(BalancerOptions {
            check: opts.balancer.check.clone(),
            members,
            target_port: opts.balancer.target_port,
        })
        .await?;
        let token = Some(opts.token.clone()).filter(|t| !t.is_empty());
        let cloud = Arc::new(Cloud {
            gate: Gate::default(),
            auth: TokenRule { schemes: &["Bearer"], bare: false, token, required: false },
            region: opts.region.clone(),
            lb: opts.balancer.clone(),
            lb_id: crate::digitalocean::uuid(),
            lb_created_at: created_at,
            state: Mutex::new(state),
            busy: opts.busy,
            balancer,
            bucket: Bucket::new(opts.rate_limit, opts.rate_limit),
            base: Mutex::new(String::new()),
        });
        let api = api::serve(cloud.clone(), SocketAddr::from(([127, 0, 0, 1], opts.api_port))).await?;
        Ok(DropletsSandbox { cloud, api })
    }

    /// Where the load balancer answers (its `ip` in the API is 127.0.0.1, the port is
    /// this one, not the forwarding rule's `entry_port`).
    pub fn app_url(&self) -> String {
        self.cloud.balancer.url()
    }

    pub fn lb_id(&self) -> String {
        self.cloud.lb_id.clone()
    }

    /// Every droplet's id, in the order of `DropletsOptions.droplets`.
    pub fn droplet_ids(&self) -> Vec<u64> {
        self.cloud.lock().droplets.iter().map(|d| d.id).collect()
    }

    /// The id of the droplet called `name`.
    pub fn droplet_id(&self, name: &str) -> Option<u64> {
        self.cloud.lock().droplets.iter().find(|d| d.spec.name == name).map(|d| d.id)
    }

    /// The droplets the load balancer targets now (its `droplet_ids`, or the tagged ones).
    pub fn lb_members(&self) -> Vec<u64> {
        let s = self.cloud.lock();
        self.cloud.targeted(&s)
    }

    /// The members whose health checks pass now: the ones that get traffic.
    pub fn healthy(&self) -> Vec<u64> {
        self.cloud.balancer.healthy().iter().filter_map(|id| id.parse().ok()).collect()
    }

    /// The real balancer: per-member stats, `served()`/`failed()`, `wait_healthy`.
    pub fn balancer(&self) -> &Balancer {
        &self.cloud.balancer
    }

    /// The droplet as `GET /v2/droplets/{id}` shows it (the inner `droplet` object).
    pub fn droplet(&self, id: u64) -> Option<serde_json::Value> {
        let s = self.cloud.lock();
        s.droplets.iter().find(|d| d.id == id).map(|d| api::droplet_json(&self.cloud, d))
    }

    /// The LB as `GET /v2/load_balancers/{id}` shows it (the inner object).
    /// Sets the balancer's status as the API reports it (`errored`: DigitalOcean could
    /// not apply its configuration); `active` again with "active".
    pub fn set_lb_status(&self, status: &str) {
        self.cloud.lock().status = Some(status.to_string()).filter(|s| s != "active");
    }

    pub fn load_balancer(&self) -> serde_json::Value {
        api::lb_json(&self.cloud, &self.cloud.lock())
    }

    /// Rate-limit tokens left in the bucket.
    pub fn tokens_left(&self) -> u64 {
        self.cloud.bucket.left()
    }

    pub async fn stop(self) {
        // Drop does the work; async for symmetry with the other sandboxes.
    }
}

impl Handle for DropletsSandbox {
    type Faults = Faults;

    fn gate(&self) -> &Gate<Faults> {
        &self.cloud.gate
    }

    /// The API base, e.g. "http://127.0.0.1:PORT".
    fn api_url(&self) -> String {
        self.api.url()
    }
}

impl Drop for DropletsSandbox {
    fn drop(&mut self) {
        self.api.stop();
    }
}
