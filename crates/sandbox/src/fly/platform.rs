//! The emulated platform: the app's machines and volumes and what happens to them.
//! Every lifecycle operation (create, update, start, stop, suspend, destroy) runs
//! here, under the machine's operation lock, so two of them never interleave on one
//! machine. It also holds the kit's `Gate` (faults and call log), because
//! `never_start` decides what a launch does; HTTP is `api`'s and `router`'s business.

use std::ffi::OsString;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use tokio::sync::watch;

use super::machine::{CheckResult, Lease, Machine, RELEASE_COMMAND_GROUP};
use super::volumes::{self, Volume};
use super::{checks, ids, Faults, FlyOptions, MachineView, VolumeView};
use crate::app::{spec_for, Releases};
use crate::kit::process::{self, signal, Exit, Launch};
use crate::kit::{Gate, TokenRule};

/// Who holds a lease taken through the API (Fly puts the token owner's email here).
pub const API_LEASE_OWNER: &str = "sandbox-user@fly.test";
/// Fly's default `kill_timeout`.
const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a machine created with `skip_launch` stays `created` before it settles
/// in `stopped`, standing in for Fly fetching its image and preparing it.
const PREPARE_TIME: Duration = Duration::from_millis(300);

/// An API error: its status and the message for `{"error": ...}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub status: u16,
    pub message: String,
}

fn fail(status: u16, message: impl Into<String>) -> Failure {
    Failure { status, message: message.into() }
}

fn not_found() -> Failure {
    fail(404, "machine not found")
}

fn volume_not_found() -> Failure {
    fail(404, "volume not found")
}

/// A machine to create, from a CreateMachineRequest.
#[derive(Debug, Clone, Default)]
pub struct NewMachine {
    pub config: Value,
    pub name: Option<String>,
    pub region: Option<String>,
    pub skip_launch: bool,
    pub cordoned: bool,
    pub lease_ttl: Option<u64>,
}

/// A new config for a machine, from an UpdateMachineRequest.
#[derive(Debug, Clone, Default)]
pub struct NewConfig {
    pub config: Value,
    pub skip_launch: bool,
    pub cordon: bool,
    pub current_version: Option<String>,
}

#[derive(Default)]
pub struct State {
    pub machines: Vec<Machine>,
    /// Destroyed ones included, in creation order.
    pub volumes: Vec<Volume>,
    pub releases: Releases,
    /// For each image, the app machines that ever started a process of it.
    pub ran: std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
    /// Set by `FlySandbox::stop`: nothing launches any more.
    pub closed: bool,
}

impl State {
    pub fn machine(&mut self, id: &str) -> Option<&mut Machine> {
        self.machines.iter_mut().find(|m| m.id == id)
    }

    fn volume_json(&self, v: &Volume) -> Value {
        v.to_json(volumes::attached_to(&self.machines, &v.id).map(|m| m.id.as_str()))
    }
}

pub struct Platform {
    pub app: String,
    pub region: String,
    pub auth: TokenRule,
    pub check_interval: Duration,
    /// Faults and the call log, under a lock of their own.
    pub gate: Gate<Faults>,
    app_command: Vec<OsString>,
    state: Mutex<State>,
    /// Bumped on every change a waiter could care about.
    changed: watch::Sender<u64>,
}

impl Platform {
    pub fn new(opts: &FlyOptions) -> Platform {
        Platform {
            app: opts.app.clone(),
            region: opts.region.clone(),
            // Fly takes `Authorization: Bearer <token>`, `FlyV1 <token>` or the bare token.
            auth: TokenRule { schemes: &["Bearer", "FlyV1"], bare: true, token: opts.token.clone(), required: false },
            gate: Gate::default(),
            check_interval: opts.check_interval,
            app_command: opts.app_command.clone(),
            state: Mutex::new(State { releases: opts.releases.clone(), ..Default::default() }),
            changed: watch::channel(0).0,
        }
    }

    /// The state; a panic elsewhere while holding it does not make it unusable.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn notify(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Waits until `done` holds for the state, or `timeout` passes; false on timeout.
    pub async fn wait_until(&self, timeout: Duration, mut done: impl FnMut(&mut State) -> bool) -> bool {
        let mut changes = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if done(&mut self.lock()) {
                return true;
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                _ => return false,
            }
        }
    }

    pub fn exists(&self, id: &str) -> bool {
        self.lock().machines.iter().any(|m| m.id == id)
    }

    pub fn views(&self) -> Vec<MachineView> {
        self.lock().machines.iter().map(MachineView::of).collect()
    }

    fn ops(&self, id: &str) -> Result<Arc<tokio::sync::Mutex<()>>, Failure> {
        self.lock().machine(id).map(|m| m.ops.clone()).ok_or_else(not_found)
    }

    // --- reading ---

    pub fn list(&self, include_deleted: bool, region: Option<&str>, states: Option<&[String]>, summary: bool) -> Value {
        let state = self.lock();
        let machines = state
            .machines
            .iter()
            .filter(|m| include_deleted || m.state != "destroyed")
            .filter(|m| region.is_none_or(|r| m.region == r))
            .filter(|m| states.is_none_or(|s| s.contains(&m.state)))
            .map(|m| m.to_json(summary))
            .collect();
        Value::Array(machines)
    }

    pub fn get(&self, id: &str) -> Result<Value, Failure> {
        self.lock().machine(id).map(|m| m.to_json(false)).ok_or_else(not_found)
    }

    pub fn events(&self, id: &str, limit: usize) -> Result<Value, Failure> {
        let mut state = self.lock();
        let m = state.machine(id).ok_or_else(not_found)?;
        Ok(Value::Array(m.events.iter().rev().take(limit).map(|e| e.to_json()).collect()))
    }

    /// Long-polls until machine `id` is in `target` (for `instance_id`, when given).
    pub async fn wait(
        &self,
        id: &str,
        target: &str,
        instance_id: Option<&str>,
        timeout: Duration,
    ) -> Result<Value, Failure> {
        let mut answer = None;
        let reached = self
            .wait_until(timeout, |state| match state.machine(id) {
                None => {
                    answer = Some(Err(not_found()));
                    true
                }
                Some(m) => {
                    let current = instance_id.is_none_or(|i| i == m.instance_id);
                    let done = match target {
                        "started" => current && m.state == "started",
                        // A replaced instance has stopped; a destroyed machine has too.
                        "stopped" => !current || matches!(m.state.as_str(), "stopped" | "destroyed"),
                        "suspended" => current && m.state == "suspended",
                        _ => m.state == "destroyed",
                    };
                    if done {
                        answer = Some(Ok(json!({ "ok": true, "state": m.state })));
                    }
                    done
                }
            })
            .await;
        match answer {
            Some(answer) if reached => answer,
            _ => Err(fail(408, "deadline_exceeded")),
        }
    }

    /// The machines that take traffic now, with their ports.
    pub fn routable(&self) -> Vec<(String, u16)> {
        let state = self.lock();
        state.machines.iter().filter(|m| m.routable()).filter_map(|m| Some((m.id.clone(), m.port?))).collect()
    }

    /// The port of machine `id` for a request forced to it (`fly-force-instance-id`),
    /// or why it cannot take one. Being cordoned or failing checks does not stop it:
    /// see `FlyProxy::pinned` in `router`.
    pub fn forced_backend(&self, id: &str) -> Result<u16, String> {
        let mut state = self.lock();
        let Some(m) = state.machine(id).filter(|m| m.state != "destroyed") else {
            return Err(format!("machine {id} does not exist in app {}", self.app));
        };
        if !m.has_services() {
            return Err(format!("machine {id} has no services in its config, so the proxy has nowhere to deliver"));
        }
        // Fly's proxy would wake a stopped machine with `autostart`; the sandbox does not emulate that.
        if m.state != "started" {
            return Err(format!("machine {id} is {}, not started", m.state));
        }
        m.port.ok_or_else(|| format!("machine {id} has no process listening"))
    }

    // --- volumes ---

    pub fn volume_views(&self) -> Vec<VolumeView> {
        let state = self.lock();
        state.volumes.iter().map(|v| VolumeView::of(v, volumes::attached_to(&state.machines, &v.id))).collect()
    }

    pub fn list_volumes(&self) -> Value {
        let state = self.lock();
        Value::Array(state.volumes.iter().filter(|v| !v.destroyed()).map(|v| state.volume_json(v)).collect())
    }

    pub fn get_volume(&self, id: &str) -> Result<Value, Failure> {
        let state = self.lock();
        state.volumes.iter().find(|v| v.id == id).map(|v| state.volume_json(v)).ok_or_else(volume_not_found)
    }

    /// A new unattached volume; the region defaults to the app's primary region.
    pub fn create_volume(&self, name: &str, region: Option<&str>, size_gb: Option<u64>) -> Result<Value, Failure> {
        if !volumes::valid_name(name) {
            return Err(fail(
                400,
                format!("volume name {name:?} is not valid: use up to 30 lowercase letters, digits and underscores"),
            ));
        }
        let size_gb = size_gb.unwrap_or(volumes::DEFAULT_SIZE_GB);
        if size_gb == 0 {
            return Err(fail(400, "size_gb must be at least 1"));
        }
        let volume = Volume::new(name.to_string(), region.unwrap_or(&self.region).to_string(), size_gb);
        let answer = volume.to_json(None);
        self.lock().volumes.push(volume);
        Ok(answer)
    }

    /// Deletes an unattached volume: a volume is released by destroying its machine.
    pub fn destroy_volume(&self, id: &str) -> Result<Value, Failure> {
        let mut state = self.lock();
        let index = state.volumes.iter().position(|v| v.id == id).ok_or_else(volume_not_found)?;
        if let Some(m) = volumes::attached_to(&state.machines, id) {
            return Err(fail(
                412,
                format!("volume {id} is attached to machine {}; destroy that machine first to release it", m.id),
            ));
        }
        state.volumes[index].state = "destroyed".into();
        Ok(state.volume_json(&state.volumes[index]))
    }

    // --- lifecycle ---

    pub async fn create(self: &Arc<Self>, new: NewMachine) -> Result<Value, Failure> {
        if !new.config.get("image").is_some_and(Value::is_string) {
            return Err(fail(400, "config.image is required: give the image to run, e.g. registry.fly.io/APP:TAG"));
        }
        let wanted = volumes::mount_of(&new.config)?;
        let id = ids::machine_id();
        let mut machine = Machine::new(
            id.clone(),
            new.name.unwrap_or_else(|| format!("{}-{}", self.app, &id[..6])),
            new.region.unwrap_or_else(|| self.region.clone()),
            new.config,
        );
        machine.cordoned = new.cordoned;
        machine.record("launch", "created", json!({}));
        let nonce = new.lease_ttl.map(|ttl| {
            let lease = new_lease(&machine, API_LEASE_OWNER, "", ttl);
            let nonce = lease.nonce.clone();
            machine.lease = Some(lease);
            nonce
        });
        {
            // Checked and pushed under one lock, so two creates cannot both take a volume.
            let mut state = self.lock();
            volumes::check_mount(&state.volumes, &state.machines, None, &machine.region, None, wanted.as_deref())?;
            state.machines.push(machine);
        }
        if new.skip_launch {
            self.settle_created(&id);
        } else {
            self.launch(&id);
        }
        self.notify();
        let mut answer = self.get(&id)?;
        if let Some(nonce) = nonce {
            answer["nonce"] = Value::String(nonce);
        }
        Ok(answer)
    }

    pub async fn update(self: &Arc<Self>, id: &str, new: NewConfig, nonce: Option<&str>) -> Result<Value, Failure> {
        let guard = self.ops(id)?.lock_owned().await;
        let (running, launch) = {
            let mut state = self.lock();
            let m = state.machine(id).ok_or_else(not_found)?;
            m.lease_allows(nonce).map_err(|e| fail(409, e))?;
            refuse_if_gone(m)?;
            if let Some(expected) = new.current_version.filter(|v| !v.is_empty() && *v != m.instance_id) {
                return Err(fail(
                    412,
                    format!("machine {id} is at version {}, not {expected}; read it again and retry", m.instance_id),
                ));
            }
            let (region, current) = (m.region.clone(), m.mounted_volume());
            let wanted = volumes::mount_of(&new.config)?;
            volumes::check_mount(
                &state.volumes,
                &state.machines,
                Some(id),
                &region,
                current.as_deref(),
                wanted.as_deref(),
            )?;
            let m = state.machine(id).ok_or_else(not_found)?;
            m.config = new.config;
            m.instance_id = ids::instance_id();
            m.cordoned |= new.cordon;
            m.record("update", "replacing", json!({}));
            let running = matches!(m.state.as_str(), "started" | "starting");
            if running && m.process.is_some() {
                // Out of the router's rotation before the process hears anything.
                m.set_state("stopping");
            }
            (running, !running && startable(&m.state) && !new.skip_launch)
        };
        self.notify();
        if running {
            let platform = self.clone();
            let id = id.to_string();
            tokio::spawn(async move {
                let _guard = guard;
                let (sig, grace) = platform.stop_settings(&id, None, None);
                platform.halt(&id, sig, grace).await;
                platform.launch(&id);
            });
        } else if launch {
            self.launch(id);
        }
        self.get(id)
    }

    pub async fn start(self: &Arc<Self>, id: &str, nonce: Option<&str>) -> Result<Value, Failure> {
        let _guard = self.ops(id)?.lock_owned().await;
        let previous = {
            let mut state = self.lock();
            let m = state.machine(id).ok_or_else(not_found)?;
            m.lease_allows(nonce).map_err(|e| fail(409, e))?;
            refuse_if_gone(m)?;
            m.state.clone()
        };
        // A `skip_launch` machine may be started while still `created`: Fly documents no
        // refusal, and says such a machine is left "where it can be quickly started".
        if startable(&previous) {
            self.launch(id);
        }
        Ok(json!({ "previous_state": previous, "status": "ok", "message": "" }))
    }

    pub async fn stop(
        self: &Arc<Self>,
        id: &str,
        nonce: Option<&str>,
        sig: Option<i32>,
        timeout: Option<Duration>,
    ) -> Result<Value, Failure> {
        let guard = self.ops(id)?.lock_owned().await;
        {
            let mut state = self.lock();
            let m = state.machine(id).ok_or_else(not_found)?;
            m.lease_allows(nonce).map_err(|e| fail(409, e))?;
            refuse_if_gone(m)?;
            if m.state == "suspended" {
                // "Stopping a suspended Machine will invalidate its snapshot" (Machines API docs).
                m.record("stop", "stopped", json!({}));
                settle_stopped(m);
                drop(state);
                self.notify();
                return Ok(json!({ "ok": true }));
            }
            if !matches!(m.state.as_str(), "started" | "starting") {
                return Ok(json!({ "ok": true }));
            }
            m.set_state("stopping");
            m.record("stop", "stopping", json!({}));
        }
        self.notify();
        let platform = self.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            let _guard = guard;
            let (sig, grace) = platform.stop_settings(&id, sig, timeout);
            platform.halt(&id, sig, grace).await;
            {
                let mut state = platform.lock();
                if let Some(m) = state.machine(&id).filter(|m| m.state == "stopping") {
                    settle_stopped(m);
                }
            }
            platform.notify();
        });
        Ok(json!({ "ok": true }))
    }

    /// Suspends a started machine: its process goes away, and `start` brings it back.
    /// The sandbox has no memory snapshot, so the resume is a cold boot of the test app.
    pub async fn suspend(self: &Arc<Self>, id: &str, nonce: Option<&str>) -> Result<Value, Failure> {
        let guard = self.ops(id)?.lock_owned().await;
        {
            let mut state = self.lock();
            let m = state.machine(id).ok_or_else(not_found)?;
            m.lease_allows(nonce).map_err(|e| fail(409, e))?;
            refuse_if_gone(m)?;
            match m.state.as_str() {
                "suspended" => return Ok(json!({ "ok": true })),
                "started" | "starting" => {}
                other => {
                    return Err(fail(412, format!("machine {id} is {other}; only a started machine can be suspended")))
                }
            }
            m.set_state("suspending");
            m.record("suspend", "suspending", json!({}));
        }
        self.notify();
        let platform = self.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            let _guard = guard;
            let (_, grace) = platform.stop_settings(&id, None, None);
            platform.halt(&id, signal::TERM, grace).await;
            {
                let mut state = platform.lock();
                if let Some(m) = state.machine(&id).filter(|m| m.state == "suspending") {
                    m.set_state("suspended");
                    m.process = None;
                    m.port = None;
                    m.checks.clear();
                    m.record("suspend", "suspended", json!({}));
                }
            }
            platform.notify();
        });
        Ok(json!({ "ok": true }))
    }

    pub async fn destroy(self: &Arc<Self>, id: &str, nonce: Option<&str>, force: bool) -> Result<Value, Failure> {
        let check = |m: &Machine| -> Result<(), Failure> {
            m.lease_allows(nonce).map_err(|e| fail(409, e))?;
            // "stopping" is let through: the destroy waits for that stop, then goes ahead.
            if !force && matches!(m.state.as_str(), "started" | "starting") {
                return Err(fail(
                    412,
                    format!(
                        "machine {} is {}; stop it first, or pass force=true (or kill=true) to kill it",
                        m.id, m.state
                    ),
                ));
            }
            Ok(())
        };
        {
            let mut state = self.lock();
            let m = state.machine(id).ok_or_else(not_found)?;
            check(m)?;
            // A running machine is killed now, so nothing queued before can hold the destroy
            // up; one already stopping gets to finish its graceful stop first.
            if let Some(p) = m.process.clone().filter(|_| force && m.state != "stopping") {
                m.set_state("destroying");
                p.signal(signal::KILL);
            }
        }
        self.notify();
        let _guard = self.ops(id)?.lock_owned().await;
        let process = {
            let mut state = self.lock();
            let m = state.machine(id).ok_or_else(not_found)?;
            if m.state == "destroyed" {
                return Ok(json!({ "ok": true }));
            }
            if m.state != "destroying" {
                check(m)?;
            }
            m.set_state("destroying");
            m.process.clone()
        };
        self.notify();
        if let Some(p) = process {
            p.terminate(signal::KILL, Duration::from_secs(5)).await;
        }
        {
            let mut state = self.lock();
            if let Some(m) = state.machine(id) {
                mark_destroyed(m);
            }
        }
        self.notify();
        Ok(json!({ "ok": true }))
    }

    pub fn cordon(&self, id: &str, on: bool, nonce: Option<&str>) -> Result<Value, Failure> {
        {
            let mut state = self.lock();
            let m = state.machine(id).ok_or_else(not_found)?;
            m.lease_allows(nonce).map_err(|e| fail(409, e))?;
            refuse_if_gone(m)?;
            m.cordoned = on;
            m.updated_at = SystemTime::now();
        }
        self.notify();
        Ok(json!({ "ok": true }))
    }

    // --- leases ---

    pub fn lease(&self, id: &str) -> Result<Value, Failure> {
        let mut state = self.lock();
        let m = state.machine(id).ok_or_else(not_found)?;
        m.live_lease().map(Lease::to_json).ok_or_else(|| fail(404, format!("machine {id} has no lease")))
    }

    /// Acquires a free (or expired) lease, or refreshes the caller's own when `nonce` is its nonce.
    pub fn acquire_lease(&self, id: &str, nonce: Option<&str>, ttl: u64, description: &str) -> Result<Value, Failure> {
        let mut state = self.lock();
        let m = state.machine(id).ok_or_else(not_found)?;
        refuse_if_gone(m)?;
        match m.lease.as_mut().filter(|l| l.live()) {
            Some(lease) if nonce == Some(lease.nonce.as_str()) => {
                lease.expires_at = SystemTime::now() + Duration::from_secs(ttl);
                if !description.is_empty() {
                    lease.description = description.to_string();
                }
                Ok(lease.to_json())
            }
            Some(lease) => Err(fail(
                409,
                format!("lease currently held by {}, expires at {}", lease.owner, ids::rfc3339(lease.expires_at)),
            )),
            None => {
                let lease = new_lease(m, API_LEASE_OWNER, description, ttl);
                let answer = lease.to_json();
                m.lease = Some(lease);
                Ok(answer)
            }
        }
    }

    pub fn release_lease(&self, id: &str, nonce: Option<&str>) -> Result<Value, Failure> {
        let mut state = self.lock();
        let m = state.machine(id).ok_or_else(not_found)?;
        match m.live_lease() {
            Some(lease) if nonce != Some(lease.nonce.as_str()) => Err(fail(
                409,
                format!(
                    "the lease on machine {id} is held by {}; send its nonce in the fly-machine-lease-nonce header",
                    lease.owner
                ),
            )),
            _ => {
                m.lease = None;
                Ok(json!({ "ok": true }))
            }
        }
    }

    /// A lease taken by someone other than the API caller, for tests.
    pub fn hold_lease(&self, id: &str, owner: &str, ttl: u64) -> bool {
        let mut state = self.lock();
        let Some(m) = state.machine(id) else { return false };
        m.lease = Some(new_lease(m, owner, "held by the test", ttl));
        true
    }

    // --- processes ---

    /// A machine created with `skip_launch` settles in `stopped` once prepared, which
    /// is what flyctl waits for before starting its release-command machine
    /// (`createReleaseCommandMachine` waits for `stopped`). Until then it is `created`.
    fn settle_created(self: &Arc<Self>, id: &str) {
        let platform = self.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(PREPARE_TIME).await;
            {
                let mut state = platform.lock();
                match state.machine(&id) {
                    Some(m) if m.state == "created" => m.set_state("stopped"),
                    _ => return,
                }
            }
            platform.notify();
        });
    }

    /// Starts machine `id`'s process for its current config (the caller holds its
    /// operation lock, or the machine is brand new).
    fn launch(self: &Arc<Self>, id: &str) {
        let mut state = self.lock();
        self.spawn_for(&mut state, id);
        drop(state);
        self.notify();
    }

    fn spawn_for(self: &Arc<Self>, state: &mut State, id: &str) {
        // The gate's lock is taken under the state's, never the other way round.
        let never_start = self.gate.with_faults(|f| f.never_start) || state.closed;
        let releases = state.releases.clone();
        let app_image = state.machines.iter().find(|m| m.id == id && m.process_group() != RELEASE_COMMAND_GROUP);
        if let Some(image) = app_image.map(Machine::image) {
            state.ran.entry(image).or_default().insert(id.to_string());
        }
        let Some(m) = state.machine(id) else { return };
        m.generation += 1;
        m.process = None;
        m.port = None;
        m.checks.clear();
        m.set_state("starting");
        m.record("start", "started", json!({}));
        if never_start {
            return;
        }
        let image = m.image();
        let spec = spec_for(&releases, &image);
        let release_command = m.process_group() == RELEASE_COMMAND_GROUP;
        let mut args: Vec<OsString> = self.app_command.iter().skip(1).cloned().collect();
        let flags = if release_command {
            let mut flags =
                vec!["--release-command".to_string(), "--exit-code".into(), spec.release_command_exit_code.to_string()];
            // A slow boot makes a slow release command too, for tests of its time limit.
            if spec.boot_delay_ms > 0 {
                flags.extend(["--boot-delay-ms".into(), spec.boot_delay_ms.to_string()]);
            }
            flags.extend(["--version".into(), spec.version.clone()]);
            flags
        } else {
            ["--port".to_string(), "0".into()].into_iter().chain(spec.app_flags()).collect()
        };
        args.extend(flags.into_iter().map(OsString::from));
        args.push("--exit-on-stdin-eof".into());
        let mut env: Vec<(String, String)> = m
            .config
            .get("env")
            .and_then(Value::as_object)
            .map(|e| e.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
            .unwrap_or_default();
        env.extend([
            ("FLY_APP_NAME".to_string(), self.app.clone()),
            ("FLY_MACHINE_ID".into(), m.id.clone()),
            ("FLY_REGION".into(), m.region.clone()),
            ("FLY_IMAGE_REF".into(), image.clone()),
            ("FLY_PROCESS_GROUP".into(), m.process_group()),
        ]);
        let Some(program) = self.app_command.first().cloned() else {
            m.set_state("failed");
            m.record(
                "launch",
                "failed",
                json!({"error": "FlyOptions.app_command is empty; give the test app's program"}),
            );
            return;
        };
        let launch = Launch { program, args, env };
        let generation = m.generation;
        let (on_listen, on_exit) = (self.clone(), self.clone());
        let (listen_id, exit_id) = (id.to_string(), id.to_string());
        // Spawned under the lock, so the process's own news cannot overtake this.
        match process::spawn(
            &launch,
            move |port| on_listen.listening(&listen_id, generation, port),
            move |exit| on_exit.exited(&exit_id, generation, exit),
        ) {
            Ok(proc) => {
                m.process = Some(proc);
                if release_command {
                    // A release command serves nothing: it is up once it runs.
                    m.set_state("started");
                }
            }
            Err(e) => {
                let program = launch.program.to_string_lossy();
                m.set_state("failed");
                m.record(
                    "launch",
                    "failed",
                    json!({"error": format!("cannot run the test app `{program}`: {e}; check FlyOptions.app_command")}),
                );
            }
        }
    }

    /// The process of `generation` listens on `port`: the machine has started.
    fn listening(self: &Arc<Self>, id: &str, generation: u64, port: u16) {
        {
            let mut state = self.lock();
            let Some(m) = state.machine(id).filter(|m| m.generation == generation && m.state == "starting") else {
                return;
            };
            m.port = Some(port);
            m.set_state("started");
        }
        checks::watch(self.clone(), id.to_string(), generation, port);
        self.notify();
    }

    /// The process of `generation` ended. Unless someone asked for it, the machine stops.
    fn exited(&self, id: &str, generation: u64, exit: Exit) {
        {
            let mut state = self.lock();
            let Some(m) = state.machine(id) else { return };
            let current = m.generation == generation;
            let requested = !current || matches!(m.state.as_str(), "stopping" | "destroying" | "suspending");
            // A suspended machine is paused on Fly, not exited: no exit event for it.
            let suspending = current && m.state == "suspending";
            if !suspending {
                m.record(
                    "exit",
                    "stopped",
                    json!({ "exit_event": {
                        "exit_code": exit.exit_code(),
                        "oom_killed": false,
                        "requested_stop": requested,
                        "restarting": false,
                        "signal": exit.signal.unwrap_or(-1),
                        "exited_at": ids::rfc3339(SystemTime::now()),
                    }}),
                );
            }
            if current {
                m.process = None;
                m.port = None;
                m.checks.clear();
                if !requested && m.state != "destroyed" {
                    // restart.policy is not emulated: an exit is a stop, whatever the policy.
                    settle_stopped(m);
                }
            }
        }
        self.notify();
    }

    /// Stops machine `id`'s process, waiting until it has exited.
    async fn halt(&self, id: &str, sig: i32, grace: Duration) {
        let process = self.lock().machine(id).and_then(|m| m.process.clone());
        if let Some(p) = process {
            p.terminate(sig, grace).await;
        }
    }

    /// The signal and grace period for stopping `id`: the request's, else the config's `stop_config`.
    fn stop_settings(&self, id: &str, sig: Option<i32>, timeout: Option<Duration>) -> (i32, Duration) {
        let mut state = self.lock();
        let stop_config = state.machine(id).and_then(|m| m.config.get("stop_config").cloned()).unwrap_or_default();
        let field = |key: &str| stop_config.get(key).and_then(Value::as_str).map(str::to_string);
        let sig = sig.or_else(|| field("signal").and_then(|s| signal::parse(&s))).unwrap_or(signal::TERM);
        let grace =
            timeout.or_else(|| field("timeout").and_then(|t| ids::parse_duration(&t))).unwrap_or(DEFAULT_STOP_TIMEOUT);
        (sig, grace)
    }

    pub fn store_checks(&self, id: &str, generation: u64, results: Vec<CheckResult>) -> bool {
        let stored = {
            let mut state = self.lock();
            match state.machine(id).filter(|m| m.generation == generation && m.state == "started") {
                Some(m) => {
                    m.checks = results;
                    true
                }
                None => false,
            }
        };
        if stored {
            self.notify();
        }
        stored
    }

    /// Stops everything: no more launches, every process killed and reaped.
    pub async fn close(&self) {
        let processes: Vec<_> = {
            let mut state = self.lock();
            state.closed = true;
            state.machines.iter().filter_map(|m| m.process.clone()).collect()
        };
        for p in &processes {
            p.signal(signal::KILL);
        }
        for p in processes {
            let _ = tokio::time::timeout(Duration::from_secs(5), p.exited()).await;
        }
    }

    /// Kills every process without waiting, for a sandbox dropped without `stop`.
    pub fn kill_all(&self) {
        let mut state = self.lock();
        state.closed = true;
        for p in state.machines.iter().filter_map(|m| m.process.as_ref()) {
            p.signal(signal::KILL);
        }
    }
}

/// Whether `start` (or an update without `skip_launch`) boots a machine in `state`.
fn startable(state: &str) -> bool {
    matches!(state, "stopped" | "created" | "failed" | "suspended")
}

fn refuse_if_gone(m: &Machine) -> Result<(), Failure> {
    if matches!(m.state.as_str(), "destroyed" | "destroying") {
        return Err(fail(409, format!("machine {} is {}; create a new machine instead", m.id, m.state)));
    }
    Ok(())
}

/// The machine's process is gone: stopped, or destroyed when `auto_destroy` says so.
fn settle_stopped(m: &mut Machine) {
    m.set_state("stopped");
    m.process = None;
    m.port = None;
    m.checks.clear();
    if m.auto_destroy() {
        mark_destroyed(m);
    }
}

fn mark_destroyed(m: &mut Machine) {
    m.set_state("destroyed");
    m.process = None;
    m.port = None;
    m.checks.clear();
    m.lease = None;
    m.record("destroy", "destroyed", json!({}));
}

fn new_lease(m: &Machine, owner: &str, description: &str, ttl: u64) -> Lease {
    Lease {
        nonce: ids::nonce(),
        owner: owner.to_string(),
        description: description.to_string(),
        expires_at: SystemTime::now() + Duration::from_secs(ttl),
        version: m.instance_id.clone(),
    }
}
