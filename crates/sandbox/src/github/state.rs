//! The repository's deployments and their statuses, and the rules GitHub applies to
//! them: ids, the deployment's current environment, `auto_inactive`, filtering, and
//! which deployments may be deleted. Also the rate-limit window, which GitHub keeps
//! per token and which is kept here under the same lock. (Faults and the call log are
//! the kit's `Gate`.)

use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::input::{NewDeployment, NewStatus};
use super::render::{sha_of, unix_secs};

/// Deployment and status ids come from far-apart ranges, so a client that mixes them
/// up (posting to a status id as if it were a deployment) gets a 404, not a fluke.
const FIRST_DEPLOYMENT_ID: u64 = 1_000_001;
const FIRST_STATUS_ID: u64 = 9_000_001;

/// The primary rate limit of a GitHub App installation token, per hour.
pub const RATE_LIMIT: u64 = 5000;
const RATE_WINDOW: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, serde::Serialize)]
pub struct Deployment {
    pub id: u64,
    pub sha: String,
    pub r#ref: String,
    pub task: String,
    /// The current environment: a status may move the deployment to another one.
    pub environment: String,
    pub original_environment: String,
    pub description: Option<String>,
    pub payload: Value,
    pub transient_environment: bool,
    pub production_environment: bool,
    pub auto_merge: Option<bool>,
    pub required_contexts: Option<Vec<String>>,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
    /// Oldest first.
    pub statuses: Vec<Status>,
}

impl Deployment {
    pub fn latest_state(&self) -> Option<&str> {
        self.statuses.last().map(|s| s.state.as_str())
    }
}

/// A status as the client sent it (`None` for what it left out), plus what GitHub
/// works out: its id, environment and time.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    pub id: u64,
    pub state: String,
    pub description: Option<String>,
    pub target_url: Option<String>,
    pub log_url: Option<String>,
    /// The environment the client sent, if any.
    pub environment_sent: Option<String>,
    /// The environment it applies to: the one sent, or the deployment's.
    pub environment: String,
    pub environment_url: Option<String>,
    pub auto_inactive: Option<bool>,
    pub created_at: SystemTime,
}

/// The list endpoint's filters; each one given must match exactly.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub sha: Option<String>,
    pub r#ref: Option<String>,
    pub task: Option<String>,
    pub environment: Option<String>,
}

impl Filter {
    fn matches(&self, d: &Deployment) -> bool {
        let is = |wanted: &Option<String>, actual: &str| wanted.as_deref().is_none_or(|w| w == actual);
        is(&self.sha, &d.sha)
            && is(&self.r#ref, &d.r#ref)
            && is(&self.task, &d.task)
            && is(&self.environment, &d.environment)
    }
}

/// Why a deployment cannot be deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteRefusal {
    NotFound,
    Active,
}

#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    pub used: u64,
    pub reset: SystemTime,
}

impl RateLimit {
    pub fn remaining(&self) -> u64 {
        RATE_LIMIT.saturating_sub(self.used)
    }

    pub fn reset_unix(&self) -> u64 {
        unix_secs(self.reset)
    }
}

#[derive(Debug)]
pub struct State {
    /// In creation order; deleted ones are gone.
    pub deployments: Vec<Deployment>,
    next_deployment_id: u64,
    next_status_id: u64,
    pub rate: RateLimit,
}

impl Default for State {
    fn default() -> Self {
        State {
            deployments: Vec::new(),
            next_deployment_id: FIRST_DEPLOYMENT_ID,
            next_status_id: FIRST_STATUS_ID,
            rate: RateLimit { used: 0, reset: SystemTime::now() + RATE_WINDOW },
        }
    }
}

impl State {
    /// Counts one request against the hourly limit (opening a new window when the
    /// last one has passed) and says whether it was within the limit.
    pub fn spend_rate_limit(&mut self, now: SystemTime) -> bool {
        if now >= self.rate.reset {
            self.rate = RateLimit { used: 0, reset: now + RATE_WINDOW };
        }
        if self.rate.used >= RATE_LIMIT {
            return false;
        }
        self.rate.used += 1;
        true
    }

    pub fn create(&mut self, new: NewDeployment, now: SystemTime) -> &Deployment {
        let id = self.next_deployment_id;
        self.next_deployment_id += 1;
        self.deployments.push(Deployment {
            id,
            sha: sha_of(&new.r#ref),
            r#ref: new.r#ref,
            task: new.task,
            original_environment: new.environment.clone(),
            environment: new.environment,
            description: new.description,
            payload: new.payload,
            transient_environment: new.transient_environment,
            production_environment: new.production_environment,
            auto_merge: new.auto_merge,
            required_contexts: new.required_contexts,
            created_at: now,
            updated_at: now,
            statuses: Vec::new(),
        });
        self.deployments.last().expect("just pushed")
    }

    pub fn deployment(&self, id: u64) -> Option<&Deployment> {
        self.deployments.iter().find(|d| d.id == id)
    }

    /// Newest first, as GitHub lists them.
    pub fn list(&self, filter: &Filter) -> Vec<&Deployment> {
        self.deployments.iter().rev().filter(|d| filter.matches(d)).collect()
    }

    /// Appends a status to deployment `id`; None when there is no such deployment.
    pub fn add_status(&mut self, id: u64, new: NewStatus, now: SystemTime) -> Option<Status> {
        let index = self.deployments.iter().position(|d| d.id == id)?;
        // GitHub: a status without an environment keeps the one of the previous
        // status, or else the deployment's; one with an environment moves the deployment.
        let environment = {
            let d = &self.deployments[index];
            new.environment.clone().unwrap_or_else(|| d.environment.clone())
        };
        let status = Status {
            id: self.next_status_id(),
            state: new.state,
            description: new.description,
            target_url: new.target_url,
            log_url: new.log_url,
            environment_sent: new.environment,
            environment: environment.clone(),
            environment_url: new.environment_url,
            auto_inactive: new.auto_inactive,
            created_at: now,
        };
        let d = &mut self.deployments[index];
        d.environment = environment.clone();
        d.updated_at = now;
        d.statuses.push(status.clone());
        if status.state == "success" && status.auto_inactive != Some(false) {
            self.retire_predecessors(id, &environment, now);
        }
        Some(status)
    }

    /// What `auto_inactive` does: earlier deployments to the same environment that are
    /// neither transient nor production and whose latest status is success get an
    /// `inactive` status, so only the newest one shows as active.
    fn retire_predecessors(&mut self, id: u64, environment: &str, now: SystemTime) {
        let retired: Vec<usize> = (0..self.deployments.len())
            .filter(|&i| {
                let d = &self.deployments[i];
                d.id < id
                    && d.environment == environment
                    && !d.transient_environment
                    && !d.production_environment
                    && d.latest_state() == Some("success")
            })
            .collect();
        for i in retired {
            let status_id = self.next_status_id();
            let d = &mut self.deployments[i];
            d.statuses.push(Status {
                id: status_id,
                state: "inactive".into(),
                description: None,
                target_url: None,
                log_url: None,
                environment_sent: None,
                environment: d.environment.clone(),
                environment_url: None,
                auto_inactive: None,
                created_at: now,
            });
            d.updated_at = now;
        }
    }

    /// GitHub deletes a deployment only when it is the repository's only one or it
    /// is inactive, so that an active deployment always remains.
    pub fn delete(&mut self, id: u64) -> Result<(), DeleteRefusal> {
        let index = self.deployments.iter().position(|d| d.id == id).ok_or(DeleteRefusal::NotFound)?;
        let only = self.deployments.len() == 1;
        if !only && self.deployments[index].latest_state() != Some("inactive") {
            return Err(DeleteRefusal::Active);
        }
        self.deployments.remove(index);
        Ok(())
    }

    fn next_status_id(&mut self) -> u64 {
        let id = self.next_status_id;
        self.next_status_id += 1;
        id
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn deploy(state: &mut State, environment: &str, production: bool) -> u64 {
        let body = json!({ "ref": "main", "environment": environment, "production_environment": production });
        state.create(NewDeployment::parse(&body).expect("valid"), SystemTime::now()).id
    }

    fn set(state: &mut State, id: u64, body: serde_json::Value) {
        state.add_status(id, NewStatus::parse(&body).expect("valid"), SystemTime::now()).expect("exists");
    }

    fn states(state: &State, id: u64) -> Vec<String> {
        state.deployment(id).expect("exists").statuses.iter().map(|s| s.state.clone()).collect()
    }

    #[test]
    fn success_retires_earlier_non_production_successes() {
        let mut state = State::default();
        let first = deploy(&mut state, "staging", false);
        set(&mut state, first, json!({ "state": "success" }));
        let failed = deploy(&mut state, "staging", false);
        set(&mut state, failed, json!({ "state": "failure" }));
        let elsewhere = deploy(&mut state, "qa", false);
        set(&mut state, elsewhere, json!({ "state": "success" }));
        let last = deploy(&mut state, "staging", false);
        set(&mut state, last, json!({ "state": "success" }));
        assert_eq!(states(&state, first), ["success", "inactive"]);
        assert_eq!(states(&state, failed), ["failure"]);
        assert_eq!(states(&state, elsewhere), ["success"]);
        assert_eq!(states(&state, last), ["success"]);
    }

    #[test]
    fn production_and_opted_out_successes_stay() {
        let mut state = State::default();
        let prod = deploy(&mut state, "production", true);
        set(&mut state, prod, json!({ "state": "success" }));
        let next = deploy(&mut state, "production", true);
        set(&mut state, next, json!({ "state": "success" }));
        assert_eq!(states(&state, prod), ["success"]);
        let staging = deploy(&mut state, "staging", false);
        set(&mut state, staging, json!({ "state": "success" }));
        let kept = deploy(&mut state, "staging", false);
        set(&mut state, kept, json!({ "state": "success", "auto_inactive": false }));
        assert_eq!(states(&state, staging), ["success"]);
    }

    #[test]
    fn a_status_can_move_the_deployment() {
        let mut state = State::default();
        let id = deploy(&mut state, "staging", false);
        set(&mut state, id, json!({ "state": "in_progress", "environment": "qa" }));
        set(&mut state, id, json!({ "state": "success" }));
        let d = state.deployment(id).expect("exists");
        assert_eq!((d.environment.as_str(), d.original_environment.as_str()), ("qa", "staging"));
        assert_eq!(d.statuses[1].environment, "qa");
    }

    #[test]
    fn only_inactive_or_lone_deployments_are_deleted() {
        let mut state = State::default();
        let first = deploy(&mut state, "staging", false);
        let second = deploy(&mut state, "staging", false);
        assert_eq!(state.delete(first), Err(DeleteRefusal::Active));
        set(&mut state, first, json!({ "state": "inactive" }));
        assert_eq!(state.delete(first), Ok(()));
        assert_eq!(state.delete(second), Ok(()));
        assert_eq!(state.delete(second), Err(DeleteRefusal::NotFound));
    }

    #[test]
    fn the_rate_limit_runs_out_and_resets() {
        let mut state = State::default();
        let now = SystemTime::now();
        state.rate.used = RATE_LIMIT - 1;
        assert!(state.spend_rate_limit(now));
        assert!(!state.spend_rate_limit(now));
        assert_eq!(state.rate.remaining(), 0);
        assert!(state.spend_rate_limit(now + RATE_WINDOW * 2));
        assert_eq!(state.rate.used, 1);
    }
}
