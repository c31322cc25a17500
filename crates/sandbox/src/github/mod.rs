//! A GitHub REST emulator for deployments and deployment statuses, with real state,
//! on loopback. Tests point the action's GitHub client at `api_url()` (what
//! `GITHUB_API_URL` holds in a workflow), then read what it recorded: the
//! deployments with their statuses, and every call.
//!
//! Layout: `api` GitHub's side of the HTTP API (its checks before auth, headers,
//! routes, pagination), `input` request bodies and their validation, `state` the
//! deployments and GitHub's rules for them, `render` the JSON GitHub answers with,
//! `faults` the fault set. Faults, the token check, the call log and the
//! `/__sandbox/*` endpoints (no auth, no faults, not logged; they let a process
//! outside the test, such as `.ci/conformance-github`, read the state and set faults)
//! are the kit's pipeline (`crate::kit::api`).

mod api;
mod faults;
mod input;
mod render;
mod state;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

pub use faults::GitHubFaults;
pub use input::{MAX_STATUS_DESCRIPTION, STATES};

use crate::kit::{Gate, Handle, TokenRule};
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

/// One API request, as the emulator answered it; `target` is the deployment id in
/// its path, `body` the request's JSON.
pub type GitHubCall = crate::kit::Call;

/// What the server's handler shares with the sandbox handle.
pub(crate) struct Shared {
    owner: String,
    repo: String,
    auth: TokenRule,
    /// The server's base URL, known once it has bound its port.
    base: OnceLock<String>,
    state: Mutex<State>,
    /// Faults and the call log, under a lock of their own.
    gate: Gate<GitHubFaults>,
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
            // GitHub wants a token in the `Bearer` or `token` scheme, even where any would do.
            auth: TokenRule { schemes: &["Bearer", "token"], bare: false, token: opts.token, required: true },
            base: OnceLock::new(),
            state: Mutex::new(State::default()),
            gate: Gate::default(),
        });
        let server = api::serve(shared.clone(), SocketAddr::from(([127, 0, 0, 1], opts.port))).await?;
        let url = server.url();
        let _ = shared.base.set(url.clone());
        Ok(GitHubSandbox { shared, server: Some(server), url })
    }

    /// Every deployment not deleted, newest first.
    pub fn deployments(&self) -> Vec<DeploymentView> {
        self.shared.views()
    }

    /// The non-GET requests among `calls()`.
    pub fn writes(&self) -> Vec<GitHubCall> {
        self.calls().into_iter().filter(GitHubCall::is_write).collect()
    }

    /// Stops the server and waits until the requests in flight are answered.
    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }
}

impl Handle for GitHubSandbox {
    type Faults = GitHubFaults;

    fn gate(&self) -> &Gate<GitHubFaults> {
        &self.shared.gate
    }

    /// "http://127.0.0.1:PORT", what `GITHUB_API_URL` holds (no trailing slash).
    fn api_url(&self) -> String {
        self.url.clone()
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
