//! `safe-deploy demo --provider ssh` and `safe-deploy sandbox --provider ssh |
//! digitalocean-droplets`: hosts over SSH in this process, with nothing installed.
//! Each host is a loopback address with its own SSH server (russh) and a `docker`
//! stand-in that runs the test app; the sandbox's balancer checks them as a
//! DigitalOcean load balancer would. The demo deploys a healthy v2 host by host, then
//! a v3 whose health fails, caught on the first host and put back there.

use sandbox::Handle;
use std::path::PathBuf;
use std::time::Duration;

use sandbox::app::{HealthMode, ReleaseSpec, Releases};
use sandbox::droplets::{DropletSpec, DropletsOptions, DropletsSandbox, LbSpec, LbTarget};
use sandbox::hosts::{Fleet, FleetOptions};
use sandbox::kit::balancer::{Balancer, BalancerOptions, Check, Member};

use super::{say_traffic, Seen, Traffic};
use crate::inputs::RawInputs;
use crate::job::deploy_in;
use crate::providers::registration::{Running, SandboxArgs};
use crate::secret::Redactor;
use crate::shutdown::Shutdown;

/// The Droplets API of the demo and the sandbox takes only this token.
const DROPLETS_TOKEN: &str = "dop_v1_sandbox_droplets_token";

async fn fleet(hosts: usize, mut releases: Releases) -> anyhow::Result<Fleet> {
    releases.entry("web:v1".into()).or_default();
    // The fleet runs the test app and the docker stand-in as this same binary.
    Fleet::start(FleetOptions { hosts, running: Some("web:v1".into()), releases, ..FleetOptions::default() }).await
}

/// The Droplets and Load Balancers API over the fleet: droplets `web-1`... behind one
/// balancer that lists them by id and checks them every `interval`.
async fn droplets_api(fleet: &Fleet, interval: Duration) -> std::io::Result<DropletsSandbox> {
    let port = fleet.hosts()[0].app.port();
    let check = Check::health(port, interval);
    DropletsSandbox::start(DropletsOptions {
        droplets: DropletSpec::for_hosts(fleet.hosts(), "web"),
        balancer: LbSpec { name: "web-lb".into(), by: LbTarget::ById, check, target_port: port, entry_port: 80 },
        token: DROPLETS_TOKEN.into(),
        ..Default::default()
    })
    .await
}

async fn balancer(fleet: &Fleet, interval: Duration) -> anyhow::Result<Balancer> {
    let port = fleet.hosts()[0].app.port();
    let members = fleet
        .hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| Member { id: format!("host-{}", i + 1), ip: h.addr, port: None })
        .collect();
    Ok(Balancer::start(BalancerOptions { check: Check::health(port, interval), members, target_port: port }).await?)
}

/// Sets the inputs of provider `digitalocean-droplets` for this fleet behind `api`'s balancer.
fn droplet_inputs(raw: &mut RawInputs, fleet: &Fleet, api: &DropletsSandbox) {
    for (name, value) in [
        ("provider", "digitalocean-droplets".to_string()),
        ("app", "web".into()),
        ("token", DROPLETS_TOKEN.into()),
        ("api-url", api.api_url()),
        ("load-balancer", api.lb_id()),
        ("ssh-port", fleet.hosts()[0].ssh.port().to_string()),
        ("ssh-key", fleet.client_key_openssh()),
        ("known-hosts", fleet.known_hosts()),
        ("stop-timeout", "5s".into()),
    ] {
        raw.set(name, value);
    }
}

/// Sets the inputs of provider `ssh` for this fleet behind `balancer`.
fn ssh_inputs(raw: &mut RawInputs, fleet: &Fleet, balancer: &Balancer, interval: Duration) {
    let hosts: Vec<String> = fleet.hosts().iter().map(|h| h.addr.to_string()).collect();
    let ms = format!("{}ms", interval.as_millis());
    for (name, value) in [
        ("provider", "ssh"),
        ("app", "web"),
        ("hosts", &hosts.join(",")),
        ("app-port", &fleet.hosts()[0].app.port().to_string()),
        ("ssh-port", &fleet.hosts()[0].ssh.port().to_string()),
        ("ssh-key", &fleet.client_key_openssh()),
        ("known-hosts", &fleet.known_hosts()),
        ("lb-check-path", "/health"),
        ("lb-interval", &ms),
        ("lb-timeout", &ms),
        ("lb-healthy-threshold", "2"),
        ("lb-unhealthy-threshold", "2"),
        ("stop-timeout", "5s"),
        ("health-url", &format!("{}/health", balancer.url())),
    ] {
        raw.set(name, value);
    }
}

/// `demo --provider ssh` (the sandbox's balancer, drained by the app's switch) or
/// `demo --provider digitalocean-droplets` (droplets behind a balancer that lists them
/// by id, taken out through the Droplets API).
pub async fn run(provider: &str, summary_dir: Option<PathBuf>, redactor: Redactor) -> i32 {
    super::exit_code(demo(provider == "digitalocean-droplets", summary_dir, redactor).await)
}

async fn demo(droplets: bool, summary_dir: Option<PathBuf>, redactor: Redactor) -> anyhow::Result<i32> {
    let workspace = super::workspace(if droplets { "droplets-demo" } else { "ssh-demo" }, summary_dir)?;
    let dir = workspace.dir.clone();
    let mut releases = Releases::new();
    releases.insert("web:v2".into(), ReleaseSpec::default());
    releases.insert("web:v3".into(), ReleaseSpec { health: HealthMode::WrongBody, ..Default::default() });
    let interval = Duration::from_millis(300);
    println!("demo: starting two hosts, each with an SSH server and a docker stand-in, running web:v1");
    let fleet = fleet(2, releases).await?;
    let (lb, api) = match droplets {
        true => (None, Some(droplets_api(&fleet, interval).await?)),
        false => (Some(balancer(&fleet, interval).await?), None),
    };
    let url = lb.as_ref().map(Balancer::url).or(api.as_ref().map(DropletsSandbox::app_url)).unwrap_or_default();
    for (i, h) in fleet.hosts().iter().enumerate() {
        println!("demo: host {} at {} (SSH port {}, app port {})", i + 1, h.addr, h.ssh.port(), h.app.port());
    }
    match &api {
        Some(api) => println!("demo: the Droplets and Load Balancers API at {}; load balancer {} lists both droplets by id and checks GET /health every 300ms (healthy after 2, unhealthy after 2) at {url}", api.api_url(), api.lb_id()),
        None => println!("demo: the balancer at {url} checks GET /health every 300ms (healthy after 2, unhealthy after 2)"),
    }
    let traffic = Traffic::judging(format!("{url}/"), &["v3"]);
    let runner = super::demo_runner(&dir, redactor);
    let inputs = |tag: &str| {
        let mut raw = super::gated_inputs(&url, tag, "6s");
        match (&lb, &api) {
            (Some(lb), _) => ssh_inputs(&mut raw, &fleet, lb, interval),
            (_, Some(api)) => droplet_inputs(&mut raw, &fleet, api),
            _ => {}
        }
        raw.set("image", format!("web:{tag}"));
        raw
    };

    println!("\ndemo: 1) deploy web:v2, a healthy release, one host at a time");
    let first = deploy_in(inputs("v2"), &dir, workspace.run(&runner, "v2"), Shutdown::new()).await;
    let after_first = Seen::of(&traffic);
    match droplets {
        true => println!("\ndemo: 2) deploy web:v3, whose /health answers 200 without 'ok': the first droplet stays out of the balancer until its gate passes, so v3 gets no request; the gate fails and v2 goes back there"),
        false => println!("\ndemo: 2) deploy web:v3, whose /health answers 200 without 'ok': on the first host it starts out of the balancer's reach and is gated there; the gate fails it and v2 goes back, so v3 serves no request"),
    }
    let second = deploy_in(inputs("v3"), &dir, workspace.run(&runner, "v3"), Shutdown::new()).await;
    let seen = Seen::stop(traffic).await;
    let live: Vec<String> = (0..2).map(|i| fleet.running(i).unwrap_or_else(|| "nothing".into())).collect();
    let v3_ran_on = (0..2)
        .filter(|&i| {
            fleet
                .runtime_calls(i)
                .iter()
                .any(|c| c.get(1).map(String::as_str) == Some("run") && c.last().map(String::as_str) == Some("web:v3"))
        })
        .count();
    println!("\ndemo: v2 exit code {first} (deployed), v3 exit code {second} (rolled back)");
    say_traffic(&after_first, "balancer", "during the v2 deploy");
    say_traffic(&seen, "balancer", "in all");
    println!(
        "demo: hosts run {}; web:v3 ever started on {}",
        live.join(" and "),
        crate::markdown::counted(v3_ran_on, "host")
    );
    workspace.say_summaries();
    if let Some(api) = api {
        api.stop().await;
    }
    // Droplets stay out of the balancer until their gate passes: v3 must serve no page.
    let as_expected = first == 0
        && second == 1
        && live.iter().all(|l| l == "web:v2")
        && v3_ran_on == 1
        && seen.errors == 0
        && (!droplets || seen.wrong == 0);
    Ok(if as_expected { 0 } else { 1 })
}

/// Writes the fleet's client key and known_hosts lines to files, for a person or a
/// script to pass as inputs.
fn key_files(fleet: &Fleet) -> std::io::Result<(PathBuf, PathBuf)> {
    let dir = super::private_dir("hosts-sandbox")?;
    let (key, known) = (dir.join("ssh-key"), dir.join("known-hosts"));
    // ssh refuses a private key others can read, and so should we.
    std::io::Write::write_all(&mut crate::secret::new_private_file(&key)?, fleet.client_key_openssh().as_bytes())?;
    std::fs::write(&known, fleet.known_hosts())?;
    Ok((key, known))
}

/// `"$(cat 'PATH')"`: a file's text as a pasted command's flag value.
fn cat(path: &std::path::Path) -> String {
    format!("\"$(cat {})\"", super::shell_word(&path.display().to_string()))
}

/// `safe-deploy sandbox --provider ssh | digitalocean-droplets`: the hosts (and, for
/// droplets, the Droplets and Load Balancers API) until interrupted. Every host runs
/// web:v1; `releases` say how other images behave. The balancer checks every second,
/// whole seconds being what DigitalOcean's API describes.
pub async fn serve(provider: &str, hosts: usize, releases: Releases) -> i32 {
    let interrupted = super::interrupts();
    let mut releases = super::with_broken(releases, "web:v3");
    releases.insert(sandbox::app::ANY_IMAGE.into(), ReleaseSpec::default());
    let started = async {
        let fleet = fleet(hosts.max(1), releases).await?;
        let files = key_files(&fleet)?;
        anyhow::Ok((fleet, files))
    };
    let (fleet, (key, known)) = match started.await {
        Ok(s) => s,
        Err(e) => return super::could_not_start(std::io::Error::other(e.to_string())),
    };
    let port = fleet.hosts()[0].app.port();
    let addrs: Vec<String> = fleet.hosts().iter().map(|h| h.addr.to_string()).collect();
    let interval = Duration::from_secs(1);
    let (api, lb) = if provider == "digitalocean-droplets" {
        match droplets_api(&fleet, interval).await {
            Ok(api) => (Some(api), None),
            Err(e) => return super::could_not_start(e),
        }
    } else {
        match balancer(&fleet, interval).await {
            Ok(lb) => (None, Some(lb)),
            Err(e) => return super::could_not_start(std::io::Error::other(e.to_string())),
        }
    };
    let ssh_port = fleet.hosts()[0].ssh.port().to_string();
    let mut flags = vec![("provider", provider.to_string()), ("app", "web".to_string())];
    match (&api, &lb) {
        (Some(api), _) => {
            println!("DIGITALOCEAN_API_URL={}", api.api_url());
            println!("DIGITALOCEAN_LOAD_BALANCER={}", api.lb_id());
            println!("DIGITALOCEAN_ACCESS_TOKEN={DROPLETS_TOKEN}");
            println!("APP_URL={}", api.app_url());
            flags.extend([
                ("api-url", api.api_url()),
                ("token", DROPLETS_TOKEN.into()),
                ("load-balancer", api.lb_id()),
            ]);
        }
        (_, Some(lb)) => {
            println!("HOSTS={}", addrs.join(","));
            println!("APP_PORT={port}");
            println!("APP_URL={}", lb.url());
            // The balancer's own check, so the run waits for it as it really works.
            flags.extend([
                ("hosts", addrs.join(",")),
                ("app-port", port.to_string()),
                ("lb-check-path", "/health".into()),
                ("lb-interval", "1s".into()),
                ("lb-timeout", "1s".into()),
                ("lb-healthy-threshold", "2".into()),
                ("lb-unhealthy-threshold", "2".into()),
            ]);
        }
        _ => {}
    }
    println!("SSH_PORT={ssh_port}");
    println!("SSH_KEY_FILE={}", key.display());
    println!("KNOWN_HOSTS_FILE={}", known.display());
    let token = if api.is_some() { " the API takes only the token above;" } else { "" };
    println!("# {} hosts on web:v1 behind a balancer checking GET /health every second (healthy after 2, unhealthy after 2); any image runs;{token} Ctrl-C stops the sandbox.", addrs.len());
    flags.extend([("ssh-port", ssh_port), ("stop-timeout", "5s".into())]);
    let app_url = api.as_ref().map(DropletsSandbox::app_url).or(lb.as_ref().map(Balancer::url)).unwrap_or_default();
    let (key, known) = (key.clone(), known.clone());
    super::Paste {
        env: vec![],
        dir: None,
        flags,
        shell: vec![("ssh-key", cat(&key)), ("known-hosts", cat(&known))],
        app_url,
        rollback_to: Some("web:v1".into()),
        release: ("image", "web:".into()),
    }
    .print();
    interrupted.recv().await;
    drop(fleet);
    if let Some(api) = api {
        api.stop().await;
    }
    // The key and known_hosts were the sandbox's: they go with it.
    if let Some(dir) = key.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
    0
}

/// The ssh demo, as its `Registration` names it.
pub fn ssh_demo(summary: Option<PathBuf>, redactor: Redactor) -> Running {
    Box::pin(run("ssh", summary, redactor))
}

/// The ssh sandbox, as its `Registration` names it.
pub fn ssh_sandbox(args: SandboxArgs) -> Running {
    Box::pin(async move { serve("ssh", args.machines, args.releases).await })
}

/// The digitalocean-droplets demo, as its `Registration` names it.
pub fn droplets_demo(summary: Option<PathBuf>, redactor: Redactor) -> Running {
    Box::pin(run("digitalocean-droplets", summary, redactor))
}

/// The digitalocean-droplets sandbox, as its `Registration` names it.
pub fn droplets_sandbox(args: SandboxArgs) -> Running {
    Box::pin(async move { serve("digitalocean-droplets", args.machines, args.releases).await })
}
