//! Provider `ssh` against real parts: every host runs OpenSSH's sshd, and the hosts sit
//! behind a real HAProxy whose `inter`/`fall`/`rise`/`timeout check` are the run's
//! `lb-*` inputs. Skipped (with a line saying so) where sshd or haproxy is not
//! installed, unless SAFE_DEPLOY_REAL_RIG=required, as CI sets it.

use std::time::Duration;

use sandbox::app::{HealthMode, ReleaseSpec, Releases};
use sandbox::hosts::{real_rig_present, sshd_path, Backend, Fleet, FleetOptions};
use sandbox::kit::haproxy::{haproxy_path, Haproxy, HaproxyOptions};
use sandbox::kit::traffic::Traffic;

use crate::util::{Ran, Step, BIN};

const INTERVAL: Duration = Duration::from_millis(300);
const TIMEOUT: Duration = Duration::from_millis(200);
const RISE: u32 = 2;
const FALL: u32 = 2;

struct RealRig {
    fleet: Fleet,
    lb: Haproxy,
}

impl RealRig {
    /// `hosts` sshd hosts running web:v1 behind haproxy with every server up; None
    /// when the real parts are missing (the test skipped).
    async fn start(test: &str, hosts: usize) -> Option<RealRig> {
        let present = [("sshd", sshd_path().is_some()), ("haproxy", haproxy_path().is_some())];
        if !real_rig_present(test, &present) {
            return None;
        }
        let mut releases = Releases::new();
        for tag in ["v1", "v2"] {
            releases.insert(format!("web:{tag}"), ReleaseSpec::default());
        }
        releases.insert("web:broken".into(), ReleaseSpec { health: HealthMode::WrongBody, ..Default::default() });
        let fleet = Fleet::start(FleetOptions {
            hosts,
            running: Some("web:v1".into()),
            releases,
            app_command: vec![BIN.into(), "__sandbox-app".into()],
            runtime_command: vec![BIN.into(), "__sandbox-runtime".into()],
            backend: Backend::OpenSsh,
            ..Default::default()
        })
        .await
        .expect("the sshd hosts start");
        let lb = Haproxy::start(HaproxyOptions {
            servers: fleet.hosts().iter().map(|h| h.app).collect(),
            check_path: "/health".into(),
            interval: INTERVAL,
            timeout: TIMEOUT,
            healthy: RISE,
            unhealthy: FALL,
        })
        .await
        .expect("haproxy starts");
        lb.wait_all_up(Duration::from_secs(10)).await.expect("haproxy sees every host up");
        Some(RealRig { fleet, lb })
    }

    fn deploy(&self, tag: &str) -> Vec<(String, String)> {
        let f = &self.fleet;
        let hosts: Vec<String> = f.hosts().iter().map(|h| h.addr.to_string()).collect();
        let url = self.lb.url();
        let ms = |d: Duration| format!("{}ms", d.as_millis());
        [
            ("provider", "ssh".to_string()),
            ("app", "web".into()),
            ("hosts", hosts.join(",")),
            ("app-port", f.hosts()[0].app.port().to_string()),
            ("ssh-port", f.hosts()[0].ssh.port().to_string()),
            ("ssh-user", f.user().into()),
            ("ssh-key", f.client_key_openssh()),
            ("known-hosts", f.known_hosts()),
            ("lb-check-path", "/health".into()),
            ("lb-interval", ms(INTERVAL)),
            ("lb-timeout", ms(TIMEOUT)),
            ("lb-healthy-threshold", RISE.to_string()),
            ("lb-unhealthy-threshold", FALL.to_string()),
            ("stop-timeout", "5s".into()),
            ("image", format!("web:{tag}")),
            ("expect-version", tag.into()),
            ("health-url", format!("{url}/health")),
            ("check-string", "ok".into()),
            ("version-url", format!("{url}/version")),
            ("health-interval", "100ms".into()),
            ("health-deadline", "6s".into()),
            ("health-timeout", "1s".into()),
            ("deploy-timeout", "60s".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Runs a deploy of `tag` with steady traffic through haproxy; (run, total, failed).
    async fn run_with_traffic(&self, tag: &str) -> (Ran, u64, u64) {
        let traffic = Traffic::start(format!("{}/", self.lb.url()));
        let ran = Step::main(&self.deploy(tag)).run().await;
        let (total, failed) = traffic.stop().await;
        (ran, total, failed)
    }

    /// What each host runs, by tag.
    fn running(&self) -> Vec<String> {
        (0..self.fleet.hosts().len())
            .map(|i| self.fleet.running(i).map_or("none".into(), |r| r.trim_start_matches("web:").to_string()))
            .collect()
    }

    /// The runtime calls on host `i` that change its container.
    fn changes(&self, i: usize) -> Vec<String> {
        crate::hosts::changes(&self.fleet, i)
    }

    /// Everything worth reading when a run on the real rig goes wrong.
    fn story(&self, ran: &Ran) -> String {
        let sshd = self.fleet.sshd(0).map(|s| s.log()).unwrap_or_default();
        format!("{ran}\n--- haproxy:\n{}\n--- sshd on host 1:\n{sshd}", self.lb.log())
    }
}

async fn a_deploy_through_haproxy_loses_no_request(hosts: usize) {
    let Some(rig) = RealRig::start(&format!("real rig, {hosts} hosts"), hosts).await else { return };
    let (ran, total, failed) = rig.run_with_traffic("v2").await;
    assert_eq!(ran.code, 0, "{}", rig.story(&ran));
    assert_eq!(ran.output("status"), "deployed", "{ran}");
    assert_eq!(rig.running(), vec!["v2"; hosts]);
    assert!(total > 20, "traffic flowed during the deploy: {total}");
    assert_eq!(failed, 0, "{failed} of {total} requests failed through haproxy\n{}", rig.story(&ran));
    let port = rig.fleet.hosts()[0].app.port();
    let run = format!("run --detach --name web --restart unless-stopped --publish {port}:{port} web:v2");
    let kept = rig.changes(0)[1].trim_start_matches("rename web ").to_string();
    // The first host was gated on its loopback (through sshd's own forwarding), then
    // started on the port haproxy checks; the others were swapped once.
    let first = rig.changes(0);
    assert!(first[2].contains("--publish 127.0.0.1::") && first[3] == "rm --force web", "{first:?}");
    assert_eq!(first[4..], [run.clone(), format!("rm --force {kept}")], "{first:?}");
    for i in 0..hosts {
        if i > 0 {
            assert_eq!(
                rig.changes(i),
                ["stop --time 5 web".into(), format!("rename web {kept}"), run.clone(), format!("rm --force {kept}")],
                "host {i} was swapped once"
            );
        }
        assert!(!rig.fleet.hosts()[i].home.join(".safe-deploy/locks/web").exists(), "host {i}'s lock was given back");
    }
    let servers = rig.lb.servers().unwrap();
    assert!(servers.iter().all(|s| s.status == "UP"), "haproxy has every host back: {servers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sshd_hosts_behind_haproxy_are_deployed_with_no_request_failing() {
    a_deploy_through_haproxy_loses_no_request(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_sshd_hosts_behind_haproxy_are_deployed_with_no_request_failing() {
    a_deploy_through_haproxy_loses_no_request(4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_failing_on_the_first_sshd_host_is_put_back_there_and_the_second_never_touched() {
    let Some(rig) = RealRig::start("real rig, failed release", 2).await else { return };
    let (ran, total, failed) = rig.run_with_traffic("broken").await;
    assert_eq!(ran.code, 1, "{}", rig.story(&ran));
    assert_eq!(ran.output("status"), "rolled-back", "{ran}");
    assert_eq!(rig.running(), ["v1", "v1"]);
    assert!(rig.changes(1).is_empty(), "host 2 never changed: {:?}", rig.changes(1));
    let changed = rig.changes(0);
    assert_eq!(changed.len(), 6, "host 1 gated broken on its loopback, then had its own container back: {changed:?}");
    assert!(changed[2].contains("127.0.0.1::") && changed[2].ends_with(" web:broken"), "{changed:?}");
    assert!(changed[4].starts_with("rename web-before-") && changed[5] == "start web", "{changed:?}");
    assert_eq!(failed, 0, "{failed} of {total} requests failed through haproxy\n{}", rig.story(&ran));
}
