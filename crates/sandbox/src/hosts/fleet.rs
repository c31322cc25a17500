//! The rig: N hosts, each on its own loopback address with an SSH server and the
//! runtime stand-in as `docker`/`podman`, one client key they all accept, and the
//! known_hosts lines a client needs. Dropping it kills every app it started.

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use russh::keys::PrivateKey;

use super::openssh::{Sshd, SshdOptions};
use super::runtime::{self, ENV_APP_COMMAND, ENV_AS, ENV_DIR, ENV_HOST, ENV_RELEASES};
use super::ssh::{new_ed25519_key, SshHost, SshHostOptions};
use crate::app::{spec_for, ReleaseSpec, Releases};

/// Held on every address a fleet uses, for its life: another fleet (in this test
/// binary or another) that finds it taken picks other addresses.
const CLAIM_PORT: u16 = 47_823;

#[derive(Debug, Clone)]
pub struct FleetOptions {
    pub hosts: usize,
    /// The SSH port on every host; 0 picks one free on all of them.
    pub ssh_port: u16,
    /// The port the app is published on, on every host; 0 picks one free on all.
    pub app_port: u16,
    /// The container's name.
    pub container: String,
    /// The image each host runs at start (pulled and run through the runtime itself).
    pub running: Option<String>,
    /// The images that can be pulled.
    pub releases: Releases,
    /// How to run the test app, e.g. [safe-deploy, "__sandbox-app"] or [sandbox-app].
    pub app_command: Vec<OsString>,
    /// How to run the runtime, e.g. [safe-deploy, "__sandbox-runtime"] or [sandbox-runtime].
    pub runtime_command: Vec<OsString>,
    /// Which SSH server each host runs.
    pub backend: Backend,
    /// The app also serves TLS on a second port (container port 8443), for a
    /// balancer's HTTPS check.
    pub tls: bool,
}

/// Which SSH server the hosts run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// In process (russh): faults, and a record of commands, users and forwards.
    #[default]
    Russh,
    /// The real OpenSSH `sshd`, one process per host, logging in as the current user.
    OpenSsh,
}

/// One host's SSH server.
enum Server {
    Russh(SshHost),
    OpenSsh(Sshd),
}

impl Default for FleetOptions {
    fn default() -> Self {
        let exe = std::env::current_exe().map(OsString::from).unwrap_or_else(|_| OsString::from("safe-deploy"));
        FleetOptions {
            hosts: 3,
            ssh_port: 0,
            app_port: 0,
            container: "web".into(),
            running: None,
            releases: Releases::new(),
            app_command: vec![exe.clone(), "__sandbox-app".into()],
            runtime_command: vec![exe, "__sandbox-runtime".into()],
            backend: Backend::Russh,
            tls: false,
        }
    }
}

/// One host as a client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInfo {
    pub addr: Ipv4Addr,
    pub ssh: SocketAddr,
    /// Where the app answers once a container publishes `app_port`.
    pub app: SocketAddr,
    /// Where it answers over TLS, when the fleet has a TLS port.
    pub tls: Option<SocketAddr>,
    /// The SSH user's home and the cwd of every command.
    pub home: PathBuf,
}

pub struct Fleet {
    hosts: Vec<HostInfo>,
    ssh: Vec<Server>,
    known_hosts: Vec<String>,
    user: String,
    client_key: PrivateKey,
    container: String,
    releases: Mutex<Releases>,
    /// How many runtime calls each host had once the fleet was ready.
    setup_calls: Vec<usize>,
    _claims: Vec<std::net::TcpListener>,
    // Last: the directory goes after everything that uses it.
    root: tempfile::TempDir,
}

impl Fleet {
    /// Starts the hosts in the current tokio runtime, and each one's container when
    /// `options.running` says so (returning once every app accepts connections).
    pub async fn start(options: FleetOptions) -> anyhow::Result<Fleet> {
        anyhow::ensure!(options.hosts > 0 && options.hosts <= 240, "a fleet has 1 to 240 hosts");
        anyhow::ensure!(!options.runtime_command.is_empty(), "runtime_command is empty");
        let root = tempfile::Builder::new().prefix("sandbox-hosts-").tempdir()?;
        let (state_dir, bin_dir) = (root.path().join("state"), root.path().join("bin"));
        std::fs::create_dir_all(&state_dir)?;
        let releases_path = root.path().join("releases.json");
        std::fs::write(&releases_path, serde_json::to_vec_pretty(&options.releases)?)?;
        write_wrappers(&bin_dir, &state_dir, &releases_path, &options.app_command, &options.runtime_command)?;

        let (addrs, claims) = claim_addresses(options.hosts)?;
        let ssh_listeners = bind_all(&addrs, options.ssh_port, &[])?;
        let ssh_port = ssh_listeners[0].local_addr()?.port();
        let app_port = match options.app_port {
            // Bound and let go: the addresses are this fleet's alone, so the port stays free.
            0 => bind_all(&addrs, 0, &[ssh_port])?[0].local_addr()?.port(),
            port => port,
        };
        let tls_port = match options.tls {
            true => Some(bind_all(&addrs, 0, &[ssh_port, app_port])?[0].local_addr()?.port()),
            false => None,
        };

        let client_key = new_ed25519_key()?;
        let key_path = root.path().join("client_key");
        std::fs::write(&key_path, client_key.to_openssh(russh::keys::ssh_key::LineEnding::LF)?.as_bytes())?;
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600))?;

        let (mut hosts, mut ssh, mut known_hosts) = (Vec::new(), Vec::new(), Vec::new());
        for (i, (addr, listener)) in addrs.iter().zip(ssh_listeners).enumerate() {
            let home = root.path().join(format!("home-{i}"));
            std::fs::create_dir_all(&home)?;
            let server = match options.backend {
                Backend::Russh => {
                    listener.set_nonblocking(true)?;
                    let listener = tokio::net::TcpListener::from_std(listener)?;
                    let server = SshHost::start(
                        listener,
                        SshHostOptions {
                            authorized: client_key.public_key().clone(),
                            host_key: None,
                            home: home.clone(),
                            bin_dir: bin_dir.clone(),
                        },
                    )?;
                    known_hosts.push(server.known_hosts_line());
                    Server::Russh(server)
                }
                Backend::OpenSsh => {
                    // Let go for sshd to bind: the address is this fleet's alone, so
                    // the port stays free.
                    let addr = listener.local_addr()?;
                    drop(listener);
                    let server = Sshd::start(SshdOptions {
                        addr,
                        authorized: client_key.public_key().clone(),
                        host_key: None,
                        home: home.clone(),
                        bin_dir: bin_dir.clone(),
                        dir: root.path().join(format!("sshd-{i}")),
                    })
                    .await?;
                    known_hosts.push(server.known_hosts_line());
                    Server::OpenSsh(server)
                }
            };
            let ssh_addr = SocketAddr::from((*addr, ssh_port));
            let (app, tls) = (SocketAddr::from((*addr, app_port)), tls_port.map(|p| SocketAddr::from((*addr, p))));
            hosts.push(HostInfo { addr: *addr, ssh: ssh_addr, app, tls, home });
            ssh.push(server);
        }
        let user = match options.backend {
            Backend::Russh => "root".to_string(),
            Backend::OpenSsh => super::openssh::current_user(),
        };
        let mut fleet = Fleet {
            hosts,
            ssh,
            known_hosts,
            user,
            client_key,
            container: options.container.clone(),
            releases: Mutex::new(options.releases.clone()),
            setup_calls: Vec::new(),
            _claims: claims,
            root,
        };
        if let Some(image) = &options.running {
            for i in 0..fleet.hosts.len() {
                fleet.start_container(i, image).await?;
            }
        }
        fleet.setup_calls = (0..fleet.hosts.len()).map(|i| runtime::calls(&fleet.host_dir(i)).len()).collect();
        Ok(fleet)
    }

    /// Pulls and runs `image` as the fleet's container on host `i`, as a deploy would,
    /// and waits until the app accepts connections (unless the release crashes).
    async fn start_container(&self, i: usize, image: &str) -> anyhow::Result<()> {
        let host = &self.hosts[i];
        let publish = format!("{}:{}", host.app.port(), host.app.port());
        self.docker(i, &["pull", image]).await?;
        let mut run = vec!["run", "-d", "--name", &self.container, "-p", &publish];
        let secure = host.tls.map(|t| format!("{}:8443", t.port()));
        if let Some(secure) = &secure {
            run.extend(["-p", secure]);
        }
        run.push(image);
        self.docker(i, &run).await?;
        let spec = spec_for(&self.releases.lock().unwrap_or_else(|e| e.into_inner()), image);
        if spec.crash_on_start {
            return Ok(());
        }
        let deadline = Instant::now() + Duration::from_secs(10) + Duration::from_millis(spec.boot_delay_ms);
        while tokio::net::TcpStream::connect(host.app).await.is_err() {
            anyhow::ensure!(Instant::now() < deadline, "{image} on {} never listened on {}", host.addr, host.app);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Runs the `docker` wrapper on host `i` directly (not over SSH), in the SSH
    /// user's home as a command over SSH would: how a test sets a host up by hand.
    pub async fn docker(&self, i: usize, args: &[&str]) -> anyhow::Result<()> {
        let out = tokio::process::Command::new(self.bin_dir().join("docker"))
            .args(args)
            .current_dir(&self.hosts[i].home)
            .env(ENV_HOST, self.hosts[i].addr.to_string())
            .output()
            .await?;
        anyhow::ensure!(
            out.status.success(),
            "docker {} on {}: {}",
            args.join(" "),
            self.hosts[i].addr,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(())
    }

    pub fn hosts(&self) -> &[HostInfo] {
        &self.hosts
    }

    /// Host `i`'s in-process SSH server, with its record and faults.
    ///
    /// # Panics
    /// On an OpenSSH fleet, which has none: see `sshd`.
    pub fn ssh(&self, i: usize) -> &SshHost {
        match &self.ssh[i] {
            Server::Russh(server) => server,
            Server::OpenSsh(_) => panic!("host {i} runs OpenSSH's sshd, not the in-process server"),
        }
    }

    /// Host `i`'s sshd, on an OpenSSH fleet.
    pub fn sshd(&self, i: usize) -> Option<&Sshd> {
        match &self.ssh[i] {
            Server::OpenSsh(server) => Some(server),
            Server::Russh(_) => None,
        }
    }

    /// The user to log in as: any on the in-process servers (root, a deploy's default),
    /// the current user on sshd.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The client's private key, OpenSSH format, unencrypted.
    pub fn client_key_openssh(&self) -> String {
        self.client_key.to_openssh(russh::keys::ssh_key::LineEnding::LF).map(|k| k.to_string()).unwrap_or_default()
    }

    pub fn client_key(&self) -> &PrivateKey {
        &self.client_key
    }

    /// The client's private key as a file (mode 0600), for `ssh -i`.
    pub fn client_key_path(&self) -> PathBuf {
        self.root.path().join("client_key")
    }

    /// The client's public key as an authorized_keys line.
    pub fn authorized_key(&self) -> String {
        self.client_key.public_key().to_openssh().unwrap_or_default()
    }

    /// One known_hosts line per host, newline-terminated.
    pub fn known_hosts(&self) -> String {
        self.known_hosts.iter().map(|line| format!("{line}\n")).collect()
    }

    /// The image the fleet's container runs on host `i`; None when there is none or
    /// it is not running.
    pub fn running(&self, i: usize) -> Option<String> {
        runtime::running_image(&self.host_dir(i), &self.container)
    }

    /// The runtime invocations on host `i` since the fleet was ready, each as argv
    /// with the name it was invoked as first (`docker`, `podman`).
    pub fn runtime_calls(&self, i: usize) -> Vec<Vec<String>> {
        runtime::calls(&self.host_dir(i)).split_off(self.setup_calls.get(i).copied().unwrap_or(0))
    }

    /// Makes `image` pullable (or changes how it behaves) from now on.
    pub fn add_release(&self, image: &str, spec: ReleaseSpec) -> std::io::Result<()> {
        let mut releases = self.releases.lock().unwrap_or_else(|e| e.into_inner());
        releases.insert(image.to_string(), spec);
        let path = self.releases_path();
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&*releases)?)?;
        std::fs::rename(tmp, path)
    }

    pub fn state_dir(&self) -> PathBuf {
        self.root.path().join("state")
    }

    pub fn bin_dir(&self) -> PathBuf {
        self.root.path().join("bin")
    }

    pub fn releases_path(&self) -> PathBuf {
        self.root.path().join("releases.json")
    }

    /// Host `i`'s runtime state directory (state.json, calls.jsonl, container logs).
    pub fn host_dir(&self, i: usize) -> PathBuf {
        runtime::host_dir(&self.state_dir(), &self.hosts[i].addr.to_string())
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for server in &mut self.ssh {
            match server {
                Server::Russh(server) => server.stop(),
                Server::OpenSsh(server) => server.stop(),
            }
        }
        runtime::stop_all(&self.state_dir());
    }
}

/// Writes `docker` and `podman` into `bin_dir`: shell scripts that export where the
/// runtime keeps state, how it runs the app and what it can pull, then exec
/// `runtime_command` with their arguments. An OpenSSH rig puts the same on PATH.
pub fn write_wrappers(
    bin_dir: &Path,
    state_dir: &Path,
    releases: &Path,
    app_command: &[OsString],
    runtime_command: &[OsString],
) -> std::io::Result<()> {
    std::fs::create_dir_all(bin_dir)?;
    let app: Vec<String> = app_command.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    let app_json = serde_json::to_string(&app)?;
    let exec: Vec<String> = runtime_command.iter().map(|a| quote(a.as_bytes())).collect();
    for name in ["docker", "podman"] {
        let script = format!(
            "#!/bin/sh\n\
             # The sandbox's container runtime stand-in as `{name}` (written by the hosts rig).\n\
             export {ENV_DIR}={}\n\
             export {ENV_APP_COMMAND}={}\n\
             export {ENV_RELEASES}={}\n\
             export {ENV_AS}={name}\n\
             exec {} \"$@\"\n",
            quote(state_dir.as_os_str().as_bytes()),
            quote(app_json.as_bytes()),
            quote(releases.as_os_str().as_bytes()),
            exec.join(" "),
        );
        let path = bin_dir.join(name);
        std::fs::write(&path, script)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

/// `text` in single quotes for sh, each `'` as `'\''`.
fn quote(text: &[u8]) -> String {
    format!("'{}'", String::from_utf8_lossy(text).replace('\'', r"'\''"))
}

static NEXT_BLOCK: AtomicU32 = AtomicU32::new(0);

/// `n` loopback addresses 127.B.C.(10+i), B from this process's id and C from a
/// counter, each claimed by a listener on `CLAIM_PORT`; a block where any claim
/// fails (another fleet has it) is skipped.
fn claim_addresses(n: usize) -> anyhow::Result<(Vec<Ipv4Addr>, Vec<std::net::TcpListener>)> {
    let b = 2 + (std::process::id() % 250) as u8;
    for _ in 0..256 {
        let c = (NEXT_BLOCK.fetch_add(1, Ordering::Relaxed) % 256) as u8;
        let addrs: Vec<Ipv4Addr> = (0..n).map(|i| Ipv4Addr::new(127, b, c, 10 + i as u8)).collect();
        let claims: Result<Vec<_>, _> =
            addrs.iter().map(|a| std::net::TcpListener::bind(SocketAddr::from((*a, CLAIM_PORT)))).collect();
        if let Ok(claims) = claims {
            return Ok((addrs, claims));
        }
    }
    anyhow::bail!("no free block of {n} loopback addresses under 127.{b}.0.0/16")
}

/// Binds `port` on every address; with port 0, one port free on all of them (and not
/// in `avoid`).
fn bind_all(addrs: &[Ipv4Addr], port: u16, avoid: &[u16]) -> anyhow::Result<Vec<std::net::TcpListener>> {
    let bind = |addr: Ipv4Addr, port: u16| std::net::TcpListener::bind(SocketAddr::from((addr, port)));
    if port != 0 {
        return Ok(addrs.iter().map(|a| bind(*a, port)).collect::<Result<_, _>>()?);
    }
    for _ in 0..50 {
        let first = bind(addrs[0], 0)?;
        let port = first.local_addr()?.port();
        if avoid.contains(&port) || port == CLAIM_PORT {
            continue;
        }
        let rest: Result<Vec<_>, _> = addrs[1..].iter().map(|a| bind(*a, port)).collect();
        if let Ok(rest) = rest {
            return Ok(std::iter::once(first).chain(rest).collect());
        }
    }
    anyhow::bail!("no port free on every host address")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrappers_quote_what_they_export() {
        let dir = tempfile::tempdir().unwrap();
        let app = [OsString::from("/opt/it's here/sandbox-app")];
        let runtime = [OsString::from("/bin/safe-deploy"), OsString::from("__sandbox-runtime")];
        write_wrappers(dir.path(), Path::new("/st ate"), Path::new("/r.json"), &app, &runtime).unwrap();
        let script = std::fs::read_to_string(dir.path().join("podman")).unwrap();
        assert!(script.starts_with("#!/bin/sh\n"));
        assert!(script.contains(r#"export SANDBOX_APP_COMMAND='["/opt/it'\''s here/sandbox-app"]'"#), "{script}");
        assert!(script.contains("export SANDBOX_RUNTIME_DIR='/st ate'"));
        assert!(script.contains("export SANDBOX_RUNTIME_AS=podman"));
        assert!(script.ends_with("exec '/bin/safe-deploy' '__sandbox-runtime' \"$@\"\n"));
    }

    #[test]
    fn two_claims_never_share_an_address() {
        let (first, _held) = claim_addresses(2).unwrap();
        let (second, _also_held) = claim_addresses(2).unwrap();
        assert!(first.iter().all(|a| !second.contains(a)));
        assert_eq!(first[1].octets()[3], 11);
    }
}
