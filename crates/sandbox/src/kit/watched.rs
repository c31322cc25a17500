//! An emulator's state behind one lock, with a change counter, so a caller can wait
//! until the state says something (every dyno up, a deployment settled) without polling.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;

pub struct Watched<S> {
    state: Mutex<S>,
    changed: watch::Sender<u64>,
}

impl<S> Watched<S> {
    pub fn new(state: S) -> Watched<S> {
        Watched { state: Mutex::new(state), changed: watch::channel(0).0 }
    }

    /// The state; a panic elsewhere while it was held does not poison it for good.
    pub fn lock(&self) -> MutexGuard<'_, S> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes whoever waits: call after each change.
    pub fn notify(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    /// Waits until `done` holds, looking again at each change; false at `timeout`.
    pub async fn wait_until(&self, timeout: Duration, mut done: impl FnMut(&S) -> bool) -> bool {
        let mut changes = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if done(&self.lock()) {
                return true;
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                _ => return done(&self.lock()),
            }
        }
    }
}
