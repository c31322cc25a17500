//! The one place that maps a provider's name to the code that parses its inputs and
//! builds it. Adding a provider adds one line to `PROVIDERS`.

use std::path::Path;
use std::sync::Arc;

use crate::config::{InputError, Problems, ProviderSettings};
use crate::inputs::RawInputs;

/// How a provider plugs in: its name, its token, and its two configuration steps.
#[derive(Debug)]
pub struct Registration {
    pub name: &'static str,
    /// Shown to people: "Fly.io".
    pub title: &'static str,
    /// Environment variables its own CLI reads the token from, read when `token` is empty.
    pub token_env: &'static [&'static str],
    pub needs_token: bool,
    /// Its `api-url` is a file, not an HTTP base (the provider double).
    pub file_api: bool,
    /// A deploy without `image` deploys something else (Heroku: the source).
    pub image_optional: bool,
    /// Fills shared inputs the caller left empty from the provider's own files
    /// (fly.toml's app and health check path). `Ok(None)`: nothing to fill.
    pub defaults: fn(&RawInputs, &Path) -> Result<Option<RawInputs>, InputError>,
    /// Parses and checks the provider's own inputs into `problems`; `None` when any is wrong.
    pub configure: fn(&RawInputs, &Path, &mut Problems) -> Option<Arc<dyn ProviderSettings>>,
}

pub const PROVIDERS: &[&Registration] = &[
    &super::fly::REGISTRATION,
    &super::heroku::REGISTRATION,
    &super::digitalocean::REGISTRATION,
    &super::droplets::REGISTRATION,
    &super::ssh::REGISTRATION,
    &super::memory::REGISTRATION,
];

/// The registration for `name`, case-insensitively.
pub fn find(name: &str) -> Option<&'static Registration> {
    PROVIDERS.iter().copied().find(|r| r.name.eq_ignore_ascii_case(name.trim()))
}

/// "fly, memory": for errors that list the choices.
pub fn names() -> String {
    PROVIDERS.iter().map(|r| r.name).collect::<Vec<_>>().join(", ")
}

/// For a provider with nothing of its own to fill in.
pub fn no_defaults(_: &RawInputs, _: &Path) -> Result<Option<RawInputs>, InputError> {
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_provider_is_found_by_its_name_and_no_name_twice() {
        for r in PROVIDERS {
            assert_eq!(find(&r.name.to_uppercase()).map(|f| f.name), Some(r.name));
        }
        let mut names: Vec<_> = PROVIDERS.iter().map(|r| r.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), PROVIDERS.len());
        assert!(find("digitalocean-apps").is_none());
    }
}
