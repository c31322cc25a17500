//! Checks Heroku Platform API request and response bodies against Heroku's
//! JSON Hyper-Schema (draft-04 style, `definitions/<resource>/links[]`).
//!
//! Each link's `href` becomes a path matcher; its `schema` checks request
//! bodies and its `targetSchema` (or the resource itself) checks answers.
//! Validators are compiled on first use and cached per link.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use jsonschema::{Draft, Validator};
use serde_json::{json, Map, Value};

/// The loaded schema. Cloning is cheap (shared `Arc`), and it is `Send + Sync`.
#[derive(Clone)]
pub struct Schema {
    inner: Arc<Inner>,
}

struct Inner {
    /// Root `definitions`, wrapped around every subschema so `#/definitions/...` resolve.
    definitions: Value,
    links: Vec<Link>,
}

struct Link {
    method: String,
    title: String,
    /// `None` stands for a `{(...)}` placeholder: any one non-empty segment.
    segments: Vec<Option<String>>,
    literals: usize,
    request: Option<Value>,
    response: Value,
    request_validator: OnceLock<Result<Validator, String>>,
    response_validator: OnceLock<Result<Validator, String>>,
}

#[derive(Clone, Copy)]
enum Side {
    Request,
    Response,
}

impl Schema {
    pub fn load(path: &Path) -> Result<Schema, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let root: Value = serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
        Self::from_value(root).map_err(|e| format!("{}: {e}", path.display()))
    }

    fn from_value(mut root: Value) -> Result<Schema, String> {
        let Some(Value::Object(mut definitions)) = root.get_mut("definitions").map(Value::take) else {
            return Err("no \"definitions\" object".into());
        };
        let mut links = Vec::new();
        for (name, resource) in &mut definitions {
            let Some(resource) = resource.as_object_mut() else {
                continue;
            };
            // Each resource names the hyper-schema meta-schema; draft 4 is forced instead.
            resource.remove("$schema");
            for link in resource.get("links").and_then(Value::as_array).into_iter().flatten() {
                if let Some(link) = Link::from_json(name, link) {
                    links.push(link);
                }
            }
        }
        if links.is_empty() {
            return Err("no links with href and method".into());
        }
        Ok(Schema { inner: Arc::new(Inner { definitions: Value::Object(definitions), links }) })
    }

    /// Problems with a request body sent to METHOD PATH (path without query, e.g. "/apps/web/releases").
    /// A link with no `schema` accepts no body or `{}` (or `null`). A missing body is checked as `{}`.
    /// Returns "no link in the schema for METHOD PATH" when no link matches.
    pub fn check_request(&self, method: &str, path: &str, body: Option<&Value>) -> Vec<String> {
        let empty = Value::Object(Map::new());
        self.check(method, path, Side::Request, body.unwrap_or(&empty))
    }

    /// Problems with a 2xx JSON answer to METHOD PATH: against the link's targetSchema when it has one,
    /// else against the resource definition itself, or an array of it when the link's rel is "instances".
    pub fn check_response(&self, method: &str, path: &str, body: &Value) -> Vec<String> {
        self.check(method, path, Side::Response, body)
    }

    fn check(&self, method: &str, path: &str, side: Side, body: &Value) -> Vec<String> {
        let path = path.split('?').next().unwrap_or(path);
        let method = method.to_ascii_uppercase();
        let candidates = self.candidates(&method, path);
        if candidates.is_empty() {
            return vec![format!("no link in the schema for {method} {path}")];
        }
        // Equally specific links (e.g. release Create vs Rollback) are alternatives: one passing is enough.
        let mut problems = Vec::new();
        for link in &candidates {
            let found = link.problems(&self.inner.definitions, side, body);
            if found.is_empty() {
                return Vec::new();
            }
            let label = if candidates.len() > 1 {
                format!("{method} {path} [{}]", link.title)
            } else {
                format!("{method} {path}")
            };
            let what = match side {
                Side::Request => "request",
                Side::Response => "response",
            };
            problems.extend(found.into_iter().map(|p| format!("{label}: {what} {p}")));
        }
        problems
    }

    /// The matching links with the most literal segments; on a tie, literals further left win
    /// ("/teams/apps/{id}" over "/teams/{id}/apps"). Links left tied are alternatives.
    fn candidates(&self, method: &str, path: &str) -> Vec<&Link> {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let matching: Vec<&Link> =
            self.inner.links.iter().filter(|l| l.method == method && l.matches(&segments)).collect();
        let Some(best) = matching.iter().map(|l| l.rank()).max() else {
            return matching;
        };
        matching.into_iter().filter(|l| l.rank() == best).collect()
    }
}

impl Link {
    fn from_json(resource: &str, link: &Value) -> Option<Link> {
        let href = link.get("href")?.as_str()?;
        // The root "Index" link is an absolute URL, not an API path.
        if !href.starts_with('/') {
            return None;
        }
        let method = link.get("method")?.as_str()?.to_ascii_uppercase();
        let segments: Vec<Option<String>> =
            href.trim_start_matches('/').split('/').map(|s| (!s.contains('{')).then(|| s.to_string())).collect();
        let literals = segments.iter().filter(|s| s.is_some()).count();
        let resource_ref = json!({ "$ref": format!("#/definitions/{resource}") });
        let response = match (link.get("targetSchema"), link.get("rel").and_then(Value::as_str)) {
            (Some(target), _) => target.clone(),
            (None, Some("instances")) => json!({ "type": "array", "items": resource_ref }),
            (None, _) => resource_ref,
        };
        Some(Link {
            method,
            title: link.get("title").and_then(Value::as_str).unwrap_or(resource).to_string(),
            segments,
            literals,
            request: link.get("schema").cloned(),
            response,
            request_validator: OnceLock::new(),
            response_validator: OnceLock::new(),
        })
    }

    fn rank(&self) -> (usize, Vec<bool>) {
        (self.literals, self.segments.iter().map(Option::is_some).collect())
    }

    fn matches(&self, path: &[&str]) -> bool {
        self.segments.len() == path.len()
            && self.segments.iter().zip(path).all(|(want, got)| match want {
                Some(literal) => literal == got,
                None => !got.is_empty(),
            })
    }

    fn problems(&self, definitions: &Value, side: Side, body: &Value) -> Vec<String> {
        let (cell, schema) = match side {
            Side::Response => (&self.response_validator, &self.response),
            Side::Request => match &self.request {
                Some(schema) => (&self.request_validator, schema),
                None if is_empty_body(body) => return Vec::new(),
                None => return vec!["at \"\": this link takes no body".to_string()],
            },
        };
        let validator = match cell.get_or_init(|| compile(definitions, schema)) {
            Ok(v) => v,
            Err(e) => return vec![format!("cannot be checked: {e}")],
        };
        validator
            .iter_errors(body)
            .map(|e| {
                // Masked: bodies carry config vars and tokens that must not reach logs.
                let reason = e.masked().to_string();
                format!("at \"{}\": {}", e.instance_path(), truncate(&reason, 300))
            })
            .collect()
    }
}

fn is_empty_body(body: &Value) -> bool {
    match body {
        Value::Null => true,
        Value::Object(map) => map.is_empty(),
        _ => false,
    }
}

/// Wraps a subschema so its `#/definitions/...` refs resolve inside the same document.
fn compile(definitions: &Value, schema: &Value) -> Result<Validator, String> {
    let wrapper = json!({ "definitions": definitions, "allOf": [schema] });
    jsonschema::options()
        .with_draft(Draft::Draft4)
        // Draft 4 has no "uuid" format; Heroku ids always are UUIDs.
        .with_format("uuid", is_uuid)
        .build(&wrapper)
        .map_err(|e| e.to_string())
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    // shared/ sits beside the repository, in the work tree and in CI's clone alike.
    const SCHEMA: &str =
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/providers/specs/heroku/platform-api-schema.json");
    const UUID: &str = "01234567-89ab-cdef-0123-456789abcdef";

    fn schema() -> &'static Schema {
        static SCHEMA_ONCE: OnceLock<Schema> = OnceLock::new();
        SCHEMA_ONCE.get_or_init(|| Schema::load(Path::new(SCHEMA)).expect("schema loads"))
    }

    fn release(version: Value, status: &str) -> Value {
        json!({
            "addon_plan_names": ["heroku-postgresql:dev"],
            "artifacts": [{"type": "slug", "id": UUID}],
            "app": {"name": "web", "id": UUID},
            "created_at": "2012-01-01T12:00:00Z",
            "description": "Added new feature",
            "id": UUID,
            "updated_at": "2012-01-01T12:00:00Z",
            "slug": {"id": UUID},
            "status": status,
            "user": {"id": UUID, "email": "username@example.com"},
            "version": version,
            "current": true,
            "output_stream_url": null,
            "eligible_for_rollback": true
        })
    }

    fn dyno() -> Value {
        json!({
            "attach_url": null,
            "command": "bash",
            "created_at": "2012-01-01T12:00:00Z",
            "id": UUID,
            "name": "web.1",
            "release": {"id": UUID, "version": 11},
            "app": {"name": "web", "id": UUID},
            "size": "standard-1X",
            "state": "up",
            "type": "web",
            "updated_at": "2012-01-01T12:00:00Z"
        })
    }

    fn assert_names(problems: &[String], needles: &[&str]) {
        assert!(!problems.is_empty(), "expected problems");
        for needle in needles {
            assert!(problems.iter().any(|p| p.contains(needle)), "no problem mentions {needle:?}: {problems:#?}");
        }
    }

    #[test]
    fn load_and_check_timing() {
        fn send_sync<T: Send + Sync + Clone>() {}
        send_sync::<Schema>();
        let start = Instant::now();
        let s = Schema::load(Path::new(SCHEMA)).unwrap();
        let load = start.elapsed();
        let body = json!([release(json!(11), "succeeded")]);
        let start = Instant::now();
        assert!(s.check_response("GET", "/apps/web/releases", &body).is_empty());
        let cold = start.elapsed();
        let start = Instant::now();
        assert!(s.check_response("GET", "/apps/web/releases", &body).is_empty());
        eprintln!("load {load:?} ({} links); first check {cold:?}; cached {:?}", s.inner.links.len(), start.elapsed());
    }

    #[test]
    fn every_link_compiles() {
        let s = Schema::load(Path::new(SCHEMA)).unwrap();
        let start = Instant::now();
        for link in &s.inner.links {
            for side in [Side::Request, Side::Response] {
                let problems = link.problems(&s.inner.definitions, side, &json!({}));
                assert!(!problems.iter().any(|p| p.starts_with("cannot be checked")), "{}: {problems:?}", link.title);
            }
        }
        eprintln!("compiled all {} links in {:?}", s.inner.links.len(), start.elapsed());
    }

    #[test]
    fn release_list_answer() {
        let s = schema();
        let path = "/apps/web/releases";
        let good = json!([release(json!(11), "succeeded"), release(json!(12), "pending")]);

        assert_eq!(s.check_response("GET", path, &good), Vec::<String>::new());
        assert_eq!(s.check_response("get", path, &good), Vec::<String>::new());

        let running = json!([release(json!(11), "running")]);
        assert_eq!(
            s.check_response("GET", path, &running),
            vec![
                r#"GET /apps/web/releases: response at "/0/status": value is not one of "failed", "pending" or 2 other candidates"#
            ]
        );

        let string_version = json!([release(json!("11"), "succeeded")]);
        let problems = s.check_response("GET", path, &string_version);
        assert_names(&problems, &["\"/0/version\"", "integer"]);
        // Masked: the offending value itself is not echoed.
        assert!(!problems.iter().any(|p| p.contains("\"11\"")), "{problems:#?}");
    }

    #[test]
    fn single_release() {
        let s = schema();
        let path = "/apps/web/releases/v12";
        assert_eq!(s.check_response("GET", path, &release(json!(12), "succeeded")), Vec::<String>::new());
        // The instances link is not picked for a one-element path: an array is wrong here.
        assert_names(&s.check_response("GET", path, &json!([])), &["\"\"", "object"]);
    }

    #[test]
    fn literal_links_win() {
        let s = schema();
        // "/teams/permissions" (team-app-permission list) over "/teams/{team}" (team info).
        assert_eq!(s.check_response("GET", "/teams/permissions", &json!([])), Vec::<String>::new());
        assert_names(&s.check_response("GET", "/teams/acme", &json!([])), &["object"]);
        // Equal literal counts: "/teams/apps/{app}" (an app) over "/teams/{team}/apps" (a list).
        assert_names(&s.check_response("GET", "/teams/apps/apps", &json!([])), &["object"]);
    }

    #[test]
    fn rollback_body() {
        let s = schema();
        let path = "/apps/web/releases";
        assert_eq!(s.check_request("POST", path, Some(&json!({"release": UUID}))), Vec::<String>::new());
        assert_eq!(s.check_request("POST", path, Some(&json!({"slug": UUID}))), Vec::<String>::new());
        // Two equally specific links (Create, Rollback): each one's problems are named.
        assert_eq!(
            s.check_request("POST", path, Some(&json!({"release": 42}))),
            vec![
                r#"POST /apps/web/releases [Create]: request at "": "slug" is a required property"#,
                r#"POST /apps/web/releases [Rollback]: request at "/release": value is not of type "string""#,
            ]
        );
        assert_names(&s.check_request("POST", path, Some(&json!({"release": "v42"}))), &["uuid"]);
    }

    #[test]
    fn formation_batch_update() {
        let s = schema();
        let path = "/apps/web/formation";
        let good = json!({"updates": [{"type": "web", "quantity": 2}]});
        assert_eq!(s.check_request("PATCH", path, Some(&good)), Vec::<String>::new());
        // formation/definitions/update has additionalProperties: false (callers handle docker_image).
        let image = json!({"updates": [{"type": "web", "docker_image": "sha256:abc"}]});
        assert_names(&s.check_request("PATCH", path, Some(&image)), &["\"/updates/0\"", "docker_image"]);
        // The batch answer is an array of formations, per its targetSchema.
        let answer = json!([{
            "app": {"name": "web", "id": UUID}, "command": "bundle exec rails server -p $PORT",
            "created_at": "2012-01-01T12:00:00Z", "id": UUID, "quantity": 2, "size": "standard-1X",
            "type": "web", "updated_at": "2012-01-01T12:00:00Z"
        }]);
        assert_eq!(s.check_response("PATCH", path, &answer), Vec::<String>::new());
        assert_names(&s.check_response("PATCH", path, &answer[0]), &["array"]);
    }

    #[test]
    fn build_create_body() {
        let s = schema();
        let body = json!({"source_blob": {"url": "https://example.com/source.tgz?token=xyz", "version": "v1.3.0"}});
        assert_eq!(s.check_request("POST", "/apps/web/builds", Some(&body)), Vec::<String>::new());
        assert_names(&s.check_request("POST", "/apps/web/builds", Some(&json!({}))), &["source_blob"]);
        assert_names(&s.check_request("POST", "/apps/web/builds", None), &["source_blob"]);
    }

    #[test]
    fn unknown_path_and_method() {
        let s = schema();
        assert_eq!(s.check_request("GET", "/nope/web", None), vec!["no link in the schema for GET /nope/web"]);
        assert_eq!(
            s.check_response("PUT", "/apps/web/releases", &json!([])),
            vec!["no link in the schema for PUT /apps/web/releases"]
        );
        assert_eq!(s.check_request("GET", "/apps//releases", None).len(), 1);
    }

    #[test]
    fn link_without_schema_takes_no_body() {
        let s = schema();
        assert!(s.check_request("POST", "/apps/web/sources", None).is_empty());
        assert!(s.check_request("POST", "/apps/web/sources", Some(&json!({}))).is_empty());
        assert_names(&s.check_request("POST", "/apps/web/sources", Some(&json!({"x": 1}))), &["no body"]);
    }

    #[test]
    fn dyno_list_is_an_array() {
        let s = schema();
        assert_eq!(s.check_response("GET", "/apps/web/dynos?x=1", &json!([dyno(), dyno()])), Vec::<String>::new());
        assert_names(&s.check_response("GET", "/apps/web/dynos", &dyno()), &["\"\"", "array"]);
        let mut bad = dyno();
        bad["created_at"] = json!("yesterday");
        assert_names(
            &s.check_response("GET", "/apps/web/dynos", &json!([dyno(), bad])),
            &["\"/1/created_at\"", "date-time"],
        );
    }
}
