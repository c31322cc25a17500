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
    /// Answers with status 200 from a release known to be broken: a user got a page,
    /// but the wrong one.
    wrong: Arc<AtomicU64>,
    /// How many times each answer's first line came back: who served the traffic.
    bodies: Arc<std::sync::Mutex<std::collections::BTreeMap<String, u64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Traffic {
    pub fn start(url: String) -> Traffic {
        Traffic::judging(url, &[])
    }

    /// Traffic that also counts the answers of the releases named `broken` (the test app
    /// answers `/` with "hello from VERSION") as wrong, though their status is 200.
    pub fn judging(url: String, broken: &[&str]) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let (total, failed, wrong) =
            (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let bodies: Arc<std::sync::Mutex<std::collections::BTreeMap<String, u64>>> = Default::default();
        let wrong_bodies: Vec<String> = broken.iter().map(|v| format!("hello from {v}")).collect();
        let (stopped, t, f, w, b) = (stop.clone(), total.clone(), failed.clone(), wrong.clone(), bodies.clone());
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
                    w.fetch_add(u64::from(ok && wrong_bodies.contains(&first)), Ordering::SeqCst);
                    *b.lock().unwrap_or_else(|p| p.into_inner()).entry(first).or_default() += 1;
                }
            }
        });
        Traffic { stop, total, failed, wrong, bodies, task }
    }

    /// Answers from a broken release (status 200, the wrong page) so far.
    pub fn wrong(&self) -> u64 {
        self.wrong.load(Ordering::SeqCst)
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

/// What a steady client saw: requests, those with no answer or an error status, and those
/// a broken release answered (status 200, but the wrong page). Both count as failed: a
/// user who got the wrong page was failed as surely as one who got a 502.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub total: u64,
    pub errors: u64,
    pub wrong: u64,
}

impl Seen {
    /// So far, the traffic still running.
    pub fn of(traffic: &Traffic) -> Seen {
        let (total, errors) = traffic.counts();
        Seen { total, errors, wrong: traffic.wrong() }
    }

    /// Stops the traffic: what it saw in all.
    pub async fn stop(traffic: Traffic) -> Seen {
        let counted = traffic.wrong.clone();
        let (total, errors) = traffic.stop().await;
        Seen { total, errors, wrong: counted.load(Ordering::SeqCst) }
    }

    pub fn failed(&self) -> u64 {
        self.errors + self.wrong
    }
}

impl std::fmt::Display for Seen {
    /// "12 failed / 400 requests (12 of them a broken release's page, status 200)".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} failed / {} requests", self.failed(), self.total)?;
        match self.wrong {
            0 => Ok(()),
            n => write!(f, " ({n} of them a broken release's page, status 200)"),
        }
    }
}
