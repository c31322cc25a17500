//! One host's SSH server, in process (russh): publickey auth for the rig's one client
//! key, `exec` as `sh -c` in the host's home with the rig's `docker` on PATH (output,
//! exit status, EOF and close relayed as OpenSSH does), `direct-tcpip` forwarding
//! (`ssh -L`), and faults a test sets: drop the connection when a command arrives.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::keys::{PrivateKey, PublicKey};
use russh::server::{Auth, ChannelOpenHandle, Msg, Session};
use russh::{Channel, ChannelId, ChannelMsg, ChannelOpenFailure, MethodKind, MethodSet};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The PATH an exec sees after the rig's bin dir: what sshd gives a session.
const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How one host's SSH server runs its commands.
#[derive(Debug, Clone)]
pub struct SshHostOptions {
    /// The only client key accepted.
    pub authorized: PublicKey,
    /// The host key; a new ed25519 one when None.
    pub host_key: Option<PrivateKey>,
    /// The cwd and HOME of every command.
    pub home: PathBuf,
    /// Put first on PATH: where the `docker` and `podman` wrappers are.
    pub bin_dir: PathBuf,
}

/// What a test sees and sets on a host's SSH server.
#[derive(Default)]
struct Shared {
    commands: Mutex<Vec<String>>,
    users: Mutex<Vec<String>>,
    forwards: Mutex<Vec<String>>,
    drop_on: Mutex<Vec<String>>,
    /// Each open connection's socket (a second handle on it), to cut it.
    sockets: Mutex<HashMap<u64, std::net::TcpStream>>,
}

/// A running SSH server for one host; stops (and cuts every connection) when dropped.
pub struct SshHost {
    addr: SocketAddr,
    host_key: PublicKey,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl SshHost {
    /// Serves on `listener` (already bound to the host's address) in the current runtime.
    pub fn start(listener: TcpListener, options: SshHostOptions) -> std::io::Result<SshHost> {
        let addr = listener.local_addr()?;
        let key = match options.host_key.clone() {
            Some(key) => key,
            None => new_ed25519_key()?,
        };
        let host_key = key.public_key().clone();
        let config = Arc::new(russh::server::Config {
            methods: MethodSet::from(&[MethodKind::PublicKey][..]),
            keys: vec![key],
            // Rejections are for tests, not attackers: quick ones keep the tests quick.
            auth_rejection_time: Duration::from_millis(10),
            auth_rejection_time_initial: Some(Duration::ZERO),
            inactivity_timeout: Some(Duration::from_secs(600)),
            nodelay: true,
            ..Default::default()
        });
        let shared = Arc::new(Shared::default());
        let options = Arc::new(options);
        let accept = tokio::spawn(accept_loop(listener, config, options, shared.clone()));
        Ok(SshHost { addr, host_key, shared, accept })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn host_key(&self) -> &PublicKey {
        &self.host_key
    }

    /// The host's known_hosts line: `[IP]:PORT ssh-ed25519 AAAA…`, or `IP ssh-ed25519
    /// AAAA…` on port 22, as `ssh` writes them.
    pub fn known_hosts_line(&self) -> String {
        known_hosts_line(self.addr, &self.host_key)
    }

    /// One-shot: the next exec whose command contains `pattern` is not run; the TCP
    /// connection it came on is cut instead, as a network failure would.
    pub fn drop_connection_on(&self, pattern: &str) {
        lock(&self.shared.drop_on).push(pattern.to_string());
    }

    /// Every exec command received, in order, dropped ones included.
    pub fn commands(&self) -> Vec<String> {
        lock(&self.shared.commands).clone()
    }

    /// The user name of every authenticated connection, in order.
    pub fn users(&self) -> Vec<String> {
        lock(&self.shared.users).clone()
    }

    /// Every direct-tcpip target asked for (`host:port`), in order.
    pub fn forwards(&self) -> Vec<String> {
        lock(&self.shared.forwards).clone()
    }

    /// Stops accepting and cuts every open connection.
    pub fn stop(&self) {
        self.accept.abort();
        for socket in lock(&self.shared.sockets).values() {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Drop for SshHost {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The known_hosts line for `key` at `addr`: `[IP]:PORT ssh-ed25519 AAAA…`, or `IP
/// ssh-ed25519 AAAA…` on port 22, as `ssh` writes them.
pub fn known_hosts_line(addr: SocketAddr, key: &PublicKey) -> String {
    let key = key.to_openssh().unwrap_or_default();
    let key = key.trim_end();
    match addr.port() {
        22 => format!("{} {key}", addr.ip()),
        port => format!("[{}]:{port} {key}", addr.ip()),
    }
}

/// A poisoned lock still holds usable data: a test's panic must not hide the log.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A new ed25519 key from the OS's random source.
pub fn new_ed25519_key() -> std::io::Result<PrivateKey> {
    let mut seed = [0u8; 32];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut seed)?;
    Ok(PrivateKey::from(russh::keys::ssh_key::private::Ed25519Keypair::from_seed(&seed)))
}

async fn accept_loop(
    listener: TcpListener,
    config: Arc<russh::server::Config>,
    options: Arc<SshHostOptions>,
    shared: Arc<Shared>,
) {
    let mut next_id = 0u64;
    loop {
        let Ok((stream, peer)) = listener.accept().await else { continue };
        let Ok((stream, socket)) = with_second_handle(stream) else { continue };
        let Ok(local) = stream.local_addr() else { continue };
        next_id += 1;
        let id = next_id;
        let Ok(cut) = socket.try_clone() else { continue };
        lock(&shared.sockets).insert(id, socket);
        let connection = Connection {
            options: options.clone(),
            shared: shared.clone(),
            peer,
            local,
            socket: cut,
            user: String::new(),
            sessions: HashMap::new(),
        };
        let (config, shared) = (config.clone(), shared.clone());
        tokio::spawn(async move {
            if let Ok(session) = russh::server::run_stream(config, stream, connection).await {
                let _ = session.await;
            }
            lock(&shared.sockets).remove(&id);
        });
    }
}

/// The stream, and a second handle on its socket that can shut it down from outside.
fn with_second_handle(stream: TcpStream) -> std::io::Result<(TcpStream, std::net::TcpStream)> {
    let std = stream.into_std()?;
    let second = std.try_clone()?;
    Ok((TcpStream::from_std(std)?, second))
}

/// One client connection's handler.
struct Connection {
    options: Arc<SshHostOptions>,
    shared: Arc<Shared>,
    peer: SocketAddr,
    local: SocketAddr,
    socket: std::net::TcpStream,
    user: String,
    /// Session channels opened and not yet given a command.
    sessions: HashMap<ChannelId, Channel<Msg>>,
}

impl Connection {
    fn is_authorized(&self, key: &PublicKey) -> bool {
        key.key_data() == self.options.authorized.key_data()
    }
}

impl russh::server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        _user: &str,
        offer: russh::server::PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(match self.is_authorized(offer.public_key) {
            true => Auth::Accept,
            false => Auth::reject(),
        })
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: russh::server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        if !self.is_authorized(key.public_key) {
            return Ok(Auth::reject());
        }
        self.user = user.to_string();
        lock(&self.shared.users).push(user.to_string());
        Ok(Auth::Accept)
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.sessions.insert(channel.id(), channel);
        reply.accept().await;
        Ok(())
    }

    async fn channel_close(&mut self, channel: ChannelId, _session: &mut Session) -> Result<(), Self::Error> {
        self.sessions.remove(&channel);
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let command = String::from_utf8_lossy(data).into_owned();
        lock(&self.shared.commands).push(command.clone());
        let dropped = {
            let mut patterns = lock(&self.shared.drop_on);
            let hit = patterns.iter().position(|p| command.contains(p.as_str()));
            hit.map(|i| patterns.remove(i))
        };
        if dropped.is_some() {
            let _ = self.socket.shutdown(std::net::Shutdown::Both);
            return Err(russh::Error::Disconnect);
        }
        let Some(channel) = self.sessions.remove(&channel) else {
            session.channel_failure(channel)?;
            return Ok(());
        };
        session.channel_success(channel.id())?;
        let env = vec![
            ("HOME".to_string(), self.options.home.display().to_string()),
            ("PATH".to_string(), format!("{}:{SYSTEM_PATH}", self.options.bin_dir.display())),
            ("USER".to_string(), self.user.clone()),
            ("LOGNAME".to_string(), self.user.clone()),
            ("SHELL".to_string(), "/bin/sh".to_string()),
            (
                "SSH_CONNECTION".to_string(),
                format!("{} {} {} {}", self.peer.ip(), self.peer.port(), self.local.ip(), self.local.port()),
            ),
        ];
        tokio::spawn(run_exec(channel, command, self.options.home.clone(), env));
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let target = (host_to_connect.to_string(), u16::try_from(port_to_connect).unwrap_or(0));
        lock(&self.shared.forwards).push(format!("{}:{}", target.0, target.1));
        // Connect first, as sshd does, so a refused port is an open failure, not a channel that closes.
        tokio::spawn(async move {
            let connect =
                tokio::time::timeout(Duration::from_secs(5), TcpStream::connect((target.0.as_str(), target.1)));
            match connect.await {
                Ok(Ok(mut tcp)) => {
                    reply.accept().await;
                    let mut stream = channel.into_stream();
                    let _ = tokio::io::copy_bidirectional(&mut stream, &mut tcp).await;
                }
                _ => reply.reject(ChannelOpenFailure::ConnectFailed).await,
            }
        });
        Ok(())
    }
}

/// Runs `sh -c command` and relays it: stdin from the channel, stdout as data,
/// stderr as extended data 1, then exit-status, EOF and close.
async fn run_exec(channel: Channel<Msg>, command: String, home: PathBuf, env: Vec<(String, String)>) {
    let (mut input, output) = channel.split();
    let spawned = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&command)
        .current_dir(&home)
        .env_clear()
        .envs(env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            let _ = output.extended_data_bytes(1, format!("sh: {e}\n").into_bytes()).await;
            let _ = output.exit_status(127).await;
            let _ = output.eof().await;
            let _ = output.close().await;
            return;
        }
    };
    let mut stdin = child.stdin.take();
    let feed = tokio::spawn(async move {
        while let Some(message) = input.wait().await {
            match message {
                ChannelMsg::Data { data } => {
                    // A command that closed its stdin gets no more of it.
                    let closed = match stdin.as_mut() {
                        Some(pipe) => pipe.write_all(&data).await.is_err(),
                        None => false,
                    };
                    if closed {
                        stdin = None;
                    }
                }
                // The client's EOF is the command's: close its stdin.
                ChannelMsg::Eof => stdin = None,
                _ => {}
            }
        }
    });
    let (mut out_writer, mut err_writer) = (output.make_writer(), output.make_writer_ext(Some(1)));
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let relay_out = async {
        if let Some(mut stdout) = stdout {
            let _ = tokio::io::copy(&mut stdout, &mut out_writer).await;
        }
    };
    let relay_err = async {
        if let Some(mut stderr) = stderr {
            let _ = tokio::io::copy(&mut stderr, &mut err_writer).await;
        }
    };
    let (status, _, _) = tokio::join!(child.wait(), relay_out, relay_err);
    let code = match status {
        Ok(status) => {
            status.code().unwrap_or_else(|| 128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0))
        }
        Err(_) => 255,
    };
    let _ = output.exit_status(u32::try_from(code).unwrap_or(255)).await;
    let _ = output.eof().await;
    let _ = output.close().await;
    feed.abort();
}
