//! Sampling an app's own URLs at a steady rate: the live release before the change (the
//! baseline) and the new one after its health gate, the same way, so the two compare.

use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::time::{Instant, MissedTickBehavior};

use crate::health::Probe;
use crate::shutdown::Shutdown;

/// One request's answer, as the analysis counts it.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Since sampling started.
    pub at: Duration,
    pub latency: Duration,
    /// A 5xx, or no answer at all (timeout, refused): what a user sees as an error.
    /// Any other status is the app's own business (a 404 is an answer).
    pub error: bool,
}

/// Where and how fast to sample.
pub struct Sampling<'a> {
    pub urls: &'a [url::Url],
    pub headers: &'a [(String, String)],
    pub timeout: Duration,
    pub window: Duration,
    /// Requests a second, spread evenly, the URLs in turn.
    pub rate: f64,
}

impl Sampling<'_> {
    /// Requests `rate` times a second for `window`, each one on time whatever the ones
    /// before it are doing (a slow release must not slow the sampling down, or it would
    /// be sampled less). Tells `observed` the samples so far about once a second.
    /// `None` when a signal stopped it.
    pub async fn run(
        &self,
        probe: &dyn Probe,
        shutdown: &Shutdown,
        observed: &(dyn Fn(&[Sample]) + Sync),
    ) -> Option<Vec<Sample>> {
        let started = Instant::now();
        let every = Duration::from_secs_f64(1.0 / self.rate);
        let mut tick = tokio::time::interval(every);
        // Behind schedule (a busy machine), requests go out late rather than in a burst.
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut in_flight = FuturesUnordered::new();
        let mut samples = Vec::new();
        let mut sent = 0usize;
        let mut said = Instant::now();
        let ends = started + self.window;
        loop {
            let open = Instant::now() < ends;
            if !open && in_flight.is_empty() {
                break;
            }
            tokio::select! {
                _ = tick.tick(), if open => {
                    if Instant::now() < ends {
                        let url = &self.urls[sent % self.urls.len()];
                        sent += 1;
                        in_flight.push(self.one(probe, url, started));
                    }
                }
                Some(sample) = in_flight.next(), if !in_flight.is_empty() => {
                    samples.push(sample);
                    if said.elapsed() >= Duration::from_secs(1) {
                        said = Instant::now();
                        observed(&samples);
                    }
                }
                // Wakes the loop when the window closes with nothing in flight.
                _ = tokio::time::sleep_until(ends), if open => {}
                _ = shutdown.recv() => return None,
            }
        }
        samples.sort_by_key(|s| s.at);
        observed(&samples);
        Some(samples)
    }

    async fn one(&self, probe: &dyn Probe, url: &url::Url, started: Instant) -> Sample {
        let sent = Instant::now();
        let answer = probe.get(url, self.headers, self.timeout).await;
        let latency = sent.elapsed();
        let error = match answer {
            Ok((status, _)) => status >= 500,
            Err(_) => true,
        };
        Sample { at: sent - started, latency, error }
    }
}
