//! The suite every provider runs against its emulator, the memory provider included
//! (object_store's `integration.rs`): plain async functions over a `Harness`, each a
//! story told through the engine, as a run would tell it. A new provider's tests call
//! each of them with its own harness.
//!
//! The memory provider runs them in-process with tokio's clock paused (see the tests
//! below); the Fly provider runs them against the Fly emulator, with real processes,
//! in `tests/conformance.rs`.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{Event, LockFor, Observer, Progress, Provider, Rollout, Source, Target};
use crate::config::{Command, Config};
use crate::engine::Engine;
use crate::health::Probe;
use crate::http::HttpClient;
use crate::report::{Outcome, Report};
use crate::runner::{Paths, Runner};
use crate::secret::Redactor;
use crate::shutdown::Shutdown;
use crate::state::{Saved, Stage};

/// A provider and its emulator, as the suite drives them.
#[async_trait]
pub trait Harness: Send + Sync {
    /// The HTTP client a provider built from `config` talks through, which also runs the
    /// health checks; a harness without one gives its own `provider` and `probe`.
    fn http(&self) -> Option<&HttpClient> {
        None
    }
    /// A provider as a fresh process builds it (the post step builds another): by
    /// default, from the config of a deploy of the first good release.
    fn provider(&self) -> Box<dyn Provider> {
        let http = self.http().expect("a harness gives http() or its own provider()");
        let config = self.config(Command::Deploy, &self.good()[0]);
        config.build_provider(http).unwrap_or_else(|e| panic!("the harness's config builds no provider: {e:#}"))
    }
    /// The config of a run of `command` to `release`.
    fn config(&self, command: Command, release: &str) -> Config;
    /// How health checks reach the app: by default, the provider's HTTP client.
    fn probe(&self) -> &dyn Probe {
        self.http().expect("a harness gives http() or its own probe()")
    }
    /// Releases that come up and answer healthy: two, so one can follow the other.
    fn good(&self) -> [String; 2];
    /// A release that comes up, as the platform sees it, but fails the health gate.
    fn broken(&self) -> String;
    /// The release the analysis stories call `name` (`sandbox::app::analysis_releases`),
    /// as this harness deploys it; the harness registered them when it started.
    fn analysed(&self, name: &str) -> String;
    /// What the emulator runs now, from the emulator itself: one release, or "mixed...".
    fn running(&self) -> String;
    /// How many instances ever ran `release`.
    fn instances_that_ran(&self, release: &str) -> usize;
    /// How many instances the first batch of a roll-out changes or creates.
    fn first_batch(&self) -> usize;
    /// How many changes the emulator has seen to its instances so far (writes that
    /// change something; leases and reads aside).
    fn writes(&self) -> usize;
    /// Makes `prepare` fail, with nothing changed, until it is called with `false`.
    async fn break_prepare(&self, on: bool);
    /// Makes a roll-out of `release` fail after its first change.
    async fn break_mid_rollout(&self, release: &str);
    /// The API faults the emulator injects, by name; `inject` arms one as a short burst.
    fn faults(&self) -> Vec<&'static str>;
    async fn inject(&self, fault: &str);
    async fn clear_faults(&self);

    /// The target a deploy of `release` has (an image, unless the provider builds).
    fn target(&self, release: &str) -> Target {
        Target { source: Source::Image(release.to_string()), version: None }
    }

    /// What runs, in `running`'s terms, when the provider says `label` is live (Heroku
    /// says `v5` for the release that runs `g2`).
    fn says(&self, label: &str) -> String {
        label.to_string()
    }
}

/// What the report says is live, in `running`'s terms.
fn live(h: &dyn Harness, report: &Report) -> Option<String> {
    report.live.as_deref().map(|l| h.says(l))
}

/// Keeps events, and triggers `shutdown` when the step it names starts (or, with no
/// step, at the first change of an instance), as a signal would arrive.
struct CancelAt {
    step: Option<&'static str>,
    shutdown: Shutdown,
    seen: Mutex<Vec<Event>>,
}

impl Observer for CancelAt {
    fn event(&self, event: Event) {
        let now = match (&event, self.step) {
            (Event::StepStarted { step }, Some(prefix)) => step.starts_with(prefix),
            (Event::Instance { .. }, None) => true,
            _ => false,
        };
        if now {
            self.shutdown.trigger("a test's signal");
        }
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).push(event);
    }
}

/// Runs the post step from `saved`, as a fresh process would, with state in `dir`.
pub(crate) async fn post(h: &dyn Harness, config: &Config, dir: &std::path::Path, saved: &Saved) -> Option<Report> {
    let provider = h.provider();
    let runner = runner(dir);
    let engine = Engine {
        config,
        provider: provider.as_ref(),
        probe: h.probe(),
        runner: &runner,
        shutdown: Shutdown::new(),
        ledger: None,
        progress: Progress::default(),
    };
    engine.post(saved).await
}

/// Runs the post step (twice, as a re-run would) and checks it restores `before`.
async fn post_restores(h: &dyn Harness, config: &Config, dir: &std::path::Path, before: &str, when: &str) {
    let saved = saved(dir);
    assert_eq!(saved.stage, Some(Stage::Changing), "{when}: the post step must know");
    for round in 1..=2 {
        let post = post(h, config, dir, &saved).await;
        let post = post.unwrap_or_else(|| panic!("{when}: post round {round} did nothing"));
        assert_eq!(post.outcome, Outcome::RolledBack, "{when}: post round {round}: {post:#?}");
        assert_eq!(h.running(), before, "{when}: post round {round}");
    }
}

/// Runs one command through the engine, as `cli` would, with state kept in `dir`.
pub(crate) async fn run(
    h: &dyn Harness,
    config: &Config,
    shutdown: Shutdown,
    progress: Progress,
    dir: &std::path::Path,
) -> Report {
    let provider = h.provider();
    let runner = runner(dir);
    let engine = Engine {
        config,
        provider: provider.as_ref(),
        probe: h.probe(),
        runner: &runner,
        shutdown,
        ledger: None,
        progress,
    };
    engine.run().await
}

fn runner(dir: &std::path::Path) -> Runner {
    Runner::new(
        false,
        Paths {
            output: None,
            state: Some(dir.join("state")),
            summary: None,
            temp: Some(dir.into()),
            state_ours: false,
            summary_from: None,
            summary_ours: false,
        },
        Redactor::default(),
    )
}

fn saved(dir: &std::path::Path) -> Saved {
    match Saved::from_file(&dir.join("state")) {
        Ok(s) => s,
        Err(e) => panic!("the state file does not read back: {e}"),
    }
}

/// A directory for one run's state, removed afterwards.
pub(crate) struct TempDir(std::path::PathBuf);

impl TempDir {
    pub(crate) fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn tempdir() -> TempDir {
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("safe-deploy-conformance-{}-{n}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        panic!("no temp dir {}: {e}", dir.display());
    }
    TempDir(dir)
}

/// A healthy release is deployed, proved, and is what runs afterwards.
pub async fn a_deploy_passes(h: &dyn Harness) {
    let [good, _] = h.good();
    let dir = tempdir();
    let report = run(h, &h.config(Command::Deploy, &good), Shutdown::new(), Progress::default(), dir.path()).await;
    assert_eq!(report.outcome, Outcome::Deployed, "{report:#?}");
    assert!(report.changed);
    assert_eq!(h.running(), good);
    assert_eq!(live(h, &report).as_deref(), Some(good.as_str()));
    assert_eq!(report.exit_code(), 0);
}

/// A failure before the first change ends "nothing changed", exit 1, no rollback.
pub async fn a_failure_before_any_change_changes_nothing(h: &dyn Harness) {
    let [good, _] = h.good();
    let before = h.running();
    let dir = tempdir();
    h.break_prepare(true).await;
    let report = run(h, &h.config(Command::Deploy, &good), Shutdown::new(), Progress::default(), dir.path()).await;
    h.break_prepare(false).await;
    assert_eq!(report.outcome, Outcome::Failed, "{report:#?}");
    assert!(!report.changed, "nothing changed: {report:#?}");
    assert!(report.rollback.is_none(), "there is nothing to roll back");
    assert_eq!(live(h, &report).as_deref(), Some(before.as_str()));
    assert_eq!(h.running(), before);
    assert_eq!(report.exit_code(), 1);
    assert_eq!(saved(dir.path()).stage, Some(Stage::Finished), "the post step has nothing to do");
}

/// A roll-out that fails part-way is put back, proved healthy, and says so.
pub async fn a_failure_mid_roll_out_is_restored(h: &dyn Harness) {
    let [_, good] = h.good();
    let before = h.running();
    h.break_mid_rollout(&good).await;
    let dir = tempdir();
    let report = run(h, &h.config(Command::Deploy, &good), Shutdown::new(), Progress::default(), dir.path()).await;
    assert_eq!(report.outcome, Outcome::RolledBack, "{report:#?}");
    assert!(report.changed && report.rolled_back());
    assert_eq!(h.running(), before);
    assert_eq!(live(h, &report).as_deref(), Some(before.as_str()));
}

/// The first-batch gate catches a broken release before any other instance runs it.
pub async fn the_first_batch_gate_catches_a_broken_release(h: &dyn Harness) {
    let broken = h.broken();
    let before = h.running();
    let dir = tempdir();
    let report = run(h, &h.config(Command::Deploy, &broken), Shutdown::new(), Progress::default(), dir.path()).await;
    assert_eq!(report.outcome, Outcome::RolledBack, "{report:#?}");
    assert_eq!(h.running(), before);
    let gates: Vec<&str> = report.gates.iter().map(|g| g.label.as_str()).collect();
    assert!(gates.first().is_some_and(|g| g.starts_with("batch 1")), "the first gate is the first batch's: {gates:?}");
    assert_eq!(
        h.instances_that_ran(&broken),
        h.first_batch(),
        "only the first batch ran the broken release: {report:#?}"
    );
}

/// A deploy of `release` with the built-in analysis on: a short window sampled fast,
/// the limits at their defaults.
fn analysed_config(h: &dyn Harness, release: &str) -> Config {
    let mut config = h.config(Command::Deploy, release);
    let a = &mut config.analysis;
    a.builtin = true;
    // Users' page besides the health check, which a release's errors spare.
    let mut home = config.health.url.clone();
    home.set_path("/");
    a.urls.push(home);
    // 500 answers a side, 250 of them the home page: 5 % errors there against none is
    // far from chance (p ≈ 0.0002).
    a.window = std::time::Duration::from_secs(5);
    a.rate = 100.0;
    a.min_samples = 300;
    config
}

/// Deploys `release` without the analysis and checks it went live: where an analysis
/// story starts.
async fn goes_live(h: &dyn Harness, release: &str) {
    let dir = tempdir();
    let report = run(h, &h.config(Command::Deploy, release), Shutdown::new(), Progress::default(), dir.path()).await;
    assert_eq!(report.outcome, Outcome::Deployed, "{report:#?}");
}

/// With `calm` (20 ms) live, a release that passes every health check but answers in
/// three times as long, or fails one request in twenty, is rolled back by the analysis.
pub async fn the_analysis_rolls_back_what_serves_worse(h: &dyn Harness) {
    let calm = h.analysed("calm");
    goes_live(h, &calm).await;
    for (worse, measure) in [("slow", "latency"), ("erring", "error rate")] {
        let release = h.analysed(worse);
        let dir = tempdir();
        let report = run(h, &analysed_config(h, &release), Shutdown::new(), Progress::default(), dir.path()).await;
        assert_eq!(report.outcome, Outcome::RolledBack, "{worse}: {report:#?}");
        let why = report.reason.clone().unwrap_or_default();
        assert!(why.starts_with("analysis: "), "{worse}: the analysis decided: {why}");
        assert!(why.contains(measure), "{worse}: {why}");
        assert_eq!(h.running(), calm, "{worse}: the live release is back");
        let analysis = report.gates.iter().find(|g| g.kind == crate::gate::GateKind::Analysis && !g.passed());
        let decided = analysis.and_then(|g| g.analysis.as_ref()).expect("the failed analysis reports its numbers");
        assert!(decided.decisions.iter().any(|d| d.failed && d.metric.contains(measure)), "{decided:#?}");
        // Every health gate passed: only the analysis saw it.
        assert!(
            report
                .gates
                .iter()
                .filter(|g| g.kind == crate::gate::GateKind::Health)
                .all(|g| g.passed() || g.label == "rolled-back release"),
            "{report:#?}"
        );
    }
}

/// With `calm` live, `calm2` (the same speed, no errors) passes the analysis.
pub async fn the_analysis_passes_a_release_as_good(h: &dyn Harness) {
    let (calm, calm2) = (h.analysed("calm"), h.analysed("calm2"));
    goes_live(h, &calm).await;
    let dir = tempdir();
    let report = run(h, &analysed_config(h, &calm2), Shutdown::new(), Progress::default(), dir.path()).await;
    assert_eq!(report.outcome, Outcome::Deployed, "{report:#?}");
    assert_eq!(h.running(), calm2);
    let analysed: Vec<_> = report.gates.iter().filter(|g| g.kind == crate::gate::GateKind::Analysis).collect();
    assert!(!analysed.is_empty() && analysed.iter().all(|g| g.passed()), "{report:#?}");
    let a = analysed[0].analysis.as_ref().expect("numbers");
    let (base, new) = (a.baseline.as_ref().expect("a baseline"), a.new.as_ref().expect("the new series"));
    assert!(base.samples >= 300 && new.samples >= 300, "{a:#?}");
    assert!(base.p50_ms >= 20.0 && new.p50_ms >= 20.0, "both sides are the 20 ms releases: {a:#?}");
}

/// With `flaky` live (one answer in ten a 500), `flaky2`, which fails as often, is not
/// worse: the baseline is the yardstick, not a threshold it already misses.
pub async fn a_flapping_baseline_is_the_yardstick(h: &dyn Harness) {
    let (flaky, flaky2) = (h.analysed("flaky"), h.analysed("flaky2"));
    goes_live(h, &flaky).await;
    let dir = tempdir();
    let report = run(h, &analysed_config(h, &flaky2), Shutdown::new(), Progress::default(), dir.path()).await;
    assert_eq!(report.outcome, Outcome::Deployed, "{report:#?}");
    let a = report.gates.iter().rev().find_map(|g| g.analysis.as_ref()).expect("the analysis's numbers");
    let base = a.baseline.as_ref().expect("a baseline");
    assert!(base.errors > 0, "the baseline flaps: {a:#?}");
}

/// Settings that leave too few answers of the live release to compare with stop the
/// deploy at the baseline, with nothing changed (config refuses them as input; the
/// engine does not rely on it).
pub async fn too_few_answers_stop_the_deploy_before_any_change(h: &dyn Harness) {
    let [good, _] = h.good();
    let before = h.running();
    let mut config = analysed_config(h, &good);
    config.analysis.window = std::time::Duration::from_secs(1);
    config.analysis.rate = 20.0;
    let dir = tempdir();
    let report = run(h, &config, Shutdown::new(), Progress::default(), dir.path()).await;
    assert_eq!(report.outcome, Outcome::Failed, "{report:#?}");
    assert!(!report.changed, "{report:#?}");
    let why = report.reason.clone().unwrap_or_default();
    assert!(why.contains("from the live release in 1s (at least 300 needed), nothing to compare"), "{why}");
    assert_eq!(h.running(), before);
}

/// Restoring twice puts the recorded release back once and then changes nothing.
pub async fn restore_twice_does_no_harm(h: &dyn Harness) {
    let [good, _] = h.good();
    let before = h.running();
    let provider = h.provider();
    let dir = tempdir();
    let ctx = context(Progress::default());
    let live = ok(provider.snapshot(&ctx).await);
    let target = h.target(&good);
    // As the engine does: the lock before the first change and before each restore.
    ok(provider.lock(&live, LockFor::Deploy, &ctx).await);
    let mut rollout: Box<dyn Rollout> = ok(provider.prepare(&live, &target, &ctx).await);
    ok(rollout.apply(0, false, &ctx).await);
    ok(rollout.wait(0, &ctx).await);
    assert!(rollout.changed());
    assert!(!ok(provider.in_effect(&live, &ctx).await), "a batch changed: the snapshot is not in effect");
    ok(provider.lock(&live, LockFor::Restore, &ctx).await);
    let first = ok(provider.restore(&live, &ctx).await);
    assert!(ok(provider.in_effect(&live, &ctx).await), "restored");
    let writes = h.writes();
    ok(provider.lock(&live, LockFor::Restore, &ctx).await);
    let second = ok(provider.restore(&live, &ctx).await);
    assert_eq!(h.writes(), writes, "the second restore changed nothing");
    assert!(provider.unlock(&ctx).await.is_empty(), "every lock given back");
    provider.finish(crate::providers::Ending::Over, &ctx).await;
    assert_eq!(first, second);
    assert_eq!(h.says(&first.label), before);
    assert_eq!(h.running(), before);
    drop(dir);
}

/// A run stopped mid-roll-out leaves state a fresh process restores from; the post
/// step run twice does no harm.
pub async fn a_cancelled_run_is_restored_by_the_post_step(h: &dyn Harness) {
    let [good, _] = h.good();
    let before = h.running();
    let dir = tempdir();
    let shutdown = Shutdown::new();
    let observer = Arc::new(CancelAt { step: None, shutdown: shutdown.clone(), seen: Mutex::default() });
    let config = h.config(Command::Deploy, &good);
    let report = run(h, &config, shutdown, Progress::new(observer), dir.path()).await;
    assert_eq!(report.outcome, Outcome::Cancelled, "{report:#?}");
    assert!(report.changed, "it was stopped after the first change");
    post_restores(h, &config, dir.path(), &before, "stopped at the first change").await;
}

/// A signal at the start of each step of the run: before any change the run ends
/// "cancelled" with nothing changed; after one, the post step restores.
pub async fn cancellation_at_each_step(h: &dyn Harness) {
    let steps = [
        ("record the live release", false),
        ("preflight", false),
        ("prepare", false),
        // The roll-out checks for a signal before its first write.
        ("roll out", false),
        ("wait until the provider reports it up", true),
        ("health gate: batch 1", true),
        ("health gate: new release", true),
    ];
    for (step, changes) in steps {
        let [good, other] = h.good();
        let before = h.running();
        let target = if before == good { other } else { good };
        let dir = tempdir();
        let shutdown = Shutdown::new();
        let observer = Arc::new(CancelAt { step: Some(step), shutdown: shutdown.clone(), seen: Mutex::default() });
        let config = h.config(Command::Deploy, &target);
        let report = run(h, &config, shutdown, Progress::new(observer.clone()), dir.path()).await;
        let reached = observer
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|e| matches!(e, Event::StepStarted { step: s } if s.starts_with(step)));
        if !reached {
            // This roll-out has no such step (one batch: no batch gate); it ran to the end.
            assert_eq!(report.outcome, Outcome::Deployed, "no step {step}: {report:#?}");
            continue;
        }
        assert_eq!(report.outcome, Outcome::Cancelled, "cancelled at {step}: {report:#?}");
        // A provider may undo its own change as it stops (App Platform cancels its
        // deployment before it goes live): then nothing may be left changed.
        assert!(changes || !report.changed, "cancelled at {step}: {report:#?}");
        assert_eq!(report.exit_code(), 130);
        if report.changed {
            post_restores(h, &config, dir.path(), &before, step).await;
        } else {
            assert_eq!(h.running(), before, "cancelled at {step}");
            assert_eq!(saved(dir.path()).stage, Some(Stage::Finished), "cancelled at {step}: nothing to restore");
        }
    }
}

/// A signal before any change ends "cancelled", with nothing changed.
pub async fn a_cancelled_run_before_any_change_changes_nothing(h: &dyn Harness) {
    let [good, _] = h.good();
    let before = h.running();
    let dir = tempdir();
    let shutdown = Shutdown::new();
    shutdown.trigger("a test's signal");
    let report = run(h, &h.config(Command::Deploy, &good), shutdown, Progress::default(), dir.path()).await;
    assert_eq!(report.outcome, Outcome::Cancelled, "{report:#?}");
    assert!(!report.changed);
    assert_eq!(h.running(), before);
    assert_eq!(saved(dir.path()).stage, Some(Stage::Finished), "nothing for the post step to do");
}

/// Every API fault the emulator knows ends truthfully: deployed and running the new
/// release, or rolled back and running the old one; the report says which.
pub async fn every_fault_ends_truthfully(h: &dyn Harness) {
    for fault in h.faults() {
        a_fault_ends_truthfully(h, fault).await;
    }
}

/// One of the harness's faults, as `every_fault_ends_truthfully` runs each: a test of
/// its own, so the faults run side by side (each with its own emulator).
pub async fn a_fault_ends_truthfully(h: &dyn Harness, fault: &str) {
    assert!(h.faults().contains(&fault), "{fault} is not a fault this harness injects");
    let [a, b] = h.good();
    let before = h.running();
    let next = if before == a { b } else { a };
    h.inject(fault).await;
    let dir = tempdir();
    // A standing outage is given up on at the first read's limit, which deploy-timeout
    // bounds: 20 s shows it as well as the usual minutes; every burst ends well within.
    let mut config = h.config(Command::Deploy, &next);
    config.deploy_timeout = config.deploy_timeout.min(std::time::Duration::from_secs(20));
    let report = run(h, &config, Shutdown::new(), Progress::default(), dir.path()).await;
    h.clear_faults().await;
    let expected = match report.outcome {
        Outcome::Deployed => next.clone(),
        Outcome::RolledBack | Outcome::Failed if !report.changed || report.rolled_back() => before.clone(),
        other => panic!("{fault}: the run ended {other:?}: {report:#?}"),
    };
    assert_eq!(h.running(), expected, "{fault}: {report:#?}");
    match live(h, &report) {
        Some(live) => assert_eq!(live, expected, "{fault}: the report says what runs"),
        // The live release could not even be read: then nothing may have changed.
        None => assert!(!report.changed, "{fault}: {report:#?}"),
    }
}

fn context(progress: Progress) -> super::Context {
    super::Context {
        deadline: tokio::time::Instant::now() + std::time::Duration::from_secs(120),
        budget: "deploy-timeout",
        shutdown: Shutdown::new(),
        progress,
        surface: Default::default(),
    }
}

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}

/// The memory provider's harness: the double's state in memory, its instances answering
/// health checks without a socket, so the suite runs with tokio's clock paused.
pub mod memory {
    use std::time::Duration;

    use async_trait::async_trait;
    use sandbox::app::{HealthMode, ReleaseSpec};
    use sandbox::double::{answer_as_instance, State, Store};
    use sandbox::server::Request;

    use super::Harness;
    use crate::config::{Command, Config};
    use crate::health::Probe;
    use crate::http::TransportFailure;
    use crate::inputs::RawInputs;
    use crate::providers::memory::MemoryProvider;
    use crate::providers::Provider;

    pub struct MemoryHarness {
        pub store: Store,
        answers: sandbox::app::Answers,
    }

    impl MemoryHarness {
        /// Three instances on v1: a roll-out in two batches.
        pub fn new() -> MemoryHarness {
            let mut state = State::with_instances("web:v1", 3);
            state
                .releases
                .insert("web:broken".into(), ReleaseSpec { health: HealthMode::WrongBody, ..Default::default() });
            for (name, spec) in sandbox::app::analysis_releases() {
                state.releases.insert(format!("web:{name}"), spec);
            }
            MemoryHarness { store: Store::memory(state), answers: Default::default() }
        }

        fn change(&self, f: impl FnOnce(&mut State)) {
            let _ = self.store.update(f);
        }
    }

    impl Default for MemoryHarness {
        fn default() -> Self {
            MemoryHarness::new()
        }
    }

    #[async_trait]
    impl Probe for MemoryHarness {
        async fn get(
            &self,
            url: &url::Url,
            headers: &[(String, String)],
            _: Duration,
        ) -> Result<(u16, Vec<u8>), (TransportFailure, String)> {
            let state = self.store.read().map_err(|e| (TransportFailure::ConnectionRefused, e.to_string()))?;
            let mut map = http::HeaderMap::new();
            for (k, v) in headers {
                if let (Ok(k), Ok(v)) = (http::header::HeaderName::try_from(k.as_str()), http::HeaderValue::from_str(v))
                {
                    map.insert(k, v);
                }
            }
            let request = Request {
                method: http::Method::GET,
                path: url.path().to_string(),
                query: url.query().map(str::to_string),
                headers: map,
                body: Default::default(),
            };
            let response = answer_as_instance(&state, &request, fastrand::usize(..), &self.answers).await;
            let status = response.status().as_u16();
            let body = http_body_util::BodyExt::collect(response.into_body())
                .await
                .map(|b| b.to_bytes().to_vec())
                .unwrap_or_default();
            Ok((status, body))
        }
    }

    #[async_trait]
    impl Harness for MemoryHarness {
        fn provider(&self) -> Box<dyn Provider> {
            Box::new(MemoryProvider::new(self.store.clone()))
        }

        fn config(&self, command: Command, release: &str) -> Config {
            let mut raw = RawInputs::default();
            for (k, v) in [
                ("command", command.as_str()),
                ("provider", "memory"),
                ("app", "web"),
                ("image", release),
                ("api-url", "file:///in-memory.json"),
                ("health-url", "http://127.0.0.1:9/health"),
                ("check-string", "ok"),
                ("version-url", "http://127.0.0.1:9/version"),
                ("expect-version", &sandbox::app::default_version(release)),
                ("health-interval", "100ms"),
                ("health-deadline", "2s"),
            ] {
                raw.set(k, v);
            }
            match Config::from_inputs(&raw) {
                Ok(c) => c,
                Err(e) => panic!("the harness's inputs are wrong: {e:?}"),
            }
        }

        fn probe(&self) -> &dyn Probe {
            self
        }

        fn good(&self) -> [String; 2] {
            ["web:v2".into(), "web:v3".into()]
        }

        fn broken(&self) -> String {
            "web:broken".into()
        }

        fn analysed(&self, name: &str) -> String {
            format!("web:{name}")
        }

        fn running(&self) -> String {
            self.store.read().map(|s| s.live()).unwrap_or_default()
        }

        fn instances_that_ran(&self, release: &str) -> usize {
            self.store.read().map(|s| s.instances_that_ran(release)).unwrap_or_default()
        }

        fn writes(&self) -> usize {
            self.store.read().map(|s| s.changes as usize).unwrap_or_default()
        }

        fn first_batch(&self) -> usize {
            1
        }

        async fn break_prepare(&self, on: bool) {
            self.change(|s| s.faults.fail_prepare = on);
        }

        async fn break_mid_rollout(&self, release: &str) {
            // The release crashes: its instances never come up, after the first change.
            let release = release.to_string();
            self.change(move |s| {
                s.faults.fail_roll_out = true;
                s.releases.insert(release, ReleaseSpec::default());
            });
        }

        fn faults(&self) -> Vec<&'static str> {
            vec!["fail wait", "refuse", "platform rollback"]
        }

        async fn inject(&self, fault: &str) {
            self.change(|s| match fault {
                "fail wait" => s.faults.wait_errors = 1,
                "refuse" => s.faults.refuse = true,
                _ => s.faults.platform_rollback = true,
            });
        }

        async fn clear_faults(&self) {
            self.change(|s| s.faults = Default::default());
        }
    }

    #[cfg(test)]
    mod tests {
        use super::super::*;
        use super::MemoryHarness;

        #[tokio::test(start_paused = true)]
        async fn memory_deploys() {
            a_deploy_passes(&MemoryHarness::new()).await;
        }

        #[tokio::test(start_paused = true)]
        async fn memory_changes_nothing_when_prepare_fails() {
            a_failure_before_any_change_changes_nothing(&MemoryHarness::new()).await;
        }

        #[tokio::test(start_paused = true)]
        async fn memory_restores_a_failed_roll_out() {
            a_failure_mid_roll_out_is_restored(&MemoryHarness::new()).await;
        }

        #[tokio::test(start_paused = true)]
        async fn memory_rolls_back_what_the_analysis_finds_worse() {
            the_analysis_rolls_back_what_serves_worse(&MemoryHarness::new()).await;
        }

        #[tokio::test(start_paused = true)]
        async fn memory_passes_a_good_release_through_the_analysis() {
            the_analysis_passes_a_release_as_good(&MemoryHarness::new()).await;
            a_flapping_baseline_is_the_yardstick(&MemoryHarness::new()).await;
            too_few_answers_stop_the_deploy_before_any_change(&MemoryHarness::new()).await;
        }

        #[tokio::test(start_paused = true)]
        async fn memory_gates_its_first_batch() {
            the_first_batch_gate_catches_a_broken_release(&MemoryHarness::new()).await;
        }

        #[tokio::test(start_paused = true)]
        async fn memory_restores_twice_without_harm() {
            restore_twice_does_no_harm(&MemoryHarness::new()).await;
        }

        #[tokio::test(start_paused = true)]
        async fn memory_post_step_restores_a_cancelled_run() {
            a_cancelled_run_is_restored_by_the_post_step(&MemoryHarness::new()).await;
        }

        #[tokio::test(start_paused = true)]
        async fn memory_cancelled_at_each_step() {
            cancellation_at_each_step(&MemoryHarness::new()).await;
        }

        #[tokio::test(start_paused = true)]
        async fn memory_cancelled_before_any_change() {
            a_cancelled_run_before_any_change_changes_nothing(&MemoryHarness::new()).await;
        }

        #[tokio::test(start_paused = true)]
        async fn memory_faults_end_truthfully() {
            every_fault_ends_truthfully(&MemoryHarness::new()).await;
        }
    }
}
