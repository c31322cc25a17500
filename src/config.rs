//! Raw inputs become one validated [`Config`], or the full list of what is wrong.
//!
//! Nothing here touches the network: a bad input must stop the run before any
//! request is sent, and every problem is reported at once, each naming its input
//! and the fix.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use std::sync::Arc;

use crate::http::HttpClient;
use crate::inputs::{check_base_url, human, parse_bool, InputError, Problems, RawInputs, Surface, INPUTS};
use crate::providers::registration::{Account, ProviderSettings, Registration};
use crate::providers::registry;
use crate::providers::Provider;
use crate::secret::Secret;

/// What a build without the `sandbox` feature (the action's image) says of what it leaves out.
pub const LEFT_OUT: &str = "The action's image only deploys; try the double and the demo with the CLI built with its default features (cargo run -- demo), or set provider to a real platform.";

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Command {
    Deploy,
    Rollback,
    Redeploy,
    Plan,
}

impl Command {
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Deploy => "deploy",
            Command::Rollback => "rollback",
            Command::Redeploy => "redeploy",
            Command::Plan => "plan",
        }
    }
}

/// When the health gate also runs between batches, against the instances just changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchGate {
    /// After the first batch only: a broken release reaches one batch at most.
    First,
    /// After every batch but the last (the final gate covers that one).
    Every,
    /// Only once everything is rolled out.
    End,
}

impl BatchGate {
    fn parse(text: &str) -> Result<BatchGate, String> {
        match text.to_ascii_lowercase().as_str() {
            "first" => Ok(BatchGate::First),
            "every" => Ok(BatchGate::Every),
            "end" => Ok(BatchGate::End),
            _ => Err(format!("'{text}' is not first, every or end")),
        }
    }

    /// Whether batch `i` of `n` is gated on its own before the next one starts.
    pub fn gates(self, i: usize, n: usize) -> bool {
        i + 1 < n
            && match self {
                BatchGate::First => i == 0,
                BatchGate::Every => true,
                BatchGate::End => false,
            }
    }
}

/// Which HTTP statuses count as healthy: exact codes and whole classes (`2xx`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSet {
    codes: Vec<u16>,
    classes: Vec<u16>,
}

impl StatusSet {
    pub fn parse(text: &str) -> Result<StatusSet, String> {
        let mut set = StatusSet { codes: Vec::new(), classes: Vec::new() };
        for part in text.split(',').map(str::trim) {
            let lower = part.to_ascii_lowercase();
            if let Some(class) = lower.strip_suffix("xx") {
                match class.parse::<u16>() {
                    Ok(c @ 1..=5) if class.len() == 1 => set.classes.push(c),
                    _ => return Err(format!("'{part}' is not a status class; classes are 1xx to 5xx")),
                }
            } else {
                match part.parse::<u16>() {
                    Ok(code @ 100..=599) if part.len() == 3 => set.codes.push(code),
                    _ => return Err(format!("'{part}' is not an HTTP status code (100 to 599)")),
                }
            }
        }
        Ok(set)
    }

    pub fn contains(&self, status: u16) -> bool {
        self.codes.contains(&status) || self.classes.contains(&(status / 100))
    }
}

impl fmt::Display for StatusSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> =
            self.codes.iter().map(u16::to_string).chain(self.classes.iter().map(|c| format!("{c}xx"))).collect();
        f.write_str(&parts.join(","))
    }
}

/// Everything the health gate needs.
#[derive(Debug, Clone)]
pub struct HealthConfig {
    pub url: url::Url,
    pub expect_status: StatusSet,
    pub check_string: Option<String>,
    /// Where to look for `expect_version`, and what it must be.
    pub version: Option<(url::Url, String)>,
    pub successes: u32,
    pub interval: Duration,
    pub timeout: Duration,
    pub deadline: Duration,
    pub grace: Duration,
    pub soak: Duration,
    pub headers: Vec<(String, String)>,
    /// Probe what is live before the first change of a deploy.
    pub probe_first: bool,
    /// How the inputs were given, so a gate's message names `--health-deadline` off a runner.
    pub surface: Surface,
    /// `url` was not given but guessed from the app's name (Fly.io's APP.fly.dev): every
    /// message about the check says so.
    pub guessed: bool,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub command: Command,
    /// The provider, as registered; `settings` holds what it parsed of its own inputs.
    pub provider: &'static Registration,
    pub settings: Arc<dyn ProviderSettings>,
    pub app: String,
    pub token: Option<Secret>,
    pub image: Option<String>,
    pub health: HealthConfig,
    pub analysis: crate::analysis::AnalysisConfig,
    pub rollback: bool,
    /// How long a rollback keeps going through transient failures.
    pub rollback_timeout: Duration,
    pub batch_gate: BatchGate,
    pub deploy_timeout: Duration,
    pub dry_run: bool,
    pub github_token: Option<Secret>,
    pub environment: String,
    /// The app's public URL, when given; else the health URL's origin is shown.
    pub environment_url: Option<url::Url>,
    pub api_url: Option<url::Url>,
    pub summary: bool,
    /// rollback and redeploy: the release, or a commit SHA from the ledger.
    pub to: Option<String>,
    pub transient_environment: bool,
    /// `None`: GitHub's default (production only when the environment is named so).
    pub production_environment: Option<bool>,
    /// Where the inputs came from (a runner's `with:`, or flags): messages during the run
    /// name them as the person gave them.
    pub surface: Surface,
}

impl Config {
    /// Plan runs and dry runs change nothing.
    pub fn changes_nothing(&self) -> bool {
        self.command == Command::Plan || self.dry_run
    }

    /// The URL the run reports as the app's: environment-url, else health-url's origin.
    pub fn app_url(&self) -> String {
        match &self.environment_url {
            Some(u) => u.to_string(),
            None => self.health.url.origin().ascii_serialization(),
        }
    }

    /// What the provider is built with.
    pub fn account(&self) -> Account<'_> {
        Account {
            app: &self.app,
            token: self.token.as_ref().map(|t| t.expose()).unwrap_or_default(),
            api_url: self.api_url.as_ref(),
        }
    }

    /// The provider this config names, built.
    pub fn build_provider(&self, http: &HttpClient) -> anyhow::Result<Box<dyn Provider>> {
        self.settings.build(&self.account(), http)
    }
}

impl HealthConfig {
    /// Said after any message about the health check when its URL was guessed, so that a
    /// failure against an address the person never gave is not a puzzle.
    pub fn guess_note(&self) -> String {
        match self.guessed {
            false => String::new(),
            true => format!(
                " ({} was not given, so the check goes to {}, guessed from the app's name; give {} if the app answers elsewhere)",
                self.surface.name("health-url"),
                crate::http::shown(&self.url),
                self.surface.name("health-url")
            ),
        }
    }
}

impl Config {
    /// Validates with provider files (fly.toml) looked up in the current directory.
    pub fn from_inputs(raw: &RawInputs) -> Result<Config, Vec<InputError>> {
        Config::from_inputs_in(raw, Path::new("."))
    }

    /// Validates; provider files such as fly.toml are looked up in `workspace`.
    pub fn from_inputs_in(raw: &RawInputs, workspace: &Path) -> Result<Config, Vec<InputError>> {
        let mut p = Problems::new(raw.surface());
        let health_url_given = raw.get("health-url").is_some();
        let provider = match raw.get("provider") {
            None => {
                p.add("provider", "is required", format!("Set it to one of: {}.", registry::names()));
                None
            }
            Some(name) => match registry::find(name) {
                Some(r) => Some(r),
                None if name.trim().eq_ignore_ascii_case("memory") => {
                    p.add("provider", "memory (the provider double) is left out of this build", LEFT_OUT);
                    None
                }
                None => {
                    p.add(
                        "provider",
                        format!("'{name}' is not a provider"),
                        format!("Use one of: {}.", registry::names()),
                    );
                    None
                }
            },
        };
        // The provider's own files (fly.toml) fill shared inputs the caller left empty.
        let merged;
        let raw = match provider.map(|r| (r.defaults)(raw, workspace)) {
            Some(Ok(Some(m))) => {
                merged = m;
                &merged
            }
            Some(Err(e)) => {
                p.0.push(e);
                raw
            }
            _ => raw,
        };
        if let Some(r) = provider {
            for spec in INPUTS.iter().filter(|i| !i.providers.is_empty() && !i.providers.contains(&r.name)) {
                if raw.given(spec.name) {
                    let owner = spec.providers.join(" or ");
                    let set: Vec<String> = spec.providers.iter().map(|o| p.setting("provider", o)).collect();
                    p.add(
                        spec.name,
                        format!("applies to provider {owner} only, and {} is {}", p.name("provider"), r.name),
                        format!("Remove it, or set {}.", set.join(" or ")),
                    );
                }
            }
        }

        let command = p.parse(raw, "command", parse_command, "Use deploy, rollback, redeploy or plan.");
        let app = match raw.get("app") {
            None => {
                p.add(
                    "app",
                    "is required",
                    "Set it to the application's name at the provider (with fly, fly.toml's app also does; with ecs, service does).",
                );
                None
            }
            Some(a) if !valid_app_name(a) => {
                p.add(
                    "app",
                    format!("'{a}' is not a valid app name"),
                    "Use letters, digits, '-' and '_' only (at most 63 characters).",
                );
                None
            }
            Some(a) => Some(a.to_string()),
        };

        let token = raw.get("token").map(Secret::new);
        if let (Some(r), None) = (provider, &token) {
            if r.needs_token {
                let names = r.token_env.join(" or ");
                let fix = match (p.surface(), names.is_empty()) {
                    (Surface::Action, true) => {
                        "Pass the provider's API token from a secret, e.g. token: ${{ secrets.DEPLOY_TOKEN }}.".into()
                    }
                    (Surface::Action, false) => format!(
                        "Pass the provider's API token from a secret, e.g. token: ${{{{ secrets.DEPLOY_TOKEN }}}}, or set {names} in the environment."
                    ),
                    // A token on the command line would stay in the shell's history.
                    (Surface::Cli, true) => "Pass the provider's API token with --token.".into(),
                    (Surface::Cli, false) => format!("Set {names} in the environment, or pass --token."),
                };
                p.add("token", format!("is required with provider {}", r.name), fix);
            }
        }
        for (name, value) in [("token", raw.get("token")), ("github-token", raw.get("github-token"))] {
            if value.is_some_and(|v| v.chars().any(char::is_control)) {
                p.add(
                    name,
                    "contains control characters",
                    "Copy the token again without line breaks or other control characters.",
                );
            }
        }

        let image = raw.get("image").map(str::to_string);
        if let Some(Err(why)) = image.as_deref().map(|i| refuse_hidden_characters(i, "an image reference", false)) {
            p.add("image", why, "Give one image reference such as registry.example.com/app:1.2.3.");
        }

        let to = raw.get("to").map(str::to_string);
        if let Some(Err(why)) = to.as_deref().map(|t| refuse_hidden_characters(t, "a release's name", true)) {
            p.add("to", why, "Name one release: an image, a release as the platform names it, or a commit SHA.");
        }
        if command == Some(Command::Redeploy) && to.is_none() && image.is_none() {
            p.add(
                "to",
                format!("is required by {}", p.surface().command("redeploy")),
                "Name the release to deploy again: an image, or a commit SHA safe-deploy deployed before.",
            );
        }
        let transient_environment = p.parse(raw, "transient-environment", parse_bool, "Use true or false.");
        let production_environment = match raw.get("production-environment") {
            None => Some(None),
            Some(_) => {
                p.parse(raw, "production-environment", parse_bool, "Use true or false, or leave it empty.").map(Some)
            }
        };

        let health = health_config(raw, &mut p).map(|mut h| {
            h.guessed = !health_url_given;
            h
        });

        let analysis = crate::analysis::from_inputs(raw, &mut p, health.as_ref(), command);
        let rollback = p.parse(raw, "rollback", parse_bool, "Use true or false.");
        let batch_gate = p.parse(raw, "batch-gate", BatchGate::parse, "Use first, every or end.");
        let rollback_timeout = p.duration(raw, "rollback-timeout", true);
        let deploy_timeout = p.duration(raw, "deploy-timeout", true);
        let dry_run = p.parse(raw, "dry-run", parse_bool, "Use true or false.");
        let summary = p.parse(raw, "summary", parse_bool, "Use true or false.");
        let github_token = raw.get("github-token").map(Secret::new);
        let environment = raw.get("environment").unwrap_or("production").to_string();
        if environment.len() > 255 || environment.chars().any(char::is_control) {
            p.add(
                "environment",
                "is too long or has control characters",
                "Use a short name such as production or staging.",
            );
        }
        let environment_url =
            p.parse(raw, "environment-url", parse_probe_url, "Give a full URL such as https://app.example.com.");

        let api_url = match raw.get("api-url") {
            None => None,
            // A provider whose API is a file (the double) checks the URL itself.
            Some(text) if provider.is_some_and(|r| r.file_api) => url::Url::parse(text).ok(),
            Some(text) => match refuse_hidden_characters(text, "a URL", false)
                .and_then(|()| url::Url::parse(text).map_err(|e| format!("'{text}' is not a URL ({e})")))
            {
                Ok(u) => match check_base_url(&u) {
                    Ok(()) => Some(u),
                    Err(problem) => {
                        p.add("api-url", problem, "Use an https:// URL (plain http:// is allowed on loopback only).");
                        None
                    }
                },
                Err(problem) => {
                    p.add("api-url", problem, "Give a full URL such as https://api.example.com.");
                    None
                }
            },
        };
        let settings = provider.and_then(|r| (r.configure)(raw, workspace, &mut p));
        let command_wants_image = matches!(command, Some(Command::Deploy) | Some(Command::Plan));
        let has_default = provider.is_some_and(|r| r.image_optional);
        if command_wants_image && image.is_none() && !has_default && !p.0.iter().any(|e| e.input == "image") {
            p.add(
                "image",
                format!("is required by {}", p.surface().command(command.map_or("deploy", Command::as_str))),
                "Set it to the image reference to deploy, e.g. registry.example.com/app:1.2.3.",
            );
        }

        if !p.0.is_empty() {
            return Err(p.0);
        }
        // Every None above recorded a problem, so these are all present.
        match (
            command,
            provider,
            settings,
            app,
            (health, analysis),
            rollback,
            (batch_gate, rollback_timeout),
            deploy_timeout,
            dry_run,
            summary,
            transient_environment,
            production_environment,
        ) {
            (
                Some(command),
                Some(provider),
                Some(settings),
                Some(app),
                (Some(health), Some(analysis)),
                Some(rollback),
                (Some(batch_gate), Some(rollback_timeout)),
                Some(deploy_timeout),
                Some(dry_run),
                Some(summary),
                Some(transient_environment),
                Some(production_environment),
            ) => Ok(Config {
                command,
                provider,
                settings,
                app,
                token,
                image,
                health,
                analysis,
                rollback,
                rollback_timeout,
                batch_gate,
                deploy_timeout,
                dry_run,
                github_token,
                environment,
                environment_url,
                api_url,
                summary,
                to,
                transient_environment,
                production_environment,
                surface: p.surface(),
            }),
            _ => Err(vec![InputError::new(
                p.surface(),
                "command",
                "bug: an input was missing without a reported problem",
                "Please report this with the inputs you used.",
            )]),
        }
    }
}

fn health_config(raw: &RawInputs, p: &mut Problems) -> Option<HealthConfig> {
    let url = match raw.get("health-url") {
        None => {
            p.add(
                "health-url",
                "is required",
                "Give the URL that proves the app healthy, e.g. https://app.example.com/health.",
            );
            None
        }
        Some(text) => p.parse(
            raw,
            "health-url",
            |_| parse_probe_url(text),
            "Give a full URL such as https://app.example.com/health.",
        ),
    };
    let expect_status = p.parse(
        raw,
        "expect-status",
        StatusSet::parse,
        "Use codes and classes separated by commas, e.g. 200,204 or 2xx.",
    );
    // Both are said in log lines: a line break in one would start a workflow command there.
    for name in ["check-string", "expect-version"] {
        if raw.get(name).is_some_and(|v| v.chars().any(char::is_control)) {
            p.add(name, "contains a line break or another control character", "Give it on one line, as plain text.");
        }
    }
    let check_string = raw.get("check-string").map(str::to_string);
    let version_url = raw.get("version-url").and_then(|text| {
        p.parse(
            raw,
            "version-url",
            |_| parse_probe_url(text),
            "Give a full URL such as https://app.example.com/version.",
        )
    });
    let expect_version = raw.get("expect-version").map(str::to_string);
    if raw.given("version-url") && expect_version.is_none() {
        p.add(
            "expect-version",
            format!("is required when {} is set", p.name("version-url")),
            match p.surface() {
                Surface::Action => "Set it to the version the new release reports, e.g. ${{ github.sha }}.",
                Surface::Cli => "Set it to the version the new release reports, e.g. $(git rev-parse HEAD).",
            },
        );
    }
    let successes = p.parse(
        raw,
        "health-successes",
        |t| match t.parse::<u32>() {
            Ok(n @ 1..=1000) => Ok(n),
            _ => Err(format!("'{t}' is not a whole number from 1 to 1000")),
        },
        "Use a whole number such as 3.",
    );
    let interval = p.duration(raw, "health-interval", true);
    let timeout = p.duration(raw, "health-timeout", true);
    let deadline = p.duration(raw, "health-deadline", true);
    let grace = p.duration(raw, "health-grace", false);
    let soak = p.duration(raw, "health-soak", false);
    let headers =
        p.parse(raw, "health-headers", parse_headers, "Write one 'Name: value' per line.").unwrap_or_default();
    let probe_first = p.parse(raw, "health-probe", parse_bool, "Use true or false.");

    if let (Some(deadline), Some(grace), Some(soak)) = (deadline, grace, soak) {
        // The gate passes on `successes` answers one interval apart, which must all start
        // before the soak has to begin; settings that cannot fit would fail every gate,
        // the rollback's included, with every answer healthy.
        let checks = successes.map_or(Duration::ZERO, |n| interval.unwrap_or_default() * n.saturating_sub(1));
        if grace + soak >= deadline {
            p.add(
                "health-deadline",
                format!(
                    "{} leaves no time for checks after {} ({}) and {} ({})",
                    human(deadline),
                    p.name("health-grace"),
                    human(grace),
                    p.name("health-soak"),
                    human(soak)
                ),
                format!(
                    "Raise {} or lower {} or {}.",
                    p.name("health-deadline"),
                    p.name("health-grace"),
                    p.name("health-soak")
                ),
            );
        } else if grace + checks + soak >= deadline {
            let (n, every) = (successes.unwrap_or(1), interval.unwrap_or_default());
            p.add(
                "health-deadline",
                format!(
                    "{} cannot hold {n} consecutive checks {} apart ({}{} {n} × {} {}, so the last check would start at {}{}), so the gate could never pass",
                    human(deadline),
                    human(every),
                    match grace.is_zero() {
                        true => String::new(),
                        false => format!("{} {}, then ", p.name("health-grace"), human(grace)),
                    },
                    p.name("health-successes"),
                    p.name("health-interval"),
                    human(every),
                    human(grace + checks),
                    match soak.is_zero() {
                        true => String::new(),
                        false => format!(" and {} {} must follow it", p.name("health-soak"), human(soak)),
                    }
                ),
                format!(
                    "Raise {} above {}, or lower {} or {}.",
                    p.name("health-deadline"),
                    human(grace + checks + soak),
                    p.name("health-interval"),
                    p.name("health-successes")
                ),
            );
        }
    }

    let version = match (version_url.or(url.clone()), expect_version) {
        (Some(u), Some(v)) => Some((u, v)),
        _ => None,
    };
    Some(HealthConfig {
        url: url?,
        expect_status: expect_status?,
        check_string,
        version,
        successes: successes?,
        interval: interval?,
        timeout: timeout?,
        deadline: deadline?,
        grace: grace?,
        soak: soak?,
        headers,
        probe_first: probe_first?,
        surface: p.surface(),
        guessed: false,
    })
}

fn parse_command(text: &str) -> Result<Command, String> {
    match text.to_ascii_lowercase().as_str() {
        "deploy" => Ok(Command::Deploy),
        "rollback" => Ok(Command::Rollback),
        "redeploy" => Ok(Command::Redeploy),
        "plan" => Ok(Command::Plan),
        _ => Err(format!("'{text}' is not a command")),
    }
}

fn valid_app_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 63 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A health URL: http or https with a host. Plain http is fine here: the app may sit
/// behind a private address, and no secret travels with a health check.
pub(crate) fn parse_probe_url(text: &str) -> Result<url::Url, String> {
    refuse_hidden_characters(text, "a URL", false)?;
    let u = url::Url::parse(text).map_err(|e| format!("'{text}' is not a URL ({e})"))?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none_or(str::is_empty) {
        return Err(format!("'{text}' is not an http:// or https:// URL"));
    }
    Ok(u)
}

/// A URL (or a name) with a line break, a tab or another control character: the URL
/// parser would quietly drop some of them and use what is left, which is not what was
/// written; in a name it would break the log line it is said in. The text itself is not
/// repeated: a URL may carry a password or a token in its query.
fn refuse_hidden_characters(text: &str, what: &str, spaces: bool) -> Result<(), String> {
    // A release's name may have spaces ("web:2 (…)", as the ledger keeps it).
    match text.char_indices().find(|(_, c)| c.is_control() || (c.is_whitespace() && !(spaces && *c == ' '))) {
        Some((at, c)) => Err(format!(
            "contains {} at character {}, which {what} cannot hold",
            match c {
                '\n' | '\r' => "a line break",
                ' ' => "a space",
                '\t' => "a tab",
                _ => "a control character",
            },
            text[..at].chars().count() + 1
        )),
        None => Ok(()),
    }
}

fn parse_headers(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("line '{line}' has no ':'"));
        };
        let name = name.trim();
        let value = value.trim();
        let token_char = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if name.is_empty() || !name.chars().all(token_char) {
            return Err(format!("'{name}' is not a header name"));
        }
        if value.chars().any(|c| c.is_control() && c != '\t') || !value.is_ascii() {
            return Err(format!("the value of header '{name}' has characters a header cannot carry"));
        }
        out.push((name.to_string(), value.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(pairs: &[(&str, &str)]) -> RawInputs {
        RawInputs::of(pairs)
    }

    fn good() -> Vec<(&'static str, &'static str)> {
        vec![
            ("provider", "memory"),
            ("app", "web"),
            ("image", "registry.example.com/web:2"),
            ("health-url", "http://127.0.0.1:8080/health"),
            ("api-url", "file:///tmp/state.json"),
        ]
    }

    fn inputs_with_problems(pairs: &[(&str, &str)]) -> Vec<&'static str> {
        let mut all = good();
        all.extend_from_slice(pairs);
        match Config::from_inputs(&raw(&all)) {
            Ok(_) => vec![],
            Err(errors) => errors.iter().map(|e| e.input).collect(),
        }
    }

    #[test]
    fn a_minimal_deploy_config_is_valid_with_defaults() {
        let c = Config::from_inputs(&raw(&good())).expect("valid");
        assert_eq!(c.command, Command::Deploy);
        assert_eq!(c.health.successes, 3);
        assert_eq!(c.health.interval, Duration::from_secs(5));
        assert!(c.health.expect_status.contains(200));
        assert!(!c.health.expect_status.contains(204));
        assert!(c.rollback);
        assert_eq!(c.batch_gate, BatchGate::First);
    }

    #[test]
    fn status_sets_take_codes_and_classes() {
        let s = StatusSet::parse("200, 204,3xx").unwrap();
        assert!(s.contains(200) && s.contains(204) && s.contains(301));
        assert!(!s.contains(500));
        assert_eq!(s.to_string(), "200,204,3xx");
        for bad in ["20", "600", "9xx", "2xxx", "ok", ""] {
            assert!(StatusSet::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn every_problem_is_reported_at_once_each_naming_its_input() {
        let errors = Config::from_inputs(&raw(&[
            ("health-interval", "-5s"),
            ("health-timeout", "1e99"),
            ("expect-status", "2oo"),
            ("rollback", "yes"),
        ]))
        .unwrap_err();
        let names: Vec<_> = errors.iter().map(|e| e.input).collect();
        for expected in
            ["provider", "app", "image", "health-url", "health-interval", "health-timeout", "expect-status", "rollback"]
        {
            assert!(names.contains(&expected), "{expected} missing from {names:?}");
        }
        assert!(errors.iter().all(|e| !e.fix.is_empty()));
    }

    #[test]
    fn urls_without_a_scheme_are_refused() {
        assert_eq!(inputs_with_problems(&[("health-url", "app.example.com/health")]), vec!["health-url"]);
        assert_eq!(inputs_with_problems(&[("health-url", "ftp://x/health")]), vec!["health-url"]);
    }

    #[test]
    fn version_url_needs_an_expected_version() {
        assert_eq!(inputs_with_problems(&[("version-url", "http://127.0.0.1/version")]), vec!["expect-version"]);
        let mut all = good();
        all.push(("expect-version", "abc123"));
        let c = Config::from_inputs(&raw(&all)).unwrap();
        let (u, v) = c.health.version.unwrap();
        assert_eq!(u.as_str(), "http://127.0.0.1:8080/health", "defaults to health-url");
        assert_eq!(v, "abc123");
    }

    #[test]
    fn grace_and_soak_must_leave_room_inside_the_deadline() {
        assert_eq!(
            inputs_with_problems(&[("health-deadline", "1m"), ("health-grace", "40s"), ("health-soak", "30s")]),
            vec!["health-deadline"]
        );
    }

    #[test]
    fn health_settings_that_can_never_pass_are_refused_before_any_request() {
        // Three checks 5 s apart need 10 s; a 2 s deadline would fail every gate,
        // the rollback's too, with every answer healthy.
        assert_eq!(
            inputs_with_problems(&[("health-interval", "5s"), ("health-deadline", "2s")]),
            vec!["health-deadline"]
        );
        let mut all = good();
        all.extend([("health-interval", "5s"), ("health-deadline", "2s")]);
        let errors = Config::from_inputs(&raw(&all)).unwrap_err();
        assert_eq!(
            errors[0].to_string(),
            "input 'health-deadline': 2s cannot hold 3 consecutive checks 5s apart (health-successes 3 × health-interval 5s, so the last check would start at 10s), so the gate could never pass. Raise health-deadline above 10s, or lower health-interval or health-successes."
        );
        // With the soak after them too; and one check fits any deadline past grace and soak.
        assert_eq!(
            inputs_with_problems(&[("health-interval", "10s"), ("health-deadline", "30s"), ("health-soak", "15s")]),
            vec!["health-deadline"]
        );
        assert!(inputs_with_problems(&[("health-interval", "5s"), ("health-deadline", "11s")]).is_empty());
        assert!(inputs_with_problems(&[
            ("health-interval", "5s"),
            ("health-deadline", "2s"),
            ("health-successes", "1")
        ])
        .is_empty());
    }

    #[test]
    fn a_url_or_a_text_the_log_says_with_a_line_break_or_a_control_character_is_refused_not_cleaned() {
        for bad in [
            "http://127.0.0.1:8080/hea\r\nlth",
            "http://127.0.0.1:8080/health\nX-Injected: 1",
            "http://127.0.0.1/\tx",
            "http://127.0.0.1/a b",
        ] {
            assert_eq!(inputs_with_problems(&[("health-url", bad)]), vec!["health-url"], "{bad:?}");
            assert_eq!(inputs_with_problems(&[("version-url", bad), ("expect-version", "v2")]), vec!["version-url"]);
            assert_eq!(inputs_with_problems(&[("environment-url", bad)]), vec!["environment-url"]);
        }
        for bad in ["nope\n::error title=INJ::x", "o\rk", "v2\u{1b}[31m"] {
            assert_eq!(inputs_with_problems(&[("check-string", bad)]), vec!["check-string"], "{bad:?}");
            let version = [("version-url", "http://127.0.0.1/version"), ("expect-version", bad)];
            assert_eq!(inputs_with_problems(&version), vec!["expect-version"], "{bad:?}");
        }
        let mut fly = good();
        fly.retain(|(k, _)| *k != "provider" && *k != "api-url");
        fly.extend([("provider", "fly"), ("token", "t"), ("api-url", "http://127.0.0.1:4280/v1\r\nX: y")]);
        let errors = Config::from_inputs(&raw(&fly)).unwrap_err();
        assert_eq!(errors.iter().map(|e| e.input).collect::<Vec<_>>(), vec!["api-url"]);
        assert!(errors[0].to_string().contains("a line break"), "{}", errors[0]);

        // A name is said in log lines: each hidden character is named for what it is.
        let mut image = good();
        image.retain(|(k, _)| *k != "image");
        image.push(("image", "web:v2\u{1b}[31m"));
        let errors = Config::from_inputs(&raw(&image)).unwrap_err();
        assert!(errors[0].to_string().contains("a control character at character 7"), "{}", errors[0]);
        let mut to = good();
        to.extend([("command", "rollback"), ("to", "web:v1\nfoo")]);
        let errors = Config::from_inputs(&raw(&to)).unwrap_err();
        assert_eq!(errors.iter().map(|e| e.input).collect::<Vec<_>>(), vec!["to"]);
        assert!(errors[0].to_string().contains("a line break at character 7"), "{}", errors[0]);
        // A problem that quotes the value is one line, whatever the value held.
        let mut app = good();
        app.retain(|(k, _)| *k != "app");
        app.push(("app", "web\n::error::forged"));
        let errors = Config::from_inputs(&raw(&app)).unwrap_err();
        assert!(!errors[0].to_string().contains('\n'), "{}", errors[0]);
        assert!(errors[0].to_string().contains("'web\\n::error::forged'"), "{}", errors[0]);
        // A release's name as the ledger keeps it has spaces, and is taken.
        let mut label = good();
        label.extend([("command", "rollback"), ("to", "web:2 (registry.example.com/web:2)")]);
        assert!(Config::from_inputs(&raw(&label)).is_ok());
    }

    #[test]
    fn health_headers_are_name_value_lines() {
        assert_eq!(
            parse_headers("Host: app.example.com\n\nX-Probe: 1").unwrap(),
            vec![("Host".into(), "app.example.com".into()), ("X-Probe".into(), "1".into())]
        );
        assert!(parse_headers("no colon here").is_err());
        assert!(parse_headers("Bad Name: x").is_err());
        assert!(parse_headers("X: caf\u{e9}").is_err());
    }

    #[test]
    fn unicode_and_control_bytes_never_panic() {
        for v in ["\u{0}", "🚀", "\u{202e}evil", "a\u{7f}", "%00", "\n\n"] {
            for name in crate::inputs::INPUTS.iter().map(|i| i.name) {
                let mut all = good();
                all.push((name, v));
                let _ = Config::from_inputs(&raw(&all));
            }
        }
    }

    #[test]
    fn rollback_needs_no_image_but_deploy_does() {
        let mut pairs: Vec<_> = good().into_iter().filter(|(k, _)| *k != "image").collect();
        pairs.push(("command", "rollback"));
        assert!(Config::from_inputs(&raw(&pairs)).is_ok());
        assert_eq!(inputs_with_problems(&[("command", "undeploy")]), vec!["command"]);
    }

    #[test]
    fn an_input_of_another_provider_is_named_and_refused() {
        assert_eq!(inputs_with_problems(&[("strategy", "canary")]), vec!["strategy"]);
        assert_eq!(inputs_with_problems(&[("batch-gate", "sometimes")]), vec!["batch-gate"]);
    }

    #[test]
    fn the_batch_gate_runs_between_batches_as_chosen() {
        let gated = |g: BatchGate, n: usize| (0..n).filter(|i| g.gates(*i, n)).collect::<Vec<_>>();
        assert_eq!(gated(BatchGate::First, 3), vec![0]);
        assert_eq!(gated(BatchGate::Every, 3), vec![0, 1]);
        assert!(gated(BatchGate::End, 3).is_empty());
        assert!(gated(BatchGate::First, 1).is_empty(), "one batch: the final gate is the only one");
    }

    #[test]
    fn tokens_with_control_characters_are_bad_input() {
        assert_eq!(inputs_with_problems(&[("github-token", "ghs_abcdef\n")]), Vec::<&str>::new(), "trimmed");
        assert_eq!(inputs_with_problems(&[("github-token", "ghs_abc\u{0}def")]), vec!["github-token"]);
        assert_eq!(inputs_with_problems(&[("github-token", "ghs_abc\ndef")]), vec!["github-token"]);
    }

    #[test]
    fn the_app_url_is_environment_url_else_the_health_urls_origin() {
        let c = Config::from_inputs(&raw(&good())).unwrap();
        assert_eq!(c.app_url(), "http://127.0.0.1:8080");
        let mut all = good();
        all.push(("environment-url", "https://shop.example.com"));
        assert_eq!(Config::from_inputs(&raw(&all)).unwrap().app_url(), "https://shop.example.com/");
    }

    #[test]
    fn on_the_command_line_every_message_names_flags() {
        let mut all = good();
        all.extend([("version-url", "http://127.0.0.1/version"), ("health-grace", "5m"), ("strategy", "canary")]);
        let mut cli = raw(&all);
        cli.set_surface(Surface::Cli);
        let errors = Config::from_inputs(&cli).unwrap_err();
        let text: Vec<String> = errors.iter().map(InputError::to_string).collect();
        assert!(text.contains(&"--expect-version: is required when --version-url is set. Set it to the version the new release reports, e.g. $(git rev-parse HEAD).".to_string()), "{text:#?}");
        assert!(text.iter().any(|t| t.starts_with("--health-deadline: 5m leaves no time for checks after --health-grace (5m) and --health-soak (0ms). Raise --health-deadline")), "{text:#?}");
        assert!(text.contains(&"--strategy: applies to provider fly only, and --provider is memory. Remove it, or set --provider fly.".to_string()), "{text:#?}");
        assert!(errors.iter().all(|e| e.label().starts_with("--")));

        // The same inputs from a workflow name the action's inputs.
        let errors = Config::from_inputs(&raw(&all)).unwrap_err();
        let text: Vec<String> = errors.iter().map(InputError::to_string).collect();
        assert!(
            text.iter().any(|t| t.starts_with("input 'expect-version': is required when version-url is set.")),
            "{text:#?}"
        );
        assert!(text.iter().any(|t| t.starts_with("input 'strategy': applies to provider fly only, and provider is memory. Remove it, or set provider: fly.")), "{text:#?}");
        assert!(text.iter().all(|t| !t.contains("--")), "{text:#?}");
    }
}
