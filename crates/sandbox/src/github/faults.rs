//! Injected failures of the GitHub emulator: the kit's fault set (bursts, a standing
//! status, slow answers), served by the kit's pipeline in GitHub's error shape, plus
//! the failures only GitHub has, which are standing conditions because a missing
//! permission or a merge conflict lasts for a whole deploy.
//!
//! As JSON (`/__sandbox/faults`) the set is flat: `{"status": 502}`,
//! `{"error_burst": 2, "conflict": true}`.

use serde::{Deserialize, Serialize};

use crate::kit::{FaultSet, Faults};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Flat", into = "Flat")]
pub struct GitHubFaults {
    /// Every API request answers this status with a GitHub-style error body
    /// (e.g. 500, 502, 503, or 403 "Resource not accessible by integration").
    /// It is the kit's standing status; it sits here, not in `api`, so that
    /// `GitHubFaults { status: Some(502), ..Default::default() }` says it directly.
    pub status: Option<u16>,
    /// Creating a deployment answers 202 "Auto-merged main into <ref> on deployment."
    /// and creates nothing, whatever `auto_merge` the request sent, so a client can be
    /// tested against the answer even though it (rightly) sends `auto_merge: false`.
    pub auto_merge: bool,
    /// Creating a deployment answers 422 "Validation Failed".
    pub invalid: bool,
    /// Creating a deployment answers 409 "Conflict merging main into <ref>."
    pub conflict: bool,
    /// Every API request answers 403 "API rate limit exceeded", with the rate-limit
    /// headers showing nothing left until a minute from now.
    pub rate_limited: bool,
    /// The kit's bursts and slow answers. Its `status` is used only while the one
    /// above is `None`.
    pub api: Faults,
}

/// The JSON shape: one flat object, with a single `status`.
#[derive(Serialize, Deserialize)]
#[serde(default)]
struct Flat {
    #[serde(flatten)]
    api: Faults,
    auto_merge: bool,
    conflict: bool,
    invalid: bool,
    rate_limited: bool,
}

impl Default for Flat {
    fn default() -> Self {
        GitHubFaults::default().into()
    }
}

impl From<Flat> for GitHubFaults {
    fn from(mut flat: Flat) -> Self {
        GitHubFaults {
            status: flat.api.status.take(),
            auto_merge: flat.auto_merge,
            conflict: flat.conflict,
            invalid: flat.invalid,
            rate_limited: flat.rate_limited,
            api: flat.api,
        }
    }
}

impl From<GitHubFaults> for Flat {
    fn from(faults: GitHubFaults) -> Self {
        let status = faults.status();
        let GitHubFaults { auto_merge, conflict, invalid, rate_limited, api, .. } = faults;
        Flat { api: Faults { status, ..api }, auto_merge, conflict, invalid, rate_limited }
    }
}

impl FaultSet for GitHubFaults {
    fn api(&self) -> &Faults {
        &self.api
    }

    fn api_mut(&mut self) -> &mut Faults {
        &mut self.api
    }

    fn status(&self) -> Option<u16> {
        self.status.or(self.api.status)
    }
}

/// What GitHub's error body says for a status, so an injected failure reads like the
/// real one (clients sometimes branch on the message, e.g. for 403).
pub fn message_for(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Bad credentials",
        403 => "Resource not accessible by integration",
        404 => "Not Found",
        409 => "Conflict",
        422 => "Validation Failed",
        429 => "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
        500 => "Server Error",
        502 => "Server Error",
        503 => "Service Unavailable",
        504 => "We couldn't respond to your request in time. Sorry about that. Please try resubmitting your request and contact us if the problem persists.",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kit::Verdict;
    use serde_json::{json, Value};

    #[test]
    fn partial_json_leaves_the_rest_off() {
        let faults: GitHubFaults = serde_json::from_str(r#"{"status": 502}"#).expect("parses");
        assert_eq!(faults, GitHubFaults { status: Some(502), ..Default::default() });
        let faults: GitHubFaults = serde_json::from_str(r#"{"error_burst": 2, "conflict": true}"#).expect("parses");
        let expected =
            GitHubFaults { conflict: true, api: Faults { error_burst: 2, ..Default::default() }, ..Default::default() };
        assert_eq!(faults, expected);
        assert!(serde_json::from_str::<GitHubFaults>(r#"{"status": "soon"}"#).is_err());
    }

    #[test]
    fn the_json_is_flat_with_one_status() {
        let faults = GitHubFaults { status: Some(503), rate_limited: true, ..Default::default() };
        let text = serde_json::to_string(&faults).expect("serializes");
        assert_eq!(text.matches("\"status\"").count(), 1, "{text}");
        let value: Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!((value["status"].clone(), value["rate_limited"].clone()), (json!(503), json!(true)));
        assert_eq!(value["error_burst"], json!(0));
        assert_eq!(serde_json::from_value::<GitHubFaults>(value).expect("round trip"), faults);
    }

    #[test]
    fn the_standing_status_is_the_kits_wherever_it_was_set() {
        let mut top = GitHubFaults { status: Some(502), ..Default::default() };
        assert_eq!(top.verdict(true), Verdict::Status(502));
        let mut inner = GitHubFaults { api: Faults { status: Some(500), ..Default::default() }, ..Default::default() };
        assert_eq!(inner.verdict(true), Verdict::Status(500));
        let mut burst = GitHubFaults {
            status: Some(502),
            api: Faults { error_burst: 1, ..Default::default() },
            ..Default::default()
        };
        assert_eq!((burst.verdict(true), burst.verdict(true)), (Verdict::Unavailable, Verdict::Status(502)));
    }
}
