//! The OS side of an instance (a Fly machine, a dyno, a droplet's app): starting the
//! test app as a child process, learning its port from its "listening on PORT" line,
//! signalling it, and noticing its exit. It knows nothing of the instance's state or
//! of any platform; the emulator learns what happened through the callbacks.

use std::ffi::OsString;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{ChildStdout, Command};
use tokio::sync::{watch, Notify};

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl Exit {
    /// The code platforms report: the process's own, or 128 + signal as a shell would.
    pub fn exit_code(&self) -> i32 {
        self.code.unwrap_or_else(|| 128 + self.signal.unwrap_or(0))
    }

    fn from_status(status: std::io::Result<std::process::ExitStatus>) -> Exit {
        match status {
            Ok(status) => {
                #[cfg(unix)]
                let signal = std::os::unix::process::ExitStatusExt::signal(&status);
                #[cfg(not(unix))]
                let signal = None;
                Exit { code: status.code(), signal }
            }
            Err(_) => Exit { code: None, signal: Some(signal::KILL) },
        }
    }
}

/// Signal numbers, the same on Linux and macOS for these.
pub mod signal {
    pub const INT: i32 = 2;
    pub const KILL: i32 = 9;
    pub const TERM: i32 = 15;

    /// `SIGTERM`, `TERM`, `sigint`, `9`... as a number; unknown names are refused.
    pub fn parse(name: &str) -> Option<i32> {
        let upper = name.trim().to_ascii_uppercase();
        match upper.strip_prefix("SIG").unwrap_or(&upper) {
            "HUP" | "1" => Some(1),
            "INT" | "2" => Some(INT),
            "QUIT" | "3" => Some(3),
            "KILL" | "9" => Some(KILL),
            "TERM" | "15" => Some(TERM),
            _ => None,
        }
    }
}

/// What to run for one machine.
#[derive(Debug, Clone)]
pub struct Launch {
    pub program: OsString,
    pub args: Vec<OsString>,
    pub env: Vec<(String, String)>,
}

/// A handle on a running (or just ended) process; cheap to clone.
#[derive(Debug, Clone)]
pub struct Proc {
    pub pid: u32,
    exit: watch::Receiver<Option<Exit>>,
    kill: Arc<Notify>,
}

impl Proc {
    pub fn has_exited(&self) -> bool {
        self.exit.borrow().is_some()
    }

    /// Sends `sig` unless the process has already gone.
    pub fn signal(&self, sig: i32) {
        // SIGKILL goes through the supervisor, which owns the child and reaps it.
        if sig == signal::KILL || (!self.has_exited() && !os::send_signal(self.pid, sig)) {
            self.kill.notify_one();
        }
    }

    pub async fn exited(&self) -> Exit {
        let mut exit = self.exit.clone();
        let seen = exit.wait_for(Option::is_some).await.ok().and_then(|seen| *seen);
        // None: the supervisor is gone (runtime shutting down) and the child was killed on drop.
        seen.unwrap_or(Exit { code: None, signal: Some(signal::KILL) })
    }

    /// Asks the process to stop with `sig`, and kills it if it is still running after `grace`.
    pub async fn terminate(&self, sig: i32, grace: Duration) -> Exit {
        self.signal(sig);
        match tokio::time::timeout(grace, self.exited()).await {
            Ok(exit) => exit,
            Err(_) => {
                self.kill.notify_one();
                self.exited().await
            }
        }
    }
}

/// Starts `launch`. `on_listening` gets the port the process announces, `on_exit`
/// how it ended; both run on the supervising task, `on_exit` before `exited()` returns.
pub fn spawn(
    launch: &Launch,
    on_listening: impl FnOnce(u16) + Send + 'static,
    on_exit: impl FnOnce(Exit) + Send + 'static,
) -> std::io::Result<Proc> {
    let mut child = Command::new(&launch.program)
        .args(&launch.args)
        .envs(launch.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().unwrap_or_default();
    let (exit_tx, exit) = watch::channel(None);
    let kill = Arc::new(Notify::new());
    let proc = Proc { pid, exit, kill: kill.clone() };
    tokio::spawn(async move {
        // Held open for the process's life: when it closes, the app exits on its own.
        let _lifeline = child.stdin.take();
        let mut lines = child.stdout.take().map(|out| BufReader::new(out).lines());
        let mut on_listening = Some(on_listening);
        let status = loop {
            tokio::select! {
                line = next_line(&mut lines) => match line {
                    Some(line) => {
                        if let Some(port) = line.strip_prefix("listening on ").and_then(|p| p.trim().parse().ok()) {
                            if let Some(announce) = on_listening.take() {
                                announce(port);
                            }
                        }
                    }
                    None => lines = None,
                },
                status = child.wait() => break status,
                _ = kill.notified() => {
                    let _ = child.start_kill();
                    break child.wait().await;
                }
            }
        };
        let exit = Exit::from_status(status);
        on_exit(exit);
        let _ = exit_tx.send(Some(exit));
    });
    Ok(proc)
}

/// The next stdout line; pending forever once stdout has closed.
async fn next_line(lines: &mut Option<Lines<BufReader<ChildStdout>>>) -> Option<String> {
    match lines {
        Some(lines) => lines.next_line().await.ok().flatten(),
        None => std::future::pending().await,
    }
}

#[cfg(unix)]
mod os {
    extern "C" {
        fn kill(pid: i32, sig: i32) -> i32;
    }

    /// Sends `sig` to `pid`; false when it could not be delivered.
    pub fn send_signal(pid: u32, sig: i32) -> bool {
        let Ok(pid) = i32::try_from(pid) else { return false };
        if pid <= 0 {
            return false;
        }
        // SAFETY: kill(2) takes two plain integers and touches no memory of ours; a
        // positive pid addresses only that one process.
        unsafe { kill(pid, sig) == 0 }
    }
}

#[cfg(not(unix))]
mod os {
    /// No signals here: report failure so the caller kills instead.
    pub fn send_signal(_pid: u32, _sig: i32) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names_parse_with_or_without_sig() {
        assert_eq!(signal::parse("SIGTERM"), Some(15));
        assert_eq!(signal::parse("int"), Some(2));
        assert_eq!(signal::parse("9"), Some(9));
        assert_eq!(signal::parse("SIGWINCH"), None);
    }

    #[test]
    fn a_killed_process_reports_128_plus_the_signal() {
        assert_eq!(Exit { code: None, signal: Some(9) }.exit_code(), 137);
        assert_eq!(Exit { code: Some(3), signal: None }.exit_code(), 3);
    }
}
