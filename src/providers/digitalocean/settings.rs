//! App Platform's own inputs: which components take the new image, whether a rollback
//! leaves the app pinned, and `.do/app.yaml` (the spec file doctl and DigitalOcean's
//! own action read), which gives the app's name and the image components when the
//! inputs leave them out.

use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use super::spec::{self, ImageRef};
use super::DoProvider;
use crate::http::HttpClient;
use crate::inputs::RawInputs;
use crate::inputs::{parse_bool, InputError, Problems};
use crate::providers::registration::{Account, ProviderSettings};
use crate::providers::Source;

#[derive(Debug, Clone)]
pub struct Settings {
    /// The components whose image changes; empty: chosen from the live spec.
    pub components: Vec<String>,
    /// A rollback leaves the app pinned to it (until committed or reverted).
    pub keep_pin: bool,
    /// The app the spec file describes (`name`), checked against the app once its
    /// name is known (the app input may be an id).
    pub spec_name: Option<String>,
}

impl ProviderSettings for Settings {
    fn build(&self, account: &Account, http: &HttpClient) -> anyhow::Result<Box<dyn crate::providers::Provider>> {
        let (base, token) = (account.api_base(super::client::DEFAULT_API)?, account.token);
        Ok(Box::new(DoProvider::new(http.clone(), base, account.app, token, self.clone())?))
    }

    /// Without an image, a new deployment of the app's own sources (a git branch).
    fn default_source(&self) -> Option<Source> {
        Some(Source::Rebuild)
    }
}

/// The largest spec file read: a real one is a few KiB.
const MAX_BYTES: u64 = 1024 * 1024;

/// `.do/app.yaml` (or `app-spec`), when present. Only a regular file of at most 1 MiB
/// is read (a FIFO or a device named by mistake must not hang or flood the run), and
/// only a spec whose fields have the types App Platform gives them: a file that is
/// there but cannot be used is an input error, never passed over in silence.
fn load(raw: &RawInputs, workspace: &Path) -> Result<Option<Value>, InputError> {
    let name = raw.get("app-spec").unwrap_or(".do/app.yaml");
    let path = workspace.join(name);
    let surface = raw.surface();
    let refuse = |problem: String, fix: String| Err(InputError::new(surface, "app-spec", problem, fix));
    let elsewhere = || {
        format!("Fix the file (doctl apps spec validate checks it), or point {} at another.", surface.name("app-spec"))
    };
    let meta = match std::fs::metadata(&path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !raw.given("app-spec") => {
            // A symlink whose target is gone is there, but broken: say so.
            if std::fs::symlink_metadata(&path).is_ok() {
                return refuse(format!("{} is a link to nothing", path.display()), elsewhere());
            }
            return Ok(None);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return refuse(
                format!("{} is not a file", path.display()),
                format!("Point {} at the app spec in the repository (check it out first with actions/checkout), or leave it empty.", surface.name("app-spec")),
            )
        }
        Err(e) => return refuse(format!("{} cannot be read: {e}", path.display()), "Check the file's permissions.".into()),
    };
    if !meta.is_file() {
        return refuse(
            format!("{} is not a regular file (a directory, a device or a pipe)", path.display()),
            elsewhere(),
        );
    }
    if meta.len() > MAX_BYTES {
        return refuse(format!("{} is {} bytes; an app spec is far smaller", path.display(), meta.len()), elsewhere());
    }
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) => {
            return refuse(format!("{} cannot be read: {e}", path.display()), "Check the file's permissions.".into())
        }
    };
    let spec: Value = match serde_yaml_ng::from_str(&text) {
        Ok(spec) => spec,
        Err(e) => return refuse(format!("{} is not valid YAML: {e}", path.display()), elsewhere()),
    };
    if let Err(problem) = spec::check_types(&spec) {
        return refuse(format!("{} is not an app spec: {problem}", path.display()), elsewhere());
    }
    // The file names one app; deploying another with its components would be a mix-up.
    if let (Some(app), Some(named)) = (raw.get("app"), spec["name"].as_str()) {
        if !super::client::is_uuid(app) && app != named {
            return refuse(
                format!("{} is the spec of app {named}, but {} is {app}", path.display(), surface.name("app")),
                format!(
                    "Point {} at {app}'s spec, or set {} to the app the file describes.",
                    surface.name("app-spec"),
                    surface.name("app")
                ),
            );
        }
    }
    Ok(Some(spec))
}

/// Fills `app` from the spec file's `name` when the input is empty.
pub fn defaults(raw: &RawInputs, workspace: &Path) -> Result<Option<RawInputs>, InputError> {
    let Some(file) = load(raw, workspace)? else { return Ok(None) };
    let mut merged = raw.clone();
    if !raw.given("app") {
        if let Some(name) = file["name"].as_str() {
            merged.set("app", name);
        }
    }
    Ok(Some(merged))
}

fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    (2..=32).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && !name.ends_with('-')
}

pub fn configure(raw: &RawInputs, workspace: &Path, p: &mut Problems) -> Option<Arc<dyn ProviderSettings>> {
    let mut ok = true;
    let mut components: Vec<String> = raw
        .get("components")
        .unwrap_or_default()
        .split(',')
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .collect();
    if let Some(bad) = components.iter().find(|c| !valid_name(c)) {
        p.add(
            "components",
            format!("'{bad}' is not a component name (2 to 32 lower-case letters, digits and dashes)"),
            "Name the components as the app spec does, separated by commas, e.g. web,worker.",
        );
        ok = false;
    }
    let keep_pin = match parse_bool(raw.get("keep-pin").unwrap_or("false")) {
        Ok(b) => b,
        Err(problem) => {
            p.add("keep-pin", problem, "Use true or false.");
            ok = false;
            false
        }
    };
    let image = match raw.get("image").map(ImageRef::parse) {
        None => None,
        Some(Ok(i)) => Some(i),
        Some(Err(problem)) => {
            p.add("image", problem, "Give the image as registry.digitalocean.com/REGISTRY/REPO@sha256:... (a digest makes a rollback exact), ghcr.io/OWNER/REPO:TAG or a Docker Hub name.");
            ok = false;
            None
        }
    };
    if raw.get("image").is_none() && !components.is_empty() {
        p.add(
            "components",
            "is set, but no image was given, so no component's image would change",
            format!(
                "Give the new image in {}, or leave {} empty to build the app's sources again.",
                p.name("image"),
                p.name("components")
            ),
        );
        ok = false;
    }
    // A broken spec file was reported by `defaults` already.
    let file = load(raw, workspace).ok().flatten();
    let spec_name = file.as_ref().and_then(|f| f["name"].as_str()).map(str::to_string);
    if components.is_empty() && image.is_some() {
        if let Some(file) = &file {
            let wanted = image.as_ref().map(|i| i.repository.clone()).unwrap_or_default();
            components = spec::components(file)
                .into_iter()
                .filter(|c| c.image.as_ref().is_some_and(|i| i["repository"].as_str() == Some(&wanted)))
                .map(|c| c.name)
                .collect();
        }
    }
    ok.then(|| Arc::new(Settings { components, keep_pin, spec_name }) as Arc<dyn ProviderSettings>)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const BASE: [(&str, &str); 4] = [
        ("provider", "digitalocean"),
        ("app", "shop"),
        ("token", "dop_v1_token"),
        ("health-url", "https://shop.example.com/health"),
    ];

    fn problems(extra: &[(&str, &str)], dir: &Path) -> Vec<&'static str> {
        let mut v = BASE.to_vec();
        v.extend_from_slice(extra);
        Config::from_inputs_in(&RawInputs::of(&v), dir).err().unwrap_or_default().iter().map(|e| e.input).collect()
    }

    #[test]
    fn without_an_image_the_app_is_built_again_from_its_own_sources() {
        let dir = tempfile::tempdir().unwrap();
        let c = Config::from_inputs_in(&RawInputs::of(&BASE), dir.path()).expect("valid without image");
        assert_eq!(c.settings.default_source(), Some(Source::Rebuild));
    }

    #[test]
    fn bad_inputs_are_named_before_any_request() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(problems(&[("image", "quay.io/acme/web:1")], dir.path()), ["image"]);
        assert_eq!(problems(&[("image", "acme/web:1"), ("components", "Web")], dir.path()), ["components"]);
        assert_eq!(problems(&[("components", "web")], dir.path()), ["components"], "components without image");
        assert_eq!(problems(&[("keep-pin", "yes")], dir.path()), ["keep-pin"]);
        assert_eq!(problems(&[("app-spec", "deploy/app.yaml")], dir.path()), ["app-spec"]);
        assert!(problems(&[("image", "registry.digitalocean.com/acme/web:v2")], dir.path()).is_empty());
    }

    /// What the inputs below make of a `.do/app.yaml` set up by `place`: the inputs
    /// named in errors, and the first error's text.
    fn with_spec_file(place: impl FnOnce(&Path)) -> (Vec<&'static str>, String) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(".do")).unwrap();
        place(&dir.path().join(".do/app.yaml"));
        let raw = RawInputs::of(&[
            ("provider", "digitalocean"),
            ("app", "shop"),
            ("token", "t"),
            ("health-url", "https://shop.example.com/health"),
            ("image", "registry.digitalocean.com/acme/web:v2"),
        ]);
        match Config::from_inputs_in(&raw, dir.path()) {
            Ok(_) => (Vec::new(), String::new()),
            Err(errors) => (errors.iter().map(|e| e.input).collect(), errors[0].to_string()),
        }
    }

    #[test]
    fn a_spec_file_that_is_there_but_cannot_be_used_is_bad_input_never_skipped() {
        let (inputs, said) = with_spec_file(|path| {
            let made = std::process::Command::new("mkfifo").arg(path).status().unwrap();
            assert!(made.success());
        });
        assert_eq!(inputs, ["app-spec"], "a FIFO: {said}");
        assert!(said.contains("not a regular file"), "{said}");

        let (inputs, said) = with_spec_file(|path| std::os::unix::fs::symlink("/dev/zero", path).unwrap());
        assert_eq!(inputs, ["app-spec"], "a link to /dev/zero: {said}");

        let (inputs, said) = with_spec_file(|path| std::os::unix::fs::symlink("/nowhere/app.yaml", path).unwrap());
        assert_eq!(inputs, ["app-spec"], "a broken link: {said}");

        for (yaml, expected) in [
            ("name: shop\nservices: web\n", "services is text, not a list"),
            ("name: shop\nservices:\n- name: 5\n", "services[0].name is a number, not text"),
            (
                "name: shop\nservices:\n- name: web\n  image: registry.digitalocean.com/acme/web:v1\n",
                "services[0].image is text, not a mapping",
            ),
            (
                "name: shop\nservices:\n- name: web\n  image: {repository: [web]}\n",
                "services[0].image.repository is a list, not text",
            ),
            ("name: shop\nservices:\n- name: web\n  instance_count: -2\n", "instance_count is -2"),
            ("name: [shop]\n", "name is a list, not text"),
            ("- shop\n", "it is a list, not a mapping"),
            ("services: []\n", "it has no name"),
        ] {
            let (inputs, said) = with_spec_file(|path| std::fs::write(path, yaml).unwrap());
            assert_eq!(inputs, ["app-spec"], "{yaml}: {said}");
            assert!(said.contains(expected), "{yaml}: {said}");
        }

        let (inputs, said) =
            with_spec_file(|path| std::fs::write(path, "name: blog\nservices:\n- name: web\n").unwrap());
        assert_eq!(inputs, ["app-spec"], "another app's spec: {said}");
        assert!(said.contains("the spec of app blog, but app is shop"), "{said}");

        let (inputs, said) =
            with_spec_file(|path| std::fs::write(path, "name: shop\nservices:\n- name: web\n").unwrap());
        assert!(inputs.is_empty(), "the app's own spec is fine: {said}");
    }

    #[test]
    fn the_spec_file_names_the_app_and_the_image_components() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(".do")).unwrap();
        std::fs::write(
            dir.path().join(".do/app.yaml"),
            "name: shop\nservices:\n- name: web\n  image: {registry_type: DOCR, repository: web, tag: v1}\n- name: admin\n  image: {registry_type: DOCR, repository: admin, tag: v1}\n",
        )
        .unwrap();
        let raw = RawInputs::of(&[
            ("provider", "digitalocean"),
            ("token", "t"),
            ("health-url", "https://shop.example.com/health"),
            ("image", "registry.digitalocean.com/acme/web:v2"),
        ]);
        let c = Config::from_inputs_in(&raw, dir.path()).expect("app comes from the spec file");
        assert_eq!(c.app, "shop");
        std::fs::write(dir.path().join(".do/app.yaml"), "name: [unclosed").unwrap();
        let errors = Config::from_inputs_in(&raw, dir.path()).unwrap_err();
        assert_eq!(
            errors.iter().map(|e| e.input).collect::<Vec<_>>(),
            ["app-spec", "app"],
            "the broken file is named, and so is the app it could not give"
        );
    }
}
