//! What the benchmark, the fault matrix and the fuzz run share: steady traffic through
//! an app's URL, and the input generators of the property tests.

pub mod strategies;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Steady traffic: 25 requests a second through the router, until stopped; bounded to
/// ten minutes.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(u64, u64)>,
}

impl Traffic {
    pub fn start(url: String) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let (mut total, mut failed) = (0u64, 0u64);
            let mut tick = tokio::time::interval(Duration::from_millis(40));
            while total < 15_000 && !stopped.load(Ordering::SeqCst) {
                tick.tick().await;
                total += 1;
                let ok = matches!(sandbox::client::call("GET", &url, &[], None).await, Ok(r) if r.status == 200);
                failed += u64::from(!ok);
            }
            (total, failed)
        });
        Traffic { stop, task }
    }

    /// Stops; returns (total, failed).
    pub async fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap_or((0, 0))
    }
}
