//! The Heroku emulator end to end: a source deploy through sources, builds and the
//! release phase, dynos replaced with and without preboot, crashes, rollbacks and
//! container releases, driven over HTTP as a Platform API client would.

use sandbox::Handle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use sandbox::client::{call, send, Reply};
use sandbox::heroku::{slug, AppOptions, HerokuOptions, HerokuSandbox, ACCEPT, DOCKER_RELEASES};
use serde_json::{json, Value};

fn options(apps: Vec<AppOptions>) -> HerokuOptions {
    HerokuOptions {
        apps,
        token: Some("hrku-test".into()),
        app_command: vec![env!("CARGO_BIN_EXE_sandbox-app").into()],
        ..Default::default()
    }
}

async fn start(apps: Vec<AppOptions>) -> HerokuSandbox {
    HerokuSandbox::start(options(apps)).await.expect("the Heroku sandbox starts")
}

async fn api(h: &HerokuSandbox, method: &str, path: &str, body: Option<Value>) -> Reply {
    api_as(h, ACCEPT, method, path, body).await
}

async fn api_as(h: &HerokuSandbox, accept: &str, method: &str, path: &str, body: Option<Value>) -> Reply {
    let headers = [("accept", accept), ("authorization", "Bearer hrku-test")];
    call(method, &format!("{}{path}", h.api_url()), &headers, body.as_ref()).await.expect("the API answers")
}

async fn put(url: &str, bytes: Vec<u8>) -> Reply {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let request = hyper::Request::builder()
        .method("PUT")
        .uri(path)
        .header("host", host)
        .body(Full::new(Bytes::from(bytes)))
        .unwrap();
    send(host.parse().unwrap(), request, Duration::from_secs(10)).await.expect("the upload answers")
}

/// Uploads `files` as a source tarball and starts a build of it.
async fn build(h: &HerokuSandbox, app: &str, files: &[(&str, &str)]) -> Value {
    let source = api(h, "POST", "/sources", None).await;
    assert_eq!(source.status, 201, "{}", source.text());
    let blob = source.json()["source_blob"].clone();
    assert_eq!(put(blob["put_url"].as_str().unwrap(), slug::tarball(files)).await.status, 200);
    let body = json!({ "source_blob": { "url": blob["get_url"], "version": "abc1234" } });
    let build = api(h, "POST", &format!("/apps/{app}/builds"), Some(body)).await;
    assert_eq!(build.status, 201, "{}", build.text());
    build.json()
}

async fn until(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "{what} did not happen within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn version_served(h: &HerokuSandbox, app: &str) -> Reply {
    call("GET", &format!("{}/version", h.app_url(app)), &[], None).await.expect("the router answers")
}

#[tokio::test]
async fn a_source_deploy_builds_runs_the_release_phase_and_switches_with_preboot() {
    let h = start(vec![AppOptions::cedar("shop")]).await;
    let b =
        build(&h, "shop", &[("Procfile", "web: sandbox-app\nrelease: echo migrating; echo done\n"), ("VERSION", "v2")])
            .await;
    let log = call("GET", b["output_stream_url"].as_str().unwrap(), &[], None).await.unwrap().text();
    assert!(log.contains("Procfile declares types -> web, release") && log.contains("Released v2"), "{log}");
    let build = api(&h, "GET", &format!("/apps/shop/builds/{}", b["id"].as_str().unwrap()), None).await.json();
    assert_eq!(build["status"], "succeeded");
    let release_id = build["release"]["id"].as_str().unwrap().to_string();
    until("v2 is current", Duration::from_secs(10), async || h.current_version("shop") == Some(2)).await;
    let release = api(&h, "GET", &format!("/apps/shop/releases/{release_id}"), None).await.json();
    assert_eq!((release["version"].as_u64(), release["status"].as_str()), (Some(2), Some("succeeded")));
    let phase = call("GET", release["output_stream_url"].as_str().unwrap(), &[], None).await.unwrap().text();
    assert!(phase.contains("migrating"), "the release command really ran: {phase}");
    // With preboot the old dynos keep serving until the new ones are up.
    let mut served = Vec::new();
    until("v2 answers", Duration::from_secs(15), async || {
        let r = version_served(&h, "shop").await;
        assert_eq!(r.status, 200, "preboot never drops a request: {}", r.text());
        served.push(r.text());
        r.text() == "v2"
    })
    .await;
    assert!(h.settled("shop", Duration::from_secs(10)).await);
    let dynos = h.dynos("shop");
    assert_eq!(dynos.len(), 2);
    assert!(dynos.iter().all(|d| d["state"] == "up" && d["release"]["version"] == 2), "{dynos:?}");
    h.stop().await;
}

#[tokio::test]
async fn a_failing_release_phase_keeps_the_old_release_live() {
    let h = start(vec![AppOptions::cedar("shop")]).await;
    build(
        &h,
        "shop",
        &[("Procfile", "web: sandbox-app\nrelease: echo 'migration 42 failed' >&2; exit 3\n"), ("VERSION", "v2")],
    )
    .await;
    until("v2 fails", Duration::from_secs(10), async || h.releases("shop").iter().any(|r| r["status"] == "failed"))
        .await;
    let v2 = h.releases("shop").into_iter().find(|r| r["version"] == 2).unwrap();
    assert_eq!(
        (v2["current"].as_bool(), v2["eligible_for_rollback"].as_bool()),
        (Some(false), Some(false)),
        "a failed release is no rollback target"
    );
    let log = call("GET", v2["output_stream_url"].as_str().unwrap(), &[], None).await.unwrap().text();
    assert!(log.contains("migration 42 failed") && log.contains("exited with code 3"), "{log}");
    assert_eq!(h.current_version("shop"), Some(1));
    assert_eq!(version_served(&h, "shop").await.text(), "v1");
    h.stop().await;
}

#[tokio::test]
async fn crashed_dynos_answer_h10_and_a_rollback_brings_the_old_slug_back() {
    let h = start(vec![AppOptions::cedar("shop")]).await;
    let v1 = h.releases("shop")[0]["id"].as_str().unwrap().to_string();
    build(&h, "shop", &[("Procfile", "web: sandbox-app --crash-exit-code 1\n")]).await;
    until("the dynos crash", Duration::from_secs(15), async || {
        let d = h.dynos("shop");
        !d.is_empty() && d.iter().all(|d| d["state"] == "crashed")
    })
    .await;
    // Preboot switches to the new dynos even when they crashed: then the app is down.
    until("the router answers H10", Duration::from_secs(5), async || {
        let page = version_served(&h, "shop").await;
        page.status == 503 && page.header("sandbox-heroku-error") == Some("H10")
    })
    .await;
    let rolled = api(&h, "POST", "/apps/shop/releases", Some(json!({ "release": v1 }))).await;
    assert_eq!(rolled.status, 201, "{}", rolled.text());
    assert_eq!(
        (rolled.json()["version"].as_u64(), rolled.json()["description"].as_str()),
        (Some(3), Some("Rollback to v1"))
    );
    assert!(h.settled("shop", Duration::from_secs(10)).await);
    assert_eq!(version_served(&h, "shop").await.text(), "v1");
    // An expired release is no rollback target.
    assert!(h.expire("shop", 1));
    let refused = api(&h, "POST", "/apps/shop/releases", Some(json!({ "release": v1 }))).await;
    assert_eq!((refused.status, refused.json()["id"].as_str()), (422, Some("invalid_params")));
    h.stop().await;
}

#[tokio::test]
async fn container_releases_need_the_docker_variant_and_the_container_stack() {
    let h = start(vec![AppOptions::container("box", "sha256:1111"), AppOptions::fir("fir")]).await;
    let body = json!({ "updates": [{ "type": "web", "docker_image": "sha256:2222" }] });
    let plain = api(&h, "PATCH", "/apps/box/formation", Some(body.clone())).await;
    assert_eq!(plain.status, 422, "{}", plain.text());
    let on_fir = api_as(&h, DOCKER_RELEASES, "PATCH", "/apps/fir/formation", Some(body.clone())).await;
    assert!(on_fir.status == 422 && on_fir.text().contains("container stack"), "{}", on_fir.text());
    let released = api_as(&h, DOCKER_RELEASES, "PATCH", "/apps/box/formation", Some(body)).await;
    assert_eq!(released.status, 200, "{}", released.text());
    assert!(h.settled("box", Duration::from_secs(10)).await);
    assert_eq!(h.current_version("box"), Some(2));
    // Fir builds take no buildpacks parameter.
    let with_buildpacks = json!({ "source_blob": { "url": "http://127.0.0.1:1/x", "version": "a" }, "buildpacks": [{ "url": "heroku/ruby" }] });
    assert_eq!(api(&h, "POST", "/apps/fir/builds", Some(with_buildpacks)).await.status, 422);
    h.stop().await;
}

#[tokio::test]
async fn any_token_will_do_but_one_must_be_sent_and_lists_are_cut_only_as_the_schema_says() {
    // A sandbox that accepts any token still refuses a request with none, as Heroku does.
    let h = HerokuSandbox::start(HerokuOptions { token: None, ..options(vec![AppOptions::cedar("shop")]) })
        .await
        .expect("the Heroku sandbox starts");
    let url = format!("{}/apps/shop/builds", h.api_url());
    let no_token = call("GET", &url, &[("accept", ACCEPT)], None).await.unwrap();
    assert_eq!((no_token.status, no_token.json()["id"].as_str()), (401, Some("unauthorized")));
    let any = [("accept", ACCEPT), ("authorization", "Bearer anything")];
    assert_eq!(call("GET", &url, &any, None).await.unwrap().status, 200);

    // The builds list is cut by id or started_at (the schema's ranges), nothing else.
    let by = |range: &'static str| [("accept", ACCEPT), ("authorization", "Bearer anything"), ("range", range)];
    let bogus = call("GET", &url, &by("bogus"), None).await.unwrap();
    assert_eq!((bogus.status, bogus.json()["id"].as_str()), (416, Some("requested_range_not_satisfiable")));
    assert_eq!(call("GET", &url, &by("created_at ..; max=5, order=desc"), None).await.unwrap().status, 416);
    let newest = call("GET", &url, &by("started_at ..; max=5, order=desc"), None).await.unwrap();
    assert_eq!(newest.status, 200);
    assert_eq!(newest.header("accept-ranges"), Some("id, started_at"));
    h.stop().await;
}

#[tokio::test]
async fn the_api_wants_its_accept_header_a_token_and_counts_the_rate_limit() {
    let h = start(vec![AppOptions::cedar("shop")]).await;
    let url = format!("{}/apps/shop", h.api_url());
    let no_accept = call("GET", &url, &[("authorization", "Bearer hrku-test")], None).await.unwrap();
    assert_eq!(no_accept.status, 400);
    let no_token = call("GET", &url, &[("accept", ACCEPT)], None).await.unwrap();
    assert_eq!((no_token.status, no_token.json()["id"].as_str()), (401, Some("unauthorized")));
    let ok = api(&h, "GET", "/apps/shop", None).await;
    assert_eq!(ok.json()["generation"]["name"], "cedar");
    let left: u64 = ok.header("ratelimit-remaining").unwrap().parse().unwrap();
    let again: u64 = api(&h, "GET", "/apps/shop", None).await.header("ratelimit-remaining").unwrap().parse().unwrap();
    assert!(again < left, "{again} < {left}");
    h.stop().await;
}
