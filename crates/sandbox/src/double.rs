//! The provider double: a provider whose "API" is a JSON file, so that the action
//! binary, its post step and a test can all see and change the same state, and an
//! app server that answers as whichever release that file says is live.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::app::{answer, spec_for, Releases};
use crate::server::{serve, Server};

/// Switches that make the double fail at a chosen step.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    pub fail_snapshot: bool,
    /// The roll-out makes the new release live, then reports failure.
    pub fail_roll_out: bool,
    pub fail_wait: bool,
    pub fail_roll_back: bool,
    pub fail_history: bool,
    /// How long the roll-out takes after the new release is live.
    pub roll_out_delay_ms: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct State {
    /// The release live now.
    pub live: String,
    /// Releases that have been live, oldest first; the live one last.
    pub history: Vec<String>,
    pub releases: Releases,
    pub faults: Faults,
    /// Every operation the double was asked for, in order: what tests assert on.
    pub calls: Vec<String>,
}

impl State {
    pub fn new(live: &str) -> Self {
        State { live: live.into(), history: vec![live.into()], ..Default::default() }
    }

    pub fn load(path: &Path) -> std::io::Result<State> {
        let bytes = std::fs::read(path)?;
        serde_json::from_slice(&bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }

    /// Writes atomically, so a reader never sees half a file.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)?;
        std::fs::rename(&tmp, path)
    }

    /// Loads, changes and saves the state in one step.
    pub fn update<T>(path: &Path, change: impl FnOnce(&mut State) -> T) -> std::io::Result<T> {
        let mut state = State::load(path)?;
        let out = change(&mut state);
        state.save(path)?;
        Ok(out)
    }

    /// Makes `release` live and remembers it.
    pub fn make_live(&mut self, release: &str) {
        self.live = release.to_string();
        if self.history.last().map(String::as_str) != Some(release) {
            self.history.push(release.to_string());
        }
    }

    /// The calls that would change something: what a plan must never make.
    pub fn writes(&self) -> Vec<&String> {
        self.calls.iter().filter(|c| c.starts_with("roll_out") || c.starts_with("roll_back")).collect()
    }
}

/// Serves the app as the live release in `state_path` answers, re-reading it on
/// every request so a deploy takes effect at once.
pub async fn serve_app(addr: SocketAddr, state_path: PathBuf) -> std::io::Result<Server> {
    serve(addr, move |request| {
        let path = state_path.clone();
        async move {
            match State::load(&path) {
                Ok(state) => answer(&spec_for(&state.releases, &state.live), &request).await,
                Err(e) => crate::server::text(503, format!("no app state: {e}")),
            }
        }
    })
    .await
}
