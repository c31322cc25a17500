//! The values inputs take that every part of the program reads the same way: booleans,
//! durations (and how a duration is said back), provider API bases.

use std::net::IpAddr;
use std::time::Duration;

/// The longest duration any input accepts: a deploy step that waits longer is stuck.
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// The fix every duration error gives: one rule for every duration input.
pub const DURATION_FIX: &str =
    "Use a number with a unit (ms, s, m, h), e.g. 500ms, 10s, 5m or 1h30m, or a bare number of seconds such as 30; at most 24h.";

/// Booleans as the Actions toolkit accepts them: the YAML 1.2 core set.
pub fn parse_bool(text: &str) -> Result<bool, String> {
    match text {
        "true" | "True" | "TRUE" => Ok(true),
        "false" | "False" | "FALSE" => Ok(false),
        _ => Err(format!("'{text}' is not true or false")),
    }
}

/// A duration such as `500ms`, `10s`, `5m`, `1h30m`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("'{text}' is not a duration");
    if text.is_empty() {
        return Err(bad());
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = text.parse().map_err(|_| bad())?;
        return checked(Duration::from_secs(secs.min(u64::MAX / 2)), text);
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 9 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let part = match &rest[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n * 60),
            "h" => Duration::from_secs(n * 3600),
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total = total.checked_add(part).ok_or_else(bad)?;
    }
    checked(total, text)
}

fn checked(d: Duration, text: &str) -> Result<Duration, String> {
    if d > MAX_DURATION {
        Err(format!("'{text}' is longer than 24h"))
    } else {
        Ok(d)
    }
}

pub fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        Duration::ZERO => Err(format!("'{text}' must be more than zero")),
        d => Ok(d),
    }
}

/// A provider API base: https anywhere, http only on loopback (a token travels with it).
pub fn check_base_url(u: &url::Url) -> Result<(), String> {
    match u.scheme() {
        "https" if u.host().is_some() => Ok(()),
        "http" if is_loopback(u) => Ok(()),
        "http" => Err(format!("'{u}' is plain http:// and not loopback, so the token would travel unencrypted")),
        other => Err(format!("'{u}' has scheme '{other}'; only https:// is accepted")),
    }
}

pub fn is_loopback(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// A duration as people write it: `1m30s`, `250ms`.
pub fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    let tenths = (ms % 1000) / 100;
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        if h == 0 && m == 0 && tenths > 0 {
            out.push_str(&format!("{s}.{tenths}s"));
        } else {
            out.push_str(&format!("{s}s"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_units_and_reject_nonsense() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        for bad in ["-5s", "1e99", "5 s", "s", "5d", "١٠s", "99999999999999999999", "25h", "1.5s", ""] {
            assert!(parse_duration(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn api_base_urls_must_be_https_unless_loopback() {
        let ok = |s: &str| check_base_url(&url::Url::parse(s).unwrap()).is_ok();
        assert!(ok("https://api.machines.dev/v1"));
        assert!(ok("http://127.0.0.1:4280"));
        assert!(ok("http://[::1]:4280"));
        assert!(ok("http://localhost:4280"));
        assert!(!ok("http://api.machines.dev"));
        assert!(!ok("http://10.0.0.1"));
        assert!(!ok("ftp://127.0.0.1"));
    }

    #[test]
    fn human_durations_read_naturally() {
        assert_eq!(human(Duration::from_millis(250)), "250ms");
        assert_eq!(human(Duration::from_millis(1500)), "1.5s");
        assert_eq!(human(Duration::from_secs(90)), "1m30s");
        assert_eq!(human(Duration::from_secs(3600)), "1h");
    }
}
