//! The binary's roles: the action's main step (inputs from `INPUT_*`), its post step,
//! the CLI subcommands (the same inputs as flags), and the demo. Each run ends in one
//! place, `finish`, which renders the report as outputs, summary, annotations and the
//! exit code.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction, ArgMatches};

use crate::inputs::{Group, InputSpec, Kind, RawInputs, Surface, INPUTS};
use crate::job::{self, Env, PostFiles};
use crate::providers::registry;
use crate::report::exit;
use crate::runner::Runner;
use crate::secret::Redactor;
use crate::shutdown::Shutdown;

/// Every input but `command` (the subcommand says it) as a flag, under its group's
/// heading, groups in their order.
fn input_args() -> Vec<Arg> {
    let mut inputs: Vec<&InputSpec> = INPUTS.iter().filter(|i| i.name != "command").collect();
    // Providers' headings in the registry's order, where their inputs come from.
    let titles: Vec<&str> = registry::PROVIDERS.iter().map(|r| r.title).collect();
    inputs.sort_by_key(|i| match i.group {
        Group::Provider(heading) => (Group::Provider(""), titles.iter().position(|t| *t == heading)),
        other => (other, None),
    });
    let negations: Vec<Arg> = inputs.iter().filter(|i| i.kind == Kind::Bool).map(|i| negation(i)).collect();
    inputs.into_iter().map(input_arg).chain(negations).collect()
}

/// `--no-dry-run` for `--dry-run=false`, as many CLIs write it; the last of the two wins.
fn negation(i: &InputSpec) -> Arg {
    let name = format!("no-{}", i.name);
    Arg::new(name.clone()).long(name).action(ArgAction::SetTrue).hide(true).overrides_with(i.name)
}

fn input_arg(i: &InputSpec) -> Arg {
    let mut help = i.description.to_string();
    if i.kind == Kind::Bool {
        help.push_str(&format!(" (--no-{} turns it off)", i.name));
    }
    if !i.default.is_empty() {
        help.push_str(&format!(" [default: {}]", i.default));
    }
    let arg = Arg::new(i.name).long(i.name).help(help).help_heading(i.group.heading());
    match i.kind {
        // `--dry-run` alone means true; `--dry-run=false` for scripts. The `=` is
        // required, so the flag never swallows the word after it.
        Kind::Bool => arg
            .overrides_with(format!("no-{}", i.name))
            .value_name("BOOL")
            .num_args(0..=1)
            .require_equals(true)
            .default_missing_value("true")
            .value_parser(|text: &str| crate::inputs::parse_bool(text).map(|b| b.to_string())),
        // A value may start with a hyphen (a PEM key's -----BEGIN): never an unknown
        // flag, so never echoed back in an error.
        Kind::Duration => arg.value_name("DURATION").allow_hyphen_values(true),
        Kind::Text => arg.value_name("VALUE").allow_hyphen_values(true),
    }
}

fn file_args() -> [Arg; 2] {
    let output = Group::Output.heading();
    [
        Arg::new("summary-file")
            .long("summary-file")
            .value_name("PATH")
            .help_heading(output)
            .help("Write the job summary (Markdown) to PATH. Default off a runner: a new file in the temp folder, whose path the run prints last; none with --summary=false."),
        Arg::new("state-file")
            .long("state-file")
            .value_name("PATH")
            .help_heading(output)
            .help("Where to keep the state a cancelled run needs to be finished by safe-deploy post (default: a file in the temp directory)."),
    ]
}

/// Shown after the help of every subcommand that takes the inputs.
const NOTES: &str = "\
A DURATION is a number with a unit (500ms, 10s, 5m, 1h30m)
or a bare number of seconds (30); at most 24h. A BOOL flag
alone means true (--dry-run); --dry-run=false or
--no-dry-run turns it off.";

/// Shown after the help of the top level and of deploy. Lines stay under 60
/// characters, so that a narrow terminal does not wrap them.
const EXAMPLES: &str = "\
Examples:
  # Deploy to Fly.io. The token comes from FLY_API_TOKEN;
  # the health check is https://web.fly.dev plus the path
  # in fly.toml.
  safe-deploy deploy --provider fly --app web \\
    --image registry.fly.io/web:v2

  # What that deploy would do, changing nothing.
  safe-deploy plan --provider fly --app web \\
    --image registry.fly.io/web:v2

  # Put back the release before the live one, health-gated.
  safe-deploy rollback --provider fly --app web

  # A deploy and a rollback on the built-in sandbox:
  # no credentials, no network.
  safe-deploy demo";

fn cli() -> clap::Command {
    let run = |name: &'static str, about: &'static str| {
        clap::Command::new(name).about(about).args(input_args()).args(file_args()).after_help(NOTES)
    };
    clap::Command::new("safe-deploy")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Deploy, prove the new version healthy, roll back by itself when it is not.\n\nWith no subcommand it runs as the GitHub Action's main step, reading INPUT_* variables; at a terminal, with no arguments and no INPUT_* variables, it prints this help.")
        .after_help(EXAMPLES)
        .max_term_width(100)
        .subcommand(run("deploy", "Roll out --image, prove it healthy, roll back on failure.").after_help(format!("{NOTES}\n\n{EXAMPLES}")))
        .subcommand(run("rollback", "Put the previous release (or --to) back, health-gated."))
        .subcommand(run("redeploy", "Deploy again the release --to names (an image, or a commit SHA from the GitHub ledger), health-gated, with rollback."))
        .subcommand(run("plan", "Show what a deploy would do; change nothing."))
        .subcommand(
            clap::Command::new("post")
                .about("The action's post step: finish the rollback of a cancelled run from its saved state.")
                .args(input_args())
                .args(file_args())
                .after_help(NOTES),
        )
        .subcommand(
            clap::Command::new("demo")
                .about("Deploy a healthy v2 and a broken v3 on the built-in sandbox; no credentials, no network.")
                .arg(provider_arg())
                .arg(Arg::new("summary-dir").long("summary-dir").value_name("DIR").help("Where the demo writes its job summaries, one per run (default: its folder in the temp directory).")),
        )
        .subcommand(
            clap::Command::new("sandbox")
                .about("Serve a provider's sandbox (its API and the app's router) until interrupted; prints NAME=URL lines.")
                .arg(provider_arg())
                .arg(Arg::new("app").long("app").value_name("NAME").default_value("web").help("The app's name."))
                .arg(
                    Arg::new("machines")
                        .long("machines")
                        .value_name("N")
                        .default_value("3")
                        .value_parser(clap::value_parser!(u16).range(1..=20))
                        .help("How many machines (Fly), web dynos (Heroku), instances of service web (App Platform) or tasks (ECS) the app starts with."),
                )
                .arg(Arg::new("image").long("image").value_name("IMAGE").default_value("registry.fly.io/web:v1").help("Fly: the release the machines start on. (App Platform's service web starts on web:v1; Heroku's dynos on v1.)"))
                .arg(
                    Arg::new("release")
                        .long("release")
                        .value_name("IMAGE=SETTINGS")
                        .action(ArgAction::Append)
                        .help("How a release behaves, e.g. registry.fly.io/web:v3=health:wrong-body,boot-delay-ms:500 (settings: health, version, boot-delay-ms, crash-exit-code, release-command-exit-code, latency-ms, latency-p99-ms, error-rate). Other images are healthy and report their tag. App Platform keys images as REPO:TAG or REPO@DIGEST, e.g. web:v3=health:wrong-body."),
                ),
        )
        .arg(Arg::new("post-role").long("post").action(ArgAction::SetTrue).hide(true))
}

/// `--provider`: which sandbox the demo and `sandbox` run: every registered provider
/// that has one.
fn provider_arg() -> Arg {
    #[cfg(feature = "sandbox")]
    let choices = crate::demo::with_sandbox();
    // Without the sandbox every provider is a choice, so the command gets as far as
    // saying it is left out of this build.
    #[cfg(not(feature = "sandbox"))]
    let choices: Vec<&'static str> = registry::PROVIDERS.iter().map(|r| r.name).collect();
    let titles: Vec<String> = choices
        .iter()
        .filter_map(|name| crate::providers::registry::find(name))
        .map(|r| format!("{} ({})", r.name, r.title))
        .collect();
    Arg::new("provider")
        .long("provider")
        .value_name("NAME")
        .default_value("fly")
        .value_parser(clap::builder::PossibleValuesParser::new(choices))
        .help(format!("Which provider's sandbox: {}.", titles.join(", ")))
}

/// Entry point: returns the exit code.
pub async fn main(args: Vec<OsString>, env: &Env) -> i32 {
    let redactor = Redactor::default();
    let debug = env("RUNNER_DEBUG").as_deref() == Some("1") || env("SAFE_DEPLOY_DEBUG").is_some();
    init_logging(redactor.clone(), debug);

    // The post entrypoint is the same binary under another name.
    let invoked_as = args
        .first()
        .and_then(|a| Path::new(a).file_name().map(|f| f.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let mut cmd = cli();
    if args.len() <= 1 && !invoked_as.ends_with("-post") && at_a_terminal(env) {
        // A person who typed `safe-deploy` gets the help (on stderr, exit 2, as clap
        // does for a missing subcommand), not four input errors.
        cmd = cmd.arg_required_else_help(true);
    }
    let matches = match cmd.try_get_matches_from_mut(&args) {
        Ok(m) => m,
        Err(e) => {
            let code = if e.use_stderr() { exit::BAD_INPUT } else { 0 };
            if let Some(hint) = bool_after_a_space(&e, &args) {
                // Not eprintln!: a closed pipe must not turn bad input into a panic.
                let _ = writeln!(std::io::stderr(), "{hint}");
                return code;
            }
            let _ = did_you_mean(e, &cmd).print();
            return code;
        }
    };

    let runner = Runner::from_env(env, redactor.clone());
    let shutdown = Shutdown::new();
    match matches.subcommand() {
        #[cfg(feature = "sandbox")]
        Some(("demo", sub)) => crate::demo::run_command(sub, redactor).await,
        #[cfg(feature = "sandbox")]
        Some(("sandbox", sub)) => crate::demo::serve_command(sub).await,
        #[cfg(not(feature = "sandbox"))]
        Some((command @ ("demo" | "sandbox"), _)) => {
            let _ = writeln!(
                std::io::stderr(),
                "safe-deploy: {command} is left out of this build. {}",
                crate::config::LEFT_OUT
            );
            exit::BAD_INPUT
        }
        Some(("post", sub)) => {
            let raw = raw_inputs(env, Some(sub), None);
            job::post(raw, runner, &post_files(sub), env, None).await
        }
        Some((command, sub)) => {
            let raw = raw_inputs(env, Some(sub), Some(command));
            let _ = crate::shutdown::listen_for_signals(shutdown.clone(), crate::shutdown::RUN_STOPS);
            match with_files(runner.clone(), sub, env, job::summary_wanted(&raw)) {
                Ok(runner) => job::deploy_or_restore(raw, runner, shutdown, &post_files(sub), env, &args).await,
                Err(why) => {
                    runner.error("--state-file", &why);
                    exit::BAD_INPUT
                }
            }
        }
        None if invoked_as.ends_with("-post") || matches.get_flag("post-role") => {
            let raw = raw_inputs(env, None, None);
            job::post(raw, runner, &post_files(&matches), env, None).await
        }
        None => {
            let raw = raw_inputs(env, None, None);
            let _ = crate::shutdown::listen_for_signals(shutdown.clone(), crate::shutdown::RUN_STOPS);
            match with_files(runner.clone(), &matches, env, job::summary_wanted(&raw)) {
                Ok(runner) => job::deploy_or_restore(raw, runner, shutdown, &post_files(&matches), env, &args).await,
                Err(why) => {
                    runner.error("state file", &why);
                    exit::BAD_INPUT
                }
            }
        }
    }
}

/// The files the flags point a post step at.
fn post_files(m: &ArgMatches) -> PostFiles {
    let flag = |name: &str| m.try_get_one::<String>(name).ok().flatten().map(PathBuf::from);
    PostFiles { state: flag("state-file"), summary: flag("summary-file") }
}

/// Whether a person runs this at a terminal, not a runner the action's main step: stdin
/// or stdout is a terminal, `GITHUB_ACTIONS` is not `true` and no `INPUT_*` is set.
fn at_a_terminal(env: &Env) -> bool {
    use std::io::IsTerminal;
    env("GITHUB_ACTIONS").as_deref() != Some("true")
        && INPUTS.iter().all(|i| env(&crate::inputs::env_name(i.name)).is_none())
        && (std::io::stdin().is_terminal() || std::io::stdout().is_terminal())
}

/// `--health-probe false`: a BOOL flag takes its value after `=`, so the word after the
/// space is an argument no one asked for. Said as the fix, not as clap's puzzle.
fn bool_after_a_space(e: &clap::Error, args: &[OsString]) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() != ErrorKind::UnknownArgument {
        return None;
    }
    let Some(ContextValue::String(word)) = e.get(ContextKind::InvalidArg) else { return None };
    crate::inputs::parse_bool(word).ok()?;
    let at = args.iter().position(|a| a.to_str() == Some(word.as_str()))?;
    let flag = args.get(at.checked_sub(1)?)?.to_str()?.strip_prefix("--")?;
    let spec = INPUTS.iter().find(|i| i.name == flag && i.kind == Kind::Bool)?;
    let off = if crate::inputs::parse_bool(word).ok()? { String::new() } else { format!(" (or --no-{})", spec.name) };
    Some(format!(
        "error: --{0} takes its value after an equals sign: write --{0}={1}{off}. Alone, --{0} means true.",
        spec.name,
        word.to_ascii_lowercase()
    ))
}

/// clap's error for a mistyped subcommand or flag, its best suggestion worded as a
/// question: "did you mean 'deploy'?". Any other error as clap words it.
fn did_you_mean(e: clap::Error, cmd: &clap::Command) -> clap::Error {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let (typed, suggested) = match e.kind() {
        ErrorKind::InvalidSubcommand => (ContextKind::InvalidSubcommand, ContextKind::SuggestedSubcommand),
        ErrorKind::UnknownArgument => (ContextKind::InvalidArg, ContextKind::SuggestedArg),
        _ => return e,
    };
    // clap lists suggestions from the least to the most similar.
    let best = match e.get(suggested) {
        Some(ContextValue::String(s)) => s.clone(),
        Some(ContextValue::Strings(all)) if !all.is_empty() => all[all.len() - 1].clone(),
        _ => return e,
    };
    let mut out = clap::Error::new(e.kind()).with_cmd(cmd);
    for kind in [typed, ContextKind::Usage] {
        if let Some(value) = e.get(kind) {
            out.insert(kind, value.clone());
        }
    }
    out.insert(ContextKind::Suggested, ContextValue::StyledStrs(vec![format!("did you mean '{best}'?").into()]));
    out
}

/// `INPUT_*` variables, overridden by flags, and the subcommand as the command input.
/// With flags, messages name the flags.
fn raw_inputs(env: &Env, flags: Option<&ArgMatches>, command: Option<&str>) -> RawInputs {
    let mut raw = RawInputs::from_env(env);
    if let Some(m) = flags {
        raw.set_surface(Surface::Cli);
        for spec in INPUTS.iter().filter(|i| i.name != "command") {
            if let Ok(Some(v)) = m.try_get_one::<String>(spec.name) {
                raw.set(spec.name, v.clone());
            }
            if spec.kind == Kind::Bool
                && m.try_get_one::<bool>(&format!("no-{}", spec.name)).ok().flatten() == Some(&true)
            {
                raw.set(spec.name, "false");
            }
        }
    }
    if let Some(c) = command {
        raw.set("command", c);
    }
    token_from_env(&mut raw, env);
    raw
}

/// With the token input empty, the provider's usual variable (FLY_API_TOKEN...), as its
/// own CLI would read it.
fn token_from_env(raw: &mut RawInputs, env: &Env) {
    let Some(provider) = raw.get("provider").and_then(registry::find) else { return };
    if raw.get("token").is_none() {
        if let Some((var, value)) =
            provider.token_env.iter().find_map(|name| env(name).filter(|v| !v.trim().is_empty()).map(|v| (name, v)))
        {
            // Said, never shown: the value is masked as the input would be.
            tracing::info!("{} from {var}", raw.surface().name("token"));
            raw.set("token", value);
        }
    }
    // The provider's own inputs its CLI reads from the environment (AWS_REGION...), a set
    // at a time: none of a set when any of it is given.
    // Given means other than its default: cluster's "default" is no reason to skip ECS_CLUSTER.
    let given: Vec<&str> = provider.env.iter().filter(|e| raw.given(e.input)).map(|e| e.set).collect();
    // Off a runner only: the CLI in a workflow's run: step is on a runner too.
    let off_a_runner = raw.surface() == Surface::Cli && env("GITHUB_ACTIONS").as_deref() != Some("true");
    for e in provider.env.iter().filter(|e| !given.contains(&e.set) && (e.on_runner || off_a_runner)) {
        let Some((var, value)) =
            e.vars.iter().find_map(|name| env(name).filter(|v| !v.trim().is_empty()).map(|v| (name, v)))
        else {
            continue;
        };
        // Said, so that a variable left exported (a sandbox's API URL) is never a surprise.
        if !INPUTS.iter().any(|i| i.name == e.input && i.secret) {
            // A URL as it may be shown: no credentials, no query.
            let shown = url::Url::parse(&value).map_or_else(|_| value.clone(), |u| crate::http::shown(&u));
            tracing::info!("{} from {var}: {shown}", raw.surface().name(e.input));
        }
        raw.set(e.input, value);
    }
}

/// A file made new in `RUNNER_TEMP` or the temp folder, 0600, under a name no one could
/// have made first (the temp folder is everyone's): `PREFIX-PID-RANDOM.EXT`.
fn fresh_file(env: &Env, prefix: &str, ext: &str) -> Option<PathBuf> {
    let dir = env("RUNNER_TEMP").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    (0..8).find_map(|_| {
        let path = dir.join(format!("{prefix}-{}-{:08x}.{ext}", std::process::id(), fastrand::u32(..)));
        crate::secret::new_private_file(&path).ok().map(|_| path)
    })
}

/// Off a runner, flags name the summary and state files; a state file is always kept
/// so a cancelled run can be finished. The state file is made new by the run, readable
/// by the user only (never a file that was there, a link, a pipe or a device), so the
/// run may remove it once nothing is left to resume; a summary file is this run's.
fn with_files(mut runner: Runner, m: &ArgMatches, env: &Env, summary_on: bool) -> Result<Runner, String> {
    let flag = |name: &str| m.try_get_one::<String>(name).ok().flatten().map(PathBuf::from);
    if let Some(p) = flag("summary-file") {
        // Off a runner the file is this run's summary (a runner's is the job's): an old
        // one there is emptied, none is made until there is something to write.
        if !runner.on_runner && std::fs::metadata(&p).is_ok_and(|m| m.is_file()) {
            std::fs::write(&p, "").map_err(|e| format!("--summary-file {}: {e}", p.display()))?;
        }
        runner.paths.summary = Some(p);
    }
    if let Some(p) = flag("state-file") {
        crate::secret::new_private_file(&p).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => format!(
                "{} is there already: give a path that does not exist yet (the run makes it, readable by you only); a state a stopped run left is finished with safe-deploy post --state-file {}",
                p.display(),
                p.display()
            ),
            _ => format!("{} cannot be made: {e}", p.display()),
        })?;
        runner.paths.state = Some(p);
        runner.paths.state_ours = true;
    }
    if runner.paths.summary.is_none() && !runner.on_runner && summary_on {
        // Off a runner the summary still goes somewhere, as on a runner: a file of this
        // run's own in the temp folder, whose path the run prints at its end.
        runner.paths.summary = fresh_file(env, "safe-deploy-summary", "md");
        runner.paths.summary_ours = runner.paths.summary.is_some();
    }
    if runner.paths.state.is_none() {
        // Made new here, 0600, under a name no one could have made first (the temp
        // folder is everyone's): the run's appends go to a file that is its own.
        runner.paths.state = fresh_file(env, "safe-deploy", "state");
        runner.paths.state_ours = runner.paths.state.is_some();
    }
    Ok(runner)
}

/// Logs through tracing, to stdout (one stream keeps workflow commands in order), with
/// every line redacted; debug when the runner's step debug is on.
fn init_logging(redactor: Redactor, debug: bool) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let ours = if debug { tracing::Level::DEBUG } else { tracing::Level::INFO };
    // Debug is ours (each request, each decision); the HTTP library's connection-pool
    // chatter stays at info.
    let filter =
        tracing_subscriber::filter::Targets::new().with_target("safe_deploy", ours).with_default(tracing::Level::INFO);
    let layer = tracing_subscriber::fmt::layer()
        .without_time()
        .with_target(false)
        .with_level(false)
        .with_ansi(false)
        .with_writer(move || RedactingWriter { redactor: redactor.clone(), buffer: Vec::new() })
        .with_filter(filter);
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

/// Buffers one log event and writes it redacted when dropped.
struct RedactingWriter {
    redactor: Redactor,
    buffer: Vec<u8>,
}

impl std::io::Write for RedactingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for RedactingWriter {
    fn drop(&mut self) {
        let text = self.redactor.redact(&String::from_utf8_lossy(&self.buffer));
        crate::terminal::print_line(text.trim_end_matches('\n'));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<ArgMatches, clap::Error> {
        cli().try_get_matches_from(std::iter::once("safe-deploy").chain(args.iter().copied()))
    }

    /// The inputs a subcommand's flags give, as `config` sees them.
    fn inputs(args: &[&str]) -> RawInputs {
        let m = parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        let (command, sub) = m.subcommand().expect("a subcommand");
        raw_inputs(&|_| None, Some(sub), Some(command))
    }

    #[test]
    fn every_command_the_action_has_is_a_subcommand() {
        for command in ["deploy", "rollback", "redeploy", "plan"] {
            assert_eq!(inputs(&[command]).get("command"), Some(command));
            assert_eq!(inputs(&[command]).surface(), Surface::Cli);
        }
    }

    #[test]
    fn every_boolean_input_is_a_flag_that_needs_no_value() {
        let bools: Vec<_> = INPUTS.iter().filter(|i| i.kind == Kind::Bool).collect();
        assert!(bools.len() >= 8, "dry-run, rollback, summary, insecure-ignore-host-key... {bools:?}");
        for spec in bools {
            let flag = format!("--{}", spec.name);
            let raw = inputs(&["deploy", &flag, "--app", "web"]);
            assert_eq!(raw.get(spec.name), Some("true"), "{flag} alone");
            assert_eq!(raw.get("app"), Some("web"), "{flag} takes no value from the next flag");
            for value in ["true", "false", "TRUE", "False"] {
                let raw = inputs(&["plan", &format!("{flag}={value}")]);
                assert_eq!(raw.get(spec.name).map(str::to_ascii_lowercase), Some(value.to_ascii_lowercase()));
            }
            let e = parse(&["deploy", &format!("{flag}=yes")]).unwrap_err();
            assert!(e.to_string().contains(&flag), "{e}");
            assert!(parse(&["deploy", &flag, "false"]).is_err(), "a value after a space is not the flag's");
        }
    }

    #[test]
    fn every_input_but_command_is_a_flag_under_its_heading() {
        let deploy = cli().find_subcommand("deploy").cloned().unwrap();
        for spec in INPUTS.iter().filter(|i| i.name != "command") {
            let arg =
                deploy.get_arguments().find(|a| a.get_id() == spec.name).unwrap_or_else(|| panic!("{}", spec.name));
            assert_eq!(arg.get_long(), Some(spec.name));
            assert_eq!(arg.get_help_heading(), Some(spec.group.heading()), "{}", spec.name);
        }
    }

    #[test]
    fn every_example_in_the_help_parses() {
        let text = EXAMPLES.replace("\\\n", " ");
        let commands: Vec<&str> = text.lines().map(str::trim).filter(|l| l.starts_with("safe-deploy ")).collect();
        assert_eq!(commands.len(), 4, "{commands:?}");
        for line in commands {
            let words = shlex::split(line).unwrap();
            let m = cli().try_get_matches_from(&words).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert!(m.subcommand().is_some(), "{line}");
        }
        for line in EXAMPLES.lines().chain(NOTES.lines()) {
            assert!(line.chars().count() <= 60, "too wide for a narrow terminal: {line}");
        }
    }

    #[test]
    fn the_mistyped_subcommand_gets_the_closest_one() {
        let mut cmd = cli();
        let e = cmd.try_get_matches_from_mut(["safe-deploy", "deplyo"]).unwrap_err();
        let text = did_you_mean(e, &cmd).to_string();
        assert!(text.contains("did you mean 'deploy'?"), "{text}");
        assert!(!text.contains("'demo'"), "one suggestion, the closest: {text}");
    }

    /// On a runner any earlier step can set a variable (GITHUB_ENV): one naming where the
    /// API is would take the token there. The CLI reads it; the action's steps never do.
    #[test]
    fn an_api_url_variable_is_read_by_the_cli_alone_never_on_a_runner() {
        let env = |name: &str| match name {
            "FLY_API_URL" => Some("http://127.0.0.1:9/v1".to_string()),
            "FLY_APP" => Some("web".to_string()),
            "INPUT_PROVIDER" => Some("fly".to_string()),
            _ => None,
        };
        let on_a_runner = raw_inputs(&env, None, None);
        assert_eq!((on_a_runner.get("api-url"), on_a_runner.get("app")), (None, None));

        let m = parse(&["deploy", "--provider", "fly"]).unwrap();
        let (command, sub) = m.subcommand().unwrap();
        let typed = raw_inputs(&env, Some(sub), Some(command));
        assert_eq!(typed.get("api-url"), Some("http://127.0.0.1:9/v1"));
        assert_eq!(typed.get("app"), Some("web"));
        let m = parse(&["deploy", "--provider", "fly", "--api-url", "http://127.0.0.1:10/v1"]).unwrap();
        let (command, sub) = m.subcommand().unwrap();
        assert_eq!(raw_inputs(&env, Some(sub), Some(command)).get("api-url"), Some("http://127.0.0.1:10/v1"));
    }

    /// ECS's cluster has a default ("default"), which is no reason to skip ECS_CLUSTER;
    /// and the CLI in a workflow's run: step is on a runner, so it takes no address.
    #[test]
    fn the_ecs_sandbox_variables_are_read_and_none_in_a_workflow_run_step() {
        let vars = |actions: bool| {
            move |name: &str| match name {
                "ECS_CLUSTER" => Some("staging".to_string()),
                "ECS_API_URL" => Some("http://127.0.0.1:9".to_string()),
                "GITHUB_ACTIONS" if actions => Some("true".to_string()),
                _ => None,
            }
        };
        let m = parse(&["deploy", "--provider", "ecs"]).unwrap();
        let (command, sub) = m.subcommand().unwrap();
        let typed = raw_inputs(&vars(false), Some(sub), Some(command));
        assert_eq!((typed.get("cluster"), typed.get("api-url")), (Some("staging"), Some("http://127.0.0.1:9")));
        let in_a_run_step = raw_inputs(&vars(true), Some(sub), Some(command));
        assert_eq!((in_a_run_step.get("cluster"), in_a_run_step.get("api-url")), (Some("default"), None));
    }

    #[test]
    fn the_cli_is_well_formed() {
        cli().debug_assert();
    }
}
