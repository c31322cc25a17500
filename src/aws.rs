//! AWS Signature Version 4: how the ECS provider's requests (ECS, ELBv2, STS) prove who
//! sends them. The `aws-sigv4` crate computes the signature; this module says what is
//! signed, with which credentials, and hands back the headers to send. Signing is the
//! provider's business, not the HTTP client's: other platforms send a bearer token.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;

use reqwest::header::{HeaderName, HeaderValue};

use crate::http::{Credential, Headers, Outgoing};

pub mod credentials;
use crate::secret::Secret;

/// Keys as AWS hands them out: from inputs, the environment, or STS (with a session token).
#[derive(Debug, Clone)]
pub struct AwsCredentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
}

/// Which API a request is for: SigV4 signs with the service's name and the region.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// "ecs", "elasticloadbalancing", "sts".
    pub service: &'a str,
    pub region: &'a str,
}

/// What one request is, as SigV4 sees it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    pub url: &'a str,
    /// The headers sent that are signed too (Content-Type, X-Amz-Target…); Host comes
    /// from the URL.
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
}

/// The headers that sign `request` at `at`: Authorization, X-Amz-Date and, with a
/// session token, X-Amz-Security-Token. An error says why it cannot be signed.
pub fn signed_headers(
    creds: &AwsCredentials,
    scope: Scope,
    request: Request,
    at: SystemTime,
) -> Result<Vec<(String, String)>, String> {
    let identity = Credentials::new(
        creds.access_key_id.clone(),
        creds.secret_access_key.expose().to_string(),
        creds.session_token.as_ref().map(|t| t.expose().to_string()),
        None,
        "safe-deploy",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(scope.region)
        .name(scope.service)
        .time(at)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| format!("cannot sign a request to {}: {e}", scope.service))?
        .into();
    let signable = SignableRequest::new(
        request.method,
        request.url,
        request.headers.iter().map(|(k, v)| (*k, *v)),
        SignableBody::Bytes(request.body),
    )
    .map_err(|e| format!("cannot sign a request to {}: {e}", request.url))?;
    let (instructions, _signature) =
        sign(signable, &params).map_err(|e| format!("cannot sign a request to {}: {e}", request.url))?.into_parts();
    Ok(instructions.headers().map(|(k, v)| (k.to_string(), v.to_string())).collect())
}

/// Signs every attempt of a request to one AWS service, at the time it is sent.
#[derive(Debug)]
pub struct SigV4 {
    pub creds: AwsCredentials,
    pub service: &'static str,
    pub region: String,
    /// The time a signature says: now, except in tests of fixed signatures.
    pub clock: fn() -> SystemTime,
}

impl Credential for SigV4 {
    fn headers(&self, out: &Outgoing) -> Result<Headers, String> {
        // Every header sent is signed: one that is not text cannot be, so it is refused.
        let sent = out
            .headers
            .iter()
            .map(|(k, v)| Ok((k.as_str(), v.to_str().map_err(|_| format!("header {k} is not plain text"))?)))
            .collect::<Result<Vec<(&str, &str)>, String>>()?;
        let request = Request { method: out.method.as_str(), url: out.url.as_str(), headers: &sent, body: out.body };
        let scope = Scope { service: self.service, region: &self.region };
        let token = HeaderName::from_static("x-amz-security-token");
        signed_headers(&self.creds, scope, request, (self.clock)())?
            .into_iter()
            .map(|(k, v)| {
                let name = HeaderName::from_bytes(k.as_bytes()).map_err(|e| e.to_string())?;
                let mut value = HeaderValue::from_str(&v).map_err(|e| e.to_string())?;
                value.set_sensitive(name == reqwest::header::AUTHORIZATION || name == token);
                Ok((name, value))
            })
            .collect()
    }
}

/// The error codes AWS throttles with, across its JSON and query protocols.
pub const THROTTLES: [&str; 5] =
    ["ThrottlingException", "TooManyRequestsException", "Throttling", "RequestLimitExceeded", "RequestThrottled"];

/// Whether an AWS answer is a throttle: HTTP 400 (or 429) whose error code says so, as
/// ECS's JSON (`__type`) and ELBv2's and STS's XML (`<Code>`) give it. Such an answer is
/// asked again after a pause, never counted as the deploy's failure.
pub fn throttled(status: u16, body: &[u8]) -> bool {
    if !matches!(status, 400 | 429) {
        return false;
    }
    let text = String::from_utf8_lossy(body);
    let code = match serde_json::from_str::<serde_json::Value>(&text) {
        // "__type": "ThrottlingException" or "com.amazonaws.ecs#ThrottlingException"
        Ok(v) => v.get("__type").and_then(|t| t.as_str()).map(|t| t.rsplit('#').next().unwrap_or(t).to_string()),
        Err(_) => text
            .split_once("<Code>")
            .and_then(|(_, rest)| rest.split_once("</Code>"))
            .map(|(c, _)| c.trim().to_string()),
    };
    code.is_some_and(|c| THROTTLES.contains(&c.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::Method;
    use serde::Deserialize;

    /// One case of tests/fixtures/sigv4.json: fixed inputs, and the Authorization header
    /// botocore's SigV4Auth gives for them (`.ci/sigv4-check` asks botocore again).
    #[derive(Deserialize, Clone)]
    struct Case {
        name: String,
        access_key_id: String,
        secret_access_key: String,
        session_token: Option<String>,
        service: String,
        region: String,
        method: String,
        url: String,
        headers: Vec<(String, String)>,
        body: String,
        /// Seconds since the epoch.
        time: u64,
        authorization: String,
    }

    fn cases() -> Vec<Case> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sigv4.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn sign_case(case: &Case) -> Vec<(String, String)> {
        let creds = AwsCredentials {
            access_key_id: case.access_key_id.clone(),
            secret_access_key: Secret::new(&case.secret_access_key),
            session_token: case.session_token.as_deref().map(Secret::new),
        };
        let headers: Vec<(&str, &str)> = case.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let request = Request { method: &case.method, url: &case.url, headers: &headers, body: case.body.as_bytes() };
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(case.time);
        signed_headers(&creds, Scope { service: &case.service, region: &case.region }, request, at).unwrap()
    }

    fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    #[test]
    fn every_request_is_signed_as_botocore_signs_it() {
        let cases = cases();
        assert!(cases.len() >= 3, "ECS, ELBv2 and STS with a session token at least");
        for case in &cases {
            let signed = sign_case(case);
            assert_eq!(header(&signed, "authorization"), Some(case.authorization.as_str()), "{}", case.name);
            assert!(header(&signed, "x-amz-date").is_some(), "{}", case.name);
            assert_eq!(
                header(&signed, "x-amz-security-token"),
                case.session_token.as_deref(),
                "{}: a session token is sent when there is one",
                case.name
            );
        }
    }

    #[test]
    fn a_throttle_is_told_from_a_refusal_in_json_and_in_xml() {
        assert!(throttled(400, br#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#));
        assert!(throttled(400, br#"{"__type":"com.amazonaws.ecs#TooManyRequestsException"}"#));
        let xml = b"<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error></ErrorResponse>";
        assert!(throttled(400, xml));
        assert!(!throttled(400, br#"{"__type":"InvalidParameterException","message":"Rate exceeded"}"#));
        assert!(!throttled(400, b"<Error><Code>ValidationError</Code></Error>"));
        assert!(!throttled(500, br#"{"__type":"ThrottlingException"}"#), "a 5xx is the HTTP layer's own business");
        assert!(!throttled(400, b"not an error body"));
    }

    /// A case through the credential the HTTP layer calls, as it calls it.
    fn through_the_credential(case: &Case, clock: fn() -> SystemTime) -> Vec<(HeaderName, HeaderValue)> {
        let sigv4 = SigV4 {
            creds: AwsCredentials {
                access_key_id: case.access_key_id.clone(),
                secret_access_key: Secret::new(&case.secret_access_key),
                session_token: case.session_token.as_deref().map(Secret::new),
            },
            service: match case.service.as_str() {
                "ecs" => "ecs",
                "elasticloadbalancing" => "elasticloadbalancing",
                other => panic!("a service the fixture does not use: {other}"),
            },
            region: case.region.clone(),
            clock,
        };
        let url = url::Url::parse(&case.url).unwrap();
        let sent: Vec<(HeaderName, HeaderValue)> = case
            .headers
            .iter()
            .map(|(k, v)| (HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap()))
            .collect();
        let method = Method::from_bytes(case.method.as_bytes()).unwrap();
        sigv4.headers(&Outgoing { method: &method, url: &url, headers: &sent, body: case.body.as_bytes() }).unwrap()
    }

    #[test]
    fn what_the_http_layer_sends_is_signed_as_botocore_signs_it() {
        // The fixture's times, one clock each.
        let clocks: [fn() -> SystemTime; 4] = [
            || SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1764979200),
            || SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1764982861),
            || SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1765000000),
            || SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1765003600),
        ];
        let cases = cases();
        assert_eq!(cases.len(), clocks.len(), "a clock for every case");
        for (case, clock) in cases.iter().zip(clocks) {
            assert_eq!(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(case.time), clock(), "{}", case.name);
            let headers = through_the_credential(case, clock);
            let auth = headers.iter().find(|(k, _)| k == reqwest::header::AUTHORIZATION).map(|(_, v)| v);
            assert_eq!(auth.map(|v| v.to_str().unwrap()), Some(case.authorization.as_str()), "{}", case.name);
        }
    }

    #[test]
    fn the_credential_signs_what_is_sent_and_hides_the_signature() {
        let case = cases().into_iter().find(|c| c.session_token.is_some()).expect("a case with a session token");
        let headers = through_the_credential(&case, SystemTime::now);
        let get = |name: &str| headers.iter().find(|(k, _)| k.as_str() == name).map(|(_, v)| v);
        let auth = get("authorization").expect("signed");
        assert!(auth.is_sensitive(), "never in a debug log");
        assert!(auth
            .to_str()
            .unwrap()
            .contains("SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;x-amz-target"));
        assert!(get("x-amz-security-token").unwrap().is_sensitive());
        assert!(get("x-amz-date").is_some_and(|d| !d.is_sensitive()));
    }

    #[test]
    fn another_secret_or_another_body_is_another_signature() {
        let case = &cases()[0];
        let signed = sign_case(case);
        let other = Case { secret_access_key: format!("{}x", case.secret_access_key), ..case.clone() };
        assert_ne!(header(&sign_case(&other), "authorization"), header(&signed, "authorization"));
        let other = Case { body: format!("{} ", case.body), ..case.clone() };
        assert_ne!(header(&sign_case(&other), "authorization"), header(&signed, "authorization"));
    }
}
