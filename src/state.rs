//! What the main step leaves for the post step: the recorded live release and how far
//! the run got. Written through `GITHUB_STATE` (or `--state-file` off a runner) the
//! moment the live release is recorded, and again at every stage change, so a
//! cancelled run can be finished by the post step.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::providers::Snapshot;
use crate::runner::{files, Runner};

pub const STAGE: &str = "safe_deploy_stage";
pub const SNAPSHOT: &str = "safe_deploy_snapshot";
/// Where the snapshot was written whole: a state value is an environment variable in
/// the post step, and a large app's record would not fit in one.
pub const SNAPSHOT_FILE: &str = "safe_deploy_snapshot_file";
/// Snapshots up to this size are also kept in the state itself.
const INLINE_LIMIT: usize = 16 * 1024;
/// The most read back of a snapshot file (a fleet's machine configs are far smaller),
/// and of a state file.
const SNAPSHOT_LIMIT: u64 = 64 * 1024 * 1024;
pub const STATE_LIMIT: u64 = 1024 * 1024;

/// A file's bytes, when it is a regular file (not a link, a pipe or a device) of at
/// most `limit` bytes: a path read back from a state file could name anything.
pub fn read_ours(path: &Path, limit: u64) -> Option<Vec<u8>> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    (meta.is_file() && meta.len() <= limit).then(|| std::fs::read(path).ok()).flatten()
}
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
    /// Where main wrote the snapshot, for the post step to remove once it is done.
    pub snapshot_file: Option<PathBuf>,
}

impl Saved {
    /// From `STATE_*` variables, as the runner passes them to the post step.
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Saved {
        Saved::from_values(|name| lookup(&format!("STATE_{name}")))
    }

    /// From a state file written off a runner: a regular file of at most 1 MiB that
    /// says a stage, as this program writes it.
    pub fn from_file(path: &Path) -> Result<Saved, String> {
        let not_ours = |why: &str| format!("{} is not a state file safe-deploy wrote ({why})", path.display());
        let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if !meta.is_file() || meta.len() > STATE_LIMIT {
            return Err(not_ours("not a regular file of at most 1 MiB"));
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let values = files::parse(&text).map_err(|e| not_ours(&e))?;
        if !values.contains_key(STAGE) {
            return Err(not_ours("it names no stage"));
        }
        Ok(Saved::from_values(|name| values.get(name).cloned()))
    }

    fn from_values(get: impl Fn(&str) -> Option<String>) -> Saved {
        let from_file = get(SNAPSHOT_FILE)
            .and_then(|p| read_ours(Path::new(&p), SNAPSHOT_LIMIT))
            .and_then(|b| serde_json::from_slice(&b).ok());
        Saved {
            stage: get(STAGE).as_deref().and_then(Stage::parse),
            snapshot: from_file.or_else(|| get(SNAPSHOT).and_then(|s| serde_json::from_str(&s).ok())),
            target: get(TARGET).filter(|t| !t.is_empty()),
            open_deployment: get(DEPLOYMENT)
                .and_then(|d| d.parse().ok())
                .filter(|_| get(DEPLOYMENT_DONE).as_deref() != Some("true")),
            snapshot_file: get(SNAPSHOT_FILE).filter(|p| !p.is_empty()).map(PathBuf::from),
        }
    }
}

/// Records state through the runner; a failure to write is a warning, not a stop,
/// since the deploy itself can still finish and report.
pub fn save(runner: &Runner, stage: Stage, snapshot: Option<&Snapshot>, target: Option<&str>) {
    let mut result = Ok(());
    if let Some(s) = snapshot {
        let json = serde_json::to_string(s).unwrap_or_default();
        // Written whole and exact to a file the post step can read; a copy in the state
        // too while it is small.
        match write_snapshot(runner, &json) {
            Ok(path) => result = result.and(runner.save_state(SNAPSHOT_FILE, &path.display().to_string())),
            Err(e) => runner.warning("state not saved", &format!("could not write the snapshot file: {e}")),
        }
        if json.len() <= INLINE_LIMIT {
            result = result.and(runner.save_state(SNAPSHOT, &json));
        }
    }
    if let Some(t) = target {
        result = result.and(runner.save_state(TARGET, t));
    }
    result = result.and(runner.save_state(STAGE, stage.as_str()));
    if let Err(e) = result {
        runner.warning("state not saved", &format!("could not write the state for the post step: {e}"));
    }
}

/// Writes the snapshot to `RUNNER_TEMP` (else the temp directory), made new and
/// readable by this user only: it holds the app's machine configs.
fn write_snapshot(runner: &Runner, json: &str) -> std::io::Result<PathBuf> {
    let dir = runner.paths.temp.clone().unwrap_or_else(std::env::temp_dir);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let path = dir.join(format!("safe-deploy-snapshot-{}-{nanos}.json", std::process::id()));
    std::io::Write::write_all(&mut crate::secret::new_private_file(&path)?, json.as_bytes())?;
    Ok(path)
}

/// What is left of a run's state once it ended: `Kept(path)` when the post step (or
/// `safe-deploy post --state-file path`) still has a release to put back; else the
/// snapshot file is removed (it holds the app's configs) and so, off a runner, is the
/// state file, whose only reader was that post step.
#[derive(Debug, PartialEq, Eq)]
pub enum Left {
    Kept(PathBuf),
    Removed,
    Nothing,
}

pub fn tidy(runner: &Runner) -> Left {
    let Some(state) = runner.paths.state.as_deref() else { return Left::Nothing };
    let Some(text) = read_ours(state, STATE_LIMIT).and_then(|b| String::from_utf8(b).ok()) else {
        return Left::Nothing;
    };
    let values = files::parse(&text).unwrap_or_default();
    let saved = Saved::from_values(|name| values.get(name).cloned());
    // A release to put back, or a GitHub deployment to close: the post step's work.
    if saved.stage.is_some_and(Stage::needs_rollback) || saved.open_deployment.is_some() {
        return Left::Kept(state.to_path_buf());
    }
    if let Some(snapshot) = values.get(SNAPSHOT_FILE) {
        remove_snapshot(Path::new(snapshot));
    }
    // Only a state file this program made (never one a person named that was there).
    if runner.paths.state_ours && !runner.on_runner {
        let _ = std::fs::remove_file(state);
    }
    Left::Removed
}

/// Removes a snapshot file, but only one this program names so, and a regular file: a
/// state file could name anything.
pub fn remove_snapshot(snapshot: &Path) {
    let named = snapshot
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("safe-deploy-snapshot-") && n.ends_with(".json"));
    if named && std::fs::symlink_metadata(snapshot).is_ok_and(|m| m.is_file()) {
        let _ = std::fs::remove_file(snapshot);
    }
}

/// Marks that a post step finished with `snapshot` (restored, or found nothing to do)
/// before removing it: a post step run again with the same state then knows there is
/// nothing left, rather than a record that was never saved. The mark holds nothing.
pub fn mark_done(snapshot: &Path) {
    let mut done = snapshot.as_os_str().to_owned();
    done.push(".done");
    let _ = crate::secret::new_private_file(Path::new(&done));
}

/// Whether a post step finished with `snapshot` already.
pub fn done_with(snapshot: &Path) -> bool {
    let mut done = snapshot.as_os_str().to_owned();
    done.push(".done");
    std::fs::symlink_metadata(Path::new(&done)).is_ok_and(|m| m.is_file())
}

/// Records one more value for the post step; a failure is a warning.
pub fn save_value(runner: &Runner, name: &str, value: &str) {
    if let Err(e) = runner.save_state(name, value) {
        runner.warning("state not saved", &format!("could not write {name} for the post step: {e}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::{release_of, Snapshot};
    use crate::runner::Paths;
    use crate::secret::Redactor;

    #[test]
    fn a_snapshot_too_large_for_a_state_variable_reaches_the_post_step_exact() {
        let dir = tempfile::tempdir().unwrap();
        let redactor = Redactor::default();
        // A secret inside a machine's config must come back as it was, not as `***`.
        redactor.add("s3cret-in-env");
        let paths =
            Paths { state: Some(dir.path().join("state")), temp: Some(dir.path().to_path_buf()), ..Default::default() };
        let runner = Runner::new(false, paths, redactor);
        let release = release_of(["registry.fly.io/web:v1"]);
        let big = "x".repeat(200 * 1024);
        let snapshot =
            Snapshot { release, record: serde_json::json!({"env": "s3cret-in-env", "big": big}), cause: None };
        save(&runner, Stage::Recorded, Some(&snapshot), None);

        let text = std::fs::read_to_string(dir.path().join("state")).unwrap();
        assert!(text.len() < 4096, "the state holds the file's path, not 200 KiB");
        let saved = Saved::from_file(&dir.path().join("state")).unwrap();
        assert_eq!(saved.snapshot.as_ref(), Some(&snapshot));
        assert_eq!(saved.stage, Some(Stage::Recorded));
    }
}
