//! Hosts over SSH: the DigitalOcean droplets tutorial's deploy (per host: call the
//! app's shutdown switch, sleep 30 s, swap the container, sleep 40 s, check health,
//! next host; never roll back) against safe-deploy's provider `ssh`, on the same
//! hosts behind the same balancer with the same check: the tutorial's own (interval
//! 10 s, timeout 5 s, unhealthy 2, healthy 3; its sleeps are (threshold + 1) ×
//! interval), all scaled by one factor so a row takes seconds, not minutes.
//!
//! Rows: the pure-Rust rig (russh hosts, the sandbox's balancer), then, where they
//! are installed, OpenSSH's sshd behind HAProxy. Per row: wall time of each, the
//! ratio, the floor (what any safe roll-out must wait per host) and failed/total
//! requests of steady traffic during a good deploy and a bad release.

use sandbox::Handle;
use std::process::Stdio;
use std::time::{Duration, Instant};

use sandbox::app::{HealthMode, ReleaseSpec, Releases};
use sandbox::droplets::{DropletSpec, DropletsOptions, DropletsSandbox, LbSpec, LbTarget};
use sandbox::hosts::{runtime::ENV_HOST, sshd_path, Backend, Fleet, FleetOptions};
use sandbox::kit::balancer::{Balancer, BalancerOptions, Check, Member};
use sandbox::kit::haproxy::{haproxy_path, Haproxy, HaproxyOptions};
use tokio::process::Command;

use bench::Traffic;

/// The tutorial's balancer, scaled by 0.05: 10 s → 500 ms, 5 s → 250 ms.
const INTERVAL: Duration = Duration::from_millis(500);
const TIMEOUT: Duration = Duration::from_millis(250);
const HEALTHY: u32 = 3;
const UNHEALTHY: u32 = 2;
/// The tutorial's sleeps are sized for DigitalOcean's 10 s interval.
const DO_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, PartialEq)]
enum Rig {
    Pure,
    Real,
    /// Droplets behind a DigitalOcean balancer that lists them by id: the API takes a
    /// host out, so no wait for the balancer to notice a drain.
    Droplets,
}

enum Lb {
    Kit(Balancer),
    Haproxy(Haproxy),
    Api(DropletsSandbox),
}

impl Lb {
    fn url(&self) -> String {
        match self {
            Lb::Kit(lb) => lb.url(),
            Lb::Haproxy(lb) => lb.url(),
            Lb::Api(api) => api.app_url(),
        }
    }
}

/// One run's figures.
struct Outcome {
    wall: Duration,
    total: u64,
    failed: u64,
    /// What the hosts run at the end, by tag.
    end: Vec<String>,
}

fn releases() -> Releases {
    let mut r = Releases::new();
    r.insert("web:v1".into(), ReleaseSpec::default());
    r.insert("web:v2".into(), ReleaseSpec::default());
    r.insert("web:bad".into(), ReleaseSpec { health: HealthMode::Error500, ..Default::default() });
    r
}

async fn start(rig: Rig, hosts: usize, binary: &str) -> (Fleet, Lb) {
    let fleet = Fleet::start(FleetOptions {
        hosts,
        running: Some("web:v1".into()),
        releases: releases(),
        app_command: vec![binary.into(), "__sandbox-app".into()],
        runtime_command: vec![binary.into(), "__sandbox-runtime".into()],
        backend: if rig == Rig::Real { Backend::OpenSsh } else { Backend::Russh },
        ..Default::default()
    })
    .await
    .expect("the hosts start");
    let port = fleet.hosts()[0].app.port();
    let lb = match rig {
        Rig::Droplets => {
            let api = DropletsSandbox::start(DropletsOptions {
                droplets: DropletSpec::for_hosts(fleet.hosts(), "web"),
                balancer: LbSpec {
                    name: "web-lb".into(),
                    by: LbTarget::ById,
                    check: check(port),
                    target_port: port,
                    entry_port: 80,
                },
                ..Default::default()
            })
            .await
            .expect("the droplets API");
            Lb::Api(api)
        }
        Rig::Pure => {
            let check = check(port);
            let members = fleet
                .hosts()
                .iter()
                .enumerate()
                .map(|(i, h)| Member { id: format!("h{i}"), ip: h.addr, port: None })
                .collect();
            Lb::Kit(Balancer::start(BalancerOptions { check, members, target_port: port }).await.expect("balancer"))
        }
        Rig::Real => {
            let lb = Haproxy::start(HaproxyOptions {
                servers: fleet.hosts().iter().map(|h| h.app).collect(),
                check_path: "/health".into(),
                interval: INTERVAL,
                timeout: TIMEOUT,
                healthy: HEALTHY,
                unhealthy: UNHEALTHY,
            })
            .await
            .expect("haproxy");
            lb.wait_all_up(Duration::from_secs(10)).await.expect("haproxy sees every host up");
            Lb::Haproxy(lb)
        }
    };
    (fleet, lb)
}

/// The tutorial's balancer check, scaled.
fn check(port: u16) -> Check {
    Check { timeout: TIMEOUT, healthy: HEALTHY, unhealthy: UNHEALTHY, ..Check::health(port, INTERVAL) }
}

fn end_state(fleet: &Fleet) -> Vec<String> {
    (0..fleet.hosts().len())
        .map(|i| fleet.running(i).map_or("none".into(), |r| r.trim_start_matches("web:").to_string()))
        .collect()
}

/// The tutorial's per-host script, as its workflow runs it over SSH (its GET /shutdown
/// is the test app's POST /drain; its `localhost` is the host's own address).
fn tutorial_script(fleet: &Fleet, i: usize, image: &str) -> String {
    let factor = INTERVAL.as_secs_f64() / DO_INTERVAL.as_secs_f64();
    let app = fleet.hosts()[i].app;
    let port = app.port();
    format!(
        "docker pull {image}\n\
         curl --silent -X POST http://{app}/drain || true\n\
         sleep {drain:.3}\n\
         docker stop web || true\n\
         docker rm web || true\n\
         docker run -d --restart always -p {port}:{port} --name web {image}\n\
         sleep {recover:.3}\n\
         curl --silent --fail http://{app}/health\n",
        drain = 30.0 * factor,
        recover = 40.0 * factor,
    )
}

/// The tutorial's deploy: one host after the other over the system `ssh` client; a
/// host whose final check fails stops the workflow there, with nothing put back.
async fn tutorial(fleet: &Fleet, image: &str) {
    let key = fleet.client_key_path();
    let known = key.with_file_name("bench_known_hosts");
    std::fs::write(&known, fleet.known_hosts()).expect("known_hosts written");
    for (i, host) in fleet.hosts().iter().enumerate() {
        let status = Command::new("ssh")
            .arg("-i")
            .arg(&key)
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known.display()))
            .args(["-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-F", "/dev/null"])
            .args(["-p", &host.ssh.port().to_string()])
            .arg(format!("{}@{}", fleet.user(), host.addr))
            .arg(tutorial_script(fleet, i, image))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .expect("ssh runs");
        if !status.success() {
            return;
        }
    }
}

/// safe-deploy's provider `ssh` with the balancer's check as its `lb-*` inputs.
async fn ours(binary: &str, dir: &std::path::Path, fleet: &Fleet, lb: &Lb, image: &str, parallel: usize) -> bool {
    let hosts: Vec<String> = fleet.hosts().iter().map(|h| h.addr.to_string()).collect();
    let ms = |d: Duration| format!("{}ms", d.as_millis());
    let url = lb.url();
    let tag = image.trim_start_matches("web:");
    let mut cmd = Command::new(binary);
    cmd.env_clear();
    if let Lb::Api(api) = lb {
        // The droplets and the balancer's check come from the API.
        cmd.env("INPUT_PROVIDER", "digitalocean-droplets")
            .env("INPUT_API-URL", api.api_url())
            .env("INPUT_TOKEN", "dop_v1_bench")
            .env("INPUT_LOAD-BALANCER", api.lb_id());
    } else {
        cmd.env("INPUT_PROVIDER", "ssh")
            .env("INPUT_HOSTS", hosts.join(","))
            .env("INPUT_APP-PORT", fleet.hosts()[0].app.port().to_string())
            .env("INPUT_LB-CHECK-PATH", "/health")
            .env("INPUT_LB-INTERVAL", ms(INTERVAL))
            .env("INPUT_LB-TIMEOUT", ms(TIMEOUT))
            .env("INPUT_LB-HEALTHY-THRESHOLD", HEALTHY.to_string())
            .env("INPUT_LB-UNHEALTHY-THRESHOLD", UNHEALTHY.to_string());
    }
    let status = cmd
        .env("GITHUB_ACTIONS", "true")
        .env("RUNNER_TEMP", dir)
        .env("GITHUB_WORKSPACE", dir)
        .env("INPUT_APP", "web")
        .env("INPUT_IMAGE", image)
        .env("INPUT_EXPECT-VERSION", tag)
        .env("INPUT_SSH-PORT", fleet.hosts()[0].ssh.port().to_string())
        .env("INPUT_SSH-USER", fleet.user())
        .env("INPUT_SSH-KEY", fleet.client_key_openssh())
        .env("INPUT_KNOWN-HOSTS", fleet.known_hosts())
        .env("INPUT_STOP-TIMEOUT", "5s")
        .env("INPUT_HEALTH-URL", format!("{url}/health"))
        .env("INPUT_CHECK-STRING", "ok")
        .env("INPUT_VERSION-URL", format!("{url}/version"))
        .env("INPUT_HEALTH-INTERVAL", "100ms")
        .env("INPUT_HEALTH-DEADLINE", "6s")
        .env("INPUT_MAX-PARALLEL", parallel.to_string())
        // A release whose health check fails on the host gets this long to pass it,
        // scaled as the balancer's check is (60 s → 3 s).
        .env("INPUT_BOOT-TIMEOUT", "3s")
        .stdout(log(dir, image))
        .stderr(Stdio::null())
        .status()
        .await
        .expect("the binary runs");
    status.success()
}

/// The run's log, kept in the bench's directory for reading after a surprising row.
fn log(dir: &std::path::Path, image: &str) -> Stdio {
    let path = dir.join(format!("ours-{}.log", image.replace(':', "-")));
    std::fs::File::create(path).map_or(Stdio::null(), Stdio::from)
}

/// Runs one procedure on a fresh rig under steady traffic through the balancer.
async fn measure(
    rig: Rig,
    hosts: usize,
    binary: &str,
    dir: &std::path::Path,
    ours_run: Option<usize>,
    image: &str,
) -> Outcome {
    let (fleet, lb) = start(rig, hosts, binary).await;
    let traffic = Traffic::start(format!("{}/", lb.url()));
    let started = Instant::now();
    if let Some(parallel) = ours_run {
        ours(binary, dir, &fleet, &lb, image, parallel).await;
    } else {
        tutorial(&fleet, image).await;
    }
    let wall = started.elapsed();
    let (total, failed) = traffic.stop().await;
    Outcome { wall, total, failed, end: end_state(&fleet) }
}

/// The time from `docker run` until the test app answers its health check on the
/// host: the median of three, on a fresh host.
async fn boot_time(binary: &str) -> Duration {
    let (fleet, _lb) = start(Rig::Pure, 1, binary).await;
    let host = fleet.hosts()[0].addr;
    let docker = |args: Vec<String>| {
        let mut cmd = Command::new(fleet.bin_dir().join("docker"));
        cmd.args(args).env(ENV_HOST, host.to_string()).stdout(Stdio::null()).stderr(Stdio::null());
        cmd
    };
    let mut samples = Vec::new();
    for n in 0..3 {
        let port = std::net::TcpListener::bind((host, 0)).and_then(|l| l.local_addr()).expect("a free port").port();
        let name = format!("boot-{n}");
        let started = Instant::now();
        let args = ["run", "-d", "--name", &name, "-p", &format!("{port}:{port}"), "web:v1"];
        docker(args.iter().map(|a| a.to_string()).collect()).status().await.expect("docker run");
        let url = format!("http://{host}:{port}/health");
        while !matches!(sandbox::client::call("GET", &url, &[], None).await, Ok(r) if r.status == 200) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        samples.push(started.elapsed());
        docker(vec!["rm".into(), "-f".into(), name]).status().await.expect("docker rm");
    }
    samples.sort();
    samples[1]
}

pub async fn run(binary: &str, dir: &std::path::Path) {
    let boot = boot_time(binary).await;
    let floor_per_host = INTERVAL * UNHEALTHY + boot + INTERVAL * HEALTHY;
    println!(
        "hosts over ssh: check every {} ms, timeout {} ms, unhealthy {UNHEALTHY}, healthy {HEALTHY}; the tutorial's 30 s and 40 s sleeps scaled by {:.3}; boot {:.0} ms; floor {:.2} s per host",
        INTERVAL.as_millis(),
        TIMEOUT.as_millis(),
        INTERVAL.as_secs_f64() / DO_INTERVAL.as_secs_f64(),
        boot.as_secs_f64() * 1000.0,
        floor_per_host.as_secs_f64(),
    );
    let real = sshd_path().is_some() && haproxy_path().is_some();
    let curl = std::path::Path::new("/usr/bin/curl").exists();
    if !curl {
        println!("hosts over ssh: the tutorial's rows skipped: its script needs curl on the hosts");
    }
    let mut rigs = vec![(Rig::Pure, "russh + sandbox balancer"), (Rig::Droplets, "droplets, balancer by id")];
    if real {
        rigs.push((Rig::Real, "sshd + haproxy"));
    } else {
        println!("hosts over ssh: the sshd + haproxy rows skipped: not installed");
    }
    println!(
        "{:<26} {:>5} {:>3} | {:>9} {:>9} {:>6} {:>8} | {:>13} {:>13} | {:>13} {:>19} | bad release ends (tutorial / ours)",
        "rig", "hosts", "par", "tutorial", "ours", "ratio", "/floor", "good: tut.", "good: ours", "bad: tut.", "bad: ours"
    );
    for (rig, label) in rigs {
        for hosts in [2, 4] {
            let skipped = || Outcome { wall: Duration::ZERO, total: 0, failed: 0, end: vec!["-".into()] };
            let t_good = if curl { measure(rig, hosts, binary, dir, None, "web:v2").await } else { skipped() };
            let t_bad = if curl { measure(rig, hosts, binary, dir, None, "web:bad").await } else { skipped() };
            // One host at a time, then (with four) two at a time: never all of them.
            for parallel in (1..hosts).take(2) {
                let o_good = measure(rig, hosts, binary, dir, Some(parallel), "web:v2").await;
                let o_bad = measure(rig, hosts, binary, dir, Some(parallel), "web:bad").await;
                let batches = hosts.div_ceil(parallel) as u32;
                let floor = floor_per_host * batches;
                let counts = |o: &Outcome| format!("{}/{}", o.failed, o.total);
                println!(
                    "{:<26} {:>5} {:>3} | {:>8.2}s {:>8.2}s {:>6.2} {:>8.2} | {:>13} {:>13} | {:>13} {:>19} | {} / {}",
                    label,
                    hosts,
                    parallel,
                    t_good.wall.as_secs_f64(),
                    o_good.wall.as_secs_f64(),
                    o_good.wall.as_secs_f64() / t_good.wall.as_secs_f64(),
                    o_good.wall.as_secs_f64() / floor.as_secs_f64(),
                    counts(&t_good),
                    counts(&o_good),
                    counts(&t_bad),
                    format!("{} {:.1}s", counts(&o_bad), o_bad.wall.as_secs_f64()),
                    t_bad.end.join(","),
                    o_bad.end.join(","),
                );
            }
        }
    }
    println!("hosts over ssh: ratio = ours/tutorial (goal <= 0.35), /floor = ours/(floor per host x batches) (goal <= 1.2); failed/total requests through the balancer; bad: ours gives the release boot-timeout (3 s) on the first host, then rolls back");
    println!("hosts over ssh: the tutorial's sleeps are (threshold + 1) x interval, so one host at a time cannot beat it by more than the floor allows (5 of its 7 intervals); two hosts at a time halves the batches");
}
