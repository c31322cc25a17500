//! An AWS emulator for one ECS service on Fargate behind an Application Load Balancer:
//! ECS's JSON 1.1 API (X-Amz-Target), ELBv2's and STS's query APIs (form in, XML out)
//! and GitHub's OIDC token endpoint, on one port (`api`); every signed request's SigV4
//! signature is checked (`sigv4`); tasks are test-app processes, health-checked by the
//! target group and drained when deregistered; deployments, the circuit breaker and
//! service events are `cluster`'s.
//!
//! With SAFE_DEPLOY_ECS_SAMPLES=DIR every request and answer is also written to DIR
//! (one file per operation and direction), for CI to check against botocore's models.

mod api;
pub mod cluster;
pub mod sigv4;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

pub use crate::kit::Faults;

use crate::app::{ReleaseSpec, Releases};
use crate::kit::balancer::{Balancer, BalancerOptions, Check, Protocol};
use crate::kit::{Gate, Handle};
use crate::server::Server;
use cluster::{epoch, Cluster, Names, TargetGroupSettings, TaskDefinition};

/// The sandbox's keys: any client given them signs requests the emulator takes.
pub const ACCESS_KEY_ID: &str = "AKIASANDBOXEXAMPLE01";
pub const SECRET_ACCESS_KEY: &str = "sandbox/secret/K7MDENGbPxRfiCYEXAMPLEKEY";
/// The role the OIDC token may assume.
pub const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/safe-deploy";
/// What the runner's ACTIONS_ID_TOKEN_REQUEST_TOKEN must be.
pub const ID_TOKEN_REQUEST_TOKEN: &str = "sandbox-id-token-request";

#[derive(Debug, Clone)]
pub struct EcsOptions {
    pub region: String,
    pub account: String,
    pub cluster: String,
    pub service: String,
    /// The container the load balancer sends traffic to.
    pub container: String,
    pub container_port: u16,
    /// The first task definition's image.
    pub image: String,
    pub desired: u32,
    pub target_group: TargetGroupSettings,
    /// How long one of AWS's seconds lasts here: health-check intervals, the
    /// deregistration delay and ECS's waits are counted in them.
    pub second: Duration,
    /// deploymentCircuitBreaker {enable, rollback}.
    pub circuit_breaker: bool,
    /// deploymentConfiguration.strategy: ROLLING (what the emulator runs), or
    /// BLUE_GREEN / LINEAR / CANARY (reported as such; rolled the same way here).
    pub strategy: String,
    /// Behaviour by image reference.
    pub images: Releases,
    /// Program and leading args that run the test app.
    pub app_command: Vec<OsString>,
    pub api_port: u16,
    /// The most one ListTasks or ListTaskDefinitions page holds (ECS: 100): smaller in a
    /// test of paging.
    pub list_page: usize,
}

impl Default for EcsOptions {
    fn default() -> EcsOptions {
        let exe = std::env::current_exe().map(OsString::from).unwrap_or_else(|_| OsString::from("safe-deploy"));
        EcsOptions {
            region: "us-east-1".into(),
            account: "123456789012".into(),
            cluster: "staging".into(),
            service: "web".into(),
            container: "web".into(),
            container_port: 8080,
            image: "123456789012.dkr.ecr.us-east-1.amazonaws.com/web:v1".into(),
            desired: 2,
            target_group: TargetGroupSettings {
                path: "/health".into(),
                interval_secs: 5,
                timeout_secs: 2,
                healthy: 2,
                unhealthy: 2,
                matcher: "200".into(),
                deregistration_delay_secs: 5,
            },
            second: Duration::from_millis(100),
            circuit_breaker: true,
            strategy: "ROLLING".into(),
            images: Releases::new(),
            app_command: vec![exe, OsString::from("__sandbox-app")],
            api_port: 0,
            list_page: 100,
        }
    }
}

/// The image repository of the sandbox's service: `REPO:TAG` deploys.
pub fn repository(opts: &EcsOptions) -> String {
    opts.image.rsplit_once(':').map_or(opts.image.clone(), |(repo, _)| repo.to_string())
}

pub struct EcsSandbox {
    cluster: Arc<Cluster>,
    api: Server,
    api_state: Arc<api::Api>,
    opts: EcsOptions,
}

impl EcsSandbox {
    /// Starts the API, the load balancer and the service's first deployment, and waits
    /// until it is COMPLETED.
    pub async fn start(opts: EcsOptions) -> std::io::Result<EcsSandbox> {
        let tg = opts.target_group.clone();
        let (low, high) = matcher_range(&tg.matcher);
        let check = Check {
            protocol: Protocol::Http,
            path: tg.path.clone(),
            port: 0,
            interval: opts.second * tg.interval_secs,
            timeout: opts.second * tg.timeout_secs,
            healthy: tg.healthy,
            unhealthy: tg.unhealthy,
            matcher: Some((low, high)),
        };
        let balancer = Balancer::start(BalancerOptions { check, members: Vec::new(), target_port: 0 }).await?;
        let names = Names {
            region: opts.region.clone(),
            account: opts.account.clone(),
            cluster: opts.cluster.clone(),
            service: opts.service.clone(),
            container: opts.container.clone(),
            container_port: opts.container_port,
            target_group: format!("{}-tg", opts.service),
            load_balancer: format!("{}-alb", opts.service),
        };
        let family = opts.service.clone();
        let first = TaskDefinition {
            arn: names.definition_arn(&family, 1),
            family: family.clone(),
            revision: 1,
            body: json!({
                "family": family,
                "networkMode": "awsvpc",
                "requiresCompatibilities": ["FARGATE"],
                "cpu": "256",
                "memory": "512",
                "executionRoleArn": format!("arn:aws:iam::{}:role/ecsTaskExecutionRole", opts.account),
                "containerDefinitions": [{
                    "name": opts.container,
                    "image": opts.image,
                    "essential": true,
                    "portMappings": [{"containerPort": opts.container_port, "protocol": "tcp"}],
                    "environment": [{"name": "APP_ENV", "value": "staging"}],
                }],
            }),
            tags: json!([{"key": "team", "value": "web"}]),
            registered_at: epoch(),
        };
        let cluster = Cluster::new(
            names,
            tg,
            first,
            opts.desired,
            balancer,
            opts.images.clone(),
            opts.app_command.clone(),
            opts.second,
            opts.circuit_breaker,
            opts.strategy.clone(),
        );
        tokio::spawn(Cluster::run(Arc::downgrade(&cluster), opts.second / 2));
        let api_state = Arc::new(api::Api::new(cluster.clone(), opts.list_page));
        let api = crate::kit::api::serve(api_state.clone(), SocketAddr::from(([127, 0, 0, 1], opts.api_port))).await?;
        let sandbox = EcsSandbox { cluster, api, api_state, opts };
        let up = sandbox
            .cluster
            .wait_until(Duration::from_secs(30), |s| s.primary().is_some_and(|p| p.rollout == "COMPLETED"))
            .await;
        if !up {
            return Err(std::io::Error::other("the ECS sandbox's first deployment did not complete in 30 s"));
        }
        Ok(sandbox)
    }

    /// Where the load balancer answers: the app's URL.
    pub fn app_url(&self) -> String {
        self.cluster.balancer.url()
    }

    pub fn options(&self) -> &EcsOptions {
        &self.opts
    }

    /// The image repository: `REPO:TAG` is an image the sandbox runs.
    pub fn repository(&self) -> String {
        repository(&self.opts)
    }

    /// Makes `image` behave as `spec` from its next start on.
    pub fn add_image(&self, image: &str, spec: ReleaseSpec) {
        self.cluster.images.lock().unwrap_or_else(|p| p.into_inner()).insert(image.to_string(), spec);
    }

    /// The image the service's task definition runs now (its container's).
    pub fn service_image(&self) -> String {
        let s = self.cluster.lock();
        s.definition(&s.task_definition)
            .and_then(|d| cluster::container_image(&d.body, &self.opts.container))
            .unwrap_or_default()
    }

    /// The service's task definition ARN.
    pub fn task_definition(&self) -> String {
        self.cluster.lock().task_definition.clone()
    }

    /// The images of the tasks running now, sorted (one per task).
    pub fn running_images(&self) -> Vec<String> {
        let s = self.cluster.lock();
        let mut images: Vec<String> =
            s.tasks.iter().filter(|t| t.last_status == "RUNNING").map(|t| t.image.clone()).collect();
        images.sort();
        images
    }

    /// Every task ever started with `image`.
    pub fn tasks_started(&self, image: &str) -> usize {
        self.cluster.lock().tasks.iter().filter(|t| t.image == image).count()
    }

    /// The deployments as DescribeServices shows them: (id, status, rolloutState).
    pub fn deployments(&self) -> Vec<(String, String, String)> {
        let s = self.cluster.lock();
        s.deployments.iter().map(|d| (d.id.clone(), d.status.to_string(), d.rollout.to_string())).collect()
    }

    /// Waits until the primary deployment is COMPLETED with nothing else left.
    pub async fn wait_steady(&self, timeout: Duration) -> bool {
        self.cluster
            .wait_until(timeout, |s| s.deployments.len() == 1 && s.primary().is_some_and(|p| p.rollout == "COMPLETED"))
            .await
    }

    /// The sandbox's changes to its service (UpdateService, RegisterTaskDefinition).
    pub fn writes(&self) -> Vec<crate::kit::Call> {
        self.api_state.writes()
    }

    /// RegisterTaskDefinition is refused from now on (`true`) or taken again.
    pub fn refuse_registrations(&self, on: bool) {
        self.api_state.refuse_registrations.store(on, std::sync::atomic::Ordering::SeqCst);
    }

    /// The OIDC token endpoint, as a runner's ACTIONS_ID_TOKEN_REQUEST_URL.
    pub fn id_token_url(&self) -> String {
        format!("{}/oidc/token?api-version=2.0", self.api.url())
    }

    /// `update-service --force-new-deployment` by someone else: a new deployment of the
    /// same revision.
    pub fn force_new_deployment(&self) {
        self.cluster.update(None, None, true);
    }

    pub async fn stop(self) {
        // Drop does the work; async for symmetry with the other sandboxes.
    }
}

impl Handle for EcsSandbox {
    type Faults = Faults;

    fn gate(&self) -> &Gate<Faults> {
        &self.cluster.gate
    }

    fn api_url(&self) -> String {
        self.api.url()
    }
}

impl Drop for EcsSandbox {
    fn drop(&mut self) {
        self.api.stop();
        self.cluster.stop_all();
    }
}

/// "200", "200-299" or "200,202" as the range the balancer's check passes.
fn matcher_range(matcher: &str) -> (u16, u16) {
    let codes: Vec<u16> = matcher.split([',', '-']).filter_map(|c| c.trim().parse().ok()).collect();
    match (codes.iter().min(), codes.iter().max()) {
        (Some(&low), Some(&high)) => (low, high),
        _ => (200, 200),
    }
}

/// What the service looks like, for a DescribeServices answer.
pub(crate) fn service_json(c: &Cluster) -> Value {
    let s = c.lock();
    let n = &c.names;
    let deployments: Vec<Value> = s
        .deployments
        .iter()
        .map(|d| {
            let running = s.tasks.iter().filter(|t| t.deployment == d.id && t.last_status == "RUNNING").count();
            let pending = s
                .tasks
                .iter()
                .filter(|t| t.deployment == d.id && matches!(t.last_status, "PROVISIONING" | "PENDING"))
                .count();
            json!({
                "id": d.id,
                "status": d.status,
                "taskDefinition": d.task_definition,
                "desiredCount": if d.status == "PRIMARY" { s.desired } else { 0 },
                "pendingCount": pending,
                "runningCount": running,
                "failedTasks": d.failed,
                "createdAt": d.created_at,
                "updatedAt": d.updated_at,
                "launchType": "FARGATE",
                "platformVersion": "1.4.0",
                "rolloutState": d.rollout,
                "rolloutStateReason": d.reason,
            })
        })
        .collect();
    let running = s.tasks.iter().filter(|t| t.last_status == "RUNNING").count();
    let pending = s.tasks.iter().filter(|t| matches!(t.last_status, "PROVISIONING" | "PENDING")).count();
    let events: Vec<Value> =
        s.events.iter().map(|e| json!({"id": e.id, "createdAt": e.at, "message": e.message})).collect();
    let mut configuration = json!({
        "deploymentCircuitBreaker": {"enable": c.circuit_breaker, "rollback": c.circuit_breaker},
        "maximumPercent": 200,
        "minimumHealthyPercent": 100,
        "alarms": {"alarmNames": [], "enable": false, "rollback": false},
    });
    if c.strategy != "ROLLING" {
        configuration["strategy"] = json!(c.strategy);
        configuration["bakeTimeInMinutes"] = json!(5);
    }
    json!({
        "serviceArn": n.service_arn(),
        "serviceName": n.service,
        "clusterArn": n.cluster_arn(),
        "loadBalancers": [{
            "targetGroupArn": n.target_group_arn(),
            "containerName": n.container,
            "containerPort": n.container_port,
        }],
        "status": "ACTIVE",
        "desiredCount": s.desired,
        "runningCount": running,
        "pendingCount": pending,
        "launchType": "FARGATE",
        "platformVersion": "LATEST",
        "taskDefinition": s.task_definition,
        "deploymentConfiguration": configuration,
        "deployments": deployments,
        "events": events,
        "createdAt": s.created_at,
        "deploymentController": {"type": "ECS"},
        "schedulingStrategy": "REPLICA",
        "healthCheckGracePeriodSeconds": 0,
    })
}
