//! One run of the action, from raw inputs to an exit code: the main step (`deploy`),
//! the post step (`post`), and how a run's report is shown every way it is (`finish`).
//! The command line and the demos both run jobs through here.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{Command, Config};
use crate::engine::Engine;
use crate::github::{Ledger, RunContext};
use crate::http::{HttpClient, RetryConfig};
use crate::inputs::RawInputs;
use crate::providers::Progress;
use crate::report::{exit, Outcome, Report, Style};
use crate::runner::Runner;
use crate::secret::Redactor;
use crate::shutdown::Shutdown;
use crate::state::Saved;
use crate::summary;

/// Where the process gets its environment; tests pass their own.
pub type Env = dyn Fn(&str) -> Option<String> + Send + Sync;

/// The files a post step is pointed at on the command line: `--state-file` (the state a
/// stopped run left) and `--summary-file`.
#[derive(Debug, Clone, Default)]
pub struct PostFiles {
    pub state: Option<PathBuf>,
    pub summary: Option<PathBuf>,
}

/// Deploys; off a runner, a run a signal stopped mid-way is then restored at once, as
/// the post step would on a runner (a person has no post step).
pub async fn deploy_or_restore(
    raw: RawInputs,
    runner: Runner,
    shutdown: Shutdown,
    files: &PostFiles,
    env: &Env,
    args: &[OsString],
) -> i32 {
    // A regular file's length; a pipe or a device is never opened to be cut.
    let summary_len = |r: &Runner| {
        r.paths.summary.as_ref().and_then(|p| std::fs::metadata(p).ok()).filter(|m| m.is_file()).map(|m| m.len())
    };
    let before = summary_len(&runner);
    let state = runner.paths.state.clone().filter(|_| !runner.on_runner);
    if let Some(state) = &state {
        let command = crate::interrupt::finishing_command(args, state, runner.redactor());
        crate::interrupt::second_signal_exits(shutdown.clone(), runner.clone(), command);
    }
    let code = deploy(raw.clone(), runner.clone(), shutdown).await;
    // Only a run stopped after its first change has something to put back.
    let open = |path: &Path| Saved::from_file(path).is_ok_and(|s| s.stage.is_some_and(|s| s.needs_rollback()));
    match state {
        Some(state) if code == exit::CANCELLED && open(&state) => {
            // The summary is to open with what is live at the end: the restore's report
            // replaces the cancelled run's, which said "UNKNOWN, put back next".
            let mut runner = runner;
            runner.paths.summary_from = summary_len(&runner).map(|len| before.unwrap_or(0).min(len));
            let code = post(raw, runner.clone(), files, env, Some(&state)).await;
            say_what_is_left(&runner, &state);
            code
        }
        _ => {
            if let Some(state) = &state {
                say_what_is_left(&runner, state);
            } else {
                crate::state::tidy(&runner);
            }
            code
        }
    }
}

/// Whether the run writes a summary: the summary input (a value it cannot read is said
/// as an input problem, and a summary still says so).
pub fn summary_wanted(raw: &RawInputs) -> bool {
    raw.get("summary").and_then(|s| crate::inputs::parse_bool(s).ok()).unwrap_or(true)
}

/// Off a runner: the state file goes when nothing is left to resume, else its path is
/// said with the command that finishes the run.
fn say_what_is_left(runner: &Runner, state: &Path) {
    let mut runner = runner.clone();
    if runner.paths.state.as_deref() != Some(state) {
        runner.paths.state = Some(state.to_path_buf());
        runner.paths.state_ours = false;
    }
    if let crate::state::Left::Kept(path) = crate::state::tidy(&runner) {
        runner.say(&format!(
            "the run's state is kept in {0} (readable by you only): safe-deploy post --state-file {0} (with this run's flags) finishes it",
            path.display()
        ));
    }
}

/// Where the repository is checked out: `GITHUB_WORKSPACE` on a runner, else here.
fn workspace() -> PathBuf {
    std::env::var_os("GITHUB_WORKSPACE").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."))
}

fn client(redactor: Redactor, config: Option<&Config>) -> anyhow::Result<HttpClient> {
    let timeout = config.map_or(Duration::from_secs(30), |c| c.health.timeout.max(Duration::from_secs(30)));
    HttpClient::new(redactor, RetryConfig::default(), timeout)
}

/// Validates, masks, runs the engine and renders: the action's main step.
pub async fn deploy(raw: RawInputs, runner: Runner, shutdown: Shutdown) -> i32 {
    deploy_in(raw, &workspace(), runner, shutdown).await
}

/// `deploy` with the workspace (where sources and fly.toml are) given.
pub async fn deploy_in(raw: RawInputs, workspace: &Path, runner: Runner, shutdown: Shutdown) -> i32 {
    // Masks go out before anything else is printed.
    for secret in raw.secrets() {
        runner.mask(secret);
    }
    let config = match Config::from_inputs_in(&raw, workspace) {
        Ok(c) => c,
        Err(errors) => return bad_input(&raw, &runner, &errors),
    };
    let report = match run_engine(&config, &runner, shutdown).await {
        Ok(report) => report,
        Err(e) => internal_failure(&config, &runner, e),
    };

    finish(&report, &runner, config.summary)
}

/// The release a run sets out to make live, as the first line names it.
fn what_is_deployed(config: &Config) -> String {
    let from_settings =
        || config.settings.default_source().map(|source| crate::providers::Target { source, version: None }.label());
    match (&config.image, &config.to, config.command) {
        (Some(image), _, _) => image.clone(),
        (None, _, Command::Deploy | Command::Plan) => from_settings().unwrap_or_else(|| "nothing".into()),
        (None, Some(to), _) => to.clone(),
        (None, None, _) => "the previous release".into(),
    }
}

async fn run_engine(config: &Config, runner: &Runner, shutdown: Shutdown) -> anyhow::Result<Report> {
    let http = client(runner.redactor().clone(), Some(config))?;
    let provider = config.build_provider(&http)?;
    runner.say(&format!(
        "safe-deploy {}: {} {} on {} ({})",
        env!("CARGO_PKG_VERSION"),
        config.command.as_str(),
        what_is_deployed(config),
        config.app,
        provider.name()
    ));
    let (ledger, ledger_problem) = ledger(config, runner);
    let engine = Engine {
        config,
        provider: provider.as_ref(),
        probe: &http,
        runner,
        shutdown,
        ledger: ledger.as_ref(),
        progress: progress(runner),
    };
    let mut report = engine.run().await;
    report.warnings.extend(ledger_problem);
    Ok(report)
}

/// The GitHub deployment ledger, when a github-token is given and the run is on a
/// runner; otherwise why not, as a warning for the summary.
fn ledger(config: &Config, runner: &Runner) -> (Option<Ledger>, Option<String>) {
    let Some(token) = &config.github_token else { return (None, None) };
    let run = RunContext::from_env(|k| std::env::var(k).ok());
    match Ledger::new(token, run, &config.environment, config.transient_environment, config.production_environment) {
        Ok(l) => (Some(l), None),
        Err(why) => {
            runner.warning("GitHub deployment", &why);
            (None, Some(format!("GitHub deployment: not recorded: {why}")))
        }
    }
}

/// A failure of our own before the engine started (e.g. the HTTP client could not be
/// built): nothing was changed.
fn internal_failure(config: &Config, runner: &Runner, e: anyhow::Error) -> Report {
    let mut report = Report::new(config.command.as_str(), config.provider.name, &config.app, &config.environment);
    report.target = config.image.clone();
    report.outcome = Outcome::Failed;
    report.reason = Some(runner.redactor().redact(&format!("{e:#}")));
    report
}

fn bad_input(raw: &RawInputs, runner: &Runner, errors: &[crate::inputs::InputError]) -> i32 {
    let mut report = Report::new(
        raw.get("command").unwrap_or("deploy"),
        raw.get("provider").unwrap_or("(none)"),
        raw.get("app").unwrap_or("(none)"),
        raw.get("environment").unwrap_or("production"),
    );
    report.target = raw.get("image").map(str::to_string);
    report.outcome = Outcome::Failed;
    report.reason = Some("the inputs below are wrong; fix them and run again".into());
    for e in errors {
        runner.error(&e.label(), &format!("{}. {}", e.problem, e.fix));
        report.input_errors.push(e.to_string());
    }
    let summary = summary_wanted(raw);
    finish(&report, runner, summary)
}

/// The post step: finishes a rollback that a cancelled main step left open. Its state
/// comes from `state` (a CLI run interrupted just now), `--state-file`, or the runner.
pub async fn post(raw: RawInputs, runner: Runner, files: &PostFiles, env: &Env, state: Option<&Path>) -> i32 {
    for secret in raw.secrets() {
        runner.mask(secret);
    }
    let flag = files.state.as_deref();
    let saved = match state.or(flag) {
        Some(path) => match Saved::from_file(path) {
            Ok(s) => s,
            Err(e) => {
                runner.error("post", &format!("{e}; give the state file the main run printed"));
                return exit::BAD_INPUT;
            }
        },
        None => Saved::from_env(env),
    };
    if !saved.stage.is_some_and(|s| s.needs_rollback()) && saved.open_deployment.is_none() {
        let run = if runner.on_runner { "the main step" } else { "the run" };
        runner.say(&format!("safe-deploy post: {run} finished on its own; nothing to do."));
        return 0;
    }
    // The post step only restores: the source folder a deploy would upload may be gone
    // by now, and must not stand in the rollback's way.
    let mut raw = raw;
    raw.set("source-dir", "");
    // Nor does it need the image a deploy names: the state file records what to put back.
    if raw.get("image").is_none() && matches!(raw.get("command"), None | Some("deploy" | "plan")) {
        raw.set("command", "rollback");
    }
    let config = match Config::from_inputs_in(&raw, &workspace()) {
        Ok(c) => c,
        Err(errors) => return bad_input(&raw, &runner, &errors),
    };
    let mut runner = runner;
    if let Some(p) = &files.summary {
        runner.paths.summary = Some(p.clone());
    }
    // Off a runner the state file given is where this run's stages go too, so it says
    // when the release is back; it read back as one this program wrote, so it is its own.
    if let Some(path) = state.or(flag).filter(|_| !runner.on_runner) {
        runner.paths.state = Some(path.to_path_buf());
        runner.paths.state_ours = true;
    }
    if state.is_some() {
        runner.say("Interrupted: putting the recorded release back now (Ctrl-C again to stop and finish later).");
    } else {
        runner.say("safe-deploy post: the main step did not finish; restoring the recorded release.");
    }
    let http = match client(runner.redactor().clone(), Some(&config)) {
        Ok(h) => h,
        Err(e) => return finish(&internal_failure(&config, &runner, e), &runner, config.summary),
    };
    let provider = match config.build_provider(&http) {
        Ok(p) => p,
        Err(e) => return finish(&internal_failure(&config, &runner, e), &runner, config.summary),
    };
    let (ledger, ledger_problem) = ledger(&config, &runner);
    let engine = Engine {
        config: &config,
        provider: provider.as_ref(),
        probe: &http,
        runner: &runner,
        shutdown: Shutdown::new(),
        ledger: ledger.as_ref(),
        progress: progress(&runner),
    };
    // Restored, or nothing left: a post step run again has nothing to do.
    let (code, done) = match engine.post(&saved).await {
        Some(mut report) => {
            report.warnings.extend(ledger_problem);
            (finish(&report, &runner, config.summary), report.outcome == crate::report::Outcome::RolledBack)
        }
        None => (0, true),
    };
    // The state the post step was given, once it has nothing left to do.
    if let Some(path) = state.or(flag).filter(|_| !runner.on_runner) {
        say_what_is_left(&runner, path);
    } else {
        crate::state::tidy(&runner);
        // On a runner nothing comes after the post step: the snapshot main left in
        // RUNNER_TEMP (the app's configs) goes now, whatever this step could do.
        if let Some(snapshot) = saved.snapshot_file.as_deref().filter(|_| runner.on_runner) {
            if done {
                crate::state::mark_done(snapshot);
            }
            crate::state::remove_snapshot(snapshot);
        }
    }
    code
}

/// Renders the report every way it is shown, and returns the exit code. The outputs,
/// the summary and the code all come from the same report.
pub fn finish(report: &Report, runner: &Runner, write_summary: bool) -> i32 {
    let code = report.exit_code();
    // Redacted field by field: the renderings' own words are never touched.
    let report = &report.redacted(runner.redactor());

    let mut summary_path = String::new();
    // Off a runner, bad input is said on the terminal, each problem with its fix: a file
    // of this run's own that would only repeat it goes again.
    let repeat_only = !runner.on_runner && !report.input_errors.is_empty() && runner.paths.summary_ours;
    if let (true, Some(path)) = (repeat_only, &runner.paths.summary) {
        let _ = std::fs::remove_file(path);
    }
    if write_summary && !repeat_only {
        if let Some(path) = &runner.paths.summary {
            let markdown = summary::render(report);
            match append_file(path, &markdown, runner.paths.summary_from) {
                Ok(()) => summary_path = path.display().to_string(),
                Err(e) => runner.warning("summary not written", &format!("could not write {}: {e}", path.display())),
            }
        }
    }

    let outputs = [
        ("status", report.outcome.status().to_string()),
        ("release", report.live.clone().unwrap_or_default()),
        ("previous-release", report.previous.clone().unwrap_or_default()),
        ("url", report.url.clone().unwrap_or_default()),
        ("duration-seconds", format!("{:.1}", report.duration.as_secs_f64())),
        ("rolled-back", report.rolled_back().to_string()),
        ("summary-path", summary_path.clone()),
    ];
    for (name, value) in outputs {
        if let Err(e) = runner.set_output(name, &value) {
            runner.warning("output not written", &format!("could not write output {name}: {e}"));
        }
    }

    // Each result is said once: on a runner as the annotation (which the log shows too),
    // on a terminal as one line in the outcome's colour, then why.
    let headline = report.headline_in(Style::Plain);
    let mut reason = report.reason.clone().unwrap_or_default();
    // A rollback that failed has a reason of its own: what could not be put back.
    if let (Outcome::RollbackFailed, Some(detail)) =
        (report.outcome, report.rollback.as_ref().and_then(|r| r.detail.as_deref()))
    {
        reason = format!("{reason}; and the rollback: {detail}");
    }
    let with_reason = if reason.is_empty() { headline.clone() } else { format!("{headline} Why: {reason}") };
    // The plan is in the log too, where a person reading the run looks first.
    for step in &report.plan {
        runner.say(&format!("  plan: {step}"));
    }
    if runner.on_runner {
        match report.outcome {
            _ if !report.input_errors.is_empty() => {}
            Outcome::Deployed => runner.notice("deployed", &headline),
            Outcome::Planned => runner.notice("planned", &headline),
            // Put back because the run was stopped: a cancelled run, not a failed one.
            Outcome::RolledBack if report.stopped => runner.warning("deploy cancelled", &with_reason),
            Outcome::RolledBack | Outcome::Failed => runner.error("deploy failed", &with_reason),
            Outcome::RollbackFailed => runner.error("rollback failed", &with_reason),
            Outcome::Cancelled => runner.warning("deploy cancelled", &with_reason),
        }
        return code;
    }
    let shown_as =
        if report.stopped && report.outcome == Outcome::RolledBack { Outcome::Cancelled } else { report.outcome };
    runner.outcome(shown_as, &headline);
    // Input problems were each said above, naming what to fix.
    if !reason.is_empty() && report.input_errors.is_empty() {
        runner.say(&format!("why: {reason}"));
    }
    if !summary_path.is_empty() {
        runner.say(&format!("summary: {summary_path}"));
    }
    code
}

/// Progress events: a live status on a terminal, log lines everywhere else.
pub fn progress(runner: &Runner) -> Progress {
    if runner.terminal {
        Progress::new(std::sync::Arc::new(crate::progress::Live::start(runner.clone())))
    } else {
        Progress::new(std::sync::Arc::new(crate::progress::LogLines::new(runner.clone())))
    }
}

/// Appends `text`; with `from`, first cuts the file to that length (what was there before
/// the stopped run wrote), in the same open, just before the new text goes in.
fn append_file(path: &Path, text: &str, from: Option<u64>) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = crate::secret::private_file(path)?;
    if let Some(len) = from {
        f.set_len(len)?;
    }
    f.write_all(text.as_bytes())
}
