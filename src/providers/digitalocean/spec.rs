//! The parts of an App Platform app spec a deploy reads and changes: the components
//! (services, workers, jobs) with their sources, instance counts and health checks,
//! and an image reference turned into the spec's image source. Pure: no requests.

use serde_json::{json, Value};

/// The spec's component lists that can run an image or a build of a repository.
const KINDS: [&str; 3] = ["services", "workers", "jobs"];

/// An image reference as App Platform's spec takes it (`apps_image_source_spec`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// `DOCR`, `GHCR` or `DOCKER_HUB`.
    pub registry_type: &'static str,
    /// The DOCR registry name, the GitHub owner, or the Docker Hub namespace.
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parses `registry.digitalocean.com/REG/REPO`, `ghcr.io/OWNER/REPO` or a Docker Hub
    /// name, each with `:tag` and/or `@sha256:...`.
    pub fn parse(text: &str) -> Result<ImageRef, String> {
        let (name, digest) = match text.split_once('@') {
            Some((n, d)) => (n, Some(d.to_string())),
            None => (text, None),
        };
        if let Some(d) = &digest {
            let hex = d.strip_prefix("sha256:").unwrap_or_default();
            if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(format!("'{d}' is not a sha256 digest (sha256: and 64 hex digits)"));
            }
        }
        // A tag is after the last ':' of the last path part (a registry may carry a port).
        let (path, tag) = match name.rsplit_once(':') {
            Some((p, t)) if !t.contains('/') => (p, Some(t.to_string())),
            _ => (name, None),
        };
        let parts: Vec<&str> = path.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) || tag.as_deref() == Some("") {
            return Err(format!("'{text}' is not an image reference"));
        }
        let host = parts[0];
        let is_host = parts.len() > 1 && (host.contains('.') || host.contains(':') || host == "localhost");
        let (registry_type, registry, repository) = match (is_host, host) {
            (true, "registry.digitalocean.com") if parts.len() == 3 => ("DOCR", parts[1], parts[2].to_string()),
            (true, "registry.digitalocean.com") => {
                return Err(format!(
                    "'{text}' is not registry.digitalocean.com/REGISTRY/REPO (DigitalOcean's registry has one registry name, then the repository)"
                ))
            }
            (true, "ghcr.io") if parts.len() >= 3 => ("GHCR", parts[1], parts[2..].join("/")),
            (true, "docker.io" | "index.docker.io") if parts.len() == 3 => ("DOCKER_HUB", parts[1], parts[2].into()),
            (true, "docker.io" | "index.docker.io") if parts.len() == 2 => ("DOCKER_HUB", "library", parts[1].into()),
            (true, _) => {
                return Err(format!(
                    "'{text}' is on a registry App Platform does not pull from (it takes registry.digitalocean.com/REGISTRY/REPO, ghcr.io/OWNER/REPO and Docker Hub)"
                ))
            }
            (false, _) if parts.len() == 1 => ("DOCKER_HUB", "library", parts[0].into()),
            (false, _) if parts.len() == 2 => ("DOCKER_HUB", parts[0], parts[1].into()),
            (false, _) => return Err(format!("'{text}' has too many path parts for a Docker Hub image")),
        };
        Ok(ImageRef { registry_type, registry: registry.to_string(), repository, tag, digest })
    }

    /// The spec's image source. A digest wins over a tag: the spec takes only one.
    /// `credentials` are the component's encrypted registry credentials, kept as sent.
    pub fn to_spec(&self, credentials: Option<&Value>) -> Value {
        let mut image = json!({ "registry_type": self.registry_type, "repository": self.repository });
        // DOCR takes the account's own registry: its `registry` "must be left empty".
        if self.registry_type != "DOCR" {
            image["registry"] = json!(self.registry);
        }
        match (&self.digest, &self.tag) {
            (Some(d), _) => image["digest"] = json!(d),
            (None, Some(t)) => image["tag"] = json!(t),
            (None, None) => image["tag"] = json!("latest"),
        }
        if let Some(c) = credentials {
            image["registry_credentials"] = c.clone();
        }
        image
    }
}

/// One component of the spec, as a deploy sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Component {
    pub name: String,
    /// `services`, `workers` or `jobs`.
    pub kind: &'static str,
    /// Its image source, when it runs an image.
    pub image: Option<Value>,
    /// Built from a repository (git, github, gitlab, bitbucket).
    pub built: bool,
    pub instances: u64,
    pub autoscaled: bool,
    /// `services[].health_check` as the spec gives it.
    pub health_check: Option<Value>,
}

/// Whether the fields a deploy reads have the types App Platform's description gives
/// them: a mapping with a string `name`; component lists of mappings, each with a
/// string `name`; an image source a mapping of strings. Anything else is said, with
/// where it is, so a spec that would be read as empty is never used.
pub fn check_types(spec: &Value) -> Result<(), String> {
    let kind_of = |v: &Value| match v {
        Value::Null => "nothing",
        Value::Bool(_) => "true or false",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    };
    let Some(top) = spec.as_object() else {
        return Err(format!("it is {}, not a mapping with name and services", kind_of(spec)));
    };
    match top.get("name") {
        None => return Err("it has no name".into()),
        Some(Value::String(_)) => {}
        Some(other) => return Err(format!("name is {}, not text", kind_of(other))),
    }
    for kind in KINDS.iter().chain(&["static_sites"]) {
        let Some(list) = top.get(*kind) else { continue };
        let Some(items) = list.as_array() else {
            return Err(format!("{kind} is {}, not a list", kind_of(list)));
        };
        for (i, c) in items.iter().enumerate() {
            let Some(c) = c.as_object() else {
                return Err(format!("{kind}[{i}] is {}, not a mapping", kind_of(c)));
            };
            match c.get("name") {
                Some(Value::String(_)) => {}
                Some(other) => return Err(format!("{kind}[{i}].name is {}, not text", kind_of(other))),
                None => return Err(format!("{kind}[{i}] has no name")),
            }
            if let Some(image) = c.get("image") {
                let Some(fields) = image.as_object() else {
                    return Err(format!("{kind}[{i}].image is {}, not a mapping", kind_of(image)));
                };
                for field in ["registry_type", "registry", "repository", "tag", "digest"] {
                    match fields.get(field) {
                        None | Some(Value::String(_)) => {}
                        Some(other) => {
                            return Err(format!("{kind}[{i}].image.{field} is {}, not text", kind_of(other)))
                        }
                    }
                }
            }
            if let Some(n) = c.get("instance_count").filter(|n| !n.is_u64()) {
                return Err(format!("{kind}[{i}].instance_count is {n}, not a whole number"));
            }
        }
    }
    Ok(())
}

pub fn components(spec: &Value) -> Vec<Component> {
    let mut out = Vec::new();
    for kind in KINDS {
        for c in spec[kind].as_array().into_iter().flatten() {
            out.push(Component {
                name: c["name"].as_str().unwrap_or_default().to_string(),
                kind,
                image: c.get("image").filter(|i| i.is_object()).cloned(),
                built: ["git", "github", "gitlab", "bitbucket"].iter().any(|k| c.get(*k).is_some_and(Value::is_object)),
                instances: c["instance_count"].as_u64().unwrap_or(1),
                autoscaled: c.get("autoscaling").is_some_and(Value::is_object),
                health_check: c.get("health_check").filter(|h| h.is_object()).cloned(),
            });
        }
    }
    out
}

/// How an image source reads: `repo:tag`, `repo@sha256:...` (what the sandbox keys by).
pub fn image_text(image: &Value) -> String {
    let repo = image["repository"].as_str().unwrap_or("?");
    match (image["digest"].as_str(), image["tag"].as_str()) {
        (Some(d), _) => format!("{repo}@{d}"),
        (None, Some(t)) => format!("{repo}:{t}"),
        (None, None) => format!("{repo}:latest"),
    }
}

/// How an image source is shown to people: a digest cut to its first 12 hex digits.
pub fn image_label(image: &Value) -> String {
    let text = image_text(image);
    match text.split_once("@sha256:") {
        // `get`: a digest that is not ASCII is cut at a character, never inside one.
        Some((repo, hex)) if hex.len() > 12 => match hex.get(..12) {
            Some(short) => format!("{repo}@sha256:{short}"),
            None => text,
        },
        _ => text,
    }
}

/// Which components take the new image when `components` is empty: those already
/// running the same repository, else the only image component there is.
pub fn choose(spec: &Value, image: &ImageRef, named: &[String]) -> Result<Vec<String>, String> {
    let all = components(spec);
    let names =
        |f: &dyn Fn(&Component) -> bool| all.iter().filter(|c| f(c)).map(|c| c.name.clone()).collect::<Vec<_>>();
    if !named.is_empty() {
        for n in named {
            match all.iter().find(|c| &c.name == n) {
                None => {
                    return Err(format!(
                        "the app has no component {n} (it has: {}); fix components",
                        names(&|_| true).join(", ")
                    ))
                }
                Some(c) if c.built => {
                    return Err(format!(
                        "component {n} is built from a repository, not run from an image; leave image empty to build it again, or name image components in components"
                    ))
                }
                Some(_) => {}
            }
        }
        return Ok(named.to_vec());
    }
    let same = names(&|c| c.image.as_ref().is_some_and(|i| i["repository"].as_str() == Some(&image.repository)));
    if !same.is_empty() {
        return Ok(same);
    }
    match names(&|c| c.image.is_some()).as_slice() {
        [one] => Ok(vec![one.clone()]),
        [] => Err("the app has no component that runs an image (they are built from a repository); leave image empty to build them again".into()),
        many => Err(format!(
            "the app runs images in {} and none from repository {}; name the ones to change in components",
            many.join(", "),
            image.repository
        )),
    }
}

/// The spec with `image` in each of `names`; everything else is kept as it is.
pub fn with_image(spec: &Value, image: &ImageRef, names: &[String]) -> Value {
    let mut out = spec.clone();
    for kind in KINDS {
        // `get_mut`, not indexing: an index would add `"jobs": null` to a spec without jobs.
        for c in out.get_mut(kind).and_then(Value::as_array_mut).into_iter().flatten() {
            if names.iter().any(|n| c["name"].as_str() == Some(n)) {
                let credentials = c["image"].get("registry_credentials").cloned();
                let mut new = image.to_spec(credentials.as_ref());
                // Deploy on push follows a tag; a digest pins, so it cannot stay on.
                if image.digest.is_none() {
                    if let Some(push) = c["image"].get("deploy_on_push") {
                        new["deploy_on_push"] = push.clone();
                    }
                }
                c["image"] = new;
            }
        }
    }
    out
}

/// The effective readiness check of a service: the spec's values over App
/// Platform's defaults (delay 0 s, period 10 s, timeout 1 s, success 1, failure 9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub http_path: Option<String>,
    pub initial_delay: u64,
    pub period: u64,
    pub timeout: u64,
    pub success: u64,
    pub failure: u64,
}

impl Readiness {
    pub fn of(check: Option<&Value>) -> Readiness {
        let field =
            |name: &str, default: u64| check.and_then(|c| c[name].as_u64()).filter(|v| *v > 0).unwrap_or(default);
        Readiness {
            http_path: check.and_then(|c| c["http_path"].as_str()).filter(|p| !p.is_empty()).map(str::to_string),
            initial_delay: check.and_then(|c| c["initial_delay_seconds"].as_u64()).unwrap_or(0),
            period: field("period_seconds", 10),
            timeout: field("timeout_seconds", 1),
            success: field("success_threshold", 1),
            failure: field("failure_threshold", 9),
        }
    }

    pub fn describe(&self) -> String {
        let how = match &self.http_path {
            Some(p) => format!("HTTP GET {p}"),
            None => "a TCP connect".into(),
        };
        format!(
            "{how} every {}s (timeout {}s, first after {}s), {} pass(es) to be ready, {} failures to fail",
            self.period, self.timeout, self.initial_delay, self.success, self.failure
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn a_digest_that_is_not_ascii_is_shown_whole_never_cut_inside_a_character() {
        let odd = serde_json::json!({"repository": "web", "digest": "sha256:0123456789aé0123"});
        assert_eq!(image_label(&odd), "web@sha256:0123456789aé0123");
        let plain = serde_json::json!({"repository": "web", "digest": DIGEST});
        assert_eq!(image_label(&plain), "web@sha256:0123456789ab");
    }

    #[test]
    fn image_references_become_the_specs_image_source() {
        let docr = ImageRef::parse(&format!("registry.digitalocean.com/acme/web@{DIGEST}")).unwrap();
        assert_eq!((docr.registry_type, docr.registry.as_str(), docr.repository.as_str()), ("DOCR", "acme", "web"));
        assert_eq!(docr.to_spec(None)["digest"], DIGEST);
        assert!(docr.to_spec(None).get("registry").is_none(), "DOCR's registry must be left empty");
        assert_eq!(ImageRef::parse("ghcr.io/acme/web:v2").unwrap().to_spec(None)["registry"], "acme");
        assert!(docr.to_spec(None).get("tag").is_none(), "a digest and a tag cannot both be sent");
        let ghcr = ImageRef::parse("ghcr.io/acme/shop/web:v2").unwrap();
        assert_eq!(
            (ghcr.registry_type, ghcr.repository.as_str(), ghcr.tag.as_deref()),
            ("GHCR", "shop/web", Some("v2"))
        );
        let hub = ImageRef::parse("nginx").unwrap();
        assert_eq!((hub.registry_type, hub.registry.as_str(), hub.tag.as_deref()), ("DOCKER_HUB", "library", None));
        assert_eq!(hub.to_spec(None)["tag"], "latest");
        assert_eq!(ImageRef::parse("acme/web:1.2").unwrap().registry, "acme");
        assert_eq!(image_label(&docr.to_spec(None)), "web@sha256:0123456789ab");
        assert_eq!(image_label(&ghcr.to_spec(None)), "shop/web:v2");
        assert!(ImageRef::parse("quay.io/acme/web:1").unwrap_err().contains("does not pull from"));
        assert!(ImageRef::parse("registry.digitalocean.com/acme/web@sha256:abc").unwrap_err().contains("digest"));
        assert!(ImageRef::parse("acme//web").is_err());
        assert!(ImageRef::parse("registry.digitalocean.com/web:v2").unwrap_err().contains("REGISTRY/REPO"));
    }

    fn spec() -> Value {
        json!({
            "name": "shop",
            "services": [
                { "name": "web", "instance_count": 2, "image": { "registry_type": "DOCR", "repository": "web", "tag": "v1", "deploy_on_push": { "enabled": true } },
                  "health_check": { "http_path": "/health", "period_seconds": 3 } },
                { "name": "api", "github": { "repo": "acme/api", "branch": "main" } }
            ],
            "workers": [ { "name": "jobs", "image": { "registry_type": "DOCR", "repository": "web", "tag": "v1" } } ]
        })
    }

    #[test]
    fn the_new_image_goes_to_the_components_running_its_repository() {
        let image = ImageRef::parse(&format!("registry.digitalocean.com/acme/web@{DIGEST}")).unwrap();
        assert_eq!(choose(&spec(), &image, &[]).unwrap(), ["web", "jobs"]);
        let other = ImageRef::parse("registry.digitalocean.com/acme/admin:v3").unwrap();
        assert!(choose(&spec(), &other, &[]).unwrap_err().contains("name the ones to change in components"));
        assert!(choose(&spec(), &image, &["api".into()]).unwrap_err().contains("built from a repository"));
        assert!(choose(&spec(), &image, &["nope".into()]).unwrap_err().contains("has no component nope"));
        let changed = with_image(&spec(), &image, &["web".into()]);
        assert_eq!(changed["services"][0]["image"]["digest"], DIGEST);
        assert!(changed["services"][0]["image"].get("deploy_on_push").is_none(), "a digest cannot deploy on push");
        assert_eq!(changed["workers"][0]["image"]["tag"], "v1", "an unnamed component is left alone");
        assert_eq!(changed["services"][1], spec()["services"][1]);
        let only_services = json!({ "name": "shop", "services": [spec()["services"][0].clone()] });
        let changed = with_image(&only_services, &image, &["web".into()]);
        let keys: Vec<&String> = changed.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["name", "services"], "no null is added for the kinds the spec does not have");
    }

    #[test]
    fn a_health_check_left_out_takes_app_platforms_defaults() {
        let web = Readiness::of(components(&spec())[0].health_check.as_ref());
        assert_eq!((web.http_path.as_deref(), web.period, web.timeout, web.failure), (Some("/health"), 3, 1, 9));
        let none = Readiness::of(None);
        assert_eq!((none.http_path, none.initial_delay, none.period, none.success, none.failure), (None, 0, 10, 1, 9));
    }
}
