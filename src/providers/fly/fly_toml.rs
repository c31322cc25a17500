//! The parts of `fly.toml` a deploy needs: the app name, the health check path, and
//! the `[deploy]` section. Inputs override all of it.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
pub struct FlyToml {
    pub app: Option<String>,
    #[serde(default)]
    pub deploy: Deploy,
    pub http_service: Option<HttpService>,
    #[serde(default)]
    pub services: Vec<Service>,
    #[serde(default)]
    pub checks: BTreeMap<String, Check>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Deploy {
    pub strategy: Option<String>,
    pub release_command: Option<String>,
    pub max_unavailable: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct HttpService {
    #[serde(default)]
    pub checks: Vec<Check>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Service {
    #[serde(default)]
    pub http_checks: Vec<Check>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Check {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub path: Option<String>,
}

impl FlyToml {
    /// Reads `path`; `Ok(None)` when it does not exist.
    pub fn load(path: &Path) -> Result<Option<FlyToml>, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        toml::from_str(&text)
            .map(Some)
            .map_err(|e| format!("{} is not valid fly.toml: {}", path.display(), e.message()))
    }

    /// The path of the first HTTP check: `[http_service]`, then `[checks]`, then
    /// `[[services.http_checks]]`.
    pub fn health_path(&self) -> Option<&str> {
        let from_service = self.http_service.iter().flat_map(|s| &s.checks).find_map(|c| c.path.as_deref());
        let from_checks = || {
            self.checks
                .values()
                .filter(|c| c.kind.as_deref().is_none_or(|k| k == "http"))
                .find_map(|c| c.path.as_deref())
        };
        let from_services = || self.services.iter().flat_map(|s| &s.http_checks).find_map(|c| c.path.as_deref());
        from_service.or_else(from_checks).or_else(from_services)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_app_health_path_and_deploy_section_are_read() {
        let t: FlyToml = toml::from_str(
            r#"
app = "web"
primary_region = "ams"
[deploy]
  strategy = "bluegreen"
  release_command = "bin/migrate --all"
  max_unavailable = 0.5
[http_service]
  internal_port = 8080
  [[http_service.checks]]
    grace_period = "5s"
    path = "/healthz"
"#,
        )
        .unwrap();
        assert_eq!(t.app.as_deref(), Some("web"));
        assert_eq!(t.deploy.strategy.as_deref(), Some("bluegreen"));
        assert_eq!(t.deploy.release_command.as_deref(), Some("bin/migrate --all"));
        assert_eq!(t.deploy.max_unavailable, Some(0.5));
        assert_eq!(t.health_path(), Some("/healthz"));
    }

    #[test]
    fn top_level_checks_and_old_services_also_give_a_path() {
        let t: FlyToml = toml::from_str("[checks.alive]\ntype = \"http\"\npath = \"/up\"\n").unwrap();
        assert_eq!(t.health_path(), Some("/up"));
        let t: FlyToml = toml::from_str("[[services]]\n[[services.http_checks]]\npath = \"/ping\"\n").unwrap();
        assert_eq!(t.health_path(), Some("/ping"));
    }

    #[test]
    fn a_missing_file_is_none_and_a_broken_one_an_error() {
        assert!(FlyToml::load(Path::new("/nonexistent/fly.toml")).unwrap().is_none());
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("fly.toml");
        std::fs::write(&p, "app = [").unwrap();
        assert!(FlyToml::load(&p).unwrap_err().contains("not valid fly.toml"));
    }
}
