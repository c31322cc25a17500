//! The provider double. Its "API" is the sandbox's state file, so the action, its post
//! step and a test all see one state; its app is served by `sandbox::double`. Fault
//! switches in the file make it fail at any step.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sandbox::double::State;

use super::{Context, Finding, Provider, ProviderError, Release, Severity, Snapshot, Target};
use crate::config::Strategy;

pub struct MemoryProvider {
    path: PathBuf,
}

impl MemoryProvider {
    pub fn new(path: PathBuf) -> Self {
        MemoryProvider { path }
    }

    /// Logs the call and applies `change`, under the state file.
    fn call<T>(&self, name: String, change: impl FnOnce(&mut State) -> T) -> Result<T, ProviderError> {
        State::update(&self.path, |s| {
            s.calls.push(name);
            change(s)
        })
        .map_err(|e| ProviderError::Failed(format!("cannot use the double's state file {}: {e}", self.path.display())))
    }
}

#[async_trait]
impl Provider for MemoryProvider {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn preflight(&self, target: &Target, ctx: &Context) -> Result<Vec<Finding>, ProviderError> {
        let live = self.call("preflight".into(), |s| s.live.clone())?;
        let mut findings = vec![Finding {
            severity: Severity::Info,
            message: "memory is the provider double: one simulated instance whose state is a local file".into(),
        }];
        if live == target.release {
            findings.push(Finding {
                severity: Severity::Info,
                message: format!("{} is already live; it will be rolled out again", target.release),
            });
        }
        if ctx.strategy != Strategy::Rolling && ctx.strategy != Strategy::Immediate {
            findings.push(Finding {
                severity: Severity::Warning,
                message: format!(
                    "strategy {} needs several instances; the double replaces its one instance",
                    ctx.strategy.as_str()
                ),
            });
        }
        Ok(findings)
    }

    async fn snapshot(&self, _ctx: &Context) -> Result<Snapshot, ProviderError> {
        let (live, fail) = self.call("snapshot".into(), |s| (s.live.clone(), s.faults.fail_snapshot))?;
        if fail {
            return Err(ProviderError::Failed("the double was told to fail reading the live release".into()));
        }
        Ok(Snapshot { release: live.clone(), data: serde_json::json!({ "live": live }) })
    }

    fn plan(&self, live: &Snapshot, target: &Target, ctx: &Context) -> Vec<String> {
        vec![
            format!(
                "replace the one instance running {} with {} ({})",
                live.release,
                target.release,
                ctx.strategy.as_str()
            ),
            "wait until the double reports it up".into(),
        ]
    }

    async fn roll_out(&self, _live: &Snapshot, target: &Target, ctx: &Context) -> Result<(), ProviderError> {
        let faults = self.call(format!("roll_out {}", target.release), |s| {
            s.make_live(&target.release);
            s.faults.clone()
        })?;
        if faults.roll_out_delay_ms > 0 {
            let delay = Duration::from_millis(faults.roll_out_delay_ms);
            if Instant::now().checked_add(delay).is_none_or(|end| end > ctx.deadline) {
                return Err(ProviderError::Timeout {
                    what: "the roll-out".into(),
                    limit: crate::config::human(ctx.deadline.saturating_duration_since(Instant::now())),
                    input: "deploy-timeout",
                });
            }
            if !ctx.shutdown.sleep(delay).await {
                return Err(ProviderError::Cancelled(ctx.shutdown.cause().unwrap_or("shutdown")));
            }
        }
        if faults.fail_roll_out {
            return Err(ProviderError::Failed(format!("the double was told to fail rolling out {}", target.release)));
        }
        Ok(())
    }

    async fn wait_ready(&self, release: &str, _ctx: &Context) -> Result<(), ProviderError> {
        let fail = self.call(format!("wait_ready {release}"), |s| s.faults.fail_wait)?;
        if fail {
            return Err(ProviderError::Failed(format!("the double's instance never came up on {release}")));
        }
        Ok(())
    }

    async fn roll_back(&self, snapshot: &Snapshot, _ctx: &Context) -> Result<(), ProviderError> {
        let fail = self.call(format!("roll_back {}", snapshot.release), |s| {
            if s.faults.fail_roll_back {
                return true;
            }
            s.make_live(&snapshot.release);
            false
        })?;
        if fail {
            return Err(ProviderError::Failed(format!("the double was told to fail restoring {}", snapshot.release)));
        }
        Ok(())
    }

    async fn history(&self, _ctx: &Context) -> Result<Vec<Release>, ProviderError> {
        let (history, fail) = self.call("history".into(), |s| (s.history.clone(), s.faults.fail_history))?;
        if fail {
            return Err(ProviderError::Failed("the double was told to fail listing releases".into()));
        }
        Ok(history.into_iter().map(|release| Release { release }).collect())
    }
}
