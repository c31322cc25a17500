//! The one fault set every emulator serves, and what it decides for each API request.
//!
//! Two kinds of fault, because provider trouble comes in two kinds: bursts, which
//! count down one per API request ("the next two calls get a 503", a blip a client
//! should retry through), and standing conditions, which last until a test changes
//! them ("the API answers 502", an outage a client must give up on).
//!
//! This module only decides; `api` turns a verdict into an answer in the emulator's
//! own error shape, and an emulator that starts instances reads `never_start` itself.
//! It knows nothing of HTTP, of any provider, or of where the fault set is kept.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// The next N API requests answer 503 in the emulator's error shape.
    pub error_burst: u32,
    /// The next N answer 429.
    pub rate_limit_burst: u32,
    /// Sent as `Retry-After` with those 429s when set.
    pub retry_after_secs: Option<u64>,
    /// The next N API connections are closed without an answer.
    pub reset_burst: u32,
    /// Every API answer is delayed this long.
    pub slow_ms: u64,
    /// The next N writes (anything but GET) take effect, but their answer comes only
    /// after `late_ms`: past a client's timeout, the client cannot know it worked.
    pub late_writes: u32,
    pub late_ms: u64,
    /// The next N GET answers are 200 with broken JSON.
    pub malformed_burst: u32,
    /// Instances (machines, dynos...) started, updated or created from now on never
    /// come up; for emulators that start instances.
    pub never_start: bool,
    /// Every API request answers this status in the emulator's error shape, once no
    /// burst applies (e.g. 500, 502, 503, or 403 for a missing permission).
    pub status: Option<u16>,
}

/// What the next API request gets instead of its real answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Reset,
    Unavailable,
    RateLimited {
        retry_after_secs: Option<u64>,
    },
    Malformed,
    /// A standing status.
    Status(u16),
}

impl Faults {
    /// The API faults the shared provider suite injects, by name (see `named`).
    pub const SUITE: [&'static str; 6] =
        ["5xx burst", "429 burst", "reset burst", "slow answers", "malformed burst", "standing 503"];

    /// A fault by its name in the suites: a short burst, slow answers, a standing 503,
    /// or a write answered only after the client gave up on it. `None` for a name the
    /// kit does not know.
    pub fn named(name: &str) -> Option<Faults> {
        let none = Faults::default();
        Some(match name {
            "5xx burst" => Faults { error_burst: 3, ..none },
            "429 burst" => Faults { rate_limit_burst: 3, ..none },
            "reset burst" => Faults { reset_burst: 2, ..none },
            "slow answers" => Faults { slow_ms: 150, ..none },
            "malformed burst" => Faults { malformed_burst: 2, ..none },
            "standing 503" => Faults { status: Some(503), ..none },
            "late write" => Faults { late_writes: 1, late_ms: 31_000, ..none },
            _ => return None,
        })
    }

    /// The fault matrix's bursts, `n` requests long each.
    pub fn bursts(n: u32) -> [(&'static str, Faults); 4] {
        let none = Faults::default();
        [
            ("5xx burst", Faults { error_burst: n, ..none.clone() }),
            ("429 burst", Faults { rate_limit_burst: n, ..none.clone() }),
            ("reset burst", Faults { reset_burst: n, ..none.clone() }),
            ("malformed burst", Faults { malformed_burst: n, ..none }),
        ]
    }

    /// Consumes one unit of the first burst that applies to a request. Bursts come
    /// before any standing status so a test can stack a blip on an outage.
    pub fn take_burst(&mut self, is_get: bool) -> Verdict {
        if take(&mut self.reset_burst) {
            Verdict::Reset
        } else if take(&mut self.error_burst) {
            Verdict::Unavailable
        } else if take(&mut self.rate_limit_burst) {
            Verdict::RateLimited { retry_after_secs: self.retry_after_secs }
        } else if is_get && take(&mut self.malformed_burst) {
            // Only a GET: a client cannot tell a write's broken answer from a lost one,
            // so the fault would test nothing but guesswork.
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

/// An emulator's fault set: the kit's `Faults`, alone or inside a type that adds the
/// provider's own faults (GitHub's `GitHubFaults`). It is what `/__sandbox/faults`
/// reads and writes as JSON, so it must serialize flat.
pub trait FaultSet: Clone + Default + Serialize + DeserializeOwned + Send + 'static {
    fn api(&self) -> &Faults;
    fn api_mut(&mut self) -> &mut Faults;

    /// The standing status. The kit's own field by default; a set that keeps it
    /// elsewhere for its users' sake says where.
    fn status(&self) -> Option<u16> {
        self.api().status
    }

    /// The verdict for the next API request, consuming a burst unit if one applies.
    fn verdict(&mut self, is_get: bool) -> Verdict {
        match self.api_mut().take_burst(is_get) {
            Verdict::Pass => self.status().map_or(Verdict::Pass, Verdict::Status),
            burst => burst,
        }
    }
}

impl FaultSet for Faults {
    fn api(&self) -> &Faults {
        self
    }

    fn api_mut(&mut self) -> &mut Faults {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_count_down_in_order() {
        let mut faults = Faults {
            reset_burst: 1,
            error_burst: 1,
            rate_limit_burst: 1,
            retry_after_secs: Some(2),
            ..Default::default()
        };
        assert_eq!(faults.verdict(true), Verdict::Reset);
        assert_eq!(faults.verdict(true), Verdict::Unavailable);
        assert_eq!(faults.verdict(true), Verdict::RateLimited { retry_after_secs: Some(2) });
        assert_eq!(faults.verdict(true), Verdict::Pass);
        assert_eq!(faults, Faults { retry_after_secs: Some(2), ..Default::default() }, "all spent");
    }

    #[test]
    fn a_burst_of_n_fails_exactly_n_requests() {
        let mut faults = Faults { error_burst: 3, ..Default::default() };
        let verdicts: Vec<Verdict> = (0..5).map(|_| faults.verdict(false)).collect();
        assert_eq!(
            verdicts,
            [Verdict::Unavailable, Verdict::Unavailable, Verdict::Unavailable, Verdict::Pass, Verdict::Pass]
        );
    }

    #[test]
    fn malformed_answers_only_hit_gets() {
        let mut faults = Faults { malformed_burst: 1, ..Default::default() };
        assert_eq!(faults.verdict(false), Verdict::Pass);
        assert_eq!(faults.malformed_burst, 1, "a write does not spend it");
        assert_eq!(faults.verdict(true), Verdict::Malformed);
        assert_eq!(faults.verdict(true), Verdict::Pass);
    }

    #[test]
    fn a_standing_status_lasts_and_yields_to_bursts() {
        let mut faults = Faults { status: Some(502), error_burst: 1, ..Default::default() };
        assert_eq!(faults.verdict(true), Verdict::Unavailable);
        for _ in 0..3 {
            assert_eq!(faults.verdict(false), Verdict::Status(502));
        }
        faults.status = None;
        assert_eq!(faults.verdict(true), Verdict::Pass);
    }

    #[test]
    fn standing_conditions_are_not_spent() {
        let mut faults = Faults { slow_ms: 50, never_start: true, ..Default::default() };
        for _ in 0..3 {
            assert_eq!(faults.verdict(true), Verdict::Pass);
        }
        assert_eq!((faults.slow_ms, faults.never_start), (50, true));
    }

    #[test]
    fn resets_are_taken_one_at_a_time() {
        let mut faults = Faults { reset_burst: 1, ..Default::default() };
        assert!(faults.take_reset());
        assert!(!faults.take_reset());
        assert_eq!(faults.verdict(true), Verdict::Pass);
    }

    #[test]
    fn partial_json_leaves_the_rest_off() {
        let faults: Faults = serde_json::from_str(r#"{"error_burst": 2, "status": 503}"#).expect("parses");
        assert_eq!(faults, Faults { error_burst: 2, status: Some(503), ..Default::default() });
        assert!(serde_json::from_str::<Faults>(r#"{"status": "soon"}"#).is_err());
    }
}
