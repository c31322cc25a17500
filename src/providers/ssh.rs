//! Provider `ssh`: containers on a list of hosts behind any balancer (HAProxy, nginx),
//! whose health check the inputs describe. The roll-out is the hosts module's.

use crate::inputs::{self, Group, InputSpec};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::hosts::{settings, Check, Host, HostsProvider, Inventory, Layout, Options};
use super::registration::{no_defaults, Account, ProviderSettings, Registration};
use super::{Context, ProviderError};
use crate::http::HttpClient;
use crate::inputs::Problems;
use crate::inputs::RawInputs;

/// The ssh provider's own inputs: in `action.yml`, the CLI's flags and docs/inputs.md through `inputs::INPUTS`.
pub const INPUTS: &[InputSpec] = &[
    input("hosts", "", "ssh: the hosts behind the balancer, in roll-out order, separated by commas or newlines: the addresses the balancer sends traffic to, and safe-deploy connects to over SSH."),
    input("app-port", "", "ssh: the port the app listens on at each host: where the balancer sends traffic and checks health."),
    input("lb-check-path", "/health", "ssh: the path the balancer's HTTP health check asks (HAProxy: option httpchk; nginx: health_check uri). Statuses 200 to 399 pass."),
    input("lb-interval", "10s", "ssh: time between two of the balancer's health checks (HAProxy: inter).").duration(),
    input("lb-timeout", "5s", "ssh: the balancer's health check timeout (HAProxy: timeout check).").duration(),
    input("lb-healthy-threshold", "3", "ssh: passing checks before the balancer sends a host traffic (HAProxy: rise)."),
    input("lb-unhealthy-threshold", "5", "ssh: failing checks before the balancer stops sending a host traffic (HAProxy: fall)."),
];

const fn input(name: &'static str, default: &'static str, description: &'static str) -> InputSpec {
    inputs::of(&["ssh"], Group::Provider("Hosts over SSH"), name, default, description)
}

pub const REGISTRATION: Registration = Registration {
    name: "ssh",
    title: "Hosts over SSH",
    token_env: &[],
    needs_token: false,
    env: &[],
    file_api: false,
    image_optional: false,
    defaults: no_defaults,
    configure,
    inputs: &[INPUTS, super::hosts::settings::INPUTS, super::batches::INPUTS],
    #[cfg(feature = "sandbox")]
    demo: Some(crate::demo::hosts::ssh_demo),
    #[cfg(feature = "sandbox")]
    sandbox: Some(crate::demo::hosts::ssh_sandbox),
};

/// Hosts and check straight from the inputs: nothing to ask.
#[derive(Debug, Clone)]
struct Listed {
    layout: Layout,
}

#[async_trait]
impl Inventory for Listed {
    fn provider(&self) -> &'static str {
        "ssh"
    }

    async fn layout(&self, _ctx: &Context) -> Result<Layout, ProviderError> {
        Ok(self.layout.clone())
    }
}

#[derive(Debug, Clone)]
struct Settings {
    layout: Layout,
    options: Options,
}

impl ProviderSettings for Settings {
    fn build(&self, _: &Account, http: &HttpClient) -> anyhow::Result<Box<dyn super::Provider>> {
        let inventory = Box::new(Listed { layout: self.layout.clone() });
        Ok(Box::new(HostsProvider::new(inventory, self.options.clone(), http.clone())))
    }
}

/// A host address: a DNS name or an IP address (no port: ssh-port gives it), nothing
/// a shell or URL would read otherwise.
fn address(text: &str) -> bool {
    text.parse::<std::net::IpAddr>().is_ok()
        || (!text.is_empty()
            && text.len() <= 253
            && text.chars().all(|c| c.is_ascii_alphanumeric() || ".-".contains(c))
            && !text.starts_with('-'))
}

fn configure(raw: &RawInputs, _workspace: &Path, p: &mut Problems) -> Option<Arc<dyn ProviderSettings>> {
    let before = p.0.len();
    let hosts: Vec<Host> = raw
        .get("hosts")
        .unwrap_or_default()
        .split([',', '\n'])
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| Host { name: h.to_string(), ssh: h.to_string(), reach: h.to_string(), droplet: None })
        .collect();
    if hosts.is_empty() {
        p.add(
            "hosts",
            "is required with provider ssh",
            "List the hosts behind the balancer, e.g. hosts: 10.0.0.11,10.0.0.12.",
        );
    }
    if let Some(bad) = hosts.iter().find(|h| !address(&h.ssh)) {
        p.add(
            "hosts",
            format!("'{}' is not a host name or address", bad.ssh),
            "Give names or IP addresses, separated by commas or newlines.",
        );
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(twice) = hosts.iter().find(|h| !seen.insert(&h.ssh)) {
        p.add("hosts", format!("lists {} twice", twice.ssh), "List each host once.");
    }
    let app_port = settings::port(p, raw, "app-port", "Give the port the app listens on at each host, e.g. 8080.");
    if raw.get("app-port").is_none() {
        p.add(
            "app-port",
            "is required with provider ssh",
            "Give the port the balancer sends traffic to on each host, e.g. 8080.",
        );
    }
    let path = raw.get("lb-check-path").unwrap_or("/health").to_string();
    // A line break or a control character would be dropped from the path, not refused.
    if !path.starts_with('/') || path.chars().any(|c| c.is_control() || c.is_whitespace()) {
        p.add(
            "lb-check-path",
            format!("'{path}' is not a path"),
            "Give the path the balancer's health check asks, e.g. /health.",
        );
    }
    let duration =
        |p: &mut Problems, input, default| p.duration(raw, input, false).unwrap_or(Duration::from_secs(default));
    let interval = duration(p, "lb-interval", 10);
    let timeout = duration(p, "lb-timeout", 5);
    let count = |p: &mut Problems, input, default| {
        p.parse(
            raw,
            input,
            |t| {
                t.trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=100).contains(n))
                    .ok_or(format!("'{t}' is not a count from 1 to 100"))
            },
            "Give the balancer's threshold, e.g. 3.",
        )
        .unwrap_or(default)
    };
    let healthy = count(p, "lb-healthy-threshold", 3);
    let unhealthy = count(p, "lb-unhealthy-threshold", 5);
    if interval.is_zero() {
        p.add("lb-interval", "is zero", "Give the balancer's check interval, e.g. 2s.");
    }
    if timeout.is_zero() {
        p.add("lb-timeout", "is zero, so every check would time out", "Give the balancer's check timeout, e.g. 1s.");
    }
    let options = settings::options(raw, raw.get("app"), p);
    if p.0.len() > before {
        return None;
    }
    let check = Check { path: Some(path), tls: false, port: app_port?, interval, timeout, healthy, unhealthy };
    let balancer = "the balancer".to_string();
    let layout = Layout { hosts, check, drain_by_api: false, balancer, app_port: app_port? };
    Some(Arc::new(Settings { layout, options: options? }))
}
