//! The emulator's own check of AWS Signature Version 4, written from AWS's description
//! of it (canonical request, string to sign, the derived key), not with the client's
//! crate: a signature both got wrong the same way cannot pass here, and the AWS CLI's
//! requests (botocore signs them) must.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::server::Request;

type HmacSha256 = Hmac<Sha256>;

/// How far a request's X-Amz-Date may be from now: AWS's 15 minutes.
const SKEW_SECS: i64 = 15 * 60;

/// Why a request's signature is refused, in AWS's error codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// No Authorization header, or not a SigV4 one.
    Missing(String),
    /// An access key the emulator did not hand out, or a session token that is not its.
    UnknownKey(String),
    /// The signature does not match.
    Mismatch,
    /// X-Amz-Date more than 15 minutes from now.
    Skewed,
}

impl Refused {
    /// The error code AWS answers with: ECS's JSON `__type`, ELBv2's and STS's `<Code>`.
    pub fn code(&self, json: bool) -> &'static str {
        match (self, json) {
            (Refused::Missing(_), true) => "MissingAuthenticationTokenException",
            (Refused::Missing(_), false) => "MissingAuthenticationToken",
            (Refused::UnknownKey(_), true) => "UnrecognizedClientException",
            (Refused::UnknownKey(_), false) => "InvalidClientTokenId",
            (Refused::Mismatch, true) => "InvalidSignatureException",
            (Refused::Mismatch, false) => "SignatureDoesNotMatch",
            (Refused::Skewed, _) => "InvalidSignatureException",
        }
    }

    pub fn message(&self) -> String {
        match self {
            Refused::Missing(why) => format!("Missing Authentication Token ({why})"),
            Refused::UnknownKey(_) => "The security token included in the request is invalid.".into(),
            Refused::Mismatch => "The request signature we calculated does not match the signature you provided. \
                 Check your AWS Secret Access Key and signing method."
                .into(),
            Refused::Skewed => "Signature expired: the request's X-Amz-Date is more than 15 minutes from now.".into(),
        }
    }
}

/// What the Authorization header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub access_key: String,
    pub date: String,
    pub region: String,
    pub service: String,
    pub signed_headers: Vec<String>,
    pub signature: String,
}

/// Reads `AWS4-HMAC-SHA256 Credential=AK/DATE/REGION/SERVICE/aws4_request,
/// SignedHeaders=a;b, Signature=hex`.
pub fn parse(authorization: &str) -> Result<Signed, Refused> {
    let rest = authorization
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or_else(|| Refused::Missing("Authorization is not AWS4-HMAC-SHA256".into()))?;
    let mut credential = None;
    let mut signed_headers = None;
    let mut signature = None;
    for part in rest.split(',') {
        match part.trim().split_once('=') {
            Some(("Credential", v)) => credential = Some(v.to_string()),
            Some(("SignedHeaders", v)) => signed_headers = Some(v.split(';').map(str::to_string).collect()),
            Some(("Signature", v)) => signature = Some(v.to_string()),
            _ => {}
        }
    }
    let credential = credential.ok_or_else(|| Refused::Missing("no Credential".into()))?;
    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key, date, region, service, "aws4_request"] = scope.as_slice() else {
        return Err(Refused::Missing(format!(
            "a Credential scope that is not KEY/DATE/REGION/SERVICE/aws4_request: {credential}"
        )));
    };
    Ok(Signed {
        access_key: access_key.to_string(),
        date: date.to_string(),
        region: region.to_string(),
        service: service.to_string(),
        signed_headers: signed_headers.ok_or_else(|| Refused::Missing("no SignedHeaders".into()))?,
        signature: signature.ok_or_else(|| Refused::Missing("no Signature".into()))?,
    })
}

/// Checks `request`'s signature with `secret`, the secret of the key it names.
pub fn verify(request: &Request, signed: &Signed, secret: &str, now_unix: i64) -> Result<(), Refused> {
    let amz_date = request.header("x-amz-date").ok_or_else(|| Refused::Missing("no X-Amz-Date".into()))?;
    if !amz_date.starts_with(&signed.date) {
        return Err(Refused::Mismatch);
    }
    match unix_of(amz_date) {
        Some(at) if (at - now_unix).abs() <= SKEW_SECS => {}
        Some(_) => return Err(Refused::Skewed),
        None => return Err(Refused::Missing(format!("X-Amz-Date {amz_date} is not YYYYMMDDTHHMMSSZ"))),
    }
    // What AWS requires signed: the host, the date, and a session token when one is sent.
    let mut required = vec!["host", "x-amz-date"];
    if request.header("x-amz-security-token").is_some() {
        required.push("x-amz-security-token");
    }
    for header in required {
        if !signed.signed_headers.iter().any(|h| h == header) {
            return Err(Refused::Missing(format!("{header} is not among the signed headers")));
        }
    }
    let canonical = canonical_request(request, &signed.signed_headers)?;
    let scope = format!("{}/{}/{}/aws4_request", signed.date, signed.region, signed.service);
    let to_sign = format!("AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}", hex(&Sha256::digest(canonical.as_bytes())));
    let mut key = hmac(format!("AWS4{secret}").as_bytes(), signed.date.as_bytes());
    for part in [signed.region.as_str(), signed.service.as_str(), "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    let expected = hex(&hmac(&key, to_sign.as_bytes()));
    match expected == signed.signature {
        true => Ok(()),
        false => Err(Refused::Mismatch),
    }
}

fn canonical_request(request: &Request, signed_headers: &[String]) -> Result<String, Refused> {
    let mut headers = String::new();
    for name in signed_headers {
        let values: Vec<String> = request
            .headers
            .get_all(name.as_str())
            .iter()
            .map(|v| v.to_str().map(|v| collapse(v.trim())).map_err(|_| Refused::Mismatch))
            .collect::<Result<_, _>>()?;
        if values.is_empty() {
            return Err(Refused::Missing(format!("signed header {name} was not sent")));
        }
        headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    Ok(format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        request.method.as_str(),
        canonical_path(&request.path),
        canonical_query(request.query.as_deref().unwrap_or("")),
        headers,
        signed_headers.join(";"),
        hex(&Sha256::digest(&request.body))
    ))
}

/// Runs of spaces inside a header value count as one.
fn collapse(value: &str) -> String {
    value.split(' ').filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" ")
}

/// Each path segment percent-encoded once (the path as sent is already encoded: it is
/// decoded and encoded again so the two spellings agree).
fn canonical_path(path: &str) -> String {
    if path.is_empty() {
        return "/".into();
    }
    path.split('/').map(|seg| encode(&decode(seg))).collect::<Vec<_>>().join("/")
}

fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (encode(&decode(k)), encode(&decode(v)))
        })
        .collect();
    pairs.sort();
    pairs.into_iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
}

/// Percent-encodes all but AWS's unreserved characters (A-Z a-z 0-9 - _ . ~).
fn encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&text[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes a key of any length.
    let mut mac = HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `20261207T010203Z` as seconds since the epoch.
fn unix_of(amz_date: &str) -> Option<i64> {
    let d = amz_date.as_bytes();
    if d.len() != 16 || d[8] != b'T' || d[15] != b'Z' {
        return None;
    }
    let n = |r: std::ops::Range<usize>| amz_date.get(r)?.parse::<i64>().ok();
    let (y, m, day) = (n(0..4)?, n(4..6)?, n(6..8)?);
    let (hh, mm, ss) = (n(9..11)?, n(11..13)?, n(13..15)?);
    Some(days_from_civil(y, m, day) * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub(crate) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's own worked example ("get-vanilla" of the SigV4 test suite): its
    /// signature is published, so this check agrees with AWS, not with us.
    #[test]
    fn the_published_example_verifies_and_a_changed_byte_does_not() {
        let mut headers = hyper::HeaderMap::new();
        headers.insert("host", "example.amazonaws.com".parse().unwrap());
        headers.insert("x-amz-date", "20150830T123600Z".parse().unwrap());
        let request =
            Request { method: hyper::Method::GET, path: "/".into(), query: None, headers, body: bytes::Bytes::new() };
        let auth = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
                    SignedHeaders=host;x-amz-date, \
                    Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31";
        let signed = parse(auth).unwrap();
        let now = unix_of("20150830T123600Z").unwrap();
        let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
        assert_eq!(verify(&request, &signed, secret, now), Ok(()));
        assert_eq!(verify(&request, &signed, "another secret", now), Err(Refused::Mismatch));
        let mut other = request.clone();
        other.body = bytes::Bytes::from_static(b"x");
        assert_eq!(verify(&other, &signed, secret, now), Err(Refused::Mismatch));
        assert_eq!(verify(&request, &signed, secret, now + 3600), Err(Refused::Skewed));
        assert!(matches!(parse("Bearer abc"), Err(Refused::Missing(_))));
    }

    #[test]
    fn dates_count_days_from_the_epoch() {
        assert_eq!(unix_of("19700101T000000Z"), Some(0));
        assert_eq!(unix_of("20261207T010203Z"), Some(1_796_605_323));
        assert_eq!(unix_of("2026-12-07"), None);
    }
}
