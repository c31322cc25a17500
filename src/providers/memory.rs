//! The provider double. Its "API" is the sandbox's state (a file, so the action, its
//! post step and a test all see one state; or a shared value for in-process tests);
//! its instances are served by `sandbox::double`. It rolls out one instance per batch,
//! so the engine's batch gates are tested too, and fault
//! switches in the state make it fail at any step.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sandbox::double::{State, Store, INSTANCE_HEADER};
use serde::{Deserialize, Serialize};

use super::registration::{no_defaults, Account, ProviderSettings, Registration};
use super::{
    release_of, Applied, Capabilities, Context, Finding, Instance, Plan, PlannedBatch, Provider, ProviderError,
    ReleaseRef, Rollout, Route, Severity, Snapshot, Target, Waited,
};
use crate::http::HttpClient;
use crate::inputs::Problems;
use crate::inputs::RawInputs;

pub const REGISTRATION: Registration = Registration {
    name: "memory",
    title: "the provider double",
    token_env: &[],
    needs_token: false,
    env: &[],
    file_api: true,
    image_optional: false,
    defaults: no_defaults,
    configure,
    inputs: &[],
    #[cfg(feature = "sandbox")]
    demo: None,
    #[cfg(feature = "sandbox")]
    sandbox: None,
};

#[derive(Debug)]
struct Settings {
    state: PathBuf,
}

impl ProviderSettings for Settings {
    fn build(&self, _: &Account, _: &HttpClient) -> anyhow::Result<Box<dyn Provider>> {
        Ok(Box::new(MemoryProvider::new(Store::File(self.state.clone()))))
    }
}

fn configure(raw: &RawInputs, _: &Path, p: &mut Problems) -> Option<Arc<dyn ProviderSettings>> {
    let fix = "The memory provider keeps its state in a JSON file, e.g. {\"instances\":[\"web:v1\",\"web:v1\"],\"history\":[\"web:v1\"]} (the release each instance runs, and the releases that were live, oldest first): give its path as file:///path/to/state.json.";
    let Some(text) = raw.get("api-url") else {
        p.add("api-url", "is required with provider memory", fix);
        return None;
    };
    match url::Url::parse(text).ok().filter(|u| u.scheme() == "file").and_then(|u| u.to_file_path().ok()) {
        Some(state) => Some(Arc::new(Settings { state })),
        None => {
            p.add("api-url", format!("'{text}' is not a file:// URL"), fix);
            None
        }
    }
}

/// What the double records of a release: the release each instance ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Record {
    instances: Vec<String>,
}

pub struct MemoryProvider {
    store: Store,
}

impl MemoryProvider {
    pub fn new(store: Store) -> Self {
        MemoryProvider { store }
    }

    /// Logs the call and applies `change` to the state.
    fn call<T>(&self, name: String, change: impl FnOnce(&mut State) -> T) -> Result<T, ProviderError> {
        call(&self.store, name, change)
    }

    fn record(snapshot: &Snapshot) -> Result<Record, ProviderError> {
        serde_json::from_value(snapshot.record.clone())
            .map_err(|e| ProviderError::Failed(format!("bug: the double's recorded release does not parse: {e}")))
    }
}

fn call<T>(store: &Store, name: String, change: impl FnOnce(&mut State) -> T) -> Result<T, ProviderError> {
    store
        .update(|s| {
            s.calls.push(name);
            change(s)
        })
        .map_err(|e| {
            ProviderError::Failed(format!(
                "cannot use the double's state ({e}); api-url must name a JSON file such as {{\"instances\":[\"web:v1\"],\"history\":[\"web:v1\"]}}"
            ))
        })
}

fn release_name(target: &Target) -> Result<String, ProviderError> {
    target.source.image_or_release("memory")
}

/// One instance at a time: the shape of a rolling deploy.
fn batches(count: usize) -> Vec<Vec<usize>> {
    super::batches::cut(count, super::batches::BatchSize::Count(1))
}

#[async_trait]
impl Provider for MemoryProvider {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { history: true, single_instances: true, images: true, directories: false }
    }

    async fn snapshot(&self, _ctx: &Context) -> Result<Snapshot, ProviderError> {
        let (instances, fail) = self.call("snapshot".into(), |s| (s.instances.clone(), s.faults.fail_snapshot))?;
        if fail {
            return Err(ProviderError::Failed("the double was told to fail reading the live release".into()));
        }
        let release = release_of(instances.iter().map(String::as_str));
        Ok(Snapshot { release, record: serde_json::json!(Record { instances }), cause: None })
    }

    async fn preflight(&self, live: &Snapshot, target: &Target, _: &Context) -> Result<Vec<Finding>, ProviderError> {
        self.call("preflight".into(), |_| ())?;
        let record = Self::record(live)?;
        let mut findings = vec![Finding {
            severity: Severity::Info,
            message: format!(
                "memory is the provider double: {} whose state is a local file",
                crate::markdown::counted(record.instances.len(), "simulated instance")
            ),
        }];
        if record.instances.is_empty() {
            findings.push(Finding {
                severity: Severity::Blocker,
                message: "the double has no instances to deploy to".into(),
            });
        }
        if live.release.id == release_name(target)? {
            findings.push(Finding {
                severity: Severity::Info,
                message: format!("{} is already live; it will be rolled out again", target.label()),
            });
        }
        Ok(findings)
    }

    fn plan(&self, live: &Snapshot, target: &Target) -> Plan {
        let count = Self::record(live).map(|r| r.instances.len()).unwrap_or(0);
        Plan {
            prepare: vec!["check that the double can be changed".into()],
            batches: batches(count)
                .into_iter()
                .map(|b| PlannedBatch {
                    label: format!("instances {b:?}"),
                    steps: vec![format!("put {} on instances {b:?}, wait until they report it up", target.label())],
                })
                .collect(),
        }
    }

    async fn prepare(&self, live: &Snapshot, target: &Target, _: &Context) -> Result<Box<dyn Rollout>, ProviderError> {
        let release = release_name(target)?;
        let fail = self.call(format!("prepare {release}"), |s| s.faults.fail_prepare)?;
        if fail {
            return Err(ProviderError::Failed("the double was told to fail preparing the roll-out".into()));
        }
        let record = Self::record(live)?;
        if record.instances.is_empty() {
            return Err(ProviderError::Failed("the double has no instances to deploy to".into()));
        }
        Ok(Box::new(MemoryRollout {
            store: self.store.clone(),
            release,
            previous: record.instances.clone(),
            batches: batches(record.instances.len()),
            changed: false,
        }))
    }

    async fn restore(&self, snapshot: &Snapshot, _: &Context) -> Result<ReleaseRef, ProviderError> {
        let record = Self::record(snapshot)?;
        let label = snapshot.release.label.clone();
        let restored = self.call(format!("roll_back {label}"), |s| {
            if s.faults.roll_back_errors > 0 {
                s.faults.roll_back_errors -= 1;
                return Err(ProviderError::Unavailable("the double answered 503 to a restore (flaky)".into()));
            }
            // A restore waits for the instances too: ones that never come up fail it.
            if s.faults.fail_roll_back || s.faults.fail_wait {
                return Ok(None);
            }
            for (i, r) in record.instances.iter().enumerate() {
                s.set_instance(i, r);
            }
            s.instances.truncate(record.instances.len());
            let live = s.live();
            s.remember(&live);
            Ok(Some(live))
        })??;
        match restored {
            Some(live) => Ok(release_of([live.as_str()])),
            None => Err(ProviderError::Failed(format!("the double was told to fail restoring {label}"))),
        }
    }

    async fn in_effect(&self, snapshot: &Snapshot, _: &Context) -> Result<bool, ProviderError> {
        let record = Self::record(snapshot)?;
        let now = self.call("in_effect".into(), |s| s.instances.clone())?;
        Ok(now == record.instances)
    }

    async fn history(&self, _: &Context) -> Result<Vec<ReleaseRef>, ProviderError> {
        let (history, fail) = self.call("history".into(), |s| (s.history.clone(), s.faults.fail_history))?;
        if fail {
            return Err(ProviderError::Failed("the double was told to fail listing releases".into()));
        }
        Ok(history.iter().map(|r| ReleaseRef::named(r)).collect())
    }
}

struct MemoryRollout {
    store: Store,
    release: String,
    /// What each instance ran before: a refused or platform-rolled-back batch goes back to it.
    previous: Vec<String>,
    batches: Vec<Vec<usize>>,
    changed: bool,
}

#[async_trait]
impl Rollout for MemoryRollout {
    fn batches(&self) -> usize {
        self.batches.len()
    }

    fn describe(&self, batch: usize) -> String {
        format!("instances {:?} of {}", self.batches[batch], self.previous.len())
    }

    async fn apply(&mut self, batch: usize, _gated: bool, ctx: &Context) -> Result<Applied, ProviderError> {
        ctx.check_cancelled()?;
        let ids = self.batches[batch].clone();
        let n = self.batches.len();
        let release = self.release.clone();
        let faults = call(&self.store, format!("roll_out {release} batch {}/{n}", batch + 1), |s| {
            let f = s.faults.clone();
            if f.fail_before_change {
                return f;
            }
            let changing = if f.fail_roll_out { &ids[..1] } else { &ids[..] };
            for &i in changing {
                s.set_instance(i, &release);
            }
            if batch + 1 == n && !f.fail_roll_out {
                s.remember(&release);
            }
            f
        })?;
        if faults.fail_before_change {
            return Err(ProviderError::Failed("the double was told to fail before changing anything".into()));
        }
        self.changed = true;
        for &i in &ids {
            ctx.progress.instance(&i.to_string(), "replaced", Some(&release));
        }
        if faults.roll_out_delay_ms > 0 {
            let delay = Duration::from_millis(faults.roll_out_delay_ms);
            if delay > ctx.remaining() {
                return Err(ProviderError::timeout("the roll-out", ctx.remaining(), ctx.budget));
            }
            if !ctx.shutdown.sleep(delay).await {
                return Err(ProviderError::Cancelled(ctx.shutdown.cause().unwrap_or("shutdown")));
            }
        }
        if faults.fail_roll_out {
            return Err(ProviderError::Failed(format!("the double was told to fail rolling out {release}")));
        }
        Ok(Applied {
            release: ReleaseRef::named(&release),
            instances: ids
                .iter()
                .map(|i| Instance {
                    id: i.to_string(),
                    route: Some(Route::Header(INSTANCE_HEADER.into(), i.to_string())),
                })
                .collect(),
        })
    }

    async fn wait(&mut self, batch: usize, _: &Context) -> Result<Waited, ProviderError> {
        let ids = self.batches[batch].clone();
        let (release, previous) = (self.release.clone(), self.previous.clone());
        call(&self.store, format!("wait_ready {release} batch {}/{}", batch + 1, self.batches.len()), |s| {
            let f = s.faults.clone();
            if f.wait_errors > 0 {
                s.faults.wait_errors -= 1;
                return Err(ProviderError::Failed(format!("the double did not answer whether {release} is up")));
            }
            if f.fail_wait {
                return Err(ProviderError::Failed(format!("the double's instances never came up on {release}")));
            }
            if f.refuse || f.platform_rollback {
                for (i, r) in previous.iter().enumerate() {
                    s.set_instance(i, r);
                }
                return Ok(if f.refuse {
                    Waited::Refused {
                        why: format!("the double kept {} (told to refuse {release})", s.live()),
                        left: None,
                    }
                } else {
                    Waited::RolledBack(format!("the double rolled {release} back by itself"))
                });
            }
            match ids.iter().find(|&&i| s.instances.get(i) != Some(&release)) {
                Some(i) => Err(ProviderError::Failed(format!(
                    "instance {i} runs {} instead of {release}",
                    s.instances.get(*i).map_or("nothing", String::as_str)
                ))),
                None => Ok(Waited::Ready),
            }
        })?
    }

    fn changed(&self) -> bool {
        self.changed
    }
}
