//! AWS keys with no long-lived secret: the runner's OIDC token, traded at STS for keys
//! that last an hour. A stand-in for GitHub's token endpoint and STS checks what a real
//! one would (the bearer token, the audience, the form STS reads) and answers as they do.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use safe_deploy::aws::credentials::{resolve, Given, AUDIENCE};
use safe_deploy::http::{HttpClient, RetryConfig};
use safe_deploy::providers::ProviderError;
use safe_deploy::secret::{Redactor, Secret};
use safe_deploy::shutdown::Shutdown;
use sandbox::server::{serve, text, Request, Server};

const REQUEST_TOKEN: &str = "runner-request-token";
const ID_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.github-oidc.signature";
const ROLE: &str = "arn:aws:iam::123456789012:role/deploy-staging";

const KEYS: &str = r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <Credentials>
      <SessionToken>session-token-1</SessionToken>
      <SecretAccessKey>secret-key-1</SecretAccessKey>
      <Expiration>2026-12-07T02:00:00Z</Expiration>
      <AccessKeyId>ASIATESTKEY1</AccessKeyId>
    </Credentials>
  </AssumeRoleWithWebIdentityResult>
</AssumeRoleWithWebIdentityResponse>"#;

fn error(code: &str, message: &str) -> String {
    format!(
        r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>r-1</RequestId></ErrorResponse>"#
    )
}

/// GitHub's token endpoint at /token and STS at /: STS answers the queued (status,
/// body) first, then the keys. Every request is kept.
struct Oidc {
    server: Server,
    seen: Arc<Mutex<Vec<Request>>>,
}

impl Oidc {
    async fn start(sts: Vec<(u16, String)>) -> Oidc {
        let queue = Arc::new(Mutex::new(sts.into_iter().collect::<VecDeque<_>>()));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let server = serve("127.0.0.1:0".parse().unwrap(), move |request: Request| {
            s.lock().unwrap().push(request.clone());
            let answer = if request.path == "/token" {
                let trusted = request.header("authorization") == Some(&format!("Bearer {REQUEST_TOKEN}"));
                match (trusted, request.param("audience").as_deref() == Some(AUDIENCE)) {
                    (true, true) => (200, format!(r#"{{"count":1,"value":"{ID_TOKEN}"}}"#)),
                    _ => (403, "{}".to_string()),
                }
            } else {
                let form: Vec<(String, String)> = url::form_urlencoded::parse(&request.body).into_owned().collect();
                let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
                let asks = get("Action") == Some("AssumeRoleWithWebIdentity") && get("Version") == Some("2011-06-15");
                match (asks, get("WebIdentityToken") == Some(ID_TOKEN), get("RoleArn") == Some(ROLE)) {
                    (true, true, true) => queue.lock().unwrap().pop_front().unwrap_or((200, KEYS.to_string())),
                    _ => (400, error("InvalidParameterValue", "not what STS reads")),
                }
            };
            async move { text(answer.0, answer.1) }
        })
        .await
        .unwrap();
        Oidc { server, seen }
    }

    fn given(&self) -> Given {
        Given {
            role_to_assume: Some(ROLE.into()),
            role_session_name: "safe-deploy".into(),
            id_token_url: Some(format!("{}/token?api-version=2.0", self.server.url())),
            id_token_request_token: Some(Secret::new(REQUEST_TOKEN)),
            sts_url: url::Url::parse(&format!("{}/", self.server.url())).unwrap(),
            ..Given::default()
        }
    }

    fn sts_calls(&self) -> usize {
        self.seen.lock().unwrap().iter().filter(|r| r.path == "/").count()
    }
}

fn http() -> HttpClient {
    let retry =
        RetryConfig { base: Duration::from_millis(10), max_backoff: Duration::from_millis(50), ..Default::default() };
    HttpClient::new(Redactor::default(), retry, Duration::from_secs(5)).unwrap().with_seed(3)
}

#[tokio::test]
async fn a_role_is_assumed_with_the_runners_token_and_the_keys_last_the_session() {
    let oidc = Oidc::start(vec![]).await;
    let creds = resolve(&oidc.given(), &http(), &Shutdown::new()).await.unwrap();
    assert_eq!(creds.access_key_id, "ASIATESTKEY1");
    assert_eq!(creds.secret_access_key.expose(), "secret-key-1");
    assert_eq!(creds.session_token.map(|t| t.expose().to_string()).as_deref(), Some("session-token-1"));
    let seen = oidc.seen.lock().unwrap();
    assert_eq!(seen[0].param("api-version").as_deref(), Some("2.0"), "the runner's own query is kept");
    assert!(seen[1].header("authorization").is_none(), "STS takes the token itself: nothing is signed");
}

#[tokio::test]
async fn sts_having_a_bad_moment_or_throttling_is_asked_again() {
    let oidc =
        Oidc::start(vec![(503, error("ServiceUnavailable", "try again")), (400, error("Throttling", "Rate exceeded"))])
            .await;
    let creds = resolve(&oidc.given(), &http(), &Shutdown::new()).await.unwrap();
    assert_eq!(creds.access_key_id, "ASIATESTKEY1");
    assert_eq!(oidc.sts_calls(), 3);
}

#[tokio::test]
async fn a_role_that_does_not_trust_the_repository_is_refused_with_what_to_check() {
    let oidc =
        Oidc::start(vec![(403, error("AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity"))])
            .await;
    let err = resolve(&oidc.given(), &http(), &Shutdown::new()).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ProviderError::Failed(_)), "{text}");
    assert!(text.contains("AccessDenied: Not authorized") && text.contains("trust policy"), "{text}");
    assert_eq!(oidc.sts_calls(), 1, "a refusal is not asked again");
}

#[tokio::test]
async fn without_id_token_permission_the_run_says_which_permission_and_sends_nothing() {
    let oidc = Oidc::start(vec![]).await;
    let given = Given { id_token_url: None, id_token_request_token: None, ..oidc.given() };
    let err = resolve(&given, &http(), &Shutdown::new()).await.unwrap_err().to_string();
    assert!(err.contains("permissions: id-token: write"), "{err}");
    assert!(oidc.seen.lock().unwrap().is_empty(), "no request left");
}

#[tokio::test]
async fn keys_given_are_used_as_they_are_and_none_at_all_names_every_way_to_give_them() {
    let given = Given {
        access_key_id: Some("AKIAGIVEN".into()),
        secret_access_key: Some(Secret::new("given-secret")),
        sts_url: url::Url::parse("http://127.0.0.1:9/").unwrap(),
        ..Given::default()
    };
    let creds = resolve(&given, &http(), &Shutdown::new()).await.unwrap();
    assert_eq!((creds.access_key_id.as_str(), creds.session_token.is_none()), ("AKIAGIVEN", true));

    let none = Given { access_key_id: None, ..given };
    let err = resolve(&none, &http(), &Shutdown::new()).await.unwrap_err().to_string();
    assert!(err.contains("role-to-assume") && err.contains("AWS_ACCESS_KEY_ID"), "{err}");
}
