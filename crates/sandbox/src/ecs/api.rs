//! The emulator's wire: ECS's JSON 1.1 protocol (POST / with X-Amz-Target, errors as
//! `{"__type", "message"}`), the query protocol of ELBv2 and STS (a form in, XML out,
//! errors as `<ErrorResponse><Error><Code>`), and GitHub's OIDC token endpoint. Every
//! request but AssumeRoleWithWebIdentity (which the token itself proves) must carry a
//! SigV4 signature by a key the emulator knows: its own, or one STS handed out.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use hyper::header::HeaderValue;
use hyper::Method;
use serde_json::{json, Map, Value};

use super::cluster::{self, epoch, Cluster, TaskDefinition};
use super::sigv4;
use super::{service_json, ACCESS_KEY_ID, ID_TOKEN_REQUEST_TOKEN, ROLE_ARN, SECRET_ACCESS_KEY};
use crate::kit::{Call, Emulator, Faults, Gate};
use crate::server::{self, Request, Response};

const ECS_PREFIX: &str = "AmazonEC2ContainerServiceV20141113.";
const ELB_NS: &str = "http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/";
const STS_NS: &str = "https://sts.amazonaws.com/doc/2011-06-15/";
const AUDIENCE: &str = "sts.amazonaws.com";
/// What DescribeTaskDefinition answers and RegisterTaskDefinition does not take.
const OUTPUT_ONLY: [&str; 9] = [
    "taskDefinitionArn",
    "revision",
    "status",
    "requiresAttributes",
    "compatibilities",
    "registeredAt",
    "registeredBy",
    "deregisteredAt",
    "deleteRequestedAt",
];

/// A key the emulator takes: its secret, and the session token that must come with it.
struct Key {
    secret: String,
    session_token: Option<String>,
}

pub struct Api {
    cluster: Arc<Cluster>,
    keys: Mutex<BTreeMap<String, Key>>,
    /// OIDC tokens handed out, with their audience.
    id_tokens: Mutex<BTreeMap<String, String>>,
    writes: Mutex<Vec<Call>>,
    samples: Option<PathBuf>,
    /// The kinds of answer kept so far, by operation.
    sample_counts: Mutex<BTreeMap<String, Vec<String>>>,
    /// RegisterTaskDefinition answers ClientException (a test's broken prepare).
    pub refuse_registrations: std::sync::atomic::AtomicBool,
    /// The most a page of ListTasks or ListTaskDefinitions holds.
    list_page: usize,
}

enum Protocol {
    /// ECS: the operation from X-Amz-Target.
    Json(String),
    /// ELBv2 or STS: the form's Action and its fields.
    Query(String, BTreeMap<String, String>),
}

fn protocol(request: &Request) -> Option<Protocol> {
    if let Some(target) = request.header("x-amz-target") {
        return Some(Protocol::Json(target.strip_prefix(ECS_PREFIX).unwrap_or(target).to_string()));
    }
    if request.method == Method::POST {
        let form: BTreeMap<String, String> = form_urlencoded::parse(&request.body).into_owned().collect();
        return form.get("Action").cloned().map(|a| Protocol::Query(a, form));
    }
    None
}

/// The states and reasons an answer names, in order: what tells one kind of answer
/// from another for the samples (`"rolloutState":"FAILED"`, `<State>draining</State>`).
fn states(body: &str) -> String {
    const KEYS: [&str; 8] =
        ["rolloutState", "lastStatus", "desiredStatus", "status", "stopCode", "State", "Reason", "Code"];
    let mut found: Vec<String> = Vec::new();
    for key in KEYS {
        for quoted in [format!("\"{key}\":\""), format!("<{key}>")] {
            let mut rest = body;
            while let Some(at) = rest.find(&quoted) {
                rest = &rest[at + quoted.len()..];
                let value: String = rest.chars().take_while(|c| *c != '"' && *c != '<').collect();
                let said = format!("{key}={value}");
                if !found.contains(&said) {
                    found.push(said);
                }
            }
        }
    }
    found.sort();
    found.join(",")
}

/// A request's list of strings under `key`; empty when it sends none.
fn strings(body: &Value, key: &str) -> Vec<String> {
    body.get(key)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default()
}

/// The code AWS uses for a status a fault injects.
fn fault_code(status: u16, json: bool) -> &'static str {
    match (status, json) {
        (429, true) => "ThrottlingException",
        (429, false) => "Throttling",
        (503, true) => "ServiceUnavailableException",
        (503, false) => "ServiceUnavailable",
        (403, true) => "AccessDeniedException",
        (403, false) => "AccessDenied",
        (500..=599, true) => "ServerException",
        (500..=599, false) => "InternalFailure",
        (_, true) => "ClientException",
        (_, false) => "ValidationError",
    }
}

pub fn ecs_error(status: u16, code: &str, message: &str) -> Response {
    let mut r = server::json(status, &json!({ "__type": code, "message": message }));
    r.headers_mut().insert("content-type", HeaderValue::from_static("application/x-amz-json-1.1"));
    r
}

pub fn xml_error(status: u16, code: &str, message: &str, ns: &str) -> Response {
    let kind = if status >= 500 { "Receiver" } else { "Sender" };
    let body = format!(
        "<ErrorResponse xmlns=\"{ns}\"><Error><Type>{kind}</Type><Code>{}</Code><Message>{}</Message></Error><RequestId>{}</RequestId></ErrorResponse>",
        esc(code),
        esc(message),
        crate::digitalocean::uuid()
    );
    xml(status, body)
}

fn xml(status: u16, body: String) -> Response {
    let mut r = server::text(status, body);
    r.headers_mut().insert("content-type", HeaderValue::from_static("text/xml"));
    r
}

fn esc(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn iso(epoch_secs: f64) -> String {
    let secs = epoch_secs as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.000Z", rest / 3600, rest % 3600 / 60, rest % 60)
}

/// The date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

impl Api {
    pub fn new(cluster: Arc<Cluster>, list_page: usize) -> Api {
        let mut keys = BTreeMap::new();
        keys.insert(ACCESS_KEY_ID.to_string(), Key { secret: SECRET_ACCESS_KEY.into(), session_token: None });
        Api {
            cluster,
            keys: Mutex::new(keys),
            id_tokens: Mutex::new(BTreeMap::new()),
            writes: Mutex::new(Vec::new()),
            samples: std::env::var_os("SAFE_DEPLOY_ECS_SAMPLES").map(PathBuf::from),
            sample_counts: Mutex::new(BTreeMap::new()),
            refuse_registrations: Default::default(),
            list_page: list_page.max(1),
        }
    }

    pub fn writes(&self) -> Vec<Call> {
        self.writes.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Keeps a request and its answer for CI's check against botocore's models: each
    /// operation's answers of a kind not kept yet (their states and reasons differ: a
    /// FAILED deployment, a draining target), up to 40 an operation. Written at once, by
    /// this process alone (its pid in the name): tests run side by side.
    fn sample(&self, service: &str, op: &str, request: &Value, response: &Response) {
        let Some(dir) = &self.samples else { return };
        let mut body = std::pin::pin!(http_body_util::BodyExt::collect(response.body().clone()));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        // A full body is there already: the first poll has it.
        let std::task::Poll::Ready(Ok(body)) = body.as_mut().poll(&mut cx) else { return };
        let body = body.to_bytes();
        let status = response.status().as_u16();
        let kind = format!("{status} {}", states(&String::from_utf8_lossy(&body)));
        let n = {
            let mut kept = self.sample_counts.lock().unwrap_or_else(|p| p.into_inner());
            let kinds = kept.entry(format!("{service}.{op}")).or_default();
            if kinds.len() >= 40 || kinds.contains(&kind) {
                return;
            }
            kinds.push(kind);
            kinds.len()
        };
        let ext = if service == "ecs" { "json" } else { "xml" };
        let name = format!("{service}.{op}.{}-{n}", std::process::id());
        let _ = std::fs::create_dir_all(dir);
        let _ = std::fs::write(dir.join(format!("{name}.request.json")), request.to_string());
        let _ = std::fs::write(dir.join(format!("{name}.response.{status}.{ext}")), &body);
    }

    /// The signature check: Ok(service) names the signed-for service.
    fn signed(&self, request: &Request) -> Result<String, sigv4::Refused> {
        let auth =
            request.header("authorization").ok_or_else(|| sigv4::Refused::Missing("no Authorization header".into()))?;
        let signed = sigv4::parse(auth)?;
        let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let key = keys.get(&signed.access_key).ok_or_else(|| sigv4::Refused::UnknownKey(signed.access_key.clone()))?;
        if key.session_token.as_deref() != request.header("x-amz-security-token") {
            return Err(sigv4::Refused::UnknownKey(signed.access_key.clone()));
        }
        if signed.region != self.cluster.names.region {
            return Err(sigv4::Refused::Mismatch);
        }
        let now = epoch() as i64;
        sigv4::verify(request, &signed, &key.secret, now)?;
        Ok(signed.service)
    }

    fn oidc(&self, request: &Request) -> Response {
        if request.header("authorization") != Some(&format!("Bearer {ID_TOKEN_REQUEST_TOKEN}")) {
            return server::json(
                401,
                &json!({"message": "Bad credentials: ACTIONS_ID_TOKEN_REQUEST_TOKEN is not this job's"}),
            );
        }
        let audience = request.param("audience").unwrap_or_default();
        let token = format!("sandbox-oidc.{}", crate::digitalocean::uuid().replace('-', ""));
        self.id_tokens.lock().unwrap_or_else(|p| p.into_inner()).insert(token.clone(), audience);
        server::json(200, &json!({ "count": 1, "value": token }))
    }

    fn assume_role(&self, form: &BTreeMap<String, String>) -> Response {
        let token = form.get("WebIdentityToken").cloned().unwrap_or_default();
        let audience = self.id_tokens.lock().unwrap_or_else(|p| p.into_inner()).get(&token).cloned();
        match audience.as_deref() {
            None => {
                return xml_error(
                    400,
                    "InvalidIdentityToken",
                    "The web identity token is not one the OIDC provider issued.",
                    STS_NS,
                )
            }
            Some(a) if a != AUDIENCE => {
                return xml_error(400, "InvalidIdentityToken", &format!("Incorrect token audience: {a}"), STS_NS)
            }
            Some(_) => {}
        }
        if form.get("RoleArn").map(String::as_str) != Some(ROLE_ARN) {
            return xml_error(403, "AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity", STS_NS);
        }
        let id = format!("ASIA{}", crate::digitalocean::uuid().replace('-', "")[..16].to_uppercase());
        let secret = crate::digitalocean::uuid().replace('-', "");
        let session = format!("FwoGZXIvYXdzE{}", crate::digitalocean::uuid().replace('-', ""));
        self.keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), Key { secret: secret.clone(), session_token: Some(session.clone()) });
        let session_name = form.get("RoleSessionName").cloned().unwrap_or_default();
        let expires = iso(epoch() + 3600.0);
        xml(
            200,
            format!(
                "<AssumeRoleWithWebIdentityResponse xmlns=\"{STS_NS}\"><AssumeRoleWithWebIdentityResult>\
<Credentials><AccessKeyId>{id}</AccessKeyId><SecretAccessKey>{secret}</SecretAccessKey><SessionToken>{session}</SessionToken><Expiration>{expires}</Expiration></Credentials>\
<SubjectFromWebIdentityToken>repo:acme/web:ref:refs/heads/main</SubjectFromWebIdentityToken>\
<AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/safe-deploy/{}</Arn><AssumedRoleId>AROA3XFRBF23EXAMPLE:{}</AssumedRoleId></AssumedRoleUser>\
<Provider>arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com</Provider><Audience>{AUDIENCE}</Audience>\
</AssumeRoleWithWebIdentityResult><ResponseMetadata><RequestId>{}</RequestId></ResponseMetadata></AssumeRoleWithWebIdentityResponse>",
                esc(&session_name),
                esc(&session_name),
                crate::digitalocean::uuid()
            ),
        )
    }

    fn record_write(&self, request: &Request, op: &str) {
        let call = Call {
            method: request.method.to_string(),
            path: request.path.clone(),
            query: None,
            status: 200,
            target: Some(op.to_string()),
            body: serde_json::from_slice(&request.body).ok(),
        };
        self.writes.lock().unwrap_or_else(|p| p.into_inner()).push(call);
    }

    fn ecs(&self, request: &Request, op: &str) -> Response {
        let body: Value = match serde_json::from_slice(&request.body) {
            Ok(Value::Object(m)) => Value::Object(m),
            _ => return ecs_error(400, "SerializationException", "The request body is not a JSON object"),
        };
        let c = &self.cluster;
        let n = &c.names;
        let str_of = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let cluster_ok = |v: &Value| {
            let given = str_of(v, "cluster").unwrap_or_else(|| "default".into());
            given == n.cluster || given == n.cluster_arn()
        };
        let service_ok = |name: &str| name == n.service || name == n.service_arn();
        let answer = match op {
            "DescribeServices" => {
                if !cluster_ok(&body) {
                    return ecs_error(400, "ClusterNotFoundException", "Cluster not found.");
                }
                let names: Vec<String> = strings(&body, "services");
                if names.is_empty() {
                    return ecs_error(400, "InvalidParameterException", "Services cannot be empty.");
                }
                let (mut services, mut failures) = (Vec::new(), Vec::new());
                for name in names {
                    if service_ok(&name) {
                        services.push(service_json(c));
                    } else {
                        let arn = format!("arn:aws:ecs:{}:{}:service/{}/{name}", n.region, n.account, n.cluster);
                        failures.push(json!({"arn": arn, "reason": "MISSING"}));
                    }
                }
                json!({ "services": services, "failures": failures })
            }
            "DescribeTaskDefinition" => {
                let name = str_of(&body, "taskDefinition").unwrap_or_default();
                let s = c.lock();
                let Some(d) = s.definition(&name) else {
                    return ecs_error(400, "ClientException", "Unable to describe task definition.");
                };
                let mut answer = json!({ "taskDefinition": definition_json(d) });
                let tags = body.get("include").and_then(Value::as_array).is_some_and(|i| i.iter().any(|x| x == "TAGS"));
                if tags {
                    answer["tags"] = d.tags.clone();
                }
                answer
            }
            "RegisterTaskDefinition" => {
                let family = str_of(&body, "family").unwrap_or_default();
                if self.refuse_registrations.load(std::sync::atomic::Ordering::SeqCst) {
                    return ecs_error(400, "ClientException", "Too many revisions of this family (sandbox refusal).");
                }
                if family.is_empty() {
                    return ecs_error(400, "ClientException", "Family must not be empty.");
                }
                if let Some(field) = OUTPUT_ONLY.iter().find(|f| body.get(**f).is_some()) {
                    return ecs_error(400, "ClientException", &format!("Unknown parameter in input: \"{field}\""));
                }
                let containers =
                    body.get("containerDefinitions").and_then(Value::as_array).cloned().unwrap_or_default();
                if containers.is_empty() {
                    return ecs_error(400, "ClientException", "Container list cannot be empty.");
                }
                if containers.iter().any(|c| str_of(c, "name").is_none() || str_of(c, "image").is_none()) {
                    return ecs_error(
                        400,
                        "ClientException",
                        "Container.name and Container.image should not be null or empty.",
                    );
                }
                let mut s = c.lock();
                let revision =
                    s.definitions.iter().filter(|d| d.family == family).map(|d| d.revision).max().unwrap_or(0) + 1;
                let mut stored = body.clone();
                let tags = stored.as_object_mut().and_then(|m| m.remove("tags")).unwrap_or(json!([]));
                let d = TaskDefinition {
                    arn: n.definition_arn(&family, revision),
                    family,
                    revision,
                    body: stored,
                    tags: tags.clone(),
                    registered_at: epoch(),
                };
                let answer = json!({ "taskDefinition": definition_json(&d), "tags": tags });
                s.definitions.push(d);
                drop(s);
                self.record_write(request, op);
                answer
            }
            "UpdateService" => {
                if !cluster_ok(&body) {
                    return ecs_error(400, "ClusterNotFoundException", "Cluster not found.");
                }
                if !service_ok(&str_of(&body, "service").unwrap_or_default()) {
                    return ecs_error(400, "ServiceNotFoundException", "Service not found.");
                }
                let td = match str_of(&body, "taskDefinition") {
                    Some(name) => match c.lock().definition(&name) {
                        Some(d) => Some(d.arn.clone()),
                        None => return ecs_error(400, "ClientException", "TaskDefinition not found."),
                    },
                    None => None,
                };
                let desired = body.get("desiredCount").and_then(Value::as_u64).map(|n| n as u32);
                let force = body.get("forceNewDeployment").and_then(Value::as_bool).unwrap_or(false);
                c.update(td, desired, force);
                self.record_write(request, op);
                json!({ "service": service_json(c) })
            }
            "ListTasks" => {
                if !cluster_ok(&body) {
                    return ecs_error(400, "ClusterNotFoundException", "Cluster not found.");
                }
                let want = str_of(&body, "desiredStatus").unwrap_or_else(|| "RUNNING".into());
                // Every task is the one service's: another service has none.
                let ours = str_of(&body, "serviceName").is_none_or(|name| service_ok(&name));
                let s = c.lock();
                let arns: Vec<&str> =
                    s.tasks.iter().filter(|t| ours && t.desired == want).map(|t| t.arn.as_str()).collect();
                // Pages of maxResults (at most 100, ECS's own), or the sandbox's smaller pages.
                let asked = body.get("maxResults").and_then(Value::as_u64).unwrap_or(100).clamp(1, 100) as usize;
                let page = asked.min(self.list_page);
                let from: usize = str_of(&body, "nextToken").and_then(|t| t.parse().ok()).unwrap_or(0);
                let shown: Vec<&str> = arns.iter().skip(from).take(page).copied().collect();
                let mut answer = json!({ "taskArns": shown });
                if from + page < arns.len() {
                    answer["nextToken"] = json!((from + page).to_string());
                }
                answer
            }
            "DescribeTasks" => {
                if !cluster_ok(&body) {
                    return ecs_error(400, "ClusterNotFoundException", "Cluster not found.");
                }
                let asked: Vec<String> = strings(&body, "tasks");
                if asked.is_empty() || asked.len() > 100 {
                    return ecs_error(400, "InvalidParameterException", "Tasks cannot be empty or more than 100.");
                }
                let s = c.lock();
                let (mut tasks, mut failures) = (Vec::new(), Vec::new());
                for arn in asked {
                    match s.tasks.iter().find(|t| t.arn == arn || t.id() == arn) {
                        Some(t) => tasks.push(cluster::task_json(n, t)),
                        None => failures.push(json!({"arn": arn, "reason": "MISSING"})),
                    }
                }
                json!({ "tasks": tasks, "failures": failures })
            }
            "ListServiceDeployments" => {
                if !cluster_ok(&body) {
                    return ecs_error(400, "ClusterNotFoundException", "Cluster not found.");
                }
                if !service_ok(&str_of(&body, "service").unwrap_or_default()) {
                    return ecs_error(400, "ServiceNotFoundException", "Service not found.");
                }
                let wanted: Vec<String> = strings(&body, "status");
                let s = c.lock();
                // Newest first.
                let all = s.deployments.iter().chain(s.retired.iter().rev());
                let mut list: Vec<Value> = all.map(|d| cluster::service_deployment_json(c, &s, d, false)).collect();
                list.sort_by(|a, b| {
                    b["createdAt"].as_f64().partial_cmp(&a["createdAt"].as_f64()).unwrap_or(std::cmp::Ordering::Equal)
                });
                list.retain(|d| wanted.is_empty() || wanted.iter().any(|w| d["status"] == w.as_str()));
                json!({ "serviceDeployments": list })
            }
            "DescribeServiceDeployments" => {
                let asked: Vec<String> = strings(&body, "serviceDeploymentArns");
                if asked.is_empty() || asked.len() > 20 {
                    return ecs_error(
                        400,
                        "InvalidParameterException",
                        "serviceDeploymentArns must name 1 to 20 deployments.",
                    );
                }
                let s = c.lock();
                let (mut found, mut failures) = (Vec::new(), Vec::new());
                for arn in asked {
                    let d = s
                        .deployments
                        .iter()
                        .chain(s.retired.iter())
                        .find(|d| arn.ends_with(&format!("/{}", d.id.trim_start_matches("ecs-svc/"))));
                    match d {
                        Some(d) => found.push(cluster::service_deployment_json(c, &s, d, true)),
                        None => failures.push(json!({"arn": arn, "reason": "MISSING"})),
                    }
                }
                json!({ "serviceDeployments": found, "failures": failures })
            }
            "ListTaskDefinitions" => {
                let prefix = str_of(&body, "familyPrefix").unwrap_or_default();
                let s = c.lock();
                let mut defs: Vec<&TaskDefinition> =
                    s.definitions.iter().filter(|d| d.family.starts_with(&prefix)).collect();
                defs.sort_by_key(|d| (d.family.clone(), d.revision));
                if str_of(&body, "sort").as_deref() == Some("DESC") {
                    defs.reverse();
                }
                let page = body.get("maxResults").and_then(Value::as_u64).unwrap_or(100).clamp(1, 100) as usize;
                let page = page.min(self.list_page);
                let from: usize = str_of(&body, "nextToken").and_then(|t| t.parse().ok()).unwrap_or(0);
                let shown: Vec<String> = defs.iter().skip(from).take(page).map(|d| d.arn.clone()).collect();
                let mut answer = json!({ "taskDefinitionArns": shown });
                if from + page < defs.len() {
                    answer["nextToken"] = json!((from + page).to_string());
                }
                answer
            }
            other => {
                return ecs_error(
                    400,
                    "UnknownOperationException",
                    &format!("{other} is not an operation the sandbox's ECS serves"),
                )
            }
        };
        let mut r = server::json(200, &answer);
        r.headers_mut().insert("content-type", HeaderValue::from_static("application/x-amz-json-1.1"));
        r
    }

    fn elb(&self, action: &str, form: &BTreeMap<String, String>) -> Response {
        let c = &self.cluster;
        let n = &c.names;
        let tg_arn = n.target_group_arn();
        let tg = &c.tg;
        let request_id = crate::digitalocean::uuid();
        let wrap = |result: String| {
            xml(
                200,
                format!(
                    "<{action}Response xmlns=\"{ELB_NS}\"><{action}Result>{result}</{action}Result><ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata></{action}Response>"
                ),
            )
        };
        let not_found = || xml_error(400, "TargetGroupNotFound", "One or more target groups not found", ELB_NS);
        match action {
            "DescribeTargetGroups" => {
                let asked: Vec<&String> =
                    form.iter().filter(|(k, _)| k.starts_with("TargetGroupArns.member.")).map(|(_, v)| v).collect();
                if asked.iter().any(|a| **a != tg_arn) {
                    return not_found();
                }
                wrap(format!(
                    "<TargetGroups><member><TargetGroupArn>{tg_arn}</TargetGroupArn><TargetGroupName>{}</TargetGroupName>\
<Protocol>HTTP</Protocol><Port>{}</Port><VpcId>vpc-0a1b2c3d4e5f67890</VpcId><HealthCheckProtocol>HTTP</HealthCheckProtocol>\
<HealthCheckPort>traffic-port</HealthCheckPort><HealthCheckEnabled>true</HealthCheckEnabled>\
<HealthCheckIntervalSeconds>{}</HealthCheckIntervalSeconds><HealthCheckTimeoutSeconds>{}</HealthCheckTimeoutSeconds>\
<HealthyThresholdCount>{}</HealthyThresholdCount><UnhealthyThresholdCount>{}</UnhealthyThresholdCount>\
<HealthCheckPath>{}</HealthCheckPath><Matcher><HttpCode>{}</HttpCode></Matcher>\
<LoadBalancerArns><member>{}</member></LoadBalancerArns><TargetType>ip</TargetType><ProtocolVersion>HTTP1</ProtocolVersion>\
<IpAddressType>ipv4</IpAddressType></member></TargetGroups>",
                    n.target_group,
                    n.container_port,
                    tg.interval_secs,
                    tg.timeout_secs,
                    tg.healthy,
                    tg.unhealthy,
                    esc(&tg.path),
                    esc(&tg.matcher),
                    n.load_balancer_arn()
                ))
            }
            "DescribeTargetGroupAttributes" => {
                if form.get("TargetGroupArn") != Some(&tg_arn) {
                    return not_found();
                }
                let attrs = [
                    ("deregistration_delay.timeout_seconds", tg.deregistration_delay_secs.to_string()),
                    ("stickiness.enabled", "false".into()),
                    ("load_balancing.algorithm.type", "round_robin".into()),
                    ("slow_start.duration_seconds", "0".into()),
                ];
                let members: String =
                    attrs.iter().map(|(k, v)| format!("<member><Key>{k}</Key><Value>{v}</Value></member>")).collect();
                wrap(format!("<Attributes>{members}</Attributes>"))
            }
            "DescribeTargetHealth" => {
                if form.get("TargetGroupArn") != Some(&tg_arn) {
                    return not_found();
                }
                let s = c.lock();
                let mut members = String::new();
                for t in s.tasks.iter().filter(|t| t.registered || t.draining_until.is_some()) {
                    let Some(port) = t.port else { continue };
                    let (state, reason) = cluster::target_health(c, t);
                    let reason = reason
                        .map(|(r, d)| format!("<Reason>{r}</Reason><Description>{}</Description>", esc(&d)))
                        .unwrap_or_default();
                    members.push_str(&format!(
                        "<member><Target><Id>{}</Id><Port>{port}</Port></Target><HealthCheckPort>{port}</HealthCheckPort>\
<TargetHealth><State>{state}</State>{reason}</TargetHealth></member>",
                        t.ip
                    ));
                }
                wrap(format!("<TargetHealthDescriptions>{members}</TargetHealthDescriptions>"))
            }
            other => {
                xml_error(400, "InvalidAction", &format!("{other} is not an action the sandbox's ELBv2 serves"), ELB_NS)
            }
        }
    }

    fn sts(&self, action: &str) -> Response {
        match action {
            "GetCallerIdentity" => xml(
                200,
                format!(
                    "<GetCallerIdentityResponse xmlns=\"{STS_NS}\"><GetCallerIdentityResult><Arn>arn:aws:iam::123456789012:user/sandbox</Arn>\
<UserId>AIDASANDBOXEXAMPLE</UserId><Account>123456789012</Account></GetCallerIdentityResult>\
<ResponseMetadata><RequestId>{}</RequestId></ResponseMetadata></GetCallerIdentityResponse>",
                    crate::digitalocean::uuid()
                ),
            ),
            other => xml_error(400, "InvalidAction", &format!("{other} is not an action the sandbox's STS serves"), STS_NS),
        }
    }
}

/// A task definition as DescribeTaskDefinition shows it.
fn definition_json(d: &TaskDefinition) -> Value {
    let mut out: Map<String, Value> = d.body.as_object().cloned().unwrap_or_default();
    out.insert("taskDefinitionArn".into(), json!(d.arn));
    out.insert("revision".into(), json!(d.revision));
    out.insert("status".into(), json!("ACTIVE"));
    out.insert("compatibilities".into(), json!(["EC2", "FARGATE"]));
    out.insert("requiresAttributes".into(), json!([{"name": "com.amazonaws.ecs.capability.docker-remote-api.1.18"}]));
    out.insert("registeredAt".into(), json!(d.registered_at));
    out.insert("registeredBy".into(), json!("arn:aws:iam::123456789012:role/safe-deploy"));
    Value::Object(out)
}

impl Emulator for Api {
    type Faults = Faults;

    fn gate(&self) -> &Gate<Faults> {
        &self.cluster.gate
    }

    fn error(&self, status: u16, message: &str) -> Response {
        ecs_error(status, fault_code(status, true), message)
    }

    fn fault(&self, request: &Request, status: u16, message: &str) -> Response {
        let json = request.header("x-amz-target").is_some();
        // AWS throttles with a 400 whose code says so, not a 429.
        let (status, message) = if status == 429 { (400, "Rate exceeded") } else { (status, message) };
        let code = fault_code(if message == "Rate exceeded" { 429 } else { status }, json);
        match json {
            true => ecs_error(status, code, message),
            false => xml_error(status, code, message, ELB_NS),
        }
    }

    fn is_read(&self, request: &Request) -> bool {
        match protocol(request) {
            Some(Protocol::Json(op)) => op.starts_with("Describe") || op.starts_with("List"),
            Some(Protocol::Query(action, _)) => {
                action.starts_with("Describe") || action.starts_with("Get") || action == "AssumeRoleWithWebIdentity"
            }
            None => request.method == Method::GET,
        }
    }

    async fn route(&self, request: &Request) -> Response {
        if request.method == Method::GET && request.path == "/oidc/token" {
            return self.oidc(request);
        }
        let Some(protocol) = protocol(request) else {
            return ecs_error(
                404,
                "UnknownOperationException",
                "send X-Amz-Target (ECS) or a form with Action (ELBv2, STS)",
            );
        };
        let json = matches!(protocol, Protocol::Json(_));
        if let Protocol::Query(action, form) = &protocol {
            if action == "AssumeRoleWithWebIdentity" {
                let answer = self.assume_role(form);
                self.sample("sts", action, &json!(form), &answer);
                return answer;
            }
        }
        let service = match self.signed(request) {
            Ok(service) => service,
            Err(refused) => {
                let status = 403;
                return match json {
                    true => ecs_error(status, refused.code(true), &refused.message()),
                    false => xml_error(status, refused.code(false), &refused.message(), ELB_NS),
                };
            }
        };
        match protocol {
            Protocol::Json(op) if service == "ecs" => {
                let answer = self.ecs(request, &op);
                let sent: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
                self.sample("ecs", &op, &sent, &answer);
                answer
            }
            Protocol::Query(action, form) if service == "elasticloadbalancing" => {
                let answer = self.elb(&action, &form);
                self.sample("elbv2", &action, &json!(form), &answer);
                answer
            }
            Protocol::Query(action, form) if service == "sts" => {
                let answer = self.sts(&action);
                self.sample("sts", &action, &json!(form), &answer);
                answer
            }
            _ => match json {
                true => ecs_error(
                    400,
                    "InvalidSignatureException",
                    &format!("Credential should be scoped to correct service: 'ecs', not '{service}'"),
                ),
                false => xml_error(
                    400,
                    "SignatureDoesNotMatch",
                    &format!("Credential should be scoped to the action's service, not '{service}'"),
                    ELB_NS,
                ),
            },
        }
    }

    fn decorate(&self, _request: &Request, response: &mut Response) {
        if let Ok(v) = HeaderValue::from_str(&crate::digitalocean::uuid()) {
            response.headers_mut().insert("x-amzn-requestid", v);
        }
    }

    fn control_endpoints(&self) -> &'static [&'static str] {
        &[]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_told_apart_by_the_states_they_name() {
        let failed = r#"{"deployments":[{"status":"PRIMARY","rolloutState":"FAILED"}]}"#;
        let done = r#"{"deployments":[{"status":"PRIMARY","rolloutState":"COMPLETED"}]}"#;
        assert_eq!(states(failed), "rolloutState=FAILED,status=PRIMARY");
        assert_ne!(states(failed), states(done));
        let xml = "<member><TargetHealth><State>draining</State><Reason>Target.DeregistrationInProgress</Reason></TargetHealth></member>";
        assert_eq!(states(xml), "Reason=Target.DeregistrationInProgress,State=draining");
    }

    #[test]
    fn dates_are_written_as_aws_writes_them() {
        assert_eq!(iso(0.0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso(1_796_605_323.5), "2026-12-07T01:02:03.000Z");
    }
}
