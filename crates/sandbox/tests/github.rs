//! The GitHub deployments emulator over HTTP, driven the way the action's GitHub
//! client drives GitHub: create a deployment, post statuses, list and paginate,
//! and meet each injected fault.

use sandbox::Handle;
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use sandbox::client::{call, Reply};
use sandbox::github::{GitHubFaults, GitHubOptions, GitHubSandbox};
use serde_json::{json, Value};

const SHA: &str = "a84d88e7554fc1fa21bcbc4efae3c782a70d2b9d";
const DEPLOYMENTS: &str = "/repos/acme/shop/deployments";

async fn start() -> GitHubSandbox {
    GitHubSandbox::start(GitHubOptions::default()).await.expect("the GitHub sandbox starts")
}

/// A request with the headers GitHub expects from a well-behaved client.
async fn gh(github: &GitHubSandbox, method: &str, path: &str, body: Option<Value>) -> Reply {
    let headers = [
        ("user-agent", "safe-deploy-tests"),
        ("authorization", "Bearer ghs_test"),
        ("accept", "application/vnd.github+json"),
        ("x-github-api-version", "2022-11-28"),
    ];
    send(github, method, path, &headers, body).await
}

async fn send(
    github: &GitHubSandbox,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Reply {
    let url = format!("{}{path}", github.api_url());
    call(method, &url, headers, body.as_ref()).await.unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

async fn create(github: &GitHubSandbox, body: Value) -> Value {
    let reply = gh(github, "POST", DEPLOYMENTS, Some(body)).await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    reply.json()
}

async fn status(github: &GitHubSandbox, id: u64, body: Value) -> Value {
    let reply = gh(github, "POST", &format!("{DEPLOYMENTS}/{id}/statuses"), Some(body)).await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    reply.json()
}

fn id_of(value: &Value) -> u64 {
    value["id"].as_u64().unwrap_or_else(|| panic!("no id in {value}"))
}

fn ids(reply: &Reply) -> Vec<u64> {
    reply.json().as_array().unwrap_or_else(|| panic!("not an array: {}", reply.text())).iter().map(id_of).collect()
}

/// `Link` header relations to their URLs.
fn links(reply: &Reply) -> BTreeMap<String, String> {
    let header = reply.header("link").unwrap_or_default();
    header
        .split(", ")
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (url, rel) = part.split_once("; rel=").unwrap_or_else(|| panic!("bad link part {part}"));
            (rel.trim_matches('"').to_string(), url.trim_matches(['<', '>']).to_string())
        })
        .collect()
}

/// A path and query from an absolute URL on the sandbox.
fn path_of(github: &GitHubSandbox, url: &str) -> String {
    url.strip_prefix(&github.api_url()).unwrap_or_else(|| panic!("{url} is not on the sandbox")).to_string()
}

fn message(reply: &Reply) -> String {
    reply.json()["message"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn a_deployment_and_its_statuses_round_trip() {
    let github = start().await;
    let created = create(
        &github,
        json!({
            "ref": SHA, "environment": "production", "description": "safe-deploy: web v2",
            "auto_merge": false, "required_contexts": [], "payload": { "image": "registry.fly.io/web:v2" },
        }),
    )
    .await;
    let id = id_of(&created);
    let base = github.api_url();
    assert_eq!(created["url"], format!("{base}/repos/acme/shop/deployments/{id}"));
    assert_eq!(created["statuses_url"], format!("{base}/repos/acme/shop/deployments/{id}/statuses"));
    assert_eq!(created["repository_url"], format!("{base}/repos/acme/shop"));
    assert_eq!((created["sha"].as_str(), created["ref"].as_str()), (Some(SHA), Some(SHA)));
    assert_eq!((created["task"].as_str(), created["environment"].as_str()), (Some("deploy"), Some("production")));
    assert_eq!(created["payload"], json!({ "image": "registry.fly.io/web:v2" }));
    assert_eq!(created["production_environment"], true);
    assert_eq!(created["transient_environment"], false);
    assert_eq!(created["creator"]["login"], "github-actions[bot]");
    for field in ["node_id", "created_at", "updated_at"] {
        assert!(created[field].is_string(), "{field} missing from {created}");
    }

    let in_progress = status(
        &github,
        id,
        json!({ "state": "in_progress", "log_url": "https://github.com/acme/shop/actions/runs/1",
                "description": "Deploying web v2" }),
    )
    .await;
    // Setting log_url sets target_url too; unset URLs are "", as GitHub sends them.
    assert_eq!(in_progress["target_url"], "https://github.com/acme/shop/actions/runs/1");
    assert_eq!(in_progress["environment_url"], "");
    assert_eq!(in_progress["environment"], "production");
    assert_eq!(in_progress["deployment_url"], created["url"]);
    let success = status(&github, id, json!({ "state": "success", "environment_url": "https://web.fly.dev" })).await;
    assert_eq!(success["description"], "");
    assert_eq!(success["target_url"], "");

    let listed = gh(&github, "GET", &format!("{DEPLOYMENTS}/{id}/statuses"), None).await;
    assert_eq!(listed.status, 200);
    assert_eq!(ids(&listed), [id_of(&success), id_of(&in_progress)], "newest first");
    let one = gh(&github, "GET", &format!("{DEPLOYMENTS}/{id}/statuses/{}", id_of(&success)), None).await;
    assert_eq!(one.json()["state"], "success");
    let fetched = gh(&github, "GET", &format!("{DEPLOYMENTS}/{id}"), None).await;
    assert_eq!(fetched.status, 200);
    assert_eq!(fetched.json()["id"], created["id"]);

    let views = github.deployments();
    assert_eq!(views.len(), 1);
    let view = &views[0];
    assert_eq!((view.auto_merge, view.required_contexts.as_deref()), (Some(false), Some(&[][..])));
    assert_eq!(view.description.as_deref(), Some("safe-deploy: web v2"));
    let states: Vec<_> = view.statuses.iter().map(|s| s.state.as_str()).collect();
    assert_eq!(states, ["in_progress", "success"], "oldest first");
    assert_eq!(view.statuses[0].log_url.as_deref(), Some("https://github.com/acme/shop/actions/runs/1"));
    assert_eq!(view.statuses[1].environment_url.as_deref(), Some("https://web.fly.dev"));
    assert_eq!((view.statuses[1].log_url.as_deref(), view.statuses[1].auto_inactive), (None, None));

    let writes: Vec<_> = github.writes().iter().map(|c| (c.method.clone(), c.status)).collect();
    assert_eq!(writes, [("POST".to_string(), 201), ("POST".to_string(), 201), ("POST".to_string(), 201)]);
    assert_eq!(github.calls().len(), 6);
    assert_eq!(github.writes()[0].body.as_ref().map(|b| b["auto_merge"].clone()), Some(json!(false)));
    github.stop().await;
}

#[tokio::test]
async fn answers_carry_githubs_headers() {
    let github = start().await;
    let created = gh(&github, "POST", DEPLOYMENTS, Some(json!({ "ref": "main" }))).await;
    assert_eq!(created.header("content-type"), Some("application/json; charset=utf-8"));
    assert_eq!(created.header("location"), created.json()["url"].as_str());
    let listed = gh(&github, "GET", DEPLOYMENTS, None).await;
    assert_eq!(listed.header("x-ratelimit-limit"), Some("5000"));
    assert_eq!(listed.header("x-ratelimit-used"), Some("2"));
    assert_eq!(listed.header("x-ratelimit-remaining"), Some("4998"));
    assert_eq!(listed.header("x-ratelimit-resource"), Some("core"));
    let reset: u64 = listed.header("x-ratelimit-reset").and_then(|r| r.parse().ok()).expect("a reset time");
    assert!(reset > SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs());
    assert_eq!(listed.header("link"), None, "one page, no Link");
    let missing = gh(&github, "GET", &format!("{DEPLOYMENTS}/1"), None).await;
    assert_eq!(missing.status, 404);
    assert!(missing.header("x-ratelimit-limit").is_some());
    github.stop().await;
}

#[tokio::test]
async fn defaults_and_what_the_client_left_out() {
    let github = start().await;
    let branch = create(&github, json!({ "ref": "main", "payload": "{\"deploy\": \"migrate\"}" })).await;
    let sha = branch["sha"].as_str().expect("a sha");
    assert!(sha.len() == 40 && sha.bytes().all(|b| b.is_ascii_hexdigit()) && sha != "main");
    assert_eq!(branch["payload"], "{\"deploy\": \"migrate\"}", "a string payload stays a string");
    let again = create(&github, json!({ "ref": "main" })).await;
    assert_eq!(again["sha"], branch["sha"], "the same ref is the same commit");
    assert_eq!(again["payload"], json!({}));
    assert_eq!(again["description"], Value::Null);
    let staging =
        create(&github, json!({ "ref": "main", "environment": "staging", "task": "deploy:migrations" })).await;
    assert_eq!(staging["production_environment"], false);
    assert_eq!(staging["task"], "deploy:migrations");
    let view = github.deployments().into_iter().find(|d| d.id == id_of(&again)).expect("recorded");
    assert_eq!((view.auto_merge, view.required_contexts), (None, None), "left out, so GitHub's defaults apply");
    assert!(view.production_environment && !view.transient_environment);
    github.stop().await;
}

#[tokio::test]
async fn invalid_requests_get_422s_and_404s() {
    let github = start().await;
    let no_ref = gh(&github, "POST", DEPLOYMENTS, Some(json!({ "environment": "production" }))).await;
    assert_eq!(no_ref.status, 422);
    assert_eq!(message(&no_ref), "Validation Failed");
    assert_eq!(no_ref.json()["errors"][0]["field"], "ref");
    assert_eq!(no_ref.json()["errors"][0]["code"], "missing_field");
    assert!(no_ref.json()["documentation_url"].is_string());
    let wrong_types = gh(
        &github,
        "POST",
        DEPLOYMENTS,
        Some(json!({ "ref": "main", "auto_merge": "false", "required_contexts": "" })),
    )
    .await;
    assert_eq!(wrong_types.status, 422);
    assert_eq!(wrong_types.json()["errors"].as_array().map(Vec::len), Some(2));
    assert!(github.deployments().is_empty(), "nothing was created");

    let broken = call(
        "POST",
        &format!("{}{DEPLOYMENTS}", github.api_url()),
        &[("user-agent", "t"), ("authorization", "token t")],
        None,
    )
    .await
    .expect("answers");
    assert_eq!(broken.status, 422, "an empty body lacks ref");

    let id = id_of(&create(&github, json!({ "ref": "main" })).await);
    let statuses = format!("{DEPLOYMENTS}/{id}/statuses");
    let bad_state = gh(&github, "POST", &statuses, Some(json!({ "state": "done" }))).await;
    assert_eq!(bad_state.status, 422);
    assert_eq!(bad_state.json()["errors"][0]["field"], "state");
    let no_state = gh(&github, "POST", &statuses, Some(json!({ "description": "x" }))).await;
    assert_eq!(no_state.status, 422);
    let long =
        gh(&github, "POST", &statuses, Some(json!({ "state": "success", "description": "x".repeat(141) }))).await;
    assert_eq!(long.status, 422);
    assert_eq!(long.json()["errors"][0]["field"], "description");
    let longest =
        gh(&github, "POST", &statuses, Some(json!({ "state": "success", "description": "x".repeat(140) }))).await;
    assert_eq!(longest.status, 201);
    assert_eq!(github.deployments()[0].statuses.len(), 1, "only the valid status was recorded");

    for path in [
        format!("{DEPLOYMENTS}/{}", id + 1),
        format!("{DEPLOYMENTS}/{}/statuses", id + 1),
        format!("{DEPLOYMENTS}/nope"),
        format!("{DEPLOYMENTS}/{id}/statuses/1"),
        "/repos/acme/other/deployments".to_string(),
        "/repos/someone/shop/deployments".to_string(),
        "/user".to_string(),
    ] {
        let reply = gh(&github, "GET", &path, None).await;
        assert_eq!((reply.status, message(&reply)), (404, "Not Found".to_string()), "GET {path}");
    }
    let on_missing =
        gh(&github, "POST", &format!("{DEPLOYMENTS}/{}/statuses", id + 1), Some(json!({"state": "success"}))).await;
    assert_eq!(on_missing.status, 404);
    assert_eq!(gh(&github, "GET", "/repos/ACME/Shop/deployments", None).await.status, 200, "names ignore case");
    github.stop().await;
}

#[tokio::test]
async fn lists_paginate_with_link_headers() {
    let github = start().await;
    let mut created = Vec::new();
    for n in 0..5 {
        created.push(id_of(&create(&github, json!({ "ref": format!("v{n}"), "environment": "staging" })).await));
    }
    let newest_first: Vec<u64> = created.iter().rev().copied().collect();

    let first = gh(&github, "GET", &format!("{DEPLOYMENTS}?environment=staging&per_page=2"), None).await;
    assert_eq!(ids(&first), newest_first[..2]);
    let rels = links(&first);
    assert_eq!(rels.keys().collect::<Vec<_>>(), ["last", "next"]);
    let base = github.api_url();
    assert_eq!(rels["next"], format!("{base}{DEPLOYMENTS}?environment=staging&per_page=2&page=2"));
    assert_eq!(rels["last"], format!("{base}{DEPLOYMENTS}?environment=staging&per_page=2&page=3"));
    let header = first.header("link").expect("a Link header");
    assert!(header.starts_with('<') && header.contains(r#">; rel="next", <"#), "GitHub's format: {header}");

    let second = gh(&github, "GET", &path_of(&github, &rels["next"]), None).await;
    assert_eq!(ids(&second), newest_first[2..4]);
    let rels = links(&second);
    assert_eq!(rels.keys().collect::<Vec<_>>(), ["first", "last", "next", "prev"]);
    assert!(rels["prev"].ends_with("page=1") && rels["first"].ends_with("page=1"));

    let third = gh(&github, "GET", &path_of(&github, &rels["next"]), None).await;
    assert_eq!(ids(&third), newest_first[4..]);
    let rels = links(&third);
    assert_eq!(rels.keys().collect::<Vec<_>>(), ["first", "prev"]);
    assert!(rels["prev"].ends_with("page=2"));

    let beyond = gh(&github, "GET", &format!("{DEPLOYMENTS}?per_page=2&page=4"), None).await;
    assert_eq!((beyond.status, ids(&beyond)), (200, vec![]));
    let all = gh(&github, "GET", &format!("{DEPLOYMENTS}?per_page=1000"), None).await;
    assert_eq!(ids(&all), newest_first, "per_page is capped at 100, not refused");

    let id = created[0];
    for state in ["queued", "in_progress", "failure"] {
        status(&github, id, json!({ "state": state })).await;
    }
    let statuses = format!("{DEPLOYMENTS}/{id}/statuses");
    let page1 = gh(&github, "GET", &format!("{statuses}?per_page=1"), None).await;
    assert_eq!(page1.json()[0]["state"], "failure");
    assert!(links(&page1)["last"].ends_with("per_page=1&page=3"));
    let page3 = gh(&github, "GET", &format!("{statuses}?per_page=1&page=3"), None).await;
    assert_eq!(page3.json()[0]["state"], "queued");
    github.stop().await;
}

#[tokio::test]
async fn lists_filter_by_sha_ref_task_and_environment() {
    let github = start().await;
    let a = id_of(&create(&github, json!({ "ref": SHA, "environment": "production" })).await);
    let b = id_of(&create(&github, json!({ "ref": "main", "environment": "Production EU" })).await);
    let c =
        id_of(&create(&github, json!({ "ref": "main", "environment": "staging", "task": "deploy:migrations" })).await);
    let get = |query: &'static str| {
        let github = &github;
        async move { ids(&gh(github, "GET", &format!("{DEPLOYMENTS}?{query}"), None).await) }
    };
    assert_eq!(get("sha=a84d88e7554fc1fa21bcbc4efae3c782a70d2b9d").await, [a]);
    assert_eq!(get("ref=main").await, [c, b]);
    assert_eq!(get("task=deploy:migrations").await, [c]);
    assert_eq!(get("task=deploy").await, [b, a]);
    assert_eq!(get("environment=Production%20EU").await, [b]);
    assert_eq!(get("environment=Production+EU&ref=main").await, [b]);
    assert_eq!(get("environment=production&ref=main").await, Vec::<u64>::new());
    assert_eq!(get("environment=").await, [c, b, a], "an empty filter is no filter");
    github.stop().await;
}

#[tokio::test]
async fn success_marks_earlier_deployments_inactive_as_github_does() {
    let github = start().await;
    let deploy = |environment: &'static str, extra: Value| {
        let github = &github;
        async move {
            let mut body = json!({ "ref": "main", "environment": environment });
            body.as_object_mut().expect("object").extend(extra.as_object().cloned().unwrap_or_default());
            id_of(&create(github, body).await)
        }
    };
    let latest = |id: u64| {
        let views = github.deployments();
        let view = views.into_iter().find(|d| d.id == id).expect("exists");
        view.latest_state().map(str::to_string)
    };

    let old = deploy("staging", json!({})).await;
    status(&github, old, json!({ "state": "success" })).await;
    let failed = deploy("staging", json!({})).await;
    status(&github, failed, json!({ "state": "failure" })).await;
    let transient = deploy("staging", json!({ "transient_environment": true })).await;
    status(&github, transient, json!({ "state": "success" })).await;
    let prod = deploy("production", json!({})).await;
    status(&github, prod, json!({ "state": "success" })).await;
    let staging_prod = deploy("staging", json!({ "production_environment": true })).await;
    status(&github, staging_prod, json!({ "state": "success" })).await;
    assert_eq!(latest(old).as_deref(), Some("inactive"), "retired by the transient deployment's success");

    let kept = deploy("staging", json!({})).await;
    status(&github, kept, json!({ "state": "success" })).await;
    let opted_out = deploy("staging", json!({})).await;
    status(&github, opted_out, json!({ "state": "success", "auto_inactive": false })).await;
    assert_eq!(latest(kept).as_deref(), Some("success"), "auto_inactive: false retires nothing");

    let newest = deploy("staging", json!({})).await;
    status(&github, newest, json!({ "state": "success" })).await;
    assert_eq!(latest(kept).as_deref(), Some("inactive"));
    assert_eq!(latest(opted_out).as_deref(), Some("inactive"));
    assert_eq!(latest(failed).as_deref(), Some("failure"), "only successes are retired");
    assert_eq!(latest(transient).as_deref(), Some("success"), "transient deployments stay");
    assert_eq!(latest(staging_prod).as_deref(), Some("success"), "production deployments stay");
    assert_eq!(latest(prod).as_deref(), Some("success"), "other environments are untouched");
    assert_eq!(latest(newest).as_deref(), Some("success"));

    let inactive = gh(&github, "GET", &format!("{DEPLOYMENTS}/{kept}/statuses"), None).await.json();
    assert_eq!(
        (inactive[0]["state"].as_str(), inactive[0]["environment"].as_str()),
        (Some("inactive"), Some("staging"))
    );
    github.stop().await;
}

#[tokio::test]
async fn only_inactive_deployments_can_be_deleted() {
    let github = start().await;
    let first = id_of(&create(&github, json!({ "ref": "main" })).await);
    let second = id_of(&create(&github, json!({ "ref": "main" })).await);
    let refused = gh(&github, "DELETE", &format!("{DEPLOYMENTS}/{first}"), None).await;
    assert_eq!(refused.status, 422);
    status(&github, first, json!({ "state": "inactive" })).await;
    let deleted = gh(&github, "DELETE", &format!("{DEPLOYMENTS}/{first}"), None).await;
    assert_eq!((deleted.status, deleted.body.len()), (204, 0));
    assert_eq!(github.deployments().iter().map(|d| d.id).collect::<Vec<_>>(), [second]);
    assert_eq!(gh(&github, "DELETE", &format!("{DEPLOYMENTS}/{second}"), None).await.status, 204, "the only one");
    github.stop().await;
}

#[tokio::test]
async fn a_status_fault_answers_every_request_until_cleared() {
    let github = start().await;
    github.set_faults(GitHubFaults { status: Some(500), ..Default::default() });
    for _ in 0..2 {
        let listed = gh(&github, "GET", DEPLOYMENTS, None).await;
        assert_eq!((listed.status, message(&listed)), (500, "Server Error".to_string()));
        assert!(listed.json()["documentation_url"].is_string());
        assert_eq!(gh(&github, "POST", DEPLOYMENTS, Some(json!({ "ref": "main" }))).await.status, 500);
    }
    github.set_faults(GitHubFaults { status: Some(403), ..Default::default() });
    let forbidden = gh(&github, "POST", DEPLOYMENTS, Some(json!({ "ref": "main" }))).await;
    assert_eq!((forbidden.status, message(&forbidden)), (403, "Resource not accessible by integration".to_string()));
    assert!(github.deployments().is_empty());
    github.set_faults(GitHubFaults::default());
    create(&github, json!({ "ref": "main" })).await;
    let statuses: Vec<u16> = github.calls().iter().map(|c| c.status).collect();
    assert_eq!(statuses, [500, 500, 500, 500, 403, 201]);
    github.stop().await;
}

#[tokio::test]
async fn create_faults_create_nothing() {
    let github = start().await;
    let body = json!({ "ref": "feature", "auto_merge": false, "required_contexts": [] });

    github.set_faults(GitHubFaults { auto_merge: true, ..Default::default() });
    let merged = gh(&github, "POST", DEPLOYMENTS, Some(body.clone())).await;
    assert_eq!(merged.status, 202);
    assert_eq!(message(&merged), "Auto-merged main into feature on deployment.");
    assert_eq!(merged.json()["id"], Value::Null);

    github.set_faults(GitHubFaults { conflict: true, ..Default::default() });
    let conflict = gh(&github, "POST", DEPLOYMENTS, Some(body.clone())).await;
    assert_eq!((conflict.status, message(&conflict)), (409, "Conflict merging main into feature.".to_string()));

    github.set_faults(GitHubFaults { invalid: true, ..Default::default() });
    let invalid = gh(&github, "POST", DEPLOYMENTS, Some(body.clone())).await;
    assert_eq!((invalid.status, message(&invalid)), (422, "Validation Failed".to_string()));
    assert!(!invalid.json()["errors"].as_array().expect("errors").is_empty());
    assert!(invalid.json()["documentation_url"].is_string());

    // The create faults leave everything else alone, and last until cleared.
    assert_eq!(gh(&github, "GET", DEPLOYMENTS, None).await.status, 200);
    assert_eq!(gh(&github, "POST", DEPLOYMENTS, Some(body.clone())).await.status, 422);
    assert!(github.deployments().is_empty());
    github.set_faults(GitHubFaults::default());
    create(&github, body).await;
    assert_eq!(github.deployments().len(), 1);
    github.stop().await;
}

#[tokio::test]
async fn the_rate_limit_fault_says_when_to_come_back() {
    let github = start().await;
    github.set_faults(GitHubFaults { rate_limited: true, ..Default::default() });
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs();
    for (method, body) in [("GET", None), ("POST", Some(json!({ "ref": "main" })))] {
        let limited = gh(&github, method, DEPLOYMENTS, body).await;
        assert_eq!(limited.status, 403);
        assert_eq!(message(&limited), "API rate limit exceeded for installation ID 1.");
        assert_eq!(limited.header("x-ratelimit-remaining"), Some("0"));
        assert_eq!(limited.header("x-ratelimit-used"), Some("5000"));
        let reset: u64 = limited.header("x-ratelimit-reset").and_then(|r| r.parse().ok()).expect("a reset");
        assert!((now + 55..=now + 65).contains(&reset), "reset {reset}, now {now}");
    }
    github.set_faults(GitHubFaults::default());
    assert_eq!(gh(&github, "GET", DEPLOYMENTS, None).await.status, 200);
    github.stop().await;
}

#[tokio::test]
async fn the_kits_bursts_answer_in_githubs_shape() {
    let github = start().await;
    let url = format!("{}/__sandbox/faults", github.api_url());
    let bursts = json!({ "error_burst": 1, "rate_limit_burst": 1, "retry_after_secs": 30, "malformed_burst": 1 });
    assert_eq!(call("POST", &url, &[], Some(&bursts)).await.expect("answers").status, 200);
    assert_eq!(github.faults().api.error_burst, 1);

    let unavailable = gh(&github, "GET", DEPLOYMENTS, None).await;
    assert_eq!((unavailable.status, message(&unavailable)), (503, "Service Unavailable".to_string()));
    assert!(unavailable.json()["documentation_url"].is_string());
    assert!(unavailable.header("x-github-request-id").is_some(), "GitHub's headers on a faulted answer too");
    let limited = gh(&github, "POST", DEPLOYMENTS, Some(json!({ "ref": "main" }))).await;
    assert_eq!((limited.status, limited.header("retry-after")), (429, Some("30")));
    assert!(message(&limited).contains("secondary rate limit"), "{}", limited.text());
    let created = create(&github, json!({ "ref": "main" })).await;
    let broken = gh(&github, "GET", &format!("{DEPLOYMENTS}/{}", id_of(&created)), None).await;
    assert_eq!(broken.status, 200);
    assert!(serde_json::from_slice::<Value>(&broken.body).is_err(), "{}", broken.text());
    assert_eq!(gh(&github, "GET", DEPLOYMENTS, None).await.status, 200, "every burst spent");

    let calls = github.calls();
    let statuses: Vec<u16> = calls.iter().map(|c| c.status).collect();
    assert_eq!(statuses, [503, 429, 201, 200, 200]);
    assert_eq!(calls[3].target, Some(id_of(&created).to_string()), "the deployment a call is about");
    assert_eq!(calls[0].target, None);
    github.stop().await;
}

#[tokio::test]
async fn faults_can_be_set_over_http_without_being_logged() {
    let github = start().await;
    let url = format!("{}/__sandbox/faults", github.api_url());
    let set = call("POST", &url, &[], Some(&json!({ "status": 503 }))).await.expect("answers");
    assert_eq!(set.status, 200);
    assert_eq!(github.faults(), GitHubFaults { status: Some(503), ..Default::default() });
    assert_eq!(gh(&github, "GET", DEPLOYMENTS, None).await.status, 503);
    let bad = call("POST", &url, &[], Some(&json!({ "status": "soon" }))).await.expect("answers");
    assert_eq!(bad.status, 400);
    call("POST", &url, &[], Some(&json!({}))).await.expect("answers");
    assert_eq!(gh(&github, "GET", DEPLOYMENTS, None).await.status, 200);
    let state = call("GET", &format!("{}/__sandbox/deployments", github.api_url()), &[], None).await.expect("answers");
    assert_eq!(state.json(), json!([]));
    assert_eq!(github.calls().len(), 2, "control requests are not API calls");
    github.stop().await;
}

#[tokio::test]
async fn auth_user_agent_and_api_version_are_checked() {
    let github = GitHubSandbox::start(GitHubOptions { token: Some("ghs_right".into()), ..Default::default() })
        .await
        .expect("starts");
    let ua = ("user-agent", "safe-deploy-tests");
    let no_token = send(&github, "GET", DEPLOYMENTS, &[ua], None).await;
    assert_eq!((no_token.status, message(&no_token)), (401, "Requires authentication".to_string()));
    let wrong = send(&github, "GET", DEPLOYMENTS, &[ua, ("authorization", "Bearer ghs_wrong")], None).await;
    assert_eq!((wrong.status, message(&wrong)), (401, "Bad credentials".to_string()));
    let basic = send(&github, "GET", DEPLOYMENTS, &[ua, ("authorization", "Basic Z2hzX3JpZ2h0")], None).await;
    assert_eq!(basic.status, 401);
    for scheme in ["Bearer", "token"] {
        let auth = format!("{scheme} ghs_right");
        let ok = send(&github, "GET", DEPLOYMENTS, &[ua, ("authorization", &auth)], None).await;
        assert_eq!(ok.status, 200, "{scheme}");
    }
    let no_agent = send(&github, "GET", DEPLOYMENTS, &[("authorization", "Bearer ghs_right")], None).await;
    assert_eq!(no_agent.status, 403);
    assert!(message(&no_agent).contains("User-Agent"), "{}", no_agent.text());
    let old_version = send(
        &github,
        "GET",
        DEPLOYMENTS,
        &[ua, ("authorization", "Bearer ghs_right"), ("x-github-api-version", "2021-01-01")],
        None,
    )
    .await;
    assert_eq!((old_version.status, message(&old_version)), (400, "API version 2021-01-01 is not supported.".into()));
    let statuses: Vec<u16> = github.calls().iter().map(|c| c.status).collect();
    assert_eq!(statuses, [401, 401, 401, 200, 200, 403, 400]);
    github.stop().await;

    // Without a configured token any token will do, but one must be sent.
    let open = start().await;
    assert_eq!(send(&open, "GET", DEPLOYMENTS, &[ua, ("authorization", "token anything")], None).await.status, 200);
    assert_eq!(send(&open, "GET", DEPLOYMENTS, &[ua], None).await.status, 401);
    open.stop().await;
}
