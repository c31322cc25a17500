//! Identifiers and timestamps in the shapes Fly uses: 14-hex machine ids, `vol_`
//! volume ids, ULID-like instance ids, hex nonces, RFC 3339 times. Random enough for a sandbox, without
//! a random-number crate.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // Each RandomState is freshly keyed; the counter keeps two calls from colliding.
    RandomState::new().hash_one((COUNTER.fetch_add(1, Ordering::Relaxed), SystemTime::now()))
}

pub fn machine_id() -> String {
    format!("{:014x}", random_u64() >> 8)
}

/// `vol_` and 16 lowercase letters and digits, as in `vol_2n0l3vl60qpv635d`.
pub fn volume_id() -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let (mut a, mut b) = (random_u64(), random_u64());
    let tail: String = (0..16)
        .map(|i| {
            let word = if i < 8 { &mut a } else { &mut b };
            let c = ALPHABET[(*word % 36) as usize] as char;
            *word /= 36;
            c
        })
        .collect();
    format!("vol_{tail}")
}

/// The hardware zone a volume sits in: four hex digits, as in `"09cd"`.
pub fn zone() -> String {
    format!("{:04x}", random_u64() & 0xffff)
}

pub fn nonce() -> String {
    format!("{:016x}{:016x}", random_u64(), random_u64())
}

/// 26 Crockford base-32 characters: 48 bits of milliseconds, then 80 random bits.
pub fn instance_id() -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let millis = unix_millis(SystemTime::now()) as u128 & ((1 << 48) - 1);
    let random = ((random_u64() as u128) << 16 | (random_u64() as u128 & 0xffff)) & ((1 << 80) - 1);
    let value = millis << 80 | random;
    (0..26).rev().map(|i| ALPHABET[((value >> (i * 5)) & 31) as usize] as char).collect()
}

pub fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// `2024-01-15T10:04:05Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = unix_secs(t);
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rest / 3600, rest % 3600 / 60, rest % 60)
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A Go-style duration such as `"10s"`, `"500ms"` or `"1m30s"`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<f64>() {
        return (secs >= 0.0 && secs.is_finite()).then(|| Duration::from_secs_f64(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let amount: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += Duration::from_secs_f64(amount * unit);
    }
    (!text.is_empty()).then_some(total)
}

/// The Go-style text for `d`, as Fly writes check intervals.
pub fn format_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_fly_shapes() {
        let id = machine_id();
        assert_eq!(id.len(), 14);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(machine_id(), machine_id());
        assert_eq!(instance_id().len(), 26);
        assert_eq!(nonce().len(), 32);
        let vol = volume_id();
        assert_eq!(vol.len(), 20, "{vol}");
        assert!(vol
            .strip_prefix("vol_")
            .is_some_and(|t| t.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())));
        assert_ne!(volume_id(), volume_id());
    }

    #[test]
    fn times_format_as_rfc3339() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(1_342_747_153)), "2012-07-20T01:19:13Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(1_709_251_199)), "2024-02-29T23:59:59Z");
    }

    #[test]
    fn durations_parse_go_style() {
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("5"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(format_duration(Duration::from_millis(200)), "200ms");
        assert_eq!(format_duration(Duration::from_secs(15)), "15s");
    }
}
