//! The provider conformance suite (`safe_deploy::providers::conformance`) run for Fly,
//! against the Fly emulator with real test-app processes behind its router. The
//! memory provider runs the same suite in-process, with its clock paused.

use sandbox::Handle;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use safe_deploy::config::{Command, Config};
use safe_deploy::http::{HttpClient, RetryConfig};
use safe_deploy::inputs::RawInputs;
use safe_deploy::providers::conformance::{self as suite, Harness};
use safe_deploy::providers::release_of;
use safe_deploy::secret::Redactor;
use sandbox::app::{HealthMode, ReleaseSpec};
use sandbox::fly::{Faults, FlySandbox};

use crate::fly::{fly, TOKEN, V2, V3};

const BROKEN: &str = "registry.fly.io/web:broken";

struct FlyHarness {
    fly: FlySandbox,
    http: HttpClient,
    prepare_broken: AtomicBool,
    strategy: &'static str,
}

impl FlyHarness {
    async fn start() -> FlyHarness {
        FlyHarness::with("rolling").await
    }

    async fn with(strategy: &'static str) -> FlyHarness {
        let fly = fly().await;
        fly.add_release(BROKEN, ReleaseSpec { health: HealthMode::WrongBody, ..Default::default() });
        for (name, spec) in sandbox::app::analysis_releases() {
            fly.add_release(&format!("registry.fly.io/web:{name}"), spec);
        }
        let http = HttpClient::new(Redactor::default(), RetryConfig::default(), Duration::from_secs(30)).unwrap();
        FlyHarness { fly, http, prepare_broken: AtomicBool::new(false), strategy }
    }
}

#[async_trait]
impl Harness for FlyHarness {
    fn http(&self) -> Option<&HttpClient> {
        Some(&self.http)
    }

    fn config(&self, command: Command, release: &str) -> Config {
        let mut raw = RawInputs::default();
        let app = self.fly.app_url();
        let version = sandbox::app::default_version(release);
        for (k, v) in [
            ("command", command.as_str()),
            ("provider", "fly"),
            ("app", "web"),
            ("token", TOKEN),
            ("image", release),
            ("api-url", &self.fly.api_url()),
            ("health-url", &format!("{app}/health")),
            ("check-string", "ok"),
            ("version-url", &format!("{app}/version")),
            ("expect-version", &version),
            ("health-interval", "100ms"),
            ("health-deadline", "4s"),
            ("health-timeout", "1s"),
            ("deploy-timeout", "90s"),
            ("bluegreen-wait", "300ms"),
            ("strategy", self.strategy),
        ] {
            raw.set(k, v);
        }
        if self.prepare_broken.load(Ordering::SeqCst) {
            raw.set("release-command", "bin/migrate");
        }
        Config::from_inputs_in(&raw, Path::new("/nonexistent-workspace")).unwrap()
    }

    fn good(&self) -> [String; 2] {
        [V2.into(), V3.into()]
    }

    fn broken(&self) -> String {
        BROKEN.into()
    }

    fn analysed(&self, name: &str) -> String {
        format!("registry.fly.io/web:{name}")
    }

    fn running(&self) -> String {
        let machines = self.fly.machines();
        let images =
            machines.iter().filter(|m| m.process_group == "app" && m.state != "destroyed").map(|m| m.image.as_str());
        release_of(images).label
    }

    fn instances_that_ran(&self, release: &str) -> usize {
        self.fly.machines_that_ran(release)
    }

    fn first_batch(&self) -> usize {
        // Bluegreen's first batch is a green beside every blue; the others change one machine.
        if self.strategy == "bluegreen" {
            3
        } else {
            1
        }
    }

    fn writes(&self) -> usize {
        self.fly.calls().iter().filter(|c| c.is_write() && !c.path.ends_with("/lease")).count()
    }

    async fn break_prepare(&self, on: bool) {
        // A release command that exits non-zero stops the deploy before any change.
        self.prepare_broken.store(on, Ordering::SeqCst);
        let exit = if on { 3 } else { 0 };
        for image in self.good() {
            self.fly.add_release(&image, ReleaseSpec { release_command_exit_code: exit, ..Default::default() });
        }
    }

    async fn break_mid_rollout(&self, release: &str) {
        self.fly.add_release(release, ReleaseSpec { crash_on_start: true, exit_code: 7, ..Default::default() });
    }

    fn faults(&self) -> Vec<&'static str> {
        vec![
            "5xx burst",
            "429 burst",
            "429 with Retry-After",
            "reset burst",
            "slow answers",
            "malformed burst",
            "standing 503",
        ]
    }

    async fn inject(&self, fault: &str) {
        let faults = match fault {
            "5xx burst" => Faults { error_burst: 3, ..Default::default() },
            "429 burst" => Faults { rate_limit_burst: 3, ..Default::default() },
            "429 with Retry-After" => Faults { rate_limit_burst: 2, retry_after_secs: Some(1), ..Default::default() },
            "reset burst" => Faults { reset_burst: 2, ..Default::default() },
            "slow answers" => Faults { slow_ms: 150, ..Default::default() },
            "standing 503" => Faults { status: Some(503), ..Default::default() },
            _ => Faults { malformed_burst: 2, ..Default::default() },
        };
        self.fly.set_faults(faults);
    }

    async fn clear_faults(&self) {
        self.fly.set_faults(Faults::default());
    }
}

#[tokio::test]
async fn fly_rolls_back_what_the_analysis_finds_worse() {
    suite::the_analysis_rolls_back_what_serves_worse(&FlyHarness::start().await).await;
}

#[tokio::test]
async fn fly_passes_a_good_release_through_the_analysis() {
    suite::the_analysis_passes_a_release_as_good(&FlyHarness::start().await).await;
    suite::a_flapping_baseline_is_the_yardstick(&FlyHarness::start().await).await;
    suite::too_few_answers_stop_the_deploy_before_any_change(&FlyHarness::start().await).await;
}

#[tokio::test]
async fn fly_deploys() {
    suite::a_deploy_passes(&FlyHarness::start().await).await;
}

#[tokio::test]
async fn fly_changes_nothing_when_prepare_fails() {
    suite::a_failure_before_any_change_changes_nothing(&FlyHarness::start().await).await;
}

#[tokio::test]
async fn fly_restores_a_failed_roll_out() {
    suite::a_failure_mid_roll_out_is_restored(&FlyHarness::start().await).await;
}

#[tokio::test]
async fn fly_gates_its_first_batch() {
    suite::the_first_batch_gate_catches_a_broken_release(&FlyHarness::start().await).await;
}

#[tokio::test]
async fn fly_restores_twice_without_harm() {
    suite::restore_twice_does_no_harm(&FlyHarness::start().await).await;
}

#[tokio::test]
async fn fly_post_step_restores_a_cancelled_run() {
    suite::a_cancelled_run_is_restored_by_the_post_step(&FlyHarness::start().await).await;
}

#[tokio::test]
async fn fly_cancelled_at_each_step() {
    suite::cancellation_at_each_step(&FlyHarness::start().await).await;
}

#[tokio::test]
async fn fly_cancelled_before_any_change() {
    suite::a_cancelled_run_before_any_change_changes_nothing(&FlyHarness::start().await).await;
}

#[tokio::test]
async fn fly_every_fault_has_a_test_of_its_own() {
    // Each fault is its own test below (they run side by side); one added to the
    // harness without a test here fails this one.
    let mut listed = FlyHarness::start().await.faults();
    listed.sort();
    let mut tested = vec![
        "5xx burst",
        "429 burst",
        "429 with Retry-After",
        "reset burst",
        "slow answers",
        "malformed burst",
        "standing 503",
    ];
    tested.sort();
    assert_eq!(listed, tested);
}

#[tokio::test]
async fn fly_a_5xx_burst_ends_truthfully() {
    suite::a_fault_ends_truthfully(&FlyHarness::start().await, "5xx burst").await;
}

#[tokio::test]
async fn fly_a_429_burst_ends_truthfully() {
    suite::a_fault_ends_truthfully(&FlyHarness::start().await, "429 burst").await;
}

#[tokio::test]
async fn fly_a_429_with_retry_after_ends_truthfully() {
    suite::a_fault_ends_truthfully(&FlyHarness::start().await, "429 with Retry-After").await;
}

#[tokio::test]
async fn fly_a_reset_burst_ends_truthfully() {
    suite::a_fault_ends_truthfully(&FlyHarness::start().await, "reset burst").await;
}

#[tokio::test]
async fn fly_slow_answers_end_truthfully() {
    suite::a_fault_ends_truthfully(&FlyHarness::start().await, "slow answers").await;
}

#[tokio::test]
async fn fly_a_malformed_burst_ends_truthfully() {
    suite::a_fault_ends_truthfully(&FlyHarness::start().await, "malformed burst").await;
}

#[tokio::test]
async fn fly_a_standing_503_ends_truthfully() {
    suite::a_fault_ends_truthfully(&FlyHarness::start().await, "standing 503").await;
}

#[tokio::test]
async fn fly_bluegreen_deploys_and_gates_its_greens() {
    suite::a_deploy_passes(&FlyHarness::with("bluegreen").await).await;
    suite::the_first_batch_gate_catches_a_broken_release(&FlyHarness::with("bluegreen").await).await;
}

#[tokio::test]
async fn fly_bluegreen_restores_and_is_cancelled_at_each_step() {
    suite::a_failure_mid_roll_out_is_restored(&FlyHarness::with("bluegreen").await).await;
    suite::restore_twice_does_no_harm(&FlyHarness::with("bluegreen").await).await;
    suite::cancellation_at_each_step(&FlyHarness::with("bluegreen").await).await;
}

#[tokio::test]
async fn fly_canary_deploys_and_gates_its_canary() {
    suite::a_deploy_passes(&FlyHarness::with("canary").await).await;
    suite::the_first_batch_gate_catches_a_broken_release(&FlyHarness::with("canary").await).await;
}

#[tokio::test]
async fn fly_canary_restores_and_is_cancelled_at_each_step() {
    suite::a_failure_mid_roll_out_is_restored(&FlyHarness::with("canary").await).await;
    suite::restore_twice_does_no_harm(&FlyHarness::with("canary").await).await;
    suite::cancellation_at_each_step(&FlyHarness::with("canary").await).await;
}

#[tokio::test]
async fn fly_immediate_deploys_restores_and_is_cancelled_at_each_step() {
    suite::a_deploy_passes(&FlyHarness::with("immediate").await).await;
    suite::a_failure_mid_roll_out_is_restored(&FlyHarness::with("immediate").await).await;
    suite::cancellation_at_each_step(&FlyHarness::with("immediate").await).await;
}
