//! Fly's own inputs and fly.toml: the strategy, batch size, release command, and the
//! machine config fly.toml describes. Inputs override fly.toml; fly.toml fills the
//! shared inputs `app` and `health-url` when they are empty.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::fly_toml::FlyToml;
use super::FlyProvider;
use crate::http::HttpClient;
use crate::inputs::RawInputs;
use crate::inputs::{parse_positive_duration, InputError, Problems, DURATION_FIX};
use crate::providers::batches::{BatchSize, BATCH_SIZE_FIX};
use crate::providers::registration::{Account, ProviderSettings};

pub const STRATEGIES: &[&str] = &["rolling", "canary", "bluegreen", "immediate"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    Rolling,
    Canary,
    Bluegreen,
    Immediate,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Rolling => "rolling",
            Strategy::Canary => "canary",
            Strategy::Bluegreen => "bluegreen",
            Strategy::Immediate => "immediate",
        }
    }

    fn parse(text: &str) -> Result<Strategy, String> {
        match text.to_ascii_lowercase().as_str() {
            "rolling" => Ok(Strategy::Rolling),
            "canary" => Ok(Strategy::Canary),
            "bluegreen" | "blue-green" => Ok(Strategy::Bluegreen),
            "immediate" => Ok(Strategy::Immediate),
            _ => Err(format!("'{text}' is not a strategy")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub strategy: Strategy,
    /// How many machines a rolling deploy replaces at once after the first.
    pub max_unavailable: BatchSize,
    pub release_command: Option<String>,
    pub release_command_timeout: Duration,
    /// Bluegreen: the pause before the blues are cordoned, and before they stop.
    pub bluegreen_wait: Duration,
    /// fly.toml, when the workspace has one: then it is the machine config.
    pub fly_toml: Option<FlyToml>,
    pub fly_toml_path: PathBuf,
}

impl ProviderSettings for Settings {
    fn build(&self, account: &Account, http: &HttpClient) -> anyhow::Result<Box<dyn crate::providers::Provider>> {
        let (base, token) = (account.api_base(super::client::DEFAULT_API)?, account.token);
        Ok(Box::new(FlyProvider::new(http.clone(), base, account.app, token, self.clone())?))
    }
}

/// fly.toml's path: `fly-config`, in the workspace.
fn toml_path(raw: &RawInputs, workspace: &Path) -> PathBuf {
    workspace.join(raw.get("fly-config").unwrap_or("fly.toml"))
}

/// Reads fly.toml. Missing is fine at the default path, an error at a path the caller
/// named (the runner passes the default whether the workflow named it or not).
fn load(raw: &RawInputs, workspace: &Path) -> Result<Option<FlyToml>, InputError> {
    let path = toml_path(raw, workspace);
    let surface = raw.surface();
    let problem = |problem: String| {
        let fix = format!("Fix fly.toml, or point {} at the right file.", surface.name("fly-config"));
        InputError::new(surface, "fly-config", problem, fix)
    };
    match FlyToml::load(&path).map_err(problem)? {
        Some(t) => Ok(Some(t)),
        None if raw.given("fly-config") => Err(InputError::new(
            surface,
            "fly-config",
            format!("{} does not exist", path.display()),
            format!(
                "Point {} at fly.toml in the workspace, or leave it empty to deploy only the image.",
                surface.name("fly-config")
            ),
        )),
        None => Ok(None),
    }
}

/// fly.toml's app and health check path, for the shared inputs left empty.
pub fn defaults(raw: &RawInputs, workspace: &Path) -> Result<Option<RawInputs>, InputError> {
    let toml = load(raw, workspace)?.unwrap_or_default();
    let mut merged = raw.clone();
    if !raw.given("app") {
        if let Some(app) = &toml.app {
            merged.set("app", app.clone());
        }
    }
    if !raw.given("health-url") {
        if let Some(app) = merged.get("app").map(str::to_string) {
            let path = toml.health_path().unwrap_or("/");
            let sep = if path.starts_with('/') { "" } else { "/" };
            merged.set("health-url", format!("https://{app}.fly.dev{sep}{path}"));
        }
    }
    Ok(Some(merged))
}

pub fn configure(raw: &RawInputs, workspace: &Path, p: &mut Problems) -> Option<Arc<dyn ProviderSettings>> {
    // A broken fly.toml was reported by `defaults` already.
    let toml = load(raw, workspace).ok().flatten();
    let deploy = toml.as_ref().map(|t| t.deploy.clone()).unwrap_or_default();
    let pick = |input: &str, from_toml: Option<String>| -> Option<String> {
        raw.get(input).filter(|_| raw.given(input)).map(str::to_string).or(from_toml)
    };
    let strategy = match pick("strategy", deploy.strategy.clone()) {
        None => Some(Strategy::Rolling),
        Some(text) => match Strategy::parse(&text) {
            Ok(s) => Some(s),
            Err(problem) => {
                p.add("strategy", problem, format!("Use one of: {}.", STRATEGIES.join(", ")));
                None
            }
        },
    };
    let max_unavailable = match pick("max-unavailable", deploy.max_unavailable.map(|f| f.to_string())) {
        None => Some(BatchSize::Fraction(0.33)),
        Some(text) => match BatchSize::parse(&text) {
            Ok(m) => Some(m),
            Err(problem) => {
                p.add("max-unavailable", problem, BATCH_SIZE_FIX);
                None
            }
        },
    };
    let release_command = pick("release-command", deploy.release_command.clone());
    let timeout_text = pick("release-command-timeout", deploy.release_command_timeout.clone())
        .or_else(|| raw.get("release-command-timeout").map(str::to_string))
        .unwrap_or_else(|| "5m".into());
    let release_command_timeout = match parse_positive_duration(&timeout_text) {
        Ok(d) => Some(d),
        Err(problem) => {
            p.add("release-command-timeout", problem, DURATION_FIX);
            None
        }
    };
    let bluegreen_wait = p.duration(raw, "bluegreen-wait", false);
    if strategy == Some(Strategy::Canary) && toml.as_ref().is_some_and(|t| !t.mounts.is_empty()) {
        p.add(
            "strategy",
            "canary cannot deploy an app with volumes (fly.toml has [[mounts]]): a canary would need a volume of its own",
            "Use rolling or immediate for apps with volumes.",
        );
    }
    Some(Arc::new(Settings {
        strategy: strategy?,
        max_unavailable: max_unavailable?,
        release_command,
        release_command_timeout: release_command_timeout?,
        bluegreen_wait: bluegreen_wait?,
        fly_toml: toml,
        fly_toml_path: toml_path(raw, workspace),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn raw(pairs: &[(&str, &str)]) -> RawInputs {
        RawInputs::of(pairs)
    }

    fn settings(c: &Config) -> String {
        format!("{:?}", c.settings)
    }

    #[test]
    fn fly_reads_fly_toml_and_inputs_override_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("fly.toml"),
            "app = \"shop\"\n[deploy]\nstrategy = \"canary\"\nrelease_command = \"migrate\"\n[[http_service.checks]]\npath = \"/up\"\n",
        )
        .unwrap();
        let base = [("provider", "fly"), ("token", "fm2_token"), ("image", "registry.fly.io/shop:2")];
        let c = Config::from_inputs_in(&raw(&base), dir.path()).expect("valid");
        assert_eq!(c.app, "shop");
        assert!(settings(&c).contains("strategy: Canary"), "{}", settings(&c));
        assert!(settings(&c).contains("release_command: Some(\"migrate\")"));
        assert_eq!(c.health.url.as_str(), "https://shop.fly.dev/up");

        let mut over = base.to_vec();
        over.extend([("app", "shop-staging"), ("strategy", "rolling"), ("max-unavailable", "2")]);
        let c = Config::from_inputs_in(&raw(&over), dir.path()).expect("valid");
        assert_eq!(c.app, "shop-staging");
        assert!(settings(&c).contains("strategy: Rolling") && settings(&c).contains("Count(2)"));
        assert_eq!(c.health.url.as_str(), "https://shop-staging.fly.dev/up");
        // A URL no one gave is named, as a guess, in every message about the check.
        assert!(c.health.guessed);
        let note = c.health.guess_note();
        assert!(
            note.contains("health-url was not given") && note.contains("https://shop-staging.fly.dev/up"),
            "{note}"
        );

        over.push(("health-url", "https://shop.example.com/up"));
        let c = Config::from_inputs_in(&raw(&over), dir.path()).expect("valid");
        assert!(!c.health.guessed && c.health.guess_note().is_empty());
    }

    #[test]
    fn fly_needs_a_token_and_a_broken_fly_toml_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("fly.toml"), "app = [").unwrap();
        let errors = Config::from_inputs_in(&raw(&[("provider", "fly"), ("image", "x:1")]), dir.path()).unwrap_err();
        let names: Vec<_> = errors.iter().map(|e| e.input).collect();
        assert!(names.contains(&"fly-config") && names.contains(&"token"), "{names:?}");
    }

    #[test]
    fn no_fly_toml_at_the_default_path_is_fine_but_a_named_one_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let base = [
            ("provider", "fly"),
            ("app", "web"),
            ("token", "fm2_token"),
            ("image", "x:1"),
            // As the runner passes it when the workflow leaves it out.
            ("fly-config", "fly.toml"),
        ];
        assert!(Config::from_inputs_in(&raw(&base), dir.path()).is_ok());
        let mut named = base.to_vec();
        named.push(("fly-config", "deploy/fly.production.toml"));
        let errors = Config::from_inputs_in(&raw(&named), dir.path()).unwrap_err();
        assert_eq!(errors[0].input, "fly-config");
        assert!(errors[0].problem.contains("does not exist"));
    }

    #[test]
    fn canary_is_refused_for_an_app_with_volumes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("fly.toml"),
            "app = \"db\"\n[[mounts]]\nsource = \"data\"\ndestination = \"/data\"\n",
        )
        .unwrap();
        let inputs = [("provider", "fly"), ("token", "fm2_token"), ("image", "x:1"), ("strategy", "canary")];
        let errors = Config::from_inputs_in(&raw(&inputs), dir.path()).unwrap_err();
        assert_eq!(errors.iter().map(|e| e.input).collect::<Vec<_>>(), vec!["strategy"]);
    }
}
