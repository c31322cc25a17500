//! Injected failures of the GitHub emulator. Unlike the Fly emulator's bursts these are
//! standing conditions: each applies to every matching request until a test changes it,
//! because a GitHub outage or a missing permission lasts for a whole deploy.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GitHubFaults {
    /// Every API request answers this status with a GitHub-style error body
    /// (e.g. 500, 502, 503, or 403 "Resource not accessible by integration").
    pub status: Option<u16>,
    /// Creating a deployment answers 202 "Auto-merged main into <ref> on deployment."
    /// and creates nothing, whatever `auto_merge` the request sent, so a client can be
    /// tested against the answer even though it (rightly) sends `auto_merge: false`.
    pub auto_merge: bool,
    /// Creating a deployment answers 409 "Conflict merging main into <ref>."
    pub conflict: bool,
    /// Creating a deployment answers 422 "Validation Failed".
    pub invalid: bool,
    /// Every API request answers 403 "API rate limit exceeded", with the rate-limit
    /// headers showing nothing left until a minute from now.
    pub rate_limited: bool,
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

    #[test]
    fn partial_json_leaves_the_rest_off() {
        let faults: GitHubFaults = serde_json::from_str(r#"{"status": 502}"#).expect("parses");
        assert_eq!(faults, GitHubFaults { status: Some(502), ..Default::default() });
    }
}
