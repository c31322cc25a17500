//! Where the AWS keys come from: given (inputs or AWS_* variables), or, with no
//! long-lived keys at all, GitHub's OIDC token traded at STS for keys that last an hour
//! (AssumeRoleWithWebIdentity), as aws-actions/configure-aws-credentials does.

use reqwest::Method;
use serde::Deserialize;

use super::{throttled, AwsCredentials};
use crate::http::{Bearer, Call, HttpClient};
use crate::providers::ProviderError;
use crate::secret::Secret;
use crate::shutdown::Shutdown;

/// The audience AWS expects of a GitHub token it is to trust.
pub const AUDIENCE: &str = "sts.amazonaws.com";

/// What a run was given to find its keys with.
#[derive(Debug, Clone)]
pub struct Given {
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Secret>,
    pub session_token: Option<Secret>,
    /// An IAM role to assume with the runner's OIDC token.
    pub role_to_assume: Option<String>,
    pub role_session_name: String,
    /// ACTIONS_ID_TOKEN_REQUEST_URL and _TOKEN: present when the job may ask for one.
    pub id_token_url: Option<String>,
    pub id_token_request_token: Option<Secret>,
    /// STS's endpoint, e.g. https://sts.us-east-1.amazonaws.com/.
    pub sts_url: url::Url,
}

impl Default for Given {
    /// Nothing given; STS's global endpoint (a provider names the region's).
    fn default() -> Given {
        Given {
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            role_to_assume: None,
            role_session_name: "safe-deploy".into(),
            id_token_url: None,
            id_token_request_token: None,
            sts_url: url::Url::parse("https://sts.amazonaws.com/").expect("a URL"),
        }
    }
}

/// The keys to sign with, or what is missing and how to give it.
pub async fn resolve(given: &Given, http: &HttpClient, shutdown: &Shutdown) -> Result<AwsCredentials, ProviderError> {
    if let Some(role) = &given.role_to_assume {
        return assume_role(given, role, http, shutdown).await;
    }
    match (&given.access_key_id, &given.secret_access_key) {
        (Some(id), Some(secret)) => Ok(AwsCredentials {
            access_key_id: id.clone(),
            secret_access_key: secret.clone(),
            session_token: given.session_token.clone(),
        }),
        _ => Err(ProviderError::Failed(
            "no AWS credentials: set role-to-assume (with permissions id-token: write), or \
             aws-access-key-id and aws-secret-access-key (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
                .into(),
        )),
    }
}

#[derive(Deserialize)]
struct IdToken {
    value: String,
}

async fn assume_role(
    given: &Given,
    role: &str,
    http: &HttpClient,
    shutdown: &Shutdown,
) -> Result<AwsCredentials, ProviderError> {
    let (Some(url), Some(request_token)) = (&given.id_token_url, &given.id_token_request_token) else {
        return Err(ProviderError::Failed(format!(
            "role-to-assume ({role}) needs the runner's OIDC token, and this job may not ask for one: \
             add `permissions: id-token: write` to the job"
        )));
    };
    // The runner's tokens are secrets like any other: never printed, whatever fails.
    http.redactor().add(request_token.expose());
    // The runner's token, for STS's audience.
    let mut url = url::Url::parse(url)
        .map_err(|e| ProviderError::Failed(format!("ACTIONS_ID_TOKEN_REQUEST_URL is not a URL ({e})")))?;
    url.query_pairs_mut().append_pair("audience", AUDIENCE);
    let bearer = Bearer::new(&format!("Bearer {}", request_token.expose())).map_err(ProviderError::Failed)?;
    let call = Call::new(Method::GET, url).credential(std::sync::Arc::new(bearer));
    let reply = http.send(&call, shutdown).await.map_err(ProviderError::from_http)?;
    if !reply.is_success() {
        let what = format!("GitHub answered {} when asked for the OIDC token", reply.status);
        // A refusal stays one however often it is asked; a 5xx may pass.
        return Err(match reply.status {
            500..=599 => ProviderError::Unavailable(format!("{what}; re-run the job")),
            _ => ProviderError::Failed(format!(
                "{what}: the job's token was refused; check `permissions: id-token: write` on the job, then re-run it"
            )),
        });
    }
    let token: IdToken = reply
        .json()
        .map_err(|e| ProviderError::Unavailable(format!("GitHub's OIDC token answer was not JSON ({e}); re-run")))?;
    http.redactor().add(&token.value);
    // STS takes the token itself as proof: the request is not signed. Asking twice does
    // no harm, so it is retried like a read.
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("Action", "AssumeRoleWithWebIdentity")
        .append_pair("Version", "2011-06-15")
        .append_pair("RoleArn", role)
        .append_pair("RoleSessionName", &given.role_session_name)
        .append_pair("WebIdentityToken", &token.value)
        .append_pair("DurationSeconds", "3600")
        .finish();
    let call = Call::new(Method::POST, given.sts_url.clone())
        .idempotent(true)
        .throttled_when(throttled)
        .header(
            reqwest::header::CONTENT_TYPE,
            reqwest::header::HeaderValue::from_static("application/x-www-form-urlencoded; charset=utf-8"),
        )
        .raw(form.into_bytes());
    let reply = http.send(&call, shutdown).await.map_err(ProviderError::from_http)?;
    let text = reply.text();
    if !reply.is_success() {
        let (code, message) = sts_error(&text);
        let what = format!("STS refused to let GitHub's token assume {role}: {code}: {message}");
        return Err(match reply.status {
            500..=599 => ProviderError::Unavailable(what),
            _ => ProviderError::Failed(format!(
                "{what}. Check the role's trust policy: it must trust token.actions.githubusercontent.com \
                 with audience {AUDIENCE} and this repository"
            )),
        });
    }
    sts_credentials(&text).ok_or_else(|| {
        ProviderError::Unavailable(
            "STS's answer held no credentials (AccessKeyId, SecretAccessKey, SessionToken); re-run".into(),
        )
    })
}

/// The credentials in an AssumeRoleWithWebIdentity answer.
fn sts_credentials(xml: &str) -> Option<AwsCredentials> {
    let doc = roxmltree::Document::parse(xml).ok()?;
    let creds = doc.descendants().find(|n| n.has_tag_name("Credentials"))?;
    let field = |name: &str| {
        creds.children().find(|n| n.has_tag_name(name)).and_then(|n| n.text()).map(str::trim).filter(|t| !t.is_empty())
    };
    Some(AwsCredentials {
        access_key_id: field("AccessKeyId")?.to_string(),
        secret_access_key: Secret::new(field("SecretAccessKey")?),
        session_token: Some(Secret::new(field("SessionToken")?)),
    })
}

/// The code and message of an AWS query-protocol error.
fn sts_error(xml: &str) -> (String, String) {
    let doc = roxmltree::Document::parse(xml).ok();
    let text = |name: &str| {
        doc.as_ref()
            .and_then(|d| d.descendants().find(|n| n.has_tag_name(name)))
            .and_then(|n| n.text())
            .map(str::to_string)
    };
    let snippet: String = xml.chars().take(200).collect();
    (text("Code").unwrap_or_else(|| "an unreadable error".into()), text("Message").unwrap_or(snippet))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keys_are_read_from_stss_answer_and_its_errors_are_named() {
        let answer = r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <Credentials>
      <SessionToken>FwoGZXIvYXdzEXAMPLE</SessionToken>
      <SecretAccessKey>wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY</SecretAccessKey>
      <Expiration>2026-12-07T01:00:00Z</Expiration>
      <AccessKeyId>ASIAIOSFODNN7EXAMPLE</AccessKeyId>
    </Credentials>
  </AssumeRoleWithWebIdentityResult>
</AssumeRoleWithWebIdentityResponse>"#;
        let creds = sts_credentials(answer).unwrap();
        assert_eq!(creds.access_key_id, "ASIAIOSFODNN7EXAMPLE");
        assert_eq!(creds.secret_access_key.expose(), "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY");
        assert_eq!(creds.session_token.unwrap().expose(), "FwoGZXIvYXdzEXAMPLE");
        assert!(sts_credentials("<AssumeRoleWithWebIdentityResponse/>").is_none(), "no keys, no credentials");
        assert!(sts_credentials("not xml").is_none());

        let refused = r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>Not authorized to perform sts:AssumeRoleWithWebIdentity</Message></Error></ErrorResponse>"#;
        assert_eq!(
            sts_error(refused),
            ("AccessDenied".to_string(), "Not authorized to perform sts:AssumeRoleWithWebIdentity".to_string())
        );
        assert_eq!(sts_error("<html>bad gateway</html>").0, "an unreadable error");
    }
}
