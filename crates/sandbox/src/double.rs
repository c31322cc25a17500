//! The provider double: a provider whose "API" is a JSON file (or, in-process, a shared
//! value), so that the action binary, its post step and a test all see and change the
//! same state; and an app server that answers as the release each instance runs,
//! round-robin, or one instance alone when a request names it in `sandbox-instance`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::app::{answer, spec_for, Answers, Releases};
use crate::server::{serve, text, Request, Response, Server};

/// The header that sends a request to one instance, by its index.
pub const INSTANCE_HEADER: &str = "sandbox-instance";

/// Switches that make the double fail at a chosen step.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    pub fail_snapshot: bool,
    /// Preparing (the step before any change) fails.
    pub fail_prepare: bool,
    /// Applying a batch fails before it changes anything.
    pub fail_before_change: bool,
    /// Applying a batch changes its first instance, then reports failure.
    pub fail_roll_out: bool,
    pub fail_wait: bool,
    /// The next N waits fail (a flaky platform), restores are not affected.
    pub wait_errors: u32,
    /// Waiting ends with the platform keeping the old release (a failed release phase).
    pub refuse: bool,
    /// Waiting ends with the platform having rolled back by itself (a circuit breaker).
    pub platform_rollback: bool,
    pub fail_roll_back: bool,
    /// The next N restores fail as a flaky API would (the caller may ask again).
    pub roll_back_errors: u32,
    pub fail_history: bool,
    /// How long applying a batch takes after it changed its instances.
    pub roll_out_delay_ms: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct State {
    /// The release each instance runs.
    pub instances: Vec<String>,
    /// Releases that have been live, oldest first; the live one last.
    pub history: Vec<String>,
    pub releases: Releases,
    pub faults: Faults,
    /// Every operation the double was asked for, in order: what tests assert on.
    pub calls: Vec<String>,
    /// For each release, the instances that ever ran it.
    pub ran: BTreeMap<String, BTreeSet<usize>>,
    /// How many times an instance was put on a release other than the one it ran.
    pub changes: u64,
}

impl State {
    /// One instance on `live`.
    pub fn new(live: &str) -> Self {
        State::with_instances(live, 1)
    }

    /// `count` instances on `live`.
    pub fn with_instances(live: &str, count: usize) -> Self {
        let mut state = State { history: vec![live.into()], ..Default::default() };
        for i in 0..count.max(1) {
            state.set_instance(i, live);
        }
        state
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

    /// The release every instance runs, "mixed: a (2), b (1)", or "" with no instance.
    pub fn live(&self) -> String {
        let mut counts: Vec<(&str, usize)> = Vec::new();
        for r in &self.instances {
            match counts.iter_mut().find(|(name, _)| name == r) {
                Some((_, n)) => *n += 1,
                None => counts.push((r, 1)),
            }
        }
        counts.sort();
        match counts.as_slice() {
            [] => String::new(),
            [(one, _)] => one.to_string(),
            many => format!("mixed: {}", many.iter().map(|(r, n)| format!("{r} ({n})")).collect::<Vec<_>>().join(", ")),
        }
    }

    /// Puts `release` on instance `i` (adding instances up to it).
    pub fn set_instance(&mut self, i: usize, release: &str) {
        if self.instances.len() <= i {
            self.instances.resize(i + 1, release.to_string());
        } else if self.instances[i] != release {
            self.changes += 1;
        }
        self.instances[i] = release.to_string();
        self.ran.entry(release.to_string()).or_default().insert(i);
    }

    /// Makes `release` live on every instance and remembers it.
    pub fn make_live(&mut self, release: &str) {
        for i in 0..self.instances.len().max(1) {
            self.set_instance(i, release);
        }
        self.remember(release);
    }

    /// Adds `release` to the history unless it is already the newest entry.
    pub fn remember(&mut self, release: &str) {
        if self.history.last().map(String::as_str) != Some(release) {
            self.history.push(release.to_string());
        }
    }

    /// How many instances ever ran `release`.
    pub fn instances_that_ran(&self, release: &str) -> usize {
        self.ran.get(release).map_or(0, BTreeSet::len)
    }

    /// The calls that would change something: what a plan must never make.
    pub fn writes(&self) -> Vec<&String> {
        self.calls.iter().filter(|c| c.starts_with("roll_out") || c.starts_with("roll_back")).collect()
    }
}

/// Where the double's state lives: a file (shared with other processes) or memory.
#[derive(Debug, Clone)]
pub enum Store {
    File(PathBuf),
    Memory(Arc<std::sync::Mutex<State>>),
}

impl Store {
    pub fn memory(state: State) -> Store {
        Store::Memory(Arc::new(std::sync::Mutex::new(state)))
    }

    pub fn read(&self) -> std::io::Result<State> {
        match self {
            Store::File(path) => State::load(path),
            Store::Memory(m) => Ok(m.lock().unwrap_or_else(|e| e.into_inner()).clone()),
        }
    }

    /// Changes the state in one step.
    pub fn update<T>(&self, change: impl FnOnce(&mut State) -> T) -> std::io::Result<T> {
        match self {
            Store::File(path) => State::update(path, change),
            Store::Memory(m) => Ok(change(&mut m.lock().unwrap_or_else(|e| e.into_inner()))),
        }
    }
}

/// How instance `n` of `state` answers `request` (round-robin when it names none).
pub async fn answer_as_instance(state: &State, request: &Request, next: usize, answers: &Answers) -> Response {
    if state.instances.is_empty() {
        return text(503, "no instances");
    }
    let chosen = match request.header(INSTANCE_HEADER) {
        Some(n) => match n.trim().parse::<usize>() {
            Ok(i) if i < state.instances.len() => i,
            _ => return text(503, format!("no instance {n}")),
        },
        None => next % state.instances.len(),
    };
    let spec = spec_for(&state.releases, &state.instances[chosen]);
    match answers.slow_or_failing(&spec, request).await {
        Some(error) => error,
        None => answer(&spec, request).await,
    }
}

/// Serves the app as the instances in `store` answer, re-reading it on every request so
/// a deploy takes effect at once.
pub async fn serve_store(addr: SocketAddr, store: Store) -> std::io::Result<Server> {
    let counter = Arc::new(AtomicUsize::new(0));
    let metrics = Arc::new(crate::app::Metrics::default());
    let answers = Arc::new(Answers::default());
    serve(addr, move |request| {
        let (store, metrics, answers) = (store.clone(), metrics.clone(), answers.clone());
        let next = counter.fetch_add(1, Ordering::Relaxed);
        async move {
            let served = async {
                match store.read() {
                    Ok(state) => answer_as_instance(&state, &request, next, &answers).await,
                    Err(e) => text(503, format!("no app state: {e}")),
                }
            };
            metrics.around(&request, served).await
        }
    })
    .await
}

/// Serves the app from the state file at `state_path`.
pub async fn serve_app(addr: SocketAddr, state_path: PathBuf) -> std::io::Result<Server> {
    serve_store(addr, Store::File(state_path)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_is_the_one_release_or_says_it_is_mixed() {
        let mut s = State::with_instances("v1", 3);
        assert_eq!(s.live(), "v1");
        s.set_instance(0, "v2");
        assert_eq!(s.live(), "mixed: v1 (2), v2 (1)");
        s.make_live("v2");
        assert_eq!((s.live().as_str(), s.instances_that_ran("v2")), ("v2", 3));
        assert_eq!(s.history, vec!["v1", "v2"]);
    }
}
