//! Fly.io end to end: the real binary against the sandbox's Machines API emulator,
//! whose machines are real processes of the test app behind a router like Fly's proxy.

use sandbox::Handle;
use std::time::{Duration, Instant};

use sandbox::app::{HealthMode, ReleaseSpec};
use sandbox::fly::{Faults, FlyOptions, FlySandbox, MachineView};

use crate::util::{eventually, with, Step, BIN};

pub const TOKEN: &str = "fm2_sandbox-token-for-tests";
pub const V1: &str = "registry.fly.io/web:v1";
pub const V2: &str = "registry.fly.io/web:v2";
pub const V3: &str = "registry.fly.io/web:v3";

pub async fn fly() -> FlySandbox {
    fly_with(FlyOptions::default()).await
}

/// The sandbox with `opts`, running the test app and requiring the test token.
pub async fn fly_with(opts: FlyOptions) -> FlySandbox {
    FlySandbox::start(FlyOptions {
        app_command: vec![BIN.into(), "__sandbox-app".into()],
        check_interval: Duration::from_millis(100),
        token: Some(TOKEN.into()),
        ..opts
    })
    .await
    .expect("the Fly sandbox starts")
}

/// Stops machine `id` as a person would (`fly machine stop`) and waits until it is stopped.
async fn stop(fly: &FlySandbox, id: &str) {
    assert_eq!(api(fly, "POST", &format!("machines/{id}/stop"), None).await.status, 200);
    eventually(Duration::from_secs(10), "the machine to stop", || {
        app_machines(fly).iter().any(|m| m.id == id && m.state == "stopped")
    })
    .await;
}

/// Sends one Machines API request as a person with flyctl would.
async fn api(fly: &FlySandbox, method: &str, path: &str, body: Option<serde_json::Value>) -> sandbox::client::Reply {
    let url = format!("{}/apps/web/{path}", fly.api_url());
    let auth = format!("Bearer {TOKEN}");
    sandbox::client::call(method, &url, &[("authorization", auth.as_str())], body.as_ref()).await.unwrap()
}

pub fn inputs(fly: &FlySandbox, image: &str) -> Vec<(String, String)> {
    [
        ("provider", "fly".to_string()),
        ("app", "web".to_string()),
        ("token", TOKEN.to_string()),
        ("image", image.to_string()),
        ("api-url", fly.api_url()),
        ("health-url", format!("{}/health", fly.app_url())),
        ("check-string", "ok".to_string()),
        ("version-url", format!("{}/version", fly.app_url())),
        ("expect-version", sandbox::app::default_version(image)),
        ("health-interval", "100ms".to_string()),
        ("health-deadline", "4s".to_string()),
        ("health-timeout", "1s".to_string()),
        ("deploy-timeout", "90s".to_string()),
        ("bluegreen-wait", "300ms".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn app_machines(fly: &FlySandbox) -> Vec<MachineView> {
    let mut ms: Vec<MachineView> =
        fly.machines().into_iter().filter(|m| m.process_group == "app" && m.state != "destroyed").collect();
    ms.sort_by(|a, b| a.id.cmp(&b.id));
    ms
}

fn images(fly: &FlySandbox) -> Vec<String> {
    app_machines(fly).into_iter().map(|m| m.image).collect()
}

async fn version_through_router(fly: &FlySandbox) -> String {
    let body = reqwest::get(format!("{}/version", fly.app_url())).await.unwrap().text().await.unwrap();
    body.trim().to_string()
}

/// App-machine writes the action sent: updates, creates, deletes, cordons.
fn machine_writes(fly: &FlySandbox) -> Vec<String> {
    fly.calls()
        .into_iter()
        .filter(|c| c.is_write() && !c.path.ends_with("/lease"))
        .map(|c| format!("{} {}", c.method, c.path))
        .collect()
}

#[tokio::test]
async fn a_rolling_deploy_of_three_machines_passes_and_v2_answers() {
    let fly = fly().await;
    let ran = Step::main(&inputs(&fly, V2)).run().await;

    assert_eq!(ran.code, 0, "{ran}");
    assert_eq!(ran.output("status"), "deployed");
    assert_eq!(ran.output("release"), V2);
    assert_eq!(ran.output("previous-release"), V1);
    assert_eq!(images(&fly), vec![V2; 3]);
    assert_eq!(version_through_router(&fly).await, "v2");
    assert!(ran.summary.contains("Provider API requests"), "{ran}");
    let leases_left = fly.calls().iter().filter(|c| c.method == "DELETE" && c.path.ends_with("/lease")).count();
    assert_eq!(leases_left, 3, "every lease is given back");
    fly.stop().await;
}

#[tokio::test]
async fn a_missing_check_string_puts_every_machine_back_on_its_recorded_config_and_exits_1() {
    let fly = fly().await;
    fly.add_release(V2, ReleaseSpec { health: HealthMode::WrongBody, ..Default::default() });
    let before: Vec<(String, serde_json::Value)> = app_machines(&fly).into_iter().map(|m| (m.id, m.config)).collect();
    let ran = Step::main(&inputs(&fly, V2)).run().await;

    assert_eq!(ran.code, 1, "{ran}");
    assert_eq!(ran.output("status"), "rolled-back");
    assert_eq!(ran.output("release"), V1);
    let after: Vec<(String, serde_json::Value)> = app_machines(&fly).into_iter().map(|m| (m.id, m.config)).collect();
    assert_eq!(after, before, "every machine is back on exactly its recorded config");
    assert_eq!(version_through_router(&fly).await, "v1");
    fly.stop().await;
}

#[tokio::test]
async fn a_failing_release_command_stops_the_deploy_with_nothing_changed() {
    let fly = fly().await;
    fly.add_release(V2, ReleaseSpec { release_command_exit_code: 3, ..Default::default() });
    let ran = Step::main(&with(inputs(&fly, V2), "release-command", "bin/migrate --all")).run().await;

    assert_eq!(ran.code, 1, "{ran}");
    assert_eq!(ran.output("status"), "failed");
    assert!(ran.summary.contains("exited with code 3"), "{ran}");
    assert!(ran.summary.contains("before any change"), "{ran}");
    assert_eq!(images(&fly), vec![V1; 3]);
    let app_ids: Vec<String> = app_machines(&fly).into_iter().map(|m| m.id).collect();
    let touched: Vec<_> = fly
        .calls()
        .into_iter()
        .filter(|c| {
            c.is_write() && !c.path.ends_with("/lease") && c.target.as_ref().is_some_and(|id| app_ids.contains(id))
        })
        .collect();
    assert!(touched.is_empty(), "no app machine was touched: {touched:?}");
    fly.stop().await;
}

#[tokio::test]
async fn a_machine_that_never_boots_or_whose_checks_stay_critical_is_caught_long_before_the_deadline() {
    let cases = [
        (ReleaseSpec { crash_on_start: true, exit_code: 7, ..Default::default() }, "exited with code 7"),
        (ReleaseSpec { health: HealthMode::Error500, ..Default::default() }, "stayed critical"),
    ];
    for (spec, why) in cases {
        let fly = fly().await;
        fly.add_release(V2, spec);
        let started = Instant::now();
        let ran = Step::main(&with(inputs(&fly, V2), "deploy-timeout", "5m")).run().await;
        let took = started.elapsed();

        assert_eq!(ran.code, 1, "{ran}");
        assert_eq!(ran.output("status"), "rolled-back");
        assert!(ran.summary.contains(why), "{ran}");
        assert!(took < Duration::from_secs(40), "caught in {took:?}, against a 5 minute deadline");
        assert_eq!(images(&fly), vec![V1; 3]);
        fly.stop().await;
    }
}

#[tokio::test]
async fn a_machine_stuck_starting_times_out_at_deploy_timeout_and_is_rolled_back() {
    let fly = fly().await;
    fly.set_faults(Faults { never_start: true, ..Default::default() });
    let main = Step::main(&with(inputs(&fly, V2), "deploy-timeout", "6s"));
    let child = main.command().spawn().unwrap();
    // The first machine takes v2 and hangs in "starting"; later starts are healthy again.
    // Its launch is what reads the fault: wait for that, not for its new config, which
    // comes first (clearing the fault in between would let it start).
    eventually(Duration::from_secs(20), "the first machine to launch v2", || fly.machines_that_ran(V2) > 0).await;
    fly.set_faults(Faults::default());
    let ran = main.collect(child).await;

    assert_eq!(ran.code, 1, "{ran}");
    assert_eq!(ran.output("status"), "rolled-back");
    assert!(ran.summary.contains("took longer than") && ran.summary.contains("deploy-timeout"), "{ran}");
    assert_eq!(images(&fly), vec![V1; 3]);
    fly.stop().await;
}

#[tokio::test]
async fn a_lease_held_by_another_deploy_gives_a_clear_error_and_changes_nothing() {
    let fly = fly().await;
    let held = app_machines(&fly)[1].id.clone();
    fly.hold_lease(&held, "alice@example.com");
    let ran = Step::main(&inputs(&fly, V2)).run().await;

    assert_eq!(ran.code, 1, "{ran}");
    assert_eq!(ran.output("status"), "failed");
    assert!(ran.summary.contains(&held) && ran.summary.contains("held by someone else"), "{ran}");
    assert!(ran.summary.contains("alice@example.com"), "the holder is named: {ran}");
    assert!(machine_writes(&fly).is_empty(), "{:?}", machine_writes(&fly));
    assert_eq!(images(&fly), vec![V1; 3]);
    fly.stop().await;
}

#[tokio::test]
async fn a_wrong_token_is_refused_with_advice_and_changes_nothing() {
    let fly = fly().await;
    let ran = Step::main(&with(inputs(&fly, V2), "token", "fm2_wrong")).run().await;
    assert_eq!(ran.code, 1, "{ran}");
    assert!(ran.summary.contains("refused the token"), "{ran}");
    assert!(machine_writes(&fly).is_empty());
    fly.stop().await;
}

#[tokio::test]
async fn a_plan_reads_but_never_writes() {
    let fly = fly().await;
    let ran = Step::main(&with(with(inputs(&fly, V2), "command", "plan"), "release-command", "migrate")).run().await;
    assert_eq!(ran.code, 0, "{ran}");
    assert_eq!(ran.output("status"), "planned");
    assert!(fly.calls().iter().all(|c| !c.is_write()), "{:?}", fly.calls());
    assert!(ran.summary.contains("batch 1 of 3 (1 machine)"), "{ran}");
    assert!(ran.summary.contains("health gate against batch 1 alone"), "{ran}");
    assert!(ran.summary.contains("run the release command &#96;migrate&#96;"), "{ran}");
    fly.stop().await;
}

#[tokio::test]
async fn every_injected_fault_ends_healthy_on_a_known_version_with_a_truthful_summary() {
    let faults = [
        Faults { error_burst: 3, ..Default::default() },
        Faults { rate_limit_burst: 2, retry_after_secs: Some(1), ..Default::default() },
        Faults { rate_limit_burst: 3, ..Default::default() },
        Faults { reset_burst: 2, ..Default::default() },
        Faults { slow_ms: 150, ..Default::default() },
        Faults { malformed_burst: 2, ..Default::default() },
    ];
    for fault in faults {
        let fly = fly().await;
        fly.set_faults(fault.clone());
        let ran = Step::main(&inputs(&fly, V2)).run().await;
        fly.set_faults(Faults::default());
        let (expected_image, expected_version) = match ran.code {
            0 => (V2, "v2"),
            1 => (V1, "v1"),
            other => panic!("{fault:?} ended with exit {other}: {ran}"),
        };
        assert_eq!(ran.output("release"), expected_image, "{fault:?}: {ran}");
        assert_eq!(images(&fly), vec![expected_image; 3], "{fault:?}: {ran}");
        assert_eq!(version_through_router(&fly).await, expected_version, "{fault:?}");
        let first = ran.summary.lines().next().unwrap_or_default();
        let live = if ran.code == 0 {
            format!("`{expected_image}` to web: live")
        } else {
            format!("`{expected_image}` is live")
        };
        assert!(first.contains(&live), "{fault:?}: {first}");
        fly.stop().await;
    }
}

#[tokio::test]
async fn sigint_mid_roll_out_exits_quickly_and_the_post_step_restores_the_recorded_configs() {
    let fly = fly().await;
    fly.add_release(V2, ReleaseSpec { boot_delay_ms: 4000, ..Default::default() });
    let before: Vec<(String, serde_json::Value)> = app_machines(&fly).into_iter().map(|m| (m.id, m.config)).collect();
    let inputs = inputs(&fly, V2);
    let (ran, took) = Step::main(&inputs)
        .interrupt_when("INT", "the first machine to be updated", || images(&fly).contains(&V2.to_string()))
        .await;
    assert_eq!(ran.code, 130, "{ran}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(ran.state["safe_deploy_stage"], "changing");

    let post = Step::post(&inputs, &ran.state).run().await;
    assert_eq!(post.code, 130, "{post}");
    assert_eq!(post.output("status"), "rolled-back");
    let after: Vec<(String, serde_json::Value)> = app_machines(&fly).into_iter().map(|m| (m.id, m.config)).collect();
    assert_eq!(after, before);

    // Once more, as if the post step ran twice: nothing is updated again.
    fly.reset_calls();
    let again = Step::post(&inputs, &ran.state).run().await;
    assert_eq!(again.output("status"), "rolled-back", "{again}");
    assert!(machine_writes(&fly).is_empty(), "{:?}", machine_writes(&fly));
    fly.stop().await;
}

#[tokio::test]
async fn each_strategy_deploys_and_rolls_back() {
    for strategy in ["rolling", "canary", "bluegreen", "immediate"] {
        let fly = fly().await;
        fly.add_release(V3, ReleaseSpec { health: HealthMode::WrongBody, ..Default::default() });
        let good = Step::main(&with(inputs(&fly, V2), "strategy", strategy)).run().await;
        assert_eq!(good.code, 0, "{strategy}: {good}");
        assert_eq!(images(&fly), vec![V2; 3], "{strategy}");

        let bad = Step::main(&with(inputs(&fly, V3), "strategy", strategy)).run().await;
        assert_eq!(bad.code, 1, "{strategy}: {bad}");
        assert_eq!(bad.output("status"), "rolled-back", "{strategy}");
        assert_eq!(images(&fly), vec![V2; 3], "{strategy}: three machines on v2, none left over");
        assert_eq!(version_through_router(&fly).await, "v2", "{strategy}");
        fly.stop().await;
    }
}

#[tokio::test]
async fn bluegreen_gives_a_stopped_machine_a_green_that_stays_stopped() {
    let fly = fly().await;
    let stopped = app_machines(&fly)[2].id.clone();
    stop(&fly, &stopped).await;

    let ran = Step::main(&with(inputs(&fly, V2), "strategy", "bluegreen")).run().await;
    assert_eq!(ran.code, 0, "{ran}");
    let machines = app_machines(&fly);
    assert_eq!(images(&fly), vec![V2; 3], "a green for every blue, the stopped one's included");
    assert!(machines.iter().all(|m| m.id != stopped), "the stopped blue is destroyed");
    let states: Vec<&str> = machines.iter().map(|m| m.state.as_str()).filter(|s| *s == "stopped").collect();
    assert_eq!(states.len(), 1, "its green stays stopped: {machines:?}");
    fly.stop().await;
}

#[tokio::test]
async fn no_request_fails_through_the_router_during_a_rolling_deploy_and_a_rollback() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let fly = fly().await;
    fly.add_release(V3, ReleaseSpec { health: HealthMode::WrongBody, ..Default::default() });
    let url = format!("{}/", fly.app_url());
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let traffic = tokio::spawn(async move {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
        let (mut total, mut failed) = (0u32, 0u32);
        // Bounded: 25 requests a second, 1200 at the most.
        let mut tick = tokio::time::interval(Duration::from_millis(40));
        while total < 1200 && !stopped.load(Ordering::SeqCst) {
            tick.tick().await;
            total += 1;
            if !matches!(client.get(&url).send().await, Ok(r) if r.status().is_success()) {
                failed += 1;
            }
        }
        (total, failed)
    });
    let deployed = Step::main(&inputs(&fly, V2)).run().await;
    let rolled_back = Step::main(&inputs(&fly, V3)).run().await;
    stop.store(true, Ordering::SeqCst);
    let (total, failed) = traffic.await.unwrap();

    assert_eq!((deployed.code, rolled_back.code), (0, 1), "{deployed}\n{rolled_back}");
    assert!(total >= 50, "{total} requests sent");
    assert_eq!(failed, 0, "{failed} of {total} requests failed");
    fly.stop().await;
}

#[tokio::test]
async fn an_app_with_only_machines_made_by_hand_is_refused_with_nothing_changed() {
    let worker = serde_json::json!({
        "image": V1,
        "metadata": { "fly_process_group": "worker" },
        "services": []
    });
    let fly = fly_with(FlyOptions { machines: 0, extra_machines: vec![worker], ..FlyOptions::default() }).await;
    let ran = Step::main(&inputs(&fly, V2)).run().await;

    assert_eq!(ran.code, 1, "{ran}");
    assert_eq!(ran.output("status"), "failed");
    assert!(ran.summary.contains("FAILED before any change"), "not a rollback, not UNKNOWN: {ran}");
    assert!(ran.summary.contains("made with fly machine run"), "the machines left alone are named: {ran}");
    // What runs is said as it is: the hand-made machine and its image, not "no instances".
    let worker_id = &fly.machines()[0].id;
    let live = ran.output("release");
    assert_eq!(live, format!("only machines made by hand ({worker_id} runs {V1})"), "{ran}");
    assert!(!ran.summary.contains("no instances"), "{ran}");
    assert!(fly.calls().iter().all(|c| !c.is_write()), "{:?}", fly.calls());
    fly.stop().await;
}

#[tokio::test]
async fn a_deploy_leaves_machines_made_by_hand_alone() {
    let worker = serde_json::json!({ "image": "registry.fly.io/cron:1", "metadata": {}, "services": [] });
    let fly = fly_with(FlyOptions { extra_machines: vec![worker], ..FlyOptions::default() }).await;
    let ran = Step::main(&inputs(&fly, V2)).run().await;

    assert_eq!(ran.code, 0, "{ran}");
    let cron: Vec<MachineView> =
        fly.machines().into_iter().filter(|m| m.image == "registry.fly.io/cron:1" && m.state != "destroyed").collect();
    assert_eq!(cron.len(), 1, "the machine made by hand is still there, on its own image");
    assert!(ran.summary.contains("left alone"), "{ran}");
    assert!(
        fly.calls().iter().all(|c| c.target.as_deref() != Some(cron[0].id.as_str()) || !c.is_write()),
        "nothing was sent to it"
    );
    fly.stop().await;
}

#[tokio::test]
async fn bluegreen_over_machines_that_are_all_stopped_still_checks_a_green_and_deploys() {
    let fly = fly().await;
    for m in app_machines(&fly) {
        stop(&fly, &m.id).await;
    }

    // The app is down: nothing serves until a green starts, so the probe of the live
    // release is off, as for any app that is down.
    let ran = Step::main(&with(with(inputs(&fly, V2), "strategy", "bluegreen"), "health-probe", "false")).run().await;
    assert_eq!(ran.code, 0, "{ran}");
    let machines = app_machines(&fly);
    assert_eq!(images(&fly), vec![V2; 3], "a green for every blue: {machines:?}");
    assert_eq!(machines.iter().filter(|m| m.state == "started").count(), 1, "one green started to prove the release");
    assert!(ran.summary.contains("health gate: batch 1, instance"), "the started green was gated alone: {ran}");
    fly.stop().await;
}

#[tokio::test]
async fn a_machine_destroyed_by_someone_else_mid_deploy_is_recreated_by_the_rollback() {
    let fly = fly().await;
    fly.add_release(V2, ReleaseSpec { boot_delay_ms: 1500, ..Default::default() });
    let victim = app_machines(&fly)[2].id.clone();
    let main = Step::main(&inputs(&fly, V2));
    let child = main.command().spawn().unwrap();
    eventually(Duration::from_secs(20), "the first machine to take v2", || images(&fly).contains(&V2.to_string()))
        .await;
    // The platform loses a machine the deploy has not reached yet.
    fly.destroy_unleased(&victim).await;
    let ran = main.collect(child).await;

    assert_eq!(ran.code, 1, "{ran}");
    assert_eq!(ran.output("status"), "rolled-back", "{ran}");
    assert_eq!(images(&fly), vec![V1; 3], "the destroyed machine was recreated from its record");

    // A post step that finds the recorded release back (the copy included) changes nothing.
    let mut saved = ran.state.clone();
    saved.insert("safe_deploy_stage".into(), "changing".into());
    fly.reset_calls();
    let post = Step::post(&inputs(&fly, V2), &saved).run().await;
    assert_eq!(post.output("status"), "rolled-back", "{post}");
    assert!(post.summary.contains("already back"), "{post}");
    assert!(machine_writes(&fly).is_empty(), "{:?}", machine_writes(&fly));
    assert_eq!(images(&fly), vec![V1; 3]);
    fly.stop().await;
}

#[tokio::test]
async fn fly_toml_is_the_machine_config_and_the_summary_says_so() {
    let fly = fly().await;
    let step = Step::main(&inputs(&fly, V2));
    std::fs::write(
        step.dir.path().join("fly.toml"),
        r#"
app = "web"
[env]
  GREETING = "hello from fly.toml"
[http_service]
  internal_port = 8080
  [[http_service.checks]]
    path = "/health"
    interval = "1s"
    timeout = "2s"
"#,
    )
    .unwrap();
    let ran = step.run().await;

    assert_eq!(ran.code, 0, "{ran}");
    assert!(ran.summary.contains("is the machine config"), "{ran}");
    for m in app_machines(&fly) {
        assert_eq!(m.config["env"]["GREETING"], "hello from fly.toml", "{}", m.id);
        assert_eq!(m.config["env"]["FLY_PROCESS_GROUP"], "app");
        assert_eq!(m.config["services"][0]["checks"][0]["path"], "/health");
        assert_eq!(m.config["metadata"]["fly_release_version"], "v2", "no stale release metadata");
        assert!(m.config["metadata"].get("fly_release_id").is_none());
    }
    fly.stop().await;
}

#[tokio::test]
async fn without_fly_toml_only_the_image_changes() {
    let fly = fly().await;
    let before: Vec<serde_json::Value> = app_machines(&fly).into_iter().map(|m| m.config).collect();
    let ran = Step::main(&inputs(&fly, V2)).run().await;
    assert_eq!(ran.code, 0, "{ran}");
    assert!(ran.summary.contains("only the image changes"), "{ran}");
    for (old, new) in before.iter().zip(app_machines(&fly)) {
        let mut expected = old.clone();
        expected["image"] = V2.into();
        expected["metadata"]["fly_release_version"] = "v2".into();
        expected["metadata"]["safe_deploy_version"] = "v2".into();
        expected["metadata"].as_object_mut().unwrap().remove("fly_release_id");
        assert_eq!(new.config, expected);
    }
    fly.stop().await;
}

#[tokio::test]
async fn the_token_comes_from_fly_api_token_when_the_input_is_empty() {
    let fly = fly().await;
    let mut inputs = inputs(&fly, V2);
    inputs.retain(|(k, _)| k != "token");
    let ran = Step::main(&inputs).env("FLY_API_TOKEN", TOKEN).run().await;
    assert_eq!(ran.code, 0, "{ran}");
    assert!(ran.stdout.contains(&format!("::add-mask::{TOKEN}")), "a token from the environment is masked too");
    fly.stop().await;
}

#[tokio::test]
async fn environment_url_is_the_url_the_run_reports() {
    let fly = fly().await;
    let ran = Step::main(&with(inputs(&fly, V2), "environment-url", "https://shop.example.com")).run().await;
    assert_eq!(ran.code, 0, "{ran}");
    assert_eq!(ran.output("url"), "https://shop.example.com/");
    let without = Step::main(&inputs(&fly, V3)).run().await;
    assert_eq!(without.output("url"), fly.app_url(), "else the health URL's origin, not APP.fly.dev");
    fly.stop().await;
}

#[tokio::test]
async fn a_stopped_machine_takes_the_new_image_and_stays_stopped_in_a_rolling_deploy() {
    let fly = fly().await;
    let stopped = app_machines(&fly)[1].id.clone();
    stop(&fly, &stopped).await;
    let ran = Step::main(&inputs(&fly, V2)).run().await;
    assert_eq!(ran.code, 0, "{ran}");
    let m = app_machines(&fly).into_iter().find(|m| m.id == stopped).unwrap();
    assert_eq!((m.image.as_str(), m.state.as_str()), (V2, "stopped"));
    fly.stop().await;
}

#[tokio::test]
async fn the_release_command_gets_fly_tomls_files_and_its_own_timeout() {
    let fly = fly().await;
    let step = Step::main(&with(inputs(&fly, V2), "release-command", "bin/migrate"));
    std::fs::write(
        step.dir.path().join("fly.toml"),
        "app = \"web\"\n[http_service]\ninternal_port = 8080\n[[http_service.checks]]\npath = \"/health\"\n\
         [[files]]\nguest_path = \"/etc/migrate.conf\"\nraw_value = \"a2V5PXZhbHVl\"\n",
    )
    .unwrap();
    let ran = step.run().await;
    assert_eq!(ran.code, 0, "{ran}");
    let release = fly
        .machines()
        .into_iter()
        .find(|m| m.process_group == sandbox::fly::RELEASE_COMMAND_GROUP)
        .expect("a release command machine ran");
    assert_eq!(release.config["files"][0]["guest_path"], "/etc/migrate.conf");

    // A release command that takes 4 s, against a limit of 1 s.
    fly.add_release(V3, ReleaseSpec { boot_delay_ms: 4000, ..Default::default() });
    let slow =
        Step::main(&with(with(inputs(&fly, V3), "release-command", "bin/migrate"), "release-command-timeout", "1s"));
    let ran = slow.run().await;
    assert_eq!(ran.code, 1, "{ran}");
    assert!(ran.summary.contains("release-command-timeout"), "the limit is named: {ran}");
    assert!(ran.summary.contains("before any change"), "{ran}");
    fly.stop().await;
}

#[tokio::test]
async fn bluegreen_with_volumes_stops_before_any_change_when_a_green_has_no_free_volume() {
    let fly = fly_with(FlyOptions { volume: Some("data".into()), spare_volumes: 2, ..FlyOptions::default() }).await;
    let ran = Step::main(&with(inputs(&fly, V2), "strategy", "bluegreen")).run().await;

    assert_eq!(ran.code, 1, "{ran}");
    assert!(ran.summary.contains("FAILED before any change"), "{ran}");
    assert!(ran.summary.contains("needs a free volume named data in ams"), "the missing volume is named: {ran}");
    assert!(machine_writes(&fly).is_empty(), "{:?}", machine_writes(&fly));
    fly.stop().await;
}

#[tokio::test]
async fn bluegreen_with_volumes_gives_each_green_a_free_volume_of_the_same_name() {
    let fly = fly_with(FlyOptions { volume: Some("data".into()), spare_volumes: 3, ..FlyOptions::default() }).await;
    let blue_volumes: Vec<String> =
        app_machines(&fly).iter().map(|m| m.config["mounts"][0]["volume"].as_str().unwrap().to_string()).collect();
    let ran = Step::main(&with(inputs(&fly, V2), "strategy", "bluegreen")).run().await;

    assert_eq!(ran.code, 0, "{ran}");
    let greens = app_machines(&fly);
    assert_eq!(images(&fly), vec![V2; 3]);
    for g in &greens {
        let volume = g.config["mounts"][0]["volume"].as_str().unwrap();
        assert!(!blue_volumes.iter().any(|b| b == volume), "{} took a free volume, not a blue's", g.id);
    }
    fly.stop().await;
}

#[tokio::test]
async fn canary_is_refused_for_machines_with_volumes_before_any_change() {
    let fly = fly_with(FlyOptions { volume: Some("data".into()), ..FlyOptions::default() }).await;
    let ran = Step::main(&with(inputs(&fly, V2), "strategy", "canary")).run().await;
    assert_eq!(ran.code, 1, "{ran}");
    assert!(ran.summary.contains("canary cannot deploy an app whose machines mount volumes"), "{ran}");
    assert!(machine_writes(&fly).is_empty());
    fly.stop().await;
}

#[tokio::test]
async fn an_app_with_a_worker_group_gates_a_serving_machine_first_and_deploys_the_worker_too() {
    // A worker `fly deploy` made: deployed, but with no services, so the proxy cannot
    // deliver to it and the gate must not try.
    let worker = serde_json::json!({
        "image": V1,
        "metadata": { "fly_process_group": "worker", "fly_platform_version": "v2" },
        "services": []
    });
    let fly = fly_with(FlyOptions { extra_machines: vec![worker], ..FlyOptions::default() }).await;
    // Every batch but the last is gated alone, so the worker's batch is likely among them.
    let ran = Step::main(&with(inputs(&fly, V2), "batch-gate", "every")).run().await;

    assert_eq!(ran.code, 0, "{ran}");
    let deployed: Vec<MachineView> = fly.machines().into_iter().filter(|m| m.state != "destroyed").collect();
    assert_eq!(deployed.len(), 4);
    assert!(deployed.iter().all(|m| m.image == V2), "the worker is deployed too: {deployed:?}");
    let worker_id = deployed.iter().find(|m| m.process_group == "worker").unwrap().id.clone();
    assert!(!ran.summary.contains(&format!("instance {worker_id}")), "the worker is never gated alone: {ran}");
    assert!(ran.summary.contains("health gate: batch 1, instance"), "{ran}");
    fly.stop().await;
}

#[tokio::test]
async fn bluegreen_uncordons_every_green_stopped_ones_too() {
    let fly = fly().await;
    let stopped = app_machines(&fly)[0].id.clone();
    stop(&fly, &stopped).await;
    let ran = Step::main(&with(inputs(&fly, V2), "strategy", "bluegreen")).run().await;
    assert_eq!(ran.code, 0, "{ran}");
    let machines = app_machines(&fly);
    assert!(machines.iter().all(|m| !m.cordoned), "no green is left cordoned: {machines:?}");
    fly.stop().await;
}

#[tokio::test]
async fn a_lease_granted_whose_answer_came_too_late_is_recognised_as_ours() {
    let fly = fly().await;
    // The first write (a lease) takes effect, but its answer comes after the client's
    // 30 s timeout: the run reads the lease back by its name and goes on.
    fly.set_faults(Faults { late_writes: 1, late_ms: 31_000, ..Default::default() });
    let ran = Step::main(&inputs(&fly, V2)).run().await;
    let calls: Vec<String> = fly.calls().iter().map(|c| c.summary()).collect();
    assert_eq!(ran.code, 0, "{ran}\n{calls:#?}");
    assert_eq!(images(&fly), vec![V2; 3]);
    assert!(fly.leases_held().is_empty(), "{:?}", fly.leases_held());
    fly.stop().await;
}
