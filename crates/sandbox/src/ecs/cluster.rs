//! What ECS and the load balancer do on their own, between API calls: one service on
//! one cluster, its deployments (PRIMARY and ACTIVE, rolloutState IN_PROGRESS,
//! COMPLETED or FAILED), tasks that are real test-app processes, their targets in the
//! target group (health-checked by `kit::balancer`, drained for the deregistration
//! delay when deregistered), the circuit breaker that fails a deployment and rolls the
//! service back by itself, and service events in AWS's sentence forms.
//!
//! A reconcile loop does ECS's part every tick: start the primary deployment's
//! missing tasks, register those that listen, stop those the balancer finds unhealthy,
//! retire the other deployments' tasks once the primary is healthy, and complete it.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};

use crate::app::{spec_for, Releases};
use crate::kit::balancer::{Balancer, Member};
use crate::kit::process::{self, signal, Exit, Launch, Proc};
use crate::kit::{Faults, Gate, Watched};

/// How long a task that never starts stays PENDING before ECS gives up on it (in the
/// emulator's seconds).
const PENDING_LIMIT_SECS: u32 = 10;

#[derive(Debug, Clone)]
pub struct TaskDefinition {
    pub arn: String,
    pub family: String,
    pub revision: u32,
    /// What RegisterTaskDefinition was sent, minus tags.
    pub body: Value,
    pub tags: Value,
    pub registered_at: f64,
}

#[derive(Debug, Clone)]
pub struct Deployment {
    pub id: String,
    /// PRIMARY or ACTIVE.
    pub status: &'static str,
    pub task_definition: String,
    pub rollout: &'static str,
    pub reason: String,
    pub failed: u32,
    pub created_at: f64,
    pub updated_at: f64,
    /// It reached COMPLETED once: what the circuit breaker rolls back to.
    pub completed_once: bool,
}

#[derive(Debug, Clone)]
pub struct Task {
    pub arn: String,
    /// Its network interface's address (awsvpc: each task has its own), on loopback.
    pub ip: std::net::Ipv4Addr,
    pub deployment: String,
    pub task_definition: String,
    pub image: String,
    /// PROVISIONING, PENDING, RUNNING, DEACTIVATING, STOPPED.
    pub last_status: &'static str,
    pub desired: &'static str,
    pub port: Option<u16>,
    pub proc: Option<Proc>,
    pub exit: Option<Exit>,
    pub stopped_reason: Option<String>,
    pub stop_code: Option<&'static str>,
    pub created_at: f64,
    pub started_at: Option<f64>,
    pub stopped_at: Option<f64>,
    /// In the target group (not draining).
    pub registered: bool,
    /// Deregistered: draining until then, then stopped.
    pub draining_until: Option<Instant>,
    /// Launched with the never-start fault: it stays PENDING until ECS gives up.
    pub stuck_since: Option<Instant>,
    /// Since when the target group has found it unhealthy: ECS stops it one check
    /// interval later, so the state shows in DescribeTargetHealth meanwhile.
    pub unhealthy_since: Option<Instant>,
}

impl Task {
    pub fn id(&self) -> &str {
        self.arn.rsplit('/').next().unwrap_or(&self.arn)
    }

    fn live(&self) -> bool {
        self.last_status != "STOPPED" && self.desired == "RUNNING"
    }
}

#[derive(Debug, Clone)]
pub struct Event {
    pub id: String,
    pub at: f64,
    pub message: String,
}

pub struct State {
    pub definitions: Vec<TaskDefinition>,
    /// The PRIMARY first.
    pub deployments: Vec<Deployment>,
    pub tasks: Vec<Task>,
    /// Newest first, as DescribeServices answers them.
    pub events: Vec<Event>,
    pub task_definition: String,
    pub desired: u32,
    pub created_at: f64,
    /// Deployments no longer in DescribeServices' list, newest last: what
    /// ListServiceDeployments still shows.
    pub retired: Vec<Deployment>,
}

impl State {
    pub fn primary(&self) -> Option<&Deployment> {
        self.deployments.iter().find(|d| d.status == "PRIMARY")
    }

    pub fn definition(&self, arn_or_name: &str) -> Option<&TaskDefinition> {
        let family_rev = arn_or_name.rsplit('/').next().unwrap_or(arn_or_name);
        match family_rev.split_once(':') {
            Some((family, rev)) => {
                self.definitions.iter().find(|d| d.family == family && rev.parse() == Ok(d.revision))
            }
            // A family alone: its newest revision.
            None => self.definitions.iter().filter(|d| d.family == family_rev).max_by_key(|d| d.revision),
        }
    }
}

/// The names and settings of the one service, its cluster and its target group.
#[derive(Debug, Clone)]
pub struct Names {
    pub region: String,
    pub account: String,
    pub cluster: String,
    pub service: String,
    pub container: String,
    pub container_port: u16,
    pub target_group: String,
    pub load_balancer: String,
}

impl Names {
    pub fn cluster_arn(&self) -> String {
        format!("arn:aws:ecs:{}:{}:cluster/{}", self.region, self.account, self.cluster)
    }
    pub fn service_arn(&self) -> String {
        format!("arn:aws:ecs:{}:{}:service/{}/{}", self.region, self.account, self.cluster, self.service)
    }
    pub fn definition_arn(&self, family: &str, revision: u32) -> String {
        format!("arn:aws:ecs:{}:{}:task-definition/{family}:{revision}", self.region, self.account)
    }
    pub fn target_group_arn(&self) -> String {
        format!(
            "arn:aws:elasticloadbalancing:{}:{}:targetgroup/{}/73e2d6bc24d8a067",
            self.region, self.account, self.target_group
        )
    }
    pub fn load_balancer_arn(&self) -> String {
        format!(
            "arn:aws:elasticloadbalancing:{}:{}:loadbalancer/app/{}/50dc6c495c0c9188",
            self.region, self.account, self.load_balancer
        )
    }
}

/// The target group's health check and draining, in AWS's numbers.
#[derive(Debug, Clone)]
pub struct TargetGroupSettings {
    pub path: String,
    pub interval_secs: u32,
    pub timeout_secs: u32,
    pub healthy: u32,
    pub unhealthy: u32,
    /// "200", or "200-299".
    pub matcher: String,
    pub deregistration_delay_secs: u32,
}

pub struct Cluster {
    pub gate: Gate<Faults>,
    pub names: Names,
    pub tg: TargetGroupSettings,
    /// The service, its deployments and tasks: waited on without polling.
    state: Watched<State>,
    pub balancer: Balancer,
    pub images: Mutex<Releases>,
    pub app_command: Vec<OsString>,
    /// How long one of AWS's seconds lasts here.
    pub second: Duration,
    pub circuit_breaker: bool,
    pub strategy: String,
    /// The next task's address: 127.77.0.1 onwards, apart from the hosts rig's.
    next_ip: std::sync::atomic::AtomicU32,
}

pub fn epoch() -> f64 {
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    (now.as_millis() as f64) / 1000.0
}

fn hex_id(len: usize) -> String {
    let mut out = String::new();
    while out.len() < len {
        out.push_str(&crate::digitalocean::uuid().replace('-', ""));
    }
    out.truncate(len);
    out
}

fn deployment_id() -> String {
    let digits: String = hex_id(24).bytes().map(|b| char::from(b'0' + b % 10)).take(19).collect();
    format!("ecs-svc/{digits}")
}

impl Cluster {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        names: Names,
        tg: TargetGroupSettings,
        first: TaskDefinition,
        desired: u32,
        balancer: Balancer,
        images: Releases,
        app_command: Vec<OsString>,
        second: Duration,
        circuit_breaker: bool,
        strategy: String,
    ) -> Arc<Cluster> {
        let now = epoch();
        let first_deployment = Deployment {
            id: deployment_id(),
            status: "PRIMARY",
            task_definition: first.arn.clone(),
            rollout: "IN_PROGRESS",
            reason: "ECS deployment ecs-svc in progress.".into(),
            failed: 0,
            created_at: now,
            updated_at: now,
            completed_once: false,
        };
        let state = State {
            task_definition: first.arn.clone(),
            definitions: vec![first],
            deployments: vec![first_deployment],
            tasks: Vec::new(),
            events: Vec::new(),
            desired,
            created_at: now,
            retired: Vec::new(),
        };
        Arc::new(Cluster {
            gate: Gate::default(),
            names,
            tg,
            state: Watched::new(state),
            balancer,
            images: Mutex::new(images),
            app_command,
            second,
            circuit_breaker,
            strategy,
            next_ip: std::sync::atomic::AtomicU32::new(1),
        })
    }

    /// A loopback address of the task's own, as awsvpc gives each task an interface.
    fn next_ip(&self) -> std::net::Ipv4Addr {
        let n = self.next_ip.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 65_000 + 1;
        std::net::Ipv4Addr::new(127, 77, (n >> 8) as u8, (n & 0xff) as u8)
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }

    fn secs(&self, n: u32) -> Duration {
        self.second * n
    }

    pub fn notify(&self) {
        self.state.notify();
    }

    /// Waits until `done` holds of the state; false at `timeout`.
    pub async fn wait_until(&self, timeout: Duration, done: impl FnMut(&State) -> bool) -> bool {
        self.state.wait_until(timeout, done).await
    }

    /// "(service web) has stopped 2 running tasks: (task a) (task b).", as ECS says it.
    fn tasks_event(&self, s: &mut State, did: &str, kind: &str, ids: &[String]) {
        let list: String = ids.iter().map(|id| format!(" (task {id})")).collect();
        let svc = self.names.service.clone();
        self.event(s, format!("(service {svc}) {did} {} {kind}tasks:{list}.", ids.len()));
    }

    pub fn event(&self, s: &mut State, message: String) {
        s.events.insert(0, Event { id: crate::digitalocean::uuid(), at: epoch(), message });
        s.events.truncate(100);
    }

    /// The circuit breaker's threshold: half the desired count, at least 3, at most 200.
    pub fn threshold(desired: u32) -> u32 {
        desired.div_ceil(2).clamp(3, 200)
    }

    /// UpdateService: a new PRIMARY deployment when the task definition (or count)
    /// changes, or when asked to force one.
    pub fn update(&self, task_definition: Option<String>, desired: Option<u32>, force: bool) {
        let mut s = self.lock();
        if let Some(n) = desired {
            s.desired = n;
        }
        let td = task_definition.unwrap_or_else(|| s.task_definition.clone());
        if td != s.task_definition || force {
            let now = epoch();
            for d in &mut s.deployments {
                d.status = "ACTIVE";
            }
            let id = deployment_id();
            s.deployments.insert(
                0,
                Deployment {
                    id,
                    status: "PRIMARY",
                    task_definition: td.clone(),
                    rollout: "IN_PROGRESS",
                    reason: "ECS deployment in progress.".into(),
                    failed: 0,
                    created_at: now,
                    updated_at: now,
                    completed_once: false,
                },
            );
            s.task_definition = td;
        }
        drop(s);
        self.notify();
    }

    /// The run loop: one reconcile every half of one of AWS's seconds, until the
    /// cluster is dropped.
    pub async fn run(cluster: std::sync::Weak<Cluster>, tick: Duration) {
        loop {
            tokio::time::sleep(tick).await;
            let Some(c) = cluster.upgrade() else { return };
            c.reconcile();
        }
    }

    /// ECS's and the balancer's part, once.
    pub fn reconcile(self: &Arc<Self>) {
        let mut launch = Vec::new();
        let mut stop: Vec<Proc> = Vec::new();
        let never_start = self.gate.with_faults(|f| f.never_start);
        let mut changed = false;
        {
            let mut s = self.lock();
            let tg = self.names.target_group_arn();
            let stats = self.balancer.stats();
            let now = Instant::now();

            // Tasks the balancer found unhealthy, or whose container exited, or that never started.
            let mut failed_in: BTreeMap<String, u32> = BTreeMap::new();
            let mut stopped_now = Vec::new();
            for t in s.tasks.iter_mut().filter(|t| t.last_status != "STOPPED") {
                let member = stats.iter().find(|m| m.id == t.id());
                let unhealthy = t.registered
                    && member.is_some_and(|m| {
                        !m.healthy
                            && (m.transitions.last().is_some_and(|x| !x.1) || m.probes >= self.tg.unhealthy as u64)
                    });
                if !unhealthy {
                    t.unhealthy_since = None;
                } else if t.unhealthy_since.is_none() {
                    t.unhealthy_since = Some(now);
                }
                let unhealthy_long = t
                    .unhealthy_since
                    .is_some_and(|since| now.duration_since(since) >= self.secs(self.tg.interval_secs));
                let reason = if let Some(exit) = t.exit.filter(|_| t.desired == "RUNNING") {
                    Some(format!("Essential container in task exited (exit code {})", exit.exit_code()))
                } else if unhealthy_long && t.desired == "RUNNING" {
                    Some(format!("Task failed ELB health checks in (target-group {tg})"))
                } else if t.stuck_since.is_some_and(|at| now.duration_since(at) >= self.secs(PENDING_LIMIT_SECS)) {
                    Some("CannotPullContainerError: pull image manifest has been retried 5 time(s): the image never came".into())
                } else {
                    None
                };
                if let Some(reason) = reason {
                    *failed_in.entry(t.deployment.clone()).or_default() += 1;
                    t.last_status = "STOPPED";
                    t.desired = "STOPPED";
                    t.stop_code = Some("TaskFailedToStart");
                    t.stopped_reason = Some(reason);
                    t.stopped_at = Some(epoch());
                    t.registered = false;
                    if let Some(p) = t.proc.take() {
                        stop.push(p);
                    }
                    stopped_now.push(t.id().to_string());
                }
            }
            if !stopped_now.is_empty() {
                self.tasks_event(&mut s, "has stopped", "running ", &stopped_now);
                changed = true;
            }
            for (dep, n) in failed_in {
                if let Some(d) = s.deployments.iter_mut().find(|d| d.id == dep) {
                    d.failed += n;
                    d.updated_at = epoch();
                }
            }

            // The circuit breaker.
            let desired = s.desired;
            let tripped = self.circuit_breaker
                && s.primary().is_some_and(|p| p.rollout == "IN_PROGRESS" && p.failed >= Cluster::threshold(desired));
            if tripped {
                let svc = self.names.service.clone();
                let (failed_id, back_to) = {
                    let p = s.deployments.iter_mut().find(|d| d.status == "PRIMARY").expect("checked above");
                    p.rollout = "FAILED";
                    p.reason = "ECS deployment circuit breaker: tasks failed to start.".into();
                    p.updated_at = epoch();
                    let id = p.id.clone();
                    (id.clone(), s.deployments.iter().find(|d| d.id != id && d.completed_once).map(|d| d.id.clone()))
                };
                self.event(
                    &mut s,
                    format!("(service {svc}) (deployment {failed_id}) deployment failed: tasks failed to start."),
                );
                if let Some(back) = back_to {
                    for d in &mut s.deployments {
                        d.status = "ACTIVE";
                    }
                    let td = {
                        let d = s.deployments.iter_mut().find(|d| d.id == back).expect("found above");
                        d.status = "PRIMARY";
                        d.rollout = "IN_PROGRESS";
                        d.reason = format!("ECS deployment circuit breaker: rolling back to deploymentId {back}.");
                        d.updated_at = epoch();
                        d.task_definition.clone()
                    };
                    let i = s.deployments.iter().position(|d| d.id == back).unwrap_or(0);
                    let d = s.deployments.remove(i);
                    s.deployments.insert(0, d);
                    s.task_definition = td;
                    self.event(&mut s, format!("(service {svc}) rolling back to deployment {back}."));
                }
                changed = true;
            }

            // Start what the primary lacks.
            if let Some(p) = s.primary().cloned() {
                let live = s.tasks.iter().filter(|t| t.deployment == p.id && t.live()).count() as u32;
                let retrying = p.rollout != "FAILED" || !self.circuit_breaker;
                if live < s.desired && retrying {
                    let image = s
                        .definition(&p.task_definition)
                        .and_then(|d| container_image(&d.body, &self.names.container))
                        .unwrap_or_default();
                    let mut started = Vec::new();
                    for _ in live..s.desired {
                        let arn = format!(
                            "arn:aws:ecs:{}:{}:task/{}/{}",
                            self.names.region,
                            self.names.account,
                            self.names.cluster,
                            hex_id(32)
                        );
                        let task = Task {
                            arn: arn.clone(),
                            ip: self.next_ip(),
                            deployment: p.id.clone(),
                            task_definition: p.task_definition.clone(),
                            image: image.clone(),
                            last_status: "PROVISIONING",
                            desired: "RUNNING",
                            port: None,
                            proc: None,
                            exit: None,
                            stopped_reason: None,
                            stop_code: None,
                            created_at: epoch(),
                            started_at: None,
                            stopped_at: None,
                            registered: false,
                            draining_until: None,
                            stuck_since: never_start.then_some(now),
                            unhealthy_since: None,
                        };
                        started.push(task.id().to_string());
                        if !never_start {
                            launch.push((arn, image.clone()));
                        }
                        s.tasks.push(task);
                    }
                    self.tasks_event(&mut s, "has started", "", &started);
                    changed = true;
                }

                // Once the primary serves in full, the others' tasks leave: deregistered,
                // drained, then stopped.
                let healthy: Vec<String> = stats.iter().filter(|m| m.healthy).map(|m| m.id.clone()).collect();
                let serving = s
                    .tasks
                    .iter()
                    .filter(|t| t.deployment == p.id && t.live() && healthy.iter().any(|h| h == t.id()))
                    .count() as u32;
                if serving >= s.desired {
                    let delay = self.secs(self.tg.deregistration_delay_secs);
                    let mut drained = Vec::new();
                    for t in s.tasks.iter_mut().filter(|t| t.deployment != p.id && t.live()) {
                        t.desired = "STOPPED";
                        t.last_status = "DEACTIVATING";
                        if t.registered {
                            t.registered = false;
                            t.draining_until = Some(now + delay);
                            drained.push(t.id().to_string());
                        } else {
                            t.draining_until = Some(now);
                        }
                    }
                    if !drained.is_empty() {
                        let svc = self.names.service.clone();
                        self.event(
                            &mut s,
                            format!("(service {svc}) has begun draining connections on {} tasks.", drained.len()),
                        );
                        self.event(
                            &mut s,
                            format!("(service {svc}) deregistered {} targets in (target-group {tg})", drained.len()),
                        );
                        changed = true;
                    }
                }
            }

            // Drained tasks stop.
            let mut stopped = Vec::new();
            for t in s.tasks.iter_mut() {
                if t.last_status == "DEACTIVATING" && t.draining_until.is_some_and(|u| u <= now) {
                    t.last_status = "STOPPED";
                    t.stop_code = Some("ServiceSchedulerInitiated");
                    t.stopped_reason = Some(format!("Scaling activity initiated by (deployment {})", t.deployment));
                    t.stopped_at = Some(epoch());
                    t.draining_until = None;
                    if let Some(p) = t.proc.take() {
                        stop.push(p);
                    }
                    stopped.push(t.id().to_string());
                }
            }
            if !stopped.is_empty() {
                self.tasks_event(&mut s, "has stopped", "running ", &stopped);
                changed = true;
            }

            // A primary serving in full with no other deployment's task left completes,
            // and the others leave the list (a failed one stays until then, as ECS shows it).
            let primary_id = s.primary().map(|p| p.id.clone());
            let others_live =
                s.tasks.iter().any(|t| Some(&t.deployment) != primary_id.as_ref() && t.last_status != "STOPPED");
            let serving = primary_id.as_ref().map_or(0, |id| {
                s.tasks
                    .iter()
                    .filter(|t| &t.deployment == id && t.live() && stats.iter().any(|m| m.id == t.id() && m.healthy))
                    .count()
            }) as u32;
            if !others_live && serving >= s.desired {
                let svc = self.names.service.clone();
                let (kept, gone): (Vec<Deployment>, Vec<Deployment>) =
                    s.deployments.drain(..).partition(|d| d.status == "PRIMARY");
                s.deployments = kept;
                s.retired.extend(gone);
                let done = s.deployments.first_mut().filter(|p| p.rollout == "IN_PROGRESS").map(|p| {
                    p.rollout = "COMPLETED";
                    p.reason = "ECS deployment completed.".into();
                    p.completed_once = true;
                    p.updated_at = epoch();
                    p.id.clone()
                });
                if let Some(id) = done {
                    self.event(&mut s, format!("(service {svc}) (deployment {id}) deployment completed."));
                    self.event(&mut s, format!("(service {svc}) has reached a steady state."));
                    changed = true;
                }
            }

            // The target group's members: registered tasks that listen.
            let members: Vec<Member> = s
                .tasks
                .iter()
                .filter(|t| t.registered)
                .filter_map(|t| Some(Member { id: t.id().to_string(), ip: t.ip, port: Some(t.port?) }))
                .collect();
            self.balancer.set_members(members);
            // Old stopped tasks are kept a while for DescribeTasks, as ECS keeps them an hour.
            let stopped_count = s.tasks.iter().filter(|t| t.last_status == "STOPPED").count();
            if stopped_count > 50 {
                let mut extra = stopped_count - 50;
                s.tasks.retain(|t| {
                    let drop = extra > 0 && t.last_status == "STOPPED";
                    extra -= usize::from(drop);
                    !drop
                });
            }
        }
        for p in stop {
            tokio::spawn(async move { p.terminate(signal::TERM, Duration::from_secs(5)).await });
        }
        for (arn, image) in launch {
            self.launch(&arn, &image);
        }
        if changed {
            self.notify();
        }
    }

    /// Starts a task's process: the test app as the image says.
    fn launch(self: &Arc<Self>, arn: &str, image: &str) {
        let release = spec_for(&self.images.lock().unwrap_or_else(|p| p.into_inner()), image);
        let Some((program, lead)) = self.app_command.split_first() else { return };
        let mut args: Vec<OsString> = lead.to_vec();
        let ip = self.lock().tasks.iter().find(|t| t.arn == arn).map(|t| t.ip.to_string()).unwrap_or_default();
        let flags = ["--listen".to_string(), ip, "--port".into(), "0".into()].into_iter().chain(release.app_flags());
        args.extend(flags.chain(["--exit-on-stdin-eof".to_string()]).map(OsString::from));
        let launch = Launch { program: program.clone(), args, env: vec![("ECS_TASK_ARN".into(), arn.into())] };
        let (on_listen, on_exit) = (self.clone(), self.clone());
        let (a1, a2) = (arn.to_string(), arn.to_string());
        let spawned = process::spawn(
            &launch,
            move |port| on_listen.task_event(&a1, Some(port), None),
            move |exit| on_exit.task_event(&a2, None, Some(exit)),
        );
        let mut s = self.lock();
        if let Some(t) = s.tasks.iter_mut().find(|t| t.arn == arn) {
            match spawned {
                // It may have said it listens (RUNNING) before this lock was taken again.
                Ok(p) if t.desired == "RUNNING" && t.last_status != "STOPPED" => {
                    if t.last_status == "PROVISIONING" {
                        t.last_status = "PENDING";
                    }
                    t.proc = Some(p);
                }
                Ok(p) => drop(tokio::spawn(async move { p.terminate(signal::TERM, Duration::ZERO).await })),
                Err(_) => t.exit = Some(Exit { code: Some(127), signal: None }),
            }
        }
    }

    fn task_event(&self, arn: &str, port: Option<u16>, exit: Option<Exit>) {
        let mut s = self.lock();
        let tg = self.names.target_group_arn();
        let svc = self.names.service.clone();
        let Some(t) = s.tasks.iter_mut().find(|t| t.arn == arn) else { return };
        let mut registered = None;
        if let Some(port) = port {
            if t.desired == "RUNNING" && t.last_status != "STOPPED" {
                t.port = Some(port);
                t.last_status = "RUNNING";
                t.started_at = Some(epoch());
                t.registered = true;
                registered = Some(t.id().to_string());
            }
        }
        if let Some(exit) = exit {
            t.exit = Some(exit);
            t.registered = false;
            if t.desired == "STOPPED" {
                t.last_status = "STOPPED";
            }
        }
        if registered.is_some() {
            self.event(&mut s, format!("(service {svc}) registered 1 targets in (target-group {tg})"));
        }
        drop(s);
        self.notify();
    }

    /// Stops every task's process (the sandbox is going away).
    pub fn stop_all(&self) {
        let procs: Vec<Proc> = self.lock().tasks.iter_mut().filter_map(|t| t.proc.take()).collect();
        for p in procs {
            p.signal(signal::TERM);
        }
    }
}

/// A deployment as ListServiceDeployments and DescribeServiceDeployments show it: its
/// status in their words, and (`full`) its lifecycle stage and circuit breaker.
pub fn service_deployment_json(c: &Cluster, s: &State, d: &Deployment, full: bool) -> Value {
    let n = &c.names;
    let rolled_back = d.rollout == "FAILED" && s.primary().is_some_and(|p| p.id != d.id);
    let status = match d.rollout {
        "COMPLETED" if d.status == "PRIMARY" => "SUCCESSFUL",
        "COMPLETED" => "SUCCESSFUL",
        "FAILED" if rolled_back && s.deployments.len() == 1 => "ROLLBACK_SUCCESSFUL",
        "FAILED" if rolled_back => "ROLLBACK_IN_PROGRESS",
        "FAILED" => "STOPPED",
        _ if d.status != "PRIMARY" => "STOPPED",
        _ => "IN_PROGRESS",
    };
    let short = d.id.trim_start_matches("ecs-svc/");
    let mut out = json!({
        "serviceDeploymentArn": format!("arn:aws:ecs:{}:{}:service-deployment/{}/{}/{short}", n.region, n.account, n.cluster, n.service),
        "serviceArn": n.service_arn(),
        "clusterArn": n.cluster_arn(),
        "createdAt": d.created_at,
        "startedAt": d.created_at,
        "targetServiceRevisionArn": format!("arn:aws:ecs:{}:{}:service-revision/{}/{}/{short}", n.region, n.account, n.cluster, n.service),
        "status": status,
        "statusReason": d.reason,
    });
    if status != "IN_PROGRESS" {
        out["finishedAt"] = json!(d.updated_at);
    }
    if full {
        let serving = s.tasks.iter().filter(|t| t.deployment == d.id && t.last_status == "RUNNING").count();
        let stage = match status {
            "IN_PROGRESS" if (serving as u32) < s.desired => "SCALE_UP",
            "IN_PROGRESS" => "CLEAN_UP",
            _ => "CLEAN_UP",
        };
        out["lifecycleStage"] = json!(stage);
        out["deploymentCircuitBreaker"] = json!({"status": if c.circuit_breaker { if d.rollout == "FAILED" { "TRIGGERED" } else { "MONITORING" } } else { "DISABLED" },
                   "failureCount": d.failed, "threshold": Cluster::threshold(s.desired)});
        out["targetServiceRevision"] = json!({
            "arn": out["targetServiceRevisionArn"],
            "requestedTaskCount": if d.status == "PRIMARY" { s.desired } else { 0 },
            "runningTaskCount": serving,
            "pendingTaskCount": s.tasks.iter().filter(|t| t.deployment == d.id && matches!(t.last_status, "PROVISIONING" | "PENDING")).count(),
        });
        if let Some(o) = out.as_object_mut() {
            o.remove("targetServiceRevisionArn");
        }
    }
    out
}

/// The image of container `name` in a task definition body.
pub fn container_image(body: &Value, name: &str) -> Option<String> {
    body.get("containerDefinitions")?
        .as_array()?
        .iter()
        .find(|c| c.get("name").and_then(Value::as_str) == Some(name))?
        .get("image")?
        .as_str()
        .map(str::to_string)
}

/// A target's state and reason as DescribeTargetHealth gives them.
pub fn target_health(cluster: &Cluster, task: &Task) -> (&'static str, Option<(&'static str, String)>) {
    if task.draining_until.is_some() && task.last_status == "DEACTIVATING" {
        return ("draining", Some(("Target.DeregistrationInProgress", "Target deregistration is in progress".into())));
    }
    let stats = cluster.balancer.stats();
    let Some(m) = stats.iter().find(|m| m.id == task.id()) else {
        return ("initial", Some(("Elb.RegistrationInProgress", "Target registration is in progress".into())));
    };
    if m.healthy {
        return ("healthy", None);
    }
    let ever_failed = m.transitions.last().is_some_and(|t| !t.1) || m.probes >= cluster.tg.unhealthy as u64;
    if !ever_failed {
        return ("initial", Some(("Elb.InitialHealthChecking", "Initial health checks in progress".into())));
    }
    let last = m.last_probe.clone().unwrap_or_default();
    if last.contains("timed out") || last.contains("timeout") {
        ("unhealthy", Some(("Target.Timeout", "Request timed out".into())))
    } else if let Some(code) = last.split_whitespace().find_map(|w| w.parse::<u16>().ok()) {
        ("unhealthy", Some(("Target.ResponseCodeMismatch", format!("Health checks failed with these codes: [{code}]"))))
    } else {
        ("unhealthy", Some(("Target.FailedHealthChecks", "Health checks failed".into())))
    }
}

pub fn task_json(names: &Names, t: &Task) -> Value {
    let mut container = json!({
        "containerArn": format!("{}/{}", t.arn.replace(":task/", ":container/"), names.container),
        "taskArn": t.arn,
        "name": names.container,
        "image": t.image,
        "lastStatus": t.last_status,
        // awsvpc: no bindings; the task's own address (and its port) is the target.
        "networkInterfaces": [{"attachmentId": "a1b2c3d4-5678-90ab-cdef-11111EXAMPLE", "privateIpv4Address": t.ip.to_string()}],
    });
    if let Some(exit) = t.exit {
        container["exitCode"] = json!(exit.exit_code());
    }
    let mut task = json!({
        "taskArn": t.arn,
        "clusterArn": names.cluster_arn(),
        "taskDefinitionArn": t.task_definition,
        "group": format!("service:{}", names.service),
        "startedBy": t.deployment,
        "lastStatus": t.last_status,
        "desiredStatus": t.desired,
        "launchType": "FARGATE",
        "createdAt": t.created_at,
        "containers": [container],
        "attachments": [{
            "id": "a1b2c3d4-5678-90ab-cdef-11111EXAMPLE",
            "type": "ElasticNetworkInterface",
            "status": "ATTACHED",
            "details": [
                {"name": "subnetId", "value": "subnet-0a1b2c3d4e5f67890"},
                {"name": "privateIPv4Address", "value": t.ip.to_string()},
            ],
        }],
    });
    if let Some(at) = t.started_at {
        task["startedAt"] = json!(at);
    }
    if let Some(at) = t.stopped_at {
        task["stoppedAt"] = json!(at);
    }
    if let Some(r) = &t.stopped_reason {
        task["stoppedReason"] = json!(r);
    }
    if let Some(code) = t.stop_code {
        task["stopCode"] = json!(code);
    }
    task
}
