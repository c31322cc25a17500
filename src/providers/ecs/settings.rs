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

/// `app` and `service` name the same thing: either fills the other.
pub fn defaults(raw: &RawInputs, _workspace: &Path) -> Result<Option<RawInputs>, InputError> {
    match (raw.get("app"), raw.get("service")) {
        (None, Some(service)) => {
            let mut merged = raw.clone();
            merged.set("app", service);
            Ok(Some(merged))
        }
        _ => Ok(None),
    }
}

pub fn configure(raw: &RawInputs, workspace: &Path, p: &mut Problems) -> Option<Arc<dyn ProviderSettings>> {
    let before = p.0.len();
    let service = raw.get("service").or(raw.get("app")).unwrap_or_default().to_string();
    let cluster = raw.get("cluster").unwrap_or("default").to_string();
    for (input, value) in [("cluster", &cluster), ("service", &service)] {
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
    } else if !region.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
        p.add("aws-region", format!("'{region}' is not a region name"), "Use a region such as us-east-1 or eu-west-2.");
    }
    let environment = environment(raw, p);
    let template = template(raw, workspace, p);
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

fn valid_name(name: &str) -> bool {
    name.starts_with("arn:aws")
        || (name.len() <= 255 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
}

/// `NAME=value` lines.
fn environment(raw: &RawInputs, p: &mut Problems) -> Vec<(String, String)> {
    let Some(text) = raw.get("environment-variables") else { return Vec::new() };
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match line.split_once('=') {
            Some((name, value)) if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
                out.push((name.to_string(), value.to_string()));
            }
            _ => p.add(
                "environment-variables",
                format!("'{line}' is not NAME=value"),
                "Write one variable per line, e.g. LOG_LEVEL=info (names: letters, digits and _).",
            ),
        }
    }
    out
}

/// The template file, when given: a regular file of JSON with a family and containers.
fn template(raw: &RawInputs, workspace: &Path, p: &mut Problems) -> Option<Value> {
    let name = raw.get("task-definition")?;
    let path = workspace.join(name);
    let fix = format!(
        "Point {} at a task definition JSON file in the workspace (aws ecs describe-task-definition --query taskDefinition writes one), or leave it empty to start from the live one.",
        p.name("task-definition")
    );
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(e) => {
            p.add("task-definition", format!("{} cannot be read: {e}", path.display()), fix);
            return None;
        }
    };
    if !meta.is_file() || meta.len() > MAX_TEMPLATE_BYTES {
        p.add("task-definition", format!("{} is not a regular file of at most 1 MiB", path.display()), fix);
        return None;
    }
    let parsed = std::fs::read_to_string(&path)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str::<Value>(&t).map_err(|e| format!("is not JSON ({e})")));
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
            if given.id_token_url.is_none() || given.id_token_request_token.is_none() {
                p.add(
                    "role-to-assume",
                    "needs the runner's OIDC token, and this job may not ask for one (ACTIONS_ID_TOKEN_REQUEST_URL is not set)",
                    "Add `permissions: id-token: write` to the job, or give aws-access-key-id and aws-secret-access-key instead.",
                );
            }
            // Keys given beside a role are not used: say so rather than guess.
            given.access_key_id = None;
            given.secret_access_key = None;
            given.session_token = None;
        }
        (None, Some(_), Some(_)) => {}
        (None, Some(_), None) | (None, None, Some(_)) => p.add(
            "aws-secret-access-key",
            "and aws-access-key-id go together, and only one is given",
            "Give both (or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), or role-to-assume.",
        ),
        (None, None, None) => p.add(
            "role-to-assume",
            "or AWS keys are required with provider ecs, and none were given",
            "Set role-to-assume (with permissions id-token: write: no long-lived keys), or aws-access-key-id and aws-secret-access-key from secrets (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY).",
        ),
    }
    given
}
