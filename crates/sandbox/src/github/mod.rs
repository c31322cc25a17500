//! A GitHub REST emulator for deployments and deployment statuses, with real state,
//! on loopback. Tests point the action's GitHub client at `api_url()` (what
//! `GITHUB_API_URL` holds in a workflow), then read what it recorded: the
//! deployments with their statuses, and every call.
//!
//! Layout: `api` the HTTP side (auth, faults, headers, routes, pagination), `input`
//! request bodies and their validation, `state` the deployments and GitHub's rules
//! for them, `render` the JSON GitHub answers with, `faults` injected failures.
//! `/__sandbox/*` endpoints (no auth, no faults, not logged) let a process outside
//! the test, such as `.ci/conformance-github`, read the state and set faults.

mod api;
mod faults;
mod input;
mod render;
mod state;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use serde::Serialize;
use serde_json::Value;

pub use faults::GitHubFaults;
pub use input::{MAX_STATUS_DESCRIPTION, STATES};

use crate::server::Server;
use state::State;
pub use state::{Deployment, Status};

#[derive(Debug, Clone)]
pub struct GitHubOptions {
    /// The repository's owner and name, as in `/repos/{owner}/{repo}`; GitHub
    /// compares them case-insensitively.
    pub owner: String,
    pub repo: String,
    /// When set, requests must carry exactly this token; otherwise any token is
    /// accepted, but one must be sent.
    pub token: Option<String>,
    /// 0 means any free port.
    pub port: u16,
}

impl Default for GitHubOptions {
    fn default() -> Self {
        GitHubOptions { owner: "acme".into(), repo: "shop".into(), token: None, port: 0 }
    }
}

/// A deployment as a test sees it: the emulator's own record, optional fields as the
/// client sent them.
pub type DeploymentView = Deployment;
/// A status as the client sent it; `None` for fields it left out. Statuses that
/// `auto_inactive` added have every optional field `None`.
pub type StatusView = Status;

/// One API request, as the emulator answered it.
#[derive(Debug, Clone, Serialize)]
pub struct GitHubCall {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub status: u16,
    /// The request body, when it was JSON.
    pub body: Option<Value>,
}

impl GitHubCall {
    /// Anything but a GET.
    pub fn is_write(&self) -> bool {
        self.method != "GET"
    }

    /// One line for assertion messages, e.g. "POST /repos/acme/shop/deployments 201".
    pub fn summary(&self) -> String {
        format!("{} {} {}", self.method, self.path, self.status)
    }
}

/// What the server's handler shares with the sandbox handle.
pub(crate) struct Shared {
    owner: String,
    repo: String,
    token: Option<String>,
    /// The server's base URL, known once it has bound its port.
    base: OnceLock<String>,
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not take the emulator down with it.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn base(&self) -> &str {
        self.base.get().map(String::as_str).unwrap_or("http://127.0.0.1")
    }

    fn views(&self) -> Vec<DeploymentView> {
        self.lock().deployments.iter().rev().cloned().collect()
    }
}

pub struct GitHubSandbox {
    shared: Arc<Shared>,
    /// Taken by `stop`; Drop stops whatever is left.
    server: Option<Server>,
    url: String,
}

impl GitHubSandbox {
    pub async fn start(opts: GitHubOptions) -> std::io::Result<GitHubSandbox> {
        let shared = Arc::new(Shared {
            owner: opts.owner,
            repo: opts.repo,
            token: opts.token,
            base: OnceLock::new(),
            state: Mutex::new(State::default()),
        });
        let server = api::serve(shared.clone(), SocketAddr::from(([127, 0, 0, 1], opts.port))).await?;
        let url = server.url();
        let _ = shared.base.set(url.clone());
        Ok(GitHubSandbox { shared, server: Some(server), url })
    }

    /// "http://127.0.0.1:PORT", what `GITHUB_API_URL` holds (no trailing slash).
    pub fn api_url(&self) -> String {
        self.url.clone()
    }

    /// Every deployment not deleted, newest first.
    pub fn deployments(&self) -> Vec<DeploymentView> {
        self.shared.views()
    }

    pub fn set_faults(&self, faults: GitHubFaults) {
        self.shared.lock().faults = faults;
    }

    pub fn faults(&self) -> GitHubFaults {
        self.shared.lock().faults.clone()
    }

    /// Every API request so far, in the order they were answered.
    pub fn calls(&self) -> Vec<GitHubCall> {
        self.shared.lock().calls.clone()
    }

    /// The non-GET requests among `calls()`.
    pub fn writes(&self) -> Vec<GitHubCall> {
        self.calls().into_iter().filter(GitHubCall::is_write).collect()
    }

    pub fn reset_calls(&self) {
        self.shared.lock().calls.clear();
    }

    /// Stops the server and waits until the requests in flight are answered.
    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }
}

impl Drop for GitHubSandbox {
    /// A sandbox dropped without `stop` (a failed test) still frees its port.
    fn drop(&mut self) {
        if let Some(server) = &self.server {
            server.stop();
        }
    }
}
