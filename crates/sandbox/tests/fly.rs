//! The Fly emulator end to end: real test-app processes behind the Machines API and
//! the router, driven over HTTP the way safe-deploy's Fly provider drives Fly.

use sandbox::Handle;
use std::time::{Duration, Instant};

use sandbox::app::{HealthMode, ReleaseSpec};
use sandbox::client::{call, Reply, Stage};
use sandbox::fly::{Faults, FlyOptions, FlySandbox, MachineView};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn options() -> FlyOptions {
    FlyOptions {
        app_command: vec![env!("CARGO_BIN_EXE_sandbox-app").into()],
        check_interval: Duration::from_millis(100),
        ..Default::default()
    }
}

async fn start(opts: FlyOptions) -> FlySandbox {
    FlySandbox::start(opts).await.expect("the Fly sandbox starts")
}

/// A Machines API call under `/v1/apps/web/machines`.
async fn api(fly: &FlySandbox, method: &str, path: &str, nonce: Option<&str>, body: Option<Value>) -> Reply {
    let url = format!("{}/apps/web/machines{path}", fly.api_url());
    let headers: Vec<(&str, &str)> = nonce.map(|n| ("fly-machine-lease-nonce", n)).into_iter().collect();
    call(method, &url, &headers, body.as_ref()).await.unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

async fn through_router(fly: &FlySandbox, path: &str) -> Reply {
    call("GET", &format!("{}{path}", fly.app_url()), &[], None).await.expect("the router answers")
}

fn app_machines(fly: &FlySandbox) -> Vec<MachineView> {
    fly.machines().into_iter().filter(|m| m.process_group == "app" && m.state != "destroyed").collect()
}

/// The machine's config with another image, as an update sends it.
fn with_image(m: &MachineView, image: &str) -> Value {
    let mut config = m.config.clone();
    config["image"] = json!(image);
    json!({ "config": config })
}

/// Updates machine `id` and waits until its new instance has started and passes its checks.
async fn update_and_settle(fly: &FlySandbox, m: &MachineView, image: &str) -> Value {
    let updated = api(fly, "POST", &format!("/{}", m.id), None, Some(with_image(m, image))).await;
    assert_eq!(updated.status, 200, "{}", updated.text());
    settle(fly, &m.id, updated.json()["instance_id"].as_str().unwrap_or_default()).await
}

/// Waits until instance `instance` of machine `id` has started and passes its checks.
async fn settle(fly: &FlySandbox, id: &str, instance: &str) -> Value {
    settle_started(fly, id, instance).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = api(fly, "GET", &format!("/{id}"), None, None).await.json();
        let checks = now["checks"].as_array().cloned().unwrap_or_default();
        if !checks.is_empty() && checks.iter().all(|c| c["status"] == "passing") {
            return now;
        }
        assert!(Instant::now() < deadline, "machine {id} never passed its checks: {now}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until instance `instance` of machine `id` has started.
async fn settle_started(fly: &FlySandbox, id: &str, instance: &str) {
    let wait =
        api(fly, "GET", &format!("/{id}/wait?state=started&timeout=30&instance_id={instance}"), None, None).await;
    assert_eq!(wait.status, 200, "{}", wait.text());
}

fn exit_event(machine: &Value) -> Value {
    let events = machine["events"].as_array().cloned().unwrap_or_default();
    events.into_iter().find(|e| e["type"] == "exit").unwrap_or(Value::Null)
}

#[tokio::test]
async fn start_gives_three_healthy_machines_behind_the_router() {
    let fly = start(options()).await;
    let machines = fly.machines();
    assert_eq!(machines.len(), 3);
    for m in &machines {
        assert_eq!(m.state, "started");
        assert!(m.checks_passing && m.port.is_some() && !m.cordoned, "{m:?}");
        assert_eq!(m.image, "registry.fly.io/web:v1");
    }
    let home = through_router(&fly, "/").await;
    assert_eq!((home.status, home.text().as_str()), (200, "hello from v1\n"));

    let listed = api(&fly, "GET", "", None, None).await;
    assert_eq!(listed.header("content-type"), Some("application/json"));
    let listed = listed.json();
    let first = &listed[0];
    assert_eq!(listed.as_array().map(Vec::len), Some(3));
    assert_eq!(first["id"].as_str().map(str::len), Some(14));
    assert_eq!(first["image_ref"]["tag"], "v1");
    assert_eq!(first["config"]["services"][0]["internal_port"], 8080);
    assert_eq!(first["config"]["metadata"]["fly_process_group"], "app");
    assert_eq!(first["checks"][0]["name"], "servicecheck-00-http-8080");
    assert_eq!(first["checks"][0]["status"], "passing");
    assert_eq!(first["host_status"], "ok");
    assert!(first.get("nonce").is_none());
    fly.stop().await;
}

#[tokio::test]
async fn an_update_restarts_the_process_on_the_new_image() {
    let fly = start(options()).await;
    let m = fly.machines().remove(0);
    let old_port = m.port;
    let mut config = with_image(&m, "registry.fly.io/web:v2");
    config["config"]["custom_field"] = json!({"kept": true});
    let updated = api(&fly, "POST", &format!("/{}", m.id), None, Some(config)).await.json();
    assert_ne!(updated["instance_id"], json!(m.instance_id), "an update is a new instance");
    assert_eq!(updated["state"], "stopping", "a started machine restarts on its new config");
    assert_eq!(updated["config"]["custom_field"]["kept"], true, "unknown config fields survive");

    let settled = settle(&fly, &m.id, updated["instance_id"].as_str().unwrap_or_default()).await;
    let now = fly.machines().into_iter().find(|x| x.id == m.id).expect("still there");
    assert_ne!(now.port, old_port, "a new process");
    let version = call("GET", &format!("http://127.0.0.1:{}/version", now.port.unwrap_or(0)), &[], None).await;
    assert_eq!(version.map(|r| r.text()).ok().as_deref(), Some("v2"));
    let exit = exit_event(&settled);
    assert_eq!(exit["request"]["exit_event"]["requested_stop"], true);
    assert_eq!(exit["request"]["exit_event"]["exit_code"], 0, "SIGTERM ends the app cleanly");

    // The router now reaches v2 too.
    let mut seen_v2 = false;
    for _ in 0..6 {
        seen_v2 |= through_router(&fly, "/version").await.text() == "v2";
    }
    assert!(seen_v2);
    fly.stop().await;
}

#[tokio::test]
async fn leases_block_writes_without_their_nonce() {
    let fly = start(options()).await;
    let machines = fly.machines();
    let (held, free) = (&machines[0], &machines[1]);

    fly.hold_lease(&held.id, "other-deploy@example.com");
    let taken =
        api(&fly, "POST", &format!("/{}/lease", held.id), None, Some(json!({"description": "mine", "ttl": 30}))).await;
    assert_eq!(taken.status, 409);
    assert!(taken.json()["error"].as_str().unwrap_or_default().contains("other-deploy@example.com"));
    let blocked =
        api(&fly, "POST", &format!("/{}", held.id), None, Some(with_image(held, "registry.fly.io/web:v2"))).await;
    assert_eq!(blocked.status, 409);
    assert!(blocked.text().contains("is leased"), "{}", blocked.text());

    let lease =
        api(&fly, "POST", &format!("/{}/lease", free.id), None, Some(json!({"description": "deploy", "ttl": 30})))
            .await;
    assert_eq!(lease.status, 200, "{}", lease.text());
    let lease = lease.json();
    assert_eq!(lease["status"], "success");
    let nonce = lease["data"]["nonce"].as_str().unwrap_or_default().to_string();
    assert!(!nonce.is_empty() && lease["data"]["expires_at"].is_u64());
    assert_eq!(
        api(&fly, "GET", &format!("/{}/lease", free.id), None, None).await.json()["data"]["nonce"],
        json!(nonce)
    );

    for path in ["", "/stop", "/cordon"] {
        let body = if path.is_empty() { Some(with_image(free, "registry.fly.io/web:v2")) } else { None };
        let without = api(&fly, "POST", &format!("/{}{path}", free.id), None, body.clone()).await;
        assert_eq!(without.status, 409, "POST {path} without the nonce");
        let wrong = api(&fly, "POST", &format!("/{}{path}", free.id), Some("not-the-nonce"), body).await;
        assert_eq!(wrong.status, 409, "POST {path} with a wrong nonce");
    }
    let with =
        api(&fly, "POST", &format!("/{}", free.id), Some(&nonce), Some(with_image(free, "registry.fly.io/web:v2")))
            .await;
    assert_eq!(with.status, 200, "{}", with.text());

    let refreshed = api(&fly, "POST", &format!("/{}/lease", free.id), Some(&nonce), Some(json!({"ttl": 60}))).await;
    assert_eq!(refreshed.json()["data"]["nonce"], json!(nonce), "a refresh keeps the nonce");
    assert_eq!(api(&fly, "DELETE", &format!("/{}/lease", free.id), None, None).await.status, 409);
    assert_eq!(api(&fly, "DELETE", &format!("/{}/lease", free.id), Some(&nonce), None).await.status, 200);
    assert_eq!(api(&fly, "GET", &format!("/{}/lease", free.id), None, None).await.status, 404);

    let created =
        api(&fly, "POST", "", None, Some(json!({"config": free.config, "lease_ttl": 20, "skip_launch": true}))).await;
    assert!(created.json()["nonce"].as_str().is_some_and(|n| !n.is_empty()), "lease_ttl returns the nonce");
    fly.stop().await;
}

#[tokio::test]
async fn wait_answers_when_the_state_is_reached_or_times_out() {
    let fly = start(options()).await;
    let m = fly.machines().remove(0);
    let started = api(&fly, "GET", &format!("/{}/wait?state=started&timeout=5", m.id), None, None).await;
    assert_eq!((started.status, started.json()), (200, json!({"ok": true, "state": "started"})));

    let begun = Instant::now();
    let timed_out = api(&fly, "GET", &format!("/{}/wait?state=stopped&timeout=1", m.id), None, None).await;
    assert_eq!((timed_out.status, timed_out.json()["error"].as_str()), (408, Some("deadline_exceeded")));
    assert!(begun.elapsed() >= Duration::from_millis(900));
    assert_eq!(api(&fly, "GET", &format!("/{}/wait?state=happy", m.id), None, None).await.status, 400);

    assert_eq!(api(&fly, "DELETE", &format!("/{}", m.id), None, None).await.status, 412, "running: needs force");
    let stop =
        api(&fly, "POST", &format!("/{}/stop", m.id), None, Some(json!({"signal": "SIGTERM", "timeout": "10s"}))).await;
    assert_eq!(stop.status, 200);
    let stopped = api(&fly, "GET", &format!("/{}/wait?state=stopped&timeout=10", m.id), None, None).await;
    assert_eq!(stopped.status, 200, "{}", stopped.text());
    let events = api(&fly, "GET", &format!("/{}/events?limit=5", m.id), None, None).await.json();
    let kinds: Vec<&str> = events.as_array().into_iter().flatten().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(kinds[..2], ["exit", "stop"], "newest first: {events}");

    assert_eq!(api(&fly, "DELETE", &format!("/{}", m.id), None, None).await.status, 200, "stopped: no force needed");
    let gone = api(&fly, "GET", &format!("/{}/wait?state=destroyed&timeout=5", m.id), None, None).await;
    assert_eq!(gone.status, 200);
    assert_eq!(api(&fly, "GET", "", None, None).await.json().as_array().map(Vec::len), Some(2));
    assert_eq!(api(&fly, "GET", "?include_deleted=true", None, None).await.json().as_array().map(Vec::len), Some(3));
    fly.stop().await;
}

#[tokio::test]
async fn a_crash_on_start_records_its_exit_code() {
    let fly = start(FlyOptions { machines: 1, ..options() }).await;
    fly.add_release(
        "registry.fly.io/web:broken",
        ReleaseSpec { crash_on_start: true, exit_code: 3, ..Default::default() },
    );
    let m = fly.machines().remove(0);
    let body = with_image(&m, "registry.fly.io/web:broken");
    let created = api(&fly, "POST", "", None, Some(body)).await.json();
    let id = created["id"].as_str().unwrap_or_default();
    let stopped = api(&fly, "GET", &format!("/{id}/wait?state=stopped&timeout=10"), None, None).await;
    assert_eq!(stopped.status, 200, "{}", stopped.text());
    let machine = api(&fly, "GET", &format!("/{id}"), None, None).await.json();
    assert_eq!(machine["state"], "stopped");
    let exit = exit_event(&machine);
    assert_eq!(exit["request"]["exit_event"]["exit_code"], 3, "{machine}");
    assert_eq!(exit["request"]["exit_event"]["requested_stop"], false);
    assert!(exit["timestamp"].as_u64().is_some_and(|t| t > 1_600_000_000_000), "milliseconds");
    fly.stop().await;
}

#[tokio::test]
async fn a_release_command_machine_exits_and_destroys_itself() {
    let fly = start(FlyOptions { machines: 1, ..options() }).await;
    fly.add_release("registry.fly.io/web:v2", ReleaseSpec { release_command_exit_code: 5, ..Default::default() });
    let body = json!({
        "skip_launch": true,
        "config": {
            "image": "registry.fly.io/web:v2",
            "init": { "cmd": ["bin/migrate"] },
            "auto_destroy": true,
            "restart": { "policy": "no" },
            "dns": { "skip_registration": true },
            "metadata": { "fly_process_group": "fly_app_release_command", "fly_platform_version": "v2" }
        }
    });
    let created = api(&fly, "POST", "", None, Some(body)).await.json();
    assert_eq!(created["state"], "created");
    let id = created["id"].as_str().unwrap_or_default();
    assert_eq!(api(&fly, "POST", &format!("/{id}/start"), None, None).await.json()["previous_state"], "created");
    let gone = api(&fly, "GET", &format!("/{id}/wait?state=destroyed&timeout=10"), None, None).await;
    assert_eq!(gone.status, 200, "{}", gone.text());
    let machine = api(&fly, "GET", &format!("/{id}"), None, None).await.json();
    assert_eq!(machine["state"], "destroyed");
    assert_eq!(exit_event(&machine)["request"]["exit_event"]["exit_code"], 5);
    let kinds: Vec<&str> =
        machine["events"].as_array().into_iter().flatten().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(kinds, ["destroy", "exit", "start", "launch"]);
    fly.stop().await;
}

#[tokio::test]
async fn a_cordoned_machine_gets_no_traffic() {
    let fly = start(options()).await;
    let m = fly.machines().remove(0);
    assert_eq!(api(&fly, "POST", &format!("/{}/cordon", m.id), None, None).await.status, 200);
    assert!(api(&fly, "GET", &format!("/{}", m.id), None, None).await.json()["cordoned"] == true);
    for _ in 0..12 {
        let reply = through_router(&fly, "/").await;
        assert_eq!(reply.status, 200);
        assert_ne!(reply.header("sandbox-machine-id"), Some(m.id.as_str()));
    }
    assert_eq!(api(&fly, "POST", &format!("/{}/uncordon", m.id), None, None).await.status, 200);
    let mut reached = false;
    for _ in 0..12 {
        reached |= through_router(&fly, "/").await.header("sandbox-machine-id") == Some(m.id.as_str());
    }
    assert!(reached, "uncordoned, it takes traffic again");

    // Stop then destroy without waiting, as a blue/green cleanup does: the stop finishes first.
    let other = fly.machines().remove(1);
    assert_eq!(api(&fly, "POST", &format!("/{}/stop", other.id), None, None).await.status, 200);
    assert_eq!(api(&fly, "DELETE", &format!("/{}", other.id), None, None).await.status, 200);
    let exit = exit_event(&api(&fly, "GET", &format!("/{}", other.id), None, None).await.json());
    assert_eq!(exit["request"]["exit_event"]["exit_code"], 0, "a graceful stop, not a kill");
    // A running machine is killed.
    assert_eq!(api(&fly, "DELETE", &format!("/{}?kill=true", m.id), None, None).await.status, 200);
    let killed = api(&fly, "GET", &format!("/{}", m.id), None, None).await.json();
    assert_eq!(killed["state"], "destroyed");
    assert_eq!(exit_event(&killed)["request"]["exit_event"]["exit_code"], 137);
    for _ in 0..6 {
        assert_eq!(through_router(&fly, "/").await.status, 200, "the last machine still answers");
    }
    fly.stop().await;
}

#[tokio::test]
async fn a_rolling_update_drops_no_request() {
    // Every answer takes a while, so some are in flight whenever a machine is stopped.
    let slow = ReleaseSpec { latency_ms: 40, ..Default::default() };
    let mut opts = options();
    opts.releases.insert("registry.fly.io/web:v1".into(), slow.clone());
    opts.releases.insert("registry.fly.io/web:v2".into(), slow);
    let fly = start(opts).await;
    let url = format!("{}/", fly.app_url());

    let load = tokio::spawn(async move {
        let mut pending = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for _ in 0..100 {
            tick.tick().await;
            let url = url.clone();
            pending.push(tokio::spawn(async move { call("GET", &url, &[], None).await }));
        }
        let mut answers = Vec::new();
        for p in pending {
            answers.push(p.await.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| e.to_string())));
        }
        answers
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    for m in app_machines(&fly) {
        update_and_settle(&fly, &m, "registry.fly.io/web:v2").await;
    }
    let answers = tokio::time::timeout(Duration::from_secs(30), load).await.expect("the load ends").expect("no panic");
    let failed: Vec<String> = answers
        .iter()
        .filter_map(|a| match a {
            Ok(r) if r.status == 200 => None,
            Ok(r) => Some(format!("{} {}", r.status, r.text())),
            Err(e) => Some(e.clone()),
        })
        .collect();
    assert!(failed.is_empty(), "{} of {} dropped: {failed:?}", failed.len(), answers.len());
    let v2 = answers.iter().filter(|a| a.as_ref().is_ok_and(|r| r.text() == "hello from v2\n")).count();
    assert!(v2 > 0, "the update happened while the load ran");
    assert!(app_machines(&fly).iter().all(|m| m.image.ends_with(":v2") && m.checks_passing));
    fly.stop().await;
}

#[tokio::test]
async fn faults_fail_the_next_requests_as_told() {
    let fly = start(FlyOptions { machines: 1, ..options() }).await;
    fly.reset_calls();

    fly.set_faults(Faults { error_burst: 2, ..Default::default() });
    assert_eq!(api(&fly, "GET", "", None, None).await.status, 503);
    assert_eq!(api(&fly, "POST", "/nope/start", None, None).await.status, 503);
    assert_eq!(api(&fly, "GET", "", None, None).await.status, 200);

    fly.set_faults(Faults { rate_limit_burst: 1, retry_after_secs: Some(3), ..Default::default() });
    let limited = api(&fly, "GET", "", None, None).await;
    assert_eq!((limited.status, limited.header("retry-after")), (429, Some("3")));
    assert_eq!(limited.json()["error"], "rate limited");

    fly.set_faults(Faults { malformed_burst: 1, ..Default::default() });
    assert_eq!(api(&fly, "POST", "/nope/start", None, None).await.status, 404, "writes are not malformed");
    let broken = api(&fly, "GET", "", None, None).await;
    assert_eq!(broken.status, 200);
    assert!(serde_json::from_slice::<Value>(&broken.body).is_err(), "{}", broken.text());
    assert!(api(&fly, "GET", "", None, None).await.json().is_array());

    fly.set_faults(Faults { reset_burst: 1, ..Default::default() });
    let url = format!("{}/apps/web/machines", fly.api_url());
    let reset = call("GET", &url, &[], None).await.expect_err("the connection is closed without an answer");
    assert_eq!(reset.stage, Stage::BeforeResponse, "{reset}");
    assert!(call("GET", &url, &[], None).await.is_ok_and(|r| r.status == 200));

    // On a kept-alive connection the reset hits the next request instead.
    let mut conn =
        tokio::net::TcpStream::connect(url.trim_start_matches("http://").split('/').next().unwrap_or_default())
            .await
            .expect("connects");
    let request = "GET /v1/apps/web/machines HTTP/1.1\r\nhost: sandbox\r\n\r\n";
    conn.write_all(request.as_bytes()).await.expect("sends");
    let mut first = vec![0u8; 64 * 1024];
    let n = conn.read(&mut first).await.expect("an answer");
    assert!(first[..n].starts_with(b"HTTP/1.1 200"));
    fly.set_faults(Faults { reset_burst: 1, ..Default::default() });
    conn.write_all(request.as_bytes()).await.expect("sends");
    let mut rest = Vec::new();
    let read = conn.read_to_end(&mut rest).await;
    assert!(read.is_err() || rest.is_empty(), "closed without an answer: {:?}", String::from_utf8_lossy(&rest));

    // Control requests are neither faulted nor logged.
    let base = fly.api_url().trim_end_matches("/v1").to_string();
    let set = call("POST", &format!("{base}/__sandbox/faults"), &[], Some(&json!({"error_burst": 1}))).await;
    assert_eq!(set.map(|r| r.status).ok(), Some(200));
    assert_eq!(fly.faults().error_burst, 1);
    let listed = call("GET", &format!("{base}/__sandbox/machines"), &[], None).await.expect("control answers").json();
    assert_eq!(listed[0]["state"], "started");
    assert_eq!(api(&fly, "GET", "", None, None).await.status, 503);

    fly.set_faults(Faults { slow_ms: 300, ..Default::default() });
    let begun = Instant::now();
    assert_eq!(api(&fly, "GET", "", None, None).await.status, 200);
    assert!(begun.elapsed() >= Duration::from_millis(300));

    let statuses: Vec<u16> = fly.calls().iter().map(|c| c.status).collect();
    assert_eq!(statuses, [503, 503, 200, 429, 404, 200, 200, 0, 200, 200, 0, 503, 200]);
    let writes: Vec<_> = fly.calls().into_iter().filter(|c| c.is_write()).collect();
    assert_eq!(writes.len(), 2);
    assert_eq!(writes[0].target.as_deref(), Some("nope"));
    fly.stop().await;
}

#[tokio::test]
async fn a_standing_status_fails_every_api_request_until_cleared() {
    let fly = start(FlyOptions { machines: 1, ..options() }).await;
    fly.reset_calls();
    fly.set_faults(Faults { status: Some(502), ..Default::default() });
    for (method, path) in [("GET", ""), ("POST", "/nope/start"), ("GET", "")] {
        let failed = api(&fly, method, path, None, None).await;
        assert_eq!(failed.status, 502, "{method} {path}");
        assert!(error_of(&failed).contains("502"), "{}", failed.text());
    }
    let base = fly.api_url().trim_end_matches("/v1").to_string();
    let listed = call("GET", &format!("{base}/__sandbox/machines"), &[], None).await.expect("control answers");
    assert_eq!(listed.status, 200, "control requests are exempt");
    assert_eq!(through_router(&fly, "/").await.status, 200, "the app itself is not the API");
    fly.set_faults(Faults::default());
    assert_eq!(api(&fly, "GET", "", None, None).await.status, 200);
    let statuses: Vec<u16> = fly.calls().iter().map(|c| c.status).collect();
    assert_eq!(statuses, [502, 502, 502, 200]);
    fly.stop().await;
}

#[tokio::test]
async fn never_start_leaves_machines_starting() {
    let fly = start(FlyOptions { machines: 1, ..options() }).await;
    fly.set_faults(Faults { never_start: true, ..Default::default() });
    let m = fly.machines().remove(0);
    let updated =
        api(&fly, "POST", &format!("/{}", m.id), None, Some(with_image(&m, "registry.fly.io/web:v2"))).await.json();
    let instance = updated["instance_id"].as_str().unwrap_or_default();
    let wait =
        api(&fly, "GET", &format!("/{}/wait?state=started&timeout=1&instance_id={instance}", m.id), None, None).await;
    assert_eq!(wait.status, 408);
    assert_eq!(fly.machines()[0].state, "starting");
    assert_eq!(through_router(&fly, "/").await.status, 503, "no healthy machines");
    fly.stop().await;
}

#[tokio::test]
async fn bad_requests_get_error_responses() {
    let fly = start(FlyOptions { machines: 1, token: Some("fm2_secret".into()), ..options() }).await;
    let url = format!("{}/apps/web/machines", fly.api_url());
    let denied = call("GET", &url, &[], None).await.expect("answers");
    assert_eq!((denied.status, denied.json()), (401, json!({"error": "unauthorized"})));
    for auth in ["FlyV1 fm2_secret", "Bearer fm2_secret"] {
        assert_eq!(call("GET", &url, &[("authorization", auth)], None).await.map(|r| r.status).ok(), Some(200));
    }
    let auth = [("authorization", "FlyV1 fm2_secret")];
    let id = fly.machines()[0].id.clone();
    let cases = [
        ("POST", format!("{url}/{id}"), Some(json!({"name": "no config"})), 400),
        ("POST", format!("{url}/{id}/lease"), None, 200),
        ("GET", format!("{url}/00000000000000"), None, 404),
        ("GET", format!("{}/apps/other/machines", fly.api_url()), None, 404),
    ];
    for (method, url, body, status) in cases {
        let reply = call(method, &url, &auth, body.as_ref()).await.expect("answers");
        assert_eq!(reply.status, status, "{method} {url}: {}", reply.text());
        if status >= 400 {
            assert!(reply.json()["error"].is_string());
        }
    }
    // Not JSON at all.
    let headers = [("authorization", "Bearer fm2_secret"), ("content-type", "application/json")];
    let raw = call("POST", &format!("{url}/{id}"), &headers, None).await;
    assert_eq!(raw.map(|r| r.status).ok(), Some(400));
    let reply = call("POST", &url, &auth, Some(&json!("just a string"))).await.expect("answers");
    assert_eq!(reply.status, 400);
    fly.stop().await;
}

#[tokio::test]
async fn failing_checks_keep_a_machine_out_of_rotation() {
    let fly = start(FlyOptions { machines: 1, ..options() }).await;
    fly.add_release("registry.fly.io/web:sick", ReleaseSpec { health: HealthMode::Error500, ..Default::default() });
    fly.add_release("registry.fly.io/web:stuck", ReleaseSpec { health: HealthMode::Hang, ..Default::default() });
    let healthy = fly.machines().remove(0);
    let mut body = with_image(&healthy, "registry.fly.io/web:sick");
    body["config"]["services"][0]["checks"][0]["timeout"] = json!("300ms");
    let sick = api(&fly, "POST", "", None, Some(body)).await.json();
    let id = sick["id"].as_str().unwrap_or_default().to_string();

    let deadline = Instant::now() + Duration::from_secs(10);
    let check = loop {
        let m = api(&fly, "GET", &format!("/{id}"), None, None).await.json();
        if let Some(check) = m["checks"].as_array().and_then(|c| c.first()).cloned() {
            break check;
        }
        assert!(Instant::now() < deadline, "no check result: {m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(check["status"], "critical");
    assert!(check["output"].as_str().unwrap_or_default().contains("500"), "{check}");
    for _ in 0..6 {
        assert_eq!(through_router(&fly, "/").await.header("sandbox-machine-id"), Some(healthy.id.as_str()));
    }

    // A hung health endpoint times out, and does not hold up a stop.
    let now = fly.machines().into_iter().find(|m| m.id == id).expect("there");
    let stuck =
        api(&fly, "POST", &format!("/{id}"), None, Some(with_image(&now, "registry.fly.io/web:stuck"))).await.json();
    settle_started(&fly, &id, stuck["instance_id"].as_str().unwrap_or_default()).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let begun = Instant::now();
    assert_eq!(api(&fly, "POST", &format!("/{id}/stop"), None, None).await.status, 200);
    let stopped = api(&fly, "GET", &format!("/{id}/wait?state=stopped&timeout=10"), None, None).await;
    assert_eq!(stopped.status, 200);
    assert!(begun.elapsed() < Duration::from_secs(2), "stopped in {:?}", begun.elapsed());
    fly.stop().await;
}

#[test]
fn handles_can_be_shared_across_tasks() {
    fn shareable<T: Send + Sync>() {}
    shareable::<FlySandbox>();
    shareable::<sandbox::server::Server>();
}

/// A request through the router pinned to machine `id` with `fly-force-instance-id`.
async fn forced(fly: &FlySandbox, id: &str) -> Reply {
    // Mixed case on purpose: header names are case-insensitive.
    let headers = [("Fly-Force-Instance-Id", id)];
    call("GET", &format!("{}/", fly.app_url()), &headers, None).await.expect("the router answers")
}

/// A Machines API call under `/v1/apps/web/volumes`.
async fn volumes_api(fly: &FlySandbox, method: &str, path: &str, body: Option<Value>) -> Reply {
    let url = format!("{}/apps/web/volumes{path}", fly.api_url());
    call(method, &url, &[], body.as_ref()).await.unwrap_or_else(|e| panic!("{method} volumes{path}: {e}"))
}

/// A machine config like `m`'s that mounts `volume` at /data.
fn mounting(m: &MachineView, volume: &str) -> Value {
    let mut config = m.config.clone();
    config["mounts"] = json!([{ "volume": volume, "path": "/data", "name": "data" }]);
    json!({ "config": config })
}

fn error_of(reply: &Reply) -> String {
    reply.json()["error"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn a_forced_request_goes_to_its_machine_or_nowhere() {
    let fly = start(options()).await;
    let machines = fly.machines();
    let (pinned, stopped) = (&machines[0], &machines[1]);
    for _ in 0..6 {
        let reply = forced(&fly, &pinned.id).await;
        assert_eq!((reply.status, reply.header("sandbox-machine-id")), (200, Some(pinned.id.as_str())));
    }

    // Cordoned, it takes no traffic but forced requests still reach it.
    assert_eq!(api(&fly, "POST", &format!("/{}/cordon", pinned.id), None, None).await.status, 200);
    assert_eq!(forced(&fly, &pinned.id).await.header("sandbox-machine-id"), Some(pinned.id.as_str()));
    for _ in 0..6 {
        assert_ne!(through_router(&fly, "/").await.header("sandbox-machine-id"), Some(pinned.id.as_str()));
    }

    // A machine that is not there, or not started, fails the request; no other machine gets it.
    let missing = forced(&fly, "00000000000000").await;
    assert_eq!((missing.status, missing.header("sandbox-machine-id")), (503, None));
    assert!(missing.text().contains("00000000000000"), "{}", missing.text());
    assert_eq!(api(&fly, "POST", &format!("/{}/stop", stopped.id), None, None).await.status, 200);
    let wait = api(&fly, "GET", &format!("/{}/wait?state=stopped&timeout=10", stopped.id), None, None).await;
    assert_eq!(wait.status, 200);
    let refused = forced(&fly, &stopped.id).await;
    assert_eq!((refused.status, refused.header("sandbox-machine-id")), (503, None));
    assert!(refused.text().contains(&stopped.id) && refused.text().contains("stopped"), "{}", refused.text());

    // A green machine, unregistered and failing its checks, can still be tried by hand.
    fly.add_release("registry.fly.io/web:sick", ReleaseSpec { health: HealthMode::Error500, ..Default::default() });
    let mut body = with_image(pinned, "registry.fly.io/web:sick");
    body["skip_service_registration"] = json!(true);
    let green = api(&fly, "POST", "", None, Some(body)).await.json();
    let green_id = green["id"].as_str().unwrap_or_default();
    settle_started(&fly, green_id, green["instance_id"].as_str().unwrap_or_default()).await;
    let tried = forced(&fly, green_id).await;
    assert_eq!((tried.status, tried.text().as_str()), (200, "hello from sick\n"));
    assert_eq!(tried.header("sandbox-machine-id"), Some(green_id));
    fly.stop().await;
}

#[tokio::test]
async fn deploy_machines_get_volumes_that_are_deleted_only_when_free() {
    let fly = start(FlyOptions { machines: 2, volume: Some("data".into()), spare_volumes: 1, ..options() }).await;
    let volumes = fly.volumes();
    assert_eq!(volumes.len(), 3);
    assert!(volumes.iter().all(|v| v.name == "data" && v.region == "ams" && v.state == "created"), "{volumes:?}");
    let machines = fly.machines();
    for (m, v) in machines.iter().zip(&volumes) {
        assert_eq!(v.attached_machine_id.as_deref(), Some(m.id.as_str()), "one volume each");
    }
    let spare = volumes[2].clone();
    assert_eq!(spare.attached_machine_id, None);

    // The API shows them in the spec's Volume shape, and machines list their mounts.
    let listed = volumes_api(&fly, "GET", "", None).await.json();
    assert_eq!(listed.as_array().map(Vec::len), Some(3));
    let first = &listed[0];
    assert!(first["id"].as_str().is_some_and(|id| id.starts_with("vol_") && id.len() == 20), "{first}");
    assert_eq!((first["size_gb"].as_u64(), first["fstype"].as_str()), (Some(1), Some("ext4")));
    assert_eq!((first["encrypted"].as_bool(), first["block_size"].as_u64()), (Some(true), Some(4096)));
    assert_eq!(first["attached_machine_id"], json!(machines[0].id));
    assert!(listed[2]["attached_machine_id"].is_null() && listed[2]["attached_alloc_id"].is_null());
    let listed_machines = api(&fly, "GET", "", None, None).await.json();
    let mount = &listed_machines[0]["config"]["mounts"][0];
    assert_eq!((mount["volume"].as_str(), mount["path"].as_str()), (Some(volumes[0].id.as_str()), Some("/data")));
    assert_eq!(mount["name"], "data");

    let made = volumes_api(&fly, "POST", "", Some(json!({"name": "logs", "region": "ams", "size_gb": 2}))).await.json();
    let made_id = made["id"].as_str().unwrap_or_default();
    assert_eq!((made["name"].as_str(), made["size_gb"].as_u64()), (Some("logs"), Some(2)));
    assert_eq!(volumes_api(&fly, "GET", &format!("/{made_id}"), None).await.json()["id"], json!(made_id));
    assert_eq!(volumes_api(&fly, "POST", "", Some(json!({"size_gb": 1}))).await.status, 400, "a name is needed");

    // A new machine on the spare attaches it; while attached it cannot be deleted.
    let created = api(&fly, "POST", "", None, Some(mounting(&machines[0], &spare.id))).await;
    assert_eq!(created.status, 200, "{}", created.text());
    let holder = created.json()["id"].as_str().unwrap_or_default().to_string();
    let spare_now = volumes_api(&fly, "GET", &format!("/{}", spare.id), None).await.json();
    assert_eq!(spare_now["attached_machine_id"], json!(holder));
    let refused = volumes_api(&fly, "DELETE", &format!("/{}", spare.id), None).await;
    assert_eq!(refused.status, 412);
    assert!(error_of(&refused).contains(&holder), "{}", refused.text());

    // Destroying the machine releases it.
    assert_eq!(api(&fly, "DELETE", &format!("/{holder}?force=true"), None, None).await.status, 200);
    assert_eq!(fly.volumes()[2].attached_machine_id, None);
    let deleted = volumes_api(&fly, "DELETE", &format!("/{}", spare.id), None).await;
    assert_eq!((deleted.status, deleted.json()["state"].as_str()), (200, Some("destroyed")));
    let ids: Vec<String> = volumes_api(&fly, "GET", "", None)
        .await
        .json()
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(ids, [volumes[0].id.as_str(), volumes[1].id.as_str(), made_id], "deleted ones are not listed");

    let base = fly.api_url().trim_end_matches("/v1").to_string();
    let control = call("GET", &format!("{base}/__sandbox/volumes"), &[], None).await.expect("control answers").json();
    assert_eq!(control.as_array().map(Vec::len), Some(4));
    assert_eq!(control[2]["state"], "destroyed");
    fly.stop().await;
}

#[tokio::test]
async fn a_volume_is_mounted_by_one_machine_in_its_region_and_never_swapped() {
    let fly = start(FlyOptions { machines: 1, volume: Some("data".into()), spare_volumes: 1, ..options() }).await;
    let m = fly.machines().remove(0);
    let (own, spare) = (fly.volumes()[0].id.clone(), fly.volumes()[1].id.clone());
    let far = volumes_api(&fly, "POST", "", Some(json!({"name": "data", "region": "lhr"}))).await.json();
    let far = far["id"].as_str().unwrap_or_default().to_string();
    let before = (fly.machines().len(), fly.volumes());

    let taken = api(&fly, "POST", "", None, Some(mounting(&m, &own))).await;
    assert_eq!(taken.status, 412, "attached to another machine: {}", taken.text());
    assert!(error_of(&taken).contains(&own) && error_of(&taken).contains(&m.id), "{}", taken.text());
    let elsewhere = api(&fly, "POST", "", None, Some(mounting(&m, &far))).await;
    assert_eq!(elsewhere.status, 422, "in another region: {}", elsewhere.text());
    assert!(error_of(&elsewhere).contains(&far));
    let missing = api(&fly, "POST", "", None, Some(mounting(&m, "vol_000000000000none"))).await;
    assert_eq!(missing.status, 422);
    assert!(error_of(&missing).contains("vol_000000000000none"));

    // An update keeps the machine's volume: it can neither swap nor drop it.
    let swap = api(&fly, "POST", &format!("/{}", m.id), None, Some(mounting(&m, &spare))).await;
    assert_eq!(swap.status, 422);
    assert!(error_of(&swap).contains(&own) && error_of(&swap).contains(&spare), "{}", swap.text());
    let mut dropped = with_image(&m, "registry.fly.io/web:v1");
    dropped["config"].as_object_mut().map(|c| c.remove("mounts"));
    assert_eq!(api(&fly, "POST", &format!("/{}", m.id), None, Some(dropped)).await.status, 422);
    assert_eq!((fly.machines().len(), fly.volumes()), before, "nothing changed");
    assert_eq!(fly.machines()[0].instance_id, m.instance_id);

    let kept = update_and_settle(&fly, &m, "registry.fly.io/web:v2").await;
    assert_eq!(kept["config"]["mounts"][0]["volume"], json!(own), "an update with the same mount is fine");
    assert_eq!(fly.volumes()[0].attached_machine_id.as_deref(), Some(m.id.as_str()));
    fly.stop().await;
}

#[tokio::test]
async fn skip_launch_leaves_a_machine_stopped_and_suspend_pauses_one() {
    let fly = start(FlyOptions { machines: 2, ..options() }).await;
    let machines = fly.machines();
    let (m, other) = (&machines[0], &machines[1]);

    // Created with skip_launch: "created" at first, then stopped, as flyctl waits for.
    let mut body = with_image(m, "registry.fly.io/web:v1");
    body["skip_launch"] = json!(true);
    let created = api(&fly, "POST", "", None, Some(body)).await.json();
    assert_eq!(created["state"], "created");
    let id = created["id"].as_str().unwrap_or_default();
    let stopped = api(&fly, "GET", &format!("/{id}/wait?state=stopped&timeout=5"), None, None).await;
    assert_eq!(stopped.status, 200, "{}", stopped.text());
    assert_eq!(api(&fly, "GET", &format!("/{id}"), None, None).await.json()["state"], "stopped");
    assert_eq!(api(&fly, "POST", &format!("/{id}/start"), None, None).await.json()["previous_state"], "stopped");
    settle_started(&fly, id, created["instance_id"].as_str().unwrap_or_default()).await;

    // Suspended: out of rotation with no process; start resumes it.
    assert_eq!(api(&fly, "POST", &format!("/{}/suspend", m.id), None, None).await.json(), json!({"ok": true}));
    let suspended = api(&fly, "GET", &format!("/{}/wait?state=suspended&timeout=10", m.id), None, None).await;
    assert_eq!(suspended.status, 200, "{}", suspended.text());
    let now = fly.machines().into_iter().find(|x| x.id == m.id).expect("there");
    assert_eq!((now.state.as_str(), now.port), ("suspended", None));
    for _ in 0..6 {
        assert_ne!(through_router(&fly, "/").await.header("sandbox-machine-id"), Some(m.id.as_str()));
    }
    assert_eq!(forced(&fly, &m.id).await.status, 503);
    let resumed = api(&fly, "POST", &format!("/{}/start", m.id), None, None).await.json();
    assert_eq!(resumed["previous_state"], "suspended");
    settle(&fly, &m.id, &m.instance_id).await;
    assert_eq!(forced(&fly, &m.id).await.status, 200);

    // Only a started machine suspends; stopping a suspended one makes it stopped.
    assert_eq!(api(&fly, "POST", &format!("/{id}/stop"), None, None).await.status, 200);
    assert_eq!(api(&fly, "GET", &format!("/{id}/wait?state=stopped&timeout=10"), None, None).await.status, 200);
    assert_eq!(api(&fly, "POST", &format!("/{id}/suspend"), None, None).await.status, 412);
    assert_eq!(api(&fly, "POST", &format!("/{}/suspend", other.id), None, None).await.status, 200);
    let wait = api(&fly, "GET", &format!("/{}/wait?state=suspended&timeout=10", other.id), None, None).await;
    assert_eq!(wait.status, 200);
    assert_eq!(api(&fly, "POST", &format!("/{}/stop", other.id), None, None).await.status, 200);
    assert_eq!(api(&fly, "GET", &format!("/{}", other.id), None, None).await.json()["state"], "stopped");
    fly.stop().await;
}

#[tokio::test]
async fn extra_machines_run_as_given_and_take_no_app_traffic() {
    let worker = json!({
        "image": "registry.fly.io/web:v1",
        "env": { "QUEUE": "default" },
        "guest": { "cpu_kind": "shared", "cpus": 1, "memory_mb": 256 },
        "metadata": { "fly_process_group": "worker" }
    });
    let fly = start(FlyOptions { machines: 1, extra_machines: vec![worker.clone()], ..options() }).await;
    let machines = fly.machines();
    assert_eq!(machines.len(), 2);
    let (app, extra) = (&machines[0], &machines[1]);
    assert_eq!((extra.state.as_str(), extra.process_group.as_str()), ("started", "worker"));
    assert_eq!(extra.config, worker, "created as given");
    let listed = api(&fly, "GET", &format!("/{}", extra.id), None, None).await.json();
    assert!(listed["config"]["metadata"].get("fly_platform_version").is_none());

    for _ in 0..6 {
        assert_eq!(through_router(&fly, "/").await.header("sandbox-machine-id"), Some(app.id.as_str()));
    }
    let forced_worker = forced(&fly, &extra.id).await;
    assert_eq!(forced_worker.status, 503, "no services to deliver to");
    assert!(forced_worker.text().contains("services"), "{}", forced_worker.text());
    fly.stop().await;
}
