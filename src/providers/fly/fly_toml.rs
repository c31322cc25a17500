//! fly.toml: the app name, the health check path and `[deploy]` for the inputs, and
//! the machine config it describes, as `fly deploy` builds it: env, services and
//! http_service, checks, processes, VM size, mounts, files, stop and restart settings.
//! The image always comes from the deploy; anything fly.toml does not say is kept
//! from the machine's current config.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::{json, Map, Value};

/// fly.toml is small; anything past this is not one.
const MAX_BYTES: u64 = 1024 * 1024;

#[derive(Debug, Clone, Default, Deserialize)]
pub struct FlyToml {
    pub app: Option<String>,
    pub primary_region: Option<String>,
    #[serde(default)]
    pub deploy: Deploy,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub processes: BTreeMap<String, String>,
    pub http_service: Option<HttpService>,
    #[serde(default)]
    pub services: Vec<toml::Table>,
    #[serde(default)]
    pub checks: BTreeMap<String, toml::Table>,
    #[serde(default, alias = "compute")]
    pub vm: Vec<Vm>,
    #[serde(default)]
    pub mounts: Vec<Mount>,
    #[serde(default)]
    pub files: Vec<File>,
    pub kill_signal: Option<String>,
    pub kill_timeout: Option<toml::Value>,
    #[serde(default)]
    pub restart: Vec<toml::Table>,
    pub metrics: Option<toml::Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Deploy {
    pub strategy: Option<String>,
    pub release_command: Option<String>,
    pub release_command_timeout: Option<String>,
    pub max_unavailable: Option<f64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct HttpService {
    pub internal_port: Option<u16>,
    #[serde(default)]
    pub force_https: bool,
    pub auto_stop_machines: Option<toml::Value>,
    pub auto_start_machines: Option<bool>,
    pub min_machines_running: Option<u32>,
    pub concurrency: Option<toml::Table>,
    pub http_options: Option<toml::Table>,
    pub tls_options: Option<toml::Table>,
    #[serde(default)]
    pub processes: Vec<String>,
    #[serde(default)]
    pub checks: Vec<toml::Table>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Vm {
    pub size: Option<String>,
    pub memory: Option<toml::Value>,
    pub cpus: Option<u32>,
    pub cpu_kind: Option<String>,
    pub memory_mb: Option<u32>,
    #[serde(default)]
    pub processes: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Mount {
    pub source: String,
    pub destination: String,
    #[serde(default)]
    pub processes: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct File {
    pub guest_path: String,
    pub raw_value: Option<String>,
    pub local_path: Option<String>,
    pub secret_name: Option<String>,
}

impl FlyToml {
    /// Reads `path`; `Ok(None)` when it does not exist. Only a regular file of at most
    /// 1 MiB is read: a device or a FIFO named by mistake must not hang the run.
    pub fn load(path: &Path) -> Result<Option<FlyToml>, String> {
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        if !meta.is_file() {
            return Err(format!("{} is not a regular file", path.display()));
        }
        if meta.len() > MAX_BYTES {
            return Err(format!("{} is {} bytes; a fly.toml is far smaller", path.display(), meta.len()));
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        toml::from_str(&text)
            .map(Some)
            .map_err(|e| format!("{} is not valid fly.toml: {}", path.display(), e.message()))
    }

    /// The path of the first HTTP check: `[http_service]`, then `[checks]`, then
    /// `[[services.http_checks]]`.
    pub fn health_path(&self) -> Option<&str> {
        fn path_of(t: &toml::Table) -> Option<&str> {
            t.get("path").and_then(toml::Value::as_str)
        }
        let from_service = self.http_service.iter().flat_map(|s| &s.checks).find_map(path_of);
        let from_checks = || {
            self.checks
                .values()
                .filter(|c| c.get("type").and_then(toml::Value::as_str).is_none_or(|k| k == "http"))
                .find_map(path_of)
        };
        let from_services = || {
            self.services
                .iter()
                .filter_map(|s| s.get("http_checks").and_then(toml::Value::as_array))
                .flatten()
                .filter_map(toml::Value::as_table)
                .find_map(path_of)
        };
        from_service.or_else(from_checks).or_else(from_services)
    }

    /// The machine config for process group `group`: `existing` (the machine's current
    /// config) with everything fly.toml describes replaced, and `image`. `workspace`
    /// resolves `[[files]] local_path`.
    pub fn machine_config(
        &self,
        group: &str,
        existing: &Value,
        image: &str,
        workspace: &Path,
    ) -> Result<Value, String> {
        let mut c = match existing {
            Value::Object(m) => m.clone(),
            _ => Map::new(),
        };
        c.insert("image".into(), json!(image));

        let mut env: Map<String, Value> = self.env.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        env.insert("FLY_PROCESS_GROUP".into(), json!(group));
        if let Some(region) = &self.primary_region {
            env.insert("PRIMARY_REGION".into(), json!(region));
        }
        c.insert("env".into(), Value::Object(env));

        let mut init = c.get("init").and_then(Value::as_object).cloned().unwrap_or_default();
        match self.processes.get(group) {
            Some(cmd) => init.insert("cmd".into(), json!(super::release_command::shell_words(cmd))),
            None => init.remove("cmd"),
        };
        c.insert("init".into(), Value::Object(init));

        let mut services = Vec::new();
        if let Some(h) = self.http_service.as_ref().filter(|h| in_group(&h.processes, group)) {
            services.push(http_service(h));
        }
        for s in self.services.iter().filter(|s| in_group(&strings(s.get("processes")), group)) {
            services.push(service(s));
        }
        c.insert("services".into(), Value::Array(services));

        let mut checks = Map::new();
        for (name, check) in &self.checks {
            if !in_group(&strings(check.get("processes")), group) {
                continue;
            }
            let mut v = check_json(check);
            if v.get("port").is_none() {
                let port = self.http_service.as_ref().and_then(|h| h.internal_port).ok_or_else(|| {
                    format!("fly.toml's [checks.{name}] has no port and there is no [http_service] to take it from")
                })?;
                v["port"] = json!(port);
            }
            checks.insert(name.clone(), v);
        }
        if checks.is_empty() {
            c.remove("checks");
        } else {
            c.insert("checks".into(), Value::Object(checks));
        }

        if let Some(vm) = self.vm.iter().find(|v| in_group(&v.processes, group)) {
            c.insert("guest".into(), guest(vm)?);
        }
        if let Some(mount) = self.mounts.iter().find(|m| in_group(&m.processes, group)) {
            let old = c.get("mounts").and_then(Value::as_array).and_then(|m| m.first()).cloned();
            let mut m = json!({ "path": mount.destination, "name": mount.source });
            // The same volume stays attached: its id is kept when the name is unchanged.
            if let Some(volume) = old
                .filter(|o| o.get("name").and_then(Value::as_str) == Some(&mount.source))
                .and_then(|o| o.get("volume").cloned())
            {
                m["volume"] = volume;
            }
            c.insert("mounts".into(), json!([m]));
        }
        if !self.files.is_empty() {
            c.insert("files".into(), self.files_json(workspace)?);
        }
        if self.kill_signal.is_some() || self.kill_timeout.is_some() {
            let mut stop = Map::new();
            if let Some(s) = &self.kill_signal {
                stop.insert("signal".into(), json!(s));
            }
            if let Some(t) = &self.kill_timeout {
                stop.insert("timeout".into(), to_json(t));
            }
            c.insert("stop_config".into(), Value::Object(stop));
        }
        if let Some(r) = self.restart.first() {
            c.insert("restart".into(), to_json(&toml::Value::Table(r.clone())));
        }
        if let Some(m) = &self.metrics {
            let first = match m {
                toml::Value::Array(a) => a.first().cloned(),
                other => Some(other.clone()),
            };
            if let Some(first) = first {
                c.insert("metrics".into(), to_json(&first));
            }
        }
        Ok(Value::Object(c))
    }

    /// `[[files]]` as the Machines API takes them: contents inline, base64.
    pub fn files_json(&self, workspace: &Path) -> Result<Value, String> {
        let mut out = Vec::new();
        for f in &self.files {
            let mut entry = json!({ "guest_path": f.guest_path });
            if let Some(v) = &f.raw_value {
                entry["raw_value"] = json!(v);
            } else if let Some(p) = &f.local_path {
                let path = workspace.join(p);
                let meta = std::fs::metadata(&path).map_err(|e| format!("[[files]] {}: {e}", path.display()))?;
                if !meta.is_file() || meta.len() > MAX_BYTES {
                    return Err(format!("[[files]] {} is not a regular file of at most 1 MiB", path.display()));
                }
                let bytes = std::fs::read(&path).map_err(|e| format!("[[files]] {}: {e}", path.display()))?;
                entry["raw_value"] = json!(base64(&bytes));
            } else if let Some(s) = &f.secret_name {
                entry["secret_name"] = json!(s);
            }
            out.push(entry);
        }
        Ok(Value::Array(out))
    }
}

fn in_group(processes: &[String], group: &str) -> bool {
    processes.is_empty() || processes.iter().any(|p| p == group)
}

fn strings(v: Option<&toml::Value>) -> Vec<String> {
    v.and_then(toml::Value::as_array)
        .map(|a| a.iter().filter_map(toml::Value::as_str).map(str::to_string).collect())
        .unwrap_or_default()
}

fn to_json(v: &toml::Value) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn http_service(h: &HttpService) -> Value {
    let port = h.internal_port.unwrap_or(8080);
    let table = |t: &Option<toml::Table>| t.as_ref().map(|t| to_json(&toml::Value::Table(t.clone())));
    let mut http = json!({ "port": 80, "handlers": ["http"], "force_https": h.force_https });
    let mut https = json!({ "port": 443, "handlers": ["http", "tls"] });
    if let Some(o) = table(&h.http_options) {
        http["http_options"] = o.clone();
        https["http_options"] = o;
    }
    if let Some(o) = table(&h.tls_options) {
        https["tls_options"] = o;
    }
    let mut s = json!({
        "protocol": "tcp",
        "internal_port": port,
        "ports": [http, https],
        "checks": h.checks.iter().map(|c| { let mut v = check_json(c); v["type"] = json!("http"); v }).collect::<Vec<_>>(),
    });
    if let Some(v) = &h.auto_stop_machines {
        s["autostop"] = autostop(v);
    }
    if let Some(v) = h.auto_start_machines {
        s["autostart"] = json!(v);
    }
    if let Some(v) = h.min_machines_running {
        s["min_machines_running"] = json!(v);
    }
    if let Some(c) = &h.concurrency {
        s["concurrency"] = to_json(&toml::Value::Table(c.clone()));
    }
    s
}

/// `true`/`false` or "stop"/"suspend"/"off", as fly.toml allows.
fn autostop(v: &toml::Value) -> Value {
    match v {
        toml::Value::Boolean(true) => json!("stop"),
        toml::Value::Boolean(false) => json!("off"),
        other => to_json(other),
    }
}

fn service(t: &toml::Table) -> Value {
    let mut s = Map::new();
    if let Some(v) = t.get("auto_stop_machines") {
        s.insert("autostop".into(), autostop(v));
    }
    for key in ["protocol", "internal_port", "ports", "concurrency", "auto_start_machines", "min_machines_running"] {
        if let Some(v) = t.get(key) {
            let name = match key {
                "auto_start_machines" => "autostart",
                other => other,
            };
            s.insert(name.into(), to_json(v));
        }
    }
    let mut checks = Vec::new();
    for (key, kind) in [("http_checks", "http"), ("tcp_checks", "tcp")] {
        for c in t.get(key).and_then(toml::Value::as_array).into_iter().flatten().filter_map(toml::Value::as_table) {
            let mut v = check_json(c);
            v["type"] = json!(kind);
            checks.push(v);
        }
    }
    s.insert("checks".into(), Value::Array(checks));
    Value::Object(s)
}

/// A check as the Machines API takes it: fly.toml's keys, method upper-cased, headers
/// as `[{name, values}]`.
fn check_json(t: &toml::Table) -> Value {
    let mut v = Map::new();
    for key in [
        "type",
        "port",
        "interval",
        "timeout",
        "grace_period",
        "method",
        "path",
        "protocol",
        "tls_skip_verify",
        "tls_server_name",
        "kind",
    ] {
        if let Some(x) = t.get(key) {
            v.insert(key.into(), to_json(x));
        }
    }
    if let Some(m) = v.get("method").and_then(Value::as_str).map(str::to_ascii_uppercase) {
        v.insert("method".into(), json!(m));
    }
    if let Some(h) = t.get("headers").and_then(toml::Value::as_table) {
        let headers: Vec<Value> =
            h.iter().map(|(k, x)| json!({ "name": k, "values": [x.as_str().unwrap_or_default()] })).collect();
        v.insert("headers".into(), Value::Array(headers));
    }
    Value::Object(v)
}

/// `[[vm]]`: a size preset, then the fields given inline.
fn guest(vm: &Vm) -> Result<Value, String> {
    let (mut kind, mut cpus, mut memory) = ("shared".to_string(), 1u32, 256u32);
    if let Some(size) = &vm.size {
        (kind, cpus, memory) = preset(size).ok_or_else(|| {
            format!("fly.toml's [[vm]] size '{size}' is not a size safe-deploy knows (shared-cpu-1x … performance-16x)")
        })?;
    }
    if let Some(k) = &vm.cpu_kind {
        kind = k.clone();
    }
    if let Some(c) = vm.cpus {
        cpus = c;
    }
    if let Some(m) = vm.memory_mb {
        memory = m;
    }
    if let Some(m) = &vm.memory {
        memory =
            memory_mb(m).ok_or_else(|| format!("fly.toml's [[vm]] memory {m} is not a size such as 512mb or 1gb"))?;
    }
    Ok(json!({ "cpu_kind": kind, "cpus": cpus, "memory_mb": memory }))
}

fn preset(size: &str) -> Option<(String, u32, u32)> {
    let (kind, rest) = size.split_once("-cpu-")?;
    let cpus: u32 = rest.strip_suffix('x')?.parse().ok()?;
    let per_cpu = match kind {
        "shared" => 256,
        "performance" => 2048,
        _ => return None,
    };
    Some((kind.to_string(), cpus, cpus.checked_mul(per_cpu)?))
}

fn memory_mb(v: &toml::Value) -> Option<u32> {
    match v {
        toml::Value::Integer(n) => u32::try_from(*n).ok(),
        toml::Value::String(s) => {
            let s = s.trim().to_ascii_lowercase();
            let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
            let n: u32 = digits.parse().ok()?;
            match s[digits.len()..].trim() {
                "" | "mb" => Some(n),
                "gb" => n.checked_mul(1024),
                _ => None,
            }
        }
        _ => None,
    }
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> FlyToml {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn a_size_whose_memory_would_overflow_is_not_a_size() {
        assert_eq!(preset("performance-cpu-3000000x"), None);
        assert_eq!(preset("shared-cpu-2x"), Some(("shared".into(), 2, 512)));
    }

    #[test]
    fn the_app_health_path_and_deploy_section_are_read() {
        let t = parse(
            r#"
app = "web"
primary_region = "ams"
[deploy]
  strategy = "bluegreen"
  release_command = "bin/migrate --all"
  max_unavailable = 0.5
[http_service]
  internal_port = 8080
  [[http_service.checks]]
    grace_period = "5s"
    path = "/healthz"
"#,
        );
        assert_eq!(t.app.as_deref(), Some("web"));
        assert_eq!(t.deploy.strategy.as_deref(), Some("bluegreen"));
        assert_eq!(t.deploy.release_command.as_deref(), Some("bin/migrate --all"));
        assert_eq!(t.deploy.max_unavailable, Some(0.5));
        assert_eq!(t.health_path(), Some("/healthz"));
    }

    #[test]
    fn top_level_checks_and_old_services_also_give_a_path() {
        assert_eq!(parse("[checks.alive]\ntype = \"http\"\npath = \"/up\"\n").health_path(), Some("/up"));
        assert_eq!(parse("[[services]]\n[[services.http_checks]]\npath = \"/ping\"\n").health_path(), Some("/ping"));
    }

    #[test]
    fn a_missing_file_is_none_and_a_broken_one_or_a_device_an_error() {
        assert!(FlyToml::load(Path::new("/nonexistent/fly.toml")).unwrap().is_none());
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("fly.toml");
        std::fs::write(&p, "app = [").unwrap();
        assert!(FlyToml::load(&p).unwrap_err().contains("not valid fly.toml"));
        assert!(FlyToml::load(Path::new("/dev/zero")).unwrap_err().contains("not a regular file"));
    }

    #[test]
    fn fly_toml_becomes_the_machine_config_and_keeps_what_it_does_not_say() {
        let t = parse(
            r#"
app = "web"
primary_region = "ams"
kill_signal = "SIGINT"
[env]
  LOG_LEVEL = "debug"
[processes]
  app = "bin/server --port 8080"
  worker = "bin/worker"
[http_service]
  internal_port = 8080
  force_https = true
  auto_stop_machines = "stop"
  min_machines_running = 1
  processes = ["app"]
  [[http_service.checks]]
    path = "/health"
    method = "get"
    interval = "10s"
[[vm]]
  size = "shared-cpu-2x"
  memory = "1gb"
[[files]]
  guest_path = "/etc/app.conf"
  raw_value = "a2V5PXZhbHVl"
"#,
        );
        let existing = json!({
            "image": "registry.fly.io/web:v1",
            "env": {"OLD": "1"},
            "guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 256},
            "metadata": {"fly_process_group": "app", "team": "shop"},
            "dns": {"skip_registration": false}
        });
        let app = t.machine_config("app", &existing, "registry.fly.io/web:v2", Path::new(".")).unwrap();
        assert_eq!(app["image"], "registry.fly.io/web:v2");
        assert_eq!(app["env"], json!({"LOG_LEVEL": "debug", "FLY_PROCESS_GROUP": "app", "PRIMARY_REGION": "ams"}));
        assert_eq!(app["init"]["cmd"], json!(["bin/server", "--port", "8080"]));
        assert_eq!(app["services"][0]["internal_port"], 8080);
        assert_eq!(app["services"][0]["ports"][0]["force_https"], true);
        assert_eq!(
            app["services"][0]["checks"][0],
            json!({"type": "http", "path": "/health", "method": "GET", "interval": "10s"})
        );
        assert_eq!(app["guest"], json!({"cpu_kind": "shared", "cpus": 2, "memory_mb": 1024}));
        assert_eq!(app["files"][0]["guest_path"], "/etc/app.conf");
        assert_eq!(app["stop_config"]["signal"], "SIGINT");
        assert_eq!(app["metadata"]["team"], "shop", "what fly.toml does not say is kept");

        let worker = t.machine_config("worker", &existing, "registry.fly.io/web:v2", Path::new(".")).unwrap();
        assert_eq!(worker["services"], json!([]), "the http_service is the app group's");
        assert_eq!(worker["init"]["cmd"], json!(["bin/worker"]));
    }

    #[test]
    fn a_mount_keeps_its_volume_when_the_name_is_unchanged() {
        let t = parse("[[mounts]]\nsource = \"data\"\ndestination = \"/data\"\n");
        let existing = json!({"mounts": [{"volume": "vol_123", "name": "data", "path": "/old"}]});
        let c = t.machine_config("app", &existing, "x:2", Path::new(".")).unwrap();
        assert_eq!(c["mounts"], json!([{"volume": "vol_123", "name": "data", "path": "/data"}]));
    }

    #[test]
    fn mounts_services_and_options_follow_their_process_groups() {
        let t = parse(
            r#"
[[mounts]]
  source = "data"
  destination = "/data"
  processes = ["db"]
[http_service]
  internal_port = 8080
  auto_stop_machines = true
  [http_service.http_options]
    h2_backend = true
  [http_service.tls_options]
    alpn = ["h2"]
[[services]]
  internal_port = 9000
  auto_stop_machines = "suspend"
  processes = ["worker"]
"#,
        );
        let app = t.machine_config("app", &json!({}), "x:2", Path::new(".")).unwrap();
        assert!(app.get("mounts").is_none(), "the mount is the db group's");
        assert_eq!(app["services"][0]["autostop"], "stop");
        assert_eq!(app["services"][0]["ports"][1]["tls_options"]["alpn"], json!(["h2"]));
        assert_eq!(app["services"][0]["ports"][0]["http_options"]["h2_backend"], true);
        let db = t.machine_config("db", &json!({}), "x:2", Path::new(".")).unwrap();
        assert_eq!(db["mounts"][0]["name"], "data");
        let worker = t.machine_config("worker", &json!({}), "x:2", Path::new(".")).unwrap();
        assert_eq!(worker["services"][1]["autostop"], "suspend");
    }

    #[test]
    fn base64_matches_the_standard_alphabet() {
        assert_eq!(base64(b"key=value"), "a2V5PXZhbHVl");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"a"), "YQ==");
    }
}
