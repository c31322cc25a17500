//! The hosts rig end to end, driven the way a deploy over SSH drives it: a russh
//! client with the rig's key, `docker` commands over exec channels, the app reached
//! on the host's address and through direct-tcpip forwarding.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use russh::client;
use russh::keys::{PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::ChannelMsg;
use sandbox::app::{ReleaseSpec, Releases};
use sandbox::hosts::runtime::image_id;
use sandbox::hosts::{Backend, Fleet, FleetOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn releases() -> Releases {
    let mut releases = Releases::new();
    releases.insert("web:v1".into(), ReleaseSpec::default());
    releases.insert("web:v2".into(), ReleaseSpec { version: "2.0.0".into(), ..Default::default() });
    releases.insert("web:slow".into(), ReleaseSpec { latency_ms: 400, ..Default::default() });
    releases
}

async fn fleet(hosts: usize, running: Option<&str>) -> Fleet {
    let options = FleetOptions {
        hosts,
        running: running.map(str::to_string),
        releases: releases(),
        app_command: vec![env!("CARGO_BIN_EXE_sandbox-app").into()],
        runtime_command: vec![env!("CARGO_BIN_EXE_sandbox-runtime").into()],
        ..Default::default()
    };
    bounded(Fleet::start(options)).await.expect("the fleet starts")
}

/// Every step gets a bound, so a broken rig fails the test instead of hanging it.
async fn bounded<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), future).await.expect("done within 20s")
}

/// Trusts exactly the key in the host's known_hosts line.
struct KnownHost(String);

impl client::Handler for KnownHost {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = key else { return Ok(false) };
        let key = key.to_openssh().map_err(|e| russh::Error::from(russh::keys::Error::from(e)))?;
        Ok(self.0.split_once(' ').is_some_and(|(_, known)| known == key.trim_end()))
    }
}

async fn try_connect(fleet: &Fleet, i: usize, key: russh::keys::PrivateKey) -> (client::Handle<KnownHost>, bool) {
    try_connect_as(fleet, i, key, "deploy").await
}

async fn try_connect_as(
    fleet: &Fleet,
    i: usize,
    key: russh::keys::PrivateKey,
    user: &str,
) -> (client::Handle<KnownHost>, bool) {
    let host = &fleet.hosts()[i];
    let known = fleet.known_hosts().lines().nth(i).unwrap().to_string();
    assert!(known.starts_with(&format!("[{}]:{} ssh-ed25519 AAAA", host.addr, host.ssh.port())), "{known}");
    let config = Arc::new(client::Config::default());
    let mut handle =
        bounded(client::connect(config, host.ssh, KnownHost(known))).await.expect("connects, host key known");
    let auth = bounded(handle.authenticate_publickey(user, PrivateKeyWithHashAlg::new(Arc::new(key), None)))
        .await
        .expect("auth completes");
    (handle, auth.success())
}

/// Connects to host `i` with the rig's key, read back from its OpenSSH PEM.
async fn connect(fleet: &Fleet, i: usize) -> client::Handle<KnownHost> {
    let key = russh::keys::decode_secret_key(&fleet.client_key_openssh(), None).expect("an OpenSSH private key");
    let (handle, accepted) = try_connect(fleet, i, key).await;
    assert!(accepted, "the rig's key is accepted");
    handle
}

#[derive(Debug)]
struct Ran {
    code: Option<u32>,
    out: String,
    err: String,
}

async fn exec(ssh: &client::Handle<KnownHost>, command: &str) -> Ran {
    bounded(async {
        let mut channel = ssh.channel_open_session().await.expect("a session channel");
        channel.exec(true, command).await.expect("exec sent");
        let mut ran = Ran { code: None, out: String::new(), err: String::new() };
        while let Some(message) = channel.wait().await {
            match message {
                ChannelMsg::Data { data } => ran.out.push_str(&String::from_utf8_lossy(&data)),
                ChannelMsg::ExtendedData { data, ext: 1 } => ran.err.push_str(&String::from_utf8_lossy(&data)),
                ChannelMsg::ExitStatus { exit_status } => ran.code = Some(exit_status),
                _ => {}
            }
        }
        ran
    })
    .await
}

/// One HTTP/1.1 request through a direct-tcpip channel; (status, body).
async fn forwarded(
    ssh: &client::Handle<KnownHost>,
    target: std::net::SocketAddr,
    method: &str,
    path: &str,
) -> (u16, String) {
    bounded(async {
        let channel = ssh
            .channel_open_direct_tcpip(target.ip().to_string(), target.port().into(), "127.0.0.1", 40000)
            .await
            .expect("forwarding opens");
        let mut stream = channel.into_stream();
        let request =
            format!("{method} {path} HTTP/1.1\r\nhost: {target}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        (status, response.split("\r\n\r\n").nth(1).unwrap_or_default().to_string())
    })
    .await
}

async fn get(addr: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    let reply = sandbox::client::call("GET", &format!("http://{addr}{path}"), &[], None).await.ok()?;
    Some((reply.status, reply.text()))
}

async fn wait_answering(addr: std::net::SocketAddr) {
    bounded(async {
        while get(addr, "/health").await.is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

fn argv(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_string).collect()
}

#[tokio::test]
async fn a_container_kept_under_another_name_starts_again_as_it_was_and_a_staged_one_listens_on_loopback() {
    let fleet = fleet(1, None).await;
    let ssh = connect(&fleet, 0).await;
    let app = fleet.hosts()[0].app;
    let port = app.port();
    std::fs::write(fleet.hosts()[0].home.join("app.env"), "GREETING=kept\n").unwrap();
    for command in ["docker pull web:v1", "docker pull web:v2"] {
        assert_eq!(exec(&ssh, command).await.code, Some(0));
    }
    let run = format!("docker run -d --name web --restart unless-stopped -p {port}:8080 --env-file app.env web:v1");
    assert_eq!(exec(&ssh, &run).await.code, Some(0));
    wait_answering(app).await;

    // Stopped and kept under another name: the name is free, the port too.
    assert_eq!(exec(&ssh, "docker stop --time 1 web").await.code, Some(0));
    assert_eq!(exec(&ssh, "docker rename web web-kept").await.code, Some(0));
    let taken = exec(&ssh, "docker rename web web-kept").await;
    assert_eq!((taken.code, taken.err.contains("No such container: web")), (Some(1), true), "{taken:?}");
    let listed = exec(&ssh, &format!("docker ps --all --filter publish={port} --format '{{{{.Names}}}}'")).await;
    assert_eq!(listed.out, "", "a stopped container publishes nothing: {listed:?}");
    let update = exec(&ssh, "docker update --restart no web-kept").await;
    assert_eq!(update.code, Some(0), "{update:?}");

    // Staged on loopback, on a port docker picks: reachable there, not on the host's address.
    let staged = exec(&ssh, "docker run -d --name web -p 127.0.0.1::8080 web:v2").await;
    assert_eq!(staged.code, Some(0), "{staged:?}");
    let published = exec(&ssh, "docker port web 8080/tcp").await;
    let loopback: std::net::SocketAddr = published.out.trim().parse().expect(&published.out);
    assert!(loopback.ip().is_loopback() && loopback.port() != port, "{loopback}");
    wait_answering(loopback).await;
    assert_eq!(get(loopback, "/version").await, Some((200, "2.0.0".into())));
    assert!(tokio::net::TcpStream::connect(app).await.is_err(), "nothing on the balancer's port");
    let all = exec(&ssh, "docker port web").await;
    assert_eq!(all.out, format!("8080/tcp -> {loopback}\n"));

    // The kept one comes back exactly as it was made: image, port and env file.
    assert_eq!(exec(&ssh, "docker rm --force web").await.code, Some(0));
    assert_eq!(exec(&ssh, "docker rename web-kept web").await.code, Some(0));
    assert_eq!(exec(&ssh, "docker start web").await.code, Some(0));
    wait_answering(app).await;
    assert_eq!(get(app, "/version").await, Some((200, "v1".into())));
    let env = exec(&ssh, "docker inspect --format '{{json .Config.Env}}' web").await;
    assert_eq!(env.out.trim(), r#"["GREETING=kept"]"#);
    let listed = exec(&ssh, "docker ps --format '{{.Names}} {{.Ports}}'").await;
    assert_eq!(listed.out, format!("web 0.0.0.0:{port}->8080/tcp\n"));
    // An image named like a container is not a container to `inspect --type container`.
    let no_container = exec(&ssh, "docker inspect --type container --format '{{.Id}}' web:v2").await;
    assert_eq!(no_container.code, Some(1), "{no_container:?}");
}

#[tokio::test]
async fn a_deploy_over_ssh_pulls_runs_and_serves_on_the_hosts_address() {
    let fleet = fleet(2, None).await;
    let ssh = connect(&fleet, 0).await;
    let app = fleet.hosts()[0].app;
    let port = app.port();

    let pulled = exec(&ssh, "docker pull web:v2").await;
    assert_eq!(pulled.code, Some(0), "{pulled:?}");
    assert!(pulled.out.contains("\nDigest: sha256:"), "{}", pulled.out);
    let ran =
        exec(&ssh, &format!("docker run -d --name web --restart unless-stopped -p {port}:8080 -e GREETING=hi web:v2"))
            .await;
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert_eq!(ran.out.trim().len(), 64, "a container id: {}", ran.out);
    wait_answering(app).await;
    assert_eq!(get(app, "/version").await, Some((200, "2.0.0".into())));
    assert_eq!(fleet.running(0).as_deref(), Some("web:v2"));
    assert_eq!(fleet.running(1), None, "only host 0 was deployed to");

    let format = "'{{.Image}} {{.Config.Image}} {{.State.Running}} {{.State.Status}} {{.Name}}'";
    let inspected = exec(&ssh, &format!("docker inspect --format {format} web")).await;
    assert_eq!(inspected.out, format!("{} web:v2 true running /web\n", image_id("web:v2")));
    let by_id = exec(&ssh, &format!("docker image inspect --format '{{{{.Id}}}}' {}", image_id("web:v2"))).await;
    assert_eq!((by_id.code, by_id.out.trim()), (Some(0), image_id("web:v2").as_str()));

    let conflict = exec(&ssh, &format!("docker run -d --name web -p {port}:8080 web:v2")).await;
    assert_eq!(conflict.code, Some(125));
    assert!(conflict.err.contains("Conflict. The container name \"/web\" is already in use"), "{}", conflict.err);
    let unknown = exec(&ssh, "docker pull web:v9").await;
    assert_eq!((unknown.code, unknown.err.trim()), (Some(1), "Error response from daemon: manifest unknown"));
    let not_pulled = exec(&ssh, "docker run -d --name other web:v1").await;
    assert_eq!(not_pulled.code, Some(125));
    assert!(not_pulled.err.contains("Unable to find image 'web:v1'"), "{}", not_pulled.err);
    let no_env_file = exec(&ssh, "docker run -d --name other --env-file ./missing.env web:v2").await;
    assert_eq!(no_env_file.code, Some(125), "{no_env_file:?}");
    let missing = exec(&ssh, "docker inspect --format '{{.Image}}' nope").await;
    assert_eq!((missing.code, missing.err.trim()), (Some(1), "Error: No such object: nope"));

    let port_taken = exec(&ssh, &format!("docker run -d --name web-next -p {port}:8080 web:v2")).await;
    assert_eq!(port_taken.code, Some(125));
    assert!(port_taken.err.contains("port is already allocated"), "{}", port_taken.err);
    let created = exec(&ssh, "docker inspect -f '{{.State.Status}}' web-next").await;
    assert_eq!(created.out, "created\n", "docker leaves it created, not started");
    assert_eq!(exec(&ssh, "docker rm web-next").await.code, Some(0));

    let running = exec(&ssh, "docker rm web").await;
    assert_eq!(running.code, Some(1), "a running container is not removed without -f");
    assert_eq!(exec(&ssh, "docker rm -f web").await.code, Some(0));
    assert_eq!(get(app, "/health").await, None, "rm -f killed the app");
    assert_eq!(fleet.running(0), None);

    let calls = fleet.runtime_calls(0);
    assert_eq!(calls.first(), Some(&argv("docker pull web:v2")));
    assert_eq!(calls.get(1).map(|c| &c[..3]), Some(&argv("docker run -d")[..]));
    assert_eq!(calls.last(), Some(&argv("docker rm -f web")));
    assert!(fleet.runtime_calls(1).is_empty());
    assert_eq!(fleet.ssh(0).users().first().map(String::as_str), Some("deploy"));
}

#[tokio::test]
async fn a_drained_host_fails_health_and_a_stop_finishes_requests_in_flight() {
    let fleet = fleet(1, Some("web:slow")).await;
    assert_eq!(fleet.running(0).as_deref(), Some("web:slow"), "the rig started it");
    assert!(fleet.runtime_calls(0).is_empty(), "setup calls are not the test's");
    let ssh = connect(&fleet, 0).await;
    let app = fleet.hosts()[0].app;

    assert_eq!(forwarded(&ssh, app, "GET", "/health").await, (200, "ok".into()));
    assert_eq!(forwarded(&ssh, app, "POST", "/drain").await.0, 200);
    assert_eq!(forwarded(&ssh, app, "GET", "/health").await, (503, "draining".into()));
    assert_eq!(forwarded(&ssh, app, "GET", "/").await.0, 200, "a draining app still serves");
    assert_eq!(fleet.ssh(0).forwards(), vec![app.to_string(); 4]);

    let in_flight = tokio::spawn(get(app, "/version"));
    tokio::time::sleep(Duration::from_millis(150)).await;
    let stopped = exec(&ssh, "docker stop --time 5 web").await;
    assert_eq!((stopped.code, stopped.out.as_str()), (Some(0), "web\n"));
    assert_eq!(in_flight.await.unwrap(), Some((200, "slow".into())), "the request in flight was answered");
    assert_eq!(fleet.running(0), None);
    let status = exec(&ssh, "docker inspect -f '{{.State.Status}}' web").await;
    assert_eq!(status.out, "exited\n");
    assert_eq!(exec(&ssh, "docker stop web").await.code, Some(0), "stopping a stopped container is fine");
    assert_eq!(exec(&ssh, "docker rm web").await.code, Some(0));
    assert_eq!(exec(&ssh, "docker stop web").await.code, Some(1));
}

#[tokio::test]
async fn a_wrong_client_key_is_rejected() {
    let fleet = fleet(1, None).await;
    let stranger = sandbox::hosts::ssh::new_ed25519_key().unwrap();
    let (_, accepted) = try_connect(&fleet, 0, stranger).await;
    assert!(!accepted);
    assert!(fleet.ssh(0).users().is_empty());
}

#[tokio::test]
async fn a_dropped_connection_never_runs_its_command() {
    let fleet = fleet(1, None).await;
    let ssh = connect(&fleet, 0).await;
    fleet.ssh(0).drop_connection_on("docker pull");
    let cut = exec(&ssh, "docker pull web:v1").await;
    assert_eq!(cut.code, None, "no exit status: {cut:?}");
    bounded(async {
        while !ssh.is_closed() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(fleet.runtime_calls(0).is_empty(), "the command did not run");
    assert_eq!(fleet.ssh(0).commands(), ["docker pull web:v1"]);

    // One-shot: the next connection runs it.
    let again = connect(&fleet, 0).await;
    assert_eq!(exec(&again, "docker pull web:v1").await.code, Some(0));
    assert_eq!(fleet.runtime_calls(0), [argv("docker pull web:v1")]);
}

#[tokio::test]
async fn podman_works_and_channels_run_side_by_side() {
    let fleet = fleet(1, None).await;
    let ssh = connect(&fleet, 0).await;
    let host = &fleet.hosts()[0];
    let (version, shell, ps) = tokio::join!(
        exec(&ssh, "podman version"),
        exec(&ssh, "echo $SSH_CONNECTION; pwd; echo oops >&2; exit 3"),
        exec(&ssh, "sleep 0.2; docker ps -q"),
    );
    assert_eq!(version.code, Some(0), "{version:?}");
    assert_eq!(ps.code, Some(0), "{ps:?}");
    assert_eq!((shell.code, shell.err.as_str()), (Some(3), "oops\n"));
    let mut lines = shell.out.lines();
    let connection: Vec<&str> = lines.next().unwrap_or_default().split(' ').collect();
    assert_eq!(connection[2..], [host.addr.to_string(), host.ssh.port().to_string()]);
    assert_eq!(lines.next().map(std::path::PathBuf::from), Some(host.home.canonicalize().unwrap()));
    let calls = fleet.runtime_calls(0);
    assert!(calls.contains(&argv("podman version")) && calls.contains(&argv("docker ps -q")), "{calls:?}");
    // The same connection keeps working after them, and stdin reaches the command.
    let mut channel = ssh.channel_open_session().await.unwrap();
    channel.exec(true, "cat > app.env && podman run -d --name web --env-file app.env web:v1").await.unwrap();
    channel.data(&b"GREETING=hi\n"[..]).await.unwrap();
    channel.eof().await.unwrap();
    let mut code = None;
    while let Some(message) = bounded(channel.wait()).await {
        if let ChannelMsg::ExitStatus { exit_status } = message {
            code = Some(exit_status);
        }
    }
    assert_eq!(code, Some(125), "web:v1 is not pulled here, but the env file was written first");
    assert_eq!(std::fs::read_to_string(host.home.join("app.env")).unwrap(), "GREETING=hi\n");
    let refused =
        ssh.channel_open_direct_tcpip(host.addr.to_string(), host.app.port().into(), "127.0.0.1", 40000).await;
    assert!(refused.is_err(), "nothing listens there, so the forward is refused");
}

// ----- the same hosts on OpenSSH's sshd -----

/// A fleet whose hosts run the real sshd; None (the test skipped) without it.
async fn openssh_fleet(test: &str, hosts: usize, running: Option<&str>) -> Option<Fleet> {
    if !sandbox::hosts::real_rig_present(test, &[("sshd", sandbox::hosts::sshd_path().is_some())]) {
        return None;
    }
    let options = FleetOptions {
        hosts,
        running: running.map(str::to_string),
        releases: releases(),
        app_command: vec![env!("CARGO_BIN_EXE_sandbox-app").into()],
        runtime_command: vec![env!("CARGO_BIN_EXE_sandbox-runtime").into()],
        backend: Backend::OpenSsh,
        ..Default::default()
    };
    Some(bounded(Fleet::start(options)).await.expect("the OpenSSH fleet starts"))
}

/// Runs `command` on host `i` with the system's `ssh` client, checking the host key
/// against the fleet's known_hosts alone; (exit code, stdout, stderr).
async fn system_ssh(fleet: &Fleet, i: usize, key: &std::path::Path, command: &str) -> (i32, String, String) {
    let known = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(known.path(), fleet.known_hosts()).unwrap();
    let host = &fleet.hosts()[i];
    let out = bounded(
        tokio::process::Command::new("ssh")
            .arg("-i")
            .arg(key)
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known.path().display()))
            .args(["-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"])
            .args(["-F", "/dev/null", "-p", &host.ssh.port().to_string()])
            .arg(format!("{}@{}", fleet.user(), host.addr))
            .arg(command)
            .output(),
    )
    .await
    .expect("ssh runs");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

#[tokio::test]
async fn openssh_hosts_run_docker_in_their_own_home_for_the_system_ssh_client() {
    let Some(fleet) = openssh_fleet("openssh system client", 2, None).await else { return };
    let key = fleet.client_key_path();

    let (code, out, err) =
        system_ssh(&fleet, 1, &key, "pwd; echo $HOME; docker version --format '{{.Client.Version}}'").await;
    assert_eq!(code, 0, "{err}\n{}", fleet.sshd(1).unwrap().log());
    let home = fleet.hosts()[1].home.display().to_string();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..2], [home.as_str(), home.as_str()], "cwd and HOME are host 1's home: {out}");

    // A deploy's lock, relative to the login directory, lands on the host it was taken on.
    assert_eq!(system_ssh(&fleet, 0, &key, "mkdir -p .safe-deploy/locks/web").await.0, 0);
    assert!(fleet.hosts()[0].home.join(".safe-deploy/locks/web").is_dir());
    assert!(!fleet.hosts()[1].home.join(".safe-deploy").exists());

    // The runtime tells the hosts apart by the address sshd was reached on.
    let (code, _, err) =
        system_ssh(&fleet, 1, &key, "docker pull web:v2 && docker run -d --name web -p 9:9 web:v2").await;
    assert_eq!(code, 0, "{err}");
    assert!(fleet.runtime_calls(0).is_empty());
    assert_eq!(fleet.runtime_calls(1).get(1), Some(&argv("docker pull web:v2")), "after docker version");
    assert_eq!(fleet.running(1).as_deref(), Some("web:v2"));

    let stranger = tempfile::tempdir().unwrap();
    let stranger_key = stranger.path().join("key");
    let made = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&stranger_key)
        .status()
        .unwrap();
    assert!(made.success());
    let (code, _, err) = system_ssh(&fleet, 0, &stranger_key, "docker version").await;
    assert_eq!(code, 255, "another key is refused: {err}");
}

#[tokio::test]
async fn openssh_hosts_serve_a_russh_client_with_exec_and_forwarding() {
    let Some(fleet) = openssh_fleet("openssh russh client", 2, Some("web:v1")).await else { return };
    let key = russh::keys::decode_secret_key(&fleet.client_key_openssh(), None).unwrap();
    let (ssh, accepted) = try_connect_as(&fleet, 1, key, fleet.user()).await;
    assert!(accepted, "{}", fleet.sshd(1).unwrap().log());
    let app = fleet.hosts()[1].app;

    let ps = exec(&ssh, "docker inspect -f '{{.Config.Image}}' web").await;
    assert_eq!((ps.code, ps.out.as_str()), (Some(0), "web:v1\n"), "{ps:?}");
    let failed = exec(&ssh, "docker stop nothing-here").await;
    assert_eq!(failed.code, Some(1), "exit codes come back: {failed:?}");

    assert_eq!(forwarded(&ssh, app, "GET", "/health").await, (200, "ok".into()));
    assert_eq!(forwarded(&ssh, app, "POST", "/drain").await.0, 200);
    assert_eq!(get(app, "/health").await, Some((503, "draining".into())), "drained through the tunnel");
    assert_eq!(get(fleet.hosts()[0].app, "/health").await, Some((200, "ok".into())), "host 0 untouched");

    let stranger = sandbox::hosts::ssh::new_ed25519_key().unwrap();
    let (_, accepted) = try_connect_as(&fleet, 0, stranger, fleet.user()).await;
    assert!(!accepted);
}

// ----- the hosts behind the real HAProxy -----

/// Runs the `docker` wrapper as host `i` itself would (no SSH).
async fn docker_on(fleet: &Fleet, i: usize, args: &[&str]) {
    let out = tokio::process::Command::new(fleet.bin_dir().join("docker"))
        .args(args)
        .env(sandbox::hosts::runtime::ENV_HOST, fleet.hosts()[i].addr.to_string())
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn haproxy_takes_a_drained_host_out_and_loses_no_request_while_it_stops() {
    use sandbox::kit::haproxy::{haproxy_path, Haproxy, HaproxyOptions};
    if !sandbox::hosts::real_rig_present("haproxy drain", &[("haproxy", haproxy_path().is_some())]) {
        return;
    }
    let fleet = fleet(2, Some("web:v1")).await;
    let lb = Haproxy::start(HaproxyOptions {
        servers: fleet.hosts().iter().map(|h| h.app).collect(),
        check_path: "/health".into(),
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(100),
        healthy: 2,
        unhealthy: 2,
    })
    .await
    .expect("haproxy starts");
    bounded(lb.wait_all_up(Duration::from_secs(10))).await.unwrap();

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let url = format!("{}/", lb.url());
    let traffic = tokio::spawn({
        let stop = stop.clone();
        async move {
            let (mut total, mut failed) = (0, 0);
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                total += 1;
                let ok = matches!(sandbox::client::call("GET", &url, &[], None).await, Ok(r) if r.status == 200);
                failed += u32::from(!ok);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (total, failed)
        }
    });

    let drained = sandbox::client::call("POST", &format!("http://{}/drain", fleet.hosts()[0].app), &[], None).await;
    assert_eq!(drained.unwrap().status, 200);
    bounded(async {
        while lb.servers().unwrap()[0].status != "DOWN" {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(lb.servers().unwrap()[1].status, "UP");
    docker_on(&fleet, 0, &["pull", "web:v2"]).await;
    docker_on(&fleet, 0, &["stop", "web"]).await;
    docker_on(&fleet, 0, &["rm", "web"]).await;
    let publish = format!("{0}:{0}", fleet.hosts()[0].app.port());
    docker_on(&fleet, 0, &["run", "-d", "--name", "web", "-p", &publish, "web:v2"]).await;
    bounded(lb.wait_all_up(Duration::from_secs(10))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (total, failed) = traffic.await.unwrap();
    assert!(total > 20, "steady traffic ran: {total}");
    assert_eq!(failed, 0, "{failed}/{total} failed through haproxy:\n{}", lb.log());
    assert!(lb.servers().unwrap()[0].sessions > 0);
}
