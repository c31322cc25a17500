//! A stand-in for the `docker` CLI on one host: the subset a deploy over SSH uses
//! (pull, image inspect, inspect, run -d, start, stop, rm, rename, port, ps, logs,
//! version), with docker's output and exit codes. A "container" is the sandbox's test app as a detached OS
//! process listening on the host's own address; what a host has pulled and runs is a
//! state file under `$SANDBOX_RUNTIME_DIR/<host-ip>/`, so every invocation (a new
//! process per SSH command) sees what the previous ones did.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::app::{spec_for, Releases};

/// Container ports the test app serves with TLS, as an app listening on 443 does.
pub const TLS_PORTS: [u16; 2] = [443, 8443];

/// The state root: one directory per host address under it.
pub const ENV_DIR: &str = "SANDBOX_RUNTIME_DIR";
/// A JSON array: the command that runs the test app.
pub const ENV_APP_COMMAND: &str = "SANDBOX_APP_COMMAND";
/// The path of a JSON `Releases` map: the images that can be pulled.
pub const ENV_RELEASES: &str = "SANDBOX_RELEASES";
/// Which host this is, when not run over SSH (where `SSH_CONNECTION` says).
pub const ENV_HOST: &str = "SANDBOX_RUNTIME_HOST";
/// The name the runtime was invoked as (`docker`, `podman`), set by the wrappers.
pub const ENV_AS: &str = "SANDBOX_RUNTIME_AS";

/// What one host has: pulled images (reference → image id) and containers by name.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct HostState {
    pub images: BTreeMap<String, String>,
    pub containers: BTreeMap<String, Container>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub image_id: String,
    pub image_ref: String,
    /// None when it was created but never started (its port was taken).
    pub pid: Option<u32>,
    /// The process's start time in clock ticks (from /proc), so a reused pid is not
    /// mistaken for the app.
    pub start_ticks: Option<u64>,
    /// (host port, container port) pairs.
    pub ports: Vec<(u16, u16)>,
    /// The address the ports are published on, when one was given (`-p
    /// 127.0.0.1::80`): the app listens there instead of on the host's address.
    #[serde(default)]
    pub bound_to: Option<String>,
    pub env: Vec<(String, String)>,
    pub restart: Option<String>,
    pub log: PathBuf,
}

impl Container {
    pub fn is_running(&self) -> bool {
        self.pid.is_some_and(|pid| alive(pid, self.start_ticks))
    }
}

/// The image id of `reference`: deterministic, so tests can predict it.
pub fn image_id(reference: &str) -> String {
    format!("sha256:{}", hex_sha256(reference))
}

/// The manifest digest `pull` prints; unlike the id it names what the registry has.
pub fn image_digest(reference: &str) -> String {
    format!("sha256:{}", hex_sha256(&format!("manifest\n{reference}")))
}

fn hex_sha256(text: &str) -> String {
    Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// The state directory of host `host` under `state_dir`.
pub fn host_dir(state_dir: &Path, host: &str) -> PathBuf {
    state_dir.join(host)
}

/// Reads a host's state without the lock: writes replace the file atomically, so a
/// reader sees one whole state or the other.
pub fn read_state(host_dir: &Path) -> HostState {
    fs::read(host_dir.join("state.json")).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

fn write_state(host_dir: &Path, state: &HostState) -> std::io::Result<()> {
    let tmp = host_dir.join("state.json.tmp");
    fs::write(&tmp, serde_json::to_vec_pretty(state)?)?;
    fs::rename(tmp, host_dir.join("state.json"))
}

/// The image the container `name` on a host runs, if it is running.
pub fn running_image(host_dir: &Path, name: &str) -> Option<String> {
    let state = read_state(host_dir);
    state.containers.get(name).filter(|c| c.is_running()).map(|c| c.image_ref.clone())
}

/// Every invocation's argv (the name it was invoked as first), in order.
pub fn calls(host_dir: &Path) -> Vec<Vec<String>> {
    let text = fs::read_to_string(host_dir.join("calls.jsonl")).unwrap_or_default();
    text.lines().filter_map(|line| serde_json::from_str(line).ok()).collect()
}

/// Kills every app process recorded under `state_dir`, on every host: the teardown
/// that keeps detached apps from outliving a test.
pub fn stop_all(state_dir: &Path) {
    let Ok(hosts) = fs::read_dir(state_dir) else { return };
    for host in hosts.flatten() {
        for container in read_state(&host.path()).containers.values() {
            if let Some(pid) = container.pid.filter(|_| container.is_running()) {
                os::kill(pid, libc::SIGKILL);
            }
        }
    }
}

/// An exclusive flock on the host's lock file, held until dropped, so concurrent
/// invocations on one host take turns on its state.
struct Lock {
    _file: File,
}

impl Lock {
    fn take(host_dir: &Path) -> std::io::Result<Lock> {
        let file = OpenOptions::new().create(true).truncate(false).write(true).open(host_dir.join("lock"))?;
        os::flock(&file)?;
        Ok(Lock { _file: file })
    }
}

/// A failed command: docker's exit code and its message for stderr.
struct Failure(i32, String);

fn fail<T>(code: i32, message: impl Into<String>) -> Result<T, Failure> {
    Err(Failure(code, message.into()))
}

/// What a command prints on success.
type Outcome = Result<String, Failure>;

/// Runs one docker command (`args` without the program name) and returns its exit
/// code; the dispatch target of `safe-deploy __sandbox-runtime` and `sandbox-runtime`.
pub fn run_runtime(args: Vec<String>) -> i32 {
    let (code, out, err) = match Runtime::from_env() {
        Ok(runtime) => runtime.invoke(&args),
        Err(Failure(code, message)) => (code, String::new(), message),
    };
    print!("{out}");
    if !err.is_empty() {
        eprintln!("{}", err.trim_end());
    }
    let _ = std::io::stdout().flush();
    code
}

struct Runtime {
    host: String,
    dir: PathBuf,
    app_command: Vec<String>,
    releases_path: Option<PathBuf>,
    invoked_as: String,
}

impl Runtime {
    fn from_env() -> Result<Runtime, Failure> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let root = var(ENV_DIR).ok_or_else(|| Failure(1, format!("sandbox runtime: set {ENV_DIR}")))?;
        let from_ssh = var("SSH_CONNECTION").and_then(|c| c.split_whitespace().nth(2).map(str::to_string));
        let host = var(ENV_HOST).or(from_ssh).ok_or_else(|| {
            Failure(1, format!("sandbox runtime: which host is this? set {ENV_HOST} or run it over SSH"))
        })?;
        let app_command: Vec<String> = match var(ENV_APP_COMMAND) {
            Some(json) => serde_json::from_str(&json)
                .map_err(|e| Failure(1, format!("sandbox runtime: {ENV_APP_COMMAND} is not a JSON array: {e}")))?,
            None => Vec::new(),
        };
        let dir = host_dir(Path::new(&root), &host);
        fs::create_dir_all(&dir).map_err(|e| Failure(1, format!("sandbox runtime: {}: {e}", dir.display())))?;
        let invoked_as = var(ENV_AS).unwrap_or_else(|| "docker".into());
        Ok(Runtime { host, dir, app_command, releases_path: var(ENV_RELEASES).map(PathBuf::from), invoked_as })
    }

    /// Runs `args` under the host's lock and returns (exit code, stdout, stderr).
    fn invoke(&self, args: &[String]) -> (i32, String, String) {
        let lock = match Lock::take(&self.dir) {
            Ok(lock) => lock,
            Err(e) => return (1, String::new(), format!("sandbox runtime: cannot lock {}: {e}", self.dir.display())),
        };
        let mut argv = vec![self.invoked_as.clone()];
        argv.extend(args.iter().cloned());
        if let Ok(mut log) = OpenOptions::new().create(true).append(true).open(self.dir.join("calls.jsonl")) {
            let _ = writeln!(log, "{}", json!(argv));
        }
        let mut state = read_state(&self.dir);
        let command = args.first().map(String::as_str).unwrap_or("");
        let rest = args.get(1..).unwrap_or_default();
        let result = match command {
            "pull" => self.pull(&mut state, rest),
            "image" if rest.first().is_some_and(|s| s == "inspect") => inspect_image(&state, &rest[1..]),
            "inspect" => inspect(&state, rest, true),
            "container" if rest.first().is_some_and(|s| s == "inspect") => inspect(&state, &rest[1..], false),
            "run" => self.run(&mut state, rest),
            "stop" => {
                // The wait for the apps to exit needs no lock: it changes no state.
                drop(lock);
                return finish(stop(&state, rest));
            }
            "rm" => remove(&mut state, rest),
            "start" => self.start(&mut state, rest),
            "rename" => rename(&mut state, rest),
            "update" => update(&mut state, rest),
            "port" => port(&state, rest),
            "ps" => ps(&state, rest),
            "logs" => logs(&state, rest),
            "version" | "--version" => Ok(format!("Docker version 27.0.0-sandbox, build sandbox ({})\n", self.host)),
            "" => fail(1, "Usage:  docker [OPTIONS] COMMAND"),
            other => {
                fail(1, format!("docker: unknown command: docker {other}\n\nRun 'docker --help' for more information"))
            }
        };
        if let Err(e) = write_state(&self.dir, &state) {
            return (1, String::new(), format!("sandbox runtime: cannot save state: {e}"));
        }
        drop(lock);
        finish(result)
    }

    fn releases(&self) -> Releases {
        let Some(path) = &self.releases_path else { return Releases::new() };
        fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    fn pull(&self, state: &mut HostState, args: &[String]) -> Outcome {
        let (_, operands) = parse(args, &[], &["-q", "--quiet"])?;
        let [reference] = operands.as_slice() else {
            return fail(1, "\"docker pull\" requires exactly 1 argument.");
        };
        let known = self.releases();
        if !known.contains_key(reference) && !known.contains_key(crate::app::ANY_IMAGE) {
            return fail(1, "Error response from daemon: manifest unknown");
        }
        let (repo, tag) = split_reference(reference);
        let status = match state.images.insert(reference.clone(), image_id(reference)) {
            Some(_) => format!("Status: Image is up to date for {reference}"),
            None => format!("Status: Downloaded newer image for {reference}"),
        };
        Ok(format!("{tag}: Pulling from {repo}\nDigest: {}\n{status}\n{reference}\n", image_digest(reference)))
    }

    fn run(&self, state: &mut HostState, args: &[String]) -> Outcome {
        let with_value = ["--name", "--restart", "-p", "--publish", "--env-file", "-e", "--env"];
        let (opts, operands) = parse(args, &with_value, &["-d", "--detach", "--rm"])?;
        let Some(image) = operands.first() else {
            return fail(125, "\"docker run\" requires at least 1 argument.");
        };
        if operands.len() > 1 {
            return fail(125, "sandbox runtime: a command after the image is not supported");
        }
        if !opts.iter().any(|(k, _)| k == "-d" || k == "--detach") {
            return fail(125, "sandbox runtime: only detached runs (docker run -d) are supported");
        }
        let Some(name) = last(&opts, &["--name"]) else {
            return fail(125, "sandbox runtime: give the container a --name");
        };
        let Some(reference) = resolve_image(state, image) else {
            return fail(125, format!("Unable to find image '{image}' locally\ndocker: Error response from daemon: pull access denied for {image}, repository does not exist or may require 'docker login'"));
        };
        if let Some(taken) = state.containers.get(&name) {
            return fail(125, format!("docker: Error response from daemon: Conflict. The container name \"/{name}\" is already in use by container \"{}\". You have to remove (or rename) that container to be able to reuse that name.", taken.id));
        }
        let mut ports = Vec::new();
        let mut bound_to = None;
        for (_, mapping) in opts.iter().filter(|(k, _)| k == "-p" || k == "--publish") {
            let (ip, host, container) = port_mapping(mapping)?;
            // No host port: docker picks a free one on the address given.
            let host = match host {
                Some(port) => port,
                None => free_port(ip.as_deref().unwrap_or(&self.host))?,
            };
            bound_to = ip.filter(|ip| ip.starts_with("127.")).or(bound_to);
            ports.push((host, container));
        }
        let mut env = Vec::new();
        for (flag, value) in &opts {
            match flag.as_str() {
                "--env-file" => env.extend(read_env_file(value)?),
                "-e" | "--env" => env.extend(env_entry(value)),
                _ => {}
            }
        }
        let id = hex_sha256(&format!("{}\n{name}\n{:?}", self.host, Instant::now()));
        let log = self.dir.join(format!("{name}.log"));
        let mut container = Container {
            id: id.clone(),
            name: name.clone(),
            image_id: image_id(&reference),
            image_ref: reference.clone(),
            pid: None,
            start_ticks: None,
            ports: ports.clone(),
            bound_to,
            env: env.clone(),
            restart: last(&opts, &["--restart"]),
            log: log.clone(),
        };
        // Docker creates the container before it binds the port: a taken port leaves it created, not running.
        let taken = ports.iter().find(|(host_port, _)| {
            state.containers.values().any(|c| c.is_running() && c.ports.iter().any(|(p, _)| p == host_port))
        });
        if let Some((host_port, _)) = taken {
            state.containers.insert(name.clone(), container);
            return fail(125, format!("docker: Error response from daemon: driver failed programming external connectivity on endpoint {name} ({id}): Bind for 0.0.0.0:{host_port} failed: port is already allocated."));
        }
        self.launch(&mut container)?;
        state.containers.insert(name, container);
        Ok(format!("{id}\n"))
    }

    /// Starts the container's app: plain HTTP on the first published port, and TLS
    /// (its own certificate) on the one published for container port 443 or 8443.
    fn launch(&self, c: &mut Container) -> Result<(), Failure> {
        let tls = |(_, port): &&(u16, u16)| TLS_PORTS.contains(port);
        let plain = c.ports.iter().find(|p| !tls(p)).map_or(0, |(h, _)| *h);
        let secure = c.ports.iter().find(tls).map(|(h, _)| *h);
        let listen = c.bound_to.clone().unwrap_or_else(|| self.host.clone());
        let (pid, start_ticks) = self.start_app(&c.image_ref, &listen, plain, secure, &c.env, &c.log)?;
        c.pid = Some(pid);
        c.start_ticks = start_ticks;
        Ok(())
    }

    /// `docker start NAME`: a stopped container runs again as it was made.
    fn start(&self, state: &mut HostState, args: &[String]) -> Outcome {
        let (_, names) = parse(args, &[], &["-a", "--attach", "-i", "--interactive"])?;
        let (mut out, mut errors) = (String::new(), Vec::new());
        for name in &names {
            let Some(key) = find(state, name).map(|c| c.name.clone()) else {
                errors.push(format!("Error response from daemon: No such container: {name}"));
                continue;
            };
            let taken: Vec<u16> = state
                .containers
                .values()
                .filter(|c| c.name != key && c.is_running())
                .flat_map(|c| c.ports.iter().map(|(h, _)| *h))
                .collect();
            let c = state.containers.get_mut(&key).expect("found above");
            if !c.is_running() {
                if let Some(port) = c.ports.iter().map(|(h, _)| *h).find(|p| taken.contains(p)) {
                    errors.push(format!("Error response from daemon: driver failed programming external connectivity on endpoint {key}: Bind for 0.0.0.0:{port} failed: port is already allocated"));
                    continue;
                }
                if let Err(Failure(_, message)) = self.launch(c) {
                    errors.push(message);
                    continue;
                }
            }
            out.push_str(&format!("{name}\n"));
        }
        if names.is_empty() {
            return fail(1, "\"docker start\" requires at least 1 argument.");
        }
        each_named(out, errors)
    }

    /// Starts the app in its own process group with no terminal and its output in
    /// `log`, so it outlives this invocation and the SSH session that ran it.
    fn start_app(
        &self,
        reference: &str,
        listen: &str,
        port: u16,
        tls_port: Option<u16>,
        env: &[(String, String)],
        log: &Path,
    ) -> Result<(u32, Option<u64>), Failure> {
        let Some((program, base)) = self.app_command.split_first() else {
            return fail(125, format!("sandbox runtime: set {ENV_APP_COMMAND} to the command that runs the test app"));
        };
        let spec = spec_for(&self.releases(), reference);
        let mut args: Vec<String> = base.to_vec();
        args.extend(["--listen".into(), listen.to_string(), "--port".into(), port.to_string()]);
        if let Some(tls) = tls_port {
            args.extend(["--tls-port".into(), tls.to_string()]);
        }
        args.extend(spec.app_flags());
        let opened = OpenOptions::new().create(true).append(true).open(log).and_then(|f| Ok((f.try_clone()?, f)));
        let (out, err) = opened.map_err(|e| Failure(125, format!("sandbox runtime: {}: {e}", log.display())))?;
        let mut command = Command::new(program);
        command.args(&args).envs(env.iter().map(|(k, v)| (k, v))).stdin(Stdio::null()).stdout(out).stderr(err);
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command.spawn().map_err(|e| {
            Failure(127, format!("docker: Error response from daemon: failed to create task: exec {program}: {e}"))
        })?;
        // Not waited for: it is the container, and outlives this process.
        let pid = child.id();
        Ok((pid, os::start_ticks(pid)))
    }
}

fn finish(result: Outcome) -> (i32, String, String) {
    match result {
        Ok(out) => (0, out, String::new()),
        Err(Failure(code, message)) => (code, String::new(), message),
    }
}

/// A command's flags with their values ("" for a switch), in order.
type Options = Vec<(String, String)>;

/// Splits `args` into (flag, value) options and operands. Flags in `with_value`
/// take a value (`-p 80:80`, `--name=web`); those in `switches` take none; any other
/// flag is refused, as docker does.
fn parse(args: &[String], with_value: &[&str], switches: &[&str]) -> Result<(Options, Vec<String>), Failure> {
    let (mut opts, mut operands) = (Vec::new(), Vec::new());
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if !arg.starts_with('-') || arg == "-" || !operands.is_empty() {
            operands.push(arg.clone());
            continue;
        }
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if arg.starts_with("--") => (flag.to_string(), Some(value.to_string())),
            _ => (arg.clone(), None),
        };
        if switches.contains(&flag.as_str()) {
            opts.push((flag, String::new()));
        } else if with_value.contains(&flag.as_str()) {
            let Some(value) = inline.or_else(|| args.next().cloned()) else {
                return fail(125, format!("flag needs an argument: {flag}"));
            };
            opts.push((flag, value));
        } else {
            return fail(125, format!("unknown flag: {flag}\nSee 'docker --help'."));
        }
    }
    Ok((opts, operands))
}

fn last(opts: &[(String, String)], names: &[&str]) -> Option<String> {
    opts.iter().rev().find(|(k, _)| names.contains(&k.as_str())).map(|(_, v)| v.clone())
}

/// `repo` and `tag` of a reference, for pull's first line.
fn split_reference(reference: &str) -> (String, String) {
    let slash = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[slash..].split_once(':') {
        Some((_, tag)) => (reference[..slash + reference[slash..].len() - tag.len() - 1].to_string(), tag.to_string()),
        None => (reference.to_string(), "latest".to_string()),
    }
}

/// The reference a pulled image is known by: `image` itself, or the one whose id is
/// `image` (with or without `sha256:`, or a prefix of at least 12 hex digits).
fn resolve_image(state: &HostState, image: &str) -> Option<String> {
    if state.images.contains_key(image) {
        return Some(image.to_string());
    }
    let hex = image.strip_prefix("sha256:").unwrap_or(image);
    if hex.len() < 12 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    state.images.iter().find(|(_, id)| id["sha256:".len()..].starts_with(hex)).map(|(r, _)| r.clone())
}

/// `HOSTPORT:CONTAINERPORT`, `IP:HOSTPORT:CONTAINERPORT` or `IP::CONTAINERPORT` (a free
/// host port on IP): the IP when given, the host port when given, the container port.
fn port_mapping(mapping: &str) -> Result<(Option<String>, Option<u16>, u16), Failure> {
    let parts: Vec<&str> = mapping.split(':').collect();
    let (ip, host, container) = match parts.as_slice() {
        [host, container] => (None, *host, *container),
        [ip, host, container] => (Some(ip.to_string()), *host, *container),
        _ => return fail(125, format!("docker: invalid publish spec {mapping}: use HOSTPORT:CONTAINERPORT")),
    };
    let container = container.split('/').next().unwrap_or(container);
    let host = match host {
        "" if ip.is_some() => None,
        text => Some(text.parse().or_else(|_| fail(125, format!("docker: invalid hostPort in {mapping}")))?),
    };
    match container.parse() {
        Ok(c) => Ok((ip, host, c)),
        _ => fail(125, format!("docker: invalid containerPort in {mapping}")),
    }
}

/// A port free on `ip` now, as docker picks one for `-p IP::PORT`.
fn free_port(ip: &str) -> Result<u16, Failure> {
    std::net::TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .or_else(|e| fail(125, format!("docker: Error response from daemon: cannot publish on {ip}: {e}")))
}

/// `docker update --restart POLICY NAME...`: the one setting a deploy changes.
fn update(state: &mut HostState, args: &[String]) -> Outcome {
    let (opts, names) = parse(args, &["--restart"], &[])?;
    let Some(policy) = last(&opts, &["--restart"]) else {
        return fail(1, "sandbox runtime: only docker update --restart is supported");
    };
    let (mut out, mut errors) = (String::new(), Vec::new());
    for name in &names {
        let Some(key) = find(state, name).map(|c| c.name.clone()) else {
            errors.push(format!("Error response from daemon: No such container: {name}"));
            continue;
        };
        if let Some(c) = state.containers.get_mut(&key) {
            c.restart = Some(policy.clone()).filter(|p| p != "no");
        }
        out.push_str(&format!("{name}\n"));
    }
    each_named(out, errors)
}

/// `docker rename OLD NEW`.
fn rename(state: &mut HostState, args: &[String]) -> Outcome {
    let (_, names) = parse(args, &[], &[])?;
    let [old, new] = names.as_slice() else {
        return fail(1, "\"docker rename\" requires exactly 2 arguments.");
    };
    let Some(key) = find(state, old).map(|c| c.name.clone()) else {
        return fail(1, format!("Error response from daemon: No such container: {old}"));
    };
    if let Some(taken) = state.containers.get(new) {
        return fail(1, format!("Error response from daemon: Conflict. The container name \"/{new}\" is already in use by container \"{}\". You have to remove (or rename) that container to be able to reuse that name.", taken.id));
    }
    let mut c = state.containers.remove(&key).expect("found above");
    c.name = new.clone();
    state.containers.insert(new.clone(), c);
    Ok(String::new())
}

/// `docker port NAME [PORT[/tcp]]`: where the container's ports are published.
fn port(state: &HostState, args: &[String]) -> Outcome {
    let (_, operands) = parse(args, &[], &[])?;
    let Some(c) = operands.first().and_then(|name| find(state, name)) else {
        return fail(
            1,
            format!("Error response from daemon: No such container: {}", operands.first().map_or("", |s| s)),
        );
    };
    let ip = c.bound_to.clone().unwrap_or_else(|| "0.0.0.0".into());
    match operands.get(1) {
        Some(wanted) => {
            let wanted: u16 = wanted.split('/').next().unwrap_or_default().parse().unwrap_or(0);
            match c.ports.iter().find(|(_, container)| *container == wanted) {
                Some((host, _)) => Ok(format!("{ip}:{host}\n")),
                None => fail(1, format!("Error: No public port '{wanted}/tcp' published for {}", c.name)),
            }
        }
        None => Ok(c.ports.iter().map(|(host, container)| format!("{container}/tcp -> {ip}:{host}\n")).collect()),
    }
}

/// `K=V`, or a bare `K` taken from this process's environment (dropped when unset).
fn env_entry(entry: &str) -> Option<(String, String)> {
    match entry.split_once('=') {
        Some((k, v)) => Some((k.to_string(), v.to_string())),
        None => std::env::var(entry).ok().map(|v| (entry.to_string(), v)),
    }
}

fn read_env_file(path: &str) -> Result<Vec<(String, String)>, Failure> {
    let text = fs::read_to_string(path).or_else(|e| fail(125, format!("docker: open {path}: {}", io_reason(&e))))?;
    Ok(text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).filter_map(env_entry).collect())
}

fn io_reason(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory",
        std::io::ErrorKind::PermissionDenied => "permission denied",
        _ => "cannot read",
    }
}

/// A container by name or by (a prefix of) its id.
fn find<'a>(state: &'a HostState, key: &str) -> Option<&'a Container> {
    let key = key.strip_prefix('/').unwrap_or(key);
    state
        .containers
        .get(key)
        .or_else(|| (key.len() >= 4).then(|| state.containers.values().find(|c| c.id.starts_with(key))).flatten())
}

fn container_json(c: &Container) -> Value {
    let running = c.is_running();
    let status = match (c.pid, running) {
        (None, _) => "created",
        (_, true) => "running",
        (_, false) => "exited",
    };
    let ports: serde_json::Map<String, Value> = c
        .ports
        .iter()
        .map(|(h, p)| (format!("{p}/tcp"), json!([{ "HostIp": "0.0.0.0", "HostPort": h.to_string() }])))
        .collect();
    json!({
        "Id": c.id,
        "Name": format!("/{}", c.name),
        "Image": c.image_id,
        "Config": {
            "Image": c.image_ref,
            "Env": c.env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
        },
        "State": { "Status": status, "Running": running, "Pid": if running { c.pid.unwrap_or(0) } else { 0 } },
        "HostConfig": { "RestartPolicy": { "Name": c.restart.clone().unwrap_or_else(|| "no".into()) } },
        "NetworkSettings": { "Ports": ports },
        "LogPath": c.log,
    })
}

fn image_json(reference: &str, id: &str) -> Value {
    json!({ "Id": id, "RepoTags": [reference], "RepoDigests": [format!("{}@{}", split_reference(reference).0, image_digest(reference))] })
}

/// `docker inspect` (containers, then images when `images`) and `docker container inspect`.
fn inspect(state: &HostState, args: &[String], images: bool) -> Outcome {
    let (opts, names) = parse(args, &["-f", "--format", "--type"], &["-s", "--size"])?;
    let format = last(&opts, &["-f", "--format"]);
    // `--type container`: an image of that name is not it.
    let images = images && last(&opts, &["--type"]).is_none_or(|t| t != "container");
    let kind = if images { "object" } else { "container" };
    let found = names.iter().map(|name| {
        let container = find(state, name).map(container_json);
        let image = || resolve_image(state, name).map(|r| image_json(&r, &state.images[&r]));
        container.or_else(|| images.then(image).flatten()).ok_or_else(|| format!("Error: No such {kind}: {name}"))
    });
    render(found.collect(), format.as_deref())
}

fn inspect_image(state: &HostState, args: &[String]) -> Outcome {
    let (opts, names) = parse(args, &["-f", "--format"], &[])?;
    let format = last(&opts, &["-f", "--format"]);
    let found = names.iter().map(|name| {
        let reference = resolve_image(state, name).ok_or_else(|| format!("Error: No such image: {name}"))?;
        Ok(image_json(&reference, &state.images[&reference]))
    });
    render(found.collect(), format.as_deref())
}

/// Prints what was found (with `format`, or as a JSON array) and fails with exit 1
/// naming what was not, as docker does when any operand is missing.
fn render(found: Vec<Result<Value, String>>, format: Option<&str>) -> Outcome {
    if found.is_empty() {
        return fail(1, "\"docker inspect\" requires at least 1 argument.");
    }
    let (ok, missing): (Vec<_>, Vec<_>) = found.into_iter().partition(Result::is_ok);
    let values: Vec<Value> = ok.into_iter().flatten().collect();
    let out = match format {
        Some(format) => values.iter().map(|v| format!("{}\n", template(format, v))).collect(),
        None => format!("{}\n", serde_json::to_string_pretty(&values).unwrap_or_default()),
    };
    match missing.into_iter().filter_map(Result::err).collect::<Vec<_>>() {
        errors if errors.is_empty() => Ok(out),
        // Docker prints what it found and still exits 1.
        errors => {
            print!("{out}");
            fail(1, errors.join("\n"))
        }
    }
}

/// Fills a Go-template subset: `{{.A.B}}` is the field at that path (strings bare,
/// other values as JSON), `{{json .A}}` is JSON; everything else is kept as is.
pub fn template(format: &str, value: &Value) -> String {
    let mut out = String::new();
    let mut rest = format;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let action = rest[start + 2..start + end].trim();
        let (as_json, path) = match action.strip_prefix("json ") {
            Some(path) => (true, path.trim()),
            None => (false, action),
        };
        match path.strip_prefix('.') {
            Some(path) => {
                let field = path.split('.').filter(|p| !p.is_empty()).try_fold(value, |v, key| v.get(key));
                let field = field.unwrap_or(&Value::Null);
                match (as_json, field) {
                    (false, Value::String(s)) => out.push_str(s),
                    (false, Value::Null) => out.push_str("<no value>"),
                    (_, other) => out.push_str(&other.to_string()),
                }
            }
            None => out.push_str(&rest[start..start + end + 2]),
        }
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    out
}

fn stop(state: &HostState, args: &[String]) -> Outcome {
    let (opts, names) = parse(args, &["-t", "--time", "-s", "--signal"], &[])?;
    let grace = match last(&opts, &["-t", "--time"]).map(|t| t.parse::<i64>()) {
        None => Duration::from_secs(10),
        Some(Ok(secs)) => Duration::from_secs(secs.max(0) as u64),
        Some(Err(_)) => return fail(125, "invalid argument for -t/--time: not a number"),
    };
    let signal = match last(&opts, &["-s", "--signal"]) {
        None => libc::SIGTERM,
        Some(name) => match crate::kit::process::signal::parse(&name) {
            Some(sig) => sig,
            None => return fail(125, format!("invalid signal: {name}")),
        },
    };
    if names.is_empty() {
        return fail(1, "\"docker stop\" requires at least 1 argument.");
    }
    let (mut out, mut errors) = (String::new(), Vec::new());
    for name in &names {
        let Some(container) = find(state, name) else {
            errors.push(format!("Error response from daemon: No such container: {name}"));
            continue;
        };
        if let Some(pid) = container.pid.filter(|_| container.is_running()) {
            os::kill(pid, signal);
            let deadline = Instant::now() + grace;
            while alive(pid, container.start_ticks) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if alive(pid, container.start_ticks) {
                os::kill(pid, libc::SIGKILL);
                wait_gone(pid, container.start_ticks);
            }
        }
        out.push_str(&format!("{name}\n"));
    }
    each_named(out, errors)
}

/// What a command on several containers ends with, as docker's: the names it handled,
/// then (exit 1) the errors of the ones it could not.
fn each_named(out: String, errors: Vec<String>) -> Outcome {
    match errors.is_empty() {
        true => Ok(out),
        false => {
            print!("{out}");
            fail(1, errors.join("\n"))
        }
    }
}

fn remove(state: &mut HostState, args: &[String]) -> Outcome {
    let (opts, names) = parse(args, &[], &["-f", "--force", "-v", "--volumes"])?;
    let force = opts.iter().any(|(k, _)| k == "-f" || k == "--force");
    if names.is_empty() {
        return fail(1, "\"docker rm\" requires at least 1 argument.");
    }
    let (mut out, mut errors) = (String::new(), Vec::new());
    for name in &names {
        let Some(container) = find(state, name).cloned() else {
            let error = format!("Error response from daemon: No such container: {name}");
            // `rm -f` of a missing container says so and still succeeds, as docker's CLI does.
            match force {
                true => eprintln!("{error}"),
                false => errors.push(error),
            }
            continue;
        };
        if container.is_running() {
            if !force {
                errors.push(format!("Error response from daemon: cannot remove container \"/{}\": container is running: stop the container before removing or force remove", container.name));
                continue;
            }
            if let Some(pid) = container.pid {
                os::kill(pid, libc::SIGKILL);
                wait_gone(pid, container.start_ticks);
            }
        }
        state.containers.remove(&container.name);
        let _ = fs::remove_file(&container.log);
        out.push_str(&format!("{name}\n"));
    }
    each_named(out, errors)
}

fn ps(state: &HostState, args: &[String]) -> Outcome {
    let (opts, _) = parse(args, &["-f", "--filter", "--format"], &["-a", "--all", "-q", "--quiet", "--no-trunc"])?;
    let all = opts.iter().any(|(k, _)| k == "-a" || k == "--all");
    let quiet = opts.iter().any(|(k, _)| k == "-q" || k == "--quiet");
    let format = last(&opts, &["--format"]);
    let mut out = match (quiet, &format) {
        (false, None) => format!("{:<14}{:<40}{:<12}{:<24}{}\n", "CONTAINER ID", "IMAGE", "STATUS", "PORTS", "NAMES"),
        _ => String::new(),
    };
    // Filters as docker takes them: `publish=PORT` (a published host port), `name=TEXT`
    // (part of the name).
    let filters: Vec<(String, String)> = opts
        .iter()
        .filter(|(k, _)| k == "-f" || k == "--filter")
        .filter_map(|(_, v)| v.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect();
    let matches = |c: &Container| {
        filters.iter().all(|(k, v)| match k.as_str() {
            // As docker's: a stopped container publishes nothing.
            "publish" => c.is_running() && c.ports.iter().any(|(h, _)| v.split('/').next() == Some(&h.to_string())),
            "name" => c.name.contains(v.as_str()),
            _ => true,
        })
    };
    for c in state.containers.values().filter(|c| (all || c.is_running()) && matches(c)) {
        let view = container_json(c);
        let short = &c.id[..12.min(c.id.len())];
        // As docker shows them: a stopped container's ports are not published.
        let ip = c.bound_to.clone().unwrap_or_else(|| "0.0.0.0".into());
        let ports: Vec<String> = match c.is_running() {
            true => c.ports.iter().map(|(h, p)| format!("{ip}:{h}->{p}/tcp")).collect(),
            false => Vec::new(),
        };
        let status = view["State"]["Status"].as_str().unwrap_or_default().to_string();
        out.push_str(&match (quiet, &format) {
            (true, _) => format!("{short}\n"),
            (false, Some(format)) => {
                let row = json!({ "ID": short, "Image": c.image_ref, "Names": c.name, "Status": status, "State": status, "Ports": ports.join(", ") });
                format!("{}\n", template(format, &row))
            }
            (false, None) => format!("{short:<14}{:<40}{status:<12}{:<24}{}\n", c.image_ref, ports.join(", "), c.name),
        });
    }
    Ok(out)
}

fn logs(state: &HostState, args: &[String]) -> Outcome {
    let (_, names) = parse(args, &["--tail", "--since"], &["-f", "--follow", "-t", "--timestamps"])?;
    let [name] = names.as_slice() else {
        return fail(1, "\"docker logs\" requires exactly 1 argument.");
    };
    let Some(container) = find(state, name) else {
        return fail(1, format!("Error response from daemon: No such container: {name}"));
    };
    Ok(fs::read_to_string(&container.log).unwrap_or_default())
}

/// Whether `pid` is (still) the process started at `start_ticks`: not gone, not a
/// zombie nobody reaped, and not another process that got its pid.
fn alive(pid: u32, start_ticks: Option<u64>) -> bool {
    match os::proc_stat(pid) {
        Some((state, ticks)) => state != 'Z' && state != 'X' && start_ticks.is_none_or(|t| t == ticks),
        // No /proc (not Linux): ask the kernel whether the pid exists.
        None if !Path::new("/proc/self/stat").exists() => os::kill(pid, 0),
        None => false,
    }
}

/// Waits (briefly) until a killed process is gone, so its port is free when we return.
fn wait_gone(pid: u32, start_ticks: Option<u64>) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid, start_ticks) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

mod os {
    use std::fs::File;
    use std::os::fd::AsRawFd;

    /// Sends `sig` to `pid`; true when it was delivered.
    pub fn kill(pid: u32, sig: i32) -> bool {
        let Ok(pid) = i32::try_from(pid) else { return false };
        // SAFETY: kill(2) takes plain integers; a positive pid addresses one process.
        pid > 0 && unsafe { libc::kill(pid, sig) } == 0
    }

    /// Blocks until this process holds the exclusive lock on `file`; it is released
    /// when the file is closed, also when the process dies.
    pub fn flock(file: &File) -> std::io::Result<()> {
        loop {
            // SAFETY: the fd is open for as long as `file` is borrowed.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(());
            }
            let error = std::io::Error::last_os_error();
            if error.kind() != std::io::ErrorKind::Interrupted {
                return Err(error);
            }
        }
    }

    /// The state letter and start time (field 22) of `/proc/PID/stat`.
    pub fn proc_stat(pid: u32) -> Option<(char, u64)> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name may hold spaces and parentheses: fields count from the last ')'.
        let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
        Some((fields.first()?.chars().next()?, fields.get(19)?.parse().ok()?))
    }

    pub fn start_ticks(pid: u32) -> Option<u64> {
        proc_stat(pid).map(|(_, ticks)| ticks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn templates_fill_fields_and_keep_the_rest() {
        let value = json!({ "Image": "sha256:ab", "State": { "Running": true, "Status": "running" }, "Name": "/web" });
        assert_eq!(
            template("{{.Image}} {{.State.Running}}/{{ .State.Status }} {{.Name}}", &value),
            "sha256:ab true/running /web"
        );
        assert_eq!(template("{{json .State}}", &value), r#"{"Running":true,"Status":"running"}"#);
        assert_eq!(template("{{.Nope}} {{if}}", &value), "<no value> {{if}}");
    }

    #[test]
    fn flags_parse_like_docker() {
        let (opts, operands) =
            parse(&strings("-d --name=web -p 8080:80 web:v1"), &["--name", "-p"], &["-d"]).ok().unwrap();
        assert_eq!(last(&opts, &["--name"]).as_deref(), Some("web"));
        assert_eq!(last(&opts, &["-p"]).as_deref(), Some("8080:80"));
        assert_eq!(operands, ["web:v1"]);
        let Err(Failure(code, message)) = parse(&strings("--bogus x"), &[], &[]) else { panic!("accepted") };
        assert_eq!((code, message.starts_with("unknown flag: --bogus")), (125, true));
        assert_eq!(port_mapping("127.0.0.1:8080:80/tcp").ok(), Some((Some("127.0.0.1".into()), Some(8080), 80)));
        assert_eq!(port_mapping("127.0.0.1::80").ok(), Some((Some("127.0.0.1".into()), None, 80)));
        assert_eq!(port_mapping("8080:80").ok(), Some((None, Some(8080), 80)));
    }

    #[test]
    fn images_resolve_by_reference_or_id() {
        let mut state = HostState::default();
        state.images.insert("web:v1".into(), image_id("web:v1"));
        let id = image_id("web:v1");
        assert_eq!(resolve_image(&state, "web:v1").as_deref(), Some("web:v1"));
        assert_eq!(resolve_image(&state, &id).as_deref(), Some("web:v1"));
        assert_eq!(resolve_image(&state, &id[7..19]).as_deref(), Some("web:v1"));
        assert_eq!(resolve_image(&state, "web:v2"), None);
        assert_eq!(
            split_reference("registry.example.com:5000/team/web:v2"),
            ("registry.example.com:5000/team/web".into(), "v2".into())
        );
        assert_eq!(split_reference("web"), ("web".into(), "latest".into()));
    }

    #[test]
    fn this_process_is_alive_and_a_wrong_start_time_is_not() {
        let me = std::process::id();
        let ticks = os::start_ticks(me);
        assert!(alive(me, ticks));
        if let Some(ticks) = ticks {
            assert!(!alive(me, Some(ticks + 1)));
        }
    }
}
