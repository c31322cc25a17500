//! AWS Signature Version 4: how the ECS provider's requests (ECS, ELBv2, STS) prove who
//! sends them. The `aws-sigv4` crate computes the signature; this module says what is
//! signed, with which credentials, and hands back the headers to send. Signing is the
//! provider's business, not the HTTP client's: other platforms send a bearer token.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;

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

#[cfg(test)]
mod tests {
    use super::*;
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
    fn another_secret_or_another_body_is_another_signature() {
        let case = &cases()[0];
        let signed = sign_case(case);
        let other = Case { secret_access_key: format!("{}x", case.secret_access_key), ..case.clone() };
        assert_ne!(header(&sign_case(&other), "authorization"), header(&signed, "authorization"));
        let other = Case { body: format!("{} ", case.body), ..case.clone() };
        assert_ne!(header(&sign_case(&other), "authorization"), header(&signed, "authorization"));
    }
}
