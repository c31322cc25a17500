//! The ECS provider's own inputs: the cluster and service, the container whose image
//! changes, an optional task-definition template (as amazon-ecs-render-task-definition
//! users keep one), environment variables merged into the container, the region, and
//! the keys: given, from AWS_* variables, or GitHub's OIDC token traded for a role's.
//! All of it is checked here, before any request.

use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use crate::aws::credentials::Given;
use crate::http::HttpClient;
use crate::inputs::{InputError, Problems, RawInputs};
use crate::providers::registration::{Account, ProviderSettings};
use crate::secret::Secret;

/// The largest template read: a real one is a few KiB.
const MAX_TEMPLATE_BYTES: u64 = 1024 * 1024;

#[derive(Debug, Clone)]
pub struct Settings {
    pub cluster: String,
    pub service: String,
    /// The container whose image changes; empty: the only one, or the one the load
    /// balancer sends traffic to.
    pub container: Option<String>,
    /// The template read from `task-definition`, when given.
    pub template: Option<Value>,
    pub environment: Vec<(String, String)>,
    pub region: String,
    pub given: Given,
}

impl ProviderSettings for Settings {
    fn build(&self, account: &Account, http: &HttpClient) -> anyhow::Result<Box<dyn crate::providers::Provider>> {
        Ok(Box::new(super::EcsProvider::new(self.clone(), account.api_url, http.clone())?))
    }
}

/// `app` and `service` name the same thing: either fills the other; a service given by
/// its ARN gives the app its name (the ARN's last part).
pub fn defaults(raw: &RawInputs, _workspace: &Path) -> Result<Option<RawInputs>, InputError> {
    match (raw.get("app"), raw.get("service")) {
        (None, Some(service)) => {
            let mut merged = raw.clone();
            merged.set("app", service.rsplit('/').next().unwrap_or(service));
            Ok(Some(merged))
        }
        _ => Ok(None),
    }
}

pub fn configure(raw: &RawInputs, workspace: &Path, p: &mut Problems) -> Option<Arc<dyn ProviderSettings>> {
    let before = p.0.len();
    let service = raw.get("service").or(raw.get("app")).unwrap_or_default().to_string();
    let cluster = raw.get("cluster").unwrap_or("default").to_string();
    let container = raw.get("container-name").unwrap_or_default().to_string();
    for (input, value) in [("cluster", &cluster), ("service", &service), ("container-name", &container)] {
        if !value.is_empty() && !valid_name(value) {
            p.add(
                input,
                format!("'{value}' is not an ECS name or ARN"),
                "Use letters, digits, '-' and '_' (at most 255), or the ARN.",
            );
        }
    }
    let region = raw.get("aws-region").unwrap_or_default().to_string();
    if region.is_empty() {
        p.add(
            "aws-region",
            "is required with provider ecs",
            format!("Set {} (e.g. us-east-1), or AWS_REGION in the environment.", p.name("aws-region")),
        );
    } else if !valid_region(&region) {
        p.add("aws-region", format!("'{region}' is not a region name"), "Use a region such as us-east-1 or eu-west-2.");
    }
    let environment = environment(raw, p);
    let template = template(raw, workspace, p);
    // With both a template and a container named, the container is checked now.
    if let (Some(t), Some(name)) = (&template, raw.get("container-name")) {
        let names = super::task_definition::containers(t);
        if !names.contains(&name) {
            p.add(
                "container-name",
                format!(
                    "'{name}' is not a container of the task-definition template; its containers are: {}",
                    names.join(", ")
                ),
                "Set it to one of them.",
            );
        }
    }
    let given = keys(raw, p);
    if p.0.len() > before {
        return None;
    }
    Some(Arc::new(Settings {
        cluster,
        service,
        container: raw.get("container-name").map(str::to_string),
        template,
        environment,
        region,
        given,
    }))
}

/// `us-east-1`, `eu-central-2`, `us-gov-west-1`, `cn-north-1`: letters, words, a number.
fn valid_region(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    match parts.as_slice() {
        [area, middle @ .., number] if !middle.is_empty() => {
            area.len() == 2
                && area.chars().all(|c| c.is_ascii_lowercase())
                && middle.iter().all(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase()))
                && !number.is_empty()
                && number.chars().all(|c| c.is_ascii_digit())
        }
        _ => false,
    }
}

/// A name ECS takes (letters, digits, `-`, `_`, at most 255), or an ARN of printable
/// characters.
fn valid_name(name: &str) -> bool {
    match name.strip_prefix("arn:aws") {
        Some(_) => name.len() <= 2048 && name.chars().all(|c| c.is_ascii_graphic()),
        None => name.len() <= 255 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
    }
}

/// `NAME=value` lines.
fn environment(raw: &RawInputs, p: &mut Problems) -> Vec<(String, String)> {
    let Some(text) = raw.get("environment-variables") else { return Vec::new() };
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate().map(|(n, l)| (n + 1, l.trim())).filter(|(_, l)| !l.is_empty()) {
        match line.split_once('=') {
            Some((name, _)) if out.iter().any(|(seen, _)| seen == name) => {
                p.add("environment-variables", format!("line {n} sets {name} again"), "Set each variable once.")
            }
            Some((name, value)) if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
                out.push((name.to_string(), value.to_string()));
            }
            // Only the line's number: its value may be a secret.
            _ => p.add(
                "environment-variables",
                format!("line {n} is not NAME=value"),
                "Write one variable per line, e.g. LOG_LEVEL=info (names: letters, digits and _).",
            ),
        }
    }
    out
}

/// The template file, when given: a regular file of JSON with a family and containers,
/// inside the workspace (the checked-out repository), read no further than 1 MiB.
fn template(raw: &RawInputs, workspace: &Path, p: &mut Problems) -> Option<Value> {
    use std::io::Read;
    let name = raw.get("task-definition")?;
    let path = workspace.join(name);
    let fix = format!(
        "Point {} at a task definition JSON file in the workspace (aws ecs describe-task-definition --query taskDefinition writes one), or leave it empty to start from the live one.",
        p.name("task-definition")
    );
    let inside = match (std::fs::canonicalize(&path), std::fs::canonicalize(workspace)) {
        (Ok(file), Ok(root)) => file.starts_with(root).then_some(file),
        (Err(e), _) => {
            p.add("task-definition", format!("{} cannot be read: {e}", path.display()), fix);
            return None;
        }
        (_, Err(_)) => Some(path.clone()),
    };
    let Some(file) = inside else {
        p.add("task-definition", format!("{name} is outside the workspace"), fix);
        return None;
    };
    let opened = std::fs::File::open(&file).and_then(|f| Ok((f.metadata()?, f)));
    let text = match opened {
        Ok((meta, f)) if meta.is_file() => {
            let mut text = String::new();
            match f.take(MAX_TEMPLATE_BYTES + 1).read_to_string(&mut text) {
                Ok(n) if n as u64 > MAX_TEMPLATE_BYTES => Err("is larger than 1 MiB".to_string()),
                Ok(_) => Ok(text),
                Err(e) => Err(format!("cannot be read as text: {e}")),
            }
        }
        Ok(_) => Err("is not a regular file (a directory, a device or a pipe)".to_string()),
        Err(e) => Err(format!("cannot be read: {e}")),
    };
    let parsed = text.and_then(|t| serde_json::from_str::<Value>(&t).map_err(|e| format!("is not JSON ({e})")));
    match parsed {
        Ok(v)
            if v.get("family").and_then(Value::as_str).is_some_and(|f| !f.is_empty())
                && v.get("containerDefinitions").and_then(Value::as_array).is_some_and(|c| !c.is_empty()) =>
        {
            Some(v)
        }
        Ok(_) => {
            p.add("task-definition", format!("{} has no family or no containerDefinitions", path.display()), fix);
            None
        }
        Err(e) => {
            p.add("task-definition", format!("{} {e}", path.display()), fix);
            None
        }
    }
}

/// Where the keys come from; a role needs the runner's OIDC token, which only a job
/// with `permissions: id-token: write` may ask for.
fn keys(raw: &RawInputs, p: &mut Problems) -> Given {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let mut given = Given {
        access_key_id: raw.get("aws-access-key-id").map(str::to_string),
        secret_access_key: raw.get("aws-secret-access-key").map(Secret::new),
        session_token: raw.get("aws-session-token").map(Secret::new),
        role_to_assume: raw.get("role-to-assume").map(str::to_string),
        id_token_url: env("ACTIONS_ID_TOKEN_REQUEST_URL"),
        id_token_request_token: env("ACTIONS_ID_TOKEN_REQUEST_TOKEN").map(Secret::new),
        ..Given::default()
    };
    for (input, value) in [
        ("aws-access-key-id", given.access_key_id.as_deref()),
        ("aws-secret-access-key", given.secret_access_key.as_ref().map(Secret::expose)),
        ("aws-session-token", given.session_token.as_ref().map(Secret::expose)),
    ] {
        if value.is_some_and(|v| v.chars().any(|c| c.is_control() || c.is_whitespace())) {
            p.add(input, "contains spaces or control characters", "Copy the key again without line breaks.");
        }
    }
    match (&given.role_to_assume, &given.access_key_id, &given.secret_access_key) {
        (Some(role), _, _) => {
            if !role.starts_with("arn:aws") || !role.contains(":role/") {
                p.add("role-to-assume", format!("'{role}' is not a role ARN"), "Use arn:aws:iam::ACCOUNT:role/NAME.");
            }
            // The runner's token goes to this URL: held to api-url's rules.
            if let Some(url) = &given.id_token_url {
                let checked = if url.chars().any(|c| c.is_control()) {
                    Err("it contains control characters".to_string())
                } else {
                    url::Url::parse(url).map_err(|e| e.to_string()).and_then(|u| crate::inputs::check_base_url(&u))
                };
                if let Err(why) = checked {
                    p.add(
                        "role-to-assume",
                        format!("needs the runner's OIDC token, and ACTIONS_ID_TOKEN_REQUEST_URL cannot be used: {why}"),
                        "The runner sets it for a job with `permissions: id-token: write`; do not set it by hand.",
                    );
                }
            }
            if given.id_token_url.is_none() || given.id_token_request_token.is_none() {
                p.add(
                    "role-to-assume",
                    "needs the runner's OIDC token, and this job may not ask for one (ACTIONS_ID_TOKEN_REQUEST_URL is not set)",
                    "Add `permissions: id-token: write` to the job, or give aws-access-key-id and aws-secret-access-key instead.",
                );
            }
            // Keys beside a role (an earlier step's AWS_* variables) are not used: the
            // role's are.
            given.access_key_id = None;
            given.secret_access_key = None;
            given.session_token = None;
        }
        (None, Some(_), Some(_)) => {}
        (None, Some(_), None) => p.add(
            "aws-secret-access-key",
            "is missing: aws-access-key-id is given, and the two go together",
            "Give both (or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, and neither input), or role-to-assume.",
        ),
        (None, None, Some(_)) => p.add(
            "aws-access-key-id",
            "is missing: aws-secret-access-key is given, and the two go together",
            "Give both (or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, and neither input), or role-to-assume.",
        ),
        (None, None, None) => p.add(
            "role-to-assume",
            "is required with provider ecs when no AWS keys are given, and none were",
            "Set role-to-assume (with permissions id-token: write: no long-lived keys), or aws-access-key-id and aws-secret-access-key from secrets (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY).",
        ),
    }
    given
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inputs::Surface;

    fn problems_of(pairs: &[(&str, &str)], workspace: &Path) -> Vec<String> {
        let mut raw = RawInputs::of(&[("provider", "ecs"), ("service", "web"), ("aws-region", "us-east-1")]);
        for (k, v) in pairs {
            raw.set(k, *v);
        }
        raw.set("aws-access-key-id", "AKIDEXAMPLE");
        raw.set("aws-secret-access-key", "secret");
        let mut p = Problems::new(Surface::Action);
        configure(&raw, workspace, &mut p);
        p.0.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn regions_are_checked_by_their_shape() {
        for good in ["us-east-1", "eu-central-2", "us-gov-west-1", "cn-north-1", "ap-southeast-5"] {
            assert!(valid_region(good), "{good}");
        }
        for bad in ["us-east1", "US-EAST-1", "useast", "us--1", "us-east-", "e-west-1", "us-east-1a"] {
            assert!(!valid_region(bad), "{bad}");
        }
    }

    #[test]
    fn a_template_outside_the_workspace_or_not_a_small_regular_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        std::fs::create_dir(&ws).unwrap();
        let outside = dir.path().join("td.json");
        std::fs::write(&outside, r#"{"family":"web","containerDefinitions":[{"name":"web","image":"x"}]}"#).unwrap();
        std::os::unix::fs::symlink(&outside, ws.join("link.json")).unwrap();
        let said = problems_of(&[("task-definition", "../td.json")], &ws).join("\n");
        assert!(said.contains("outside the workspace"), "{said}");
        let said = problems_of(&[("task-definition", "link.json")], &ws).join("\n");
        assert!(said.contains("outside the workspace"), "a link out of it too: {said}");
        std::fs::write(ws.join("big.json"), vec![b' '; 2 * 1024 * 1024]).unwrap();
        let said = problems_of(&[("task-definition", "big.json")], &ws).join("\n");
        assert!(said.contains("larger than 1 MiB"), "{said}");
        std::fs::create_dir(ws.join("dir.json")).unwrap();
        let said = problems_of(&[("task-definition", "dir.json")], &ws).join("\n");
        assert!(said.contains("not a regular file"), "{said}");
        std::fs::copy(&outside, ws.join("td.json")).unwrap();
        assert!(problems_of(&[("task-definition", "td.json")], &ws).is_empty());
        let said = problems_of(&[("task-definition", "td.json"), ("container-name", "api")], &ws).join("\n");
        assert!(
            said.contains("'api' is not a container of the task-definition template; its containers are: web"),
            "{said}"
        );
    }

    #[test]
    fn a_bad_environment_line_is_named_by_its_number_never_its_value() {
        let ws = tempfile::tempdir().unwrap();
        let said = problems_of(&[("environment-variables", "LOG_LEVEL=info\nhunter2-password")], ws.path()).join("\n");
        assert!(said.contains("line 2 is not NAME=value"), "{said}");
        assert!(!said.contains("hunter2"), "{said}");
        let said = problems_of(&[("environment-variables", "A=1\nA=2")], ws.path()).join("\n");
        assert!(said.contains("line 2 sets A again"), "{said}");
    }
}
