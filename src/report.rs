//! One report of the run. The job summary, the step outputs and the exit code are all
//! renderings of it, so they cannot disagree about what happened or what is live.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::health::GateReport;
use crate::secret::Redactor;

/// How the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The new release is live and proved healthy.
    Deployed,
    /// The new release failed; the previous one was put back and proved healthy.
    RolledBack,
    /// The run failed. Either nothing was changed, or rollback was off.
    Failed,
    /// The run failed and so did putting the previous release back: state unknown.
    RollbackFailed,
    /// Stopped by a signal; the post step finishes what is needed.
    Cancelled,
    /// A plan or dry run: nothing was changed.
    Planned,
}

pub mod exit {
    //! Exit codes, as the README and docs/how-a-run-goes.md list them.
    pub const DEPLOYED: i32 = 0;
    pub const FAILED: i32 = 1;
    pub const BAD_INPUT: i32 = 2;
    pub const UNKNOWN_STATE: i32 = 3;
    pub const CANCELLED: i32 = 130;
}

impl Outcome {
    /// The `status` output.
    pub fn status(self) -> &'static str {
        match self {
            Outcome::Deployed => "deployed",
            Outcome::RolledBack => "rolled-back",
            Outcome::Failed => "failed",
            Outcome::RollbackFailed => "rollback-failed",
            Outcome::Cancelled => "cancelled",
            Outcome::Planned => "planned",
        }
    }

    pub fn exit_code(self) -> i32 {
        match self {
            Outcome::Deployed | Outcome::Planned => exit::DEPLOYED,
            Outcome::RolledBack | Outcome::Failed => exit::FAILED,
            Outcome::RollbackFailed => exit::UNKNOWN_STATE,
            Outcome::Cancelled => exit::CANCELLED,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PhaseResult {
    Ok,
    Failed,
    Cancelled,
}

/// One named step of the run, with when it started and how long it took.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Phase {
    pub name: String,
    /// Since the run started.
    pub start: Duration,
    pub duration: Duration,
    pub result: PhaseResult,
    pub detail: Option<String>,
}

/// What happened when the previous release was put back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RollbackInfo {
    pub to: String,
    pub reason: String,
    pub succeeded: bool,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub command: String,
    pub provider: String,
    pub app: String,
    pub environment: String,
    /// The release this run set out to make live.
    pub target: Option<String>,
    /// The release that was live when the run started.
    pub previous: Option<String>,
    /// The release live now; `None` when it cannot be known.
    pub live: Option<String>,
    pub outcome: Outcome,
    /// Why the run did not deploy, in one sentence.
    pub reason: Option<String>,
    pub url: Option<String>,
    pub started_at: SystemTime,
    pub duration: Duration,
    pub phases: Vec<Phase>,
    pub gates: Vec<GateReport>,
    /// Preflight findings and what the plan would do.
    pub findings: Vec<String>,
    pub plan: Vec<String>,
    pub warnings: Vec<String>,
    pub rollback: Option<RollbackInfo>,
    /// Whether anything was changed at the provider.
    pub changed: bool,
    /// Inputs that were wrong: the run stopped before sending any request.
    pub input_errors: Vec<String>,
    /// Requests sent to the provider's API, when it counts them.
    pub api_calls: Option<usize>,
    /// The GitHub deployment recording this run, when there is one.
    pub deployment: Option<DeploymentRecord>,
    /// The new release's version, when the version URL did not name it before the
    /// change: after a rollback it must no longer answer.
    #[serde(skip)]
    pub gone_after_rollback: Option<String>,
    /// The release this run's roll-out made live, as the provider named it (what the
    /// last look compares what runs with).
    #[serde(skip)]
    pub made: Option<crate::providers::ReleaseRef>,
    /// Someone else's deploy replaced this run's release (before or after it went
    /// live): its name. Not rolled back over, and said so.
    #[serde(default)]
    pub replaced_by: Option<String>,
    /// Nothing serves differently, but this is what the run's change left at the
    /// platform (App Platform keeps the spec that names the new image).
    #[serde(default)]
    pub left_behind: Option<String>,
    /// The run was stopped by a signal, and what it did after (a post step's restore)
    /// was because of that: the headline says CANCELLED, the exit code is 130.
    #[serde(default)]
    pub stopped: bool,
    /// Who gave the inputs: the summary's advice names a workflow's inputs or the flags.
    #[serde(skip)]
    pub surface: crate::inputs::Surface,
}

/// The GitHub deployment of a run: its id, the last status given, and where to see it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeploymentRecord {
    pub id: u64,
    pub environment: String,
    pub state: String,
    pub url: String,
}

impl Report {
    pub fn new(command: &str, provider: &str, app: &str, environment: &str) -> Self {
        Report {
            command: command.into(),
            provider: provider.into(),
            app: app.into(),
            environment: environment.into(),
            target: None,
            previous: None,
            live: None,
            outcome: Outcome::Failed,
            reason: None,
            url: None,
            started_at: SystemTime::now(),
            duration: Duration::ZERO,
            phases: Vec::new(),
            gates: Vec::new(),
            findings: Vec::new(),
            plan: Vec::new(),
            warnings: Vec::new(),
            rollback: None,
            changed: false,
            input_errors: Vec::new(),
            api_calls: None,
            deployment: None,
            gone_after_rollback: None,
            made: None,
            replaced_by: None,
            left_behind: None,
            stopped: false,
            surface: crate::inputs::Surface::Action,
        }
    }

    /// The process exit code: bad input has its own, whatever the outcome says; a run
    /// stopped by a signal is cancelled (130) whatever it then put back.
    pub fn exit_code(&self) -> i32 {
        if !self.input_errors.is_empty() {
            exit::BAD_INPUT
        } else if self.stopped && self.outcome == Outcome::RolledBack {
            // Put back because the run was stopped: a cancelled run, whatever it restored.
            exit::CANCELLED
        } else if self.outcome == Outcome::Failed && self.changed {
            // A change failed and was not rolled back (rollback: false): what is live is
            // unknown, or a release known to be broken; either way someone must act.
            exit::UNKNOWN_STATE
        } else {
            self.outcome.exit_code()
        }
    }

    /// The report with every piece of text that came from data (releases, URLs, errors,
    /// bodies, findings) redacted. Every rendering starts from this, so a secret never
    /// reaches an output, and the renderings' own words are never touched.
    pub fn redacted(&self, r: &Redactor) -> Report {
        let mut out = self.clone();
        let one = |s: &mut String| *s = r.redact(s);
        let opt = |s: &mut Option<String>| {
            if let Some(v) = s {
                *v = r.redact(v);
            }
        };
        for s in [&mut out.app, &mut out.environment, &mut out.provider, &mut out.command] {
            one(s);
        }
        for s in [
            &mut out.target,
            &mut out.previous,
            &mut out.live,
            &mut out.reason,
            &mut out.url,
            &mut out.replaced_by,
            &mut out.left_behind,
        ] {
            opt(s);
        }
        for s in out.findings.iter_mut().chain(&mut out.plan).chain(&mut out.warnings).chain(&mut out.input_errors) {
            one(s);
        }
        for p in &mut out.phases {
            one(&mut p.name);
            opt(&mut p.detail);
        }
        for g in &mut out.gates {
            g.redact(r);
        }
        if let Some(rb) = &mut out.rollback {
            one(&mut rb.to);
            one(&mut rb.reason);
            opt(&mut rb.detail);
        }
        if let Some(d) = &mut out.deployment {
            one(&mut d.environment);
            one(&mut d.url);
        }
        out
    }

    pub fn rolled_back(&self) -> bool {
        self.rollback.as_ref().is_some_and(|r| r.succeeded)
    }

    /// The one sentence that opens the summary: the outcome, and what is live now.
    pub fn headline(&self) -> String {
        self.headline_in(Style::Markdown)
    }

    /// The headline in a style: Markdown (a mark, releases as code) for the summary,
    /// plain words for a log line or a terminal. Each release is named once.
    pub fn headline_in(&self, style: Style) -> String {
        let markdown = style == Style::Markdown;
        // A code span shows its text literally; one a backtick or a line break would
        // end early is written as escaped <code> instead.
        let name = |r: &str| match markdown {
            true if r.contains(['`', '\n', '\r']) => format!("<code>{}</code>", crate::markdown::escape_code(r)),
            true => format!("`{r}`"),
            false => r.to_string(),
        };
        let mark = |m: &str| if markdown { format!("{m} ") } else { String::new() };
        let live = match &self.live {
            Some(r) => format!("{} is live", name(r)),
            None => "what is live is UNKNOWN".into(),
        };
        let known = self.target.as_deref().map(name);
        let target = known.as_deref().unwrap_or("the new release");
        let app = if markdown { crate::markdown::escape(&self.app) } else { self.app.clone() };
        // What the run set out to do, as the subject of a sentence; a release not found
        // yet (a rollback that stopped looking for it) is not named.
        let attempt = match (self.command.as_str(), &known) {
            ("rollback", Some(t)) => format!("Rollback of {app} to {t}"),
            ("rollback", None) => format!("Rollback of {app}"),
            ("redeploy", Some(t)) => format!("Redeploy of {t} to {app}"),
            ("redeploy", None) => format!("Redeploy on {app}"),
            ("plan", Some(t)) => format!("Plan for {t} on {app}"),
            ("plan", None) => format!("Plan for {app}"),
            (_, Some(t)) => format!("Deploy of {t} to {app}"),
            (_, None) => format!("Deploy to {app}"),
        };
        if !self.input_errors.is_empty() {
            return format!(
                "{}{}: nothing was changed and no request was sent.",
                mark("❌"),
                crate::markdown::counted(self.input_errors.len(), "input problem")
            );
        }
        // Healthy and live: the target needs no second mention unless something else is.
        let healthy =
            if self.live == self.target { "live and healthy".to_string() } else { format!("{live} and healthy") };
        match self.outcome {
            Outcome::Deployed if self.command == "redeploy" => {
                format!("{}Redeployed {target} to {app}: {healthy}.", mark("✅"))
            }
            Outcome::Deployed if self.command == "rollback" => {
                format!("{}Rolled {app} back to {target} on request: {healthy}.", mark("✅"))
            }
            Outcome::Deployed => format!("{}Deployed {target} to {app}: {healthy}.", mark("✅")),
            Outcome::RolledBack if self.stopped => {
                format!("{}{attempt} was CANCELLED and rolled back: {live}.", mark("⏹️"))
            }
            Outcome::RolledBack => format!("{}{attempt} FAILED and was rolled back: {live}.", mark("❌")),
            Outcome::Failed if self.replaced_by.is_some() => format!(
                "{}{attempt} was REPLACED by another deploy, which safe-deploy does not roll back over: {live}.",
                mark("❌")
            ),
            Outcome::Failed if self.changed => {
                format!("{}{attempt} FAILED and was not rolled back: {live}.", mark("❌"))
            }
            Outcome::Failed if self.left_behind.is_some() => format!(
                "{}{attempt} FAILED, and nothing serves differently ({live}), but {}.",
                mark("❌"),
                self.left_behind.as_deref().unwrap_or_default()
            ),
            Outcome::Failed if self.live.is_none() => {
                format!("{}{attempt} FAILED before any change: nothing was changed.", mark("❌"))
            }
            Outcome::Failed => format!("{}{attempt} FAILED before any change: {live}.", mark("❌")),
            Outcome::RollbackFailed if self.live.is_some() && self.live == self.previous => format!(
                "{}ROLLBACK FAILED: {} failed; the previous release was put back but is NOT healthy: {live}. Act now.",
                mark("🚨"),
                lower_first(&attempt)
            ),
            Outcome::RollbackFailed => format!(
                "{}ROLLBACK FAILED: {} failed and the previous release could not be restored: {live}. Act now.",
                mark("🚨"),
                lower_first(&attempt)
            ),
            Outcome::Cancelled if self.changed => format!(
                "{}{attempt} was CANCELLED mid-way: {live}; safe-deploy puts the previous release back next.",
                mark("⏹️")
            ),
            Outcome::Cancelled => format!("{}{attempt} was CANCELLED before any change: {live}.", mark("⏹️")),
            Outcome::Planned => format!("{}Plan for {target} on {app}: nothing was changed; {live}.", mark("📝")),
        }
    }
}

/// "Deploy of x" as the middle of a sentence.
fn lower_first(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map(|c| c.to_lowercase().chain(chars).collect()).unwrap_or_default()
}

/// How a headline is written: for the Markdown summary, or as plain words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Markdown,
    Plain,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_has_its_documented_status_and_exit_code() {
        let table = [
            (Outcome::Deployed, "deployed", 0),
            (Outcome::Planned, "planned", 0),
            (Outcome::RolledBack, "rolled-back", 1),
            (Outcome::Failed, "failed", 1),
            (Outcome::RollbackFailed, "rollback-failed", 3),
            (Outcome::Cancelled, "cancelled", 130),
        ];
        for (outcome, status, code) in table {
            assert_eq!((outcome.status(), outcome.exit_code()), (status, code));
        }
    }

    #[test]
    fn the_headline_says_loudly_when_the_state_is_unknown() {
        let mut r = Report::new("deploy", "memory", "web", "production");
        r.outcome = Outcome::RollbackFailed;
        r.target = Some("web:2".into());
        assert!(r.headline().contains("ROLLBACK FAILED"));
        assert!(r.headline().contains("UNKNOWN"));
        r.outcome = Outcome::RolledBack;
        r.live = Some("web:1".into());
        assert!(r.headline().contains("`web:1` is live"));
    }
}
