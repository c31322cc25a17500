//! One host's SSH server as the real OpenSSH `sshd`: its own config, host key and
//! authorized_keys under the rig's directory, listening on the host's address alone,
//! run in the foreground (`-D -e`) as a child process that is killed when dropped.
//!
//! sshd starts every command in the login user's passwd home, which all hosts share
//! (one user on one machine); `ForceCommand` moves each command into its host's own
//! home first, so what a deploy keeps under `~` (its locks) stays per host.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use russh::keys::{PrivateKey, PublicKey};

use super::ssh::{known_hosts_line, new_ed25519_key};

/// The PATH a command sees after the rig's bin dir, as on a Debian host.
const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where sshd is: Debian's place, else the first on PATH. None when not installed.
pub fn sshd_path() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).map(|dir| dir.join("sshd")).collect::<Vec<_>>())
        .unwrap_or_default();
    std::iter::once(PathBuf::from("/usr/sbin/sshd")).chain(on_path).find(|p| p.is_file())
}

/// Whether a test that needs these real programs (name, installed) can run. When one is
/// missing it prints that the test is skipped and says no, unless
/// SAFE_DEPLOY_REAL_RIG=required (as CI sets it), where a missing one is a failure.
///
/// # Panics
/// When a program is missing and SAFE_DEPLOY_REAL_RIG=required.
pub fn real_rig_present(test: &str, programs: &[(&str, bool)]) -> bool {
    let missing: Vec<&str> = programs.iter().filter(|(_, found)| !found).map(|(name, _)| *name).collect();
    if missing.is_empty() {
        return true;
    }
    let what = missing.join(" and ");
    assert!(
        std::env::var("SAFE_DEPLOY_REAL_RIG").as_deref() != Ok("required"),
        "{test}: {what} not installed, and SAFE_DEPLOY_REAL_RIG=required"
    );
    println!("{test}: skipped, {what} not installed (SAFE_DEPLOY_REAL_RIG=required makes this a failure)");
    false
}

/// The name of the user this process runs as: the one sshd lets in.
pub fn current_user() -> String {
    // SAFETY: getpwuid returns a pointer into static storage or null; the name is copied
    // out before anything else can call it on this thread.
    unsafe {
        let pw = libc::getpwuid(libc::geteuid());
        if pw.is_null() || (*pw).pw_name.is_null() {
            return std::env::var("USER").unwrap_or_else(|_| "root".into());
        }
        std::ffi::CStr::from_ptr((*pw).pw_name).to_string_lossy().into_owned()
    }
}

/// How one host's sshd runs.
#[derive(Debug, Clone)]
pub struct SshdOptions {
    /// The host's address and SSH port; nothing else may listen there.
    pub addr: SocketAddr,
    /// The only client key accepted (an authorized_keys line).
    pub authorized: PublicKey,
    /// The host key; a new ed25519 one when None.
    pub host_key: Option<PrivateKey>,
    /// The cwd and HOME of every command.
    pub home: PathBuf,
    /// Put first on PATH: where the `docker` and `podman` wrappers are.
    pub bin_dir: PathBuf,
    /// Where the config, keys, pid file and log go (created if missing).
    pub dir: PathBuf,
}

/// A running sshd; killed (and reaped) when dropped.
pub struct Sshd {
    addr: SocketAddr,
    host_key: PublicKey,
    dir: PathBuf,
    child: Child,
}

impl Sshd {
    /// Writes the host's config and keys, starts sshd and returns once it accepts
    /// connections.
    pub async fn start(options: SshdOptions) -> anyhow::Result<Sshd> {
        let program =
            sshd_path().ok_or_else(|| anyhow::anyhow!("sshd is not installed (apt-get install openssh-server)"))?;
        let dir = options.dir.clone();
        std::fs::create_dir_all(&dir)?;
        // sshd refuses to start without its privilege separation directory.
        std::fs::create_dir_all("/run/sshd")?;

        let key = match options.host_key.clone() {
            Some(key) => key,
            None => new_ed25519_key()?,
        };
        let key_path = dir.join("host_key");
        std::fs::write(&key_path, key.to_openssh(russh::keys::ssh_key::LineEnding::LF)?.as_bytes())?;
        // sshd ignores a host key others can read.
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600))?;
        std::fs::write(dir.join("authorized_keys"), format!("{}\n", options.authorized.to_openssh()?))?;
        let config = config(&options, &dir, &current_user());
        std::fs::write(dir.join("sshd_config"), config)?;

        let log = std::fs::File::create(dir.join("sshd.log"))?;
        // An absolute path: sshd re-executes itself for every connection.
        let child = Command::new(&program)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(dir.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let mut sshd = Sshd { addr: options.addr, host_key: key.public_key().clone(), dir, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(sshd.addr).await.is_err() {
            if let Some(status) = sshd.child.try_wait()? {
                anyhow::bail!("sshd on {} exited ({status}): {}", sshd.addr, sshd.log().trim());
            }
            anyhow::ensure!(Instant::now() < deadline, "sshd never listened on {}: {}", sshd.addr, sshd.log().trim());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(sshd)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn host_key(&self) -> &PublicKey {
        &self.host_key
    }

    /// The host's known_hosts line, as `ssh-keyscan` would print it.
    pub fn known_hosts_line(&self) -> String {
        known_hosts_line(self.addr, &self.host_key)
    }

    /// What sshd logged so far (`-e`: its log goes to stderr, kept in a file).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("sshd_config")
    }

    /// Kills sshd; connections it already forked for go with it (their processes
    /// share nothing the rig keeps).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The sshd_config of one host: key-only login for `user`, forwarding on, the rig's
/// PATH and HOME, and every command run from that HOME.
fn config(options: &SshdOptions, dir: &Path, user: &str) -> String {
    let path = format!("{}:{SYSTEM_PATH}", options.bin_dir.display());
    format!(
        "# One sandbox host's sshd (written by the hosts rig).\n\
         ListenAddress {addr}\n\
         HostKey {dir}/host_key\n\
         AuthorizedKeysFile {dir}/authorized_keys\n\
         PidFile {dir}/sshd.pid\n\
         AllowUsers {user}\n\
         StrictModes no\n\
         PermitRootLogin prohibit-password\n\
         PubkeyAuthentication yes\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         UsePAM no\n\
         UseDNS no\n\
         PrintMotd no\n\
         PrintLastLog no\n\
         AllowTcpForwarding yes\n\
         MaxSessions 64\n\
         MaxStartups 64\n\
         LogLevel VERBOSE\n\
         SetEnv \"PATH={path}\" \"HOME={home}\"\n\
         ForceCommand cd \"$HOME\" && exec /bin/sh -c \"$SSH_ORIGINAL_COMMAND\"\n",
        addr = options.addr,
        dir = dir.display(),
        home = options.home.display(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_listens_on_the_host_alone_and_runs_commands_in_its_home() {
        let options = SshdOptions {
            addr: "127.9.0.10:2222".parse().unwrap(),
            authorized: new_ed25519_key().unwrap().public_key().clone(),
            host_key: None,
            home: PathBuf::from("/rig/home-0"),
            bin_dir: PathBuf::from("/rig/bin"),
            dir: PathBuf::from("/rig/sshd-0"),
        };
        let text = config(&options, &options.dir, "deploy");
        assert!(text.contains("\nListenAddress 127.9.0.10:2222\n"), "{text}");
        assert!(text.contains("\nAllowUsers deploy\n"));
        assert!(text.contains("\nSetEnv \"PATH=/rig/bin:/usr/local/sbin:"), "{text}");
        assert!(text.contains("\"HOME=/rig/home-0\"\n"));
        assert!(text.ends_with("ForceCommand cd \"$HOME\" && exec /bin/sh -c \"$SSH_ORIGINAL_COMMAND\"\n"));
    }
}
