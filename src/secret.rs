//! Secrets: a newtype that never prints its value, and one redactor that every
//! error and every piece of outside text passes through before it is shown.

use std::fmt;
use std::sync::{Arc, RwLock};

/// A secret value. `Debug` and `Display` print `[REDACTED]`; only `expose` gives the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// Every secret known to this run, including those learned on the way.
#[derive(Clone, Default)]
pub struct Redactor {
    secrets: Arc<RwLock<Vec<String>>>,
}

impl Redactor {
    /// Adds a secret; returns false if it was already known or is blank.
    pub fn add(&self, value: &str) -> bool {
        let value = value.trim();
        if value.is_empty() {
            return false;
        }
        let mut list = self.secrets.write().unwrap_or_else(|e| e.into_inner());
        if list.iter().any(|s| s == value) {
            return false;
        }
        list.push(value.to_string());
        // Longest first, so a secret that contains another is replaced whole.
        list.sort_by_key(|s| std::cmp::Reverse(s.len()));
        true
    }

    /// The text with every known secret replaced by `***`.
    pub fn redact(&self, text: &str) -> String {
        let list = self.secrets.read().unwrap_or_else(|e| e.into_inner());
        let mut out = text.to_string();
        for s in list.iter() {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "***");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_prints_its_value() {
        let s = Secret::new("fm2_abc");
        assert_eq!(format!("{s} {s:?}"), "[REDACTED] [REDACTED]");
        assert_eq!(s.expose(), "fm2_abc");
    }

    #[test]
    fn the_redactor_replaces_every_known_secret_longest_first() {
        let r = Redactor::default();
        assert!(r.add("abc"));
        assert!(r.add("abcdef"));
        assert!(!r.add("abc"));
        assert!(!r.add("  "));
        assert_eq!(r.redact("token abcdef and abc"), "token *** and ***");
    }
}
