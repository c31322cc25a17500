//! Following an ECS deployment: one DescribeServices a poll (a fixed interval with
//! jitter, against the run's deadline; no SDK waiter), its new events and the target
//! group's states said as they come, and the end told by the deployment's own id:
//! PRIMARY and COMPLETED with every target of its tasks healthy is done; FAILED, gone,
//! or the service's task definition back on the old one is ECS's rollback, a failure
//! with ECS's words and the stopped tasks' reasons.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Value};

use super::client::{xml_members, xml_text};
use super::{label, Inner};
use crate::providers::{outlast, Applied, Context, Finding, ProviderError, ReleaseRef, Rollout, Severity, Waited};

/// Time between two looks at the service (with the poll's jitter on top).
pub const POLL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    #[serde(default)]
    pub service_name: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub task_definition: String,
    #[serde(default)]
    pub desired_count: i64,
    #[serde(default)]
    pub deployments: Vec<Deployment>,
    #[serde(default)]
    pub events: Vec<ServiceEvent>,
    #[serde(default)]
    pub load_balancers: Vec<LoadBalancer>,
    #[serde(default)]
    pub deployment_configuration: Option<DeploymentConfiguration>,
    #[serde(default)]
    pub deployment_controller: Option<Controller>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    pub id: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub task_definition: String,
    #[serde(default)]
    pub desired_count: i64,
    #[serde(default)]
    pub running_count: i64,
    #[serde(default)]
    pub pending_count: i64,
    #[serde(default)]
    pub failed_tasks: i64,
    #[serde(default)]
    pub rollout_state: Option<String>,
    #[serde(default)]
    pub rollout_state_reason: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ServiceEvent {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub message: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancer {
    #[serde(default)]
    pub target_group_arn: Option<String>,
    #[serde(default)]
    pub container_name: Option<String>,
    #[serde(default)]
    pub container_port: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentConfiguration {
    #[serde(default)]
    pub deployment_circuit_breaker: Option<CircuitBreaker>,
    #[serde(default)]
    pub alarms: Option<Alarms>,
    #[serde(default)]
    pub strategy: Option<String>,
    #[serde(default)]
    pub bake_time_in_minutes: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct CircuitBreaker {
    #[serde(default)]
    pub enable: bool,
    #[serde(default)]
    pub rollback: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alarms {
    #[serde(default)]
    pub alarm_names: Vec<String>,
    #[serde(default)]
    pub enable: bool,
    #[serde(default)]
    pub rollback: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Controller {
    #[serde(rename = "type", default)]
    pub kind: String,
}

impl Service {
    /// The deployment strategy: ROLLING, or one ECS shifts traffic for itself.
    pub fn strategy(&self) -> Option<&str> {
        self.deployment_configuration.as_ref().and_then(|c| c.strategy.as_deref())
    }

    fn primary(&self) -> Option<&Deployment> {
        self.deployments.iter().find(|d| d.status == "PRIMARY")
    }

    fn target_groups(&self) -> Vec<String> {
        let mut tgs: Vec<String> = self.load_balancers.iter().filter_map(|lb| lb.target_group_arn.clone()).collect();
        tgs.dedup();
        tgs
    }
}

/// What has been said already: events by id, and each target's last state.
#[derive(Debug, Default)]
pub struct Seen {
    events: HashSet<String>,
    targets: BTreeMap<String, String>,
}

impl Seen {
    /// Events present before the change are not this run's news.
    fn baseline(&mut self, svc: &Service) {
        self.events.extend(svc.events.iter().map(|e| e.id.clone()));
    }

    /// Says the service's new events, oldest first.
    fn say_events(&mut self, svc: &Service, ctx: &Context) {
        for e in svc.events.iter().rev() {
            if self.events.insert(e.id.clone()) {
                ctx.progress.log("ECS", &e.message);
            }
        }
    }

    /// Says each target whose state changed.
    fn say_targets(&mut self, targets: &[TargetState], ctx: &Context) {
        for t in targets {
            let state = match &t.reason {
                Some(r) => format!("{} ({r})", t.state),
                None => t.state.clone(),
            };
            if self.targets.get(&t.endpoint()) != Some(&state) {
                ctx.progress.log("target group", &format!("{} is {state}", t.endpoint()));
                self.targets.insert(t.endpoint(), state);
            }
        }
    }
}

/// One target as DescribeTargetHealth gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetState {
    pub id: String,
    pub port: Option<u16>,
    pub state: String,
    pub reason: Option<String>,
}

impl TargetState {
    fn endpoint(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{p}", self.id),
            None => self.id.clone(),
        }
    }
}

async fn target_health(inner: &Inner, tg: &str, ctx: &Context) -> Result<Vec<TargetState>, ProviderError> {
    let what = format!("read the health of target group {}", short_tg(tg));
    let xml =
        inner.aws(ctx).await?.elb("DescribeTargetHealth", &[("TargetGroupArn", tg)], &what, &ctx.shutdown).await?;
    let doc = roxmltree::Document::parse(&xml).map_err(|e| ProviderError::Unavailable(e.to_string()))?;
    Ok(xml_members(&doc, "TargetHealthDescriptions")
        .into_iter()
        .map(|m| TargetState {
            id: m.descendants().find(|n| n.has_tag_name("Target")).and_then(|t| xml_text(t, "Id")).unwrap_or_default(),
            port: m
                .descendants()
                .find(|n| n.has_tag_name("Target"))
                .and_then(|t| xml_text(t, "Port"))
                .and_then(|p| p.parse().ok()),
            state: xml_text(m, "State").unwrap_or_else(|| "unknown".into()),
            reason: xml_text(m, "Reason"),
        })
        .collect())
}

/// "web-tg" out of a target group's ARN.
fn short_tg(arn: &str) -> &str {
    arn.split("targetgroup/").nth(1).and_then(|r| r.split('/').next()).unwrap_or(arn)
}

/// Where the running tasks of deployment `id` take traffic: (IP, port) each. The IP is
/// the task's network interface's (awsvpc, Fargate's only mode); the port is the host
/// port its container publishes, where it has one (bridge mode publishes one).
async fn endpoints(
    inner: &Inner,
    svc: &Service,
    id: &str,
    ctx: &Context,
) -> Result<Vec<(String, Option<u16>)>, ProviderError> {
    let tasks = tasks(inner, svc, "RUNNING", ctx).await?;
    // The container the balancer sends traffic to, else the one named.
    let container =
        svc.load_balancers.iter().find_map(|lb| lb.container_name.clone()).or_else(|| inner.settings.container.clone());
    Ok(tasks
        .iter()
        .filter(|t| t.get("startedBy").and_then(Value::as_str) == Some(id))
        .filter(|t| t.get("lastStatus").and_then(Value::as_str) == Some("RUNNING"))
        .map(|t| {
            let eni = t.get("attachments").and_then(Value::as_array).and_then(|a| {
                a.iter().find(|x| x.get("type").and_then(Value::as_str) == Some("ElasticNetworkInterface"))
            });
            let ip = eni
                .and_then(|e| e.get("details").and_then(Value::as_array))
                .and_then(|d| d.iter().find(|x| x.get("name").and_then(Value::as_str) == Some("privateIPv4Address")))
                .and_then(|x| x.get("value").and_then(Value::as_str))
                .unwrap_or_default()
                .to_string();
            let containers = t.get("containers").and_then(Value::as_array).cloned().unwrap_or_default();
            let chosen = containers
                .iter()
                .find(|c| container.is_none() || c.get("name").and_then(Value::as_str) == container.as_deref())
                .cloned()
                .unwrap_or(Value::Null);
            let port = chosen
                .pointer("/networkBindings/0/hostPort")
                .and_then(Value::as_u64)
                .and_then(|p| u16::try_from(p).ok());
            (ip, port)
        })
        .collect())
}

/// The service's tasks with `status` as their desired status, described.
async fn tasks(inner: &Inner, svc: &Service, status: &str, ctx: &Context) -> Result<Vec<Value>, ProviderError> {
    let s = &inner.settings;
    let aws = inner.aws(ctx).await?;
    let mut arns: Vec<Value> = Vec::new();
    let mut next: Option<String> = None;
    // Every page (100 tasks each), within a bound no service reaches.
    for _ in 0..100 {
        // The service's name as ECS answered it: the input may be its ARN.
        let mut body = json!({ "cluster": s.cluster, "serviceName": svc.service_name, "desiredStatus": status });
        if let Some(token) = &next {
            body["nextToken"] = json!(token);
        }
        let listed = aws.ecs("ListTasks", &body, "list the service's tasks", &ctx.shutdown).await?;
        arns.extend(listed.get("taskArns").and_then(Value::as_array).cloned().unwrap_or_default());
        next = listed.get("nextToken").and_then(Value::as_str).map(str::to_string);
        if next.is_none() {
            break;
        }
    }
    let mut out = Vec::new();
    for chunk in arns.chunks(100) {
        let body = json!({ "cluster": s.cluster, "tasks": chunk });
        let described = aws.ecs("DescribeTasks", &body, "describe the service's tasks", &ctx.shutdown).await?;
        out.extend(described.get("tasks").and_then(Value::as_array).cloned().unwrap_or_default());
    }
    Ok(out)
}

/// "; stopped tasks said: A; B": why the tasks of `task_definition` stopped.
async fn stopped_reasons(inner: &Inner, svc: &Service, task_definition: &str, ctx: &Context) -> String {
    let Ok(stopped) = tasks(inner, svc, "STOPPED", ctx).await else { return String::new() };
    let mut reasons: Vec<String> = Vec::new();
    for t in stopped.iter().filter(|t| t.get("taskDefinitionArn").and_then(Value::as_str) == Some(task_definition)) {
        if let Some(r) = t.get("stoppedReason").and_then(Value::as_str) {
            if !reasons.iter().any(|x| x == r) && reasons.len() < 3 {
                reasons.push(r.to_string());
            }
        }
    }
    match reasons.is_empty() {
        true => String::new(),
        false => format!("; its stopped tasks said: {}", reasons.join("; ")),
    }
}

/// Whether every running task of deployment `id` is healthy in each target group, and
/// what the targets say.
async fn targets_ready(
    inner: &Inner,
    svc: &Service,
    id: &str,
    want: i64,
    seen: &mut Seen,
    ctx: &Context,
) -> Result<(bool, String), ProviderError> {
    let groups = svc.target_groups();
    let mine = endpoints(inner, svc, id, ctx).await?;
    if (mine.len() as i64) < want {
        return Ok((false, format!("{} of {want} new tasks running", mine.len())));
    }
    let mut waiting = Vec::new();
    for tg in &groups {
        let states = target_health(inner, tg, ctx).await?;
        seen.say_targets(&states, ctx);
        for (ip, port) in &mine {
            let found = states.iter().find(|t| !ip.is_empty() && &t.id == ip && (port.is_none() || t.port == *port));
            match found {
                Some(t) if t.state == "healthy" => {}
                Some(t) => waiting.push(format!("{} {}", t.endpoint(), t.state)),
                None => waiting.push(format!("{ip} not registered in {}", short_tg(tg))),
            }
        }
    }
    match waiting.is_empty() {
        true => Ok((true, String::new())),
        false => Ok((false, format!("targets: {}", waiting.join(", ")))),
    }
}

/// The counts a wait shows: "2 running, 0 pending, 1 failed".
fn counts(d: &Deployment) -> String {
    format!(
        "{}: {} of {} running, {} pending, {} failed",
        d.rollout_state.as_deref().unwrap_or("no rollout state"),
        d.running_count,
        d.desired_count,
        d.pending_count,
        d.failed_tasks
    )
}

pub struct EcsRollout {
    inner: Arc<Inner>,
    task_definition: String,
    label: String,
    /// What the service ran before: its coming back is ECS's rollback.
    previous: String,
    deployment: Option<String>,
    /// The deployment's rollout state when last said.
    state: Option<String>,
    /// When the update was sent (seconds since the epoch), and what ECS's own account of
    /// a blue/green, linear or canary deployment last said.
    applied_at: f64,
    service_deployment: Option<String>,
    changed: bool,
    seen: Seen,
}

impl EcsRollout {
    pub fn new(inner: Arc<Inner>, task_definition: String, label: String, previous: String) -> EcsRollout {
        EcsRollout {
            inner,
            task_definition,
            label,
            previous,
            deployment: None,
            state: Some("IN_PROGRESS".into()),
            applied_at: 0.0,
            service_deployment: None,
            changed: false,
            seen: Seen::default(),
        }
    }
}

#[async_trait]
impl Rollout for EcsRollout {
    fn batches(&self) -> usize {
        1
    }

    fn describe(&self, _batch: usize) -> String {
        format!("service {} to {}", self.inner.settings.service, self.label)
    }

    async fn apply(&mut self, _batch: usize, _gated: bool, ctx: &Context) -> Result<Applied, ProviderError> {
        ctx.check_cancelled()?;
        self.changed = true;
        // A throttle or a 5xx is outlasted, within the deadline: UpdateService to the same
        // revision twice starts one deployment.
        let what = format!("update service {} to {}", self.inner.settings.service, self.label);
        // The live revision again (a redeploy): ECS starts nothing for an update to what
        // runs, so a new deployment is forced, as update-service --force-new-deployment does.
        let force = self.task_definition == self.previous;
        let svc = match outlast(ctx, &what, || self.inner.update(&self.task_definition, force, ctx)).await {
            Ok(svc) => svc,
            Err(e) => {
                // An answer that refused it changed nothing; one that never came may have.
                if !matches!(
                    e,
                    ProviderError::Http(_)
                        | ProviderError::Unavailable(_)
                        | ProviderError::RateLimited { .. }
                        | ProviderError::Cancelled(_)
                ) {
                    self.changed = false;
                }
                return Err(e);
            }
        };
        self.seen.baseline(&svc);
        self.applied_at =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        let primary = svc
            .deployments
            .iter()
            .find(|d| d.status == "PRIMARY" && d.task_definition == self.task_definition)
            .ok_or_else(|| {
                ProviderError::Failed(format!(
                    "ECS took the update of service {} to {} but named no PRIMARY deployment of it; check the service in the console",
                    svc.service_name, self.label
                ))
            })?;
        let state = primary.rollout_state.clone().unwrap_or_else(|| "IN_PROGRESS".into());
        ctx.progress.instance(&primary.id, &state, Some(&self.label));
        self.state = Some(state);
        self.deployment = Some(primary.id.clone());
        Ok(Applied {
            release: ReleaseRef { id: self.task_definition.clone(), label: self.label.clone() },
            instances: Vec::new(),
        })
    }

    async fn wait(&mut self, _batch: usize, ctx: &Context) -> Result<Waited, ProviderError> {
        let Some(mut id) = self.deployment.clone() else {
            return Err(ProviderError::Failed("no deployment to follow: the update was not made".into()));
        };
        let mut poll = ctx.poll(format!("ECS deployment {id} of {}", self.label), POLL);
        loop {
            let svc = outlast(ctx, "read the service", || self.inner.service(ctx)).await?;
            self.seen.say_events(&svc, ctx);
            if svc.strategy().is_some_and(|s| s != "ROLLING") {
                self.follow_service_deployment(ctx).await;
            }
            let mine = svc.deployments.iter().find(|d| d.id == id).cloned();
            let state = mine.as_ref().and_then(|d| d.rollout_state.clone()).unwrap_or_else(|| "gone".into());
            if self.state.as_deref() != Some(state.as_str()) {
                ctx.progress.instance(&id, &state, Some(&self.label));
                self.state = Some(state);
            }
            let primary_td = svc.primary().map(|p| p.task_definition.clone()).unwrap_or(svc.task_definition.clone());
            let now = label(&primary_td, "");
            match mine {
                // A new deployment of this very revision (someone forced one): it is ours
                // to follow from now on.
                _ if primary_td == self.task_definition && svc.primary().is_some_and(|p| p.id != id) => {
                    let adopted = svc.primary().map(|p| p.id.clone()).unwrap_or_default();
                    ctx.progress
                        .log("ECS", &format!("deployment {adopted} of {} replaced {id}: following it", self.label));
                    self.deployment = Some(adopted.clone());
                    id = adopted;
                    continue;
                }
                None => {
                    let stopped = stopped_reasons(&self.inner, &svc, &self.task_definition, ctx).await;
                    // What ECS said of it last, when it said anything (its circuit breaker).
                    let said = svc
                        .events
                        .iter()
                        .find(|e| e.message.contains(&id))
                        .map(|e| format!("; ECS said: {}", e.message.trim_end_matches('.')))
                        .unwrap_or_default();
                    let why =
                        format!("deployment {id} of {} is gone and the service runs {now}{said}{stopped}", self.label);
                    return Ok(self.ended_by_someone(&primary_td, why));
                }
                Some(d) if d.rollout_state.as_deref() == Some("FAILED") => {
                    let reason = d.rollout_state_reason.clone().unwrap_or_else(|| "no reason given".into());
                    let stopped = stopped_reasons(&self.inner, &svc, &self.task_definition, ctx).await;
                    let why = format!("ECS failed deployment {id} of {}: {reason}{stopped}", self.label);
                    if primary_td == self.task_definition {
                        return Err(ProviderError::Failed(why));
                    }
                    return Ok(self.ended_by_someone(&primary_td, why));
                }
                Some(d) if d.status != "PRIMARY" || primary_td != self.task_definition => {
                    let stopped = stopped_reasons(&self.inner, &svc, &self.task_definition, ctx).await;
                    let why = format!(
                        "deployment {id} of {} is no longer the service's primary one, {now} is{stopped}",
                        self.label
                    );
                    return Ok(self.ended_by_someone(&primary_td, why));
                }
                Some(d) if d.rollout_state.as_deref() == Some("COMPLETED") => {
                    let (ready, said) =
                        targets_ready(&self.inner, &svc, &id, d.desired_count, &mut self.seen, ctx).await?;
                    if ready && svc.deployments.len() == 1 {
                        return Ok(Waited::Ready);
                    }
                    poll.next(&format!("{}; {said}", counts(&d))).await?;
                }
                Some(d) if d.rollout_state.is_none() => {
                    // A service without rollout states (an old controller): every task
                    // running and healthy, and no other deployment left.
                    let (ready, said) =
                        targets_ready(&self.inner, &svc, &id, d.desired_count, &mut self.seen, ctx).await?;
                    if ready && svc.deployments.len() == 1 && d.running_count >= d.desired_count {
                        return Ok(Waited::Ready);
                    }
                    poll.next(&format!("{}; {said}", counts(&d))).await?;
                }
                Some(d) => {
                    if let Some(tg) = svc.target_groups().first() {
                        if let Ok(states) = target_health(&self.inner, tg, ctx).await {
                            self.seen.say_targets(&states, ctx);
                        }
                    }
                    poll.next(&counts(&d)).await?;
                }
            }
        }
    }

    fn changed(&self) -> bool {
        self.changed
    }
}

impl EcsRollout {
    /// ECS's own account of a blue/green, linear or canary deployment (the newest since
    /// the update): its status and lifecycle stage, said when they change. Progress
    /// only: what ends the wait is the deployment's rollout state, read every poll.
    async fn follow_service_deployment(&mut self, ctx: &Context) {
        let s = &self.inner.settings;
        let Ok(aws) = self.inner.aws(ctx).await else { return };
        let body =
            json!({ "cluster": s.cluster, "service": s.service, "createdAt": { "after": self.applied_at - 60.0 } });
        let listed = aws.ecs("ListServiceDeployments", &body, "list the service's deployments", &ctx.shutdown).await;
        let Some(arn) = listed.ok().and_then(|l| {
            l.pointer("/serviceDeployments/0/serviceDeploymentArn").and_then(Value::as_str).map(str::to_string)
        }) else {
            return;
        };
        let body = json!({ "serviceDeploymentArns": [arn] });
        let Ok(d) =
            aws.ecs("DescribeServiceDeployments", &body, "describe the service deployment", &ctx.shutdown).await
        else {
            return;
        };
        let field = |name: &str| d.pointer(&format!("/serviceDeployments/0/{name}")).and_then(Value::as_str);
        let said = format!(
            "{}, stage {}{}",
            field("status").unwrap_or("no status"),
            field("lifecycleStage").unwrap_or("none"),
            field("statusReason").map(|r| format!(": {r}")).unwrap_or_default()
        );
        if self.service_deployment.as_deref() != Some(said.as_str()) {
            let short = arn.rsplit('/').next().unwrap_or(&arn);
            ctx.progress.log("ECS", &format!("service deployment {short}: {said}"));
            self.service_deployment = Some(said);
        }
    }

    /// Our deployment ended by another: ECS's rollback when the old revision is back,
    /// someone else's deploy otherwise.
    fn ended_by_someone(&self, primary_td: &str, why: String) -> Waited {
        match primary_td == self.previous {
            true => Waited::RolledBack(format!(
                "ECS rolled back by itself: {why}; the service runs {} again",
                label(primary_td, "")
            )),
            false => Waited::Superseded { by: label(primary_td, ""), why },
        }
    }
}

/// Waits until the service runs `task_definition` alone, COMPLETED, every target of its
/// tasks healthy: a restore's end. A transient failure is outlasted.
pub async fn settle_on(inner: &Inner, task_definition: &str, ctx: &Context) -> Result<(), ProviderError> {
    let mut seen = Seen::default();
    let mut first = true;
    let mut poll = ctx.poll(format!("service {} back on {}", inner.settings.service, label(task_definition, "")), POLL);
    loop {
        let svc = outlast(ctx, "read the service", || inner.service(ctx)).await?;
        if first {
            seen.baseline(&svc);
            first = false;
        }
        seen.say_events(&svc, ctx);
        if svc.task_definition != task_definition {
            return Err(ProviderError::Failed(format!(
                "service {} was changed to {} while it was put back on {}: someone else deploys to it; look at it before re-running",
                svc.service_name,
                label(&svc.task_definition, ""),
                label(task_definition, "")
            )));
        }
        let Some(primary) = svc.primary().cloned() else {
            poll.next("no primary deployment yet").await?;
            continue;
        };
        match primary.rollout_state.as_deref() {
            Some("FAILED") => {
                return Err(ProviderError::Failed(format!(
                    "ECS failed the deployment that puts {} back ({}): {}",
                    label(task_definition, ""),
                    primary.id,
                    primary.rollout_state_reason.unwrap_or_default()
                )))
            }
            Some("COMPLETED") | None if svc.deployments.len() == 1 => {
                let want = primary.desired_count.max(svc.desired_count);
                let ready = outlast(ctx, "read the targets", || async {
                    let mut seen_now = Seen::default();
                    targets_ready(inner, &svc, &primary.id, want, &mut seen_now, ctx).await
                })
                .await?;
                if ready.0 {
                    return Ok(());
                }
                poll.next(&ready.1).await?;
            }
            _ => poll.next(&counts(&primary)).await?,
        }
    }
}

/// What preflight says of the deployment settings and each target group: the circuit
/// breaker and alarms, a strategy ECS runs itself, and how long a roll-out takes at
/// least (health checks to turn a task healthy, then the old targets' draining),
/// against the time the run has.
pub async fn balancer_findings(
    inner: &Inner,
    svc: &Service,
    ctx: &Context,
    out: &mut Vec<Finding>,
) -> Result<(), ProviderError> {
    let config = svc.deployment_configuration.clone().unwrap_or_default();
    let breaker = config.deployment_circuit_breaker.unwrap_or_default();
    out.push(match (breaker.enable, breaker.rollback) {
        (true, true) => Finding {
            severity: Severity::Info,
            message: "ECS's circuit breaker is on with rollback: a deployment whose tasks keep failing is failed and rolled back by ECS, and this run reports it as a failure".into(),
        },
        (true, false) => Finding {
            severity: Severity::Info,
            message: "ECS's circuit breaker is on without rollback: a failed deployment is put back by this run".into(),
        },
        (false, _) => Finding {
            severity: Severity::Warning,
            message: format!("ECS's circuit breaker is off: tasks that keep failing are replaced until {} runs out; turn it on (deploymentCircuitBreaker) to fail sooner", ctx.surface.name("deploy-timeout")),
        },
    });
    if let Some(alarms) = config.alarms.filter(|a| a.enable) {
        out.push(Finding {
            severity: Severity::Info,
            message: format!(
                "CloudWatch alarms watch the deployment ({}){}",
                alarms.alarm_names.join(", "),
                if alarms.rollback { ", with rollback" } else { "" }
            ),
        });
    }
    if let Some(strategy) = config.strategy.filter(|s| s != "ROLLING") {
        out.push(Finding {
            severity: Severity::Info,
            message: format!(
                "the service deploys with ECS's {strategy} strategy{}: ECS shifts the traffic itself, and this run follows the deployment until ECS says COMPLETED, then gates it",
                config.bake_time_in_minutes.map(|m| format!(" (bake time {m} min)")).unwrap_or_default()
            ),
        });
    }
    let groups = svc.target_groups();
    if groups.is_empty() {
        out.push(Finding {
            severity: Severity::Warning,
            message: format!(
                "service {} has no load balancer: only health-url proves the new tasks serve",
                svc.service_name
            ),
        });
    }
    let aws = inner.aws(ctx).await?;
    for tg in groups {
        let what = format!("read target group {}", short_tg(&tg));
        let xml = aws.elb("DescribeTargetGroups", &[("TargetGroupArns.member.1", &tg)], &what, &ctx.shutdown).await?;
        let doc = roxmltree::Document::parse(&xml).map_err(|e| ProviderError::Unavailable(e.to_string()))?;
        let Some(group) = xml_members(&doc, "TargetGroups").into_iter().next() else {
            return Err(ProviderError::NotFound { provider: "AWS", what: format!("target group {tg}") });
        };
        let num =
            |name: &str, default: u64| xml_text(group, name).and_then(|v| v.parse::<u64>().ok()).unwrap_or(default);
        let (interval, timeout) = (num("HealthCheckIntervalSeconds", 30), num("HealthCheckTimeoutSeconds", 5));
        let healthy = num("HealthyThresholdCount", 5);
        let path = xml_text(group, "HealthCheckPath").unwrap_or_else(|| "/".into());
        let matcher = xml_text(group, "HttpCode").unwrap_or_else(|| "200".into());
        let what = format!("read the attributes of target group {}", short_tg(&tg));
        let xml = aws.elb("DescribeTargetGroupAttributes", &[("TargetGroupArn", &tg)], &what, &ctx.shutdown).await?;
        let doc = roxmltree::Document::parse(&xml).map_err(|e| ProviderError::Unavailable(e.to_string()))?;
        let delay = xml_members(&doc, "Attributes")
            .into_iter()
            .find(|m| xml_text(*m, "Key").as_deref() == Some("deregistration_delay.timeout_seconds"))
            .and_then(|m| xml_text(m, "Value"))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(300);
        // Targets of type instance are EC2 instances by id (bridge or host networking):
        // this run matches a task's targets by its network interface's address, so it
        // could never see them healthy.
        if let Some(kind) = xml_text(group, "TargetType").filter(|k| k != "ip") {
            out.push(Finding {
                severity: Severity::Blocker,
                message: format!(
                    "target group {} has targets of type {kind}: safe-deploy follows tasks by their own address (awsvpc networking, Fargate's, and target type ip); a service on bridge or host networking is not supported yet",
                    short_tg(&tg)
                ),
            });
        }
        // The numbers are the balancer's: saturating, so an absurd one is said, not a panic.
        let least = Duration::from_secs(interval.saturating_mul(healthy).saturating_add(delay));
        let numbers = format!(
            "target group {} checks {path} every {interval} s (timeout {timeout} s, healthy after {healthy}, matcher {matcher}) and drains old targets for {delay} s: a roll-out takes at least {}",
            short_tg(&tg),
            crate::inputs::human(least)
        );
        out.push(match least > ctx.remaining() {
            true => Finding {
                severity: Severity::Warning,
                message: format!(
                    "{numbers}, longer than the {} {} leaves; raise {}, or lower HealthCheckIntervalSeconds, HealthyThresholdCount or deregistration_delay.timeout_seconds",
                    crate::inputs::human(ctx.remaining()),
                    ctx.surface.name("deploy-timeout"),
                    ctx.surface.name("deploy-timeout")
                ),
            },
            false => Finding { severity: Severity::Info, message: numbers },
        });
    }
    Ok(())
}
