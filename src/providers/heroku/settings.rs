//! Heroku's own inputs: the source directory a deploy without `image` uploads, or the
//! app a pipeline promotion takes its release from. A container deploy's `image` must
//! be the image ID Heroku's formation API takes (`sha256:...`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::HerokuProvider;
use crate::http::HttpClient;
use crate::inputs::Problems;
use crate::inputs::RawInputs;
use crate::providers::registration::{Account, ProviderSettings};
use crate::providers::Source;

#[derive(Debug, Clone)]
pub struct Settings {
    /// What a source deploy packs: `source-dir` in the workspace.
    pub source_dir: PathBuf,
    /// `promote-from`: the app whose live release is promoted to `app`.
    pub promote_from: Option<String>,
}

impl ProviderSettings for Settings {
    fn build(&self, account: &Account, http: &HttpClient) -> anyhow::Result<Box<dyn crate::providers::Provider>> {
        let (base, token) = (account.api_base(super::client::DEFAULT_API)?, account.token);
        Ok(Box::new(HerokuProvider::new(http.clone(), base, account.app, token, self.clone())?))
    }

    fn default_source(&self) -> Option<Source> {
        Some(match &self.promote_from {
            Some(app) => Source::Promotion(app.clone()),
            None => Source::Directory(self.source_dir.clone()),
        })
    }
}

pub fn configure(raw: &RawInputs, workspace: &Path, p: &mut Problems) -> Option<Arc<dyn ProviderSettings>> {
    let dir_text = raw.get("source-dir").unwrap_or(".");
    let source_dir = workspace.join(dir_text);
    let mut ok = true;
    if Path::new(dir_text).is_absolute()
        || Path::new(dir_text).components().any(|c| c == std::path::Component::ParentDir)
    {
        p.add(
            "source-dir",
            format!("'{dir_text}' leaves the workspace"),
            "Give a folder inside the repository, e.g. services/api.",
        );
        ok = false;
    } else if !source_dir.is_dir() {
        p.add(
            "source-dir",
            format!("{} is not a folder", source_dir.display()),
            format!(
                "Point {} at the folder holding the app's Procfile (check out the repository first with actions/checkout).",
                p.name("source-dir")
            ),
        );
        ok = false;
    }
    let promote_from = raw.get("promote-from").map(str::to_string);
    if raw.given("source-dir") && (raw.get("image").is_some() || promote_from.is_some()) {
        p.add(
            "source-dir",
            format!(
                "is set, but {} or {} says the release comes from elsewhere, so no source would be uploaded",
                p.name("image"),
                p.name("promote-from")
            ),
            format!(
                "Remove {}, or leave {} and {} empty to deploy that folder.",
                p.name("source-dir"),
                p.name("image"),
                p.name("promote-from")
            ),
        );
        ok = false;
    }
    if let Some(from) = &promote_from {
        if from == raw.get("app").unwrap_or_default() {
            let fix = format!("Name the staging app whose release goes to {}.", p.name("app"));
            p.add("promote-from", "names the app being deployed", fix);
            ok = false;
        }
        if raw.get("image").is_some() {
            p.add(
                "promote-from",
                format!("and {} were both given", p.name("image")),
                format!("A promotion takes the staging app's release: leave {} empty.", p.name("image")),
            );
            ok = false;
        }
    }
    if let Some(image) = raw.get("image") {
        let hex = image.strip_prefix("sha256:").unwrap_or_default();
        if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            p.add(
                "image",
                format!("'{image}' is not a Docker image ID; Heroku's formation API releases images by ID (sha256:...)"),
                format!("Push to registry.heroku.com/APP/web, then pass the ID: docker inspect registry.heroku.com/APP/web --format '{{{{.Id}}}}'. Leave {} empty to deploy the source instead.", p.name("image")),
            );
            ok = false;
        }
    }
    ok.then(|| Arc::new(Settings { source_dir, promote_from }) as Arc<dyn ProviderSettings>)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn raw(pairs: &[(&str, &str)]) -> RawInputs {
        RawInputs::of(pairs)
    }

    const BASE: [(&str, &str); 4] = [
        ("provider", "heroku"),
        ("app", "shop"),
        ("token", "hrku-token"),
        ("health-url", "https://shop.example.com/health"),
    ];

    #[test]
    fn heroku_deploys_the_workspace_source_when_no_image_is_given() {
        let dir = tempfile::tempdir().unwrap();
        let c = Config::from_inputs_in(&raw(&BASE), dir.path()).expect("valid without image");
        assert_eq!(c.settings.default_source(), Some(Source::Directory(dir.path().join("."))));
        let mut promote = BASE.to_vec();
        promote.push(("promote-from", "shop-staging"));
        let c = Config::from_inputs_in(&raw(&promote), dir.path()).expect("valid");
        assert_eq!(c.settings.default_source(), Some(Source::Promotion("shop-staging".into())));
    }

    #[test]
    fn a_container_deploy_needs_an_image_id_and_source_dir_a_folder_inside() {
        let dir = tempfile::tempdir().unwrap();
        let inputs = |extra: (&'static str, &'static str)| {
            let mut v = BASE.to_vec();
            v.push(extra);
            Config::from_inputs_in(&raw(&v), dir.path())
                .err()
                .unwrap_or_default()
                .iter()
                .map(|e| e.input)
                .collect::<Vec<_>>()
        };
        assert_eq!(inputs(("image", "registry.heroku.com/shop/web:latest")), ["image"]);
        assert!(inputs(("image", &*Box::leak(format!("sha256:{}", "a".repeat(64)).into_boxed_str()))).is_empty());
        assert_eq!(inputs(("source-dir", "../elsewhere")), ["source-dir"]);
        assert_eq!(inputs(("source-dir", "missing")), ["source-dir"]);
        assert_eq!(inputs(("promote-from", "shop")), ["promote-from"]);
        std::fs::create_dir_all(dir.path().join("api")).unwrap();
        let mut both = BASE.to_vec();
        both.extend([("source-dir", "api"), ("promote-from", "shop-staging")]);
        let errors = Config::from_inputs_in(&raw(&both), dir.path()).unwrap_err();
        assert_eq!(
            errors.iter().map(|e| e.input).collect::<Vec<_>>(),
            ["source-dir"],
            "a folder that would be ignored is named"
        );
    }
}
