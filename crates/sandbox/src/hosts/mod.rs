//! A fleet of Linux hosts behind a load balancer, as a deploy over SSH sees them:
//! each host has its own loopback address, an SSH server and a `docker` that runs the
//! sandbox's test app as containers.
//!
//! - `runtime`: the `docker` (and `podman`) stand-in, a CLI with its state in files,
//!   run as `safe-deploy __sandbox-runtime` or `sandbox-runtime`.
//! - `ssh`: one host's SSH server (russh): exec and direct-tcpip, with faults.
//! - `openssh`: one host's SSH server as the real OpenSSH `sshd`, for a fleet that
//!   checks the deploy against the real thing.
//! - `fleet`: the rig: N hosts, their keys, known_hosts, wrappers and teardown.

pub mod fleet;
pub mod openssh;
pub mod runtime;
pub mod ssh;

pub use fleet::{write_wrappers, Backend, Fleet, FleetOptions, HostInfo};
pub use openssh::{real_rig_present, sshd_path, Sshd, SshdOptions};
pub use runtime::{run_runtime, stop_all};
pub use ssh::{SshHost, SshHostOptions};
