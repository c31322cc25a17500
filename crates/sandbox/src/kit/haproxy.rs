//! The real HAProxy in front of a set of servers, for tests and benchmarks that check a
//! deploy against a balancer that is not the sandbox's own: `haproxy -db` with a
//! generated config (HTTP health checks with rise/fall, retries that keep a request
//! off a server that just went away), and its stats socket to read each server's state.
//! Killed when dropped.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where haproxy is: Debian's place, else the first on PATH. None when not installed.
pub fn haproxy_path() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).map(|dir| dir.join("haproxy")).collect::<Vec<_>>())
        .unwrap_or_default();
    std::iter::once(PathBuf::from("/usr/sbin/haproxy")).chain(on_path).find(|p| p.is_file())
}

#[derive(Debug, Clone)]
pub struct HaproxyOptions {
    /// The servers, in order; they are named `s0`, `s1`, ….
    pub servers: Vec<SocketAddr>,
    /// `option httpchk GET <path>`.
    pub check_path: String,
    /// `inter`: time between two checks of one server.
    pub interval: Duration,
    /// `timeout check`.
    pub timeout: Duration,
    /// `rise`: passes in a row that bring a server up.
    pub healthy: u32,
    /// `fall`: failures in a row that take it down.
    pub unhealthy: u32,
}

/// One server's line of `show stat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerStat {
    pub name: String,
    /// HAProxy's word: UP, DOWN, `UP 1/2` (going down), `DOWN 1/2` (coming up), MAINT.
    pub status: String,
    /// Requests it was sent (`stot`).
    pub sessions: u64,
}

pub struct Haproxy {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    child: Child,
}

impl Haproxy {
    /// Starts haproxy on 127.0.0.1 (a free port) and returns once it accepts.
    pub async fn start(options: HaproxyOptions) -> anyhow::Result<Haproxy> {
        let program =
            haproxy_path().ok_or_else(|| anyhow::anyhow!("haproxy is not installed (apt-get install haproxy)"))?;
        let dir = tempfile::Builder::new().prefix("sandbox-haproxy-").tempdir()?;
        // Bound and let go: a race with another process for the port is unlikely, and
        // haproxy would say so at start.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let config_path = dir.path().join("haproxy.cfg");
        std::fs::write(&config_path, config(&options, addr, &dir.path().join("admin.sock")))?;
        let log = std::fs::File::create(dir.path().join("haproxy.log"))?;
        let child = Command::new(program)
            .arg("-db")
            .arg("-f")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let mut haproxy = Haproxy { addr, dir, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        // haproxy binds its unix socket under a temporary name and renames it into place,
        // so the frontend can accept before the stats socket exists: wait for both.
        while tokio::net::TcpStream::connect(addr).await.is_err() || haproxy.command("show info").is_err() {
            if let Some(status) = haproxy.child.try_wait()? {
                anyhow::bail!("haproxy exited ({status}): {}", haproxy.log().trim());
            }
            anyhow::ensure!(Instant::now() < deadline, "haproxy never listened on {addr}: {}", haproxy.log().trim());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(haproxy)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What haproxy printed (warnings, servers going up and down).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("haproxy.log")).unwrap_or_default()
    }

    pub fn config(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("haproxy.cfg")).unwrap_or_default()
    }

    /// Sends one command to the stats socket and returns the answer.
    pub fn command(&self, command: &str) -> std::io::Result<String> {
        let mut socket = std::os::unix::net::UnixStream::connect(self.dir.path().join("admin.sock"))?;
        socket.set_read_timeout(Some(Duration::from_secs(5)))?;
        socket.write_all(format!("{command}\n").as_bytes())?;
        let mut answer = String::new();
        socket.read_to_string(&mut answer)?;
        Ok(answer)
    }

    /// Every server of the backend as `show stat` has it now, in order.
    pub fn servers(&self) -> std::io::Result<Vec<ServerStat>> {
        Ok(parse_stat(&self.command("show stat")?))
    }

    /// Waits until every server is UP (a fresh haproxy checks them first).
    pub async fn wait_all_up(&self, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let servers = match self.servers() {
                Ok(servers) => servers,
                // A busy socket (haproxy answers one command per connection) is asked again.
                Err(_) if Instant::now() < deadline => Vec::new(),
                Err(error) => return Err(error.into()),
            };
            if !servers.is_empty() && servers.iter().all(|s| s.status == "UP") {
                return Ok(());
            }
            anyhow::ensure!(Instant::now() < deadline, "not every server came up: {servers:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The config: one frontend, one backend checked the way `options` says. A request
/// that finds its server gone (refused, or closed without an answer, as a stopped app
/// does) is retried on another server, so a server drained by its check and then
/// stopped costs no request.
fn config(options: &HaproxyOptions, addr: SocketAddr, socket: &std::path::Path) -> String {
    let ms = |d: Duration| format!("{}ms", d.as_millis().max(1));
    let servers: String =
        options.servers.iter().enumerate().map(|(i, server)| format!("    server s{i} {server} check\n")).collect();
    format!(
        "# Written by the sandbox's haproxy rig.\n\
         global\n\
         \x20   stats socket {socket} mode 600 level admin\n\
         \x20   maxconn 2000\n\
         defaults\n\
         \x20   mode http\n\
         \x20   timeout connect 1s\n\
         \x20   timeout client 30s\n\
         \x20   timeout server 30s\n\
         \x20   timeout check {timeout}\n\
         \x20   retries 3\n\
         \x20   option redispatch 1\n\
         \x20   retry-on conn-failure empty-response response-timeout\n\
         \x20   http-reuse safe\n\
         frontend web\n\
         \x20   bind {addr}\n\
         \x20   default_backend app\n\
         backend app\n\
         \x20   balance roundrobin\n\
         \x20   option httpchk GET {path}\n\
         \x20   http-check expect rstatus ^[23]\n\
         \x20   default-server inter {inter} fall {fall} rise {rise}\n\
         {servers}",
        socket = socket.display(),
        timeout = ms(options.timeout),
        path = options.check_path,
        inter = ms(options.interval),
        fall = options.unhealthy.max(1),
        rise = options.healthy.max(1),
    )
}

/// The backend's server rows of a `show stat` CSV (its header names the columns).
fn parse_stat(csv: &str) -> Vec<ServerStat> {
    let mut lines = csv.lines();
    let Some(header) = lines.next() else { return Vec::new() };
    let columns: Vec<&str> = header.trim_start_matches("# ").split(',').collect();
    let at = |name: &str| columns.iter().position(|c| *c == name);
    let (Some(px), Some(sv), Some(status), Some(stot)) = (at("pxname"), at("svname"), at("status"), at("stot")) else {
        return Vec::new();
    };
    lines
        .map(|line| line.split(',').collect::<Vec<_>>())
        .filter(|f| f.len() > status.max(stot) && f[px] == "app" && !matches!(f[sv], "FRONTEND" | "BACKEND"))
        .map(|f| ServerStat {
            name: f[sv].to_string(),
            status: f[status].to_string(),
            sessions: f[stot].parse().unwrap_or(0),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_checks_as_asked_and_retries_elsewhere() {
        let options = HaproxyOptions {
            servers: vec!["127.5.0.10:8080".parse().unwrap(), "127.5.0.11:8080".parse().unwrap()],
            check_path: "/health".into(),
            interval: Duration::from_millis(300),
            timeout: Duration::from_millis(200),
            healthy: 2,
            unhealthy: 3,
        };
        let text = config(&options, "127.0.0.1:9000".parse().unwrap(), std::path::Path::new("/d/admin.sock"));
        assert!(text.contains("    option httpchk GET /health\n"), "{text}");
        assert!(text.contains("    default-server inter 300ms fall 3 rise 2\n"));
        assert!(text.contains("    timeout check 200ms\n"));
        assert!(text.contains("    retry-on conn-failure empty-response response-timeout\n"));
        assert!(text.ends_with("    server s0 127.5.0.10:8080 check\n    server s1 127.5.0.11:8080 check\n"));
    }

    #[test]
    fn show_stat_gives_the_backends_servers() {
        let csv = "# pxname,svname,qcur,stot,status,\nweb,FRONTEND,0,7,OPEN,\napp,s0,0,4,UP,\napp,s1,0,3,DOWN 1/2,\napp,BACKEND,0,7,UP,\n";
        let servers = parse_stat(csv);
        assert_eq!(
            servers,
            [
                ServerStat { name: "s0".into(), status: "UP".into(), sessions: 4 },
                ServerStat { name: "s1".into(), status: "DOWN 1/2".into(), sessions: 3 },
            ]
        );
    }
}
