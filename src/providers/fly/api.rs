//! Fly Machines API wire types: only the fields safe-deploy reads. A machine's
//! `config` stays a JSON value, so that restoring it never drops a field we do not know.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Process groups that are not the app's serving machines.
pub const RELEASE_COMMAND_GROUP: &str = "fly_app_release_command";
const NON_APP_GROUPS: [&str; 3] = [RELEASE_COMMAND_GROUP, "fly_app_console", "fly_app_test_machine_command"];

/// Metadata key tagging machines this tool created, so a retry or a rollback finds them.
pub const LAUNCH_TAG: &str = "safe_deploy_launch_id";
/// Metadata key on a machine recreated by a rollback: the id of the machine it replaces.
pub const RESTORES_TAG: &str = "safe_deploy_restores";

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Machine {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub region: String,
    #[serde(default)]
    pub instance_id: String,
    #[serde(default)]
    pub config: Option<Value>,
    #[serde(default)]
    pub incomplete_config: Option<Value>,
    #[serde(default)]
    pub host_status: Option<String>,
    #[serde(default)]
    pub cordoned: bool,
    #[serde(default)]
    pub checks: Vec<CheckStatus>,
    #[serde(default)]
    pub events: Vec<MachineEvent>,
    #[serde(default)]
    pub nonce: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct CheckStatus {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub output: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct MachineEvent {
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub timestamp: i64,
    #[serde(default)]
    pub request: Option<Value>,
}

impl MachineEvent {
    /// The exit code of an `exit` event: `request.MonitorEvent.exit_event` first (as
    /// fly-go reads it), then `request.exit_event`.
    pub fn exit_code(&self) -> Option<i64> {
        let req = self.request.as_ref()?;
        let from = |v: &Value| v.get("exit_event")?.get("exit_code")?.as_i64();
        req.get("MonitorEvent").and_then(from).or_else(|| from(req))
    }
}

impl Machine {
    pub fn config(&self) -> Option<&Value> {
        self.config.as_ref()
    }

    pub fn image(&self) -> &str {
        self.config().and_then(|c| c.get("image")).and_then(Value::as_str).unwrap_or("")
    }

    /// A metadata value, read from the full config or, when the host is unreachable,
    /// the partial one Fly answers with then.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.config.as_ref().or(self.incomplete_config.as_ref())?.get("metadata")?.get(key)?.as_str()
    }

    pub fn process_group(&self) -> &str {
        self.metadata("fly_process_group").or_else(|| self.metadata("process_group")).unwrap_or("app")
    }

    /// Not on its way out, and not a release-command, console or test machine.
    pub fn is_active(&self) -> bool {
        !NON_APP_GROUPS.contains(&self.process_group()) && !matches!(self.state.as_str(), "destroyed" | "destroying")
    }

    /// Made by a deploy (`fly_platform_version` v2), as flyctl counts the machines it
    /// replaces; `fly machine run` machines lack it and are left alone.
    pub fn is_deployed(&self) -> bool {
        self.metadata("fly_platform_version") == Some("v2")
    }

    /// A serving machine of the app with a readable config: what a deploy replaces.
    pub fn is_active_app_machine(&self) -> bool {
        self.is_active() && self.is_deployed() && self.config.is_some()
    }

    /// Whether the machine's config defines health checks Fly runs.
    pub fn has_checks(&self) -> bool {
        config_has_checks(self.config())
    }

    /// Checks that count: the platform's `bg_deployments_compat*` entries are not ours.
    pub fn real_checks(&self) -> impl Iterator<Item = &CheckStatus> {
        self.checks.iter().filter(|c| !c.name.starts_with("bg_deployments_compat"))
    }

    /// At least one result, and all passing.
    pub fn checks_passing(&self) -> bool {
        let mut any = false;
        for c in self.real_checks() {
            any = true;
            if c.status != "passing" {
                return false;
            }
        }
        any
    }

    /// The latest exit event, if the machine has exited.
    pub fn last_exit(&self) -> Option<&MachineEvent> {
        self.events.iter().filter(|e| e.kind == "exit").max_by_key(|e| e.timestamp)
    }
}

pub fn config_has_checks(config: Option<&Value>) -> bool {
    let Some(c) = config else { return false };
    let top = c.get("checks").and_then(Value::as_object).is_some_and(|m| !m.is_empty());
    let services = c.get("services").and_then(Value::as_array).is_some_and(|s| {
        s.iter().any(|svc| svc.get("checks").and_then(Value::as_array).is_some_and(|a| !a.is_empty()))
    });
    top || services
}

/// A volume: what a new machine needs a free one of, by name and region.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Volume {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub region: String,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub attached_machine_id: Option<String>,
    #[serde(default)]
    pub host_status: Option<String>,
}

impl Volume {
    /// Not attached to any machine, on a reachable host, and not going away.
    pub fn is_free(&self) -> bool {
        self.attached_machine_id.as_deref().is_none_or(str::is_empty)
            && self.host_status.as_deref().is_none_or(|s| s == "ok")
            && !matches!(self.state.as_str(), "destroyed" | "destroying" | "pending_destroy")
    }
}

/// A lease, in either shape Fly answers with: flat (the spec) or wrapped in `data` (the docs, fly-go).
#[derive(Debug, Clone, Deserialize)]
pub struct LeaseAnswer {
    pub data: Option<Lease>,
    #[serde(flatten)]
    pub flat: Lease,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Lease {
    #[serde(default)]
    pub nonce: Option<String>,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub expires_at: Option<i64>,
}

impl LeaseAnswer {
    pub fn nonce(&self) -> Option<&str> {
        self.data.as_ref().and_then(|d| d.nonce.as_deref()).or(self.flat.nonce.as_deref())
    }

    pub fn description(&self) -> &str {
        self.data.as_ref().and_then(|d| d.description.as_deref()).or(self.flat.description.as_deref()).unwrap_or("")
    }
}

/// Fly's error body: `message` first, then `error` (as fly-go reads it).
#[derive(Debug, Default, Deserialize)]
pub struct ErrorBody {
    pub message: Option<String>,
    pub error: Option<String>,
}

impl ErrorBody {
    pub fn text(body: &[u8]) -> String {
        match serde_json::from_slice::<ErrorBody>(body) {
            Ok(e) => e.message.or(e.error).unwrap_or_default(),
            Err(_) => String::from_utf8_lossy(body).chars().take(200).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn exit_codes_are_read_where_fly_go_reads_them() {
        let monitor = MachineEvent {
            request: Some(json!({"MonitorEvent": {"exit_event": {"exit_code": 3}}})),
            ..Default::default()
        };
        let plain = MachineEvent { request: Some(json!({"exit_event": {"exit_code": 1}})), ..Default::default() };
        assert_eq!((monitor.exit_code(), plain.exit_code()), (Some(3), Some(1)));
    }

    #[test]
    fn checks_pass_only_with_a_result_and_ignore_compat_entries() {
        let check =
            |name: &str, status: &str| CheckStatus { name: name.into(), status: status.into(), output: String::new() };
        let mut m = Machine::default();
        assert!(!m.checks_passing(), "no result yet is not passing");
        m.checks = vec![check("bg_deployments_compat_x", "critical"), check("servicecheck-00-http-8080", "passing")];
        assert!(m.checks_passing());
        m.checks.push(check("alive", "warning"));
        assert!(!m.checks_passing());
    }

    #[test]
    fn release_command_and_console_machines_are_not_app_machines() {
        let with_group = |g: &str, state: &str| Machine {
            state: state.into(),
            config: Some(json!({"metadata": {"fly_process_group": g, "fly_platform_version": "v2"}})),
            ..Default::default()
        };
        assert!(with_group("app", "started").is_active_app_machine());
        assert!(with_group("web", "stopped").is_active_app_machine());
        assert!(!with_group(RELEASE_COMMAND_GROUP, "started").is_active_app_machine());
        assert!(!with_group("fly_app_console", "started").is_active_app_machine());
        assert!(!with_group("app", "destroyed").is_active_app_machine());
        let run_by_hand =
            Machine { state: "started".into(), config: Some(json!({"metadata": {}})), ..Default::default() };
        assert!(run_by_hand.is_active() && !run_by_hand.is_deployed(), "fly machine run: left alone");
    }

    #[test]
    fn leases_parse_flat_and_wrapped() {
        let wrapped: LeaseAnswer =
            serde_json::from_value(json!({"status": "success", "data": {"nonce": "n1"}})).unwrap();
        let flat: LeaseAnswer = serde_json::from_value(json!({"nonce": "n2", "expires_at": 1})).unwrap();
        assert_eq!((wrapped.nonce(), flat.nonce()), (Some("n1"), Some("n2")));
    }
}
