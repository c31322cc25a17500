//! The test application as a real process: flags in, HTTP on loopback out, and a
//! graceful exit on SIGTERM, so the Fly emulator can run one per machine and a
//! rolling update is tested against real process restarts.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{oneshot, watch};

use super::{answer_with, Drain, HealthMode, ReleaseSpec};
use crate::server::{serve, text, Request};

const USAGE: &str =
    "usage: sandbox-app [--listen IP] [--port N] [--tls-port N] [--version V] [--health ok|wrong-body|error500|hang] \
[--boot-delay-ms N] [--latency-ms N] [--latency-p99-ms N] [--error-rate F] [--crash-exit-code N] [--release-command [--exit-code N]] [--exit-on-stdin-eof]";

/// How long a stopping app waits for requests in flight before it exits anyway.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Flags {
    /// The address to bind: a host of the hosts rig has its own loopback address.
    listen: IpAddr,
    port: u16,
    /// A second port serving the same over TLS (the sandbox's own certificate), for
    /// HTTPS health checks.
    tls_port: Option<u16>,
    spec: ReleaseSpec,
    crash_exit_code: Option<i32>,
    release_command: bool,
    exit_code: i32,
    /// Exit when stdin closes: the emulator holds the other end, so an app never
    /// outlives the test that started it.
    exit_on_stdin_eof: bool,
}

impl Flags {
    fn parse(args: &[String]) -> Result<Flags, String> {
        let mut flags = Flags {
            listen: IpAddr::from([127, 0, 0, 1]),
            port: 0,
            tls_port: None,
            spec: ReleaseSpec { version: "dev".into(), ..Default::default() },
            crash_exit_code: None,
            release_command: false,
            exit_code: 0,
            exit_on_stdin_eof: false,
        };
        let mut args = args.iter();
        while let Some(flag) = args.next() {
            let mut value = || args.next().cloned().ok_or_else(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--listen" => {
                    let ip = value()?;
                    flags.listen = ip.parse().map_err(|_| format!("--listen {ip}: not an IP address"))?;
                }
                "--port" => flags.port = number(flag, &value()?)?,
                "--tls-port" => flags.tls_port = Some(number(flag, &value()?)?),
                "--version" => flags.spec.version = value()?,
                "--health" => {
                    let mode = value()?;
                    flags.spec.health = HealthMode::ALL.into_iter().find(|m| m.flag() == mode).ok_or_else(|| {
                        let all: Vec<&str> = HealthMode::ALL.iter().map(|m| m.flag()).collect();
                        format!("--health {mode}: use one of {}", all.join(", "))
                    })?;
                }
                "--boot-delay-ms" => flags.spec.boot_delay_ms = number(flag, &value()?)?,
                "--latency-ms" => flags.spec.latency_ms = number(flag, &value()?)?,
                "--latency-p99-ms" => flags.spec.latency_p99_ms = number(flag, &value()?)?,
                "--error-rate" => {
                    flags.spec.error_per_mille =
                        crate::app::per_mille(&value()?).map_err(|e| format!("--error-rate: {e}"))?
                }
                "--crash-exit-code" => flags.crash_exit_code = Some(number(flag, &value()?)?),
                "--release-command" => flags.release_command = true,
                "--exit-code" => flags.exit_code = number(flag, &value()?)?,
                "--exit-on-stdin-eof" => flags.exit_on_stdin_eof = true,
                other => return Err(format!("unknown flag {other}")),
            }
        }
        Ok(flags)
    }
}

fn number<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, String> {
    value.parse().map_err(|_| format!("{flag} {value}: not a number"))
}

/// Prints a line; a closed stdout (the emulator is gone) is not worth a panic.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Runs the test app with command-line `args` (without the program name) and
/// returns its exit code. Blocks; it builds its own single-threaded runtime.
pub fn run_process(args: Vec<String>) -> i32 {
    let flags = match Flags::parse(&args) {
        Ok(flags) => flags,
        Err(e) => {
            eprintln!("sandbox-app: {e}\n{USAGE}");
            return 2;
        }
    };
    if let Some(code) = flags.crash_exit_code {
        say(&format!("sandbox-app {}: crashing on start with exit code {code}", flags.spec.version));
        return code;
    }
    if flags.release_command {
        say(&format!("release command for {}: running migrations", flags.spec.version));
        std::thread::sleep(Duration::from_millis(flags.spec.boot_delay_ms));
        say("migrating: 3 pending, 3 applied");
        say(&format!("release command finished with exit code {}", flags.exit_code));
        return flags.exit_code;
    }
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(serve_until_stopped(flags)),
        Err(e) => {
            eprintln!("sandbox-app: cannot start a runtime: {e}");
            1
        }
    }
}

async fn serve_until_stopped(flags: Flags) -> i32 {
    // Handlers go in before anything else, so a SIGTERM during boot still ends in a clean exit.
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        eprintln!("sandbox-app: cannot install signal handlers");
        return 1;
    };
    let lifeline = flags.exit_on_stdin_eof.then(|| {
        let (closed, on_close) = oneshot::channel::<()>();
        // A plain thread: a runtime would wait for a blocking stdin read before exiting.
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
            let _ = closed.send(());
        });
        on_close
    });
    let stop_requested = async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            _ = async { match lifeline { Some(on_close) => { let _ = on_close.await; } None => std::future::pending().await } } => "stdin closed",
        }
    };
    tokio::pin!(stop_requested);

    let boot = tokio::time::sleep(Duration::from_millis(flags.spec.boot_delay_ms));
    tokio::select! {
        _ = boot => {}
        why = &mut stop_requested => {
            say(&format!("{why} while booting; exiting"));
            return 0;
        }
    }

    let (stopping, stopping_seen) = watch::channel(false);
    let spec = Arc::new(flags.spec);
    let drain = Arc::new(Drain::default());
    // Answers counted, so a slow tail and errors come at their rate, evenly, not by chance.
    let answers = Arc::new(crate::app::Answers::default());
    let metrics = Arc::new(crate::app::Metrics::default());
    let handler = move |request: Request| {
        let (spec, drain, mut stopping, metrics, answers) =
            (spec.clone(), drain.clone(), stopping_seen.clone(), metrics.clone(), answers.clone());
        async move {
            let served = async {
                if let Some(error) = answers.slow_or_failing(&spec, &request).await {
                    return error;
                }
                if spec.health == HealthMode::Hang && request.path == "/health" {
                    // A hung probe must not hold up the exit: it is not work in flight.
                    tokio::select! {
                        response = answer_with(&spec, Some(&drain), &request) => response,
                        _ = stopping.wait_for(|s| *s) => text(503, "shutting down"),
                    }
                } else {
                    answer_with(&spec, Some(&drain), &request).await
                }
            };
            metrics.around(&request, served).await
        }
    };
    let addr = SocketAddr::new(flags.listen, flags.port);
    let secure = match flags.tls_port {
        Some(port) => {
            let tls_addr = SocketAddr::new(flags.listen, port);
            match crate::server::serve_tls(tls_addr, handler.clone()).await {
                Ok(server) => Some(server),
                Err(e) => {
                    eprintln!("sandbox-app: cannot listen with TLS on {tls_addr}: {e}; pass another --tls-port");
                    return 1;
                }
            }
        }
        None => None,
    };
    let server = match serve(addr, handler).await {
        Ok(server) => server,
        Err(e) => {
            eprintln!("sandbox-app: cannot listen on {addr}: {e}; pass another --port, or 0 for any");
            return 1;
        }
    };
    match &secure {
        Some(tls) => say(&format!("listening on {}, and with TLS on {}", server.addr.port(), tls.addr.port())),
        None => say(&format!("listening on {}", server.addr.port())),
    }

    let why = stop_requested.await;
    say(&format!("{why}: no longer accepting, finishing requests in flight"));
    let _ = stopping.send(true);
    if let Some(tls) = secure {
        tls.stop();
    }
    if tokio::time::timeout(DRAIN_LIMIT, server.shutdown()).await.is_err() {
        say("requests still in flight after 30s; exiting anyway");
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn flags_parse_into_a_release() {
        let flags = Flags::parse(&args("--port 0 --version v2 --health error500 --boot-delay-ms 50")).unwrap();
        assert_eq!(flags.spec.version, "v2");
        assert_eq!(flags.spec.health, HealthMode::Error500);
        assert_eq!(flags.spec.boot_delay_ms, 50);
        assert_eq!(flags.listen, IpAddr::from([127, 0, 0, 1]));
        assert_eq!(Flags::parse(&args("--listen 127.3.4.11")).unwrap().listen, IpAddr::from([127, 3, 4, 11]));
        let flags = Flags::parse(&args("--release-command --exit-code 3")).unwrap();
        assert!(flags.release_command);
        assert_eq!(flags.exit_code, 3);
    }

    #[test]
    fn a_release_spec_becomes_flags_that_parse_back_into_it() {
        for health in HealthMode::ALL {
            for (boot_delay_ms, latency_ms, crash_on_start) in [(0, 0, false), (50, 7, true)] {
                let spec = ReleaseSpec {
                    version: "v3".into(),
                    health,
                    boot_delay_ms,
                    latency_ms,
                    latency_p99_ms: latency_ms * 10,
                    error_per_mille: latency_ms as u32 * 7,
                    crash_on_start,
                    exit_code: 4,
                    ..Default::default()
                };
                let flags = Flags::parse(&spec.app_flags()).unwrap();
                let back = ReleaseSpec { crash_on_start: flags.crash_exit_code.is_some(), ..flags.spec.clone() };
                assert_eq!(
                    ReleaseSpec { exit_code: 0, ..back },
                    ReleaseSpec { exit_code: 0, ..spec.clone() },
                    "{spec:?}"
                );
                assert_eq!(flags.crash_exit_code, crash_on_start.then_some(4));
            }
        }
    }

    #[test]
    fn a_rate_picks_that_many_answers_in_a_thousand_evenly() {
        for per_mille in [0, 10, 50, 333, 1000] {
            let picked: Vec<u64> = (0..1000).filter(|&n| crate::app::one_in(n, per_mille)).collect();
            assert_eq!(picked.len() as u64, per_mille, "{per_mille}");
            // Evenly: never two picks closer than the rate allows (but for 1000 in 1000).
            if per_mille > 0 && per_mille < 1000 {
                let gap = 1000 / per_mille;
                assert!(picked.windows(2).all(|w| w[1] - w[0] >= gap), "{per_mille}: {picked:?}");
            }
        }
        assert_eq!(crate::app::per_mille("0.05"), Ok(50));
        assert_eq!(crate::app::per_mille("5%"), Ok(50));
        assert!(crate::app::per_mille("1.5").is_err() && crate::app::per_mille("lots").is_err());
    }

    #[test]
    fn bad_flags_say_what_is_wrong() {
        assert!(Flags::parse(&args("--health sad")).unwrap_err().contains("use one of ok, wrong-body"));
        assert!(Flags::parse(&args("--port")).unwrap_err().contains("needs a value"));
        assert!(Flags::parse(&args("--bogus")).unwrap_err().contains("unknown flag"));
        assert!(Flags::parse(&args("--listen host-1")).unwrap_err().contains("not an IP"));
        assert_eq!(run_process(args("--port nope")), 2);
    }
}
