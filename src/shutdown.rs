//! Cancellation, mini-redis style: one small handle that every wait `select!`s on.
//!
//! The binary is PID 1 in the action's container, and PID 1 ignores any signal it has
//! no handler for, so `main` installs handlers for SIGINT, SIGTERM and SIGHUP and
//! triggers this.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;

/// A cloneable handle: `trigger` once, and every `recv` returns.
#[derive(Clone)]
pub struct Shutdown {
    tx: std::sync::Arc<watch::Sender<Option<&'static str>>>,
    rx: watch::Receiver<Option<&'static str>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        let (tx, rx) = watch::channel(None);
        Shutdown { tx: std::sync::Arc::new(tx), rx }
    }

    /// Asks everything to stop; `why` names the cause (e.g. "SIGINT").
    pub fn trigger(&self, why: &'static str) {
        self.tx.send_if_modified(|v| {
            if v.is_none() {
                *v = Some(why);
                true
            } else {
                false
            }
        });
    }

    pub fn is_shutdown(&self) -> bool {
        self.rx.borrow().is_some()
    }

    /// What triggered the shutdown, if anything did.
    pub fn cause(&self) -> Option<&'static str> {
        *self.rx.borrow()
    }

    /// Resolves once shutdown has been triggered.
    pub async fn recv(&self) {
        let mut rx = self.rx.clone();
        // The sender lives as long as any handle, so this only ends by a trigger.
        let _ = rx.wait_for(|v| v.is_some()).await;
    }

    /// Sleeps, or returns early (false) when shutdown comes first.
    pub async fn sleep(&self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = self.recv() => false,
        }
    }

    /// Runs `fut`; after a shutdown it still gets `grace` to finish (a call in flight
    /// is let finish), then it is dropped and `None` returned.
    pub async fn guard<T>(&self, grace: Duration, fut: impl Future<Output = T>) -> Option<T> {
        tokio::pin!(fut);
        tokio::select! {
            v = &mut fut => return Some(v),
            _ = self.recv() => {}
        }
        tokio::time::timeout(grace, fut).await.ok()
    }
}

/// What a deploy says when a signal stops it: it starts nothing new, and what was changed
/// is put back next.
pub const RUN_STOPS: &str = "stopping; no further change is started";

/// Installs the signal handlers and triggers `shutdown` on the first signal, saying which
/// signal came and `then`, what happens next.
pub fn listen_for_signals(shutdown: Shutdown, then: &'static str) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        let (why, said) = tokio::select! {
            _ = int.recv() => ("SIGINT", "Ctrl-C (SIGINT)"),
            _ = term.recv() => ("SIGTERM", "SIGTERM"),
            _ = hup.recv() => ("SIGHUP", "SIGHUP (the terminal closed)"),
        };
        tracing::warn!("{said}: {then}");
        shutdown.trigger(why);
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_trigger_wakes_every_waiter_and_records_its_cause() {
        let s = Shutdown::new();
        let waiter = {
            let s = s.clone();
            tokio::spawn(async move { s.sleep(Duration::from_secs(30)).await })
        };
        s.trigger("SIGINT");
        s.trigger("SIGTERM");
        assert!(!waiter.await.unwrap(), "sleep ends early on shutdown");
        assert_eq!(s.cause(), Some("SIGINT"));
    }

    #[tokio::test]
    async fn guard_lets_a_call_in_flight_finish_within_the_grace() {
        let s = Shutdown::new();
        s.trigger("SIGINT");
        let quick = s.guard(Duration::from_millis(500), async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            7
        });
        assert_eq!(quick.await, Some(7));
        let slow = s.guard(Duration::from_millis(20), tokio::time::sleep(Duration::from_secs(30)));
        assert_eq!(slow.await, None);
    }
}
