//! One SSH connection per host (russh): the host's key checked against the pinned
//! known_hosts lines before anything else, commands run one channel each, and a
//! local port that forwards to an address the host reaches (as `ssh -L` does), so the
//! app is checked and drained on the host itself, never through a public address.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use russh::client;
use russh::keys::{check_known_hosts_path, HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::ChannelMsg;
use tokio::net::TcpListener;

use crate::providers::ProviderError;

/// How long a connection attempt may take before the host counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Keepalives notice a connection that died silently (a host that went away).
const KEEPALIVE: Duration = Duration::from_secs(10);

/// How safe-deploy logs in to every host.
#[derive(Clone)]
pub struct Login {
    pub user: String,
    pub port: u16,
    pub key: Arc<PrivateKey>,
    /// The pinned host keys, as a known_hosts file; `None` only when the person chose
    /// insecure-ignore-host-key.
    pub known_hosts: Option<Arc<KnownHosts>>,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login").field("user", &self.user).field("port", &self.port).finish_non_exhaustive()
    }
}

/// The known_hosts input written to a private file, since russh checks keys against a
/// file (hashed entries and `[host]:port` patterns included). Removed on drop.
#[derive(Debug)]
pub struct KnownHosts {
    path: PathBuf,
}

impl KnownHosts {
    pub fn new(lines: &str) -> std::io::Result<KnownHosts> {
        let dir = std::env::temp_dir();
        let path = dir.join(format!("safe-deploy-known-hosts-{}-{}", std::process::id(), fastrand::u64(..)));
        std::io::Write::write_all(
            &mut crate::secret::new_private_file(&path)?,
            format!("{}\n", lines.trim()).as_bytes(),
        )?;
        Ok(KnownHosts { path })
    }
}

impl Drop for KnownHosts {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Reads a private key given as text.
pub fn parse_key(text: &str) -> Result<PrivateKey, String> {
    russh::keys::decode_secret_key(text.trim(), None).map_err(|e| match e {
        russh::keys::Error::KeyIsEncrypted => "is encrypted with a passphrase".to_string(),
        other => format!("is not a private key safe-deploy can read ({other})"),
    })
}

/// What one remote command did.
#[derive(Debug, Clone, Default)]
pub struct Output {
    pub status: u32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn ok(&self) -> bool {
        self.status == 0
    }

    /// The error output, else the output: what to show when it failed.
    pub fn said(&self) -> String {
        let text = if self.stderr.trim().is_empty() { &self.stdout } else { &self.stderr };
        crate::providers::logs::excerpt(text.trim())
    }
}

/// Checks the host's key as the connection opens, and remembers why it refused one.
struct Verifier {
    host: String,
    port: u16,
    known: Option<Arc<KnownHosts>>,
    refusal: Arc<Mutex<Option<String>>>,
}

impl client::Handler for Verifier {
    type Error = russh::Error;

    async fn check_server_key(&mut self, offered: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let Some(known) = &self.known else { return Ok(true) };
        let key = match offered {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.clone(),
            PublicKeyOrCertificate::Certificate(_) => {
                *self.refusal.lock().unwrap_or_else(PoisonError::into_inner) =
                    Some("offered a host certificate; pin its plain host key in known-hosts instead".into());
                return Ok(false);
            }
        };
        let fingerprint = key.fingerprint(HashAlg::Sha256);
        let why = match check_known_hosts_path(&self.host, self.port, &key, &known.path) {
            Ok(true) => return Ok(true),
            Ok(false) => format!(
                "showed a host key known-hosts does not list ({} {fingerprint}); if this is the host you mean, add the line `ssh-keyscan -p {} {}` prints to known-hosts",
                key.algorithm(),
                self.port,
                self.host
            ),
            Err(russh::keys::Error::KeyChanged { line }) => format!(
                "showed a host key different from line {line} of known-hosts ({} {fingerprint}): the host was rebuilt, or someone is in between; check the host, then update known-hosts",
                key.algorithm()
            ),
            Err(e) => format!("could not be checked against known-hosts: {e}"),
        };
        *self.refusal.lock().unwrap_or_else(PoisonError::into_inner) = Some(why);
        Ok(false)
    }
}

/// A logged-in connection to one host.
pub struct Session {
    handle: Arc<client::Handle<Verifier>>,
    host: String,
}

impl Session {
    /// Connects and logs in. A refused host key ends here, before any command.
    pub async fn open(host: &str, login: &Login) -> Result<Session, ProviderError> {
        let refusal = Arc::new(Mutex::new(None));
        let verifier = Verifier {
            host: host.to_string(),
            port: login.port,
            known: login.known_hosts.clone(),
            refusal: refusal.clone(),
        };
        let config = Arc::new(client::Config {
            inactivity_timeout: None,
            keepalive_interval: Some(KEEPALIVE),
            keepalive_max: 3,
            nodelay: true,
            ..Default::default()
        });
        let address = (host.to_string(), login.port);
        let connect = tokio::time::timeout(CONNECT_TIMEOUT, client::connect(config, address, verifier)).await;
        let mut handle = match connect {
            Err(_) => return Err(unreachable(host, login.port, "no answer within 20s".into())),
            Ok(Err(e)) => {
                if let Some(why) = refusal.lock().unwrap_or_else(PoisonError::into_inner).take() {
                    return Err(ProviderError::Failed(format!("host {host} {why}; nothing was run on it")));
                }
                return Err(unreachable(host, login.port, e.to_string()));
            }
            Ok(Ok(h)) => h,
        };
        let hash = handle.best_supported_rsa_hash().await.ok().flatten().flatten();
        let auth =
            handle.authenticate_publickey(login.user.clone(), PrivateKeyWithHashAlg::new(login.key.clone(), hash));
        let auth = match tokio::time::timeout(CONNECT_TIMEOUT, auth).await {
            Err(_) => return Err(unreachable(host, login.port, "no answer to the login within 20s".into())),
            Ok(auth) => auth.map_err(|e| unreachable(host, login.port, e.to_string()))?,
        };
        if !auth.success() {
            return Err(ProviderError::Failed(format!(
                "host {host} refused ssh-key for user {}: add its public key to ~{}/.ssh/authorized_keys on the host, or fix ssh-user",
                login.user, login.user
            )));
        }
        Ok(Session { handle: Arc::new(handle), host: host.to_string() })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// Runs `command` (already quoted) and collects what it printed and its status,
    /// within `limit`. A connection lost before the status came is an error: the
    /// command may or may not have run.
    pub async fn run(&self, command: &str, limit: Duration) -> Result<Output, ProviderError> {
        match tokio::time::timeout(limit, self.exec(command)).await {
            Ok(out) => out,
            Err(_) => Err(ProviderError::Timeout {
                what: format!(
                    "a command on {} ({})",
                    self.host,
                    command.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
                ),
                limit: crate::inputs::human(limit),
                input: "deploy-timeout",
            }),
        }
    }

    async fn exec(&self, command: &str) -> Result<Output, ProviderError> {
        let lost = |e: String| ProviderError::Unavailable(format!("the SSH connection to {} was lost: {e}", self.host));
        let mut channel = self.handle.channel_open_session().await.map_err(|e| lost(e.to_string()))?;
        channel.exec(true, command).await.map_err(|e| lost(e.to_string()))?;
        let mut out = Output::default();
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let mut status = None;
        while let Some(msg) = channel.wait().await {
            match msg {
                ChannelMsg::Data { data } => stdout.extend_from_slice(&data),
                ChannelMsg::ExtendedData { data, ext: 1 } => stderr.extend_from_slice(&data),
                ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
                ChannelMsg::ExitSignal { signal_name, .. } => {
                    return Err(ProviderError::Failed(format!(
                        "a command on {} was killed by signal {signal_name:?}",
                        self.host
                    )))
                }
                // The host refused to run it at all (a forced command, a policy).
                ChannelMsg::Failure => {
                    return Err(ProviderError::Failed(format!("{} refused to run a command over SSH", self.host)))
                }
                _ => {}
            }
        }
        out.stdout = String::from_utf8_lossy(&stdout).into_owned();
        out.stderr = String::from_utf8_lossy(&stderr).into_owned();
        match status {
            Some(s) => {
                out.status = s;
                Ok(out)
            }
            None => Err(lost("it closed before the command's exit status came".into())),
        }
    }

    /// A local port whose connections go, through this connection, to `to_host:to_port`
    /// as the remote host reaches it. It stops when the returned handle drops.
    pub async fn forward(&self, to_host: &str, to_port: u16) -> Result<Forward, ProviderError> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.map_err(|e| {
            ProviderError::Unavailable(format!("cannot open a local port to forward to {}: {e}", self.host))
        })?;
        let local = listener.local_addr().map_err(|e| ProviderError::Unavailable(e.to_string()))?;
        let handle = self.handle.clone();
        let (to_host, host) = (to_host.to_string(), self.host.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut socket, peer)) = listener.accept().await {
                let handle = handle.clone();
                let to_host = to_host.clone();
                let host = host.clone();
                tokio::spawn(async move {
                    let opened = handle
                        .channel_open_direct_tcpip(
                            to_host.clone(),
                            to_port as u32,
                            peer.ip().to_string(),
                            peer.port() as u32,
                        )
                        .await;
                    match opened {
                        Ok(channel) => {
                            let mut stream = channel.into_stream();
                            let _ = tokio::io::copy_bidirectional(&mut socket, &mut stream).await;
                        }
                        Err(e) => tracing::debug!("{host} could not reach {to_host}:{to_port}: {e}"),
                    }
                });
            }
        });
        let url = url::Url::parse(&format!("http://{local}")).expect("a socket address makes a URL");
        Ok(Forward { url, task })
    }

    pub async fn close(&self) {
        let _ = self.handle.disconnect(russh::Disconnect::ByApplication, "", "en").await;
    }
}

/// A forwarded local port; dropping it closes the port.
pub struct Forward {
    pub url: url::Url,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn unreachable(host: &str, port: u16, why: String) -> ProviderError {
    ProviderError::Unavailable(format!(
        "cannot connect to {host} port {port} over SSH ({why}); check that the host is up, that ssh-port is right and that the runner may reach it"
    ))
}
