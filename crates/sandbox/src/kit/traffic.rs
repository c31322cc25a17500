//! Steady traffic through an app's URL, counting what failed: what the tests, the
//! benchmark and the fault matrix measure a roll-out by.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// 25 requests a second to one URL (a literal IP), until stopped; bounded to ten
/// minutes so a forgotten one cannot run on.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    total: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    /// How many times each answer's first line came back: who served the traffic.
    bodies: Arc<std::sync::Mutex<std::collections::BTreeMap<String, u64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Traffic {
    pub fn start(url: String) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let (total, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let bodies: Arc<std::sync::Mutex<std::collections::BTreeMap<String, u64>>> = Default::default();
        let (stopped, t, f, b) = (stop.clone(), total.clone(), failed.clone(), bodies.clone());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(40));
            while t.load(Ordering::SeqCst) < 15_000 && !stopped.load(Ordering::SeqCst) {
                tick.tick().await;
                t.fetch_add(1, Ordering::SeqCst);
                let answer = crate::client::call("GET", &url, &[], None).await;
                let ok = matches!(&answer, Ok(r) if r.status == 200);
                f.fetch_add(u64::from(!ok), Ordering::SeqCst);
                if let Ok(r) = answer {
                    let first = r.text().lines().next().unwrap_or_default().to_string();
                    *b.lock().unwrap_or_else(|p| p.into_inner()).entry(first).or_default() += 1;
                }
            }
        });
        Traffic { stop, total, failed, bodies, task }
    }

    /// Each answer's first line, with how many times it came back so far.
    pub fn bodies(&self) -> std::collections::BTreeMap<String, u64> {
        self.bodies.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// (total, failed) so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.total.load(Ordering::SeqCst), self.failed.load(Ordering::SeqCst))
    }

    /// Stops; returns (total, failed).
    pub async fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        let (total, failed) = (self.total.clone(), self.failed.clone());
        let _ = self.task.await;
        (total.load(Ordering::SeqCst), failed.load(Ordering::SeqCst))
    }
}
