//! The DigitalOcean App Platform emulator end to end: spec updates through every
//! phase, readiness checks that fail or crash, injected build failures, superseded
//! and canceled deployments, rollbacks that pin, commit and revert, paging, auth,
//! the rate limit and logs, driven over HTTP as an Apps API client would.

use sandbox::Handle;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sandbox::app::{HealthMode, ReleaseSpec};
use sandbox::client::{call, Reply};
use sandbox::digitalocean::{AppOptions, DoOptions, DoSandbox, Failure, Faults, ServiceOptions};
use serde_json::{json, Value};

const TOKEN: &str = "dop_v1_test";
const TERMINAL: [&str; 4] = ["ACTIVE", "ERROR", "CANCELED", "SUPERSEDED"];

fn options(apps: Vec<AppOptions>) -> DoOptions {
    DoOptions {
        apps,
        token: Some(TOKEN.into()),
        app_command: vec![env!("CARGO_BIN_EXE_sandbox-app").into()],
        step_time: Duration::from_millis(100),
        second: Duration::from_millis(100),
        ..Default::default()
    }
}

async fn start(apps: Vec<AppOptions>) -> DoSandbox {
    DoSandbox::start(options(apps)).await.expect("the DigitalOcean sandbox starts")
}

/// Fails on what Prism would refuse in an answer: a `null` anywhere, a timestamp
/// without its zone, an error body without `id` and `message`.
fn assert_valid_shape(value: &Value, at: &str) {
    match value {
        Value::Null => panic!("{at}: null is never sent (omit the field)"),
        Value::Object(map) => {
            for (k, v) in map {
                if k.ends_with("_at") {
                    let t = v.as_str().unwrap_or_default();
                    assert!(
                        t.len() == 20 && t.ends_with('Z') && &t[10..11] == "T",
                        "{at}.{k}: {v} is not RFC 3339 UTC"
                    );
                }
                assert_valid_shape(v, &format!("{at}.{k}"));
            }
        }
        Value::Array(items) => items.iter().enumerate().for_each(|(i, v)| assert_valid_shape(v, &format!("{at}[{i}]"))),
        _ => {}
    }
}

async fn api(h: &DoSandbox, method: &str, path: &str, body: Option<Value>) -> Reply {
    let headers = [("authorization", &*format!("Bearer {TOKEN}"))];
    let reply =
        call(method, &format!("{}{path}", h.api_url()), &headers, body.as_ref()).await.expect("the API answers");
    for header in ["ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"] {
        let value = reply.header(header).unwrap_or_else(|| panic!("{method} {path}: no {header}"));
        assert!(value.parse::<u64>().is_ok(), "{header}: {value}");
    }
    if !reply.body.is_empty() {
        let v = reply.json();
        assert_valid_shape(&v, &format!("{method} {path}"));
        if reply.status >= 300 {
            assert!(v["id"].is_string() && v["message"].is_string(), "{method} {path}: error body {v}");
        }
    }
    reply
}

fn app_path(h: &DoSandbox, app: &str) -> String {
    format!("/v2/apps/{}", h.app_id(app))
}

async fn deployment(h: &DoSandbox, app: &str, id: &str) -> Value {
    let r = api(h, "GET", &format!("{}/deployments/{id}", app_path(h, app)), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["deployment"].clone()
}

/// Polls the deployment until its phase is terminal; returns it and the phases seen.
async fn finish(h: &DoSandbox, app: &str, id: &str) -> (Value, Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut phases: Vec<String> = Vec::new();
    loop {
        let d = deployment(h, app, id).await;
        let phase = d["phase"].as_str().unwrap().to_string();
        if phases.last() != Some(&phase) {
            phases.push(phase.clone());
        }
        if TERMINAL.contains(&phase.as_str()) {
            return (d, phases);
        }
        assert!(Instant::now() < deadline, "deployment {id} still {phase} after 20 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn until(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "{what} did not happen within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn served(h: &DoSandbox, app: &str) -> Reply {
    call("GET", &format!("{}/version", h.app_url(app)), &[], None).await.expect("the router answers")
}

/// The app's spec with the first service's image tag set to `tag`.
fn spec_with_tag(h: &DoSandbox, app: &str, tag: &str) -> Value {
    let mut spec = h.app(app)["spec"].clone();
    spec["services"][0]["image"] = json!({ "registry_type": "DOCR", "repository": "web", "tag": tag });
    spec
}

/// PUTs `spec` and returns the deployment it started.
async fn put_spec(h: &DoSandbox, app: &str, spec: Value) -> String {
    let r = api(h, "PUT", &app_path(h, app), Some(json!({ "spec": spec, "update_all_source_versions": true }))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let app = &r.json()["app"];
    let pending = app["pending_deployment"]["id"].as_str().expect("a pending deployment").to_string();
    // Queued, not started: it is not the deployment in progress.
    assert_ne!(app["in_progress_deployment"]["id"].as_str(), Some(pending.as_str()), "{app}");
    pending
}

async fn deploy_tag(h: &DoSandbox, app: &str, tag: &str) -> Value {
    let id = put_spec(h, app, spec_with_tag(h, app, tag)).await;
    let (d, _) = finish(h, app, &id).await;
    assert_eq!(d["phase"], "ACTIVE", "{d}");
    assert!(h.settled(app, Duration::from_secs(10)).await);
    d
}

/// The step at `path` (names) in a deployment's progress.
fn step<'a>(d: &'a Value, path: &[&str]) -> &'a Value {
    let mut steps = &d["progress"]["steps"];
    let mut found = &Value::Null;
    for name in path {
        found = steps
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == *name))
            .unwrap_or_else(|| panic!("no step {path:?} in {d}"));
        steps = &found["steps"];
    }
    found
}

async fn log_text(h: &DoSandbox, app: &str, id: &str, kind: &str) -> String {
    let r = api(h, "GET", &format!("{}/deployments/{id}/logs?type={kind}", app_path(h, app)), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mut text = String::new();
    for url in r.json()["historic_urls"].as_array().unwrap() {
        let got = call("GET", url.as_str().unwrap(), &[], None).await.unwrap();
        assert_eq!(got.status, 200);
        text.push_str(&got.text());
    }
    text
}

fn release(version: &str) -> ReleaseSpec {
    ReleaseSpec { version: version.into(), ..Default::default() }
}

#[tokio::test]
async fn a_new_image_goes_through_every_phase_and_switches_without_a_failed_request() {
    let mut opts = options(vec![AppOptions::image("shop")]);
    // Slow answers, so requests are in flight at the switch.
    opts.images.insert("web:v1".into(), ReleaseSpec { version: "v1".into(), latency_ms: 30, ..Default::default() });
    opts.images.insert("web:v2".into(), ReleaseSpec { version: "v2".into(), latency_ms: 30, ..Default::default() });
    // Long enough phases that polling sees each of them.
    opts.step_time = Duration::from_millis(200);
    let h = DoSandbox::start(opts).await.expect("starts");
    let first = h.active_deployment("shop").expect("the first deployment is active");
    assert_eq!(served(&h, "shop").await.text(), "v1");

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let url = format!("{}/version", h.app_url("shop"));
    // Three clients at once, so some request is always in flight.
    let traffic: Vec<_> = (0..3)
        .map(|_| {
            let (stop, seen, url) = (stop.clone(), seen.clone(), url.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    // Kept in the order the requests were sent: three clients finish
                    // out of order, and a slow v1 answer may land after a quick v2 one.
                    let sent = std::time::Instant::now();
                    let r = call("GET", &url, &[], None).await.expect("the router answers");
                    seen.lock().unwrap().push((sent, r.status, r.text()));
                }
            })
        })
        .collect();

    let id = put_spec(&h, "shop", spec_with_tag(&h, "shop", "v2")).await;
    let fresh = deployment(&h, "shop", &id).await;
    assert_eq!(
        (fresh["cause"].as_str(), fresh["cause_details"]["type"].as_str()),
        (Some("app spec updated"), Some("MANUAL"))
    );
    assert_eq!(fresh["progress"]["total_steps"], 6);
    let (d, phases) = finish(&h, "shop", &id).await;
    assert_eq!(phases, ["PENDING_BUILD", "BUILDING", "PENDING_DEPLOY", "DEPLOYING", "ACTIVE"]);
    let p = &d["progress"];
    assert_eq!(
        (p["success_steps"].as_u64(), p["total_steps"].as_u64(), p["error_steps"].as_u64()),
        (Some(6), Some(6), Some(0))
    );
    assert_eq!(step(&d, &["deploy", "components", "web", "wait"])["message_base"], "Waiting for service");
    assert!(h.settled("shop", Duration::from_secs(10)).await);
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop.store(true, Ordering::SeqCst);
    for t in traffic {
        t.await.unwrap();
    }

    let mut sent = seen.lock().unwrap().clone();
    sent.sort_by_key(|(at, _, _)| *at);
    let seen: Vec<(u16, String)> = sent.into_iter().map(|(_, status, version)| (status, version)).collect();
    let failed: Vec<_> = seen.iter().filter(|(status, _)| *status != 200).collect();
    assert!(failed.is_empty(), "{} of {} requests failed through the switch: {failed:?}", failed.len(), seen.len());
    let first_v2 = seen.iter().position(|(_, v)| v == "v2").expect("v2 was served");
    assert!(seen[..first_v2].iter().any(|(_, v)| v == "v1"), "v1 served until the switch");
    assert!(seen[first_v2..].iter().all(|(_, v)| v == "v2"), "no v1 after the switch");
    assert_eq!(served(&h, "shop").await.text(), "v2");
    let app = h.app("shop");
    assert_eq!(app["active_deployment"]["id"].as_str(), Some(id.as_str()));
    assert!(app.get("in_progress_deployment").is_none() && app.get("pinned_deployment").is_none(), "{app}");
    assert_eq!(deployment(&h, "shop", &first).await["phase"], "SUPERSEDED");
    let listed = api(&h, "GET", &format!("{}/deployments", app_path(&h, "shop")), None).await.json();
    assert_eq!(listed["deployments"][0]["id"].as_str(), Some(id.as_str()), "newest first");
    assert_eq!(listed["meta"]["total"], 2);
    h.stop().await;
}

#[tokio::test]
async fn a_failing_health_check_ends_in_error_and_the_old_version_keeps_serving() {
    let h = start(vec![AppOptions::image("shop")]).await;
    let before = h.active_deployment("shop");
    h.add_image("web:v2", ReleaseSpec { version: "v2".into(), health: HealthMode::Error500, ..Default::default() });
    let id = put_spec(&h, "shop", spec_with_tag(&h, "shop", "v2")).await;
    let (d, _) = finish(&h, "shop", &id).await;
    assert_eq!(d["phase"], "ERROR");
    let wait = step(&d, &["deploy", "components", "web", "wait"]);
    assert_eq!(
        (wait["status"].as_str(), wait["reason"]["code"].as_str()),
        (Some("ERROR"), Some("UnhealthyHealthCheck"))
    );
    let message = wait["reason"]["message"].as_str().unwrap();
    assert!(message.contains("web") && message.contains("500"), "{message}");
    assert!(d["progress"]["error_steps"].as_u64() >= Some(1));
    assert_eq!(h.active_deployment("shop"), before, "the old deployment stays active");
    assert_eq!(served(&h, "shop").await.text(), "v1");
    let deploy_log = log_text(&h, "shop", &id, "DEPLOY").await;
    assert!(deploy_log.contains("health check failed: GET /health answered 500"), "{deploy_log}");
    let health = api(&h, "GET", &format!("{}/health", app_path(&h, "shop")), None).await.json();
    assert_eq!(health["app_health"]["components"][0]["state"], "HEALTHY", "{health}");
    h.stop().await;
}

#[tokio::test]
async fn an_instance_that_crashes_on_start_fails_the_deployment_with_its_exit_code() {
    let h = start(vec![AppOptions::image("shop")]).await;
    h.add_image(
        "web:v3",
        ReleaseSpec { version: "v3".into(), crash_on_start: true, exit_code: 3, ..Default::default() },
    );
    let id = put_spec(&h, "shop", spec_with_tag(&h, "shop", "v3")).await;
    let (d, _) = finish(&h, "shop", &id).await;
    assert_eq!(d["phase"], "ERROR");
    let reason = &step(&d, &["deploy", "components", "web", "wait"])["reason"];
    assert_eq!(reason["code"], "ContainerExited", "{d}");
    assert!(reason["message"].as_str().unwrap().contains("exited with code 3"), "{reason}");
    assert_eq!(served(&h, "shop").await.text(), "v1");
    h.stop().await;
}

#[tokio::test]
async fn an_injected_build_failure_stops_at_the_build_and_its_logs_say_why() {
    let h = start(vec![AppOptions::image("shop")]).await;
    h.fail_next("shop", Failure::Build("go: module not found".into()));
    let r =
        api(&h, "POST", &format!("{}/deployments", app_path(&h, "shop")), Some(json!({ "force_build": true }))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.json()["deployment"]["id"].as_str().unwrap().to_string();
    assert_eq!(r.json()["deployment"]["cause"], "manual");
    let (d, phases) = finish(&h, "shop", &id).await;
    assert_eq!(phases.last().map(String::as_str), Some("ERROR"));
    assert!(!phases.iter().any(|p| p == "DEPLOYING"), "{phases:?}");
    let build = step(&d, &["build"]);
    assert_eq!((build["status"].as_str(), build["reason"]["code"].as_str()), (Some("ERROR"), Some("BuildJobFailed")));
    assert_eq!(build["reason"]["message"], "go: module not found");
    assert_eq!(step(&d, &["deploy"])["status"], "PENDING");
    let log = log_text(&h, "shop", &id, "BUILD").await;
    assert!(log.contains("web | build failed: go: module not found"), "{log}");
    let never = api(&h, "GET", &format!("{}/deployments/{id}/logs?type=DEPLOY", app_path(&h, "shop")), None).await;
    assert_eq!(never.status, 400);
    assert!(never.json()["message"].as_str().unwrap().contains("has no DEPLOY logs"));
    // Only the next deployment fails.
    let again = api(&h, "POST", &format!("{}/deployments", app_path(&h, "shop")), Some(json!({}))).await;
    let (d, _) = finish(&h, "shop", again.json()["deployment"]["id"].as_str().unwrap()).await;
    assert_eq!(d["phase"], "ACTIVE");
    h.stop().await;
}

#[tokio::test]
async fn a_newer_deployment_is_queued_then_supersedes_the_one_in_progress_and_cancel_cancels() {
    let h = start(vec![AppOptions::image("shop")]).await;
    h.add_image("web:v2", release("v2"));
    let first = put_spec(&h, "shop", spec_with_tag(&h, "shop", "v2")).await;
    until("the build runs", Duration::from_secs(5), async || {
        deployment(&h, "shop", &first).await["phase"] == "BUILDING"
    })
    .await;
    let second = h.supersede("shop").expect("a new deployment");
    // The queued window: the new one waits as pending_deployment, not started, while
    // the first goes on in progress.
    let app = h.app("shop");
    assert_eq!(app["pending_deployment"]["id"].as_str(), Some(second.as_str()), "{app}");
    assert_eq!(app["pending_deployment"]["phase"].as_str(), Some("PENDING_BUILD"), "{app}");
    assert_eq!(app["in_progress_deployment"]["id"].as_str(), Some(first.as_str()), "{app}");
    assert_eq!(deployment(&h, "shop", &first).await["phase"], "BUILDING", "not yet superseded");
    until("the queued one starts", Duration::from_secs(5), async || {
        deployment(&h, "shop", &first).await["phase"] == "SUPERSEDED"
    })
    .await;
    let app = h.app("shop");
    assert_eq!(app["in_progress_deployment"]["id"].as_str(), Some(second.as_str()), "{app}");
    assert!(app.get("pending_deployment").is_none(), "{app}");
    let (d, _) = finish(&h, "shop", &second).await;
    assert_eq!((d["phase"].as_str(), d["cause"].as_str()), (Some("ACTIVE"), Some("manual")));
    assert_eq!(deployment(&h, "shop", &first).await["phase"], "SUPERSEDED");
    assert!(h.settled("shop", Duration::from_secs(10)).await);
    assert_eq!(served(&h, "shop").await.text(), "v2");

    h.add_image("web:v3", release("v3"));
    let mut spec = spec_with_tag(&h, "shop", "v3");
    spec["services"][0]["health_check"]["initial_delay_seconds"] = json!(50);
    let slow = put_spec(&h, "shop", spec).await;
    until("it deploys", Duration::from_secs(5), async || deployment(&h, "shop", &slow).await["phase"] == "DEPLOYING")
        .await;
    let r = api(&h, "POST", &format!("{}/deployments/{slow}/cancel", app_path(&h, "shop")), None).await;
    assert_eq!((r.status, r.json()["deployment"]["phase"].as_str()), (200, Some("CANCELED")), "{}", r.text());
    assert!(h.app("shop").get("in_progress_deployment").is_none());
    assert_eq!(h.active_deployment("shop"), Some(second));
    assert_eq!(served(&h, "shop").await.text(), "v2");
    let again = api(&h, "POST", &format!("{}/deployments/{slow}/cancel", app_path(&h, "shop")), None).await;
    assert_eq!(again.status, 400, "a canceled deployment cannot be canceled again");
    h.stop().await;
}

#[tokio::test]
async fn rollbacks_validate_pin_commit_and_revert() {
    let h = start(vec![AppOptions::image("shop")]).await;
    h.add_image("web:v2", release("v2"));
    let v1 = h.active_deployment("shop").unwrap();
    let v2 = deploy_tag(&h, "shop", "v2").await["id"].as_str().unwrap().to_string();
    let base = app_path(&h, "shop");
    let validate = async |target: &str| {
        api(&h, "POST", &format!("{base}/rollback/validate"), Some(json!({ "deployment_id": target }))).await
    };

    let ok = validate(&v1).await;
    assert_eq!(ok.status, 200);
    let ok = ok.json();
    assert_eq!(
        (ok["valid"].as_bool(), ok["warnings"][0]["code"].as_str()),
        (Some(true), Some("image_source_missing_digest"))
    );
    assert_eq!(ok["warnings"][0]["components"], json!(["web"]));
    let current = validate(&v2).await.json();
    assert_eq!(
        (current["valid"].as_bool(), current["error"]["code"].as_str()),
        (Some(false), Some("incompatible_phase"))
    );
    assert_eq!(validate("00000000-0000-4000-8000-000000000000").await.status, 404);
    h.fail_next("shop", Failure::Deploy("quota exceeded".into()));
    let failed = put_spec(&h, "shop", spec_with_tag(&h, "shop", "v2")).await;
    let (d, _) = finish(&h, "shop", &failed).await;
    assert_eq!(step(&d, &["deploy", "components", "web", "wait"])["reason"]["code"], "DeployJobFailed");
    let bad = validate(&failed).await.json();
    assert_eq!(
        bad["error"],
        json!({ "code": "incompatible_result", "message": "deployment result \"failed\" is unsuitable for rollback" })
    );
    let refused = api(&h, "POST", &format!("{base}/rollback"), Some(json!({ "deployment_id": failed }))).await;
    assert_eq!((refused.status, refused.json()["id"].as_str()), (400, Some("bad_request")));

    // Pinned: no deploys until a commit or a revert.
    let r = api(&h, "POST", &format!("{base}/rollback"), Some(json!({ "deployment_id": v1, "skip_pin": false }))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let rb = r.json()["deployment"].clone();
    let rb_id = rb["id"].as_str().unwrap().to_string();
    assert_eq!((rb["cause"].as_str(), rb["cloned_from"].as_str()), (Some("rollback"), Some(v1.as_str())));
    assert_eq!(rb["cause_details"]["type"], "MANUAL_ROLLBACK");
    assert_eq!(h.pinned_deployment("shop"), Some(rb_id.clone()));
    assert_eq!(h.app("shop")["pinned_deployment"]["id"].as_str(), Some(rb_id.as_str()));
    let put = api(&h, "PUT", &base, Some(json!({ "spec": spec_with_tag(&h, "shop", "v2") }))).await;
    assert_eq!((put.status, put.json()["id"].as_str()), (409, Some("conflict")));
    assert!(put.json()["message"].as_str().unwrap().contains("pinned"));
    assert_eq!(api(&h, "POST", &format!("{base}/deployments"), Some(json!({}))).await.status, 409);
    assert_eq!(validate(&v2).await.json()["error"]["code"], "app_pinned");
    let (d, _) = finish(&h, "shop", &rb_id).await;
    assert_eq!(d["phase"], "ACTIVE");
    assert!(h.settled("shop", Duration::from_secs(10)).await);
    assert_eq!(served(&h, "shop").await.text(), "v1");
    assert_eq!(h.app("shop")["spec"]["services"][0]["image"]["tag"], "v1", "the app's spec is the rolled-back one");

    // Revert: the spec from before the rollback, unpinned.
    let r = api(&h, "POST", &format!("{base}/rollback/revert"), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let reverted = r.json()["deployment"]["id"].as_str().unwrap().to_string();
    assert_eq!(h.pinned_deployment("shop"), None);
    let (d, _) = finish(&h, "shop", &reverted).await;
    assert_eq!(d["phase"], "ACTIVE");
    assert!(h.settled("shop", Duration::from_secs(10)).await);
    assert_eq!(served(&h, "shop").await.text(), "v2");

    // Commit: keeps the rollback, unpinned.
    let r = api(&h, "POST", &format!("{base}/rollback"), Some(json!({ "deployment_id": v1 }))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(h.pinned_deployment("shop").is_some());
    let commit = api(&h, "POST", &format!("{base}/rollback/commit"), None).await;
    assert_eq!((commit.status, commit.body.len()), (200, 0));
    assert_eq!(h.pinned_deployment("shop"), None);
    assert!(h.app("shop").get("pinned_deployment").is_none());
    assert_eq!(api(&h, "POST", &format!("{base}/rollback/commit"), None).await.status, 409);
    assert_eq!(api(&h, "POST", &format!("{base}/rollback/revert"), None).await.status, 409);
    assert!(h.settled("shop", Duration::from_secs(10)).await);
    assert_eq!(served(&h, "shop").await.text(), "v1");
    h.stop().await;
}

#[tokio::test]
async fn a_rollback_with_skip_pin_leaves_the_app_unpinned_and_serves_the_old_version() {
    let h = start(vec![AppOptions::image("shop")]).await;
    h.add_image("web@sha256:2222", release("v2"));
    h.add_image("web:v3", release("v3"));
    let mut spec = h.app("shop")["spec"].clone();
    spec["services"][0]["image"] = json!({ "registry_type": "DOCR", "repository": "web", "digest": "sha256:2222" });
    let v2 = put_spec(&h, "shop", spec).await;
    assert_eq!(finish(&h, "shop", &v2).await.0["phase"], "ACTIVE");
    deploy_tag(&h, "shop", "v3").await;
    assert_eq!(served(&h, "shop").await.text(), "v3");
    let base = app_path(&h, "shop");
    let check = api(&h, "POST", &format!("{base}/rollback/validate"), Some(json!({ "deployment_id": v2 }))).await;
    assert_eq!(check.json(), json!({ "valid": true }), "a digest needs no warning");
    let r = api(&h, "POST", &format!("{base}/rollback"), Some(json!({ "deployment_id": v2, "skip_pin": true }))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.json()["deployment"]["id"].as_str().unwrap().to_string();
    assert_eq!(h.pinned_deployment("shop"), None);
    assert!(h.app("shop").get("pinned_deployment").is_none());
    assert_eq!(finish(&h, "shop", &id).await.0["phase"], "ACTIVE");
    assert!(h.settled("shop", Duration::from_secs(10)).await);
    assert_eq!(served(&h, "shop").await.text(), "v2");
    // Not pinned: a deploy goes ahead.
    let next = api(&h, "POST", &format!("{base}/deployments"), Some(json!({ "force_build": false }))).await;
    assert_eq!(next.status, 200, "{}", next.text());
    h.stop().await;
}

#[tokio::test]
async fn lists_page_with_links_and_a_total() {
    let h = start(vec![AppOptions::image("shop"), AppOptions::image("blog")]).await;
    let first = api(&h, "GET", "/v2/apps?per_page=1", None).await.json();
    assert_eq!(first["meta"]["total"], 2);
    assert_eq!(first["apps"].as_array().unwrap().len(), 1);
    let next = first["links"]["pages"]["next"].as_str().expect("a next link");
    assert!(next.starts_with(&h.api_url()) && next.contains("page=2") && next.contains("per_page=1"), "{next}");
    let path = next.strip_prefix(&h.api_url()).unwrap();
    let second = api(&h, "GET", path, None).await.json();
    assert_eq!(second["apps"].as_array().unwrap().len(), 1);
    assert_ne!(second["apps"][0]["id"], first["apps"][0]["id"]);
    let pages = second["links"]["pages"].as_object().unwrap();
    assert!(pages.contains_key("prev") && pages.contains_key("first") && !pages.contains_key("next"), "{pages:?}");
    let all = api(&h, "GET", "/v2/apps", None).await.json();
    assert_eq!(all["links"], json!({ "pages": {} }), "one page: no links");
    let app = &all["apps"][0];
    assert_eq!((app["spec"]["region"].as_str(), app["region"]["slug"].as_str()), (Some("nyc"), Some("nyc")));
    let live = app["live_url"].as_str().unwrap();
    assert!(live == h.app_url("shop") || live == h.app_url("blog"), "{live}");
    let missing = api(&h, "GET", "/v2/apps/00000000-0000-4000-8000-000000000000", None).await;
    assert_eq!((missing.status, missing.json()["id"].as_str()), (404, Some("not_found")));
    let bad = api(&h, "PUT", &app_path(&h, "shop"), Some(json!({ "update_all_source_versions": true }))).await;
    assert!(bad.status == 400 && bad.json()["message"].as_str().unwrap().contains("spec"), "{}", bad.text());
    let mut renamed = h.app("shop")["spec"].clone();
    renamed["name"] = json!("other");
    let bad = api(&h, "PUT", &app_path(&h, "shop"), Some(json!({ "spec": renamed }))).await;
    assert!(bad.status == 400 && bad.json()["message"].as_str().unwrap().contains("spec.name"), "{}", bad.text());
    let mut both = h.app("shop")["spec"].clone();
    both["services"][0]["image"]["digest"] = json!("sha256:1");
    let bad = api(&h, "PUT", &app_path(&h, "shop"), Some(json!({ "spec": both }))).await;
    assert!(bad.status == 400 && bad.json()["message"].as_str().unwrap().contains("digest"), "{}", bad.text());
    assert_eq!(h.deployments("shop").len(), 1, "refused updates start nothing");
    h.stop().await;
}

#[tokio::test]
async fn the_api_wants_the_token_and_counts_requests_against_the_bucket() {
    let mut opts = options(vec![AppOptions::image("shop")]);
    opts.rate_limit = 3;
    let h = DoSandbox::start(opts).await.expect("starts");
    let url = format!("{}/v2/apps", h.api_url());
    let none = call("GET", &url, &[], None).await.unwrap();
    assert_eq!(none.status, 401);
    assert_eq!(none.json()["id"], "unauthorized");
    assert_eq!(none.json()["message"], "Unable to authenticate you");
    let wrong = call("GET", &url, &[("authorization", "Bearer nope")], None).await.unwrap();
    assert_eq!(wrong.status, 401);
    assert!(wrong.header("ratelimit-remaining").is_some(), "errors carry the headers too");
    let ok = api(&h, "GET", "/v2/apps", None).await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header("ratelimit-limit"), Some("5000"), "the hourly budget, as DigitalOcean reports it");
    let limited = api(&h, "GET", "/v2/apps", None).await;
    assert_eq!(limited.status, 429, "the burst bucket of 3 a minute is empty");
    assert_eq!(limited.json()["id"], "too_many_requests");
    let retry: u64 = limited.header("retry-after").expect("retry-after").parse().unwrap();
    assert!(retry >= 1, "{retry}");
    h.stop().await;

    // The hourly budget: spent, a 429 without retry-after; ratelimit-reset says when the
    // oldest request stops counting, and then a request is taken again.
    let mut opts = options(vec![AppOptions::image("shop")]);
    (opts.hourly_limit, opts.hour) = (2, Duration::from_secs(3));
    let h = DoSandbox::start(opts).await.expect("starts");
    for _ in 0..2 {
        assert_eq!(api(&h, "GET", "/v2/apps", None).await.status, 200);
    }
    let spent = api(&h, "GET", "/v2/apps", None).await;
    assert_eq!(spent.status, 429);
    assert!(spent.header("retry-after").is_none(), "the hourly limit gives no retry-after");
    assert_eq!(spent.header("ratelimit-remaining"), Some("0"));
    let reset: u64 = spent.header("ratelimit-reset").unwrap().parse().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!(reset > now && reset <= now + 4, "{reset} vs {now}");
    assert_eq!(h.tokens_left(), 0);
    until("the oldest request stops counting", Duration::from_secs(6), async || {
        api(&h, "GET", "/v2/apps", None).await.status == 200
    })
    .await;
    h.stop().await;
}

#[tokio::test]
async fn logs_hand_out_historic_urls_that_need_no_token() {
    let h = start(vec![AppOptions::image("shop")]).await;
    h.add_image("web:v2", release("v2"));
    let d = deploy_tag(&h, "shop", "v2").await;
    let id = d["id"].as_str().unwrap();
    let base = app_path(&h, "shop");
    let untyped = api(&h, "GET", &format!("{base}/deployments/{id}/logs"), None).await;
    assert_eq!((untyped.status, untyped.json()["id"].as_str()), (400, Some("bad_request")));
    let r = api(&h, "GET", &format!("{base}/deployments/{id}/logs?type=BUILD"), None).await;
    let urls = r.json()["historic_urls"].clone();
    let url = urls[0].as_str().unwrap();
    assert!(url.starts_with(&h.api_url()) && !url.contains("/v2/"), "{url}");
    let build = call("GET", url, &[], None).await.unwrap().text();
    assert!(build.contains("web | resolving image web:v2") && build.contains("web | build complete"), "{build}");
    let deploy = log_text(&h, "shop", id, "DEPLOY").await;
    assert!(deploy.contains("health check passed") && deploy.contains("switched traffic"), "{deploy}");
    let run = log_text(&h, "shop", id, "RUN").await;
    assert!(run.contains("listening on port"), "{run}");
    assert!(h.calls().iter().all(|c| !c.path.starts_with("/__sandbox")), "log downloads are not API calls");
    h.stop().await;
}

#[tokio::test]
async fn a_git_component_builds_what_its_branch_has_at_each_deployment() {
    let mut app = AppOptions::image("repo");
    app.services = vec![ServiceOptions {
        name: "api".into(),
        instances: 1,
        image: Value::Null,
        source: Some(json!({ "github": { "repo": "acme/web", "branch": "main", "deploy_on_push": false } })),
        health_check: Some(json!({ "http_path": "/health", "period_seconds": 1, "failure_threshold": 3 })),
    }];
    let mut opts = options(vec![app]);
    opts.images.insert("acme/web#main".into(), release("g1"));
    let h = DoSandbox::start(opts).await.expect("starts");
    assert_eq!(served(&h, "repo").await.text(), "g1");
    h.add_image("acme/web#main", release("g2"));
    let r = api(&h, "POST", &format!("{}/deployments", app_path(&h, "repo")), Some(json!({}))).await;
    let id = r.json()["deployment"]["id"].as_str().unwrap().to_string();
    let (d, _) = finish(&h, "repo", &id).await;
    assert_eq!(d["phase"], "ACTIVE");
    assert_eq!(d["services"][0]["source_commit_hash"].as_str().map(str::len), Some(40));
    assert!(h.settled("repo", Duration::from_secs(10)).await);
    assert_eq!(served(&h, "repo").await.text(), "g2");
    // Kit faults and the call log work as for every emulator.
    h.reset_calls();
    h.set_faults(Faults { error_burst: 1, ..Default::default() });
    let blip = api(&h, "GET", &app_path(&h, "repo"), None).await;
    assert_eq!((blip.status, blip.json()["id"].as_str()), (503, Some("service_unavailable")));
    assert_eq!(api(&h, "GET", &app_path(&h, "repo"), None).await.status, 200);
    let calls = h.calls();
    assert_eq!(calls.iter().map(|c| c.status).collect::<Vec<_>>(), [503, 200]);
    assert_eq!(calls[0].target.as_deref(), Some(h.app_id("repo").as_str()));
    h.stop().await;
}

/// With `SANDBOX_PRISM` (a Prism binary) and `SANDBOX_DO_SPEC` (DigitalOcean's bundled
/// OpenAPI description) set, drives the API through `prism proxy --errors` as CI
/// does: any answer that breaks the description comes back as Prism's 500, any
/// request it refuses as 422 or 415. Skipped without them.
#[tokio::test]
async fn every_answer_validates_through_prism_when_it_is_there() {
    let (Ok(prism), Ok(spec)) = (std::env::var("SANDBOX_PRISM"), std::env::var("SANDBOX_DO_SPEC")) else {
        eprintln!("SANDBOX_PRISM and SANDBOX_DO_SPEC unset: the Prism check is skipped");
        return;
    };
    let mut git = AppOptions::image("repo");
    git.services[0].source = Some(json!({ "github": { "repo": "acme/web", "branch": "main" } }));
    git.services[0].health_check = None;
    let h = start(vec![AppOptions::image("shop"), git]).await;
    h.add_image("web:v2", release("v2"));
    h.add_image("web:v3", ReleaseSpec { version: "v3".into(), health: HealthMode::Error500, ..Default::default() });
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut proxy = tokio::process::Command::new(prism)
        .args(["proxy", &spec, &h.api_url(), "--errors", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("prism runs");
    let base = format!("http://127.0.0.1:{port}");
    until("prism listens", Duration::from_secs(60), async || call("GET", &base, &[], None).await.is_ok()).await;
    let mut problems = Vec::new();
    let mut go = async |method: &str, path: &str, body: Option<Value>| -> Value {
        let auth = format!("Bearer {TOKEN}");
        let r = call(method, &format!("{base}{path}"), &[("authorization", &auth)], body.as_ref()).await.unwrap();
        if matches!(r.status, 415 | 422 | 500) || r.header("sl-violations").is_some() {
            problems.push(format!("{method} {path}: {} {}", r.status, r.text()));
        }
        r.json()
    };
    let (shop, repo) = (app_path(&h, "shop"), app_path(&h, "repo"));
    go("GET", "/v2/apps?per_page=1", None).await;
    go("GET", "/v2/apps?page=2&per_page=1", None).await;
    let v1 = h.active_deployment("shop").unwrap();
    let put =
        go("PUT", &shop, Some(json!({ "spec": spec_with_tag(&h, "shop", "v2"), "update_all_source_versions": true })))
            .await;
    let v2 = put["app"]["pending_deployment"]["id"].as_str().unwrap_or_default().to_string();
    for _ in 0..8 {
        go("GET", &format!("{shop}/deployments/{v2}"), None).await;
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    assert!(h.settled("shop", Duration::from_secs(10)).await);
    go("GET", &shop, None).await;
    go("GET", &format!("{shop}/deployments?per_page=1"), None).await;
    go("GET", &format!("{shop}/health"), None).await;
    for kind in ["BUILD", "DEPLOY", "RUN"] {
        go("GET", &format!("{shop}/deployments/{v2}/logs?type={kind}"), None).await;
    }
    for target in [&v1, &v2, &"00000000-0000-4000-8000-000000000000".to_string()] {
        go("POST", &format!("{shop}/rollback/validate"), Some(json!({ "deployment_id": target }))).await;
    }
    go("POST", &format!("{shop}/rollback"), Some(json!({ "deployment_id": v1, "skip_pin": false }))).await;
    go("GET", &shop, None).await;
    go("PUT", &shop, Some(json!({ "spec": spec_with_tag(&h, "shop", "v2") }))).await;
    go("POST", &format!("{shop}/deployments"), Some(json!({ "force_build": false }))).await;
    go("POST", &format!("{shop}/rollback/commit"), None).await;
    go("POST", &format!("{shop}/rollback/commit"), None).await;
    go("POST", &format!("{shop}/rollback"), Some(json!({ "deployment_id": v2 }))).await;
    go("POST", &format!("{shop}/rollback/revert"), None).await;
    assert!(h.settled("shop", Duration::from_secs(10)).await);
    let bad = go("PUT", &shop, Some(json!({ "spec": spec_with_tag(&h, "shop", "v3") }))).await;
    let v3 = bad["app"]["pending_deployment"]["id"].as_str().unwrap_or_default().to_string();
    let (d, _) = finish(&h, "shop", &v3).await;
    go("GET", &format!("{shop}/deployments/{}", d["id"].as_str().unwrap()), None).await;
    go("POST", &format!("{shop}/rollback/validate"), Some(json!({ "deployment_id": v3 }))).await;
    h.fail_next("shop", Failure::Build("nope".into()));
    let failed = go("POST", &format!("{shop}/deployments"), Some(json!({}))).await;
    let failed = failed["deployment"]["id"].as_str().unwrap_or_default().to_string();
    finish(&h, "shop", &failed).await;
    go("GET", &format!("{shop}/deployments/{failed}"), None).await;
    go("GET", &format!("{shop}/deployments/{failed}/logs?type=DEPLOY"), None).await;
    let cancel = go("POST", &format!("{shop}/deployments"), Some(json!({}))).await;
    let cancel = cancel["deployment"]["id"].as_str().unwrap_or_default().to_string();
    go("POST", &format!("{shop}/deployments/{cancel}/cancel"), None).await;
    go("POST", &format!("{shop}/deployments/{cancel}/cancel"), None).await;
    go("GET", "/v2/apps/00000000-0000-4000-8000-000000000000", None).await;
    go("POST", &format!("{repo}/deployments"), Some(json!({}))).await;
    assert!(h.settled("repo", Duration::from_secs(10)).await);
    go("GET", &format!("{repo}/deployments"), None).await;
    let _ = proxy.kill().await;
    assert!(problems.is_empty(), "Prism refused:\n{}", problems.join("\n"));
    h.stop().await;
}
