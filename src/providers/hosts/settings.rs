//! The inputs both host providers read: how to log in, the container, its runtime,
//! the drain switch and how many hosts change at once. Every one is checked here,
//! so a bad value stops the run before any connection.

use crate::inputs::{self, Group, InputSpec};
use std::sync::Arc;
use std::time::Duration;

use super::remote::{Container, Runtime};
use super::ssh::{parse_key, KnownHosts, Login};
use super::Options;
use crate::inputs::{parse_bool, Problems};
use crate::inputs::{RawInputs, Surface};
use crate::providers::batches::{BatchSize, BATCH_SIZE_FIX};

/// The providers that deploy to hosts over SSH.
pub const HOST_PROVIDERS: &[&str] = &["ssh", "digitalocean-droplets"];

/// The inputs both host providers (ssh, droplets) read: in `action.yml`, the CLI's flags and docs/inputs.md through `inputs::INPUTS`.
pub const INPUTS: &[InputSpec] = &[
    input("ssh-key", "", "Hosts over SSH: the private key safe-deploy logs in with (OpenSSH or PEM, unencrypted). Pass it from a secret; it is masked and never printed.").secret(),
    input("ssh-user", "root", "Hosts over SSH: the user safe-deploy logs in as; it must be allowed to run the container runtime."),
    input("ssh-port", "22", "Hosts over SSH: the SSH port of every host."),
    input("known-hosts", "", "Hosts over SSH: the hosts' public keys as known_hosts lines (ssh-keyscan -p PORT HOST prints them). A host whose key is missing or different is refused before any command runs. Required unless insecure-ignore-host-key is true."),
    input("insecure-ignore-host-key", "false", "Hosts over SSH: true connects to hosts whatever key they show. Anyone between the runner and a host could then run your deploy; use known-hosts instead.").boolean(),
    input("container", "", "Hosts over SSH: the name of the app's container on each host. Empty: app."),
    input("ports", "", "Hosts over SSH: the container's published ports, HOST:CONTAINER, separated by commas. Empty: the app's port on both sides."),
    input("env-file", "", "Hosts over SSH: a file on each host passed to the container as --env-file."),
    input("runtime", "docker", "Hosts over SSH: the container runtime's command on the hosts: docker or podman."),
    input("stop-timeout", "30s", "Hosts over SSH: how long the old container gets to finish requests in flight after SIGTERM before it is killed.").duration(),
    input("drain-path", "/drain", "Hosts over SSH, where the balancer cannot take a host out by API: the app's drain switch. safe-deploy sends POST to it on the host itself (through the SSH connection, never a public address) and expects the health check to fail from then on while other requests are still served; DELETE undoes it. none: no drain switch, so the balancer sends requests to a host until it notices it stopped."),
    input("boot-timeout", "60s", "Hosts over SSH: how long a new container gets to pass the balancer's check on its host; a release that does not is rolled back then, not at deploy-timeout.").duration(),
    input("max-parallel", "", "Hosts over SSH and droplets: the old name of max-unavailable, read only when max-unavailable is empty."),
];

const fn input(name: &'static str, default: &'static str, description: &'static str) -> InputSpec {
    inputs::of(HOST_PROVIDERS, Group::Provider("Hosts over SSH"), name, default, description)
}

/// A known_hosts line: [@marker] HOSTS KEYTYPE BASE64 [comment], whose key parses.
fn known_hosts_line(line: &str) -> bool {
    let mut words = line.split_whitespace().skip_while(|w| w.starts_with('@'));
    match (words.next(), words.next(), words.next()) {
        (Some(_hosts), Some(_kind), Some(key)) => russh::keys::parse_public_key_base64(key).is_ok(),
        _ => false,
    }
}

/// A Docker container name: what `docker run --name` takes.
fn container_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c))
}

fn ports(text: &str) -> Result<Vec<(u16, u16)>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (host, container) = p.split_once(':').ok_or_else(|| format!("'{p}' is not HOST:CONTAINER"))?;
            let port = |t: &str| t.trim().parse::<u16>().ok().filter(|n| *n > 0);
            match (port(host), port(container)) {
                (Some(h), Some(c)) => Ok((h, c)),
                _ => Err(format!("'{p}' has a port that is not a number from 1 to 65535")),
            }
        })
        .collect()
}

/// A port number input.
pub fn port(p: &mut Problems, raw: &RawInputs, input: &'static str, fix: &str) -> Option<u16> {
    p.parse(
        raw,
        input,
        |t| t.trim().parse::<u16>().ok().filter(|n| *n > 0).ok_or(format!("'{t}' is not a port number (1 to 65535)")),
        fix,
    )
}

/// Who holds the lock, as the holder file says: the workflow run, else the person.
fn holder() -> String {
    let var = |n: &str| std::env::var(n).ok().filter(|v| !v.is_empty());
    match (var("GITHUB_REPOSITORY"), var("GITHUB_RUN_ID")) {
        (Some(repo), Some(run)) => format!(
            "workflow run {}/{repo}/actions/runs/{run} (by {})",
            var("GITHUB_SERVER_URL").unwrap_or_else(|| "https://github.com".into()),
            var("GITHUB_ACTOR").unwrap_or_else(|| "unknown".into())
        ),
        _ => format!(
            "safe-deploy run by {} on {} (pid {})",
            var("USER").unwrap_or_else(|| "someone".into()),
            var("HOSTNAME")
                .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|h| h.trim().to_string()))
                .unwrap_or_else(|| "a machine".into()),
            std::process::id()
        ),
    }
}

/// Parses the shared inputs. `None` when any is wrong (each problem is in `p`).
pub fn options(raw: &RawInputs, app: Option<&str>, p: &mut Problems) -> Option<Options> {
    let before = p.0.len();
    let key = match raw.get("ssh-key") {
        None => {
            let fix = match p.surface() {
                Surface::Action => {
                    "Pass the deploy key's private half from a secret, e.g. ssh-key: ${{ secrets.DEPLOY_SSH_KEY }}."
                }
                Surface::Cli => "Pass the deploy key's private half, e.g. --ssh-key \"$(cat deploy_key)\".",
            };
            p.add("ssh-key", "is required", fix);
            None
        }
        Some(text) => match parse_key(text) {
            Ok(k) => Some(Arc::new(k)),
            Err(problem) => {
                p.add("ssh-key", problem, "Give an unencrypted private key in OpenSSH format (ssh-keygen -t ed25519 -N '' makes one), from a secret.");
                None
            }
        },
    };
    let insecure = p.parse(raw, "insecure-ignore-host-key", parse_bool, "Use true or false.").unwrap_or(false);
    let known_hosts = match (raw.get("known-hosts"), insecure) {
        (Some(lines), false) => match KnownHosts::new(lines) {
            Ok(k) => Some(Arc::new(k)),
            Err(e) => {
                p.add(
                    "known-hosts",
                    format!("cannot be written to a temporary file: {e}"),
                    "Check that the temporary directory is writable.",
                );
                None
            }
        },
        (None, false) => {
            let fix = format!("Give the hosts' keys as known_hosts lines (ssh-keyscan -p PORT HOST prints them), from a variable or secret; or set {} to skip the check.", p.setting("insecure-ignore-host-key", "true"));
            p.add(
                "known-hosts",
                "is required: without it, any machine that answers at a host's address would get the deploy",
                fix,
            );
            None
        }
        (_, true) => None,
    };
    if let Some(lines) = raw.get("known-hosts") {
        if let Some(bad) =
            lines.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).find(|l| !known_hosts_line(l))
        {
            p.add(
                "known-hosts",
                format!("'{bad}' is not a known_hosts line (HOST KEYTYPE KEY)"),
                "Paste what ssh-keyscan prints, one host key per line.",
            );
        }
    }
    let user = raw.get("ssh-user").unwrap_or("root").to_string();
    // A user name as POSIX systems take them; it goes into commands a person may copy.
    let user_char = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
    if !user.chars().all(user_char) || user.starts_with('-') {
        p.add(
            "ssh-user",
            format!("'{user}' is not a user name"),
            "Give the user name alone (letters, digits, . _ -), e.g. deploy.",
        );
    }
    let ssh_port = port(p, raw, "ssh-port", "Give the port sshd listens on, e.g. 22.").unwrap_or(22);
    let name = raw.get("container").or(app).unwrap_or_default().to_string();
    if !container_name(&name) {
        p.add(
            "container",
            format!("'{name}' is not a container name (letters, digits, _ . -, starting with a letter or digit)"),
            format!("Set {} to the name the app's container has on the hosts, e.g. web.", p.name("container")),
        );
    }
    let published = match raw.get("ports") {
        Some(text) => p
            .parse(raw, "ports", |_| ports(text), "Give ports as HOST:CONTAINER, separated by commas, e.g. 8080:80.")
            .unwrap_or_default(),
        // The balancer's target port on both sides, once the layout is known.
        None => Vec::new(),
    };
    let env_file = raw.get("env-file").map(str::to_string);
    let runtime = raw.get("runtime").unwrap_or("docker").to_string();
    if !matches!(runtime.as_str(), "docker" | "podman") && !runtime.starts_with('/') {
        p.add(
            "runtime",
            format!("'{runtime}' is not a container runtime safe-deploy knows"),
            "Use docker or podman, or the absolute path of one of them.",
        );
    }
    let stop_timeout = p.duration(raw, "stop-timeout", false).unwrap_or(Duration::from_secs(30));
    // A new container with no time to pass its check could never pass it.
    let boot_timeout = p.duration(raw, "boot-timeout", true).unwrap_or(Duration::from_secs(60));
    // `none`: no drain switch (an empty value reads as the default).
    let drain_path = raw.get("drain-path").filter(|p| !p.eq_ignore_ascii_case("none")).map(str::to_string);
    if let Some(path) = &drain_path {
        if !path.starts_with('/') || path.chars().any(|c| c.is_control() || c.is_whitespace()) {
            p.add(
                "drain-path",
                format!("'{path}' is not a path"),
                "Give the drain switch's path on the app, e.g. /drain, or none for no drain switch.",
            );
        }
    }
    // max-parallel is max-unavailable's old name, read when the new one is not given.
    let size_input = match (raw.get("max-unavailable"), raw.get("max-parallel")) {
        (Some(_), Some(_)) => {
            p.add("max-parallel", "is the old name of max-unavailable, which is set too", "Remove max-parallel.");
            "max-unavailable"
        }
        // Read, and named in the preflight's warnings.
        (None, Some(_)) => "max-parallel",
        _ => "max-unavailable",
    };
    let max_unavailable = p.parse(raw, size_input, BatchSize::parse, BATCH_SIZE_FIX).unwrap_or(BatchSize::Count(1));
    // An image reference has letters, digits and . _ - / : @ + only (docker's grammar
    // is narrower): quoted or not, nothing else belongs in one.
    let reference_char = |c: char| c.is_ascii_alphanumeric() || "._-/:@+".contains(c);
    if let Some(image) = raw.get("image").filter(|i| i.starts_with('-') || !i.chars().all(reference_char)) {
        let why = match image.starts_with('-') {
            true => "starts with '-', which the container runtime would read as an option".to_string(),
            false => format!("'{image}' is not an image reference"),
        };
        p.add("image", why, "Give an image reference, e.g. ghcr.io/acme/web:1.2.3.");
    }
    if raw.get("env-file").is_some_and(|f| f.starts_with('-') || f.chars().any(char::is_control)) {
        p.add(
            "env-file",
            "starts with '-' or holds a control character, which the container runtime would misread",
            "Give the env file's path on the hosts, e.g. /etc/web.env.",
        );
    }
    for input in ["image", "container", "env-file", "drain-path", "ssh-user"] {
        if raw.get(input).is_some_and(|v| v.contains('\0')) {
            p.add(input, "contains a NUL byte", "Remove it.");
        }
    }
    if p.0.len() > before {
        return None;
    }
    Some(Options {
        login: Login { user, port: ssh_port, key: key?, known_hosts },
        runtime: Runtime { binary: runtime },
        container: Container { name, ports: published, env_file, stop_timeout },
        drain_path,
        max_unavailable,
        batch_input: size_input,
        boot_timeout,
        holder: holder(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_host_then_container() {
        assert_eq!(ports("8080:80, 9000:9000").unwrap(), vec![(8080, 80), (9000, 9000)]);
        assert!(ports("8080").is_err());
        assert!(ports("0:80").is_err());
        assert!(ports("http:80").is_err());
    }

    #[test]
    fn container_names_are_what_docker_takes() {
        assert!(container_name("web"));
        assert!(container_name("shop_web-1.2"));
        assert!(!container_name("-web"));
        assert!(!container_name("web;reboot"));
        assert!(!container_name(""));
    }
}
