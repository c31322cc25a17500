//! One machine's record, as flyd keeps it: config, state, instance, lease, events and
//! check results, and the Machine JSON the API answers with.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use super::ids;
use crate::kit::checks::Probe;
use crate::kit::process::Proc;

/// The process group whose machines run release commands.
pub const RELEASE_COMMAND_GROUP: &str = "fly_app_release_command";

/// Events kept per machine; enough for any test, bounded for a long benchmark.
const EVENTS_KEPT: usize = 200;
/// Events embedded in the Machine JSON, newest first.
const EVENTS_SHOWN: usize = 20;

#[derive(Debug, Clone)]
pub struct Lease {
    pub nonce: String,
    pub owner: String,
    pub description: String,
    pub expires_at: SystemTime,
    pub version: String,
}

impl Lease {
    pub fn live(&self) -> bool {
        SystemTime::now() < self.expires_at
    }

    /// The wrapped shape fly-go reads (`{status, data}`); the flat `Lease` fields sit in `data`.
    pub fn to_json(&self) -> Value {
        json!({
            "status": "success",
            "data": {
                "nonce": self.nonce,
                "expires_at": ids::unix_secs(self.expires_at),
                "owner": self.owner,
                "description": self.description,
                "version": self.version,
            }
        })
    }
}

#[derive(Debug, Clone)]
pub struct Event {
    pub id: String,
    pub kind: &'static str,
    pub status: String,
    pub at: SystemTime,
    pub request: Value,
}

impl Event {
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "type": self.kind,
            "status": self.status,
            "source": "flyd",
            "timestamp": ids::unix_millis(self.at),
            "request": self.request,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    pub name: String,
    pub passing: bool,
    pub output: String,
    pub updated_at: String,
}

/// A check from the config that the sandbox can probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckDef {
    pub name: String,
    pub probe: Probe,
    pub timeout: Duration,
}

pub struct Machine {
    pub id: String,
    pub name: String,
    pub region: String,
    pub state: String,
    pub config: Value,
    pub instance_id: String,
    pub private_ip: String,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
    pub cordoned: bool,
    pub lease: Option<Lease>,
    /// Oldest first; shown newest first.
    pub events: Vec<Event>,
    pub checks: Vec<CheckResult>,
    /// Bumped whenever a new process (or a new "starting" without one) takes over,
    /// so late news about an old process is ignored.
    pub generation: u64,
    pub process: Option<Proc>,
    /// The loopback port the current process listens on.
    pub port: Option<u16>,
    /// Held by whichever start, stop, update or destroy is under way.
    pub ops: Arc<tokio::sync::Mutex<()>>,
}

impl Machine {
    pub fn new(id: String, name: String, region: String, config: Value) -> Machine {
        let now = SystemTime::now();
        let r = ids::random_u64();
        Machine {
            private_ip: format!(
                "fdaa:0:{:x}:a7b:{:x}:{:x}:{:x}:2",
                r & 0xfff,
                r >> 16 & 0xfff,
                r >> 32 & 0xffff,
                r >> 48
            ),
            id,
            name,
            region,
            state: "created".into(),
            config,
            instance_id: ids::instance_id(),
            created_at: now,
            updated_at: now,
            cordoned: false,
            lease: None,
            events: Vec::new(),
            checks: Vec::new(),
            generation: 0,
            process: None,
            port: None,
            ops: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    pub fn image(&self) -> String {
        self.config.get("image").and_then(Value::as_str).unwrap_or_default().to_string()
    }

    pub fn process_group(&self) -> String {
        let metadata = self.config.get("metadata");
        let group = |key: &str| metadata.and_then(|m| m.get(key)).and_then(Value::as_str).map(str::to_string);
        group("fly_process_group").or_else(|| group("process_group")).unwrap_or_else(|| "app".into())
    }

    /// The volume its config mounts (a machine mounts one at most).
    pub fn mounted_volume(&self) -> Option<String> {
        let mounts = self.config.get("mounts")?.as_array()?;
        mounts.first()?.get("volume")?.as_str().map(str::to_string)
    }

    /// Whether its config has services, which is what Fly's proxy delivers requests to.
    pub fn has_services(&self) -> bool {
        self.config.get("services").and_then(Value::as_array).is_some_and(|s| !s.is_empty())
    }

    pub fn auto_destroy(&self) -> bool {
        self.config.get("auto_destroy").and_then(Value::as_bool).unwrap_or(false)
    }

    pub fn live_lease(&self) -> Option<&Lease> {
        self.lease.as_ref().filter(|l| l.live())
    }

    /// Whether a write may go ahead: free, or leased and `nonce` is the lease's.
    pub fn lease_allows(&self, nonce: Option<&str>) -> Result<(), String> {
        match self.live_lease() {
            Some(lease) if nonce != Some(lease.nonce.as_str()) => Err(format!(
                "machine {} is leased by {} until {}; send its nonce in the fly-machine-lease-nonce header, or wait for it to expire",
                self.id,
                lease.owner,
                ids::rfc3339(lease.expires_at)
            )),
            _ => Ok(()),
        }
    }

    pub fn set_state(&mut self, state: &str) {
        self.state = state.to_string();
        self.updated_at = SystemTime::now();
    }

    pub fn record(&mut self, kind: &'static str, status: &str, request: Value) {
        self.events.push(Event {
            id: ids::instance_id(),
            kind,
            status: status.to_string(),
            at: SystemTime::now(),
            request,
        });
        if self.events.len() > EVENTS_KEPT {
            self.events.remove(0);
        }
    }

    /// The checks to probe: top-level `checks` keep their names; service checks get
    /// flyd's `servicecheck-NN-TYPE-PORT` names.
    pub fn check_defs(&self) -> Vec<CheckDef> {
        let mut defs = Vec::new();
        if let Some(map) = self.config.get("checks").and_then(Value::as_object) {
            defs.extend(map.iter().filter_map(|(name, check)| check_def(name.clone(), check)));
        }
        let services = self.config.get("services").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        for service in services {
            let port = service.get("internal_port").and_then(Value::as_u64).unwrap_or(0);
            let checks = service.get("checks").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
            for (i, check) in checks.iter().enumerate() {
                let kind = check.get("type").and_then(Value::as_str).unwrap_or("tcp");
                defs.extend(check_def(format!("servicecheck-{i:02}-{kind}-{port}"), check));
            }
        }
        defs
    }

    /// At least one result, every result passing; vacuously true without checks.
    pub fn checks_passing(&self) -> bool {
        let defs = self.check_defs();
        defs.is_empty() || (self.checks.len() >= defs.len() && self.checks.iter().all(|c| c.passing))
    }

    /// Whether the router may send this machine traffic: Fly's proxy delivers only to
    /// machines with services, so one made without them (a worker) takes none.
    pub fn routable(&self) -> bool {
        self.state == "started"
            && !self.cordoned
            && self.port.is_some()
            && self.process_group() == "app"
            && self.has_services()
            && self.checks_passing()
    }

    pub fn to_json(&self, summary: bool) -> Value {
        let mut m = json!({
            "id": self.id,
            "name": self.name,
            "state": self.state,
            "region": self.region,
            "instance_id": self.instance_id,
            "private_ip": self.private_ip,
            "image_ref": image_ref(&self.image()),
            "created_at": ids::rfc3339(self.created_at),
            "updated_at": ids::rfc3339(self.updated_at),
            "cordoned": self.cordoned,
            "host_status": "ok",
        });
        if !summary {
            m["config"] = self.config.clone();
            m["events"] = Value::Array(self.events.iter().rev().take(EVENTS_SHOWN).map(Event::to_json).collect());
            m["checks"] = Value::Array(
                self.checks
                    .iter()
                    .map(|c| {
                        json!({
                            "name": c.name,
                            "status": if c.passing { "passing" } else { "critical" },
                            "output": c.output,
                            "updated_at": c.updated_at,
                        })
                    })
                    .collect(),
            );
        }
        m
    }
}

fn check_def(name: String, check: &Value) -> Option<CheckDef> {
    let field = |key: &str| check.get(key).and_then(Value::as_str);
    let kind = field("type").unwrap_or("tcp").to_ascii_lowercase();
    if kind != "http" && kind != "tcp" {
        return None;
    }
    let headers = check.get("headers").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let headers = headers
        .iter()
        .filter_map(|h| {
            let name = h.get("name")?.as_str()?.to_string();
            let values = h.get("values")?.as_array()?;
            Some(values.iter().filter_map(Value::as_str).map(move |v| (name.clone(), v.to_string())))
        })
        .flatten()
        .collect();
    let probe = if kind == "tcp" {
        Probe::Tcp
    } else {
        Probe::Http {
            method: field("method").unwrap_or("GET").to_ascii_uppercase(),
            path: field("path").unwrap_or("/").to_string(),
            headers,
        }
    };
    Some(CheckDef {
        name,
        probe,
        timeout: field("timeout").and_then(ids::parse_duration).unwrap_or(Duration::from_secs(2)),
    })
}

/// `registry.fly.io/web:v1` as `{registry, repository, tag, digest}`.
pub fn image_ref(image: &str) -> Value {
    let (rest, digest) = match image.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest.to_string())),
        None => (image, None),
    };
    let (registry, path) = match rest.split_once('/') {
        Some((first, path)) if first.contains('.') || first.contains(':') || first == "localhost" => (first, path),
        _ => ("docker.io", rest),
    };
    let (repository, tag) = match path.rsplit_once(':') {
        Some((repo, tag)) => (repo, tag),
        None => (path, "latest"),
    };
    // Without a real registry, the digest is a stable stand-in derived from the name.
    let digest = digest.unwrap_or_else(|| {
        let seed =
            image.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        let words: String = (0..4u64).map(|i| format!("{:016x}", seed.rotate_left(i as u32 * 13) ^ i)).collect();
        format!("sha256:{words}")
    });
    let labels: BTreeMap<String, String> = BTreeMap::new();
    json!({ "registry": registry, "repository": repository, "tag": tag, "digest": digest, "labels": labels })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(config: Value) -> Machine {
        Machine::new("1".into(), "m".into(), "ams".into(), config)
    }

    #[test]
    fn image_refs_split_like_docker_does() {
        let r = image_ref("registry.fly.io/web:v1");
        assert_eq!(
            (r["registry"].as_str(), r["repository"].as_str(), r["tag"].as_str()),
            (Some("registry.fly.io"), Some("web"), Some("v1"))
        );
        assert_eq!(r["digest"].as_str().map(str::len), Some(7 + 64));
        let r = image_ref("nginx");
        assert_eq!((r["registry"].as_str(), r["tag"].as_str()), (Some("docker.io"), Some("latest")));
    }

    #[test]
    fn checks_come_from_both_places_with_flyd_names() {
        let m = machine(json!({
            "checks": {"alive": {"type": "tcp", "port": 8080}},
            "services": [{"internal_port": 8080, "checks": [{"type": "http", "path": "/health", "timeout": "1s"}]}]
        }));
        let names: Vec<_> = m.check_defs().into_iter().map(|c| c.name).collect();
        assert_eq!(names, ["alive", "servicecheck-00-http-8080"]);
        assert!(!m.checks_passing(), "no result yet is not passing");
        assert!(machine(json!({})).checks_passing());
    }

    #[test]
    fn check_configs_become_kit_probes() {
        let m = machine(json!({
            "checks": {"alive": {"type": "tcp", "port": 8080, "timeout": "3s"}, "grpc": {"type": "grpc"}},
            "services": [{"internal_port": 8080, "checks": [{
                "type": "http", "method": "head", "path": "/health",
                "headers": [{"name": "X-Probe", "values": ["a", "b"]}]
            }]}]
        }));
        let defs = m.check_defs();
        assert_eq!(defs.len(), 2, "a kind the sandbox cannot probe is left out: {defs:?}");
        assert_eq!((&defs[0].probe, defs[0].timeout), (&Probe::Tcp, Duration::from_secs(3)));
        let headers = vec![("X-Probe".to_string(), "a".to_string()), ("X-Probe".to_string(), "b".to_string())];
        assert_eq!(defs[1].probe, Probe::Http { method: "HEAD".into(), path: "/health".into(), headers });
        assert_eq!(defs[1].timeout, Duration::from_secs(2), "flyd's default");
    }

    #[test]
    fn a_lease_blocks_writes_without_its_nonce() {
        let mut m = machine(json!({}));
        assert!(m.lease_allows(None).is_ok());
        m.lease = Some(Lease {
            nonce: "n1".into(),
            owner: "ci@example.com".into(),
            description: String::new(),
            expires_at: SystemTime::now() + Duration::from_secs(60),
            version: String::new(),
        });
        assert!(m.lease_allows(None).unwrap_err().contains("leased by ci@example.com"));
        assert!(m.lease_allows(Some("n1")).is_ok());
    }
}
