//! The engine: the order of a deploy, its deadlines, its gates and its rollback.
//! It knows no provider by name and no GitHub.
//!
//! record the live release -> preflight -> prepare (nothing changed yet)
//!   -> for each batch: apply -> wait until up -> [gate the batch's instances]
//!   -> health gate -> deployed, or roll back -> health gate on the old release
//!
//! Rollback follows every failure after the first change; the roll-out handle says
//! whether anything changed. A signal stops forward changes; the post step (`post`)
//! then finishes the rollback from the saved state.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::analysis::external::{External, ExternalGate};
use crate::analysis::{Baseline, Comparison, Sample};
use crate::config::{Command, Config};
use crate::gate::{Gate, GateReport, GateResult};
use crate::github::{Entry, Ledger, Record};
use crate::health::{names_version, Gate as HealthGate, Probe, VersionCheck};
use crate::inputs::human;
use crate::providers::{
    outlast, same_release, Context, Ending, Event, Instance, LockFor, LockKind, Progress, Provider, ProviderError,
    ReleaseRef, Route, Severity, Snapshot, Source, Target, Waited,
};
use crate::report::{DeploymentRecord, Outcome, Phase, PhaseResult, Report, RollbackInfo};
use crate::runner::Runner;
use crate::shutdown::Shutdown;
use crate::state::{self, Saved, Stage};

/// A provider call in flight when a signal comes gets this long to finish: the whole
/// step must end within the runner's 7.5 s before SIGTERM.
const IN_FLIGHT_GRACE: Duration = Duration::from_secs(3);
/// During any wait, the log gets a line at least this often.
const HEARTBEAT: Duration = Duration::from_secs(10);

pub struct Engine<'a> {
    pub config: &'a Config,
    pub provider: &'a dyn Provider,
    /// How health checks are sent: the HTTP client, or a stand-in in engine tests.
    pub probe: &'a dyn Probe,
    pub runner: &'a Runner,
    pub shutdown: Shutdown,
    /// GitHub Deployments, when a github-token is given.
    pub ledger: Option<&'a Ledger>,
    pub progress: Progress,
}

/// What a health gate proves with the version URL.
#[derive(Clone, Copy)]
enum Proof<'a> {
    Nothing,
    /// This version answers (the new release).
    Answers(&'a str),
    /// This version no longer answers (the failed release, after a rollback).
    Gone(&'a str),
}

impl<'a> Proof<'a> {
    fn answers(version: Option<&'a str>) -> Proof<'a> {
        version.map_or(Proof::Nothing, Proof::Answers)
    }
}

/// How a step ended, when it did not end well.
/// How long the first read of a run keeps trying through a platform that does not answer.
const FIRST_READ_LIMIT: Duration = Duration::from_secs(120);
/// How long the last look at what is live may wait for someone else's change in flight
/// to land, and keep trying through a platform that does not answer.
const END_READ_LIMIT: Duration = Duration::from_secs(120);

enum Stop {
    Failed(String),
    Cancelled(String),
}

impl Engine<'_> {
    fn context(&self) -> Context {
        Context {
            deadline: Instant::now() + self.config.deploy_timeout,
            budget: "deploy-timeout",
            shutdown: self.shutdown.clone(),
            progress: self.progress.clone(),
            surface: self.config.surface,
        }
    }

    /// For what runs after the run's end, whatever ended it (a signal included): a
    /// calm shutdown handle and half a minute.
    fn closing_context(&self) -> Context {
        Context {
            deadline: Instant::now() + Duration::from_secs(30),
            budget: "deploy-timeout",
            shutdown: Shutdown::new(),
            progress: self.progress.clone(),
            surface: self.config.surface,
        }
    }

    fn new_report(&self, command: &str) -> Report {
        let mut report = Report::new(command, self.provider.name(), &self.config.app, &self.config.environment);
        report.url = Some(self.config.app_url());
        report.surface = self.config.surface;
        // A deploy's target is known before any request: a run that fails at its first
        // read still names what it set out to deploy.
        if matches!(self.config.command, Command::Deploy | Command::Plan) && command != "post" {
            let source = self.config.image.clone().map(Source::Image).or_else(|| self.config.settings.default_source());
            report.target = source.map(|source| Target { source, version: None }.label());
        }
        report
    }

    /// Runs one named phase: a log group, a timeline entry, a heartbeat line at least
    /// every 10 s while it waits, and a guard against signals (deadlines are the
    /// provider's, through `Context`).
    async fn phase<T>(
        &self,
        report: &mut Report,
        run_start: Instant,
        name: &str,
        deadline: Option<Instant>,
        fut: impl Future<Output = Result<T, ProviderError>>,
    ) -> Result<T, Stop> {
        self.runner.group(name);
        self.progress.emit(Event::StepStarted { step: name.to_string() });
        let start = Instant::now();
        let outcome = self.with_heartbeat(name, deadline, self.shutdown.guard(IN_FLIGHT_GRACE, fut)).await;
        let (result, detail, out) = match outcome {
            Some(Ok(v)) => (PhaseResult::Ok, None, Ok(v)),
            Some(Err(ProviderError::Cancelled(_))) | None if self.shutdown.is_shutdown() => {
                let why = format!("{name}: stopped by {}", self.shutdown.cause().unwrap_or("a signal"));
                (PhaseResult::Cancelled, Some(why.clone()), Err(Stop::Cancelled(why)))
            }
            Some(Err(e)) => {
                let said = e.said(self.config.surface);
                let why = self.runner.redactor().redact(&format!("{name}: {said}"));
                self.runner.say(&format!("failed: {why}"));
                (PhaseResult::Failed, Some(said), Err(Stop::Failed(why)))
            }
            None => {
                let why = format!("{name}: cancelled");
                (PhaseResult::Cancelled, Some(why.clone()), Err(Stop::Cancelled(why)))
            }
        };
        report.phases.push(Phase {
            name: name.to_string(),
            start: start - run_start,
            duration: start.elapsed(),
            result,
            detail: detail.map(|d| self.runner.redactor().redact(&d)),
        });
        self.progress.emit(Event::StepEnded { step: name.to_string(), ok: result == PhaseResult::Ok });
        self.runner.end_group();
        out
    }

    /// Runs `fut`, saying at least every 10 s what is awaited, for how long so far and
    /// how long is left.
    async fn with_heartbeat<T>(&self, what: &str, deadline: Option<Instant>, fut: impl Future<Output = T>) -> T {
        let start = Instant::now();
        let heartbeat = async {
            loop {
                tokio::time::sleep(HEARTBEAT).await;
                self.progress.waiting(what, start, deadline);
            }
        };
        tokio::select! {
            out = fut => out,
            never = heartbeat => never,
        }
    }

    /// Runs a gate (health, analysis, external) as one phase: a log group, the live
    /// status, a heartbeat and a timeline entry. The caller decides whether the gate's
    /// report is kept.
    async fn run_gate(
        &self,
        report: &mut Report,
        run_start: Instant,
        gate: &dyn Gate,
    ) -> (GateReport, Result<(), Stop>) {
        let name = gate.name();
        self.runner.group(&name);
        self.progress.emit(Event::StepStarted { step: name.clone() });
        let start = Instant::now();
        let deadline = start + gate.limit();
        let attempted = |text| {
            self.progress.emit(Event::Attempt { text, left: deadline.saturating_duration_since(Instant::now()) })
        };
        let result =
            self.with_heartbeat(&name, Some(deadline), gate.check(self.probe, &self.shutdown, &attempted)).await;
        let (phase_result, out) = match result.result {
            GateResult::Passed => (PhaseResult::Ok, Ok(())),
            GateResult::Failed => (
                PhaseResult::Failed,
                Err(Stop::Failed(format!("{name}: {}", result.reason.clone().unwrap_or_default()))),
            ),
            GateResult::Cancelled => {
                (PhaseResult::Cancelled, Err(Stop::Cancelled(format!("{name}: stopped by a signal"))))
            }
        };
        report.phases.push(Phase {
            name: name.clone(),
            start: start - run_start,
            duration: start.elapsed(),
            result: phase_result,
            detail: result.reason.clone(),
        });
        self.progress.emit(Event::StepEnded { step: name, ok: phase_result == PhaseResult::Ok });
        self.runner.end_group();
        (result, out)
    }

    /// The health gate, kept for the report. With `route`, every check goes to that
    /// one instance (a header the app's URL honours, or its own origin).
    async fn gate(
        &self,
        report: &mut Report,
        run_start: Instant,
        label: &str,
        proof: Proof<'_>,
        route: Option<&Route>,
    ) -> Result<(), Stop> {
        // Versions are checked where the run has a version URL: the new one must answer,
        // and after a rollback the failed one must not.
        let (version, check) = match proof {
            Proof::Answers(v) => (Some(v), VersionCheck::Named),
            Proof::Gone(v) => (Some(v), VersionCheck::Gone),
            Proof::Nothing => (None, VersionCheck::Skip),
        };
        let mut health = self.config.health.clone();
        health.version = health.version.take().and_then(|(url, _)| version.map(|v| (url, v.to_string())));
        if let Some(route) = route {
            routed(route, &mut health.url, &mut health.headers);
            if let Some((url, _)) = health.version.as_mut() {
                routed(route, url, &mut Vec::new());
            }
        }
        let check = if health.version.is_some() { check } else { VersionCheck::Skip };
        let gate = HealthGate { config: &health, version: check, label };
        let (result, out) = self.run_gate(report, run_start, &gate).await;
        report.gates.push(result);
        out
    }

    /// The analysis gates after a health gate passed, on a deploy: the built-in
    /// comparison with the baseline, then Prometheus, then the web check.
    async fn analyse(
        &self,
        report: &mut Report,
        run_start: Instant,
        label: &str,
        baseline: Option<&[Sample]>,
        route: Option<&Route>,
    ) -> Result<(), Stop> {
        let a = &self.config.analysis;
        if self.config.command != Command::Deploy || !a.any() {
            return Ok(());
        }
        if let (true, Some(baseline)) = (a.builtin, baseline) {
            let (mut urls, mut headers) = (a.urls.clone(), a.headers.clone());
            if let Some(route) = route {
                let mut extra = Vec::new();
                for u in &mut urls {
                    extra.clear();
                    routed(route, u, &mut extra);
                }
                headers.extend(extra);
            }
            let gate = Comparison { config: a, baseline, label, urls, headers };
            let (result, out) = self.run_gate(report, run_start, &gate).await;
            report.gates.push(result);
            out?;
        }
        // The external numbers are the app's as a whole: not asked of one instance.
        if route.is_some() {
            return Ok(());
        }
        // Without the built-in window before them, they give the new release one to serve.
        let wait = if a.builtin { Duration::ZERO } else { a.window };
        let checks = a.prometheus.iter().map(External::Prometheus).chain(a.web.iter().map(External::Web));
        for (i, check) in checks.enumerate() {
            let gate =
                ExternalGate { check, label, wait: if i == 0 { wait } else { Duration::ZERO }, timeout: a.timeout };
            let (result, out) = self.run_gate(report, run_start, &gate).await;
            report.gates.push(result);
            out?;
        }
        Ok(())
    }

    /// `deploy`, `rollback`, `redeploy` and `plan`. Whatever happens, the provider's
    /// `finish` runs, and the GitHub deployment gets the status the report says.
    pub async fn run(&self) -> Report {
        let mut report = self.run_steps().await;
        let ending = ending(&report);
        self.read_end_state(&mut report).await;
        // Each closing step has its own half minute: a slow one does not eat the other's.
        report.warnings.extend(self.give_back_lock(ending, &self.closing_context()).await);
        report.warnings.extend(self.provider.finish(ending, &self.closing_context()).await);
        report.api_calls = self.provider.api_calls();
        // A cancelled run's deployment is finished by the post step, after its rollback.
        if report.outcome != Outcome::Cancelled {
            self.close_deployment(&mut report).await;
        }
        report
    }

    /// What is live is what the provider says when the run ends, not what the run
    /// believes it left: another deploy may have changed the app meanwhile. A release
    /// this run proved and left live that is no longer what runs was replaced by
    /// someone else's deploy: the run does not end "deployed", and does not roll back
    /// over theirs.
    async fn read_end_state(&self, report: &mut Report) {
        if matches!(report.outcome, Outcome::Planned | Outcome::Cancelled) || report.previous.is_none() {
            return;
        }
        // After a rollback that failed, the platform has most likely been failing to
        // answer: a short look, not minutes more of the same.
        let limit = if report.outcome == Outcome::RollbackFailed { Duration::from_secs(15) } else { END_READ_LIMIT };
        let ctx = Context { deadline: Instant::now() + limit, ..self.context() };
        // Something another deploy started may still make its release live: the last
        // look comes after it, or says it is under way.
        let settles = matches!(report.outcome, Outcome::Deployed) || !report.changed;
        let settled = match settles {
            true => self.shutdown.guard(IN_FLIGHT_GRACE, self.provider.settle(&ctx)).await,
            false => None,
        };
        let under_way = match settled {
            Some(Ok(note)) => note,
            Some(Err(e)) => Some(format!("whether another deploy is under way could not be read: {e}")),
            None => None,
        };
        let read = outlast(&ctx, "read what runs at the end", || self.provider.snapshot(&ctx));
        let read = self.shutdown.guard(IN_FLIGHT_GRACE, read).await;
        match read {
            Some(Ok(snapshot)) => {
                let cause = snapshot.cause.as_deref().map(|c| format!(" ({c})")).unwrap_or_default();
                let still_made = report.made.as_ref().is_some_and(|m| self.provider.still_runs(&snapshot, m));
                let now = snapshot.release.label;
                match report.live.clone() {
                    Some(left) if !still_made && report.outcome == Outcome::Deployed => {
                        report.outcome = Outcome::Failed;
                        report.changed = true;
                        report.reason = Some(format!(
                            "{now}{cause} replaced {left} after this run proved it healthy: another deploy (or a person) changed the app meanwhile. safe-deploy does not roll back over someone else's deploy; check {now}, then re-run this deploy if {left} should still go out"
                        ));
                        report.replaced_by = Some(format!("{now}{cause}"));
                        report.live = Some(now);
                    }
                    Some(left) if !same_release(&left, &now) => {
                        report.warnings.push(format!(
                            "the app now runs {now}{cause}, not {left} as this run left it: another deploy (or a person) changed it meanwhile"
                        ));
                        report.live = Some(now);
                    }
                    Some(_) => {}
                    None => report.live = Some(now),
                }
            }
            Some(Err(e)) => report.warnings.push(format!("what runs at the end could not be read: {e}")),
            None => {}
        }
        if let Some(note) = under_way {
            report.warnings.push(note);
        }
    }

    /// Records the run in the ledger before the first change.
    async fn open_deployment(&self, report: &mut Report, target: &Target) {
        let Some(ledger) = self.ledger else { return };
        let record = Record {
            provider: self.provider.name().to_string(),
            app: self.config.app.clone(),
            command: self.config.command.as_str().to_string(),
            target: target.label(),
            previous: report.previous.clone(),
            version: target.version.clone(),
        };
        let id = match self.guarded(ledger.start(&record)).await {
            Ok(id) => id,
            Err(why) => return self.ledger_warning(report, why),
        };
        // Saved before anything else, so the post step can close it whatever happens.
        state::save_value(self.runner, state::DEPLOYMENT, &id.to_string());
        report.deployment = Some(DeploymentRecord {
            id,
            environment: ledger.environment.clone(),
            state: "created".into(),
            url: ledger.run.deployments_url(&ledger.environment),
        });
        let description = format!("deploying {}", target.label());
        let in_progress = ledger.status(id, "in_progress", &description, None);
        match self.guarded(in_progress).await {
            Ok(()) => {
                if let Some(d) = &mut report.deployment {
                    d.state = "in_progress".into();
                }
            }
            Err(why) => self.ledger_warning(report, why),
        }
    }

    /// Gives the run's deployment its final status, as the report says.
    async fn close_deployment(&self, report: &mut Report) {
        let (Some(ledger), Some(id)) = (self.ledger, report.deployment.as_ref().map(|d| d.id)) else { return };
        let live = report.live.clone().unwrap_or_else(|| "an unknown release".into());
        let (state, description) = match report.outcome {
            Outcome::Deployed => ("success", format!("{live}{}", crate::github::LIVE_AND_HEALTHY)),
            Outcome::RolledBack => ("failure", format!("failed and rolled back; {live} is live")),
            Outcome::Failed => ("failure", format!("failed; {live} is live")),
            Outcome::RollbackFailed => ("error", "ROLLBACK FAILED: what is live is unknown".to_string()),
            Outcome::Cancelled => ("error", format!("cancelled; {live} is live")),
            Outcome::Planned => return,
        };
        let url = (report.outcome == Outcome::Deployed).then(|| report.url.clone()).flatten();
        match self.guarded(ledger.status(id, state, &description, url.as_deref())).await {
            Ok(()) => {
                state::save_value(self.runner, state::DEPLOYMENT_DONE, "true");
                if let Some(d) = &mut report.deployment {
                    d.state = state.to_string();
                }
            }
            Err(why) => self.ledger_warning(report, why),
        }
    }

    /// A GitHub call, let finish within the in-flight grace after a signal: GitHub must
    /// never hold the step past the runner's deadline.
    async fn guarded<T>(&self, call: impl Future<Output = Result<T, String>>) -> Result<T, String> {
        match self.shutdown.guard(IN_FLIGHT_GRACE, call).await {
            Some(result) => result,
            None => Err("GitHub did not answer before the run was stopped".into()),
        }
    }

    fn ledger_warning(&self, report: &mut Report, why: String) {
        let why = self.runner.redactor().redact(&why);
        self.runner.warning("GitHub deployment", &why);
        report.warnings.push(format!("GitHub deployment: {why}"));
    }

    async fn run_steps(&self) -> Report {
        let run_start = Instant::now();
        let mut report = self.new_report(self.config.command.as_str());
        // deploy-timeout bounds the provider's part: the batch gates' time is added back.
        let mut ctx = self.context();
        let finish = |mut r: Report| {
            r.duration = run_start.elapsed();
            r
        };
        let deadline = Some(ctx.deadline);

        // Reads change nothing, so they outlast a flaky API; the first one for two minutes
        // at most, so a wrong api-url or a platform that is down ends the run, with nothing
        // changed, instead of waiting out all of deploy-timeout.
        let first = Context { deadline: ctx.deadline.min(Instant::now() + FIRST_READ_LIMIT), ..ctx.clone() };
        let recorded = outlast(&first, "record the live release", || self.provider.snapshot(&first));
        let live =
            match self.phase(&mut report, run_start, "record the live release", Some(first.deadline), recorded).await {
                Ok(s) => s,
                Err(stop) => return finish(self.stopped_before_change(report, stop)),
            };
        report.previous = Some(live.release.label.clone());
        report.live = Some(live.release.label.clone());
        state::save(self.runner, Stage::Recorded, Some(&live), None);

        let target = match self.choose_target(&mut report, run_start, &live, &ctx).await {
            Ok(t) => t,
            Err(stop) => return finish(self.stopped_before_change(report, stop)),
        };
        report.target = Some(target.label());
        if let Err(why) = self.supported(&target) {
            return finish(self.stopped_before_change(report, Stop::Failed(why)));
        }

        let checked = outlast(&ctx, "preflight", || self.provider.preflight(&live, &target, &ctx));
        let findings = match self.phase(&mut report, run_start, "preflight", deadline, checked).await {
            Ok(f) => f,
            Err(stop) => return finish(self.stopped_before_change(report, stop)),
        };
        for f in &findings {
            report.findings.push(format!("{:?}: {}", f.severity, f.message).to_lowercase_first());
            if f.severity == Severity::Warning {
                self.runner.warning("preflight", &f.message);
            }
        }
        if let Some(blocker) = findings.iter().find(|f| f.severity == Severity::Blocker) {
            return finish(self.stopped_before_change(report, Stop::Failed(format!("preflight: {}", blocker.message))));
        }

        if matches!(self.config.command, Command::Deploy | Command::Plan) && self.config.health.probe_first {
            if let Err(stop) = self.probe_live(&mut report, run_start).await {
                return finish(self.stopped_before_change(report, stop));
            }
        }

        if self.config.changes_nothing() {
            report.plan = self.plan_steps(&live, &target);
            report.outcome = Outcome::Planned;
            state::save(self.runner, Stage::Finished, None, None);
            return finish(report);
        }
        if let Some(cause) = self.shutdown.cause() {
            return finish(
                self.stopped_before_change(report, Stop::Cancelled(format!("stopped by {cause} before any change"))),
            );
        }
        self.open_deployment(&mut report, &target).await;
        report.gone_after_rollback = self.version_not_live_yet(&target).await;

        if let Err(stop) = self.take_lock(&mut report, run_start, &live, LockFor::Deploy, &ctx).await {
            return finish(self.stopped_before_change(report, stop));
        }
        // The yardstick of the analysis, sampled while the lock keeps other deploys out.
        let baseline = match self.sample_baseline(&mut report, run_start).await {
            Ok(b) => b,
            Err(stop) => return finish(self.stopped_before_change(report, stop)),
        };
        // Everything that may still fail with nothing changed happens here.
        let prepared = self.provider.prepare(&live, &target, &ctx);
        let mut rollout = match self.phase(&mut report, run_start, "prepare", deadline, prepared).await {
            Ok(r) => r,
            Err(stop) => return finish(self.stopped_before_change(report, stop)),
        };
        let batches = rollout.batches();
        if batches == 0 {
            let why = "prepare: the roll-out has nothing to change (no instances); nothing was changed".to_string();
            return finish(self.stopped_before_change(report, Stop::Failed(why)));
        }

        // From here on the provider may be changed: the post step must know.
        state::save(self.runner, Stage::Changing, None, Some(&target.label()));
        let mut made: Option<ReleaseRef> = None;
        // The first batch gated alone was compared with the baseline: the end is not
        // compared again (the external checks, of the app as a whole, still run there).
        let mut canary_analysed = false;
        for i in 0..batches {
            // A signal stops forward changes between batches; the post step takes over.
            if let Some(cause) = self.shutdown.cause() {
                let stop = Stop::Cancelled(format!("stopped by {cause} before batch {} of {batches}", i + 1));
                if !rollout.changed() {
                    return finish(self.stopped_before_change(report, stop));
                }
                report.live = None;
                return finish(self.after_failure(report, run_start, &live, stop).await);
            }
            let what = match batches {
                1 => format!("roll out {}: {}", target.label(), rollout.describe(i)),
                n => format!("roll out {}, batch {} of {n}: {}", target.label(), i + 1, rollout.describe(i)),
            };
            let gated = self.config.batch_gate.gates(i, batches) && self.provider.capabilities().single_instances;
            let applied = rollout.apply(i, gated, &ctx);
            let applied = self.phase(&mut report, run_start, &what, Some(ctx.deadline), applied).await;
            report.changed = rollout.changed();
            let applied = match applied {
                Ok(a) => a,
                Err(stop) if !rollout.changed() => return finish(self.stopped_before_change(report, stop)),
                Err(stop) => {
                    // It failed part-way: nobody can say what runs until it is put back.
                    report.live = None;
                    return finish(self.after_failure(report, run_start, &live, stop).await);
                }
            };
            let waited = rollout.wait(i, &ctx);
            let waited =
                self.phase(&mut report, run_start, "wait until the provider reports it up", Some(ctx.deadline), waited);
            match waited.await {
                Ok(Waited::Ready) => {}
                Ok(Waited::Refused { why, left }) if i == 0 => {
                    // The platform kept the live release: nothing serves differently,
                    // nothing to undo. The wait ended in a refusal, so its phase failed.
                    if let Some(p) = report.phases.last_mut() {
                        p.result = PhaseResult::Failed;
                        p.detail = Some(self.runner.redactor().redact(&why));
                    }
                    report.changed = false;
                    report.left_behind = left;
                    let stop = Stop::Failed(format!("{} kept {}: {why}", self.provider.name(), live.release.label));
                    return finish(self.stopped_before_change(report, stop));
                }
                Ok(Waited::Superseded { by, why }) => {
                    // Not ours and not the recorded release: say so, and do not roll back
                    // over someone else's deploy.
                    if let Some(p) = report.phases.last_mut() {
                        p.result = PhaseResult::Failed;
                        p.detail = Some(self.runner.redactor().redact(&why));
                    }
                    // What went live instead is read from the provider at the end. This
                    // run did change the app (a spec the successor may deploy), so the end
                    // is one someone must look at.
                    report.live = None;
                    report.warnings.push(format!(
                        "safe-deploy did not roll back: {by} replaced this deploy, and undoing someone else's deploy is theirs to decide; check {by}, then re-run this deploy if it should still go out"
                    ));
                    report.replaced_by = Some(by);
                    let stop = Stop::Failed(format!("{}: {why}", self.provider.name()));
                    return finish(self.stopped_before_change(report, stop));
                }
                // With rollback off the platform's own rollback still happened: the
                // recorded release is back, not a failed one left live.
                Ok(Waited::RolledBack(why)) if !self.config.rollback => {
                    if let Some(p) = report.phases.last_mut() {
                        p.result = PhaseResult::Failed;
                        p.detail = Some(self.runner.redactor().redact(&why));
                    }
                    report.live = None;
                    report.outcome = Outcome::RolledBack;
                    report.reason = Some(format!("{}: {why}", self.provider.name()));
                    report.warnings.push(format!(
                        "rollback is off ({}), but {} put the previous release back by itself",
                        self.config.surface.setting("rollback", "false"),
                        self.provider.name()
                    ));
                    state::save(self.runner, Stage::Finished, None, None);
                    return finish(report);
                }
                Ok(Waited::Refused { why, .. } | Waited::RolledBack(why)) => {
                    // The wait ended in the platform's refusal or its own rollback: failed.
                    if let Some(p) = report.phases.last_mut() {
                        p.result = PhaseResult::Failed;
                        p.detail = Some(self.runner.redactor().redact(&why));
                    }
                    report.live = None;
                    let why = format!("{}: {why}", self.provider.name());
                    return finish(self.after_failure(report, run_start, &live, Stop::Failed(why)).await);
                }
                // The provider undid its own change (a deployment cancelled before it
                // went live): nothing to restore.
                Err(stop) if !rollout.changed() => {
                    report.changed = false;
                    return finish(self.stopped_before_change(report, stop));
                }
                Err(stop) => {
                    report.live = None;
                    return finish(self.after_failure(report, run_start, &live, stop).await);
                }
            }
            made = Some(applied.release.clone());
            report.made = made.clone();
            if gated {
                let gating = Instant::now();
                let first = (0..i).all(|j| !self.config.batch_gate.gates(j, batches));
                let canary = baseline.as_deref().filter(|_| first);
                let gated = self.gate_instances(&mut report, run_start, i, &applied.instances, &target, canary).await;
                canary_analysed |= canary.is_some() && gated.is_ok();
                ctx.deadline += gating.elapsed();
                if let Err(stop) = gated {
                    report.live = None;
                    return finish(self.after_failure(report, run_start, &live, stop).await);
                }
            }
            if let Some(what) = rollout.admission(i) {
                let admitted = rollout.admit(i, &ctx);
                if let Err(stop) = self.phase(&mut report, run_start, &what, Some(ctx.deadline), admitted).await {
                    report.live = None;
                    return finish(self.after_failure(report, run_start, &live, stop).await);
                }
            }
        }
        // Live only once the provider reported every batch up.
        report.live = made.map(|r| r.label);
        // What the gate proves, in the words of the command that was asked for.
        let label = match self.config.command {
            Command::Rollback => "the restored release",
            Command::Redeploy => "the redeployed release",
            _ => "new release",
        };
        let proof = Proof::answers(target.version.as_deref());
        let gated = match self.gate(&mut report, run_start, label, proof, None).await {
            Ok(()) => {
                let baseline = baseline.as_deref().filter(|_| !canary_analysed);
                self.analyse(&mut report, run_start, label, baseline, None).await
            }
            failed => failed,
        };
        match gated {
            Ok(()) => {
                report.outcome = Outcome::Deployed;
                state::save(self.runner, Stage::Finished, None, None);
                finish(report)
            }
            Err(stop) => {
                // On a platform that replaces every instance itself, a failed gate may be
                // someone else's release gone live meanwhile: theirs is not rolled back.
                if let Some(report) = self.taken_over(&mut report, &live).await {
                    return finish(report);
                }
                finish(self.after_failure(report, run_start, &live, stop).await)
            }
        }
    }

    /// After a failed gate on a platform that replaces every instance itself (Heroku,
    /// App Platform): when what runs now is neither this run's release nor the recorded
    /// one, someone else's deploy took over during the gate. The run ends REPLACED, with
    /// no rollback over theirs; `None` otherwise (the rollback goes ahead).
    async fn taken_over(&self, report: &mut Report, live: &Snapshot) -> Option<Report> {
        let made = report.made.clone()?;
        if self.provider.capabilities().single_instances || !self.config.rollback {
            return None;
        }
        let ctx = Context { deadline: Instant::now() + Duration::from_secs(30), ..self.context() };
        let read = outlast(&ctx, "read what runs after the gate", || self.provider.snapshot(&ctx));
        let now = self.shutdown.guard(IN_FLIGHT_GRACE, read).await?.ok()?;
        if self.provider.still_runs(&now, &made) {
            return None;
        }
        let recorded = self.shutdown.guard(IN_FLIGHT_GRACE, self.provider.in_effect(live, &ctx)).await?;
        if recorded.unwrap_or(true) {
            return None;
        }
        let cause = now.cause.as_deref().map(|c| format!(" ({c})")).unwrap_or_default();
        let theirs = format!("{}{cause}", now.release.label);
        let mut report = std::mem::replace(report, Report::new("", "", "", ""));
        report.outcome = Outcome::Failed;
        report.changed = true;
        report.reason = Some(format!(
            "{theirs} went live during the health gate of {}: another deploy (or a person) took over. safe-deploy does not roll back over someone else's deploy; check {}, then re-run this deploy if {} should still go out",
            made.label, now.release.label, made.label
        ));
        report.warnings.push(format!(
            "safe-deploy did not roll back: {theirs} replaced this deploy, and undoing someone else's deploy is theirs to decide"
        ));
        report.replaced_by = Some(theirs);
        report.live = Some(now.release.label);
        state::save(self.runner, Stage::Finished, None, None);
        Some(report)
    }

    /// The target's version, when the version URL answers and does not name it before
    /// the change: then after a rollback it must stop answering, which is how a rollback
    /// is proved on a platform that switches traffic back slowly (Heroku's preboot).
    async fn version_not_live_yet(&self, target: &Target) -> Option<String> {
        let expected = target.version.as_deref()?;
        let (url, _) = self.config.health.version.as_ref()?;
        let h = &self.config.health;
        let read = self.shutdown.guard(IN_FLIGHT_GRACE, self.probe.get(url, &h.headers, h.timeout)).await?;
        match read {
            Ok((200..=299, body)) if !names_version(&String::from_utf8_lossy(&body), expected) => {
                Some(expected.to_string())
            }
            _ => None,
        }
    }

    /// Checks the health URL against what is live now, before the first change: a gate
    /// that could never pass (a closed port, a wrong host, a redirect, TLS to a plain
    /// port, a check string the live release already fails) stops the deploy here, with
    /// nothing changed, instead of after a full roll-out and a rollback. A few tries, so
    /// one dropped request does not stop a deploy.
    async fn probe_live(&self, report: &mut Report, run_start: Instant) -> Result<(), Stop> {
        let mut health = self.config.health.clone();
        health.successes = 1;
        health.grace = Duration::ZERO;
        health.soak = Duration::ZERO;
        health.interval = health.interval.min(Duration::from_secs(2));
        health.deadline = (health.interval * 3 + health.timeout.min(Duration::from_secs(10))).min(health.deadline);
        let gate = HealthGate {
            config: &health,
            version: VersionCheck::Skip,
            label: "the live release, probed before the roll-out",
        };
        let (result, out) = self.run_gate(report, run_start, &gate).await;
        if out.is_ok() {
            return out;
        }
        if matches!(out, Err(Stop::Cancelled(_))) {
            report.gates.push(result);
            return out;
        }
        let last = result.attempts.last().and_then(|a| a.failure.as_ref()).map(|f| f.explain()).unwrap_or_default();
        let name = |input| self.config.surface.name(input);
        report.gates.push(result);
        Err(Stop::Failed(format!(
            "the health check already fails against what is live now ({last}), so the gate could never pass; fix {}, {} or {}, or set {} for a first deploy or an app that is down{}",
            name("health-url"),
            name("expect-status"),
            name("check-string"),
            self.config.surface.setting("health-probe", "false"),
            self.config.health.guess_note()
        )))
    }

    /// Samples the live release for the analysis, before the first change. Too few
    /// answers stop the deploy here, with nothing changed.
    async fn sample_baseline(&self, report: &mut Report, run_start: Instant) -> Result<Option<Vec<Sample>>, Stop> {
        let a = &self.config.analysis;
        if self.config.command != Command::Deploy || !a.builtin {
            return Ok(None);
        }
        let gate = Baseline::new(a);
        let (result, out) = self.run_gate(report, run_start, &gate).await;
        if out.is_err() {
            report.gates.push(result);
        }
        out.map(|()| Some(gate.samples()))
    }

    /// The health gate against each instance a batch changed, alone, before any other
    /// instance is touched.
    async fn gate_instances(
        &self,
        report: &mut Report,
        run_start: Instant,
        batch: usize,
        instances: &[Instance],
        target: &Target,
        baseline: Option<&[Sample]>,
    ) -> Result<(), Stop> {
        let routed: Vec<&Instance> = instances.iter().filter(|i| i.route.is_some()).collect();
        if routed.is_empty() {
            report.warnings.push(format!(
                "batch {} could not be gated alone: the provider named no instance it can reach by itself",
                batch + 1
            ));
            return Ok(());
        }
        for instance in routed {
            let label = format!("batch {}, instance {}", batch + 1, instance.id);
            let proof = Proof::answers(target.version.as_deref());
            self.gate(report, run_start, &label, proof, instance.route.as_ref()).await?;
            // The first batch gated alone is the canary: the analysis starts there, while
            // few users are on the new release.
            if baseline.is_some() {
                self.analyse(report, run_start, &label, baseline, instance.route.as_ref()).await?;
            }
        }
        Ok(())
    }

    /// Whether the provider can deploy from where the target comes from.
    fn supported(&self, target: &Target) -> Result<(), String> {
        let caps = self.provider.capabilities();
        match &target.source {
            Source::Image(_) if !caps.images => Err(format!(
                "{} does not deploy container images; deploy a source directory instead",
                self.config.provider.title
            )),
            Source::Directory(d) if !caps.directories => Err(format!(
                "{} does not build source directories ({}); build and push an image, then give it in image",
                self.config.provider.title,
                d.display()
            )),
            _ => Ok(()),
        }
    }

    /// The target of a deploy is the image. A rollback or redeploy goes to `to` (a
    /// release, or a commit SHA looked up in the ledger); a rollback without one goes
    /// to the last release that deployed successfully before the live one, from the
    /// ledger, else from the provider's own history.
    async fn choose_target(
        &self,
        report: &mut Report,
        run_start: Instant,
        live: &Snapshot,
        ctx: &Context,
    ) -> Result<Target, Stop> {
        let c = self.config;
        if matches!(c.command, Command::Deploy | Command::Plan) {
            let source = match (&c.image, c.settings.default_source()) {
                (Some(image), _) => Source::Image(image.clone()),
                (None, Some(source)) => source,
                (None, None) => return Err(Stop::Failed("bug: no image to deploy".into())),
            };
            return Ok(Target { source, version: c.health.version.as_ref().map(|(_, v)| v.clone()) });
        }
        if let Some(wanted) = c.to.clone().or_else(|| c.image.clone()) {
            return self.resolve(report, &wanted).await;
        }
        if let Some(ledger) = self.ledger {
            match self.guarded(ledger.history(self.provider.name(), &c.app)).await {
                Ok(entries) => {
                    // Where the provider keeps history, a release it can no longer go back
                    // to (Heroku's expired ones) is skipped for the next good one.
                    let returnable = match self.provider.capabilities().history {
                        true => Some(outlast(ctx, "find the previous release", || self.provider.history(ctx)).await),
                        false => None,
                    };
                    for e in entries.iter().filter(|e| was_good(e)) {
                        let name = e.live.clone().unwrap_or_else(|| e.record.target.clone());
                        if same_release(&name, &live.release.label) {
                            continue;
                        }
                        if let Some(Ok(history)) = &returnable {
                            if !history.iter().any(|r| same_release(&r.label, &name) || r.id == name) {
                                report.findings.push(format!(
                                    "info: skipped {name} (deployment {}): {} does not offer it as a rollback target (it is what runs now, or expired, or not eligible)",
                                    e.id,
                                    self.provider.name()
                                ));
                                continue;
                            }
                        }
                        report.findings.push(format!(
                            "info: the ledger's last good release before {} is {name} (deployment {}, commit {})",
                            live.release.label,
                            e.id,
                            short(&e.sha)
                        ));
                        return Ok(Target { source: release(&name), version: e.record.version.clone() });
                    }
                }
                Err(why) => self.ledger_warning(report, why),
            }
        }
        if !self.provider.capabilities().history {
            return Err(Stop::Failed(format!(
                "{} keeps no release history safe-deploy can read, and the GitHub ledger knows no good release before {}; name one with {}, or pass {} so the ledger records each deploy",
                self.config.provider.title,
                live.release.label,
                self.config.surface.name("to"),
                self.config.surface.name("github-token")
            )));
        }
        let listed = self.provider.history(ctx);
        let history = self.phase(report, run_start, "find the previous release", Some(ctx.deadline), listed).await?;
        let earlier = history.iter().rev().find(|r| r.id != live.release.id);
        if let Some(r) = earlier {
            // Not proved healthy by safe-deploy: say where it came from.
            report.findings.push(format!(
                "info: the GitHub ledger names no healthy release to go back to, so {} comes from {}'s own list: its newest release before {} that it can still roll back to",
                r.label,
                self.provider.name(),
                live.release.label
            ));
        }
        earlier
            .map(|r| Target { source: Source::Release(r.clone()), version: None })
            .ok_or_else(|| {
                Stop::Failed(format!(
                    "no earlier release to roll back to: neither the GitHub ledger nor {} knows one before {}; name one with {}",
                    self.provider.name(),
                    live.release.label,
                    self.config.surface.name("to")
                ))
            })
    }

    /// A release as the user named it: a commit SHA found in the ledger, or the
    /// provider's own name for a release.
    async fn resolve(&self, report: &mut Report, wanted: &str) -> Result<Target, Stop> {
        let looks_like_sha = (7..=40).contains(&wanted.len()) && wanted.chars().all(|c| c.is_ascii_hexdigit());
        let (true, Some(ledger)) = (looks_like_sha, self.ledger) else {
            return Ok(Target { source: release(wanted), version: None });
        };
        let entries: Vec<Entry> = self
            .guarded(ledger.history(self.provider.name(), &self.config.app))
            .await
            .map_err(|why| Stop::Failed(format!("commit {wanted} could not be looked up: {why}")))?;
        let sha = wanted.to_ascii_lowercase();
        let of_commit = || entries.iter().filter(|e| e.sha.starts_with(&sha));
        let hit = of_commit().find(|e| was_good(e)).or_else(|| of_commit().next());
        match hit {
            Some(e) => {
                // What the deploy left live (Heroku's v43), where its target was a source folder.
                let name = e.live.clone().unwrap_or_else(|| e.record.target.clone());
                report.findings.push(format!(
                    "info: commit {} was deployed as {name} (deployment {})",
                    short(&e.sha),
                    e.id
                ));
                Ok(Target { source: release(&name), version: e.record.version.clone() })
            }
            // Hex that names no deployed commit may be the provider's own name for a
            // release (an App Platform deployment's short id).
            None => {
                report.findings.push(format!(
                    "info: the ledger names no deploy of commit {wanted} to {}, so {wanted} is taken as {}'s own name for a release",
                    ledger.environment,
                    self.provider.name()
                ));
                Ok(Target { source: release(wanted), version: None })
            }
        }
    }

    fn plan_steps(&self, live: &Snapshot, target: &Target) -> Vec<String> {
        let h = &self.config.health;
        let plan = self.provider.plan(live, target);
        let mut steps = vec![format!("record the live release ({})", live.release.label)];
        steps.extend(plan.prepare.iter().map(|s| format!("before any change: {s}")));
        let n = plan.batches.len();
        for (i, b) in plan.batches.iter().enumerate() {
            steps.push(format!("batch {} of {n} ({}): {}", i + 1, b.label, b.steps.join("; ")));
            if self.config.batch_gate.gates(i, n) && self.provider.capabilities().single_instances {
                steps.push(format!("health gate against batch {} alone, before any other instance changes", i + 1));
            }
        }
        let mut gate = format!(
            "health gate: GET {}{} until {} consecutive answers with status {}",
            crate::http::shown(&h.url),
            if h.guessed { " (guessed from the app's name)" } else { "" },
            h.successes,
            h.expect_status
        );
        if let Some(s) = &h.check_string {
            gate.push_str(&format!(" containing '{s}'"));
        }
        if let Some((u, v)) = &h.version {
            gate.push_str(&format!(", and {} naming version {v}", crate::http::shown(u)));
        }
        gate.push_str(&format!(
            ", every {}, within {} (grace {}, soak {})",
            human(h.interval),
            human(h.deadline),
            human(h.grace),
            human(h.soak)
        ));
        steps.push(gate);
        let a = &self.config.analysis;
        if self.config.command == Command::Deploy || self.config.command == Command::Plan {
            if a.builtin {
                steps.push(a.describe());
            }
            if let Some(q) = &a.prometheus {
                steps.push(format!(
                    "analysis: ask Prometheus at {} for {} and fail when any value is over {}",
                    crate::http::shown(&q.url),
                    q.query,
                    q.max
                ));
            }
            if let Some(w) = &a.web {
                steps.push(format!(
                    "analysis: GET {} and fail unless {} meets '{}'",
                    crate::http::shown(&w.url),
                    w.json_path.as_ref().map_or("the answer".to_string(), |p| p.to_string()),
                    w.success_text
                ));
            }
        }
        steps.push(if self.config.rollback {
            format!("on any failure: put {} back and check its health", live.release.label)
        } else {
            format!(
                "on failure: no rollback ({}); the new release stays live",
                self.config.surface.setting("rollback", "false")
            )
        });
        steps
    }

    fn stopped_before_change(&self, mut report: Report, stop: Stop) -> Report {
        let (outcome, why) = match stop {
            Stop::Failed(why) => (Outcome::Failed, why),
            Stop::Cancelled(why) => (Outcome::Cancelled, why),
        };
        report.outcome = outcome;
        report.reason = Some(why);
        state::save(self.runner, Stage::Finished, None, None);
        report
    }

    /// After a change: a signal leaves the rollback to the post step; a failure puts
    /// `live` back, unless rollback is off.
    async fn after_failure(&self, mut report: Report, run_start: Instant, live: &Snapshot, stop: Stop) -> Report {
        let why = match stop {
            Stop::Cancelled(why) => {
                report.outcome = Outcome::Cancelled;
                report.reason = Some(why);
                return report;
            }
            Stop::Failed(why) => why,
        };
        report.reason = Some(why.clone());
        if !self.config.rollback {
            report.outcome = Outcome::Failed;
            report.warnings.push(format!(
                "rollback is off ({}), so the failed release was left in place",
                self.config.surface.setting("rollback", "false")
            ));
            state::save(self.runner, Stage::Finished, None, None);
            return report;
        }
        self.restore(report, run_start, live, why).await
    }

    /// Takes the provider's deploy lock, where it has one, as a phase of its own. A
    /// lock someone else holds ends the phase failed, with nothing changed.
    async fn take_lock(
        &self,
        report: &mut Report,
        run_start: Instant,
        recorded: &Snapshot,
        purpose: LockFor,
        ctx: &Context,
    ) -> Result<(), Stop> {
        if self.provider.lock_kind() == LockKind::None {
            return Ok(());
        }
        let taken = outlast(ctx, "take the deploy lock", || self.provider.lock(recorded, purpose, ctx));
        self.phase(report, run_start, "take the deploy lock", Some(ctx.deadline), taken).await
    }

    /// Gives the deploy lock back at the end of a run; a lock that outlives the process
    /// stays held when the run leaves its change to the post step, so that no other
    /// deploy starts on a half-changed app.
    async fn give_back_lock(&self, ending: Ending, ctx: &Context) -> Vec<String> {
        match (self.provider.lock_kind(), ending) {
            (LockKind::None, _) => Vec::new(),
            (LockKind::Durable, Ending::Unfinished) => vec![
                "the deploy lock stays held until the post step (or safe-deploy post) has put the recorded release back"
                    .into(),
            ],
            _ => self.provider.unlock(ctx).await,
        }
    }

    /// The rollback itself, shared by main and post. It has its own deadline
    /// (rollback-timeout) and outlasts transient failures; while the recorded release
    /// is not back, the saved stage says so, and the post step resumes it.
    async fn restore(&self, mut report: Report, run_start: Instant, live: &Snapshot, why: String) -> Report {
        state::save(self.runner, Stage::RollingBack, None, None);
        let ctx = Context {
            deadline: Instant::now() + self.config.rollback_timeout,
            budget: "rollback-timeout",
            ..self.context()
        };
        let mut info = RollbackInfo { to: live.release.label.clone(), reason: why, succeeded: false, detail: None };
        let name = format!("roll back to {}", live.release.label);
        let restored = match self.take_lock(&mut report, run_start, live, LockFor::Restore, &ctx).await {
            Ok(()) => {
                let restored = outlast(&ctx, &name, || self.provider.restore(live, &ctx));
                self.phase(&mut report, run_start, &name, Some(ctx.deadline), restored).await
            }
            Err(stop) => Err(stop),
        };
        let back = restored.is_ok();
        let verified = match restored {
            Ok(now) => {
                // What the provider says runs now (a platform rollback is a new release).
                report.live = Some(now.label);
                let gone = report.gone_after_rollback.clone();
                let proof = gone.as_deref().map_or(Proof::Nothing, Proof::Gone);
                self.gate(&mut report, run_start, "rolled-back release", proof, None).await
            }
            Err(stop) => {
                report.live = None;
                Err(stop)
            }
        };
        match verified {
            Ok(()) => {
                info.succeeded = true;
                report.outcome = Outcome::RolledBack;
                state::save(self.runner, Stage::Finished, None, None);
            }
            Err(Stop::Cancelled(detail)) => {
                info.detail = Some(detail);
                report.outcome = Outcome::Cancelled;
            }
            Err(Stop::Failed(detail)) => {
                info.detail = Some(detail);
                report.outcome = Outcome::RollbackFailed;
                // Not back: the post step (or `safe-deploy post`) takes it up from here.
                // Back but unhealthy: nothing more can be done by restoring again.
                if back {
                    state::save(self.runner, Stage::Finished, None, None);
                } else {
                    report.warnings.push(
                        "the recorded release is not back everywhere; the post step tries again (off a runner: safe-deploy post --state-file …)".into(),
                    );
                }
            }
        }
        report.rollback = Some(info);
        report
    }

    /// The post step: finishes a rollback that a cancelled main step left open.
    /// Returns `None` when there is nothing to do.
    pub async fn post(&self, saved: &Saved) -> Option<Report> {
        let mut report = self.post_steps(saved).await;
        // Nothing runs after the post step: whatever it could not put back is someone's
        // to look at, and no lock may stay held for a step that never comes.
        let mut unfinished = self.give_back_lock(Ending::Over, &self.closing_context()).await;
        unfinished.extend(self.provider.finish(Ending::Over, &self.closing_context()).await);
        if let Some(r) = &mut report {
            r.warnings.extend(unfinished);
        }
        let (Some(mut report), open) = (report, saved.open_deployment) else {
            // Nothing to roll back, but main may have left its deployment open.
            if let (Some(id), Some(ledger)) = (saved.open_deployment, self.ledger) {
                let description = "cancelled before any change; the recorded release is still live";
                match ledger.status(id, "error", description, None).await {
                    Ok(()) => self
                        .runner
                        .say(&format!("safe-deploy post: GitHub deployment {id} marked error: {description}")),
                    Err(why) => self.runner.warning("GitHub deployment", &why),
                }
            }
            return None;
        };
        report.api_calls = self.provider.api_calls();
        if let (Some(id), Some(ledger)) = (open, self.ledger) {
            report.deployment = Some(DeploymentRecord {
                id,
                environment: ledger.environment.clone(),
                state: "in_progress".into(),
                url: ledger.run.deployments_url(&ledger.environment),
            });
            self.close_deployment(&mut report).await;
        }
        Some(report)
    }

    /// The run a post step finishes, as the person knows it: the action's main step, or
    /// the command they stopped.
    fn stopped_run(&self) -> &'static str {
        match self.config.surface {
            crate::inputs::Surface::Action => "the main step stopped",
            crate::inputs::Surface::Cli => "the run was stopped",
        }
    }

    async fn post_steps(&self, saved: &Saved) -> Option<Report> {
        // An earlier post step finished with this state: nothing is left to do.
        if saved.snapshot_file.as_deref().is_some_and(crate::state::done_with) {
            return None;
        }
        let (stage, snapshot) = match (saved.stage, &saved.snapshot) {
            (Some(stage), Some(snapshot)) if stage.needs_rollback() => (stage, snapshot),
            (Some(stage), None) if stage.needs_rollback() => {
                // Main changed something but its record of what was live is gone.
                let mut report = self.new_report("post");
                report.target = saved.target.clone();
                report.changed = true;
                report.outcome = Outcome::RollbackFailed;
                report.reason = Some(
                    format!("{} mid-deploy, and its record of the previous release was not saved or does not read back; check the app and roll back by hand with {} and {}", self.stopped_run(), self.config.surface.command("rollback"), self.config.surface.name("to")),
                );
                return Some(report);
            }
            _ => return None,
        };
        let run_start = Instant::now();
        let mut report = self.new_report("post");
        report.previous = Some(snapshot.release.label.clone());
        report.target = saved.target.clone();
        report.changed = true;
        // Whatever this step puts back, it does so because the main step was stopped.
        report.stopped = true;
        let why = match stage {
            Stage::RollingBack => format!("{} while rolling back", self.stopped_run()),
            _ => format!("{} mid-deploy (cancelled or killed)", self.stopped_run()),
        };
        // Running twice must do no harm: if the recorded release is back, only prove it.
        // The lock first: the main step may have left it held for this step, which
        // gives it back whatever it finds.
        let ctx = self.context();
        let locked = self.take_lock(&mut report, run_start, snapshot, LockFor::Restore, &ctx).await;
        // A signal ends the step here; anything else still asks, once, what runs now.
        let in_effect = match &locked {
            Err(Stop::Cancelled(_)) => Ok(false),
            _ => {
                let asked = self.provider.in_effect(snapshot, &ctx);
                self.phase(&mut report, run_start, "is the recorded release back?", None, asked).await
            }
        };
        match (locked, &in_effect) {
            (Ok(()), _) => {}
            // Held by another run, or out of reach: when the recorded release is back
            // already, nothing is left to do under the lock, and the run says so.
            (Err(Stop::Failed(d)), Ok(true)) => {
                report.warnings.push(format!("the deploy lock could not be taken ({d}); the recorded release is back"));
            }
            (Err(stop), _) => {
                let (outcome, d) = match stop {
                    Stop::Failed(d) => (Outcome::RollbackFailed, d),
                    Stop::Cancelled(d) => (Outcome::Cancelled, d),
                };
                report.reason = Some(why.clone());
                report.outcome = outcome;
                report.rollback = Some(RollbackInfo {
                    to: snapshot.release.label.clone(),
                    reason: why,
                    succeeded: false,
                    detail: Some(d),
                });
                report.duration = run_start.elapsed();
                return Some(report);
            }
        }
        if let Ok(true) = in_effect {
            // What runs is the recorded release, under the name the provider gives it now
            // (Heroku's rollback made it a new release: "v18 (a copy of v16)").
            let read = outlast(&ctx, "read what runs now", || self.provider.snapshot(&ctx)).await;
            report.live = Some(read.map_or_else(|_| snapshot.release.label.clone(), |now| now.release.label));
            report.reason = Some(why.clone());
            let mut info =
                RollbackInfo { to: snapshot.release.label.clone(), reason: why, succeeded: false, detail: None };
            match self.gate(&mut report, run_start, "rolled-back release", Proof::Nothing, None).await {
                Ok(()) => {
                    info.succeeded = true;
                    info.detail = Some("the recorded release was already back".into());
                    report.outcome = Outcome::RolledBack;
                    // Nothing is left to resume: a post step run again does nothing.
                    state::save(self.runner, Stage::Finished, None, None);
                }
                Err(Stop::Failed(d) | Stop::Cancelled(d)) => {
                    info.detail = Some(d);
                    report.outcome = Outcome::RollbackFailed;
                    // Back but not healthy: putting it back again would not help.
                    state::save(self.runner, Stage::Finished, None, None);
                }
            }
            report.rollback = Some(info);
            report.duration = run_start.elapsed();
            return Some(report);
        }
        let mut report = self.restore(report, run_start, snapshot, why).await;
        report.duration = run_start.elapsed();
        Some(report)
    }
}

/// How the run ended, for the provider's `finish`: proved live, over, or with a
/// release for the post step to put back (cancelled mid-change, or a rollback that
/// did not bring everything back: it left no live release it could name).
fn ending(report: &Report) -> Ending {
    match report.outcome {
        Outcome::Deployed => Ending::Deployed,
        Outcome::Cancelled if report.changed => Ending::Unfinished,
        Outcome::RollbackFailed if report.live.is_none() => Ending::Unfinished,
        _ => Ending::Over,
    }
}

/// A release named by the user or the ledger: an image reference for image providers
/// (Fly), the provider's own release name otherwise; the provider tells them apart.
fn release(name: &str) -> Source {
    Source::Release(ReleaseRef::named(name))
}

trait LowercaseFirst {
    fn to_lowercase_first(self) -> String;
}

impl LowercaseFirst for String {
    fn to_lowercase_first(self) -> String {
        let mut chars = self.chars();
        match chars.next() {
            Some(c) => c.to_lowercase().chain(chars).collect(),
            None => self,
        }
    }
}

/// `url` asked at `origin` instead: its path and query kept, scheme, host and port
/// replaced (a tunnel to one instance).
/// Sends a request for `url` to one instance: a header the app's URL honours, or the
/// instance's own origin.
fn routed(route: &Route, url: &mut url::Url, headers: &mut Vec<(String, String)>) {
    match route {
        Route::Header(name, value) => headers.push((name.clone(), value.clone())),
        Route::Origin(origin) => *url = at_origin(url, origin),
    }
}

fn at_origin(url: &url::Url, origin: &url::Url) -> url::Url {
    let mut moved = origin.clone();
    moved.set_path(url.path());
    moved.set_query(url.query());
    moved
}

/// The first 7 characters of a commit SHA, as GitHub shows it.
fn short(sha: &str) -> &str {
    sha.get(..7).unwrap_or(sha)
}

/// A deployment that went live: `success`, or `inactive` (GitHub's mark on an earlier
/// success in a non-production environment once a newer one succeeds).
fn was_good(e: &Entry) -> bool {
    matches!(e.state.as_deref(), Some("success" | "inactive"))
}

#[cfg(test)]
mod tests {
    //! Engine stories in-process, against the memory provider with tokio's clock paused.

    use std::sync::Arc;

    use super::*;
    use crate::progress::testing::Recorded;
    use crate::providers::conformance::memory::MemoryHarness;
    use crate::providers::conformance::{post, run, tempdir, Harness};

    async fn deploy(h: &MemoryHarness, config: &Config, progress: Progress) -> Report {
        run(h, config, Shutdown::new(), progress, tempdir().path()).await
    }

    #[tokio::test(start_paused = true)]
    async fn a_platform_that_keeps_the_old_release_means_nothing_changed_and_no_rollback() {
        let h = MemoryHarness::new();
        h.store.update(|s| s.faults.refuse = true).unwrap();
        let report = deploy(&h, &h.config(Command::Deploy, "web:v2"), Progress::default()).await;
        assert_eq!(report.outcome, Outcome::Failed, "{report:#?}");
        assert!(!report.changed && report.rollback.is_none());
        assert_eq!(report.live.as_deref(), Some("web:v1"));
        assert!(report.reason.as_deref().unwrap_or_default().contains("kept web:v1"), "{report:#?}");
        assert_eq!(report.exit_code(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_platform_that_rolled_back_by_itself_is_checked_and_reported_rolled_back() {
        let h = MemoryHarness::new();
        h.store.update(|s| s.faults.platform_rollback = true).unwrap();
        let report = deploy(&h, &h.config(Command::Deploy, "web:v2"), Progress::default()).await;
        assert_eq!(report.outcome, Outcome::RolledBack, "{report:#?}");
        assert!(report.changed && report.rolled_back());
        assert_eq!(h.running(), "web:v1");
        assert_eq!(report.gates.last().map(|g| g.label.as_str()), Some("rolled-back release"));
    }

    #[tokio::test(start_paused = true)]
    async fn every_wait_says_what_it_waits_for_at_least_every_ten_seconds() {
        let h = MemoryHarness::new();
        h.store.update(|s| s.faults.roll_out_delay_ms = 35_000).unwrap();
        let seen = Arc::new(Recorded::default());
        let report = deploy(&h, &h.config(Command::Deploy, "web:v2"), Progress::new(seen.clone())).await;
        assert_eq!(report.outcome, Outcome::Deployed, "{report:#?}");
        let events = seen.0.lock().unwrap();
        let waits: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                Event::Waiting { what, elapsed, remaining } if what.starts_with("roll out web:v2, batch 1") => {
                    Some((*elapsed, *remaining))
                }
                _ => None,
            })
            .collect();
        // 35 s of roll-out: a line at 10, 20 and 30 s, each with the time left.
        assert_eq!(waits.len(), 3, "{events:#?}");
        assert!(waits.iter().all(|(elapsed, left)| elapsed.as_secs() % 10 == 0 && left.is_some()), "{waits:?}");
        assert!(events.iter().any(|e| matches!(e, Event::Instance { release: Some(r), .. } if r == "web:v2")));
    }

    #[tokio::test(start_paused = true)]
    async fn a_rollback_outlasts_a_flaky_api() {
        let h = MemoryHarness::new();
        h.store
            .update(|s| {
                s.faults.roll_back_errors = 4;
                s.releases.insert(
                    "web:v2".into(),
                    sandbox::app::ReleaseSpec { health: sandbox::app::HealthMode::Error500, ..Default::default() },
                );
            })
            .unwrap();
        let report = deploy(&h, &h.config(Command::Deploy, "web:v2"), Progress::default()).await;
        assert_eq!(report.outcome, Outcome::RolledBack, "{report:#?}");
        assert_eq!(h.running(), "web:v1");
        let restores = h.store.read().unwrap().calls.iter().filter(|c| c.starts_with("roll_back")).count();
        assert_eq!(restores, 5, "four failed, the fifth restored");
    }

    #[tokio::test(start_paused = true)]
    async fn a_rollback_that_cannot_finish_is_left_for_the_post_step_which_finishes_it() {
        let h = MemoryHarness::new();
        h.store
            .update(|s| {
                s.faults.roll_back_errors = 1_000;
                s.releases.insert(
                    "web:v2".into(),
                    sandbox::app::ReleaseSpec { health: sandbox::app::HealthMode::Error500, ..Default::default() },
                );
            })
            .unwrap();
        let mut config = h.config(Command::Deploy, "web:v2");
        config.rollback_timeout = std::time::Duration::from_secs(30);
        let dir = tempdir();
        let report = run(&h, &config, Shutdown::new(), Progress::default(), dir.path()).await;
        assert_eq!(report.outcome, Outcome::RollbackFailed, "{report:#?}");
        assert_eq!(report.exit_code(), 3);
        let saved = Saved::from_file(&dir.path().join("state")).unwrap();
        assert_eq!(saved.stage, Some(Stage::RollingBack), "the post step must resume it");

        // The API recovers; the post step (a fresh process) finishes the rollback.
        h.store.update(|s| s.faults.roll_back_errors = 0).unwrap();
        let post = post(&h, &config, dir.path(), &saved).await.expect("the post step has work");
        assert_eq!(post.outcome, Outcome::RolledBack, "{post:#?}");
        assert_eq!(h.running(), "web:v1");
    }

    #[tokio::test(start_paused = true)]
    async fn with_batch_gate_every_each_batch_but_the_last_is_gated_alone() {
        let h = MemoryHarness::new();
        let mut config = h.config(Command::Deploy, "web:v2");
        config.batch_gate = crate::config::BatchGate::Every;
        let report = deploy(&h, &config, Progress::default()).await;
        assert_eq!(report.outcome, Outcome::Deployed, "{report:#?}");
        let gates: Vec<&str> = report.gates.iter().map(|g| g.label.as_str()).collect();
        // Three batches: the first two gated alone, the last by the end gate over the app.
        assert_eq!(gates, vec!["batch 1, instance 0", "batch 2, instance 1", "new release"]);
    }
}
