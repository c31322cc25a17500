//! Injected API faults: which of the next requests fail, and how. Bursts count down
//! one per API request, so a test can say "the next two calls get a 503".

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// The next N API requests answer 503 `{"error":...}`.
    pub error_burst: u32,
    /// The next N answer 429 `{"error":"rate limited"}`.
    pub rate_limit_burst: u32,
    /// Sent as `Retry-After` with those 429s when set.
    pub retry_after_secs: Option<u64>,
    /// The next N API connections are closed without an answer.
    pub reset_burst: u32,
    /// Every API answer is delayed this long.
    pub slow_ms: u64,
    /// The next N GET answers are 200 with broken JSON.
    pub malformed_burst: u32,
    /// Machines started, updated or created from now on stay "starting" forever.
    pub never_start: bool,
}

/// What the next API request gets instead of (or on top of) its real answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Reset,
    Unavailable,
    RateLimited { retry_after_secs: Option<u64> },
    Malformed,
}

impl Faults {
    /// Consumes one unit of the first burst that applies to a request.
    pub fn next(&mut self, is_get: bool) -> Verdict {
        if take(&mut self.reset_burst) {
            Verdict::Reset
        } else if take(&mut self.error_burst) {
            Verdict::Unavailable
        } else if take(&mut self.rate_limit_burst) {
            Verdict::RateLimited { retry_after_secs: self.retry_after_secs }
        } else if is_get && take(&mut self.malformed_burst) {
            Verdict::Malformed
        } else {
            Verdict::Pass
        }
    }

    /// Consumes one reset if any is pending: for a connection screened before reading.
    pub fn take_reset(&mut self) -> bool {
        take(&mut self.reset_burst)
    }
}

fn take(burst: &mut u32) -> bool {
    let pending = *burst > 0;
    *burst = burst.saturating_sub(1);
    pending
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_count_down_in_order() {
        let mut faults =
            Faults { error_burst: 1, rate_limit_burst: 1, retry_after_secs: Some(2), ..Default::default() };
        assert_eq!(faults.next(true), Verdict::Unavailable);
        assert_eq!(faults.next(true), Verdict::RateLimited { retry_after_secs: Some(2) });
        assert_eq!(faults.next(true), Verdict::Pass);
    }

    #[test]
    fn malformed_answers_only_hit_gets() {
        let mut faults = Faults { malformed_burst: 1, ..Default::default() };
        assert_eq!(faults.next(false), Verdict::Pass);
        assert_eq!(faults.next(true), Verdict::Malformed);
        assert_eq!(faults.next(true), Verdict::Pass);
    }
}
