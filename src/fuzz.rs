//! Entry points for the property tests (`tests/properties.rs`) and the long fuzz run
//! (`bench/fuzz`): each takes arbitrary input and must never panic. They cover every
//! input a user controls and every provider answer the code parses. Not part of the
//! action's behaviour.

use std::path::Path;

use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};

use crate::config::{Config, StatusSet};
use crate::health::{excerpt, names_version};
use crate::inputs::parse_duration;
use crate::inputs::{RawInputs, INPUTS};
use crate::providers::fly::api::{ErrorBody, LeaseAnswer, Machine, Volume};
use crate::providers::fly::fly_toml::FlyToml;
use crate::providers::fly::rollout::{dead, Recorded};
use crate::secret::Redactor;

/// Inputs, as `(index into INPUTS, value)` pairs, through validation. Provider files
/// are looked up in `workspace`.
pub fn inputs(pairs: &[(usize, String)], workspace: &Path) {
    let mut raw = RawInputs::default();
    for (i, value) in pairs {
        raw.set(INPUTS[i % INPUTS.len()].name, value.as_str());
    }
    if let Ok(config) = Config::from_inputs_in(&raw, workspace) {
        let _ = config.app_url();
        let _ = config.changes_nothing();
    }
}

/// Values every small parser of the inputs takes.
pub fn values(text: &str) {
    let _ = parse_duration(text);
    let _ = StatusSet::parse(text).map(|s| s.to_string());
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(text) {
        headers.insert(RETRY_AFTER, v);
        let _ = crate::http::retry_after(&headers);
    }
}

/// A Fly answer: a machine, a list of them, a lease, a volume list, an error body.
pub fn fly_answer(bytes: &[u8]) {
    if let Ok(m) = serde_json::from_slice::<Machine>(bytes) {
        machine(m);
    }
    if let Ok(list) = serde_json::from_slice::<Vec<Machine>>(bytes) {
        list.into_iter().for_each(machine);
    }
    if let Ok(lease) = serde_json::from_slice::<LeaseAnswer>(bytes) {
        let _ = (lease.nonce(), lease.description());
    }
    if let Ok(volumes) = serde_json::from_slice::<Vec<Volume>>(bytes) {
        let _ = volumes.iter().filter(|v| v.is_free()).count();
    }
    let _ = ErrorBody::text(bytes);
}

fn machine(m: Machine) {
    let _ = (m.is_active(), m.is_deployed(), m.is_active_app_machine(), m.has_checks(), m.checks_passing());
    let _ = (m.image(), m.process_group(), m.last_exit().and_then(|e| e.exit_code()));
    let _ = dead(&m);
    if let Some(r) = Recorded::of(m) {
        let _ = (r.image(), r.has_checks(), r.has_mounts(), r.process_group());
    }
}

/// fly.toml as a user may write it, turned into a machine config against `existing`.
pub fn fly_toml(text: &str, existing: &[u8]) {
    let Ok(toml) = toml::from_str::<FlyToml>(text) else { return };
    let _ = toml.health_path();
    let existing = serde_json::from_slice(existing).unwrap_or(serde_json::Value::Null);
    for group in ["app", "worker"] {
        let _ = toml.machine_config(group, &existing, "registry.fly.io/web:v2", Path::new("/nonexistent"));
    }
}

/// A health body against an expected version.
pub fn health_body(body: &str, version: &str) {
    let _ = names_version(body, version);
    let _ = excerpt(body);
}

/// A GitHub deployment payload.
pub fn github_payload(bytes: &[u8]) {
    if let Ok(v) = serde_json::from_slice(bytes) {
        let _ = crate::github::record_of(&v);
    }
}

/// Redaction: never panics, and a secret of 8 characters or more never survives in
/// text that contains it. Returns false when it did.
pub fn redaction(secret: &str, text: &str) -> bool {
    let r = Redactor::default();
    r.add(secret);
    let out = r.redact(&format!("{text}{secret}{text}"));
    let secret = secret.trim();
    secret.chars().count() < 8 || !out.contains(secret)
}
