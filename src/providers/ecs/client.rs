//! The provider's wire to AWS: ECS's JSON 1.1 protocol and ELBv2's query protocol,
//! each request signed with SigV4 for its service; reads (Describe*, List*) are safe
//! to send again, so a 5xx, a reset or a throttle (a 400 whose code says so) is asked
//! again by the HTTP layer with capped, jittered backoff; a garbled read too. Errors
//! are read from AWS's own shapes (`__type`, `<Code>`) and say what to do.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use reqwest::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use reqwest::Method;
use serde_json::Value;

use crate::aws::{throttled, AwsCredentials, SigV4, THROTTLES};
use crate::http::{Call, HttpClient, Reply};
use crate::providers::rest::until_readable;
use crate::providers::ProviderError;
use crate::shutdown::Shutdown;

const ECS_TARGET_PREFIX: &str = "AmazonEC2ContainerServiceV20141113.";
/// Reads of a garbled answer before it counts as AWS's failure.
const GARBLED_TRIES: u32 = 4;

/// Where each service answers.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub ecs: url::Url,
    pub elb: url::Url,
    pub sts: url::Url,
}

impl Endpoints {
    /// AWS's regional endpoints, or one base for all three (an emulator, moto).
    pub fn new(region: &str, api_url: Option<&url::Url>) -> anyhow::Result<Endpoints> {
        let of = |service: &str| -> anyhow::Result<url::Url> {
            Ok(match api_url {
                Some(u) => u.clone(),
                // China's regions have a domain of their own.
                None if region.starts_with("cn-") => {
                    url::Url::parse(&format!("https://{service}.{region}.amazonaws.com.cn/"))?
                }
                None => url::Url::parse(&format!("https://{service}.{region}.amazonaws.com/"))?,
            })
        };
        Ok(Endpoints { ecs: of("ecs")?, elb: of("elasticloadbalancing")?, sts: of("sts")? })
    }
}

pub struct Aws {
    pub http: HttpClient,
    pub endpoints: Endpoints,
    pub region: String,
    ecs: Arc<SigV4>,
    elb: Arc<SigV4>,
    calls: Arc<AtomicUsize>,
}

/// An AWS error, read from its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsError {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl Aws {
    /// `calls` counts the requests sent, shared with the clients before this one.
    pub fn new(
        http: HttpClient,
        endpoints: Endpoints,
        region: &str,
        creds: AwsCredentials,
        calls: Arc<AtomicUsize>,
    ) -> Aws {
        let signer = |service: &'static str| {
            Arc::new(SigV4 {
                creds: creds.clone(),
                service,
                region: region.to_string(),
                clock: std::time::SystemTime::now,
            })
        };
        Aws {
            http,
            endpoints,
            region: region.to_string(),
            ecs: signer("ecs"),
            elb: signer("elasticloadbalancing"),
            calls,
        }
    }

    /// One ECS operation; `what` names it in errors ("read service web").
    pub async fn ecs(&self, op: &str, body: &Value, what: &str, shutdown: &Shutdown) -> Result<Value, ProviderError> {
        let read = op.starts_with("Describe") || op.starts_with("List");
        let target = HeaderValue::from_str(&format!("{ECS_TARGET_PREFIX}{op}"))
            .map_err(|e| ProviderError::Failed(e.to_string()))?;
        let call = Call::new(Method::POST, self.endpoints.ecs.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/x-amz-json-1.1"))
            .header(HeaderName::from_static("x-amz-target"), target)
            .raw(serde_json::to_vec(body).unwrap_or_default())
            // UpdateService to the same task definition starts nothing new: safe twice.
            .idempotent(read || op == "UpdateService")
            .throttled_when(throttled)
            .credential(self.ecs.clone());
        let json =
            |body: &[u8]| serde_json::from_slice::<serde::de::IgnoredAny>(body).map(|_| ()).map_err(|e| e.to_string());
        let reply = self.send(call, json, what, shutdown, |r| self.ecs_error(r, what)).await?;
        reply.json::<Value>().map_err(|e| self.garbled(what, &e.to_string()))
    }

    /// One ELBv2 action with its form fields; the XML answer as text.
    pub async fn elb(
        &self,
        action: &str,
        fields: &[(&str, &str)],
        what: &str,
        shutdown: &Shutdown,
    ) -> Result<String, ProviderError> {
        let body = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("Action", action).append_pair("Version", "2015-12-01");
            for (k, v) in fields {
                form.append_pair(k, v);
            }
            form.finish()
        };
        let call = Call::new(Method::POST, self.endpoints.elb.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded; charset=utf-8"))
            .raw(body.into_bytes())
            .idempotent(true)
            .throttled_when(throttled)
            .credential(self.elb.clone());
        let xml = |body: &[u8]| {
            let text = std::str::from_utf8(body).map_err(|e| e.to_string())?;
            roxmltree::Document::parse(text).map(|_| ()).map_err(|e| format!("not XML: {e}"))
        };
        let reply = self.send(call, xml, what, shutdown, |r| self.xml_error(r, what)).await?;
        Ok(reply.text())
    }

    /// Sends `call` until its answer is a success that `parses` (a read is asked again
    /// after a garbled answer, as the JSON platforms' are; a write never is), or fails.
    async fn send(
        &self,
        call: Call,
        parses: fn(&[u8]) -> Result<(), String>,
        what: &str,
        shutdown: &Shutdown,
        refused: impl Fn(&Reply) -> ProviderError,
    ) -> Result<Reply, ProviderError> {
        let tries = if call.idempotent { GARBLED_TRIES } else { 1 };
        let send = || async {
            self.calls.fetch_add(1, Ordering::Relaxed);
            let reply = self.http.send(&call, shutdown).await.map_err(ProviderError::from_http)?;
            self.calls.fetch_add(reply.retries as usize, Ordering::Relaxed);
            match reply.is_success() {
                true => Ok(reply),
                false => Err(refused(&reply)),
            }
        };
        until_readable("AWS", what, tries, shutdown, send, parses, |e: &String| self.garbled(what, e)).await
    }

    fn garbled(&self, what: &str, e: &str) -> ProviderError {
        ProviderError::Unavailable(format!(
            "AWS's answer to {what} was not what its API describes ({e}); re-run, or check health.aws.amazon.com"
        ))
    }

    fn ecs_error(&self, reply: &Reply, what: &str) -> ProviderError {
        let body: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
        let code = body.get("__type").and_then(Value::as_str).unwrap_or_default();
        let code = code.rsplit('#').next().unwrap_or(code).to_string();
        let message = body
            .get("message")
            .or_else(|| body.get("Message"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&reply.body).chars().take(200).collect());
        classify(AwsError { status: reply.status, code, message: self.http.redactor().redact(&message) }, what)
    }

    fn xml_error(&self, reply: &Reply, what: &str) -> ProviderError {
        let text = reply.text();
        let doc = roxmltree::Document::parse(&text).ok();
        let field = |name: &str| {
            doc.as_ref()
                .and_then(|d| d.descendants().find(|n| n.has_tag_name(name)))
                .and_then(|n| n.text())
                .map(str::to_string)
        };
        let message = field("Message").unwrap_or_else(|| text.chars().take(200).collect());
        let error = AwsError {
            status: reply.status,
            code: field("Code").unwrap_or_default(),
            message: self.http.redactor().redact(&message),
        };
        classify(error, what)
    }
}

/// What an AWS error means for the run.
pub fn classify(e: AwsError, what: &str) -> ProviderError {
    let said = format!("{}: {}", e.code, e.message);
    match (e.status, e.code.as_str()) {
        (_, "ExpiredTokenException" | "ExpiredToken" | "RequestExpired") => ProviderError::Failed(format!(
            "AWS says the keys ran out to {what} ({said}); give keys that last the whole run (deploy-timeout and rollback-timeout), or role-to-assume, whose keys are renewed"
        )),
        (_, "UnrecognizedClientException" | "InvalidClientTokenId") => {
            ProviderError::Failed(format!(
                "AWS refused the credentials to {what} ({said}); check aws-access-key-id and aws-secret-access-key, or role-to-assume"
            ))
        }
        (_, "InvalidSignatureException" | "SignatureDoesNotMatch") => ProviderError::Failed(format!(
            "AWS refused the signature to {what} ({said}); check aws-secret-access-key and that the runner's clock is right"
        )),
        (_, "AccessDeniedException" | "AccessDenied" | "UnauthorizedOperation") => {
            ProviderError::PermissionDenied { provider: "AWS", operation: format!("{what} ({said})") }
        }
        (_, "ClusterNotFoundException" | "ServiceNotFoundException" | "TargetGroupNotFound") => {
            ProviderError::Failed(format!(
                "AWS could not {what} ({said}); check the cluster's and the service's names (aws ecs list-services --cluster CLUSTER lists them) and that the keys may read them"
            ))
        }
        (400 | 429, c) if THROTTLES.contains(&c) => {
            ProviderError::RateLimited {
                message: format!("AWS kept throttling {what} after retries ({said}); re-run in a minute"),
                until: None,
            }
        }
        (500..=599, _) => ProviderError::Unavailable(format!("AWS answered {} to {what}: {said}", e.status)),
        _ => ProviderError::Failed(format!("AWS refused to {what}: {said}")),
    }
}

/// The `member` elements of every `list` element (ELBv2's lists), in order.
pub fn xml_members<'a>(doc: &'a roxmltree::Document<'a>, list: &str) -> Vec<roxmltree::Node<'a, 'a>> {
    doc.descendants()
        .filter(|n| n.has_tag_name(list))
        .flat_map(|l| l.children().filter(|c| c.has_tag_name("member")))
        .collect()
}

/// The text of child `name` (at any depth) of `node`.
pub fn xml_text(node: roxmltree::Node, name: &str) -> Option<String> {
    node.descendants().find(|n| n.has_tag_name(name)).and_then(|n| n.text()).map(|t| t.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_errors_mean_what_they_say() {
        let e = |status, code: &str| {
            classify(AwsError { status, code: code.into(), message: "m".into() }, "read service web")
        };
        let missing = e(400, "ServiceNotFoundException").to_string();
        assert!(missing.contains("check the cluster's and the service's names"), "{missing}");
        assert!(matches!(e(400, "ThrottlingException"), ProviderError::RateLimited { .. }));
        assert!(e(400, "ThrottlingException").is_transient(), "a throttle is asked again, never a failure");
        assert!(e(503, "ServiceUnavailableException").is_transient());
        assert!(matches!(e(400, "AccessDeniedException"), ProviderError::PermissionDenied { .. }));
        let refused = e(400, "InvalidParameterException").to_string();
        assert!(refused.contains("InvalidParameterException: m"), "{refused}");
        assert!(!e(403, "InvalidSignatureException").is_transient());
    }

    #[test]
    fn endpoints_are_regional_unless_one_base_is_given() {
        let e = Endpoints::new("eu-west-1", None).unwrap();
        assert_eq!(e.ecs.as_str(), "https://ecs.eu-west-1.amazonaws.com/");
        assert_eq!(e.elb.as_str(), "https://elasticloadbalancing.eu-west-1.amazonaws.com/");
        assert_eq!(e.sts.as_str(), "https://sts.eu-west-1.amazonaws.com/");
        let base = url::Url::parse("http://127.0.0.1:4566/").unwrap();
        let e = Endpoints::new("eu-west-1", Some(&base)).unwrap();
        assert_eq!((e.ecs.as_str(), e.elb.as_str(), e.sts.as_str()), (base.as_str(), base.as_str(), base.as_str()));
    }
}
