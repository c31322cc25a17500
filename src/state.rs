//! What the main step leaves for the post step: the recorded live release and how far
//! the run got. Written through `GITHUB_STATE` (or `--state-file` off a runner) the
//! moment the live release is recorded, and again at every stage change, so a
//! cancelled run can be finished by the post step.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::providers::Snapshot;
use crate::runner::{files, Runner};

pub const STAGE: &str = "safe_deploy_stage";
pub const SNAPSHOT: &str = "safe_deploy_snapshot";
pub const TARGET: &str = "safe_deploy_target";
/// The GitHub deployment this run created, and whether main gave it its final status.
pub const DEPLOYMENT: &str = "safe_deploy_deployment";
pub const DEPLOYMENT_DONE: &str = "safe_deploy_deployment_done";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// The live release is recorded; nothing is changed yet.
    Recorded,
    /// The roll-out has begun: the provider may be half-way.
    Changing,
    /// Putting the recorded release back has begun.
    RollingBack,
    /// Main finished on its own; the post step has nothing to do.
    Finished,
}

impl Stage {
    fn as_str(self) -> &'static str {
        match self {
            Stage::Recorded => "recorded",
            Stage::Changing => "changing",
            Stage::RollingBack => "rolling-back",
            Stage::Finished => "finished",
        }
    }

    fn parse(text: &str) -> Option<Stage> {
        [Stage::Recorded, Stage::Changing, Stage::RollingBack, Stage::Finished].into_iter().find(|s| s.as_str() == text)
    }

    /// Whether the post step must put the recorded release back.
    pub fn needs_rollback(self) -> bool {
        matches!(self, Stage::Changing | Stage::RollingBack)
    }
}

/// The state as the post step reads it back.
#[derive(Debug, Clone, PartialEq)]
pub struct Saved {
    pub stage: Option<Stage>,
    pub snapshot: Option<Snapshot>,
    pub target: Option<String>,
    /// A GitHub deployment main created but did not finish.
    pub open_deployment: Option<u64>,
}

impl Saved {
    /// From `STATE_*` variables, as the runner passes them to the post step.
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Saved {
        Saved::from_values(|name| lookup(&format!("STATE_{name}")))
    }

    /// From a state file written off a runner.
    pub fn from_file(path: &Path) -> Result<Saved, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let values = files::parse(&text)?;
        Ok(Saved::from_values(|name| values.get(name).cloned()))
    }

    fn from_values(get: impl Fn(&str) -> Option<String>) -> Saved {
        Saved {
            stage: get(STAGE).as_deref().and_then(Stage::parse),
            snapshot: get(SNAPSHOT).and_then(|s| serde_json::from_str(&s).ok()),
            target: get(TARGET).filter(|t| !t.is_empty()),
            open_deployment: get(DEPLOYMENT)
                .and_then(|d| d.parse().ok())
                .filter(|_| get(DEPLOYMENT_DONE).as_deref() != Some("true")),
        }
    }
}

/// Records state through the runner; a failure to write is a warning, not a stop,
/// since the deploy itself can still finish and report.
pub fn save(runner: &Runner, stage: Stage, snapshot: Option<&Snapshot>, target: Option<&str>) {
    let mut result = Ok(());
    if let Some(s) = snapshot {
        let json = serde_json::to_string(s).unwrap_or_default();
        result = result.and(runner.save_state(SNAPSHOT, &json));
    }
    if let Some(t) = target {
        result = result.and(runner.save_state(TARGET, t));
    }
    result = result.and(runner.save_state(STAGE, stage.as_str()));
    if let Err(e) = result {
        runner.warning("state not saved", &format!("could not write the state for the post step: {e}"));
    }
}

/// Records one more value for the post step; a failure is a warning.
pub fn save_value(runner: &Runner, name: &str, value: &str) {
    if let Err(e) = runner.save_state(name, value) {
        runner.warning("state not saved", &format!("could not write {name} for the post step: {e}"));
    }
}
