//! The Droplets and Load Balancers emulator end to end: listing droplets by tag and
//! page, the LB by ids and by tag, droplet changes that move real traffic, the 422
//! on a tag LB, tokens, and answers checked against DigitalOcean's description.

use sandbox::Handle;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sandbox::client::{call, Reply};
use sandbox::droplets::{Check, DropletSpec, DropletsOptions, DropletsSandbox, LbSpec, LbTarget, Protocol};
use sandbox::kit::balancer::MEMBER_HEADER;
use sandbox::server::{self, text, Request, Server};
use serde_json::{json, Value};

const TOKEN: &str = "dop_v1_sandbox";

/// An app on a droplet: `/health` answers the status in the shared cell, the rest 200.
struct Host {
    _server: Server,
    health: Arc<AtomicU16>,
}

/// Hosts on 127.0.0.2, 127.0.0.3... all on one port, as droplets run one app each.
async fn hosts(n: u8) -> (u16, Vec<Host>) {
    'again: loop {
        let (mut port, mut out) = (0, Vec::new());
        for i in 0..n {
            let health = Arc::new(AtomicU16::new(200));
            let cell = health.clone();
            let addr = SocketAddr::from((Ipv4Addr::new(127, 0, 0, 2 + i), port));
            let served = server::serve(addr, move |r: Request| {
                let status = if r.path == "/health" { cell.load(Ordering::SeqCst) } else { 200 };
                async move { text(status, "ok\n") }
            })
            .await;
            // Another test may hold the port on that address: start over on a new one.
            let Ok(s) = served else { continue 'again };
            port = s.addr.port();
            out.push(Host { _server: s, health });
        }
        return (port, out);
    }
}

fn check(port: u16, interval: Duration) -> Check {
    Check {
        protocol: Protocol::Http,
        path: "/health".into(),
        port,
        interval,
        timeout: Duration::from_millis(200),
        healthy: 2,
        unhealthy: 2,
        matcher: None,
    }
}

/// web-1 and web-2 tagged `web`, db-1 tagged `db`, at 127.0.0.2..4.
async fn start(by: LbTarget, interval: Duration) -> (DropletsSandbox, Vec<Host>) {
    let (port, hosts) = hosts(3).await;
    let droplet = |name: &str, i: u8, tag: &str| DropletSpec {
        name: name.into(),
        ip: Ipv4Addr::new(127, 0, 0, 2 + i),
        tags: vec![tag.into(), "env:test".into()],
    };
    let opts = DropletsOptions {
        token: TOKEN.into(),
        droplets: vec![droplet("web-1", 0, "web"), droplet("web-2", 1, "web"), droplet("db-1", 2, "db")],
        balancer: LbSpec { name: "web-lb".into(), by, check: check(port, interval), target_port: port, entry_port: 80 },
        ..Default::default()
    };
    (DropletsSandbox::start(opts).await.expect("starts"), hosts)
}

async fn api(h: &DropletsSandbox, method: &str, path: &str, body: Option<Value>) -> Reply {
    let auth = format!("Bearer {TOKEN}");
    call(method, &format!("{}{path}", h.api_url()), &[("authorization", &auth)], body.as_ref()).await.expect("answers")
}

/// Who answers `n` requests through the LB, by droplet id.
async fn answered_by(h: &DropletsSandbox, n: usize) -> Vec<u64> {
    let mut who = Vec::new();
    for _ in 0..n {
        let r = call("GET", &format!("{}/", h.app_url()), &[], None).await.expect("the LB answers");
        assert_eq!(r.status, 200, "{}", r.text());
        who.push(r.header(MEMBER_HEADER).and_then(|m| m.parse().ok()).expect("a member answered"));
    }
    who.sort_unstable();
    who.dedup();
    who
}

const FAST: Duration = Duration::from_millis(100);

#[tokio::test]
async fn droplets_list_by_tag_in_pages_and_one_by_id() {
    let (h, _hosts) = start(LbTarget::ById, FAST).await;
    let ids = h.droplet_ids();
    let all = api(&h, "GET", "/v2/droplets", None).await;
    assert_eq!(all.json()["meta"]["total"], 3);
    assert_eq!(all.json()["links"], json!({ "pages": {} }), "everything on one page");

    let first = api(&h, "GET", "/v2/droplets?tag_name=web&per_page=1", None).await.json();
    assert_eq!(first["meta"]["total"], 2);
    assert_eq!(first["droplets"][0]["name"], "web-1");
    let next = first["links"]["pages"]["next"].as_str().expect("a next page");
    assert!(next.contains("tag_name=web") && next.contains("page=2"), "{next}");
    let path = next.strip_prefix(&h.api_url()).expect("on the API");
    let second = api(&h, "GET", path, None).await.json();
    assert_eq!(second["droplets"][0]["name"], "web-2");
    assert!(second["links"]["pages"].get("next").is_none() && second["links"]["pages"]["prev"].is_string());

    let one = api(&h, "GET", &format!("/v2/droplets/{}", ids[2]), None).await;
    let d = &one.json()["droplet"];
    assert_eq!(
        (d["id"].as_u64(), d["name"].as_str(), d["status"].as_str()),
        (Some(ids[2]), Some("db-1"), Some("active"))
    );
    assert_eq!(d["tags"], json!(["db", "env:test"]));
    let v4 = d["networks"]["v4"].as_array().expect("v4");
    assert_eq!(
        v4.iter().map(|n| (n["ip_address"].as_str(), n["type"].as_str())).collect::<Vec<_>>(),
        [(Some("127.0.0.4"), Some("public")), (Some("127.0.0.4"), Some("private"))]
    );
    let missing = api(&h, "GET", "/v2/droplets/1", None).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["id"], "not_found");
    assert_eq!(missing.json()["message"], "The resource you were accessing could not be found.");
    let calls = h.calls();
    assert_eq!(calls.last().map(|c| c.target.clone()), Some(Some("1".to_string())));
}

#[tokio::test]
async fn an_lb_by_ids_moves_traffic_as_droplets_are_removed_and_added() {
    let (h, _hosts) = start(LbTarget::ById, FAST).await;
    let ids = h.droplet_ids();
    let lb_path = format!("/v2/load_balancers/{}", h.lb_id());
    let lb = api(&h, "GET", &lb_path, None).await.json()["load_balancer"].clone();
    assert_eq!(lb["droplet_ids"], json!(ids));
    assert!(lb.get("tag").is_none(), "droplet_ids or tag, never both");
    assert_eq!(lb["health_check"]["check_interval_seconds"], json!(0.1), "sub-second checks as seconds");
    assert_eq!(lb["forwarding_rules"][0]["entry_port"], 80);
    assert_eq!(answered_by(&h, 6).await, ids, "round-robin over all three");

    let removed = api(&h, "DELETE", &format!("{lb_path}/droplets"), Some(json!({ "droplet_ids": [ids[0]] }))).await;
    assert_eq!((removed.status, removed.text()), (204, String::new()));
    assert_eq!(h.lb_members(), [ids[1], ids[2]]);
    assert_eq!(answered_by(&h, 6).await, [ids[1], ids[2]], "a removed droplet gets nothing from that moment");

    let added = api(&h, "POST", &format!("{lb_path}/droplets"), Some(json!({ "droplet_ids": [ids[0]] }))).await;
    assert_eq!(added.status, 204);
    assert_eq!(h.healthy(), [ids[1], ids[2]], "an added droplet starts unhealthy");
    let id = |i: usize| ids[i].to_string();
    assert!(h.balancer().wait_healthy(&[&id(0), &id(1), &id(2)], Duration::from_secs(3)).await);
    assert_eq!(answered_by(&h, 6).await, ids);
    let got = api(&h, "GET", &lb_path, None).await.json();
    assert_eq!(got["load_balancer"]["droplet_ids"], json!([ids[1], ids[2], ids[0]]));

    let unknown = api(&h, "POST", &format!("{lb_path}/droplets"), Some(json!({ "droplet_ids": [42] }))).await;
    assert_eq!((unknown.status, unknown.json()["id"].as_str()), (422, Some("unprocessable_entity")));
    let wrong_lb = api(&h, "GET", "/v2/load_balancers/4de7ac8b-495b-4884-9a69-1050c6793cd6", None).await;
    assert_eq!(wrong_lb.status, 404);
    assert_eq!(h.balancer().failed(), 0);
}

#[tokio::test]
async fn an_lb_by_tag_balances_the_tagged_droplets_and_refuses_changes_by_id() {
    let (h, hosts) = start(LbTarget::ByTag("web".into()), FAST).await;
    let ids = h.droplet_ids();
    let lbs = api(&h, "GET", "/v2/load_balancers", None).await.json();
    assert_eq!(lbs["meta"]["total"], 1);
    let lb = &lbs["load_balancers"][0];
    assert_eq!((lb["id"].as_str(), lb["tag"].as_str()), (Some(h.lb_id().as_str()), Some("web")));
    assert!(lb.get("droplet_ids").is_none(), "droplet_ids or tag, never both");
    assert_eq!(h.lb_members(), [ids[0], ids[1]]);
    assert_eq!(answered_by(&h, 4).await, [ids[0], ids[1]]);

    let path = format!("/v2/load_balancers/{}/droplets", h.lb_id());
    for method in ["POST", "DELETE"] {
        let r = api(&h, method, &path, Some(json!({ "droplet_ids": [ids[2]] }))).await;
        assert_eq!((r.status, r.json()["id"].as_str()), (422, Some("unprocessable_entity")), "{method}");
    }
    assert_eq!(h.lb_members(), [ids[0], ids[1]]);

    // A failing health check takes web-1 out after the unhealthy threshold.
    hosts[0].health.store(500, Ordering::SeqCst);
    assert!(h.balancer().wait_healthy(&[&ids[1].to_string()], Duration::from_secs(3)).await);
    assert_eq!(answered_by(&h, 4).await, [ids[1]]);
}

#[tokio::test]
async fn a_wrong_or_missing_token_gets_do_s_401_with_rate_limit_headers() {
    let (h, _hosts) = start(LbTarget::ById, FAST).await;
    let url = format!("{}/v2/droplets", h.api_url());
    for auth in [vec![], vec![("authorization", "Bearer wrong")], vec![("authorization", TOKEN)]] {
        let r = call("GET", &url, &auth, None).await.expect("answers");
        assert_eq!(r.status, 401, "{auth:?}");
        assert_eq!(r.json()["id"], "unauthorized");
        assert_eq!(r.json()["message"], "Unable to authenticate you");
        assert_eq!(r.header("ratelimit-limit"), Some("250"));
    }
    let ok = api(&h, "GET", "/v2/droplets", None).await;
    assert_eq!(ok.status, 200);
    let remaining: u64 = ok.header("ratelimit-remaining").and_then(|v| v.parse().ok()).expect("a count");
    assert!(remaining < 250 && ok.header("ratelimit-reset").is_some());
    h.set_faults(sandbox::droplets::Faults { error_burst: 1, ..Default::default() });
    assert_eq!(api(&h, "GET", "/v2/droplets", None).await.json()["id"], "service_unavailable");
    assert_eq!(h.calls().iter().map(|c| c.status).collect::<Vec<_>>(), [401, 401, 401, 200, 503]);
}

// ----- the description -----

/// DigitalOcean's bundled description: `SANDBOX_DO_SPEC`, else the shared copy.
fn description() -> Option<Value> {
    let path = std::env::var("SANDBOX_DO_SPEC")
        .unwrap_or_else(|_| "/work/shared/providers/specs/digitalocean/do-apps-droplets-lb.bundled.yaml".to_string());
    let text = std::fs::read_to_string(path).ok()?;
    Some(serde_yaml_ng::from_str(&text).expect("the description is YAML"))
}

/// OpenAPI 3.0's `nullable: true` in JSON Schema's words, everywhere in `schema`.
fn nullable(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            map.values_mut().for_each(nullable);
            if map.remove("nullable") == Some(Value::Bool(true)) {
                let inner = Value::Object(std::mem::take(map));
                map.insert("anyOf".into(), json!([{ "type": "null" }, inner]));
            }
        }
        Value::Array(items) => items.iter_mut().for_each(nullable),
        _ => {}
    }
}

/// What breaks the 200 answer's schema of `operation` in `paths[path]`.
fn violations(spec: &Value, path: &str, operation: &str, body: &Value) -> Vec<String> {
    let mut components = spec["components"].clone();
    nullable(&mut components);
    let response = &spec["paths"][path][operation]["responses"]["200"]["$ref"];
    let name = response.as_str().and_then(|r| r.rsplit('/').next()).expect("a response ref");
    let schema = components["responses"][name]["content"]["application/json"]["schema"].clone();
    let root = json!({ "components": components, "allOf": [schema] });
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft4)
        .should_validate_formats(true)
        .build(&root)
        .expect("the schema compiles");
    validator.iter_errors(body).map(|e| format!("{}: {e}", e.instance_path())).collect()
}

#[tokio::test]
async fn droplet_and_lb_answers_validate_against_the_description() {
    let Some(spec) = description() else {
        eprintln!("no DigitalOcean description (SANDBOX_DO_SPEC): the schema check is skipped");
        return;
    };
    // Whole seconds, as the description wants integers there.
    for by in [LbTarget::ById, LbTarget::ByTag("web".into())] {
        let (h, _hosts) = start(by, Duration::from_secs(1)).await;
        // The API shows the balancer's check as it is now.
        h.balancer().set_check(Check { timeout: Duration::from_secs(1), ..h.balancer().check() });
        let lb = format!("/v2/load_balancers/{}", h.lb_id());
        let droplet = format!("/v2/droplets/{}", h.droplet_ids()[0]);
        let cases = [
            ("/v2/droplets", "/v2/droplets?tag_name=web&per_page=1"),
            ("/v2/droplets/{droplet_id}", droplet.as_str()),
            ("/v2/load_balancers", "/v2/load_balancers"),
            ("/v2/load_balancers/{lb_id}", lb.as_str()),
        ];
        for (template, path) in cases {
            let body = api(&h, "GET", path, None).await.json();
            let problems = violations(&spec, template, "get", &body);
            assert!(problems.is_empty(), "GET {path}: {problems:#?}\n{body:#}");
        }
        // The check bites: a droplet without its required status does not pass.
        let mut broken = api(&h, "GET", &droplet, None).await.json();
        broken["droplet"].as_object_mut().expect("an object").remove("status");
        assert!(!violations(&spec, "/v2/droplets/{droplet_id}", "get", &broken).is_empty());
    }
}

/// With `SANDBOX_PRISM` (a Prism binary) and `SANDBOX_DO_SPEC` set, drives the API
/// through `prism proxy --errors` as CI does: an answer that breaks the description
/// comes back as Prism's 500, a request it refuses as 422 or 415. Skipped without them.
#[tokio::test]
async fn every_answer_validates_through_prism_when_it_is_there() {
    let (Ok(prism), Ok(spec)) = (std::env::var("SANDBOX_PRISM"), std::env::var("SANDBOX_DO_SPEC")) else {
        eprintln!("SANDBOX_PRISM and SANDBOX_DO_SPEC unset: the Prism check is skipped");
        return;
    };
    let (h, _hosts) = start(LbTarget::ById, Duration::from_secs(1)).await;
    h.balancer().set_check(Check { timeout: Duration::from_secs(1), ..h.balancer().check() });
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("binds").local_addr().expect("addr").port();
    let _proxy = tokio::process::Command::new(prism)
        .args(["proxy", &spec, &h.api_url(), "--errors", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("prism runs");
    let base = format!("http://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while call("GET", &base, &[], None).await.is_err() {
        assert!(std::time::Instant::now() < deadline, "prism did not listen within 60s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (lb, ids) = (format!("/v2/load_balancers/{}", h.lb_id()), h.droplet_ids());
    let change = json!({ "droplet_ids": [ids[0]] });
    let requests = [
        ("GET", "/v2/droplets?tag_name=web&per_page=1".to_string(), None),
        ("GET", "/v2/droplets?page=2&per_page=2".to_string(), None),
        ("GET", format!("/v2/droplets/{}", ids[1]), None),
        ("GET", "/v2/load_balancers".to_string(), None),
        ("GET", lb.clone(), None),
        ("DELETE", format!("{lb}/droplets"), Some(change.clone())),
        ("POST", format!("{lb}/droplets"), Some(change)),
        ("GET", "/v2/droplets/1".to_string(), None),
    ];
    let auth = format!("Bearer {TOKEN}");
    let mut problems = Vec::new();
    for (method, path, body) in requests {
        let r =
            call(method, &format!("{base}{path}"), &[("authorization", &auth)], body.as_ref()).await.expect("answers");
        if matches!(r.status, 415 | 422 | 500) || r.header("sl-violations").is_some() {
            problems.push(format!("{method} {path}: {} {}", r.status, r.text()));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}
