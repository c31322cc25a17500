//! The one place that maps a provider's name to the code that parses its inputs and
//! builds it. Adding a provider adds one line to `PROVIDERS`.

use super::registration::Registration;

pub const PROVIDERS: &[&Registration] = &[
    &super::fly::REGISTRATION,
    &super::heroku::REGISTRATION,
    &super::digitalocean::REGISTRATION,
    &super::droplets::REGISTRATION,
    &super::ssh::REGISTRATION,
    &super::ecs::REGISTRATION,
    #[cfg(feature = "sandbox")]
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
