//! The action's inputs, defined once.
//!
//! `action.yml`, the CLI flags and the table in docs/inputs.md all come from [`INPUTS`]: the
//! shared inputs here and each provider's own, which its `Registration` carries; a test
//! reads `action.yml` and fails when the two disagree. This module only gathers raw
//! strings, and says how a bad one is wrong: what they mean is `config`'s business.

use std::collections::BTreeMap;
use std::sync::LazyLock;

mod problems;
mod values;

pub use problems::{InputError, Problems};
pub use values::{
    check_base_url, human, is_loopback, parse_bool, parse_duration, parse_positive_duration, DURATION_FIX,
};

/// One input of the action, as `action.yml` declares it.
#[derive(Debug, Clone, Copy)]
pub struct InputSpec {
    pub name: &'static str,
    pub description: &'static str,
    /// The default `action.yml` declares; `""` means none.
    pub default: &'static str,
    /// Declared `required: true` (the runner does not enforce it; `config` does).
    pub required: bool,
    /// Masked before anything is printed, and never written to outputs or summaries.
    pub secret: bool,
    /// The providers this input belongs to; empty for inputs every provider shares.
    pub providers: &'static [&'static str],
    /// What its value is: how the flag parses, and how `config` reads it.
    pub kind: Kind,
    /// Where its flag stands in `--help`. Not in `action.yml`, which has no groups.
    pub group: Group,
}

/// What kind of value an input takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Text, checked by `config`.
    Text,
    /// `true` or `false`. On the command line a flag that needs no value: `--dry-run`
    /// alone means true, and `--dry-run=false` is accepted too.
    Bool,
    /// A duration, read by `config::parse_duration`: a number with a unit (`500ms`,
    /// `10s`, `5m`, `1h30m`) or a bare number of seconds (`30`), at most 24h.
    Duration,
}

/// The headings of `--help`, in the order they are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Group {
    What,
    Health,
    Analysis,
    Rollout,
    /// A provider's own inputs, under its heading (its title, or one its kind shares:
    /// "Hosts over SSH").
    Provider(&'static str),
    GitHub,
    Output,
}

impl Group {
    pub fn heading(self) -> &'static str {
        match self {
            Group::What => "What to deploy",
            Group::Rollout => "Roll-out and rollback",
            Group::Health => "Health checks",
            Group::Analysis => "Analysis: serving as well as the live release",
            Group::Provider(heading) => heading,
            Group::GitHub => "GitHub",
            Group::Output => "Output files",
        }
    }
}

const fn declare(group: Group, name: &'static str, default: &'static str, description: &'static str) -> InputSpec {
    InputSpec { name, description, default, required: false, secret: false, providers: &[], kind: Kind::Text, group }
}

const fn what(name: &'static str, default: &'static str, description: &'static str) -> InputSpec {
    declare(Group::What, name, default, description)
}

const fn rollout(name: &'static str, default: &'static str, description: &'static str) -> InputSpec {
    declare(Group::Rollout, name, default, description)
}

const fn health(name: &'static str, default: &'static str, description: &'static str) -> InputSpec {
    declare(Group::Health, name, default, description)
}

const fn analysis(name: &'static str, default: &'static str, description: &'static str) -> InputSpec {
    declare(Group::Analysis, name, default, description)
}

const fn github(name: &'static str, default: &'static str, description: &'static str) -> InputSpec {
    declare(Group::GitHub, name, default, description)
}

const fn output(name: &'static str, default: &'static str, description: &'static str) -> InputSpec {
    declare(Group::Output, name, default, description)
}

/// An input only `providers` read, shown under `group`: how a provider declares its
/// own inputs (`Registration::inputs`).
pub const fn of(
    providers: &'static [&'static str],
    group: Group,
    name: &'static str,
    default: &'static str,
    description: &'static str,
) -> InputSpec {
    InputSpec { providers, ..declare(group, name, default, description) }
}

impl InputSpec {
    pub const fn secret(self) -> InputSpec {
        InputSpec { secret: true, ..self }
    }

    const fn required(self) -> InputSpec {
        InputSpec { required: true, ..self }
    }

    pub const fn boolean(self) -> InputSpec {
        InputSpec { kind: Kind::Bool, ..self }
    }

    pub const fn duration(self) -> InputSpec {
        InputSpec { kind: Kind::Duration, ..self }
    }
}

/// Who a run's inputs came from, and so how a message names them: the action's inputs
/// (`health-url`, set in a workflow's `with:`) or the command line's flags
/// (`--health-url`). Every message that names an input goes through [`Surface::name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Surface {
    /// The action's main or post step: inputs from `INPUT_*` variables.
    #[default]
    Action,
    /// A subcommand: inputs from flags.
    Cli,
}

impl Surface {
    /// How a message names an input: `health-url`, or `--health-url`.
    pub fn name(self, input: &str) -> String {
        match self {
            Surface::Action => input.to_string(),
            Surface::Cli => format!("--{input}"),
        }
    }

    /// How a message says to set an input: `dry-run: true`, or `--dry-run`.
    pub fn setting(self, input: &str, value: &str) -> String {
        match self {
            Surface::Action => format!("{input}: {value}"),
            Surface::Cli if value == "true" && INPUTS.iter().any(|i| i.name == input && i.kind == Kind::Bool) => {
                format!("--{input}")
            }
            Surface::Cli if value.contains(char::is_whitespace) => format!("--{input} '{value}'"),
            Surface::Cli if INPUTS.iter().any(|i| i.name == input && i.kind == Kind::Bool) => {
                format!("--{input}={value}")
            }
            Surface::Cli => format!("--{input} {value}"),
        }
    }

    /// How a message names a command: `command redeploy`, or `safe-deploy redeploy`.
    pub fn command(self, command: &str) -> String {
        match self {
            Surface::Action => format!("command {command}"),
            Surface::Cli => format!("safe-deploy {command}"),
        }
    }

    /// The title of an error about an input: `input health-url`, or `--health-url`.
    pub fn label(self, input: &str) -> String {
        match self {
            Surface::Action => format!("input {input}"),
            Surface::Cli => self.name(input),
        }
    }
}

/// The inputs every provider shares, before the providers' own.
const HEAD: &[InputSpec] = &[
    what("command", "deploy", "What to do: deploy (roll out image), rollback (put an earlier release back), redeploy (deploy the release named by to again) or plan (show what a deploy would do, change nothing)."),
    what("provider", "", "Where the app runs: fly (Fly.io Machines), heroku (Heroku Platform API, Cedar or Fir), digitalocean (DigitalOcean App Platform), digitalocean-droplets (containers on DigitalOcean Droplets behind a DigitalOcean load balancer, over SSH), ssh (containers on any hosts behind any balancer, over SSH), ecs (an AWS ECS service behind an Application Load Balancer), or memory (the built-in provider double of the CLI and the tests, not in the action's image; its api-url is a file:// path to its state).").required(),
    what("app", "", "The application's name at the provider (ecs: the service). Required, except with fly when fly.toml names it and with ecs when service does."),
    what("token", "", "API token for the provider. Pass it from a secret; it is masked and never printed. Empty: the provider's usual variable (FLY_ACCESS_TOKEN or FLY_API_TOKEN for fly, HEROKU_API_KEY for heroku, DIGITALOCEAN_ACCESS_TOKEN for digitalocean and digitalocean-droplets; ssh and ecs need none: ecs signs with AWS keys).").secret(),
    what("image", "", "The release to deploy: a container image reference such as registry.example.com/app:1.2.3 (heroku: the image ID, sha256:..., of an image pushed to registry.heroku.com/APP/web; digitalocean: registry.digitalocean.com/REGISTRY/REPO, ghcr.io or Docker Hub, best by digest). Required by deploy and plan, except with heroku, which deploys the source when it is empty, and digitalocean, which then builds the app's git sources again."),
    what("to", "", "rollback and redeploy: the release to go to, in the provider's terms (a Fly image) or a commit SHA safe-deploy deployed before (looked up in the GitHub deployment ledger). Empty with rollback: the last release that deployed successfully before the live one."),
    health("health-url", "", "URL that must answer healthy once the new version is rolled out, e.g. https://app.example.com/health. Required, except with fly, where it defaults to https://APP.fly.dev plus the check path in fly.toml."),
    health("expect-status", "200", "Status codes that count as healthy: codes and classes separated by commas, e.g. 200,204 or 2xx."),
    health("check-string", "", "Text the health response body must contain."),
    health("version-url", "", "URL whose body must name expect-version: proof that the new version, not the old one, answers. Defaults to health-url when expect-version is set."),
    health("expect-version", "", "The version the new release reports, e.g. the commit SHA or tag it was built from."),
    health("health-successes", "3", "Consecutive healthy answers needed to pass."),
    health("health-interval", "5s", "Wait between two health checks (e.g. 2s, 500ms, 1m).").duration(),
    health("health-timeout", "10s", "Time limit of one health request.").duration(),
    health("health-deadline", "5m", "Time limit of the whole health gate, grace and soak included.").duration(),
    health("health-grace", "0s", "Wait before the first health check, for apps that warm up.").duration(),
    health("health-soak", "0s", "Keep checking this long after passing; any failure then fails the deploy.").duration(),
    health("health-probe", "true", "Before the first change of a deploy, check the health URL against what is live now: a closed port, a wrong host, a redirect, TLS on a plain port or a check string the live release already fails means the gate could never pass, so the deploy stops with nothing changed. false for a first deploy or an app that is down.").boolean(),
    health("health-headers", "", "Extra request headers for health checks, one 'Name: value' per line (e.g. a Host header)."),
    analysis("analysis", "false", "deploy: after the health gate, compare the new release with the live one. The health URL and analysis-urls are sampled at analysis-rate for analysis-window against the live release before the first change (the baseline) and against the new release after its health gate; the deploy rolls back when the new release's error rate or latency is worse by more than the limits below and a statistical test says the difference is not chance. Needs health-probe: true.").boolean(),
    analysis("analysis-urls", "", "More URLs of the app to sample, besides the health URL, one per line or separated by commas (e.g. the home page and an API route users call)."),
    analysis("analysis-window", "1m", "How long each side (baseline, then new release) is sampled.").duration(),
    analysis("analysis-rate", "5", "Requests a second while sampling, spread evenly over the URLs (0.1 to 100)."),
    analysis("analysis-min-samples", "100", "Answers each side needs for a verdict; fewer is a failure, never a pass. analysis-rate × analysis-window must reach it."),
    analysis("analysis-max-error-increase", "1%", "How much higher the new release's error rate (5xx or no answer) may be than the baseline's, in percentage points (1% or 0.01)."),
    analysis("analysis-percentile", "95", "The latency percentile compared: 50, 90, 95 or 99."),
    analysis("analysis-max-latency-ratio", "1.5", "How many times the baseline's latency percentile the new release's may be."),
    analysis("analysis-min-latency-increase", "25ms", "A latency increase smaller than this is never a failure, whatever the ratio: milliseconds of noise on a fast app are not a regression.").duration(),
    analysis("analysis-prometheus-url", "", "Prometheus's base URL (https://prometheus.example.com): with analysis-query and analysis-max, an instant query after the new release has served analysis-window, which fails the deploy when any value is over analysis-max, or when the query finds no data."),
    analysis("analysis-query", "", "The PromQL instant query, e.g. sum(rate(http_requests_total{code=~\"5..\"}[1m])) / sum(rate(http_requests_total[1m]))."),
    analysis("analysis-max", "", "The most the query may give (a number)."),
    analysis("analysis-web-url", "", "A URL whose answer must meet analysis-web-success after the new release has served analysis-window, as Argo Rollouts' web provider (health-headers are sent with it)."),
    analysis("analysis-web-json-path", "", "Where in the web check's JSON answer the value is, as a JSON path (RFC 9535), e.g. $.data.successRate; it must find one value. Empty: the whole answer."),
    analysis("analysis-web-success", "", "The condition the value must meet: a comparison and a number, true, false or a quoted text, e.g. '>= 0.99' or '== \"ok\"' (Argo's 'result >= 0.99' is read too)."),
    rollout("rollback", "true", "Put the previous release back by itself when the deploy fails (true or false).").boolean(),
    rollout("rollback-timeout", "5m", "Time limit of a rollback. Until then it keeps going through a flaky API, instance by instance, until every instance is back on the recorded release; what is not back by then is left for the post step (or safe-deploy post) to finish.").duration(),
    rollout("batch-gate", "first", "Where the roll-out has batches (machines, hosts), when the health gate also runs against only the instances just changed, before any other is touched: first (after the first batch), every (after each batch) or end (only once everything is rolled out). The gate always runs at the end too."),
];

/// The inputs every provider shares, after the providers' own.
const TAIL: &[InputSpec] = &[
    rollout("deploy-timeout", "10m", "Time limit for the provider's part: preparing, rolling out and waiting until the platform reports the new version up. Health gates are not counted.").duration(),
    what("dry-run", "false", "true: plan only; nothing is changed.").boolean(),
    github("github-token", "", "Token for GitHub Deployments, e.g. ${{ github.token }} with permissions deployments: write. Each run is then recorded as a deployment with statuses, and rollback finds earlier releases there. GitHub failing never fails a deploy: it becomes a warning.").secret(),
    github("environment", "production", "The environment this deploy is for: the GitHub deployment's environment, and the ledger rollback looks in."),
    github("environment-url", "", "The app's public URL, for the GitHub deployment and the summary. Empty: the origin of health-url."),
    github("transient-environment", "false", "GitHub Deployments: the environment goes away later (e.g. a review app).").boolean(),
    github("production-environment", "", "GitHub Deployments: whether this is a production environment (true or false). Empty: GitHub's default, true only for an environment named production.").boolean(),
    what("api-url", "", "Override the provider's API base URL (https, or http on loopback only)."),
    output("summary", "true", "Write the job summary (true or false).").boolean(),
];

/// Every input of the action, in `action.yml`'s order: the shared ones, with each
/// registered provider's own (`Registration::inputs`) in the registry's order between;
/// an input two providers share is listed once.
pub static INPUTS: LazyLock<Vec<InputSpec>> = LazyLock::new(|| {
    let mut all: Vec<InputSpec> = HEAD.to_vec();
    let provided = crate::providers::registry::PROVIDERS.iter().flat_map(|r| r.inputs.iter().copied().flatten());
    for row in provided {
        if !all.iter().any(|a| a.name == row.name) {
            all.push(*row);
        }
    }
    all.extend_from_slice(TAIL);
    all
});

/// The spec of an input by name. Panics only on a name that is not in the table,
/// which is a bug in this crate, never a user's input.
pub fn spec(name: &str) -> &'static InputSpec {
    INPUTS.iter().find(|i| i.name == name).unwrap_or_else(|| panic!("bug: input {name} is not declared in INPUTS"))
}

/// The environment variable the runner sets for an input: upper case, hyphens kept.
pub fn env_name(name: &str) -> String {
    format!("INPUT_{}", name.replace(' ', "_").to_uppercase())
}

/// Raw input values, trimmed, with empty ones left out (the runner sets every declared
/// input, so "empty" and "unset" cannot be told apart).
#[derive(Debug, Clone, Default)]
pub struct RawInputs {
    values: BTreeMap<&'static str, String>,
    surface: Surface,
}

impl RawInputs {
    /// Reads every declared input from `INPUT_*` variables through `lookup`.
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let mut raw = RawInputs::default();
        for spec in INPUTS.iter() {
            if let Some(value) = lookup(&env_name(spec.name)) {
                raw.set(spec.name, value);
            }
        }
        raw
    }

    /// Inputs from name-value pairs (tests, the demo).
    pub fn of(pairs: &[(&str, &str)]) -> RawInputs {
        let mut raw = RawInputs::default();
        for (name, value) in pairs {
            raw.set(name, *value);
        }
        raw
    }

    /// Who gave these inputs: how messages name them.
    pub fn surface(&self) -> Surface {
        self.surface
    }

    pub fn set_surface(&mut self, surface: Surface) {
        self.surface = surface;
    }

    /// Sets one value; an empty or blank value unsets it.
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        let spec = spec(name);
        let value = value.into();
        let trimmed = value.trim();
        if trimmed.is_empty() {
            self.values.remove(spec.name);
        } else {
            self.values.insert(spec.name, trimmed.to_string());
        }
    }

    /// The value given, or the declared default, or `None`.
    pub fn get(&self, name: &str) -> Option<&str> {
        let spec = spec(name);
        self.values.get(spec.name).map(String::as_str).or((!spec.default.is_empty()).then_some(spec.default))
    }

    /// Whether the caller gave a value other than the declared default. The runner
    /// sets every declared input, at its default when the workflow leaves it out, so a
    /// default value must read as "not given".
    pub fn given(&self, name: &str) -> bool {
        let spec = spec(name);
        self.values.get(spec.name).is_some_and(|v| v != spec.default)
    }

    /// Every secret value given, for masking before anything is printed.
    pub fn secrets(&self) -> impl Iterator<Item = &str> {
        INPUTS.iter().filter(|s| s.secret).filter_map(|s| self.values.get(s.name).map(String::as_str))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_keep_their_hyphens() {
        assert_eq!(env_name("health-url"), "INPUT_HEALTH-URL");
        assert_eq!(env_name("dry-run"), "INPUT_DRY-RUN");
    }

    #[test]
    fn an_empty_value_means_unset_and_the_default_applies() {
        let raw = RawInputs::from_env(|k| match k {
            "INPUT_EXPECT-STATUS" => Some("  ".into()),
            "INPUT_APP" => Some(" web \n".into()),
            _ => None,
        });
        assert_eq!(raw.get("expect-status"), Some("200"));
        assert!(!raw.given("expect-status"));
        assert_eq!(raw.get("app"), Some("web"));
        assert_eq!(raw.get("check-string"), None);
    }

    #[test]
    fn every_input_has_the_kind_its_default_says() {
        for spec in INPUTS.iter() {
            let looks_bool = matches!(spec.default, "true" | "false");
            let looks_duration = spec.default.ends_with(['s', 'm', 'h'])
                && spec.default.starts_with(|c: char| c.is_ascii_digit())
                && parse_duration(spec.default).is_ok();
            match spec.kind {
                Kind::Bool => assert!(looks_bool || spec.default.is_empty(), "{}: a bool's default", spec.name),
                Kind::Duration => assert!(looks_duration, "{}: a duration's default must parse", spec.name),
                Kind::Text => assert!(!looks_bool && !looks_duration, "{} looks like a bool or a duration", spec.name),
            }
        }
        // An empty default cannot tell: the one tri-state bool is named here.
        assert_eq!(spec("production-environment").kind, Kind::Bool);
    }

    #[test]
    fn a_provider_input_is_shown_under_its_providers_heading() {
        use crate::providers::registry;
        for spec in INPUTS.iter().filter(|i| !i.providers.is_empty()) {
            let titles: Vec<&str> = spec.providers.iter().filter_map(|p| registry::find(p)).map(|r| r.title).collect();
            match (spec.providers, spec.group) {
                ([_], Group::Provider(heading)) => assert_eq!(titles, [heading], "{}", spec.name),
                // An input several providers share: a roll-out setting, or under one of theirs.
                (_, Group::Rollout) => {}
                (_, Group::Provider(heading)) => assert!(titles.contains(&heading), "{}: {heading}", spec.name),
                (_, other) => panic!("{}: a provider's input under {other:?}", spec.name),
            }
        }
        // Every provider's own inputs are among them, and no input is declared twice.
        let mut names: Vec<&str> = INPUTS.iter().map(|i| i.name).collect();
        names.sort_unstable();
        let all = names.len();
        names.dedup();
        assert_eq!(names.len(), all);
        for r in registry::PROVIDERS {
            for row in r.inputs.iter().copied().flatten() {
                assert!(INPUTS.iter().any(|i| i.name == row.name && i.providers.contains(&r.name)), "{}", row.name);
            }
        }
    }

    #[test]
    fn a_message_names_the_input_or_the_flag() {
        assert_eq!(Surface::Action.name("health-url"), "health-url");
        assert_eq!(Surface::Cli.name("health-url"), "--health-url");
        assert_eq!(Surface::Action.label("health-url"), "input health-url");
        assert_eq!(Surface::Cli.label("health-url"), "--health-url");
        assert_eq!(Surface::Action.setting("insecure-ignore-host-key", "true"), "insecure-ignore-host-key: true");
        assert_eq!(Surface::Cli.setting("insecure-ignore-host-key", "true"), "--insecure-ignore-host-key");
        assert_eq!(Surface::Cli.setting("rollback", "false"), "--rollback=false");
        assert_eq!(Surface::Cli.setting("provider", "fly"), "--provider fly");
        assert_eq!(Surface::Cli.command("redeploy"), "safe-deploy redeploy");
    }

    #[test]
    fn secrets_lists_only_secret_inputs() {
        let mut raw = RawInputs::default();
        raw.set("token", "tok-123");
        raw.set("app", "web");
        assert_eq!(raw.secrets().collect::<Vec<_>>(), vec!["tok-123"]);
    }
}
