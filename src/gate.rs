//! A gate: one way to prove that a release serves well, run by the engine as one
//! phase with one report. Kinds today: the health gate (`health`), the built-in
//! analysis against the live release's baseline, and the external analyses, a
//! Prometheus query and a web check (`analysis`).

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::health::{Attempt, Failure, Probe};
use crate::shutdown::Shutdown;

#[async_trait]
pub trait Gate: Send + Sync {
    /// The phase's name in the log, the timeline and the live status.
    fn name(&self) -> String;
    /// How long it may take at most, from its start (the heartbeat and the live status
    /// count down to it).
    fn limit(&self) -> Duration;
    /// Runs the gate, telling `attempted` in words what each step of it got, for a live
    /// status.
    async fn check(&self, probe: &dyn Probe, shutdown: &Shutdown, attempted: &(dyn Fn(String) + Sync)) -> GateReport;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GateResult {
    Passed,
    Failed,
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GateKind {
    #[default]
    Health,
    /// The built-in comparison with the live release's baseline.
    Analysis,
    /// A Prometheus query or a web check, against a threshold.
    External,
}

/// One run of a gate, for the report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GateReport {
    #[serde(default)]
    pub kind: GateKind,
    /// Which release was being proved: "new release" or "rolled-back release".
    pub label: String,
    /// What was asked: the health URL, the sampled URLs, the query.
    pub url: String,
    pub result: GateResult,
    pub reason: Option<String>,
    pub duration: Duration,
    pub total_attempts: usize,
    /// The first and latest attempts; `total_attempts` says how many there were.
    pub attempts: Vec<Attempt>,
    /// What the analysis measured and decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<crate::analysis::AnalysisReport>,
}

impl GateReport {
    pub fn new(kind: GateKind, label: &str, url: String) -> GateReport {
        GateReport {
            kind,
            label: label.to_string(),
            url,
            result: GateResult::Failed,
            reason: None,
            duration: Duration::ZERO,
            total_attempts: 0,
            attempts: Vec::new(),
            analysis: None,
        }
    }

    pub fn passed(&self) -> bool {
        self.result == GateResult::Passed
    }

    /// Redacts every piece of outside text: the URL, the reason, bodies and details.
    pub fn redact(&mut self, r: &crate::secret::Redactor) {
        self.label = r.redact(&self.label);
        self.url = r.redact(&self.url);
        if let Some(reason) = &mut self.reason {
            *reason = r.redact(reason);
        }
        for a in &mut self.attempts {
            a.excerpt = r.redact(&a.excerpt);
            match &mut a.failure {
                Some(Failure::Transport { detail, .. }) => *detail = r.redact(detail),
                Some(Failure::Status { expected, .. }) => *expected = r.redact(expected),
                Some(Failure::BodyMismatch { missing }) => *missing = r.redact(missing),
                Some(Failure::WrongVersion { expected, found })
                | Some(Failure::StillServing { version: expected, found }) => {
                    *expected = r.redact(expected);
                    *found = r.redact(found);
                }
                None => {}
            }
        }
        if let Some(a) = &mut self.analysis {
            a.redact(r);
        }
    }
}
