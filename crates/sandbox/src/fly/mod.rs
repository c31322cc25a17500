//! A Fly.io emulator with real processes: the Machines API (`api`) on one port, the
//! Fly proxy (`router`) on another, and one test-app process per machine, health-
//! checked (`checks`) and restarted on update like flyd does. Tests, benchmarks and
//! the demo point safe-deploy's Fly provider at `api_url()` and watch `app_url()`.
//!
//! Layout: `platform` owns the machines, the volumes and their lifecycle, `machine`
//! one machine's record and JSON, `volumes` one volume's and the mount rules, `api`
//! the Machines API's routes and bodies, `router` the Fly proxy's pin and headers,
//! `checks` when machines are probed and where results go, `ids` Fly-shaped
//! identifiers and times. Faults, auth, the call log and the control endpoints, the
//! proxying itself, probes and OS processes come from `crate::kit`; what is here is
//! only what Fly does its own way.

mod api;
mod checks;
pub mod ids;
mod machine;
mod platform;
mod router;
mod volumes;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};

/// The kit's fault set, which is all the Fly emulator serves; `never_start` applies
/// to machines started from then on.
pub use crate::kit::Faults;
pub use machine::RELEASE_COMMAND_GROUP;

use crate::app::{ReleaseSpec, Releases};
use crate::kit::{Gate, Handle};
use crate::server::Server;
use machine::Machine;
use platform::{NewMachine, Platform};
use volumes::Volume;

/// How long `FlySandbox::start` waits for the first machines to pass their checks.
const START_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct FlyOptions {
    /// The app's name, as in `/v1/apps/{app}/machines`.
    pub app: String,
    /// How many app machines exist at start.
    pub machines: usize,
    /// The first release, e.g. "registry.fly.io/web:v1".
    pub image: String,
    /// Behaviour per image; unknown images are healthy and report their tag.
    pub releases: Releases,
    /// Program and leading args that run the test app; the emulator appends
    /// `--port`, `--version` and the other flags of `app::run_process`.
    pub app_command: Vec<OsString>,
    /// How often machine checks probe.
    pub check_interval: Duration,
    /// When set, API requests must carry it (`Bearer ` or `FlyV1 ` scheme, or none).
    pub token: Option<String>,
    pub region: String,
    /// 0 means any free port.
    pub api_port: u16,
    pub router_port: u16,
    /// A volume name such as "data": each of the `machines` gets a volume of its own
    /// by that name in its region, mounted at /data, as `fly deploy` sets up for `[mounts]`.
    pub volume: Option<String>,
    /// Unattached volumes of that name made besides, as `fly volumes create` leaves
    /// them; ignored without `volume`.
    pub spare_volumes: usize,
    /// Machine configs created as they are at start, besides the app's machines: what
    /// `fly machine run` makes (say a worker without `fly_platform_version` metadata),
    /// which a deploy must leave alone. The router treats them like any machine.
    pub extra_machines: Vec<Value>,
}

impl Default for FlyOptions {
    fn default() -> Self {
        let exe = std::env::current_exe().map(OsString::from).unwrap_or_else(|_| OsString::from("safe-deploy"));
        FlyOptions {
            app: "web".into(),
            machines: 3,
            image: "registry.fly.io/web:v1".into(),
            releases: Releases::new(),
            app_command: vec![exe, OsString::from("__sandbox-app")],
            check_interval: Duration::from_millis(200),
            token: None,
            region: "ams".into(),
            api_port: 0,
            router_port: 0,
            volume: None,
            spare_volumes: 0,
            extra_machines: Vec::new(),
        }
    }
}

/// A machine as a test sees it.
#[derive(Debug, Clone, Serialize)]
pub struct MachineView {
    pub id: String,
    pub state: String,
    pub image: String,
    pub config: Value,
    pub cordoned: bool,
    pub process_group: String,
    pub instance_id: String,
    pub checks_passing: bool,
    /// The loopback port its process listens on, while it runs.
    pub port: Option<u16>,
}

impl MachineView {
    fn of(m: &Machine) -> MachineView {
        MachineView {
            id: m.id.clone(),
            state: m.state.clone(),
            image: m.image(),
            config: m.config.clone(),
            cordoned: m.cordoned,
            process_group: m.process_group(),
            instance_id: m.instance_id.clone(),
            checks_passing: m.checks_passing(),
            port: m.port,
        }
    }
}

/// A volume as a test sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VolumeView {
    pub id: String,
    pub name: String,
    pub region: String,
    pub size_gb: u64,
    /// `created`, or `destroyed` once deleted.
    pub state: String,
    /// The live machine whose config mounts it.
    pub attached_machine_id: Option<String>,
}

impl VolumeView {
    fn of(v: &Volume, attached: Option<&Machine>) -> VolumeView {
        VolumeView {
            id: v.id.clone(),
            name: v.name.clone(),
            region: v.region.clone(),
            size_gb: v.size_gb,
            state: v.state.clone(),
            attached_machine_id: attached.map(|m| m.id.clone()),
        }
    }
}

/// One Machines API request, as the emulator answered it; `target` is the machine id
/// in its path.
pub type ApiCall = crate::kit::Call;

pub struct FlySandbox {
    platform: Arc<Platform>,
    api: Server,
    router: Server,
}

impl FlySandbox {
    /// Starts the API and the router, the app's machines (with their volumes) and the
    /// extra machines, and returns once every machine has started and passes its checks.
    pub async fn start(opts: FlyOptions) -> std::io::Result<FlySandbox> {
        let platform = Arc::new(Platform::new(&opts));
        let api = api::serve(platform.clone(), SocketAddr::from(([127, 0, 0, 1], opts.api_port))).await?;
        let router = router::serve(platform.clone(), SocketAddr::from(([127, 0, 0, 1], opts.router_port))).await?;
        let sandbox = FlySandbox { platform, api, router };
        let refused = |what: &str, f: platform::Failure| std::io::Error::other(format!("{what}: {}", f.message));
        for _ in 0..opts.machines {
            let mut config = default_config(&opts);
            if let Some(name) = &opts.volume {
                // 1 GB, as `fly deploy` makes them for `[mounts]`.
                let volume = sandbox.platform.create_volume(name, None, Some(1)).map_err(|f| refused("volume", f))?;
                config["mounts"] = json!([{ "volume": volume["id"], "path": "/data", "name": name }]);
            }
            let new = NewMachine { config, ..Default::default() };
            sandbox.platform.create(new).await.map_err(|f| refused("machine", f))?;
        }
        for _ in 0..opts.spare_volumes {
            if let Some(name) = &opts.volume {
                sandbox.platform.create_volume(name, None, Some(1)).map_err(|f| refused("spare volume", f))?;
            }
        }
        for config in &opts.extra_machines {
            let new = NewMachine { config: config.clone(), ..Default::default() };
            sandbox.platform.create(new).await.map_err(|f| refused("FlyOptions.extra_machines", f))?;
        }
        // Every machine up, not every machine routable: extra machines may be in no
        // group the router serves.
        let ready = sandbox
            .platform
            .wait_until(START_TIMEOUT, |state| {
                state.machines.iter().all(|m| m.state == "started" && m.checks_passing())
                    || state.machines.iter().any(|m| m.state != "starting" && m.state != "started")
            })
            .await;
        let trouble = sandbox.machines().into_iter().find(|m| m.state != "started" || !m.checks_passing);
        if let (true, None) = (ready, &trouble) {
            return Ok(sandbox);
        }
        let detail = match &trouble {
            Some(m) => {
                let events = sandbox.platform.events(&m.id, 3).unwrap_or_default();
                format!("machine {} is {} (checks passing: {}), last events: {events}", m.id, m.state, m.checks_passing)
            }
            None => "timed out".into(),
        };
        sandbox.stop().await;
        Err(std::io::Error::other(format!(
            "the Fly sandbox's machines did not come up within {START_TIMEOUT:?}: {detail}; \
             check FlyOptions.app_command (it must run the test app) and the release spec of {}",
            opts.image
        )))
    }

    /// The router, where the app answers: "http://127.0.0.1:PORT".
    pub fn app_url(&self) -> String {
        self.router.url()
    }

    /// Every machine, destroyed ones included, in creation order.
    pub fn machines(&self) -> Vec<MachineView> {
        self.platform.views()
    }

    /// Every volume, destroyed ones included, in creation order.
    pub fn volumes(&self) -> Vec<VolumeView> {
        self.platform.volume_views()
    }

    pub fn add_release(&self, image: &str, spec: ReleaseSpec) {
        self.platform.lock().releases.insert(image.to_string(), spec);
    }

    /// Puts a lease held by `owner` (for an hour) on a machine, as another deploy would.
    pub fn hold_lease(&self, machine_id: &str, owner: &str) {
        self.platform.hold_lease(machine_id, owner, 3600);
    }

    /// The machines that hold a live lease now, with its owner: what a run left behind.
    pub fn leases_held(&self) -> Vec<String> {
        let state = self.platform.lock();
        state
            .machines
            .iter()
            .filter(|m| m.state != "destroyed")
            .filter_map(|m| m.live_lease().map(|l| format!("{} ({})", m.id, l.description)))
            .collect()
    }

    /// Destroys a machine whatever lease it holds, as the platform itself would when it
    /// loses a host: for tests of a machine that vanishes mid-deploy.
    pub async fn destroy_unleased(&self, id: &str) {
        let nonce = self.platform.lock().machine(id).and_then(|m| m.lease.as_ref().map(|l| l.nonce.clone()));
        let _ = self.platform.destroy(id, nonce.as_deref(), true).await;
    }

    /// How many app machines ever started a process of `image`: the blast radius of a
    /// broken release.
    pub fn machines_that_ran(&self, image: &str) -> usize {
        self.platform.lock().ran.get(image).map_or(0, |ids| ids.len())
    }

    /// Kills every process and stops both servers.
    pub async fn stop(self) {
        self.api.stop();
        self.router.stop();
        self.platform.close().await;
    }
}

impl Handle for FlySandbox {
    type Faults = Faults;

    fn gate(&self) -> &Gate<Faults> {
        &self.platform.gate
    }

    /// The Machines API base, e.g. "http://127.0.0.1:PORT/v1".
    fn api_url(&self) -> String {
        format!("{}/v1", self.api.url())
    }
}

impl Drop for FlySandbox {
    /// A sandbox dropped without `stop` (a failed test) still leaves no process behind.
    fn drop(&mut self) {
        self.api.stop();
        self.router.stop();
        self.platform.kill_all();
    }
}

/// A machine config like flyctl writes for an app with one HTTP service and a
/// health check on /health.
fn default_config(opts: &FlyOptions) -> Value {
    json!({
        "image": opts.image,
        "init": {},
        "env": { "PRIMARY_REGION": opts.region },
        "guest": { "cpu_kind": "shared", "cpus": 1, "memory_mb": 256 },
        "services": [{
            "protocol": "tcp",
            "internal_port": 8080,
            "autostart": true,
            "autostop": false,
            "min_machines_running": 0,
            "ports": [
                { "port": 80, "handlers": ["http"], "force_https": true },
                { "port": 443, "handlers": ["tls", "http"] }
            ],
            "checks": [{
                "type": "http",
                "port": 8080,
                "protocol": "http",
                "method": "GET",
                "path": "/health",
                "interval": ids::format_duration(opts.check_interval),
                "timeout": "2s",
                "grace_period": "1s"
            }]
        }],
        "restart": { "policy": "on-failure", "max_retries": 10 },
        "metadata": {
            "fly_platform_version": "v2",
            "fly_process_group": "app",
            "fly_release_id": "sandbox-release-1",
            "fly_release_version": "1"
        }
    })
}
