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

/// Below this length a secret is redacted only where it stands as a whole token: a
/// one-character token must not turn every `x` of a summary into `***`.
const SHORT: usize = 8;

/// Opens `path` to append to, created readable and writable by this user only (0600)
/// when it is new: state holds what must not be shared.
pub fn private_file(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    // A pipe or a device would block the run (a FIFO with no reader never opens) or
    // swallow what it writes: only a regular file, or none yet, is written to.
    if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
        return Err(std::io::Error::other("it is not a regular file (a pipe, a device or a folder)"));
    }
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// Creates `path`, which must not exist yet (nor be a link), readable and writable by
/// this user only (0600): a snapshot or a key, in a folder others may write to.
pub fn new_private_file(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// Every secret known to this run, including those learned on the way, each with the
/// forms it may take in text: as given, URL-encoded (in a query string), base64 (in a
/// basic-auth header or a payload).
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
        for form in forms(value) {
            if !list.contains(&form) {
                list.push(form);
            }
        }
        // Longest first, so a secret that contains another is replaced whole.
        list.sort_by_key(|s| std::cmp::Reverse(s.len()));
        true
    }

    /// The text with every known secret replaced by `***`.
    pub fn redact(&self, text: &str) -> String {
        let list = self.secrets.read().unwrap_or_else(|e| e.into_inner());
        let mut out = text.to_string();
        for s in list.iter() {
            if !out.contains(s.as_str()) {
                continue;
            }
            out = if s.chars().count() >= SHORT { out.replace(s.as_str(), "***") } else { replace_tokens(&out, s) };
        }
        out
    }
}

/// A secret as given, URL-encoded, and base64 (standard and URL-safe, with and
/// without padding).
fn forms(value: &str) -> Vec<String> {
    use base64::Engine;
    let url: String = url::form_urlencoded::byte_serialize(value.as_bytes()).collect();
    let b64 = base64::engine::general_purpose::STANDARD.encode(value);
    let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value);
    let mut out =
        vec![value.to_string(), url.replace('+', "%20"), url, b64.trim_end_matches('=').to_string(), b64, b64url];
    out.dedup();
    out.retain(|f| !f.is_empty());
    out
}

/// Replaces `secret` only where no letter or digit touches it on either side.
fn replace_tokens(text: &str, secret: &str) -> String {
    let word = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(secret) {
        let before = rest[..at].chars().next_back().or_else(|| out.chars().next_back());
        let after = rest[at + secret.len()..].chars().next();
        out.push_str(&rest[..at]);
        if word(before) || word(after) {
            out.push_str(secret);
        } else {
            out.push_str("***");
        }
        rest = &rest[at + secret.len()..];
    }
    out.push_str(rest);
    out
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

    #[test]
    fn a_short_secret_is_redacted_only_as_a_whole_token() {
        let r = Redactor::default();
        r.add("x");
        assert_eq!(r.redact("dateFormat x, exit, token=x"), "dateFormat ***, exit, token=***");
        assert_eq!(r.redact("axis max"), "axis max", "text that is not the secret is left as it was");
    }

    #[test]
    fn every_encoding_of_a_secret_is_redacted() {
        let r = Redactor::default();
        r.add("fm2_a/b+c=d e");
        let url = "https://x/?key=fm2_a%2Fb%2Bc%3Dd+e&k2=fm2_a%2Fb%2Bc%3Dd%20e";
        assert_eq!(r.redact(url), "https://x/?key=***&k2=***");
        assert_eq!(r.redact("Basic Zm0yX2EvYitjPWQgZQ=="), "Basic ***");
    }
}
