//! Provider `digitalocean-droplets`: containers on droplets behind a DigitalOcean load
//! balancer. The API gives the droplets (by tag, by id, or those the balancer lists)
//! and the balancer's health check, so every wait comes from its real settings; a
//! balancer that lists droplet ids takes a host out through the API, one that targets
//! a tag through the app's drain switch. The roll-out is the hosts module's.

use crate::inputs::{self, Group, InputSpec};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use super::digitalocean::client::{DEFAULT_API, DIGITALOCEAN};
use super::hosts::{settings, Check, Host, HostsProvider, Inventory, Layout, Options};
use super::registration::{no_defaults, Account, EnvInput, ProviderSettings, Registration};
use super::rest::RestClient;
use super::{Context, ProviderError};
use crate::http::HttpClient;
use crate::inputs::Problems;
use crate::inputs::RawInputs;

/// The droplets' own inputs: in `action.yml`, the CLI's flags and docs/inputs.md through `inputs::INPUTS`.
pub const INPUTS: &[InputSpec] = &[
    input("load-balancer", "", "DigitalOcean Droplets: the load balancer's id. Its health check (path, port, interval, timeout, thresholds) sets every wait; the hosts are the droplets it lists, or those droplet-tag or droplets name."),
    input("droplet-tag", "", "DigitalOcean Droplets: deploy to the droplets with this tag. Empty: the load balancer's tag, or the droplets it lists."),
    input("droplets", "", "DigitalOcean Droplets: deploy to these droplet ids, separated by commas, instead of by tag."),
    input("ssh-network", "public", "DigitalOcean Droplets: which of a droplet's IPv4 addresses safe-deploy connects to over SSH: public, or private (a runner inside the VPC)."),
];

const fn input(name: &'static str, default: &'static str, description: &'static str) -> InputSpec {
    inputs::of(&["digitalocean-droplets"], Group::Provider("DigitalOcean Droplets"), name, default, description)
}

pub const REGISTRATION: Registration = Registration {
    name: "digitalocean-droplets",
    title: "DigitalOcean Droplets",
    token_env: &["DIGITALOCEAN_ACCESS_TOKEN"],
    needs_token: true,
    env: &[
        EnvInput { input: "api-url", vars: &["DIGITALOCEAN_API_URL"], set: "api-url", on_runner: false },
        EnvInput {
            input: "load-balancer",
            vars: &["DIGITALOCEAN_LOAD_BALANCER"],
            set: "load-balancer",
            on_runner: false,
        },
    ],
    file_api: false,
    image_optional: false,
    defaults: no_defaults,
    configure,
    inputs: &[INPUTS, super::hosts::settings::INPUTS, super::batches::INPUTS],
    #[cfg(feature = "sandbox")]
    demo: Some(crate::demo::hosts::droplets_demo),
    #[cfg(feature = "sandbox")]
    sandbox: Some(crate::demo::hosts::droplets_sandbox),
};

/// Which droplets to deploy to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Selection {
    Tag(String),
    Ids(Vec<u64>),
    /// Those the balancer lists, or its tag.
    Balancer,
}

#[derive(Debug, Clone)]
struct Settings {
    balancer: String,
    selection: Selection,
    private_ssh: bool,
    options: Options,
}

impl ProviderSettings for Settings {
    fn build(&self, account: &Account, http: &HttpClient) -> anyhow::Result<Box<dyn super::Provider>> {
        let rest = RestClient::new(http.clone(), account.api_base(DEFAULT_API)?, account.token, &DIGITALOCEAN)?;
        let inventory = Box::new(Droplets { rest, settings: self.clone() });
        Ok(Box::new(HostsProvider::new(inventory, self.options.clone(), http.clone())))
    }
}

struct Droplets {
    rest: RestClient,
    settings: Settings,
}

impl std::fmt::Debug for Droplets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Droplets").field("balancer", &self.settings.balancer).finish_non_exhaustive()
    }
}

#[derive(Debug, Deserialize)]
struct Balancer {
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    droplet_ids: Vec<u64>,
    #[serde(default)]
    tag: String,
    #[serde(default)]
    forwarding_rules: Vec<Rule>,
    health_check: HealthCheck,
}

/// Numbers are read as the description types them (`integer`, which may be negative)
/// and checked where they are used: an odd value in a rule or field safe-deploy does
/// not use must not make the whole balancer unreadable.
#[derive(Debug, Deserialize)]
struct Rule {
    #[serde(default)]
    target_port: i64,
}

/// The balancer's check. Seconds are read as numbers, whole or not.
#[derive(Debug, Deserialize)]
struct HealthCheck {
    #[serde(default)]
    protocol: String,
    #[serde(default)]
    port: i64,
    #[serde(default)]
    path: String,
    #[serde(default = "ten")]
    check_interval_seconds: f64,
    #[serde(default = "five")]
    response_timeout_seconds: f64,
    #[serde(default = "three")]
    healthy_threshold: i64,
    #[serde(default = "five_u")]
    unhealthy_threshold: i64,
}

fn ten() -> f64 {
    10.0
}
fn five() -> f64 {
    5.0
}
fn three() -> i64 {
    3
}
fn five_u() -> i64 {
    5
}

impl Balancer {
    /// A balancer in status `errored` applies no change: waiting on it is in vain.
    fn not_errored(&self) -> Result<(), ProviderError> {
        match self.status.as_str() {
            "errored" => Err(ProviderError::Failed(format!(
                "load balancer {} ({}) is in status errored: DigitalOcean could not apply its configuration, so it takes no droplet in or out; fix it in the control panel (or doctl compute load-balancer get {}), then re-run",
                self.name, self.id, self.id
            ))),
            _ => Ok(()),
        }
    }
}

#[derive(Debug, Deserialize)]
struct Droplet {
    id: u64,
    #[serde(default)]
    name: String,
    #[serde(default)]
    networks: Networks,
    #[serde(default)]
    tags: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Networks {
    #[serde(default)]
    v4: Vec<Address>,
}

#[derive(Debug, Deserialize)]
struct Address {
    ip_address: String,
    #[serde(rename = "type", default)]
    kind: String,
}

impl Droplet {
    fn address(&self, kind: &str) -> Option<String> {
        self.networks.v4.iter().find(|a| a.kind == kind).map(|a| a.ip_address.clone())
    }

    fn host(&self, private_ssh: bool) -> Result<Host, ProviderError> {
        let (public, private) = (self.address("public"), self.address("private"));
        let ssh = if private_ssh { private.clone() } else { public.clone() };
        let ssh = ssh.ok_or_else(|| {
            ProviderError::Failed(format!(
                "droplet {} ({}) has no {} IPv4 address to connect to; set ssh-network to {}",
                self.name,
                self.id,
                if private_ssh { "private" } else { "public" },
                if private_ssh { "public" } else { "private" }
            ))
        })?;
        // The balancer reaches droplets on their VPC address where they have one.
        let reach = private.or(public).unwrap_or_else(|| ssh.clone());
        Ok(Host { name: self.name.clone(), ssh, reach, droplet: Some(self.id) })
    }
}

impl Droplets {
    async fn balancer(&self, ctx: &Context) -> Result<Balancer, ProviderError> {
        #[derive(Deserialize)]
        struct Envelope {
            load_balancer: Balancer,
        }
        let call = self.rest.call(Method::GET, &format!("/v2/load_balancers/{}", self.settings.balancer));
        let e: Envelope = self.rest.json(call, "read the load balancer", &ctx.shutdown).await.map_err(|e| match e {
            ProviderError::NotFound { .. } => ProviderError::Failed(format!(
                "load balancer {} was not found at DigitalOcean; check load-balancer (doctl compute load-balancer list shows the ids) and that the token can read it",
                self.settings.balancer
            )),
            other => other,
        })?;
        Ok(e.load_balancer)
    }

    async fn droplet(&self, id: u64, ctx: &Context) -> Result<Droplet, ProviderError> {
        #[derive(Deserialize)]
        struct Envelope {
            droplet: Droplet,
        }
        let call = self.rest.call(Method::GET, &format!("/v2/droplets/{id}"));
        let e: Envelope =
            self.rest.json(call, &format!("read droplet {id}"), &ctx.shutdown).await.map_err(|e| match e {
                ProviderError::NotFound { .. } => ProviderError::Failed(format!(
                "droplet {id} was not found at DigitalOcean; check droplets (doctl compute droplet list shows the ids)"
            )),
                other => other,
            })?;
        Ok(e.droplet)
    }

    async fn tagged(&self, tag: &str, ctx: &Context) -> Result<Vec<Droplet>, ProviderError> {
        #[derive(Deserialize)]
        struct Page {
            droplets: Vec<Droplet>,
            #[serde(default)]
            links: serde_json::Value,
        }
        let mut all = Vec::new();
        for page in 1..=20 {
            let path = format!("/v2/droplets?tag_name={}&per_page=200&page={page}", urlencode(tag));
            let p: Page =
                self.rest.json(self.rest.call(Method::GET, &path), "list droplets by tag", &ctx.shutdown).await?;
            all.extend(p.droplets);
            if p.links["pages"]["next"].as_str().unwrap_or_default().is_empty() {
                break;
            }
        }
        Ok(all)
    }

    /// Adds (POST) or removes (DELETE) a droplet, then waits until the balancer shows
    /// the change and is active again: DigitalOcean applies it in the background, and
    /// refuses another change to a balancer still busy with one (a 403 that says so,
    /// which is asked again, not a missing permission).
    async fn membership(&self, host: &Host, method: Method, what: &str, ctx: &Context) -> Result<(), ProviderError> {
        let Some(id) = host.droplet else { return Ok(()) };
        let listed = method == Method::POST;
        let call = self
            .rest
            .call(method, &format!("/v2/load_balancers/{}/droplets", self.settings.balancer))
            .json(json!({ "droplet_ids": [id] }))
            .idempotent(true);
        let reply = self.rest.send(call, &ctx.shutdown).await?;
        if reply.status == 403 && reply.text().contains("previous actions") {
            return Err(ProviderError::Unavailable(format!(
                "load balancer {} is still applying an earlier change",
                self.settings.balancer
            )));
        }
        if !reply.is_success() {
            return Err(self.rest.error(reply.status, &reply.body, what));
        }
        // A balancer applies a change within seconds; two minutes is one that is stuck,
        // which more deploy-timeout would not help.
        let stuck = Duration::from_secs(120);
        let mut poll =
            ctx.poll(format!("load balancer {} to apply: {what}", self.settings.balancer), Duration::from_millis(500));
        loop {
            let lb = self.balancer(ctx).await?;
            lb.not_errored()?;
            if lb.droplet_ids.contains(&id) == listed && matches!(lb.status.as_str(), "active" | "") {
                return Ok(());
            }
            if poll.elapsed() >= stuck {
                return Err(ProviderError::Failed(format!(
                    "load balancer {} did not apply {what} within {} (status {:?}); look at it in DigitalOcean's control panel, then re-run",
                    self.settings.balancer,
                    crate::inputs::human(stuck),
                    lb.status
                )));
            }
            poll.next(&lb.status).await?;
        }
    }
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

fn seconds(s: f64) -> Duration {
    Duration::from_secs_f64(s.clamp(0.001, 3600.0))
}

#[async_trait]
impl Inventory for Droplets {
    fn provider(&self) -> &'static str {
        "digitalocean-droplets"
    }

    async fn layout(&self, ctx: &Context) -> Result<Layout, ProviderError> {
        let lb = self.balancer(ctx).await?;
        lb.not_errored()?;
        let hc = &lb.health_check;
        let (path, tls) = match hc.protocol.as_str() {
            "http" | "" => (Some(if hc.path.is_empty() { "/".to_string() } else { hc.path.clone() }), false),
            // An http2 check is made over TLS too; the backend's port speaks TLS either way.
            "https" | "http2" => (Some(if hc.path.is_empty() { "/".to_string() } else { hc.path.clone() }), true),
            "tcp" => (None, false),
            other => {
                return Err(ProviderError::NotSupported {
                    provider: "digitalocean-droplets",
                    operation: format!(
                        "check the app on its droplets as load balancer {} does ({other}): safe-deploy checks droplets over HTTP, HTTPS, HTTP/2 or TCP; give the balancer one of those health checks",
                        lb.name
                    ),
                })
            }
        };
        let port = if hc.port > 0 { hc.port } else { lb.forwarding_rules.first().map_or(80, |r| r.target_port) };
        let port = u16::try_from(port).ok().filter(|p| *p > 0).ok_or_else(|| {
            ProviderError::Failed(format!(
                "load balancer {} checks port {port}, which is not a port; fix its health check or forwarding rule",
                lb.name
            ))
        })?;
        let check = Check {
            path,
            tls,
            port,
            interval: seconds(hc.check_interval_seconds),
            timeout: seconds(hc.response_timeout_seconds),
            healthy: hc.healthy_threshold.clamp(1, 100) as u32,
            unhealthy: hc.unhealthy_threshold.clamp(1, 100) as u32,
        };
        let droplets = match &self.settings.selection {
            Selection::Tag(tag) => self.tagged(tag, ctx).await?,
            Selection::Balancer if !lb.tag.is_empty() => self.tagged(&lb.tag, ctx).await?,
            Selection::Ids(ids) => {
                let mut all = Vec::new();
                for id in ids {
                    all.push(self.droplet(*id, ctx).await?);
                }
                all
            }
            Selection::Balancer => {
                let mut all = Vec::new();
                for id in &lb.droplet_ids {
                    all.push(self.droplet(*id, ctx).await?);
                }
                all
            }
        };
        if droplets.is_empty() {
            let which = match &self.settings.selection {
                Selection::Tag(tag) => format!("no droplet has tag {tag}; check droplet-tag"),
                Selection::Ids(_) => "droplets names no droplet".into(),
                Selection::Balancer if !lb.tag.is_empty() => {
                    format!("no droplet has tag {}, which load balancer {} targets", lb.tag, lb.name)
                }
                Selection::Balancer => format!("load balancer {} lists no droplets", lb.name),
            };
            return Err(ProviderError::Failed(format!("nothing to deploy to: {which}")));
        }
        let mut hosts = droplets.iter().map(|d| d.host(self.settings.private_ssh)).collect::<Result<Vec<_>, _>>()?;
        hosts.sort_by(|a, b| a.name.cmp(&b.name).then(a.droplet.cmp(&b.droplet)));
        // Droplets the balancer does not send traffic to would change with no drain
        // and no balancer to take them back: say so rather than guess.
        if let Some(outside) = droplets.iter().find(|d| !lb.tag.is_empty() && !d.tags.contains(&lb.tag)) {
            return Err(ProviderError::Failed(format!(
                "droplet {} does not have tag {}, which load balancer {} sends traffic to; tag it, or leave it out of droplets and droplet-tag",
                outside.name, lb.tag, lb.name
            )));
        }
        if lb.tag.is_empty() {
            if let Some(outside) = hosts.iter().find(|h| h.droplet.is_some_and(|id| !lb.droplet_ids.contains(&id))) {
                return Err(ProviderError::Failed(format!(
                    "droplet {} is not behind load balancer {}; add it to the balancer, or leave it out of droplets and droplet-tag",
                    outside.name, lb.name
                )));
            }
        }
        Ok(Layout {
            hosts,
            check,
            drain_by_api: lb.tag.is_empty(),
            balancer: format!("load balancer {} ({})", lb.name, lb.id),
            app_port: lb
                .forwarding_rules
                .first()
                .and_then(|r| u16::try_from(r.target_port).ok())
                .filter(|p| *p > 0)
                .unwrap_or(port),
        })
    }

    async fn take_out(&self, host: &Host, ctx: &Context) -> Result<(), ProviderError> {
        self.membership(host, Method::DELETE, "take a droplet out of the load balancer", ctx).await
    }

    async fn put_back(&self, host: &Host, ctx: &Context) -> Result<(), ProviderError> {
        self.membership(host, Method::POST, "put a droplet back in the load balancer", ctx).await
    }

    async fn members(&self, ctx: &Context) -> Result<Vec<u64>, ProviderError> {
        Ok(self.balancer(ctx).await?.droplet_ids)
    }

    fn api_calls(&self) -> Option<usize> {
        Some(self.rest.calls())
    }
}

fn configure(raw: &RawInputs, _workspace: &Path, p: &mut Problems) -> Option<Arc<dyn ProviderSettings>> {
    let before = p.0.len();
    let balancer = raw.get("load-balancer").unwrap_or_default().trim().to_string();
    if balancer.is_empty() {
        p.add(
            "load-balancer",
            "is required with provider digitalocean-droplets",
            "Give the load balancer's id (doctl compute load-balancer list shows it).",
        );
    } else if !balancer.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        p.add(
            "load-balancer",
            format!("'{balancer}' is not a load balancer id"),
            "Give its id, a UUID such as 4de7ac8b-495b-4884-9a69-1050c6793cd6.",
        );
    }
    let tag = raw.get("droplet-tag").map(str::to_string);
    let ids: Option<Vec<u64>> = raw.get("droplets").map(|text| {
        text.split([',', '\n'])
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .filter_map(|t| match t.parse::<u64>() {
                Ok(id) => Some(id),
                Err(_) => {
                    p.add(
                        "droplets",
                        format!("'{t}' is not a droplet id"),
                        "Give droplet ids (numbers), separated by commas.",
                    );
                    None
                }
            })
            .collect()
    });
    let selection = match (tag, ids) {
        (Some(_), Some(_)) => {
            let problem = format!("is set together with {}", p.name("droplet-tag"));
            p.add("droplets", problem, "Choose the droplets by tag or by id, not both.");
            Selection::Balancer
        }
        (Some(tag), None) => {
            if !tag.chars().all(|c| c.is_ascii_alphanumeric() || ":-_".contains(c)) {
                p.add("droplet-tag", format!("'{tag}' is not a tag name"), "Give a tag of letters, digits, : - and _.");
            }
            Selection::Tag(tag)
        }
        (None, Some(ids)) => Selection::Ids(ids),
        (None, None) => Selection::Balancer,
    };
    let private_ssh = match raw.get("ssh-network").unwrap_or("public") {
        "public" => false,
        "private" => true,
        other => {
            p.add(
                "ssh-network",
                format!("'{other}' is neither public nor private"),
                "Use public (the default), or private for a runner inside the droplets' VPC.",
            );
            false
        }
    };
    let options = settings::options(raw, raw.get("app"), p);
    if p.0.len() > before {
        return None;
    }
    Some(Arc::new(Settings { balancer, selection, private_ssh, options: options? }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_negative_number_the_description_allows_in_an_unused_field_leaves_the_balancer_readable() {
        let lb: Balancer = serde_json::from_value(json!({
            "id": "lb-1", "name": "web-lb", "status": "active", "droplet_ids": [11, 12], "size_unit": -1,
            "forwarding_rules": [
                { "entry_port": 80, "target_port": 8080, "entry_protocol": "http", "target_protocol": "http" },
                { "entry_port": -1, "target_port": -1, "entry_protocol": "tcp", "target_protocol": "tcp" }
            ],
            "health_check": { "protocol": "http", "port": 8080, "path": "/health", "check_interval_seconds": 3,
                "response_timeout_seconds": 2, "healthy_threshold": 2, "unhealthy_threshold": -3 }
        }))
        .expect("readable");
        assert_eq!(lb.forwarding_rules[0].target_port, 8080);
        assert_eq!(lb.health_check.healthy_threshold, 2);
    }
}
