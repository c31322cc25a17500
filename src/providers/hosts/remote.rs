//! Every command safe-deploy runs on a host, from fixed templates. Each argument that
//! comes from an input (an image, a name, a path) is quoted for the shell, so no
//! input is ever read by the host's shell as code.

use std::time::Duration;

/// The container as every host runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub name: String,
    /// Published ports, host then container.
    pub ports: Vec<(u16, u16)>,
    /// A file on the host passed as `--env-file`.
    pub env_file: Option<String>,
    /// What the old container gets after SIGTERM to finish requests in flight.
    pub stop_timeout: Duration,
}

/// The container runtime's command line (docker, podman: the same verbs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runtime {
    pub binary: String,
}

/// One argument, quoted for a POSIX shell. Inputs are checked for NUL bytes before
/// they get here, the only thing a shell cannot quote.
pub fn quote(arg: &str) -> String {
    shlex::try_quote(arg).map(|q| q.into_owned()).unwrap_or_else(|_| "''".into())
}

fn line(words: &[&str]) -> String {
    words.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ")
}

/// What `inspect` prints: image id, running, the reference it was started with, the
/// container's own id, and its restart policy.
pub const INSPECT_FORMAT: &str =
    "{{.Image}} {{.State.Running}} {{.Config.Image}} {{.Id}} {{.HostConfig.RestartPolicy.Name}}";

impl Runtime {
    /// Whether the runtime is installed: prints its path.
    pub fn present(&self) -> String {
        format!("command -v {}", quote(&self.binary))
    }

    pub fn pull(&self, image: &str) -> String {
        line(&[&self.binary, "pull", image])
    }

    /// Prints the local image id (`sha256:...`) of `image`.
    pub fn image_id(&self, image: &str) -> String {
        line(&[&self.binary, "image", "inspect", "--format", "{{.Id}}", image])
    }

    /// Prints `INSPECT_FORMAT` for the container named `name` (a container only: an
    /// image of that name is not it).
    pub fn inspect(&self, name: &str) -> String {
        line(&[&self.binary, "inspect", "--type", "container", "--format", INSPECT_FORMAT, name])
    }

    /// Sets a container's restart policy: a container kept aside must not be started
    /// again by the daemon (`always` would, on a restart of the daemon).
    pub fn restart_policy(&self, name: &str, policy: &str) -> String {
        line(&[&self.binary, "update", "--restart", policy, name])
    }

    /// SIGTERM, then SIGKILL after the stop timeout.
    pub fn stop(&self, c: &Container) -> String {
        let secs = c.stop_timeout.as_secs().max(1).to_string();
        line(&[&self.binary, "stop", "--time", &secs, &c.name])
    }

    pub fn remove(&self, c: &Container) -> String {
        self.remove_named(&c.name)
    }

    pub fn remove_named(&self, name: &str) -> String {
        line(&[&self.binary, "rm", "--force", name])
    }

    /// Keeps a stopped container under another name: it starts again as it was made.
    pub fn rename(&self, from: &str, to: &str) -> String {
        line(&[&self.binary, "rename", from, to])
    }

    pub fn start(&self, name: &str) -> String {
        line(&[&self.binary, "start", name])
    }

    /// Prints where the container's ports are published: `8080/tcp -> 127.0.0.1:49153`.
    pub fn ports(&self, c: &Container) -> String {
        line(&[&self.binary, "port", &c.name])
    }

    /// Prints each running container's name and published ports, a line each
    /// (`web 0.0.0.0:8080->80/tcp, :::8080->80/tcp`): docker and podman both print it.
    pub fn listening(&self) -> String {
        line(&[&self.binary, "ps", "--format", "{{.Names}} {{.Ports}}"])
    }

    /// Whether the SSH user can read `path` on the host (docker reads an env file as
    /// the one who runs it): exit 0 when it can.
    pub fn readable(&self, path: &str) -> String {
        format!("test -r {}", quote(path))
    }

    /// Starts `image` detached under the container's name, ports and env file.
    pub fn run(&self, c: &Container, image: &str) -> String {
        self.run_published(c, image, |host, container| format!("{host}:{container}"))
    }

    /// Starts `image` as `run` does, but with every port published on the host's
    /// loopback only, at a port docker picks: nothing from outside, a balancer
    /// included, reaches it (`ports` says where it is).
    pub fn run_on_loopback(&self, c: &Container, image: &str) -> String {
        self.run_published(c, image, |_, container| format!("127.0.0.1::{container}"))
    }

    fn run_published(&self, c: &Container, image: &str, publish: impl Fn(u16, u16) -> String) -> String {
        let mut words: Vec<String> = vec![
            self.binary.clone(),
            "run".into(),
            "--detach".into(),
            "--name".into(),
            c.name.clone(),
            "--restart".into(),
            "unless-stopped".into(),
        ];
        for (host, container) in &c.ports {
            words.push("--publish".into());
            words.push(publish(*host, *container));
        }
        if let Some(file) = &c.env_file {
            words.push("--env-file".into());
            words.push(file.clone());
        }
        words.push(image.to_string());
        words.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ")
    }

    /// The last lines the container printed, for a failure's reason.
    pub fn logs(&self, c: &Container) -> String {
        format!("{} 2>&1", line(&[&self.binary, "logs", "--tail", "20", &c.name]))
    }
}

/// Where a host keeps the deploy lock, relative to the SSH user's home.
pub fn lock_dir(c: &Container) -> String {
    format!(".safe-deploy/locks/{}", c.name)
}

/// Takes the lock if it is free; prints `taken`, `ours` (this run holds it already) or
/// `held` followed by what the holder wrote. `mkdir` is atomic, as in Kamal's lock.
pub fn lock(c: &Container, token: &str, holder: &str) -> String {
    let dir = quote(&lock_dir(c));
    let (token, holder) = (quote(token), quote(holder));
    format!(
        "mkdir -p .safe-deploy/locks && if mkdir {dir} 2>/dev/null; then printf '%s\\n' {token} > {dir}/token && printf '%s\\n' {holder} > {dir}/holder && echo taken; elif [ \"$(cat {dir}/token 2>/dev/null)\" = {token} ]; then echo ours; else echo held; cat {dir}/holder 2>/dev/null || true; fi"
    )
}

/// Gives the lock back, only if this run holds it.
pub fn unlock(c: &Container, token: &str) -> String {
    let dir = quote(&lock_dir(c));
    format!("if [ \"$(cat {dir}/token 2>/dev/null)\" = {} ]; then rm -rf {dir}; fi; echo done", quote(token))
}

/// Where `docker port` says each container port is published, as (container port,
/// address, host port); IPv6 lines are left out (the tunnel goes to IPv4).
pub fn published(out: &str) -> Vec<(u16, String, u16)> {
    out.lines()
        .filter_map(|line| {
            let (container, at) = line.split_once("->")?;
            let container = container.trim().split('/').next()?.parse().ok()?;
            let at: std::net::SocketAddrV4 = at.trim().parse().ok()?;
            Some((container, at.ip().to_string(), at.port()))
        })
        .collect()
}

/// The host ports other running containers than `name` publish, from `listening`.
pub fn ports_held(out: &str, name: &str) -> Vec<(u16, String)> {
    out.lines()
        .filter_map(|line| line.trim().split_once(' ').or(Some((line.trim(), ""))))
        .filter(|(n, _)| !n.is_empty() && *n != name)
        .flat_map(|(n, ports)| {
            ports.split(',').filter_map(move |p| {
                let (published, _) = p.trim().split_once("->")?;
                let port = published.rsplit(':').next()?.parse().ok()?;
                Some((port, n.to_string()))
            })
        })
        .collect()
}

/// What a container runs, read from `inspect`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Running {
    pub image_id: String,
    pub running: bool,
    pub image: String,
    /// The container's own id: the one container recorded, whatever its name now.
    #[serde(default)]
    pub id: String,
    /// Its restart policy (`no`, `always`, `unless-stopped`, `on-failure`).
    #[serde(default)]
    pub restart: String,
}

impl Running {
    pub fn parse(out: &str) -> Option<Running> {
        let mut words = out.split_whitespace();
        let image_id = words.next()?.to_string();
        let running = words.next()? == "true";
        let image = words.next().unwrap_or_default().to_string();
        let id = words.next().unwrap_or_default().to_string();
        let restart = words.next().unwrap_or_default().to_string();
        Some(Running { image_id, running, image, id, restart })
    }

    /// Whether it is the same container as `other`, where both say their id.
    pub fn same_container(&self, other: &Running) -> bool {
        !self.id.is_empty() && self.id == other.id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web() -> Container {
        Container {
            name: "web".into(),
            ports: vec![(8080, 80)],
            env_file: Some("/etc/app env".into()),
            stop_timeout: Duration::from_secs(30),
        }
    }

    #[test]
    fn a_hostile_image_name_stays_one_argument() {
        let docker = Runtime { binary: "docker".into() };
        let cmd = docker.run(&web(), "app:1; rm -rf / $(reboot)");
        assert!(cmd.ends_with("'app:1; rm -rf / $(reboot)'"), "{cmd}");
        assert!(cmd.contains("--env-file '/etc/app env'"), "{cmd}");
        assert!(cmd.starts_with("docker run --detach --name web --restart unless-stopped --publish 8080:80"), "{cmd}");
        let words = shlex::split(&cmd).unwrap();
        assert_eq!(words.last().unwrap(), "app:1; rm -rf / $(reboot)");
    }

    #[test]
    fn the_inspect_format_is_passed_whole_and_read_back() {
        let docker = Runtime { binary: "podman".into() };
        let words = shlex::split(&docker.inspect("web")).unwrap();
        assert_eq!(words, ["podman", "inspect", "--type", "container", "--format", INSPECT_FORMAT, "web"]);
        let r = Running::parse("sha256:abc true registry.example/app:v1 c0ffee always\n").unwrap();
        assert_eq!(
            r,
            Running {
                image_id: "sha256:abc".into(),
                running: true,
                image: "registry.example/app:v1".into(),
                id: "c0ffee".into(),
                restart: "always".into()
            }
        );
        assert!(Running::parse("").is_none());
    }

    #[test]
    fn ports_other_running_containers_hold_are_read_from_ps() {
        let out = "web 0.0.0.0:8080->80/tcp, :::8080->80/tcp\nredis 127.0.0.1:6379->6379/tcp\nbatch \nproxy 0.0.0.0:443->8443/tcp\n";
        assert_eq!(
            ports_held(out, "web"),
            [(6379, "redis".to_string()), (443, "proxy".to_string())],
            "our own container and one without ports are not in the way"
        );
    }

    #[test]
    fn a_staged_run_publishes_on_loopback_only_and_its_ports_are_read_back() {
        let docker = Runtime { binary: "docker".into() };
        let cmd = docker.run_on_loopback(&web(), "app:2");
        assert!(cmd.contains("--publish 127.0.0.1::80") && !cmd.contains("8080:80"), "{cmd}");
        let out = "80/tcp -> 127.0.0.1:49153\n80/tcp -> [::1]:49153\n8443/tcp -> 127.0.0.1:49154\n";
        assert_eq!(published(out), [(80, "127.0.0.1".to_string(), 49153), (8443, "127.0.0.1".to_string(), 49154)]);
        assert_eq!(docker.readable("/etc/app env"), "test -r '/etc/app env'");
    }

    #[test]
    fn the_lock_quotes_its_holder() {
        let holder = "octo/app run 7 by 'mallory'; reboot $(halt) `id` \\";
        let cmd = lock(&web(), "t0k3n", holder);
        assert!(cmd.contains(&quote(holder)), "{cmd}");
        assert_eq!(shlex::split(&format!("printf {}", quote(holder))).unwrap(), ["printf", holder]);
        assert!(unlock(&web(), "t0k3n").contains("= t0k3n ]"));
    }
}
