//! action.yml and the code agree: every declared input is handled by Config and the
//! other way round, with the same defaults; every output is written.

use std::collections::BTreeSet;

use safe_deploy::inputs::INPUTS;

fn action() -> serde_yaml_ng::Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/action.yml")).unwrap();
    serde_yaml_ng::from_str(&text).unwrap()
}

/// The `inputs:` block of action.yml, as INPUTS defines it.
fn inputs_block() -> String {
    let quote = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let mut out = String::from("inputs:\n");
    for spec in INPUTS.iter() {
        out.push_str(&format!(
            "  {}:\n    description: {}\n    required: {}\n    default: {}\n",
            spec.name,
            quote(spec.description),
            spec.required,
            quote(spec.default)
        ));
    }
    out
}

/// `SAFE_DEPLOY_BLESS=1 cargo test action_yml` rewrites action.yml's inputs from INPUTS.
#[test]
fn action_yml_inputs_are_written_from_the_table() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/action.yml");
    let text = std::fs::read_to_string(path).unwrap();
    let (start, end) = (text.find("inputs:\n").unwrap(), text.find("outputs:\n").unwrap());
    if std::env::var("SAFE_DEPLOY_BLESS").is_ok() {
        std::fs::write(path, format!("{}{}{}", &text[..start], inputs_block(), &text[end..])).unwrap();
        return;
    }
    assert_eq!(&text[start..end], inputs_block(), "run SAFE_DEPLOY_BLESS=1 cargo test action_yml to rewrite them");
}

#[test]
fn every_input_in_action_yml_is_handled_and_the_other_way_round() {
    let action = action();
    let declared = action["inputs"].as_mapping().unwrap();
    let names: BTreeSet<String> = declared.keys().map(|k| k.as_str().unwrap().to_string()).collect();
    let handled: BTreeSet<String> = INPUTS.iter().map(|i| i.name.to_string()).collect();
    assert_eq!(names, handled, "action.yml and src/inputs.rs disagree");

    for spec in INPUTS.iter() {
        let input = &declared[spec.name];
        assert_eq!(input["default"].as_str(), Some(spec.default), "default of {}", spec.name);
        assert_eq!(input["required"].as_bool(), Some(spec.required), "required of {}", spec.name);
        assert_eq!(input["description"].as_str(), Some(spec.description), "description of {}", spec.name);
    }
}

#[test]
fn the_action_runs_a_prebuilt_image_with_a_post_entrypoint() {
    let action = action();
    let runs = &action["runs"];
    assert_eq!(runs["using"].as_str(), Some("docker"));
    assert!(runs["image"].as_str().unwrap().starts_with("docker://"), "users never compile at run time");
    assert!(runs["post-entrypoint"].as_str().unwrap().ends_with("-post"));
}

/// What main's action.yml runs between releases (`.github/release/check-pin` knows it too).
const DEV_IMAGE: &str = "docker://ghcr.io/safe-deploy/safe-deploy:v1";

/// `vX.Y.Z`, digits only.
fn is_version_tag(tag: &str) -> bool {
    let parts: Vec<&str> = tag.strip_prefix('v').map(|v| v.split('.').collect()).unwrap_or_default();
    parts.len() == 3 && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// `docker://NAME@sha256:<64 lower-case hex>`, with no tag in NAME: what the release workflow's
/// `.github/release/pin-image` writes.
fn is_digest_reference(image: &str) -> bool {
    let Some((name, hex)) = image.strip_prefix("docker://").and_then(|r| r.split_once("@sha256:")) else {
        return false;
    };
    let last = name.rsplit('/').next().unwrap_or_default();
    !last.is_empty()
        && !last.contains(':')
        && !name.contains(char::is_whitespace)
        && hex.len() == 64
        && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A release commit (made by .github/workflows/release.yml, tagged vX.Y.Z, on no branch) runs
/// the image by digest; any other commit may only run main's tag-based dev reference instead.
#[test]
fn runs_image_is_a_digest_on_a_release_commit_and_mains_dev_tag_otherwise() {
    let action = action();
    let image = action["runs"]["image"].as_str().unwrap();
    assert!(
        is_digest_reference(image) || image == DEV_IMAGE,
        "runs.image is {image}: neither docker://NAME@sha256:<64 hex> nor main's {DEV_IMAGE}"
    );

    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    // Without git (a source tarball) nothing tells a release commit: the check above is all.
    let (Some(tags), Some(message)) = (git(&["tag", "--points-at", "HEAD"]), git(&["log", "-1", "--format=%B"])) else {
        return;
    };
    let tag = tags.lines().map(str::trim).find(|t| is_version_tag(t));
    let trailer = message.lines().find_map(|l| l.trim().strip_prefix("Safe-Deploy-Release:").map(str::trim));
    if let Some(release) = tag.or(trailer.filter(|v| is_version_tag(v))) {
        assert!(is_digest_reference(image), "HEAD is release {release}, but runs.image is {image}, not a digest");
    }
}

#[tokio::test]
async fn every_declared_output_is_written_and_nothing_else() {
    let action = action();
    let declared: BTreeSet<String> =
        action["outputs"].as_mapping().unwrap().keys().map(|k| k.as_str().unwrap().to_string()).collect();
    let double = crate::util::Double::start("web:v1").await;
    let ran = crate::util::run_main(&double.inputs("web:v2")).await;
    let written: BTreeSet<String> = ran.outputs.keys().cloned().collect();
    assert_eq!(declared, written);
}

#[test]
fn the_inputs_page_lists_every_input_with_its_default() {
    let inputs_page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/inputs.md")).unwrap();
    for spec in INPUTS.iter() {
        let row = match (spec.required, spec.default) {
            (true, _) => format!("| `{}` | required |", spec.name),
            (false, "") => format!("| `{}` | |", spec.name),
            (false, d) => format!("| `{}` | `{d}` |", spec.name),
        };
        assert!(inputs_page.contains(&row), "docs/inputs.md has no row starting {row}");
    }
}

#[test]
fn every_provider_has_a_readme_section_and_its_inputs_in_action_yml_and_the_inputs_page() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let inputs_page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/inputs.md")).unwrap();
    let action = action();
    let headings: Vec<String> = readme.lines().filter(|l| l.starts_with("## ")).map(str::to_lowercase).collect();
    for r in safe_deploy::providers::registry::PROVIDERS {
        let title = r.title.to_lowercase();
        assert!(headings.iter().any(|h| h.contains(&title)), "README.md has no section for {} ({})", r.name, r.title);
        for spec in INPUTS.iter().filter(|i| i.providers.contains(&r.name)) {
            assert!(!action["inputs"][spec.name].is_null(), "action.yml lacks {}'s input {}", r.name, spec.name);
            assert!(
                inputs_page.contains(&format!("| `{}` |", spec.name)),
                "docs/inputs.md lacks {}'s input {}",
                r.name,
                spec.name
            );
        }
    }
}
