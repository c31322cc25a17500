//! Provider `ecs`: an Amazon ECS service (Fargate or EC2) behind an Application Load
//! Balancer. The live task definition is recorded first (it is the rollback: ECS's own
//! rollback may already have fired by the time we look); a new revision is registered
//! from it (or from a template) with the new image; UpdateService starts a deployment,
//! followed by its id until it is PRIMARY, COMPLETED and every target of its tasks is
//! healthy in the target group. ECS's circuit breaker failing it, the id vanishing or
//! the service's task definition changing back means ECS rolled back: a failure, said
//! with ECS's own reason, never a success.
//!
//! - `settings`: the inputs and where the keys come from;
//! - `client`: the signed wire (ECS's JSON 1.1, ELBv2's query protocol) and AWS's errors;
//! - `task_definition`: the next revision, from the live one or a template;
//! - `rollout`: following a deployment (events, target states, stopped tasks' reasons).

pub mod client;
pub mod rollout;
pub mod settings;
pub mod task_definition;

use crate::inputs::{self, Group, InputSpec};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::registration::{EnvInput, Registration};
use super::{
    outlast, Capabilities, Context, Finding, Plan, PlannedBatch, Provider, ProviderError, ReleaseRef, Rollout,
    Severity, Snapshot, Source, Target,
};
use crate::http::HttpClient;
use client::{Aws, Endpoints};
use rollout::{EcsRollout, Service};
use settings::Settings;
use task_definition::image_of;

/// ECS's own inputs: in `action.yml`, the CLI's flags and docs/inputs.md through `inputs::INPUTS`.
pub const INPUTS: &[InputSpec] = &[
    input("cluster", "default", "AWS ECS: the cluster's name or ARN."),
    input("service", "", "AWS ECS: the service's name or ARN. Empty: app."),
    input("container-name", "", "AWS ECS: the container in the task definition whose image changes (as amazon-ecs-render-task-definition names it). Empty: the container the service's load balancer sends traffic to, or the only one."),
    input("task-definition", "", "AWS ECS: a task definition JSON file in the workspace to make the new revision from, as amazon-ecs-render-task-definition users keep one. Empty: the live task definition, tags included."),
    input("environment-variables", "", "AWS ECS: NAME=value lines set in that container's environment in the new revision; a name already there gets the new value."),
    input("aws-region", "", "AWS ECS: the region, e.g. us-east-1. Empty: AWS_REGION or AWS_DEFAULT_REGION."),
    input("role-to-assume", "", "AWS ECS: an IAM role ARN to assume with the runner's OIDC token (STS AssumeRoleWithWebIdentity, audience sts.amazonaws.com), so no long-lived keys are stored. The job needs permissions id-token: write."),
    input("aws-access-key-id", "", "AWS ECS: an access key id, when no role is assumed. Empty: AWS_ACCESS_KEY_ID.").secret(),
    input("aws-secret-access-key", "", "AWS ECS: its secret access key, from a secret; masked and never printed. Empty: AWS_SECRET_ACCESS_KEY.").secret(),
    input("aws-session-token", "", "AWS ECS: a session token that goes with temporary keys. Empty: AWS_SESSION_TOKEN.").secret(),
];

const fn input(name: &'static str, default: &'static str, description: &'static str) -> InputSpec {
    inputs::of(&["ecs"], Group::Provider("AWS ECS"), name, default, description)
}

pub const REGISTRATION: Registration = Registration {
    name: "ecs",
    title: "AWS ECS",
    token_env: &[],
    needs_token: false,
    file_api: false,
    image_optional: false,
    env: &[
        EnvInput { input: "aws-access-key-id", vars: &["AWS_ACCESS_KEY_ID"], set: "keys", on_runner: true },
        EnvInput { input: "aws-secret-access-key", vars: &["AWS_SECRET_ACCESS_KEY"], set: "keys", on_runner: true },
        EnvInput { input: "aws-session-token", vars: &["AWS_SESSION_TOKEN"], set: "keys", on_runner: true },
        EnvInput { input: "aws-region", vars: &["AWS_REGION", "AWS_DEFAULT_REGION"], set: "region", on_runner: true },
        // The AWS CLI's endpoint variables, and the sandbox's.
        EnvInput {
            input: "api-url",
            vars: &["AWS_ENDPOINT_URL_ECS", "AWS_ENDPOINT_URL", "ECS_API_URL"],
            set: "api-url",
            on_runner: false,
        },
        EnvInput { input: "cluster", vars: &["ECS_CLUSTER"], set: "cluster", on_runner: false },
        EnvInput { input: "service", vars: &["ECS_SERVICE"], set: "service", on_runner: false },
    ],
    defaults: settings::defaults,
    configure: settings::configure,
    inputs: &[INPUTS],
    #[cfg(feature = "sandbox")]
    demo: Some(crate::demo::ecs::start_demo),
    #[cfg(feature = "sandbox")]
    sandbox: Some(crate::demo::ecs::start_sandbox),
};

const NAME: &str = "ecs";

/// What a snapshot keeps: the task definition the service ran (its ARN: a revision never
/// changes) and the image of the container that changes. Not the definition itself: its
/// environment may hold what should be secret, and the snapshot is saved for the post step.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    task_definition: String,
    /// The container whose image changes, as chosen when the service was read.
    container: Option<String>,
    image: String,
}

/// "web:7 (registry/web:v2)": a revision and the image it runs.
pub fn label(task_definition: &str, image: &str) -> String {
    let revision = task_definition.rsplit('/').next().unwrap_or(task_definition);
    match image.is_empty() {
        true => revision.to_string(),
        false => format!("{revision} ({image})"),
    }
}

/// What the provider and its roll-outs share.
pub struct Inner {
    pub settings: Settings,
    http: HttpClient,
    endpoints: Endpoints,
    /// The signed client, and until when its keys last (an assumed role's, an hour).
    aws: tokio::sync::Mutex<Option<(Arc<Aws>, Option<Instant>)>>,
    /// Requests sent, whichever keys signed them.
    calls: Arc<AtomicUsize>,
    /// DescribeTaskDefinition's answers, by the name asked.
    definitions: std::sync::Mutex<std::collections::HashMap<String, Value>>,
}

/// How long an assumed role's keys are used: STS gives them for an hour, and a run that
/// lasts longer (a slow drain, a rollback after it) asks for new ones before then.
const ROLE_KEYS_FOR: Duration = Duration::from_secs(50 * 60);

impl Inner {
    /// The signed client, its keys resolved on first use (STS, when a role is assumed)
    /// and again before an assumed role's run out.
    pub async fn aws(&self, ctx: &Context) -> Result<Arc<Aws>, ProviderError> {
        let mut slot = self.aws.lock().await;
        if let Some((aws, until)) = &*slot {
            if until.is_none_or(|u| Instant::now() < u) {
                return Ok(aws.clone());
            }
        }
        let mut given = self.settings.given.clone();
        given.sts_url = self.endpoints.sts.clone();
        let creds = crate::aws::credentials::resolve(&given, &self.http, &ctx.shutdown).await?;
        // Keys STS handed out are secrets like any other: never printed.
        self.http.redactor().add(creds.secret_access_key.expose());
        if let Some(token) = &creds.session_token {
            self.http.redactor().add(token.expose());
        }
        let until = given.role_to_assume.is_some().then(|| Instant::now() + ROLE_KEYS_FOR);
        let aws = Arc::new(Aws::new(
            self.http.clone(),
            self.endpoints.clone(),
            &self.settings.region,
            creds,
            self.calls.clone(),
        ));
        *slot = Some((aws.clone(), until));
        Ok(aws)
    }

    /// DescribeServices: the one read a poll makes.
    pub async fn service(&self, ctx: &Context) -> Result<Service, ProviderError> {
        let s = &self.settings;
        let body = json!({ "cluster": s.cluster, "services": [s.service] });
        let what = format!("read service {} in cluster {}", s.service, s.cluster);
        let answer = self.aws(ctx).await?.ecs("DescribeServices", &body, &what, &ctx.shutdown).await?;
        let services: Vec<Service> = serde_json::from_value(answer.get("services").cloned().unwrap_or(json!([])))
            .map_err(|e| {
                ProviderError::Unavailable(format!("ECS's answer to {what} was not what its API describes ({e})"))
            })?;
        match services.into_iter().next() {
            Some(svc) if svc.status == "ACTIVE" => Ok(svc),
            Some(svc) => Err(ProviderError::Failed(format!(
                "service {} is {}, not ACTIVE: ECS deploys only to an active service; check the service's name",
                s.service, svc.status
            ))),
            None => {
                let reason = answer.pointer("/failures/0/reason").and_then(Value::as_str).unwrap_or("no answer");
                Err(ProviderError::Failed(format!(
                    "ECS has no service {} in cluster {} ({reason}); check the service's and the cluster's names (aws ecs list-services --cluster {} lists them) and the region",
                    s.service, s.cluster, s.cluster
                )))
            }
        }
    }

    /// DescribeTaskDefinition with its tags.
    /// A revision never changes: each is asked for once a run (snapshot, preflight and
    /// prepare all read the live one).
    pub async fn definition(&self, arn: &str, ctx: &Context) -> Result<Value, ProviderError> {
        if let Some(known) = self.definitions.lock().unwrap_or_else(|p| p.into_inner()).get(arn) {
            return Ok(known.clone());
        }
        let body = json!({ "taskDefinition": arn, "include": ["TAGS"] });
        let what = format!("read task definition {}", label(arn, ""));
        let answer = self.aws(ctx).await?.ecs("DescribeTaskDefinition", &body, &what, &ctx.shutdown).await?;
        self.definitions.lock().unwrap_or_else(|p| p.into_inner()).insert(arn.to_string(), answer.clone());
        Ok(answer)
    }

    /// UpdateService to `task_definition`; the service as ECS answers it. `force`: a new
    /// deployment even of the revision it runs (one whose deployment failed).
    pub async fn update(&self, task_definition: &str, force: bool, ctx: &Context) -> Result<Service, ProviderError> {
        let s = &self.settings;
        let mut body = json!({ "cluster": s.cluster, "service": s.service, "taskDefinition": task_definition });
        if force {
            body["forceNewDeployment"] = json!(true);
        }
        let what = format!("update service {} to {}", s.service, label(task_definition, ""));
        let answer = self.aws(ctx).await?.ecs("UpdateService", &body, &what, &ctx.shutdown).await?;
        serde_json::from_value(answer.get("service").cloned().unwrap_or(Value::Null)).map_err(|e| {
            ProviderError::Unavailable(format!("ECS's answer to {what} was not what its API describes ({e})"))
        })
    }

    /// The container whose image changes: the one named, else the one the load
    /// balancer sends traffic to, else the only one.
    pub fn container(&self, definition: &Value, svc: Option<&Service>) -> Result<String, String> {
        if let Some(c) = &self.settings.container {
            return Ok(c.clone());
        }
        if let Some(name) = svc.and_then(|s| s.load_balancers.iter().find_map(|lb| lb.container_name.clone())) {
            return Ok(name);
        }
        let names = task_definition::containers(definition);
        match names.as_slice() {
            [one] => Ok(one.to_string()),
            _ => Err(format!(
                "the task definition has {} containers ({}) and no load balancer names one; set container-name to the one whose image changes",
                names.len(),
                names.join(", ")
            )),
        }
    }
}

/// Whether `text` names a task definition revision: its ARN, or `family:revision`.
fn is_revision(text: &str) -> bool {
    if text.starts_with("arn:aws") {
        return text.contains(":task-definition/");
    }
    match text.rsplit_once(':') {
        Some((family, revision)) => {
            !family.is_empty()
                && family.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                && !revision.is_empty()
                && revision.chars().all(|c| c.is_ascii_digit())
        }
        None => false,
    }
}

/// 7 out of a task definition's ARN or `web:7`; 0 when it names none.
fn revision_number(task_definition: &str) -> u64 {
    task_definition.rsplit(':').next().and_then(|r| r.parse().ok()).unwrap_or(0)
}

/// "web" out of a task definition's ARN or `web:7`.
fn family_of(task_definition: &str) -> &str {
    let family_rev = task_definition.rsplit('/').next().unwrap_or(task_definition);
    family_rev.split(':').next().unwrap_or(family_rev)
}

pub struct EcsProvider {
    inner: Arc<Inner>,
}

impl EcsProvider {
    /// The revision a release names: its ARN or `family:revision` as ECS names it, a
    /// label this provider wrote (`web:7 (IMAGE)`, as the GitHub ledger keeps it), or an
    /// image, found among the newest revisions of the live family that run it.
    async fn revision_of(&self, release: &ReleaseRef, record: &Record, ctx: &Context) -> Result<String, ProviderError> {
        for text in [&release.id, &release.label] {
            let first = text.split_whitespace().next().unwrap_or_default();
            if is_revision(first) {
                return Ok(first.to_string());
            }
        }
        let image = release.id.as_str();
        let family = family_of(&record.task_definition);
        let container = self.inner.settings.container.clone().or(record.container.clone()).unwrap_or_default();
        let body = json!({ "familyPrefix": family, "sort": "DESC", "status": "ACTIVE", "maxResults": 20 });
        let what = format!("list the newest revisions of task definition {family}");
        let answer = self.inner.aws(ctx).await?.ecs("ListTaskDefinitions", &body, &what, &ctx.shutdown).await?;
        let arns = answer.get("taskDefinitionArns").and_then(Value::as_array).cloned().unwrap_or_default();
        for arn in arns.iter().filter_map(Value::as_str).filter(|a| family_of(a) == family) {
            let d = self.inner.definition(arn, ctx).await?;
            if image_of(&d, &container).as_deref() == Some(image) {
                return Ok(arn.to_string());
            }
        }
        Err(ProviderError::Failed(format!(
            "none of the 20 newest revisions of task definition {family} runs {image} in container {container}; name a revision (family:revision, e.g. {family}:7, or its ARN) in to"
        )))
    }

    pub fn new(settings: Settings, api_url: Option<&url::Url>, http: HttpClient) -> anyhow::Result<EcsProvider> {
        let endpoints = Endpoints::new(&settings.region, api_url)?;
        let inner = Inner {
            settings,
            http,
            endpoints,
            aws: tokio::sync::Mutex::new(None),
            calls: Arc::new(AtomicUsize::new(0)),
            definitions: Default::default(),
        };
        Ok(EcsProvider { inner: Arc::new(inner) })
    }

    fn record(snapshot: &Snapshot) -> Result<Record, ProviderError> {
        snapshot.record_as(NAME)
    }
}

#[async_trait]
impl Provider for EcsProvider {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { history: true, single_instances: false, images: true, directories: false }
    }

    async fn snapshot(&self, ctx: &Context) -> Result<Snapshot, ProviderError> {
        let svc = self.inner.service(ctx).await?;
        let definition = self.inner.definition(&svc.task_definition, ctx).await?;
        let container = self.inner.container(&definition, Some(&svc)).ok();
        let image = container.as_deref().and_then(|c| image_of(&definition, c)).unwrap_or_default();
        let release = ReleaseRef { id: svc.task_definition.clone(), label: label(&svc.task_definition, &image) };
        let record = Record { task_definition: svc.task_definition.clone(), container, image };
        Ok(Snapshot {
            release,
            record: serde_json::to_value(record).map_err(|e| ProviderError::Failed(e.to_string()))?,
            cause: None,
        })
    }

    async fn preflight(&self, live: &Snapshot, target: &Target, ctx: &Context) -> Result<Vec<Finding>, ProviderError> {
        let record = Self::record(live)?;
        let svc = self.inner.service(ctx).await?;
        let mut out = Vec::new();
        let mut say = |severity, message: String| out.push(Finding { severity, message });
        let controller = svc.deployment_controller.as_ref().map_or("ECS", |c| c.kind.as_str());
        if controller != "ECS" {
            say(
                Severity::Blocker,
                format!("service {} uses the {controller} deployment controller: its deployments are CodeDeploy's or an external one's, not UpdateService's; deploy it with that tool", svc.service_name),
            );
        }
        // Another roll-out under way, or a failed one ECS may still roll back: either
        // would change what runs under this run.
        let others: Vec<String> = svc
            .deployments
            .iter()
            .filter(|d| d.status != "PRIMARY" || matches!(d.rollout_state.as_deref(), Some("IN_PROGRESS" | "FAILED")))
            .map(|d| format!("{} ({}, {})", d.id, d.status, d.rollout_state.as_deref().unwrap_or("no rollout state")))
            .collect();
        if svc.deployments.len() > 1 || !others.is_empty() {
            say(
                Severity::Blocker,
                format!(
                    "service {} has a deployment under way or failed: {}; re-run when it has reached a steady state (aws ecs wait services-stable)",
                    svc.service_name,
                    others.join(", ")
                ),
            );
        }
        if svc.task_definition != record.task_definition {
            say(Severity::Blocker, format!(
                "the service's task definition changed while this run looked ({} now, {} before): someone else is deploying; re-run when they are done",
                label(&svc.task_definition, ""), label(&record.task_definition, "")
            ));
        }
        // The next revision must be made from what is there, with nothing changed yet.
        if let Source::Image(image) = &target.source {
            let base = match &self.inner.settings.template {
                Some(template) => template.clone(),
                None => self.inner.definition(&record.task_definition, ctx).await?,
            };
            match self.inner.container(&base, Some(&svc)) {
                Ok(container) => {
                    let change = task_definition::Change {
                        container: &container,
                        image,
                        environment: &self.inner.settings.environment,
                    };
                    if let Err(e) = task_definition::render(&base, &change) {
                        say(Severity::Blocker, e);
                    }
                }
                Err(e) => say(Severity::Blocker, e),
            }
        }
        rollout::balancer_findings(&self.inner, &svc, ctx, &mut out).await?;
        Ok(out)
    }

    fn plan(&self, live: &Snapshot, target: &Target) -> Plan {
        let s = &self.inner.settings;
        let from = match &s.template {
            Some(_) => "the task-definition template".to_string(),
            None => format!("the live {}", live.release.label),
        };
        let (prepare, next) = match &target.source {
            Source::Release(r) => (vec![format!("check that task definition {} is there", r.label)], r.label.clone()),
            other => {
                let image = other.image_or_release(NAME).unwrap_or_default();
                let mut steps = vec![format!("register a new revision from {from} with image {image}")];
                if !s.environment.is_empty() {
                    let names: Vec<&str> = s.environment.iter().map(|(k, _)| k.as_str()).collect();
                    steps.push(format!("set {} in the container's environment", names.join(", ")));
                }
                (steps, format!("the new revision ({image})"))
            }
        };
        let steps = vec![
            format!("UpdateService {} in cluster {} to {next}", s.service, s.cluster),
            "ECS starts the new tasks (the service's desired count); the target group checks them; old targets drain for the deregistration delay".to_string(),
            "follow the deployment by its id until it is PRIMARY and COMPLETED and every new target is healthy; ECS's circuit breaker failing it is a failure, never a success".into(),
        ];
        Plan { prepare, batches: vec![PlannedBatch { label: format!("service {}", s.service), steps }] }
    }

    async fn prepare(
        &self,
        live: &Snapshot,
        target: &Target,
        ctx: &Context,
    ) -> Result<Box<dyn Rollout>, ProviderError> {
        let record = Self::record(live)?;
        let (task_definition, label) = match &target.source {
            Source::Release(r) => {
                let arn = self.revision_of(r, &record, ctx).await?;
                let d = self.inner.definition(&arn, ctx).await?;
                let arn =
                    d.pointer("/taskDefinition/taskDefinitionArn").and_then(Value::as_str).unwrap_or(&arn).to_string();
                let container = self.inner.settings.container.clone().or(record.container.clone());
                let image = container.and_then(|c| image_of(&d, &c)).unwrap_or_default();
                (arn.clone(), label(&arn, &image))
            }
            other => {
                let image = other.image_or_release(NAME)?;
                let base = match &self.inner.settings.template {
                    Some(template) => template.clone(),
                    None => self.inner.definition(&record.task_definition, ctx).await?,
                };
                // The container named, or the one the service's balancer sends traffic to.
                let container = match (&self.inner.settings.container, &record.container) {
                    (Some(c), _) | (None, Some(c)) => c.clone(),
                    (None, None) => self.inner.container(&base, None).map_err(ProviderError::Failed)?,
                };
                let change = task_definition::Change {
                    container: &container,
                    image: &image,
                    environment: &self.inner.settings.environment,
                };
                let request = task_definition::render(&base, &change).map_err(ProviderError::Failed)?;
                let what = format!(
                    "register a new revision of {}",
                    request.get("family").and_then(Value::as_str).unwrap_or("the task definition")
                );
                // Outlasted like a read: a revision registered twice is one more revision, no harm.
                let aws = self.inner.aws(ctx).await?;
                let answer =
                    outlast(ctx, &what, || aws.ecs("RegisterTaskDefinition", &request, &what, &ctx.shutdown)).await?;
                let arn = answer
                    .pointer("/taskDefinition/taskDefinitionArn")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        ProviderError::Unavailable(format!("ECS's answer to {what} named no taskDefinitionArn; re-run"))
                    })?
                    .to_string();
                ctx.progress.log("ECS", &format!("registered {}", label(&arn, &image)));
                (arn.clone(), label(&arn, &image))
            }
        };
        Ok(Box::new(EcsRollout::new(self.inner.clone(), task_definition, label, record.task_definition)))
    }

    async fn restore(&self, snapshot: &Snapshot, ctx: &Context) -> Result<ReleaseRef, ProviderError> {
        let record = Self::record(snapshot)?;
        let svc = outlast(ctx, "read the service before putting it back", || self.inner.service(ctx)).await?;
        // Its deployment failed before (a restore ECS's circuit breaker stopped): a new one.
        let failed = svc.deployments.iter().any(|d| {
            d.status == "PRIMARY"
                && d.rollout_state.as_deref() == Some("FAILED")
                && d.task_definition == record.task_definition
        });
        if svc.task_definition != record.task_definition || failed {
            let what = format!("put service {} back on {}", svc.service_name, snapshot.release.label);
            outlast(ctx, &what, || self.inner.update(&record.task_definition, failed, ctx)).await?;
        }
        rollout::settle_on(&self.inner, &record.task_definition, ctx).await?;
        Ok(snapshot.release.clone())
    }

    async fn in_effect(&self, snapshot: &Snapshot, ctx: &Context) -> Result<bool, ProviderError> {
        let record = Self::record(snapshot)?;
        let svc = self.inner.service(ctx).await?;
        Ok(svc.task_definition == record.task_definition
            && svc.deployments.len() == 1
            && svc.deployments[0].rollout_state.as_deref().is_none_or(|r| r == "COMPLETED"))
    }

    async fn history(&self, ctx: &Context) -> Result<Vec<ReleaseRef>, ProviderError> {
        let svc = self.inner.service(ctx).await?;
        let family = family_of(&svc.task_definition);
        let what = format!("list the revisions of task definition {family}");
        let aws = self.inner.aws(ctx).await?;
        let mut arns: Vec<String> = Vec::new();
        let mut next: Option<String> = None;
        // Every page, within a bound: the newest revisions are the ones a rollback wants.
        for _ in 0..50 {
            let mut body = json!({ "familyPrefix": family, "sort": "ASC", "status": "ACTIVE" });
            if let Some(token) = &next {
                body["nextToken"] = json!(token);
            }
            let answer = aws.ecs("ListTaskDefinitions", &body, &what, &ctx.shutdown).await?;
            let page = answer.get("taskDefinitionArns").and_then(Value::as_array).cloned().unwrap_or_default();
            arns.extend(page.iter().filter_map(Value::as_str).map(str::to_string));
            next = answer.get("nextToken").and_then(Value::as_str).map(str::to_string);
            if next.is_none() {
                break;
            }
        }
        // Only this family (a prefix also matches web-worker when the family is web), and
        // only revisions up to the live one: a later one was registered by a deploy that
        // did not stay live (this run's own rollback left it behind), so it is no release
        // to go back to.
        let live = revision_number(&svc.task_definition);
        Ok(arns
            .into_iter()
            .filter(|a| family_of(a) == family && revision_number(a) <= live)
            .map(|a| ReleaseRef { label: label(&a, ""), id: a })
            .collect())
    }

    fn api_calls(&self) -> Option<usize> {
        Some(self.inner.calls.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revision_is_told_from_an_image() {
        assert!(is_revision("web:7"));
        assert!(is_revision("arn:aws:ecs:us-east-1:123456789012:task-definition/web:7"));
        assert!(!is_revision("123456789012.dkr.ecr.us-east-1.amazonaws.com/web:v2"));
        assert!(!is_revision("web:v2"), "a tag is not a revision");
        assert!(!is_revision("arn:aws:ecs:us-east-1:123456789012:service/staging/web"));
        assert_eq!(family_of("arn:aws:ecs:us-east-1:123456789012:task-definition/web-api:7"), "web-api");
        assert_eq!(family_of("web:7"), "web");
    }

    #[test]
    fn a_release_is_named_by_its_revision_and_image() {
        let arn = "arn:aws:ecs:us-east-1:123456789012:task-definition/web:7";
        assert_eq!(label(arn, "registry/web:v2"), "web:7 (registry/web:v2)");
        assert_eq!(label(arn, ""), "web:7");
        assert!(super::super::same_release(&label(arn, "x"), &label(arn, "")), "the revision alone names it");
    }
}
