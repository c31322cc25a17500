//! Heroku end to end: the shared provider suite, then the real binary against the
//! Heroku emulator, whose builds unpack the uploaded tarball, whose release phase
//! really runs the Procfile's `release:` command, and whose web dynos are real
//! processes of the test app behind a router like Heroku's.

use sandbox::Handle;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use safe_deploy::config::{Command, Config};
use safe_deploy::http::{HttpClient, RetryConfig};
use safe_deploy::inputs::RawInputs;
use safe_deploy::providers::conformance::{self as suite, Harness};
use safe_deploy::providers::{Source, Target};
use safe_deploy::secret::Redactor;
use sandbox::app::ReleaseSpec;
use sandbox::heroku::{AppOptions, Faults, HerokuOptions, HerokuSandbox};

use crate::util::{platform_inputs, with, Ran, Step, BIN};

/// Heroku's official Platform API schema, beside the repository.
const SCHEMA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/providers/specs/heroku/platform-api-schema.json");

pub const TOKEN: &str = "HRKU-sandbox-token-for-tests-0123456789";

pub async fn heroku(apps: Vec<AppOptions>) -> HerokuSandbox {
    heroku_with(HerokuOptions { apps, ..Default::default() }).await
}

/// The sandbox with `opts`, running the test app, requiring the test token and
/// checking every request and answer against Heroku's schema.
pub async fn heroku_with(opts: HerokuOptions) -> HerokuSandbox {
    HerokuSandbox::start(HerokuOptions {
        token: Some(TOKEN.into()),
        app_command: vec![BIN.into(), "__sandbox-app".into()],
        schema: Some(SCHEMA.into()),
        ..opts
    })
    .await
    .expect("the Heroku sandbox starts")
}

/// Writes an app's source: a Procfile with `web` flags (and a release command), and
/// the version it reports.
fn source(dir: &Path, version: &str, web_flags: &str, release: Option<&str>) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let mut procfile = format!("web: sandbox-app {web_flags}\n");
    if let Some(cmd) = release {
        procfile.push_str(&format!("release: {cmd}\n"));
    }
    std::fs::write(dir.join("Procfile"), procfile).unwrap();
    std::fs::write(dir.join("VERSION"), version).unwrap();
    std::fs::write(dir.join(".gitignore"), "secrets.env\n").unwrap();
    std::fs::write(dir.join("secrets.env"), "never uploaded").unwrap();
    dir.to_path_buf()
}

fn base_inputs(h: &HerokuSandbox, app: &str) -> Vec<(String, String)> {
    platform_inputs("heroku", app, TOKEN, &h.api_url(), &h.app_url(app))
}

/// A step whose workspace holds the app's source in `app/`.
fn step_with_source(inputs: &[(String, String)], version: &str, web_flags: &str, release: Option<&str>) -> Step {
    let mut inputs = with(inputs.to_vec(), "source-dir", "app");
    inputs = with(inputs, "expect-version", version);
    let step = Step::main(&inputs);
    source(&step.dir.path().join("app"), version, web_flags, release);
    step
}

/// Stops the sandbox once every request the provider sent and every answer the
/// emulator gave is checked against Heroku's official schema.
async fn done(h: HerokuSandbox) {
    let violations = h.schema_violations();
    h.stop().await;
    assert!(violations.is_empty(), "broke Heroku's schema:\n{}", violations.join("\n"));
}

fn writes(h: &HerokuSandbox) -> Vec<String> {
    h.calls().iter().filter(|c| c.is_write()).map(|c| format!("{} {}", c.method, c.path)).collect()
}

// ----- the shared provider suite -----

struct HerokuHarness {
    h: HerokuSandbox,
    http: HttpClient,
    workspace: tempfile::TempDir,
}

impl HerokuHarness {
    async fn start() -> HerokuHarness {
        let h = heroku(vec![AppOptions::cedar("web")]).await;
        let workspace = tempfile::tempdir().unwrap();
        for v in ["g2", "g3"] {
            source(&workspace.path().join(v), v, "", None);
        }
        source(&workspace.path().join("broken"), "broken", "--health wrong-body", None);
        for (name, spec) in sandbox::app::analysis_releases() {
            let flags =
                format!("--latency-ms {} --error-rate {}", spec.latency_ms, f64::from(spec.error_per_mille) / 1000.0);
            source(&workspace.path().join(name), name, &flags, None);
        }
        let http = HttpClient::new(Redactor::default(), RetryConfig::default(), Duration::from_secs(30)).unwrap();
        HerokuHarness { h, http, workspace }
    }
}

#[async_trait]
impl Harness for HerokuHarness {
    fn http(&self) -> Option<&HttpClient> {
        Some(&self.http)
    }

    fn config(&self, command: Command, release: &str) -> Config {
        let mut raw = RawInputs::default();
        raw.set("command", command.as_str());
        for (k, v) in base_inputs(&self.h, "web") {
            raw.set(&k, v);
        }
        raw.set("source-dir", release);
        raw.set("expect-version", release);
        Config::from_inputs_in(&raw, self.workspace.path()).unwrap()
    }

    fn good(&self) -> [String; 2] {
        ["g2".into(), "g3".into()]
    }

    fn broken(&self) -> String {
        "broken".into()
    }

    fn analysed(&self, name: &str) -> String {
        name.into()
    }

    fn running(&self) -> String {
        self.h.current_version("web").and_then(|v| self.h.served_by("web", v)).unwrap_or_default()
    }

    fn says(&self, label: &str) -> String {
        let version = label.trim_start_matches('v').split_whitespace().next().and_then(|v| v.parse().ok());
        version.and_then(|v| self.h.served_by("web", v)).unwrap_or_else(|| label.to_string())
    }

    fn target(&self, release: &str) -> Target {
        Target { source: Source::Directory(self.workspace.path().join(release)), version: Some(release.into()) }
    }

    fn instances_that_ran(&self, _release: &str) -> usize {
        0
    }

    fn first_batch(&self) -> usize {
        0
    }

    fn writes(&self) -> usize {
        writes(&self.h).len()
    }

    async fn break_prepare(&self, on: bool) {
        // Sources without a Procfile fail to build: no release is made.
        for v in self.good() {
            let dir = self.workspace.path().join(v);
            let (from, to) = if on { ("Procfile", "Procfile.off") } else { ("Procfile.off", "Procfile") };
            let _ = std::fs::rename(dir.join(from), dir.join(to));
        }
    }

    async fn break_mid_rollout(&self, release: &str) {
        source(&self.workspace.path().join(release), release, "--crash-exit-code 7", None);
    }

    fn faults(&self) -> Vec<&'static str> {
        Faults::SUITE.to_vec()
    }

    async fn inject(&self, fault: &str) {
        self.h.set_faults(Faults::named(fault).expect("a fault the kit knows"));
    }

    async fn clear_faults(&self) {
        self.h.set_faults(Faults::default());
    }
}

impl HerokuHarness {
    async fn done(self) {
        done(self.h).await;
    }
}

#[tokio::test]
async fn heroku_rolls_back_what_the_analysis_finds_worse() {
    let h = HerokuHarness::start().await;
    suite::the_analysis_rolls_back_what_serves_worse(&h).await;
    h.done().await;
}

#[tokio::test]
async fn heroku_passes_a_good_release_through_the_analysis() {
    let h = HerokuHarness::start().await;
    suite::the_analysis_passes_a_release_as_good(&h).await;
    h.done().await;
    let h = HerokuHarness::start().await;
    suite::a_flapping_baseline_is_the_yardstick(&h).await;
    h.done().await;
    let h = HerokuHarness::start().await;
    suite::too_few_answers_stop_the_deploy_before_any_change(&h).await;
    h.done().await;
}

#[tokio::test]
async fn heroku_passes_the_provider_suite() {
    let h = HerokuHarness::start().await;
    suite::a_deploy_passes(&h).await;
    h.done().await;
    let h = HerokuHarness::start().await;
    suite::a_failure_before_any_change_changes_nothing(&h).await;
    h.done().await;
    let h = HerokuHarness::start().await;
    suite::a_failure_mid_roll_out_is_restored(&h).await;
    h.done().await;
    let h = HerokuHarness::start().await;
    suite::restore_twice_does_no_harm(&h).await;
    h.done().await;
}

#[tokio::test]
async fn heroku_is_restored_after_a_signal_at_each_step() {
    suite::a_cancelled_run_is_restored_by_the_post_step(&HerokuHarness::start().await).await;
    suite::cancellation_at_each_step(&HerokuHarness::start().await).await;
    suite::a_cancelled_run_before_any_change_changes_nothing(&HerokuHarness::start().await).await;
}

#[tokio::test]
async fn heroku_every_fault_has_a_test_of_its_own() {
    // Each fault is its own test below (they run side by side); one added to the
    // harness without a test here fails this one.
    let mut listed = HerokuHarness::start().await.faults();
    listed.sort();
    let mut tested = vec!["5xx burst", "429 burst", "reset burst", "slow answers", "malformed burst", "standing 503"];
    tested.sort();
    assert_eq!(listed, tested);
}

#[tokio::test]
async fn heroku_a_5xx_burst_ends_truthfully() {
    suite::a_fault_ends_truthfully(&HerokuHarness::start().await, "5xx burst").await;
}

#[tokio::test]
async fn heroku_a_429_burst_ends_truthfully() {
    suite::a_fault_ends_truthfully(&HerokuHarness::start().await, "429 burst").await;
}

#[tokio::test]
async fn heroku_a_reset_burst_ends_truthfully() {
    suite::a_fault_ends_truthfully(&HerokuHarness::start().await, "reset burst").await;
}

#[tokio::test]
async fn heroku_slow_answers_end_truthfully() {
    suite::a_fault_ends_truthfully(&HerokuHarness::start().await, "slow answers").await;
}

#[tokio::test]
async fn heroku_a_malformed_burst_ends_truthfully() {
    suite::a_fault_ends_truthfully(&HerokuHarness::start().await, "malformed burst").await;
}

#[tokio::test]
async fn heroku_a_standing_503_ends_truthfully() {
    suite::a_fault_ends_truthfully(&HerokuHarness::start().await, "standing 503").await;
}

// ----- the binary -----

fn assert_summary_says(ran: &Ran, words: &[&str]) {
    for w in words {
        assert!(ran.summary.contains(w), "the summary should say {w:?}:\n{ran}");
    }
}

#[tokio::test]
async fn a_healthy_source_deploy_builds_releases_and_proves_the_new_version() {
    let h = heroku(vec![AppOptions::cedar("shop")]).await;
    let step = step_with_source(&base_inputs(&h, "shop"), "2.0.0", "", Some("echo migrating the database"));
    let ran = step.run().await;
    assert_eq!(ran.code, 0, "{ran}");
    assert_eq!((ran.output("status"), ran.output("release")), ("deployed", "v2"), "{ran}");
    assert_eq!(h.current_version("shop"), Some(2));
    assert!(h.dynos("shop").iter().all(|d| d["release"]["version"] == 2 && d["state"] == "up"));
    assert!(ran.stdout.contains("migrating the database"), "the release phase's log is shown:\n{ran}");
    assert!(ran.stdout.contains("Procfile declares types"), "the build log is shown:\n{ran}");
    // The provider never sends buildpacks and uses the current sources endpoint.
    let build = h.calls().into_iter().find(|c| c.path == "/apps/shop/builds" && c.method == "POST").expect("a build");
    assert!(build.body.as_ref().is_some_and(|b| b.get("buildpacks").is_none()), "{:?}", build.body);
    done(h).await;
}

#[tokio::test]
async fn a_second_deploy_while_a_release_phase_runs_changes_nothing_and_both_say_the_same_release_is_live() {
    let h = heroku(vec![AppOptions::cedar("shop")]).await;
    // A's release phase takes a while; B comes while it runs.
    let a = step_with_source(&base_inputs(&h, "shop"), "2.0.0", "", Some("sleep 3"));
    let a_child = a.command().spawn().unwrap();
    crate::util::eventually(Duration::from_secs(30), "A's release phase", || {
        h.releases("shop").iter().any(|r| r["status"] == "pending")
    })
    .await;
    let b = step_with_source(&base_inputs(&h, "shop"), "3.0.0", "", None).run().await;
    let a = a.collect(a_child).await;

    assert_eq!(a.code, 0, "{a}");
    assert_eq!((b.code, b.output("status")), (1, "failed"), "refused, nothing changed: {b}");
    assert!(b.summary.contains("FAILED before any change") && b.summary.contains("in flight"), "{b}");
    assert!(!h.releases("shop").iter().any(|r| r["description"].as_str().is_some_and(|d| d.contains("3.0.0"))));
    // Both runs name what the app runs now: A's release.
    assert_eq!(h.current_version("shop"), Some(2));
    assert_eq!((a.output("release"), b.output("release")), ("v2", "v2"), "{a}\n{b}");
    done(h).await;
}

#[tokio::test]
async fn a_release_someone_makes_during_the_gate_is_not_this_runs_success() {
    let h = heroku(vec![AppOptions::cedar("shop")]).await;
    let inputs = with(with(base_inputs(&h, "shop"), "health-soak", "5s"), "health-deadline", "20s");
    let step = step_with_source(&inputs, "2.0.0", "", None);
    let child = step.command().spawn().unwrap();
    crate::util::eventually(Duration::from_secs(30), "v2 to go live", || h.current_version("shop") == Some(2)).await;
    // The gate passes within a second (three checks 100 ms apart), then soaks; meanwhile
    // someone makes a release of their own (heroku rollback v2: the same code, anew).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let v2 = h.releases("shop").iter().find(|r| r["version"] == 2).map(|r| r["id"].as_str().unwrap().to_string());
    let headers = [("accept", sandbox::heroku::ACCEPT.to_string()), ("authorization", format!("Bearer {TOKEN}"))];
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let body = serde_json::json!({ "release": v2.unwrap() });
    let url = format!("{}/apps/shop/releases", h.api_url());
    let made = sandbox::client::call("POST", &url, &headers, Some(&body)).await.unwrap();
    assert_eq!(made.status, 201, "{}", made.text());
    let ran = step.collect(child).await;

    assert_eq!(h.current_version("shop"), Some(3), "theirs is live");
    assert_eq!((ran.code, ran.output("status"), ran.output("release")), (3, "failed", "v3 (a copy of v2)"), "{ran}");
    assert_summary_says(&ran, &["REPLACED", "v3 (a copy of v2)", "Rollback to v2"]);
    assert!(!ran.summary.contains('@') && !ran.stdout.contains("sandbox@example.com"), "no one's email: {ran}");
    let rollbacks = h.calls().iter().filter(|c| c.method == "POST" && c.path == "/apps/shop/releases").count();
    assert_eq!(rollbacks, 1, "only theirs: this run never rolled back over it");
    done(h).await;
}

#[tokio::test]
async fn a_container_deploy_releases_the_image_and_fir_refuses_it_before_any_change() {
    let image = format!("sha256:{}", "c2".repeat(32));
    let h =
        heroku(vec![AppOptions::container("box", &format!("sha256:{}", "c1".repeat(32))), AppOptions::fir("firapp")])
            .await;
    h.add_image(&image, ReleaseSpec { version: "c2".into(), ..Default::default() });
    let inputs = with(with(base_inputs(&h, "box"), "image", &image), "expect-version", "c2");
    let ran = Step::main(&inputs).run().await;
    assert_eq!((ran.code, ran.output("release")), (0, "v2"), "{ran}");
    let patch = h.calls().into_iter().find(|c| c.method == "PATCH").expect("a formation update");
    assert_eq!(patch.path, "/apps/box/formation");

    h.reset_calls();
    let fir = with(with(base_inputs(&h, "firapp"), "image", &image), "expect-version", "c2");
    let ran = Step::main(&fir).run().await;
    assert_eq!(ran.code, 1, "{ran}");
    assert_eq!(ran.output("status"), "failed");
    assert!(ran.summary.contains("Fir") && ran.summary.contains("leave image empty"), "{ran}");
    assert_eq!(writes(&h), Vec::<String>::new(), "nothing was sent that changes anything");
    assert_eq!(h.current_version("firapp"), Some(1));
    done(h).await;
}

#[tokio::test]
async fn a_missing_check_string_rolls_back_through_herokus_own_rollback() {
    let h = heroku(vec![AppOptions::cedar("shop")]).await;
    let step = step_with_source(&base_inputs(&h, "shop"), "2.0.0", "--health wrong-body", None);
    let ran = step.run().await;
    assert_eq!(ran.code, 1, "{ran}");
    assert_eq!(ran.output("status"), "rolled-back", "{ran}");
    assert_eq!(ran.output("release"), "v3 (a copy of v1)", "{ran}");
    assert_summary_says(&ran, &["v3 (a copy of v1)"]);
    let v3 = h.releases("shop").into_iter().find(|r| r["version"] == 3).expect("a rollback release");
    assert_eq!((v3["description"].as_str(), v3["current"].as_bool()), (Some("Rollback to v1"), Some(true)));
    assert_eq!(h.served_by("shop", 3).as_deref(), Some("v1"));
    done(h).await;
}

#[tokio::test]
async fn a_failed_release_phase_changes_nothing_and_shows_its_log() {
    let h = heroku(vec![AppOptions::cedar("shop")]).await;
    let failing = "echo 'running migration 0042'; echo 'ERROR: column users.email already exists' >&2; exit 3";
    let step = step_with_source(&base_inputs(&h, "shop"), "2.0.0", "", Some(failing));
    let ran = step.run().await;
    assert_eq!(ran.code, 1, "{ran}");
    assert_eq!((ran.output("status"), ran.output("release")), ("failed", "v1"), "{ran}");
    assert_summary_says(&ran, &["column users.email already exists", "before any change"]);
    assert!(
        ran.summary
            .lines()
            .any(|l| l.starts_with("| wait until the provider reports it up |") && l.contains("**failed**")),
        "the refused wait is a failed phase in the timeline: {ran}"
    );
    assert_eq!(h.current_version("shop"), Some(1));
    assert!(
        !h.calls().iter().any(|c| c.method == "POST" && c.path == "/apps/shop/releases"),
        "no rollback is attempted: {:?}",
        writes(&h)
    );
    done(h).await;
}

#[tokio::test]
async fn crashed_dynos_are_caught_at_once_and_rolled_back() {
    let h = heroku(vec![AppOptions::cedar("shop")]).await;
    let inputs = with(base_inputs(&h, "shop"), "deploy-timeout", "5m");
    let step = step_with_source(&inputs, "2.0.0", "--crash-exit-code 1", None);
    let started = Instant::now();
    let ran = step.run().await;
    assert_eq!((ran.code, ran.output("status")), (1, "rolled-back"), "{ran}");
    assert!(started.elapsed() < Duration::from_secs(30), "caught long before the 5m deadline: {:?}", started.elapsed());
    assert!(
        ran.summary.contains("| wait until the provider reports it up |")
            && (ran.summary.contains("dyno web.1 crashed on v2") || ran.summary.contains("dyno web.2 crashed on v2")),
        "the dyno wait caught the crash, not the health gate: {ran}"
    );
    assert!(!ran.summary.contains("health gate: new release"), "no gate ran on a crashed release: {ran}");
    assert!(h.settled("shop", Duration::from_secs(10)).await);
    assert_eq!(h.served_by("shop", h.current_version("shop").unwrap()).as_deref(), Some("v1"));
    done(h).await;
}

#[tokio::test]
async fn rollback_skips_an_expired_release_and_refuses_to_go_to_one() {
    let h = heroku(vec![AppOptions::cedar("shop")]).await;
    for v in ["2.0.0", "3.0.0"] {
        let ran = step_with_source(&base_inputs(&h, "shop"), v, "", None).run().await;
        assert_eq!(ran.code, 0, "{ran}");
    }
    assert!(h.expire("shop", 2));
    let rollback = with(with(base_inputs(&h, "shop"), "command", "rollback"), "version-url", "");
    let named = with(rollback.clone(), "to", "v2");
    let ran = Step::main(&named).run().await;
    assert_eq!((ran.code, ran.output("status")), (1, "failed"), "{ran}");
    assert!(ran.summary.contains("expired"), "{ran}");
    assert_eq!(h.current_version("shop"), Some(3));

    let ran = Step::main(&rollback).run().await;
    assert_eq!(ran.code, 0, "{ran}");
    assert_eq!(ran.output("release"), "v4 (a copy of v1)", "v2 expired, so v1 is the one: {ran}");
    assert!(
        ran.summary.contains("comes from heroku's own list"),
        "without a ledger, the run says where v1 came from: {ran}"
    );
    // v4 runs v1's code: v1 is no target now, nor are v2 (expired) and v3 (rolled away from).
    let again = Step::main(&rollback).run().await;
    assert_eq!((again.code, again.output("status")), (1, "failed"), "{again}");
    assert_eq!(h.releases("shop").len(), 4, "no rollback to the code that already runs: {again}");
    done(h).await;
}

#[tokio::test]
async fn a_pipeline_promotion_is_followed_gated_and_kept() {
    let staging = AppOptions {
        version: "s7".into(),
        pipeline: Some(("shop".into(), "staging".into())),
        ..AppOptions::cedar("shop-staging")
    };
    let production = AppOptions { pipeline: Some(("shop".into(), "production".into())), ..AppOptions::cedar("shop") };
    let h = heroku(vec![staging, production]).await;
    let inputs = with(with(base_inputs(&h, "shop"), "promote-from", "shop-staging"), "expect-version", "s7");
    let ran = Step::main(&inputs).run().await;
    assert_eq!((ran.code, ran.output("release")), (0, "v2"), "{ran}");
    assert_eq!(h.served_by("shop", 2).as_deref(), Some("s7"), "production runs what staging ran");
    assert!(h.calls().iter().any(|c| c.method == "POST" && c.path == "/pipeline-promotions"));
    done(h).await;
}

#[tokio::test]
async fn preflight_warns_when_preboot_is_off_and_names_the_fix() {
    let h = heroku(vec![AppOptions { preboot: false, dynos: 1, ..AppOptions::cedar("shop") }]).await;
    let inputs = with(base_inputs(&h, "shop"), "command", "plan");
    let step = step_with_source(&inputs, "2.0.0", "", None);
    let ran = step.run().await;
    assert_eq!(ran.code, 0, "{ran}");
    assert!(ran.summary.contains("heroku features:enable preboot -a shop"), "{ran}");
    assert_eq!(writes(&h), Vec::<String>::new(), "a plan changes nothing");
    done(h).await;
}

#[tokio::test]
async fn rollback_goes_to_the_newest_healthy_release_in_the_ledger_that_heroku_can_still_return_to() {
    use crate::github::{github, sha, step};
    let gh = github().await;
    let h = heroku(vec![AppOptions::cedar("shop")]).await;
    for (n, version, flags, code) in [(1, "2.0.0", "", 0), (2, "3.0.0", "", 0), (3, "4.0.0", "--health wrong-body", 1)]
    {
        let inputs = with(with(base_inputs(&h, "shop"), "source-dir", "app"), "expect-version", version);
        let s = step(&gh, &inputs, &sha(n));
        source(&s.dir.path().join("app"), version, flags, None);
        let ran = s.run().await;
        assert_eq!(ran.code, code, "{version}: {ran}");
    }
    assert_eq!(h.served_by("shop", h.current_version("shop").unwrap()).as_deref(), Some("3.0.0"));
    // v2 was the last good one before v3, but its slug has expired.
    assert!(h.expire("shop", 2));
    let rollback = with(with(base_inputs(&h, "shop"), "command", "rollback"), "version-url", "");
    let ran = step(&gh, &rollback, &sha(4)).run().await;
    assert_eq!(ran.code, 0, "{ran}");
    assert!(ran.summary.contains("skipped v3") && ran.summary.contains("skipped v2"), "{ran}");
    assert_eq!(ran.output("release"), "v6 (a copy of v1)", "{ran}");
    assert_eq!(h.served_by("shop", 6).as_deref(), Some("v1"));
    done(h).await;
}

#[tokio::test]
async fn a_promotion_that_fails_its_gate_is_rolled_back_in_production() {
    let staging = AppOptions {
        version: "s8".into(),
        web: "--health wrong-body".into(),
        pipeline: Some(("shop".into(), "staging".into())),
        ..AppOptions::cedar("shop-staging")
    };
    let production = AppOptions { pipeline: Some(("shop".into(), "production".into())), ..AppOptions::cedar("shop") };
    let h = heroku(vec![staging, production]).await;
    let inputs = with(with(base_inputs(&h, "shop"), "promote-from", "shop-staging"), "expect-version", "s8");
    let ran = Step::main(&inputs).run().await;
    assert_eq!((ran.code, ran.output("status")), (1, "rolled-back"), "{ran}");
    assert_eq!(ran.output("release"), "v3 (a copy of v1)", "{ran}");
    assert_eq!(h.served_by("shop", 3).as_deref(), Some("v1"));
    assert_eq!(h.current_version("shop-staging"), Some(1), "staging is left as it was");
    done(h).await;
}

#[tokio::test]
async fn a_signal_mid_build_cancels_the_build_so_nothing_is_released() {
    let h = heroku_with(HerokuOptions {
        apps: vec![AppOptions::cedar("shop")],
        build_time: Duration::from_secs(4),
        ..Default::default()
    })
    .await;
    let step = step_with_source(&base_inputs(&h, "shop"), "2.0.0", "", None);
    let building = || h.calls().iter().any(|c| c.method == "POST" && c.path == "/apps/shop/builds");
    let (ran, took) = step.interrupt_when("TERM", "the build to start", building).await;
    assert_eq!(ran.code, 130, "{ran}");
    assert!(took < Duration::from_secs(7), "{took:?}");
    assert!(
        h.calls().iter().any(|c| c.method == "DELETE" && c.path.starts_with("/apps/shop/builds/")),
        "{:?}",
        writes(&h)
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(h.current_version("shop"), Some(1), "the cancelled build released nothing");
    assert_eq!(h.releases("shop").len(), 1);
    // The post step finds the recorded release still live and changes nothing.
    let post = Step::post(&with(base_inputs(&h, "shop"), "expect-version", "2.0.0"), &ran.state).run().await;
    assert_eq!(post.code, 0, "{post}");
    assert_eq!(h.releases("shop").len(), 1, "{post}");
    done(h).await;
}

#[tokio::test]
async fn after_a_rollback_the_gate_waits_until_the_failed_release_stops_answering() {
    // Preboot takes 3 s to switch traffic back: until then the failed release answers.
    let h = heroku_with(HerokuOptions {
        apps: vec![AppOptions::cedar("shop")],
        preboot_switch: Duration::from_secs(3),
        ..Default::default()
    })
    .await;
    // Flaps (every third /health is 500): passes a gate of two, fails the soak.
    let inputs = with(
        with(with(base_inputs(&h, "shop"), "health-successes", "2"), "health-soak", "2s"),
        "health-deadline",
        "12s",
    );
    let step = step_with_source(&inputs, "2.0.0", "--health flaky", None);
    let ran = step.run().await;
    assert_eq!((ran.code, ran.output("status")), (1, "rolled-back"), "{ran}");
    assert!(
        ran.summary.contains("still answers"),
        "the rolled-back gate saw 2.0.0 still serving during the switch, and waited: {ran}"
    );
    assert_eq!(h.served_by("shop", h.current_version("shop").unwrap()).as_deref(), Some("v1"));
    let now = sandbox::client::call("GET", &format!("{}/version", h.app_url("shop")), &[], None).await.unwrap();
    assert_eq!(now.text(), "v1", "when the run ended, v1 served");
    done(h).await;
}

#[tokio::test]
async fn a_fir_app_takes_a_source_deploy_without_buildpacks() {
    let h = heroku(vec![AppOptions::fir("firshop")]).await;
    let ran = step_with_source(&base_inputs(&h, "firshop"), "2.0.0", "", None).run().await;
    assert_eq!((ran.code, ran.output("release")), (0, "v2"), "{ran}");
    assert!(ran.summary.contains("fir app"), "the generation is named: {ran}");
    let dynos = h.dynos("firshop");
    assert!(
        dynos.iter().all(|d| d["name"].as_str().is_some_and(|n| n.starts_with("web-"))),
        "Fir's dyno names: {dynos:?}"
    );
    // The emulator answers 422 to buildpacks on Fir; the provider never sends them.
    let build =
        h.calls().into_iter().find(|c| c.method == "POST" && c.path == "/apps/firshop/builds").expect("a build");
    assert!(build.body.as_ref().is_some_and(|b| b.get("buildpacks").is_none()));
    done(h).await;
}
