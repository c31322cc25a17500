//! Hosts over SSH end to end: the shared provider suite for `ssh` and for
//! `digitalocean-droplets`, then the real binary against the hosts rig: each host a
//! loopback address with an SSH server and a `docker` stand-in that runs the test app
//! as real processes, behind a balancer with active health checks (the sandbox's own,
//! or the Droplets emulator's, whose API lists the droplets and the balancer).

use sandbox::Handle;
use std::time::Duration;

use async_trait::async_trait;
use safe_deploy::config::{Command, Config};
use safe_deploy::http::{HttpClient, RetryConfig};
use safe_deploy::inputs::RawInputs;
use safe_deploy::providers::conformance::{self as suite, Harness};
use safe_deploy::providers::{Source, Target};
use safe_deploy::secret::Redactor;
use sandbox::app::{HealthMode, ReleaseSpec, Releases};
use sandbox::droplets::{DropletSpec, DropletsOptions, DropletsSandbox, Faults, LbSpec, LbTarget};
use sandbox::hosts::{Fleet, FleetOptions};
use sandbox::kit::balancer::{Balancer, BalancerOptions, Check, Member, Protocol};
use sandbox::kit::traffic::Traffic;

use crate::util::{with, Ran, Step, BIN};

const TOKEN: &str = "dop_v1_droplets0123456789abcdef0123456789abcdef0123456789abcdef012345";

/// The balancer's check, fast enough for tests: a host is out after 2 × 100 ms and
/// back after 2 × 100 ms.
fn check(port: u16) -> Check {
    Check::health(port, Duration::from_millis(100))
}

fn releases() -> Releases {
    let mut r = Releases::new();
    for tag in ["g1", "g2", "g3", "v1", "v2"] {
        r.insert(format!("web:{tag}"), ReleaseSpec::default());
    }
    r.insert("web:broken".into(), ReleaseSpec { health: HealthMode::WrongBody, ..Default::default() });
    r.insert("web:crashes".into(), ReleaseSpec { crash_on_start: true, exit_code: 3, ..Default::default() });
    for (name, spec) in sandbox::app::analysis_releases() {
        r.insert(format!("web:{name}"), spec);
    }
    r
}

async fn fleet(hosts: usize, running: &str) -> Fleet {
    Fleet::start(FleetOptions {
        hosts,
        running: Some(running.into()),
        releases: releases(),
        app_command: vec![BIN.into(), "__sandbox-app".into()],
        runtime_command: vec![BIN.into(), "__sandbox-runtime".into()],
        ..Default::default()
    })
    .await
    .expect("the hosts start")
}

/// Hosts behind the sandbox's balancer, for provider `ssh`.
struct Rig {
    fleet: Fleet,
    balancer: Balancer,
}

impl Rig {
    async fn start(hosts: usize, running: &str) -> Rig {
        let fleet = fleet(hosts, running).await;
        let port = fleet.hosts()[0].app.port();
        let members = fleet
            .hosts()
            .iter()
            .enumerate()
            .map(|(i, h)| Member { id: format!("h{}", i + 1), ip: h.addr, port: None })
            .collect();
        let balancer = Balancer::start(BalancerOptions { check: check(port), members, target_port: port })
            .await
            .expect("the balancer starts");
        Rig { fleet, balancer }
    }

    fn inputs(&self) -> Vec<(String, String)> {
        let f = &self.fleet;
        let hosts: Vec<String> = f.hosts().iter().map(|h| h.addr.to_string()).collect();
        let own = [
            ("provider", "ssh".to_string()),
            ("hosts", hosts.join(",")),
            ("app-port", f.hosts()[0].app.port().to_string()),
            ("lb-check-path", "/health".into()),
            ("lb-interval", "100ms".into()),
            ("lb-timeout", "100ms".into()),
            ("lb-healthy-threshold", "2".into()),
            ("lb-unhealthy-threshold", "2".into()),
        ];
        host_inputs(f, &self.balancer.url(), &own)
    }

    fn deploy(&self, tag: &str) -> Vec<(String, String)> {
        with(with(self.inputs(), "image", &format!("web:{tag}")), "expect-version", tag)
    }
}

/// What runs on every host, by tag: one tag, or "mixed: ...".
fn running(fleet: &Fleet) -> String {
    let tags: Vec<String> = (0..fleet.hosts().len())
        .map(|i| fleet.running(i).map(|r| r.trim_start_matches("web:").to_string()).unwrap_or_else(|| "none".into()))
        .collect();
    match tags.iter().all(|t| *t == tags[0]) {
        true => tags[0].clone(),
        false => format!("mixed: {}", tags.join(", ")),
    }
}

/// The runtime calls on host `i` that change its container.
pub(crate) fn changes(fleet: &Fleet, i: usize) -> Vec<String> {
    fleet
        .runtime_calls(i)
        .into_iter()
        .filter(|c| c.get(1).is_some_and(|verb| ["stop", "rm", "run", "rename", "start"].contains(&verb.as_str())))
        .map(|c| c[1..].join(" "))
        .collect()
}

fn writes(fleet: &Fleet) -> usize {
    (0..fleet.hosts().len()).map(|i| changes(fleet, i).len()).sum()
}

/// Holds the deploy lock on host `i` as another deploy would.
fn hold_lock(fleet: &Fleet, i: usize, holder: &str) {
    let dir = fleet.hosts()[i].home.join(".safe-deploy/locks/web");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("token"), "someone-else\n").unwrap();
    std::fs::write(dir.join("holder"), format!("{holder}\n")).unwrap();
}

fn release_lock(fleet: &Fleet, i: usize) {
    let _ = std::fs::remove_dir_all(fleet.hosts()[i].home.join(".safe-deploy/locks/web"));
}

fn lock_is_free(fleet: &Fleet) -> bool {
    fleet.hosts().iter().all(|h| !h.home.join(".safe-deploy/locks/web").exists())
}

fn http() -> HttpClient {
    HttpClient::new(Redactor::default(), RetryConfig::default(), Duration::from_secs(30)).unwrap()
}

fn config_of(inputs: &[(String, String)], command: Command) -> Config {
    let mut raw = RawInputs::default();
    for (k, v) in inputs {
        raw.set(k, v);
    }
    raw.set("command", command.as_str());
    Config::from_inputs_in(&raw, std::path::Path::new(".")).unwrap()
}

/// The suite's view of a fleet, whichever provider drives it.
struct HostsHarness {
    fleet: Fleet,
    /// The inputs of a deploy, but its image.
    base: Vec<(String, String)>,
    http: HttpClient,
    faults: Vec<&'static str>,
    api: Option<DropletsSandbox>,
    _balancer: Option<Balancer>,
}

impl HostsHarness {
    async fn ssh() -> HostsHarness {
        let rig = Rig::start(2, "web:g1").await;
        let base = rig.inputs();
        HostsHarness {
            base,
            fleet: rig.fleet,
            http: http(),
            faults: vec!["a dropped connection at the swap", "a dropped connection at the pull"],
            api: None,
            _balancer: Some(rig.balancer),
        }
    }

    async fn droplets(by: LbTarget) -> HostsHarness {
        let (fleet, api) = droplets(2, by).await;
        let base = droplet_inputs(&fleet, &api);
        HostsHarness {
            base,
            fleet,
            http: http(),
            faults: vec![
                "5xx burst",
                "429 burst",
                "reset burst",
                "slow answers",
                "malformed burst",
                "a dropped connection at the swap",
            ],
            api: Some(api),
            _balancer: None,
        }
    }
}

#[async_trait]
impl Harness for HostsHarness {
    fn http(&self) -> Option<&HttpClient> {
        Some(&self.http)
    }

    fn config(&self, command: Command, release: &str) -> Config {
        let mut inputs = with(with(self.base.clone(), "image", &format!("web:{release}")), "expect-version", release);
        if command != Command::Deploy {
            inputs.retain(|(k, _)| k != "image" && k != "expect-version");
        }
        config_of(&inputs, command)
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
        running(&self.fleet)
    }

    fn says(&self, label: &str) -> String {
        label.trim_start_matches("web:").to_string()
    }

    fn target(&self, release: &str) -> Target {
        Target { source: Source::Image(format!("web:{release}")), version: Some(release.into()) }
    }

    fn instances_that_ran(&self, release: &str) -> usize {
        let image = format!("web:{release}");
        (0..self.fleet.hosts().len())
            .filter(|&i| {
                self.fleet
                    .runtime_calls(i)
                    .iter()
                    .any(|c| c.get(1).map(String::as_str) == Some("run") && c.last() == Some(&image))
            })
            .count()
    }

    fn first_batch(&self) -> usize {
        1
    }

    fn writes(&self) -> usize {
        writes(&self.fleet)
    }

    async fn break_prepare(&self, on: bool) {
        // Another deploy holds the lock: the run stops before any change.
        match on {
            true => hold_lock(&self.fleet, 1, "a colleague's deploy"),
            false => release_lock(&self.fleet, 1),
        }
    }

    async fn break_mid_rollout(&self, release: &str) {
        // The new container exits as it starts, on the first host.
        self.fleet
            .add_release(
                &format!("web:{release}"),
                ReleaseSpec { crash_on_start: true, exit_code: 3, ..Default::default() },
            )
            .unwrap();
    }

    fn faults(&self) -> Vec<&'static str> {
        self.faults.clone()
    }

    async fn inject(&self, fault: &str) {
        match fault {
            "a dropped connection at the swap" => self.fleet.ssh(0).drop_connection_on("run --detach"),
            "a dropped connection at the pull" => self.fleet.ssh(1).drop_connection_on("docker pull"),
            other => {
                if let Some(api) = &self.api {
                    api.set_faults(Faults::named(other).expect("a fault the kit knows"));
                }
            }
        }
    }

    async fn clear_faults(&self) {
        if let Some(api) = &self.api {
            api.set_faults(Faults::default());
        }
    }
}

/// Droplets (the fleet's hosts) behind the emulator's balancer, by id or by tag.
async fn droplets(hosts: usize, by: LbTarget) -> (Fleet, DropletsSandbox) {
    droplets_with(hosts, by, Duration::ZERO).await
}

/// The same, with a balancer that takes `busy` to apply each change of its droplets.
async fn droplets_with(hosts: usize, by: LbTarget, busy: Duration) -> (Fleet, DropletsSandbox) {
    let fleet = fleet(hosts, "web:g1").await;
    let port = fleet.hosts()[0].app.port();
    let droplets = DropletSpec::for_hosts(fleet.hosts(), "web");
    let api = DropletsSandbox::start(DropletsOptions {
        token: TOKEN.into(),
        droplets,
        balancer: LbSpec { name: "web-lb".into(), by, check: check(port), target_port: port, entry_port: 80 },
        busy,
        ..Default::default()
    })
    .await
    .expect("the droplets API starts");
    (fleet, api)
}

fn droplet_inputs(fleet: &Fleet, api: &DropletsSandbox) -> Vec<(String, String)> {
    let own = [
        ("provider", "digitalocean-droplets".to_string()),
        ("token", TOKEN.into()),
        ("api-url", api.api_url()),
        ("load-balancer", api.lb_id()),
    ];
    host_inputs(fleet, &api.app_url(), &own)
}

/// What every host story sets: the fleet's login, the gate through the balancer at
/// `url`, waits short enough for tests, and the provider's `own` inputs.
fn host_inputs(fleet: &Fleet, url: &str, own: &[(&str, String)]) -> Vec<(String, String)> {
    let shared = [
        ("app", "web".to_string()),
        ("ssh-port", fleet.hosts()[0].ssh.port().to_string()),
        ("ssh-key", fleet.client_key_openssh()),
        ("known-hosts", fleet.known_hosts()),
        ("stop-timeout", "5s".into()),
        ("health-url", format!("{url}/health")),
        ("check-string", "ok".into()),
        ("version-url", format!("{url}/version")),
        ("health-interval", "100ms".into()),
        ("health-deadline", "4s".into()),
        ("health-timeout", "1s".into()),
        ("deploy-timeout", "40s".into()),
    ];
    shared.iter().chain(own).map(|(k, v)| (k.to_string(), v.clone())).collect()
}

// ----- the shared provider suite -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_over_ssh_roll_back_what_the_analysis_finds_worse() {
    suite::the_analysis_rolls_back_what_serves_worse(&HostsHarness::ssh().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_over_ssh_pass_a_good_release_through_the_analysis() {
    suite::the_analysis_passes_a_release_as_good(&HostsHarness::ssh().await).await;
    suite::a_flapping_baseline_is_the_yardstick(&HostsHarness::ssh().await).await;
    suite::too_few_answers_stop_the_deploy_before_any_change(&HostsHarness::ssh().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn droplets_roll_back_what_the_analysis_finds_worse() {
    suite::the_analysis_rolls_back_what_serves_worse(&HostsHarness::droplets(LbTarget::ById).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn droplets_pass_a_good_release_through_the_analysis() {
    suite::the_analysis_passes_a_release_as_good(&HostsHarness::droplets(LbTarget::ById).await).await;
    suite::a_flapping_baseline_is_the_yardstick(&HostsHarness::droplets(LbTarget::ById).await).await;
    suite::too_few_answers_stop_the_deploy_before_any_change(&HostsHarness::droplets(LbTarget::ById).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_over_ssh_pass_the_provider_suite() {
    suite::a_deploy_passes(&HostsHarness::ssh().await).await;
    suite::a_failure_before_any_change_changes_nothing(&HostsHarness::ssh().await).await;
    suite::a_failure_mid_roll_out_is_restored(&HostsHarness::ssh().await).await;
    suite::the_first_batch_gate_catches_a_broken_release(&HostsHarness::ssh().await).await;
    suite::restore_twice_does_no_harm(&HostsHarness::ssh().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_over_ssh_are_restored_after_a_signal_at_each_step() {
    suite::a_cancelled_run_is_restored_by_the_post_step(&HostsHarness::ssh().await).await;
    suite::cancellation_at_each_step(&HostsHarness::ssh().await).await;
    suite::a_cancelled_run_before_any_change_changes_nothing(&HostsHarness::ssh().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_over_ssh_faults_end_truthfully() {
    suite::every_fault_ends_truthfully(&HostsHarness::ssh().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn droplets_pass_the_provider_suite() {
    suite::a_deploy_passes(&HostsHarness::droplets(LbTarget::ById).await).await;
    suite::a_failure_before_any_change_changes_nothing(&HostsHarness::droplets(LbTarget::ById).await).await;
    suite::a_failure_mid_roll_out_is_restored(&HostsHarness::droplets(LbTarget::ById).await).await;
    suite::the_first_batch_gate_catches_a_broken_release(&HostsHarness::droplets(LbTarget::ById).await).await;
    suite::restore_twice_does_no_harm(&HostsHarness::droplets(LbTarget::ById).await).await;
    suite::a_deploy_passes(&HostsHarness::droplets(LbTarget::ByTag("web".into())).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn droplets_are_restored_after_a_signal_and_faults_end_truthfully() {
    suite::a_cancelled_run_is_restored_by_the_post_step(&HostsHarness::droplets(LbTarget::ById).await).await;
    suite::cancellation_at_each_step(&HostsHarness::droplets(LbTarget::ById).await).await;
    suite::every_fault_ends_truthfully(&HostsHarness::droplets(LbTarget::ById).await).await;
}

// ----- the binary -----

fn assert_says(ran: &Ran, words: &[&str]) {
    for w in words {
        assert!(ran.summary.contains(w) || ran.stdout.contains(w) || ran.stderr.contains(w), "no '{w}' in:\n{ran}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_hosts_change_one_at_a_time_with_no_request_failing() {
    let rig = Rig::start(4, "web:v1").await;
    let traffic = Traffic::start(format!("{}/", rig.balancer.url()));
    let ran = Step::main(&rig.deploy("v2")).run().await;
    let (total, failed) = traffic.stop().await;
    assert_eq!(ran.code, 0, "{ran}");
    assert_eq!(running(&rig.fleet), "v2");
    assert!(total > 20, "traffic flowed during the deploy: {total}");
    assert_eq!(failed, 0, "no request failed through the balancer ({failed} of {total})");
    assert_eq!(ran.output("status"), "deployed", "{ran}");
    let port = rig.fleet.hosts()[0].app.port();
    let run = format!("run --detach --name web --restart unless-stopped --publish {port}:{port} web:v2");
    let kept = changes(&rig.fleet, 0)[1].trim_start_matches("rename web ").to_string();
    assert!(kept.starts_with("web-before-"), "{kept}");
    // The first host, gated alone: started on its loopback, gated there, then on the
    // balancer's port; the old container kept aside until the release was proved.
    let first = changes(&rig.fleet, 0);
    assert_eq!(first.len(), 6, "{first:?}");
    assert_eq!(first[..2], ["stop --time 5 web".to_string(), format!("rename web {kept}")]);
    assert!(first[2].contains("--publish 127.0.0.1::") && first[2].ends_with("web:v2"), "{first:?}");
    // The gated container served nothing but its gate: removed at once, not stopped.
    assert_eq!(first[3..], ["rm --force web".into(), run.clone(), format!("rm --force {kept}")]);
    for i in 1..4 {
        assert_eq!(
            changes(&rig.fleet, i),
            ["stop --time 5 web".into(), format!("rename web {kept}"), run.clone(), format!("rm --force {kept}")],
            "host {i} was swapped once, gracefully"
        );
    }
    assert!(lock_is_free(&rig.fleet), "the lock was given back");
    // The first host was gated alone, through its tunnel, before the others changed.
    assert_says(&ran, &["batch 1"]);
    // Each wait on the balancer says what it waits for, and the sum that makes its length.
    assert_says(&ran, &["waiting for the balancer to take", "failed checks", "apart + a", "timeout = "]);
    assert_says(&ran, &["waiting for the balancer to count", "passed checks", "apart, and a moment = "]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_that_fails_on_the_first_host_is_put_back_there_and_the_second_is_never_touched() {
    let rig = Rig::start(2, "web:v1").await;
    let traffic = Traffic::start(format!("{}/", rig.balancer.url()));
    let ran = Step::main(&rig.deploy("broken")).run().await;
    let answered = traffic.bodies();
    let (total, failed) = traffic.stop().await;
    assert_eq!(ran.code, 1, "{ran}");
    assert_eq!(ran.output("status"), "rolled-back", "{ran}");
    assert_eq!(running(&rig.fleet), "v1");
    assert!(changes(&rig.fleet, 1).is_empty(), "host 2 never changed: {:?}", changes(&rig.fleet, 1));
    // Host 1: the old container kept aside, the broken one gated on the host's loopback
    // (never on the balancer's port), then the old one back as it was.
    let calls = changes(&rig.fleet, 0);
    assert_eq!(calls.len(), 6, "{calls:?}");
    assert!(calls[0].starts_with("stop") && calls[1].starts_with("rename web web-before-"), "{calls:?}");
    assert!(calls[2].contains("--publish 127.0.0.1::") && calls[2].ends_with("web:broken"), "{calls:?}");
    assert!(calls[3] == "rm --force web" && calls[4].starts_with("rename web-before-") && calls[5] == "start web");
    assert_eq!(failed, 0, "no request failed through the balancer ({failed} of {total})");
    // The drain-switch gap: the broken release never answered a request of the traffic.
    assert!(answered.keys().all(|b| !b.contains("broken")), "{answered:?}");
    assert!(lock_is_free(&rig.fleet));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_env_file_missing_on_a_host_stops_the_deploy_before_any_host_changes() {
    let rig = Rig::start(2, "web:v1").await;
    // The env file is on host 1 only.
    std::fs::write(rig.fleet.hosts()[0].home.join("app.env"), "ROLE=web\n").unwrap();
    let ran = Step::main(&with(rig.deploy("v2"), "env-file", "app.env")).run().await;
    assert_eq!((ran.code, ran.output("status")), (1, "failed"), "{ran}");
    let host2 = rig.fleet.hosts()[1].addr.to_string();
    assert_says(&ran, &["before any change", &format!("{host2}: the env file app.env is not there")]);
    assert_eq!(writes(&rig.fleet), 0, "no host was touched");
    assert_eq!(running(&rig.fleet), "v1");
    assert!(lock_is_free(&rig.fleet));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_is_put_back_exactly_as_it_was_its_own_env_and_options_not_this_runs() {
    let rig = Rig::start(2, "web:v1").await;
    let port = rig.fleet.hosts()[0].app.port();
    // Each host runs v1 with settings of its own: an env file this run does not name, a
    // restart policy it does not use.
    for (i, host) in rig.fleet.hosts().iter().enumerate() {
        std::fs::write(host.home.join("own.env"), "ROLE=original\n").unwrap();
        std::fs::write(host.home.join("new.env"), "ROLE=new\n").unwrap();
        rig.fleet.docker(i, &["rm", "--force", "web"]).await.unwrap();
        let publish = format!("{port}:{port}");
        let run =
            ["run", "-d", "--name", "web", "--restart", "always", "-p", &publish, "--env-file", "own.env", "web:v1"];
        rig.fleet.docker(i, &run).await.unwrap();
    }
    assert!(rig.balancer.wait_healthy(&["h1", "h2"], Duration::from_secs(10)).await);
    let inputs = with(rig.deploy("broken"), "env-file", "new.env");
    let ran = Step::main(&inputs).run().await;
    assert_eq!((ran.code, ran.output("status")), (1, "rolled-back"), "{ran}");
    let state = sandbox::hosts::runtime::read_state(&rig.fleet.host_dir(0));
    let web = &state.containers["web"];
    assert_eq!(web.image_ref, "web:v1");
    assert_eq!(web.env, [("ROLE".to_string(), "original".to_string())], "its own env, not this run's");
    assert_eq!(web.restart.as_deref(), Some("always"), "its own restart policy");
    assert!(web.is_running());
    assert_eq!(state.containers.len(), 1, "nothing left aside: {:?}", state.containers.keys().collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_never_removes_the_recorded_container_whatever_state_a_stopped_run_left() {
    use safe_deploy::providers::{Context, LockFor, Progress};
    use sandbox::hosts::runtime::read_state;
    let h = HostsHarness::ssh().await;
    let provider = h.provider();
    let ctx = Context {
        deadline: tokio::time::Instant::now() + Duration::from_secs(60),
        budget: "rollback-timeout",
        shutdown: safe_deploy::shutdown::Shutdown::new(),
        progress: Progress::default(),
        surface: Default::default(),
    };
    let live = provider.snapshot(&ctx).await.expect("recorded");
    provider.lock(&live, LockFor::Restore, &ctx).await.expect("the lock is free");
    let id = |i: usize| read_state(&h.fleet.host_dir(i)).containers["web"].id.clone();
    let original = (id(0), id(1));

    // A run stopped right after the graceful stop of host 1's container, before keeping
    // it aside: the container under its name is the recorded one, stopped.
    h.fleet.docker(0, &["stop", "--time", "1", "web"]).await.unwrap();
    provider.restore(&live, &ctx).await.expect("put back");
    assert_eq!((id(0), id(1)), original, "started again, not removed and made anew");
    assert!(read_state(&h.fleet.host_dir(0)).containers["web"].is_running());
    assert_eq!(h.running(), "g1");

    // A run stopped after it put the kept container back under its name, before starting it.
    let kept = format!("web-before-{}", &live.record["token"].as_str().unwrap()[..8]);
    h.fleet.docker(0, &["stop", "--time", "1", "web"]).await.unwrap();
    h.fleet.docker(0, &["rename", "web", &kept]).await.unwrap();
    h.fleet.docker(0, &["rename", &kept, "web"]).await.unwrap();
    provider.restore(&live, &ctx).await.expect("put back");
    assert_eq!(id(0), original.0);
    assert!(read_state(&h.fleet.host_dir(0)).containers["web"].is_running());

    // Kept aside, and nothing under its name at all (the new one never got created).
    h.fleet.docker(0, &["stop", "--time", "1", "web"]).await.unwrap();
    h.fleet.docker(0, &["rename", "web", &kept]).await.unwrap();
    provider.restore(&live, &ctx).await.expect("put back");
    let state = read_state(&h.fleet.host_dir(0));
    assert_eq!((state.containers["web"].id.clone(), state.containers.len()), (original.0.clone(), 1));
    assert!(state.containers["web"].is_running());
    assert!(provider.unlock(&ctx).await.is_empty(), "the lock is given back");
    provider.finish(safe_deploy::providers::Ending::Over, &ctx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_characters_in_an_image_a_user_or_an_env_file_are_bad_input() {
    let rig = Rig::start(1, "web:v1").await;
    for (input, value) in [
        ("image", "web:v3;touch${IFS}/tmp/pwned"),
        ("image", "web:`id`"),
        ("image", "web:$(reboot)"),
        ("ssh-user", "root;id"),
        ("ssh-user", "-oProxyCommand=id"),
        ("env-file", "-v/:/host"),
    ] {
        let ran = Step::main(&with(rig.deploy("v2"), input, value)).run().await;
        assert_eq!(ran.code, 2, "{input} {value}: {ran}");
        assert!(ran.stdout.contains(&format!("title=input {input}::")), "{input}: {ran}");
    }
    assert_eq!(writes(&rig.fleet), 0, "nothing reached a host");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_balancer_check_the_live_release_fails_stops_the_deploy_before_any_change() {
    let rig = Rig::start(2, "web:v1").await;
    // A check path the live release does not have (the balancer is told /health; the
    // input says /healthz): every new container would fail it too.
    let ran = Step::main(&with(rig.deploy("v2"), "lb-check-path", "/healthz")).run().await;
    assert_eq!((ran.code, ran.output("status")), (1, "failed"), "not 3, not 'stopped answering': {ran}");
    assert_says(&ran, &["before any change", "already fails on what runs live on", "404"]);
    assert!(!ran.summary.contains("stopped answering"), "{ran}");
    assert_eq!(writes(&rig.fleet), 0, "no host was touched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_already_failing_its_check_is_deployed_to_with_a_warning_not_blocked() {
    let rig = Rig::start(2, "web:v1").await;
    // Host 2's live release fails the balancer's check (drained, say): sick already.
    let sick = rig.fleet.hosts()[1].app;
    let drained = sandbox::client::call("POST", &format!("http://{sick}/drain"), &[], None).await.unwrap();
    assert_eq!(drained.status, 200);
    let ran = Step::main(&rig.deploy("v2")).run().await;
    assert_eq!((ran.code, ran.output("status")), (0, "deployed"), "a fix may be what it needs: {ran}");
    assert_eq!(running(&rig.fleet), "v2");
    assert_says(&ran, &["already fails on what runs live on", &rig.fleet.hosts()[1].addr.to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_on_host_three_of_four_puts_back_three_then_two_then_one() {
    let rig = Rig::start(4, "web:v1").await;
    // Gate every batch, so the failure on host 3 is caught there.
    let inputs = with(rig.deploy("v2"), "batch-gate", "every");
    let ran = {
        // v2 crashes everywhere, but hosts 1 and 2 already passed: make it crash only
        // from the third swap on, by switching the release while host 3 starts.
        let step = Step::main(&inputs);
        let child = step.command().spawn().unwrap();
        // Host 2 is through once v2 runs there on the balancer's port (after its gate on
        // the host's loopback).
        let on_its_port =
            |i: usize| changes(&rig.fleet, i).iter().any(|c| c.starts_with("run") && !c.contains("127.0.0.1::"));
        crate::util::eventually(Duration::from_secs(30), "hosts 1 and 2 run v2 on the balancer's port", || {
            on_its_port(0) && on_its_port(1) && rig.fleet.running(1).as_deref() == Some("web:v2")
        })
        .await;
        rig.fleet
            .add_release("web:v2", ReleaseSpec { crash_on_start: true, exit_code: 3, ..Default::default() })
            .unwrap();
        step.collect(child).await
    };
    assert_eq!(ran.code, 1, "{ran}");
    assert_eq!(running(&rig.fleet), "v1", "{ran}");
    assert!(changes(&rig.fleet, 3).is_empty(), "host 4 never changed");
    // Hosts are put back last first: 3, then 2, then 1.
    let at = |i: usize| {
        let line = format!("putting {} back on web:v1", rig.fleet.hosts()[i].addr);
        ran.stdout.find(&line).unwrap_or(usize::MAX)
    };
    let order = [at(0), at(1), at(2)];
    assert!(
        order[2] < order[1] && order[1] < order[0] && order[0] != usize::MAX,
        "restored in the order 3, 2, 1: {order:?}\n{ran}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_host_key_is_refused_before_any_command_runs() {
    let rig = Rig::start(2, "web:v1").await;
    let other = fleet(1, "web:v1").await;
    // known-hosts pins another machine's key for the first host's address.
    let pinned = rig.fleet.known_hosts();
    let wrong = pinned.lines().enumerate().map(|(i, l)| match i {
        0 => {
            let theirs = other.known_hosts();
            let key = theirs.split_whitespace().skip(1).collect::<Vec<_>>().join(" ");
            format!("{} {key}", l.split_whitespace().next().unwrap())
        }
        _ => l.to_string(),
    });
    let inputs = with(rig.deploy("v2"), "known-hosts", &wrong.collect::<Vec<_>>().join("\n"));
    let ran = Step::main(&inputs).run().await;
    assert_ne!(ran.code, 0, "{ran}");
    assert!(rig.fleet.ssh(0).commands().is_empty(), "nothing ran on the host: {:?}", rig.fleet.ssh(0).commands());
    assert_says(&ran, &["different from line 1 of known-hosts"]);
    assert_eq!(running(&rig.fleet), "v1");
    // A host missing from known-hosts is refused the same way.
    let only_second = rig.fleet.known_hosts().lines().nth(1).unwrap().to_string();
    let ran = Step::main(&with(rig.deploy("v2"), "known-hosts", &only_second)).run().await;
    assert_ne!(ran.code, 0, "{ran}");
    assert_says(&ran, &["known-hosts does not list"]);
    assert!(rig.fleet.ssh(0).commands().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_lost_mid_swap_is_noticed_and_that_host_put_back() {
    let rig = Rig::start(2, "web:v1").await;
    // The connection drops as the new container is started: the old one is already gone.
    rig.fleet.ssh(0).drop_connection_on("run --detach");
    let ran = Step::main(&rig.deploy("v2")).run().await;
    assert_eq!(ran.code, 1, "{ran}");
    assert_eq!(ran.output("status"), "rolled-back", "{ran}");
    assert_eq!(running(&rig.fleet), "v1", "{ran}");
    assert!(changes(&rig.fleet, 1).is_empty(), "host 2 never changed");
    assert_says(&ran, &["SSH connection"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_elsewhere_stops_the_deploy_with_nothing_changed() {
    let rig = Rig::start(2, "web:v1").await;
    hold_lock(&rig.fleet, 1, "workflow run https://github.com/acme/shop/actions/runs/42 (by octocat)");
    let ran = Step::main(&rig.deploy("v2")).run().await;
    assert_eq!(ran.code, 1, "{ran}");
    assert_eq!(writes(&rig.fleet), 0, "nothing changed");
    assert_says(&ran, &["actions/runs/42", "rm -rf .safe-deploy/locks/web"]);
    assert!(
        !rig.fleet.hosts()[0].home.join(".safe-deploy/locks/web").exists(),
        "the lock it took on host 1 was given back"
    );
    assert!(rig.fleet.hosts()[1].home.join(".safe-deploy/locks/web").exists(), "the other deploy's lock is kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn droplets_behind_a_balancer_by_id_are_taken_out_through_the_api() {
    let (fleet, api) = droplets(2, LbTarget::ById).await;
    let traffic = Traffic::start(format!("{}/", api.app_url()));
    let inputs = with(with(droplet_inputs(&fleet, &api), "image", "web:v2"), "expect-version", "v2");
    let ran = Step::main(&inputs).run().await;
    let (total, failed) = traffic.stop().await;
    assert_eq!(ran.code, 0, "{ran}");
    assert_eq!(running(&fleet), "v2");
    assert_eq!(failed, 0, "no request failed ({failed} of {total})");
    let writes: Vec<String> =
        api.calls().iter().filter(|c| c.method != "GET").map(|c| format!("{} {}", c.method, c.path)).collect();
    let lb = format!("/v2/load_balancers/{}/droplets", api.lb_id());
    assert_eq!(writes, [format!("DELETE {lb}"), format!("POST {lb}"), format!("DELETE {lb}"), format!("POST {lb}")]);
    assert_eq!(api.lb_members().len(), 2, "both droplets are back behind the balancer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_balancer_by_id_a_broken_release_is_gated_before_it_gets_any_traffic() {
    let (fleet, api) = droplets(2, LbTarget::ById).await;
    let traffic = Traffic::start(format!("{}/", api.app_url()));
    let inputs = with(with(droplet_inputs(&fleet, &api), "image", "web:broken"), "expect-version", "broken");
    let web1 = api.droplet_id("web-1").unwrap();
    let step = Step::main(&inputs);
    let mut child = step.command().spawn().unwrap();
    // Watch, while the run goes on, whether web-1 ever runs the broken release while
    // it is a member of the balancer (the only way a request reaches it).
    let (mut saw_broken, mut broken_in_balancer) = (false, false);
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(40) {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if fleet.running(0).as_deref() == Some("web:broken") {
            saw_broken = true;
            broken_in_balancer |= api.lb_members().contains(&web1);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ran = step.collect(child).await;
    let (total, failed) = traffic.stop().await;
    assert_eq!(ran.code, 1, "{ran}");
    assert_eq!(ran.output("status"), "rolled-back", "{ran}");
    assert!(saw_broken, "web-1 ran the broken release for a while");
    assert!(!broken_in_balancer, "web-1 was never behind the balancer while it ran the broken release");
    assert!(changes(&fleet, 1).is_empty(), "web-2 never changed");
    assert_eq!(failed, 0, "no request failed ({failed} of {total})");
    assert_eq!(api.lb_members().len(), 2, "web-1 is back behind the balancer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ssh_key_is_masked_first_and_no_line_of_it_appears_anywhere() {
    let rig = Rig::start(2, "web:v1").await;
    let ran = Step::main(&rig.deploy("broken")).run().await;
    assert_eq!(ran.code, 1, "{ran}");
    let key = rig.fleet.client_key_openssh();
    let body: Vec<&str> = key.lines().filter(|l| !l.starts_with("-----") && l.len() > 8).collect();
    assert!(!body.is_empty());
    let (masks, rest): (Vec<&str>, Vec<&str>) = ran.stdout.lines().partition(|l| l.starts_with("::add-mask::"));
    for line in &body {
        assert!(masks.iter().any(|m| m.ends_with(line)), "each line of the key is masked: {line}");
        assert!(!rest.join("\n").contains(line), "stdout leaks a line of the key");
        assert!(!ran.stderr.contains(line), "stderr leaks a line of the key");
        for file in &ran.files {
            assert!(!file.contains(line), "a runner file leaks a line of the key:\n{file}");
        }
    }
}

#[tokio::test]
async fn bad_host_inputs_are_named_with_exit_2_before_any_connection() {
    let rig = Rig::start(1, "web:v1").await;
    let cases: [(&str, &str, &str); 11] = [
        ("ssh-key", "not a key", "ssh-key"),
        ("known-hosts", "", "known-hosts"),
        ("known-hosts", "127.0.0.1", "known-hosts"),
        ("known-hosts", "garbage line here", "known-hosts"),
        ("hosts", "127.0.0.1:2222", "hosts"),
        ("ports", "8080", "ports"),
        ("max-parallel", "0", "max-parallel"),
        ("max-unavailable", "1.5", "max-unavailable"),
        ("container", "web;reboot", "container"),
        ("hosts", "", "hosts"),
        ("drain-path", "drain", "drain-path"),
    ];
    for (input, value, named) in cases {
        let ran = Step::main(&with(rig.deploy("v2"), input, value)).run().await;
        assert_eq!(ran.code, 2, "{input}={value:?}: {ran}");
        assert!(ran.stdout.contains(&format!("input {named}")) || ran.stderr.contains(named), "{input}: {ran}");
        assert!(rig.fleet.ssh(0).commands().is_empty(), "{input}: no command ran");
        assert!(rig.fleet.ssh(0).users().is_empty(), "{input}: nobody logged in");
    }
    let ran = Step::main(&with(rig.deploy("v2"), "load-balancer", "abc")).run().await;
    assert_eq!(ran.code, 2, "an input of another provider: {ran}");
    let both = with(with(rig.deploy("v2"), "max-unavailable", "2"), "max-parallel", "-5");
    let ran = Step::main(&both).run().await;
    assert_eq!(ran.code, 2, "the old name beside the new one: {ran}");
    assert!(ran.stdout.contains("input max-parallel"), "{ran}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_unavailable_changes_hosts_together_after_the_first_but_never_all_of_them() {
    let rig = Rig::start(4, "web:v1").await;
    let plan = Step::main(&with(with(rig.deploy("v2"), "max-unavailable", "9"), "command", "plan")).run().await;
    assert_eq!(plan.code, 0, "{plan}");
    let hosts: Vec<String> = rig.fleet.hosts().iter().map(|h| h.addr.to_string()).collect();
    assert_says(
        &plan,
        &[&format!("batch 1 of 2 ({})", hosts[0]), &format!("batch 2 of 2 ({}, {}, {})", hosts[1], hosts[2], hosts[3])],
    );
    assert_eq!(writes(&rig.fleet), 0, "a plan changes nothing");

    // max-parallel, the old name, still counts when max-unavailable is left empty.
    let traffic = Traffic::start(format!("{}/", rig.balancer.url()));
    let ran = Step::main(&with(rig.deploy("v2"), "max-parallel", "2")).run().await;
    let (total, failed) = traffic.stop().await;
    assert_eq!(ran.code, 0, "{ran}");
    assert_eq!(running(&rig.fleet), "v2");
    assert_says(&ran, &[&format!("batch 2 of 3: hosts {}, {}", hosts[1], hosts[2]), "max-parallel is the old name"]);
    assert_eq!(failed, 0, "two of four hosts at a time, and no request failed ({failed} of {total})");
}

/// The main step, sent SIGTERM once the first host runs v2: the job cancelled mid-way.
async fn terminated_after_the_first_host(rig: &Rig, inputs: &[(String, String)]) -> (Ran, Duration) {
    let (ran, took) = Step::main(inputs)
        .interrupt_when("TERM", "the first host to run v2", || rig.fleet.running(0).as_deref() == Some("web:v2"))
        .await;
    assert_eq!(ran.code, 130, "{ran}");
    (ran, took)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_step_that_finds_the_release_back_under_another_runs_lock_proves_it_and_leaves_that_lock() {
    let rig = Rig::start(2, "web:v1").await;
    let inputs = rig.deploy("v2");
    let (ran, _) = terminated_after_the_first_host(&rig, &inputs).await;
    let post = Step::post(&inputs, &ran.state).run().await;
    assert_eq!(post.output("status"), "rolled-back", "{post}");

    // The main step ran its post step twice (a re-run); meanwhile another deploy took host 2.
    hold_lock(&rig.fleet, 1, "deploy of web:v9 by someone else");
    let writes_before = writes(&rig.fleet);
    let again = Step::post(&inputs, &ran.state).run().await;
    assert_eq!(again.output("status"), "rolled-back", "the recorded release is back: {again}");
    assert_eq!(again.code, post.code, "the same ending as the first post step: {again}");
    assert_says(&again, &["the deploy lock could not be taken", "the recorded release is back"]);
    assert_eq!(running(&rig.fleet), "v1");
    assert_eq!(writes(&rig.fleet), writes_before, "no container changed");
    assert!(rig.fleet.hosts()[1].home.join(".safe-deploy/locks/web").exists(), "the other deploy's lock is kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_job_is_put_back_by_the_post_step_which_holds_the_same_lock() {
    let rig = Rig::start(2, "web:v1").await;
    let inputs = rig.deploy("v2");
    let (ran, took) = terminated_after_the_first_host(&rig, &inputs).await;
    assert!(took < Duration::from_secs(5), "exited {took:?} after SIGTERM");
    assert_eq!(ran.state["safe_deploy_stage"], "changing", "the post step must know");
    assert_eq!(running(&rig.fleet), "mixed: v2, v1", "main itself made no further change");
    assert!(
        rig.fleet.hosts().iter().all(|h| h.home.join(".safe-deploy/locks/web").exists()),
        "main leaves its lock held on every host, so no other deploy starts on a half-changed fleet"
    );

    // The snapshot main wrote to RUNNER_TEMP (the hosts' container settings), where the
    // post step finds it.
    let temp = tempfile::tempdir().unwrap();
    let snapshot = temp.path().join("safe-deploy-snapshot-1-2.json");
    std::fs::write(&snapshot, &ran.state["safe_deploy_snapshot"]).unwrap();
    let mut saved = ran.state.clone();
    saved.insert("safe_deploy_snapshot_file".into(), snapshot.display().to_string());

    let post = Step::post(&inputs, &saved).run().await;
    assert_eq!(post.output("status"), "rolled-back", "{post}");
    assert_eq!(running(&rig.fleet), "v1");
    assert!(lock_is_free(&rig.fleet), "the post step gave the lock back");
    assert!(!snapshot.exists(), "nothing comes after the post step: the snapshot is gone");
    assert!(changes(&rig.fleet, 1).is_empty(), "host 2 never changed");

    // A second post step finds everything as recorded and changes nothing.
    let writes_before = writes(&rig.fleet);
    let again = Step::post(&inputs, &ran.state).run().await;
    assert_eq!(again.output("status"), "rolled-back", "{again}");
    assert_eq!(writes(&rig.fleet), writes_before, "the second post step changed nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_that_never_answers_healthy_is_put_back_without_its_drain_switch() {
    let rig = Rig::start(2, "web:v1").await;
    rig.fleet.add_release("web:v2", ReleaseSpec { health: HealthMode::Error500, ..Default::default() }).unwrap();
    let started = std::time::Instant::now();
    let ran = Step::main(&with(rig.deploy("v2"), "boot-timeout", "2s")).run().await;
    assert_eq!(ran.code, 1, "{ran}");
    assert_eq!(ran.output("status"), "rolled-back", "{ran}");
    assert!(started.elapsed() < Duration::from_secs(20), "boot-timeout, not deploy-timeout (40s), ended the wait");
    assert_says(&ran, &["did not pass the balancer's check on the host within", "answered 500", "boot-timeout"]);
    assert_eq!(running(&rig.fleet), "v1");
    assert!(changes(&rig.fleet, 1).is_empty(), "host 2 never changed");
    assert!(lock_is_free(&rig.fleet));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_drain_switch_hosts_are_stopped_undrained_and_the_preflight_says_so() {
    let rig = Rig::start(2, "web:v1").await;
    let ran = Step::main(&with(rig.deploy("v2"), "drain-path", "none")).run().await;
    assert_eq!(ran.code, 0, "{ran}");
    assert_eq!(running(&rig.fleet), "v2");
    assert_says(&ran, &["drain-path is none"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_cancelled_while_a_host_drains_is_let_back_in_by_the_post_step() {
    let rig = Rig::start(2, "web:v1").await;
    // Slow checks, so the signal comes while host 1 is drained and still on v1.
    let inputs = with(with(rig.deploy("v2"), "lb-interval", "300ms"), "lb-timeout", "300ms");
    rig.balancer.set_check(Check::health(rig.fleet.hosts()[0].app.port(), Duration::from_millis(300)));
    let (ran, _) = Step::main(&inputs)
        .interrupt_when("TERM", "host 1 to be drained", || !rig.balancer.healthy().contains(&"h1".to_string()))
        .await;
    assert_eq!(ran.code, 130, "{ran}");
    assert_eq!(running(&rig.fleet), "v1", "no container changed yet");
    assert!(!lock_is_free(&rig.fleet), "the lock is kept for the post step");

    let post = Step::post(&inputs, &ran.state).run().await;
    assert_eq!(post.output("status"), "rolled-back", "{post}");
    assert!(
        rig.balancer.wait_healthy(&["h1", "h2"], Duration::from_secs(5)).await,
        "host 1 serves behind the balancer again: {post}"
    );
    assert!(lock_is_free(&rig.fleet), "the post step gave the lock back");
    assert_eq!(writes(&rig.fleet), 0, "no container was touched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_balancer_still_applying_a_change_is_asked_again_not_taken_for_a_refusal() {
    // Each change takes 1.5 s to apply: the put-back of web-1 and the take-out of web-2
    // come sooner, and DigitalOcean answers 403 "processes previous actions" to them.
    let (fleet, api) = droplets_with(2, LbTarget::ById, Duration::from_millis(1500)).await;
    let inputs = with(with(droplet_inputs(&fleet, &api), "image", "web:v2"), "expect-version", "v2");
    let ran = Step::main(&inputs).run().await;
    assert_eq!(ran.code, 0, "{ran}");
    assert_eq!(running(&fleet), "v2");
    let busy = api.calls().iter().filter(|c| c.method != "GET" && c.status == 403).count();
    assert!(busy > 0, "the balancer was busy at least once: {:?}", api.calls());
    assert_eq!(api.lb_members().len(), 2, "both droplets are back behind the balancer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_balancer_that_checks_droplets_over_https_is_checked_the_same_way_on_each_host() {
    // The app serves traffic on its port and its health over TLS on a second one, which
    // the balancer checks with HTTPS (a self-signed certificate, as droplets have).
    let fleet = Fleet::start(FleetOptions {
        hosts: 2,
        running: Some("web:g1".into()),
        releases: releases(),
        app_command: vec![BIN.into(), "__sandbox-app".into()],
        runtime_command: vec![BIN.into(), "__sandbox-runtime".into()],
        tls: true,
        ..Default::default()
    })
    .await
    .expect("the hosts start");
    let (port, tls) = (fleet.hosts()[0].app.port(), fleet.hosts()[0].tls.unwrap().port());
    let api = DropletsSandbox::start(DropletsOptions {
        token: TOKEN.into(),
        droplets: DropletSpec::for_hosts(fleet.hosts(), "web"),
        balancer: LbSpec {
            name: "web-lb".into(),
            by: LbTarget::ById,
            check: Check { protocol: Protocol::Https, port: tls, ..check(port) },
            target_port: port,
            entry_port: 80,
        },
        ..Default::default()
    })
    .await
    .expect("the droplets API starts");
    assert_eq!(api.load_balancer()["health_check"]["protocol"], "https");
    let inputs = with(droplet_inputs(&fleet, &api), "ports", &format!("{port}:{port},{tls}:8443"));

    let ran = Step::main(&with(with(inputs.clone(), "image", "web:v2"), "expect-version", "v2")).run().await;
    assert_eq!(ran.code, 0, "{ran}");
    assert_eq!(running(&fleet), "v2");
    assert!(
        ran.summary.contains(&format!("HTTPS GET /health on port {tls}")),
        "the check as the balancer makes it: {ran}"
    );
    assert_eq!(api.lb_members().len(), 2);

    // A release whose body is wrong passes the balancer's check but not the gate: caught
    // on the first host and put back there, over the same HTTPS check.
    let ran = Step::main(&with(with(inputs, "image", "web:broken"), "expect-version", "broken")).run().await;
    assert_eq!((ran.code, ran.output("status")), (1, "rolled-back"), "{ran}");
    assert_eq!(running(&fleet), "v2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_balancer_in_status_errored_fails_the_run_at_once_not_after_two_minutes() {
    let (fleet, api) = droplets(2, LbTarget::ById).await;
    let inputs = with(with(droplet_inputs(&fleet, &api), "image", "web:v2"), "expect-version", "v2");
    // Errored before the run: nothing is changed.
    api.set_lb_status("errored");
    let ran = Step::main(&inputs).run().await;
    assert_eq!((ran.code, ran.output("status")), (1, "failed"), "{ran}");
    assert!(ran.summary.contains("before any change") && ran.summary.contains("status errored"), "{ran}");
    assert_eq!(running(&fleet), "g1");
    assert_eq!(writes(&fleet), 0);

    // Errored once the first host is taken out: the wait for it to apply ends at once,
    // and so does putting the host back (an errored balancer takes no change).
    api.set_lb_status("active");
    let step = Step::main(&inputs);
    let child = step.command().spawn().unwrap();
    crate::util::eventually(Duration::from_secs(30), "the first take-out", || {
        api.calls().iter().any(|c| c.method == "DELETE" && c.path.ends_with("/droplets"))
    })
    .await;
    api.set_lb_status("errored");
    let errored_at = std::time::Instant::now();
    let ran = step.collect(child).await;
    assert!(errored_at.elapsed() < Duration::from_secs(20), "at once: {:?}\n{ran}", errored_at.elapsed());
    assert_eq!(ran.code, 3, "the host could not be put back: {ran}");
    assert!(ran.summary.contains("status errored"), "{ran}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_terminal_the_key_is_a_flag_whose_value_starts_with_hyphens_and_is_never_echoed() {
    let rig = Rig::start(2, "web:v1").await;
    let mut args = vec!["plan".to_string()];
    for (name, value) in rig.deploy("v2") {
        args.push(format!("--{name}"));
        args.push(value);
    }
    let out = tokio::process::Command::new(BIN).args(&args).env_remove("GITHUB_ACTIONS").output().await.unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "--ssh-key '-----BEGIN...' is a value, not a flag:\n{stdout}\n{stderr}");
    for line in rig.fleet.client_key_openssh().lines().filter(|l| l.len() > 8) {
        assert!(!stdout.contains(line) && !stderr.contains(line), "the key is never printed");
    }
}
